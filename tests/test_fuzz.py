"""Property-based fuzzing (hypothesis) of every public segloss function
against the independent references of this test suite: torch.nn.functional
and the float64 formulas of reference.py for the losses, the brute force of
distance_reference.py and SciPy for the distance transforms.

The property of every call: segloss either gives the reference's result
within the dtype's tolerance (values, and input gradients against float64
autograd), or, where the input is outside the documented domain or the
reference itself raises, raises a ValueError / TypeError / RuntimeError /
IndexError whose message names the offending argument. An error on an input
that the documentation accepts fails the test, as does a wrong value.

Draws: shapes with size-0 and size-1 dims, every floating dtype (the half
types against the float64 reference on the same rounded values), memory
layouts (transposed, stepped slices, permuted, channels_last, stride-0
expansions), extreme and non-finite values, empty and full masks, 0 / 1 /
many instances with random ids of every integer dtype.

Profiles: "ci" (default; small, reproducible) and "long"
(SEGLOSS_FUZZ_PROFILE=long, or scripts/fuzz: 19,760 cases).
"""

import math
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis import given
from scipy import ndimage

import segloss
import segloss.numpy as snp
from distance_reference import (balanced_class_weight, brute_force_squared, distance_of_ids,
                                two_nearest_from, unet_weight_formula)
from reference import (LOGITS, PROBABILITY, _labels_and_keep, bce_np, dense_target_and_mask,
                       dice_ce_torch, dice_focal_torch, dice_np, dice_sums_torch, dice_torch,
                       focal_reduce, reference)

# The NumPy references warn on the non-finite inputs they are given on purpose.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]

# --------------------------------------------------------------------------
# Profiles. Every test takes a share of the profile's max_examples, scaled by
# its cost, so that "ci" runs the whole file in well under a minute on two
# cores and "long" runs 19,760 (24.7 shares of 800; "ci" 1,482).

_COMMON = dict(
    deadline=None,  # the references (brute force, float64 autograd) are slow by design
    database=None,  # nothing written into the checkout
    print_blob=True,  # a failure prints the @reproduce_failure line
    # A loaded shared machine can make data generation look slow.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", max_examples=60, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=800, derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("SEGLOSS_FUZZ_PROFILE", "ci"))


def fuzz(share: float = 1.0):
    """This test's settings: `share` times the profile's max_examples."""
    return settings(max_examples=max(1, round(settings.default.max_examples * share)))


ERRORS = (ValueError, TypeError, RuntimeError, IndexError)

FLOAT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
HALF = (torch.float16, torch.bfloat16)
# Relative tolerance per result dtype: float64 and float32 as the rest of the
# suite; the half types are computed in float32 and rounded, so the result and
# the (rounded) reference may differ by one unit in the last place.
RTOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 2 * 2.0 ** -10,
        torch.bfloat16: 2 * 2.0 ** -7}

TORCH_INT_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
                    torch.uint16, torch.uint32, torch.uint64]
NP_INT_DTYPES = [np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16, np.uint32,
                 np.uint64]
CLASS_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]


# --------------------------------------------------------------------------
# Comparison helpers.

def assert_close(actual, expected, magnitude=None, what="value"):
    """`actual` (a tensor in its result dtype) equals the float64 reference.

    Non-finite reference values must be matched exactly (NaN by NaN, each
    infinity by itself). Finite ones within RTOL * magnitude, where magnitude
    (default |expected|) is the size of the terms the value is computed from,
    so that cancellation in float32 is not mistaken for a bug. For float32 and
    the half types the reference is first rounded to that dtype (overflow
    to +-inf included: -1 / 1e-100 is -inf in float32).
    """
    dtype = actual.dtype
    event(f"compared with the reference ({dtype})")  # in --hypothesis-show-statistics
    a = actual.detach().cpu().to(torch.float64)
    e = torch.as_tensor(expected).detach().cpu().to(torch.float64)
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)}, reference {tuple(e.shape)}"
    if dtype != torch.float64:
        e = e.to(dtype).to(torch.float64)
    finite = torch.isfinite(e)
    same_special = (torch.isnan(a) & torch.isnan(e)) | (a == e)
    m = e.abs() if magnitude is None else torch.as_tensor(magnitude, dtype=torch.float64)
    m = torch.where(torch.isfinite(m), torch.maximum(m, e.abs()), e.abs())
    floor = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps * 4  # subnormal spacing
    ok = torch.where(finite, (a - e).abs() <= RTOL[dtype] * m + floor, same_special)
    if not bool(ok.all()):
        bad = (~ok).nonzero()[:5].tolist()
        lines = [f"  at {tuple(i)}: got {a[tuple(i)].item()!r}, reference {e[tuple(i)].item()!r}"
                 f" (magnitude {m[tuple(i)].item():.3g})" for i in bad] if a.dim() else [
            f"  got {a.item()!r}, reference {e.item()!r} (magnitude {m.item():.3g})"]
        raise AssertionError(f"{what} ({dtype}): {int((~ok).sum())} of {ok.numel()} differ\n"
                             + "\n".join(lines))


def gradient_magnitude(expected):
    """A gradient's tolerance scale: its largest finite element (gradients of
    reductions mix terms of every element, as the rest of the suite assumes)."""
    e = expected.detach().to(torch.float64)
    finite = e[torch.isfinite(e)]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    return torch.full_like(e, scale)


def assert_error_names(call, names, op=None):
    """call() raises one of ERRORS whose message names one of `names` (as a
    word: "weight" is not named by a message about "pos_weight"), and `op`
    (e.g. "segloss.tversky_loss") where given."""
    event("an error expected")
    try:
        call()
    except ERRORS as error:
        message = str(error)
        assert any(re.search(rf"\b{name}\b", message) for name in names), (
            f"{type(error).__name__} {message!r} names none of {sorted(names)}")
        assert op is None or op in message, (
            f"{type(error).__name__} {message!r} does not name {op}")
        return
    raise AssertionError(f"expected an error naming one of {sorted(names)}, got a result")


def reduce_np(values, reduction):
    if reduction == "none":
        return values
    total = values.sum(dtype=np.float64)
    if reduction == "sum":
        return np.asarray(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total / values.size)


# --------------------------------------------------------------------------
# Shared strategies.

@st.composite
def sizes(draw, count, max_side, zero=True):
    """`count` dimension sizes in [1, max_side] (shrinking to 1); one of them
    0 in about one draw of eight."""
    dims = [draw(st.integers(1, max_side)) for _ in range(count)]
    if zero and count and draw(st.integers(0, 7)) == 0:
        dims[draw(st.integers(0, count - 1))] = 0
    return tuple(dims)


def rarely(data, label, one_in=20):
    """True in about one draw of `one_in`: the branches that make an input
    invalid are each rare, so that most cases reach the comparison."""
    return data.draw(st.sampled_from([False] * (one_in - 1) + [True]), label=label)


def rng_of(data):
    """A NumPy generator seeded by hypothesis: the bulk of every array is drawn
    from it (fast), the special values by hypothesis itself (shrinkable)."""
    return np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))


def inject(data, array, specials, max_count=4, where=None, label="specials", min_count=0):
    """Sets `min_count` to `max_count` drawn elements of `array` (float64, in place) to
    drawn values of `specials`, only where `where` (a boolean array of its
    shape) is True if given."""
    flat = array.reshape(-1)
    allowed = np.flatnonzero(np.ones(flat.shape, bool) if where is None
                             else np.broadcast_to(where, array.shape).reshape(-1))
    if not allowed.size or not specials:
        return array
    count = data.draw(st.integers(min_count, max_count), label=f"{label}: count")
    for _ in range(count):
        index = allowed[data.draw(st.integers(0, allowed.size - 1), label=f"{label}: at")]
        flat[index] = data.draw(st.sampled_from(specials), label=f"{label}: value")
    return array


def normal_logits(data, rng, shape, scales):
    """Logits: N(0, 1) times a drawn scale (float64; an array also for shape ())."""
    scale = data.draw(st.sampled_from(scales), label="logit scale")
    return np.asarray(rng.normal(size=shape) * scale)


def soft_labels(rng, shape):
    """Targets in [0, 1], about a third exactly 0 and a third exactly 1."""
    soft = rng.random(shape)
    pick = rng.random(shape)
    return np.where(pick < 1 / 3, 0.0, np.where(pick < 2 / 3, 1.0, soft))


def layout(data, t, expand=True, label="layout"):
    """`t` in a drawn memory layout. 'expanded' repeats the first slice of a
    dim along it with stride 0 (so it changes the values: references are
    always computed from the tensor returned here)."""
    choices = ["contiguous"]
    if t.dim() >= 1:
        choices += ["step"] + (["expanded"] if expand else [])
    if t.dim() >= 2:
        choices += ["transposed", "permuted"]
    if t.dim() in (4, 5):
        choices.append("channels_last")
    kind = data.draw(st.sampled_from(choices), label=label)
    if kind == "contiguous":
        return t.contiguous()
    if kind == "channels_last":
        fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
        return t.contiguous(memory_format=fmt)
    if kind == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "permuted":
        dims = list(reversed(range(t.dim())))
        return t.permute(dims).contiguous().permute(dims)
    dim = data.draw(st.integers(0, t.dim() - 1), label=f"{label}: dim")
    if kind == "expanded":
        return t.narrow(dim, 0, min(1, t.shape[dim])).expand(t.shape)
    step = data.draw(st.integers(2, 3), label=f"{label}: step")
    offset = data.draw(st.integers(0, step - 1), label=f"{label}: offset")
    big_shape = list(t.shape)
    big_shape[dim] = t.shape[dim] * step + offset
    big = torch.zeros(big_shape, dtype=t.dtype)
    index = [slice(None)] * t.dim()
    index[dim] = slice(offset, offset + step * t.shape[dim], step)
    big[tuple(index)] = t
    return big[tuple(index)]


def np_layout(data, a, label="layout"):
    """`a` (NumPy) C- or Fortran-ordered, transposed, stepped, reversed
    (negative strides), unaligned or read-only; the values unchanged."""
    kind = data.draw(st.sampled_from(["C", "fortran", "transposed", "step", "reversed",
                                      "unaligned", "read-only"]), label=label)
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "transposed" and a.ndim >= 2:
        return np.ascontiguousarray(a.swapaxes(0, -1)).swapaxes(0, -1)
    if kind == "step" and a.ndim >= 1:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if kind == "reversed" and a.ndim >= 1:
        return np.ascontiguousarray(a[::-1])[::-1]
    if kind == "unaligned" and a.itemsize > 1:
        raw = np.zeros(a.nbytes + 1, np.uint8)
        out = raw[1:].view(a.dtype).reshape(a.shape)
        out[...] = a
        return out
    if kind == "read-only":
        out = a.copy()
        out.flags.writeable = False
        return out
    return np.ascontiguousarray(a)


def broadcast_shape(data, shape, label):
    """A shape that broadcasts to `shape` without growing it (segloss's rule
    for weight and pos_weight); in one draw of twelve, any small shape (which
    may break the rule)."""
    if rarely(data, f"{label}: arbitrary", 12):
        return tuple(data.draw(st.lists(st.integers(1, 4), max_size=len(shape) + 1),
                               label=f"{label}: shape"))
    kept = data.draw(st.integers(0, len(shape)), label=f"{label}: dims")
    return tuple(data.draw(st.sampled_from([s, 1]), label=f"{label}: size") if s != 1 else 1
                 for s in shape[len(shape) - kept:])


def broadcasts_into(small, big):
    return len(small) <= len(big) and all(s in (1, b) for s, b in zip(reversed(small),
                                                                      reversed(big)))


