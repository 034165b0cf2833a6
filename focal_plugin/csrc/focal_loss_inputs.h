// Argument checks and input preparation shared by every op of the family on
// both devices. The Python API checks first with friendlier messages; these
// keep direct torch.ops calls safe. Nothing here reads tensor values (label
// values are checked by the CPU kernels, and by the CUDA kernels as NaN).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>

#include "focal_loss_args.h"
#include "focal_loss_family.h"

namespace focal_plugin {

inline at::ScalarType accumulate_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// The checked, contiguous tensors of one call.
struct Inputs {
  at::Tensor pred, target;
  std::optional<at::Tensor> score, weight, class_alpha;
  int64_t ignore_index = -1;
  bool sum = false;

  int64_t rows() const { return pred.size(0); }
  int64_t classes() const { return pred.size(1); }
  bool has_labels() const { return target.scalar_type() == at::kLong; }
};

namespace detail {

inline void check_optional(const std::optional<at::Tensor>& t, const at::Tensor& pred,
                           const char* name, const char* op) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->device() == pred.device(), "focal_plugin.", op, ": ", name, " is on ",
              t->device(), " but pred is on ", pred.device());
  const auto acc = accumulate_type(pred.scalar_type());
  TORCH_CHECK_TYPE(t->scalar_type() == acc, "focal_plugin.", op, ": ", name,
                   " must have dtype ", acc, ", got ", t->scalar_type());
}

inline std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  if (!t.has_value()) return std::nullopt;
  return t->contiguous();
}

}  // namespace detail

// Checks the tensor arguments of Loss and its scalars (Loss::Math::validate);
// returns them contiguous.
template <typename Loss, typename... Scalars>
Inputs prepare_inputs(const at::Tensor& pred, const at::Tensor& target,
                      const std::optional<at::Tensor>& score,
                      const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& class_alpha, int64_t ignore_index,
                      bool sum, Scalars... scalars) {
  const char* op = Loss::kName;
  TORCH_CHECK_VALUE(pred.dim() == 2, "focal_plugin.", op, ": pred must be 2-D (N, C), got shape ",
                    pred.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(pred.scalar_type()), "focal_plugin.", op,
                   ": pred must be float16, bfloat16, float32 or float64, got ",
                   pred.scalar_type());
  const int64_t n = pred.size(0), c = pred.size(1);
  TORCH_CHECK_VALUE(c > 0, "focal_plugin.", op, ": pred must have at least one class column");
  if (const char* error = Loss::Math::validate(scalars...)) {
    TORCH_CHECK_VALUE(false, "focal_plugin.", op, ": ", error);
  }
  TORCH_CHECK(target.device() == pred.device(), "focal_plugin.", op, ": target is on ",
              target.device(), " but pred is on ", pred.device());
  if (target.scalar_type() == at::kLong) {
    TORCH_CHECK_TYPE(Loss::kTargets != Targets::kSoft, "focal_plugin.", op,
                     ": target must be soft targets of pred's dtype and shape, got int64");
    TORCH_CHECK_VALUE(target.dim() == 1 && target.size(0) == n, "focal_plugin.", op,
                      ": int64 target must have shape (N,) = (", n, ",), got ", target.sizes());
  } else {
    TORCH_CHECK_TYPE(Loss::kTargets != Targets::kLabels, "focal_plugin.", op,
                     ": target must be int64 class indices, got ", target.scalar_type());
    TORCH_CHECK_TYPE(target.scalar_type() == pred.scalar_type(), "focal_plugin.", op,
                     ": soft target must have pred's dtype ", pred.scalar_type(), ", got ",
                     target.scalar_type());
    TORCH_CHECK_VALUE(target.sizes() == pred.sizes(), "focal_plugin.", op,
                      ": soft target must have pred's shape ", pred.sizes(), ", got ",
                      target.sizes());
  }
  detail::check_optional(score, pred, "score", op);
  if (score.has_value()) {
    TORCH_CHECK_VALUE(Loss::kLabelScore && target.scalar_type() == at::kLong, "focal_plugin.", op,
                      ": score is only taken with class-index targets",
                      Loss::kLabelScore ? "" : " of a loss that has scores");
    TORCH_CHECK_VALUE(score->dim() == 1 && score->size(0) == n, "focal_plugin.", op,
                      ": score must have shape (N,) = (", n, ",), got ", score->sizes());
  }
  detail::check_optional(weight, pred, "weight", op);
  if (weight.has_value()) {
    const bool per_row = weight->dim() == 1 && weight->size(0) == n;
    const bool per_element = Loss::kElementwise && weight->sizes() == pred.sizes();
    TORCH_CHECK_VALUE(per_row || per_element, "focal_plugin.", op, ": weight must have shape (N,)",
                      Loss::kElementwise ? " or (N, C)" : "", " with N, C = ", n, ", ", c,
                      "; got ", weight->sizes());
  }
  detail::check_optional(class_alpha, pred, "class_alpha", op);
  if (class_alpha.has_value()) {
    TORCH_CHECK_VALUE(Loss::kClassAlpha, "focal_plugin.", op, " takes no class_alpha");
    TORCH_CHECK_VALUE(class_alpha->dim() == 1 && class_alpha->size(0) == c, "focal_plugin.", op,
                      ": class_alpha must have shape (C,) = (", c, ",), got ",
                      class_alpha->sizes());
  }
  return Inputs{pred.contiguous(),          target.contiguous(), detail::contiguous(score),
                detail::contiguous(weight), detail::contiguous(class_alpha), ignore_index,
                sum};
}

