// Python entry point of a CPU kernel library, focal_plugin._C_cpu_<isa>.
//
// The CPU kernels are compiled once per instruction set (setup.py), each into
// its own library; focal_plugin/ops/extension.py imports the one that matches
// the capability ATen picked for this CPU, after focal_plugin._C (the
// schemas). Importing it runs the static initialisers that register its
// kernels (TORCH_LIBRARY_IMPL); no Python bindings are needed.
#include <Python.h>

#ifndef FOCAL_PLUGIN_CPU_LIBRARY
#error "FOCAL_PLUGIN_CPU_LIBRARY (the module name, e.g. _C_cpu_avx2) is set by setup.py"
#endif

#define FOCAL_PLUGIN_STRINGIFY_(name) #name
#define FOCAL_PLUGIN_STRINGIFY(name) FOCAL_PLUGIN_STRINGIFY_(name)
#define FOCAL_PLUGIN_PYINIT_(name) PyInit_##name
#define FOCAL_PLUGIN_PYINIT(name) FOCAL_PLUGIN_PYINIT_(name)

extern "C" PyObject* FOCAL_PLUGIN_PYINIT(FOCAL_PLUGIN_CPU_LIBRARY)(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, FOCAL_PLUGIN_STRINGIFY(FOCAL_PLUGIN_CPU_LIBRARY),
      "focal_plugin CPU kernels for one instruction set (see torch.ops.focal_plugin)", -1,
      nullptr};
  return PyModule_Create(&module_def);
}
