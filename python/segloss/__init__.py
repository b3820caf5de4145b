"""segloss: fast exact image-segmentation losses for PyTorch.

The loss functions (``segloss.binary_cross_entropy``, ...), the distance ops
(``segloss.two_nearest_distances``, ``segloss.unet_weight_map``) and
``segloss.nn`` need torch and load the compiled ops on first use;
``import segloss`` itself does not import torch, so ``segloss.numpy`` (weight
maps for data pipelines) works where torch is not installed.
"""

from segloss._library import library_path

__version__ = "0.1.0"

_FUNCTIONAL = ("binary_cross_entropy", "binary_cross_entropy_with_logits", "dice_loss",
               "dice_ce_loss")
_DISTANCE = ("two_nearest_distances", "unet_weight_map", "shape_aware_loss")

__all__ = ["library_path", "nn", "numpy", *_FUNCTIONAL, *_DISTANCE]


def __getattr__(name):
    # Lazy: the torch-dependent API is imported on first access.
    if name in _FUNCTIONAL:
        from segloss import functional

        return getattr(functional, name)
    if name in _DISTANCE:
        from segloss import distance

        return getattr(distance, name)
    if name == "numpy":  # torch-free
        import segloss.numpy

        return segloss.numpy
    if name == "nn":
        import segloss.nn

        return segloss.nn
    raise AttributeError(f"module 'segloss' has no attribute {name!r}")
