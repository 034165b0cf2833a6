// The one parameter block of every focal_plugin kernel, on both devices.
// Torch-free: the CUDA kernels take it by value, the CPU kernels by reference;
// focal_loss_inputs.h fills it from the checked, contiguous tensors of a call.
#pragma once

#include <cstdint>

namespace focal_plugin {

// Pointers to the contiguous inputs of one call, and the loss's own
// parameters (math::<Loss>::Params). Targets are either class indices
// (`labels`, with an optional per-row value of the label's column) or soft
// (N, C) targets.
template <typename scalar_t, typename acc_t, typename Params>
struct LossArgs {
  const scalar_t* pred = nullptr;
  const int64_t* labels = nullptr;       // class indices (N,), or null
  const acc_t* label_score = nullptr;    // with labels: target of the label's column (N,); null: 1
  const scalar_t* soft_target = nullptr;  // soft targets (N, C), or null
  const acc_t* weight = nullptr;         // (N,) or (N, C), or null
  bool weight_per_element = false;
  const acc_t* class_alpha = nullptr;    // (C,), or null
  Params params{};
  int64_t rows = 0, classes = 0, ignore_index = -1;
};

}  // namespace focal_plugin
