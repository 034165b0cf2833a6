// CPU kernels of the row-wise member of the family, the softmax focal loss:
// one row at a time (vectorised logsumexp, math::SoftmaxFocal::row), parallel
// over rows with the same deterministic chunking as the elementwise kernels.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "../focal_loss_ops.h"
#include "cpu_kernel_utils.h"
#include "cpu_output_cache.h"
#include "vectorized_ops.h"

namespace focal_plugin {
namespace cpu {
namespace {

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
  return row_max + static_cast<acc_t>(std::log(IO::sum(vsum)));
}

// Loss and gradient coefficient of row i (see math::SoftmaxFocal::row);
// returns false for an ignored row.
template <typename scalar_t, typename acc_t, typename Params>
bool softmax_focal_row(const LossArgs<scalar_t, acc_t, Params>& a, int64_t i, acc_t* lse,
                       acc_t* loss, acc_t* coef) {
  const int64_t label = a.labels[i];
  if (label == a.ignore_index) return false;
  const scalar_t* x = a.pred + i * a.classes;
  *lse = row_logsumexp<scalar_t, acc_t>(x, a.classes);
  const acc_t log_pt = static_cast<acc_t>(x[label]) - *lse;
  acc_t alpha_t = a.class_alpha != nullptr ? a.class_alpha[label] : a.params.alpha;
  if (a.weight != nullptr) alpha_t *= a.weight[i];
  math::SoftmaxFocal::row<math::ScalarOps<acc_t>>(a.params, log_pt, alpha_t, loss, coef);
  return true;
}

// The CPU backend of focal_loss_ops.h for the row-wise member.
struct CpuSoftmax {
  static constexpr bool kElementwise = false;

  template <typename Loss, typename Scalars>
  static at::Tensor forward(const Inputs& in, const Scalars& scalars) {
    check_label_targets<Loss>(in);
    const auto acc_options = in.pred.options().dtype(accumulate_type(in.pred.scalar_type()));
    at::Tensor out = in.sum ? at::empty({}, acc_options) : at::empty({in.rows()}, in.pred.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.pred.scalar_type(), Loss::kName, [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto a = make_args<Loss, scalar_t, acc_t>(in, scalars);
      scalar_t* row_out = in.sum ? nullptr : out.data_ptr<scalar_t>();
      const double total = chunked_sum(a.rows, rows_per_chunk(a.classes), [&](int64_t i) {
        acc_t lse, loss = 0;
        if (!softmax_focal_row(a, i, &lse, &loss, static_cast<acc_t*>(nullptr))) loss = 0;
        if (row_out != nullptr) row_out[i] = static_cast<scalar_t>(loss);
        return static_cast<double>(loss);
      });
      if (in.sum) out.fill_(total);
    });
    return out;
  }

  template <typename Loss, typename Scalars>
  static at::Tensor backward(const at::Tensor& grad_output, const Inputs& in,
                             const Scalars& scalars) {
    check_label_targets<Loss>(in);
    at::Tensor grad_input = cpu_cache_tensor(in.pred.sizes(), in.pred.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.pred.scalar_type(), Loss::kName, [&] {
      using acc_t = at::opmath_type<scalar_t>;
      using Vec = Vectorized<acc_t>;
      using IO = Lanes<scalar_t, acc_t>;
      constexpr int64_t kLanes = Vec::size();
      const auto a = make_args<Loss, scalar_t, acc_t>(in, scalars);
      const int64_t C = a.classes;
      const auto go = grad_output.to(accumulate_type(in.pred.scalar_type())).contiguous();
      const acc_t* go_data = go.data_ptr<acc_t>();
      scalar_t* grad_out = grad_input.data_ptr<scalar_t>();
      chunked_sum(a.rows, rows_per_chunk(C), [&](int64_t i) {
        scalar_t* g_row = grad_out + i * C;
        acc_t lse, coef;
        if (!softmax_focal_row(a, i, &lse, static_cast<acc_t*>(nullptr), &coef)) {
          std::fill(g_row, g_row + C, scalar_t(0));
          return 0.0;
        }
        const acc_t scale = coef * go_data[in.sum ? 0 : i];
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
        return 0.0;
      });
    });
    return grad_input;
  }
};

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_IMPL(focal_plugin, CPU, m) {
  impl_family<cpu::CpuSoftmax>(m);
}

}  // namespace focal_plugin
