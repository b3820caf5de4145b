"""The fused Dice + cross-entropy loss: segloss.dice_ce_loss,
torch.ops.segloss.dice_ce_loss, segloss.nn.DiceCELoss and the private op
torch.ops.segloss._dice_sums(..., cross_entropy=True).

loss = lambda_dice * Dice + lambda_ce * CE, the Dice exactly segloss.dice_loss's
and the CE softmax cross-entropy (F.cross_entropy) or per-channel
binary cross-entropy with logits (pos_weight = the class weights), over the
pixels that the mask and ignore_index keep. The CE's class weights are
ce_weight when given, else class_weights.

Every value is compared with an independent reference: MONAI's DiceCELoss, or
the eager PyTorch composite reference.dice_ce_torch (reference.dice_torch_loss
+ torch.nn.functional's cross_entropy / binary_cross_entropy_with_logits),
differentiated by autograd. Only the TorchScript and torch.compile tests compare
segloss with itself (exact equality with eager mode).

MONAI 1.6.1 conventions adapted to (see dice.py's DiceCELoss):
- the CE half is chosen by the channel count, not by sigmoid/softmax: with
  C > 1 MONAI always uses CrossEntropyLoss (even with sigmoid=True), BCE only
  with C == 1. So MONAI's DiceCELoss is the reference for softmax with C > 1
  and sigmoid with C == 1 only; sigmoid with C > 1 is checked against MONAI's
  Dice half (lambda_ce=0) plus torch's BCEWithLogitsLoss with a (C, 1, ...)
  pos_weight (MONAI's own pos_weight=weight of shape (C,) would broadcast
  along the last spatial dimension, not the channels).
- DiceCELoss slices weight[1:] for its Dice when include_background=False
  itself, so `weight` is compared with and without the background.
- with one channel MONAI's Dice ignores `weight` (BCE still uses it as
  pos_weight): segloss's ce_weight=w reproduces it exactly; class_weights=w
  also weights the Dice by w[0], compared with MONAI's lambda_dice scaled by
  w[0].
- MONAI has one `weight` for both terms: segloss's class_weights and
  ce_weight differing are compared with two MONAI calls (lambda_ce=0 with
  weight=class_weights, lambda_dice=0 with weight=ce_weight).
- squared_pred (gamma = 2) computes T through vector norms of MONAI's float32
  one-hot (to_onehot_y), which rounds: for gamma = 2 MONAI's Dice half gets a
  float64 one-hot target, its CE half the label map (two calls, lambda_ce=0
  and lambda_dice=0).
- MONAI's DiceCELoss has no ignore_index and no mask: those are checked
  against the eager composite only.
"""

import itertools
import re
import warnings

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
try:
    from monai.losses import DiceCELoss as MonaiDiceCELoss
except ImportError:  # MONAI is optional (absent on the GPU machines): its comparisons skip
    MonaiDiceCELoss = None

import segloss
from helpers import (assert_close_to_scale, assert_matches, dice_forward_backward,
                     make_dice_input, make_dice_target, make_labels, make_mask)
from reference import dice_ce_torch, dice_reference, dice_sums_torch, dice_torch

needs_monai = pytest.mark.skipif(MonaiDiceCELoss is None, reason="needs MONAI")

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

REDUCTIONS = ("mean", "sum")
LAMBDAS = [(1.0, 1.0), (0.3, 1.7)]
# (spatial size, weights, (lambda_dice, lambda_ce)) that each MONAI test goes
# through; weights: None, "class" (class_weights), "ce" (ce_weight) or
# "class+ce" (both, different).
MONAI_VARIANTS = [((6, 7), None, LAMBDAS[0]), ((6, 7), "class", LAMBDAS[1]),
                  ((3, 4, 5), None, LAMBDAS[1]), ((3, 4, 5), "class", LAMBDAS[0]),
                  ((6, 7), "ce", LAMBDAS[1]), ((3, 4, 5), "class+ce", LAMBDAS[0])]


def _weights(c, gen, dtype=torch.float64, device="cpu"):
    return (0.5 + 1.5 * torch.rand(c, generator=gen, dtype=torch.float64)).to(device, dtype)


def _weight_options(form, c, gen, dtype=torch.float64, device="cpu"):
    """class_weights and ce_weight for a weights form of MONAI_VARIANTS."""
    form = form or ""
    return dict(class_weights=_weights(c, gen, dtype, device) if "class" in form else None,
                ce_weight=_weights(c, gen, dtype, device) if "ce" in form else None)


def _case(activation, gen, *, shape=(2, 3, 6, 7), target="labels", label_dtype=torch.int64,
          gamma=1.0, smooth=(1e-5, 1e-5), batch_dice=False, include_background=True,
          class_weights=False, ce_weight=False, ignore_index=None, mask=None,
          lambdas=(1.0, 1.0), reduction="mean", dtype=torch.float64, device="cpu"):
    """(input, target, options): one Dice + CE problem, options as
    segloss.dice_ce_loss's keyword arguments."""
    x = make_dice_input(activation, shape, gen, dtype, device)
    t_dtype = label_dtype if target.startswith("labels") else dtype
    t = make_dice_target(target, shape, gen, t_dtype, device, ignore_index=ignore_index)
    options = dict(activation=activation, gamma=gamma, smooth_nr=smooth[0], smooth_dr=smooth[1],
                   batch_dice=batch_dice, include_background=include_background,
                   class_weights=_weights(shape[1], gen, dtype, device) if class_weights else None,
                   ignore_index=ignore_index, mask=make_mask(mask, shape, gen, device),
                   lambda_dice=lambdas[0], lambda_ce=lambdas[1], reduction=reduction)
    if ce_weight:
        options["ce_weight"] = _weights(shape[1], gen, dtype, device)
    return x, t, options


def dice_ce_forward_backward(x, target, grad_output=None, entry="functional", **options):
    """segloss's Dice + CE loss and input gradient (None without grad_output),
    through `entry`: 'functional', 'op' or 'module'."""
    return dice_forward_backward(x, target, grad_output, entry, loss="dice_ce_loss", **options)


def _grad_output(dtype=torch.float64, device="cpu"):
    return torch.tensor(1.25, dtype=dtype, device=device)


