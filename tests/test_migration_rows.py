"""The README's migration rows for segmentation_models_pytorch 0.6, nnU-Net
v2 and pytorch-toolbelt 0.8, checked against those libraries' own losses
(float64, values and gradients).

They are installed without their dependencies (``./dev``): the loss modules
used need torch alone. smp's package ``__init__`` imports its encoders (timm,
torchvision), so its ``losses`` subpackage is imported under a stand-in
parent package; toolbelt's ``losses`` package imports OpenCV, so its
``balanced_bce.py`` is loaded from its file. The tests skip where a library
is absent (the GPU machine).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import pytest
import torch

import segloss.nn as snn


def _import_smp_losses():
    """smp's ``losses`` subpackage, without running smp's ``__init__``."""
    spec = importlib.util.find_spec("segmentation_models_pytorch")
    if spec is None:
        return None
    saved = {k: v for k, v in sys.modules.items() if k.startswith("segmentation_models_pytorch")}
    stand_in = types.ModuleType("segmentation_models_pytorch")
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules["segmentation_models_pytorch"] = stand_in
    try:
        return importlib.import_module("segmentation_models_pytorch.losses")
    finally:
        # Leave no stand-in behind; the imported classes keep their modules.
        for name in [k for k in sys.modules if k.startswith("segmentation_models_pytorch")]:
            del sys.modules[name]
        sys.modules.update(saved)


def _load_toolbelt_balanced_bce():
    """pytorch-toolbelt's balanced_bce.py (torch only), without its package."""
    spec = importlib.util.find_spec("pytorch_toolbelt")
    if spec is None:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "losses", "balanced_bce.py")
    module_spec = importlib.util.spec_from_file_location("toolbelt_balanced_bce", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


smp = _import_smp_losses()
toolbelt = _load_toolbelt_balanced_bce()
try:
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss, SoftDiceLoss
except ImportError:
    SoftDiceLoss = None

needs_smp = pytest.mark.skipif(smp is None, reason="needs segmentation_models_pytorch")
needs_nnunet = pytest.mark.skipif(SoftDiceLoss is None, reason="needs nnunetv2")
needs_toolbelt = pytest.mark.skipif(toolbelt is None, reason="needs pytorch-toolbelt")

SHAPES = [(3, 4, 7, 6), (2, 3, 4, 5, 3)]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(20261206)


def _logits(shape, gen):
    return (2.0 * torch.randn(shape, generator=gen, dtype=torch.float64)).requires_grad_()


def _labels(shape, classes, gen):
    """A label map [N, *spatial] in which every class occurs (smp zeroes the
    classes absent from the batch; that rule has its own test)."""
    labels = torch.randint(0, classes, shape, generator=gen)
    labels.view(-1)[:classes] = torch.arange(classes)
    return labels


def _one_hot_targets(shape, gen):
    """Independent 0/1 channels, each with a 1 and a 0 somewhere."""
    y = (torch.rand(shape, generator=gen, dtype=torch.float64) < 0.4).double()
    y[0, :, 0] = 1.0
    y[0, :, 1] = 0.0
    return y


def _soft_targets(shape, gen):
    y = torch.rand(shape, generator=gen, dtype=torch.float64)
    y[y < 0.2] = 0.0
    return y


def assert_same_loss_and_grad(ours_fn, theirs_fn, x, rtol=1e-12, atol=1e-12):
    """ours_fn(x) == theirs_fn(x) in value and in gradient with respect to x."""
    ours = ours_fn(x)
    (grad_ours,) = torch.autograd.grad(ours, x)
    theirs = theirs_fn(x)
    (grad_theirs,) = torch.autograd.grad(theirs, x)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=rtol, atol=atol)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------
# segmentation_models_pytorch 0.6


@needs_smp
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["binary", "multilabel"])
@pytest.mark.parametrize("smooth", [0.0, 0.7])
def test_smp_dice_sigmoid(shape, mode, smooth, gen):
    if mode == "binary":
        shape = (shape[0], 1) + shape[2:]
    x = _logits(shape, gen)
    y = _one_hot_targets(shape, gen)
    theirs = smp.DiceLoss(mode, smooth=smooth)
    ours = snn.DiceLoss(activation="sigmoid", batch_dice=True, smooth_nr=2 * smooth,
                        smooth_dr=2 * smooth)
    assert_same_loss_and_grad(lambda v: ours(v, y), lambda v: theirs(v, y), x)


