"""Targets as MONAI users pass them. Float class-index maps, as MONAI's data
pipelines load label images: a float target of a label map's shape
([N, 1, *spatial] with C > 1, or [N, *spatial]) is class indices, with
MONAI's numbers (to_onehot_y=True); fractional labels raise rather than being
truncated; a one-channel target of the input's shape stays a dense (binary)
target. Integer and bool one-hot targets of the input's shape are dense."""

import warnings

import pytest
import torch

import segloss
import segloss.nn

monai_losses = pytest.importorskip("monai.losses")


def _case(spatial, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, 3) + spatial, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1) + spatial, generator=gen)
    return x, labels


# (segloss module, MONAI module, tolerance): MONAI's focal term and its
# generalized Dice weights run in float32.
PAIRS = [
    ("DiceLoss", lambda: segloss.nn.DiceLoss(activation="softmax"),
     lambda: monai_losses.DiceLoss(softmax=True, to_onehot_y=True), 1e-12),
    ("DiceLoss-sigmoid", lambda: segloss.nn.DiceLoss(activation="sigmoid"),
     lambda: monai_losses.DiceLoss(sigmoid=True, to_onehot_y=True), 1e-12),
    ("TverskyLoss", lambda: segloss.nn.TverskyLoss(activation="softmax", alpha=0.3, beta=0.7),
     lambda: monai_losses.TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7),
     1e-12),
    ("GeneralizedDiceLoss", lambda: segloss.nn.GeneralizedDiceLoss(activation="softmax"),
     lambda: monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True), 1e-7),
    ("DiceCELoss", lambda: segloss.nn.DiceCELoss(activation="softmax"),
     lambda: monai_losses.DiceCELoss(softmax=True, to_onehot_y=True), 1e-12),
    ("DiceFocalLoss", lambda: segloss.nn.DiceFocalLoss(activation="softmax",
                                                       focal_activation="sigmoid"),
     lambda: monai_losses.DiceFocalLoss(softmax=True, to_onehot_y=True), 1e-7),
    ("FocalLoss", lambda: segloss.nn.FocalLoss(activation="softmax"),
     lambda: monai_losses.FocalLoss(use_softmax=True, to_onehot_y=True), 1e-7),
    ("BoundaryLoss", lambda: segloss.nn.BoundaryLoss(activation="softmax"),
     lambda: monai_losses.BoundaryLoss(softmax=True, to_onehot_y=True), 1e-7),
    ("HausdorffDTLoss", lambda: segloss.nn.HausdorffDTLoss(activation="softmax"),
     lambda: monai_losses.HausdorffDTLoss(softmax=True, to_onehot_y=True), 1e-7),
]


@pytest.mark.parametrize("spatial", [(7, 6), (4, 5, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,ours,theirs,tolerance", PAIRS, ids=[p[0] for p in PAIRS])
def test_float_label_maps_give_monais_numbers(name, ours, theirs, tolerance, dtype, spatial):
    x, labels = _case(spatial)
    target = labels.to(dtype)
    xr = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs()(xr, target)
    (expected_grad,) = torch.autograd.grad(expected, xr)
    for given in (target, target[:, 0]):  # [N, 1, *spatial] and [N, *spatial]
        xs = x.clone().requires_grad_()
        loss = ours()(xs, given)
        (grad,) = torch.autograd.grad(loss, xs)
        torch.testing.assert_close(loss, expected.double(), rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(grad, expected_grad, rtol=tolerance, atol=tolerance)
        # The same numbers as the integer map.
        assert torch.equal(loss, ours()(x, labels))


@pytest.mark.parametrize("name", ["dice_loss", "dice_ce_loss", "dice_focal_loss",
                                  "generalized_dice_loss", "focal_loss", "boundary_loss",
                                  "hausdorff_dt_loss"])
def test_fractional_labels_raise(name):
    x, labels = _case((6, 5))
    target = labels.double()
    target[0, 0, 2, 3] = 1.5  # a label map resampled with interpolation
    with pytest.raises(ValueError, match=rf"segloss\.{name}: a float class-index target must "
                                         r"hold whole numbers"):
        getattr(segloss, name)(x, target, activation="softmax")


def test_one_channel_float_target_stays_binary():
    # [N, 1, *spatial] with one channel is the input's shape: a dense target
    # (a soft or binary mask), as MONAI's sigmoid Dice without a one-hot.
    x, labels = _case((6, 5))
    x1 = x[:, :1]
    soft = torch.rand_like(x1)
    expected = monai_losses.DiceLoss(sigmoid=True)(x1, soft)
    torch.testing.assert_close(segloss.dice_loss(x1, soft), expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# Integer and bool one-hot targets (MONAI reads any target of the input's
# shape as one-hot): with more than one channel, dense.

ONE_HOT_PAIRS = [
    ("DiceLoss", lambda: segloss.nn.DiceLoss(activation="softmax"),
     lambda: monai_losses.DiceLoss(softmax=True), 1e-12),
    ("DiceCELoss", lambda: segloss.nn.DiceCELoss(activation="softmax"),
     lambda: monai_losses.DiceCELoss(softmax=True), 1e-12),
    ("DiceFocalLoss", lambda: segloss.nn.DiceFocalLoss(activation="softmax",
                                                       focal_activation="sigmoid"),
     lambda: monai_losses.DiceFocalLoss(softmax=True), 1e-7),
    ("FocalLoss-softmax", lambda: segloss.nn.FocalLoss(activation="softmax"),
     lambda: monai_losses.FocalLoss(use_softmax=True), 1e-7),
    ("BoundaryLoss", lambda: segloss.nn.BoundaryLoss(activation="softmax"),
     lambda: monai_losses.BoundaryLoss(softmax=True), 1e-7),
    ("HausdorffDTLoss", lambda: segloss.nn.HausdorffDTLoss(activation="softmax"),
     lambda: monai_losses.HausdorffDTLoss(softmax=True), 1e-7),
]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
@pytest.mark.parametrize("name,ours,theirs,tolerance", ONE_HOT_PAIRS,
                         ids=[p[0] for p in ONE_HOT_PAIRS])
def test_integer_one_hot_targets_give_monais_numbers(name, ours, theirs, tolerance, dtype):
    x, labels = _case((7, 6), seed=3)
    one_hot = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1)
    xr = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs()(xr, one_hot.double())
    (expected_grad,) = torch.autograd.grad(expected, xr)
    xs = x.clone().requires_grad_()
    loss = ours()(xs, one_hot.to(dtype))
    (grad,) = torch.autograd.grad(loss, xs)
    torch.testing.assert_close(loss, expected.double(), rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(grad, expected_grad, rtol=tolerance, atol=tolerance)
