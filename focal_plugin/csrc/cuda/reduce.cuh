// Deterministic block and grid reductions of the CUDA kernels. Torch-free (as
// mmcv's common/cuda/*_kernel.cuh).
//
// The grid size depends only on the problem size (never on the device's SM
// count), each block sums its values in a fixed tree, and a second pass of one
// block adds the per-block partials (a fixed strided sum per thread, then the
// same tree). No atomics, no host synchronisation: results are bitwise
// reproducible.
#pragma once

#include <cassert>
#include <cstdint>

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
// and of the tree): every launcher uses that size.
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
template <typename acc_t>
__global__ void sum_partials_kernel(const acc_t* __restrict__ partials, int64_t count,
                                    acc_t* __restrict__ out) {
  acc_t local = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) local += partials[i];
  const acc_t total = block_sum(local);
  if (threadIdx.x == 0) *out = total;
}

}  // namespace cuda
}  // namespace focal_plugin