@needs_smp
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ignore_index", [None, 255])
@pytest.mark.parametrize("smooth", [0.0, 0.7])
def test_smp_dice_multiclass_label_map(shape, ignore_index, smooth, gen):
    x = _logits(shape, gen)
    t = _labels((shape[0],) + shape[2:], shape[1], gen)
    if ignore_index is not None:
        t[torch.rand(t.shape, generator=gen) < 0.3] = ignore_index
        t.view(-1)[: shape[1]] = torch.arange(shape[1])
    theirs = smp.DiceLoss("multiclass", ignore_index=ignore_index, smooth=smooth)
    ours = snn.DiceLoss(activation="softmax", batch_dice=True, ignore_index=ignore_index,
                        smooth_nr=2 * smooth, smooth_dr=2 * smooth)
    assert_same_loss_and_grad(lambda v: ours(v, t), lambda v: theirs(v, t), x)


@needs_smp
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("smooth", [0.0, 0.7])
def test_smp_jaccard(shape, smooth, gen):
    x = _logits(shape, gen)
    y = _one_hot_targets(shape, gen)
    theirs = smp.JaccardLoss("multilabel", smooth=smooth)
    ours = snn.JaccardLoss(activation="sigmoid", batch_dice=True, smooth_nr=2 * smooth,
                           smooth_dr=2 * smooth)
    assert_same_loss_and_grad(lambda v: ours(v, y), lambda v: theirs(v, y), x)


@needs_smp
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha, beta", [(0.3, 0.7), (0.8, 0.4)])
@pytest.mark.parametrize("smooth", [0.0, 0.7])
def test_smp_tversky(shape, alpha, beta, smooth, gen):
    x = _logits(shape, gen)
    t = _labels((shape[0],) + shape[2:], shape[1], gen)
    theirs = smp.TverskyLoss("multiclass", alpha=alpha, beta=beta, smooth=smooth)
    ours = snn.TverskyLoss(activation="softmax", alpha=alpha, beta=beta, batch_dice=True,
                           smooth_nr=smooth, smooth_dr=smooth)
    assert_same_loss_and_grad(lambda v: ours(v, t), lambda v: theirs(v, t), x)


@needs_smp
@pytest.mark.parametrize("shape", SHAPES)
def test_smp_tversky_gamma(shape, gen):
    # One class: smp's gamma is our focal_gamma.
    binary_shape = (shape[0], 1) + shape[2:]
    x = _logits(binary_shape, gen)
    y = _one_hot_targets(binary_shape, gen)
    theirs = smp.TverskyLoss("binary", alpha=0.3, beta=0.7, gamma=1.6)
    ours = snn.TverskyLoss(activation="sigmoid", alpha=0.3, beta=0.7, focal_gamma=1.6,
                           batch_dice=True, smooth_nr=0.0, smooth_dr=0.0)
    assert_same_loss_and_grad(lambda v: ours(v, y), lambda v: theirs(v, y), x)
    # Several classes: smp raises the mean over classes to gamma, we each term.
    x = _logits(shape, gen)
    t = _labels((shape[0],) + shape[2:], shape[1], gen)
    theirs = smp.TverskyLoss("multiclass", alpha=0.3, beta=0.7, gamma=1.6)
    per_class = snn.TverskyLoss(activation="softmax", alpha=0.3, beta=0.7, batch_dice=True,
                                smooth_nr=0.0, smooth_dr=0.0, reduction="none")
    assert_same_loss_and_grad(lambda v: per_class(v, t).mean() ** 1.6,
                              lambda v: theirs(v, t), x)
    ours = snn.TverskyLoss(activation="softmax", alpha=0.3, beta=0.7, focal_gamma=1.6,
                           batch_dice=True, smooth_nr=0.0, smooth_dr=0.0)
    assert not torch.allclose(ours(x, t), theirs(x, t), rtol=1e-3)


