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
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from segloss._library import load_library

load_library()

__all__ = ["two_nearest_distances", "unet_weight_map", "shape_aware_loss"]


def _sampling(sampling: Optional[Union[float, Sequence[float]]], labels: Tensor) -> Optional[List[float]]:
    if sampling is None:
        return None
    if isinstance(sampling, Real):
        return [float(sampling)] * max(labels.dim() - 1, 0)
    return [float(s) for s in sampling]


def class_weight_arguments(op: str, class_weights, allow_pixel: bool
                           ) -> Tuple[Optional[List[float]], bool, Optional[Tensor]]:
    """The ops' (class_weights, balanced, pixel_weights) from the Python
    class_weights: None, "balanced", {0: w_background, 1: w_foreground}, or
    (allow_pixel) a tensor of per-pixel weights."""
    kinds = "None, 'balanced', a mapping {0: background, 1: foreground}" + (
        " or a tensor of per-pixel weights" if allow_pixel else "")
    if class_weights is None:
        return None, False, None
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(f"{op}: class_weights must be {kinds}, got {class_weights!r}")
        return None, True, None
    if isinstance(class_weights, Mapping):
        unknown = set(class_weights) - {0, 1}
        if unknown:
            raise ValueError(f"{op}: class_weights mapping must have keys 0 (background) and/or "
                             f"1 (foreground), got keys {sorted(class_weights, key=repr)}")
        return [float(class_weights.get(0, 1.0)), float(class_weights.get(1, 1.0))], False, None
    if allow_pixel and isinstance(class_weights, Tensor):
        return None, False, class_weights
    raise TypeError(f"{op}: class_weights must be {kinds}, got {type(class_weights).__name__}")


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
    fixed, balanced, pixel = class_weight_arguments("segloss.unet_weight_map", class_weights,
                                                    allow_pixel=True)
    return torch.ops.segloss.unet_weight_map(
        labels, w0=float(w0), sigma=float(sigma), sampling=_sampling(sampling, labels),
        class_weights=fixed, balanced=balanced, pixel_weights=pixel,
        border_everywhere=bool(border_everywhere))


def shape_aware_loss(input: Tensor, target: Tensor, weight_map: Optional[Tensor] = None, *,
                     instances: Optional[Tensor] = None, w0: float = 10.0, sigma: float = 5.0,
                     class_weights: Optional[Union[str, Mapping[int, float]]] = None,
                     sampling: Optional[Union[float, Sequence[float]]] = None,
                     from_logits: bool = True, reduction: str = "mean") -> Tensor:
    r"""The shape-aware (U-Net) loss, binary form: BCE weighted per pixel by the
    U-Net weight map.

    .. math::
        \ell = -w(x) \left[y \log \hat{y} + (1 - y) \log(1 - \hat{y})\right],\qquad
        w = w_c + w_0 \exp\left(-\frac{(d_1 + d_2)^2}{2\sigma^2}\right)

    Args:
        input: logits (or probabilities with ``from_logits=False``),
            ``Tensor[N, 1, *spatial]`` or ``Tensor[N, *spatial]``, 2 or 3
            spatial dims (a 4-D input with one channel is a batch of 2-D
            images).
        target: ``y``, the input's shape.
        weight_map: the precomputed weight map (e.g. from
            :func:`segloss.numpy.unet_weight_map` in a DataLoader), of the
            input's shape or ``[N, *spatial]``.
        instances: instead of ``weight_map``: integer instance labels, of the
            input's shape or ``[N, *spatial]``; the map is computed on the
            input's device with ``w0``, ``sigma``, ``class_weights`` (None,
            ``"balanced"`` or ``{0: w_background, 1: w_foreground}``) and
            ``sampling``, exactly as :func:`segloss.unet_weight_map` does.
        from_logits: ``input`` holds logits (default) or probabilities.
        reduction: ``"mean"`` (the weighted sum over the number of pixels,
            PyTorch's convention for ``weight=``), ``"weighted_mean"`` (over
            the sum of the weights), ``"sum"`` or ``"none"``.

    The weight map is a constant: no gradient flows to it. Exactly one of
    ``weight_map`` and ``instances`` must be given. TorchScript code calls
    ``torch.ops.segloss.shape_aware_loss`` (``class_weights`` as
    ``[w_background, w_foreground]``, ``balanced=True``).
    """
    fixed, balanced, _ = class_weight_arguments("segloss.shape_aware_loss", class_weights,
                                                allow_pixel=False)
    # The op's rule: [N, 1, *spatial] when 5-D, or 4-D with one channel.
    channel = input.dim() == 5 or (input.dim() == 4 and input.shape[1] == 1)
    spacing: Optional[List[float]] = None
    if isinstance(sampling, Real):
        spacing = [float(sampling)] * (input.dim() - 1 - int(channel))
    elif sampling is not None:
        spacing = [float(s) for s in sampling]
    return torch.ops.segloss.shape_aware_loss(
        input, target, weight_map, instances=instances, w0=float(w0), sigma=float(sigma),
        sampling=spacing, class_weights=fixed, balanced=balanced, from_logits=from_logits,
        reduction=reduction)
