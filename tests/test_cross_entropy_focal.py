"""gamma= (the softmax focal loss) on the private op segloss::_weighted_cross_entropy
and its backward, which a softmax focal_loss will call:

    loss = -m c_t (1 - p_t)^gamma log p_t

per pixel (m the weight map, c the class weights, t the class index), with the
op's reductions. Checked against an independent float64 torch formula (values
and gradients, 2D and 3D, every reduction, ignore_index), against MONAI's
FocalLoss(use_softmax=True) (whose 'sum' averages over the spatial dims of
each (n, c) before summing: ours / (H W)), at logits where p_t rounds to 1
(finite gradients for every gamma, also 0 < gamma < 1), with gradcheck,
opcheck, TorchScript, torch.compile, half precision, each CPU instruction set,
and the argument errors. label_smoothing= on the same op is tested through
shape_aware_loss in test_label_smoothing.py; its opcheck and errors are here.
"""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

try:
    from monai.losses import FocalLoss as MonaiFocalLoss
except ImportError:  # MONAI is optional (absent on the GPU machines): its comparisons skip
    MonaiFocalLoss = None

import segloss  # noqa: F401  (loads the op library)
from helpers import (CPU_ISAS, assert_aot_eager_equals_eager, assert_matches,
                     run_python_with_cpu_isa)

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

op = torch.ops.segloss._weighted_cross_entropy
backward_op = torch.ops.segloss._weighted_cross_entropy_backward
GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
REDUCTIONS = ("none", "mean", "sum", "weighted_mean")
IGNORE = 255
SHAPES = {"2d": (2, 4, 9, 11), "3d": (2, 3, 4, 5, 6)}


def _data(shape, gen, dtype=torch.float64, scale=2.5, ignored=0.15, class_weights=True):
    """Logits, class indices (some ignore_index), a weight map, class weights."""
    pixel_shape = (shape[0],) + tuple(shape[2:])
    x = (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)
    t = torch.randint(0, shape[1], pixel_shape, generator=gen)
    t[torch.rand(pixel_shape, generator=gen) < ignored] = IGNORE
    m = (0.5 + 3 * torch.rand(pixel_shape, generator=gen, dtype=torch.float64)).to(dtype)
    c = (0.5 + 1.5 * torch.rand(shape[1], generator=gen, dtype=torch.float64)).to(dtype) \
        if class_weights else None
    return x, t, m, c


def focal_reference(x, t, m, c, gamma, reduction, ignore_index=IGNORE):
    """-m c_t (1 - p_t)^gamma log p_t in float64 torch ops; the op's
    reductions. log p_t = -log(1 + sum_{k != t} exp(x_k - x_t)) by logaddexp
    and 1 - p_t = -expm1(log p_t), accurate as p_t -> 1 (log_softmax rounds
    log p_t to 0 once 1 - p_t < 1e-16, where (1 - p_t)^gamma's gradient would
    be NaN for gamma < 1)."""
    counted = t != ignore_index
    safe_t = torch.where(counted, t, 0)
    x = x.double()
    x_t = x.gather(1, safe_t.unsqueeze(1))
    is_target = torch.arange(x.shape[1]).view(1, -1, *([1] * (x.dim() - 2))) == \
        safe_t.unsqueeze(1)
    others = torch.where(is_target, torch.full_like(x, -torch.inf), x - x_t)
    log_p = -torch.logaddexp(torch.zeros_like(x_t), torch.logsumexp(others, 1, keepdim=True))
    log_p = log_p.squeeze(1)
    nll = -log_p
    if gamma > 0:
        nll = (-torch.expm1(log_p)) ** gamma * nll
    coefficient = counted.double()
    if m is not None:
        coefficient = coefficient * m.double()
    if c is not None:
        coefficient = coefficient * c.double()[safe_t]
    per_pixel = torch.where(counted, nll * coefficient, torch.zeros_like(nll))
    if reduction == "none":
        return per_pixel
    if reduction == "sum":
        return per_pixel.sum()
    if reduction == "mean":
        return per_pixel.sum() / counted.sum()
    return per_pixel.sum() / coefficient.sum()


def _op_forward_backward(x, t, m, c, gamma, reduction, grad_output, label_smoothing=0.0):
    leaf = x.detach().clone().requires_grad_()
    loss, total_weight = op(leaf, t, m, c, IGNORE, reduction, gamma=gamma,
                            label_smoothing=label_smoothing)
    (grad,) = torch.autograd.grad(loss, leaf, grad_output)
    # The private backward called directly gives autograd's gradient.
    direct = backward_op(grad_output, x, t, m, c, IGNORE, reduction, total_weight, gamma=gamma,
                         label_smoothing=label_smoothing)
    assert torch.equal(direct, grad)
    return loss.detach(), grad


