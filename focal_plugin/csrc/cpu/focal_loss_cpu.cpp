// CPU kernels of the focal_plugin ops: vectorised with at::vec::Vectorized,
// parallel with at::parallel_for, and deterministic: reductions use a fixed
// chunking of rows, each chunk summed in order, chunks combined in order, so
// 1 and N threads give bitwise-identical results.
//
// Memory: no N x C temporaries; the only N x C buffer is the output itself
// (the per-element loss for reduction 'none', or the gradient), taken from
// output_buffer_cache.h so that its pages are not faulted in afresh per step.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../focal_loss_checks.h"
#include "../focal_loss_math.h"
#include "output_buffer_cache.h"
#include "vectorized_ops.h"

namespace focal_plugin {
namespace {

using at::vec::Vectorized;

// Rows are grouped into chunks of about this many elements: the unit of
// parallel work and of the deterministic reduction.
constexpr int64_t kChunkElements = 16384;

int64_t rows_per_chunk(int64_t num_classes) {
  return std::max<int64_t>(1, kChunkElements / num_classes);
}

// Loads / stores n <= Vectorized<acc_t>::size() values of scalar_t as acc_t
// lanes; half and bfloat16 are widened to float. Missing lanes read as zero.
template <typename scalar_t, typename acc_t>
struct Lanes {
  using Vec = Vectorized<acc_t>;
  // Whole vectors of half/bfloat16 convert in registers: at::vec::convert
  // would take its scalar tail loop for fewer than 2 * Vec::size() values,
  // which made the reduced-precision kernels 2.5x slower than float32.
  static Vec load(const scalar_t* p, int64_t n) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      return Vec::loadu(p, n);
    } else {
      if (n == Vec::size()) {
        Vec v;
        at::vec::load_to_float<scalar_t>(p, v);
        return v;
      }
      acc_t buf[Vec::size()];
      at::vec::convert(p, buf, n);
      return Vec::loadu(buf, n);
    }
  }
  static void store(const Vec& v, scalar_t* p, int64_t n) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      v.store(p, n);
    } else {
      // One reduced vector holds two float vectors; the second half is unused.
      at::vec::convert_from_float<scalar_t>(v, v).store(p, n);
    }
  }
  // Sum of the first n lanes, in lane order, in double.
  static double sum(const Vec& v, int64_t n) {
    acc_t buf[Vec::size()];
    v.store(buf);
    double total = 0;
    for (int64_t k = 0; k < n; ++k) total += buf[k];
    return total;
  }
};

// CPU labels are validated before any arithmetic, so a bad label is a clear
// ValueError naming it, never a silent wrong loss.
void check_labels(const at::Tensor& labels, int64_t max_label, int64_t ignore_index,
                  const char* expected) {
  const int64_t* data = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < labels.numel(); ++i) {
    const int64_t l = data[i];
    TORCH_CHECK_VALUE(l == ignore_index || (l >= 0 && l <= max_label),
                      "focal_plugin: target holds label ", l, " at row ", i, "; expected ",
                      expected, " 0..", max_label, " or ignore_index=", ignore_index);
  }
}

// Checked, contiguous inputs of one call; CPU labels are validated here.
struct Inputs {
  at::Tensor pred, target;
  std::optional<at::Tensor> weight, class_alpha;
};

Inputs prepare(const at::Tensor& pred, const at::Tensor& target,
               const std::optional<at::Tensor>& weight,
               const std::optional<at::Tensor>& class_alpha, double gamma, int64_t reduction,
               int64_t ignore_index, bool sigmoid) {
  check_focal_inputs(pred, target, weight, class_alpha, gamma, reduction, sigmoid);
  Inputs in{pred.contiguous(), target.contiguous(), std::nullopt, std::nullopt};
  if (weight) in.weight = weight->contiguous();
  if (class_alpha) in.class_alpha = class_alpha->contiguous();
  if (in.target.scalar_type() == at::kLong) {
    if (sigmoid) {
      check_labels(in.target, pred.size(1), ignore_index, "a class index or the background label");
    } else {
      check_labels(in.target, pred.size(1) - 1, ignore_index, "a class index");
    }
  }
  return in;
}

