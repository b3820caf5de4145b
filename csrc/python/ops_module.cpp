// segloss._C: an empty Python extension module linked against the op library
// (libsegloss_ops.so), so that importing it loads the library and with it
// registers every torch.ops.segloss op. The op library itself stays free of
// Python, for C++ programs that use the ops.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module);
}