def _reference_forward_backward(x, t, m, c, gamma, reduction, grad_output):
    leaf = x.detach().double().requires_grad_()
    loss = focal_reference(leaf, t, m, c, gamma, reduction)
    (grad,) = torch.autograd.grad(loss, leaf, grad_output.double())
    return loss.detach(), grad


@pytest.mark.parametrize("dims", sorted(SHAPES))
@pytest.mark.parametrize("gamma", GAMMAS)
def test_matches_float64_formula(gamma, dims, gen, device):
    x, t, m, c = _data(SHAPES[dims], gen)
    for reduction in REDUCTIONS:
        shape = t.shape if reduction == "none" else ()
        g = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5
        for weights in ((m, c), (None, None)):
            loss, grad = _op_forward_backward(x.to(device), t.to(device),
                                              *(w if w is None else w.to(device)
                                                for w in weights),
                                              gamma, reduction, g.to(device))
            ref_loss, ref_grad = _reference_forward_backward(x, t, *weights, gamma, reduction, g)
            assert_matches(loss, ref_loss, msg=f"{reduction} loss")
            assert_matches(grad, ref_grad, msg=f"{reduction} grad")


def test_gamma_zero_is_the_plain_cross_entropy(gen, device):
    """gamma=0 runs the plain loss's code: the default's bits, and
    F.cross_entropy's values."""
    for dtype in (torch.float32, torch.float64):
        x, t, m, c = (v if v is None else v.to(device) for v in _data(SHAPES["2d"], gen, dtype))
        for reduction in REDUCTIONS:
            plain = op(x, t, m, c, IGNORE, reduction)
            explicit = op(x, t, m, c, IGNORE, reduction, gamma=0.0, label_smoothing=0.0)
            assert all(torch.equal(a, b) for a, b in zip(plain, explicit))
        got = op(x, t, None, c, IGNORE, "weighted_mean", gamma=0.0)[0]
        torch.testing.assert_close(got, F.cross_entropy(x, t, weight=c, ignore_index=IGNORE))


@pytest.mark.skipif(MonaiFocalLoss is None, reason="needs MONAI")
@pytest.mark.parametrize("dims", sorted(SHAPES))
@pytest.mark.parametrize("gamma", GAMMAS)
def test_matches_monai(gamma, dims, gen):
    """MONAI FocalLoss(use_softmax=True, to_onehot_y=True, reduction='sum')
    averages each (n, c)'s loss over the S spatial elements, then sums: our
    'sum' / S (the one-hot target is 0 off the true class). MONAI computes in
    float32 whatever the input: float32 logits, float32 tolerances."""
    shape = SHAPES[dims]
    x, t, _, c = _data(shape, gen, torch.float32, scale=2.0, ignored=0.0)
    pixels = math.prod(shape[2:])
    for weight in (None, c):
        xm = x.clone().requires_grad_()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            monai = MonaiFocalLoss(use_softmax=True, to_onehot_y=True, gamma=gamma,
                                   weight=weight, reduction="sum")(xm, t.unsqueeze(1))
        (monai_grad,) = torch.autograd.grad(monai, xm)
        loss, grad = _op_forward_backward(x, t, None, weight, gamma, "sum",
                                          torch.tensor(1.0 / pixels))
        torch.testing.assert_close(loss / pixels, monai.detach(), rtol=2e-6, atol=0)
        torch.testing.assert_close(grad, monai_grad, rtol=1e-4,
                                   atol=1e-5 * float(monai_grad.abs().max()))


def _large_logits(dtype, gaps):
    """One image of 3 classes, one pixel per gap: the target (class 1) leads
    the others by `gap` (p_t rounds to 1 for the large ones), then pixels
    where it trails by the gap (p_t -> 0) and an ignored one."""
    gaps = list(gaps)
    x = torch.zeros(1, 3, 1, 2 * len(gaps) + 1, dtype=torch.float64)
    for i, gap in enumerate(gaps):
        x[0, :, 0, i] = torch.tensor([1.0, 1.0 + gap, 1.0 - 0.5 * gap])
        x[0, :, 0, len(gaps) + i] = torch.tensor([0.5 * gap, 0.0, gap])
    x[0, :, 0, -1] = torch.tensor([1e4, -1e4, 0.0])
    t = torch.ones(1, 1, x.shape[-1], dtype=torch.int64)
    t[0, 0, -1] = IGNORE
    return x.to(dtype), t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("gamma", GAMMAS)
