"""``torch.nn.Module`` wrappers of the segloss losses."""

from typing import List, Optional

import torch
from torch import Tensor

from segloss import functional as F

__all__ = ["BCELoss", "BCEWithLogitsLoss", "WeightedBCELoss", "BalancedBCEWithLogitsLoss",
           "FocalLoss", "DiceLoss", "DiceCELoss", "DiceFocalLoss",
           "TverskyLoss", "JaccardLoss", "LogCoshDiceLoss", "GeneralizedDiceLoss",
           "ShapeAwareLoss", "BoundaryLoss", "HausdorffDTLoss", "LogHausdorffDTLoss"]

_REDUCTIONS = ("none", "mean", "sum")


def _name(module: torch.nn.Module) -> str:
    """The public name of a segloss.nn class, for its error messages."""
    return f"segloss.nn.{type(module).__name__}"


def _check_reduction(module: torch.nn.Module, reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{_name(module)}: reduction must be one of {_REDUCTIONS}, got "
                         f"{reduction!r}")
    return reduction


def _weights(module: torch.nn.Module, name: str, weights) -> Optional[Tensor]:
    """Per-class weights as given to a module: a tensor, or (as MONAI's
    `weight`) a sequence of numbers or one number for every class."""
    if weights is None or isinstance(weights, Tensor):
        return weights
    try:
        return torch.as_tensor(weights, dtype=torch.get_default_dtype())
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{_name(module)}: {name} must be a tensor, a sequence of numbers or a "
                        f"number, got {weights!r}") from None


def _check_nonnegative(module: torch.nn.Module, **values: float) -> None:
    """Raises unless every value is finite and >= 0 (NaN is not), naming them
    together."""
    got = ' and '.join(str(value) for value in values.values())
    if not all(value >= 0 for value in values.values()):
        raise ValueError(f"{_name(module)}: {' and '.join(values)} must be >= 0, got {got}")
    if any(value == float("inf") for value in values.values()):
        raise ValueError(f"{_name(module)}: {' and '.join(values)} must be finite, got {got}")


class _BCEBase(torch.nn.Module):
    weight: Optional[Tensor]
    pos_weight: Optional[Tensor]

    def __init__(self, weight: Optional[Tensor] = None, pos_weight: Optional[Tensor] = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        # Buffers follow the module across .to(device) and into state_dict.
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.reduction = _check_reduction(self, reduction)

    def extra_repr(self) -> str:
        parts = [f"reduction={self.reduction!r}"]
        if self.weight is not None:
            parts.append(f"weight=Tensor{list(self.weight.shape)}")
        if self.pos_weight is not None:
            parts.append(f"pos_weight=Tensor{list(self.pos_weight.shape)}")
        return ", ".join(parts)


class BCELoss(_BCEBase):
    r"""Binary cross-entropy of probabilities, like ``torch.nn.BCELoss`` plus ``pos_weight``.

    ``loss = -weight * [pos_weight * y * log(p) + (1 - y) * log(1 - p)]``; see
    :func:`segloss.binary_cross_entropy`. ``forward(input, target)`` takes
    ``input`` (probabilities) and ``target`` of one shape ``[*]``.
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, self.weight, self.pos_weight, self.reduction)


class BCEWithLogitsLoss(_BCEBase):
    r"""Binary cross-entropy of logits, like ``torch.nn.BCEWithLogitsLoss``.

    ``loss = -weight * [pos_weight * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x))]``;
    see :func:`segloss.binary_cross_entropy_with_logits`.
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.pos_weight,
                                                  self.reduction)