def instance_map(data, shape, dtype, rng, label="instances"):
    """NumPy instance labels of `shape` and integer `dtype`: 0 background and
    0, 1 or many instances with random ids (the dtype's extremes, negatives
    for signed dtypes), as scattered pixels, blobs, or covering every pixel."""
    info = np.iinfo(dtype)
    count = data.draw(st.sampled_from([0, 1, 2, 3, 5, 9]), label=f"{label}: count")
    ids = data.draw(st.lists(st.one_of(st.integers(int(info.min), int(info.max)),
                                       st.sampled_from([int(info.max), int(info.min), 1, 2])),
                             min_size=count, max_size=count), label=f"{label}: ids")
    ids = sorted({i for i in ids if i != 0})
    labels = np.zeros(shape, dtype)
    if not ids or labels.size == 0:
        return labels
    pattern = data.draw(st.sampled_from(["pixels", "blobs", "full"]), label=f"{label}: pattern")
    choice = np.array(ids, dtype=dtype)[rng.integers(0, len(ids), shape)]
    if pattern == "full":  # all foreground
        return choice
    if pattern == "blobs":  # a coarse random grid, upsampled: touching blocks
        coarse = np.array(ids + [0], dtype=dtype)[rng.integers(0, len(ids) + 1,
                                                               [max(1, s // 2) for s in shape])]
        up = coarse
        for axis, s in enumerate(shape):
            up = np.repeat(up, 2, axis=axis)
            pad = [(0, 0)] * len(shape)
            pad[axis] = (0, max(0, s - up.shape[axis]))
            up = np.pad(up, pad)
            up = np.take(up, range(s), axis=axis)
        return up.astype(dtype)
    density = data.draw(st.sampled_from([0.02, 0.1, 0.4, 0.9]), label=f"{label}: density")
    return np.where(rng.random(shape) < density, choice, np.zeros((), dtype)).astype(dtype)


def draw_sampling(data, ndim, label="sampling"):
    """None, a number or one positive spacing per axis; rarely a wrong one (0,
    negative, NaN, the wrong length)."""
    spacing = st.floats(0.25, 4.0)
    if not rarely(data, f"bad {label}?"):
        return data.draw(st.one_of(st.none(), spacing,
                                   st.lists(spacing, min_size=ndim, max_size=ndim)), label=label)
    return data.draw(st.one_of(
        st.sampled_from([0.0, -1.0, float("nan")]),
        st.lists(spacing, min_size=ndim + 1, max_size=ndim + 1),
        st.lists(spacing, min_size=max(ndim - 1, 1), max_size=max(ndim - 1, 1)),
        st.lists(st.sampled_from([0.0, -2.0]), min_size=ndim, max_size=ndim)), label=label)


def sampling_valid(sampling, ndim):
    if sampling is None:
        return True
    values = [sampling] * ndim if isinstance(sampling, float) else list(sampling)
    return len(values) == ndim and all(v > 0 and math.isfinite(v) for v in values)


def spacing_list(sampling, ndim):
    return None if sampling is None else (
        [sampling] * ndim if isinstance(sampling, float) else list(sampling))


# --------------------------------------------------------------------------
# 1. binary_cross_entropy and binary_cross_entropy_with_logits.

LOGIT_SPECIALS = [1e4, -1e4, float("inf"), -float("inf"), float("nan"), 0.0, 100.0, -100.0,
                  30.0, -30.0]
PROBABILITY_SPECIALS = [0.0, 1.0, 0.5, float("nan"), 1e-30, 1 - 2.0 ** -24, 1e-7]
OUT_OF_RANGE = [1.5, -0.25, float("inf"), -float("inf"), 1 + 2.0 ** -20, -1e-30]
# torch's BCE backward divides by max(p (1 - p), EPSILON) with EPSILON the
# float 1e-12 (not the double): the gradient at p = 0 or 1 is large but finite.
TORCH_BCE_EPSILON = float(np.float32(1e-12))


def bce_logits_magnitude(x, y, w, pw):
    """Per element: the size of the terms of the loss, w [(1 - y) x + (1 + (β - 1) y)
    softplus(-x)], and of its derivative, w [(1 + (β - 1) y) σ(x) - β y], as
    torch (and segloss) compute them: soft targets, and σ(x) near y, make them
    cancel in float32."""
    with np.errstate(all="ignore"):
        loss = np.abs(w) * (np.abs(1 - y) * np.abs(x)
                            + np.abs(1 + (pw - 1) * y) * np.logaddexp(0.0, -x))
        grad = np.abs(w) * (np.abs(1 + (pw - 1) * y) * np.exp(-np.logaddexp(0.0, -x))
                            + np.abs(pw * y))
    return loss, grad


def bce_probability_reference(p, y, w, pw, reduction, g):
    """float64 NumPy loss (bce_np) and gradient of the probability form with
    magnitudes. The gradient is the derivative of bce_np's formula,
    w ((1 - y) p - β y (1 - p)) / (p (1 - p)), with torch's clamp of the
    denominator: torch's own backward for β = 1, extended to pos_weight. Its
    magnitude covers that numerator's terms and torch's p - y (+ (1 - β) y (1 - p))."""
    loss = bce_np(p, y, w, pw, reduction)
    with np.errstate(all="ignore"):
        log_p = np.maximum(np.log(p), -100.0)
        log_q = np.maximum(np.log1p(-p), -100.0)
        loss_mag = reduce_np(np.abs(w) * (np.abs(pw * y * log_p) + np.abs((1 - y) * log_q)),
                             reduction)
        denominator = np.maximum(p * (1 - p), TORCH_BCE_EPSILON)
        scale = g / max(p.size, 1) if reduction == "mean" else g
        grad = w * ((1 - y) * p - pw * y * (1 - p)) / denominator * scale
        grad_mag = np.abs(w) * (np.abs(p) + np.abs(y) + np.abs(pw * y)) / denominator \
            * np.abs(scale)
    return loss, grad, loss_mag, grad_mag


@fuzz(1.5)
@given(data=st.data())
@pytest.mark.parametrize("kind", [PROBABILITY, LOGITS])
def test_binary_cross_entropy(kind, data):
    """segloss.binary_cross_entropy(_with_logits) against torch.nn.functional
    (its float64 result and autograd gradient), or bce_np where torch has no
    such op (pos_weight with probabilities) or rejects the input (NaN
    probabilities); weight and pos_weight broadcast."""
    rng = rng_of(data)
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES), label="dtype")
    ndim = data.draw(st.integers(0, 5), label="ndim")
    shape = data.draw(sizes(ndim, {0: 1, 1: 12, 2: 7, 3: 5, 4: 4, 5: 3}[ndim]), label="shape")
    reduction = data.draw(st.sampled_from(["none", "mean", "sum"]), label="reduction")
    expect = set()  # names of the arguments an error must name, if any

    if kind == LOGITS:
        x = normal_logits(data, rng, shape, [3.0, 1.0, 30.0])
        inject(data, x, LOGIT_SPECIALS, label="x specials")
    else:
        x = rng.random(shape)
        inject(data, x, PROBABILITY_SPECIALS, label="x specials")
        if rarely(data, "out of range?"):
            inject(data, x, OUT_OF_RANGE, min_count=1, max_count=1, label="x out of range")
    x = layout(data, torch.from_numpy(x).to(dtype), label="x layout")
    if kind == PROBABILITY and bool(((x < 0) | (x > 1)).any()):
        expect.add("input")  # documented: an error on the CPU

    y_shape = shape
    if rarely(data, "target shape wrong?"):
        y_shape = shape + (2,) if ndim < 5 else shape[:-1] + (shape[-1] + 1,)
        expect.add("target")
    y_dtype = data.draw(st.sampled_from([dtype] + FLOAT_DTYPES), label="target dtype")
    y = layout(data, torch.from_numpy(soft_labels(rng, y_shape)).to(y_dtype), label="y layout")

    def weight_of(name, low, high):
        if not data.draw(st.booleans(), label=f"{name}?"):
            return None
        w_shape = broadcast_shape(data, shape, name)
        if not broadcasts_into(w_shape, shape):
            expect.add(name)
        values = rng.uniform(low, high, w_shape)
        inject(data, values, [0.0, 1.0], max_count=2, label=f"{name} specials")
        w = torch.from_numpy(values).to(data.draw(st.sampled_from([dtype] + FLOAT_DTYPES),
                                                  label=f"{name} dtype"))
        w = layout(data, w, label=f"{name} layout")
        if w.dim() and broadcasts_into(w_shape, shape) and data.draw(
                st.booleans(), label=f"{name} expanded to the input's shape?"):
            w = w.expand(shape)
        return w

    w = weight_of("weight", 0.0, 3.0)
    pw = weight_of("pos_weight", 0.25, 4.0)

    # Now and then an argument that requires grad: documented as an error.
    grad_arg = rarely(data, "requires grad?") and data.draw(
        st.sampled_from(["target", "weight", "pos_weight"]), label="requires grad")
    if grad_arg == "target" or (grad_arg == "weight" and w is not None) or (
            grad_arg == "pos_weight" and pw is not None):
        {"target": y, "weight": w, "pos_weight": pw}[grad_arg].requires_grad_()
        expect.add(grad_arg)
    fn = segloss.binary_cross_entropy if kind == PROBABILITY else \
        segloss.binary_cross_entropy_with_logits
    note(f"x={x!r}\ny={y!r}\nweight={w!r}\npos_weight={pw!r}\nreduction={reduction!r}")
    if expect:
        assert_error_names(lambda: fn(x.detach(), y, w, pw, reduction),
                           {f"{name}" for name in expect})
        return

    g = (torch.from_numpy(rng.uniform(-1.5, 1.5, shape)) if reduction == "none"
         else torch.tensor(1.25, dtype=torch.float64)).to(dtype)
    x = x.detach().requires_grad_()
    loss = fn(x, y, w, pw, reduction)
    (grad,) = torch.autograd.grad(loss, x, g)
    assert loss.dtype == dtype and grad.dtype == dtype

    # The reference sees the operands as the op does: converted to the input's dtype.
    x64, y64 = x.detach().double(), y.detach().to(dtype).double()
    w64 = None if w is None else w.detach().to(dtype).double()
    pw64 = None if pw is None else pw.detach().to(dtype).double()
    g64 = g.double()
    arrays = [t.numpy() for t in (x64, y64)]
    w_np = np.ones(shape) if w64 is None else np.broadcast_to(w64.numpy(), shape)
    pw_np = np.ones(shape) if pw64 is None else np.broadcast_to(pw64.numpy(), shape)
    if kind == LOGITS:
        ref_loss, ref_grad = reference(LOGITS, x64, y64, w64, pw64, reduction, g64)
        loss_mag, grad_mag = bce_logits_magnitude(*arrays, w_np, pw_np)
        # softplus(-x) and sigmoid(x) below the computing type's smallest
        # normal (float32 for the half types; e^-100 is) are subnormals, off
        # by up to one of their spacings, which the loss and the gradient
        # multiply by w (1 + (beta - 1) y).
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        spacing = torch.finfo(compute).smallest_normal * torch.finfo(compute).eps
        subnormal = np.abs(w_np * (1 + (pw_np - 1) * arrays[1])) * spacing / RTOL[dtype]
        loss_mag, grad_mag = loss_mag + subnormal, grad_mag + subnormal
        loss_mag = reduce_np(loss_mag, reduction)
        grad_mag = grad_mag * np.abs(g64.numpy()) / (max(x.numel(), 1)
                                                    if reduction == "mean" else 1)
    elif pw is None and not bool(torch.isnan(x64).any()):
        ref_loss, ref_grad = reference(PROBABILITY, x64, y64, w64, None, reduction, g64)
        loss_mag = grad_mag = None
    else:
        ref_loss, ref_grad, loss_mag, grad_mag = bce_probability_reference(
            *arrays, w_np, pw_np, reduction, g64.numpy())
    as_tensor = lambda a: None if a is None else torch.as_tensor(np.asarray(a, np.float64))
    assert_close(loss, as_tensor(ref_loss), as_tensor(loss_mag), "loss")
    assert_close(grad, as_tensor(ref_grad), as_tensor(grad_mag), "gradient")


# --------------------------------------------------------------------------
# 2. dice_loss and dice_ce_loss.

def draw_dice_problem(data, activations, reductions, cross_entropy=False):
    """(x, target, options, expected_error_names) of one Dice problem (of
    dice_ce_loss with `cross_entropy`).

    Non-finite logits are placed only on pixels that count (mask nonzero, label
    not ignored): the references multiply masked terms by 0 (0 * NaN = NaN),
    while segloss leaves such pixels out entirely, as documented. (So x gets
    no stride-0 'expanded' layout, which would copy them to other pixels.)"""
    rng = rng_of(data)
    expect = set()
    activation = data.draw(st.sampled_from(activations), label="activation")
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES), label="dtype")
    n_spatial = data.draw(st.integers(1, 3), label="spatial dims")
    n, c = data.draw(sizes(2, 3, zero=False), label="N, C")
    c = min(c + data.draw(st.integers(0, 1), label="extra channel"), 4)
    target_kind = data.draw(st.sampled_from(["labels", "labels1", "dense"]), label="target")
    softmax_labels = activation == "softmax" and target_kind != "dense"
    if rarely(data, "N = 0?", 12):
        n = 0
    spatial = data.draw(sizes(n_spatial, {1: 9, 2: 6, 3: 4}[n_spatial]), label="spatial")
    shape = (n, c) + spatial
    pixel_shape = (n,) + spatial
    options = {}
    counted = np.ones(pixel_shape, bool)
    ignore = None
    if target_kind == "dense":
        y = soft_labels(rng, shape) if data.draw(st.booleans(), label="soft?") else \
            np.eye(c)[rng.integers(0, c, pixel_shape)].transpose(
                (0, len(shape) - 1) + tuple(range(1, len(shape) - 1))).reshape(shape)
        target = torch.from_numpy(np.ascontiguousarray(y)).to(
            data.draw(st.sampled_from([dtype] + FLOAT_DTYPES), label="target dtype"))
        if rarely(data, "ignore_index with dense?"):
            options["ignore_index"] = 255
            expect.add("ignore_index")
        target = layout(data, target, label="target layout")
    else:
        n_labels = 2 if c == 1 else c
        label_dtype = data.draw(st.sampled_from(CLASS_DTYPES + ([torch.bool] if n_labels == 2
                                                                else [])), label="label dtype")
        labels = rng.integers(0, n_labels, pixel_shape)
        ignore = data.draw(st.sampled_from([None, None, 255, -100, -1, 0, c - 1, 100]),
                           label="ignore_index")
        if label_dtype == torch.bool:
            ignore = None
        if ignore is not None:
            options["ignore_index"] = ignore
            info = torch.iinfo(label_dtype)
            if info.min <= ignore <= info.max:
                labels = np.where(rng.random(pixel_shape) < 0.2, ignore, labels)
        if labels.size and rarely(data, "bad label?"):
            # Out of range, and for the narrow dtypes ignore_index wrapped
            # around (255 in int8 is -1, -100 in uint8 is 156): still out of range.
            bad = data.draw(st.sampled_from([n_labels, -1, 7, 100, 156]), label="bad label")
            info = torch.iinfo(label_dtype) if label_dtype != torch.bool else None
            if info is not None and info.min <= bad <= info.max and bad != ignore:
                labels.reshape(-1)[data.draw(st.integers(0, labels.size - 1))] = bad
        t = torch.from_numpy(labels).to(label_dtype)
        target = t.unsqueeze(1) if target_kind == "labels1" else t
        target = layout(data, target, label="target layout")
        if ignore is not None:  # from the target as laid out ('expanded' changes values)
            counted &= target.reshape(pixel_shape).to(torch.int64).numpy() != ignore

    # The mask: none, or broadcastable to (N, 1, *spatial); empty and full ones too.
    if data.draw(st.booleans(), label="mask?"):
        kind = data.draw(st.sampled_from(["n1s", "11s", "n111", "s", "1s"]), label="mask shape")
        m_shape = {"n1s": (n, 1) + spatial, "11s": (1, 1) + spatial,
                   "n111": (n, 1) + (1,) * n_spatial, "s": spatial, "1s": (1,) + spatial}[kind]
        fill = data.draw(st.sampled_from(["random", "random", "none", "all"]), label="mask fill")
        keep = {"random": rng.random(m_shape) >= 0.3, "none": np.zeros(m_shape, bool),
                "all": np.ones(m_shape, bool)}[fill]
        values = np.where(keep, rng.choice([0.25, 1.0, 3.0, -2.0], m_shape), 0.0)
        m_dtype = data.draw(st.sampled_from([torch.bool, torch.float32, torch.float64,
                                             torch.uint8, torch.float16]), label="mask dtype")
        mask = torch.from_numpy(keep if m_dtype in (torch.bool, torch.uint8) else values)
        options["mask"] = layout(data, mask.to(m_dtype), label="mask layout")
        counted &= np.broadcast_to(options["mask"].numpy().reshape(
            (1,) * (n_spatial + 2 - options["mask"].dim()) + tuple(options["mask"].shape)) != 0,
            (n, 1) + spatial)[:, 0]

    if activation == "none":
        x = rng.random(shape)
        specials = [0.0, 1.0, float("nan")]
    else:
        x = normal_logits(data, rng, shape, [2.5, 1.0, 20.0])
        specials = [1e4, -1e4, float("inf"), -float("inf"), float("nan"), 0.0]
    inject(data, x, specials, where=np.expand_dims(counted, 1).repeat(c, 1), label="x specials")
    x = layout(data, torch.from_numpy(x).to(dtype), expand=False, label="x layout")

    gamma = data.draw(st.one_of(st.sampled_from([1.0, 2.0, 1.5, 3.0]), st.floats(1.0, 4.0)),
                      label="gamma")
    if rarely(data, "gamma just above 1?"):  # 1 in float32 (a NaN gradient at p = 0, fixed)
        gamma = data.draw(st.sampled_from([1.0 + 2.0 ** -30, 1.0 + 1e-8]))
    if rarely(data, "bad gamma?"):
        gamma = data.draw(st.sampled_from([0.5, 0.0, -1.0, float("inf"), float("nan")]))
        expect.add("gamma")
    options["gamma"] = gamma
    # Tiny ones too: below float32's smallest normal they are an error for the
    # float32 sums of float32 and half inputs.
    smoothing = st.one_of(st.just(0.0), st.floats(0.0, 1.0), st.just(1e-100), st.just(1e-37))
    smooth = data.draw(st.one_of(st.just((1e-5, 1e-5)), st.just((0.0, 0.0)),
                                 st.tuples(smoothing, smoothing)), label="smooth_nr, smooth_dr")
    if dtype != torch.float64:
        expect.update(name for name, value in zip(("smooth_nr", "smooth_dr"), smooth)
                      if 0 < value < torch.finfo(torch.float32).tiny)
    if rarely(data, "negative smoothing?"):
        smooth = (-1e-5, smooth[1]) if data.draw(st.booleans()) else (smooth[0], -1.0)
        expect.update({"smooth_nr", "smooth_dr"})
    options["smooth_nr"], options["smooth_dr"] = smooth
    options["batch_dice"] = data.draw(st.booleans(), label="batch_dice")
    options["include_background"] = data.draw(st.booleans(), label="include_background")
    if activation == "softmax" and c == 1:
        expect.add("activation")  # a softmax over one channel is constant
    if data.draw(st.booleans(), label="class_weights?"):
        cw = rng.uniform(0.0, 3.0, c)
        inject(data, cw, [0.0], max_count=1, label="class weight zero")
        cw = torch.from_numpy(cw).to(data.draw(st.sampled_from(FLOAT_DTYPES), label="cw dtype"))
        options["class_weights"] = layout(data, cw, expand=False, label="cw layout")
    options["activation"] = activation
    options["reduction"] = data.draw(st.sampled_from(reductions), label="reduction")
    return x, target, options, expect