@needs_smp
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("loss", ["dice", "jaccard", "tversky"])
def test_smp_soft_targets(shape, loss, gen):
    x = _logits(shape, gen)
    y = _soft_targets(shape, gen)
    if loss == "dice":
        theirs = smp.DiceLoss("multilabel", smooth=0.5)
        ours = snn.DiceLoss(batch_dice=True, smooth_nr=1.0, smooth_dr=1.0, soft_label=True)
    elif loss == "jaccard":
        theirs = smp.JaccardLoss("multilabel", smooth=0.5)
        ours = snn.JaccardLoss(batch_dice=True, smooth_nr=1.0, smooth_dr=1.0, soft_label=True)
    else:
        theirs = smp.TverskyLoss("multilabel", alpha=0.3, beta=0.7, smooth=0.5)
        ours = snn.TverskyLoss(alpha=0.3, beta=0.7, batch_dice=True, smooth_nr=0.5,
                               smooth_dr=0.5, soft_label=True)
    assert_same_loss_and_grad(lambda v: ours(v, y), lambda v: theirs(v, y), x)


@needs_smp
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("classes", [None, "foreground"])
@pytest.mark.parametrize("weighted", [False, True])
def test_smp_class_options(shape, classes, weighted, gen):
    # from_logits=False takes probabilities: activation="none".
    c = shape[1]
    x = torch.softmax(_logits(shape, gen), 1).detach().requires_grad_()
    t = _labels((shape[0],) + shape[2:], c, gen)
    w = torch.rand(c, generator=gen, dtype=torch.float64) + 0.2
    kept = list(range(1, c)) if classes else list(range(c))
    theirs = smp.DiceLoss("multiclass", from_logits=False, smooth=0.3,
                          classes=kept if classes else None,
                          class_weights=w.tolist() if weighted else None)
    # smp divides by the kept classes' weight sum, we take the mean.
    ours_w = w * len(kept) / w[kept].sum() if weighted else None
    ours = snn.DiceLoss(activation="none", batch_dice=True, smooth_nr=0.6, smooth_dr=0.6,
                        include_background=not classes, class_weights=ours_w)
    # smp keeps its weights in float32 (rtol 1e-7 covers them).
    rtol = 1e-6 if weighted else 1e-12
    assert_same_loss_and_grad(lambda v: ours(v, t), lambda v: theirs(v, t), x, rtol=rtol)


@needs_smp
@pytest.mark.parametrize("loss", ["dice", "jaccard"])
def test_smp_zeroes_classes_absent_from_target(loss, gen):
    # Channel 2 occurs nowhere in the batch's target: smp scores its loss 0,
    # we score it (with the smoothing, 1 - s / (P + s) here).
    shape = (2, 3, 6, 5)
    x = _logits(shape, gen)
    y = _one_hot_targets(shape, gen)
    y[:, 2] = 0.0
    theirs = (smp.DiceLoss if loss == "dice" else smp.JaccardLoss)("multilabel", smooth=0.5)
    per_class = (snn.DiceLoss if loss == "dice" else snn.JaccardLoss)(
        batch_dice=True, smooth_nr=1.0, smooth_dr=1.0, reduction="none")
    present = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    assert_same_loss_and_grad(lambda v: (per_class(v, y) * present).mean(),
                              lambda v: theirs(v, y), x)
    assert per_class(x, y)[2] > 0.1


