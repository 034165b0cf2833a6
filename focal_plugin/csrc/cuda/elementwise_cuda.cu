// CUDA launchers of the elementwise members of the family: one launch
// function for the forward, training (loss and gradient in one pass) and
// backward kernels of every member (elementwise_kernel.cuh), registered with
// TORCH_LIBRARY_IMPL(focal_plugin, CUDA, m).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <tuple>

#include "../focal_loss_ops.h"
#include "cuda_launch.h"
#include "elementwise_kernel.cuh"

namespace focal_plugin {
namespace cuda {
namespace {

// kLoss: returns the loss (unreduced, or summed on the device). kGrad: fills
// *grad with the derivative, times grad_output when one is given (one value
// when it is 0-dim, else one per element).
template <typename Loss, bool kLoss, bool kGrad, typename Scalars>
at::Tensor launch(const Inputs& in, const Scalars& scalars, at::Tensor* grad,
                  const at::Tensor* grad_output) {
  c10::cuda::CUDAGuard guard(in.pred.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t blocks = num_blocks(in.pred.numel(), kThreadsPerBlock);
  if (kGrad) *grad = at::empty_like(in.pred);
  at::Tensor loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.pred.scalar_type(), Loss::kName, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = make_args<Loss, scalar_t, acc_t>(in, scalars);
    scalar_t* grad_out = kGrad ? grad->data_ptr<scalar_t>() : nullptr;
    // grad_output: per element in pred's dtype, or one value in the
    // accumulation dtype that the kernel reads on the device.
    at::Tensor go;
    const scalar_t* go_element = nullptr;
    const acc_t* go_scalar = nullptr;
    if (grad_output != nullptr) {
      const bool one_value = grad_output->dim() == 0;
      go = grad_output->to(one_value ? accumulate_type(in.pred.scalar_type())
                                     : in.pred.scalar_type())
               .contiguous();
      if (one_value) {
        go_scalar = go.data_ptr<acc_t>();
      } else {
        go_element = go.data_ptr<scalar_t>();
      }
    }
    auto run = [&](scalar_t* loss_out, acc_t* partials) {
      elementwise_kernel<Loss, kLoss, kGrad><<<blocks, kThreadsPerBlock, 0, stream>>>(
          a, loss_out, partials, grad_out, go_element, go_scalar);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (kLoss) {
      loss = launch_forward<scalar_t, acc_t>(in, in.pred.sizes(), blocks, stream, run);
    } else {
      run(nullptr, nullptr);
    }
  });
  return loss;
}

// The CUDA backend of focal_loss_ops.h for the elementwise members.
struct CudaElementwise {
  static constexpr bool kElementwise = true;

  template <typename Loss, typename Scalars>
  static at::Tensor forward(const Inputs& in, const Scalars& scalars) {
    return launch<Loss, true, false>(in, scalars, nullptr, nullptr);
  }

  template <typename Loss, typename Scalars>
  static std::tuple<at::Tensor, at::Tensor> with_grad(const Inputs& in, const Scalars& scalars,
                                                      double grad_scale) {
    at::Tensor grad, scale;
    if (grad_scale != 1.0) {
      // A device value, which the kernel reads as it reads a 0-dim grad_output.
      scale = at::full({}, grad_scale,
                       in.pred.options().dtype(accumulate_type(in.pred.scalar_type())));
    }
    at::Tensor loss =
        launch<Loss, true, true>(in, scalars, &grad, scale.defined() ? &scale : nullptr);
    return {loss, grad};
  }

  template <typename Loss, typename Scalars>
  static at::Tensor backward(const at::Tensor& grad_output, const Inputs& in,
                             const Scalars& scalars) {
    at::Tensor grad;
    launch<Loss, false, true>(in, scalars, &grad, &grad_output);
    return grad;
  }
};

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(focal_plugin, CUDA, m) {
  impl_family<cuda::CudaElementwise>(m);
}

}  // namespace focal_plugin
