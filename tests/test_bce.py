"""Values and input gradients of the segloss binary cross-entropy ops.

Every check compares with one independent float64 reference (reference.py):
torch.nn.functional where it has the op, a NumPy formula where it has not
(the probability form with pos_weight).
"""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import segloss
from helpers import (CPU_ISAS, OP_NAMES, OPS, REDUCTIONS, assert_matches, forward_backward,
                     make_grad_output, make_input, make_target, make_weight, run_python,
                     run_python_with_cpu_isa, weight_shape)
from reference import KINDS, LOGITS, PROBABILITY, bce_grad_np, bce_np, reference

FLOAT_DTYPES = {"float64": torch.float64, "float32": torch.float32}
FUNCTIONAL = {PROBABILITY: segloss.binary_cross_entropy,
              LOGITS: segloss.binary_cross_entropy_with_logits}
HALF_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}

SHAPES = {
    "n1hw": (2, 1, 5, 7),
    "nchw": (2, 3, 5, 7),
    "ncdhw": (2, 3, 4, 5, 6),
    "1d": (11,),
    "0d": (),
    # 9840 elements: several of the CPU kernel's 2048-element blocks and a
    # partial one, with rows (41) that straddle block boundaries.
    "multiblock": (3, 2, 40, 41),
}

# (weight kind, pos_weight kind); kinds are described in helpers.make_weight.
WEIGHTINGS = [
    (None, None),
    ("c11", None), ("1c11", None), ("last", None), ("scalar", None), ("full", None),
    ("full_t", None), ("expanded", None),
    (None, "c11"), (None, "1c11"), (None, "last"), (None, "scalar"), (None, "full"),
    (None, "full_t"),
    ("h1", None), ("n111", None), (None, "h1"),
    ("full_t", "c11"), ("scalar", "last"), ("n111", "h1"),
]


def _value_cases():
    cases = []
    for shape_id, shape in SHAPES.items():
        for w, pw in WEIGHTINGS:
            if any(k is not None and weight_shape(k, shape) is None for k in (w, pw)):
                continue
            cases.append(pytest.param(shape, w, pw, id=f"{shape_id}-w={w}-pw={pw}"))
    return cases


def _check(kind, dtype, device, gen, shape, w_kind, pw_kind, reduction, x=None, y=None):
    x = make_input(kind, shape, gen, dtype, device) if x is None else x
    y = make_target(shape, gen, dtype, device) if y is None else y
    w = make_weight(w_kind, shape, gen, dtype, device)
    pw = make_weight(pw_kind, shape, gen, dtype, device, low=0.5, high=3.0)
    g = make_grad_output(reduction, shape, gen, dtype, device)
    loss, grad = forward_backward(kind, x, y, w, pw, reduction, g)
    ref_loss, ref_grad = reference(kind, x, y, w, pw, reduction, g)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert loss.device == x.device
    assert_matches(loss, ref_loss, msg="loss")
    assert_matches(grad, ref_grad, msg="grad")


