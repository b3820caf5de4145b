"""Independent float64 references for the segloss binary cross-entropy ops.

Nothing here calls segloss. Where torch.nn.functional has the op (the logits
form, and the probability form without ``pos_weight``) the reference is
torch's own float64 result and autograd gradient; the probability form with
``pos_weight``, which torch lacks, uses the NumPy formulas below.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

PROBABILITY = "probability"
LOGITS = "logits"
KINDS = (PROBABILITY, LOGITS)


def _np(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    if t is None:
        return None
    return t.detach().to("cpu", torch.float64).numpy()


def _reduce(values: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "none":
        return values
    if reduction == "sum":
        return np.asarray(values.sum(dtype=np.float64))
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(values.sum(dtype=np.float64) / values.size)
    raise ValueError(reduction)


def bce_np(p, y, weight=None, pos_weight=None, reduction="mean") -> np.ndarray:
    """-w * (pw * y * max(log p, -100) + (1 - y) * max(log1p(-p), -100)), float64."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(p) if weight is None else np.broadcast_to(np.asarray(weight, np.float64), p.shape)
    pw = (np.ones_like(p) if pos_weight is None
          else np.broadcast_to(np.asarray(pos_weight, np.float64), p.shape))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.log(p)
        log_1mp = np.log1p(-p)
    # np.maximum propagates NaN, as the op must.
    log_p = np.maximum(log_p, -100.0)
    log_1mp = np.maximum(log_1mp, -100.0)
    loss = -w * (pw * y * log_p + (1.0 - y) * log_1mp)
    return _reduce(loss, reduction)