@needs_smp
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("smooth_factor", [None, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_smp_soft_bce_with_logits(shape, smooth_factor, reduction, gen):
    x = _logits(shape, gen)
    y = _one_hot_targets(shape, gen)
    y[torch.rand(shape, generator=gen) < 0.2] = -100.0  # smp's default ignore_index
    pos_weight = torch.rand(shape[1], *[1] * (len(shape) - 2), generator=gen,
                            dtype=torch.float64) + 0.5
    theirs = smp.SoftBCEWithLogitsLoss(pos_weight=pos_weight, smooth_factor=smooth_factor,
                                       reduction=reduction)
    kept = (y != -100).double()
    target = y * kept
    if smooth_factor is not None:
        target = target * (1 - smooth_factor) + (1 - target) * smooth_factor
    ours = snn.BCEWithLogitsLoss(weight=kept, pos_weight=pos_weight, reduction=reduction)
    assert_same_loss_and_grad(lambda v: ours(v, target), lambda v: theirs(v, y), x)


# --------------------------------------------------------------------------
# nnU-Net v2 (2.8.1). Its sums are float32 (sum(dtype=torch.float32)) and so
# its Dice is float32 whatever the input: float64 inputs agree to about 3e-6.
NNUNET_RTOL = 2e-5
NNUNET_ATOL = 1e-6
NNUNET_DICE = {"SoftDiceLoss": SoftDiceLoss,
               "MemoryEfficientSoftDiceLoss": MemoryEfficientSoftDiceLoss
               if SoftDiceLoss is not None else None}


def _softmax_dim1(x):
    return torch.softmax(x, 1)  # nnU-Net's softmax_helper_dim1


@needs_nnunet
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dice_class", NNUNET_DICE)
@pytest.mark.parametrize("nonlin", ["none", "softmax"])
@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("target_form", ["label map", "one-hot"])
def test_nnunet_soft_dice(shape, dice_class, nonlin, batch_dice, target_form, gen):
    x = _logits(shape, gen)
    if nonlin == "none":  # nnU-Net's default: the input is taken as given
        x = torch.softmax(x, 1).detach().requires_grad_()
    labels = _labels((shape[0], 1) + shape[2:], shape[1], gen)
    if target_form == "label map":
        ours_target, their_target = labels, labels.double()
    else:
        ours_target = torch.zeros(shape, dtype=torch.float64).scatter_(1, labels, 1.0)
        their_target = ours_target
    theirs = NNUNET_DICE[dice_class](
        apply_nonlin=_softmax_dim1 if nonlin == "softmax" else None, batch_dice=batch_dice,
        do_bg=False, smooth=1e-5, ddp=False)
    ours = snn.DiceLoss(activation=nonlin, batch_dice=batch_dice, include_background=False,
                        smooth_nr=1e-5, smooth_dr=1e-5)
    # nnU-Net returns -dice; ours is 1 - dice.
    assert_same_loss_and_grad(lambda v: ours(v, ours_target),
                              lambda v: 1.0 + theirs(v, their_target), x,
                              rtol=NNUNET_RTOL, atol=NNUNET_ATOL)


@needs_nnunet
@pytest.mark.parametrize("dice_class", NNUNET_DICE)
def test_nnunet_soft_dice_unsmoothed_empty(dice_class):
    # smooth=0 and an (image, class) with nothing predicted and nothing true:
    # nnU-Net clips 0/0 to a Dice of 0, ours scores it perfect (loss 0).
    p = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    p[:, 0] = 0.25
    p[:, 1] = 0.75  # class 2: no probability anywhere, and no label below
    labels = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    labels[:, :, :2] = 1
    theirs = NNUNET_DICE[dice_class](batch_dice=False, do_bg=False, smooth=0.0, ddp=False)
    ours = snn.DiceLoss(activation="none", include_background=False, smooth_nr=0.0,
                        smooth_dr=0.0, reduction="none")
    per_image = ours(p, labels)
    assert torch.equal(per_image[:, 1], torch.zeros(2, dtype=torch.float64))
    their_dice = -theirs(p, labels.double())
    ours_dice_clipped = (1.0 - per_image[:, 0]).sum() / 4  # class 2's Dice counted as 0
    torch.testing.assert_close(their_dice.double(), ours_dice_clipped, rtol=1e-6, atol=0)


@needs_nnunet
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dice_class", NNUNET_DICE)
@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("ignore_label", [None, 7])
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.4, 1.5)])
def test_nnunet_dc_and_ce(shape, dice_class, batch_dice, ignore_label, weights, gen):
    # The trainer's loss: DC_and_CE_loss(..., dice_class=MemoryEfficientSoftDiceLoss).
    weight_ce, weight_dice = weights
    x = _logits(shape, gen)
    labels = _labels((shape[0], 1) + shape[2:], shape[1], gen)
    if ignore_label is not None:
        labels[torch.rand(labels.shape, generator=gen) < 0.3] = ignore_label
    theirs = DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False,
                             "ddp": False}, {}, weight_ce=weight_ce, weight_dice=weight_dice,
                            ignore_label=ignore_label, dice_class=NNUNET_DICE[dice_class])
    ours = snn.DiceCELoss(include_background=False, batch_dice=batch_dice, smooth_nr=1e-5,
                          smooth_dr=1e-5, lambda_ce=weight_ce, lambda_dice=weight_dice,
                          ignore_index=ignore_label)
    # nnU-Net adds -dice, we add 1 - dice.
    assert_same_loss_and_grad(lambda v: ours(v, labels),
                              lambda v: weight_dice + theirs(v, labels.double()), x,
                              rtol=NNUNET_RTOL, atol=NNUNET_ATOL)


