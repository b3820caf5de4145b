"""The fused Dice + focal loss: segloss.dice_focal_loss,
torch.ops.segloss.dice_focal_loss, segloss.nn.DiceFocalLoss and the private op
torch.ops.segloss._dice_sums(..., focal_activation=, focal_gamma=).

loss = lambda_dice * Dice + lambda_focal * focal, the Dice exactly
segloss.dice_loss's and the focal MONAI FocalLoss's (sigmoid per element, or
softmax over the channels) on the same logits and the one-hot target, with
MONAI's reductions.

References: MONAI's DiceFocalLoss (always a sigmoid focal term) and FocalLoss
(its softmax form, and ignore_index, which DiceFocalLoss lacks; MONAI
computes the focal term in float32, so those comparisons are at 1e-5
relative), and the float64 eager formula reference.focal_torch (written from MONAI's
sigmoid_focal_loss / softmax_focal_loss definitions) plus
reference.dice_torch_loss, differentiated by autograd (tight tolerance).
"""

import pytest
import torch
import torch.nn.functional as F

try:
    from monai.losses import DiceFocalLoss as MonaiDiceFocalLoss
    from monai.losses import FocalLoss as MonaiFocalLoss
except ImportError:  # MONAI is optional (absent on the GPU machines)
    MonaiDiceFocalLoss = MonaiFocalLoss = None

import segloss
from helpers import (assert_aot_eager_equals_eager, assert_close_to_scale, assert_matches,
                     make_dice_input, make_dice_target, make_labels, make_mask)
from reference import dense_target_and_mask, dice_ce_torch, dice_focal_torch, focal_torch

needs_monai = pytest.mark.skipif(MonaiDiceFocalLoss is None, reason="needs MONAI")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

OP = "segloss.dice_focal_loss"


def _forward_backward(x, target, entry="functional", grad_output=None, **options):
    leaf = x.detach().clone().requires_grad_()
    if entry == "functional":
        loss = segloss.dice_focal_loss(leaf, target, **options)
    elif entry == "op":
        loss = torch.ops.segloss.dice_focal_loss(leaf, target, **options)
    else:
        mask = options.pop("mask", None)
        loss = segloss.nn.DiceFocalLoss(**options)(leaf, target, mask)
    if grad_output is None:
        grad_output = torch.tensor(1.0, dtype=x.dtype, device=x.device)
    (grad,) = torch.autograd.grad(loss, leaf, grad_output)
    return loss.detach(), grad


# --------------------------------------------------------------------------
# 1. MONAI's DiceFocalLoss and FocalLoss.

def _monai_grad(loss_fn, x, target):
    leaf = x.detach().clone().requires_grad_()
    loss = loss_fn(leaf, target)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


MONAI_SOFTMAX_CASES = [
    # spatial, include_background, batch, gamma, focal_gamma, reduction, alpha, weights
    ((6, 7), True, False, 1.0, 2.0, "mean", None, False),
    ((6, 7), False, True, 2.0, 0.5, "sum", 0.25, True),
    ((6, 7), True, True, 1.0, 0.0, "sum", 0.75, False),
    ((3, 4, 5), True, False, 2.0, 0.5, "mean", None, True),
    ((3, 4, 5), False, False, 1.0, 2.0, "mean", 0.25, False),
    ((3, 4, 5), True, False, 1.0, 0.0, "sum", None, True),
]


@needs_monai
@pytest.mark.parametrize("spatial,include_background,batch,gamma,focal_gamma,reduction,alpha,"
                         "weights", MONAI_SOFTMAX_CASES)