// grad_output of a backward: one element for a summed loss, else the
// unreduced loss's shape.
template <typename Loss>
void check_grad_output(const at::Tensor& grad_output, const Inputs& in) {
  const char* op = Loss::kName;
  TORCH_CHECK(grad_output.device() == in.pred.device(), "focal_plugin.", op,
              ": grad_output is on ", grad_output.device(), " but pred is on ",
              in.pred.device());
  if (in.sum) {
    TORCH_CHECK_VALUE(grad_output.numel() == 1, "focal_plugin.", op,
                      ": grad_output of a summed loss must have one element");
  } else if (Loss::kElementwise) {
    TORCH_CHECK_VALUE(grad_output.sizes() == in.pred.sizes(), "focal_plugin.", op,
                      ": grad_output must have pred's shape ", in.pred.sizes());
  } else {
    TORCH_CHECK_VALUE(grad_output.dim() == 1 && grad_output.size(0) == in.rows(),
                      "focal_plugin.", op, ": grad_output must have shape (N,)");
  }
}

// The kernels' parameter block for one dtype; the loss's scalars become its
// Params (make<acc_t>), once per call.
template <typename Loss, typename scalar_t, typename acc_t, typename... Scalars>
auto make_args(const Inputs& in, const std::tuple<Scalars...>& scalars) {
  using Params = typename Loss::Math::template Params<acc_t>;
  LossArgs<scalar_t, acc_t, Params> a;
  a.pred = in.pred.data_ptr<scalar_t>();
  if (in.has_labels()) {
    a.labels = in.target.data_ptr<int64_t>();
    if (in.score) a.label_score = in.score->data_ptr<acc_t>();
  } else {
    a.soft_target = in.target.data_ptr<scalar_t>();
  }
  if (in.weight) {
    a.weight = in.weight->data_ptr<acc_t>();
    a.weight_per_element = in.weight->dim() == 2;
  }
  if (in.class_alpha) a.class_alpha = in.class_alpha->data_ptr<acc_t>();
  a.params = std::apply(
      [](auto... s) { return Loss::Math::template make<acc_t>(s...); }, scalars);
  a.rows = in.rows();
  a.classes = in.classes();
  a.ignore_index = in.ignore_index;
  return a;
}

// Shape of the unreduced loss: pred's for the elementwise members, (N,) for
// the row-wise ones.
template <typename Loss>
std::vector<int64_t> unreduced_shape(const Inputs& in) {
  if (Loss::kElementwise) return {in.rows(), in.classes()};
  return {in.rows()};
}

}  // namespace focal_plugin