def dice_validity_error(x, target, options):
    """The reference's verdict on the class indices: dice_np raises for a label
    outside [0, C) (outside [0, 2) for one channel) that is not ignored."""
    if target.dtype.is_floating_point:
        return None
    try:
        dice_np(x.detach().double().numpy(), target.to(torch.int64).numpy(),
                activation=options["activation"],
                ignore_index=options.get("ignore_index"))
    except ValueError as error:
        return error
    return None


def dense_target_and_keep(x64, t64, options):
    """The Dice problem as the references see it: the float64 target of x's
    shape (one-hot for class indices; for one channel, label 1) and the
    pixels that count, (N, *spatial)."""
    n, c = x64.shape[:2]
    if t64.dtype.is_floating_point:
        keep = torch.ones((n,) + tuple(x64.shape[2:]), dtype=torch.bool)
        if options.get("mask") is not None:
            keep = keep & (options["mask"] != 0).expand((n, 1) + tuple(x64.shape[2:]))[:, 0]
        return t64, keep
    labels, keep = _labels_and_keep(x64, t64, options.get("ignore_index"), options.get("mask"))
    safe = torch.where(keep, labels, 0)
    y = (safe == 1).double().unsqueeze(1) if c == 1 else \
        F.one_hot(safe, c).movedim(-1, 1).double()
    return y, keep


def activated(x64, activation):
    """(p, the relative condition of p in float32 arithmetic): softmax's
    exp(x_c - max) and sigmoid's exp(-x) are off by about eps |x_c - max|
    (eps |x|) relative, once x - max is rounded; an infinite logit gives an
    exact 0 or 1."""
    if activation == "softmax":
        p, cond = torch.softmax(x64, 1), 1 + (x64 - x64.amax(1, keepdim=True)).abs()
    elif activation == "sigmoid":
        p, cond = torch.sigmoid(x64), 1 + x64.abs()
    else:
        return x64, torch.ones_like(x64)
    return p, torch.where(torch.isfinite(cond), cond, 1.0)


# The region losses' epilogue, written from their documented formulas (not
# from segloss): per group (an (n, c); a c with batch_dice; an image, or the
# batch, for generalized Dice) a ratio numerator / denominator of the sums
# I = sum m p y, P = sum m p^gamma, T = sum m y^gamma, its term 1 - ratio (0
# for 0 / 0: nothing predicted, nothing true, no smoothing is a perfect
# score), an outer function of the term (focal Tversky's power, log-cosh),
# then the class weights, include_background and the reduction. The same code
# is the reference (on the float64 sums of x, differentiated by autograd) and
# the tolerance model's epilogue (on the float64 sums of p).

REGION_LOSSES = ("tversky", "jaccard", "log_cosh_dice", "generalized_dice")  # and "dice"


def region_column(sums, options):
    """col(k): column k (0: I, 1: P, 2: T) of the (N, C, 3) sums per group,
    summed over the batch with batch_dice."""
    def col(k):
        column = sums[..., k]
        return column.sum(0) if options["batch_dice"] else column
    return col


def region_ratio(col, options, loss):
    """(numerator, denominator) per group of the region loss `loss`, from
    col(k) (a column of the sums per group; each call one occurrence of it)."""
    s_nr, s_dr = options["smooth_nr"], options["smooth_dr"]
    if loss in ("dice", "log_cosh_dice"):
        return 2 * col(0) + s_nr, col(1) + col(2) + s_dr
    if loss == "jaccard":  # MONAI's 2 tp / 2 (tp + fp + fn): the union is P + T - I
        return 2 * col(0) + s_nr, 2 * (col(1) + col(2) - col(0)) + s_dr
    if loss == "tversky":  # tp = I, fp = P - I, fn = T - I (gamma = 1 sums)
        alpha, beta = options["alpha"], options["beta"]
        return (col(0) + s_nr,
                col(0) + alpha * (col(1) - col(0)) + beta * (col(2) - col(0)) + s_dr)
    assert loss == "generalized_dice", loss
    first = 0 if options["include_background"] else 1
    I, P, T = (col(k)[..., first:] for k in range(3))
    volume = T.detach()  # the weights depend on the target only: no gradient
    w = {"square": lambda: 1 / volume ** 2, "simple": lambda: 1 / volume,
         "uniform": lambda: torch.ones_like(volume)}[options["w_type"]]()
    # MONAI's rule: an absent class (infinite weight) takes the largest finite
    # weight of its image (of the batch), 0 when every class is absent.
    infinite = torch.isinf(w)
    w = torch.where(infinite, torch.where(infinite, 0.0, w).amax(-1, keepdim=True), w)
    if options.get("class_weights") is not None:
        w = w * options["class_weights"][first:]
    # One ratio per image ((N,)), or one for the batch ((1,)).
    return ((2 * (w * I).sum(-1) + s_nr).reshape(-1),
            ((w * (P + T)).sum(-1) + s_dr).reshape(-1))


def region_term(num, den):
    """1 - num / den per group, 0 where den = 0 (a perfect score, gradient 0)."""
    empty = den == 0
    return torch.where(empty, 0.0, 1 - num / torch.where(empty, 1.0, den))


def log_cosh(d):
    """log(cosh(d)) in float64 for every d: -log1p(-tanh(d)^2) / 2 for |d| < 1
    (plain log(cosh(d)) rounds d^2 / 2 away for a tiny d), |d| - log 2 +
    log1p(exp(-2 |d|)) above (cosh overflows past |d| = 710). NaN stays NaN."""
    small = d.abs() < 1
    th = torch.tanh(torch.where(small, d, 0.0))
    big = torch.where(small, 1.0, d.abs())
    return torch.where(small, -0.5 * torch.log1p(-th * th),
                       big - math.log(2.0) + torch.log1p(torch.exp(-2 * big)))


def region_outer(term, options, loss):
    """Each group's loss from its term: focal Tversky's term^focal_gamma, a
    term <= 0 counting as 0 with gradient 0 (as documented; a NaN term is not
    <= 0 and stays NaN); log(cosh(term)) for log-cosh Dice; else the term."""
    if loss == "tversky" and options["focal_gamma"] != 1:
        positive = term > 0
        powered = torch.where(positive, term, 1.0) ** options["focal_gamma"]
        return torch.where(positive, powered, torch.where(term <= 0, 0.0, term))
    if loss == "log_cosh_dice":
        return log_cosh(term)
    return term


def outer_is_identity(options, loss):
    return loss not in ("tversky", "log_cosh_dice") or (
        loss == "tversky" and options["focal_gamma"] == 1)


def region_tail(per, options, reduction, loss):
    """Class weights and include_background (generalized Dice applies them
    inside its ratio), then the reduction."""
    if loss != "generalized_dice":
        if options.get("class_weights") is not None:
            per = per * options["class_weights"]
        if not options["include_background"]:
            per = per[..., 1:]
    return {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]


def region_epilogue(sums, options, reduction, loss="dice"):
    """The region loss `loss` ("dice" or one of REGION_LOSSES) from the (N, C,
    3) float64 sums (I, P, T), differentiable with respect to them; `options`
    holds the loss's own options (alpha, beta, focal_gamma; w_type). Without
    the background, channel 0 is dropped first, as MONAI drops it from the
    input: its sums get gradient 0, also where they are NaN."""
    if loss != "generalized_dice" and not options["include_background"]:
        weights = options.get("class_weights")
        options = dict(options, include_background=True,
                       class_weights=None if weights is None else weights[1:])
        sums = sums[:, 1:]
    num, den = region_ratio(region_column(sums, options), options, loss)
    return region_tail(region_outer(region_term(num, den), options, loss), options, reduction,
                       loss)


def dice_epilogue(sums, options, reduction):
    """The Dice loss from the (N, C, 3) sums (I, P, T), as reference.dice_torch_loss
    computes it, for differentiating with respect to the sums."""
    return region_epilogue(sums, options, reduction, "dice")


def dice_sums_underflow(x64, t64, options, dtype, loss="dice"):
    """Whether a group's denominator without smooth_dr (P + T for Dice) is
    nonzero but below 1e-30 while smooth_dr does not dominate it: the float32
    sums (of float32 and half inputs, as documented) round such p^gamma of a
    tiny p to 0, and segloss scores the group by its 0 / 0 rule where float64
    does not. For generalized Dice also a class volume T below 1e-18, whose
    weight 1 / T^2 overflows float32 (an infinite weight: MONAI's rule)."""
    if dtype == torch.float64:
        return False
    sums = dice_sums_torch(x64, t64, options["activation"], options.get("gamma", 1.0),
                           options.get("ignore_index"), options.get("mask"))
    col = region_column(sums, options)
    den = region_ratio(col, dict(options, smooth_dr=0.0), loss)[1].abs()
    tiny = bool(((den > 0) & (den < 1e-30) & (den > 1e-6 * options["smooth_dr"])).any())
    if loss == "generalized_dice" and options["w_type"] != "uniform":
        tiny |= bool(((col(2) > 0) & (col(2) < 1e-18)).any())
    return tiny


def dice_sum_gradients_overflow(x64, t64, options, dtype, loss="dice"):
    """Whether dL/dI or dL/dP of some group lies beyond float32's range (the
    float32 sums' gradients, for float32 and half inputs): a tiny smooth_dr
    such as 1e-37 makes dL/dI = -2 / smooth_dr and dL/dP = smooth_nr /
    smooth_dr^2 overflow. The element gradients are then inf or
    NaN (inf * 0) where float64's are finite, as in any float32 arithmetic;
    the loss is still compared. (The epilogue itself runs in float64, so a
    group that weighs 0 gets gradient 0 whatever its smoothing.)"""
    if dtype == torch.float64:
        return False
    sums = dice_sums_torch(x64, t64, options["activation"], options.get("gamma", 1.0),
                           options.get("ignore_index"), options.get("mask"))
    sums = sums.detach().requires_grad_()
    value = region_epilogue(sums, options, "none", loss)
    (d_sums,) = torch.autograd.grad(value, sums, torch.ones_like(value))
    largest = torch.finfo(torch.float32).max
    return bool((d_sums[..., :2].abs() > largest).any())


def outer_spread(term, e, options, loss):
    """(|phi'(term)|, the largest change of phi and of phi' over [term - e,
    term + e]) of the outer function phi: focal Tversky's power (monotone, as
    its derivative is on each side of 0; for focal_gamma < 1 that derivative
    is unbounded just above 0: infinite where the interval reaches there) or
    log(cosh()) (convex and even: its largest change is at an end; tanh is
    monotone)."""
    if loss == "log_cosh_dice":
        phi, slope = log_cosh, torch.tanh
    else:
        fg = options["focal_gamma"]

        def phi(t):
            return torch.where(t > 0, torch.where(t > 0, t, 1.0) ** fg, 0.0)

        def slope(t):
            return torch.where(t > 0, fg * torch.where(t > 0, t, 1.0) ** (fg - 1), 0.0)
    lo, hi = term - e, term + e
    change = torch.maximum((phi(hi) - phi(term)).abs(), (phi(lo) - phi(term)).abs())
    slope_change = torch.maximum((slope(hi) - slope(term)).abs(),
                                 (slope(lo) - slope(term)).abs())
    if loss == "tversky" and options["focal_gamma"] < 1:
        slope_change = torch.where((lo <= 0) & (hi > 0), math.inf, slope_change)
    return slope(term).abs(), change, slope_change


