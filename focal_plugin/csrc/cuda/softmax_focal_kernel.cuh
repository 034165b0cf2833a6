// CUDA kernels of the row-wise member of the family, the softmax focal loss:
// one warp per row, grid-stride over rows. Torch-free; softmax_focal_cuda.cu
// instantiates them. A label outside 0..K-1 (and not ignore_index) makes the
// row's loss and gradient NaN, without a device->host sync.
#pragma once

#include <cstdint>

#include "../focal_loss_args.h"
#include "../focal_loss_math.h"
#include "reduce.cuh"

namespace focal_plugin {
namespace cuda {

constexpr int kRowsPerBlock = kThreadsPerBlock / kWarpSize;

// All 32 lanes take part; returns false for an ignored row. Every lane gets
// the row's logsumexp, loss and gradient coefficient.
template <typename scalar_t, typename acc_t, typename Params>
__device__ __forceinline__ bool softmax_focal_row_stats(const LossArgs<scalar_t, acc_t, Params>& a,
                                                        int64_t row, int lane, acc_t* lse,
                                                        acc_t* loss, acc_t* coef) {
  using Ops = math::ScalarOps<acc_t>;
  const int64_t label = a.labels[row];
  if (label == a.ignore_index) return false;
  const scalar_t* x = a.pred + row * a.classes;
  acc_t row_max = -INFINITY;
  for (int64_t j = lane; j < a.classes; j += kWarpSize) {
    row_max = nan_max(row_max, static_cast<acc_t>(x[j]));
  }
  row_max = warp_max(row_max);
  acc_t sum = 0;
  for (int64_t j = lane; j < a.classes; j += kWarpSize) {
    sum += Ops::exp(static_cast<acc_t>(x[j]) - row_max);
  }
  *lse = row_max + Ops::log(warp_sum(sum));
  if (label < 0 || label >= a.classes) {
    *loss = quiet_nan<acc_t>();
    *coef = quiet_nan<acc_t>();
    return true;
  }
  acc_t alpha_t = a.class_alpha != nullptr ? a.class_alpha[label] : a.params.alpha;
  if (a.weight != nullptr) alpha_t *= a.weight[row];
  math::SoftmaxFocal::row<Ops>(a.params, static_cast<acc_t>(x[label]) - *lse, alpha_t, loss,
                               coef);
  return true;
}

template <typename scalar_t, typename acc_t, typename Params>
__global__ void __launch_bounds__(kThreadsPerBlock)
    softmax_focal_forward_kernel(const LossArgs<scalar_t, acc_t, Params> a,
                                 scalar_t* __restrict__ loss_out, acc_t* __restrict__ partials) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  acc_t local = 0;  // meaningful on lane 0 of each warp
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp; row < a.rows;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    acc_t lse, loss = 0, coef;
    if (!softmax_focal_row_stats(a, row, lane, &lse, &loss, &coef)) loss = 0;
    if (lane == 0) {
      if (loss_out != nullptr) {
        loss_out[row] = static_cast<scalar_t>(loss);
      } else {
        local += loss;
      }
    }
  }
  if (partials != nullptr) {
    const acc_t total = block_sum(lane == 0 ? local : acc_t(0));
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
  }
}

// grad_output is per row, or one scalar for a summed loss.
template <typename scalar_t, typename acc_t, typename Params>
__global__ void __launch_bounds__(kThreadsPerBlock)
    softmax_focal_backward_kernel(const LossArgs<scalar_t, acc_t, Params> a,
                                  const acc_t* __restrict__ grad_output, bool per_row,
                                  scalar_t* __restrict__ grad_input) {
  using Ops = math::ScalarOps<acc_t>;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp; row < a.rows;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    scalar_t* g = grad_input + row * a.classes;
    acc_t lse, loss, coef;
    if (!softmax_focal_row_stats(a, row, lane, &lse, &loss, &coef)) {
      for (int64_t j = lane; j < a.classes; j += kWarpSize) g[j] = scalar_t(0);
      continue;
    }
    const acc_t scale = coef * grad_output[per_row ? row : 0];
    const int64_t label = a.labels[row];
    const scalar_t* x = a.pred + row * a.classes;
    for (int64_t j = lane; j < a.classes; j += kWarpSize) {
      const acc_t shifted = static_cast<acc_t>(x[j]) - lse;
      // The target column is scale * (p_t - 1) = scale * expm1(log p_t).
      g[j] = static_cast<scalar_t>(scale * (j == label ? Ops::expm1(shifted) : Ops::exp(shifted)));
    }
  }
}

}  // namespace cuda
}  // namespace focal_plugin