def bce_grad_np(p, y, weight=None, pos_weight=None, reduction="mean", grad_output=1.0) -> np.ndarray:
    """d(loss)/dp = w * (-pw * y / p + (1 - y) / (1 - p)) times grad_output (/ numel for mean).

    Valid away from p = 0 and p = 1 (no clamping of the denominators).
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(p) if weight is None else np.broadcast_to(np.asarray(weight, np.float64), p.shape)
    pw = (np.ones_like(p) if pos_weight is None
          else np.broadcast_to(np.asarray(pos_weight, np.float64), p.shape))
    grad = w * (-pw * y / p + (1.0 - y) / (1.0 - p))
    g = np.asarray(grad_output, dtype=np.float64)
    if reduction == "mean":
        g = g / max(p.size, 1)
    return grad * g


def reference(kind, input, target, weight=None, pos_weight=None, reduction="mean",
              grad_output=None):
    """float64 CPU (loss, d loss / d input), each from one independent implementation.

    grad_output: the gradient flowing into the loss (input-shaped for 'none',
    a 0-dim tensor otherwise); None skips the gradient.
    """
    x = input.detach().to("cpu", torch.float64)
    y = target.detach().to("cpu", torch.float64)
    w = None if weight is None else weight.detach().to("cpu", torch.float64)
    pw = None if pos_weight is None else pos_weight.detach().to("cpu", torch.float64)
    g = None if grad_output is None else grad_output.detach().to("cpu", torch.float64)

    if kind == PROBABILITY and pw is not None:
        loss = torch.from_numpy(np.array(bce_np(_np(x), _np(y), _np(w), _np(pw), reduction)))
        grad = None
        if g is not None:
            grad = torch.from_numpy(np.array(bce_grad_np(_np(x), _np(y), _np(w), _np(pw),
                                                         reduction, _np(g))))
        return loss, grad

    x = x.clone().requires_grad_(g is not None)
    if kind == PROBABILITY:
        if w is not None:
            # torch expands the weight itself, but only from a shape it can
            # infer against the target: give it the full shape.
            w = w.expand(x.shape)
        loss = F.binary_cross_entropy(x, y, weight=w, reduction=reduction)
    elif kind == LOGITS:
        loss = F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw,
                                                  reduction=reduction)
    else:
        raise ValueError(kind)
    grad = None
    if g is not None:
        (grad,) = torch.autograd.grad(loss, x, g)
    return loss.detach(), grad


# --------------------------------------------------------------------------
# Dice loss references. Nothing here calls segloss.
#
#   I = sum m p y,  P = sum m p^gamma,  T = sum m y^gamma   (per (n, c), or per c
#   over the batch with batch_dice)
#   loss = w_c (1 - (2 I + s_nr) / (P + T + s_dr)), 0 where P + T + s_dr == 0,
#   channel 0 dropped first when include_background is False (as MONAI drops
#   it from the input: its sums get gradient 0, also where they are NaN).
#
# dice_np is NumPy with an analytic gradient; dice_torch is an eager PyTorch
# composite (one_hot + activation + sums) differentiated by torch.autograd.
# The two share no code, so that they check each other (test_dice.py).

ACTIVATIONS = ("sigmoid", "softmax", "none")


def dice_np(x, target, *, activation="sigmoid", gamma=1.0, smooth_nr=1e-5, smooth_dr=1e-5,
            batch_dice=False, include_background=True, class_weights=None, ignore_index=None,
            mask=None, reduction="mean", grad_output=None):
    """float64 NumPy (loss, d loss / d x); the gradient is None without grad_output
    (the upstream gradient: (N, C') / (C',) for 'none', a scalar otherwise).

    target: a floating array of x's shape, or an integer class-index map of
    shape (N, *spatial) or (N, 1, *spatial).
    """
    x = np.asarray(x, dtype=np.float64)
    target = np.asarray(target)
    N, C = x.shape[:2]
    spatial = tuple(range(2, x.ndim))
    if not np.issubdtype(target.dtype, np.floating):
        labels = target.astype(np.int64)
        if labels.ndim == x.ndim:
            assert labels.shape[1] == 1, labels.shape
            labels = labels[:, 0]
        assert labels.shape == (N,) + x.shape[2:], (labels.shape, x.shape)
        valid = np.ones(labels.shape, dtype=bool)
        if ignore_index is not None:
            valid = labels != ignore_index
        n_labels = 2 if C == 1 else C
        if np.any(valid & ((labels < 0) | (labels >= n_labels))):
            raise ValueError("label out of range")
        y = np.zeros(x.shape)
        for c in range(C):
            y[:, c] = labels == (1 if C == 1 else c)
        m = valid[:, None].astype(np.float64)
    else:
        assert ignore_index is None
        y = target.astype(np.float64)
        assert y.shape == x.shape
        m = np.ones((N, 1) + x.shape[2:])
    if mask is not None:
        m = m * np.broadcast_to(np.asarray(mask) != 0, (N, 1) + x.shape[2:])

    if activation == "sigmoid":
        p = np.exp(-np.logaddexp(0.0, -x))
    elif activation == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
    elif activation == "none":
        p = x
    else:
        raise ValueError(activation)

    I = (m * p * y).sum(axis=spatial)
    P = (m * p ** gamma).sum(axis=spatial)
    T = (m * y ** gamma).sum(axis=spatial)
    if batch_dice:
        I, P, T = I.sum(0), P.sum(0), T.sum(0)
    num = 2 * I + smooth_nr
    den = P + T + smooth_dr
    empty = den == 0
    safe = np.where(empty, 1.0, den)
    per = np.where(empty, 0.0, 1.0 - num / safe)
    w = np.ones(C) if class_weights is None else np.asarray(class_weights, np.float64)
    per = per * w
    first = 0 if include_background else 1
    kept = per[..., first:]
    if reduction == "none":
        loss = kept
    elif reduction == "sum":
        loss = np.asarray(kept.sum())
    elif reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = np.asarray(kept.sum() / kept.size)
    else:
        raise ValueError(reduction)
    if grad_output is None:
        return loss, None

    g = np.asarray(grad_output, dtype=np.float64)
    G = np.zeros(per.shape)
    if reduction == "none":
        G[..., first:] = g
    else:
        G[..., first:] = g / (kept.size if reduction == "mean" else 1)
    G = G * w
    dropped = np.arange(C) < first  # no gradient, whatever its sums
    dI = np.where(empty | dropped, 0.0, -2.0 * G / safe)
    dP = np.where(empty | dropped, 0.0, G * num / safe ** 2)
    if batch_dice:
        dI, dP = np.broadcast_to(dI, (N, C)), np.broadcast_to(dP, (N, C))
    dI = dI.reshape((N, C) + (1,) * len(spatial))
    dP = dP.reshape((N, C) + (1,) * len(spatial))
    dp = m * (dI * y + dP * gamma * p ** (gamma - 1))
    if activation == "sigmoid":
        dx = dp * p * (1 - p)
    elif activation == "softmax":
        dx = p * (dp - (p * dp).sum(axis=1, keepdims=True))
    else:
        dx = dp
    return loss, dx


def dense_target_and_mask(x, target, ignore_index, mask):
    """(float64 target (N, C, *spatial), float64 mask (N, 1, *spatial)) on the
    CPU: a class-index target one-hot (for one channel, label 1), its pixels
    equal to ignore_index masked out."""
    n, c = x.shape[:2]
    if target.dtype.is_floating_point:
        y = target.detach().to("cpu", torch.float64)
        m = torch.ones((n, 1) + tuple(x.shape[2:]), dtype=torch.float64)
    else:
        labels = target.detach().to("cpu", torch.int64)
        if labels.dim() == x.dim():
            labels = labels.squeeze(1)
        keep = torch.ones_like(labels, dtype=torch.bool)
        if ignore_index is not None:
            keep = labels != ignore_index
        safe = torch.where(keep, labels, 0)
        if c == 1:
            y = (safe == 1).to(torch.float64).unsqueeze(1)
        else:
            # one-hot by comparison (F.one_hot refuses C = 0 on an empty tensor)
            classes = torch.arange(c).reshape((1, c) + (1,) * (x.dim() - 2))
            y = (safe.unsqueeze(1) == classes).to(torch.float64)
        m = keep.unsqueeze(1).to(torch.float64)
    if mask is not None:
        m = m * (mask.detach().to("cpu") != 0).to(torch.float64)
    return y, m


def dice_sums_torch(x, target, activation="sigmoid", gamma=1.0, ignore_index=None, mask=None,
                    soft_label=False):
    """The (N, C, 3) sums (I, P, T) of a float64 CPU `x`, in eager PyTorch
    (differentiable with respect to x); with soft_label, (N, C, 4): and
    D = sum m |p - y|^gamma."""
    dims = list(range(2, x.dim()))
    y, m = dense_target_and_mask(x, target, ignore_index, mask)
    if activation == "sigmoid":
        p = torch.sigmoid(x)
    elif activation == "softmax":
        p = torch.softmax(x, dim=1)
    elif activation == "none":
        p = x
    else:
        raise ValueError(activation)
    # A pixel that does not count (m = 0) gets gradient exactly 0, as
    # F.cross_entropy's ignore_index gives, even where dL/dI is not finite.
    p = torch.where(m != 0, p, p.detach())
    columns = [(m * p * y).sum(dims), (m * p.pow(gamma)).sum(dims), (m * y.pow(gamma)).sum(dims)]
    if soft_label:
        columns.append((m * (p - y).abs().pow(gamma)).sum(dims))
    return torch.stack(columns, dim=-1)


def dice_torch(x, target, *, activation="sigmoid", gamma=1.0, smooth_nr=1e-5, smooth_dr=1e-5,
               batch_dice=False, include_background=True, class_weights=None,
               ignore_index=None, mask=None, reduction="mean", grad_output=None):
    """float64 eager PyTorch on the CPU: (loss, autograd d loss / d x); the
    gradient is None without grad_output."""
    x = x.detach().to("cpu", torch.float64).requires_grad_(grad_output is not None)
    loss = dice_torch_loss(x, target, activation=activation, gamma=gamma, smooth_nr=smooth_nr,
                           smooth_dr=smooth_dr, batch_dice=batch_dice,
                           include_background=include_background, class_weights=class_weights,
                           ignore_index=ignore_index, mask=mask, reduction=reduction)
    grad = None
    if grad_output is not None:
        (grad,) = torch.autograd.grad(loss, x, grad_output.detach().to("cpu", torch.float64))
    return loss.detach(), grad


def dice_torch_loss(x, target, *, activation="sigmoid", gamma=1.0, smooth_nr=1e-5,
                    smooth_dr=1e-5, batch_dice=False, include_background=True,
                    class_weights=None, ignore_index=None, mask=None, reduction="mean"):
    """dice_torch's loss of a float64 CPU `x`, still attached to x's graph."""
    return region_torch_loss("dice_loss", x, target, activation=activation, gamma=gamma,
                             smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch_dice=batch_dice,
                             include_background=include_background, class_weights=class_weights,
                             ignore_index=ignore_index, mask=mask, reduction=reduction)


# --------------------------------------------------------------------------
# The region losses: a formula per (n, c) over the sums (I, P, T), written
# here from the papers and MONAI's definitions, then the weights, the
# background and the reduction. A zero denominator is a perfect score.

def _ratio_or_perfect(numerator, denominator):
    empty = denominator == 0
    return torch.where(empty, torch.ones_like(denominator),
                       numerator / torch.where(empty, torch.ones_like(denominator), denominator))


def _dice_term(I, P, T, smooth_nr, smooth_dr, **_):
    return 1 - _ratio_or_perfect(2 * I + smooth_nr, P + T + smooth_dr)


def _jaccard_term(I, P, T, smooth_nr, smooth_dr, **_):
    union = P + T - I  # |p ∪ y| = |p| + |y| - |p ∩ y|
    return 1 - _ratio_or_perfect(2 * I + smooth_nr, 2 * union + smooth_dr)


def _tversky_term(I, P, T, smooth_nr, smooth_dr, alpha=0.5, beta=0.5, focal_gamma=1.0, **_):
    tp, fp, fn = I, P - I, T - I
    term = 1 - _ratio_or_perfect(tp + smooth_nr, tp + alpha * fp + beta * fn + smooth_dr)
    if focal_gamma == 1.0:
        return term
    # A term <= 0 counts as 0 (gradient 0); NaN stays NaN.
    positive = term > 0
    return torch.where(positive, torch.where(positive, term, torch.ones_like(term)) ** focal_gamma,
                       torch.where(term.isnan(), term, torch.zeros_like(term)))


def _log_cosh_dice_term(I, P, T, smooth_nr, smooth_dr, **_):
    # Plain log(cosh(d)) in float64: exact enough for the |d| of the tests.
    return torch.log(torch.cosh(_dice_term(I, P, T, smooth_nr, smooth_dr)))


REGION_TERMS = {"dice_loss": _dice_term, "jaccard_loss": _jaccard_term,
                "tversky_loss": _tversky_term, "log_cosh_dice_loss": _log_cosh_dice_term}


def _generalized_dice(I, P, T, class_weights, include_background, smooth_nr, smooth_dr,
                      w_type="square"):
    """Sudre et al.'s generalized Dice of each image (row; one row with
    batch_dice), MONAI's rule for absent classes: an infinite weight becomes
    the row's largest finite one (0 if none)."""
    if not include_background:
        I, P, T = I[..., 1:], P[..., 1:], T[..., 1:]
    rows = [(I, P, T)] if I.dim() == 1 else list(zip(I, P, T))
    values = []
    for i, p, t in rows:
        weights = []
        for volume in t.detach().tolist():
            if w_type == "uniform":
                weights.append(1.0)
            elif volume == 0:
                weights.append(math.inf)
            else:
                weights.append(1.0 / volume ** 2 if w_type == "square" else 1.0 / volume)
        finite = [w for w in weights if math.isfinite(w)]
        weights = [w if math.isfinite(w) else max(finite, default=0.0) for w in weights]
        w = torch.tensor(weights, dtype=torch.float64)
        if class_weights is not None:
            cw = class_weights.detach().to("cpu", torch.float64)
            w = w * (cw if include_background else cw[1:])
        numerator = 2 * (w * i).sum() + smooth_nr
        denominator = (w * (p + t)).sum() + smooth_dr
        values.append(1 - _ratio_or_perfect(numerator, denominator))
    return torch.stack(values) if I.dim() > 1 else values[0]