// Deterministic parallel sum over rows: rows are cut into fixed chunks,
// row_sum(i) is added in row order within a chunk, and the chunk totals in
// chunk order, so the result does not depend on the thread count.
template <typename RowSum>
double chunked_sum(int64_t rows, int64_t chunk_rows, const RowSum& row_sum) {
  const int64_t num_chunks = (rows + chunk_rows - 1) / chunk_rows;
  std::vector<double> partial(num_chunks, 0.0);
  at::parallel_for(0, num_chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      double total = 0;
      const int64_t row_end = std::min(rows, (chunk + 1) * chunk_rows);
      for (int64_t i = chunk * chunk_rows; i < row_end; ++i) total += row_sum(i);
      partial[chunk] = total;
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

template <typename scalar_t, typename acc_t>
struct FocalArgs {
  const scalar_t* pred = nullptr;
  const int64_t* labels = nullptr;      // hard targets, or
  const scalar_t* soft_target = nullptr;  // soft (N, C) targets
  const acc_t* weight = nullptr;
  bool weight_per_element = false;
  const acc_t* class_alpha = nullptr;
  acc_t alpha_pos = 1, alpha_neg = 1;   // used when class_alpha is null
  math::Gamma<acc_t> gamma{};
  int64_t rows = 0, classes = 0, ignore_index = -1;
};

template <typename scalar_t, typename acc_t>
FocalArgs<scalar_t, acc_t> make_args(const Inputs& in, double gamma, std::optional<double> alpha,
                                     int64_t ignore_index) {
  const at::Tensor& pred = in.pred;
  const at::Tensor& target = in.target;
  const std::optional<at::Tensor>& weight = in.weight;
  const std::optional<at::Tensor>& class_alpha = in.class_alpha;
  FocalArgs<scalar_t, acc_t> a;
  a.pred = pred.data_ptr<scalar_t>();
  if (target.scalar_type() == at::kLong) {
    a.labels = target.data_ptr<int64_t>();
  } else {
    a.soft_target = target.data_ptr<scalar_t>();
  }
  if (weight.has_value()) {
    a.weight = weight->data_ptr<acc_t>();
    a.weight_per_element = weight->dim() == 2;
  }
  if (class_alpha.has_value()) a.class_alpha = class_alpha->data_ptr<acc_t>();
  if (alpha.has_value()) {
    a.alpha_pos = static_cast<acc_t>(*alpha);
    a.alpha_neg = static_cast<acc_t>(1.0 - *alpha);
  }
  a.gamma = math::make_gamma<acc_t>(gamma);
  a.rows = pred.size(0);
  a.classes = pred.size(1);
  a.ignore_index = ignore_index;
  return a;
}

// ----------------------------------------------------------------------------
// Sigmoid focal loss
// ----------------------------------------------------------------------------

// Evaluates row i and hands each group of lanes to sink(offset, n, loss, grad).
// Ignored rows are handed zeros (even for NaN logits: they are not part of the loss).
template <bool kLoss, bool kGrad, bool kBinary, typename scalar_t, typename acc_t, typename Sink>
inline void sigmoid_focal_row_impl(const FocalArgs<scalar_t, acc_t>& a, int64_t i, Sink&& sink) {
  using Vec = Vectorized<acc_t>;
  using IO = Lanes<scalar_t, acc_t>;
  using Ops = math::VectorizedOps<acc_t>;
  constexpr int64_t kLanes = Vec::size();
  const int64_t C = a.classes;
  const int64_t row_offset = i * C;
  const Vec zero(acc_t(0)), one(acc_t(1));

  acc_t row_weight = (a.weight != nullptr && !a.weight_per_element) ? a.weight[i] : acc_t(1);
  const int64_t label = a.labels != nullptr ? a.labels[i] : -1;
  if (a.labels != nullptr && label == a.ignore_index) {
    for (int64_t j = 0; j < C; j += kLanes) sink(row_offset + j, std::min(kLanes, C - j), zero, zero);
    return;
  }
  alignas(64) acc_t lane_index[kLanes];
  for (int64_t k = 0; k < kLanes; ++k) lane_index[k] = static_cast<acc_t>(k);
  const Vec iota = Vec::loadu(lane_index);

  for (int64_t j = 0; j < C; j += kLanes) {
    const int64_t n = std::min(kLanes, C - j);
    const Vec x = IO::load(a.pred + row_offset + j, n);
    // The label is compared as a lane offset below kLanes, which every float
    // type holds exactly (a float label would round for C > 2^24).
    const int64_t label_lane = label - j;
    const Vec y = a.labels == nullptr ? IO::load(a.soft_target + row_offset + j, n)
                  : (label_lane >= 0 && label_lane < kLanes)
                      ? Vec::blendv(zero, one, iota == Vec(static_cast<acc_t>(label_lane)))
                      : zero;
    Vec w_pos(a.alpha_pos), w_neg(a.alpha_neg);
    if (a.class_alpha != nullptr) {
      w_pos = Vec::loadu(a.class_alpha + j, n);
      w_neg = one - w_pos;
    }
    Vec w(row_weight);
    if (a.weight_per_element) w = w * Vec::loadu(a.weight + row_offset + j, n);
    Vec loss, grad;
    math::sigmoid_focal<Ops, acc_t, kLoss, kGrad, kBinary>(x, y, w_pos * w, w_neg * w, a.gamma,
                                                           &loss, &grad);
    sink(row_offset + j, n, loss, grad);
  }
}

template <bool kLoss, bool kGrad, typename scalar_t, typename acc_t, typename Sink>
inline void sigmoid_focal_row(const FocalArgs<scalar_t, acc_t>& a, int64_t i, Sink&& sink) {
  if (a.labels != nullptr) {
    sigmoid_focal_row_impl<kLoss, kGrad, true>(a, i, sink);
  } else {
    sigmoid_focal_row_impl<kLoss, kGrad, false>(a, i, sink);
  }
}

at::Tensor sigmoid_focal_loss_cpu(const at::Tensor& pred, const at::Tensor& target,
                                  const std::optional<at::Tensor>& weight,
                                  const std::optional<at::Tensor>& class_alpha, double gamma,
                                  std::optional<double> alpha, int64_t reduction,
                                  int64_t ignore_index) {
  const auto in = prepare(pred, target, weight, class_alpha, gamma, reduction, ignore_index, true);
  const int64_t N = pred.size(0), C = pred.size(1);
  at::Tensor out = reduction == 0
                       ? empty_output({N, C}, pred.options())
                       : at::empty({}, pred.options().dtype(accumulate_type(pred.scalar_type())));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(),
                                  "sigmoid_focal_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using Vec = Vectorized<acc_t>;
    using IO = Lanes<scalar_t, acc_t>;
    const auto a = make_args<scalar_t, acc_t>(in, gamma, alpha, ignore_index);
    if (reduction == 0) {
      scalar_t* loss_out = out.data_ptr<scalar_t>();
      at::parallel_for(0, N, rows_per_chunk(C), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          sigmoid_focal_row<true, false>(a, i, [&](int64_t off, int64_t n, const Vec& loss, const Vec&) {
            IO::store(loss, loss_out + off, n);
          });
        }
      });
    } else {
      out.fill_(chunked_sum(N, rows_per_chunk(C), [&](int64_t i) {
        Vec row_sum(acc_t(0));
        sigmoid_focal_row<true, false>(a, i, [&](int64_t, int64_t n, const Vec& loss, const Vec&) {
          row_sum = row_sum + Vec::set(Vec(acc_t(0)), loss, n);
        });
        return IO::sum(row_sum, Vec::size());
      }));
    }
  });
  return out;
}

