// CUDA kernel templates of the focal_plugin ops. Torch-free (as mmcv's
// common/cuda/*_kernel.cuh): the launchers in focal_loss_cuda.cu instantiate
// them. The per-element math is focal_loss_math.h, the same code the CPU runs.
//
// - 64-bit indexing everywhere (N * C can exceed 2^31).
// - Reductions are deterministic: the grid size depends only on the problem
//   size (never on the device's SM count), each block sums its elements in a
//   fixed tree, and a second pass of one block adds the per-block partials
//   (a fixed strided sum per thread, then the same tree). No atomics, no host
//   synchronisation.
// - Labels are checked on the device: a row whose label is outside 0..C (or
//   0..K-1 for softmax) and not ignore_index makes its loss and gradient NaN,
//   so the error is visible without a device->host sync.
#pragma once

#include <cassert>
#include <cstdint>

#include "../focal_loss_math.h"

namespace focal_plugin {
namespace cuda {

constexpr int kThreadsPerBlock = 256;
constexpr int kWarpSize = 32;
constexpr int64_t kMaxBlocks = 4096;

inline int64_t num_blocks(int64_t work_items, int64_t items_per_block) {
  const int64_t blocks = (work_items + items_per_block - 1) / items_per_block;
  return blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks);
}

template <typename acc_t>
__device__ __forceinline__ acc_t quiet_nan() {
  return acc_t(0) / acc_t(0);
}

// Sum over the block in a fixed tree order; every thread must call it, and
// the block must have exactly kThreadsPerBlock threads (the size of `shared`
// and of the tree): every launcher in focal_loss_cuda.cu uses that size.
template <typename acc_t>
__device__ acc_t block_sum(acc_t value) {
  __shared__ acc_t shared[kThreadsPerBlock];
  assert(blockDim.x == kThreadsPerBlock);
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreadsPerBlock / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  const acc_t total = shared[0];
  __syncthreads();  // shared may be reused by the caller's next block_sum
  return total;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t value) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Maximum that lets NaN win, so a NaN logit makes the row NaN.
template <typename acc_t>
__device__ __forceinline__ acc_t nan_max(acc_t a, acc_t b) {
  return (b > a || b != b) ? b : a;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_max(acc_t value) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    value = nan_max(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  return value;
}

// Second pass of every reduction: one block of kThreadsPerBlock threads; each
// thread adds a fixed strided subset of the partials, then block_sum's tree.
// The order depends only on `count`, so results are bitwise reproducible.
template <typename acc_t>
__global__ void sum_partials_kernel(const acc_t* __restrict__ partials, int64_t count,
                                    acc_t* __restrict__ out) {
  acc_t local = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) local += partials[i];
  const acc_t total = block_sum(local);
  if (threadIdx.x == 0) *out = total;
}

// ---------------------------------------------------------------------------
// Sigmoid focal loss: one thread per element, grid-stride.
// ---------------------------------------------------------------------------
template <typename scalar_t, typename acc_t>
struct SigmoidFocalParams {
  const scalar_t* pred;
  const int64_t* labels;        // hard targets (N,), or null
  const scalar_t* soft_target;  // soft targets (N, C), or null
  const acc_t* weight;          // (N,) or (N, C), or null
  bool weight_per_element;
  const acc_t* class_alpha;     // (C,), or null
  acc_t alpha_pos, alpha_neg;
  math::Gamma<acc_t> gamma;
  int64_t rows, classes, ignore_index;
};

template <bool kLoss, bool kGrad, bool kBinary, typename scalar_t, typename acc_t>
__device__ __forceinline__ void sigmoid_focal_element(const SigmoidFocalParams<scalar_t, acc_t>& p,
                                                      int64_t idx, acc_t* loss, acc_t* grad) {
  const int64_t row = idx / p.classes;
  const int64_t col = idx - row * p.classes;
  acc_t y;
  if (p.labels != nullptr) {
    const int64_t label = p.labels[row];
    if (label == p.ignore_index) {
      *loss = 0;
      *grad = 0;
      return;
    }
    if (label < 0 || label > p.classes) {
      *loss = quiet_nan<acc_t>();
      *grad = quiet_nan<acc_t>();
      return;
    }
    y = label == col ? acc_t(1) : acc_t(0);
  } else {
    y = static_cast<acc_t>(p.soft_target[idx]);
  }
  acc_t w = 1;
  if (p.weight != nullptr) w = p.weight[p.weight_per_element ? idx : row];
  acc_t w_pos = p.alpha_pos, w_neg = p.alpha_neg;
  if (p.class_alpha != nullptr) {
    w_pos = p.class_alpha[col];
    w_neg = acc_t(1) - w_pos;
  }
  math::sigmoid_focal<math::ScalarOps<acc_t>, acc_t, kLoss, kGrad, kBinary>(
      static_cast<acc_t>(p.pred[idx]), y, w_pos * w, w_neg * w, p.gamma, loss, grad);
}

// reduction 'none': writes loss_out; 'sum': writes one partial per block.
// kGrad: also writes the per-element derivative (the training path).
template <bool kGrad, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    sigmoid_focal_forward_kernel(const SigmoidFocalParams<scalar_t, acc_t> p,
                                 scalar_t* __restrict__ loss_out, acc_t* __restrict__ partials,
                                 scalar_t* __restrict__ grad_out) {
  const int64_t numel = p.rows * p.classes;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  acc_t local = 0;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < numel;
       idx += stride) {
    acc_t loss, grad;
    if (p.labels != nullptr) {  // uniform across the grid: no divergence
      sigmoid_focal_element<true, kGrad, true>(p, idx, &loss, &grad);
    } else {
      sigmoid_focal_element<true, kGrad, false>(p, idx, &loss, &grad);
    }
    if (kGrad) grad_out[idx] = static_cast<scalar_t>(grad);
    if (loss_out != nullptr) {
      loss_out[idx] = static_cast<scalar_t>(loss);
    } else {
      local += loss;
    }
  }
  if (partials != nullptr) {
    const acc_t total = block_sum(local);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
  }
}

