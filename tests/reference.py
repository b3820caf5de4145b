"""Independent float64 references for the segloss binary cross-entropy ops.

Nothing here calls segloss. Where torch.nn.functional has the op (the logits
form, and the probability form without ``pos_weight``) the reference is
torch's own float64 result and autograd gradient; the probability form with
``pos_weight``, which torch lacks, uses the NumPy formulas below.
"""

from __future__ import annotations

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
