// The members of the focal-loss family: for each op, its name, its schema's
// scalar arguments (the ONE schema line of the member), the targets it takes
// and its math functor (focal_loss_math.h). The schemas (focal_loss.cpp), the
// argument checks (focal_loss_inputs.h) and the per-device registrations are
// generated from these descriptors.
//
// Every op of the family has the same tensor arguments:
//   pred (N, C), target (int64 class indices (N,) or soft targets (N, C) of
//   pred's dtype), score (N,) (the target of the label's column), weight
//   ((N,) or (N, C)), class_alpha (C,), ignore_index,
// then its scalars, then `bool sum`: false returns the unreduced loss in
// pred's dtype, true its sum as a 0-dim tensor in the accumulation dtype
// (float32 for float16/bfloat16/float32, float64 for float64). 'mean' and
// avg_factor are a division done by the caller on that sum. Optional tensors
// are in the accumulation dtype. Rows whose label is ignore_index contribute
// nothing.
//
// Each op NAME comes with `_NAME_backward(Tensor grad_output, <the same
// arguments>)`; the elementwise members also with `_NAME_with_grad(<the same
// arguments>, float grad_scale=1.0)`, which returns the loss and
// grad_scale * d(sum of the element losses)/d(pred) in one pass: the caller
// that knows the gradient its loss will receive (1/avg_factor for 'mean')
// folds it in, and the backward has nothing left to multiply.
#pragma once

#include <cstdint>
#include <optional>
#include <tuple>

#include "focal_loss_math.h"

namespace focal_plugin {

enum class Targets { kLabels, kSoft, kLabelsOrSoft };

struct SigmoidFocalLoss {
  using Math = math::SigmoidFocal;
  static constexpr const char* kName = "sigmoid_focal_loss";
  static constexpr const char* kScalars = "float gamma, float? alpha";
  using Scalars = std::tuple<double, std::optional<double>>;
  static constexpr Targets kTargets = Targets::kLabelsOrSoft;
  static constexpr bool kLabelScore = false;
  static constexpr bool kClassAlpha = true;
  static constexpr bool kElementwise = true;  // else one loss per row (softmax)
  static constexpr bool kTargetsInUnitRange = true;  // soft targets and scores in [0, 1]
};

struct QualityFocalLoss {
  using Math = math::QualityFocal;
  static constexpr const char* kName = "quality_focal_loss";
  static constexpr const char* kScalars = "float beta, bool activated";
  using Scalars = std::tuple<double, bool>;
  static constexpr Targets kTargets = Targets::kLabelsOrSoft;
  static constexpr bool kLabelScore = true;
  static constexpr bool kClassAlpha = false;
  static constexpr bool kElementwise = true;
  static constexpr bool kTargetsInUnitRange = true;
};

struct VarifocalLoss {
  using Math = math::Varifocal;
  static constexpr const char* kName = "varifocal_loss";
  static constexpr const char* kScalars = "float alpha, float gamma, bool iou_weighted";
  using Scalars = std::tuple<double, double, bool>;
  static constexpr Targets kTargets = Targets::kSoft;
  static constexpr bool kLabelScore = false;
  static constexpr bool kClassAlpha = true;
  static constexpr bool kElementwise = true;
  static constexpr bool kTargetsInUnitRange = true;
};

struct GaussianFocalLoss {
  using Math = math::GaussianFocal;
  static constexpr const char* kName = "gaussian_focal_loss";
  static constexpr const char* kScalars =
      "float alpha, float gamma, float pos_weight, float neg_weight, bool logits";
  using Scalars = std::tuple<double, double, double, double, bool>;
  static constexpr Targets kTargets = Targets::kSoft;
  static constexpr bool kLabelScore = false;
  static constexpr bool kClassAlpha = false;
  static constexpr bool kElementwise = true;
  // mmdet's formula takes any heatmap value ((1 - g)^gamma), and mmdet's
  // CenterNetUpdateHead fills an image without objects with num_classes: the
  // kernels follow the formula there instead of rejecting the batch.
  static constexpr bool kTargetsInUnitRange = false;
};

struct SoftmaxFocalLoss {
  using Math = math::SoftmaxFocal;
  static constexpr const char* kName = "softmax_focal_loss";
  static constexpr const char* kScalars = "float gamma, float? alpha";
  using Scalars = std::tuple<double, std::optional<double>>;
  static constexpr Targets kTargets = Targets::kLabels;
  static constexpr bool kLabelScore = false;
  static constexpr bool kClassAlpha = true;
  static constexpr bool kElementwise = false;
  static constexpr bool kTargetsInUnitRange = true;
};

template <typename Loss>
struct LossTag {
  using type = Loss;
};

// The family: adding a member here gives it its schemas and its kernels on
// every device.
using Family = std::tuple<LossTag<SigmoidFocalLoss>, LossTag<QualityFocalLoss>,
                          LossTag<VarifocalLoss>, LossTag<GaussianFocalLoss>,
                          LossTag<SoftmaxFocalLoss>>;

// Calls f(LossTag<Loss>{}) for every member of the family.
template <typename F>
void for_each_loss(F&& f) {
  std::apply([&](auto... tags) { (f(tags), ...); }, Family{});
}

}  // namespace focal_plugin