def test_large_logits_give_finite_gradients(gamma, dtype, device):
    # float32: exp(-gap) underflows past 104 (q = 0); float64 past 745.
    gaps = [1.0, 10.0, 17.0, 40.0, 80.0, 120.0, 300.0] + \
        ([800.0, 1e4] if dtype == torch.float64 else [])
    x, t = _large_logits(dtype, gaps)
    m = torch.full(t.shape, 1.5, dtype=dtype)
    for reduction in ("none", "sum"):
        g = torch.ones(t.shape if reduction == "none" else (), dtype=dtype)
        loss, grad = _op_forward_backward(x.to(device), t.to(device), m.to(device), None,
                                          gamma, reduction, g.to(device))
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), (loss, grad)
        # The reference where float64 can represent 1 - p_t (gaps below 745).
        keep = [i for i, gap in enumerate(gaps) if gap < 700]
        columns = keep + [len(gaps) + i for i in keep]
        xs, ts, ms = x[..., columns], t[..., columns], m[..., columns]
        gs = g[..., columns] if reduction == "none" else g
        ref_loss, ref_grad = _reference_forward_backward(xs, ts, ms, None, gamma, reduction, gs)
        got_loss, got_grad = _op_forward_backward(xs.to(device), ts.to(device), ms.to(device),
                                                  None, gamma, reduction, gs.to(device))
        assert_matches(got_loss, ref_loss, msg="loss")
        assert_matches(got_grad, ref_grad, msg="grad")
    # Where exp(-gap) underflows (q = 0) the loss and its gradient are 0.
    if gamma > 0:
        lead = [i for i, gap in enumerate(gaps) if gap >= (120 if dtype == torch.float32 else 800)]
        loss, grad = _op_forward_backward(x.to(device), t.to(device), m.to(device), None,
                                          gamma, "none", torch.ones(t.shape, dtype=dtype,
                                                                    device=device))
        assert (loss[..., lead] == 0).all() and (grad[..., lead] == 0).all()


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("dims", sorted(SHAPES))
def test_gradcheck(dims, gamma, gen):
    shape = {"2d": (2, 3, 3, 4), "3d": (1, 3, 2, 3, 3)}[dims]
    x, t, m, c = _data(shape, gen)
    x[0, :, 0, 0] = torch.tensor([0.0, 9.0, -3.0]).reshape((3,) + (1,) * (x.dim() - 4))
    t[(0,) + (0,) * (t.dim() - 1)] = 1  # a pixel with p_t near 1
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda v: op(v, t, m, c, IGNORE, reduction, gamma=gamma)[0],
            (x.clone().requires_grad_(),))


@pytest.mark.parametrize("gamma, label_smoothing", [(2.0, 0.0), (0.5, 0.0), (0.0, 0.3)],
                         ids=["gamma2", "gamma0.5", "smoothing"])
def test_opcheck(gamma, label_smoothing, gen, device):
    x, t, m, c = (v.to(device) for v in _data((2, 3, 5, 6), gen, torch.float32))
    kwargs = dict(gamma=gamma, label_smoothing=label_smoothing)
    for reduction in ("none", "weighted_mean"):
        args = (x.clone().requires_grad_(), t, m, c, IGNORE, reduction)
        torch.library.opcheck(op.default, args, kwargs)
        _, total_weight = op(*args, **kwargs)
        g = torch.rand(t.shape if reduction == "none" else (), generator=gen).to(device)
        torch.library.opcheck(backward_op.default, (g, x, t, m, c, IGNORE, reduction,
                                                    total_weight), kwargs)


