// Thin CUDA launchers for the kernels in focal_loss_kernel.cuh, registered
// with TORCH_LIBRARY_IMPL(focal_plugin, CUDA, m).
//
// Only c10/cuda headers are included: ATen/cuda/CUDAContext.h pulls in
// cusparse.h, which some CUDA installs (this project's build machines) lack.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../focal_loss_checks.h"
#include "focal_loss_kernel.cuh"

namespace focal_plugin {
namespace {

using cuda::kThreadsPerBlock;

struct ContiguousInputs {
  at::Tensor pred, target;
  std::optional<at::Tensor> weight, class_alpha;
};

ContiguousInputs contiguous_inputs(const at::Tensor& pred, const at::Tensor& target,
                                   const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& class_alpha) {
  ContiguousInputs in{pred.contiguous(), target.contiguous(), std::nullopt, std::nullopt};
  if (weight) in.weight = weight->contiguous();
  if (class_alpha) in.class_alpha = class_alpha->contiguous();
  return in;
}

template <typename scalar_t, typename acc_t>
cuda::SigmoidFocalParams<scalar_t, acc_t> sigmoid_params(const ContiguousInputs& in, double gamma,
                                                         std::optional<double> alpha,
                                                         int64_t ignore_index) {
  cuda::SigmoidFocalParams<scalar_t, acc_t> p{};
  p.pred = in.pred.data_ptr<scalar_t>();
  const bool hard = in.target.scalar_type() == at::kLong;
  p.labels = hard ? in.target.data_ptr<int64_t>() : nullptr;
  p.soft_target = hard ? nullptr : in.target.data_ptr<scalar_t>();
  p.weight = in.weight ? in.weight->data_ptr<acc_t>() : nullptr;
  p.weight_per_element = in.weight && in.weight->dim() == 2;
  p.class_alpha = in.class_alpha ? in.class_alpha->data_ptr<acc_t>() : nullptr;
  p.alpha_pos = alpha ? static_cast<acc_t>(*alpha) : acc_t(1);
  p.alpha_neg = alpha ? static_cast<acc_t>(1.0 - *alpha) : acc_t(1);
  p.gamma = math::make_gamma<acc_t>(gamma);
  p.rows = in.pred.size(0);
  p.classes = in.pred.size(1);
  p.ignore_index = ignore_index;
  return p;
}

template <typename scalar_t, typename acc_t>
cuda::SoftmaxFocalParams<scalar_t, acc_t> softmax_params(const ContiguousInputs& in, double gamma,
                                                         std::optional<double> alpha,
                                                         int64_t ignore_index) {
  cuda::SoftmaxFocalParams<scalar_t, acc_t> p{};
  p.pred = in.pred.data_ptr<scalar_t>();
  p.labels = in.target.data_ptr<int64_t>();
  p.weight = in.weight ? in.weight->data_ptr<acc_t>() : nullptr;
  p.class_alpha = in.class_alpha ? in.class_alpha->data_ptr<acc_t>() : nullptr;
  p.alpha = alpha ? static_cast<acc_t>(*alpha) : acc_t(1);
  p.gamma = math::make_gamma<acc_t>(gamma);
  p.rows = in.pred.size(0);
  p.classes = in.pred.size(1);
  p.ignore_index = ignore_index;
  return p;
}

// Launches `forward` (which writes per-block partials when reducing), then
// the in-order second pass into a 0-dim tensor.
template <typename acc_t, typename Launch>
at::Tensor reduce_on_device(const at::Tensor& pred, int64_t blocks, cudaStream_t stream,
                            Launch&& forward) {
  const auto acc_options = pred.options().dtype(accumulate_type(pred.scalar_type()));
  at::Tensor partials = at::empty({blocks}, acc_options);
  at::Tensor out = at::empty({}, acc_options);
  forward(partials.data_ptr<acc_t>());
  cuda::sum_partials_kernel<acc_t><<<1, kThreadsPerBlock, 0, stream>>>(
      partials.data_ptr<acc_t>(), blocks, out.data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// Loss (and, with kGrad, the per-element derivative into grad_out).
template <bool kGrad>
at::Tensor sigmoid_focal_forward(const at::Tensor& pred, const at::Tensor& target,
                                 const std::optional<at::Tensor>& weight,
                                 const std::optional<at::Tensor>& class_alpha, double gamma,
                                 std::optional<double> alpha, int64_t reduction,
                                 int64_t ignore_index, at::Tensor* grad_out) {
  check_focal_inputs(pred, target, weight, class_alpha, gamma, reduction, true);
  c10::cuda::CUDAGuard guard(pred.device());
  const auto in = contiguous_inputs(pred, target, weight, class_alpha);
  const int64_t numel = pred.numel();
  const int64_t blocks = cuda::num_blocks(numel, kThreadsPerBlock);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (kGrad) *grad_out = at::empty_like(in.pred);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(),
                                  "sigmoid_focal_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto p = sigmoid_params<scalar_t, acc_t>(in, gamma, alpha, ignore_index);
    scalar_t* grad = kGrad ? grad_out->data_ptr<scalar_t>() : nullptr;
    if (reduction == 0) {
      out = at::empty_like(in.pred);
      if (numel == 0) return;
      cuda::sigmoid_focal_forward_kernel<kGrad><<<blocks, kThreadsPerBlock, 0, stream>>>(
          p, out.data_ptr<scalar_t>(), static_cast<acc_t*>(nullptr), grad);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      out = reduce_on_device<acc_t>(in.pred, blocks, stream, [&](acc_t* partials) {
        cuda::sigmoid_focal_forward_kernel<kGrad><<<blocks, kThreadsPerBlock, 0, stream>>>(
            p, static_cast<scalar_t*>(nullptr), partials, grad);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
  });
  return out;
}

at::Tensor sigmoid_focal_loss_cuda(const at::Tensor& pred, const at::Tensor& target,
                                   const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& class_alpha, double gamma,
                                   std::optional<double> alpha, int64_t reduction,
                                   int64_t ignore_index) {
  return sigmoid_focal_forward<false>(pred, target, weight, class_alpha, gamma, alpha, reduction,
                                      ignore_index, nullptr);
}

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_with_grad_cuda(
    const at::Tensor& pred, const at::Tensor& target, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& class_alpha, double gamma, std::optional<double> alpha,
    int64_t reduction, int64_t ignore_index) {
  at::Tensor grad;
  at::Tensor loss = sigmoid_focal_forward<true>(pred, target, weight, class_alpha, gamma, alpha,
                                                reduction, ignore_index, &grad);
  return {loss, grad};
}

at::Tensor sigmoid_focal_loss_backward_cuda(const at::Tensor& grad_output, const at::Tensor& pred,
                                            const at::Tensor& target,
                                            const std::optional<at::Tensor>& weight,
                                            const std::optional<at::Tensor>& class_alpha,
                                            double gamma, std::optional<double> alpha,
                                            int64_t reduction, int64_t ignore_index) {
  check_focal_inputs(pred, target, weight, class_alpha, gamma, reduction, true);
  check_grad_output(grad_output, pred, reduction, true);
  c10::cuda::CUDAGuard guard(pred.device());
  const auto in = contiguous_inputs(pred, target, weight, class_alpha);
  at::Tensor grad_input = at::empty_like(in.pred);
  const int64_t numel = pred.numel();
  if (numel == 0) return grad_input;
  const int64_t blocks = cuda::num_blocks(numel, kThreadsPerBlock);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(),
                                  "sigmoid_focal_loss_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto p = sigmoid_params<scalar_t, acc_t>(in, gamma, alpha, ignore_index);
    at::Tensor go;
    const scalar_t* go_per_element = nullptr;
    const acc_t* go_scalar = nullptr;
    if (reduction == 0) {
      go = grad_output.to(pred.scalar_type()).contiguous();
      go_per_element = go.data_ptr<scalar_t>();
    } else {
      go = grad_output.to(accumulate_type(pred.scalar_type())).reshape({});
      go_scalar = go.data_ptr<acc_t>();
    }
    cuda::sigmoid_focal_backward_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(
        p, go_per_element, go_scalar, grad_input.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

constexpr int64_t kRowsPerBlock = kThreadsPerBlock / cuda::kWarpSize;

at::Tensor softmax_focal_loss_cuda(const at::Tensor& pred, const at::Tensor& target,
                                   const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& class_alpha, double gamma,
                                   std::optional<double> alpha, int64_t reduction,
                                   int64_t ignore_index) {
  check_focal_inputs(pred, target, weight, class_alpha, gamma, reduction, false);
  c10::cuda::CUDAGuard guard(pred.device());
  const auto in = contiguous_inputs(pred, target, weight, class_alpha);
  const int64_t rows = pred.size(0);
  const int64_t blocks = cuda::num_blocks(rows, kRowsPerBlock);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(),
                                  "softmax_focal_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto p = softmax_params<scalar_t, acc_t>(in, gamma, alpha, ignore_index);
    if (reduction == 0) {
      out = at::empty({rows}, in.pred.options());
      if (rows == 0) return;
      cuda::softmax_focal_forward_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(
          p, out.data_ptr<scalar_t>(), static_cast<acc_t*>(nullptr));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      out = reduce_on_device<acc_t>(in.pred, blocks, stream, [&](acc_t* partials) {
        cuda::softmax_focal_forward_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(
            p, static_cast<scalar_t*>(nullptr), partials);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
  });
  return out;
}

at::Tensor softmax_focal_loss_backward_cuda(const at::Tensor& grad_output, const at::Tensor& pred,
                                            const at::Tensor& target,
                                            const std::optional<at::Tensor>& weight,
                                            const std::optional<at::Tensor>& class_alpha,
                                            double gamma, std::optional<double> alpha,
                                            int64_t reduction, int64_t ignore_index) {
  check_focal_inputs(pred, target, weight, class_alpha, gamma, reduction, false);
  check_grad_output(grad_output, pred, reduction, false);
  c10::cuda::CUDAGuard guard(pred.device());
  const auto in = contiguous_inputs(pred, target, weight, class_alpha);
  at::Tensor grad_input = at::empty_like(in.pred);
  const int64_t rows = pred.size(0);
  if (pred.numel() == 0) return grad_input;
  const int64_t blocks = cuda::num_blocks(rows, kRowsPerBlock);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(),
                                  "softmax_focal_loss_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto p = softmax_params<scalar_t, acc_t>(in, gamma, alpha, ignore_index);
    const auto go = grad_output.to(accumulate_type(pred.scalar_type())).contiguous();
    cuda::softmax_focal_backward_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(
        p, go.data_ptr<acc_t>(), reduction == 0, grad_input.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(focal_plugin, CUDA, m) {
  m.impl("sigmoid_focal_loss", &sigmoid_focal_loss_cuda);
  m.impl("sigmoid_focal_loss_backward", &sigmoid_focal_loss_backward_cuda);
  m.impl("sigmoid_focal_loss_with_grad", &sigmoid_focal_loss_with_grad_cuda);
  m.impl("softmax_focal_loss", &softmax_focal_loss_cuda);
  m.impl("softmax_focal_loss_backward", &softmax_focal_loss_backward_cuda);
}

}  // namespace focal_plugin