def region_magnitudes(x64, t64, options, grad_output, loss="dice", dtype=torch.float64,
                      lambda_dice=1.0):
    """(loss magnitude, gradient magnitude per element, whether the gradient is
    ill-conditioned) of the region loss `loss`: the size of the terms each is
    computed from, for a tolerance that tells float32 cancellation from bugs.

    Per group, with t its term 1 - ratio and w its class weight:
    - the arithmetic: 1 + |ratio| (1 - ratio loses precision relative to 1);
      for the losses other than Dice also sum |d t / d S| |S| over every
      occurrence of a sum S in the ratio (Jaccard's union P + T - I and
      Tversky's fp = P - I, fn = T - I cancel);
    - the activation's rounding: sum |d t / d p| |p| cond.
    The loss is off by |w| times that (Dice's model), or, under an outer
    function phi (focal power, log-cosh), by |w| times phi's largest change
    over t +- e, e = RTOL[dtype] times that (a group whose sums are all 0
    computes t from the smoothing alone: e is float32's error of it).

    Gradient: the sums' gradients (|d L / d S| per occurrence; phi'(t) times
    1 + the excess condition of the numerator and the denominator, plus
    phi''s largest change over t +- e; a phi' unbounded there makes the
    gradient ill-conditioned), then dp = dI y + dP gamma p^(gamma - 1) (the two
    terms cancel), then softmax's p_c (dp_c - sum_k p_k dp_k) (which cancels
    as p_c nears 1), sigmoid's dp p (1 - p), each p off by its cond."""
    p, cond = activated(x64, options["activation"])
    y, keep = dense_target_and_keep(x64, t64, options)
    m = keep.unsqueeze(1).double()
    gamma = options.get("gamma", 1.0)
    reduction = options["reduction"]
    sums = dice_sums_torch(p, t64, "none", gamma, options.get("ignore_index"),
                           options.get("mask")).detach()
    occurrences = []

    def col(k):  # each occurrence of a sum in the ratio a leaf of its own
        leaf = sums[..., k].clone().requires_grad_()
        occurrences.append((k, leaf))
        return leaf.sum(0) if options["batch_dice"] else leaf

    num, den = region_ratio(col, options, loss)
    term = region_term(num, den)

    def sum_gradients(out, upstream):
        """|d (upstream . out) / d S| per (n, c, column), summed over the occurrences."""
        grads = torch.autograd.grad(out, [leaf for _, leaf in occurrences], upstream,
                                    retain_graph=True, allow_unused=True)
        d = torch.zeros_like(sums)
        for (k, _), grad in zip(occurrences, grads):
            if grad is not None:
                d[..., k] += grad.abs()
        return d

    def dp_size(d):
        dI, dP = (d[..., k].reshape(d.shape[:2] + (1,) * (x64.dim() - 2)) for k in (0, 1))
        return m * (dI * y.abs() + dP * gamma * p.abs() ** (gamma - 1))

    def groups_of(per_nc):  # (N, C) values added up per group
        if loss == "generalized_dice":
            kept = per_nc if options["include_background"] else per_nc[..., 1:]
            return kept.sum((0, 1)).reshape(1) if options["batch_dice"] else kept.sum(-1)
        return per_nc.sum(0) if options["batch_dice"] else per_nc

    def tail_gradient(upstream, reduction):  # d (upstream . tail) / d (each group's loss)
        z = torch.zeros_like(term, requires_grad=True)
        (g,) = torch.autograd.grad(region_tail(z, options, reduction, loss), z, upstream)
        return g

    spatial = tuple(range(2, x64.dim()))
    # Per group: unit upstream gradients, so that each group's terms are its own.
    unit_weights = tail_gradient(
        torch.ones_like(region_tail(term.detach(), options, "none", loss)), "none").abs()
    rounding = groups_of((dp_size(sum_gradients(term, unit_weights)) * p.abs() * cond)
                         .sum(spatial))
    if loss != "dice":
        unit = sum_gradients(term, torch.ones_like(term))

        def excess(part, smoothing):  # the size of its terms over its own size, less 1
            terms = groups_of((sum_gradients(part, torch.ones_like(part)) * sums.abs()).sum(-1))
            return torch.where(part == 0, 0.0, (terms + smoothing) / part.abs() - 1).clamp(min=0)

        # d t / d S is off by the numerator's and twice the denominator's relative error.
        condition = 1 + excess(num, options["smooth_nr"]) + 2 * excess(den, options["smooth_dr"])
    with torch.no_grad():
        ratio = torch.where(den == 0, 0.0, num / torch.where(den == 0, 1.0, den))
        cw = options.get("class_weights")
        w = torch.ones(x64.shape[1], dtype=torch.float64) if cw is None else cw.abs()
        if loss == "generalized_dice":  # its class weights are inside its ratio
            w = torch.ones_like(term)
        size = 1 + ratio.abs()
        factor = None  # Dice's: the sums' gradients as they are
        if loss != "dice":
            size = size + groups_of((unit * sums.abs()).sum(-1))
            factor = condition
        if outer_is_identity(options, loss):
            per = w * size + rounding
        else:
            own_rounding = groups_of((dp_size(unit) * p.abs() * cond).sum(spatial))
            e = RTOL[dtype] * (size + own_rounding)
            # A group whose sums are all 0 (in float32 too) computes its term
            # from the smoothing alone, in the sums' dtype.
            sums_dtype = torch.float64 if dtype == torch.float64 else torch.float32
            smoothing = [torch.tensor(options[k], dtype=torch.float64)
                         for k in ("smooth_nr", "smooth_dr")]
            smoothing_error = (region_term(*(s.to(sums_dtype) for s in smoothing)).double()
                               - region_term(*smoothing)).abs()
            e = torch.where(groups_of(sums.abs().sum(-1)) == 0, smoothing_error, e)
            slope, change, slope_change = outer_spread(term, e, options, loss)
            per = w * (change / RTOL[dtype] + region_outer(term, options, loss).abs())
            factor = slope * condition + slope_change / RTOL[dtype]
        if loss != "generalized_dice" and not options["include_background"]:
            per = per[..., 1:]
        loss_size = {"none": per, "sum": per.sum(),
                     "mean": per.sum() / max(per.numel(), 1)}[reduction]

    upstream = tail_gradient(grad_output.double(), reduction).abs()
    # A group of upstream gradient 0 (a dropped background, a class weight
    # 0): its sums' gradients are 0, also where its sums are NaN (the loss
    # drops the background first; with a class weight 0 a NaN loss makes
    # the comparison exact).
    silent = upstream == 0
    ill = False
    if factor is not None:
        ill = bool((torch.isinf(factor) & (upstream != 0)).any())
        upstream = upstream * torch.where(torch.isinf(factor), 0.0, factor)
    d = sum_gradients(term, upstream)
    if loss != "generalized_dice":  # (its groups are images: channel 0 is out of its ratio)
        d = torch.where(silent.unsqueeze(-1), 0.0, d)
    dp = dp_size(d) * abs(lambda_dice)
    if options["activation"] == "softmax":
        grad = p.abs() * cond * (dp + (p.abs() * cond * dp).sum(1, keepdim=True))
    elif options["activation"] == "sigmoid":
        grad = dp * p.abs() * (1 + p.abs()) * cond
    else:
        grad = dp
    return abs(lambda_dice) * loss_size, grad.detach(), ill


def dice_magnitudes(x64, t64, options, grad_output, lambda_dice=1.0):
    """(loss magnitude, gradient magnitude per element) of the Dice loss
    (region_magnitudes): per group |w_c| (1 + |ratio|) plus the sums' error
    from the activation's rounding; the gradient from dp = dI y + dP gamma
    p^(gamma - 1) through the activation."""
    loss, grad, _ = region_magnitudes(x64, t64, options, grad_output, "dice",
                                      lambda_dice=lambda_dice)
    return loss, grad


def dice_grad_output(options, shape, dtype, rng):
    if options["reduction"] != "none":
        return torch.tensor(1.25, dtype=dtype)
    # include_background=False drops channel 0, except of one channel
    c = shape[1] - (0 if options["include_background"] or shape[1] == 1 else 1)
    out = (c,) if options["batch_dice"] else (shape[0], c)
    return torch.from_numpy(rng.uniform(-1.5, 1.5, out)).to(dtype)


def reference_options(x, options):
    """The options as the reference sees them: class_weights and ce_weight in
    the input's dtype, include_background=False ignored for one channel (as
    MONAI)."""
    ref_options = dict(options)
    if x.shape[1] == 1 and "include_background" in ref_options:
        ref_options["include_background"] = True
    for name in ("class_weights", "ce_weight"):
        if ref_options.get(name) is not None:
            ref_options[name] = options[name].to(x.dtype).double()
    return ref_options


@fuzz(2.0)
@given(data=st.data())
def test_dice_loss(data):
    """segloss.dice_loss against the float64 eager composite reference.dice_torch
    and its autograd gradient (label validity: reference.dice_np)."""
    x, target, options, expect = draw_dice_problem(data, ["sigmoid", "softmax", "none"],
                                                   ["mean", "sum", "none"])
    note(f"x={x!r}\ntarget={target!r}\noptions={options!r}")
    if dice_validity_error(x, target, options) is not None:
        expect.add("target")
    if expect:
        assert_error_names(lambda: segloss.dice_loss(x, target, **options), expect)
        return
    rng = rng_of(data)
    g = dice_grad_output(options, x.shape, x.dtype, rng)
    leaf = x.detach().requires_grad_()
    loss = segloss.dice_loss(leaf, target, **options)
    (grad,) = torch.autograd.grad(loss, leaf, g)
    assert loss.dtype == x.dtype and grad.dtype == x.dtype

    x64 = x.detach().double()
    ref_options = reference_options(x, options)
    t64 = target.to(x.dtype).double() if target.dtype.is_floating_point else target
    if dice_sums_underflow(x64, t64, ref_options, x.dtype):
        event("left out: float32 sums underflow")
        return
    ref_loss, ref_grad = dice_torch(x64, t64, grad_output=g.double(), **ref_options)
    loss_mag, grad_mag = dice_magnitudes(x64, t64, ref_options, g)
    assert_close(loss, ref_loss, loss_mag, "loss")
    if dice_sum_gradients_overflow(x64, t64, ref_options, x.dtype):
        event("gradient left out: float32 overflow")
        return
    assert_close(grad, ref_grad, torch.maximum(gradient_magnitude(ref_grad), grad_mag),
                 "gradient")

def draw_region_options(data, loss, options, expect):
    """The options of the region loss `loss` beyond Dice's into `options`
    (Tversky and generalized Dice have no gamma: their sums use gamma = 1).
    Returns the name of a bad one, drawn in about one case of twenty (the
    loss checks its own options first), else None."""
    if loss in ("tversky", "generalized_dice"):
        options.pop("gamma")
        expect.discard("gamma")
    bad = None
    if loss == "tversky":
        weight = st.one_of(st.sampled_from([0.5, 0.3, 0.7, 0.0, 1.0, 2.0]), st.floats(0.0, 2.0))
        options["alpha"] = data.draw(weight, label="alpha")
        options["beta"] = data.draw(weight, label="beta")
        options["focal_gamma"] = data.draw(
            st.one_of(st.sampled_from([1.0, 0.75, 2.0, 0.5, 3.0]),
                      st.floats(0.0, 3.0, exclude_min=True)), label="focal_gamma")
        if rarely(data, "bad Tversky option?"):
            bad = data.draw(st.sampled_from(["alpha", "beta", "focal_gamma"]), label="bad option")
            values = ([0.0, -1.0, -1e-300, float("nan")] if bad == "focal_gamma" else
                      [-1e-5, -1.0, -float("inf"), float("nan")])
            options[bad] = data.draw(st.sampled_from(values), label=f"bad {bad}")
    elif loss == "generalized_dice":
        options["w_type"] = data.draw(st.sampled_from(["square", "simple", "uniform"]),
                                      label="w_type")
        if rarely(data, "bad w_type?"):
            options["w_type"] = data.draw(st.sampled_from(["cube", "Square", ""]),
                                          label="bad w_type")
            bad = "w_type"
    return bad


def region_grad_output(loss, options, shape, dtype, rng):
    """The upstream gradient: generalized Dice's "none" is one value per image
    (one for the batch with batch_dice)."""
    if loss != "generalized_dice" or options["reduction"] != "none":
        return dice_grad_output(options, shape, dtype, rng)
    out = (1,) if options["batch_dice"] else (shape[0],)
    return torch.from_numpy(rng.uniform(-1.5, 1.5, out)).to(dtype)


@fuzz(1.5)
@given(data=st.data())
@pytest.mark.parametrize("loss", REGION_LOSSES)
def test_region_loss(loss, data):
    """segloss.tversky_loss (and focal Tversky), jaccard_loss, log_cosh_dice_loss
    and generalized_dice_loss against region_epilogue (their formulas in
    float64) over reference.dice_sums_torch's eager sums, and its autograd
    gradient, within region_magnitudes' tolerance; a bad option of their own
    raises a ValueError naming segloss.<loss> and the option."""
    name = f"segloss.{loss}_loss"
    function = getattr(segloss, f"{loss}_loss")
    x, target, options, expect = draw_dice_problem(data, ["sigmoid", "softmax", "none"],
                                                   ["mean", "sum", "none"])
    bad = draw_region_options(data, loss, options, expect)
    note(f"x={x!r}\ntarget={target!r}\noptions={options!r}")
    if bad is not None:  # checked first, before the input: a ValueError naming both
        event(f"bad {bad}")
        with pytest.raises(ValueError) as error:
            function(x, target, **options)
        message = str(error.value)
        assert name in message and re.search(rf"\b{bad}\b", message), message
        return
    if dice_validity_error(x, target, options) is not None:
        expect.add("target")
    if expect:
        assert_error_names(lambda: function(x, target, **options), expect, op=name)
        return
    rng = rng_of(data)
    g = region_grad_output(loss, options, x.shape, x.dtype, rng)
    leaf = x.detach().requires_grad_()
    value = function(leaf, target, **options)
    (grad,) = torch.autograd.grad(value, leaf, g)
    assert value.dtype == x.dtype and grad.dtype == x.dtype

    x64 = x.detach().double()
    ref_options = reference_options(x, options)
    t64 = target.to(x.dtype).double() if target.dtype.is_floating_point else target
    if dice_sums_underflow(x64, t64, ref_options, x.dtype, loss):
        event("left out: float32 sums underflow")
        return
    x_ref = x64.clone().requires_grad_()
    sums = dice_sums_torch(x_ref, t64, options["activation"], options.get("gamma", 1.0),
                           options.get("ignore_index"), options.get("mask"))
    ref_value = region_epilogue(sums, ref_options, options["reduction"], loss)
    (ref_grad,) = torch.autograd.grad(ref_value, x_ref, g.double())
    loss_mag, grad_mag, ill = region_magnitudes(x64, t64, ref_options, g, loss, x.dtype)
    assert_close(value, ref_value.detach(), loss_mag, "loss")
    if dice_sum_gradients_overflow(x64, t64, ref_options, x.dtype, loss):
        event("gradient left out: float32 overflow")
        return
    if ill:  # focal_gamma < 1 with a term within its error of 0: phi' unbounded there
        event("gradient left out: a focal term at 0 within its error")
        return
    assert_close(grad, ref_grad, torch.maximum(gradient_magnitude(ref_grad), grad_mag),
                 "gradient")


def softmax_ce_magnitude(x64, wy):
    """Per pixel, the size of the terms of -sum_c wy_c (x_c - logsumexp x)
    (wy: the class-weighted target): |x_c|, |logsumexp x|, which cancel when
    the target's logit dominates, and the exp's rounding, 1 + max |x - max|."""
    lse = torch.logsumexp(x64, 1, keepdim=True)
    _, cond = activated(x64, "softmax")
    spread = x64.abs() + lse.abs() + cond.amax(1, keepdim=True)
    return torch.where(wy != 0, wy.abs() * spread, 0.0).sum(1)


def ce_magnitudes(x64, t64, options, grad_output):
    """(loss magnitude, gradient magnitude per element) of the CE part of
    Dice + CE, reduced as the CE itself is. Softmax: softmax_ce_magnitude;
    its gradient p_c sum_k w_k y_k - w_c y_c. Sigmoid: bce_logits_magnitude, with
    the class weights (ce_weight, else class_weights) as pos_weight and
    sigmoid's rounding."""
    n, c = x64.shape[:2]
    dims = (1, c) + (1,) * (x64.dim() - 2)
    y, keep = dense_target_and_keep(x64, t64, options)
    k = keep.unsqueeze(1)
    cw = options.get("ce_weight")
    cw = options.get("class_weights") if cw is None else cw
    w = torch.ones(dims, dtype=torch.float64) if cw is None else cw.double().reshape(dims)
    p, cond = activated(x64, options["activation"])
    if options["activation"] == "softmax":
        # Label smoothing e is the CE of the target (1 - e) y + e / C.
        smoothing = options.get("label_smoothing", 0.0)
        wy = (w * ((1 - smoothing) * y + smoothing / c)).abs()
        terms = torch.where(keep, softmax_ce_magnitude(x64, wy), 0.0).sum()
        # Class indices: the weighted mean over sum w_y; probabilities: over pixels.
        count = (w * y).sum(1)[keep].sum() if not t64.dtype.is_floating_point else keep.sum()
        grad = p.abs() * cond * wy.sum(1, keepdim=True) + wy
    else:
        loss_mag, _ = bce_logits_magnitude(x64.numpy(), y.numpy(), 1.0, w.numpy())
        terms = torch.where(k, torch.from_numpy(loss_mag), 0.0).sum()
        count = keep.sum() * c
        grad = (1 + (w - 1) * y).abs() * p.abs() * cond + (w * y).abs()
    count = 1.0 if options["reduction"] == "sum" else float(count)
    if count == 0:  # the mean of nothing: NaN in the reference, matched exactly
        return torch.tensor(0.0), torch.zeros_like(x64)
    scale = abs(options["lambda_ce"]) / count
    grad = torch.where(k, grad, 0.0) * scale * abs(float(grad_output))
    return scale * terms, grad