@pytest.mark.parametrize("dims", sorted(SHAPES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_half_precision(gamma, dtype, dims, gen, device):
    """Computed in float32: only the results' own rounding."""
    x, t, m, c = _data(SHAPES[dims], gen, dtype)
    for reduction in ("none", "weighted_mean"):
        g = torch.rand(t.shape if reduction == "none" else (), generator=gen).to(dtype)
        loss, grad = _op_forward_backward(x.to(device), t.to(device), m.to(device),
                                          c.to(device), gamma, reduction, g.to(device))
        assert loss.dtype == dtype and grad.dtype == dtype
        ref_loss, ref_grad = _reference_forward_backward(x, t, m, c, gamma, reduction, g)
        assert_matches(loss, ref_loss, msg="loss")
        assert_matches(grad, ref_grad, msg="grad")


def test_autocast_computes_in_float32(gen):
    x, t, m, c = _data(SHAPES["2d"], gen, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = op(x.bfloat16(), t, m, c, IGNORE, "sum", gamma=2.0)[0]
    assert got.dtype == torch.float32
    expected = focal_reference(x.bfloat16().double(), t, m, c, 2.0, "sum")
    assert_matches(got, expected, msg="loss")


def test_torchscript_and_compile(gen):
    x, t, m, c = _data(SHAPES["2d"], gen, torch.float32)

    def focal(x: torch.Tensor, t: torch.Tensor, m: torch.Tensor, c: torch.Tensor):
        return torch.ops.segloss._weighted_cross_entropy(x, t, m, c, 255, "mean", gamma=2.0)[0]

    scripted = torch.jit.script(focal)
    assert torch.equal(scripted(x, t, m, c), focal(x, t, m, c))
    assert_aot_eager_equals_eager(lambda v, target: focal(v, target, m, c), x, t)


_ISA_CHILD = r"""
import sys, torch, segloss
cases = torch.load(sys.argv[1])
results = {}
for key, (x, t, m, c, gamma, smoothing, g) in cases.items():
    x = x.clone().requires_grad_()
    loss, _ = torch.ops.segloss._weighted_cross_entropy(x, t, m, c, 200, "none", gamma=gamma,
                                                        label_smoothing=smoothing)
    loss.backward(g)
    results[key] = (loss.detach(), x.grad)
torch.save(results, sys.argv[2])
"""


@pytest.mark.parametrize("isa", CPU_ISAS)
def test_each_cpu_instruction_set(isa, tmp_path, gen):
    """The focal and smoothed loops of every instruction-set build, on 1517
    pixels (no multiple of a vector width) and C = 3 and 70."""
    cases = {}
    for shape in [(2, 3, 37, 41), (1, 70, 37, 41)]:
        for dtype in (torch.float32, torch.float64):
            for gamma, smoothing in ((0.5, 0.0), (2.0, 0.0), (0.0, 0.2)):
                x, t, m, c = _data(shape, gen, dtype, scale=4.0, ignored=0.0)
                t[torch.rand(t.shape, generator=gen) < 0.2] = 200
                g = torch.rand(t.shape, generator=gen, dtype=dtype)
                cases[f"{shape}-{dtype}-{gamma}-{smoothing}"] = (x, t, m, c, gamma, smoothing, g)
    torch.save(cases, tmp_path / "cases.pt")
    run_python_with_cpu_isa(isa, _ISA_CHILD, str(tmp_path / "cases.pt"),
                            str(tmp_path / "results.pt"))
    results = torch.load(tmp_path / "results.pt")
    assert results.keys() == cases.keys()
    for key, (x, t, m, c, gamma, smoothing, g) in cases.items():
        loss, grad = results[key]
        x_ref = x.double().requires_grad_()
        if smoothing:
            counted = t != 200
            safe_t = torch.where(counted, t, 0)
            log_p = F.log_softmax(x_ref, dim=1)
            cd = c.double()
            nll = -log_p.gather(1, safe_t.unsqueeze(1)).squeeze(1) * cd[safe_t]
            smooth = -(log_p * cd.view(1, -1, *([1] * (x.dim() - 2)))).sum(1)
            expected = m.double() * ((1 - smoothing) * nll + smoothing / x.shape[1] * smooth)
            expected = torch.where(counted, expected, torch.zeros_like(expected))
        else:
            expected = focal_reference(x_ref, t, m, c, gamma, "none", ignore_index=200)
        expected.backward(g.double())
        assert_matches(loss, expected, msg=f"{isa} {key} loss")
        assert_matches(grad, x_ref.grad, msg=f"{isa} {key} grad")


@pytest.mark.parametrize("kwargs, match", [
    (dict(gamma=-0.5), r"gamma \(the focal exponent\) must be finite and >= 0, got -0.5"),
    (dict(gamma=float("nan")), r"gamma \(the focal exponent\) must be finite and >= 0"),
    (dict(gamma=float("inf")), r"gamma \(the focal exponent\) must be finite and >= 0"),
    (dict(label_smoothing=-0.1), r"label_smoothing must lie in \[0, 1\], got -0.1"),
    (dict(label_smoothing=1.5), r"label_smoothing must lie in \[0, 1\], got 1.5"),
    (dict(label_smoothing=float("nan")), r"label_smoothing must lie in \[0, 1\]"),
    (dict(gamma=2.0, label_smoothing=0.1),
     r"gamma \(the focal loss\) and label_smoothing cannot be combined, got gamma=2 and "
     r"label_smoothing=0.1"),
], ids=["gamma-negative", "gamma-nan", "gamma-inf", "smoothing-negative", "smoothing-above-1",
        "smoothing-nan", "both"])
def test_argument_errors(kwargs, match):
    x, t = torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64)
    message = "segloss.shape_aware_loss: " + match
    with pytest.raises(ValueError, match=message):
        op(x, t, None, None, -100, "mean", **kwargs)
    with pytest.raises(ValueError, match=message):
        backward_op(torch.tensor(1.0), x, t, None, None, -100, "mean", torch.tensor(16.0),
                    **kwargs)
    with pytest.raises(ValueError, match=message):  # the Meta kernel's checks
        op(x.to("meta"), t.to("meta"), None, None, -100, "mean", **kwargs)
