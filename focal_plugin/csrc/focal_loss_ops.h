// The typed kernels of the family's ops, generated for one device from its
// backend: the one place where the schema's arguments are unpacked, checked
// and handed to the device code. A backend serves one shape of loss
// (elementwise or row-wise) and provides
//   forward<Loss>(const Inputs&, const std::tuple<scalars...>&) -> Tensor
//   with_grad<Loss>(const Inputs&, const std::tuple<...>&, double grad_scale)
//       -> (Tensor, Tensor)                       (elementwise backends only)
//   backward<Loss>(const Tensor& grad_output, const Inputs&, const std::tuple<...>&) -> Tensor
#pragma once

#include <torch/library.h>

#include <cmath>
#include <string>
#include <tuple>

#include "focal_loss_inputs.h"

namespace focal_plugin {

// "_<name>_<suffix>": the private ops behind a public one (as torchvision's
// _<op>_backward).
inline std::string private_op_name(const char* name, const char* suffix) {
  return std::string("_") + name + "_" + suffix;
}

template <typename Loss, typename Backend, typename ScalarTuple = typename Loss::Scalars>
struct LossOp;

template <typename Loss, typename Backend, typename... S>
struct LossOp<Loss, Backend, std::tuple<S...>> {
  using Opt = std::optional<at::Tensor>;

  static at::Tensor forward(const at::Tensor& pred, const at::Tensor& target, const Opt& score,
                            const Opt& weight, const Opt& class_alpha, int64_t ignore_index,
                            S... scalars, bool sum) {
    return Backend::template forward<Loss>(
        prepare_inputs<Loss>(pred, target, score, weight, class_alpha, ignore_index, sum,
                             scalars...),
        std::make_tuple(scalars...));
  }

  static std::tuple<at::Tensor, at::Tensor> with_grad(const at::Tensor& pred,
                                                      const at::Tensor& target, const Opt& score,
                                                      const Opt& weight, const Opt& class_alpha,
                                                      int64_t ignore_index, S... scalars,
                                                      bool sum, double grad_scale) {
    TORCH_CHECK_VALUE(std::isfinite(grad_scale), "focal_plugin.", Loss::kName,
                      ": grad_scale must be a finite number, got ", grad_scale);
    return Backend::template with_grad<Loss>(
        prepare_inputs<Loss>(pred, target, score, weight, class_alpha, ignore_index, sum,
                             scalars...),
        std::make_tuple(scalars...), grad_scale);
  }

  static at::Tensor backward(const at::Tensor& grad_output, const at::Tensor& pred,
                             const at::Tensor& target, const Opt& score, const Opt& weight,
                             const Opt& class_alpha, int64_t ignore_index, S... scalars,
                             bool sum) {
    const Inputs in = prepare_inputs<Loss>(pred, target, score, weight, class_alpha,
                                           ignore_index, sum, scalars...);
    check_grad_output<Loss>(grad_output, in);
    return Backend::template backward<Loss>(grad_output, in, std::make_tuple(scalars...));
  }
};

// Registers Backend's kernels for every member of the family it serves
// (Backend::kElementwise == Loss::kElementwise).
template <typename Backend>
void impl_family(torch::Library& m) {
  for_each_loss([&](auto tag) {
    using Loss = typename decltype(tag)::type;
    if constexpr (Loss::kElementwise == Backend::kElementwise) {
      using Op = LossOp<Loss, Backend>;
      m.impl(Loss::kName, &Op::forward);
      m.impl(private_op_name(Loss::kName, "backward").c_str(), &Op::backward);
      if constexpr (Loss::kElementwise) {
        m.impl(private_op_name(Loss::kName, "with_grad").c_str(), &Op::with_grad);
      }
    }
  });
}

}  // namespace focal_plugin
