// Python entry point of a CPU kernel library, focal_plugin._C_cpu_<isa>.
//
// The CPU kernels are compiled once per instruction set (setup.py), each into
// its own library; focal_plugin/ops/extension.py imports the one that matches
// the capability ATen picked for this CPU, after focal_plugin._C (the
// schemas). Importing it runs the static initialisers that register its
// kernels (TORCH_LIBRARY_IMPL); no Python bindings are needed.
#include <Python.h>

// TORCH_EXTENSION_NAME (e.g. _C_cpu_avx2) is set by torch's extension build.
#ifndef TORCH_EXTENSION_NAME
#error "TORCH_EXTENSION_NAME is set by torch.utils.cpp_extension; build with setup.py"
#endif

#define FOCAL_PLUGIN_STRINGIFY_(name) #name
#define FOCAL_PLUGIN_STRINGIFY(name) FOCAL_PLUGIN_STRINGIFY_(name)
#define FOCAL_PLUGIN_PYINIT_(name) PyInit_##name
#define FOCAL_PLUGIN_PYINIT(name) FOCAL_PLUGIN_PYINIT_(name)

extern "C" PyObject* FOCAL_PLUGIN_PYINIT(TORCH_EXTENSION_NAME)(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, FOCAL_PLUGIN_STRINGIFY(TORCH_EXTENSION_NAME),
      "focal_plugin CPU kernels for one instruction set (see torch.ops.focal_plugin)", -1,
      nullptr};
  return PyModule_Create(&module_def);
}
