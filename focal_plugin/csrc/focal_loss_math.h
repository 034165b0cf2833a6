// Per-element math of the focal-loss family: the ONE copy, shared by the CPU
// and CUDA kernels.
//
// Torch-free on purpose. Every function is a template over a small "Ops"
// backend that supplies the arithmetic primitives, so the same expressions run
// on plain float/double (CUDA threads, CPU tails) and on at::vec::Vectorized
// lanes (the CPU kernel provides that backend in cpu/vectorized_ops.h). What the
// CPU tests prove is therefore the math the GPU runs.
//
// A member of the elementwise family is one functor with
//   - Params<acc_t> and make<acc_t>(scalars...): its scalar arguments, built
//     once per call on the host;
//   - validate(scalars...): nullptr, or what is wrong with them;
//   - eval<Ops, kLoss, kGrad, kBinary>(params, x, y, w, class_alpha, &loss, &grad):
//     the loss of logit (or probability) x against target y in [0, 1], times
//     the weight w, and its derivative d loss / d x. class_alpha points at the
//     element's per-class alpha, or is null. kBinary: y is known to be 0 or 1.
// The device machinery (cpu/elementwise_cpu.cpp, cuda/elementwise_kernel.cuh)
// is generic over the functor; focal_loss_family.h lists the members.
#pragma once

#include <cfloat>
#include <cmath>
#include <optional>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FOCAL_HOST_DEVICE __host__ __device__ __forceinline__
// Paths no common configuration takes (non-integer exponents, probability
// inputs). On the CPU they are kept out of line: inlined, their vector log and
// exp would bloat every member's hot loop (measured 5-10% slower). On the GPU
// everything is inlined.
#define FOCAL_COLD_PATH __host__ __device__ __forceinline__
#else
#define FOCAL_HOST_DEVICE inline
#define FOCAL_COLD_PATH __attribute__((noinline))
#endif

