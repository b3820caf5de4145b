"""Locating and loading the compiled op library (segloss._C)."""

import importlib.util

_loaded = False


def library_path() -> str:
    """Path of the compiled op library.

    ``torch.ops.load_library(segloss.library_path())`` alone registers every
    ``torch.ops.segloss`` op with its backward and shape inference, without
    importing segloss: that is how a TorchScript model that uses the ops is
    served in another process or from C++.
    """
    spec = importlib.util.find_spec("segloss._C")
    if spec is None or spec.origin is None:
        raise ImportError("segloss._C (the torch ops) is not built: install segloss with "
                          "`pip install --no-build-isolation .` where torch is installed "
                          "(without torch only segloss.numpy is built)")
    return spec.origin


def load_library() -> None:
    """Registers the ops with torch (once). Imports torch."""
    global _loaded
    if not _loaded:
        import torch

        torch.ops.load_library(library_path())
        _loaded = True


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