# --------------------------------------------------------------------------
# The NumPy reference itself agrees with torch where torch has the op.


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_numpy_reference_matches_torch(gen, reduction, weighted):
    shape = (3, 4, 5)
    p = make_input(PROBABILITY, shape, gen)
    y = make_target(shape, gen)
    w = make_weight("last", shape, gen) if weighted else None
    g = make_grad_output(reduction, shape, gen)
    ref_loss, ref_grad = reference(PROBABILITY, p, y, w, None, reduction, g)
    loss = bce_np(p.numpy(), y.numpy(), None if w is None else w.numpy(), None, reduction)
    grad = bce_grad_np(p.numpy(), y.numpy(), None if w is None else w.numpy(), None, reduction,
                       g.numpy())
    np.testing.assert_allclose(loss, ref_loss.numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(grad, ref_grad.numpy(), rtol=1e-12, atol=1e-12)
    # pos_weight = 1 is no pos_weight; pos_weight = 2 doubles only the positive term.
    ones = np.ones(shape)
    np.testing.assert_allclose(bce_np(p.numpy(), y.numpy(), None if w is None else w.numpy(),
                                      ones, reduction),
                               ref_loss.numpy(), rtol=1e-13, atol=1e-13)
    pos = bce_np(p.numpy(), y.numpy(), None, 2 * ones, "none")
    expected = -(2 * y * torch.log(p) + (1 - y) * torch.log1p(-p))
    np.testing.assert_allclose(pos, expected.numpy(), rtol=1e-13)


# --------------------------------------------------------------------------
# Values and gradients over shapes, weight broadcasting and reductions.


@pytest.mark.parametrize("shape,w_kind,pw_kind", _value_cases())
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES.values(), ids=FLOAT_DTYPES.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference(kind, dtype, reduction, shape, w_kind, pw_kind, device, gen):
    _check(kind, dtype, device, gen, shape, w_kind, pw_kind, reduction)


def _with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """Same values as `t`, another memory layout."""
    if layout == "contiguous":
        out = t.contiguous()
    elif layout == "transposed":
        out = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    elif layout == "permuted":
        dims = list(reversed(range(t.dim())))
        out = t.permute(dims).contiguous().permute(dims)
    elif layout == "step":
        big = torch.zeros(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype, device=t.device)
        big[..., ::2] = t
        out = big[..., ::2]
    elif layout == "channels_last":
        fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
        out = t.contiguous(memory_format=fmt)
    else:
        raise ValueError(layout)
    assert torch.equal(out, t)
    assert layout == "contiguous" or not out.is_contiguous(), layout
    return out


LAYOUT_CASES = [
    # (shape, input layout, target layout)
    ((2, 3, 5, 7), "transposed", "transposed"),
    ((2, 3, 5, 7), "step", "contiguous"),
    ((2, 3, 5, 7), "contiguous", "step"),
    ((2, 3, 5, 7), "channels_last", "channels_last"),
    ((2, 3, 5, 7), "channels_last", "transposed"),
    ((2, 3, 4, 5, 6), "channels_last", "permuted"),
    ((2, 3, 4, 5, 6), "permuted", "step"),
    ((2, 3, 33, 37), "channels_last", "step"),
]


@pytest.mark.parametrize("shape,in_layout,tgt_layout", LAYOUT_CASES,
                         ids=[f"{len(s)}d-{a}-{b}" for s, a, b in LAYOUT_CASES])
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES.values(), ids=FLOAT_DTYPES.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_noncontiguous_input_and_target(kind, dtype, reduction, weighted, shape, in_layout,
                                        tgt_layout, device, gen):
    x = _with_layout(make_input(kind, shape, gen, dtype, device), in_layout)
    y = _with_layout(make_target(shape, gen, dtype, device), tgt_layout)
    w_kind, pw_kind = ("full_t", "c11") if weighted else (None, None)
    _check(kind, dtype, device, gen, shape, w_kind, pw_kind, reduction, x=x, y=y)


@pytest.mark.parametrize("ndim", [8, 9, 12])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_weights_with_many_unmergeable_dims(kind, reduction, ndim, device, gen):
    # Broadcast dimensions alternating with kept ones cannot be merged: 8 is
    # as many as the CPU kernel walks by strides, beyond it copies the weight.
    shape = (2,) * ndim
    x = make_input(kind, shape, gen, device=device)
    y = make_target(shape, gen, device=device)
    w = make_weight("full", ((2, 1) * ndim)[:ndim], gen, device=device)
    pw = make_weight("full", ((1, 2) * ndim)[:ndim], gen, device=device, low=0.5, high=3.0)
    g = make_grad_output(reduction, shape, gen, device=device)
    loss, grad = forward_backward(kind, x, y, w, pw, reduction, g)
    ref_loss, ref_grad = reference(kind, x, y, w, pw, reduction, g)
    assert_matches(loss, ref_loss, msg="loss")
    assert_matches(grad, ref_grad, msg="grad")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES.values(), ids=FLOAT_DTYPES.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_noncontiguous_grad_output(kind, dtype, device, gen):
    # reduction 'none' with an upstream gradient that is a transposed view,
    # and one that is an expanded (stride-0) scalar, as loss.sum() gives.
    shape = (2, 3, 5, 7)
    x = make_input(kind, shape, gen, dtype, device).requires_grad_()
    y = make_target(shape, gen, dtype, device)
    w = make_weight("c11", shape, gen, dtype, device)
    g_t = _with_layout(make_grad_output("none", shape, gen, dtype, device), "transposed")
    g_e = torch.tensor(0.75, dtype=dtype, device=device).expand(shape)
    for g in (g_t, g_e):
        loss = OPS[kind](x, y, w, None, "none")
        (grad,) = torch.autograd.grad(loss, x, g)
        _, ref_grad = reference(kind, x, y, w, None, "none", g)
        assert_matches(grad, ref_grad)


@pytest.mark.parametrize("shape", [(0,), (2, 0, 3)], ids=["0", "2x0x3"])
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_empty(kind, reduction, weighted, shape, device, gen):
    # mean -> NaN (as torch), sum -> 0, none -> empty; the gradient is empty.
    w_kind, pw_kind = ("last", "last") if weighted else (None, None)
    _check(kind, torch.float64, device, gen, shape, w_kind, pw_kind, reduction)
    x = torch.empty(shape, dtype=torch.float32, device=device, requires_grad=True)
    loss = OPS[kind](x, torch.empty_like(x), None, None, reduction)
    loss.sum().backward()
    assert x.grad.shape == shape


# --------------------------------------------------------------------------
# Extreme values.

P_EXTREME = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.5, 0.25]
Y_EXTREME = [0.0, 1.0, 1.0, 0.0, 0.3, 0.3, 1.0, 0.0]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES.values(), ids=FLOAT_DTYPES.keys())
def test_probabilities_exactly_zero_and_one(dtype, reduction, device, gen):
    # Each log is clamped at -100: finite loss, equal to torch's, and torch's gradient.
    x = torch.tensor(P_EXTREME, dtype=dtype, device=device)
    y = torch.tensor(Y_EXTREME, dtype=dtype, device=device)
    w = torch.linspace(0.5, 2.0, len(P_EXTREME), dtype=dtype, device=device)
    g = make_grad_output(reduction, x.shape, gen, dtype, device)
    loss, grad = forward_backward(PROBABILITY, x, y, w, None, reduction, g)
    ref_loss, ref_grad = reference(PROBABILITY, x, y, w, None, reduction, g)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert_matches(loss, ref_loss, msg="loss")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES.values(), ids=FLOAT_DTYPES.keys())