// Training path: the loss and its per-element derivative in one pass, so the
// transcendental functions run once per element instead of twice.
std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_with_grad_cpu(
    const at::Tensor& pred, const at::Tensor& target, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& class_alpha, double gamma, std::optional<double> alpha,
    int64_t reduction, int64_t ignore_index) {
  const auto in = prepare(pred, target, weight, class_alpha, gamma, reduction, ignore_index, true);
  const int64_t N = pred.size(0), C = pred.size(1);
  at::Tensor loss_out = reduction == 0
                            ? empty_output({N, C}, pred.options())
                            : at::empty({}, pred.options().dtype(accumulate_type(pred.scalar_type())));
  at::Tensor grad_out = empty_output({N, C}, pred.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(),
                                  "sigmoid_focal_loss_with_grad_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using Vec = Vectorized<acc_t>;
    using IO = Lanes<scalar_t, acc_t>;
    const auto a = make_args<scalar_t, acc_t>(in, gamma, alpha, ignore_index);
    scalar_t* grad = grad_out.data_ptr<scalar_t>();
    scalar_t* loss_none = reduction == 0 ? loss_out.data_ptr<scalar_t>() : nullptr;
    const double total = chunked_sum(N, rows_per_chunk(C), [&](int64_t i) {
      Vec row_sum(acc_t(0));
      sigmoid_focal_row<true, true>(a, i, [&](int64_t off, int64_t n, const Vec& l, const Vec& g) {
        IO::store(g, grad + off, n);
        if (loss_none != nullptr) {
          IO::store(l, loss_none + off, n);
        } else {
          row_sum = row_sum + Vec::set(Vec(acc_t(0)), l, n);
        }
      });
      return IO::sum(row_sum, Vec::size());
    });
    if (reduction == 1) loss_out.fill_(total);
  });
  return {loss_out, grad_out};
}

