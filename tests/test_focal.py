"""segloss.focal_loss and segloss.balanced_bce_with_logits, the pointwise
family's new rows (and the softmax focal loss over the multi-class
cross-entropy kernel).

References: float64 torch formulas written here from the definitions
(F.binary_cross_entropy_with_logits, torch.sigmoid, log_softmax), whose
gradients come from torch autograd; MONAI's FocalLoss (which computes in
float32); F.binary_cross_entropy_with_logits and F.cross_entropy for
gamma = 0. Only the TorchScript and torch.compile tests compare segloss with
itself.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

try:
    from monai.losses import FocalLoss as MonaiFocalLoss
except ImportError:  # MONAI is optional (absent on the GPU machines)
    MonaiFocalLoss = None

try:
    from kornia.losses import binary_focal_loss_with_logits as kornia_binary_focal_loss
    from kornia.losses import focal_loss as kornia_focal_loss
except ImportError:  # kornia is optional (absent on the GPU machines)
    kornia_focal_loss = kornia_binary_focal_loss = None

import segloss
from helpers import assert_aot_eager_equals_eager, assert_matches, run_python

needs_monai = pytest.mark.skipif(MonaiFocalLoss is None, reason="needs MONAI")
needs_kornia = pytest.mark.skipif(kornia_focal_loss is None, reason="needs kornia")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
SHAPES = {"2d": (2, 3, 6, 7), "3d": (2, 2, 3, 4, 5)}


def _data(shape, gen, dtype=torch.float64, soft=False):
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype)
    if soft:
        y = torch.rand(shape, generator=gen, dtype=torch.float64)
    else:
        y = (torch.rand(shape, generator=gen, dtype=torch.float64) > 0.6).double()
    return x, y.to(dtype)


def _spatial(x):
    return list(range(2, x.dim()))


def sigmoid_focal_reference(x, y, gamma, alpha=None, class_weights=None, reduction="mean"):
    """MONAI's sigmoid focal loss from its definition, in float64."""
    x, y = x.double(), y.double()
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    loss = torch.sigmoid(x * (1 - 2 * y)) ** gamma * bce
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    if isinstance(alpha, (list, tuple)):
        a = torch.tensor(alpha, dtype=torch.float64).view(shape)
        loss = torch.where(y == 1, a, torch.ones_like(a)) * loss
    elif alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    if class_weights is not None:
        loss = loss * class_weights.double().view(shape)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.mean(_spatial(x)).sum()
    return loss.mean()


def _focal_forward_backward(fn, x, *args, **kwargs):
    xr = x.detach().clone().requires_grad_()
    loss = fn(xr, *args, **kwargs)
    g = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).view(loss.shape)
    (grad,) = torch.autograd.grad(loss, xr, g)
    return loss, grad


# --------------------------------------------------------------------------
# Sigmoid focal loss.

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha", [None, 0.25, "list"])
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("spatial", list(SHAPES))
def test_sigmoid_matches_float64_formula(spatial, gamma, alpha, reduction, gen):
    shape = SHAPES[spatial]
    x, y = _data(shape, gen, soft=(gamma == 2.0))
    a = [0.2, 0.7, 0.9][:shape[1]] if alpha == "list" else alpha
    loss, grad = _focal_forward_backward(segloss.focal_loss, x, y, gamma, a, reduction=reduction)
    ref_loss, ref_grad = _focal_forward_backward(sigmoid_focal_reference, x, y, gamma, a,
                                                 reduction=reduction)
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_sigmoid_low_precision_accumulates_in_float32(dtype, reduction, gen):
    x, y = _data((2, 2, 16, 16), gen, dtype)
    loss, grad = _focal_forward_backward(segloss.focal_loss, x, y, 2.0, 0.25,
                                         reduction=reduction)
    assert loss.dtype == grad.dtype == dtype
    ref_loss, ref_grad = _focal_forward_backward(sigmoid_focal_reference, x, y, 2.0, 0.25,
                                                 reduction=reduction)
    assert_matches(loss, ref_loss, dtype)
    assert_matches(grad, ref_grad.to(dtype), dtype)


@needs_monai
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [
    {}, {"alpha": 0.25}, {"alpha": [0.3, 0.6]}, {"include_background": False},
    {"include_background": False, "alpha": 0.75}, {"class_weights": [0.5, 2.0, 1.0]},
    {"gamma": 0.5}], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("spatial", list(SHAPES))
