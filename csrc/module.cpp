// The Python module fastswin._C. It holds no Python functions: importing it
// runs the TORCH_LIBRARY registrations, and the ops are reached through
// torch.ops.fastswin.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