def _check(x, t, options, entry="functional", tol_dtype=None, msg=""):
    g = _grad_output(x.dtype, x.device)
    loss, grad = dice_ce_forward_backward(x, t, g, entry, **options)
    ref_loss, ref_grad = dice_ce_torch(x, t, grad_output=g, **options)
    assert loss.dtype == x.dtype and grad.dtype == x.dtype, (loss.dtype, grad.dtype)
    assert loss.device == x.device and grad.device == x.device
    assert loss.shape == ()
    assert_matches(loss, ref_loss, tol_dtype, msg=f"{msg} loss")
    assert_matches(grad, ref_grad, tol_dtype, msg=f"{msg} grad")
    return loss, grad


def _monai_onehot(labels, c):
    """The float64 one-hot (N, C, *spatial) of (N, 1, *spatial) labels."""
    return F.one_hot(labels[:, 0].long(), c).movedim(-1, 1).to(torch.float64)


def _monai_loss_and_grad(x, monai_target, dice_target, lambdas, ce_weight=None,
                         **monai_options):
    """MONAI's DiceCELoss and its autograd gradient. The Dice half is a
    separate call (lambda_ce=0) on `dice_target` when that is not None, and
    the CE half one with weight=ce_weight when that is not None."""
    xm = x.detach().clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dice_target is None and ce_weight is None:
            loss = MonaiDiceCELoss(lambda_dice=lambdas[0], lambda_ce=lambdas[1],
                                   **monai_options)(xm, monai_target)
        else:
            dice_options = dict(monai_options)
            if dice_target is not None:
                dice_options["to_onehot_y"] = False
            ce_options = dict(monai_options)
            if ce_weight is not None:
                ce_options["weight"] = ce_weight
            loss = (MonaiDiceCELoss(lambda_dice=lambdas[0], lambda_ce=0.0, **dice_options)(
                        xm, monai_target if dice_target is None else dice_target)
                    + MonaiDiceCELoss(lambda_dice=0.0, lambda_ce=lambdas[1], **ce_options)(
                        xm, monai_target))
    (grad,) = torch.autograd.grad(loss, xm, _grad_output())
    return loss.detach(), grad


# --------------------------------------------------------------------------
# 1. MONAI's DiceCELoss.

@needs_monai
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [1.0, 2.0], ids=["gamma1", "squared_pred"])
@pytest.mark.parametrize("batch", [False, True], ids=["per-image", "batch"])
@pytest.mark.parametrize("include_background", [True, False], ids=["bg", "nobg"])
@pytest.mark.parametrize("form", ["to_onehot_y", "onehot"])
def test_softmax_matches_monai(form, include_background, batch, gamma, reduction, gen):
    c = 4
    for spatial, weights, lambdas in MONAI_VARIANTS:
        msg = f"{spatial} weights={weights} lambdas={lambdas}"
        shape = (2, c) + spatial
        x = make_dice_input("softmax", shape, gen)
        labels = make_dice_target("labels1", shape, gen)
        t = labels if form == "to_onehot_y" else _monai_onehot(labels, c)
        weight_options = _weight_options(weights, c, gen)
        options = dict(activation="softmax", gamma=gamma, batch_dice=batch,
                       include_background=include_background, lambda_dice=lambdas[0],
                       lambda_ce=lambdas[1], reduction=reduction, **weight_options)
        # MONAI's weight weighs both terms: class_weights; ce_weight its CE alone.
        monai_options = dict(softmax=True, to_onehot_y=form == "to_onehot_y",
                             squared_pred=gamma == 2.0, batch=batch,
                             include_background=include_background, reduction=reduction,
                             weight=weight_options["class_weights"])
        dice_target = _monai_onehot(labels, c) if form == "to_onehot_y" and gamma == 2.0 else None
        expected, expected_grad = _monai_loss_and_grad(
            x, t, dice_target, lambdas, ce_weight=weight_options["ce_weight"], **monai_options)
        loss, grad = dice_ce_forward_backward(x, t, _grad_output(), **options)
        assert_close_to_scale(loss, expected, 1e-10, f"{msg} loss")
        assert_close_to_scale(grad, expected_grad, 1e-10, f"{msg} grad")


@needs_monai
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [1.0, 2.0], ids=["gamma1", "squared_pred"])
@pytest.mark.parametrize("batch", [False, True], ids=["per-image", "batch"])
@pytest.mark.parametrize("target", ["binary", "labels1"])
def test_sigmoid_one_channel_matches_monai(target, batch, gamma, reduction, gen):
    for spatial, weights, lambdas in MONAI_VARIANTS:
        msg = f"{spatial} weights={weights} lambdas={lambdas}"
        shape = (2, 1) + spatial
        x = make_dice_input("sigmoid", shape, gen)
        t = make_dice_target(target, shape, gen)
        weight_options = _weight_options(weights, 1, gen)
        options = dict(activation="sigmoid", gamma=gamma, batch_dice=batch,
                       lambda_dice=lambdas[0], lambda_ce=lambdas[1], reduction=reduction,
                       **weight_options)
        # MONAI's one-channel weight is the BCE's pos_weight only, its Dice
        # ignores it: exactly segloss's ce_weight. segloss's class_weights
        # also weights the Dice (by w[0]), and the BCE unless ce_weight is given.
        class_weights, ce_weight = weight_options["class_weights"], weight_options["ce_weight"]
        monai_options = dict(sigmoid=True, squared_pred=gamma == 2.0, batch=batch,
                             reduction=reduction,
                             weight=ce_weight if ce_weight is not None else class_weights)
        monai_lambdas = lambdas
        if class_weights is not None:
            monai_lambdas = (lambdas[0] * float(class_weights[0]), lambdas[1])
        expected, expected_grad = _monai_loss_and_grad(x, t.double(), None, monai_lambdas,
                                                       **monai_options)
        loss, grad = dice_ce_forward_backward(x, t, _grad_output(), **options)
        assert_close_to_scale(loss, expected, 1e-10, f"{msg} loss")
        assert_close_to_scale(grad, expected_grad, 1e-10, f"{msg} grad")


