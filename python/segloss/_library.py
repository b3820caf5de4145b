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