def test_sigmoid_matches_monai(spatial, options, reduction, gen):
    shape = (2, 3) + SHAPES[spatial][2:]
    x, y = _data(shape, gen)
    options = dict(options)
    gamma = options.pop("gamma", 2.0)
    if isinstance(options.get("alpha"), list):
        options["alpha"] = [0.5] + options["alpha"]  # one per input channel
    cw = options.pop("class_weights", None)
    monai_options = dict(options, weight=cw) if cw is not None else dict(options)
    if not options.get("include_background", True):  # MONAI's lists skip channel 0
        for key in ("alpha", "weight"):
            if isinstance(monai_options.get(key), list):
                monai_options[key] = monai_options[key][1:]
    xm = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = MonaiFocalLoss(gamma=gamma, reduction=reduction, **monai_options)(xm, y)
    (expected_grad,) = torch.autograd.grad(expected.sum(), xm)
    if cw is not None:
        options["class_weights"] = torch.tensor(cw)
    xs = x.clone().requires_grad_()
    loss = segloss.focal_loss(xs, y, gamma, **options, reduction=reduction)
    (grad,) = torch.autograd.grad(loss.sum(), xs)
    # MONAI computes in float32.
    torch.testing.assert_close(loss, expected.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


@needs_monai
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sigmoid_ignore_index_matches_monai_label_encoded(reduction, gen):
    x, y = _data((3, 1, 8, 9), gen)
    y[0, 0, 2:5, :] = 255
    y[2, 0, :, 1] = 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = MonaiFocalLoss(gamma=2.0, ignore_index=255, reduction=reduction)(x, y)
    loss = segloss.focal_loss(x, y, 2.0, ignore_index=255, reduction=reduction)
    torch.testing.assert_close(loss, expected.double(), rtol=1e-5, atol=1e-6)


def torchvision_sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss(reduction="none")'s formula (its
    PyPI wheel is a CUDA build whose ops do not load beside the CPU torch)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


@pytest.mark.parametrize("alpha", [0.25, -1.0])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_matches_torchvision_for_binary_targets(gamma, alpha, gen):
    x, y = _data((2, 3, 6, 7), gen)
    expected = torchvision_sigmoid_focal_loss(x, y, alpha, gamma)
    a = alpha if alpha >= 0 else None  # torchvision's alpha < 0: no weighting
    assert_matches(segloss.focal_loss(x, y, gamma, a, reduction="none"), expected)
    # torchvision's "mean" is ours; its "sum" is the plain sum.
    assert_matches(segloss.focal_loss(x, y, gamma, a), expected.mean())
    assert_matches(segloss.focal_loss(x, y, gamma, a, reduction="none").sum(), expected.sum())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sigmoid_gamma_0_is_bce(reduction, gen):
    x, y = _data((2, 3, 5, 6), gen)
    loss = segloss.focal_loss(x, y, 0.0, reduction="none")
    assert_matches(loss, F.binary_cross_entropy_with_logits(x, y, reduction="none"))