def test_softmax_dice_sigmoid_focal_matches_monai(spatial, include_background, batch, gamma,
                                                  focal_gamma, reduction, alpha, weights, gen):
    # MONAI's DiceFocalLoss(softmax=True): a softmax Dice plus a sigmoid focal
    # term on the same logits and the one-hot target.
    c = 4
    shape = (2, c) + spatial
    x = make_dice_input("softmax", shape, gen)
    labels = make_labels((2, 1) + spatial, c, gen)
    w = (0.5 + 1.5 * torch.rand(c, generator=gen, dtype=torch.float64)) if weights else None
    monai_w = None if w is None else (w if include_background else w[1:])
    monai = MonaiDiceFocalLoss(softmax=True, to_onehot_y=True, gamma=focal_gamma, alpha=alpha,
                               weight=monai_w, include_background=include_background,
                               batch=batch, squared_pred=gamma == 2, reduction=reduction,
                               lambda_dice=0.7, lambda_focal=1.3)
    expected, expected_grad = _monai_grad(monai, x, labels)
    options = dict(activation="softmax", focal_activation="sigmoid", gamma=gamma,
                   focal_gamma=focal_gamma, alpha=alpha, class_weights=w,
                   include_background=include_background, batch_dice=batch,
                   reduction=reduction, lambda_dice=0.7, lambda_focal=1.3)
    loss, grad = _forward_backward(x, labels, **options)
    assert_close_to_scale(loss, expected, 1e-5, "loss")
    assert_close_to_scale(grad, expected_grad, 1e-5, "grad")
    # and the float64 formula, tightly
    ref, ref_grad = dice_focal_torch(x, labels, grad_output=torch.tensor(1.0, dtype=torch.float64),
                                     **options)
    assert_matches(loss, ref)
    assert_matches(grad, ref_grad)


@needs_monai
@pytest.mark.parametrize("target_kind,c,spatial,focal_gamma,alpha,reduction", [
    ("binary", 1, (6, 7), 2.0, None, "mean"),
    ("binary", 3, (3, 4, 5), 0.5, 0.25, "sum"),
    ("onehot", 3, (6, 7), 0.0, 0.75, "mean"),
    ("onehot", 3, (3, 4, 5), 2.0, None, "sum"),
    ("soft", 2, (6, 7), 0.5, 0.25, "mean"),
])
def test_sigmoid_matches_monai(target_kind, c, spatial, focal_gamma, alpha, reduction, gen):
    shape = (2, c) + spatial
    x = make_dice_input("sigmoid", shape, gen)
    t = make_dice_target(target_kind, shape, gen)
    monai = MonaiDiceFocalLoss(sigmoid=True, gamma=focal_gamma, alpha=alpha,
                               reduction=reduction)
    expected, expected_grad = _monai_grad(monai, x, t)
    options = dict(activation="sigmoid", focal_gamma=focal_gamma, alpha=alpha,
                   reduction=reduction)
    loss, grad = _forward_backward(x, t, **options)
    assert_close_to_scale(loss, expected, 1e-5, "loss")
    assert_close_to_scale(grad, expected_grad, 1e-5, "grad")


@needs_monai
@pytest.mark.parametrize("spatial,focal_gamma,alpha,weights,reduction", [
    ((6, 7), 2.0, None, False, "mean"),
    ((6, 7), 0.5, 0.25, True, "sum"),
    ((3, 4, 5), 0.0, 0.75, False, "mean"),
    ((3, 4, 5), 2.0, 0.25, True, "sum"),
])
def test_softmax_focal_half_matches_monai_focal_loss(spatial, focal_gamma, alpha, weights,
                                                     reduction, gen):
    c = 4
    shape = (2, c) + spatial
    x = make_dice_input("softmax", shape, gen)
    labels = make_labels((2, 1) + spatial, c, gen)
    w = (0.5 + 1.5 * torch.rand(c, generator=gen, dtype=torch.float64)) if weights else None
    monai = MonaiFocalLoss(use_softmax=True, to_onehot_y=True, gamma=focal_gamma, alpha=alpha,
                           weight=w, reduction=reduction)
    expected, expected_grad = _monai_grad(monai, x, labels)
    loss, grad = _forward_backward(x, labels, activation="softmax", focal_gamma=focal_gamma,
                                   alpha=alpha, class_weights=w, reduction=reduction,
                                   lambda_dice=0.0)
    assert_close_to_scale(loss, expected, 1e-5, "loss")
    assert_close_to_scale(grad, expected_grad, 1e-5, "grad")