class WeightedBCELoss(torch.nn.Module):
    r"""The article's weighted binary cross-entropy with positive-class weight ``beta``.

    .. math::
        \ell = -\beta\, y \log \hat{p} - (1 - y) \log(1 - \hat{p})

    ``beta > 1`` penalises false negatives more (fewer missed foreground
    pixels), ``beta < 1`` false positives. A common choice is
    ``beta = n_negative / n_positive``.

    Args:
        beta: weight of the positive term (a float, or a tensor broadcastable
            to the input, e.g. ``[C, 1, 1]`` per channel).
        from_logits: ``input`` holds logits (default) or probabilities.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
    """

    beta: Tensor

    def __init__(self, beta, from_logits: bool = True, reduction: str = "mean") -> None:
        super().__init__()
        try:
            beta_tensor = torch.as_tensor(beta, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{_name(self)}: beta must be a number or a tensor, got "
                            f"{beta!r}") from None
        if not bool((beta_tensor > 0).all()):
            raise ValueError(f"{_name(self)}: beta must be positive, got {beta}")
        self.register_buffer("beta", beta_tensor)
        self.from_logits = from_logits
        self.reduction = _check_reduction(self, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        if self.from_logits:
            return F.binary_cross_entropy_with_logits(input, target, None, self.beta,
                                                      self.reduction)
        return F.binary_cross_entropy(input, target, None, self.beta, self.reduction)

    def extra_repr(self) -> str:
        beta = self.beta.item() if self.beta.numel() == 1 else f"Tensor{list(self.beta.shape)}"
        return f"beta={beta}, from_logits={self.from_logits}, reduction={self.reduction!r}"


class BalancedBCEWithLogitsLoss(torch.nn.Module):
    r"""Balanced BCE of logits, ``beta = 1 - mean(y)`` from the target; see
    :func:`segloss.balanced_bce_with_logits`.

    Args:
        per_image: ``beta`` of each image (default) or of the batch
            (pytorch-toolbelt's ``BalancedBCEWithLogitsLoss``).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
    """

    def __init__(self, per_image: bool = True, reduction: str = "mean") -> None:
        super().__init__()
        self.per_image = per_image
        self.reduction = _check_reduction(self, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.balanced_bce_with_logits(input, target, self.per_image, None, self.reduction)

    def extra_repr(self) -> str:
        return f"per_image={self.per_image}, reduction={self.reduction!r}"


class FocalLoss(torch.nn.Module):
    r"""Focal loss, ``-alpha_t (1 - p_t)^gamma log p_t``, sigmoid or softmax;
    MONAI's ``FocalLoss`` values and reductions. See :func:`segloss.focal_loss`
    for the arguments; ``forward(input, target, mask=None)``.

    MONAI ``FocalLoss(gamma=, alpha=, weight=, use_softmax=, to_onehot_y=True)``
    is ``FocalLoss(gamma=, alpha=, class_weights=, activation="softmax")``
    with a class-index target (no one-hot).
    """

    class_weights: Optional[Tensor]
    alpha_scalar: Optional[float]
    alpha_list: Optional[List[float]]

    def __init__(self, gamma: float = 2.0, alpha=None, activation: str = "sigmoid",
                 include_background: bool = True, class_weights: Optional[Tensor] = None,
                 ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__()
        _check_nonnegative(self, gamma=gamma)
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"{_name(self)}: activation must be 'sigmoid' or 'softmax', got "
                             f"{activation!r}")
        self.gamma = float(gamma)
        self.alpha_scalar = None
        self.alpha_list = None
        try:
            if isinstance(alpha, (list, tuple)):
                self.alpha_list = [float(a) for a in alpha]
            elif alpha is not None:
                self.alpha_scalar = float(alpha)
        except (TypeError, ValueError):
            raise TypeError(f"{_name(self)}: alpha must be a number, a list of numbers or None, "
                            f"got {alpha!r}") from None
        self.activation = activation
        self.include_background = include_background
        self.register_buffer("class_weights", _weights(self, "class_weights", class_weights))
        self.ignore_index = ignore_index
        self.reduction = _check_reduction(self, reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if self.alpha_list is not None:
            return F.focal_loss(input, target, self.gamma, self.alpha_list, self.activation,
                                self.include_background, self.class_weights, self.ignore_index,
                                mask, self.reduction)
        return F.focal_loss(input, target, self.gamma, self.alpha_scalar, self.activation,
                            self.include_background, self.class_weights, self.ignore_index,
                            mask, self.reduction)

    def extra_repr(self) -> str:
        alpha = self.alpha_list if self.alpha_list is not None else self.alpha_scalar
        return (f"gamma={self.gamma}, alpha={alpha}, activation={self.activation!r}, "
                f"reduction={self.reduction!r}")


class _DiceOptions(torch.nn.Module):
    """The options DiceLoss and DiceCELoss share, checked and stored once."""

    class_weights: Optional[Tensor]

    def __init__(self, activation: str, gamma: float, smooth_nr: float, smooth_dr: float,
                 batch_dice: bool, include_background: bool, class_weights: Optional[Tensor],
                 ignore_index: Optional[int]) -> None:
        super().__init__()
        if not gamma >= 1:
            raise ValueError(f"{_name(self)}: gamma must be >= 1, got {gamma}")
        # Checked once, here, as MONAI does (in forward it would stall each
        # CUDA step on a copy to the host).
        class_weights = _weights(self, "class_weights", class_weights)
        if class_weights is not None and bool((class_weights < 0).any()):
            raise ValueError(f"{_name(self)}: class_weights must be non-negative, got "
                             f"{class_weights.tolist()}")
        self.activation = activation
        self.gamma = float(gamma)
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.batch_dice = batch_dice
        self.include_background = include_background
        # A buffer: follows .to(device) and goes into state_dict.
        self.register_buffer("class_weights", class_weights)
        self.ignore_index = ignore_index

    def _optional_repr(self) -> List[str]:
        parts = []
        if self.class_weights is not None:
            parts.append(f"class_weights=Tensor{list(self.class_weights.shape)}")
        if self.ignore_index is not None:
            parts.append(f"ignore_index={self.ignore_index}")
        return parts


class _RegionLoss(_DiceOptions):
    """The options of the region losses (Dice, Jaccard, log-cosh Dice,
    Tversky): Dice's, the reduction and ddp, checked and stored once."""

    def __init__(self, activation: str, gamma: float, smooth_nr: float, smooth_dr: float,
                 batch_dice: bool, include_background: bool, class_weights: Optional[Tensor],
                 ignore_index: Optional[int], reduction: str, ddp: bool,
                 soft_label: bool) -> None:
        if activation not in ("sigmoid", "softmax", "none"):
            raise ValueError(f"{_name(self)}: activation must be 'sigmoid', 'softmax' or 'none', "
                             f"got {activation!r}")
        super().__init__(activation, gamma, smooth_nr, smooth_dr, batch_dice,
                         include_background, class_weights, ignore_index)
        self.reduction = _check_reduction(self, reduction)
        if ddp and not batch_dice:
            raise ValueError(f"{_name(self)}: ddp=True needs batch_dice=True")
        self.ddp = ddp
        self.soft_label = soft_label

    def _repr(self, own: List[str]) -> str:
        """The repr's parts: activation, then the loss's own options, then
        the shared ones."""
        parts = [f"activation={self.activation!r}", *own,
                 f"smooth_nr={self.smooth_nr}", f"smooth_dr={self.smooth_dr}",
                 f"batch_dice={self.batch_dice}",
                 f"include_background={self.include_background}", *self._optional_repr(),
                 f"reduction={self.reduction!r}"]
        if self.ddp:
            parts.append("ddp=True")
        if self.soft_label:
            parts.append("soft_label=True")
        return ", ".join(parts)


class DiceLoss(_RegionLoss):
    r"""Dice loss, ``1 - (2 sum(p y) + smooth_nr) / (sum(p^gamma) + sum(y^gamma) + smooth_dr)``.

    See :func:`segloss.dice_loss` for the arguments and shapes;
    ``forward(input, target, mask=None)``. ``class_weights`` is a buffer
    (follows ``.to(device)``).
    """

    def __init__(self, activation: str = "sigmoid", gamma: float = 1.0, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5, batch_dice: bool = False,
                 include_background: bool = True, class_weights: Optional[Tensor] = None,
                 ignore_index: Optional[int] = None, reduction: str = "mean",
                 ddp: bool = False, soft_label: bool = False) -> None:
        super().__init__(activation, gamma, smooth_nr, smooth_dr, batch_dice,
                         include_background, class_weights, ignore_index, reduction, ddp,
                         soft_label)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return F.dice_loss(input, target, activation=self.activation, gamma=self.gamma,
                           smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr,
                           batch_dice=self.batch_dice,
                           include_background=self.include_background,
                           class_weights=self.class_weights, ignore_index=self.ignore_index,
                           mask=mask, reduction=self.reduction, ddp=self.ddp,
                           soft_label=self.soft_label)

    def extra_repr(self) -> str:
        return self._repr([f"gamma={self.gamma}"])


class JaccardLoss(DiceLoss):
    r"""Soft Jaccard (IoU) loss, ``1 - (2 I + smooth_nr) / (2 (P + T - I) + smooth_dr)``
    (MONAI's ``DiceLoss(jaccard=True)``).

    Same options as :class:`DiceLoss`; see :func:`segloss.jaccard_loss`.
    """

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return F.jaccard_loss(input, target, activation=self.activation, gamma=self.gamma,
                              smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr,
                              batch_dice=self.batch_dice,
                              include_background=self.include_background,
                              class_weights=self.class_weights, ignore_index=self.ignore_index,
                              mask=mask, reduction=self.reduction, ddp=self.ddp,
                              soft_label=self.soft_label)


class LogCoshDiceLoss(DiceLoss):
    r"""Log-cosh Dice loss, ``log(cosh(dice loss))`` per image and class (Jadon 2020).

    Same options as :class:`DiceLoss`; see :func:`segloss.log_cosh_dice_loss`.
    """

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return F.log_cosh_dice_loss(input, target, activation=self.activation, gamma=self.gamma,
                                    smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr,
                                    batch_dice=self.batch_dice,
                                    include_background=self.include_background,
                                    class_weights=self.class_weights,
                                    ignore_index=self.ignore_index, mask=mask,
                                    reduction=self.reduction, ddp=self.ddp,
                                    soft_label=self.soft_label)


class TverskyLoss(_RegionLoss):
    r"""(Focal) Tversky loss, ``(1 - (TP + smooth_nr) / (TP + alpha FP + beta FN + smooth_dr))
    ** focal_gamma`` per image and class (MONAI's ``TverskyLoss`` with ``focal_gamma=1``).

    See :func:`segloss.tversky_loss`; ``forward(input, target, mask=None)``.
    """

    def __init__(self, activation: str = "sigmoid", alpha: float = 0.5, beta: float = 0.5,
                 focal_gamma: float = 1.0, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                 batch_dice: bool = False, include_background: bool = True,
                 class_weights: Optional[Tensor] = None, ignore_index: Optional[int] = None,
                 reduction: str = "mean", ddp: bool = False, soft_label: bool = False) -> None:
        super().__init__(activation, 1.0, smooth_nr, smooth_dr, batch_dice, include_background,
                         class_weights, ignore_index, reduction, ddp, soft_label)
        _check_nonnegative(self, alpha=alpha)
        _check_nonnegative(self, beta=beta)
        if not focal_gamma > 0:
            raise ValueError(f"{_name(self)}: focal_gamma must be > 0, got {focal_gamma}")
        _check_nonnegative(self, focal_gamma=focal_gamma)  # (finite)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.focal_gamma = float(focal_gamma)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return F.tversky_loss(input, target, activation=self.activation, alpha=self.alpha,
                              beta=self.beta, focal_gamma=self.focal_gamma,
                              smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr,
                              batch_dice=self.batch_dice,
                              include_background=self.include_background,
                              class_weights=self.class_weights, ignore_index=self.ignore_index,
                              mask=mask, reduction=self.reduction, ddp=self.ddp,
                              soft_label=self.soft_label)

    def extra_repr(self) -> str:
        return self._repr([f"alpha={self.alpha}", f"beta={self.beta}",
                           f"focal_gamma={self.focal_gamma}"])


class GeneralizedDiceLoss(_RegionLoss):
    r"""Generalized Dice loss, ``1 - (2 sum_c w_c I_c + smooth_nr) / (sum_c w_c (P_c + T_c) +
    smooth_dr)`` per image, ``w_c = 1 / T_c^2`` (MONAI's ``GeneralizedDiceLoss``).

    See :func:`segloss.generalized_dice_loss`; ``forward(input, target, mask=None)``.
    """

    def __init__(self, activation: str = "sigmoid", w_type: str = "square",
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, batch_dice: bool = False,
                 include_background: bool = True, class_weights: Optional[Tensor] = None,
                 ignore_index: Optional[int] = None, reduction: str = "mean",
                 ddp: bool = False, soft_label: bool = False) -> None:
        super().__init__(activation, 1.0, smooth_nr, smooth_dr, batch_dice, include_background,
                         class_weights, ignore_index, reduction, ddp, soft_label)
        if w_type not in ("square", "simple", "uniform"):
            raise ValueError(f"{_name(self)}: w_type must be 'square', 'simple' or 'uniform', "
                             f"got {w_type!r}")
        self.w_type = w_type

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return F.generalized_dice_loss(input, target, activation=self.activation,
                                       w_type=self.w_type, smooth_nr=self.smooth_nr,
                                       smooth_dr=self.smooth_dr, batch_dice=self.batch_dice,
                                       include_background=self.include_background,
                                       class_weights=self.class_weights,
                                       ignore_index=self.ignore_index, mask=mask,
                                       reduction=self.reduction, ddp=self.ddp,
                                       soft_label=self.soft_label)

    def extra_repr(self) -> str:
        return self._repr([f"w_type={self.w_type!r}"])


class DiceCELoss(_DiceOptions):
    r"""``lambda_dice * Dice + lambda_ce * CE`` from one read of the logits.

    See :func:`segloss.dice_ce_loss`; ``forward(input, target, mask=None)``.
    ``class_weights`` and ``ce_weight`` (the CE's own class weights) are
    buffers (follow ``.to(device)``).
    """

    ce_weight: Optional[Tensor]

    def __init__(self, activation: str = "softmax", gamma: float = 1.0, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5, batch_dice: bool = False,
                 include_background: bool = True, class_weights: Optional[Tensor] = None,
                 ignore_index: Optional[int] = None, lambda_dice: float = 1.0,
                 lambda_ce: float = 1.0, reduction: str = "mean",
                 ce_weight: Optional[Tensor] = None, label_smoothing: float = 0.0) -> None:
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"{_name(self)}: activation must be 'sigmoid' or 'softmax', got "
                             f"{activation!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"{_name(self)}: reduction must be 'mean' or 'sum', got "
                             f"{reduction!r}")
        if not 0 <= label_smoothing <= 1:
            raise ValueError(f"{_name(self)}: label_smoothing must lie in [0, 1], got "
                             f"{label_smoothing}")
        if label_smoothing > 0 and activation != "softmax":
            raise ValueError(f"{_name(self)}: label_smoothing applies to the softmax "
                             f"cross-entropy, got activation={activation!r}")
        super().__init__(activation, gamma, smooth_nr, smooth_dr, batch_dice,
                         include_background, class_weights, ignore_index)
        self.label_smoothing = float(label_smoothing)
        _check_nonnegative(self, lambda_dice=lambda_dice, lambda_ce=lambda_ce)
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)
        self.reduction = reduction
        self.register_buffer("ce_weight", _weights(self, "ce_weight", ce_weight))

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return F.dice_ce_loss(input, target, activation=self.activation, gamma=self.gamma,
                              smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr,
                              batch_dice=self.batch_dice,
                              include_background=self.include_background,
                              class_weights=self.class_weights, ignore_index=self.ignore_index,
                              mask=mask, lambda_dice=self.lambda_dice, lambda_ce=self.lambda_ce,
                              reduction=self.reduction, ce_weight=self.ce_weight,
                              label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        parts = [f"activation={self.activation!r}", f"gamma={self.gamma}",
                 f"batch_dice={self.batch_dice}",
                 f"include_background={self.include_background}",
                 f"lambda_dice={self.lambda_dice}", f"lambda_ce={self.lambda_ce}",
                 *self._optional_repr()]
        if self.ce_weight is not None:
            parts.append(f"ce_weight=Tensor{list(self.ce_weight.shape)}")
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        parts.append(f"reduction={self.reduction!r}")
        return ", ".join(parts)


class DiceFocalLoss(_DiceOptions):
    r"""``lambda_dice * Dice + lambda_focal * focal`` from one read of the logits.

    See :func:`segloss.dice_focal_loss`; ``forward(input, target, mask=None)``.
    ``class_weights`` is a buffer (follows ``.to(device)``).
    """

    def __init__(self, activation: str = "sigmoid", gamma: float = 1.0,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, batch_dice: bool = False,
                 include_background: bool = True, class_weights: Optional[Tensor] = None,
                 ignore_index: Optional[int] = None, reduction: str = "mean",
                 focal_gamma: float = 2.0, alpha: Optional[float] = None,
                 lambda_dice: float = 1.0, lambda_focal: float = 1.0,
                 focal_activation: Optional[str] = None) -> None:
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"{_name(self)}: activation must be 'sigmoid' or 'softmax', got "
                             f"{activation!r}")
        if focal_activation not in (None, "sigmoid", "softmax"):
            raise ValueError(f"{_name(self)}: focal_activation must be 'sigmoid', 'softmax' "
                             f"or None, got {focal_activation!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"{_name(self)}: reduction must be 'mean' or 'sum', got "
                             f"{reduction!r}")
        _check_nonnegative(self, focal_gamma=focal_gamma)
        if alpha is not None and not 0 <= alpha <= 1:
            raise ValueError(f"{_name(self)}: alpha must lie in [0, 1], got {alpha}")
        _check_nonnegative(self, lambda_dice=lambda_dice, lambda_focal=lambda_focal)
        super().__init__(activation, gamma, smooth_nr, smooth_dr, batch_dice,
                         include_background, class_weights, ignore_index)
        self.reduction = reduction
        self.focal_gamma = float(focal_gamma)
        self.alpha: Optional[float] = None if alpha is None else float(alpha)
        self.lambda_dice = float(lambda_dice)
        self.lambda_focal = float(lambda_focal)
        self.focal_activation: Optional[str] = focal_activation

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return F.dice_focal_loss(input, target, activation=self.activation, gamma=self.gamma,
                                 smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr,
                                 batch_dice=self.batch_dice,
                                 include_background=self.include_background,
                                 class_weights=self.class_weights,
                                 ignore_index=self.ignore_index, mask=mask,
                                 reduction=self.reduction, focal_gamma=self.focal_gamma,
                                 alpha=self.alpha, lambda_dice=self.lambda_dice,
                                 lambda_focal=self.lambda_focal,
                                 focal_activation=self.focal_activation)

    def extra_repr(self) -> str:
        parts = [f"activation={self.activation!r}", f"gamma={self.gamma}",
                 f"batch_dice={self.batch_dice}",
                 f"include_background={self.include_background}",
                 f"focal_gamma={self.focal_gamma}", f"lambda_dice={self.lambda_dice}",
                 f"lambda_focal={self.lambda_focal}", *self._optional_repr()]
        if self.alpha is not None:
            parts.append(f"alpha={self.alpha}")
        if self.focal_activation is not None:
            parts.append(f"focal_activation={self.focal_activation!r}")
        parts.append(f"reduction={self.reduction!r}")
        return ", ".join(parts)