def region_torch_loss(loss, x, target, *, activation="sigmoid", gamma=1.0, smooth_nr=1e-5,
                      smooth_dr=1e-5, batch_dice=False, include_background=True,
                      class_weights=None, ignore_index=None, mask=None, reduction="mean",
                      soft_label=False, **params):
    """The region loss `loss` (a segloss function name) of a float64 CPU `x`,
    attached to x's graph; `params` are the loss's own options (alpha, beta,
    focal_gamma). With soft_label, MONAI's soft-label true positives
    (P + T - D) / 2 take I's place."""
    sums = dice_sums_torch(x, target, activation, gamma, ignore_index, mask, soft_label)
    if batch_dice:
        sums = sums.sum(0)
    if soft_label:
        _, P, T, D = sums.unbind(-1)
        I = (P + T - D) / 2
    else:
        I, P, T = sums.unbind(-1)
    if loss == "generalized_dice_loss":
        per = _generalized_dice(I, P, T, class_weights, include_background, smooth_nr,
                                smooth_dr, **params)
        if batch_dice:
            per = per.reshape(1)
    else:
        weights = None if class_weights is None else class_weights.detach().to("cpu",
                                                                                torch.float64)
        if not include_background:  # dropped first, as MONAI drops it from the input
            I, P, T = I[..., 1:], P[..., 1:], T[..., 1:]
            weights = None if weights is None else weights[1:]
        per = REGION_TERMS[loss](I, P, T, smooth_nr=smooth_nr, smooth_dr=smooth_dr, **params)
        if weights is not None:
            per = per * weights
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    if reduction == "none":
        return per
    raise ValueError(reduction)