// grad_output is per element (reduction 'none') or one scalar ('sum').
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    sigmoid_focal_backward_kernel(const SigmoidFocalParams<scalar_t, acc_t> p,
                                  const scalar_t* __restrict__ grad_output_per_element,
                                  const acc_t* __restrict__ grad_output_scalar,
                                  scalar_t* __restrict__ grad_input) {
  const int64_t numel = p.rows * p.classes;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const acc_t scale = grad_output_scalar != nullptr ? *grad_output_scalar : acc_t(1);
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < numel;
       idx += stride) {
    acc_t unused, grad;
    if (p.labels != nullptr) {  // uniform across the grid: no divergence
      sigmoid_focal_element<false, true, true>(p, idx, &unused, &grad);
    } else {
      sigmoid_focal_element<false, true, false>(p, idx, &unused, &grad);
    }
    const acc_t go = grad_output_per_element != nullptr
                         ? static_cast<acc_t>(grad_output_per_element[idx]) : scale;
    grad_input[idx] = static_cast<scalar_t>(grad * go);
  }
}

// ---------------------------------------------------------------------------
// Softmax focal loss: one warp per row, grid-stride over rows.
// ---------------------------------------------------------------------------
template <typename scalar_t, typename acc_t>
struct SoftmaxFocalParams {
  const scalar_t* pred;
  const int64_t* labels;
  const acc_t* weight;       // (N,), or null
  const acc_t* class_alpha;  // (K,), or null
  acc_t alpha;               // used when class_alpha is null (1 for none)
  math::Gamma<acc_t> gamma;
  int64_t rows, classes, ignore_index;
};

// All 32 lanes take part; returns false for an ignored row. Every lane gets
// the row's logsumexp, loss and gradient coefficient.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ bool softmax_focal_row_stats(const SoftmaxFocalParams<scalar_t, acc_t>& p,
                                                        int64_t row, int lane, acc_t* lse,
                                                        acc_t* loss, acc_t* coef) {
  const int64_t label = p.labels[row];
  if (label == p.ignore_index) return false;
  const scalar_t* x = p.pred + row * p.classes;
  acc_t row_max = -INFINITY;
  for (int64_t j = lane; j < p.classes; j += kWarpSize) {
    row_max = nan_max(row_max, static_cast<acc_t>(x[j]));
  }
  row_max = warp_max(row_max);
  acc_t sum = 0;
  for (int64_t j = lane; j < p.classes; j += kWarpSize) {
    sum += math::ScalarOps<acc_t>::exp(static_cast<acc_t>(x[j]) - row_max);
  }
  *lse = row_max + math::ScalarOps<acc_t>::log(warp_sum(sum));
  if (label < 0 || label >= p.classes) {
    *loss = quiet_nan<acc_t>();
    *coef = quiet_nan<acc_t>();
    return true;
  }
  acc_t alpha_t = p.class_alpha != nullptr ? p.class_alpha[label] : p.alpha;
  if (p.weight != nullptr) alpha_t *= p.weight[row];
  math::softmax_focal_row<math::ScalarOps<acc_t>>(static_cast<acc_t>(x[label]) - *lse, alpha_t,
                                                  p.gamma, loss, coef);
  return true;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    softmax_focal_forward_kernel(const SoftmaxFocalParams<scalar_t, acc_t> p,
                                 scalar_t* __restrict__ loss_out, acc_t* __restrict__ partials) {
  constexpr int kWarps = kThreadsPerBlock / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  acc_t local = 0;  // meaningful on lane 0 of each warp
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp; row < p.rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    acc_t lse, loss = 0, coef;
    if (!softmax_focal_row_stats(p, row, lane, &lse, &loss, &coef)) loss = 0;
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

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    softmax_focal_backward_kernel(const SoftmaxFocalParams<scalar_t, acc_t> p,
                                  const acc_t* __restrict__ grad_output, bool per_row,
                                  scalar_t* __restrict__ grad_input) {
  constexpr int kWarps = kThreadsPerBlock / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp; row < p.rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    scalar_t* g = grad_input + row * p.classes;
    acc_t lse, loss, coef;
    if (!softmax_focal_row_stats(p, row, lane, &lse, &loss, &coef)) {
      for (int64_t j = lane; j < p.classes; j += kWarpSize) g[j] = scalar_t(0);
      continue;
    }
    const acc_t scale = coef * grad_output[per_row ? row : 0];
    const int64_t label = p.labels[row];
    const scalar_t* x = p.pred + row * p.classes;
    for (int64_t j = lane; j < p.classes; j += kWarpSize) {
      const acc_t shifted = static_cast<acc_t>(x[j]) - lse;
      // The target column is scale * (p_t - 1) = scale * expm1(log p_t).
      g[j] = static_cast<scalar_t>(scale * (j == label ? math::ScalarOps<acc_t>::expm1(shifted)
                                                       : math::ScalarOps<acc_t>::exp(shifted)));
    }
  }
}

}  // namespace cuda
}  // namespace focal_plugin
