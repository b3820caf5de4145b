"""Locating and loading the compiled op library (libsegloss_ops.so)."""

import importlib.util
import os

_OP_LIBRARY = "libsegloss_ops.so"


def _package_dir() -> str:
    # The compiled files sit beside segloss._C; in an editable install that is
    # site-packages, not the source folder that holds segloss/__init__.py.
    spec = importlib.util.find_spec("segloss._C")
    if spec is None or spec.origin is None:
        raise ImportError("segloss's torch ops are not built: install segloss with "
                          "`pip install --no-build-isolation .` where torch is installed "
                          "(without torch only segloss.numpy is built)")
    return os.path.dirname(spec.origin)


def library_path() -> str:
    """Path of the compiled op library.

    ``torch.ops.load_library(segloss.library_path())`` alone registers every
    ``torch.ops.segloss`` op with its backward and shape inference, without
    importing segloss: that is how a TorchScript model that uses the ops is
    served in another Python process. The library needs no Python; C++
    programs link it through :func:`cmake_prefix_path`.
    """
    return os.path.join(_package_dir(), _OP_LIBRARY)


def cmake_prefix_path() -> str:
    """The folder to add to ``CMAKE_PREFIX_PATH`` for
    ``find_package(segloss CONFIG REQUIRED)``, which defines the imported
    target ``segloss::segloss`` (as ``torch.utils.cmake_prefix_path`` does
    for ``find_package(Torch)``)."""
    return os.path.join(_package_dir(), "share", "cmake")


def load_library() -> None:
    """Registers the ops with torch (once; later calls do nothing). Imports
    torch and segloss._C, which loads the op library."""
    _package_dir()  # a clear error where the ops are not built
    import torch  # noqa: F401  (the op library needs libtorch loaded first)

    import segloss._C  # noqa: F401


def cpu_instruction_set() -> str:
    """The instruction set the CPU kernels use: ``"baseline"`` (x86-64 or any
    other CPU), ``"avx2"`` or ``"avx512"``, the widest the CPU has, capped by
    the environment variable ``SEGLOSS_CPU_ISA`` (read once per process). A
    cap above what the CPU has gives what it has; an unknown value is ignored
    with a warning. Imports torch and loads the op library.
    """
    load_library()
    import torch

    return torch.ops.segloss._cpu_instruction_set()
