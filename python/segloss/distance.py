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


def _floats(op: str, name: str, values) -> List[float]:
    """A sequence of numbers as floats; a TypeError naming `op` otherwise."""
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be a number or a sequence of numbers, got "
                        f"{values!r}") from None


def _float(op: str, name: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be a number, got {value!r}") from None


def _sampling(op: str, sampling: Optional[Union[float, Sequence[float]]],
              labels: Tensor) -> Optional[List[float]]:
    if sampling is None:
        return None
    if isinstance(sampling, Real):
        return [float(sampling)] * max(labels.dim() - 1, 0)
    return _floats(op, "sampling", sampling)


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
        labels, _sampling("segloss.two_nearest_distances", sampling, labels), return_labels)
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
    op = "segloss.unet_weight_map"
    fixed, balanced, pixel = class_weight_arguments(op, class_weights, allow_pixel=True)
    return torch.ops.segloss.unet_weight_map(
        labels, w0=_float(op, "w0", w0), sigma=_float(op, "sigma", sigma),
        sampling=_sampling(op, sampling, labels),
        class_weights=fixed, balanced=balanced, pixel_weights=pixel,
        border_everywhere=bool(border_everywhere))


def shape_aware_loss(input: Tensor, target: Tensor, weight_map: Optional[Tensor] = None, *,
                     instances: Optional[Tensor] = None, w0: float = 10.0, sigma: float = 5.0,
                     class_weights: Optional[Union[str, Mapping[int, float]]] = None,
                     sampling: Optional[Union[float, Sequence[float]]] = None,
                     from_logits: bool = True, weight: Optional[Tensor] = None,
                     ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    r"""The shape-aware (U-Net) loss: a loss weighted per pixel by the U-Net
    weight map ``w = w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2))``.

    Binary form (a float ``target``), the article's:

    .. math::
        \ell = -w(x) \left[y \log \hat{y} + (1 - y) \log(1 - \hat{y})\right]

    Multi-class form (an integer ``target`` of class indices), the U-Net
    paper's: softmax cross-entropy over the C classes of ``input``,

    .. math::
        \ell = -w(x)\, c_{t(x)} \log \operatorname{softmax}(x)_{t(x)}

    with ``c`` the per-class ``weight`` (1 if not given); pixels labelled
    ``ignore_index`` have loss 0 and do not count. No one-hot target and no
    ``[N, C, ...]`` weight tensor is ever formed.

    Args:
        input: binary: logits (or probabilities with ``from_logits=False``),
            ``Tensor[N, 1, *spatial]`` or ``Tensor[N, *spatial]``, 2 or 3
            spatial dims (a 4-D input with one channel is a batch of 2-D
            images). Multi-class: logits ``Tensor[N, C, *spatial]``, C >= 2.
        target: binary: ``y``, the input's shape, floating point.
            Multi-class: class indices in ``[0, C)`` (or ``ignore_index``),
            ``[N, *spatial]`` or ``[N, 1, *spatial]``, any integer dtype.
        weight_map: the precomputed weight map (e.g. from
            :func:`segloss.numpy.unet_weight_map` in a DataLoader),
            ``[N, *spatial]`` or ``[N, 1, *spatial]``.
        instances: instead of ``weight_map``: integer instance labels, of the
            same shapes; the map is computed on the input's device with
            ``w0``, ``sigma``, ``class_weights`` (None, ``"balanced"`` or
            ``{0: w_background, 1: w_foreground}``, the map's ``w_c`` from
            instance vs background) and ``sampling``, exactly as
            :func:`segloss.unet_weight_map` does.
        from_logits: ``input`` holds logits (default) or probabilities
            (binary form only).
        weight: multi-class only: per-class weights ``Tensor[C]`` multiplying
            each pixel's loss by its true class's weight, as in
            :func:`torch.nn.functional.cross_entropy`.
        ignore_index: multi-class only: the target value of pixels left out.
        reduction: ``"mean"``: the weighted sum over the number of pixels
            (not ignored), PyTorch's convention for ``weight=`` in BCE;
            ``"weighted_mean"``: over the sum of the weights ``w c`` of those
            pixels (0 if it is 0), which is
            :func:`torch.nn.functional.cross_entropy`'s class-weighted mean
            when the map is 1; ``"sum"``; or ``"none"`` (per pixel: the
            input's shape in the binary form, ``[N, *spatial]`` in the
            multi-class form).

    The weight map (and ``weight``) are constants: no gradient flows to
    them. Exactly one of ``weight_map`` and ``instances`` must be given.
    TorchScript code calls ``torch.ops.segloss.shape_aware_loss``
    (``class_weights`` as ``[w_background, w_foreground]``,
    ``balanced=True``).
    """
    op = "segloss.shape_aware_loss"
    fixed, balanced, _ = class_weight_arguments(op, class_weights, allow_pixel=False)
    spacing: Optional[List[float]] = None
    if isinstance(sampling, Real):
        # The op's rule: a class-index target, or a 5-D input, or a 4-D one
        # with one channel, has a class/channel dim.
        classes = not (target.is_floating_point() or target.is_complex())
        channel = classes or input.dim() == 5 or (input.dim() == 4 and input.shape[1] == 1)
        spacing = [float(sampling)] * (input.dim() - 1 - int(channel))
    elif sampling is not None:
        spacing = _floats(op, "sampling", sampling)
    return torch.ops.segloss.shape_aware_loss(
        input, target, weight_map, instances=instances, w0=_float(op, "w0", w0),
        sigma=_float(op, "sigma", sigma),
        sampling=spacing, class_weights=fixed, balanced=balanced, from_logits=from_logits,
        weight=weight, ignore_index=int(ignore_index), reduction=reduction)