def region_torch(loss, x, target, *, grad_output=None, **options):
    """float64 eager PyTorch on the CPU: (loss, autograd d loss / d x) of the
    region loss `loss`; the gradient is None without grad_output."""
    x = x.detach().to("cpu", torch.float64).requires_grad_(grad_output is not None)
    value = region_torch_loss(loss, x, target, **options)
    grad = None
    if grad_output is not None:
        (grad,) = torch.autograd.grad(value, x, grad_output.detach().to("cpu", torch.float64))
    return value.detach(), grad


def dice_reference(x, target, grad_output=None, **options):
    """dice_np on tensors (any device and dtype): float64 CPU tensors (loss, grad)."""
    t = target.detach().cpu()
    t = (t.to(torch.float64) if t.dtype.is_floating_point else t.to(torch.int64)).numpy()
    opts = {key: (_np(value) if isinstance(value, torch.Tensor) else value)
            for key, value in options.items()}
    loss, grad = dice_np(_np(x), t, grad_output=_np(grad_output), **opts)
    return (torch.from_numpy(np.array(loss, dtype=np.float64)),
            None if grad is None else torch.from_numpy(np.ascontiguousarray(grad)))


# --------------------------------------------------------------------------
# Dice + cross-entropy reference: lambda_dice * Dice + lambda_ce * CE, the
# Dice from dice_torch_loss and the CE from torch.nn.functional (cross_entropy
# for softmax, binary_cross_entropy_with_logits with a per-channel pos_weight
# for sigmoid). Nothing here calls segloss.