@needs_monai
@pytest.mark.parametrize("focal_activation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_focal_half_with_ignore_index_matches_monai_focal_loss(focal_activation, reduction, gen):
    # MONAI's DiceFocalLoss has no ignore_index; its FocalLoss has: the mean
    # divides by the counted pixels (not times C), the sum takes each image's
    # mean over its counted pixels.
    c, spatial = 3, (6, 7)
    x = make_dice_input("softmax", (2, c) + spatial, gen)
    labels = make_labels((2, 1) + spatial, c, gen, ignore_index=255)
    monai = MonaiFocalLoss(use_softmax=focal_activation == "softmax", to_onehot_y=True,
                           gamma=0.5, ignore_index=255, reduction=reduction)
    expected, expected_grad = _monai_grad(monai, x, labels)
    loss, grad = _forward_backward(x, labels, activation="softmax",
                                   focal_activation=focal_activation, focal_gamma=0.5,
                                   ignore_index=255, reduction=reduction, lambda_dice=0.0)
    assert_close_to_scale(loss, expected, 1e-5, "loss")
    assert_close_to_scale(grad, expected_grad, 1e-5, "grad")


# --------------------------------------------------------------------------
# 2. The float64 formula: every option, every entry point.

REFERENCE_CASES = {
    "softmax-softmax-labels-ignore-mask-nobg": dict(
        shape=(2, 4, 9, 7), activation="softmax", target="labels", ignore_index=255,
        mask="n1s-float", include_background=False, focal_gamma=0.5, alpha=0.25,
        class_weights=True),
    "softmax-sigmoid-labels-3d-batch-sum": dict(
        shape=(2, 3, 4, 5, 6), activation="softmax", focal_activation="sigmoid",
        target="labels", gamma=2.0, batch_dice=True, reduction="sum", focal_gamma=2.0,
        alpha=0.75, mask="n1s-bool"),
    "softmax-softmax-soft-gamma0-sum": dict(
        shape=(2, 3, 8, 5), activation="softmax", target="soft", focal_gamma=0.0,
        reduction="sum", lambda_dice=0.4, lambda_focal=2.5),
    "sigmoid-sigmoid-binary-1d-mask": dict(
        shape=(3, 2, 17), activation="sigmoid", target="binary", mask="n1s-float",
        focal_gamma=1.5, class_weights=True, gamma=1.5),
    "sigmoid-labels1-one-channel": dict(
        shape=(2, 1, 6, 5), activation="sigmoid", target="labels1", ignore_index=-1,
        focal_gamma=0.5, alpha=0.3),
    "softmax-softmax-12-channels-3d": dict(
        shape=(2, 12, 3, 4, 5), activation="softmax", target="labels", ignore_index=255,
        focal_gamma=2.0, alpha=0.6, reduction="sum", class_weights=True),
}


def _reference_case(name, gen, dtype=torch.float64, device="cpu"):
    spec = dict(REFERENCE_CASES[name])
    shape = spec.pop("shape")
    kind = spec.pop("target")
    x = make_dice_input(spec["activation"], shape, gen, dtype, device)
    t = make_dice_target(kind, shape, gen, None if kind.startswith("labels") else dtype, device,
                         ignore_index=spec.get("ignore_index"))
    if spec.get("mask"):
        spec["mask"] = make_mask(spec["mask"], shape, gen, device)
    if spec.get("class_weights"):
        spec["class_weights"] = (0.5 + 1.5 * torch.rand(shape[1], generator=gen,
                                                        dtype=torch.float64)).to(device, dtype)
    return x, t, spec


@pytest.mark.parametrize("entry", ["functional", "op", "module"])
@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_matches_float64_formula(case, entry, device, gen):
    x, t, options = _reference_case(case, gen, device=device)
    g = torch.tensor(1.7, dtype=torch.float64, device=device)
    if entry == "module" and options.get("mask") is None:
        options.pop("mask", None)
    loss, grad = _forward_backward(x, t, entry, g, **options)
    ref, ref_grad = dice_focal_torch(x, t, grad_output=g, **options)
    assert loss.dtype == x.dtype and loss.dim() == 0
    assert_matches(loss, ref, msg="loss")
    assert_matches(grad, ref_grad, msg="grad")


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_float32_matches_float64_formula(case, device, gen):
    x, t, options = _reference_case(case, gen, torch.float32, device)
    loss, grad = _forward_backward(x, t, **options)
    ref, ref_grad = dice_focal_torch(x, t, grad_output=torch.tensor(1.0, dtype=torch.float64),
                                     **options)
    assert_matches(loss, ref, torch.float32, msg="loss")
    assert_matches(grad, ref_grad, torch.float32, msg="grad")


@pytest.mark.parametrize("loss", ["dice_ce_loss", "dice_focal_loss", "focal_loss"])
def test_large_float32_logits_keep_their_accuracy(loss, device, gen):
    # -log p of the softmax is log s - (x_k - max), torch's log_softmax
    # order: logits near 1e3 lose nothing to the maximum's size (the
    # log-sum-exp form, (max + log s) - x_k, was off by eps * 1e3 = 1e-4).
    x = (torch.randn(2, 3, 6, 7, generator=gen, dtype=torch.float64) * 2 + 1e3).float()
    labels = torch.randint(0, 3, (2, 6, 7), generator=gen)
    one = torch.tensor(1.0, dtype=torch.float64)
    if loss == "dice_ce_loss":
        options = dict(activation="softmax", label_smoothing=0.1)
        ref, ref_grad = dice_ce_torch(x.double(), labels, grad_output=one, **options)
    else:
        options = dict(activation="softmax", focal_gamma=2.0)
        ref, ref_grad = dice_focal_torch(x.double(), labels, grad_output=one, **options)
        if loss == "focal_loss":
            options = dict(activation="softmax", gamma=2.0)
            x64 = x.double().requires_grad_()
            ref = focal_torch(x64, labels, focal_activation="softmax", focal_gamma=2.0)
            (ref_grad,) = torch.autograd.grad(ref, x64)
    leaf = x.to(device).requires_grad_()
    value = getattr(segloss, loss)(leaf, labels.to(device), **options)
    (grad,) = torch.autograd.grad(value, leaf)
    assert_matches(value, ref, torch.float32, msg="loss")
    assert_matches(grad, ref_grad, torch.float32, msg="grad")


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_focal_gamma_zero_is_bce_or_cross_entropy(activation, gen):
    shape = (2, 3, 6, 5)
    x = make_dice_input(activation, shape, gen)
    labels = make_labels((2, 6, 5), 3, gen)
    loss = segloss.dice_focal_loss(x, labels, activation=activation, focal_gamma=0.0,
                                   lambda_dice=0.0)
    onehot = F.one_hot(labels, 3).movedim(-1, 1).double()
    if activation == "sigmoid":
        expected = F.binary_cross_entropy_with_logits(x, onehot)
    else:  # MONAI's mean over N C S of a loss that is nonzero at one channel
        expected = F.cross_entropy(x, labels) / 3
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    dice = segloss.dice_loss(x, labels, activation=activation)
    both = segloss.dice_focal_loss(x, labels, activation=activation, focal_gamma=0.0)
    torch.testing.assert_close(both, dice + expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("focal_activation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("focal_gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
def test_finite_where_p_is_saturated(focal_activation, focal_gamma):
    # Logits that make p_t exactly 1 (and 0) in float32: (1 - p_t)^gamma has
    # an infinite derivative there for 0 < gamma < 1, the loss must not.
    x = torch.tensor([[[40.0, -40.0, 0.3], [-40.0, 40.0, -0.2], [-40.0, -40.0, 0.1]]])
    labels = torch.tensor([[0, 1, 2]])
    for dtype in (torch.float32, torch.float64):
        loss, grad = _forward_backward(x.to(dtype), labels, activation="softmax",
                                       focal_activation=focal_activation,
                                       focal_gamma=focal_gamma)
        assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all()), (dtype, grad)
        if dtype == torch.float64 and focal_gamma >= 1:
            ref, ref_grad = dice_focal_torch(x, labels, activation="softmax",
                                             focal_activation=focal_activation,
                                             focal_gamma=focal_gamma,
                                             grad_output=torch.tensor(1.0, dtype=dtype))
            assert_matches(loss, ref)
            assert_matches(grad, ref_grad)


def test_sigmoid_alpha_splits_soft_targets_exactly(gen):
    # alpha * positive + (1 - alpha) * negative is MONAI's alpha y + (1 -
    # alpha)(1 - y) per element, also for soft targets.
    shape = (2, 2, 5, 6)
    x = make_dice_input("sigmoid", shape, gen)
    t = make_dice_target("soft", shape, gen)
    loss = segloss.dice_focal_loss(x, t, alpha=0.3, lambda_dice=0.0)
    expected = focal_torch(x, t, focal_activation="sigmoid", focal_gamma=2.0, alpha=0.3)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_masked_pixels_get_no_gradient(gen):
    shape = (2, 3, 6, 5)
    x = make_dice_input("softmax", shape, gen)
    labels = make_labels((2, 6, 5), 3, gen, ignore_index=255)
    mask = make_mask("n1s-bool", shape, gen)
    for focal_activation in ("sigmoid", "softmax"):
        _, grad = _forward_backward(x, labels, activation="softmax", mask=mask,
                                    ignore_index=255, focal_activation=focal_activation)
        dropped = ((labels == 255) | ~mask[:, 0]).unsqueeze(1).expand(shape)
        assert bool((grad[dropped] == 0).all())


# --------------------------------------------------------------------------
# 3. gradcheck, opcheck, the sums op.

GRADCHECK_CASES = [
    ("softmax", "softmax", 0.5, "labels", dict(ignore_index=255, alpha=0.25)),
    ("softmax", "softmax", 2.0, "soft", dict(include_background=False, reduction="sum")),
    ("softmax", "sigmoid", 0.5, "labels", dict(mask=True, alpha=0.75, gamma=2.0)),
    ("sigmoid", "sigmoid", 2.0, "soft", dict(batch_dice=True, class_weights=True)),
    ("sigmoid", "sigmoid", 0.5, "binary", dict(reduction="sum", gamma=1.5)),
]


@pytest.mark.parametrize("activation,focal_activation,focal_gamma,target,extra", GRADCHECK_CASES)
def test_gradcheck(activation, focal_activation, focal_gamma, target, extra, device, gen):
    shape = (2, 3, 4, 3)
    x = make_dice_input(activation, shape, gen, device=device).requires_grad_()
    extra = dict(extra)
    t = make_dice_target(target, shape, gen, device=device,
                         ignore_index=extra.get("ignore_index"))
    if extra.pop("mask", False):
        extra["mask"] = make_mask("n1s-float", shape, gen, device)
    if extra.pop("class_weights", False):
        extra["class_weights"] = torch.tensor([0.5, 2.0, 1.25], dtype=torch.float64,
                                              device=device)

    def fn(inp):
        return segloss.dice_focal_loss(inp, t, activation=activation,
                                       focal_activation=focal_activation,
                                       focal_gamma=focal_gamma, **extra)

    assert torch.autograd.gradcheck(fn, (x,))


def _opcheck_inputs(device, gen, dtype=torch.float32):
    shape = (2, 3, 5, 4)
    x = make_dice_input("softmax", shape, gen, dtype, device)
    labels = make_labels((2, 1, 5, 4), 3, gen, torch.int32, device, ignore_index=255)
    mask = make_mask("n1s-float", shape, gen, device)
    return x, labels, mask


@pytest.mark.parametrize("options", [
    dict(activation="softmax"),
    dict(activation="softmax", focal_activation="sigmoid", alpha=0.25, reduction="sum",
         include_background=False, focal_gamma=0.5),
    dict(activation="sigmoid", batch_dice=True, lambda_dice=0.3, lambda_focal=1.7),
], ids=["softmax", "softmax-sigmoid-focal", "sigmoid"])
def test_opcheck_dice_focal_loss(options, device, gen):
    x, labels, mask = _opcheck_inputs(device, gen)
    o = dict(options, ignore_index=255, mask=mask,
             class_weights=torch.tensor([0.5, 2.0, 1.0], device=device))
    torch.library.opcheck(torch.ops.segloss.dice_focal_loss.default,
                          (x.requires_grad_(), labels), o)


@pytest.mark.parametrize("activation,focal_activation", [("softmax", "softmax"),
                                                         ("softmax", "sigmoid"),
                                                         ("sigmoid", "sigmoid")])
def test_opcheck_dice_sums_focal(activation, focal_activation, device, gen):
    x, labels, mask = _opcheck_inputs(device, gen, torch.float64)
    args = (labels, activation, 2.0, 255, mask, False, "segloss._dice_sums", False,
            focal_activation, 0.5)
    torch.library.opcheck(torch.ops.segloss._dice_sums.default, (x.requires_grad_(),) + args)
    sums = torch.ops.segloss._dice_sums(x.detach(), *args)
    assert sums.shape == (2, 3, 6) and sums.dtype == torch.float64
    # The columns: Dice's three, then sum m y f, sum m (1 - y) f, sum m.
    xd = x.detach().cpu().requires_grad_()
    y, m = dense_target_and_mask(xd, labels, 255, mask)
    dims = [2, 3]
    p = torch.softmax(xd, 1) if activation == "softmax" else torch.sigmoid(xd)
    if focal_activation == "sigmoid":
        f = torch.exp(0.5 * F.logsigmoid(-xd * (2 * y - 1))) * (xd - xd * y - F.logsigmoid(xd))
        negative = (m * (1 - y) * f).sum(dims)
    else:
        log_p = torch.log_softmax(xd, 1)
        f = -(1 - log_p.exp()).pow(0.5) * log_p
        negative = torch.zeros(2, 3, dtype=torch.float64)
    expected = torch.stack([(m * p * y).sum(dims), (m * p * p).sum(dims), (m * y * y).sum(dims),
                            (m * y * f).sum(dims), negative, m.sum(dims).expand(2, 3)], -1)
    assert_matches(sums, expected)
    # and the backward against autograd of the same columns
    grad_sums = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64)
    grad = torch.ops.segloss._dice_sums_backward(grad_sums.to(device), x.detach(), *args)
    (ref_grad,) = torch.autograd.grad(expected, xd, grad_sums)
    assert_matches(grad, ref_grad)


def test_dice_sums_old_callers_and_layout_errors(gen):
    x, labels, mask = _opcheck_inputs("cpu", gen)
    # The old positional form still gives Dice's three columns.
    assert torch.ops.segloss._dice_sums(x, labels, "softmax", 1.0, 255, mask).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="at most one"):
        torch.ops.segloss._dice_sums(x, labels, "softmax", 1.0, 255, mask, True,
                                     "segloss._dice_sums", False, "sigmoid", 2.0)
    with pytest.raises(ValueError, match="focal_activation must be"):
        torch.ops.segloss._dice_sums(x, labels, "softmax", 1.0, 255, mask, False,
                                     "segloss._dice_sums", False, "tanh", 2.0)


