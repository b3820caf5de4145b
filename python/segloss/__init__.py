"""segloss: fast exact image-segmentation losses for PyTorch.

Where torch is installed, ``import segloss`` imports it and registers every
``torch.ops.segloss`` op, so training code and TorchScript can call the ops
directly. The loss functions (``segloss.dice_loss``, ...), the distance ops
(``segloss.two_nearest_distances``, ...) and ``segloss.nn`` are imported on
first access. Where torch is not installed, ``segloss.numpy`` (weight maps
for data pipelines) and the ``segloss weight-map`` command work without it.
"""

from segloss._library import cmake_prefix_path, library_path

__version__ = "0.1.0"

_FUNCTIONAL = ("binary_cross_entropy", "binary_cross_entropy_with_logits", "dice_loss",
               "dice_ce_loss", "tversky_loss", "jaccard_loss", "log_cosh_dice_loss",
               "generalized_dice_loss", "focal_loss", "balanced_bce_with_logits",
               "dice_focal_loss", "boundary_loss", "hausdorff_dt_loss")
_DISTANCE = ("two_nearest_distances", "unet_weight_map", "shape_aware_loss",
             "signed_distance_map", "boundary_distance_map")

__all__ = ["cmake_prefix_path", "library_path", "nn", "numpy", *_FUNCTIONAL, *_DISTANCE]


def _register_ops() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as e:
        # A data-pipeline install: segloss.numpy only. A torch that is
        # installed but does not import is said, not raised, so that
        # segloss.numpy still works there.
        if not (isinstance(e, ModuleNotFoundError) and e.name == "torch"):
            import warnings

            warnings.warn(f"segloss: `import torch` failed ({e}); only segloss.numpy is "
                          "available", stacklevel=3)
        return
    try:
        from segloss._library import load_library

        load_library()
    except ImportError:
        # torch is installed but the ops are not built (segloss was installed
        # without torch): segloss.numpy still works, and the torch API raises
        # this ImportError when it is used.
        pass


_register_ops()


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
