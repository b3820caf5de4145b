"""Distances to the two nearest instances and U-Net weight maps of label tensors.

Thin wrappers over ``torch.ops.segloss.two_nearest_distances`` and
``torch.ops.segloss.unet_weight_map`` with the arguments of
:mod:`segloss.numpy` (whose results they equal), on CPU and CUDA tensors with
a batch dimension; results are on the labels' device. Like every public
function of segloss they compile with ``torch.jit.script``, Python
conveniences included (a number for ``sampling``, ``class_weights="balanced"``
or a dict).
Not differentiable: the labels are integers, and per-pixel class weights are
treated as constants.
"""

from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor
from torch._jit_internal import boolean_dispatch

from segloss._library import load_library

load_library()

__all__ = ["two_nearest_distances", "unet_weight_map", "shape_aware_loss", "signed_distance_map",
           "boundary_distance_map"]

# The Python conveniences as TorchScript types: a number or a list of
# numbers; "balanced" or {0: w_background, 1: w_foreground} (any mapping
# outside TorchScript), or per-pixel weights where allowed.
Sampling = Optional[Union[float, List[float]]]
ClassWeights = Optional[Union[str, Dict[int, float]]]



@torch.jit.unused
def _checked_numbers(op: str, name: str, values: List[float]) -> List[float]:
    # Outside TorchScript (which checks the types itself): any numbers, or a
    # TypeError that names the function and the argument.
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be a number or a sequence of numbers, got "
                        f"{values!r}") from None


@torch.jit.unused
def _checked_number(op: str, name: str, value: float) -> float:
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be a number, got {value!r}") from None


def _number(op: str, name: str, value: float) -> float:
    if not torch.jit.is_scripting():
        return _checked_number(op, name, value)
    return float(value)


def _spacing(op: str, sampling: Sampling, spatial_dims: int) -> Optional[List[float]]:
    """The op's sampling: None, a number for every spatial dim, or one per dim."""
    if sampling is None:
        return None
    if isinstance(sampling, (int, float)):
        return [float(sampling)] * spatial_dims
    if not torch.jit.is_scripting():
        return _checked_numbers(op, "sampling", sampling)
    return [float(s) for s in sampling]