# --------------------------------------------------------------------------
# 4. torch.compile, TorchScript, autocast, half precision.

@pytest.mark.parametrize("focal_activation", ["sigmoid", "softmax"])
def test_aot_eager_equals_eager(focal_activation, gen):
    x = make_dice_input("softmax", (2, 3, 6, 5), gen, torch.float32)
    labels = make_labels((2, 6, 5), 3, gen, ignore_index=255)

    def fn(inp, t):
        return segloss.dice_focal_loss(inp, t, activation="softmax",
                                       focal_activation=focal_activation, ignore_index=255,
                                       focal_gamma=0.5, alpha=0.25)

    assert_aot_eager_equals_eager(fn, x, labels)


class _ScriptedModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.module = segloss.nn.DiceFocalLoss(activation="softmax", focal_activation="sigmoid",
                                               focal_gamma=0.5, alpha=0.25,
                                               class_weights=torch.tensor([0.5, 2.0, 1.0]),
                                               ignore_index=255)

    def forward(self, x: torch.Tensor, labels: torch.Tensor):
        a = self.module(x, labels)
        b = segloss.dice_focal_loss(x, labels, activation="softmax", ignore_index=255,
                                    reduction="sum", focal_gamma=2.0)
        return a + b, a


def test_torchscript_equals_eager(gen, tmp_path):
    x = make_dice_input("softmax", (2, 3, 6, 5), gen, torch.float32)
    labels = make_labels((2, 6, 5), 3, gen, ignore_index=255)
    model = _ScriptedModel()
    scripted = torch.jit.script(model)
    scripted.save(str(tmp_path / "model.pt"))
    loaded = torch.jit.load(str(tmp_path / "model.pt"))

    def run(m):
        leaf = x.clone().requires_grad_()
        total, a = m(leaf, labels)
        total.backward()
        return total.detach(), a.detach(), leaf.grad

    expected = run(model)
    for m in (scripted, loaded):
        for r, e in zip(run(m), expected):
            assert torch.equal(r, e)


