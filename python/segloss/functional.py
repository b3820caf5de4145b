"""Loss functions over the ``torch.ops.segloss`` ops; all TorchScript-scriptable."""

from typing import Optional

import torch
from torch import Tensor

from segloss._library import load_library

load_library()

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "dice_loss",
           "dice_ce_loss", "tversky_loss", "jaccard_loss", "log_cosh_dice_loss",
           "generalized_dice_loss"]


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


def dice_loss(
    input: Tensor,
    target: Tensor,
    activation: str = "sigmoid",
    gamma: float = 1.0,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch_dice: bool = False,
    include_background: bool = True,
    class_weights: Optional[Tensor] = None,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
    ddp: bool = False,
    soft_label: bool = False,
) -> Tensor:
    r"""Dice loss, fused: one pass over the input forward, one backward.

    Pass the options by keyword (they are not keyword-only only because
    TorchScript cannot compile keyword-only arguments).

    For each image ``n`` and channel ``c`` (or each channel over the whole
    batch with ``batch_dice=True``), with ``p`` the activated input, ``y`` the
    target and ``m`` the mask:

    .. math::
        I = \sum m\,p\,y,\quad P = \sum m\,p^\gamma,\quad T = \sum m\,y^\gamma,\qquad
        \ell_{nc} = 1 - \frac{2I + s_{nr}}{P + T + s_{dr}}

    A (n, c) with ``P + T + s_dr = 0`` (nothing predicted, nothing true, no
    smoothing) scores a perfect Dice: loss 0, gradient 0, never NaN.

    Args:
        input: ``Tensor[N, C, *spatial]`` with 1 to 3 spatial dims; logits for
            ``activation="sigmoid"`` (per channel: binary or multi-label) or
            ``"softmax"`` (over C: multi-class), probabilities for ``"none"``.
        target: either ``Tensor[N, C, *spatial]`` of floats (soft labels
            allowed), or an integer class-index map ``Tensor[N, *spatial]`` or
            ``Tensor[N, 1, *spatial]``, used without building a one-hot tensor:
            channel ``c`` is label ``c``; with ``C == 1`` the map is the binary
            mask itself (labels 0 and 1).
        activation: ``"sigmoid"`` (default), ``"softmax"`` or ``"none"``.
        gamma: exponent of the denominator's terms, any real ``>= 1`` (the
            article uses 2, MONAI's ``squared_pred=True``).
        smooth_nr, smooth_dr: smoothing added to numerator and denominator
            (MONAI's names and defaults, 1e-5); 0 or at least float32's
            smallest normal (1.2e-38) unless the input is float64, since the
            float32 sums would lose a smaller one.
        batch_dice: sum over the batch before the ratio (nnU-Net's ``batch_dice``).
        include_background: ``False`` drops channel 0 from the loss (softmax
            still runs over all channels).
        class_weights: ``Tensor[C]``, multiplies each channel's loss
            (indexed by the input's channel, also when the background is dropped).
        ignore_index: with a class-index target, pixels with this label count
            nowhere.
        mask: broadcastable to ``[N, 1, *spatial]``; pixels where it is 0 count
            nowhere.
        reduction: ``"mean"`` (default) or ``"sum"`` over the per-(n, c) (or
            per-c) losses, or ``"none"``: ``Tensor[N, C']`` or ``Tensor[C']``.
        ddp: with ``batch_dice=True`` and ``torch.distributed`` initialised,
            all-reduce the sums over the ranks so that every rank computes the
            Dice of the global batch (nnU-Net's ``ddp``). The backward sums the
            sums' gradients over the ranks, so that after
            ``DistributedDataParallel`` averages the parameters' gradients they
            equal single-process training on the concatenated batch. Not
            available in TorchScript.
        soft_label: MONAI's soft-label formulation (``soft_label=True``, after
            Wang & Blaschko's JDT losses): the true positives are
            ``TP = (P + T - D) / 2`` with ``D = \sum m |p - y|^\gamma``
            instead of ``I``, so the loss is 0 exactly where ``p == y`` for
            soft targets too (the default form is not minimal there). Equal
            to ``I`` for hard (0/1) targets and for ``gamma=2``. Assumes
            ``p, y >= 0`` (probabilities). Costs one more sum in the same pass.

    Returns:
        The loss in ``input``'s dtype; sums accumulate in float32 (float64 for
        float64 input), so float16 inputs do not overflow. Differentiable with
        respect to ``input`` only.
    """
    if ddp:
        return _distributed_region_loss("dice_loss", input, target, activation, gamma,
                                        smooth_nr, smooth_dr, batch_dice, include_background,
                                        class_weights, ignore_index, mask, reduction, 0.5, 0.5,
                                        1.0, "square", soft_label)
    return torch.ops.segloss.dice_loss(
        input, target, activation=activation, gamma=gamma, smooth_nr=smooth_nr,
        smooth_dr=smooth_dr, batch_dice=batch_dice, include_background=include_background,
        class_weights=class_weights, ignore_index=ignore_index, mask=mask, reduction=reduction,
        soft_label=soft_label)