@needs_monai
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [1.0, 2.0], ids=["gamma1", "squared_pred"])
@pytest.mark.parametrize("batch", [False, True], ids=["per-image", "batch"])
@pytest.mark.parametrize("include_background", [True, False], ids=["bg", "nobg"])
def test_sigmoid_multichannel_matches_monai_dice_plus_torch_bce(include_background, batch, gamma,
                                                                reduction, gen):
    # MONAI's DiceCELoss uses softmax CE for C > 1 even with sigmoid=True: its
    # Dice half (lambda_ce=0) plus torch's BCEWithLogitsLoss, per-channel pos_weight.
    c = 3
    for spatial, weights, lambdas in MONAI_VARIANTS:
        msg = f"{spatial} weights={weights} lambdas={lambdas}"
        shape = (2, c) + spatial
        x = make_dice_input("sigmoid", shape, gen)
        t = make_dice_target("binary", shape, gen)
        weight_options = _weight_options(weights, c, gen)
        w = weight_options["class_weights"]
        pos_weight = weight_options["ce_weight"] if weight_options["ce_weight"] is not None else w
        options = dict(activation="sigmoid", gamma=gamma, batch_dice=batch,
                       include_background=include_background, lambda_dice=lambdas[0],
                       lambda_ce=lambdas[1], reduction=reduction, **weight_options)
        xm = x.clone().requires_grad_()
        dice = MonaiDiceCELoss(sigmoid=True, squared_pred=gamma == 2.0, batch=batch,
                               include_background=include_background, weight=w,
                               reduction=reduction, lambda_dice=lambdas[0], lambda_ce=0.0)(xm, t)
        bce = torch.nn.BCEWithLogitsLoss(
            pos_weight=None if pos_weight is None else pos_weight.view(c, *(1,) * len(spatial)),
            reduction=reduction)(xm, t)
        expected = dice + lambdas[1] * bce
        (expected_grad,) = torch.autograd.grad(expected, xm, _grad_output())
        loss, grad = dice_ce_forward_backward(x, t, _grad_output(), **options)
        assert_close_to_scale(loss, expected, 1e-10, f"{msg} loss")
        assert_close_to_scale(grad, expected_grad, 1e-10, f"{msg} grad")


@needs_monai
def test_defaults_are_monai_softmax_to_onehot_y(gen):
    # dice_ce_loss(x, labels) and DiceCELoss()(x, labels): softmax, gamma 1,
    # smoothing 1e-5, lambdas 1, mean.
    shape = (2, 3, 6, 7)
    x = make_dice_input("softmax", shape, gen)
    labels = make_dice_target("labels1", shape, gen)
    expected = MonaiDiceCELoss(softmax=True, to_onehot_y=True)(x, labels)
    for loss in (segloss.dice_ce_loss(x, labels), torch.ops.segloss.dice_ce_loss(x, labels),
                 segloss.nn.DiceCELoss()(x, labels), segloss.dice_ce_loss(x, labels[:, 0])):
        assert loss.dtype == torch.float64
        assert_close_to_scale(loss, expected, 1e-10)


# --------------------------------------------------------------------------
# 2. The eager composite: label maps, ignore_index, masks, weights, soft targets.