def class_weight_arguments(op: str, class_weights: Optional[Union[str, Dict[int, float], Tensor]],
                           allow_pixel: bool
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
            raise ValueError(f"{op}: class_weights must be {kinds}, got '{class_weights}'")
        return None, True, None
    if isinstance(class_weights, Tensor):
        if not allow_pixel:
            raise TypeError(f"{op}: class_weights must be {kinds}, got a Tensor")
        return None, False, class_weights
    if not torch.jit.is_scripting():
        if not isinstance(class_weights, Mapping):
            raise TypeError(f"{op}: class_weights must be {kinds}, "
                            f"got {type(class_weights).__name__}")
    for key in class_weights.keys():
        if key != 0 and key != 1:
            raise ValueError(f"{op}: class_weights mapping must have keys 0 (background) and/or "
                             f"1 (foreground), got keys {list(class_weights.keys())}")
    return [float(class_weights.get(0, 1.0)), float(class_weights.get(1, 1.0))], False, None


def _two_nearest_distances(labels: Tensor, sampling: Sampling = None,
                           return_labels: bool = False) -> Tuple[Tensor, Tensor]:
    d1, d2, _, _ = torch.ops.segloss.two_nearest_distances(
        labels, _spacing("segloss.two_nearest_distances", sampling, max(labels.dim() - 1, 0)),
        False)
    return d1, d2


def _two_nearest_distances_and_labels(labels: Tensor, sampling: Sampling = None,
                                      return_labels: bool = True
                                      ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return torch.ops.segloss.two_nearest_distances(
        labels, _spacing("segloss.two_nearest_distances", sampling, max(labels.dim() - 1, 0)),
        True)


# Two return types, picked by return_labels: TorchScript's boolean dispatch.
two_nearest_distances = boolean_dispatch(
    arg_name="return_labels", arg_index=2, default=False,
    if_true=_two_nearest_distances_and_labels, if_false=_two_nearest_distances,
    module_name=__name__, func_name="two_nearest_distances")
two_nearest_distances.__doc__ = r"""Distances from every pixel to its nearest and second-nearest instance.

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

    TorchScript compiles calls whose ``return_labels`` is a constant (as for
    ``torch.nn.functional.max_pool2d``'s ``return_indices``); the op itself,
    ``torch.ops.segloss.two_nearest_distances(labels, sampling,
    return_labels)``, always returns four tensors (the ids empty unless
    ``return_labels``).
    """


def unet_weight_map(labels: Tensor, w0: float = 10.0, sigma: float = 5.0,
                    class_weights: Optional[Union[str, Dict[int, float], Tensor]] = None,
                    sampling: Sampling = None,
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
        labels, w0=_number(op, "w0", w0), sigma=_number(op, "sigma", sigma),
        sampling=_spacing(op, sampling, max(labels.dim() - 1, 0)),
        class_weights=fixed, balanced=balanced, pixel_weights=pixel,
        border_everywhere=bool(border_everywhere))


def shape_aware_loss(input: Tensor, target: Tensor, weight_map: Optional[Tensor] = None,
                     instances: Optional[Tensor] = None, w0: float = 10.0, sigma: float = 5.0,
                     class_weights: ClassWeights = None, sampling: Sampling = None,
                     from_logits: bool = True, weight: Optional[Tensor] = None,
                     ignore_index: int = -100, reduction: str = "mean",
                     label_smoothing: float = 0.0) -> Tensor:
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
        label_smoothing: multi-class only, in ``[0, 1]``: as
            :func:`torch.nn.functional.cross_entropy`'s ``label_smoothing``,
            each pixel's loss is ``w [(1 - e) c_t (-log p_t) + e / C sum_k
            c_k (-log p_k)]``, over the same divisors (with a map of ones
            and ``reduction="weighted_mean"`` it is
            ``F.cross_entropy(input, target, weight=weight,
            label_smoothing=e)``).

    The weight map (and ``weight``) are constants: no gradient flows to
    them. Exactly one of ``weight_map`` and ``instances`` must be given.
    Pass the options by keyword (they are not keyword-only only because
    TorchScript cannot compile keyword-only arguments).
    """
    op = "segloss.shape_aware_loss"
    fixed, balanced, _ = class_weight_arguments(op, class_weights, allow_pixel=False)
    # The op's rule: a class-index target, or a 5-D input, or a 4-D one with
    # one channel, has a class/channel dim.
    classes = not (target.is_floating_point() or target.is_complex())
    channel = classes or input.dim() == 5 or (input.dim() == 4 and input.shape[1] == 1)
    spacing = _spacing(op, sampling, input.dim() - 1 - int(channel))
    return torch.ops.segloss.shape_aware_loss(
        input, target, weight_map, instances=instances, w0=_number(op, "w0", w0),
        sigma=_number(op, "sigma", sigma),
        sampling=spacing, class_weights=fixed, balanced=balanced, from_logits=from_logits,
        weight=weight, ignore_index=int(ignore_index), reduction=reduction,
        label_smoothing=_number(op, "label_smoothing", label_smoothing))


def _map_spatial_dims(mask: Tensor, spatial_dims: Optional[int]) -> int:
    # (N, C, D, H, W) is 3D; (N, C, H, W), (N, H, W) and (H, W) are 2D.
    if spatial_dims is not None:
        return spatial_dims
    return 3 if mask.dim() == 5 else 2


def signed_distance_map(mask: Tensor, sampling: Sampling = None,
                        spatial_dims: Optional[int] = None) -> Tensor:
    """The signed distance map of the boundary loss (Kervadec et al. 2019).

    Outside the mask the distance to the nearest mask pixel, inside
    ``-(distance to the nearest background pixel - 1)``: MONAI's
    ``BoundaryLoss.compute_distance_map``, float32, bit for bit at unit
    spacing (SciPy's distances rounded to float32, then ``-(d - 1)``). 0 for
    an image that is empty or full. Exact, from one sweep that carries both
    classes, on the mask's device; no gradient.

    Args:
        mask: bool or integer tensor (nonzero is foreground), ``(N, C,
            *spatial)`` or ``(N, *spatial)``: every dim but the last
            ``spatial_dims`` is a batch dim.
        sampling: the spacing along each spatial dim (a number or a list).
        spatial_dims: how many trailing dims are spatial; default 3 for a
            5-dim mask, else 2.

    Returns:
        float32 tensor of ``mask``'s shape.
    """
    dims = _map_spatial_dims(mask, spatial_dims)
    return torch.ops.segloss.distance_map(
        mask, "signed", dims, _spacing("segloss.signed_distance_map", sampling, dims))


def boundary_distance_map(mask: Tensor, sampling: Sampling = None,
                          spatial_dims: Optional[int] = None) -> Tensor:
    """Every pixel's distance to the nearest pixel of the other class.

    ``edt(mask) + edt(~mask)`` (SciPy's ``distance_transform_edt``), as
    MONAI's ``HausdorffDTLoss.distance_field``: float32, bit for bit at unit
    spacing; 0 for an image that is empty or full. Arguments and layout as
    :func:`signed_distance_map`.
    """
    dims = _map_spatial_dims(mask, spatial_dims)
    return torch.ops.segloss.distance_map(
        mask, "boundary", dims, _spacing("segloss.boundary_distance_map", sampling, dims))