def test_autocast_computes_in_float32(gen):
    x = torch.randn(2, 3, 9, 7, generator=gen).to(torch.bfloat16)
    labels = torch.randint(0, 3, (2, 9, 7), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = segloss.dice_focal_loss(x, labels, activation="softmax")
    assert loss.dtype == torch.float32
    expected, _ = dice_focal_torch(x.double(), labels, activation="softmax")
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("activation,focal_activation,target", [
    ("softmax", "softmax", "labels"), ("softmax", "sigmoid", "labels"),
    ("sigmoid", "sigmoid", "binary")])
def test_half_precision(activation, focal_activation, target, dtype, device, gen):
    shape = (2, 4, 32, 32)
    ignore = 255 if target == "labels" else None
    x = make_dice_input(activation, shape, gen, torch.float32).to(device, dtype)
    t = make_dice_target(target, shape, gen, None if target == "labels" else dtype, device,
                         ignore_index=ignore)
    options = dict(activation=activation, focal_activation=focal_activation,
                   ignore_index=ignore, mask=make_mask("n1s-float", shape, gen, device),
                   focal_gamma=0.5, alpha=0.25)
    loss, grad = _forward_backward(x, t, **options)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
    ref, ref_grad = dice_focal_torch(x, t, grad_output=torch.tensor(1.0, dtype=torch.float64),
                                     **options)
    tol = 1e-2 if dtype == torch.float16 else 2 ** -7 * max(1.0, abs(float(ref)))
    assert abs(float(loss) - float(ref)) <= tol, (float(loss), float(ref))
    scale = float(ref_grad.abs().max())
    torch.testing.assert_close(grad.double().cpu(), ref_grad, rtol=1e-2, atol=1e-2 * scale)


# --------------------------------------------------------------------------
# 5. Errors name the function and the argument.

@pytest.mark.parametrize("kwargs,message", [
    (dict(focal_gamma=-0.5), "focal_gamma must be"),
    (dict(focal_gamma=float("nan")), "focal_gamma must be"),
    (dict(alpha=1.5), "alpha must lie in"),
    (dict(alpha=-0.1), "alpha must lie in"),
    (dict(lambda_dice=-1.0), "lambda_dice must be"),
    (dict(lambda_focal=-1.0), "lambda_focal must be"),
    (dict(activation="none"), "activation must be 'sigmoid' or 'softmax'"),
    (dict(focal_activation="tanh"), "focal_activation must be"),
    (dict(activation="sigmoid", focal_activation="softmax"), "focal_activation='softmax' needs activation='softmax'"),
    (dict(reduction="none"), "reduction must be 'mean' or 'sum'"),
    (dict(gamma=0.5), "gamma must be"),
])
def test_bad_options(kwargs, message, gen):
    x = make_dice_input("softmax", (2, 3, 4, 4), gen)
    labels = make_labels((2, 4, 4), 3, gen)
    options = dict(dict(activation="softmax"), **kwargs)
    with pytest.raises(ValueError, match=f"segloss.dice_focal_loss: {message}"):
        segloss.dice_focal_loss(x, labels, **options)


@pytest.mark.parametrize("kwargs", [dict(focal_gamma=-1.0), dict(alpha=2.0),
                                    dict(lambda_focal=-1.0), dict(reduction="none"),
                                    dict(focal_activation="tanh"), dict(activation="none")])
def test_module_bad_options(kwargs):
    with pytest.raises(ValueError, match="DiceFocalLoss"):
        segloss.nn.DiceFocalLoss(**kwargs)


def test_softmax_over_one_channel_is_refused(gen):
    x = make_dice_input("softmax", (2, 1, 4, 4), gen)
    with pytest.raises(ValueError, match="segloss.dice_focal_loss: activation='softmax' needs"):
        segloss.dice_focal_loss(x, torch.zeros(2, 4, 4, dtype=torch.int64),
                                activation="softmax")


def test_module_state_and_repr():
    module = segloss.nn.DiceFocalLoss(activation="softmax", focal_activation="sigmoid",
                                      focal_gamma=0.5, alpha=0.25,
                                      class_weights=torch.tensor([1.0, 2.0]))
    assert "class_weights" in module.state_dict()
    text = repr(module)
    assert "focal_gamma=0.5" in text and "alpha=0.25" in text
    assert "focal_activation='sigmoid'" in text
