// Schemas of the focal_plugin ops. Kernels are registered per device in
// cpu/focal_loss_cpu.cpp and cuda/focal_loss_cuda.cu; fake (meta) and autograd
// registrations live in Python (focal_plugin/ops/focal_loss.py), the pattern
// of pytorch/extension-cpp.
#include <Python.h>
#include <torch/library.h>

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

// Conventions shared by all four ops:
//   reduction: 0 = 'none' (per-element / per-row loss, pred's dtype),
//              1 = 'sum'  (a 0-dim tensor in the accumulation dtype: float32
//                          for float16/bfloat16/float32, float64 for float64).
//   'mean' and avg_factor are a division done by the caller on that scalar.
//   weight, class_alpha: the accumulation dtype. alpha: scalar alpha or None;
//   class_alpha (length C) overrides it. Rows whose label is ignore_index
//   contribute nothing.
TORCH_LIBRARY(focal_plugin, m) {
  m.def(
      "sigmoid_focal_loss(Tensor pred, Tensor target, Tensor? weight, Tensor? class_alpha, "
      "float gamma, float? alpha, int reduction, int ignore_index) -> Tensor");
  m.def(
      "sigmoid_focal_loss_backward(Tensor grad_output, Tensor pred, Tensor target, "
      "Tensor? weight, Tensor? class_alpha, float gamma, float? alpha, int reduction, "
      "int ignore_index) -> Tensor");
  // Loss and its per-element derivative in one pass, for training: the
  // second output is d(sum of the per-element losses)/d(pred) (for 'none' the
  // caller multiplies it by grad_output elementwise, for 'sum' by the scalar).
  m.def(
      "sigmoid_focal_loss_with_grad(Tensor pred, Tensor target, Tensor? weight, "
      "Tensor? class_alpha, float gamma, float? alpha, int reduction, int ignore_index) "
      "-> (Tensor, Tensor)");
  m.def(
      "softmax_focal_loss(Tensor pred, Tensor target, Tensor? weight, Tensor? class_alpha, "
      "float gamma, float? alpha, int reduction, int ignore_index) -> Tensor");
  m.def(
      "softmax_focal_loss_backward(Tensor grad_output, Tensor pred, Tensor target, "
      "Tensor? weight, Tensor? class_alpha, float gamma, float? alpha, int reduction, "
      "int ignore_index) -> Tensor");
}