@pytest.mark.parametrize("gamma", GAMMAS)
def test_sigmoid_finite_gradients_where_p_t_is_0_or_1(gamma):
    # p_t rounds to exactly 0 or 1 in float64 (and float32): kornia's
    # (1 - p)^gamma gives NaN gradients there for 0 < gamma < 1.
    x = torch.tensor([[[-1e4, -60.0, 60.0, 1e4]]], dtype=torch.float64).expand(2, 2, 4)
    for y_value in (0.0, 1.0):
        y = torch.full_like(x, y_value)
        for dtype in (torch.float64, torch.float32):
            xr = x.to(dtype).clone().requires_grad_()
            loss = segloss.focal_loss(xr, y.to(dtype), gamma, 0.25, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xr)
            assert torch.isfinite(loss) and torch.isfinite(grad).all(), (gamma, y_value, dtype)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_sigmoid_infinite_logits(gamma):
    # A logit of +-inf on the right side of its target costs 0, on the wrong
    # side inf (MONAI's formula gives NaN for all four; PyTorch's BCE for two),
    # with finite gradients (the BCE's, scaled by M, where the focusing term's
    # sigmoid is 0).
    inf = float("inf")
    x = torch.tensor([[[inf, -inf, inf, -inf]]], dtype=torch.float64)
    y = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]], dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        xr = x.to(dtype).requires_grad_()
        loss = segloss.focal_loss(xr, y.to(dtype), gamma, reduction="none")
        assert loss.flatten().tolist() == [0.0, inf, inf, 0.0], (gamma, dtype)
        (grad,) = torch.autograd.grad(loss.sum(), xr)
        assert grad.flatten().tolist() == [0.0, -1.0, 1.0, 0.0], (gamma, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_binary_target_form_equals_general_form(dtype, gen):
    # The CPU loops take a cheaper form of the sigmoid focal loss in a block
    # whose targets are all 0 or 1; one soft target in the block selects the
    # general form. Both must give the same bits, also at +-inf and +-60.
    special = torch.tensor([float("inf"), -float("inf"), 60.0, -60.0, 0.0, -0.0],
                           dtype=torch.float64)
    x = torch.cat([special, special, torch.randn(500, generator=gen, dtype=torch.float64) * 4])
    y = torch.cat([torch.zeros(6), torch.ones(6),
                   (torch.rand(500, generator=gen) > 0.5).double()])
    x, y = x.to(dtype).view(1, 1, -1), y.to(dtype).view(1, 1, -1)
    soft_x = torch.cat([x, torch.tensor([[[0.3]]], dtype=dtype)], -1)
    soft_y = torch.cat([y, torch.tensor([[[0.5]]], dtype=dtype)], -1)
    def loss_and_grad(v, t, gamma, alpha):
        v = v.clone().requires_grad_()
        loss = segloss.focal_loss(v, t, gamma, alpha, reduction="none")
        return loss, torch.autograd.grad(loss.sum(), v)[0]

    for gamma, alpha in [(2.0, 0.25), (0.5, None), (0.0, [0.7])]:
        binary = loss_and_grad(x, y, gamma, alpha)
        general = loss_and_grad(soft_x, soft_y, gamma, alpha)
        for ours, theirs in zip(binary, general):
            torch.testing.assert_close(ours, theirs[..., :-1], rtol=0, atol=0, equal_nan=True)


def test_sigmoid_nan_logit_gives_nan():
    x = torch.tensor([[[0.5, float("nan")]]], dtype=torch.float64)
    y = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    loss = segloss.focal_loss(x, y, 2.0, reduction="none")
    assert torch.isfinite(loss[..., 0]).all() and torch.isnan(loss[..., 1]).all()


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25, [0.3, 0.8]])
def test_sigmoid_gradcheck(gamma, alpha, gen):
    x, y = _data((2, 2, 3, 4), gen, soft=True)
    torch.autograd.gradcheck(lambda v: segloss.focal_loss(v, y, gamma, alpha),
                             (x.clone().requires_grad_(),))
    torch.autograd.gradcheck(lambda v: segloss.focal_loss(v, y, gamma, alpha, reduction="none"),
                             (x.clone().requires_grad_(),))


def test_sigmoid_mask_and_non_contiguous(gen):
    x, y = _data((2, 3, 8, 10), gen)
    mask = torch.rand(2, 1, 8, 10, generator=gen) > 0.3
    xt, yt = x.transpose(2, 3), y.transpose(2, 3)  # non-contiguous
    loss = segloss.focal_loss(xt, yt, 2.0, mask=mask.transpose(2, 3))
    per_element = sigmoid_focal_reference(x, y, 2.0, reduction="none")
    m = mask.expand(x.shape).double()
    assert_matches(loss, (per_element * m).sum() / m.sum())


