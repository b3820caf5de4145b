"""segloss: fast exact image-segmentation losses for PyTorch.

The loss functions (``segloss.binary_cross_entropy``, ...) and ``segloss.nn``
need torch and load the compiled ops on first use; ``import segloss`` itself
does not import torch, so torch-free parts stay usable without it.
"""

from segloss._library import library_path

__version__ = "0.1.0"

_FUNCTIONAL = ("binary_cross_entropy", "binary_cross_entropy_with_logits", "dice_loss",
               "dice_ce_loss")

__all__ = ["library_path", "nn", *_FUNCTIONAL]


def __getattr__(name):
    # Lazy: the torch-dependent API is imported on first access.
    if name in _FUNCTIONAL:
        from segloss import functional

        return getattr(functional, name)
    if name == "nn":
        import segloss.nn

        return segloss.nn
    raise AttributeError(f"module 'segloss' has no attribute {name!r}")