namespace focal_plugin {
namespace math {

// Exponents (gamma, beta, ...) are small integers in almost every config
// (0, 1, 2, 4): those powers are repeated products, never pow/exp/log.
constexpr int kMaxIntegerExponent = 16;

// Scalar backend: float or double, on the host or on a CUDA device.
// Primitives: exp, expm1, log, log1p_unit (log(1 + x) for x in [0, 1] only,
// which a backend may implement faster), abs, max, select, comparisons, and
// any (whether a mask holds for any lane, so that work no lane needs can be
// skipped).
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
  static FOCAL_HOST_DEVICE float log1p_unit(float x) { return ::log1pf(x); }  // x in [0, 1]
  static FOCAL_HOST_DEVICE float abs(float x) { return ::fabsf(x); }
  static FOCAL_HOST_DEVICE bool any(bool m) { return m; }
  static FOCAL_HOST_DEVICE float max(float a, float b) { return a > b ? a : b; }
  static FOCAL_HOST_DEVICE bool nonneg(float x) { return x >= 0.f; }
  static FOCAL_HOST_DEVICE bool greater(float a, float b) { return a > b; }
  static FOCAL_HOST_DEVICE bool equal(float a, float b) { return a == b; }
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
  static FOCAL_HOST_DEVICE double log1p_unit(double x) { return ::log1p(x); }  // x in [0, 1]
  static FOCAL_HOST_DEVICE double abs(double x) { return ::fabs(x); }
  static FOCAL_HOST_DEVICE bool any(bool m) { return m; }
  static FOCAL_HOST_DEVICE double max(double a, double b) { return a > b ? a : b; }
  static FOCAL_HOST_DEVICE bool nonneg(double x) { return x >= 0.0; }
  static FOCAL_HOST_DEVICE bool greater(double a, double b) { return a > b; }
  static FOCAL_HOST_DEVICE bool equal(double a, double b) { return a == b; }
  static FOCAL_HOST_DEVICE double select(bool m, double a, double b) { return m ? a : b; }
};

// An exponent, split once per call into the integer fast path or not.
template <typename Scalar>
struct Exponent {
  Scalar value;  // the exponent itself
  int integer;   // the exponent when it is an integer <= kMaxIntegerExponent, else -1
};

template <typename Scalar>
FOCAL_HOST_DEVICE Exponent<Scalar> make_exponent(double e) {
  Exponent<Scalar> g;
  g.value = static_cast<Scalar>(e);
  // Range first: casting a double outside int's range (or NaN) is undefined.
  const bool small_integer = e >= 0.0 && e <= static_cast<double>(kMaxIntegerExponent) &&
                             e == static_cast<double>(static_cast<int>(e));
  g.integer = small_integer ? static_cast<int>(e) : -1;
  return g;
}

// Host-side check shared by the functors' validate(): nullptr when e is a
// finite number >= 0, else `message`.
inline const char* check_exponent(double e, const char* message) {
  return (e >= 0.0 && e < INFINITY) ? nullptr : message;
}

// base^e for base in [0, 1]. Integer e: repeated products (0^0 = 1).
// Otherwise exp(e * log(base)), which gives 0 at base == 0 because e > 0.
template <class Ops, typename Scalar>
FOCAL_COLD_PATH typename Ops::Value pow_exp_general(typename Ops::Value base,
                                                    const Exponent<Scalar>& e) {
  using T = typename Ops::Value;
  return Ops::exp(T(Ops::constant(static_cast<double>(e.value))) * Ops::log(base));
}

template <class Ops, typename Scalar>
FOCAL_HOST_DEVICE typename Ops::Value pow_exp(typename Ops::Value base, const Exponent<Scalar>& e) {
  using T = typename Ops::Value;
  if (e.integer >= 0) {
    T result = Ops::constant(1.0);
    for (int i = 0; i < e.integer; ++i) result = result * base;
    return result;
  }
  return pow_exp_general<Ops>(base, e);
}

// pow_exp_derivative for a non-integer e.
template <class Ops, typename Scalar>
FOCAL_COLD_PATH typename Ops::Value pow_exp_derivative_general(typename Ops::Value base,
                                                               const Exponent<Scalar>& e) {
  using T = typename Ops::Value;
  const T e_v = Ops::constant(static_cast<double>(e.value));
  const T safe = Ops::max(base, Ops::tiny());
  const T value = e_v * Ops::exp(T(e_v - Ops::constant(1.0)) * Ops::log(safe));
  return Ops::select(Ops::greater(base, T(Ops::constant(0.0))), value, T(Ops::constant(0.0)));
}

// e * base^(e - 1) for base in [0, 1]: the derivative of base^e. Where it is
// infinite (base == 0 with 0 < e < 1) it is taken as 0, the value the
// one-sided limits of every caller's product agree on (the other factor
// vanishes there); e == 0 gives 0.
template <class Ops, typename Scalar>
FOCAL_HOST_DEVICE typename Ops::Value pow_exp_derivative(typename Ops::Value base,
                                                         const Exponent<Scalar>& e) {
  using T = typename Ops::Value;
  const T e_v = Ops::constant(static_cast<double>(e.value));
  if (e.integer >= 1) {
    T result = e_v;
    for (int i = 1; i < e.integer; ++i) result = result * base;
    return result;
  }
  if (e.integer == 0) return Ops::constant(0.0);
  return pow_exp_derivative_general<Ops>(base, e);
}

// The pieces of the logistic function of x that every sigmoid-family member
// needs, from one exp and one log1p: p = sigmoid(x) and q = 1 - p, both
// without cancellation, and log1p(exp(-|x|)), from which
//   softplus(x) = relu(x) + log1p(exp(-|x|)),  log p = -softplus(-x),  log q = -softplus(x).
template <class Ops>
struct Logistic {
  using T = typename Ops::Value;
  T p, q, log1p_e;
  typename Ops::Mask x_nonneg;
  T x;