COMPOSITE_CASES = {
    "labels": dict(target="labels"),
    "labels1-int32-ignore255": dict(target="labels1", label_dtype=torch.int32,
                                    ignore_index=255),
    "labels-uint8-ignore255-mask-n1s-weights": dict(target="labels", label_dtype=torch.uint8,
                                                    ignore_index=255, mask="n1s-float",
                                                    class_weights=True),
    "labels-ignore-100-weights-nobg": dict(target="labels", ignore_index=-100,
                                           class_weights=True, include_background=False),
    "labels1-ignore0-batch": dict(target="labels1", ignore_index=0, batch_dice=True),
    "labels-11s-bool-gamma2-lambdas": dict(target="labels", mask="11s-bool", gamma=2.0,
                                           lambdas=(0.3, 1.7)),
    "labels-n111-weights-batch-3d": dict(target="labels", mask="n111-float", class_weights=True,
                                         batch_dice=True, shape=(2, 3, 3, 4, 5)),
    "labels-s-bool-gamma1.5-smooth-1d": dict(target="labels", mask="s-bool", gamma=1.5,
                                             smooth=(0.7, 0.2), shape=(3, 4, 29)),
    "soft": dict(target="soft"),
    "soft-weights-mask-nobg": dict(target="soft", class_weights=True, mask="n1s-bool",
                                   include_background=False),
    "soft-batch-gamma2-lambdas-3d": dict(target="soft", batch_dice=True, gamma=2.0,
                                         lambdas=(2.0, 0.5), shape=(2, 3, 3, 4, 5)),
    "onehot-weights": dict(target="onehot", class_weights=True),
    "binary-11s-float-weights": dict(target="binary", mask="11s-float", class_weights=True),
    "labels-dice-only": dict(target="labels", ignore_index=255, lambdas=(1.0, 0.0)),
    "labels-ce-only-weights": dict(target="labels", ignore_index=255, class_weights=True,
                                   mask="n1s-float", lambdas=(0.0, 1.0)),
    # 4900 pixels per image: several CPU blocks.
    "multiblock-labels-ignore-mask-weights": dict(target="labels", ignore_index=255,
                                                  mask="n1s-bool", class_weights=True,
                                                  shape=(2, 3, 70, 70)),
    "multiblock-soft-weights": dict(target="soft", class_weights=True, shape=(2, 3, 70, 70)),
    # ce_weight: the CE's own class weights, alone or beside class_weights.
    "labels-ignore255-mask-ce-weight": dict(target="labels", ignore_index=255,
                                            mask="n1s-float", ce_weight=True),
    "labels1-uint8-weights-ce-weight-nobg-batch": dict(target="labels1",
                                                       label_dtype=torch.uint8,
                                                       class_weights=True, ce_weight=True,
                                                       include_background=False,
                                                       batch_dice=True),
    "soft-weights-ce-weight-lambdas-3d": dict(target="soft", class_weights=True, ce_weight=True,
                                              lambdas=(0.3, 1.7), shape=(2, 3, 3, 4, 5)),
    "multiblock-labels-ce-weight": dict(target="labels", ignore_index=255, ce_weight=True,
                                        shape=(2, 3, 70, 70)),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("case", COMPOSITE_CASES.keys())
def test_matches_torch_composite(case, activation, reduction, device, gen):
    x, t, options = _case(activation, gen, reduction=reduction, device=device,
                          **COMPOSITE_CASES[case])
    if options["ignore_index"] is not None:
        assert bool((t == options["ignore_index"]).any())
    _check(x, t, options)


@pytest.mark.parametrize("case", ["labels1-int32-ignore255",
                                  "labels-uint8-ignore255-mask-n1s-weights",
                                  "soft-weights-mask-nobg", "multiblock-soft-weights",
                                  "multiblock-labels-ignore-mask-weights",
                                  "soft-weights-ce-weight-lambdas-3d",
                                  "multiblock-labels-ce-weight"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_float32_matches_torch_composite(case, activation, device, gen):
    x, t, options = _case(activation, gen, dtype=torch.float32, device=device,
                          **COMPOSITE_CASES[case])
    _check(x, t, options, tol_dtype=torch.float32)


@pytest.mark.parametrize("activation", ["sigmoid"])
@pytest.mark.parametrize("target", ["labels", "labels1", "bool"])
def test_one_channel_label_map_is_the_binary_mask(target, activation, gen):
    shape = (2, 1, 9, 8)
    x = make_dice_input(activation, shape, gen)
    labels = make_labels((2, 9, 8), 2, gen)
    t = {"labels": labels, "labels1": labels.unsqueeze(1), "bool": labels.bool()}[target]
    options = dict(activation=activation, class_weights=torch.tensor([1.7], dtype=torch.float64))
    _check(x, t, options)
    # the same as the float target holding the mask
    ref_loss, _ = dice_ce_torch(x, labels.unsqueeze(1).double(), **options)
    assert_matches(dice_ce_forward_backward(x, t, **options)[0], ref_loss)


@pytest.mark.parametrize("ce_weight", [False, True], ids=["class-weights", "ce-weight"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_parts_match_dice_numpy_and_torch_ce(activation, reduction, ce_weight, gen):
    # lambda_ce = 0: the NumPy Dice reference (class_weights, never ce_weight);
    # lambda_dice = 0: plain F.cross_entropy / F.binary_cross_entropy_with_logits,
    # no mask, weighted by ce_weight if given, else class_weights.
    x, t, options = _case(activation, gen, target="labels", ignore_index=255,
                          class_weights=True, ce_weight=ce_weight, reduction=reduction,
                          include_background=False, gamma=1.5)
    dice_options = {k: v for k, v in options.items()
                    if not k.startswith("lambda") and k != "ce_weight"}
    g = _grad_output()
    ref_loss, ref_grad = dice_reference(x, t, grad_output=g, **dice_options)
    loss, grad = dice_ce_forward_backward(x, t, g, **dict(options, lambda_ce=0.0))
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)

    xr = x.clone().requires_grad_()
    w = options["ce_weight"] if ce_weight else options["class_weights"]
    if activation == "softmax":
        ce = F.cross_entropy(xr, t, weight=w, ignore_index=255, reduction=reduction)
    else:
        keep = (t != 255).unsqueeze(1).double()
        y = F.one_hot(torch.where(t == 255, 0, t), 3).movedim(-1, 1).double()
        per = F.binary_cross_entropy_with_logits(xr, y, pos_weight=w.view(3, 1, 1),
                                                 reduction="none") * keep
        ce = per.sum() / (keep.sum() * 3) if reduction == "mean" else per.sum()
    (ce_grad,) = torch.autograd.grad(ce, xr, g)
    loss, grad = dice_ce_forward_backward(x, t, g, **dict(options, lambda_dice=0.0))
    assert_matches(loss, ce.detach())
    assert_matches(grad, ce_grad)


def test_dense_softmax_mean_divides_by_pixels_not_weights(gen):
    # Soft targets: F.cross_entropy's probability form, Σ_pixels Σ_c w_c y_c (-log p_c) / #pixels
    # (unlike the label form, whose mean divides by Σ w_{y}).
    shape = (2, 3, 5, 6)
    x = make_dice_input("softmax", shape, gen)
    y = make_dice_target("onehot", shape, gen)
    w = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    expected = F.cross_entropy(x, y, weight=w)
    loss = segloss.dice_ce_loss(x, y, class_weights=w, lambda_dice=0.0)
    assert_matches(loss, expected)
    labels = y.argmax(1)
    assert_matches(segloss.dice_ce_loss(x, labels, class_weights=w, lambda_dice=0.0),
                   F.cross_entropy(x, labels, weight=w))
    assert abs(float(expected) - float(F.cross_entropy(x, labels, weight=w))) > 1e-3


@pytest.mark.parametrize("entry", ["functional", "op", "module"])
@pytest.mark.parametrize("case", ["labels-uint8-ignore255-mask-n1s-weights",
                                  "soft-batch-gamma2-lambdas-3d", "labels-ignore-100-weights-nobg",
                                  "labels1-uint8-weights-ce-weight-nobg-batch"])
def test_entry_points_match_torch_composite(entry, case, gen):
    for activation, reduction in itertools.product(["softmax", "sigmoid"], REDUCTIONS):
        x, t, options = _case(activation, gen, reduction=reduction, **COMPOSITE_CASES[case])
        _check(x, t, options, entry=entry, msg=f"{activation} {reduction}")


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_masked_pixels_get_no_gradient(activation, gen):
    x, t, options = _case(activation, gen, target="labels", ignore_index=255, mask="n1s-float",
                          class_weights=True)
    _, grad = _check(x, t, options)
    excluded = ((options["mask"] == 0) | (t == 255).unsqueeze(1)).expand_as(x)
    assert bool(excluded.any())
    assert bool(grad[excluded].eq(0).all())


# --------------------------------------------------------------------------
# 3. gradcheck and opcheck.

def _gradcheck_cases():
    options = [
        # activation, target, ignore, mask, gamma, batch, bg, weights (see
        # MONAI_VARIANTS), lambdas, reduction
        ("softmax", "labels", None, None, 1.0, False, True, None, (1.0, 1.0), "mean"),
        ("softmax", "labels", 255, "n1s-float", 2.0, True, False, "class", (0.3, 1.7), "sum"),
        ("softmax", "labels1", -100, "11s-bool", 1.7, False, True, "class", (1.0, 1.0), "mean"),
        ("softmax", "soft", None, "n1s-bool", 1.0, True, True, "class", (2.0, 0.5), "mean"),
        ("softmax", "soft", None, None, 2.0, False, False, None, (1.0, 1.0), "sum"),
        ("softmax", "labels", 255, None, 1.0, False, True, "ce", (1.0, 1.0), "mean"),
        ("softmax", "soft", None, "n1s-float", 1.5, False, False, "class+ce", (0.3, 1.7),
         "mean"),
        ("sigmoid", "binary", None, None, 1.0, False, True, "class", (1.0, 1.0), "mean"),
        ("sigmoid", "soft", None, "n1s-float", 2.0, True, False, "class", (0.3, 1.7), "sum"),
        ("sigmoid", "labels", 255, "s-bool", 1.7, False, True, None, (1.0, 1.0), "mean"),
        ("sigmoid", "labels", 0, None, 1.0, True, True, "class", (1.0, 2.0), "sum"),
        ("sigmoid", "binary", None, "11s-bool", 1.0, False, True, "ce", (1.0, 1.0), "mean"),
        ("sigmoid", "labels", 255, None, 2.0, True, True, "class+ce", (1.0, 1.0), "sum"),
    ]
    return [pytest.param(*o, id="-".join(str(v) for v in o)) for o in options]


def _gradcheck(x, t, options, fast_mode):
    x = x.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: segloss.dice_ce_loss(x, t, **options), (x,),
                                    eps=1e-5, atol=1e-8, rtol=1e-6, fast_mode=fast_mode)


@pytest.mark.parametrize("activation,target,ignore,mask,gamma,batch,bg,weights,lambdas,"
                         "reduction", _gradcheck_cases())
def test_gradcheck(activation, target, ignore, mask, gamma, batch, bg, weights, lambdas,
                   reduction, device, gen):
    x, t, options = _case(activation, gen, shape=(2, 3, 3, 4), target=target,
                          ignore_index=ignore, mask=mask, gamma=gamma, batch_dice=batch,
                          include_background=bg, class_weights="class" in (weights or ""),
                          ce_weight="ce" in (weights or ""), lambdas=lambdas,
                          reduction=reduction, device=device)
    _gradcheck(x, t, options, fast_mode=True)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_gradcheck_3d_and_one_channel(activation, device, gen):
    x, t, options = _case(activation, gen, shape=(2, 3, 2, 3, 4), target="labels1",
                          label_dtype=torch.int32, ignore_index=-100, gamma=1.5,
                          batch_dice=True, include_background=False, class_weights=True,
                          mask="11s-float", reduction="sum", device=device)
    _gradcheck(x, t, options, fast_mode=False)
    if activation == "sigmoid":
        x, t, options = _case("sigmoid", gen, shape=(2, 1, 4, 5), target="labels",
                              ignore_index=255, mask="n1s-bool", class_weights=True,
                              device=device)
        _gradcheck(x, t, options, fast_mode=False)
        # MONAI's one-channel DiceCELoss(sigmoid=True, weight=w): ce_weight alone.
        x, t, options = _case("sigmoid", gen, shape=(2, 1, 3, 4, 5), target="binary",
                              ce_weight=True, device=device)
        _gradcheck(x, t, options, fast_mode=False)


# (id, input dtype, shape, activation, gamma, target kind, label dtype, ignore_index, mask,
#  weights (see MONAI_VARIANTS))
OPCHECK_SAMPLES = [
    ("f64-softmax-labels-ignore-mask-w", torch.float64, (2, 3, 4, 5), "softmax", 1.0, "labels",
     torch.int64, 255, "n1s-bool", "class"),
    ("f32-sigmoid-soft-g2", torch.float32, (2, 3, 4, 5), "sigmoid", 2.0, "soft", None, None,
     None, None),
    ("f32-softmax-soft-3d-11s-w-cew", torch.float32, (2, 3, 3, 4, 5), "softmax", 1.5, "soft",
     None, None, "11s-float", "class+ce"),
    ("bf16-sigmoid-C1-labels1-uint8-cew", torch.bfloat16, (2, 1, 6, 7), "sigmoid", 1.0,
     "labels1", torch.uint8, None, None, "ce"),
    ("f16-softmax-1d-int32-ignore-n111", torch.float16, (3, 4, 9), "softmax", 3.0, "labels",
     torch.int32, -100, "n111-float", None),
]


def _opcheck_sample(dtype, shape, activation, gamma, kind, label_dtype, ignore, mask, weights,
                    gen, device):
    return _case(activation, gen, shape=shape, target=kind,
                 label_dtype=label_dtype or torch.int64, ignore_index=ignore, gamma=gamma,
                 mask=mask, class_weights="class" in (weights or ""),
                 ce_weight="ce" in (weights or ""), dtype=dtype, device=device)


@pytest.mark.parametrize("extra", [dict(), dict(batch_dice=True, reduction="sum",
                                                include_background=False, lambda_dice=0.3,
                                                lambda_ce=1.7)],
                         ids=["defaults", "batch-sum-nobg-lambdas"])
@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
def test_opcheck_dice_ce_loss(sample, extra, device, gen):
    x, t, o = _opcheck_sample(*sample[1:], gen, device)
    o.update(extra)
    if x.shape[1] == 1:
        o["include_background"] = True  # False would leave no channel
    torch.library.opcheck(torch.ops.segloss.dice_ce_loss.default, (x.requires_grad_(), t), o)


@pytest.mark.parametrize("cross_entropy", [False, True])
@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
def test_opcheck_dice_sums_cross_entropy(sample, cross_entropy, device, gen):
    x, t, o = _opcheck_sample(*sample[1:], gen, device)
    args = (t, o["activation"], o["gamma"], o["ignore_index"], o["mask"], cross_entropy)
    torch.library.opcheck(torch.ops.segloss._dice_sums.default, (x.requires_grad_(),) + args)
    sums = torch.ops.segloss._dice_sums(x.detach(), *args)
    sums_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    assert sums.shape == x.shape[:2] + (8 if cross_entropy else 3,)
    assert sums.dtype == sums_dtype
    # The first three columns are Dice's (I, P, T) either way.
    expected = dice_sums_torch(x.detach().to("cpu", torch.float64), t, *args[1:5])
    assert_matches(sums[..., :3], expected, torch.float64 if x.dtype == torch.float64
                   else torch.float32)


# --------------------------------------------------------------------------
# 4. torch.compile and TorchScript: exactly eager.

@pytest.fixture
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _run(fn, x, t, mask, w):
    x = x.detach().clone().requires_grad_()
    loss = fn(x, t, mask, w)
    (grad,) = torch.autograd.grad(loss, x, _grad_output(x.dtype, x.device))
    return loss.detach(), grad


COMPILE_CASES = {
    "softmax-labels-ignore-mask-weights": dict(
        activation="softmax", target="labels", ignore_index=255, mask="n1s-bool",
        class_weights=True, gamma=1.5),
    "softmax-soft-batch-nobg-sum-3d": dict(
        activation="softmax", target="soft", batch_dice=True, include_background=False,
        reduction="sum", shape=(2, 3, 3, 4, 5), lambdas=(0.3, 1.7)),
    "sigmoid-binary-11s-weights-gamma2": dict(
        activation="sigmoid", target="binary", mask="11s-float", class_weights=True, gamma=2.0),
    "softmax-labels-weights-ce-weight": dict(
        activation="softmax", target="labels", ignore_index=255, class_weights=True,
        ce_weight=True),
    "sigmoid-C1-binary-ce-weight-3d": dict(
        activation="sigmoid", target="binary", ce_weight=True, shape=(2, 1, 3, 4, 5)),
}


@pytest.mark.parametrize("case", COMPILE_CASES.keys())
def test_aot_eager_equals_eager(case, gen, _fresh_dynamo):
    spec = dict(COMPILE_CASES[case])
    activation = spec.pop("activation")
    x, t, o = _case(activation, gen, dtype=torch.float32, **spec)
    mask, w = o.pop("mask"), o.pop("class_weights")

    def fn(x, t, mask, w):
        return segloss.dice_ce_loss(x, t, mask=mask, class_weights=w, **o)

    module = segloss.nn.DiceCELoss(class_weights=w, **o)

    def module_fn(x, t, mask, w):
        return module(x, t, mask)

    for f in (fn, module_fn):
        compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
        expected = _run(f, x, t, mask, w)
        actual = _run(compiled, x, t, mask, w)
        for a, e in zip(actual, expected):
            assert a.shape == e.shape and a.dtype == e.dtype
            assert torch.equal(a, e), (a - e).abs().max()
    # and eager is right
    ref, _ = dice_ce_torch(x, t, mask=mask, class_weights=w, **o)
    assert_matches(expected[0], ref, torch.float32)


class DiceCEModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.multiclass = segloss.nn.DiceCELoss(
            activation="softmax", gamma=1.5, batch_dice=True, include_background=False,
            class_weights=torch.tensor([7.0, 0.5, 2.0]), ignore_index=255, lambda_dice=0.3,
            lambda_ce=1.7, reduction="sum", ce_weight=torch.tensor([1.5, 0.25, 3.0]))
        self.binary = segloss.nn.DiceCELoss(activation="sigmoid", gamma=2.0, smooth_nr=0.0,
                                            smooth_dr=1e-3)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor,
                mask: torch.Tensor):
        a = self.multiclass(x, labels)
        b = self.binary(x[:, 1:2], y, mask)
        return a + b, a


def test_scripted_dice_ce_equals_eager(gen, tmp_path):
    shape = (2, 3, 9, 11)
    x = make_dice_input("softmax", shape, gen, torch.float32)
    labels = make_labels((2, 9, 11), 3, gen, ignore_index=255)
    y = make_dice_target("binary", (2, 1, 9, 11), gen, torch.float32)
    mask = make_mask("n1s-bool", shape, gen)
    model = DiceCEModel()
    scripted = torch.jit.script(model)
    scripted.save(str(tmp_path / "model.pt"))
    loaded = torch.jit.load(str(tmp_path / "model.pt"))

    def run(m):
        xr = x.clone().requires_grad_()
        total, a = m(xr, labels, y, mask)
        total.backward()
        return total.detach(), a.detach(), xr.grad

    expected = run(model)
    for m in (scripted, loaded):
        for r, e in zip(run(m), expected):
            assert r.dtype == e.dtype and r.shape == e.shape
            assert torch.equal(r, e), (r - e).abs().max()
    # and eager is right
    ref, _ = dice_ce_torch(x, labels, activation="softmax", gamma=1.5, batch_dice=True,
                           include_background=False,
                           class_weights=torch.tensor([7.0, 0.5, 2.0]), ignore_index=255,
                           lambda_dice=0.3, lambda_ce=1.7, reduction="sum",
                           ce_weight=torch.tensor([1.5, 0.25, 3.0]))
    assert_matches(expected[1], ref, torch.float32)


# --------------------------------------------------------------------------
# 5. Half precision: sums in float32, the result in the input's dtype.

@pytest.mark.parametrize("weights", ["class", "class+ce"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("activation,target", [("softmax", "labels"), ("softmax", "soft"),
                                               ("sigmoid", "binary")])
def test_half_precision(activation, target, dtype, weights, device, gen):
    shape = (2, 4, 64, 64)
    ignore = 255 if target == "labels" else None
    x = make_dice_input(activation, shape, gen, torch.float32).to(device, dtype)
    t = make_dice_target(target, shape, gen, None if target == "labels" else dtype, device,
                         ignore_index=ignore)
    options = dict(activation=activation, ignore_index=ignore,
                   mask=make_mask("n1s-float", shape, gen, device), gamma=1.5,
                   **_weight_options(weights, 4, gen, dtype, device))
    g = torch.tensor(1.0, dtype=dtype, device=device)
    loss, grad = dice_ce_forward_backward(x, t, g, **options)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
    # The reference sees the operands as rounded to dtype.
    ref_loss, ref_grad = dice_ce_torch(x, t, grad_output=g.double(), **options)
    tol = 1e-2 if dtype == torch.float16 else 2 ** -7 * max(1.0, abs(float(ref_loss)))
    assert abs(float(loss) - float(ref_loss)) <= tol, (float(loss), float(ref_loss))
    scale = float(ref_grad.abs().max())
    torch.testing.assert_close(grad.double().cpu(), ref_grad, rtol=1e-2, atol=1e-2 * scale)


# --------------------------------------------------------------------------
# 5b. Infinite logits and empty means (found by tests/test_fuzz.py).

def _loss_and_grad(x, t, **options):
    leaf = x.detach().clone().requires_grad_()
    loss = segloss.dice_ce_loss(leaf, t, **options)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


@pytest.mark.parametrize("lambda_ce", [1.0, 0.0])
def test_minus_inf_logit_of_another_class_is_finite(lambda_ce):
    # Only the target's logit enters F.cross_entropy with class indices; a
    # class without target mass must not make the sums 0 * inf = NaN.
    x = torch.tensor([[[-float("inf"), 0.3, 2.0], [1.6, -float("inf"), 0.5],
                       [0.1, 0.2, -float("inf")]]], dtype=torch.float64)
    t = torch.tensor([[1, 0, 1]])
    options = dict(lambda_ce=lambda_ce)
    loss, grad = _loss_and_grad(x, t, **options)
    ref_loss, ref_grad = dice_ce_torch(x, t, grad_output=torch.tensor(1.0, dtype=torch.float64),
                                       **options)
    assert torch.isfinite(ref_loss) and torch.isfinite(ref_grad).all()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


def test_minus_inf_logit_with_soft_target_takes_zero_log_zero_as_zero():
    # A probability target with mass 0 on a class of logit -inf: 0 log 0 = 0
    # (PyTorch's probability form gives 0 * -inf = NaN; the limit is finite).
    x = torch.tensor([[[-float("inf")], [1.6], [0.2]]], dtype=torch.float64)
    t = torch.tensor([[[0.0], [0.7], [0.3]]], dtype=torch.float64)
    loss, grad = _loss_and_grad(x, t, lambda_dice=0.0)
    finite_x = x[:, 1:]
    expected = -(t[:, 1:] * F.log_softmax(finite_x, 1)).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    assert torch.isfinite(grad).all() and grad[0, 0, 0] == 0


def test_minus_inf_logit_of_a_class_of_weight_zero_is_finite():
    # A probability target with mass on a class of logit -inf whose ce_weight
    # is 0: the weighted mass w_c y_c is 0, so the class adds nothing (0 log
    # 0 = 0 again; PyTorch's probability form gives 0 * inf = NaN). Found by
    # the long fuzz profile.
    x = torch.tensor([[[0.5, 1.0], [-float("inf"), 0.2], [1.0, -0.4]]], dtype=torch.float64)
    t = torch.tensor([[[0.3, 0.1], [0.5, 0.6], [0.2, 0.3]]], dtype=torch.float64)
    w = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    loss, grad = _loss_and_grad(x, t, lambda_dice=0.0, ce_weight=w)
    wt = t * w.view(1, 3, 1)
    finite_x = x.clamp_min(-1e300).requires_grad_()
    expected = -(wt * F.log_softmax(finite_x, 1)).sum(1).mean()
    (expected_grad,) = torch.autograd.grad(expected, finite_x)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("logit", [-float("inf"), float("inf")])
@pytest.mark.parametrize("label", [0.0, 1.0])
def test_sigmoid_infinite_logits_as_torch(logit, label):
    # The sigmoid CE is F.binary_cross_entropy_with_logits, also at +-inf
    # (NaN where it computes -inf + inf or 0 * inf), like segloss.bce_loss.
    x = torch.tensor([[[logit, 0.5]]], dtype=torch.float64)
    t = torch.tensor([[[label, 1.0]]], dtype=torch.float64)
    loss = segloss.dice_ce_loss(x, t, activation="sigmoid", lambda_dice=0.0)
    expected = F.binary_cross_entropy_with_logits(x, t)
    torch.testing.assert_close(loss, expected, equal_nan=True, rtol=1e-12, atol=0)
    torch.testing.assert_close(segloss.binary_cross_entropy_with_logits(x, t), expected,
                               equal_nan=True, rtol=1e-12, atol=0)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_empty_cross_entropy_mean_gives_no_gradient_where_nothing_counts(activation, gen):
    # Every pixel ignored but one, whose class is weighted 0 (softmax) or
    # every pixel masked (sigmoid): the CE's mean divides by 0 and is NaN, as
    # in PyTorch, but the pixels that do not count get gradient 0, as
    # F.cross_entropy's ignore_index gives.
    shape = (1, 3, 2, 3)
    x = make_dice_input(activation, shape, gen)
    t = torch.full((1, 2, 3), 255)
    t[0, 0, 0] = 2
    if activation == "softmax":
        options = dict(ignore_index=255, class_weights=torch.tensor([1.0, 1.0, 0.0],
                                                                     dtype=torch.float64))
        counted = t != 255
    else:
        t = torch.clamp(t, max=2)
        options = dict(mask=torch.zeros((1, 1, 2, 3)))
        counted = torch.zeros_like(t, dtype=torch.bool)
    loss, grad = _loss_and_grad(x, t, activation=activation, **options)
    ref_loss, ref_grad = dice_ce_torch(x, t, activation=activation,
                                       grad_output=torch.tensor(1.0, dtype=torch.float64),
                                       **options)
    assert torch.isnan(loss) and torch.isnan(ref_loss)
    out = ~counted.unsqueeze(1).expand(shape)
    assert (grad[out] == 0).all() and (ref_grad[out] == 0).all()


# --------------------------------------------------------------------------
# 6. Errors.

def _error_data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=gen)
    labels = torch.randint(0, 3, (2, 4, 5), generator=gen)
    return x, labels


@pytest.mark.parametrize("entry", ["functional", "op", "module"])
@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(activation="none"), ValueError, "activation must be 'sigmoid' or 'softmax'"),
    (dict(activation="relu"), ValueError, "activation must be 'sigmoid' or 'softmax'"),
    (dict(reduction="none"), ValueError, "reduction must be 'mean' or 'sum'"),
    (dict(reduction="avg"), ValueError, "reduction must be 'mean' or 'sum'"),
    (dict(smooth_dr=1e-100), ValueError, "smooth_dr = 1e-100 is below the smallest normal "
     "float32"),
    (dict(lambda_dice=-1.0), ValueError, "lambda_dice must be >= 0, got -1"),
    (dict(lambda_ce=-0.5), ValueError, "lambda_ce must be >= 0, got -0.5"),
], ids=["activation-none", "activation-relu", "reduction-none", "reduction-avg",
        "tiny-smooth-dr", "lambda-dice", "lambda-ce"])
