// Host-side launch helpers shared by the CUDA launchers of every family.
//
// Only c10/cuda headers are included: ATen/cuda/CUDAContext.h pulls in
// cusparse.h, which some CUDA toolkits installed without the math libraries lack.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../focal_loss_inputs.h"
#include "reduce.cuh"

namespace focal_plugin {
namespace cuda {

// Runs `launch(loss_out, partials)` for Loss's forward pass: into a new
// unreduced loss tensor of `shape`, or, for a summed loss, into per-block
// partials (`blocks` of them) followed by the in-order second pass into a
// 0-dim tensor. Returns the loss.
template <typename scalar_t, typename acc_t, typename Launch>
at::Tensor launch_forward(const Inputs& in, at::IntArrayRef shape, int64_t blocks,
                          cudaStream_t stream, Launch&& launch) {
  if (!in.sum) {
    at::Tensor out = at::empty(shape, in.pred.options());
    launch(out.data_ptr<scalar_t>(), static_cast<acc_t*>(nullptr));
    return out;
  }
  const auto acc_options = in.pred.options().dtype(accumulate_type(in.pred.scalar_type()));
  at::Tensor partials = at::empty({blocks}, acc_options);
  at::Tensor out = at::empty({}, acc_options);
  launch(static_cast<scalar_t*>(nullptr), partials.data_ptr<acc_t>());
  sum_partials_kernel<acc_t><<<1, kThreadsPerBlock, 0, stream>>>(partials.data_ptr<acc_t>(),
                                                                  blocks, out.data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace cuda
}  // namespace focal_plugin