  FOCAL_HOST_DEVICE explicit Logistic(T x_in) : x(x_in) {
    const T one = Ops::constant(1.0);
    x_nonneg = Ops::nonneg(x);
    const T e = Ops::exp(T(Ops::constant(0.0)) - Ops::abs(x));  // exp(-|x|) in (0, 1]
    log1p_e = Ops::log1p_unit(e);
    const T inv = one / (one + e);
    p = Ops::select(x_nonneg, inv, e * inv);
    q = Ops::select(x_nonneg, e * inv, inv);
  }
  // BCEWithLogits(x, y) = softplus(x) - x*y = relu(x) - x*y + log1p(exp(-|x|)),
  // written per sign of x so that nothing cancels.
  FOCAL_HOST_DEVICE T bce(T y) const {
    return Ops::select(x_nonneg, x * (T(Ops::constant(1.0)) - y), T(Ops::constant(0.0)) - x * y) +
           log1p_e;
  }
  // bce(0), without the operations that a zero target makes exact: x * 1 and
  // 0 - x * 0 are x and +0 (the same bits as bce(0), NaN for a NaN x).
  FOCAL_HOST_DEVICE T bce_zero_target() const {
    return Ops::select(x_nonneg, x, T(Ops::constant(0.0))) + log1p_e;
  }
  // p - y without cancellation, for y in [0, 1].
  FOCAL_HOST_DEVICE T p_minus(T y) const { return (T(Ops::constant(1.0)) - y) * p - y * q; }
  FOCAL_HOST_DEVICE T log_p() const {  // -softplus(-x)
    return T(Ops::constant(0.0)) -
           (Ops::select(x_nonneg, T(Ops::constant(0.0)), T(Ops::constant(0.0)) - x) + log1p_e);
  }
  FOCAL_HOST_DEVICE T log_q() const {  // -softplus(x)
    return T(Ops::constant(0.0)) - (Ops::select(x_nonneg, x, T(Ops::constant(0.0))) + log1p_e);
  }
};

// |d|^e * BCE and its derivative, for d = p - y: the "quality" modulation that
// QualityFocalLoss uses for every element and VarifocalLoss for negatives.
//   d/dx [|d|^e BCE] = |d|^e (p - y) + BCE * e |d|^(e-1) sign(d) * p q.
// kZeroTarget (y == 0 in every lane): d = p >= 0, so |d| = d, and sign(d) is 1
// or, where p == 0, a factor of a product that p zeroes anyway.
template <class Ops, typename Scalar, bool kWantLoss, bool kWantGrad, bool kZeroTarget>
FOCAL_HOST_DEVICE void quality_modulated_bce(const Logistic<Ops>& s, typename Ops::Value y,
                                             const Exponent<Scalar>& e,
                                             typename Ops::Value* loss,
                                             typename Ops::Value* grad) {
  using T = typename Ops::Value;
  const T d = kZeroTarget ? s.p : s.p_minus(y);
  const T abs_d = kZeroTarget ? d : Ops::abs(d);
  const T bce = kZeroTarget ? s.bce_zero_target() : s.bce(y);
  const T focus = pow_exp<Ops>(abs_d, e);
  if (kWantLoss) *loss = focus * bce;
  if (kWantGrad) {
    T modulation_slope = bce * pow_exp_derivative<Ops>(abs_d, e);  // BCE d|d|^e/d|d|
    if (!kZeroTarget) {
      const T zero = Ops::constant(0.0);
      const T sign_d = Ops::select(Ops::greater(d, zero), T(Ops::constant(1.0)),
                                   Ops::select(Ops::greater(zero, d), T(Ops::constant(-1.0)), zero));
      modulation_slope = modulation_slope * sign_d;
    }
    *grad = focus * d + modulation_slope * s.p * s.q;
  }
}

// ---------------------------------------------------------------------------
// Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection"):
//   FL(p_t) = -alpha_t * (1 - p_t)^gamma * log(p_t).
// For target probability y in [0, 1] (y in {0, 1} for class labels) the
// torchvision/fvcore/mmdet generalisation is used:
//   1 - p_t = y (1 - p) + (1 - y) p,   alpha_t = alpha y + (1 - alpha)(1 - y),
//   FL      = alpha_t (1 - p_t)^gamma BCEWithLogits(x, y),
// which is exactly the paper's formula when y is 0 or 1. Without alpha,
// alpha_t = 1.
//
// The gradient is written without (1 - p_t)^(gamma - 1), which is infinite at
// p_t == 1 for gamma < 1:
//   dFL/dx = alpha_t m^gamma (gamma (1 - 2y) p(1-p)/m BCE + (p - y)),
//   m = 1 - p_t, with p(1-p)/m <= 1 and p(1-p) == 0 wherever m == 0.
// Finite for |x| up to 1e4 and beyond in float; NaN logits propagate NaN.
// ---------------------------------------------------------------------------
struct SigmoidFocal {
  template <typename acc_t>
  struct Params {
    Exponent<acc_t> gamma;
    acc_t alpha_pos, alpha_neg;  // alpha and 1 - alpha, or 1 and 1 without alpha
  };
  template <typename acc_t>
  static Params<acc_t> make(double gamma, std::optional<double> alpha) {
    return {make_exponent<acc_t>(gamma), static_cast<acc_t>(alpha ? *alpha : 1.0),
            static_cast<acc_t>(alpha ? 1.0 - *alpha : 1.0)};
  }
  static const char* validate(double gamma, std::optional<double> alpha) {
    if (const char* error = check_exponent(gamma, "gamma must be a finite number >= 0")) {
      return error;
    }
    return (!alpha || (*alpha >= 0.0 && *alpha <= 1.0)) ? nullptr : "alpha must be in [0, 1]";
  }