class ShapeAwareLoss(torch.nn.Module):
    r"""The shape-aware (U-Net) loss, owning the weight-map options.

    ``forward(input, target, weight_map=None, instances=None)``: BCE (a float
    ``target``) or softmax cross-entropy (a class-index ``target``) weighted
    per pixel by ``weight_map``, or by the U-Net weight map of ``instances``
    computed on the input's device with this module's ``w0``, ``sigma``,
    ``class_weights`` and ``sampling``; see :func:`segloss.shape_aware_loss`.
    Scriptable.

    Args:
        w0, sigma: border weight and width (the U-Net paper's 10 and 5).
        class_weights: the map's ``w_c``: ``None``, ``"balanced"`` or
            ``{0: w_background, 1: w_foreground}``.
        sampling: spacing per spatial dim, or ``None`` (1).
        from_logits: ``input`` holds logits (default) or probabilities
            (binary form).
        weight: per-class weights ``Tensor[C]`` of the multi-class form (a
            buffer: it follows the module's device), or ``None``.
        ignore_index: the target value the multi-class form leaves out.
        reduction: ``"mean"``, ``"weighted_mean"``, ``"sum"`` or ``"none"``.
        label_smoothing: in ``[0, 1]``, multi-class form only: as
            ``F.cross_entropy(label_smoothing=)``.
    """

    fixed_class_weights: Optional[List[float]]
    sampling: Optional[List[float]]
    weight: Optional[Tensor]

    def __init__(self, w0: float = 10.0, sigma: float = 5.0, class_weights=None,
                 sampling: Optional[List[float]] = None, from_logits: bool = True,
                 weight: Optional[Tensor] = None, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__()
        from segloss.distance import _number, class_weight_arguments

        if reduction not in ("none", "mean", "sum", "weighted_mean"):
            raise ValueError(f"{_name(self)}: reduction must be 'none', 'mean', 'sum' or "
                             f"'weighted_mean', got {reduction!r}")
        label_smoothing = _number(_name(self), "label_smoothing", label_smoothing)
        if not 0 <= label_smoothing <= 1:
            raise ValueError(f"{_name(self)}: label_smoothing must lie in [0, 1], got "
                             f"{label_smoothing}")
        self.label_smoothing = label_smoothing
        self.fixed_class_weights, self.balanced, _ = class_weight_arguments(
            "segloss.nn.ShapeAwareLoss", class_weights, allow_pixel=False)
        self.w0 = _number(_name(self), "w0", w0)
        self.sigma = _number(_name(self), "sigma", sigma)
        self.sampling = _module_sampling(self, sampling)
        self.from_logits = from_logits
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight))
        self.ignore_index = int(ignore_index)
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor, weight_map: Optional[Tensor] = None,
                instances: Optional[Tensor] = None) -> Tensor:
        if instances is None:  # a given map is used as it is
            return torch.ops.segloss.shape_aware_loss(
                input, target, weight_map, from_logits=self.from_logits, weight=self.weight,
                ignore_index=self.ignore_index, reduction=self.reduction,
                label_smoothing=self.label_smoothing)
        return torch.ops.segloss.shape_aware_loss(
            input, target, weight_map, instances=instances, w0=self.w0, sigma=self.sigma,
            sampling=self.sampling, class_weights=self.fixed_class_weights,
            balanced=self.balanced, from_logits=self.from_logits, weight=self.weight,
            ignore_index=self.ignore_index, reduction=self.reduction,
            label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        weights = ("balanced" if self.balanced else
                   f"{self.fixed_class_weights}" if self.fixed_class_weights is not None else None)
        smoothing = (f", label_smoothing={self.label_smoothing}" if self.label_smoothing
                     else "")
        return (f"w0={self.w0}, sigma={self.sigma}, class_weights={weights}, "
                f"sampling={self.sampling}, from_logits={self.from_logits}, "
                f"ignore_index={self.ignore_index}, reduction={self.reduction!r}{smoothing}")



def _check_activation(module: torch.nn.Module, activation: str) -> str:
    if activation not in ("sigmoid", "softmax", "none"):
        raise ValueError(f"{_name(module)}: activation must be 'sigmoid', 'softmax' or 'none', "
                         f"got {activation!r}")
    return activation


def _module_sampling(module: torch.nn.Module, sampling) -> Optional[List[float]]:
    """A module's sampling: None or one number per spatial dim (a single
    number would need the input's number of spatial dims, not known yet)."""
    from segloss.distance import _spacing

    if isinstance(sampling, (int, float)):
        raise TypeError(f"{_name(module)}: sampling must be a sequence of numbers, one per "
                        f"spatial dim, got {sampling!r}")
    return _spacing(_name(module), sampling, 0)


class BoundaryLoss(torch.nn.Module):
    r"""Boundary loss (Kervadec et al.), ``mean_x p(x) phi(x)`` per image and
    channel with ``phi`` the target's signed distance map; MONAI's
    ``BoundaryLoss``. See :func:`segloss.boundary_loss`;
    ``forward(input, target, distance_map=None)``.

    MONAI ``BoundaryLoss(softmax=True, to_onehot_y=True)`` is
    ``BoundaryLoss(activation="softmax")`` with a class-index target (no
    one-hot); MONAI's default (no activation) is ``activation="none"``.
    """

    sampling: Optional[List[float]]

    def __init__(self, activation: str = "sigmoid", include_background: bool = True,
                 batch: bool = False, reduction: str = "mean",
                 sampling: Optional[List[float]] = None) -> None:
        super().__init__()
        self.activation = _check_activation(self, activation)
        self.include_background = include_background
        self.batch = batch
        self.reduction = _check_reduction(self, reduction)
        self.sampling = _module_sampling(self, sampling)

    def forward(self, input: Tensor, target: Tensor,
                distance_map: Optional[Tensor] = None) -> Tensor:
        return F.boundary_loss(input, target, distance_map=distance_map,
                               activation=self.activation,
                               include_background=self.include_background, batch=self.batch,
                               reduction=self.reduction, sampling=self.sampling)

    def extra_repr(self) -> str:
        return (f"activation={self.activation!r}, include_background={self.include_background}, "
                f"batch={self.batch}, reduction={self.reduction!r}"
                + (f", sampling={self.sampling}" if self.sampling is not None else ""))


class HausdorffDTLoss(torch.nn.Module):
    r"""Hausdorff distance-transform loss (Karimi & Salcudean),
    ``mean_x (p - g)^2 (d_p^alpha + d_g^alpha)`` per image and channel;
    MONAI's ``HausdorffDTLoss``, and with ``log=True`` its
    ``LogHausdorffDTLoss``. See :func:`segloss.hausdorff_dt_loss`;
    ``forward(input, target)``.

    MONAI ``HausdorffDTLoss(softmax=True, to_onehot_y=True)`` is
    ``HausdorffDTLoss(activation="softmax")`` with a class-index target;
    MONAI's default (no activation) is ``activation="none"``.
    """

    sampling: Optional[List[float]]

    def __init__(self, alpha: float = 2.0, log: bool = False, activation: str = "sigmoid",
                 include_background: bool = False, batch: bool = False,
                 reduction: str = "mean", sampling: Optional[List[float]] = None) -> None:
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"{_name(self)}: alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)
        self.log = bool(log)
        self.activation = _check_activation(self, activation)
        self.include_background = include_background
        self.batch = batch
        self.reduction = _check_reduction(self, reduction)
        self.sampling = _module_sampling(self, sampling)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.hausdorff_dt_loss(input, target, alpha=self.alpha, log=self.log,
                                   activation=self.activation,
                                   include_background=self.include_background,
                                   batch=self.batch, reduction=self.reduction,
                                   sampling=self.sampling)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, log={self.log}, activation={self.activation!r}, "
                f"include_background={self.include_background}, batch={self.batch}, "
                f"reduction={self.reduction!r}"
                + (f", sampling={self.sampling}" if self.sampling is not None else ""))


class LogHausdorffDTLoss(HausdorffDTLoss):
    r"""``log(1 + HausdorffDTLoss)``, MONAI's ``LogHausdorffDTLoss``:
    :class:`HausdorffDTLoss` with ``log=True`` (the same options, less
    ``log``)."""

    def __init__(self, alpha: float = 2.0, activation: str = "sigmoid",
                 include_background: bool = False, batch: bool = False,
                 reduction: str = "mean", sampling: Optional[List[float]] = None) -> None:
        super().__init__(alpha, True, activation, include_background, batch, reduction,
                         sampling)
