// at::vec::Vectorized backend for the math templates in focal_loss_math.h:
// the same expressions as on the GPU, evaluated Vectorized<T>::size() lanes at
// a time (8 floats with AVX2, 16 with AVX-512: one library per instruction set,
// see setup.py).
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
  static Value log(const Value& x) {
    if constexpr (std::is_same_v<T, float>) {
      return log_float(x);
    } else {
      return x.log();
    }
  }
  static Value log1p_unit(const Value& x) {
    if constexpr (std::is_same_v<T, float>) {
      return log1p_unit_float(x);
    } else {
      return x.log1p();
    }
  }
  static Value abs(const Value& x) { return x.abs(); }
  // Whether any lane of a mask is set: lets a functor skip work that no lane needs.
  static bool any(const Mask& m) { return m.zero_mask() != (1 << Value::size()) - 1; }
  // Whether every lane of a mask is set.
  static bool all(const Mask& m) { return m.zero_mask() == 0; }
  static Value max(const Value& a, const Value& b) { return at::vec::maximum(a, b); }
  static Mask nonneg(const Value& x) { return x >= Value(T(0)); }
  static Mask greater(const Value& a, const Value& b) { return a > b; }
  static Mask equal(const Value& a, const Value& b) { return a == b; }
  // blendv(a, b, mask) takes b where mask is set.
  static Value select(const Mask& m, const Value& a, const Value& b) {
    return Value::blendv(b, a, m);
  }

 private:
  // log(x) for float lanes without a division: x = m 2^e with m in
  // [sqrt(1/2), sqrt(2)), log(x) = e ln 2 + log(m), and log(m) from Cephes'
  // logf polynomial in t = m - 1 (relative error below 1e-7), with ln 2 split
  // in two so that e ln 2 adds no rounding error. About twice as fast as
  // Sleef's logf. Lanes that are not positive normal finite numbers (0,
  // subnormals, negatives, inf, NaN) take Sleef's log, which handles them.
  static Value log_float(const Value& x) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
    Value m, e;
    split_exponent(x, &m, &e);
    // m in [1, 2) -> [sqrt(1/2), sqrt(2)): halve m (exactly) and add 1 to e.
    const Value upper = m >= Value(1.41421356f);
    m = Value::blendv(m, m * Value(0.5f), upper);
    e = e + (upper & Value(1.0f));
    const Value t = m - Value(1.0f);  // exact
    const Value z = t * t;
    Value poly(7.0376836292e-2f);
    poly = at::vec::fmadd(poly, t, Value(-1.1514610310e-1f));
    poly = at::vec::fmadd(poly, t, Value(1.1676998740e-1f));
    poly = at::vec::fmadd(poly, t, Value(-1.2420140846e-1f));
    poly = at::vec::fmadd(poly, t, Value(1.4249322787e-1f));
    poly = at::vec::fmadd(poly, t, Value(-1.6668057665e-1f));
    poly = at::vec::fmadd(poly, t, Value(2.0000714765e-1f));
    poly = at::vec::fmadd(poly, t, Value(-2.4999993993e-1f));
    poly = at::vec::fmadd(poly, t, Value(3.3333331174e-1f));
    Value y = poly * t * z;
    y = at::vec::fmadd(e, Value(-2.12194440e-4f), y);
    y = at::vec::fmadd(z, Value(-0.5f), y);
    Value r = at::vec::fmadd(e, Value(0.693359375f), t + y);
    // NaN compares false, so it is not "normal" either.
    const Value normal = (x >= Value(std::numeric_limits<float>::min())) &
                         (x < Value(std::numeric_limits<float>::infinity()));
    if (!all(normal)) r = Value::blendv(x.log(), r, normal);
    return r;
#else
    return x.log();
#endif
  }

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  // x = m 2^e with m in [1, 2), for positive normal finite lanes (others: any value).
  static void split_exponent(const Value& x, Value* m, Value* e) {
#if defined(CPU_CAPABILITY_AVX512)
    *m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero);
    *e = _mm512_getexp_ps(x);
#else
    const __m256i bits = _mm256_castps_si256(x);
    *m = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f800000)));
    *e = _mm256_cvtepi32_ps(
        _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127)));
#endif
  }
#endif

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
