// Per-element focal-loss math: the ONE copy, shared by the CPU and CUDA kernels.
//
// Torch-free on purpose. Every function is a template over a small "Ops"
// backend that supplies the arithmetic primitives, so the same expressions run
// on plain float/double (CUDA threads, CPU tails) and on at::vec::Vectorized
// lanes (the CPU kernel provides that backend in cpu/vectorized_ops.h). What the
// CPU tests prove is therefore the math the GPU runs.
//
// Focal loss (Lin et al., "Focal Loss for Dense Object Detection"):
//   FL(p_t) = -alpha_t * (1 - p_t)^gamma * log(p_t).
// For sigmoid classification with target probability y in [0, 1] (y in {0, 1}
// for class labels) the torchvision/fvcore/mmdet generalisation is used:
//   1 - p_t = y * (1 - p) + (1 - y) * p,   alpha_t = w_pos * y + w_neg * (1 - y),
//   FL      = alpha_t * (1 - p_t)^gamma * BCEWithLogits(x, y),
// which is exactly the paper's formula when y is 0 or 1.
#pragma once

#include <cfloat>
#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FOCAL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FOCAL_HOST_DEVICE inline
#endif

namespace focal_plugin {
namespace math {

// gamma is an integer in [0, kMaxIntegerGamma] for almost every config
// (0, 1, 2, ...): those powers are repeated products, never pow/exp/log.
constexpr int kMaxIntegerGamma = 16;

// Scalar backend: float or double, on the host or on a CUDA device.
// Primitives: exp, expm1, log, log1p, log1p_unit (log(1 + x) for x in [0, 1]
// only, which a backend may implement faster), abs, max, select, comparisons.
template <typename T>
struct ScalarOps;

template <>
struct ScalarOps<float> {
  using Value = float;
  using Mask = bool;
  static FOCAL_HOST_DEVICE float constant(double v) { return static_cast<float>(v); }
  static FOCAL_HOST_DEVICE float tiny() { return FLT_MIN; }  // smallest normal
  static FOCAL_HOST_DEVICE float exp(float x) { return ::expf(x); }
  static FOCAL_HOST_DEVICE float expm1(float x) { return ::expm1f(x); }
  static FOCAL_HOST_DEVICE float log(float x) { return ::logf(x); }
  static FOCAL_HOST_DEVICE float log1p(float x) { return ::log1pf(x); }
  static FOCAL_HOST_DEVICE float log1p_unit(float x) { return ::log1pf(x); }  // x in [0, 1]
  static FOCAL_HOST_DEVICE float abs(float x) { return ::fabsf(x); }
  static FOCAL_HOST_DEVICE float max(float a, float b) { return a > b ? a : b; }
  static FOCAL_HOST_DEVICE bool nonneg(float x) { return x >= 0.f; }
  static FOCAL_HOST_DEVICE bool greater(float a, float b) { return a > b; }
  static FOCAL_HOST_DEVICE float select(bool m, float a, float b) { return m ? a : b; }
};

template <>
struct ScalarOps<double> {
  using Value = double;
  using Mask = bool;
  static FOCAL_HOST_DEVICE double constant(double v) { return v; }
  static FOCAL_HOST_DEVICE double tiny() { return DBL_MIN; }
  static FOCAL_HOST_DEVICE double exp(double x) { return ::exp(x); }
  static FOCAL_HOST_DEVICE double expm1(double x) { return ::expm1(x); }
  static FOCAL_HOST_DEVICE double log(double x) { return ::log(x); }
  static FOCAL_HOST_DEVICE double log1p(double x) { return ::log1p(x); }
  static FOCAL_HOST_DEVICE double log1p_unit(double x) { return ::log1p(x); }  // x in [0, 1]
  static FOCAL_HOST_DEVICE double abs(double x) { return ::fabs(x); }
  static FOCAL_HOST_DEVICE double max(double a, double b) { return a > b ? a : b; }
  static FOCAL_HOST_DEVICE bool nonneg(double x) { return x >= 0.0; }
  static FOCAL_HOST_DEVICE bool greater(double a, double b) { return a > b; }
  static FOCAL_HOST_DEVICE double select(bool m, double a, double b) { return m ? a : b; }
};

// The exponent gamma, split once per call into the integer fast path or not.
template <typename Scalar>
struct Gamma {
  Scalar value;     // gamma itself
  int integer;      // gamma when it is an integer <= kMaxIntegerGamma, else -1
};

template <typename Scalar>
FOCAL_HOST_DEVICE Gamma<Scalar> make_gamma(double gamma) {
  Gamma<Scalar> g;
  g.value = static_cast<Scalar>(gamma);
  // Range first: casting a double outside int's range (or NaN) is undefined.
  const bool small_integer = gamma >= 0.0 && gamma <= static_cast<double>(kMaxIntegerGamma) &&
                             gamma == static_cast<double>(static_cast<int>(gamma));
  g.integer = small_integer ? static_cast<int>(gamma) : -1;
  return g;
}

// base^gamma for base in [0, 1]. Integer gamma: repeated products (0^0 = 1).
// Otherwise exp(gamma * log(base)), which gives 0 at base == 0 because gamma > 0.
template <class Ops, typename Scalar>
FOCAL_HOST_DEVICE typename Ops::Value pow_gamma(typename Ops::Value base, const Gamma<Scalar>& gamma) {
  using T = typename Ops::Value;
  if (gamma.integer >= 0) {
    T result = Ops::constant(1.0);
    for (int i = 0; i < gamma.integer; ++i) result = result * base;
    return result;
  }
  return Ops::exp(T(Ops::constant(static_cast<double>(gamma.value))) * Ops::log(base));
}

// Sigmoid focal loss of logit x against target probability y, and its
// derivative d loss / d x. alpha_t = w_pos * y + w_neg * (1 - y); any element
// weight is expected folded into w_pos and w_neg by the caller.
//
// Numerics: one exp and one log1p give log-sigmoid of either sign (softplus
// identities), p and 1 - p are both formed without cancellation, and the
// gradient is written without (1 - p_t)^(gamma - 1), which is infinite at
// p_t == 1 for gamma < 1:
//   dFL/dx = alpha_t * m^gamma * (gamma * (1 - 2y) * p(1-p)/m * BCE + (p - y)),
//   m = 1 - p_t, with p(1-p)/m <= 1 and p(1-p) == 0 wherever m == 0.
// Finite for |x| up to 1e4 and beyond in float; NaN logits propagate NaN.
//
// kBinaryTarget: y is known to be 0 or 1 (class-index targets); then
// p(1-p)/m is exactly y*p + (1-y)*(1-p) and the division is skipped.
template <class Ops, typename Scalar, bool kWantLoss, bool kWantGrad, bool kBinaryTarget = false>
FOCAL_HOST_DEVICE void sigmoid_focal(typename Ops::Value x, typename Ops::Value y,
                                     typename Ops::Value w_pos, typename Ops::Value w_neg,
                                     const Gamma<Scalar>& gamma,
                                     typename Ops::Value* loss, typename Ops::Value* grad) {
  using T = typename Ops::Value;
  const T one = Ops::constant(1.0);
  const T not_y = one - y;
  const typename Ops::Mask x_nonneg = Ops::nonneg(x);

  const T e = Ops::exp(T(Ops::constant(0.0)) - Ops::abs(x));  // exp(-|x|) in (0, 1]
  const T log1p_e = Ops::log1p_unit(e);
  const T inv = one / (one + e);
  const T p = Ops::select(x_nonneg, inv, e * inv);        // sigmoid(x)
  const T q = Ops::select(x_nonneg, e * inv, inv);        // 1 - sigmoid(x)

  // BCEWithLogits(x, y) = softplus(x) - x*y = relu(x) - x*y + log1p(exp(-|x|)).
  const T bce = Ops::select(x_nonneg, x * not_y, T(Ops::constant(0.0)) - x * y) + log1p_e;
  const T m = y * q + not_y * p;                           // 1 - p_t
  const T alpha_t = w_pos * y + w_neg * not_y;
  const T weighted_focus = alpha_t * pow_gamma<Ops>(m, gamma);

  if (kWantLoss) *loss = weighted_focus * bce;
  if (kWantGrad) {
    const T gamma_v = Ops::constant(static_cast<double>(gamma.value));
    const T ratio = kBinaryTarget ? y * p + not_y * q : p * q / Ops::max(m, Ops::tiny());
    const T p_minus_y = not_y * p - y * q;                 // p - y without cancellation
    *grad = weighted_focus * (gamma_v * (not_y - y) * ratio * bce + p_minus_y);
  }
}

// Softmax focal loss of one row, from log p_t = x_t - logsumexp(x).
// Returns the loss and the row coefficient c with dFL/dx_j = c * (p_j - [j == t]).
//   FL = -alpha_t * u^gamma * log p_t,  u = 1 - p_t = -expm1(log p_t),
//   c  =  alpha_t * u^gamma * (1 - gamma * p_t * log(p_t) / u),
// where log(p_t)/u -> -1 as u -> 0, so c stays finite for gamma < 1 too.
template <class Ops, typename Scalar>
FOCAL_HOST_DEVICE void softmax_focal_row(typename Ops::Value log_pt, typename Ops::Value alpha_t,
                                         const Gamma<Scalar>& gamma,
                                         typename Ops::Value* loss, typename Ops::Value* coef) {
  using T = typename Ops::Value;
  const T one = Ops::constant(1.0);
  // log p_t <= 0 in exact arithmetic; an approximate log in the caller's
  // logsumexp could push it just above 0, which would make u < 0 and u^gamma
  // NaN for non-integer gamma. (A NaN log_pt stays NaN: the comparison is false.)
  log_pt = Ops::select(Ops::greater(log_pt, T(Ops::constant(0.0))), T(Ops::constant(0.0)), log_pt);
  const T p_t = Ops::exp(log_pt);
  const T u = T(Ops::constant(0.0)) - Ops::expm1(log_pt);
  const T focus = alpha_t * pow_gamma<Ops>(u, gamma);
  const T log_pt_over_u = Ops::select(Ops::greater(u, Ops::tiny()),
                                      log_pt / Ops::max(u, Ops::tiny()),
                                      T(Ops::constant(-1.0)));
  if (loss) *loss = T(Ops::constant(0.0)) - focus * log_pt;
  if (coef) *coef = focus * (one - Ops::constant(static_cast<double>(gamma.value)) * p_t * log_pt_over_u);
}

}  // namespace math
}  // namespace focal_plugin