at::Tensor sigmoid_focal_loss_backward_cpu(const at::Tensor& grad_output, const at::Tensor& pred,
                                           const at::Tensor& target,
                                           const std::optional<at::Tensor>& weight,
                                           const std::optional<at::Tensor>& class_alpha,
                                           double gamma, std::optional<double> alpha,
                                           int64_t reduction, int64_t ignore_index) {
  const auto in = prepare(pred, target, weight, class_alpha, gamma, reduction, ignore_index, true);
  check_grad_output(grad_output, pred, reduction, true);
  const int64_t N = pred.size(0), C = pred.size(1);
  at::Tensor grad_input = empty_output({N, C}, pred.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(),
                                  "sigmoid_focal_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using Vec = Vectorized<acc_t>;
    using IO = Lanes<scalar_t, acc_t>;
    const auto a = make_args<scalar_t, acc_t>(in, gamma, alpha, ignore_index);
    scalar_t* grad_out = grad_input.data_ptr<scalar_t>();
    // grad_output is per element ('none') or one scalar ('sum', read once on
    // the host: a CPU tensor, so no device synchronisation).
    const auto go = reduction == 0 ? grad_output.to(pred.scalar_type()).contiguous()
                                   : grad_output.to(at::kDouble);
    const scalar_t* go_data = reduction == 0 ? go.data_ptr<scalar_t>() : nullptr;
    const Vec scale(reduction == 0 ? acc_t(1) : static_cast<acc_t>(go.item<double>()));
    at::parallel_for(0, N, rows_per_chunk(C), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        sigmoid_focal_row<false, true>(a, i, [&](int64_t off, int64_t n, const Vec&, const Vec& g) {
          const Vec go_v = go_data != nullptr ? IO::load(go_data + off, n) : scale;
          IO::store(g * go_v, grad_out + off, n);
        });
      }
    });
  });
  return grad_input;
}

// ----------------------------------------------------------------------------
// Softmax focal loss
// ----------------------------------------------------------------------------

// log-sum-exp of row i, vectorised; NaN anywhere in the row gives NaN.
template <typename scalar_t, typename acc_t>
acc_t row_logsumexp(const scalar_t* x, int64_t C) {
  using Vec = Vectorized<acc_t>;
  using IO = Lanes<scalar_t, acc_t>;
  constexpr int64_t kLanes = Vec::size();
  const Vec neg_inf(-std::numeric_limits<acc_t>::infinity());
  Vec vmax = neg_inf;
  for (int64_t j = 0; j < C; j += kLanes) {
    const int64_t n = std::min(kLanes, C - j);
    vmax = at::vec::maximum(vmax, Vec::set(neg_inf, IO::load(x + j, n), n));
  }
  acc_t lanes[kLanes];
  vmax.store(lanes);
  acc_t row_max = lanes[0];
  for (int64_t k = 1; k < kLanes; ++k) {
    row_max = (lanes[k] > row_max || lanes[k] != lanes[k]) ? lanes[k] : row_max;
  }
  if (row_max != row_max) return row_max;
  const Vec m(row_max);
  Vec vsum(acc_t(0));
  for (int64_t j = 0; j < C; j += kLanes) {
    const int64_t n = std::min(kLanes, C - j);
    vsum = vsum + Vec::set(Vec(acc_t(0)), (IO::load(x + j, n) - m).exp(), n);
  }
  return row_max + static_cast<acc_t>(std::log(IO::sum(vsum, kLanes)));
}

// Loss and gradient coefficient of row i (see math::softmax_focal_row);
// returns false for an ignored row.
template <typename scalar_t, typename acc_t>
bool softmax_focal_row_cpu(const FocalArgs<scalar_t, acc_t>& a, int64_t i, acc_t* lse,
                           acc_t* loss, acc_t* coef) {
  const int64_t label = a.labels[i];
  if (label == a.ignore_index) return false;
  const scalar_t* x = a.pred + i * a.classes;
  *lse = row_logsumexp<scalar_t, acc_t>(x, a.classes);
  const acc_t log_pt = static_cast<acc_t>(x[label]) - *lse;
  acc_t alpha_t = a.class_alpha != nullptr ? a.class_alpha[label] : a.alpha_pos;
  if (a.weight != nullptr) alpha_t *= a.weight[i];
  math::softmax_focal_row<math::ScalarOps<acc_t>>(log_pt, alpha_t, a.gamma, loss, coef);
  return true;
}