  template <class Ops, bool kWantLoss, bool kWantGrad, bool kBinaryTarget, bool kZeroTarget,
            typename acc_t>
  static FOCAL_HOST_DEVICE void eval(const Params<acc_t>& params, typename Ops::Value x,
                                     typename Ops::Value y, typename Ops::Value w,
                                     const typename Ops::Value* class_alpha,
                                     typename Ops::Value* loss, typename Ops::Value* grad) {
    using T = typename Ops::Value;
    const T one = Ops::constant(1.0);
    const T not_y = one - y;
    const Logistic<Ops> s(x);
    // kZeroTarget (y == 0 in every lane): m = p, alpha_t = 1 - alpha, the
    // binary ratio is q and p - y is p; the terms y zeroes are left out.
    const T m = kZeroTarget ? s.p : T(y * s.q + not_y * s.p);  // 1 - p_t
    const T alpha_pos = class_alpha ? *class_alpha : T(params.alpha_pos);
    const T alpha_neg = class_alpha ? T(one - *class_alpha) : T(params.alpha_neg);
    const T alpha_t = kZeroTarget ? alpha_neg : T(alpha_pos * y + alpha_neg * not_y);
    const T weighted_focus = w * alpha_t * pow_exp<Ops>(m, params.gamma);
    const T bce = kZeroTarget ? s.bce_zero_target() : s.bce(y);
    if (kWantLoss) *loss = weighted_focus * bce;
    if (kWantGrad) {
      const T gamma_v = Ops::constant(static_cast<double>(params.gamma.value));
      // For 0/1 targets p(1-p)/m is exactly y p + (1-y) q: no division.
      const T ratio = kBinaryTarget ? (kZeroTarget ? s.q : T(y * s.p + not_y * s.q))
                                    : T(s.p * s.q / Ops::max(m, Ops::tiny()));
      const T gamma_sign = kZeroTarget ? gamma_v : T(gamma_v * (not_y - y));
      *grad = weighted_focus * (gamma_sign * ratio * bce + (kZeroTarget ? s.p : s.p_minus(y)));
    }
  }
};

// ---------------------------------------------------------------------------
// Quality focal loss (Li et al., "Generalized Focal Loss"; mmdet's
// QualityFocalLoss): for a joint class-quality score y in [0, 1],
//   QFL = BCE(x, y) |y - p|^beta,
// which covers mmdet's three forms at once: negatives (y = 0) give
// BCE(x, 0) p^beta, the positive column gives BCE(x, score) |score - p|^beta.
// activated: x is the probability p itself, and BCE is torch's
// binary_cross_entropy (log clamped at -100, derivative divided by
// max(p (1 - p), 1e-12)), as mmdet's quality_focal_loss_with_prob.
// ---------------------------------------------------------------------------
struct QualityFocal {
  template <typename acc_t>
  struct Params {
    Exponent<acc_t> beta;
    bool activated;
  };
  template <typename acc_t>
  static Params<acc_t> make(double beta, bool activated) {
    return {make_exponent<acc_t>(beta), activated};
  }
  static const char* validate(double beta, bool) {
    return check_exponent(beta, "beta must be a finite number >= 0");
  }

