"""Every error names the public function the user called, never a private op.

One table: a representative error through each public entry point (the
functions, the ops under torch.ops.segloss, the nn modules, segloss.numpy),
including the errors that a composite's private op or another public op
finds for it (the Dice sums' argument and class-index checks, the
epilogue's, the autograd refusals, the weight map's checks inside the
shape-aware loss, the BCE kernel's probability check). The message must
start with "<public name>: " and name no private op ("segloss._..."). The
per-op test files check the rest of each message.
"""

import re

import numpy as np
import pytest
import torch

import segloss
import segloss.nn
import segloss.numpy as snp

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

PRIVATE = re.compile(r"segloss\._\w+")

gen = torch.Generator().manual_seed(0)
X = torch.randn(2, 3, 4, 5, generator=gen)  # logits (N, C, H, W)
LABELS = torch.randint(0, 3, (2, 4, 5), generator=gen)
BAD_LABELS = LABELS.clone()
BAD_LABELS[1, 3, 4] = 7  # found by the kernel, not by the argument checks
SOFT = torch.rand(2, 3, 4, 5, generator=gen)
WRONG_SHAPE = torch.rand(2, 2, 4, 5, generator=gen)
X1 = torch.randn(2, 1, 4, 5, generator=gen)  # one channel: the binary shape-aware form
Y1 = (torch.rand(2, 1, 4, 5, generator=gen) > 0.5).double().float()
MAP = torch.rand(2, 4, 5, generator=gen)
INSTANCES = torch.randint(0, 4, (2, 4, 5), generator=gen, dtype=torch.int32)
P = torch.rand(2, 3, generator=gen)


def _case(name, call, exc, id):
    return pytest.param(name, call, exc, id=id)