at::Tensor softmax_focal_loss_cpu(const at::Tensor& pred, const at::Tensor& target,
                                  const std::optional<at::Tensor>& weight,
                                  const std::optional<at::Tensor>& class_alpha, double gamma,
                                  std::optional<double> alpha, int64_t reduction,
                                  int64_t ignore_index) {
  const auto in = prepare(pred, target, weight, class_alpha, gamma, reduction, ignore_index, false);
  const int64_t N = pred.size(0), C = pred.size(1);
  at::Tensor out = reduction == 0
                       ? at::empty({N}, pred.options())
                       : at::empty({}, pred.options().dtype(accumulate_type(pred.scalar_type())));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(),
                                  "softmax_focal_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = make_args<scalar_t, acc_t>(in, gamma, alpha, ignore_index);
    scalar_t* row_out = reduction == 0 ? out.data_ptr<scalar_t>() : nullptr;
    const double total = chunked_sum(N, rows_per_chunk(C), [&](int64_t i) {
      acc_t lse, loss = 0;
      if (!softmax_focal_row_cpu(a, i, &lse, &loss, static_cast<acc_t*>(nullptr))) loss = 0;
      if (row_out != nullptr) row_out[i] = static_cast<scalar_t>(loss);
      return static_cast<double>(loss);
    });
    if (reduction == 1) out.fill_(total);
  });
  return out;
}

at::Tensor softmax_focal_loss_backward_cpu(const at::Tensor& grad_output, const at::Tensor& pred,
                                           const at::Tensor& target,
                                           const std::optional<at::Tensor>& weight,
                                           const std::optional<at::Tensor>& class_alpha,
                                           double gamma, std::optional<double> alpha,
                                           int64_t reduction, int64_t ignore_index) {
  const auto in = prepare(pred, target, weight, class_alpha, gamma, reduction, ignore_index, false);
  check_grad_output(grad_output, pred, reduction, false);
  const int64_t N = pred.size(0), C = pred.size(1);
  at::Tensor grad_input = empty_output({N, C}, pred.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(),
                                  "softmax_focal_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using Vec = Vectorized<acc_t>;
    using IO = Lanes<scalar_t, acc_t>;
    constexpr int64_t kLanes = Vec::size();
    const auto a = make_args<scalar_t, acc_t>(in, gamma, alpha, ignore_index);
    const auto go = grad_output.to(accumulate_type(pred.scalar_type())).contiguous();
    const acc_t* go_data = go.data_ptr<acc_t>();
    const bool per_row_go = reduction == 0;
    scalar_t* grad_out = grad_input.data_ptr<scalar_t>();
    at::parallel_for(0, N, rows_per_chunk(C), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* g_row = grad_out + i * C;
        acc_t lse, coef;
        if (!softmax_focal_row_cpu(a, i, &lse, static_cast<acc_t*>(nullptr), &coef)) {
          std::fill(g_row, g_row + C, scalar_t(0));
          continue;
        }
        const acc_t scale = coef * go_data[per_row_go ? i : 0];
        const Vec scale_v(scale), lse_v(lse);
        const scalar_t* x = a.pred + i * C;
        for (int64_t j = 0; j < C; j += kLanes) {
          const int64_t n = std::min(kLanes, C - j);
          IO::store(scale_v * (IO::load(x + j, n) - lse_v).exp(), g_row + j, n);
        }
        // The target column is scale * (p_t - 1) = scale * expm1(log p_t):
        // written apart so that p_t close to 1 does not cancel.
        const int64_t t = a.labels[i];
        g_row[t] = static_cast<scalar_t>(scale * std::expm1(static_cast<acc_t>(x[t]) - lse));
      }
    });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(focal_plugin, CPU, m) {
  m.impl("sigmoid_focal_loss", &sigmoid_focal_loss_cpu);
  m.impl("sigmoid_focal_loss_backward", &sigmoid_focal_loss_backward_cpu);
  m.impl("sigmoid_focal_loss_with_grad", &sigmoid_focal_loss_with_grad_cpu);
  m.impl("softmax_focal_loss", &softmax_focal_loss_cpu);
  m.impl("softmax_focal_loss_backward", &softmax_focal_loss_backward_cpu);
}

}  // namespace focal_plugin