def composite_case(function, x, target, options, expect, op=None):
    """The steps the Dice composites' fuzz tests share: the error expected
    (None), else segloss's loss and gradient for an upstream gradient g and
    the reference's view of the problem, (loss, grad, g, x64, t64,
    ref_options); None also where float32 sums underflow."""
    if dice_validity_error(x, target, options) is not None:
        expect.add("target")
    if expect:
        assert_error_names(lambda: function(x, target, **options), expect, op)
        return None
    leaf = x.detach().requires_grad_()
    g = torch.tensor(1.25, dtype=x.dtype)
    loss = function(leaf, target, **options)
    (grad,) = torch.autograd.grad(loss, leaf, g)
    assert loss.dtype == x.dtype and grad.dtype == x.dtype and loss.shape == ()

    x64 = x.detach().double()
    ref_options = reference_options(x, options)
    t64 = target.to(x.dtype).double() if target.dtype.is_floating_point else target
    if dice_sums_underflow(x64, t64, ref_options, x.dtype):
        event("left out: float32 sums underflow")
        return None
    return loss, grad, g, x64, t64, ref_options


@fuzz(1.5)
@given(data=st.data())
def test_dice_ce_loss(data):
    """segloss.dice_ce_loss against reference.dice_ce_torch (the Dice composite
    plus F.cross_entropy / F.binary_cross_entropy_with_logits) and its
    autograd gradient."""
    x, target, options, expect = draw_dice_problem(
        data, ["softmax", "sigmoid"], ["mean", "sum"], cross_entropy=True)
    if data.draw(st.booleans(), label="ce_weight?"):  # the CE's own class weights
        c = x.shape[1]
        if rarely(data, "ce_weight of the wrong length?"):
            c += 1
            expect.add("ce_weight")
        ce_w = rng_of(data).uniform(0.0, 3.0, c)
        inject(data, ce_w, [0.0], max_count=1, label="ce weight zero")
        ce_w = torch.from_numpy(ce_w).to(data.draw(st.sampled_from(FLOAT_DTYPES),
                                                   label="ce_weight dtype"))
        options["ce_weight"] = layout(data, ce_w, expand=False, label="ce_weight layout")
    if data.draw(st.booleans(), label="label_smoothing?"):
        smoothing = data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]), label="label_smoothing")
        if rarely(data, "label_smoothing out of [0, 1]?"):
            smoothing = data.draw(st.sampled_from([-0.1, 1.5]), label="bad label_smoothing")
            expect.add("label_smoothing")
        if smoothing != 0.0 and options["activation"] != "softmax":
            expect.add("label_smoothing")  # the softmax CE's option only
        options["label_smoothing"] = smoothing
    options["lambda_dice"] = data.draw(st.sampled_from([1.0, 0.0, 0.3, 2.0]), label="lambda_dice")
    options["lambda_ce"] = data.draw(st.sampled_from([1.0, 0.0, 1.7]), label="lambda_ce")
    note(f"x={x!r}\ntarget={target!r}\noptions={options!r}")
    case = composite_case(segloss.dice_ce_loss, x, target, options, expect)
    if case is None:
        return
    loss, grad, g, x64, t64, ref_options = case
    ref_loss, ref_grad = dice_ce_torch(x64, t64, grad_output=g.double(), **ref_options)
    dice_loss_mag, dice_grad_mag = dice_magnitudes(x64, t64, ref_options, g,
                                                   options["lambda_dice"])
    ce_loss_mag, ce_grad_mag = ce_magnitudes(x64, t64, ref_options, g)
    assert_close(loss, ref_loss, dice_loss_mag + ce_loss_mag, "loss")
    if dice_sum_gradients_overflow(x64, t64, ref_options, x.dtype):
        event("gradient left out: float32 overflow")
        return
    magnitude = torch.maximum(gradient_magnitude(ref_grad), dice_grad_mag + ce_grad_mag)
    assert_close(grad, ref_grad, magnitude, "gradient")


def focal_magnitudes(x64, t64, options, focal_activation, grad_output):
    """(loss magnitude, gradient magnitude per element) of dice_focal_loss's
    focal term: per element the size of the terms it is computed from (as
    test_focal_loss's model; alpha's factors, at most 1, left out), reduced as
    the term is (reference.focal_reduce):
    - sigmoid: M B (1 + gamma |log sigmoid(z)|), M = sigmoid(z)^gamma,
      z = x (1 - 2y), B = |(1 - y) x| + |log sigmoid(x)| (the BCE's terms);
      gradient w (M (p + |y|) + gamma M sigmoid(-z) |1 - 2y| B) (1 + gamma
      |log sigmoid(z)|), w the reduction's weight of the element;
    - softmax: |y_c| (1 - p_c)^gamma (|log p_c| + max |x|) (1 + gamma
      |log(1 - p_c)|); gradient (sum_c w_c |y_c|) (1 + gamma) cond on every
      channel (cond: softmax's rounding, activated)."""
    gamma = options["focal_gamma"]
    y, m = dense_target_and_mask(x64, t64, options.get("ignore_index"), options.get("mask"))
    x = x64.detach()
    cw = options.get("class_weights")

    def reduce(values):
        return focal_reduce(values, m, masked="mask" in options or "ignore_index" in options,
                            class_weights=None if cw is None else cw.abs(),
                            include_background=options["include_background"],
                            reduction=options["reduction"])

    if focal_activation == "sigmoid":
        z = x * (1 - 2 * y)
        amplification = 1 + gamma * F.logsigmoid(z).abs()
        big_m = torch.exp(gamma * F.logsigmoid(z))
        b = ((1 - y) * x).abs() + F.logsigmoid(x).abs()
        scale = big_m * b * amplification
    else:
        log_p = torch.log_softmax(x, 1)
        one_minus_p = -torch.expm1(log_p)
        scale = y.abs() * one_minus_p ** gamma \
            * (log_p.abs() + x.abs().amax(1, keepdim=True)) \
            * (1 + gamma * torch.log(one_minus_p).abs().nan_to_num(posinf=0.0))
    lambda_focal = abs(options["lambda_focal"])
    loss_mag = lambda_focal * reduce(scale)
    ones = torch.ones_like(x, requires_grad=True)
    (w,) = torch.autograd.grad(reduce(ones * 1.0), ones)
    w = w.abs() * lambda_focal * abs(float(grad_output))
    if focal_activation == "sigmoid":
        grad = w * (big_m * (torch.sigmoid(x) + y.abs())
                    + gamma * big_m * torch.sigmoid(-z) * (1 - 2 * y).abs() * b) * amplification
    else:
        _, cond = activated(x, "softmax")
        grad = (w * y.abs()).sum(1, keepdim=True) * (1 + gamma) * cond
    return loss_mag, grad.expand(x.shape)


@fuzz(1.5)
@given(data=st.data())
def test_dice_focal_loss(data):
    """segloss.dice_focal_loss against reference.dice_focal_torch (the Dice
    composite plus MONAI's focal formulas, float64) and its autograd
    gradient; bad focal options raise an error naming segloss.dice_focal_loss
    and the option."""
    x, target, options, expect = draw_dice_problem(data, ["sigmoid", "softmax"], ["mean", "sum"])
    # Finite logits, as test_focal_loss's: at an infinite one the references'
    # BCE is 0 * inf = NaN where segloss's sigmoid focal term takes its limit.
    with torch.no_grad():
        x.masked_fill_(x == math.inf, 1e4).masked_fill_(x == -math.inf, -1e4)
    focal_activation = data.draw(st.sampled_from([None, "sigmoid", "softmax"]),
                                 label="focal_activation")
    if rarely(data, "bad focal_activation?"):
        focal_activation = "relu"
        expect.add("focal_activation")
    elif focal_activation == "softmax" and options["activation"] != "softmax":
        expect.add("focal_activation")  # a softmax focal term needs the softmax Dice
    options["focal_activation"] = focal_activation
    options["focal_gamma"] = data.draw(st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]),
                                                 st.floats(0.0, 6.0)), label="focal_gamma")
    if rarely(data, "bad focal_gamma?"):
        options["focal_gamma"] = data.draw(st.sampled_from([-0.5, float("nan")]))
        expect.add("focal_gamma")
    options["alpha"] = data.draw(st.one_of(st.none(), st.floats(0.0, 1.0)), label="alpha")
    if rarely(data, "bad alpha?"):
        options["alpha"] = data.draw(st.sampled_from([-0.1, 1.5]), label="bad alpha")
        expect.add("alpha")
    options["lambda_dice"] = data.draw(st.sampled_from([1.0, 0.0, 0.3, 2.0]), label="lambda_dice")
    options["lambda_focal"] = data.draw(st.sampled_from([1.0, 0.0, 1.7]), label="lambda_focal")
    if rarely(data, "negative lambda?"):
        name = data.draw(st.sampled_from(["lambda_dice", "lambda_focal"]), label="bad lambda")
        options[name] = -0.5
        expect.add(name)
    note(f"x={x!r}\ntarget={target!r}\noptions={options!r}")
    case = composite_case(segloss.dice_focal_loss, x, target, options, expect,
                          "segloss.dice_focal_loss")
    if case is None:
        return
    loss, grad, g, x64, t64, ref_options = case
    ref_loss, ref_grad = dice_focal_torch(x64, t64, grad_output=g.double(), **ref_options)
    dice_loss_mag, dice_grad_mag = dice_magnitudes(x64, t64, ref_options, g,
                                                   options["lambda_dice"])
    focal_loss_mag, focal_grad_mag = focal_magnitudes(
        x64, t64, ref_options, focal_activation or options["activation"], g)
    assert_close(loss, ref_loss, dice_loss_mag + focal_loss_mag, "loss")
    if dice_sum_gradients_overflow(x64, t64, ref_options, x.dtype):
        event("gradient left out: float32 overflow")
        return
    magnitude = torch.maximum(gradient_magnitude(ref_grad), dice_grad_mag + focal_grad_mag)
    # The reference's autograd gives NaN where p_t is 1 and focal_gamma < 1
    # ((1 - p_t)^gamma's infinite slope times 0), segloss its finite limit
    # (test_dice_focal.py checks it): compared where the reference is finite,
    # and finite wherever the loss and the logits (a softmax's pixel's) are.
    compared = torch.isfinite(ref_grad) if 0 < options["focal_gamma"] < 1 else \
        torch.ones_like(ref_grad, dtype=torch.bool)
    assert_close(grad[compared], ref_grad[compared], magnitude[compared], "gradient")
    finite_x = torch.isfinite(x64)
    if options["activation"] == "softmax":
        finite_x = finite_x.all(1, keepdim=True).expand(x64.shape)
    if bool(torch.isfinite(ref_loss)):
        assert bool(torch.isfinite(grad[finite_x]).all()), "a non-finite gradient of a finite loss"


# --------------------------------------------------------------------------
# 3. shape_aware_loss, binary and multi-class forms.

def reference_weight_maps(instances, w0=10.0, sigma=5.0, class_weights=None, sampling=None,
                          pixel=None, border_everywhere=False):
    """float64 U-Net maps of a batch of NumPy instance maps (N, *spatial) from
    the brute-force distances, and their magnitudes |w_c| + |border|."""
    maps = np.zeros(instances.shape)
    magnitudes = np.zeros(instances.shape)
    for n, image in enumerate(instances):
        _, squared = brute_force_squared(image, sampling)
        d1, d2 = two_nearest_from(np.sqrt(squared), image.shape)
        if pixel is not None:
            w_c = pixel[n].astype(np.float32).astype(np.float64)
        elif class_weights == "balanced":
            w_c = balanced_class_weight(image)
        elif isinstance(class_weights, dict):
            w_c = np.where(image != 0, class_weights.get(1, 1.0), class_weights.get(0, 1.0))
        else:
            w_c = np.ones(image.shape)
        maps[n] = unet_weight_formula(image, d1, d2, w0, sigma, w_c, border_everywhere)
        magnitudes[n] = np.abs(w_c) + np.abs(maps[n] - w_c)
    return maps, magnitudes


def draw_class_weights(data, label="class_weights"):
    """shape_aware_loss / unet_weight_map's class_weights: None, "balanced" or
    a mapping {0: background, 1: foreground} (either key may be missing);
    rarely an invalid one."""
    if rarely(data, f"bad {label}?"):
        return data.draw(st.sampled_from(["inverse", {2: 1.0}]), label=label)
    weight = st.floats(-2.0, 5.0)
    return data.draw(st.one_of(st.none(), st.just("balanced"),
                               st.fixed_dictionaries({}, optional={0: weight, 1: weight})),
                     label=label)


def class_weights_valid(class_weights):
    return class_weights is None or class_weights == "balanced" or (
        isinstance(class_weights, dict) and set(class_weights) <= {0, 1})


def draw_weight_source(data, rng, pixel_shape, input_shape, n_spatial, expect):
    """(kwargs for shape_aware_loss's weight_map / instances and the map's
    options, the reference map (float64, `pixel_shape`), its magnitude, whether
    it was computed from instances)."""
    source = data.draw(st.sampled_from(["weight_map", "instances"]), label="map source")
    shape = data.draw(st.sampled_from([pixel_shape, input_shape]), label="map shape")
    if source == "weight_map":
        values = rng.uniform(0.0, 3.0, pixel_shape)
        inject(data, values, [0.0], label="map zeros")
        if rarely(data, "all-zero map?", 6):
            values[...] = 0.0
        w = torch.from_numpy(values).to(data.draw(st.sampled_from(FLOAT_DTYPES),
                                                  label="map dtype"))
        w = layout(data, w.reshape(shape), label="map layout")
        return {"weight_map": w}, w.double().reshape(pixel_shape).numpy(), None, False
    dtype = data.draw(st.sampled_from(NP_INT_DTYPES), label="instance dtype")
    labels = instance_map(data, pixel_shape, dtype, rng)
    kwargs = {"instances": layout(data, torch.from_numpy(labels).reshape(shape),
                                  label="instances layout")}
    labels = kwargs["instances"].contiguous().reshape(pixel_shape).numpy()
    kwargs["w0"] = data.draw(st.floats(-5.0, 20.0), label="w0")
    kwargs["sigma"] = data.draw(st.floats(0.3, 10.0), label="sigma")
    if rarely(data, "bad sigma?"):
        kwargs["sigma"] = data.draw(st.sampled_from([0.0, -1.0, float("nan")]))
        expect.add("sigma")
    kwargs["class_weights"] = draw_class_weights(data)
    if not class_weights_valid(kwargs["class_weights"]):
        expect.add("class_weights")
    kwargs["sampling"] = draw_sampling(data, n_spatial)
    if not sampling_valid(kwargs["sampling"], n_spatial):
        expect.add("sampling")
    if expect:
        return kwargs, None, None, True
    maps, magnitudes = reference_weight_maps(
        labels, kwargs["w0"], kwargs["sigma"], kwargs["class_weights"],
        spacing_list(kwargs["sampling"], n_spatial))
    # segloss's map is float32 (computed in float64): the reference rounded the same way.
    return kwargs, maps.astype(np.float32).astype(np.float64), magnitudes, True


def reduce_weighted(per, reduction, count, total_weight):
    """'mean' over `count`, 'weighted_mean' over `total_weight` (0 if it is 0)."""
    if reduction == "none":
        return per
    total = per.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / count
    return torch.where(total_weight == 0, torch.zeros_like(total),
                       total / torch.where(total_weight == 0, 1.0, total_weight))


MISUSE_BINARY = ["both", "neither", "float instances", "weight", "ignore_index",
                               "map shape"]