@needs_nnunet
def test_nnunet_dc_and_ce_everything_ignored(gen):
    x = _logits((2, 3, 4, 4), gen)
    labels = torch.full((2, 1, 4, 4), 7, dtype=torch.long)
    theirs = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
                            {}, ignore_label=7, dice_class=MemoryEfficientSoftDiceLoss)
    ours = snn.DiceCELoss(include_background=False, batch_dice=True, ignore_index=7)
    assert theirs(x, labels.double()).item() == -1.0  # the CE skipped, a perfect Dice
    assert torch.isnan(ours(x, labels))  # the CE's 0/0, as torch's and MONAI's


@needs_nnunet
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("ignore_channel", [False, True])
def test_nnunet_dc_and_bce_regions(shape, batch_dice, ignore_channel, gen):
    # Region-based training: sigmoid over C region channels, one-hot targets
    # with, where the dataset has an ignore label, one more channel marking it.
    c = shape[1]
    x = _logits(shape, gen)
    target = _one_hot_targets((shape[0], c + 1) + shape[2:], gen)
    theirs = DC_and_BCE_loss({}, {"batch_dice": batch_dice, "do_bg": True, "smooth": 1e-5,
                                  "ddp": False},
                             use_ignore_label=ignore_channel,
                             dice_class=MemoryEfficientSoftDiceLoss)
    regions = target[:, :c]
    if ignore_channel:
        # nnU-Net divides the masked BCE sum by the counted pixels, not
        # elements: C times our masked mean.
        mask, lambda_ce, their_target = 1.0 - target[:, c:], float(c), target
    else:
        mask, lambda_ce, their_target = None, 1.0, regions
    ours = snn.DiceCELoss(activation="sigmoid", batch_dice=batch_dice, smooth_nr=1e-5,
                          smooth_dr=1e-5, lambda_ce=lambda_ce)
    assert_same_loss_and_grad(lambda v: ours(v, regions, mask=mask),
                              lambda v: 1.0 + theirs(v, their_target), x,
                              rtol=NNUNET_RTOL, atol=NNUNET_ATOL)


# --------------------------------------------------------------------------
# pytorch-toolbelt 0.8


@needs_toolbelt
@pytest.mark.parametrize("shape", [(3, 1, 7, 6), (2, 3, 4, 5, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_toolbelt_balanced_bce(shape, reduction, gen):
    # toolbelt's beta is neg / (pixels + 1e-7) in float32 (the counts are
    # integers), ours 1 - mean(y) in the input's dtype: 1e-7 apart.
    x = _logits(shape, gen)
    y = _one_hot_targets(shape, gen)
    theirs = toolbelt.BalancedBCEWithLogitsLoss(reduction=reduction)
    ours = snn.BalancedBCEWithLogitsLoss(per_image=False, reduction=reduction)
    summed = (lambda f: lambda v: f(v).sum()) if reduction == "none" else (lambda f: f)
    assert_same_loss_and_grad(summed(lambda v: ours(v, y)), summed(lambda v: theirs(v, y)), x,
                              rtol=2e-7, atol=1e-12)
    torch.testing.assert_close(ours(x, y), theirs(x, y), rtol=2e-7, atol=1e-12)


@needs_toolbelt
def test_toolbelt_balanced_bce_per_image(gen):
    # Our default, per_image=True, is toolbelt's loss of each image alone.
    x = _logits((3, 2, 6, 5), gen)
    y = _one_hot_targets((3, 2, 6, 5), gen)
    y[1] = (torch.rand(2, 6, 5, generator=gen) < 0.9).double()  # unlike fractions
    theirs = toolbelt.BalancedBCEWithLogitsLoss()
    ours = snn.BalancedBCEWithLogitsLoss()
    assert_same_loss_and_grad(
        lambda v: ours(v, y),
        lambda v: torch.stack([theirs(v[n:n + 1], y[n:n + 1]) for n in range(3)]).mean(), x,
        rtol=2e-7, atol=1e-12)
