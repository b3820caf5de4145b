"""Test-data builders and comparison helpers shared by the segloss tests."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional, Sequence

import torch

import segloss
from reference import LOGITS, PROBABILITY

# The ops are registered once, here, for every test module.
torch.ops.load_library(segloss.library_path())

OPS = {
    PROBABILITY: torch.ops.segloss.binary_cross_entropy,
    LOGITS: torch.ops.segloss.binary_cross_entropy_with_logits,
}
BACKWARD_OPS = {
    PROBABILITY: torch.ops.segloss._binary_cross_entropy_backward,
    LOGITS: torch.ops.segloss._binary_cross_entropy_with_logits_backward,
}
OP_NAMES = {
    PROBABILITY: "segloss.binary_cross_entropy",
    LOGITS: "segloss.binary_cross_entropy_with_logits",
}
REDUCTIONS = ("none", "mean", "sum")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rand(shape, gen, low=0.0, high=1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64)


def make_input(kind: str, shape, gen, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Probabilities in [0.02, 0.98] or logits ~ 3 * N(0, 1)."""
    if kind == PROBABILITY:
        values = _rand(shape, gen, 0.02, 0.98)
    else:
        values = 3.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    return values.to(device=device, dtype=dtype)


def make_target(shape, gen, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Soft labels in [0, 1], with about a third exactly 0 and a third exactly 1."""
    soft = _rand(shape, gen)
    pick = _rand(shape, gen)
    values = torch.where(pick < 1 / 3, 0.0, torch.where(pick < 2 / 3, 1.0, soft))
    return values.to(device=device, dtype=dtype)


def weight_shape(spec: str, shape: Sequence[int]):
    """The shape a weight of kind `spec` has for an input of `shape`, or None if
    that kind makes no sense for it."""
    nd = len(shape)
    if spec == "scalar":
        return ()
    if spec in ("full", "full_t", "expanded") and nd >= 1:
        return tuple(shape)
    if spec == "last" and nd >= 1:
        return (shape[-1],)
    if spec == "c11" and nd >= 4:  # (C, 1, 1) / (C, 1, 1, 1)
        return (shape[1],) + (1,) * (nd - 2)
    if spec == "1c11" and nd >= 4:  # (1, C, 1, 1) / (1, C, 1, 1, 1)
        return (1, shape[1]) + (1,) * (nd - 2)
    if spec == "h1" and nd >= 2:  # (H, 1): broadcast along the innermost dimension
        return (shape[-2], 1)
    if spec == "n111" and nd >= 2:  # (N, 1, ..., 1)
        return (shape[0],) + (1,) * (nd - 1)
    return None


def make_weight(spec: Optional[str], shape, gen, dtype=torch.float64, device="cpu", *,
                low=0.5, high=2.0) -> Optional[torch.Tensor]:
    """A positive weight of kind `spec` (see weight_shape) for an input of `shape`.

    'full_t' is a non-contiguous (transposed, or for 1-D strided) view of the
    full shape, 'expanded' a stride-0 expansion of a (1, ..., W) tensor.
    """
    if spec is None:
        return None
    wshape = weight_shape(spec, shape)
    assert wshape is not None, (spec, shape)
    if spec == "full_t":
        if len(wshape) >= 2:
            swapped = list(wshape)
            swapped[-1], swapped[-2] = swapped[-2], swapped[-1]
            w = _rand(swapped, gen, low, high).transpose(-1, -2)
        else:
            w = _rand((2 * wshape[0],), gen, low, high)[::2]
        assert not w.is_contiguous()
        return w.to(device=device, dtype=dtype)
    if spec == "expanded":
        w = _rand((1,) * (len(wshape) - 1) + (wshape[-1],), gen, low, high)
        return w.to(device=device, dtype=dtype).expand(wshape)
    return _rand(wshape, gen, low, high).to(device=device, dtype=dtype)


def make_grad_output(reduction: str, shape, gen, dtype=torch.float64, device="cpu"):
    """A non-trivial upstream gradient: input-shaped for 'none', else 0-dim 1.25."""
    if reduction == "none":
        return _rand(shape, gen, -1.5, 1.5).to(device=device, dtype=dtype)
    return torch.tensor(1.25, dtype=dtype, device=device)


def forward_backward(kind, x, y, weight=None, pos_weight=None, reduction="mean",
                     grad_output=None):
    """The op's loss and input gradient (grad is None when grad_output is None)."""
    x = x.detach().requires_grad_(grad_output is not None)
    loss = OPS[kind](x, y, weight, pos_weight, reduction)
    grad = None
    if grad_output is not None:
        (grad,) = torch.autograd.grad(loss, x, grad_output)
    return loss.detach(), grad


def tolerances(dtype: torch.dtype, expected: torch.Tensor):
    """(rtol, atol) for comparing a result of `dtype` with a float64 reference:
    1e-12 for float64, 1e-6 for float32 and the dtype's resolution for the
    half types, each atol scaled by the reference's largest magnitude."""
    finite = expected[torch.isfinite(expected)] if expected.numel() else expected
    scale = float(finite.detach().abs().max()) if finite.numel() else 1.0
    scale = max(scale, 1e-30)
    if dtype == torch.float64:
        return 1e-12, 1e-12
    if dtype == torch.float32:
        return 1e-6, 1e-6 * scale
    eps = torch.finfo(dtype).eps  # float16: 2**-10, bfloat16: 2**-7
    return eps, eps * scale


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, dtype=None, msg=""):
    """actual (any device, dtype `dtype`) equals the float64 reference within
    that dtype's tolerance; NaN must match NaN."""
    dtype = actual.dtype if dtype is None else dtype
    expected = expected.to(torch.float64)
    assert actual.shape == expected.shape, (msg, actual.shape, expected.shape)
    rtol, atol = tolerances(dtype, expected)
    torch.testing.assert_close(actual.detach().to("cpu", torch.float64), expected, rtol=rtol,
                               atol=atol, equal_nan=True, msg=lambda m: f"{msg}\n{m}")


def run_python(code: str, *args: str, env_update: Optional[dict] = None,
               timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (this one), failing with its output if it fails."""
    env = dict(os.environ)
    env.update(env_update or {})
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc
