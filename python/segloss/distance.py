"""Distances to the two nearest instances and U-Net weight maps of label tensors.

Thin wrappers over ``torch.ops.segloss.two_nearest_distances`` and
``torch.ops.segloss.unet_weight_map`` with the arguments of
:mod:`segloss.numpy` (whose results they equal), on CPU and CUDA tensors with
a batch dimension; results are on the labels' device. They accept Python
conveniences (a number for ``sampling``, ``class_weights="balanced"`` or a
mapping), so TorchScript code calls the ops themselves (see their docstrings).
Not differentiable: the labels are integers, and per-pixel class weights are
treated as constants.
"""

from numbers import Real
from typing import List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from segloss._library import load_library

load_library()

__all__ = ["two_nearest_distances", "unet_weight_map"]


def _sampling(sampling: Optional[Union[float, Sequence[float]]], labels: Tensor) -> Optional[List[float]]:
    if sampling is None:
        return None
    if isinstance(sampling, Real):
        return [float(sampling)] * max(labels.dim() - 1, 0)
    return [float(s) for s in sampling]


def two_nearest_distances(labels: Tensor, sampling: Optional[Union[float, Sequence[float]]] = None,
                          return_labels: bool = False):
    r"""Distances from every pixel to its nearest and second-nearest instance.

    The batched torch form of :func:`segloss.numpy.two_nearest_distances`
    (same definitions and results).

    Args:
        labels: ``Tensor[N, H, W]`` or ``Tensor[N, D, H, W]`` of integer
            instance ids (any integer dtype), 0 is background; CPU or CUDA.
        sampling: spacing per spatial dim (a number or one per dim), default 1.
        return_labels: also return the ids of the two instances.

    Returns:
        ``(d1, d2)`` float64 of ``labels``' shape (``+inf`` where there are
        fewer than one / two instances), or with ``return_labels``
        ``(d1, d2, l1, l2)``, the ids in ``labels``' dtype (0: none).

    TorchScript: ``torch.ops.segloss.two_nearest_distances(labels, sampling,
    return_labels)`` returns the four tensors (the ids empty unless
    ``return_labels``).
    """
    d1, d2, l1, l2 = torch.ops.segloss.two_nearest_distances(
        labels, _sampling(sampling, labels), return_labels)
    return (d1, d2, l1, l2) if return_labels else (d1, d2)


def unet_weight_map(labels: Tensor, w0: float = 10.0, sigma: float = 5.0,
                    class_weights: Optional[Union[str, Mapping[int, float], Tensor]] = None,
                    sampling: Optional[Union[float, Sequence[float]]] = None,
                    border_everywhere: bool = False) -> Tensor:
    r"""The U-Net weight map ``w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2))``.

    The batched torch form of :func:`segloss.numpy.unet_weight_map` (same
    arguments and results; ``"balanced"`` class weights are computed per
    image).

    Args:
        labels: ``Tensor[N, H, W]`` or ``Tensor[N, D, H, W]`` of integer
            instance ids, 0 is background.
        w0, sigma: border weight and width (the paper's 10 and 5).
        class_weights: ``None`` (1), ``"balanced"``, ``{0: w_background, 1:
            w_foreground}``, or a ``Tensor`` of per-pixel weights of
            ``labels``' shape.
        sampling: spacing per spatial dim, default 1.
        border_everywhere: add the border term on instance pixels too.

    Returns:
        ``Tensor[N, *spatial]``, float32, on ``labels``' device.

    TorchScript: ``torch.ops.segloss.unet_weight_map(labels, w0=..., sigma=...,
    sampling=..., class_weights=[w_background, w_foreground], balanced=...,
    pixel_weights=..., border_everywhere=...)``.
    """
    fixed: Optional[List[float]] = None
    balanced = False
    pixel: Optional[Tensor] = None
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError("segloss.unet_weight_map: class_weights must be None, 'balanced', a "
                             "mapping {0: background, 1: foreground} or a tensor of per-pixel "
                             f"weights, got {class_weights!r}")
        balanced = True
    elif isinstance(class_weights, Mapping):
        unknown = set(class_weights) - {0, 1}
        if unknown:
            raise ValueError("segloss.unet_weight_map: class_weights mapping must have keys 0 "
                             "(background) and/or 1 (foreground), got keys "
                             f"{sorted(class_weights, key=repr)}")
        fixed = [float(class_weights.get(0, 1.0)), float(class_weights.get(1, 1.0))]
    elif isinstance(class_weights, Tensor):
        pixel = class_weights
    elif class_weights is not None:
        raise TypeError("segloss.unet_weight_map: class_weights must be None, 'balanced', a "
                        f"mapping or a Tensor, got {type(class_weights).__name__}")
    return torch.ops.segloss.unet_weight_map(
        labels, w0=float(w0), sigma=float(sigma), sampling=_sampling(sampling, labels),
        class_weights=fixed, balanced=balanced, pixel_weights=pixel,
        border_everywhere=bool(border_everywhere))