def tversky_loss(
    input: Tensor,
    target: Tensor,
    activation: str = "sigmoid",
    alpha: float = 0.5,
    beta: float = 0.5,
    focal_gamma: float = 1.0,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch_dice: bool = False,
    include_background: bool = True,
    class_weights: Optional[Tensor] = None,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
    ddp: bool = False,
    soft_label: bool = False,
) -> Tensor:
    r"""Tversky loss (Salehi et al. 2017), and focal Tversky with ``focal_gamma``
    (Abraham & Khan 2019 use ``focal_gamma=0.75``); fused like :func:`dice_loss`.

    For each image ``n`` and channel ``c`` (or each channel over the batch
    with ``batch_dice=True``), with ``TP = I = \sum m p y``,
    ``FP = \sum m p - TP = \sum m p (1 - y)``, ``FN = \sum m y - TP``:

    .. math::
        \ell_{nc} = \left(1 - \frac{TP + s_{nr}}
                                   {TP + \alpha FP + \beta FN + s_{dr}}\right)^{\gamma_f}

    then ``class_weights``, ``include_background`` and ``reduction`` as for
    :func:`dice_loss`. ``alpha`` weighs the false positives and ``beta`` the
    false negatives (MONAI's ``TverskyLoss`` convention; ``alpha = beta =
    0.5`` is Dice with ``gamma=1``, ``alpha = beta = 1`` is Jaccard in the
    ``TP / (TP + FP + FN)`` form). Equal to MONAI's ``TverskyLoss`` with
    ``focal_gamma=1``. A denominator of 0 (nothing predicted, nothing true,
    no smoothing) scores a perfect 0 with gradient 0; with ``focal_gamma !=
    1`` a term ``<= 0`` counts as 0 with gradient 0 (the power's derivative
    is infinite at 0 for ``focal_gamma < 1``).

    Args:
        input, target, activation, smooth_nr, smooth_dr, batch_dice,
        include_background, class_weights, ignore_index, mask, reduction, ddp,
        soft_label: as for :func:`dice_loss` (the sums use ``gamma = 1``:
            ``FP = P - TP`` needs it).
        alpha: weight of the false positives, ``>= 0``.
        beta: weight of the false negatives, ``>= 0``.
        focal_gamma: exponent of each per-(n, c) term, ``> 0``.

    Returns:
        The loss in ``input``'s dtype; differentiable with respect to ``input``.
    """
    if ddp:
        return _distributed_region_loss("tversky_loss", input, target, activation, 1.0,
                                        smooth_nr, smooth_dr, batch_dice, include_background,
                                        class_weights, ignore_index, mask, reduction, alpha,
                                        beta, focal_gamma, "square", soft_label)
    return torch.ops.segloss.tversky_loss(
        input, target, activation=activation, alpha=alpha, beta=beta, focal_gamma=focal_gamma,
        smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch_dice=batch_dice,
        include_background=include_background, class_weights=class_weights,
        ignore_index=ignore_index, mask=mask, reduction=reduction, soft_label=soft_label)


