// Schemas of the focal_plugin ops, generated from the family's descriptors
// (focal_loss_family.h, which also states the conventions they share).
// Kernels are registered per device in cpu/ and cuda/; fake (meta) and
// autograd registrations live in Python (focal_plugin/ops/registration.py),
// the pattern of pytorch/extension-cpp.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "focal_loss_family.h"
#include "focal_loss_ops.h"

extern "C" {
// `import focal_plugin._C` loads this library, whose static initialisers
// register the ops below with the dispatcher. No Python bindings are needed.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "focal_plugin compiled ops (see torch.ops.focal_plugin)", -1,
      nullptr};
  return PyModule_Create(&module_def);
}
}

namespace focal_plugin {
namespace {

constexpr const char* kTensorArgs =
    "Tensor pred, Tensor target, Tensor? score, Tensor? weight, Tensor? class_alpha, "
    "int ignore_index";

}  // namespace

TORCH_LIBRARY(focal_plugin, m) {
  for_each_loss([&](auto tag) {
    using Loss = typename decltype(tag)::type;
    const std::string args = std::string(kTensorArgs) + ", " + Loss::kScalars + ", bool sum";
    m.def((std::string(Loss::kName) + "(" + args + ") -> Tensor").c_str());
    m.def((private_op_name(Loss::kName, "backward") + "(Tensor grad_output, " + args +
           ") -> Tensor")
              .c_str());
    if (Loss::kElementwise) {
      m.def((private_op_name(Loss::kName, "with_grad") + "(" + args +
             ", float grad_scale=1.0) -> (Tensor, Tensor)")
                .c_str());
    }
  });
}

}  // namespace focal_plugin