def test_bad_options(entry, kwargs, exc, message):
    x, labels = _error_data()
    if entry == "module" and ("lambda_dice" in kwargs or "lambda_ce" in kwargs):
        message = "lambda_dice and lambda_ce must be >= 0"  # checked on construction
    with pytest.raises(exc, match=re.escape(message)):
        if entry == "functional":
            segloss.dice_ce_loss(x, labels, **kwargs)
        elif entry == "op":
            torch.ops.segloss.dice_ce_loss(x, labels, **kwargs)
        else:
            segloss.nn.DiceCELoss(**kwargs)(x, labels)


@pytest.mark.parametrize("entry", ["functional", "op", "module"])
@pytest.mark.parametrize("ce_weight,exc,message", [
    (torch.ones(2), RuntimeError, "segloss.dice_ce_loss: ce_weight must have shape [C] = [3] "
     "(one weight per channel of the input), got [2]"),
    (torch.ones(3, 1), RuntimeError, "segloss.dice_ce_loss: ce_weight must have shape [C] = [3]"),
    (torch.ones(3, dtype=torch.long), TypeError, "segloss.dice_ce_loss: ce_weight must be a "
     "float32, float64, float16 or bfloat16 tensor, got Long"),
    (torch.ones(3, device="meta"), RuntimeError,
     "segloss.dice_ce_loss: ce_weight is on meta but input is on cpu"),
], ids=["length", "2d", "long", "device"])
def test_bad_ce_weight(entry, ce_weight, exc, message):
    x, labels = _error_data()
    with pytest.raises(exc, match=re.escape(message)):
        if entry == "functional":
            segloss.dice_ce_loss(x, labels, ce_weight=ce_weight)
        elif entry == "op":
            torch.ops.segloss.dice_ce_loss(x, labels, ce_weight=ce_weight)
        else:
            segloss.nn.DiceCELoss(ce_weight=ce_weight)(x, labels)