def _labels_and_keep(x, target, ignore_index, mask):
    """(int64 labels (N, *spatial), bool keep (N, *spatial)) of a class-index target."""
    labels = target.detach().to("cpu", torch.int64)
    if labels.dim() == x.dim():
        labels = labels.squeeze(1)
    keep = torch.ones_like(labels, dtype=torch.bool)
    if ignore_index is not None:
        keep = labels != ignore_index
    if mask is not None:
        m = (mask.detach().to("cpu") != 0).expand((x.shape[0], 1) + tuple(x.shape[2:]))
        keep = keep & m[:, 0]
    return labels, keep


def cross_entropy_torch(x, target, *, activation="softmax", class_weights=None,
                        ignore_index=None, mask=None, reduction="mean", label_smoothing=0.0):
    """The CE half of Dice + CE for a float64 CPU `x` (attached to x's graph);
    label_smoothing is F.cross_entropy's own."""
    N, C = x.shape[:2]
    w = None if class_weights is None else class_weights.detach().to("cpu", torch.float64)
    dense = target.dtype.is_floating_point
    if dense:
        y = target.detach().to("cpu", torch.float64)
        keep = torch.ones((N,) + tuple(x.shape[2:]), dtype=torch.bool)
        if mask is not None:
            m = (mask.detach().to("cpu") != 0).expand((N, 1) + tuple(x.shape[2:]))
            keep = keep & m[:, 0]
    else:
        labels, keep = _labels_and_keep(x, target, ignore_index, mask)
    if activation == "softmax":
        if dense and label_smoothing > 0:
            # Every class has target mass e / C: PyTorch's probability form.
            per_pixel = F.cross_entropy(x, y, weight=w, reduction="none",
                                        label_smoothing=label_smoothing)
            total = torch.where(keep, per_pixel, 0.0).sum()
            return total / keep.sum() if reduction == "mean" else total
        if dense:
            # F.cross_entropy(x, y, weight=w) with 0 log 0 = 0: a class
            # without target mass adds nothing, whatever its logit (-inf too;
            # PyTorch's probability form gives 0 * -inf = NaN there).
            wy = y if w is None else y * w.view((1, C) + (1,) * (x.dim() - 2))
            terms = torch.where(wy != 0, wy * F.log_softmax(x, 1), 0.0)
            per_pixel = -terms.sum(1)
            # where, not a product: pixels that do not count get gradient 0.
            total = torch.where(keep, per_pixel, 0.0).sum()
            return total / keep.sum() if reduction == "mean" else total
        # Masked-out pixels become ignored ones.
        sentinel = -100 if ignore_index is None else int(ignore_index)
        masked = torch.where(keep, labels, torch.full_like(labels, sentinel))
        return F.cross_entropy(x, masked, weight=w, ignore_index=sentinel, reduction=reduction,
                               label_smoothing=label_smoothing)
    if activation == "sigmoid":
        if not dense:
            safe = torch.where(keep, labels, torch.zeros_like(labels))
            if C == 1:
                y = (safe == 1).to(torch.float64).unsqueeze(1)
            else:
                y = F.one_hot(safe, C).movedim(-1, 1).to(torch.float64)
        pos_weight = None if w is None else w.view((C,) + (1,) * (x.dim() - 2))
        per = F.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight, reduction="none")
        m = keep.unsqueeze(1).expand_as(per)
        total = torch.where(m, per, 0.0).sum()
        return total / m.sum() if reduction == "mean" else total
    raise ValueError(activation)


