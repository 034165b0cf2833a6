// CUDA kernel of the elementwise members of the family, generic over the
// member's math functor (focal_loss_math.h, the same code the CPU runs).
// Torch-free; elementwise_cuda.cu instantiates it.
//
// - One thread per element, grid-stride, 64-bit indexing (N * C can exceed 2^31).
// - Reductions are deterministic (reduce.cuh).
// - Targets are checked on the device: a row whose label is outside 0..C and
//   not ignore_index, or a score or target outside [0, 1] (where the member
//   requires [0, 1]), makes its loss and
//   gradient NaN, so the error is visible without a device->host sync.
#pragma once

#include <cstdint>

#include "../focal_loss_args.h"
#include "../focal_loss_math.h"
#include "reduce.cuh"

namespace focal_plugin {
namespace cuda {

template <typename Loss, bool kLoss, bool kGrad, bool kBinary, typename scalar_t, typename acc_t,
          typename Params>
__device__ __forceinline__ void eval_element(const LossArgs<scalar_t, acc_t, Params>& a,
                                             int64_t idx, acc_t* loss, acc_t* grad) {
  const int64_t row = idx / a.classes;
  const int64_t col = idx - row * a.classes;
  acc_t y;
  if (a.labels != nullptr) {
    const int64_t label = a.labels[row];
    if (label == a.ignore_index) {
      *loss = 0;
      *grad = 0;
      return;
    }
    const acc_t label_value = a.label_score != nullptr ? a.label_score[row] : acc_t(1);
    if (label < 0 || label > a.classes || !(label_value >= 0 && label_value <= 1)) {
      *loss = quiet_nan<acc_t>();
      *grad = quiet_nan<acc_t>();
      return;
    }
    y = label == col ? label_value : acc_t(0);
  } else {
    y = static_cast<acc_t>(a.soft_target[idx]);
    if (Loss::kTargetsInUnitRange && (y < 0 || y > 1)) {
      *loss = quiet_nan<acc_t>();
      *grad = quiet_nan<acc_t>();
      return;
    }
  }
  const acc_t w = a.weight != nullptr ? a.weight[a.weight_per_element ? idx : row] : acc_t(1);
  const acc_t alpha = a.class_alpha != nullptr ? a.class_alpha[col] : acc_t(0);
  Loss::Math::template eval<math::ScalarOps<acc_t>, kLoss, kGrad, kBinary, false>(
      a.params, static_cast<acc_t>(a.pred[idx]), y, w,
      a.class_alpha != nullptr ? &alpha : nullptr, loss, grad);
}

// kLoss: writes the loss to loss_out ('none'), or one partial sum per block
// to partials. kGrad: writes the derivative times grad_output (go_element per
// element, else *go_scalar, else 1) to grad_out.
template <typename Loss, bool kLoss, bool kGrad, typename scalar_t, typename acc_t,
          typename Params>
__global__ void __launch_bounds__(kThreadsPerBlock)
    elementwise_kernel(const LossArgs<scalar_t, acc_t, Params> a, scalar_t* __restrict__ loss_out,
                       acc_t* __restrict__ partials, scalar_t* __restrict__ grad_out,
                       const scalar_t* __restrict__ go_element, const acc_t* __restrict__ go_scalar) {
  const int64_t numel = a.rows * a.classes;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const acc_t scale = go_scalar != nullptr ? *go_scalar : acc_t(1);
  // Labels without scores are 0/1 targets; uniform across the grid: no divergence.
  const bool binary = a.labels != nullptr && a.label_score == nullptr;
  acc_t local = 0;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < numel;
       idx += stride) {
    acc_t loss = 0, grad = 0;
    if (binary) {
      eval_element<Loss, kLoss, kGrad, true>(a, idx, &loss, &grad);
    } else {
      eval_element<Loss, kLoss, kGrad, false>(a, idx, &loss, &grad);
    }
    if (kGrad) {
      const acc_t go = go_element != nullptr ? static_cast<acc_t>(go_element[idx]) : scale;
      grad_out[idx] = static_cast<scalar_t>(grad * go);
    }
    if (kLoss) {
      if (loss_out != nullptr) {
        loss_out[idx] = static_cast<scalar_t>(loss);
      } else {
        local += loss;
      }
    }
  }
  if (kLoss && partials != nullptr) {
    const acc_t total = block_sum(local);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
  }
}

}  // namespace cuda
}  // namespace focal_plugin