def test_module_state_dtype_and_repr(gen):
    w, ce_w = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.25, 1.0, 4.0])
    module = segloss.nn.DiceCELoss(class_weights=w, ignore_index=255, ce_weight=ce_w)
    assert set(module.state_dict()) == {"class_weights", "ce_weight"}
    assert repr(module) == (
        "DiceCELoss(activation='softmax', gamma=1.0, batch_dice=False, include_background=True, "
        "lambda_dice=1.0, lambda_ce=1.0, class_weights=Tensor[3], ignore_index=255, "
        "ce_weight=Tensor[3], reduction='mean')")
    assert "ce_weight" not in repr(segloss.nn.DiceCELoss())
    module = module.to(torch.float64)
    assert module.class_weights.dtype == module.ce_weight.dtype == torch.float64
    x, t, options = _case("softmax", gen, target="labels", ignore_index=255)
    options.update(class_weights=w, ce_weight=ce_w)
    _check(x, t, options, entry="module")


@pytest.mark.parametrize("entry", ["functional", "op"])
@pytest.mark.parametrize("bad", [3, -1], ids=["too-big", "negative"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_bad_class_index(activation, bad, entry):
    x, labels = _error_data()
    labels[1, 3, 4] = bad
    fn = segloss.dice_ce_loss if entry == "functional" else torch.ops.segloss.dice_ce_loss
    with pytest.raises(RuntimeError, match=re.escape("class indices in target must lie in [0, 3)")):
        fn(x, labels, activation=activation)
    # fine once ignored
    fn(x, labels, activation=activation, ignore_index=bad)


@pytest.mark.parametrize("target", ["labels", "dense"])
def test_softmax_over_one_channel_is_refused(target):
    # A softmax over one channel is 1 everywhere; the CE would read a label
    # map as a binary mask where F.cross_entropy allows only the label 0.
    x = torch.randn(2, 1, 4, 5)
    t = torch.zeros(2, 4, 5, dtype=torch.int64) if target == "labels" else torch.rand(2, 1, 4, 5)
    with pytest.raises(ValueError, match=re.escape(
            "activation='softmax' needs at least 2 channels, got input of shape [2, 1, 4, 5]")):
        segloss.dice_ce_loss(x, t)
    segloss.dice_ce_loss(x, t, activation="sigmoid")


@pytest.mark.parametrize("argument", ["target", "mask"])
def test_gradient_of_target_and_mask_is_refused(argument, gen):
    shape = (2, 3, 6, 7)
    x = make_dice_input("softmax", shape, gen).requires_grad_()
    args = {"target": make_dice_target("soft", shape, gen),
            "mask": make_mask("n1s-float", shape, gen).double()}
    args[argument].requires_grad_()
    with pytest.raises(RuntimeError, match=f"gradient with respect to {argument}"):
        segloss.dice_ce_loss(x, args["target"], mask=args["mask"])
    args[argument] = args[argument].detach()
    segloss.dice_ce_loss(x, args["target"], mask=args["mask"])


@pytest.mark.parametrize("loss_name", ["dice_loss", "dice_ce_loss"])
def test_autocast_computes_in_float32(loss_name, gen):
    # Under autocast the Dice losses run in float32 and return float32, as
    # PyTorch's own losses do; the reference is the float64 composite on the
    # same (bfloat16-rounded) values.
    x = torch.randn(2, 3, 9, 7, generator=gen).to(torch.bfloat16)
    labels = torch.randint(0, 3, (2, 9, 7), generator=gen)
    loss_fn = getattr(segloss, loss_name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(x, labels, activation="softmax")
    assert loss.dtype == torch.float32
    x64 = x.double()
    if loss_name == "dice_loss":
        expected = dice_torch(x64, labels, activation="softmax")[0]
    else:
        expected = dice_ce_torch(x64, labels, activation="softmax")[0]
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