@fuzz(1.0)
@given(data=st.data())
def test_shape_aware_loss_binary(data):
    """The binary form (a float target) against F.binary_cross_entropy(_with_logits)
    with the map as weight=, in float64 with autograd; the map precomputed or
    computed from instances (then against the brute-force U-Net formula)."""
    rng = rng_of(data)
    expect = set()
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES), label="dtype")
    n_spatial = data.draw(st.integers(2, 3), label="spatial dims")
    n = data.draw(st.integers(0, 3) if data.draw(st.integers(0, 7)) == 0 else st.integers(1, 3),
                  label="N")
    spatial = data.draw(sizes(n_spatial, 7 if n_spatial == 2 else 4), label="spatial")
    channel = data.draw(st.booleans(), label="channel dim?")
    input_shape = (n, 1) + spatial if channel else (n,) + spatial
    # The documented rule: a 5-D input, or a 4-D one with one channel, has a channel dim.
    has_channel = len(input_shape) == 5 or (len(input_shape) == 4 and input_shape[1] == 1)
    pixel_shape = (n,) + input_shape[1 + has_channel:]
    n_spatial = len(pixel_shape) - 1

    from_logits = data.draw(st.booleans(), label="from_logits")
    if from_logits:
        x = normal_logits(data, rng, input_shape, [3.0, 1.0, 30.0])
        inject(data, x, LOGIT_SPECIALS, label="x specials")
    else:
        x = rng.random(input_shape)
        inject(data, x, [0.0, 1.0, 0.5], label="x specials")
    x = layout(data, torch.from_numpy(x).to(dtype), label="x layout")
    y = layout(data, torch.from_numpy(soft_labels(rng, input_shape)).to(
        data.draw(st.sampled_from([dtype] + FLOAT_DTYPES), label="target dtype")),
        label="y layout")
    kwargs, w_ref, w_mag, computed = draw_weight_source(data, rng, pixel_shape, input_shape,
                                                        n_spatial, expect)
    kwargs["from_logits"] = from_logits
    kwargs["reduction"] = data.draw(st.sampled_from(["none", "mean", "sum", "weighted_mean"]),
                                    label="reduction")
    misuse = rarely(data, "misuse?", 10) and data.draw(st.sampled_from(MISUSE_BINARY),
                                                         label="misuse")
    if misuse == "both":
        kwargs["weight_map"] = torch.ones(pixel_shape)
        kwargs["instances"] = torch.zeros(pixel_shape, dtype=torch.int64)
        expect.update({"weight_map", "instances"})
    elif misuse == "neither":
        kwargs.pop("weight_map", None)
        kwargs.pop("instances", None)
        expect.update({"weight_map", "instances"})
    elif misuse == "float instances":
        kwargs.pop("weight_map", None)
        kwargs["instances"] = torch.zeros(pixel_shape)
        expect.add("instances")
    elif misuse in ("weight", "ignore_index"):
        kwargs[misuse] = torch.ones(1) if misuse == "weight" else 0
        expect.add(misuse)
    elif misuse == "map shape":
        kwargs.pop("instances", None)
        kwargs["weight_map"] = torch.ones(pixel_shape[:-1] + (pixel_shape[-1] + 1,))
        expect.add("weight_map")
    note(f"x={x!r}\ny={y!r}\nkwargs={kwargs!r}")
    if expect:
        assert_error_names(lambda: segloss.shape_aware_loss(x, y, **kwargs), expect)
        return

    leaf = x.detach().requires_grad_()
    loss = segloss.shape_aware_loss(leaf, y, **kwargs)
    g = (torch.from_numpy(rng.uniform(-1.5, 1.5, input_shape)) if kwargs["reduction"] == "none"
         else torch.tensor(1.25, dtype=torch.float64)).to(dtype)
    (grad,) = torch.autograd.grad(loss, leaf, g)
    assert loss.dtype == dtype and grad.dtype == dtype

    # BCE converts weights to the input's dtype: so does the reference.
    w64 = torch.from_numpy(w_ref).reshape(input_shape).to(dtype).double()
    x64 = x.detach().double().requires_grad_()
    y64 = y.detach().to(dtype).double()
    bce = F.binary_cross_entropy_with_logits if from_logits else F.binary_cross_entropy
    per = bce(x64, y64, weight=w64, reduction="none")
    ref = reduce_weighted(per, kwargs["reduction"], per.numel(), w64.sum())
    (ref_grad,) = torch.autograd.grad(ref, x64, g.double())
    arrays = (x64.detach().numpy(), y64.numpy(), w64.numpy())
    if from_logits:
        mag, grad_mag = bce_logits_magnitude(*arrays, 1.0)
    else:
        _, _, mag, grad_mag = bce_probability_reference(*arrays, 1.0, "none", 1.0)
    total = w64.abs().sum()
    mag = reduce_weighted(torch.from_numpy(np.asarray(mag)), kwargs["reduction"], x.numel(),
                          total)
    denominator = {"mean": max(x.numel(), 1), "weighted_mean": total}.get(kwargs["reduction"], 1)
    grad_mag = torch.from_numpy(np.asarray(grad_mag)) * g.double().abs() / denominator
    if computed:  # a float32 map may differ from the reference's by one float32 rounding
        mag = mag * max(1.0, 2.0 ** -22 / RTOL[dtype])
        grad_mag = grad_mag * max(1.0, 2.0 ** -22 / RTOL[dtype])
    assert_close(loss, ref.detach(), mag, "loss")
    assert_close(grad, ref_grad, grad_mag, "gradient")


@fuzz(1.0)
@given(data=st.data())
def test_shape_aware_loss_multiclass(data):
    """The multi-class form (a class-index target) against F.cross_entropy(
    reduction="none") * map * weight[target] in float64 with autograd.

    Non-finite logits only on pixels that count: at an ignored pixel torch's
    backward turns a NaN logit into a NaN gradient (0 * NaN), an artefact of
    the composite; segloss leaves ignored pixels out, as documented."""
    rng = rng_of(data)
    expect = set()
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES), label="dtype")
    n_spatial = data.draw(st.integers(2, 3), label="spatial dims")
    n = data.draw(st.integers(0, 3) if data.draw(st.integers(0, 7)) == 0 else st.integers(1, 3),
                  label="N")
    c = data.draw(st.integers(2, 4), label="C")
    spatial = data.draw(sizes(n_spatial, 6 if n_spatial == 2 else 4), label="spatial")
    input_shape = (n, c) + spatial
    pixel_shape = (n,) + spatial

    label_dtype = data.draw(st.sampled_from(CLASS_DTYPES + ([torch.bool] if c == 2 else [])),
                            label="label dtype")
    ignore = data.draw(st.sampled_from([-100, -100, 255, 0, c - 1, -1, 100]), label="ignore_index")
    labels = rng.integers(0, c, pixel_shape)
    info = torch.iinfo(label_dtype) if label_dtype != torch.bool else None
    if info is not None and info.min <= ignore <= info.max:
        labels = np.where(rng.random(pixel_shape) < 0.2, ignore, labels)
    if labels.size and info is not None and rarely(data, "bad label?"):
        # Out of range, and for the narrow dtypes ignore_index wrapped around
        # (255 in int8 is -1, -100 in uint8 is 156): still out of range.
        bad = data.draw(st.sampled_from([c, -1, 7, 156]), label="bad label")
        if info.min <= bad <= info.max and bad != ignore:
            labels.reshape(-1)[data.draw(st.integers(0, labels.size - 1))] = bad
    t = torch.from_numpy(labels).to(label_dtype)
    target = layout(data, t.unsqueeze(1) if data.draw(st.booleans(), label="target (N, 1, ...)?")
                    else t, label="target layout")
    labels = target.reshape(pixel_shape).to(torch.int64).numpy()  # as laid out
    counted = labels != ignore

    x = normal_logits(data, rng, input_shape, [3.0, 1.0, 30.0])
    inject(data, x, LOGIT_SPECIALS, where=np.expand_dims(counted, 1).repeat(c, 1),
           label="x specials")
    # No 'expanded' layout for x: it would copy the non-finite logits to other pixels.
    x = layout(data, torch.from_numpy(x).to(dtype), expand=False, label="x layout")
    kwargs, w_ref, _, computed = draw_weight_source(data, rng, pixel_shape, pixel_shape,
                                                    n_spatial, expect)
    if "weight_map" in kwargs and data.draw(st.booleans(), label="map (N, 1, ...)?"):
        kwargs["weight_map"] = kwargs["weight_map"].reshape(pixel_shape).unsqueeze(1)
    kwargs["ignore_index"] = ignore
    if data.draw(st.booleans(), label="weight?"):
        cw = rng.uniform(0.0, 3.0, c)
        inject(data, cw, [0.0], max_count=1, label="weight zero")
        kwargs["weight"] = layout(data, torch.from_numpy(cw).to(
            data.draw(st.sampled_from(FLOAT_DTYPES), label="weight dtype")), expand=False,
            label="weight layout")
        if rarely(data, "weight shape wrong?"):
            kwargs["weight"] = torch.ones(c + 1)
            expect.add("weight")
    kwargs["reduction"] = data.draw(st.sampled_from(["none", "mean", "sum", "weighted_mean"]),
                                    label="reduction")
    if rarely(data, "from_logits=False?"):
        kwargs["from_logits"] = False
        expect.add("from_logits")
    note(f"x={x!r}\ntarget={target!r}\nkwargs={kwargs!r}")

    t64 = target.reshape(pixel_shape).to(torch.int64)
    if not expect and bool((counted & ((labels < 0) | (labels >= c))).any()):
        with pytest.raises(ERRORS):  # the reference refuses too
            F.cross_entropy(torch.zeros(input_shape, dtype=torch.float64), t64,
                            ignore_index=ignore)
        expect.add("target")
    if expect:
        assert_error_names(lambda: segloss.shape_aware_loss(x, target, **kwargs), expect)
        return

    leaf = x.detach().requires_grad_()
    loss = segloss.shape_aware_loss(leaf, target, **kwargs)
    g = (torch.from_numpy(rng.uniform(-1.5, 1.5, pixel_shape)) if kwargs["reduction"] == "none"
         else torch.tensor(1.25, dtype=torch.float64)).to(dtype)
    (grad,) = torch.autograd.grad(loss, leaf, g)
    assert loss.dtype == dtype and grad.dtype == dtype

    x64 = x.detach().double().requires_grad_()
    w64 = torch.from_numpy(w_ref)
    keep = torch.from_numpy(counted)
    c_w = torch.ones(c, dtype=torch.float64) if kwargs.get("weight") is None else \
        kwargs["weight"].to(dtype).double()
    pixel_weight = w64 * c_w[torch.where(keep, t64, 0)] * keep
    per = F.cross_entropy(x64, t64, ignore_index=ignore, reduction="none") * pixel_weight
    ref = reduce_weighted(per, kwargs["reduction"], keep.sum(), pixel_weight.sum())
    (ref_grad,) = torch.autograd.grad(ref, x64, g.double())
    # Magnitudes: each pixel's -log softmax is logsumexp(x) - x_t, its gradient
    # p - onehot(t); both cancel when the target's logit dominates.
    onehot = F.one_hot(torch.where(keep, t64, 0), c).movedim(-1, 1).double()
    terms = softmax_ce_magnitude(x64.detach(), onehot) * pixel_weight.abs()
    count, total = keep.sum(), pixel_weight.abs().sum()
    mag = reduce_weighted(terms, kwargs["reduction"], count, total)
    denominator = {"mean": count, "weighted_mean": total}.get(kwargs["reduction"], 1)
    p, cond = activated(x64.detach(), "softmax")
    grad_mag = (p * cond + onehot) * (g.double().abs() * pixel_weight.abs()
                                      / denominator).unsqueeze(1)
    if computed:  # a float32 map may differ from the reference's by one float32 rounding
        mag = mag * max(1.0, 2.0 ** -22 / RTOL[dtype])
        grad_mag = grad_mag * max(1.0, 2.0 ** -22 / RTOL[dtype])
    assert_close(loss, ref.detach(), mag, "loss")
    assert_close(grad, ref_grad, torch.maximum(grad_mag, gradient_magnitude(ref_grad)),
                 "gradient")


# --------------------------------------------------------------------------
# 4. The distance transforms and weight maps.

def check_two_nearest(labels, d1, d2, l1=None, l2=None, sampling=None):
    """d1, d2 (and the ids l1, l2) of one NumPy instance map against the brute
    force: bit for bit at unit spacing, to 1e-12 with spacing; the ids at their
    reported distances, distinct, 0 exactly where there is no such instance."""
    event("compared with the brute force")
    ids, squared = brute_force_squared(labels, sampling)
    distances = np.sqrt(squared)
    e1, e2 = two_nearest_from(distances, labels.shape)
    exact = sampling is None or all(s == 1.0 for s in sampling)
    for name, got, want in (("d1", d1, e1), ("d2", d2, e2)):
        assert got.shape == want.shape and got.dtype == np.float64, name
        assert np.array_equal(np.isinf(got), np.isinf(want)), name
        if exact:
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=0,
                                       err_msg=name)
    if l1 is None:
        return
    assert l1.dtype == labels.dtype and l2.dtype == labels.dtype
    for name, which, d in (("l1", l1, d1), ("l2", l2, d2)):
        np.testing.assert_allclose(distance_of_ids(distances, ids, which), d,
                                   rtol=0 if exact else 1e-12, atol=0, err_msg=name)
        np.testing.assert_array_equal(which == 0, np.isinf(d), err_msg=name)
    both = (l1 != 0) & (l2 != 0)
    assert not np.any(l1[both] == l2[both]), "l1 == l2"


MISUSE_LABELS = ["float", "bool", "ndim"]


def draw_label_batch(data, rng):
    """(torch labels [N, *spatial] in a drawn layout, the same as NumPy, the
    number of spatial dims, expected error names)."""
    expect = set()
    n_spatial = data.draw(st.integers(2, 3), label="spatial dims")
    n = data.draw(st.integers(0, 3) if data.draw(st.integers(0, 7)) == 0 else st.integers(1, 3),
                  label="N")
    spatial = data.draw(sizes(n_spatial, 9 if n_spatial == 2 else 4), label="spatial")
    index = data.draw(st.integers(0, len(TORCH_INT_DTYPES) - 1), label="dtype")
    labels = np.zeros((n,) + spatial, NP_INT_DTYPES[index])
    for i in range(n):
        labels[i] = instance_map(data, spatial, NP_INT_DTYPES[index], rng)
    tensor = layout(data, torch.from_numpy(labels), label="labels layout")
    labels = tensor.contiguous().numpy()
    misuse = rarely(data, "misuse?", 10) and data.draw(st.sampled_from(MISUSE_LABELS),
                                                       label="misuse")
    if misuse == "float":
        tensor = tensor.to(data.draw(st.sampled_from(FLOAT_DTYPES)))
        expect.add("labels")
    elif misuse == "bool":
        tensor = tensor != 0
        expect.add("labels")
    elif misuse == "ndim":
        tensor = tensor.flatten(0, -2) if data.draw(st.booleans()) \
            else tensor[None, None]  # 2-D or 5-D / 6-D
        expect.add("labels")
    return tensor, labels, n_spatial, expect