def dice_ce_torch(x, target, *, activation="softmax", gamma=1.0, smooth_nr=1e-5,
                  smooth_dr=1e-5, batch_dice=False, include_background=True,
                  class_weights=None, ignore_index=None, mask=None, lambda_dice=1.0,
                  lambda_ce=1.0, reduction="mean", ce_weight=None, label_smoothing=0.0,
                  grad_output=None):
    """float64 eager PyTorch on the CPU: (loss, autograd d loss / d x) of
    lambda_dice * Dice + lambda_ce * CE, the CE weighted by ce_weight if given,
    else by class_weights; the gradient is None without grad_output."""
    x = x.detach().to("cpu", torch.float64).requires_grad_(grad_output is not None)
    dice = dice_torch_loss(x, target, activation=activation, gamma=gamma, smooth_nr=smooth_nr,
                           smooth_dr=smooth_dr, batch_dice=batch_dice,
                           include_background=include_background, class_weights=class_weights,
                           ignore_index=ignore_index, mask=mask, reduction=reduction)
    ce = cross_entropy_torch(x, target, activation=activation,
                             class_weights=class_weights if ce_weight is None else ce_weight,
                             ignore_index=ignore_index, mask=mask, reduction=reduction,
                             label_smoothing=label_smoothing)
    loss = lambda_dice * dice + lambda_ce * ce
    grad = None
    if grad_output is not None:
        (grad,) = torch.autograd.grad(loss, x, grad_output.detach().to("cpu", torch.float64))
    return loss.detach(), grad


# MONAI's FocalLoss (sigmoid_focal_loss / softmax_focal_loss) and Dice + focal.

# The floor of the focal reductions' divisors (0 / floor = 0 for nothing counted).
FOCAL_EPS = torch.finfo(torch.float32).eps


