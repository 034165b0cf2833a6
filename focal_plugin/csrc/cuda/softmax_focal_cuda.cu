// CUDA launchers of the row-wise member of the family, the softmax focal loss
// (softmax_focal_kernel.cuh), registered with TORCH_LIBRARY_IMPL(focal_plugin, CUDA, m).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "../focal_loss_ops.h"
#include "cuda_launch.h"
#include "softmax_focal_kernel.cuh"

namespace focal_plugin {
namespace cuda {
namespace {

// The CUDA backend of focal_loss_ops.h for the row-wise member.
struct CudaSoftmax {
  static constexpr bool kElementwise = false;

  template <typename Loss, typename Scalars>
  static at::Tensor forward(const Inputs& in, const Scalars& scalars) {
    c10::cuda::CUDAGuard guard(in.pred.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const int64_t blocks = num_blocks(in.rows(), kRowsPerBlock);
    at::Tensor loss;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.pred.scalar_type(), Loss::kName, [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto a = make_args<Loss, scalar_t, acc_t>(in, scalars);
      loss = launch_forward<scalar_t, acc_t>(
          in, {in.rows()}, blocks, stream, [&](scalar_t* loss_out, acc_t* partials) {
            softmax_focal_forward_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(a, loss_out,
                                                                                 partials);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
    });
    return loss;
  }

  template <typename Loss, typename Scalars>
  static at::Tensor backward(const at::Tensor& grad_output, const Inputs& in,
                             const Scalars& scalars) {
    c10::cuda::CUDAGuard guard(in.pred.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const int64_t blocks = num_blocks(in.rows(), kRowsPerBlock);
    at::Tensor grad_input = at::empty_like(in.pred);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.pred.scalar_type(), Loss::kName, [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto a = make_args<Loss, scalar_t, acc_t>(in, scalars);
      const auto go = grad_output.to(accumulate_type(in.pred.scalar_type())).contiguous();
      softmax_focal_backward_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(
          a, go.data_ptr<acc_t>(), !in.sum, grad_input.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return grad_input;
  }
};

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(focal_plugin, CUDA, m) {
  impl_family<cuda::CudaSoftmax>(m);
}

}  // namespace focal_plugin