def jaccard_loss(
    input: Tensor,
    target: Tensor,
    activation: str = "sigmoid",
    gamma: float = 1.0,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch_dice: bool = False,
    include_background: bool = True,
    class_weights: Optional[Tensor] = None,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
    ddp: bool = False,
    soft_label: bool = False,
) -> Tensor:
    r"""Soft Jaccard (IoU) loss in MONAI's ``DiceLoss(jaccard=True)`` convention.

    With ``I``, ``P``, ``T`` as for :func:`dice_loss`:

    .. math::
        \ell_{nc} = 1 - \frac{2I + s_{nr}}{2(P + T - I) + s_{dr}}

    (MONAI's numerator ``2 tp`` and denominator ``2 (tp + fp + fn)``: the
    smoothing terms count half as much as in ``(I + s) / (P + T - I + s)``);
    ``gamma=2`` is MONAI's ``squared_pred=True``. Equal to MONAI's
    ``DiceLoss(jaccard=True)``. A denominator of 0 scores a perfect 0 with
    gradient 0.

    Args:
        input, target, activation, gamma, smooth_nr, smooth_dr, batch_dice,
        include_background, class_weights, ignore_index, mask, reduction, ddp,
        soft_label: as for :func:`dice_loss`.

    Returns:
        The loss in ``input``'s dtype; differentiable with respect to ``input``.
    """
    if ddp:
        return _distributed_region_loss("jaccard_loss", input, target, activation, gamma,
                                        smooth_nr, smooth_dr, batch_dice, include_background,
                                        class_weights, ignore_index, mask, reduction, 0.5, 0.5,
                                        1.0, "square", soft_label)
    return torch.ops.segloss.jaccard_loss(
        input, target, activation=activation, gamma=gamma, smooth_nr=smooth_nr,
        smooth_dr=smooth_dr, batch_dice=batch_dice, include_background=include_background,
        class_weights=class_weights, ignore_index=ignore_index, mask=mask, reduction=reduction,
        soft_label=soft_label)


def log_cosh_dice_loss(
    input: Tensor,
    target: Tensor,
    activation: str = "sigmoid",
    gamma: float = 1.0,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch_dice: bool = False,
    include_background: bool = True,
    class_weights: Optional[Tensor] = None,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
    ddp: bool = False,
    soft_label: bool = False,
) -> Tensor:
    r"""Log-cosh Dice loss (Jadon 2020): ``log(cosh(d))`` of each per-(n, c)
    Dice loss ``d`` of :func:`dice_loss`, before the class weights and the
    reduction.

    Computed stably for every ``d`` (``log1p(2 sinh(d/2)^2)`` for ``|d| < 1``,
    ``|d| + log1p(exp(-2|d|)) - log 2`` above); its derivative is
    ``tanh(d)`` times Dice's.

    Args:
        input, target, activation, gamma, smooth_nr, smooth_dr, batch_dice,
        include_background, class_weights, ignore_index, mask, reduction, ddp,
        soft_label: as for :func:`dice_loss`.

    Returns:
        The loss in ``input``'s dtype; differentiable with respect to ``input``.
    """
    if ddp:
        return _distributed_region_loss("log_cosh_dice_loss", input, target, activation, gamma,
                                        smooth_nr, smooth_dr, batch_dice, include_background,
                                        class_weights, ignore_index, mask, reduction, 0.5, 0.5,
                                        1.0, "square", soft_label)
    return torch.ops.segloss.log_cosh_dice_loss(
        input, target, activation=activation, gamma=gamma, smooth_nr=smooth_nr,
        smooth_dr=smooth_dr, batch_dice=batch_dice, include_background=include_background,
        class_weights=class_weights, ignore_index=ignore_index, mask=mask, reduction=reduction,
        soft_label=soft_label)


def generalized_dice_loss(
    input: Tensor,
    target: Tensor,
    activation: str = "sigmoid",
    w_type: str = "square",
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch_dice: bool = False,
    include_background: bool = True,
    class_weights: Optional[Tensor] = None,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
    ddp: bool = False,
    soft_label: bool = False,
) -> Tensor:
    r"""Generalized Dice loss (Sudre et al. 2017) in MONAI's
    ``GeneralizedDiceLoss`` convention: one ratio over the classes per image
    (or over the batch with ``batch_dice=True``), not a mean of per-class losses.

    With ``I_c``, ``P_c``, ``T_c`` the sums of :func:`dice_loss` (``gamma =
    1``) over the kept classes (``include_background=False`` drops channel 0
    first):

    .. math::
        \ell_n = 1 - \frac{2 \sum_c w_c I_c + s_{nr}}{\sum_c w_c (P_c + T_c) + s_{dr}},
        \qquad w_c = 1 / T_c^2,\ 1 / T_c \text{ or } 1

    for ``w_type="square"``, ``"simple"`` or ``"uniform"``, times
    ``class_weights`` when given. A class absent from the target (an
    infinite ``w_c``) gets the largest finite weight of its image (of the
    batch with ``batch_dice``), or 0 when every class is absent (then the
    image scores ``1 - s_nr / s_dr`` whatever is predicted). The weights
    depend on the target only (no gradient flows through them). A
    denominator of 0 scores a perfect 0 with gradient 0.

    Equal to MONAI's ``GeneralizedDiceLoss`` (which rounds the weights to
    float32 even for float64 inputs: equal to about 1e-8 relative).

    Args:
        input, target, activation, smooth_nr, smooth_dr, batch_dice,
        include_background, class_weights, ignore_index, mask, ddp, soft_label:
            as for :func:`dice_loss`.
        w_type: ``"square"`` (default), ``"simple"`` or ``"uniform"``.
        reduction: ``"mean"`` or ``"sum"`` over the images, or ``"none"``:
            ``Tensor[N]`` (``Tensor[1]`` with ``batch_dice=True``).

    Returns:
        The loss in ``input``'s dtype; differentiable with respect to ``input``.
    """
    if ddp:
        return _distributed_region_loss("generalized_dice_loss", input, target, activation, 1.0,
                                        smooth_nr, smooth_dr, batch_dice, include_background,
                                        class_weights, ignore_index, mask, reduction, 0.5, 0.5,
                                        1.0, w_type, soft_label)
    return torch.ops.segloss.generalized_dice_loss(
        input, target, activation=activation, w_type=w_type, smooth_nr=smooth_nr,
        smooth_dr=smooth_dr, batch_dice=batch_dice, include_background=include_background,
        class_weights=class_weights, ignore_index=ignore_index, mask=mask, reduction=reduction,
        soft_label=soft_label)


