// at::vec::Vectorized backend for the math templates in focal_loss_math.h:
// the same expressions as on the GPU, evaluated Vectorized<T>::size() lanes at
// a time (8 floats with AVX2; exp/log1p come from Sleef inside libtorch).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <limits>

namespace focal_plugin {
namespace math {

template <typename T>
struct VectorizedOps {
  using Value = at::vec::Vectorized<T>;
  using Mask = at::vec::Vectorized<T>;  // all-ones / all-zeros lanes
  static Value constant(double v) { return Value(static_cast<T>(v)); }
  static Value tiny() { return Value(std::numeric_limits<T>::min()); }
  static Value exp(const Value& x) { return x.exp(); }
  static Value expm1(const Value& x) { return x.expm1(); }
  static Value log(const Value& x) { return x.log(); }
  static Value log1p(const Value& x) { return x.log1p(); }
  static Value abs(const Value& x) { return x.abs(); }
  static Value max(const Value& a, const Value& b) { return at::vec::maximum(a, b); }
  static Mask nonneg(const Value& x) { return x >= Value(T(0)); }
  static Mask greater(const Value& a, const Value& b) { return a > b; }
  // blendv(a, b, mask) takes b where mask is set.
  static Value select(const Mask& m, const Value& a, const Value& b) {
    return Value::blendv(b, a, m);
  }
};

}  // namespace math
}  // namespace focal_plugin