def test_gradient_at_probabilities_exactly_zero_and_one(dtype, reduction, device, gen):
    # torch's backward divides by max((1 - p) * p, 1e-12): the gradient at
    # p = 0 or 1 is large but finite, and equal to torch's.
    x = torch.tensor(P_EXTREME, dtype=dtype, device=device)
    y = torch.tensor(Y_EXTREME, dtype=dtype, device=device)
    w = torch.linspace(0.5, 2.0, len(P_EXTREME), dtype=dtype, device=device)
    g = make_grad_output(reduction, x.shape, gen, dtype, device)
    _, grad = forward_backward(PROBABILITY, x, y, w, None, reduction, g)
    _, ref_grad = reference(PROBABILITY, x, y, w, None, reduction, g)
    assert_matches(grad, ref_grad, msg="grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES.values(), ids=FLOAT_DTYPES.keys())
def test_probabilities_exactly_zero_and_one_with_pos_weight(dtype, reduction, device):
    x = torch.tensor(P_EXTREME, dtype=dtype, device=device)
    y = torch.tensor(Y_EXTREME, dtype=dtype, device=device)
    pw = torch.tensor(2.5, dtype=dtype, device=device)
    g = torch.ones_like(x) if reduction == "none" else torch.tensor(1.0, dtype=dtype, device=device)
    loss, grad = forward_backward(PROBABILITY, x, y, None, pw, reduction, g)
    expected = torch.from_numpy(np.array(bce_np(P_EXTREME, Y_EXTREME, None, 2.5, reduction)))
    assert_matches(loss, expected, msg="loss")
    assert torch.isfinite(grad).all(), grad


def _accuracy_sweep(kind, gen):
    """Inputs over the whole domain, and targets, whose every loss has no
    cancellation, so that each element can be held to a relative tolerance."""
    if kind == PROBABILITY:
        p = torch.cat([torch.rand(50000, generator=gen, dtype=torch.float64),
                       torch.logspace(-37, -0.3, 2000, dtype=torch.float64),
                       1 - torch.logspace(-7, -0.3, 2000, dtype=torch.float64)])
        y = torch.rand(p.shape, generator=gen, dtype=torch.float64)
        y[: p.numel() // 3] = 0.0
        y[-(p.numel() // 3):] = 1.0
        return p, y
    # y = 1 with any logit, y = 0 with x >= 0 (for y = 0, x < 0 the loss
    # log1p(exp(x)) is x - (x - log1p(exp(x))) in torch's formula as in this
    # one). |x| <= 85 keeps float32 losses normal.
    x = torch.cat([10 * torch.randn(50000, generator=gen, dtype=torch.float64),
                   torch.linspace(-85, 85, 20001, dtype=torch.float64)]).clamp(-85, 85)
    y = torch.where((x >= 0) & (torch.rand(x.shape, generator=gen) < 0.5), 0.0, 1.0)
    return x.to(torch.float64), y.to(torch.float64)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES.values(), ids=FLOAT_DTYPES.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_elementwise_relative_accuracy(kind, dtype, device, gen):
    # Every element to rtol (1e-6 or 1e-12) with no absolute slack: the float32
    # log/exp are accurate over the whole domain, tiny losses included.
    x, y = _accuracy_sweep(kind, gen)
    x, y = x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)
    loss = OPS[kind](x, y, None, None, "none")
    ref, _ = reference(kind, x, y, reduction="none")
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(loss.cpu().double(), ref, rtol=rtol, atol=0)


LOGIT_EXTREMES = [-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4]


@pytest.mark.parametrize("pos_weight", [None, 2.5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES.values(), ids=FLOAT_DTYPES.keys())
def test_extreme_logits(dtype, reduction, pos_weight, device, gen):
    xs, ys = zip(*[(x, y) for x in LOGIT_EXTREMES for y in (0.0, 1.0, 0.3)])
    x = torch.tensor(xs, dtype=dtype, device=device)
    y = torch.tensor(ys, dtype=dtype, device=device)
    w = torch.linspace(0.5, 2.0, len(xs), dtype=dtype, device=device)
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=dtype, device=device)
    g = make_grad_output(reduction, x.shape, gen, dtype, device)
    loss, grad = forward_backward(LOGITS, x, y, w, pw, reduction, g)
    ref_loss, ref_grad = reference(LOGITS, x, y, w, pw, reduction, g)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert_matches(loss, ref_loss, msg="loss")
    assert_matches(grad, ref_grad, msg="grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES.values(), ids=FLOAT_DTYPES.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_nan_input_propagates(kind, dtype, reduction, device, gen):
    # NaN is not a domain error: it gives NaN where it is, in the gradient
    # there and in reductions; the other elements are unaffected. 40 elements
    # (vector loops and their tail), NaN with y = 0, 1 and soft.
    shape = (40,)
    x = make_input(kind, shape, gen, dtype, device)
    y = make_target(shape, gen, dtype, device)
    nan_at = [0, 3, 17, 38, 39]
    x[nan_at] = float("nan")
    y[nan_at] = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0], dtype=dtype, device=device)
    # With pos_weight the probability form's reference is the NumPy formula
    # (torch's BCELoss rejects NaN).
    pw = torch.tensor(2.0, dtype=dtype, device=device)
    g = make_grad_output(reduction, shape, gen, dtype, device)
    loss, grad = forward_backward(kind, x, y, None, pw, reduction, g)
    ref_loss, ref_grad = reference(kind, x, y, None, pw, reduction, g)
    assert torch.isnan(grad[nan_at]).all()
    assert_matches(loss, ref_loss, msg="loss")
    assert_matches(grad, ref_grad, msg="grad")


# --------------------------------------------------------------------------
# Half precision, mixed dtypes and autocast.


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", HALF_DTYPES.values(), ids=HALF_DTYPES.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_half_precision(kind, dtype, reduction, weighted, device, gen):
    # Computed in float32, returned in the half dtype: equal to the exact
    # result on the same (upcast) values within the half dtype's resolution.
    shape = (2, 3, 17, 19)
    w_kind, pw_kind = ("c11", "last") if weighted else (None, None)
    _check(kind, dtype, device, gen, shape, w_kind, pw_kind, reduction)


@pytest.mark.parametrize("dtype", HALF_DTYPES.values(), ids=HALF_DTYPES.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_half_precision_large_mean_is_accumulated_in_float32(kind, dtype, device, gen):
    # 65536 losses of about 1 to 2: their sum overflows float16 and stagnates
    # in bfloat16; the mean must not.
    shape = (16, 1, 64, 64)
    if kind == PROBABILITY:
        x = (torch.rand(shape, generator=gen) * 0.998 + 0.001).to(device=device, dtype=dtype)
    else:
        x = (4 * torch.randn(shape, generator=gen)).to(device=device, dtype=dtype)
    y = (torch.rand(shape, generator=gen) < 0.5).to(device=device, dtype=dtype)
    loss = OPS[kind](x, y, None, None, "mean")
    ref, _ = reference(kind, x, y, reduction="mean")
    assert loss.dtype == dtype
    assert torch.isfinite(loss), loss
    assert ref.item() > 0.9  # the sum really is beyond float16's range
    assert_matches(loss, ref)


@pytest.mark.parametrize(
    "in_dtype,other_dtype",
    [(torch.float32, torch.float64), (torch.float64, torch.float32),
     (torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32),
     (torch.float16, torch.float64)],
    ids=["f32-f64", "f64-f32", "f32-bf16", "bf16-f32", "f16-f64"])
@pytest.mark.parametrize("kind", KINDS)
def test_other_float_dtypes_of_target_and_weights(kind, in_dtype, other_dtype, device, gen):
    # target, weight and pos_weight of another floating dtype are converted to
    # the input's dtype; the result has the input's dtype.
    shape = (2, 3, 5, 7)
    x = make_input(kind, shape, gen, in_dtype, device)
    y = make_target(shape, gen, other_dtype, device)
    w = make_weight("c11", shape, gen, other_dtype, device)
    pw = make_weight("last", shape, gen, other_dtype, device, low=0.5, high=3.0)
    g = make_grad_output("sum", shape, gen, in_dtype, device)
    loss, grad = forward_backward(kind, x, y, w, pw, "sum", g)
    assert loss.dtype == in_dtype and grad.dtype == in_dtype
    # The reference sees the operands as the op must: rounded to the input's dtype.
    y, w, pw = (t.to(in_dtype) for t in (y, w, pw))
    ref_loss, ref_grad = reference(kind, x, y, w, pw, "sum", g)
    assert_matches(loss, ref_loss, msg="loss")
    assert_matches(grad, ref_grad, msg="grad")


@pytest.mark.parametrize("in_dtype", [torch.bfloat16, torch.float16, torch.float32],
                         ids=["bf16", "f16", "f32"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_autocast_computes_in_float32(kind, reduction, in_dtype, device, gen):
    shape = (2, 3, 9, 11)
    x = make_input(kind, shape, gen, in_dtype, device).requires_grad_()
    y = make_target(shape, gen, in_dtype, device)
    w = make_weight("c11", shape, gen, in_dtype, device)
    pw = make_weight("last", shape, gen, in_dtype, device, low=0.5, high=3.0)
    g = make_grad_output(reduction, shape, gen, torch.float32, device)
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        loss = OPS[kind](x, y, w, pw, reduction)
    assert loss.dtype == torch.float32
    (grad,) = torch.autograd.grad(loss, x, g)
    assert grad.dtype == in_dtype
    ref_loss, ref_grad = reference(kind, x, y, w, pw, reduction, g)
    assert_matches(loss, ref_loss, torch.float32, msg="loss")
    assert_matches(grad, ref_grad, msg="grad")


# --------------------------------------------------------------------------
# Each CPU instruction set, selected in a fresh process by SEGLOSS_CPU_ISA.

_ISA_CHILD = r"""
import sys, torch, segloss
cases = torch.load(sys.argv[1])
results = {}
for key, (kind, x, y, w, pw, reduction, g) in cases.items():
    fn = (segloss.binary_cross_entropy if kind == "probability"
          else segloss.binary_cross_entropy_with_logits)
    x = x.clone().requires_grad_()
    loss = fn(x, y, w, pw, reduction)
    loss.backward(g)
    results[key] = (loss.detach(), x.grad)
torch.save(results, sys.argv[2])
"""


def _isa_cases(gen):
    shape = (2, 3, 37, 41)  # 9102 elements: no multiple of any vector width
    cases = {}
    for kind in KINDS:
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            for reduction in REDUCTIONS:
                for weighted in (False, True):
                    x = make_input(kind, shape, gen, dtype)
                    y = make_target(shape, gen, dtype)
                    w = pw = None
                    if weighted:
                        w = make_weight("full_t", shape, gen, dtype)
                        pw = make_weight("c11", shape, gen, dtype, low=0.5, high=3.0)
                        x.view(-1)[11::101] = float("nan")  # must propagate
                    elif kind == PROBABILITY:  # torch's gradient is the reference here
                        flat = x.view(-1)
                        flat[::97] = 0.0
                        flat[5::89] = 1.0
                    else:
                        flat = x.view(-1)
                        flat[::97] = 1e4
                        flat[5::89] = -1e4
                        flat[7::83] = 100.0
                    g = make_grad_output(reduction, shape, gen, dtype)
                    key = f"{kind}-{dtype}-{reduction}-{weighted}"
                    cases[key] = (kind, x, y, w, pw, reduction, g)
    return cases


@pytest.mark.parametrize("isa", CPU_ISAS)
def test_each_cpu_instruction_set(isa, tmp_path, gen):
    cases = _isa_cases(gen)
    torch.save(cases, tmp_path / "cases.pt")
    run_python_with_cpu_isa(isa, _ISA_CHILD, str(tmp_path / "cases.pt"),
                            str(tmp_path / "results.pt"))
    results = torch.load(tmp_path / "results.pt")
    assert results.keys() == cases.keys()
    for key, (kind, x, y, w, pw, reduction, g) in cases.items():
        loss, grad = results[key]
        ref_loss, ref_grad = reference(kind, x, y, w, pw, reduction, g)
        # Every dtype within float32's tolerance of the exact result, the half
        # types within their resolution (float64's own 1e-12 is checked in
        # process by the tests above, with the default instruction set).
        tol_dtype = torch.float32 if x.dtype == torch.float64 else x.dtype
        assert loss.dtype == x.dtype and grad.dtype == x.dtype
        assert_matches(loss, ref_loss, tol_dtype, msg=f"{isa} {key} loss")
        assert_matches(grad, ref_grad, tol_dtype, msg=f"{isa} {key} grad")


# --------------------------------------------------------------------------
# Determinism of reduced sums.


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("kind", KINDS)
def test_reductions_are_bitwise_deterministic_across_runs_and_threads(kind, dtype, gen):
    shape = (6, 3, 256, 171)  # ~790k elements: hundreds of blocks over the threads
    x = make_input(kind, shape, gen, dtype)
    y = make_target(shape, gen, dtype)
    w = make_weight("c11", shape, gen, dtype)
    pw = make_weight("full_t", shape, gen, dtype, low=0.5, high=3.0)
    results = []
    for threads in (1, 2, 1, 2):
        torch.set_num_threads(threads)
        for reduction in ("sum", "mean"):
            loss, grad = forward_backward(kind, x, y, w, pw, reduction,
                                          torch.tensor(1.0, dtype=dtype))
            results.append((threads, reduction, loss, grad))
    first = {r: (loss, grad) for _, r, loss, grad in results[:2]}
    for threads, reduction, loss, grad in results:
        ref_loss, ref_grad = first[reduction]
        bits = torch.int32 if dtype == torch.float32 else torch.int16
        assert torch.equal(loss.view(bits), ref_loss.view(bits)), (threads, reduction)
        assert torch.equal(grad.view(bits), ref_grad.view(bits)), (threads, reduction)
    # and the deterministic sum is the right one
    ref, _ = reference(kind, x, y, w, pw, "sum")
    assert_matches(first["sum"][0], ref)


# --------------------------------------------------------------------------
# Errors.


def _error_cases():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, generator=gen) * 0.9 + 0.05
    y = torch.rand(2, 3, 5, generator=gen)
    w34 = torch.rand(3, 4, generator=gen)

    def c(id, exc, message, args, kwargs=None):
        return pytest.param(exc, message, args, kwargs or {}, id=id)

    return [
        c("input-long", TypeError,
          "input must be a float32, float64, float16 or bfloat16 tensor, got Long",
          (x.long(), y)),
        c("target-long", TypeError,
          "target must be a float32, float64, float16 or bfloat16 tensor, got Long",
          (x, y.long())),
        c("target-int", TypeError,
          "target must be a float32, float64, float16 or bfloat16 tensor, got Int",
          (x, y.int())),
        c("weight-long", TypeError,
          "weight must be a float32, float64, float16 or bfloat16 tensor, got Long",
          (x, y, torch.ones(5, dtype=torch.long))),
        c("target-shape", RuntimeError,
          "target of shape [2, 3, 1] must have the input's shape [2, 3, 5]",
          (x, y[..., :1])),
        c("target-bigger", RuntimeError,
          "target of shape [1, 2, 3, 5] must have the input's shape [2, 3, 5]",
          (x, y[None])),
        c("weight-shape", RuntimeError,
          "weight of shape [3, 4] is not broadcastable to the input's shape [2, 3, 5]",
          (x, y, w34)),
        c("weight-beyond", RuntimeError,
          "weight of shape [2, 2, 3, 5] is not broadcastable to the input's shape [2, 3, 5]",
          (x, y, torch.ones(2, 2, 3, 5))),
        c("weight-beyond-ones", RuntimeError,
          "weight of shape [1, 1, 3, 5] is not broadcastable to the input's shape [2, 3, 5]",
          (x, y, torch.ones(1, 1, 3, 5))),
        c("pos_weight-shape", RuntimeError,
          "pos_weight of shape [3, 4] is not broadcastable to the input's shape [2, 3, 5]",
          (x, y, None, w34)),
        c("reduction", ValueError, "reduction must be 'none', 'mean' or 'sum', got 'avg'",
          (x, y), {"reduction": "avg"}),
        c("target-meta", RuntimeError, "target is on meta but input is on cpu",
          (x, y.to("meta"))),
        c("input-meta", RuntimeError, "target is on cpu but input is on meta",
          (x.to("meta"), y)),
        c("weight-meta", RuntimeError, "weight is on meta but input is on cpu",
          (x, y, torch.ones(5, device="meta"))),
        c("pos_weight-meta", RuntimeError, "pos_weight is on meta but input is on cpu",
          (x, y, None, torch.ones(5, device="meta"))),
    ]


@pytest.mark.parametrize("exc,message,args,kwargs", _error_cases())
@pytest.mark.parametrize("entry", ["op", "functional"])
@pytest.mark.parametrize("kind", KINDS)
def test_errors(kind, entry, exc, message, args, kwargs):
    fn = OPS[kind] if entry == "op" else FUNCTIONAL[kind]
    with pytest.raises(exc, match=re.escape(f"{OP_NAMES[kind]}: {message}")):
        fn(*args, **kwargs)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "bad_value,position",
    [(1.5, 0), (-0.25, 0), (1.0 + 2 ** -20, 7000), (-1e-30, 9839), (float("inf"), 3)],
    ids=["above", "below", "just-above-late-block", "tiny-negative-last", "inf"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16],
                         ids=["f64", "f32", "bf16"])
def test_probability_outside_unit_interval_is_an_error_on_cpu(dtype, bad_value, position,
                                                              reduction, gen):
    x = make_input(PROBABILITY, (3, 2, 40, 41), gen, dtype)
    if dtype == torch.bfloat16 and bad_value == 1.0 + 2 ** -20:
        bad_value = 1.0078125  # the next bfloat16 after 1
    x.view(-1)[position] = bad_value
    assert not 0 <= float(x.view(-1)[position]) <= 1
    y = make_target(x.shape, gen, dtype)
    with pytest.raises(RuntimeError, match=re.escape(
            "segloss.binary_cross_entropy: every element of input must be a probability in [0, 1]")):
        OPS[PROBABILITY](x, y, None, None, reduction)


@pytest.mark.parametrize("kind", KINDS)
def test_grad_output_shape_errors_of_backward_ops(kind):
    from helpers import BACKWARD_OPS

    x = torch.rand(2, 3) * 0.9 + 0.05
    y = torch.rand(2, 3)
    with pytest.raises(RuntimeError, match=re.escape(
            f"{OP_NAMES[kind]}: grad_output must be a 0-dim tensor for a reduced loss, got shape [2, 3]")):
        BACKWARD_OPS[kind](torch.ones(2, 3), x, y, None, None, "mean")
    with pytest.raises(RuntimeError, match=re.escape(
            f"{OP_NAMES[kind]}: grad_output of shape [3] must have the input's shape [2, 3]")):
        BACKWARD_OPS[kind](torch.ones(3), x, y, None, None, "none")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_meta_tensors_give_shapes_and_dtypes(kind, reduction):
    x = torch.empty(2, 3, 5, 7, device="meta", dtype=torch.bfloat16)
    y = torch.empty(2, 3, 5, 7, device="meta", dtype=torch.float32)
    w = torch.empty(3, 1, 1, device="meta", dtype=torch.float64)
    out = OPS[kind](x, y, w, None, reduction)
    assert out.device.type == "meta" and out.dtype == torch.bfloat16
    assert out.shape == (x.shape if reduction == "none" else ())


# --------------------------------------------------------------------------
# segloss.nn


def _module_inputs(kind, gen, dtype=torch.float64, shape=(2, 3, 5, 7)):
    return make_input(kind, shape, gen, dtype), make_target(shape, gen, dtype)


def _module_grad(module, x, y):
    x = x.detach().requires_grad_()
    loss = module(x, y)
    (grad,) = torch.autograd.grad(loss, x, torch.ones_like(loss))
    return loss.detach(), grad


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("w_kind,pw_kind", [(None, None), ("c11", None), (None, "c11"),
                                            ("full_t", "last")])
@pytest.mark.parametrize("kind", KINDS)
def test_nn_losses_equal_reference(kind, w_kind, pw_kind, reduction, gen):
    x, y = _module_inputs(kind, gen)
    w = make_weight(w_kind, x.shape, gen)
    pw = make_weight(pw_kind, x.shape, gen, low=0.5, high=3.0)
    cls = segloss.nn.BCELoss if kind == PROBABILITY else segloss.nn.BCEWithLogitsLoss
    loss, grad = _module_grad(cls(weight=w, pos_weight=pw, reduction=reduction), x, y)
    ref_loss, ref_grad = reference(kind, x, y, w, pw, reduction, torch.ones_like(loss))
    assert_matches(loss, ref_loss, msg="loss")
    assert_matches(grad, ref_grad, msg="grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [3.0, 0.25, "per-channel"])
def test_weighted_bce_equals_torch_bce_with_logits_pos_weight(beta, reduction, gen):
    x, y = _module_inputs(LOGITS, gen)
    if beta == "per-channel":
        beta = torch.tensor([0.5, 2.0, 4.0]).view(3, 1, 1)
    pw = torch.as_tensor(beta, dtype=torch.float64)
    loss, grad = _module_grad(segloss.nn.WeightedBCELoss(beta, reduction=reduction), x, y)
    torch_module = torch.nn.BCEWithLogitsLoss(pos_weight=pw, reduction=reduction)
    xr = x.clone().requires_grad_()
    ref_loss = torch_module(xr, y)
    (ref_grad,) = torch.autograd.grad(ref_loss, xr, torch.ones_like(ref_loss))
    assert_matches(loss, ref_loss, msg="loss")
    assert_matches(grad, ref_grad, msg="grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weighted_bce_on_probabilities(reduction, gen):
    x, y = _module_inputs(PROBABILITY, gen)
    loss, grad = _module_grad(
        segloss.nn.WeightedBCELoss(2.5, from_logits=False, reduction=reduction), x, y)
    ref_loss, ref_grad = reference(PROBABILITY, x, y, None, torch.tensor(2.5), reduction,
                                   torch.ones_like(loss))
    assert_matches(loss, ref_loss, msg="loss")
    assert_matches(grad, ref_grad, msg="grad")


def test_nn_modules_move_to_float64(gen):
    x, y = _module_inputs(LOGITS, gen)
    weighted = segloss.nn.WeightedBCELoss(torch.tensor([0.75, 2.5, 1.5]).view(3, 1, 1)).to(
        torch.float64)
    assert weighted.beta.dtype == torch.float64
    w = make_weight("c11", x.shape, gen, torch.float32)
    pw = make_weight("last", x.shape, gen, torch.float32, low=0.5, high=3.0)
    bce = segloss.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw).to(torch.float64)
    assert bce.weight.dtype == torch.float64 and bce.pos_weight.dtype == torch.float64
    assert set(bce.state_dict()) == {"weight", "pos_weight"}
    # float64 end to end: float64's tolerance against torch.
    ref, _ = reference(LOGITS, x, y, None, weighted.beta)
    assert_matches(weighted(x, y), ref)
    ref, _ = reference(LOGITS, x, y, w, pw)
    assert_matches(bce(x, y), ref)


def test_nn_reprs():
    assert repr(segloss.nn.WeightedBCELoss(3.0)) == (
        "WeightedBCELoss(beta=3.0, from_logits=True, reduction='mean')")
    assert repr(segloss.nn.WeightedBCELoss(torch.ones(3, 1, 1), from_logits=False,
                                           reduction="sum")) == (
        "WeightedBCELoss(beta=Tensor[3, 1, 1], from_logits=False, reduction='sum')")
    assert repr(segloss.nn.BCELoss()) == "BCELoss(reduction='mean')"
    assert repr(segloss.nn.BCEWithLogitsLoss(weight=torch.ones(5), pos_weight=torch.ones(3, 1, 1),
                                             reduction="none")) == (
        "BCEWithLogitsLoss(reduction='none', weight=Tensor[5], pos_weight=Tensor[3, 1, 1])")


@pytest.mark.parametrize("beta", [0.0, -1.0, torch.tensor([1.0, 0.0, 2.0])],
                         ids=["zero", "negative", "tensor-with-zero"])
def test_weighted_bce_rejects_non_positive_beta(beta):
    with pytest.raises(ValueError, match="beta must be positive"):
        segloss.nn.WeightedBCELoss(beta)


def test_weighted_bce_names_a_beta_it_cannot_read():
    with pytest.raises(TypeError, match=r"segloss\.nn\.WeightedBCELoss: beta must be a number or "
                                        r"a tensor, got 'a'"):
        segloss.nn.WeightedBCELoss("a")


@pytest.mark.parametrize("cls", ["BCELoss", "BCEWithLogitsLoss", "WeightedBCELoss"])
def test_nn_modules_reject_unknown_reduction(cls):
    args = (2.0,) if cls == "WeightedBCELoss" else ()
    with pytest.raises(ValueError, match="reduction.*'avg'"):
        getattr(segloss.nn, cls)(*args, reduction="avg")