def dice_ce_loss(
    input: Tensor,
    target: Tensor,
    activation: str = "softmax",
    gamma: float = 1.0,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch_dice: bool = False,
    include_background: bool = True,
    class_weights: Optional[Tensor] = None,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    reduction: str = "mean",
    ce_weight: Optional[Tensor] = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Dice + cross-entropy, ``lambda_dice * Dice + lambda_ce * CE``, from one
    read of the logits (nnU-Net's ``DC_and_CE_loss``, MONAI's ``DiceCELoss``).

    The Dice term is :func:`dice_loss` with the same arguments. The CE term
    uses every channel (``include_background`` affects the Dice only), skips
    masked and ignored pixels, and follows PyTorch:

    - ``activation="sigmoid"``: ``binary_cross_entropy_with_logits`` over every
      element, with the class weights ``w`` as the per-channel ``pos_weight``;
    - ``activation="softmax"``: ``cross_entropy`` with ``weight=w``
      (for a class-index target the weighted mean
      ``sum w_y (-log p_y) / sum w_y``; for probability targets the mean over
      pixels), with ``0 log 0 = 0``: a class without target mass adds
      nothing, so a ``-inf`` logit of another class stays finite.

    ``w`` is ``ce_weight`` when given, else ``class_weights``: ``class_weights``
    alone weighs both terms (MONAI's ``DiceCELoss(weight=)`` with C > 1),
    ``ce_weight`` alone only the CE (MONAI's one-channel
    ``DiceCELoss(sigmoid=True, weight=)``, whose Dice ignores ``weight``).

    Args:
        input: logits ``Tensor[N, C, *spatial]``; ``activation`` is ``"softmax"``
            (default, needs ``C >= 2``) or ``"sigmoid"``.
        target, gamma, smooth_nr, smooth_dr, batch_dice, include_background,
        class_weights, ignore_index, mask: as for :func:`dice_loss`.
        lambda_dice, lambda_ce: weights of the two terms.
        reduction: ``"mean"`` or ``"sum"``, for both terms.
        ce_weight: ``Tensor[C]``, per-class weights of the CE term alone
            (``cross_entropy``'s ``weight``, or the per-channel ``pos_weight``
            with sigmoid); ``None`` (default): the CE uses ``class_weights``.
        label_smoothing: in ``[0, 1]``, softmax only: the CE of
            ``F.cross_entropy(label_smoothing=)`` (MONAI's
            ``DiceCELoss(label_smoothing=)``), ``(1 - e) CE + e / C *
            sum_c w_c (-log p_c)`` over CE's divisor; the Dice term is unchanged.

    Returns:
        A 0-dim tensor in ``input``'s dtype; differentiable with respect to
        ``input`` only.
    """
    return torch.ops.segloss.dice_ce_loss(
        input, target, activation=activation, gamma=gamma, smooth_nr=smooth_nr,
        smooth_dr=smooth_dr, batch_dice=batch_dice, include_background=include_background,
        class_weights=class_weights, ignore_index=ignore_index, mask=mask,
        lambda_dice=lambda_dice, lambda_ce=lambda_ce, reduction=reduction, ce_weight=ce_weight,
        label_smoothing=label_smoothing)

@torch.jit.unused
def _distributed_region_loss(
    loss: str,
    input: Tensor,
    target: Tensor,
    activation: str,
    gamma: float,
    smooth_nr: float,
    smooth_dr: float,
    batch_dice: bool,
    include_background: bool,
    class_weights: Optional[Tensor],
    ignore_index: Optional[int],
    mask: Optional[Tensor],
    reduction: str,
    alpha: float,
    beta: float,
    focal_gamma: float,
    w_type: str,
    soft_label: bool,
) -> Tensor:
    """The region loss `loss` (its public name, e.g. ``"dice_loss"``) of the
    global batch: this rank's sums, all-reduced, then the loss's epilogue
    (the private op ``_region_loss_from_sums``). alpha, beta and focal_gamma
    are read by tversky_loss only, w_type by generalized_dice_loss (no
    defaults: TorchScript's ``unused`` stub has none)."""
    import torch.distributed as dist

    name = f"segloss.{loss}"
    if not batch_dice:
        raise ValueError(f"{name}: ddp=True needs batch_dice=True (a per-image loss needs "
                         "nothing from other ranks)")
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{name}: ddp=True needs an initialised torch.distributed process "
                           "group")
    sums = torch.ops.segloss._dice_sums(input, target, activation, gamma, ignore_index, mask,
                                        False, name, soft_label)
    global_sums = _AllReduceSum.apply(sums.sum(0, keepdim=True))
    value = torch.ops.segloss._region_loss_from_sums(
        global_sums, loss, smooth_nr, smooth_dr, True, include_background, class_weights,
        reduction, alpha=alpha, beta=beta, focal_gamma=focal_gamma, w_type=w_type)
    return value.to(input.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; the backward sums the gradients over the ranks too,
    since every rank's loss depends on every rank's sums."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        import torch.distributed as dist

        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        import torch.distributed as dist

        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total
