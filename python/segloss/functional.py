"""Loss functions over the ``torch.ops.segloss`` ops; all TorchScript-scriptable."""

from typing import Optional

import torch
from torch import Tensor

from segloss._library import load_library

load_library()

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits"]


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    pos_weight: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Binary cross-entropy of probabilities.

    .. math::
        \ell = -w \left[\beta\, y \log p + (1 - y) \log(1 - p)\right]

    with each log clamped at -100 as ``torch.nn.BCELoss`` does, so that
    ``p = 0`` or ``p = 1`` give a finite loss.

    Args:
        input: probabilities ``p`` in ``[0, 1]``, ``Tensor[*]`` (for images
            ``[N, C, H, W]`` or ``[N, C, D, H, W]``), float32, float64,
            float16 or bfloat16. On the CPU a value outside ``[0, 1]`` is an
            error; on CUDA it gives NaN.
        target: ``y``, same shape as ``input``; soft labels allowed.
        weight: ``w``, per-element weight broadcastable to ``input``.
        pos_weight: ``beta``, weight of the positive term, broadcastable to
            ``input`` (e.g. ``[C, 1, 1]`` per channel). ``torch.nn.BCELoss``
            has no such argument; this is the article's weighted BCE.
        reduction: ``"none"`` (``Tensor[*]``), ``"mean"`` or ``"sum"`` (0-dim).

    Returns:
        The loss in ``input``'s dtype, accumulated in float32 (float64 for
        float64 inputs). Differentiable with respect to ``input`` only.
    """
    return torch.ops.segloss.binary_cross_entropy(input, target, weight, pos_weight, reduction)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    pos_weight: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Binary cross-entropy of logits, numerically stable for every finite logit.

    .. math::
        \ell = -w \left[\beta\, y \log \sigma(x) + (1 - y) \log(1 - \sigma(x))\right]
             = w \left[(1 - y)\, x - (1 + (\beta - 1)\, y) \log \sigma(x)\right]

    Equal to ``torch.nn.functional.binary_cross_entropy_with_logits`` with the
    same arguments.

    Args:
        input: logits ``x``, ``Tensor[*]``, float32, float64, float16 or bfloat16.
        target: ``y``, same shape as ``input``; soft labels allowed.
        weight: ``w``, per-element weight broadcastable to ``input``.
        pos_weight: ``beta``, weight of the positive term, broadcastable to
            ``input`` (e.g. ``[C, 1, 1]`` for ``[N, C, H, W]`` inputs).
        reduction: ``"none"`` (``Tensor[*]``), ``"mean"`` or ``"sum"`` (0-dim).

    Returns:
        The loss in ``input``'s dtype, accumulated in float32 (float64 for
        float64 inputs). Differentiable with respect to ``input`` only.
    """
    return torch.ops.segloss.binary_cross_entropy_with_logits(
        input, target, weight, pos_weight, reduction
    )