  template <class Ops, bool kWantLoss, bool kWantGrad, bool kBinaryTarget, bool kZeroTarget,
            typename acc_t>
  static FOCAL_HOST_DEVICE void eval(const Params<acc_t>& params, typename Ops::Value x,
                                     typename Ops::Value y, typename Ops::Value w,
                                     const typename Ops::Value*, typename Ops::Value* loss,
                                     typename Ops::Value* grad) {
    using T = typename Ops::Value;
    T l, g;
    if (params.activated) {
      probability_qfl<Ops, kWantLoss, kWantGrad>(x, y, params.beta, &l, &g);
    } else {
      quality_modulated_bce<Ops, acc_t, kWantLoss, kWantGrad, kZeroTarget>(Logistic<Ops>(x), y,
                                                                            params.beta, &l, &g);
    }
    if (kWantLoss) *loss = w * l;
    if (kWantGrad) *grad = w * g;
  }

 private:
  template <class Ops, bool kWantLoss, bool kWantGrad, typename acc_t>
  static FOCAL_COLD_PATH void probability_qfl(typename Ops::Value p, typename Ops::Value y,
                                              const Exponent<acc_t>& beta,
                                              typename Ops::Value* loss,
                                              typename Ops::Value* grad) {
    using T = typename Ops::Value;
    const T zero = Ops::constant(0.0), one = Ops::constant(1.0);
    const T log_floor = Ops::constant(-100.0);
    const T log_p = Ops::max(Ops::log(p), log_floor);
    const T log_q = Ops::max(Ops::log(T(one - p)), log_floor);
    const T bce = zero - (y * log_p + (one - y) * log_q);
    const T d = p - y;
    const T abs_d = Ops::abs(d);
    const T focus = pow_exp<Ops>(abs_d, beta);
    if (kWantLoss) *loss = focus * bce;
    if (kWantGrad) {
      const T d_bce = d / Ops::max(T(p * (one - p)), T(Ops::constant(1e-12)));
      const T sign_d = Ops::select(Ops::greater(d, zero), one,
                                   Ops::select(Ops::greater(zero, d), T(zero - one), zero));
      *grad = d_bce * focus + bce * pow_exp_derivative<Ops>(abs_d, beta) * sign_d;
    }
  }
};

// ---------------------------------------------------------------------------
// Varifocal loss (Zhang et al., "VarifocalNet"; mmdet's VarifocalLoss), for an
// IoU-aware target y in [0, 1]:
//   y > 0:  VFL = y BCE(x, y)  (or BCE(x, y) without iou_weighted),
//   y == 0: VFL = alpha |p - y|^gamma BCE(x, y),
// with the modulating factor differentiated as well (mmdet does not detach it).
// A per-class alpha replaces the scalar one.
// ---------------------------------------------------------------------------
struct Varifocal {
  template <typename acc_t>
  struct Params {
    acc_t alpha;
    Exponent<acc_t> gamma;
    bool iou_weighted;
  };
  template <typename acc_t>
  static Params<acc_t> make(double alpha, double gamma, bool iou_weighted) {
    return {static_cast<acc_t>(alpha), make_exponent<acc_t>(gamma), iou_weighted};
  }
  static const char* validate(double alpha, double gamma, bool) {
    if (!(alpha >= 0.0 && alpha <= 1.0)) return "alpha must be in [0, 1]";
    return check_exponent(gamma, "gamma must be a finite number >= 0");
  }