def test_empty_input():
    x = torch.zeros(0, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(0, 2, 4, 4, dtype=torch.float64)
    assert segloss.focal_loss(x, y, reduction="none").shape == x.shape
    loss = segloss.focal_loss(x, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.shape == x.shape


# --------------------------------------------------------------------------
# Softmax focal loss (class-index target, no one-hot).

def softmax_focal_reference(x, labels, gamma, alpha=None, include_background=True,
                            class_weights=None, reduction="mean"):
    """MONAI's softmax focal loss from its definition, in float64, with the
    one-hot target made here."""
    x = x.double()
    c = x.shape[1]
    onehot = F.one_hot(labels[:, 0].long(), c).movedim(-1, 1).double()
    if not include_background:  # per-class lists index the input's channels
        x, onehot = x[:, 1:], onehot[:, 1:]
        alpha = alpha[1:] if isinstance(alpha, (list, tuple)) else alpha
        class_weights = None if class_weights is None else class_weights[1:]
    log_p = torch.log_softmax(x, 1)
    loss = -(1 - log_p.exp()) ** gamma * log_p * onehot
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    if isinstance(alpha, (list, tuple)):
        loss = loss * torch.tensor(alpha, dtype=torch.float64).view(shape)
    elif alpha is not None and include_background:
        factors = [1 - alpha] + [alpha] * (x.shape[1] - 1)
        loss = loss * torch.tensor(factors, dtype=torch.float64).view(shape)
    if class_weights is not None:
        loss = loss * class_weights.double().view(shape)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.mean(_spatial(x)).sum()
    return loss.mean()


def _labels(shape, gen):
    n, c, *spatial = shape
    return torch.randint(0, c, (n, 1, *spatial), generator=gen)


@pytest.mark.parametrize("dtype,ignore_index", [
    (torch.uint8, 256), (torch.uint8, 257), (torch.int8, -254), (torch.int16, 65536),
    (torch.int32, 2**40), (torch.uint16, 70000), (torch.uint32, -1), (torch.uint64, 2**40)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_ignore_index_outside_the_label_dtype_matches_no_label(dtype, ignore_index,
                                                                      reduction, gen):
    # No label of that dtype can equal such an ignore_index (torch would
    # convert it to the dtype, 256 to 0 for uint8, and drop class 0's pixels).
    x = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64)
    labels = _labels(x.shape, gen)
    expected = softmax_focal_reference(x, labels, 2.0, reduction=reduction)
    if reduction == "mean":  # with an ignore_index, MONAI's mean is over the pixels counted
        expected = softmax_focal_reference(x, labels, 2.0, reduction="none").sum() / labels.numel()
    actual = segloss.focal_loss(x, labels.to(dtype), 2.0, activation="softmax",
                                ignore_index=ignore_index, reduction=reduction)
    assert_matches(actual, expected)


SOFTMAX_OPTIONS = [{}, {"alpha": 0.25}, {"alpha": [0.1, 0.2, 0.3, 0.4]},
                   {"include_background": False}, {"class_weights": [0.5, 2.0, 1.0, 1.5]},
                   {"gamma": 0.5}, {"gamma": 0.0}]


def _softmax_options(options):
    return dict(options)


def _monai_lists(options, cw):
    """MONAI's alpha / weight lists: without channel 0 with include_background=False."""
    options = dict(options)
    if not options.get("include_background", True):
        if isinstance(options.get("alpha"), list):
            options["alpha"] = options["alpha"][1:]
        if cw is not None:
            cw = cw[1:]
    return options, cw


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", SOFTMAX_OPTIONS,
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("spatial", list(SHAPES))
def test_softmax_matches_float64_formula(spatial, options, reduction, gen):
    shape = (2, 4) + SHAPES[spatial][2:]
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    t = _labels(shape, gen)
    options = _softmax_options(options)
    gamma = options.pop("gamma", 2.0)
    cw = options.pop("class_weights", None)
    cw = torch.tensor(cw, dtype=torch.float64) if cw is not None else None
    loss, grad = _focal_forward_backward(segloss.focal_loss, x, t, gamma, options.get("alpha"),
                                         activation="softmax", class_weights=cw,
                                         include_background=options.get("include_background",
                                                                        True),
                                         reduction=reduction)
    ref_loss, ref_grad = _focal_forward_backward(softmax_focal_reference, x, t, gamma,
                                                 options.get("alpha"),
                                                 options.get("include_background", True), cw,
                                                 reduction)
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)


@needs_monai
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", SOFTMAX_OPTIONS + [{"ignore_index": 255}],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_softmax_matches_monai(options, reduction, gen):
    shape = (2, 4, 6, 7)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    t = _labels(shape, gen)
    options = _softmax_options(options)
    if "ignore_index" in options:
        if reduction == "none":
            pytest.skip("MONAI's 'none' keeps ignored pixels' masked inputs; ours zeroes them")
        t[0, 0, :2] = 255
    gamma = options.pop("gamma", 2.0)
    cw = options.pop("class_weights", None)
    xm = x.clone().requires_grad_()
    monai_options, monai_cw = _monai_lists(options, cw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = MonaiFocalLoss(gamma=gamma, reduction=reduction, use_softmax=True,
                                  to_onehot_y=True, weight=monai_cw, **monai_options)(xm, t)
        (expected_grad,) = torch.autograd.grad(expected.sum(), xm)
        xs = x.clone().requires_grad_()
        loss = segloss.focal_loss(xs, t, gamma, activation="softmax", reduction=reduction,
                                  class_weights=None if cw is None else torch.tensor(cw),
                                  **options)
    (grad,) = torch.autograd.grad(loss.sum(), xs)
    torch.testing.assert_close(loss, expected.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


@needs_monai
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("options", SOFTMAX_OPTIONS,
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_softmax_probability_target_matches_monai(options, reduction, gen):
    shape = (2, 4, 5, 6)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    t = torch.softmax(torch.randn(shape, generator=gen, dtype=torch.float64) * 3, 1)
    options = dict(options)
    gamma = options.pop("gamma", 2.0)
    cw = options.pop("class_weights", None)
    monai_options, monai_cw = _monai_lists(options, cw)
    xm = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = MonaiFocalLoss(gamma=gamma, reduction=reduction, use_softmax=True,
                                  weight=monai_cw, **monai_options)(xm, t)
        xs = x.clone().requires_grad_()
        loss = segloss.focal_loss(xs, t, gamma, activation="softmax", reduction=reduction,
                                  class_weights=None if cw is None else torch.tensor(cw),
                                  **options)
    (expected_grad,) = torch.autograd.grad(expected, xm)
    (grad,) = torch.autograd.grad(loss, xs)
    torch.testing.assert_close(loss, expected.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


@needs_kornia
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("options", [dict(alpha=0.25), dict(alpha=None), dict(alpha=0.6, gamma=0.5),
                                     dict(alpha=0.25, weighted=True)],
                         ids=["alpha", "no-alpha", "gamma-0.5", "weight"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 4, 3, 4, 5)], ids=["2d", "3d"])
def test_softmax_matches_kornia(shape, options, reduction, gen):
    # The README's migration row: kornia's scalar alpha weighs class 0 by
    # 1 - alpha and the others by alpha, as ours; "none" is [N, C, *spatial].
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    t = _labels(shape, gen)[:, 0]
    gamma, alpha = options.get("gamma", 2.0), options["alpha"]
    w = torch.rand(shape[1], generator=gen, dtype=torch.float64) if "weighted" in options else None
    xk, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = kornia_focal_loss(xk, t, alpha=alpha, gamma=gamma, reduction=reduction, weight=w)
    got = segloss.focal_loss(xs, t, gamma, alpha, activation="softmax", class_weights=w,
                             reduction=reduction)
    assert_matches(got, want)
    (want_grad,) = torch.autograd.grad(want.sum(), xk)
    (got_grad,) = torch.autograd.grad(got.sum(), xs)
    assert_matches(got_grad, want_grad)


@needs_kornia
@pytest.mark.parametrize("alpha", [0.25, 0.8])
def test_sigmoid_matches_kornia_binary_focal_loss(alpha, gen):
    x, y = _data((2, 3, 5, 6), gen)
    xk, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = kornia_binary_focal_loss(xk, y, alpha=alpha, gamma=2.0, reduction="mean")
    got = segloss.focal_loss(xs, y, 2.0, alpha)
    assert_matches(got, want)
    assert_matches(torch.autograd.grad(got, xs)[0], torch.autograd.grad(want, xk)[0])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_softmax_one_hot_target_equals_class_indices(reduction, gen):
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    t = _labels(x.shape, gen)
    onehot = F.one_hot(t[:, 0], 3).movedim(-1, 1).double()
    mask = torch.rand(2, 1, 4, 5, generator=gen) > 0.3
    for m in (None, mask):
        assert_matches(segloss.focal_loss(x, onehot, 2.0, 0.25, "softmax", mask=m,
                                          reduction=reduction),
                       segloss.focal_loss(x, t, 2.0, 0.25, "softmax", mask=m,
                                          reduction=reduction))


def test_softmax_gamma_0_is_cross_entropy(gen):
    x = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64)
    t = _labels(x.shape, gen)
    # MONAI's mean is over N * C * S elements, F.cross_entropy's over N * S pixels.
    loss = segloss.focal_loss(x, t, 0.0, activation="softmax") * x.shape[1]
    assert_matches(loss, F.cross_entropy(x, t[:, 0]))


@pytest.mark.parametrize("gamma", GAMMAS)
def test_softmax_finite_gradients_where_p_t_is_1(gamma):
    x = torch.tensor([0.0, 40.0, -40.0, 1e4], dtype=torch.float64).view(1, 4, 1, 1)
    x = x.expand(2, 4, 3, 1).clone()
    for label in range(4):
        t = torch.full((2, 1, 3, 1), label)
        for dtype in (torch.float64, torch.float32):
            xr = x.to(dtype).requires_grad_()
            loss = segloss.focal_loss(xr, t, gamma, activation="softmax", reduction="sum")
            (grad,) = torch.autograd.grad(loss, xr)
            assert torch.isfinite(loss) and torch.isfinite(grad).all(), (gamma, label, dtype)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_softmax_gradcheck(gamma, gen):
    x = torch.randn(2, 3, 3, 4, generator=gen, dtype=torch.float64)
    t = _labels(x.shape, gen)
    torch.autograd.gradcheck(lambda v: segloss.focal_loss(v, t, gamma, 0.25,
                                                          activation="softmax"),
                             (x.clone().requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_softmax_low_precision(dtype, gen):
    x = torch.randn(2, 4, 8, 8, generator=gen).to(dtype)
    t = _labels(x.shape, gen)
    loss, grad = _focal_forward_backward(segloss.focal_loss, x, t, 2.0, activation="softmax")
    ref_loss, ref_grad = _focal_forward_backward(softmax_focal_reference, x.double(), t, 2.0)
    assert loss.dtype == grad.dtype == dtype
    assert_matches(loss, ref_loss, dtype)
    assert_matches(grad, ref_grad.to(dtype), dtype)


def test_focal_module_scripts(gen):
    x = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64)
    t = _labels(x.shape, gen)
    y = (torch.rand(x.shape, generator=gen) > 0.5).double()
    for module, target in [(segloss.nn.FocalLoss(activation="softmax", alpha=[0.2, 0.3, 0.5]), t),
                           (segloss.nn.FocalLoss(gamma=1.0, alpha=0.25), y)]:
        expected = module(x, target)
        assert torch.equal(torch.jit.script(module)(x, target), expected)
    assert_matches(segloss.nn.FocalLoss(activation="softmax")(x, t),
                   softmax_focal_reference(x, t, 2.0))


# --------------------------------------------------------------------------
# Balanced BCE.

def balanced_reference(x, y, per_image=True, weight=None, reduction="mean"):
    x, y = x.double(), y.double()
    if per_image:
        beta = 1 - y.mean(list(range(1, y.dim())), keepdim=True)
    else:
        beta = 1 - y.mean()
    loss = -(beta * y * F.logsigmoid(x) + (1 - beta) * (1 - y) * F.logsigmoid(-x))
    if weight is not None:
        loss = loss * weight.double()
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("spatial", list(SHAPES))
def test_balanced_matches_float64_formula(spatial, weighted, per_image, reduction, gen):
    shape = SHAPES[spatial]
    x, y = _data(shape, gen, soft=weighted)
    w = torch.rand((1, shape[1]) + (1,) * (len(shape) - 2), generator=gen,
                   dtype=torch.float64) if weighted else None
    loss, grad = _focal_forward_backward(segloss.balanced_bce_with_logits, x, y, per_image, w,
                                         reduction)
    ref_loss, ref_grad = _focal_forward_backward(balanced_reference, x, y, per_image, w,
                                                 reduction)
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_balanced_low_precision(dtype, gen):
    x, y = _data((2, 1, 16, 16), gen, dtype)
    loss, grad = _focal_forward_backward(segloss.balanced_bce_with_logits, x, y)
    ref_loss, ref_grad = _focal_forward_backward(balanced_reference, x, y)
    assert_matches(loss, ref_loss, dtype)
    assert_matches(grad, ref_grad.to(dtype), dtype)


def test_balanced_gradcheck_and_module(gen):
    x, y = _data((3, 1, 4, 5), gen)
    torch.autograd.gradcheck(lambda v: segloss.balanced_bce_with_logits(v, y),
                             (x.clone().requires_grad_(),))
    module = segloss.nn.BalancedBCEWithLogitsLoss(per_image=False, reduction="sum")
    assert_matches(module(x, y), balanced_reference(x, y, False, reduction="sum"))
    assert_matches(torch.jit.script(module)(x, y), balanced_reference(x, y, False,
                                                                     reduction="sum"))


# --------------------------------------------------------------------------
# The op: opcheck, torch.compile, TorchScript in a fresh process, errors.

@pytest.mark.parametrize("case", ["focal", "focal-alpha", "focal-alpha-list", "balanced",
                                  "focal-none"])
def test_opcheck_pointwise_rows(case, gen):
    x, y = _data((2, 3, 4, 5), gen)
    aux, params, loss, reduction = None, [2.0], "sigmoid_focal_loss", "mean"
    if case == "focal-alpha":
        params = [2.0, 0.25]
    elif case == "focal-alpha-list":
        aux = torch.rand(1, 3, 1, 1, generator=gen, dtype=torch.float64)
    elif case == "balanced":
        aux, params, loss = 1 - y.mean((1, 2, 3), keepdim=True), [], "balanced_bce_with_logits"
    elif case == "focal-none":
        reduction = "none"
    args = (x.requires_grad_(), y, None, aux, reduction, loss, params, "test")
    torch.library.opcheck(torch.ops.segloss._pointwise_loss.default, args)
    g = torch.ones(x.shape if reduction == "none" else (), dtype=x.dtype)
    torch.library.opcheck(torch.ops.segloss._pointwise_loss_backward.default,
                          (g, x.detach()) + args[1:])


def test_compile_fullgraph(gen):
    x, y = _data((2, 2, 6, 6), gen, torch.float32)
    assert_aot_eager_equals_eager(lambda v, t: segloss.focal_loss(v, t, 2.0, 0.25), x, y)
    labels = _labels(x.shape, gen)
    assert_aot_eager_equals_eager(
        lambda v, t: segloss.focal_loss(v, t, 2.0, activation="softmax"), x, labels)
    assert_aot_eager_equals_eager(lambda v, t: segloss.balanced_bce_with_logits(v, t), x, y)


class _Losses(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        labels = (y[:, 1:] > 0.5).long()
        return (segloss.focal_loss(x, y, 2.0, [0.25, 0.75])
                + segloss.focal_loss(x, labels, 0.5, 0.25, activation="softmax")
                + segloss.balanced_bce_with_logits(x, y, reduction="sum"))


_CHILD = """
import sys, torch
model_path, library_path, inputs_path = sys.argv[1:]
torch.ops.load_library(library_path)
assert "segloss" not in sys.modules
x, y, expected = torch.load(inputs_path)
model = torch.jit.load(model_path)
x.requires_grad_()
loss = model(x, y)
loss.backward()
assert torch.equal(loss.detach(), expected[0]) and torch.equal(x.grad, expected[1])
print("ok")
"""


def test_scripted_in_fresh_process(tmp_path, gen):
    x, y = _data((2, 2, 5, 6), gen)
    scripted = torch.jit.script(_Losses())
    xr = x.clone().requires_grad_()
    loss = scripted(xr, y)
    loss.backward()
    scripted.save(str(tmp_path / "model.pt"))
    torch.save((x, y, (loss.detach(), xr.grad)), tmp_path / "inputs.pt")
    out = run_python(_CHILD, str(tmp_path / "model.pt"), segloss.library_path(),
                     str(tmp_path / "inputs.pt"))
    assert "ok" in out.stdout


@pytest.mark.parametrize("kwargs,match", [
    ({"gamma": -1.0}, "segloss.focal_loss: gamma must be >= 0"),
    ({"gamma": float("inf")}, "segloss.focal_loss: gamma must be finite, got inf"),
    ({"alpha": 1.5}, "segloss.focal_loss: alpha must be in \\[0, 1\\]"),
    ({"alpha": [0.5, -0.1, 0.2]}, "segloss.focal_loss: every alpha must be in \\[0, 1\\]"),
    ({"alpha": [0.5, 0.5]}, "segloss.focal_loss: alpha must hold one value per channel \\(3\\)"),
    ({"class_weights": torch.ones(2)}, "class_weights must hold one value per channel"),
    ({"activation": "relu"}, "activation must be 'sigmoid' or 'softmax'"),
    ({"reduction": "max"}, "reduction must be 'mean', 'sum' or 'none'"),
])
def test_focal_bad_arguments(kwargs, match, gen):
    x, y = _data((2, 3, 4, 4), gen)
    with pytest.raises(ValueError, match=match):
        segloss.focal_loss(x, y, **kwargs)


def test_bad_shapes_name_the_function(gen):
    x, y = _data((2, 3, 4, 4), gen)
    with pytest.raises(ValueError, match="segloss.focal_loss: ignore_index applies to "
                       "class-index targets"):
        segloss.focal_loss(x, y, activation="softmax", ignore_index=0)
    with pytest.raises(ValueError, match="segloss.focal_loss: reduction='none' with "
                       "activation='softmax' needs a class-index target"):
        segloss.focal_loss(x, y, activation="softmax", reduction="none")
    with pytest.raises(ValueError, match="segloss.focal_loss: with activation='sigmoid', "
                       "target must have the input's shape"):
        segloss.focal_loss(x, y[:, :2])
    with pytest.raises(ValueError, match="segloss.balanced_bce_with_logits: target must have "
                       "the input's shape"):
        segloss.balanced_bce_with_logits(x, y[:1])
    with pytest.raises(ValueError, match="segloss.test: gamma must be >= 0"):
        torch.ops.segloss._pointwise_loss(x, y, None, None, "mean", "sigmoid_focal_loss",
                                          [-2.0], "segloss.test")
    labels = torch.full((2, 1, 4, 4), 3)
    with pytest.raises(IndexError, match="segloss.focal_loss: class indices in target must lie "
                       "in \\[0, 3\\)"):
        segloss.focal_loss(x, labels, activation="softmax")
    with pytest.raises(ValueError, match="segloss.test: unknown pointwise loss 'nope'"):
        torch.ops.segloss._pointwise_loss(x, y, None, None, "mean", "nope", [], "segloss.test")
    with pytest.raises(ValueError, match="segloss.test: beta is required"):
        torch.ops.segloss._pointwise_loss(x, y, None, None, "mean", "balanced_bce_with_logits",
                                          [], "segloss.test")


@pytest.mark.parametrize("alpha", ["a", [0.25, "x"]])
def test_focal_module_names_an_alpha_it_cannot_read(alpha):
    with pytest.raises(TypeError, match=r"segloss\.nn\.FocalLoss: alpha must be a number, a list "
                                        r"of numbers or None, got"):
        segloss.nn.FocalLoss(alpha=alpha)


def test_mask_shapes_are_checked_and_broadcast(gen):
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    y = torch.rand(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 4, 5), generator=gen)
    with pytest.raises(ValueError, match=r"segloss\.focal_loss: mask of shape \[2, 2, 4, 5\] is "
                                         r"not broadcastable to \[2, 3, 4, 5\]"):
        segloss.focal_loss(x, y, mask=torch.ones(2, 2, 4, 5))
    with pytest.raises(ValueError, match=r"segloss\.focal_loss: mask of shape \[5, 4\] is not "
                                         r"broadcastable to \[2, 4, 5\]"):
        segloss.focal_loss(x, labels, activation="softmax", mask=torch.ones(5, 4))
    # A spatial mask broadcasts over the batch: the reference's masked mean
    # over the pixels kept (MONAI's rule with a mask).
    mask = torch.rand(4, 5, generator=gen) > 0.3
    terms = softmax_focal_reference(x, labels, 2.0, reduction="none")
    expected = (terms * mask).sum() / (mask.sum() * x.shape[0])
    actual = segloss.focal_loss(x, labels, 2.0, activation="softmax", mask=mask)
    assert_matches(actual, expected)


# --------------------------------------------------------------------------
# The sigmoid form with a class-index map: MONAI's FocalLoss(to_onehot_y=True).

SIGMOID_LABEL_OPTIONS = [{}, {"alpha": 0.25}, {"alpha": [0.2, 0.3, 0.5]},
                         {"class_weights": [1.0, 2.0, 3.0]}, {"include_background": False},
                         {"gamma": 0.5}]


@pytest.mark.parametrize("label_form", ["n1-int64", "n-uint8", "n1-float"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", SIGMOID_LABEL_OPTIONS, ids=str)
@pytest.mark.parametrize("spatial", [(6, 5), (3, 4, 5)], ids=["2d", "3d"])
def test_sigmoid_label_map_equals_the_one_hot_reference(spatial, options, reduction,
                                                        label_form, gen):
    x = torch.randn((2, 3) + spatial, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1) + spatial, generator=gen)
    options = dict(options)
    gamma = options.pop("gamma", 2.0)
    alpha = options.pop("alpha", None)
    cw = options.pop("class_weights", None)
    cw = None if cw is None else torch.tensor(cw, dtype=torch.float64)
    include_background = options.pop("include_background", True)
    one_hot = F.one_hot(labels[:, 0], 3).movedim(-1, 1).double()
    xr, yr, ar, cr = x, one_hot, alpha, cw
    if not include_background:  # per-class lists index the input's channels
        xr, yr = x[:, 1:], one_hot[:, 1:]
        ar = alpha[1:] if isinstance(alpha, list) else alpha
        cr = None if cw is None else cw[1:]
    expected = sigmoid_focal_reference(xr, yr, gamma, ar, cr, reduction)
    given = {"n1-int64": labels, "n-uint8": labels[:, 0].to(torch.uint8),
             "n1-float": labels.float()}[label_form]
    xs = x.clone().requires_grad_()
    actual = segloss.focal_loss(xs, given, gamma, alpha, class_weights=cw,
                                include_background=include_background, reduction=reduction)
    assert_matches(actual, expected)
    (grad,) = torch.autograd.grad(actual.sum(), xs)
    xe = x.clone().requires_grad_()
    xre = xe if include_background else xe[:, 1:]
    (expected_grad,) = torch.autograd.grad(
        sigmoid_focal_reference(xre, yr, gamma, ar, cr, reduction).sum(), xe)
    assert_matches(grad, expected_grad)


@needs_monai
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sigmoid_label_map_with_ignore_index_matches_monai(reduction, include_background, gen):
    # Ignored pixels count nowhere; MONAI's mean is over the pixels counted.
    x = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 6, 5), generator=gen)
    labels[0, 0, 1, 1] = 255
    labels[1, 0, 2, :] = 255
    expected = MonaiFocalLoss(to_onehot_y=True, gamma=2.0, ignore_index=255,
                              include_background=include_background, reduction=reduction)(
        x, labels)
    actual = segloss.focal_loss(x, labels, 2.0, ignore_index=255, reduction=reduction,
                                include_background=include_background)
    assert actual.shape == expected.shape
    # (MONAI computes in float32.)
    torch.testing.assert_close(actual, expected.double(), rtol=2e-6, atol=1e-6)