CASES = [
    # BCE
    _case("segloss.binary_cross_entropy",
          lambda: segloss.binary_cross_entropy(P, P.t()), RuntimeError, "bce-target-shape"),
    _case("segloss.binary_cross_entropy",
          lambda: segloss.binary_cross_entropy(P + 1, P), RuntimeError, "bce-probability-range"),
    _case("segloss.binary_cross_entropy",
          lambda: torch.ops.segloss.binary_cross_entropy(P, P, None, None, "avg"), ValueError,
          "bce-op-reduction"),
    _case("segloss.binary_cross_entropy_with_logits",
          lambda: segloss.binary_cross_entropy_with_logits(P, P.clone().requires_grad_()),
          RuntimeError, "bce-logits-target-grad"),
    _case("segloss.binary_cross_entropy_with_logits",
          lambda: torch.ops.segloss.binary_cross_entropy_with_logits(
              P, P, torch.ones(3, 1), None, "mean"), RuntimeError, "bce-logits-op-weight-shape"),
    # Dice: the sums' checks (a private op's), the epilogue's, the kernel's
    _case("segloss.dice_loss", lambda: segloss.dice_loss(X, WRONG_SHAPE), RuntimeError,
          "dice-target-shape"),
    _case("segloss.dice_loss",
          lambda: segloss.dice_loss(X, BAD_LABELS, activation="softmax"), RuntimeError,
          "dice-bad-label"),
    _case("segloss.dice_loss", lambda: torch.ops.segloss.dice_loss(X, LABELS, gamma=0.5),
          ValueError, "dice-op-gamma"),
    _case("segloss.dice_loss", lambda: segloss.dice_loss(X, SOFT, mask=torch.ones(3, 3)),
          RuntimeError, "dice-mask-shape"),
    _case("segloss.dice_loss",
          lambda: segloss.dice_loss(X, SOFT, class_weights=torch.ones(2)), RuntimeError,
          "dice-class-weights"),
    _case("segloss.dice_loss",
          lambda: segloss.dice_loss(X, SOFT.clone().requires_grad_()), RuntimeError,
          "dice-target-grad"),
    _case("segloss.dice_loss", lambda: segloss.dice_loss(X, LABELS, ddp=True), ValueError,
          "dice-ddp-without-batch-dice"),
    # Dice + CE: the same shared checks, now naming dice_ce_loss
    _case("segloss.dice_ce_loss", lambda: segloss.dice_ce_loss(X, WRONG_SHAPE), RuntimeError,
          "dice-ce-target-shape"),
    _case("segloss.dice_ce_loss", lambda: segloss.dice_ce_loss(X, BAD_LABELS), RuntimeError,
          "dice-ce-bad-label"),
    _case("segloss.dice_ce_loss",
          lambda: torch.ops.segloss.dice_ce_loss(X, BAD_LABELS, activation="sigmoid"),
          RuntimeError, "dice-ce-op-bad-label-sigmoid"),
    _case("segloss.dice_ce_loss", lambda: segloss.dice_ce_loss(X, LABELS, gamma=0.5),
          ValueError, "dice-ce-gamma"),
    _case("segloss.dice_ce_loss", lambda: segloss.dice_ce_loss(X.long(), LABELS), TypeError,
          "dice-ce-input-dtype"),
    _case("segloss.dice_ce_loss",
          lambda: segloss.dice_ce_loss(X, LABELS, mask=torch.ones(3, 3)), RuntimeError,
          "dice-ce-mask-shape"),
    _case("segloss.dice_ce_loss",
          lambda: segloss.dice_ce_loss(X, LABELS, class_weights=torch.ones(2)), RuntimeError,
          "dice-ce-class-weights"),
    _case("segloss.dice_ce_loss",
          lambda: segloss.dice_ce_loss(X, LABELS, ce_weight=torch.ones(2)), RuntimeError,
          "dice-ce-ce-weight"),
    _case("segloss.dice_ce_loss", lambda: segloss.dice_ce_loss(X, LABELS, smooth_dr=-1.0),
          ValueError, "dice-ce-smoothing"),
    _case("segloss.dice_ce_loss",
          lambda: segloss.dice_ce_loss(X[:, :1], SOFT[:, :1], activation="softmax"), ValueError,
          "dice-ce-softmax-one-channel"),
    _case("segloss.dice_ce_loss", lambda: segloss.dice_ce_loss(X, LABELS, lambda_ce=-1.0),
          ValueError, "dice-ce-negative-lambda"),
    _case("segloss.dice_ce_loss",
          lambda: segloss.dice_ce_loss(X, SOFT.clone().requires_grad_()), RuntimeError,
          "dice-ce-target-grad"),
    _case("segloss.dice_ce_loss",
          lambda: segloss.dice_ce_loss(X, SOFT, mask=torch.ones(2, 1, 4, 5).requires_grad_()),
          RuntimeError, "dice-ce-mask-grad"),
    # The shape-aware loss: the BCE's and the weight map's checks run for it
    _case("segloss.shape_aware_loss",
          lambda: segloss.shape_aware_loss(X1, Y1[..., :4], MAP), RuntimeError,
          "shape-aware-binary-target-shape"),
    _case("segloss.shape_aware_loss",
          lambda: segloss.shape_aware_loss(X1, Y1.clone().requires_grad_(), MAP), RuntimeError,
          "shape-aware-binary-target-grad"),
    _case("segloss.shape_aware_loss",
          lambda: segloss.shape_aware_loss(X1.abs() + 1, Y1, MAP, from_logits=False),
          RuntimeError, "shape-aware-binary-probability-range"),
    _case("segloss.shape_aware_loss",
          lambda: segloss.shape_aware_loss(X1, Y1, instances=INSTANCES, sigma=-1.0), ValueError,
          "shape-aware-binary-instances-sigma"),
    _case("segloss.shape_aware_loss",
          lambda: torch.ops.segloss.shape_aware_loss(X1, Y1, instances=INSTANCES,
                                                     sampling=[1.0, 1.0, 1.0]), ValueError,
          "shape-aware-op-instances-sampling"),
    _case("segloss.shape_aware_loss",
          lambda: segloss.shape_aware_loss(X1, Y1, instances=INSTANCES, w0=float("inf")),
          ValueError, "shape-aware-instances-w0"),
    _case("segloss.shape_aware_loss",
          lambda: segloss.shape_aware_loss(X, BAD_LABELS, MAP), IndexError,
          "shape-aware-multiclass-bad-label"),
    _case("segloss.shape_aware_loss",
          lambda: segloss.shape_aware_loss(X, LABELS, MAP, weight=torch.ones(2)), ValueError,
          "shape-aware-multiclass-weight"),
    _case("segloss.shape_aware_loss",
          lambda: segloss.shape_aware_loss(X, LABELS, instances=INSTANCES, sigma=0.0),
          ValueError, "shape-aware-multiclass-instances-sigma"),
    _case("segloss.shape_aware_loss",
          lambda: segloss.shape_aware_loss(X, LABELS, MAP, class_weights="equal"), ValueError,
          "shape-aware-class-weights"),
    _case("segloss.shape_aware_loss",
          lambda: segloss.shape_aware_loss(X1, Y1, instances=INSTANCES, sampling=[1.0, None]),
          TypeError, "shape-aware-sampling-type"),
    # The distance-based losses
    _case("segloss.boundary_loss", lambda: segloss.boundary_loss(X, WRONG_SHAPE), ValueError,
          "boundary-target-shape"),
    _case("segloss.boundary_loss", lambda: segloss.boundary_loss(X, LABELS, MAP), ValueError,
          "boundary-distance-map-shape"),
    _case("segloss.hausdorff_dt_loss", lambda: segloss.hausdorff_dt_loss(X, LABELS, 0.0),
          ValueError, "hausdorff-alpha"),
    _case("segloss.hausdorff_dt_loss", lambda: segloss.hausdorff_dt_loss(X, BAD_LABELS),
          ValueError, "hausdorff-bad-label"),
    # The distance ops
    _case("segloss.two_nearest_distances",
          lambda: segloss.two_nearest_distances(INSTANCES.float()), TypeError,
          "two-nearest-dtype"),
    _case("segloss.two_nearest_distances",
          lambda: torch.ops.segloss.two_nearest_distances(INSTANCES, [1.0], False), ValueError,
          "two-nearest-op-sampling"),
    _case("segloss.two_nearest_distances",
          lambda: segloss.two_nearest_distances(INSTANCES, sampling="1, 2"), TypeError,
          "two-nearest-sampling-type"),
    _case("segloss.unet_weight_map", lambda: segloss.unet_weight_map(INSTANCES, sigma=-1.0),
          ValueError, "weight-map-sigma"),
    _case("segloss.unet_weight_map", lambda: segloss.unet_weight_map(INSTANCES, w0="ten"),
          TypeError, "weight-map-w0-type"),
    _case("segloss.unet_weight_map",
          lambda: segloss.unet_weight_map(INSTANCES, class_weights="equal"), ValueError,
          "weight-map-class-weights"),
    _case("segloss.unet_weight_map",
          lambda: torch.ops.segloss.unet_weight_map(INSTANCES, pixel_weights=torch.ones(2, 4)),
          ValueError, "weight-map-op-pixel-weights"),
    # The modules: their own checks name the class, their forward the function it calls
    _case("segloss.nn.BCELoss", lambda: segloss.nn.BCELoss(reduction="avg"), ValueError,
          "nn-bce"),
    _case("segloss.nn.BCEWithLogitsLoss", lambda: segloss.nn.BCEWithLogitsLoss(reduction="avg"),
          ValueError, "nn-bce-logits"),
    _case("segloss.nn.WeightedBCELoss", lambda: segloss.nn.WeightedBCELoss(beta=-1.0),
          ValueError, "nn-weighted-bce"),
    _case("segloss.nn.DiceLoss", lambda: segloss.nn.DiceLoss(gamma=0.5), ValueError,
          "nn-dice"),
    _case("segloss.nn.DiceLoss", lambda: segloss.nn.DiceLoss(ddp=True), ValueError,
          "nn-dice-ddp"),
    _case("segloss.nn.DiceCELoss", lambda: segloss.nn.DiceCELoss(activation="none"),
          ValueError, "nn-dice-ce"),
    _case("segloss.nn.ShapeAwareLoss", lambda: segloss.nn.ShapeAwareLoss(reduction="avg"),
          ValueError, "nn-shape-aware"),
    _case("segloss.nn.ShapeAwareLoss",
          lambda: segloss.nn.ShapeAwareLoss(class_weights="equal"), ValueError,
          "nn-shape-aware-class-weights"),
    _case("segloss.nn.ShapeAwareLoss", lambda: segloss.nn.ShapeAwareLoss(sampling=2.0),
          TypeError, "nn-shape-aware-sampling"),
    _case("segloss.binary_cross_entropy_with_logits",
          lambda: segloss.nn.WeightedBCELoss(beta=2.0)(P, P.t()), RuntimeError,
          "nn-weighted-bce-forward"),
    _case("segloss.dice_ce_loss",
          lambda: segloss.nn.DiceCELoss(ce_weight=torch.ones(2))(X, LABELS), RuntimeError,
          "nn-dice-ce-forward"),
    _case("segloss.dice_loss", lambda: segloss.nn.DiceLoss()(X, WRONG_SHAPE), RuntimeError,
          "nn-dice-forward"),
    _case("segloss.shape_aware_loss",
          lambda: segloss.nn.ShapeAwareLoss()(X1, Y1, MAP, INSTANCES), ValueError,
          "nn-shape-aware-forward"),
    _case("segloss.nn.HausdorffDTLoss", lambda: segloss.nn.HausdorffDTLoss(alpha=-1.0),
          ValueError, "nn-hausdorff-alpha"),
    _case("segloss.nn.BoundaryLoss", lambda: segloss.nn.BoundaryLoss(activation="relu"),
          ValueError, "nn-boundary-activation"),
    _case("segloss.boundary_loss", lambda: segloss.nn.BoundaryLoss()(X, WRONG_SHAPE),
          ValueError, "nn-boundary-forward"),
    _case("segloss.hausdorff_dt_loss",
          lambda: segloss.nn.LogHausdorffDTLoss(activation="softmax")(X1, Y1), ValueError,
          "nn-log-hausdorff-forward"),
    # segloss.numpy
    _case("segloss.numpy.two_nearest_distances",
          lambda: snp.two_nearest_distances(np.zeros((4, 5), np.float32)), TypeError,
          "numpy-two-nearest"),
    _case("segloss.numpy.two_nearest_distances",
          lambda: snp.two_nearest_distances(np.zeros((4, 5), np.int32), threads=0), ValueError,
          "numpy-two-nearest-threads"),
    _case("segloss.numpy.unet_weight_map",
          lambda: snp.unet_weight_map(np.zeros((4, 5), np.int32), class_weights={2: 1.0}),
          ValueError, "numpy-weight-map"),
    _case("segloss.numpy.unet_weight_map",
          lambda: snp.unet_weight_map(np.zeros((4, 5), np.int32), sampling=(1.0, 2.0, 3.0)),
          ValueError, "numpy-weight-map-sampling"),
    _case("segloss.numpy.distance_transform_edt",
          lambda: snp.distance_transform_edt(np.ones((4, 5)), sampling=-1.0), ValueError,
          "numpy-edt"),
]