def focal_terms(x, y, *, focal_activation, focal_gamma, alpha=None):
    """MONAI's focal loss of each element (N, C, *spatial) of float64 `x`
    (attached) and the dense target `y`, alpha applied."""
    c = x.shape[1]
    if focal_activation == "sigmoid":
        # B = (1 - y) x - log sigmoid(x) as (1 - y) softplus(x) + y
        # softplus(-x): the direct form cancels for x << 0 (and its autograd
        # gradient 1 - y - sigmoid(-x) too: 1e-4 relative at x = -26, y = 0).
        # softplus(x) = logaddexp(x, 0): F.softplus is linear past 20.
        zero = torch.zeros_like(x)
        loss = (1 - y) * torch.logaddexp(x, zero) + y * torch.logaddexp(-x, zero)
        if focal_gamma:
            loss = torch.exp(focal_gamma * F.logsigmoid(-x * (2 * y - 1))) * loss
        if alpha is not None:
            loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
        return loss
    log_p = torch.log_softmax(x, 1)
    loss = -(1 - log_p.exp()).pow(focal_gamma) * log_p * y
    if alpha is not None:
        factor = torch.tensor([1 - alpha] + [alpha] * (c - 1), dtype=torch.float64)
        loss = factor.view([1, c] + [1] * (x.dim() - 2)) * loss
    return loss


def focal_reduce(loss, m, *, masked, class_weights=None, include_background=True,
                 reduction="mean"):
    """MONAI FocalLoss's reduction of per-element values `loss` (N, C,
    *spatial) over the pixels that count (`m`, (N, 1, *spatial)): with
    `masked` (a mask or ignore_index given), "mean" divides by the pixels
    counted, not the elements."""
    c = loss.shape[1]
    loss = torch.where(m != 0, loss, torch.zeros_like(loss))
    if class_weights is not None:
        loss = loss * class_weights.to("cpu", torch.float64).view([1, c] + [1] * (loss.dim() - 2))
    if not include_background:
        loss = loss[:, 1:]
    dims = list(range(2, loss.dim()))
    if reduction == "sum":
        return (loss.sum(dims) / m.sum(dims).clamp_min(FOCAL_EPS)).sum()
    if masked:
        return loss.sum() / m.sum().clamp_min(FOCAL_EPS)
    return loss.mean()


def focal_torch(x, target, *, focal_activation, focal_gamma, alpha=None, class_weights=None,
                include_background=True, ignore_index=None, mask=None, reduction="mean"):
    """MONAI's FocalLoss on float64 `x` (attached) and the one-hot target."""
    y, m = dense_target_and_mask(x, target, ignore_index, mask)
    loss = focal_terms(x, y, focal_activation=focal_activation, focal_gamma=focal_gamma,
                       alpha=alpha)
    return focal_reduce(loss, m, masked=mask is not None or ignore_index is not None,
                        class_weights=class_weights, include_background=include_background,
                        reduction=reduction)


def dice_focal_torch(x, target, *, activation="sigmoid", gamma=1.0, smooth_nr=1e-5,
                     smooth_dr=1e-5, batch_dice=False, include_background=True,
                     class_weights=None, ignore_index=None, mask=None, reduction="mean",
                     focal_gamma=2.0, alpha=None, lambda_dice=1.0, lambda_focal=1.0,
                     focal_activation=None, grad_output=None):
    """(loss, autograd d loss / d x) in float64 eager PyTorch on the CPU."""
    x = x.detach().to("cpu", torch.float64).requires_grad_(grad_output is not None)
    dice = dice_torch_loss(x, target, activation=activation, gamma=gamma, smooth_nr=smooth_nr,
                           smooth_dr=smooth_dr, batch_dice=batch_dice,
                           include_background=include_background, class_weights=class_weights,
                           ignore_index=ignore_index, mask=mask, reduction=reduction)
    focal = focal_torch(x, target, focal_activation=focal_activation or activation,
                        focal_gamma=focal_gamma, alpha=alpha, class_weights=class_weights,
                        include_background=include_background, ignore_index=ignore_index,
                        mask=mask, reduction=reduction)
    loss = lambda_dice * dice + lambda_focal * focal
    grad = None
    if grad_output is not None:
        (grad,) = torch.autograd.grad(loss, x, grad_output.detach().to("cpu", torch.float64))
    return loss.detach(), grad