  template <class Ops, bool kWantLoss, bool kWantGrad, bool kBinaryTarget, bool kZeroTarget,
            typename acc_t>
  static FOCAL_HOST_DEVICE void eval(const Params<acc_t>& params, typename Ops::Value x,
                                     typename Ops::Value y, typename Ops::Value w,
                                     const typename Ops::Value* class_alpha,
                                     typename Ops::Value* loss, typename Ops::Value* grad) {
    using T = typename Ops::Value;
    const T zero = Ops::constant(0.0);
    const Logistic<Ops> s(x);
    T neg_loss, neg_grad;
    quality_modulated_bce<Ops, acc_t, kWantLoss, kWantGrad, kZeroTarget>(s, y, params.gamma,
                                                                          &neg_loss, &neg_grad);
    const T neg_scale = w * (class_alpha ? *class_alpha : T(params.alpha));
    if (kZeroTarget) {  // every lane a negative
      if (kWantLoss) *loss = neg_scale * neg_loss;
      if (kWantGrad) *grad = neg_scale * neg_grad;
      return;
    }
    const typename Ops::Mask positive = Ops::greater(y, zero);
    const T pos_scale = w * (params.iou_weighted ? y : T(Ops::constant(1.0)));
    if (kWantLoss) *loss = Ops::select(positive, T(pos_scale * s.bce(y)), T(neg_scale * neg_loss));
    if (kWantGrad) {
      *grad = Ops::select(positive, T(pos_scale * s.p_minus(y)), T(neg_scale * neg_grad));
    }
  }
};

// ---------------------------------------------------------------------------
// Gaussian focal loss (Law and Deng, "CornerNet"; mmdet's GaussianFocalLoss),
// for a gaussian heatmap target g in [0, 1], positives where g == 1:
//   pos_weight [g == 1] (1 - p)^alpha (-log p) + neg_weight (1 - g)^gamma p^alpha (-log(1 - p)).
// Probability input (the default, as CenterNet's heads pass it): mmdet's eps
// of 1e-12 inside both logs, computed in float32 or float64 even for
// half-precision inputs. logits: p = sigmoid(x), exact log-sigmoids, no eps:
//   d/dx = pos_weight [g == 1] q^alpha (alpha p log p - q)
//        + neg_weight (1 - g)^gamma p^alpha (p - alpha q log q).
// ---------------------------------------------------------------------------
struct GaussianFocal {
  template <typename acc_t>
  struct Params {
    Exponent<acc_t> alpha, gamma;
    acc_t pos_weight, neg_weight;
    bool logits;
  };
  template <typename acc_t>
  static Params<acc_t> make(double alpha, double gamma, double pos_weight, double neg_weight,
                            bool logits) {
    return {make_exponent<acc_t>(alpha), make_exponent<acc_t>(gamma),
            static_cast<acc_t>(pos_weight), static_cast<acc_t>(neg_weight), logits};
  }
  static const char* validate(double alpha, double gamma, double pos_weight, double neg_weight,
                              bool) {
    const char* error = check_exponent(alpha, "alpha must be a finite number >= 0");
    if (!error) error = check_exponent(gamma, "gamma must be a finite number >= 0");
    if (!error) error = check_exponent(pos_weight, "pos_weight must be a finite number >= 0");
    if (!error) error = check_exponent(neg_weight, "neg_weight must be a finite number >= 0");
    return error;
  }

