// at::vec::Vectorized backend for the math templates in focal_loss_math.h:
// the same expressions as on the GPU, evaluated Vectorized<T>::size() lanes at
// a time (8 floats with AVX2).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <limits>
#include <type_traits>

namespace focal_plugin {
namespace math {

template <typename T>
struct VectorizedOps {
  using Value = at::vec::Vectorized<T>;
  using Mask = at::vec::Vectorized<T>;  // all-ones / all-zeros lanes
  static Value constant(double v) { return Value(static_cast<T>(v)); }
  static Value tiny() { return Value(std::numeric_limits<T>::min()); }
  // float: ATen's polynomial exp (<= 20 ulp, 1.2e-6 relative), about twice
  // as fast as Sleef's 1-ulp expf; the focal loss tolerates it easily and the
  // tests hold the kernels to 1e-5 of a float64 oracle. double: Sleef.
  static Value exp(const Value& x) {
    if constexpr (std::is_same_v<T, float>) {
      return x.exp_u20();
    } else {
      return x.exp();
    }
  }
  static Value expm1(const Value& x) { return x.expm1(); }
  static Value log(const Value& x) { return x.log(); }
  static Value log1p_unit(const Value& x) {
    if constexpr (std::is_same_v<T, float>) {
      return log1p_unit_float(x);
    } else {
      return x.log1p();
    }
  }
  static Value abs(const Value& x) { return x.abs(); }
  static Value max(const Value& a, const Value& b) { return at::vec::maximum(a, b); }
  static Mask nonneg(const Value& x) { return x >= Value(T(0)); }
  static Mask greater(const Value& a, const Value& b) { return a > b; }
  static Mask equal(const Value& a, const Value& b) { return a == b; }
  // blendv(a, b, mask) takes b where mask is set.
  static Value select(const Mask& m, const Value& a, const Value& b) {
    return Value::blendv(b, a, m);
  }

 private:
  // log(1 + x) for x in [0, 1], about 2 ulp: log1p(x) = 2 atanh(s) with
  // s = x / (2 + x) in [0, 1/3], and atanh(s) = s (1 + s^2/3 + s^4/5 + ...);
  // the terms after s^12/13 are below float's epsilon. One division and six
  // FMAs, where Sleef's general log1p handles the whole float range and costs
  // several times more; the focal loss only needs log1p(exp(-|x|)).
  static Value log1p_unit_float(const Value& x) {
    const Value s = x / (Value(T(2)) + x);
    const Value z = s * s;
    Value poly(T(1.0 / 13));
    poly = at::vec::fmadd(poly, z, Value(T(1.0 / 11)));
    poly = at::vec::fmadd(poly, z, Value(T(1.0 / 9)));
    poly = at::vec::fmadd(poly, z, Value(T(1.0 / 7)));
    poly = at::vec::fmadd(poly, z, Value(T(1.0 / 5)));
    poly = at::vec::fmadd(poly, z, Value(T(1.0 / 3)));
    poly = at::vec::fmadd(poly, z, Value(T(1)));
    return Value(T(2)) * s * poly;
  }
};

}  // namespace math
}  // namespace focal_plugin