def _assert_names(error: BaseException, name: str):
    message = str(error)
    assert message.startswith(f"{name}: "), f"{message!r} does not start with {name!r}"
    assert not PRIVATE.search(message), f"{message!r} names a private op"


@pytest.mark.parametrize("name,call,exc", CASES)
def test_error_names_the_public_function(name, call, exc):
    with pytest.raises(exc) as info:
        call()
    _assert_names(info.value, name)


@pytest.mark.parametrize("loss", ["dice_loss", "dice_ce_loss"])
@pytest.mark.parametrize("problem", ["target-shape", "bad-label"])
def test_compiled_and_scripted_dice_errors_name_the_public_function(loss, problem):
    # torch.compile runs the composite at trace time only: the compiled graph
    # calls the private sums op, which names the public function it was given.
    fn = getattr(segloss, loss)
    target = WRONG_SHAPE if problem == "target-shape" else BAD_LABELS
    compiled = torch.compile(lambda x, t: fn(x, t, activation="softmax"), backend="aot_eager",
                             fullgraph=True)
    scripted = torch.jit.script(fn)
    for call in (lambda: compiled(X, target),
                 lambda: scripted(X, target, activation="softmax")):
        with pytest.raises(Exception) as info:
            call()
        message = str(info.value)
        assert f"segloss.{loss}: " in message, message
        assert not PRIVATE.search(message), message
    torch._dynamo.reset()


def test_private_ops_called_directly_may_name_themselves():
    with pytest.raises(RuntimeError, match=re.escape("segloss._dice_sums: class indices")):
        torch.ops.segloss._dice_sums(X, BAD_LABELS, "softmax", 1.0, None, None)
    with pytest.raises(RuntimeError, match=re.escape("segloss.dice_ce_loss: class indices")):
        torch.ops.segloss._dice_sums(X, BAD_LABELS, "softmax", 1.0, None, None, True,
                                     "segloss.dice_ce_loss")