@fuzz(1.0)
@given(data=st.data())
def test_two_nearest_distances_torch(data):
    """segloss.two_nearest_distances on label batches against the brute force."""
    rng = rng_of(data)
    tensor, labels, n_spatial, expect = draw_label_batch(data, rng)
    sampling = draw_sampling(data, n_spatial)
    if not sampling_valid(sampling, n_spatial):
        expect.add("sampling")
    return_labels = data.draw(st.booleans(), label="return_labels")
    note(f"labels={tensor!r}\nsampling={sampling!r}")
    if expect:
        assert_error_names(lambda: segloss.two_nearest_distances(tensor, sampling), expect)
        return
    out = segloss.two_nearest_distances(tensor, sampling, return_labels=return_labels)
    assert len(out) == (4 if return_labels else 2)
    assert all(t.shape == tensor.shape for t in out)
    assert out[0].dtype == out[1].dtype == torch.float64
    spacing = spacing_list(sampling, n_spatial)
    for i, image in enumerate(labels):
        got = [t[i].numpy() for t in out]
        check_two_nearest(image, *got, sampling=spacing)


def np_pixel_weights(data, rng, shape):
    values = rng.uniform(0.0, 3.0, shape)
    inject(data, values, [0.0, -1.0, 1e-30], label="pixel weight specials")
    return values


def draw_weight_map_options(data, n_spatial, expect):
    """w0, sigma, sampling and border_everywhere of a weight map, now and then
    invalid (their names added to `expect`)."""
    kwargs = dict(w0=data.draw(st.floats(-5.0, 20.0), label="w0"),
                  sigma=data.draw(st.floats(0.3, 10.0), label="sigma"),
                  sampling=draw_sampling(data, n_spatial),
                  border_everywhere=data.draw(st.booleans(), label="border_everywhere"))
    if not sampling_valid(kwargs["sampling"], n_spatial):
        expect.add("sampling")
    bad = rarely(data, "bad w0 / sigma?") and data.draw(st.sampled_from(["w0", "sigma"]),
                                                        label="bad w0 / sigma")
    if bad:
        kwargs[bad] = data.draw(st.sampled_from([float("nan"), float("inf")] +
                                                ([0.0, -1.0] if bad == "sigma" else [])))
        expect.add(bad)
    return kwargs


@fuzz(1.0)
@given(data=st.data())
def test_unet_weight_map_torch(data):
    """segloss.unet_weight_map on label batches against the U-Net formula on
    brute-force distances (float64, returned as float32)."""
    rng = rng_of(data)
    tensor, labels, n_spatial, expect = draw_label_batch(data, rng)
    kwargs = draw_weight_map_options(data, n_spatial, expect)
    pixel = None
    if rarely(data, "pixel weights?", 4):
        pixel = np_pixel_weights(data, rng, labels.shape)
        kwargs["class_weights"] = layout(data, torch.from_numpy(pixel).to(
            data.draw(st.sampled_from(FLOAT_DTYPES), label="pixel dtype")), label="pixel layout")
        pixel = kwargs["class_weights"].double().numpy()
        if rarely(data, "pixel shape wrong?"):
            kwargs["class_weights"] = torch.ones(tuple(tensor.shape) + (1,))
            expect.add("pixel_weights")
    else:
        kwargs["class_weights"] = draw_class_weights(data)
        if not class_weights_valid(kwargs["class_weights"]):
            expect.add("class_weights")
    note(f"labels={tensor!r}\nkwargs={kwargs!r}")
    if expect:
        assert_error_names(lambda: segloss.unet_weight_map(tensor, **kwargs), expect)
        return
    got = segloss.unet_weight_map(tensor, **kwargs)
    assert got.dtype == torch.float32 and got.shape == tensor.shape
    want, magnitude = reference_weight_maps(
        labels, kwargs["w0"], kwargs["sigma"],
        None if pixel is not None else kwargs["class_weights"],
        spacing_list(kwargs["sampling"], n_spatial), pixel=pixel,
        border_everywhere=kwargs["border_everywhere"])
    assert_close(got, torch.from_numpy(want), torch.from_numpy(magnitude), "weight map")


def draw_np_labels(data, rng):
    """(NumPy instance map in a drawn layout, its number of dims, expected
    error names): 2D or 3D, now and then a float, bool, 1-D or 4-D array."""
    expect = set()
    ndim = data.draw(st.integers(2, 3), label="ndim")
    shape = data.draw(sizes(ndim, 12 if ndim == 2 else 5), label="shape")
    dtype = data.draw(st.sampled_from(NP_INT_DTYPES), label="dtype")
    labels = np_layout(data, instance_map(data, shape, dtype, rng), label="labels layout")
    misuse = rarely(data, "misuse?", 10) and data.draw(st.sampled_from(MISUSE_LABELS),
                                                       label="misuse")
    if misuse == "float":
        labels = labels.astype(np.float32)
        expect.add("labels")
    elif misuse == "bool":
        labels = labels != 0
        expect.add("labels")
    elif misuse == "ndim":
        labels = labels[0] if ndim == 2 and shape[0] else labels[None, None][..., :1]
        expect.add("labels")
    return labels, ndim, expect


@fuzz(1.0)
@given(data=st.data())
def test_two_nearest_distances_numpy(data):
    """segloss.numpy.two_nearest_distances against the brute force, on every
    integer dtype and array layout; the input left untouched."""
    rng = rng_of(data)
    labels, ndim, expect = draw_np_labels(data, rng)
    sampling = draw_sampling(data, ndim)
    if not sampling_valid(sampling, ndim):
        expect.add("sampling")
    threads = data.draw(st.sampled_from([1, 2, 3]), label="threads")
    if rarely(data, "threads=0?"):
        threads = 0
        expect.add("threads")
    note(f"labels={labels!r}\nsampling={sampling!r}\nthreads={threads}")
    before = labels.copy()
    if expect:
        assert_error_names(lambda: snp.two_nearest_distances(labels, sampling, threads=threads),
                           expect)
        return
    out = snp.two_nearest_distances(labels, sampling, return_labels=True, threads=threads)
    np.testing.assert_array_equal(labels, before)
    assert all(a.flags.c_contiguous for a in out)
    check_two_nearest(np.ascontiguousarray(labels), *out, sampling=spacing_list(sampling, ndim))
    pair = snp.two_nearest_distances(labels, sampling, threads=threads)
    assert len(pair) == 2


@fuzz(1.0)
@given(data=st.data())
def test_unet_weight_map_numpy(data):
    """segloss.numpy.unet_weight_map against the U-Net formula on brute-force
    distances."""
    rng = rng_of(data)
    labels, ndim, expect = draw_np_labels(data, rng)
    kwargs = draw_weight_map_options(data, ndim, expect)
    kwargs["threads"] = data.draw(st.sampled_from([1, 1, 2, 3]), label="threads")
    pixel = None
    if rarely(data, "pixel weights?", 4):
        pixel = np_pixel_weights(data, rng, labels.shape)
        pixel_dtype = data.draw(st.sampled_from([np.float64, np.float32, np.float16, np.int32,
                                                 np.uint8, np.bool_]), label="pixel dtype")
        with np.errstate(invalid="ignore"):
            pixel = pixel.astype(pixel_dtype)
        if rarely(data, "pixel shape wrong?"):
            pixel = np.ones(labels.shape[:-1] + (labels.shape[-1] + 1,), pixel.dtype)
            expect.add("class_weights")
        kwargs["class_weights"] = np_layout(data, pixel, label="pixel layout")
    else:
        kwargs["class_weights"] = draw_class_weights(data)
        if not class_weights_valid(kwargs["class_weights"]):
            expect.add("class_weights")
    note(f"labels={labels!r}\nkwargs={kwargs!r}")
    if expect:
        assert_error_names(lambda: snp.unet_weight_map(labels, **kwargs), expect)
        return
    got = snp.unet_weight_map(labels, **kwargs)
    assert got.dtype == np.float32 and got.shape == labels.shape
    want, magnitude = reference_weight_maps(
        np.ascontiguousarray(labels)[None], kwargs["w0"], kwargs["sigma"],
        None if pixel is not None else kwargs["class_weights"],
        spacing_list(kwargs["sampling"], ndim),
        pixel=None if pixel is None else pixel.astype(np.float64)[None],
        border_everywhere=kwargs["border_everywhere"])
    assert_close(torch.from_numpy(got), torch.from_numpy(want[0]),
                 torch.from_numpy(magnitude[0]), "weight map")


EDT_DTYPES = [np.bool_, np.uint8, np.int8, np.int64, np.uint64, np.float32, np.float64]


@fuzz(1.5)
@given(data=st.data())
def test_distance_transform_edt_numpy(data):
    """segloss.numpy.distance_transform_edt against scipy.ndimage's (bit for bit
    at unit spacing) and the brute force (distance to the nearest zero)."""
    rng = rng_of(data)
    ndim = data.draw(st.integers(0, 4), label="ndim")
    shape = data.draw(sizes(ndim, {0: 1, 1: 30, 2: 10, 3: 5, 4: 3}[ndim]), label="shape")
    dtype = data.draw(st.sampled_from(EDT_DTYPES), label="dtype")
    density = data.draw(st.sampled_from([0.5, 0.9, 1.0, 0.0, 0.98]), label="nonzero density")
    values = np.where(rng.random(shape) < density, rng.uniform(-3, 3, shape), 0.0)
    if np.issubdtype(dtype, np.floating):
        inject(data, values, [float("nan"), float("inf"), -float("inf"), 1e-30],
               label="specials")
    with np.errstate(invalid="ignore"):
        image = np.where(values != 0, values if dtype != np.bool_ else 1, 0).astype(dtype) \
            if np.issubdtype(dtype, np.floating) else (values != 0).astype(dtype) * (
                1 if dtype == np.bool_ else rng.integers(1, 100, shape).astype(dtype))
    image = np_layout(data, np.asarray(image), label="layout")
    axes = max(ndim, 1)
    sampling = draw_sampling(data, axes)
    threads = data.draw(st.sampled_from([1, 1, 2, 3]), label="threads")
    note(f"image={image!r}\nsampling={sampling!r}")
    before = image.copy()
    try:
        expected = ndimage.distance_transform_edt(image, sampling=sampling)
    except ERRORS:
        expected = None
    if expected is None or not sampling_valid(sampling, axes):
        assert_error_names(lambda: snp.distance_transform_edt(image, sampling, threads=threads),
                           {"sampling"})
        return
    event("compared with SciPy")
    got = snp.distance_transform_edt(image, sampling, threads=threads)
    np.testing.assert_array_equal(image, before)
    assert got.dtype == np.float64 and got.shape == expected.shape
    spacing = spacing_list(sampling, axes)
    exact = spacing is None or all(s == 1.0 for s in spacing)
    if exact:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    flat = np.atleast_1d(np.ascontiguousarray(image))
    zeros = flat == 0
    if zeros.any():  # the brute force: distance to the nearest zero
        _, squared = brute_force_squared(zeros.astype(np.int64), spacing)
        np.testing.assert_allclose(got, np.sqrt(squared[0]), rtol=0 if exact else 1e-12, atol=0)


# --------------------------------------------------------------------------
# focal_loss and balanced_bce_with_logits (the pointwise family's rows and the
# softmax focal loss).

def _monai_reduce(loss, reduction, counted=None):
    """MONAI FocalLoss's reductions of an (N, C, *spatial) float64 loss
    (counted: the elements that count, broadcast to the loss)."""
    if reduction == "none":
        return loss
    dims = list(range(2, loss.dim()))
    if counted is None:
        return loss.mean() if reduction == "mean" else loss.mean(dims).sum()
    if reduction == "mean":
        return loss.sum() / counted.sum().clamp(min=torch.finfo(torch.float64).eps)
    per = counted.expand(loss.shape).sum(dims, keepdim=True)
    return (loss.sum(dims, keepdim=True) / per.clamp(min=torch.finfo(torch.float64).eps)).sum()


