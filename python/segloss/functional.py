"""Loss functions over the ``torch.ops.segloss`` ops; all TorchScript-scriptable."""

from typing import List, Optional, Tuple, Union

import warnings

import torch
from torch import Tensor

from segloss._library import load_library
from segloss.distance import Sampling, _spacing, boundary_distance_map, signed_distance_map

load_library()

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "dice_loss",
           "dice_ce_loss", "tversky_loss", "jaccard_loss", "log_cosh_dice_loss",
           "generalized_dice_loss", "focal_loss", "balanced_bce_with_logits", "dice_focal_loss",
           "boundary_loss", "hausdorff_dt_loss"]


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


def balanced_bce_with_logits(
    input: Tensor,
    target: Tensor,
    per_image: bool = True,
    weight: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Balanced binary cross-entropy of logits (Jadon 2020; pytorch-toolbelt's
    ``BalancedBCEWithLogitsLoss`` with ``gamma=1``):

    .. math::
        \ell = -w \left[\beta\, y \log \sigma(x)
                 + (1 - \beta)(1 - y) \log(1 - \sigma(x))\right],
        \qquad \beta = 1 - \operatorname{mean}(y)

    ``beta`` is a constant of the target (no gradient), the fraction of
    negatives: of each image with ``per_image=True`` (the mean over all
    dimensions but the first), of the whole batch otherwise
    (pytorch-toolbelt's). Rare positives weigh more. It is computed and, like
    ``weight``, read in float32 (float64 for float64 input).

    Args:
        input: logits ``x``, ``Tensor[N, *]``, float32, float64, float16 or
            bfloat16.
        target: ``y`` in ``[0, 1]``, input's shape.
        per_image: ``beta`` per image (default) or over the batch.
        weight: ``w``, per-element weight broadcastable to ``input``.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        The loss in ``input``'s dtype, accumulated in float32 (float64 for
        float64 inputs). Differentiable with respect to ``input`` only.
    """
    name = "segloss.balanced_bce_with_logits"
    if target.shape != input.shape or input.dim() == 0:
        raise ValueError(f"{name}: target must have the input's shape {list(input.shape)} "
                         f"(at least 1-D: [N, *]), got {list(target.shape)}")
    y = target.detach().to(torch.float64 if input.dtype == torch.float64 else torch.float32)
    if per_image and input.dim() > 1:
        beta = 1.0 - y.mean(list(range(1, y.dim())), keepdim=True)
    else:
        beta = (1.0 - y.mean()).view([1] * y.dim())
    return torch.ops.segloss._pointwise_loss(input, target, weight, beta, reduction,
                                             "balanced_bce_with_logits", [], name)


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
            allowed; an integer or bool one is one-hot), or a class-index map
            ``Tensor[N, *spatial]`` or ``Tensor[N, 1, *spatial]``, integer or
            float (whole numbers, as MONAI loads label images), used without
            building a one-hot tensor: channel ``c`` is label ``c``; with
            ``C == 1`` the map is the binary mask itself (labels 0 and 1).
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
      nothing, so a ``-inf`` logit of another class stays finite (with a
      probability target, nor does a class of weight 0: ``w_c y_c = 0``).

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


def dice_focal_loss(
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
    focal_gamma: float = 2.0,
    alpha: Optional[float] = None,
    lambda_dice: float = 1.0,
    lambda_focal: float = 1.0,
    focal_activation: Optional[str] = None,
) -> Tensor:
    r"""Dice + focal, ``lambda_dice * Dice + lambda_focal * focal``, from one
    read of the logits (MONAI's ``DiceFocalLoss``).

    The Dice term is :func:`dice_loss` with the same arguments (``gamma`` is
    its denominator exponent). The focal term, with exponent ``focal_gamma``,
    is MONAI's ``FocalLoss`` on the same logits and the (one-hot) target:

    - ``focal_activation="sigmoid"``: every element is a binary problem,
      ``M B`` with ``B = (1 - y) x - log sigmoid(x)`` and
      ``M = sigmoid(x (1 - 2y))^focal_gamma`` (MONAI's ``sigmoid_focal_loss``);
      a scalar ``alpha`` weighs it ``alpha y + (1 - alpha)(1 - y)``. This is
      MONAI ``DiceFocalLoss``'s focal term whatever its Dice activation:
      ``DiceFocalLoss(softmax=True)`` is ``activation="softmax",
      focal_activation="sigmoid"``.
    - ``focal_activation="softmax"`` (needs ``activation="softmax"``): per
      channel ``-(1 - p_c)^focal_gamma log p_c y_c`` (MONAI's
      ``softmax_focal_loss``), a scalar ``alpha`` weighing class 0 by
      ``1 - alpha`` and the others by ``alpha``. The softmax runs over all
      channels also with ``include_background=False``, which then drops
      channel 0's term (MONAI's ``FocalLoss`` drops the channel before its
      softmax; ``DiceFocalLoss`` never uses a softmax focal term).

    ``class_weights`` multiply both terms per channel (MONAI's ``weight``);
    ``include_background=False`` drops channel 0 from both. The focal term's
    reductions are MONAI ``FocalLoss``'s: ``"mean"`` divides the sum over
    images, channels and pixels by ``N * C' * prod(spatial)`` (``C'`` the
    channels kept), or, with a ``mask`` or ``ignore_index``, by the number of
    pixels counted (not times ``C'``: MONAI's ``loss.sum() / mask.sum()``
    with its ``[N, 1, *spatial]`` mask); ``"sum"`` adds each image and
    channel's mean over its counted pixels. A focal term with
    ``focal_gamma = 0`` is the BCE (sigmoid) or cross-entropy (softmax)
    summed the same way; gradients are finite for every ``focal_gamma >= 0``,
    also for ``0 < focal_gamma < 1`` where ``p_t`` is 1.

    Args:
        input: logits ``Tensor[N, C, *spatial]``; ``activation`` is ``"sigmoid"``
            (default) or ``"softmax"`` (needs ``C >= 2``).
        target, gamma, smooth_nr, smooth_dr, batch_dice, include_background,
        class_weights, ignore_index, mask: as for :func:`dice_loss`.
        reduction: ``"mean"`` or ``"sum"``, for both terms.
        focal_gamma: the focal exponent, ``>= 0`` (MONAI's ``gamma``).
        alpha: ``None`` or a float in ``[0, 1]``, as described above.
        lambda_dice, lambda_focal: weights of the two terms, ``>= 0``.
        focal_activation: ``"sigmoid"``, ``"softmax"`` or ``None`` (default:
            ``activation``).

    Returns:
        A 0-dim tensor in ``input``'s dtype; differentiable with respect to
        ``input`` only.
    """
    return torch.ops.segloss.dice_focal_loss(
        input, target, activation=activation, gamma=gamma, smooth_nr=smooth_nr,
        smooth_dr=smooth_dr, batch_dice=batch_dice, include_background=include_background,
        class_weights=class_weights, ignore_index=ignore_index, mask=mask, reduction=reduction,
        focal_gamma=focal_gamma, alpha=alpha, lambda_dice=lambda_dice,
        lambda_focal=lambda_focal, focal_activation=focal_activation)

def _spatial_dims(x: Tensor) -> List[int]:
    return list(range(2, x.dim()))


def focal_loss(
    input: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    alpha: Optional[Union[float, List[float]]] = None,
    activation: str = "sigmoid",
    include_background: bool = True,
    class_weights: Optional[Tensor] = None,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Focal loss (Lin et al. 2017), ``-alpha_t (1 - p_t)^gamma log p_t``, as
    MONAI's ``FocalLoss`` computes it, in one pass forward and one backward.

    - ``activation="sigmoid"``: every element is a binary problem,
      ``p = sigmoid(x)``; ``target`` has ``input``'s shape (binary or soft),
      or with more than one channel is a class-index map (``[N, 1, *spatial]``
      or ``[N, *spatial]``, MONAI's ``to_onehot_y=True``: the one-hot target
      is built, as MONAI does; with ``ignore_index`` or ``mask`` the mean is
      over the pixels counted, MONAI's rule for a mask of the map's shape).
      Equal to MONAI ``FocalLoss(use_softmax=False)`` and, for binary targets,
      to ``torchvision.ops.sigmoid_focal_loss``. For soft targets the
      modulating factor is MONAI's ``sigmoid(x (1 - 2y))^gamma``;
      torchvision's is ``(1 - p_t)^gamma`` with ``p_t = p y + (1 - p)(1 - y)``.
      A scalar ``alpha`` weighs positives ``alpha`` and negatives
      ``1 - alpha`` (``alpha y + (1 - alpha)(1 - y)``); a per-class list
      weighs elements with ``y == 1`` by their class's value (MONAI).
    - ``activation="softmax"``: ``p = softmax(x)`` over the channels and a
      class-index ``target`` (``[N, 1, *spatial]`` or ``[N, *spatial]``,
      integer or float holding whole numbers; no one-hot tensor is made), or
      a probability or one-hot target of the input's shape (``sum_c t_c (1 - p_c)^gamma (-log p_c)``, from the Dice sums
      op's focal column; ``reduction`` ``"mean"`` or ``"sum"``, no
      ``ignore_index``). Equal to MONAI ``FocalLoss(use_softmax=True,
      to_onehot_y=True)``: a scalar ``alpha`` weighs class 0 by ``1 - alpha``
      and the others by ``alpha`` (ignored, with a warning, when
      ``include_background=False``, as MONAI does), a list weighs each class.
      ``include_background=False`` drops channel 0 before the softmax, as
      MONAI. ``kornia.losses.focal_loss`` is the sum over the channels of
      ``reduction="none"`` (with kornia's alpha on every class: pass
      ``alpha=[a] * C``).

    ``gamma = 0`` gives the (alpha-weighted) BCE / cross-entropy exactly; any
    ``gamma >= 0`` has finite gradients, also for ``0 < gamma < 1`` where
    ``p_t`` is 0 or 1 (kornia's are NaN there).

    Reductions (MONAI's): ``"mean"`` divides the sum by the number of
    elements, ``N * C * prod(spatial)`` (with ``ignore_index``: by the
    elements not ignored for sigmoid, by the pixels not ignored for softmax,
    as MONAI); ``"sum"`` is MONAI's: the spatial mean of each image and
    channel, summed over both (torchvision's ``"sum"`` is the plain sum, ours
    times ``prod(spatial)``); ``"none"``: ``[N, C, *spatial]`` (zero except at
    each pixel's target channel for softmax).

    Args:
        input: logits ``Tensor[N, C, *spatial]``, 1 to 3 spatial dims, float32,
            float64, float16 or bfloat16 (float32 accumulation).
        target: as described above.
        gamma: the focusing exponent, ``>= 0``.
        alpha: ``None``, a float in ``[0, 1]`` or one value in ``[0, 1]`` per
            input channel (channel 0's unused without the background; MONAI's
            list has one entry fewer then).
        activation: ``"sigmoid"`` or ``"softmax"``.
        include_background: ``False`` drops channel 0 of input and target
            (for ``C > 1``).
        class_weights: ``Tensor[C]``, non-negative weights of each input
            channel's loss (MONAI's ``weight``, which has ``C - 1`` entries
            with ``include_background=False``; ours keeps ``C``, as
            :func:`dice_loss`).
        ignore_index: sigmoid: elements whose target equals it; softmax:
            pixels whose class index equals it. They add nothing.
        mask: ``Tensor[N, 1, *spatial]`` or input-shaped (sigmoid), ``{0, 1}``
            float or bool: pixels to use; like ``ignore_index`` for the means.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss in ``input``'s dtype; differentiable with respect to ``input``.
    """
    name = "segloss.focal_loss"
    if not gamma >= 0:
        raise ValueError(f"{name}: gamma must be >= 0, got {gamma}")
    if gamma == float("inf"):  # (its gradient would be inf * 0)
        raise ValueError(f"{name}: gamma must be finite, got {gamma}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got '{reduction}'")
    if input.dim() < 3 or input.dim() > 5:
        raise ValueError(f"{name}: input must be [N, C, *spatial] with 1 to 3 spatial dims, "
                         f"got shape {list(input.shape)}")
    alpha_scalar: Optional[float] = None
    alpha_list: Optional[List[float]] = None
    if isinstance(alpha, (list, tuple)):
        alpha_list = [float(a) for a in alpha]
        for a in alpha_list:
            if not (a >= 0.0 and a <= 1.0):
                raise ValueError(f"{name}: every alpha must be in [0, 1], got {alpha_list}")
    elif alpha is not None:
        alpha_scalar = float(alpha)
        if not (alpha_scalar >= 0.0 and alpha_scalar <= 1.0):
            raise ValueError(f"{name}: alpha must be in [0, 1], got {alpha_scalar}")
    # Per-class values index the input's channels (as dice_loss's
    # class_weights); without the background, channel 0's is dropped.
    channels = input.shape[1]
    drop_background = not include_background and channels > 1
    if alpha_list is not None:
        if len(alpha_list) != channels:
            raise ValueError(f"{name}: alpha must hold one value per channel ({channels}), "
                             f"got {len(alpha_list)}")
        if drop_background:
            alpha_list = alpha_list[1:]
    if class_weights is not None:
        if class_weights.dim() == 0:  # one weight for every channel (MONAI's number)
            class_weights = class_weights.expand(channels)
        if class_weights.dim() != 1 or class_weights.shape[0] != channels:
            raise ValueError(f"{name}: class_weights must hold one value per channel "
                             f"({channels}) or one for all, got shape "
                             f"{list(class_weights.shape)}")
        if drop_background:
            class_weights = class_weights[1:]
    if activation == "sigmoid" and input.shape[1] > 1 and _has_label_map_shape(input, target):
        return _sigmoid_focal_of_labels(input, target, gamma, alpha_scalar, alpha_list,
                                        include_background, class_weights, ignore_index, mask,
                                        reduction)
    if activation == "sigmoid":
        return _sigmoid_focal_loss(input, target, gamma, alpha_scalar, alpha_list,
                                   include_background, class_weights, ignore_index, mask,
                                   reduction)
    if activation == "softmax":
        return _softmax_focal_loss(input, target, gamma, alpha_scalar, alpha_list,
                                   include_background, class_weights, ignore_index, mask,
                                   reduction)
    raise ValueError(f"{name}: activation must be 'sigmoid' or 'softmax', got '{activation}'")


def _has_label_map_shape(input: Tensor, target: Tensor) -> bool:
    """Whether `target` has a class-index map's shape for `input`:
    [N, *spatial] or [N, 1, *spatial], not the input's own."""
    if target.shape == input.shape:
        return False
    spatial = list(input.shape[2:])
    shape = list(target.shape)
    return shape == [input.shape[0]] + spatial or shape == [input.shape[0], 1] + spatial


def _sigmoid_focal_of_labels(input: Tensor, target: Tensor, gamma: float,
                             alpha_scalar: Optional[float], alpha_list: Optional[List[float]],
                             include_background: bool, class_weights: Optional[Tensor],
                             ignore_index: Optional[int], mask: Optional[Tensor],
                             reduction: str) -> Tensor:
    """The sigmoid focal loss of a class-index map, as MONAI's
    FocalLoss(to_onehot_y=True): the one-hot target is built (as MONAI does),
    ignored pixels count nowhere, and with ignored or masked pixels the mean
    is over the pixels counted (MONAI's mask has the label map's shape), not
    the elements."""
    name = "segloss.focal_loss"
    labels = _float_class_indices(name, target) if target.is_floating_point() \
        else _readable_labels(target)
    if labels.dim() == input.dim():
        labels = labels.squeeze(1)
    labels = labels.to(input.device)
    keep: Optional[Tensor] = None  # the pixels that count, where some do not
    if ignore_index is not None:
        keep = _is_not_label(labels, ignore_index)
        labels = torch.where(keep, labels, torch.zeros_like(labels))
    if mask is not None:
        m = _pixel_mask(name, mask, input, labels)
        keep = m if keep is None else keep & m
    channels = input.shape[1]
    _check_class_indices(name, labels, channels)
    one_hot = torch.nn.functional.one_hot(labels.to(torch.int64), channels).movedim(-1, 1)
    pixel_mask: Optional[Tensor] = None if keep is None else keep.unsqueeze(1)
    loss = _sigmoid_focal_loss(input, one_hot.to(input.dtype), gamma, alpha_scalar, alpha_list,
                               include_background, class_weights, None, pixel_mask, reduction)
    if reduction == "mean" and keep is not None:
        # The dense form's mean is over the counted elements, C' per pixel.
        kept = channels if include_background else channels - 1
        loss = loss * float(kept)
    return loss


def _sum_of_spatial_means(total: Tensor, input: Tensor, spatial: int) -> Tensor:
    """MONAI's 'sum' (each image and channel's spatial mean, summed) from the
    plain sum: NaN for images and channels with no pixels, 0 without any."""
    if spatial == 0:
        return total * float("nan") if input.shape[0] * input.shape[1] > 0 else total
    return total / spatial


def _accumulation_dtype(input: Tensor) -> torch.dtype:
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def _readable_labels(labels: Tensor) -> Tensor:
    """Class indices in a dtype that torch compares on every device: uint16,
    uint32 and uint64 (whose comparisons torch lacks on the CPU) as int64, as
    the ops convert them (readable_labels in csrc/ops/checks.h)."""
    if labels.dtype == torch.uint16 or labels.dtype == torch.uint32 \
            or labels.dtype == torch.uint64:
        return labels.to(torch.int64)
    return labels


def _is_float_label_map(input: Tensor, target: Tensor) -> bool:
    """Whether a float `target` is a class-index map: of a label map's shape,
    [N, *spatial] or (with more than one channel) [N, 1, *spatial], not the
    input's (as the ops decide: is_class_index_target in dice_operands.h)."""
    return target.is_floating_point() and _has_label_map_shape(input, target)


def _is_integer_one_hot(input: Tensor, target: Tensor) -> bool:
    """Whether an integer or bool `target` is one-hot (dense): the input's
    shape with more than one channel (as the ops decide)."""
    return not target.is_floating_point() and target.shape == input.shape \
        and input.dim() >= 2 and input.shape[1] > 1


def _float_class_indices(name: str, target: Tensor) -> Tensor:
    """A float class-index map (MONAI's loaded label maps are float) as
    int64, whole numbers only (checked in eager mode and TorchScript: a
    fractional label, from a label map resampled with interpolation, would be
    truncated)."""
    indices = target.to(torch.int64)
    check = torch.jit.is_scripting() or not torch.compiler.is_compiling()
    if check and target.device.type != "meta" \
            and not torch.equal(indices.to(target.dtype), target):
        raise ValueError(f"{name}: a float class-index target must hold whole numbers (class "
                         "indices), got other values (a label map resampled with "
                         "interpolation? use nearest neighbour)")
    return indices


def _label_bounds(dtype: torch.dtype) -> Tuple[int, int]:
    """The values a label of `dtype` (after _readable_labels) can hold."""
    if dtype == torch.uint8:
        return 0, 255
    if dtype == torch.int8:
        return -128, 127
    if dtype == torch.int16:
        return -32768, 32767
    if dtype == torch.int32:
        return -2147483648, 2147483647
    return -9223372036854775807 - 1, 9223372036854775807


def _check_mask(name: str, mask: Tensor, shape: List[int], what: str) -> None:
    """Raises unless `mask` broadcasts to `shape` (NumPy's rule), naming it."""
    sizes = list(mask.shape)
    fits = len(sizes) <= len(shape)
    lead = len(shape) - len(sizes)
    for d in range(len(sizes)):
        if fits and sizes[d] != 1 and sizes[d] != shape[lead + d]:
            fits = False
    if not fits:
        raise ValueError(f"{name}: mask of shape {sizes} is not broadcastable to {shape} "
                         f"({what})")


def _pixel_mask(name: str, mask: Tensor, input: Tensor, labels: Tensor) -> Tensor:
    """A class-index target's `mask` ([N, 1, *spatial] or [N, *spatial], or
    broadcastable to them) as the bool [N, *spatial] of the pixels it keeps."""
    if mask.dim() == input.dim():
        _check_mask(name, mask, [input.shape[0], 1] + list(input.shape[2:]), "[N, 1, *spatial]")
    else:
        _check_mask(name, mask, list(labels.shape), "[N, *spatial]")
    m = mask.to(device=input.device) != 0
    if m.dim() == input.dim():
        m = m.squeeze(1)
    return m.expand(labels.shape)


def _is_not_label(labels: Tensor, value: int) -> Tensor:
    """labels != value, compared as integers: torch would convert a value
    outside the labels' dtype to it (256 to 0 for uint8), where the kernels
    compare in int64 and such a value matches no label."""
    low, high = _label_bounds(labels.dtype)
    if value < low or value > high:
        return torch.ones(labels.shape, dtype=torch.bool, device=labels.device)
    return labels != value


def _float64_tensor(values: List[float], device: torch.device) -> Tensor:
    """values as a float64 tensor, exactly also under TorchScript (whose
    torch.tensor(List[float], dtype=float64) and item assignment round through
    float32)."""
    if len(values) == 0:
        return torch.empty(0, dtype=torch.float64, device=device)
    return torch.cat([torch.full([1], v, dtype=torch.float64, device=device) for v in values])


def _per_class(name: str, what: str, values: Tensor, channels: int, input: Tensor) -> Tensor:
    """`values` ([C]) as a [1, C, 1, ...] float tensor on input's device."""
    if values.dim() != 1 or values.shape[0] != channels:
        raise ValueError(f"{name}: {what} must hold one value per channel ({channels}), got "
                         f"shape {list(values.shape)}")
    shape = [1, channels] + [1] * (input.dim() - 2)
    return values.to(device=input.device, dtype=_accumulation_dtype(input)).view(shape)


def _sigmoid_focal_loss(input: Tensor, target: Tensor, gamma: float,
                        alpha_scalar: Optional[float], alpha_list: Optional[List[float]],
                        include_background: bool, class_weights: Optional[Tensor],
                        ignore_index: Optional[int], mask: Optional[Tensor],
                        reduction: str) -> Tensor:
    name = "segloss.focal_loss"
    if target.shape != input.shape:
        raise ValueError(f"{name}: with activation='sigmoid', target must have the input's "
                         f"shape {list(input.shape)} or, with more than one channel, be a "
                         f"class-index map, got {list(target.shape)}")
    if not target.is_floating_point():
        target = target.to(input.dtype)
    # Elements that count: not ignored (MONAI's mask of the original target)
    # and inside `mask`.
    counted: Optional[Tensor] = None
    if ignore_index is not None:
        counted = target != ignore_index
        target = torch.where(counted, target, torch.zeros_like(target))
    if mask is not None:
        _check_mask(name, mask, list(input.shape), "the input's shape")
        m = mask.to(device=input.device) != 0
        counted = m.expand(input.shape) if counted is None else counted & m
    if not include_background and input.shape[1] > 1:
        input = input[:, 1:]
        target = target[:, 1:]
        if counted is not None:
            counted = counted[:, 1:]
    channels = input.shape[1]
    weight: Optional[Tensor] = None
    if counted is not None:
        weight = counted.to(_accumulation_dtype(input))
    if class_weights is not None:
        cw = _per_class(name, "class_weights", class_weights, channels, input)
        if bool((cw < 0).any()):
            raise ValueError(f"{name}: class_weights must be non-negative")
        weight = cw if weight is None else weight * cw
    aux: Optional[Tensor] = None
    params = [gamma]
    if alpha_list is not None:
        alphas = _float64_tensor(alpha_list, input.device)
        aux = _per_class(name, "alpha", alphas, channels, input)
    elif alpha_scalar is not None:
        params = [gamma, alpha_scalar]
    spatial = 1
    for d in _spatial_dims(input):
        spatial *= input.shape[d]
    if reduction == "none":
        return torch.ops.segloss._pointwise_loss(input, target, weight, aux, "none",
                                                 "sigmoid_focal_loss", params, name)
    if reduction == "sum":
        # MONAI: each image and channel's spatial mean (over the elements
        # counted), summed.
        if counted is None:
            total = torch.ops.segloss._pointwise_loss(input, target, weight, aux, "sum",
                                                      "sigmoid_focal_loss", params, name)
            return _sum_of_spatial_means(total, input, spatial)
        count = counted.expand(input.shape).sum(_spatial_dims(input), keepdim=True)
        per_image = 1.0 / count.to(_accumulation_dtype(input)).clamp_min(1.1920928955078125e-07)
        weight = per_image if weight is None else weight * per_image
        return torch.ops.segloss._pointwise_loss(input, target, weight, aux, "sum",
                                                 "sigmoid_focal_loss", params, name)
    if counted is None:
        return torch.ops.segloss._pointwise_loss(input, target, weight, aux, "mean",
                                                 "sigmoid_focal_loss", params, name)
    total = torch.ops.segloss._pointwise_loss(input, target, weight, aux, "sum",
                                              "sigmoid_focal_loss", params, name)
    count = counted.expand(input.shape).sum().to(_accumulation_dtype(input))
    count = count.clamp_min(1.1920928955078125e-07)
    return (total / count).to(total.dtype)


def _softmax_focal_probabilities(input: Tensor, target: Tensor, gamma: float,
                                 alpha_scalar: Optional[float],
                                 alpha_list: Optional[List[float]], include_background: bool,
                                 class_weights: Optional[Tensor], ignore_index: Optional[int],
                                 mask: Optional[Tensor], reduction: str) -> Tensor:
    """The softmax focal loss of a probability (or one-hot) target,
    sum_c t_c (1 - p_c)^gamma (-log p_c) per pixel, from the Dice sums op's
    focal column (per image and class), reduced as MONAI's FocalLoss."""
    name = "segloss.focal_loss"
    if target.shape != input.shape:
        raise ValueError(f"{name}: a probability target must have the input's shape "
                         f"{list(input.shape)}, got {list(target.shape)} (or be a class-index "
                         "map, integer or float, [N, 1, *spatial] or [N, *spatial])")
    if ignore_index is not None:
        raise ValueError(f"{name}: ignore_index applies to class-index targets; leave pixels "
                         "of a probability target out with mask=")
    if reduction == "none":
        raise ValueError(f"{name}: reduction='none' with activation='softmax' needs a "
                         "class-index target")
    if input.shape[1] < 2:
        raise ValueError(f"{name}: activation='softmax' needs at least 2 channels, got "
                         f"input of shape {list(input.shape)}")
    if not include_background:
        if alpha_scalar is not None:
            warnings.warn("segloss.focal_loss: include_background=False, scalar alpha "
                          "ignored with softmax (as MONAI)")
            alpha_scalar = None
        input, target = input[:, 1:], target[:, 1:]  # MONAI: before the softmax
    channels = input.shape[1]
    sums = torch.ops.segloss._dice_sums(input, target, "softmax", 1.0, None, mask, False, name,
                                        False, "softmax", gamma)
    focal = sums[:, :, 3]  # sum of m t_c f(p_c) per image and class
    per_class: Optional[Tensor] = None
    if alpha_list is not None:
        per_class = _float64_tensor(alpha_list, input.device)
    elif alpha_scalar is not None:
        per_class = _float64_tensor([1.0 - alpha_scalar] + [alpha_scalar] * (channels - 1),
                                    input.device)
    if class_weights is not None:
        cw = _per_class(name, "class_weights", class_weights, channels, input).flatten()
        if bool((cw < 0).any()):
            raise ValueError(f"{name}: class_weights must be non-negative")
        per_class = cw if per_class is None else per_class * cw
    if per_class is not None:
        focal = focal * per_class.to(focal.dtype)
    spatial = 1
    for d in _spatial_dims(input):
        spatial *= input.shape[d]
    if reduction == "sum":
        if mask is None:
            result = _sum_of_spatial_means(focal.sum(), input, spatial)
        else:
            result = (focal / sums[:, :, 5].clamp_min(1.1920928955078125e-07)).sum()
    elif mask is None:
        result = focal.sum() / input.numel()
    else:
        result = focal.sum() / sums[:, 0, 5].sum().clamp_min(1.1920928955078125e-07)
    return result.to(input.dtype)


def _softmax_focal_loss(input: Tensor, target: Tensor, gamma: float,
                        alpha_scalar: Optional[float], alpha_list: Optional[List[float]],
                        include_background: bool, class_weights: Optional[Tensor],
                        ignore_index: Optional[int], mask: Optional[Tensor],
                        reduction: str) -> Tensor:
    name = "segloss.focal_loss"
    if _is_float_label_map(input, target):
        target = _float_class_indices(name, target)
    if _is_integer_one_hot(input, target):
        target = target.to(input.dtype)
    if target.is_floating_point():
        return _softmax_focal_probabilities(input, target, gamma, alpha_scalar, alpha_list,
                                            include_background, class_weights, ignore_index,
                                            mask, reduction)
    if target.dim() == input.dim():
        if target.shape[1] != 1:
            raise ValueError(f"{name}: a class-index target must be [N, 1, *spatial] or "
                             f"[N, *spatial], got shape {list(target.shape)}")
        target = target.squeeze(1)
    n_classes = input.shape[1]
    if n_classes < 2:
        raise ValueError(f"{name}: activation='softmax' needs at least 2 channels, got "
                         f"input of shape {list(input.shape)}")
    # The labels are read in place (uint8, int32, int64): only dropping the
    # background copies them. The op's ignore_index is the user's, or a value
    # no class index takes; masked pixels get weight 0 through the weight map.
    labels = _readable_labels(target)
    skip = ignore_index if ignore_index is not None else -9223372036854775807 - 1
    counted: Optional[Tensor] = None  # the pixels that count, where some do not
    if ignore_index is not None:
        counted = _is_not_label(labels, ignore_index)
    pixel_weight: Optional[Tensor] = None
    if mask is not None:
        m = _pixel_mask(name, mask, input, labels)
        counted = m if counted is None else counted & m
        pixel_weight = m.to(_accumulation_dtype(input))
    if not include_background:
        if alpha_scalar is not None:
            warnings.warn("segloss.focal_loss: include_background=False, scalar alpha "
                          "ignored with softmax (as MONAI)")
            alpha_scalar = None
        # Class-0 pixels have no target channel left (MONAI: an all-zero
        # one-hot row): they add nothing, as ignored pixels, but count.
        input = input[:, 1:]
        skip = -1
        keep = labels != 0 if counted is None else counted & (labels != 0)
        labels = torch.where(keep, labels.to(torch.int64) - 1, torch.full_like(labels, skip,
                                                                               dtype=torch.int64))
    channels = input.shape[1]
    per_class: Optional[Tensor] = None
    if alpha_list is not None:
        alphas = _float64_tensor(alpha_list, input.device)
        per_class = _per_class(name, "alpha", alphas, channels, input).flatten()
    elif alpha_scalar is not None:
        per_class = _float64_tensor([1.0 - alpha_scalar] + [alpha_scalar] * (channels - 1),
                                    input.device)
    if class_weights is not None:
        cw = _per_class(name, "class_weights", class_weights, channels, input).flatten()
        if bool((cw < 0).any()):
            raise ValueError(f"{name}: class_weights must be non-negative")
        per_class = cw if per_class is None else per_class * cw
    spatial = 1
    for d in _spatial_dims(input):
        spatial *= input.shape[d]
    if reduction == "none":
        loss, _ = torch.ops.segloss._weighted_cross_entropy(input, labels, pixel_weight,
                                                            per_class, skip, "none", gamma, 0.0,
                                                            name)
        full = torch.zeros(input.shape, dtype=loss.dtype, device=loss.device)
        in_range = (labels >= 0) & (labels < channels)
        index = torch.where(in_range, labels, torch.zeros_like(labels)).to(torch.int64)
        return full.scatter(1, index.unsqueeze(1), loss.unsqueeze(1))
    weight_map = pixel_weight
    if reduction == "sum" and counted is not None:
        # MONAI: each image's spatial mean over its counted pixels.
        count = counted.flatten(1).sum(1).to(_accumulation_dtype(input))
        count = count.clamp_min(1.1920928955078125e-07)
        per_image = (1.0 / count).view([-1] + [1] * (labels.dim() - 1))
        weight_map = per_image.expand(labels.shape) if weight_map is None \
            else weight_map * per_image
    total, _ = torch.ops.segloss._weighted_cross_entropy(input, labels, weight_map, per_class,
                                                         skip, "sum", gamma, 0.0, name)
    if reduction == "sum":
        if counted is not None:
            return total
        return _sum_of_spatial_means(total, input, spatial)
    if counted is None:
        return total / (input.numel())
    count = counted.sum().to(_accumulation_dtype(input)).clamp_min(1.1920928955078125e-07)
    return (total / count).to(total.dtype)


# --------------------------------------------------------------------------
# Distance-based losses: the boundary loss and the Hausdorff distance-
# transform loss, over the distance maps of segloss.distance (constants: no
# gradient flows through them).

def _check_distance_loss_options(name: str, input: Tensor, activation: str,
                                 reduction: str) -> None:
    if activation != "sigmoid" and activation != "softmax" and activation != "none":
        raise ValueError(f"{name}: activation must be 'sigmoid', 'softmax' or 'none', got "
                         f"'{activation}'")
    if reduction != "mean" and reduction != "sum" and reduction != "none":
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got '{reduction}'")
    if input.dim() != 4 and input.dim() != 5:
        raise ValueError(f"{name}: input must be [N, C, H, W] or [N, C, D, H, W] (2 or 3 "
                         f"spatial dims), got shape {list(input.shape)}")
    if not input.is_floating_point():
        raise ValueError(f"{name}: input must be floating point, got {input.dtype}")
    if activation == "softmax" and input.shape[1] < 2:
        raise ValueError(f"{name}: activation='softmax' needs at least 2 channels, got input "
                         f"of shape {list(input.shape)} (use 'sigmoid' for one channel)")


def _check_class_indices(name: str, labels: Tensor, channels: int) -> None:
    """Class indices in [0, C) ({0, 1} for one channel). Checked in eager mode
    and TorchScript; under torch.compile (no data-dependent checks in a full
    graph) an index outside that range belongs to no class."""
    top = max(channels, 2)
    if labels.device.type == "meta":  # (no values to check)
        return
    if torch.jit.is_scripting():
        if bool(((labels < 0) | (labels >= top)).any()):
            raise ValueError(f"{name}: class indices must lie in [0, {top}), got values outside")
    elif not torch.compiler.is_compiling():
        if labels.numel() > 0 and bool(((labels < 0) | (labels >= top)).any()):
            low, high = int(labels.min()), int(labels.max())
            raise ValueError(f"{name}: class indices must lie in [0, {top}), got values in "
                             f"[{low}, {high}]")


def _distance_loss_operands(name: str, input: Tensor, target: Tensor, activation: str,
                            include_background: bool, need_masks: bool, need_values: bool,
                            activate: bool = True
                            ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """(p, masks, y): p the activated input in the accumulation dtype
    (float32, float64 for float64 input), channel 0 dropped without the
    background (after the softmax, as MONAI; before the sigmoid, which is
    per channel); with a sigmoid and not `activate`, the kept logits instead
    (for the fused rows, which apply it themselves); the target's foreground masks
    (bool, p's shape; None unless need_masks); y the target's values in p's
    dtype for a dense target if need_values (None for class indices, whose
    values are the masks themselves). No one-hot float tensor is made for class indices."""
    channels = input.shape[1]
    drop = not include_background and channels > 1
    spatial = list(input.shape[2:])
    if _is_float_label_map(input, target):
        target = _float_class_indices(name, target)
    if _is_integer_one_hot(input, target):
        target = target.to(input.dtype)
    dense = target.is_floating_point() or (target.dtype == torch.bool
                                           and target.shape == input.shape)
    masks: Optional[Tensor] = None
    y: Optional[Tensor] = None
    if dense:
        if target.shape != input.shape:
            raise ValueError(f"{name}: target must have the input's shape {list(input.shape)} "
                             "(one-hot or probabilities) or be class indices, integer or "
                             f"float, [N, *spatial] or [N, 1, *spatial], got {target.dtype} of "
                             f"shape {list(target.shape)}")
        kept = target[:, 1:] if drop else target
        if need_masks:
            masks = kept > 0.5  # MONAI's threshold
        if need_values:
            y = kept.to(device=input.device, dtype=_accumulation_dtype(input))
    else:
        if target.is_complex():
            raise ValueError(f"{name}: target must be real, got {target.dtype}")
        labels = _readable_labels(target)
        if labels.dim() == input.dim() and labels.shape[1] == 1:
            labels = labels.squeeze(1)
        if list(labels.shape) != [input.shape[0]] + spatial:
            raise ValueError(f"{name}: class indices must be [N, *spatial] or [N, 1, *spatial] "
                             f"with the input's N and spatial shape, got shape "
                             f"{list(target.shape)} for input {list(input.shape)} (a one-hot "
                             "target has the input's shape)")
        if need_masks:
            _check_class_indices(name, labels, channels)
            labels = labels.to(device=input.device).unsqueeze(1)
            if channels == 1:
                masks = labels == 1  # the binary mask itself (labels 0 and 1)
            else:
                first = 1 if drop else 0
                classes = torch.arange(first, channels, device=input.device)
                masks = labels == classes.view([1, channels - first] + [1] * len(spatial))
    x = input.to(_accumulation_dtype(input))
    if activation == "softmax":
        p = torch.softmax(x, 1)
        return (p[:, 1:] if drop else p), masks, y
    if drop:
        x = x[:, 1:]
    if activation == "sigmoid" and activate:
        return torch.sigmoid(x), masks, y
    return x, masks, y


def _distance_loss_spacing(name: str, sampling: Sampling,
                           spatial_dims: int) -> Optional[List[float]]:
    """A distance loss's sampling for its maps: None, or one spacing per
    spatial dim."""
    spacing = _spacing(name, sampling, spatial_dims)
    if spacing is not None:
        if len(spacing) != spatial_dims:
            raise ValueError(f"{name}: sampling must have one value per spatial dim "
                             f"({spatial_dims}), got {len(spacing)}: {spacing}")
        # (The map op checks the range too, under its own name.)
        for d, value in enumerate(spacing):
            if not value > 0:
                raise ValueError(f"{name}: sampling must be positive, got {value} for "
                                 f"spatial dim {d}")
    return spacing


def _two_class_softmax_logits(input: Tensor, dtype: torch.dtype, kept: int) -> Tensor:
    """With a softmax over two channels, channel 1's probability is
    sigmoid(x_1 - x_0) and channel 0's sigmoid(x_0 - x_1): the logits of the
    fused sigmoid rows for the `kept` channels (1: channel 1 only, without
    the background; 2: both). The channels are taken apart with unbind, whose
    backward stacks the gradients in one pass (slices' would each zero a
    tensor of the input's size)."""
    channels = input.to(dtype).unbind(1)
    difference = (channels[1] - channels[0]).unsqueeze(1)
    return difference if kept == 1 else torch.cat([-difference, difference], 1)


def boundary_loss(
    input: Tensor,
    target: Tensor,
    distance_map: Optional[Tensor] = None,
    activation: str = "sigmoid",
    include_background: bool = True,
    batch: bool = False,
    reduction: str = "mean",
    sampling: Sampling = None,
) -> Tensor:
    r"""Boundary loss (Kervadec et al. 2019), as MONAI's ``BoundaryLoss``
    computes it: for each image ``n`` and channel ``c``

    .. math::
        \ell_{nc} = \frac{1}{|\Omega|} \sum_{x \in \Omega} p_{nc}(x)\, \phi_{nc}(x)

    with ``p`` the activated input, ``|Omega|`` the number of pixels and
    ``phi`` the signed distance map of the target's mask ``g`` (of
    :func:`segloss.signed_distance_map`): outside ``g`` the distance to the
    nearest pixel of ``g``, inside ``-(d - 1)`` with ``d`` the distance to the
    nearest pixel outside (so the mask's border pixels are 0 and its interior
    negative); 0 everywhere for an empty or full mask. The loss decreases as
    ``p`` moves onto the target, and is negative at best. ``phi`` is a
    constant: the gradient flows through ``p`` only. Then, with
    ``batch=True``, the mean over the images (``[C']``), and the reduction.

    Pass the options by keyword (they are not keyword-only only because
    TorchScript cannot compile keyword-only arguments).

    Args:
        input: ``Tensor[N, C, H, W]`` or ``Tensor[N, C, D, H, W]``; logits for
            ``activation="sigmoid"`` (default: per channel, binary or
            multi-label) or ``"softmax"`` (over C, needs ``C >= 2``),
            probabilities for ``"none"`` (MONAI's default). float16 and
            bfloat16 are computed in float32.
        target: either of the input's shape, one-hot or probabilities (an
            integer or bool one with C > 1 is one-hot), each channel's mask
            ``target > 0.5`` (MONAI's threshold); or class indices
            ``[N, *spatial]`` or ``[N, 1, *spatial]`` in ``[0, C)`` (integer,
            or float holding whole numbers), channel ``c``'s mask
            ``target == c`` (made one bool mask per kept channel, never a
            one-hot float tensor; with ``C == 1`` the map is the binary mask
            itself, labels 0 and 1).
        distance_map: optional, ``phi`` precomputed (e.g. in a data loader,
            with :func:`segloss.signed_distance_map` of the one-hot target),
            any floating dtype: of the input's shape ``[N, C, *spatial]``
            (channel 0's map is then dropped with the background) or of the
            kept channels' ``[N, C', *spatial]``. Used as it is, detached;
            ``target``'s shape is still checked, its values are not read.
        activation: ``"sigmoid"`` (default, as the other segloss losses),
            ``"softmax"`` or ``"none"``.
        include_background: ``False`` drops channel 0 (after the softmax, as
            MONAI); ignored for one channel (MONAI warns there).
        batch: average ``ell_nc`` over the images before the reduction
            (MONAI's ``batch``).
        reduction: ``"mean"`` (default) or ``"sum"`` over the ``ell_nc`` (or
            their batch means), or ``"none"``: ``Tensor[N, C']``
            (``Tensor[C']`` with ``batch=True``).
        sampling: the pixel spacing of the map computed here, one number or
            one per spatial dim (as ``scipy.ndimage``; default 1: MONAI's
            maps, which have none), e.g. an anisotropic volume's voxel size.
            Not with ``distance_map`` (computed with its own).

    Returns:
        The loss in ``input``'s dtype (float32 sums for float16/bfloat16,
        float64 for float64); differentiable with respect to ``input``.
    """
    name = "segloss.boundary_loss"
    _check_distance_loss_options(name, input, activation, reduction)
    spacing = _distance_loss_spacing(name, sampling, input.dim() - 2)
    if spacing is not None and distance_map is not None:
        raise ValueError(f"{name}: sampling applies to the map computed here; a given "
                         f"distance_map is used as it is (give one or the other)")
    # With a sigmoid, p is the kept logits: the fused row applies it. So it
    # does for a two-channel softmax, a sigmoid of the channels' difference.
    two_class = activation == "softmax" and input.shape[1] == 2
    fused = activation == "sigmoid" or two_class
    p, masks, _ = _distance_loss_operands(name, input, target,
                                          "sigmoid" if two_class else activation,
                                          include_background, distance_map is None, False,
                                          not fused)
    if two_class:
        p = _two_class_softmax_logits(input, p.dtype, p.shape[1])
    if distance_map is None:
        if masks is None:
            raise RuntimeError(f"{name}: internal error, no target masks")
        phi = signed_distance_map(masks, spacing, input.dim() - 2)
    else:
        phi = distance_map.detach()
        if not phi.is_floating_point():
            raise ValueError(f"{name}: distance_map must be floating point, got {phi.dtype}")
        if phi.shape != p.shape:
            if phi.shape == input.shape:
                phi = phi[:, 1:]  # the background's map, dropped with it
            else:
                raise ValueError(f"{name}: distance_map must have the input's shape "
                                 f"{list(input.shape)} or the kept channels' shape "
                                 f"{list(p.shape)}, got {list(phi.shape)}")
    spatial = _spatial_dims(p)
    pixels = 1
    for d in spatial:
        pixels *= p.shape[d]
    phi = phi.to(device=p.device, dtype=p.dtype)
    # One pass for the loss, one for its gradient: the pointwise row
    # sigmoid_boundary_loss (sigmoid(x) phi) or, over probabilities,
    # boundary_loss (p phi). (p, dense, is also the row's unused target.)
    row = "sigmoid_boundary_loss" if fused else "boundary_loss"
    p = p.contiguous()
    if reduction != "none":
        # The mean over every element is the mean of the per-image,
        # per-channel values.
        mean = torch.ops.segloss._pointwise_loss(p, p.detach(), None, phi, "mean", row, [],
                                                 name)
        images = 1 if batch else p.shape[0]
        scale = 1.0 if reduction == "mean" else float(images * p.shape[1])
        return (mean * scale).to(input.dtype)
    terms = torch.ops.segloss._pointwise_loss(p, p.detach(), None, phi, "none", row, [], name)
    loss = terms.sum(spatial) / pixels
    if batch:
        loss = loss.mean(0)
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(input.dtype)


def hausdorff_dt_loss(
    input: Tensor,
    target: Tensor,
    alpha: float = 2.0,
    log: bool = False,
    activation: str = "sigmoid",
    include_background: bool = False,
    batch: bool = False,
    reduction: str = "mean",
    sampling: Sampling = None,
) -> Tensor:
    r"""Hausdorff distance-transform loss (Karimi & Salcudean 2019), as MONAI's
    ``HausdorffDTLoss`` (and, with ``log=True``, ``LogHausdorffDTLoss``)
    computes it: for each image ``n`` and channel ``c``

    .. math::
        \ell_{nc} = \operatorname{mean}_{x} \left[(p - g)^2
                    \left(d_p^\alpha + d_g^\alpha\right)\right]

    with ``p`` the activated input, ``g`` the target, ``d_p`` the boundary
    distance map of the prediction ``p > 0.5`` and ``d_g`` that of the mask
    ``g > 0.5`` (:func:`segloss.boundary_distance_map`: each pixel's distance
    to the nearest pixel of the other class, ``edt(m) + edt(~m)``; 0
    everywhere for an empty or full mask). The maps are constants: the
    gradient flows through ``(p - g)^2``. ``batch=True`` takes the mean over
    the images and pixels together (MONAI's ``batch``: ``[C']``; the maps
    are still per image). Then the reduction, then ``log(loss + 1)`` with
    ``log=True`` (MONAI applies it after the reduction; computed as ``log1p``).

    Pass the options by keyword (they are not keyword-only only because
    TorchScript cannot compile keyword-only arguments).

    Args:
        input: ``Tensor[N, C, H, W]`` or ``Tensor[N, C, D, H, W]``; logits for
            ``activation="sigmoid"`` (default) or ``"softmax"`` (``C >= 2``),
            probabilities for ``"none"`` (MONAI's default). float16 and
            bfloat16 are computed in float32.
        target: as for :func:`boundary_loss`: the input's shape (one-hot or
            probabilities; ``g`` is the target itself, its map that of
            ``target > 0.5``), or integer class indices ``[N, *spatial]`` or
            ``[N, 1, *spatial]`` (``g = (target == c)``, a bool mask per kept
            channel, no one-hot float tensor).
        alpha: the distances' exponent, ``> 0`` (default 2).
        log: return ``log(1 + loss)`` (MONAI's ``LogHausdorffDTLoss``).
        activation: ``"sigmoid"`` (default), ``"softmax"`` or ``"none"``.
        include_background: ``False`` (default, MONAI's) drops channel 0
            (after the softmax); ignored for one channel (MONAI warns there).
        batch: the mean over images and pixels together, per channel.
        reduction: ``"mean"`` (default) or ``"sum"`` over the ``ell_nc`` (or
            the per-channel values with ``batch=True``), or ``"none"``:
            ``Tensor[N, C']`` (``Tensor[C']`` with ``batch=True``; MONAI
            returns them as ``[N, C', 1, 1(, 1)]`` and ``[1, C', 1, 1(, 1)]``).
        sampling: the pixel spacing of both maps, one number or one per
            spatial dim (as ``scipy.ndimage``; default 1: MONAI's maps, which
            have none), e.g. an anisotropic volume's voxel size.

    Returns:
        The loss in ``input``'s dtype (float32 arithmetic for float16/bfloat16,
        float64 for float64); differentiable with respect to ``input`` (and a
        floating target, through ``(p - g)^2``, as in MONAI).
    """
    name = "segloss.hausdorff_dt_loss"
    alpha = float(alpha)
    if not alpha > 0:
        raise ValueError(f"{name}: alpha must be > 0, got {alpha}")
    _check_distance_loss_options(name, input, activation, reduction)
    spacing = _distance_loss_spacing(name, sampling, input.dim() - 2)
    # With a sigmoid, x is the kept logits (the fused row applies it) and p
    # their sigmoid, which the prediction's map thresholds.
    x, masks, y = _distance_loss_operands(name, input, target, activation, include_background,
                                          True, True, activation != "sigmoid")
    if masks is None:
        raise RuntimeError(f"{name}: internal error, no target masks")
    p = torch.sigmoid(x) if activation == "sigmoid" else x
    # The fused row's logits: a two-channel softmax is a sigmoid of the
    # channels' difference (the map still thresholds the softmax itself).
    logits: Optional[Tensor] = None
    if activation == "sigmoid":
        logits = x
    elif activation == "softmax" and input.shape[1] == 2:
        logits = _two_class_softmax_logits(input, p.dtype, p.shape[1])
    spatial_dims = input.dim() - 2
    d_p = boundary_distance_map(p.detach() > 0.5, spacing, spatial_dims).to(p.device, p.dtype)
    d_g = boundary_distance_map(masks, spacing, spatial_dims).to(p.device, p.dtype)
    # In place: the maps are this call's own (no new tensors to fault in).
    distance = d_p.pow_(alpha).add_(d_g.pow_(alpha))
    spatial = _spatial_dims(p)
    axes = [0] + spatial if batch else spatial
    if y is None or not y.requires_grad:  # the rows have no target gradient
        # Fused: (sigmoid(x) - g)^2 (d_p^alpha + d_g^alpha) in one pass, its
        # gradient in one more: the pointwise row sigmoid_hausdorff_dt_loss
        # or, over probabilities, hausdorff_dt_loss ((p - g)^2 ...).
        row = "hausdorff_dt_loss"
        operand = p
        if logits is not None:
            row = "sigmoid_hausdorff_dt_loss"
            operand = logits
        g = y if y is not None else masks.to(p.dtype)
        if reduction == "none":
            terms = torch.ops.segloss._pointwise_loss(operand, g, None, distance, "none", row,
                                                      [], name)
            loss = terms.mean(axes)
        else:
            # Every value is a mean over equally many elements, so the mean
            # of all elements gives them.
            mean = torch.ops.segloss._pointwise_loss(operand, g, None, distance, "mean", row,
                                                     [], name)
            channels = p.shape[1]
            scale = 1.0 if reduction == "mean" else float(channels if batch
                                                          else channels * p.shape[0])
            loss = mean * scale
    else:
        if y is None:
            error = torch.where(masks, p - 1.0, p)  # p - g with g = masks, no float one-hot
        else:
            error = p - y
        loss = (error * error * distance).mean(axes)
        if reduction == "mean":
            loss = loss.mean()
        elif reduction == "sum":
            loss = loss.sum()
    if log:
        loss = torch.log1p(loss)
    return loss.to(input.dtype)


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
