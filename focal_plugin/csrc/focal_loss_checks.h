// Argument checks shared by the CPU and CUDA kernels. The Python API checks
// first with friendlier messages; these keep direct torch.ops calls safe.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <optional>

namespace focal_plugin {

enum class Reduction : int64_t { kNone = 0, kSum = 1 };

inline at::ScalarType accumulate_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline Reduction check_reduction(int64_t reduction) {
  TORCH_CHECK_VALUE(reduction == 0 || reduction == 1,
                    "focal_plugin: reduction must be 0 ('none') or 1 ('sum'), got ", reduction);
  return static_cast<Reduction>(reduction);
}

// Checks pred/target/weight/class_alpha; `sigmoid` allows soft (N, C) targets
// and per-element (N, C) weights.
inline void check_focal_inputs(const at::Tensor& pred, const at::Tensor& target,
                               const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& class_alpha, double gamma,
                               int64_t reduction, bool sigmoid) {
  TORCH_CHECK_VALUE(pred.dim() == 2, "focal_plugin: pred must be 2-D (N, C), got shape ",
                    pred.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(pred.scalar_type()),
                   "focal_plugin: pred must be float16, bfloat16, float32 or float64, got ",
                   pred.scalar_type());
  const int64_t n = pred.size(0), c = pred.size(1);
  TORCH_CHECK_VALUE(c > 0, "focal_plugin: pred must have at least one class column");
  TORCH_CHECK_VALUE(gamma >= 0, "focal_plugin: gamma must be >= 0, got ", gamma);
  check_reduction(reduction);
  TORCH_CHECK(target.device() == pred.device(), "focal_plugin: target is on ", target.device(),
              " but pred is on ", pred.device());
  if (target.scalar_type() == at::kLong) {
    TORCH_CHECK_VALUE(target.dim() == 1 && target.size(0) == n,
                      "focal_plugin: int64 target must have shape (N,) = (", n, ",), got ",
                      target.sizes());
  } else {
    TORCH_CHECK_TYPE(sigmoid, "focal_plugin: softmax target must be int64 labels, got ",
                     target.scalar_type());
    TORCH_CHECK_TYPE(target.scalar_type() == pred.scalar_type(),
                     "focal_plugin: soft target must have pred's dtype ", pred.scalar_type(),
                     ", got ", target.scalar_type());
    TORCH_CHECK_VALUE(target.sizes() == pred.sizes(),
                      "focal_plugin: soft target must have pred's shape ", pred.sizes(), ", got ",
                      target.sizes());
  }
  const auto acc = accumulate_type(pred.scalar_type());
  if (weight.has_value()) {
    const auto& w = *weight;
    TORCH_CHECK(w.device() == pred.device(), "focal_plugin: weight is on ", w.device(),
                " but pred is on ", pred.device());
    TORCH_CHECK_TYPE(w.scalar_type() == acc, "focal_plugin: weight must have dtype ", acc,
                     ", got ", w.scalar_type());
    const bool per_row = w.dim() == 1 && w.size(0) == n;
    const bool per_element = sigmoid && w.sizes() == pred.sizes();
    TORCH_CHECK_VALUE(per_row || per_element, "focal_plugin: weight must have shape (N,)",
                      sigmoid ? " or (N, C)" : "", " with N, C = ", n, ", ", c, "; got ",
                      w.sizes());
  }
  if (class_alpha.has_value()) {
    const auto& a = *class_alpha;
    TORCH_CHECK(a.device() == pred.device(), "focal_plugin: class_alpha is on ", a.device(),
                " but pred is on ", pred.device());
    TORCH_CHECK_TYPE(a.scalar_type() == acc, "focal_plugin: class_alpha must have dtype ", acc,
                     ", got ", a.scalar_type());
    TORCH_CHECK_VALUE(a.dim() == 1 && a.size(0) == c,
                      "focal_plugin: class_alpha must have shape (C,) = (", c, ",), got ",
                      a.sizes());
  }
}

inline void check_grad_output(const at::Tensor& grad_output, const at::Tensor& pred,
                              int64_t reduction, bool sigmoid) {
  TORCH_CHECK(grad_output.device() == pred.device(), "focal_plugin: grad_output is on ",
              grad_output.device(), " but pred is on ", pred.device());
  if (static_cast<Reduction>(reduction) == Reduction::kSum) {
    TORCH_CHECK_VALUE(grad_output.numel() == 1,
                      "focal_plugin: grad_output of a reduced loss must have one element");
  } else if (sigmoid) {
    TORCH_CHECK_VALUE(grad_output.sizes() == pred.sizes(),
                      "focal_plugin: grad_output must have pred's shape ", pred.sizes());
  } else {
    TORCH_CHECK_VALUE(grad_output.dim() == 1 && grad_output.size(0) == pred.size(0),
                      "focal_plugin: grad_output must have shape (N,)");
  }
}

}  // namespace focal_plugin