@fuzz(1.0)
@given(data=st.data())
def test_focal_loss(data):
    """segloss.focal_loss, sigmoid and softmax, against MONAI's formulas in
    float64 written here (gradients by autograd of a form whose derivative is
    finite: exp(gamma log sigmoid(z))); bad gamma / alpha / shapes name the
    argument and segloss.focal_loss."""
    rng = rng_of(data)
    activation = data.draw(st.sampled_from(["sigmoid", "softmax"]), label="activation")
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES), label="dtype")
    spatial = data.draw(sizes(data.draw(st.integers(1, 3), label="spatial dims"), 5),
                        label="spatial")
    n = data.draw(st.integers(0 if rarely(data, "empty batch?") else 1, 3), label="N")
    c = data.draw(st.integers(1 if activation == "sigmoid" else 2, 4), label="C")
    shape = (n, c) + spatial
    gamma = data.draw(st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]),
                                st.floats(0.0, 6.0)), label="gamma")
    include_background = data.draw(st.booleans(), label="include_background")
    kept = c - 1 if (not include_background and c > 1) else c
    alpha_kind = data.draw(st.sampled_from(["none", "scalar", "list"]), label="alpha kind")
    alpha = None if alpha_kind == "none" else (
        data.draw(st.floats(0.0, 1.0), label="alpha") if alpha_kind == "scalar"
        else [float(a) for a in rng.uniform(0, 1, c)])  # one per input channel
    reduction = data.draw(st.sampled_from(["none", "mean", "sum"]), label="reduction")
    expect = set()
    if rarely(data, "bad gamma?"):
        gamma, _ = -data.draw(st.floats(0.01, 3.0), label="negative gamma"), expect.add("gamma")
    if rarely(data, "bad alpha?"):
        alpha = 1.0 + data.draw(st.floats(0.01, 3.0), label="alpha > 1")
        expect.add("alpha")

    x = normal_logits(data, rng, shape, [1.0, 3.0, 30.0])
    inject(data, x, [float("nan"), 1e4, -1e4, 0.0], max_count=2, label="x specials")
    x = layout(data, torch.from_numpy(x).to(dtype), expand=False, label="x layout")
    ignore_index = None
    if activation == "sigmoid":
        y = torch.from_numpy(soft_labels(rng, shape) if data.draw(st.booleans(), label="soft?")
                             else (rng.random(shape) < 0.4).astype(np.float64)).to(dtype)
        if rarely(data, "target shape wrong?", 10):
            y, _ = y[:, :1].expand(n, c + 1, *spatial).contiguous(), expect.add("target")
    else:
        labels = rng.integers(0, c, (n, 1) + spatial)
        if data.draw(st.booleans(), label="ignore_index?"):
            ignore_index = c + 2
            labels = np.where(rng.random(labels.shape) < 0.2, ignore_index, labels)
        y = torch.from_numpy(labels).to(data.draw(st.sampled_from(CLASS_DTYPES),
                                                  label="label dtype"))
        if data.draw(st.booleans(), label="labels without the channel dim?"):
            y = y[:, 0]
    note(f"x={x!r}\ny={y!r}\ngamma={gamma} alpha={alpha} activation={activation} "
         f"include_background={include_background} reduction={reduction}")
    call = lambda v: segloss.focal_loss(v, y, gamma, alpha, activation,  # noqa: E731
                                        include_background, None, ignore_index, None,
                                        reduction)
    if expect:
        assert_error_names(lambda: call(x), expect, "segloss.focal_loss")
        return
    xr = x.detach().requires_grad_()
    loss = call(xr)
    assert loss.dtype == dtype
    g = (torch.from_numpy(rng.uniform(0.5, 1.5, tuple(loss.shape))).to(dtype)
         if reduction == "none" else torch.tensor(1.0, dtype=dtype))
    (grad,) = torch.autograd.grad(loss, xr, g)

    x64 = x.detach().double().requires_grad_()
    xs = x64 if include_background or c == 1 else x64[:, 1:]
    if activation == "sigmoid":
        t = y.double() if include_background or c == 1 else y.double()[:, 1:]
        z = xs * (1 - 2 * t)
        bce = F.binary_cross_entropy_with_logits(xs, t, reduction="none")
        m = torch.exp(gamma * F.logsigmoid(z)) if gamma != 0 else torch.ones_like(z)
        terms = m * bce
        # The float32 math's error scale: the terms B is computed from, and
        # gamma log sigmoid(z), the argument of M's exp.
        b_size = ((1 - t) * xs.detach()).abs().add(F.logsigmoid(xs.detach()).abs())
        scale = m.detach() * b_size * (1 + gamma * F.logsigmoid(z.detach()).abs())
        # M or B below the computing type's smallest normal (float32 for the
        # half types) is a subnormal, off by up to one of its spacings, which
        # the other multiplies.
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        spacing = torch.finfo(compute).smallest_normal * torch.finfo(compute).eps
        scale = scale + spacing * (1 + b_size) / RTOL[dtype]
        if isinstance(alpha, list):
            a = torch.tensor(alpha[c - kept:], dtype=torch.float64).view(
                [1, kept] + [1] * len(spatial))
            terms = torch.where(t == 1, a, torch.ones_like(a)) * terms
        elif alpha is not None:
            terms = (alpha * t + (1 - alpha) * (1 - t)) * terms
        counted = None
    else:
        lab = y.long().view((n, 1) + spatial)
        keep = torch.ones_like(lab, dtype=torch.bool) if ignore_index is None \
            else lab != ignore_index
        onehot = F.one_hot(torch.where(keep, lab, 0)[:, 0], c).movedim(-1, 1).double()
        onehot = onehot * keep
        if not (include_background or c == 1):
            onehot = onehot[:, 1:]
        # log p_c = -log(1 + sum_{k != c} exp(x_k - x_c)): accurate also where
        # p_c is within an ulp of 1 (x - logsumexp(x) rounds to 0 there).
        eye = torch.eye(kept, dtype=torch.bool).view([kept, kept] + [1] * len(spatial))
        others = torch.stack([torch.logsumexp(xs.masked_fill(eye[k], -math.inf), 1)
                              for k in range(kept)], 1)
        log_p = -torch.logaddexp(torch.zeros_like(xs), others - xs)
        terms = -(-torch.expm1(log_p)) ** gamma * log_p * onehot
        terms = torch.where(onehot == 0, torch.zeros_like(terms), terms)
        # Error scale: log p from the logits (max |x|), and gamma log(1 - p).
        one_minus_p = -torch.expm1(log_p.detach())
        scale = onehot * one_minus_p ** gamma \
            * (log_p.detach().abs() + xs.detach().abs().amax(1, keepdim=True)) \
            * (1 + gamma * torch.log(one_minus_p).abs().nan_to_num(posinf=0.0))
        # (0 off the target, as its term: a NaN logit of a pixel whose target
        # is dropped or ignored makes no error.)
        scale = torch.where(onehot == 0, 0.0, scale)
        factors = None
        if isinstance(alpha, list):
            factors = alpha[c - kept:]
        elif alpha is not None and (include_background or c == 1):
            factors = [1 - alpha] + [alpha] * (kept - 1)
        if factors is not None:
            terms = terms * torch.tensor(factors, dtype=torch.float64).view(
                [1, kept] + [1] * len(spatial))
        counted = None if ignore_index is None else keep.double()
    expected = _monai_reduce(terms, reduction, counted)
    magnitude = _monai_reduce(scale, reduction, counted)
    if activation == "softmax" and reduction == "none":
        magnitude = scale * 0  # the reference's zeros off the target channel are exact
        magnitude = torch.where(onehot.bool(), scale, magnitude)
    assert_close(loss, expected.detach(), magnitude.detach(), "loss")
    if x64.numel() and expected.requires_grad:
        (ref_grad,) = torch.autograd.grad(expected, x64, g.double())
        # Where a pixel's logits are not all finite the softmax gradient is NaN
        # on every channel (also at ignored pixels, as F.cross_entropy's).
        finite_x = torch.isfinite(x.detach())
        if activation == "softmax":
            finite_x = finite_x.all(1, keepdim=True).expand(x.shape)
        finite = torch.isfinite(ref_grad) & finite_x
        # The size of the terms each gradient element is computed from (float32
        # cancels where sigmoid(x) or p_t nears 1, as PyTorch's losses do):
        # w, the reduction's weight of each loss element, times the terms.
        ones = torch.ones_like(terms, requires_grad=True)
        (w,) = torch.autograd.grad(_monai_reduce(ones * 1.0, reduction, counted), ones,
                                   g.double())
        w = w.abs()
        if activation == "sigmoid":
            z64, p64 = z.detach(), torch.sigmoid(xs.detach())
            m64 = torch.exp(gamma * F.logsigmoid(z64))
            b_scale = ((1 - t) * xs.detach()).abs() + F.logsigmoid(xs.detach()).abs()
            kept_scale = w * (m64 * (p64 + t) + gamma * m64 * torch.sigmoid(-z64)
                              * (1 - 2 * t).abs() * b_scale) \
                * (1 + gamma * F.logsigmoid(z64).abs())
        else:
            kept_scale = ((w * onehot).sum(1, keepdim=True) * (1 + gamma)).expand(terms.shape)
        grad_scale = torch.zeros(x.shape, dtype=torch.float64)
        grad_scale[:, c - kept:] = kept_scale
        grad_scale = torch.maximum(grad_scale, gradient_magnitude(ref_grad))
        assert_close(grad[finite], ref_grad[finite], grad_scale[finite], "gradient")
        assert bool(torch.isfinite(grad[finite_x]).all()) or not bool(
            torch.isfinite(expected).all()), "non-finite gradient at a finite logit"


@fuzz(0.6)
@given(data=st.data())
def test_balanced_bce_with_logits(data):
    """segloss.balanced_bce_with_logits against its float64 formula, beta from
    the (rounded) target, gradients by autograd."""
    rng = rng_of(data)
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES), label="dtype")
    ndim = data.draw(st.integers(1, 5), label="ndim")
    shape = data.draw(sizes(ndim, {1: 12, 2: 7, 3: 5, 4: 4, 5: 3}[ndim]), label="shape")
    per_image = data.draw(st.booleans(), label="per_image")
    reduction = data.draw(st.sampled_from(["none", "mean", "sum"]), label="reduction")
    x = normal_logits(data, rng, shape, [1.0, 3.0, 30.0])
    inject(data, x, [float("nan"), 1e4, -1e4], max_count=2, label="x specials")
    x = layout(data, torch.from_numpy(x).to(dtype), expand=False, label="x layout")
    y = torch.from_numpy(soft_labels(rng, shape)).to(dtype)
    if rarely(data, "target shape wrong?", 10):
        bad = y.unsqueeze(0).expand(2, *shape)
        assert_error_names(lambda: segloss.balanced_bce_with_logits(x, bad), {"target"},
                           "segloss.balanced_bce_with_logits")
        return
    xr = x.detach().requires_grad_()
    loss = segloss.balanced_bce_with_logits(xr, y, per_image, None, reduction)
    g = (torch.from_numpy(rng.uniform(0.5, 1.5, shape)).to(dtype) if reduction == "none"
         else torch.tensor(1.0, dtype=dtype))
    (grad,) = torch.autograd.grad(loss, xr, g)
    x64, y64 = x.detach().double().requires_grad_(), y.double()
    dims = list(range(1, ndim)) if per_image and ndim > 1 else list(range(ndim))
    # beta as the op reads it: from the target in float32 (float64), read so.
    beta_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    beta = (1 - y.to(beta_dtype).mean(dims, keepdim=True)).double()
    terms = -(beta * y64 * F.logsigmoid(x64) + (1 - beta) * (1 - y64) * F.logsigmoid(-x64))
    expected = {"none": terms, "mean": terms.mean(), "sum": terms.sum()}[reduction]
    magnitude = (beta.abs() * (x64.detach().abs() + 1)).expand(shape)
    magnitude = {"none": magnitude, "mean": magnitude.mean(), "sum": magnitude.sum()}[reduction]
    assert_close(loss, expected.detach(), magnitude, "loss")
    if x64.numel():
        (ref_grad,) = torch.autograd.grad(expected, x64, g.double())
        # The gradient (1 - beta)(1 - y) p - beta y (1 - p) cancels: its two terms' size.
        p = torch.sigmoid(x64.detach())
        terms = ((1 - beta) * (1 - y64) * p).abs() + (beta * y64 * (1 - p)).abs()
        scale = terms * g.double().abs() / (terms.numel() if reduction == "mean" else 1)
        assert_close(grad, ref_grad, torch.maximum(scale, gradient_magnitude(ref_grad)),
                     "gradient")


# --------------------------------------------------------------------------
# The boundary losses' distance maps and the losses over them.

def _other_class_distances(mask, spacing):
    """The brute force: every pixel's distance to the other class (float64),
    0 for a mask without both classes."""
    flat = np.atleast_1d(mask != 0)
    if flat.all() or not flat.any():
        return np.zeros(flat.shape)
    _, to_foreground = brute_force_squared(flat.astype(np.int64), spacing)
    _, to_background = brute_force_squared((~flat).astype(np.int64), spacing)
    return np.sqrt(np.where(flat, to_background[0], to_foreground[0]))


@fuzz(1.0)
@given(data=st.data())
def test_distance_maps(data):
    """signed / boundary distance maps, NumPy (float64) and torch (float32,
    batched), against the brute force and SciPy's formulas (bit for bit at
    unit spacing)."""
    rng = rng_of(data)
    ndim = data.draw(st.integers(1, 3), label="ndim")
    shape = data.draw(sizes(ndim, {1: 30, 2: 12, 3: 6}[ndim]), label="shape")
    density = data.draw(st.sampled_from([0.5, 0.1, 0.9, 0.0, 1.0, 0.98]), label="density")
    dtype = data.draw(st.sampled_from([np.bool_, np.uint8, np.int16, np.int32, np.int64]),
                      label="dtype")
    mask = (rng.random(shape) < density).astype(dtype)
    if dtype != np.bool_:
        mask = mask * rng.integers(1, 100, shape).astype(dtype)
    mask = np_layout(data, mask, label="layout")
    sampling = draw_sampling(data, ndim)
    kind = data.draw(st.sampled_from(["signed", "boundary"]), label="kind")
    fn = snp.signed_distance_map if kind == "signed" else snp.boundary_distance_map
    if not sampling_valid(sampling, ndim):
        assert_error_names(lambda: fn(mask, sampling), {"sampling"})
        return
    spacing = spacing_list(sampling, ndim)
    exact = spacing is None or all(v == 1.0 for v in spacing)
    got = fn(mask, sampling)
    distance = _other_class_distances(mask, spacing).reshape(np.shape(mask))
    fg = mask != 0
    expected = np.where(fg, -(distance - 1), distance) if kind == "signed" else distance
    if not fg.any() or fg.all():
        expected = np.zeros(np.shape(mask))
    if exact:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # The torch op: a batch of two (the mask and its complement), float32.
    batch = torch.from_numpy(np.stack([np.ascontiguousarray(fg), ~fg]))
    maps = torch.ops.segloss.distance_map(batch, kind, ndim, spacing)
    for image, m in zip(maps, (fg, ~fg)):
        d = _other_class_distances(m, spacing).reshape(m.shape).astype(np.float32)
        want = np.where(m, -(d - np.float32(1)), d) if kind == "signed" else d
        if not m.any() or m.all():
            want = np.zeros(m.shape, np.float32)
        if exact:
            np.testing.assert_array_equal(image.numpy(), want)
        else:
            np.testing.assert_allclose(image.numpy(), want, rtol=1e-6, atol=1e-6)


@fuzz(0.6)
@given(data=st.data())
def test_distance_losses(data):
    """boundary_loss and hausdorff_dt_loss against their float64 formulas over
    the float32 maps (as MONAI rounds them), any activation, label or dense
    targets, gradients by autograd."""
    rng = rng_of(data)
    spatial_dims = data.draw(st.sampled_from([2, 3]), label="spatial dims")
    n = data.draw(st.integers(1, 3), label="N")
    c = data.draw(st.integers(1, 3), label="C")
    spatial = data.draw(sizes(spatial_dims, {2: 9, 3: 5}[spatial_dims], zero=False),
                        label="spatial")
    shape = (n, c) + tuple(spatial)
    activation = data.draw(st.sampled_from(["sigmoid", "none"] + (["softmax"] if c > 1 else [])),
                           label="activation")
    include_background = data.draw(st.booleans(), label="include_background")
    batch = data.draw(st.booleans(), label="batch")
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    loss_name = data.draw(st.sampled_from(["boundary", "hausdorff"]), label="loss")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    labels = torch.from_numpy(rng.integers(0, max(c, 2), (n,) + tuple(spatial)))
    if activation == "none":
        x = torch.from_numpy(rng.uniform(0, 1, shape)).to(dtype)
    else:
        x = torch.from_numpy(rng.normal(0, 3, shape)).to(dtype)
    dense = data.draw(st.booleans(), label="dense target")
    onehot = (labels.unsqueeze(1) == torch.arange(c).view(1, c, *[1] * spatial_dims)).double()
    if c == 1:
        onehot = (labels.unsqueeze(1) == 1).double()
    target = onehot.to(dtype) if dense else labels
    alpha = data.draw(st.sampled_from([1.0, 2.0, 2.5]), label="alpha")
    kwargs = dict(activation=activation, include_background=include_background, batch=batch,
                  reduction=reduction)
    xr = x.clone().requires_grad_()
    if loss_name == "boundary":
        loss = segloss.boundary_loss(xr, target, **kwargs)
    else:
        loss = segloss.hausdorff_dt_loss(xr, target, alpha, **kwargs)
    # The float64 formula.
    x64 = x.double().requires_grad_()
    p = {"sigmoid": torch.sigmoid, "softmax": lambda v: torch.softmax(v, 1),
         "none": lambda v: v}[activation](x64)
    g = onehot
    if not include_background and c > 1:
        p, g = p[:, 1:], g[:, 1:]
    masks = g > 0.5
    kind = "signed" if loss_name == "boundary" else "boundary"
    target_map = torch.ops.segloss.distance_map(masks, kind, spatial_dims, None).double()
    dims = list(range(2, x.dim()))
    if loss_name == "boundary":
        per = (p * target_map).mean(dims)
        per = per.mean(0) if batch else per
    else:
        pred_map = torch.ops.segloss.distance_map(p.detach() > 0.5, "boundary", spatial_dims,
                                                  None).double()
        terms = (p - g) ** 2 * (pred_map ** alpha + target_map ** alpha)
        per = terms.mean(([0] if batch else []) + dims)
    expected = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    scale = float(expected.detach().abs().max()) + 1.0 if expected.numel() else 1.0
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=tol, atol=tol * scale)
    if expected.numel():
        w = torch.from_numpy(rng.uniform(0.5, 1.5, tuple(expected.shape)))
        (grad,) = torch.autograd.grad(loss, xr, w.to(loss.dtype))
        (ref,) = torch.autograd.grad(expected, x64, w)
        gscale = float(ref.abs().max()) + 1.0 if ref.numel() else 1.0
        torch.testing.assert_close(grad.double(), ref, rtol=tol, atol=tol * gscale)
