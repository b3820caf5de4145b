# find_package(segloss CONFIG) for C++ programs that use the segloss ops
# (for example to run TorchScript models that call them):
#
#   list(APPEND CMAKE_PREFIX_PATH <python -c "import segloss; print(segloss.cmake_prefix_path())">)
#   find_package(Torch REQUIRED)
#   find_package(segloss CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE torch segloss::segloss)
#
# Defines the imported target segloss::segloss (the op library,
# libsegloss_ops.so, which needs no Python) and segloss_LIBRARY, its path.
# The program references none of the library's symbols: it is linked with
# --no-as-needed so that it is loaded, and its ops registered, at start.
# Build the program against the same torch that segloss was built with.
get_filename_component(_segloss_package_dir "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(segloss_LIBRARY "${_segloss_package_dir}/libsegloss_ops.so")
if(NOT EXISTS "${segloss_LIBRARY}")
  set(segloss_FOUND FALSE)
  set(segloss_NOT_FOUND_MESSAGE "segloss's op library is missing at ${segloss_LIBRARY}: "
      "install segloss where torch is installed (pip install --no-build-isolation .)")
  return()
endif()

if(NOT TARGET segloss::segloss)
  add_library(segloss::segloss INTERFACE IMPORTED)
  if(APPLE)
    set_target_properties(segloss::segloss PROPERTIES INTERFACE_LINK_LIBRARIES "${segloss_LIBRARY}")
  else()
    # A full path in the options keeps it in place between the two flags
    # (as a library CMake could reorder it); -rpath finds it at run time.
    set_target_properties(segloss::segloss PROPERTIES INTERFACE_LINK_OPTIONS
      "LINKER:--no-as-needed,${segloss_LIBRARY},--as-needed;LINKER:-rpath,${_segloss_package_dir}")
  endif()
endif()
unset(_segloss_package_dir)