  template <class Ops, bool kWantLoss, bool kWantGrad, bool kBinaryTarget, bool kZeroTarget,
            typename acc_t>
  static FOCAL_HOST_DEVICE void eval(const Params<acc_t>& params, typename Ops::Value x,
                                     typename Ops::Value g, typename Ops::Value w,
                                     const typename Ops::Value*, typename Ops::Value* loss,
                                     typename Ops::Value* grad) {
    using T = typename Ops::Value;
    const T zero = Ops::constant(0.0), one = Ops::constant(1.0);
    const typename Ops::Mask positive = Ops::equal(g, one);
    // kZeroTarget (g == 0 in every lane, most of a heatmap): (1 - g)^gamma is
    // 1 and no lane is a peak.
    const T neg = kZeroTarget ? T(w * params.neg_weight)
                              : T(w * params.neg_weight * pow_exp<Ops>(T(one - g), params.gamma));
    const T alpha_v = Ops::constant(static_cast<double>(params.alpha.value));
    T p, q, log_q, log_p = zero;
    // Peaks (g == 1) are rare: their log p term is skipped where no lane has one.
    const bool any_positive = !kZeroTarget && Ops::any(positive);
    if (params.logits) {
      const Logistic<Ops> s(x);
      p = s.p;
      q = s.q;
      log_q = s.log_q();
      if (any_positive) log_p = s.log_p();
    } else {
      const T eps = Ops::constant(1e-12);
      p = x;
      q = one - x;
      log_q = Ops::log(T(q + eps));
      if (any_positive) log_p = Ops::log(T(p + eps));
    }
    const T p_alpha = pow_exp<Ops>(p, params.alpha);
    T loss_v = zero - neg * p_alpha * log_q;
    T grad_v;
    if (kWantGrad) {
      grad_v = params.logits ? T(neg * p_alpha * (p - alpha_v * q * log_q))
                             : T(neg * (p_alpha / (q + Ops::constant(1e-12)) -
                                        pow_exp_derivative<Ops>(p, params.alpha) * log_q));
    }
    if (any_positive) {
      const T pos = Ops::select(positive, T(w * params.pos_weight), zero);
      const T q_alpha = pow_exp<Ops>(q, params.alpha);
      loss_v = loss_v - pos * q_alpha * log_p;
      if (kWantGrad) {
        // d/dp: alpha (1-p)^(alpha-1) log p - (1-p)^alpha / p (probabilities),
        // q^alpha (alpha p log p - q) per logit.
        grad_v = grad_v + pos * (params.logits
                                     ? T(q_alpha * (alpha_v * p * log_p - q))
                                     : T(pow_exp_derivative<Ops>(q, params.alpha) * log_p -
                                         q_alpha / (p + Ops::constant(1e-12))));
      }
    }
    if (kWantLoss) *loss = loss_v;
    if (kWantGrad) *grad = grad_v;
  }
};

// ---------------------------------------------------------------------------
// Softmax focal loss of one row, from log p_t = x_t - logsumexp(x).
// Returns the loss and the row coefficient c with dFL/dx_j = c * (p_j - [j == t]).
//   FL = -alpha_t u^gamma log p_t,  u = 1 - p_t = -expm1(log p_t),
//   c  =  alpha_t u^gamma (1 - gamma p_t log(p_t) / u),
// where log(p_t)/u -> -1 as u -> 0, so c stays finite for gamma < 1 too.
// ---------------------------------------------------------------------------
struct SoftmaxFocal {
  template <typename acc_t>
  struct Params {
    Exponent<acc_t> gamma;
    acc_t alpha;  // the same factor for every row, 1 without alpha
  };
  template <typename acc_t>
  static Params<acc_t> make(double gamma, std::optional<double> alpha) {
    return {make_exponent<acc_t>(gamma), static_cast<acc_t>(alpha ? *alpha : 1.0)};
  }
  static const char* validate(double gamma, std::optional<double> alpha) {
    return SigmoidFocal::validate(gamma, alpha);
  }

  template <class Ops, typename acc_t>
  static FOCAL_HOST_DEVICE void row(const Params<acc_t>& params, typename Ops::Value log_pt,
                                    typename Ops::Value alpha_t, typename Ops::Value* loss,
                                    typename Ops::Value* coef) {
    using T = typename Ops::Value;
    const T one = Ops::constant(1.0);
    // log p_t <= 0 in exact arithmetic; an approximate log in the caller's
    // logsumexp could push it just above 0, which would make u < 0 and u^gamma
    // NaN for non-integer gamma. (A NaN log_pt stays NaN: the comparison is false.)
    log_pt = Ops::select(Ops::greater(log_pt, T(Ops::constant(0.0))), T(Ops::constant(0.0)), log_pt);
    const T p_t = Ops::exp(log_pt);
    const T u = T(Ops::constant(0.0)) - Ops::expm1(log_pt);
    const T focus = alpha_t * pow_exp<Ops>(u, params.gamma);
    const T log_pt_over_u = Ops::select(Ops::greater(u, Ops::tiny()),
                                        log_pt / Ops::max(u, Ops::tiny()),
                                        T(Ops::constant(-1.0)));
    if (loss) *loss = T(Ops::constant(0.0)) - focus * log_pt;
    if (coef) {
      *coef = focus *
              (one - Ops::constant(static_cast<double>(params.gamma.value)) * p_t * log_pt_over_u);
    }
  }
};

}  // namespace math
}  // namespace focal_plugin
