"""label_smoothing= on segloss.dice_ce_loss (softmax): the CE half equals
F.cross_entropy(label_smoothing=) (class-index and probability targets,
class weights, ignore_index) and MONAI's DiceCELoss(label_smoothing=), from
the eighth column of the sums (sum m (-log p) per class).

References: MONAI's DiceCELoss and reference.dice_ce_torch, whose CE is
F.cross_entropy with label_smoothing. Only the TorchScript and
torch.compile tests compare segloss with itself.
"""

import warnings

import pytest
import torch
try:
    from monai.losses import DiceCELoss as MonaiDiceCELoss
except ImportError:  # MONAI is optional (absent on the GPU machines): its comparisons skip
    MonaiDiceCELoss = None

import segloss
from helpers import (assert_aot_eager_equals_eager, assert_close_to_scale, assert_matches,
                     dice_forward_backward,
                     make_class_weights, make_dice_input, make_dice_target, make_mask)
from reference import dice_ce_torch

needs_monai = pytest.mark.skipif(MonaiDiceCELoss is None, reason="needs MONAI")

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

SMOOTHING = (0.1, 0.5, 1.0)


@needs_monai
@pytest.mark.parametrize("label_smoothing", SMOOTHING)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("spatial", [(6, 7), (3, 4, 5)], ids=["2d", "3d"])
def test_matches_monai(spatial, weighted, reduction, label_smoothing, gen):
    shape = (2, 3) + spatial
    x = make_dice_input("softmax", shape, gen)
    t = make_dice_target("labels1", shape, gen)
    w = make_class_weights(3, gen) if weighted else None
    g = torch.tensor(1.0, dtype=torch.float64)
    loss, grad = dice_forward_backward(x, t, g, loss="dice_ce_loss", activation="softmax",
                                       class_weights=w, reduction=reduction,
                                       label_smoothing=label_smoothing)
    xm = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = MonaiDiceCELoss(softmax=True, to_onehot_y=True, weight=w,
                                   reduction=reduction,
                                   label_smoothing=label_smoothing)(xm, t)
    (monai_grad,) = torch.autograd.grad(expected, xm)
    assert_close_to_scale(loss, expected, 1e-10)
    assert_close_to_scale(grad, monai_grad, 1e-10)


# problem id: (shape, target kind, ignore_index, mask, class_weights, ce_weight, reduction)
CASES = {
    "labels-2d-mean": ((2, 3, 6, 7), "labels", None, None, False, False, "mean"),
    "labels-ignore-mask-weights-sum": ((2, 4, 6, 7), "labels", 255, "n1s-float", True, False,
                                       "sum"),
    "labels1-3d-ce_weight-mean": ((2, 3, 3, 4, 5), "labels1", 0, None, False, True, "mean"),
    "soft-2d-weights-mean": ((2, 3, 6, 7), "soft", None, "11s-bool", True, False, "mean"),
    "onehot-3d-ce_weight-sum": ((2, 3, 3, 4, 5), "onehot", None, None, True, True, "sum"),
}


def _problem(case, label_smoothing, gen, dtype=torch.float64):
    shape, kind, ignore, mask, weights, ce_weight, reduction = CASES[case]
    x = make_dice_input("softmax", shape, gen, dtype)
    t = make_dice_target(kind, shape, gen, None if kind.startswith("labels") else dtype,
                         ignore_index=ignore)
    options = dict(activation="softmax", ignore_index=ignore,
                   mask=make_mask(mask, shape, gen), reduction=reduction,
                   class_weights=make_class_weights(shape[1], gen, dtype) if weights else None,
                   ce_weight=make_class_weights(shape[1], gen, dtype) if ce_weight else None,
                   label_smoothing=label_smoothing, lambda_dice=0.7, lambda_ce=1.3)
    return x, t, options


def _double(options):
    return {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
            for k, v in options.items()}


@pytest.mark.parametrize("label_smoothing", (0.0,) + SMOOTHING)
@pytest.mark.parametrize("case", CASES)
def test_matches_reference(case, label_smoothing, gen):
    x, t, options = _problem(case, label_smoothing, gen)
    g = torch.tensor(0.75, dtype=torch.float64)
    for entry in ("functional", "op", "module"):
        loss, grad = dice_forward_backward(x, t, g, entry, loss="dice_ce_loss", **options)
        ref_loss, ref_grad = dice_ce_torch(x, t, grad_output=g, **options)
        assert_matches(loss, ref_loss, msg=f"{entry} loss")
        assert_matches(grad, ref_grad, msg=f"{entry} grad")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("case", ["labels-ignore-mask-weights-sum", "soft-2d-weights-mean"])
def test_lower_precision_matches_reference(case, dtype, gen):
    x, t, options = _problem(case, 0.2, gen, dtype)
    g = torch.tensor(1.0, dtype=dtype)
    loss, grad = dice_forward_backward(x, t, g, loss="dice_ce_loss", **options)
    ref_loss, ref_grad = dice_ce_torch(x.double(), t, grad_output=g.double(), **_double(options))
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_matches(loss, ref_loss, dtype, msg="loss")
    assert_matches(grad, ref_grad, dtype, msg="grad")


@pytest.mark.parametrize("case", CASES)
def test_gradcheck(case, gen):
    x, t, options = _problem(case, 0.3, gen)
    # At most 3 pixels a side (gradcheck is quadratic) and the mean: finite
    # differences of a summed loss of ~200 lose the digits gradcheck wants
    # (the "sum" gradients are checked against the reference above).
    options["reduction"] = "mean"
    spatial = tuple(slice(0, 3) for _ in x.shape[2:])
    x = x[(slice(None), slice(None)) + spatial].contiguous().requires_grad_()
    if options["mask"] is not None:
        options["mask"] = options["mask"][(slice(None), slice(None)) + spatial]
    t = t[(slice(None), slice(None)) + spatial] if t.dim() == x.dim() else t[(slice(None),) + spatial]
    assert torch.autograd.gradcheck(lambda x: segloss.dice_ce_loss(x, t, **options), (x,),
                                    eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_opcheck(dtype, gen):
    x, t, options = _problem("labels-ignore-mask-weights-sum", 0.25, gen, dtype)
    torch.library.opcheck(torch.ops.segloss.dice_ce_loss.default, (x.requires_grad_(), t),
                          options)


def test_no_smoothing_keeps_a_minus_infinite_logit_finite(gen):
    # The smoothing column is +inf there; with label_smoothing=0 it is unused,
    # as F.cross_entropy(label_smoothing=0) gives a finite loss.
    x = make_dice_input("softmax", (1, 3, 4, 5), gen)
    x[0, 2, 0, 0] = -float("inf")
    t = torch.zeros(1, 4, 5, dtype=torch.int64)
    assert torch.isfinite(segloss.dice_ce_loss(x, t))
    expected = torch.nn.functional.cross_entropy(x, t, label_smoothing=0.1)
    smoothed = segloss.dice_ce_loss(x, t, lambda_dice=0.0, label_smoothing=0.1)
    assert torch.isinf(expected) and torch.isinf(smoothed)


def test_module_repr_and_scripting(gen):
    module = segloss.nn.DiceCELoss(label_smoothing=0.1, ignore_index=255)
    assert "label_smoothing=0.1" in repr(module)
    assert "label_smoothing" not in repr(segloss.nn.DiceCELoss())
    x = make_dice_input("softmax", (2, 3, 6, 7), gen, torch.float32)
    t = make_dice_target("labels", (2, 3, 6, 7), gen, ignore_index=255)
    assert torch.equal(torch.jit.script(module)(x, t), module(x, t))
    scripted = torch.jit.script(segloss.dice_ce_loss)
    assert torch.equal(scripted(x, t, ignore_index=255, label_smoothing=0.2),
                       segloss.dice_ce_loss(x, t, ignore_index=255, label_smoothing=0.2))


def test_compile_fullgraph_equals_eager(gen):
    x = make_dice_input("softmax", (2, 3, 6, 7), gen, torch.float32)
    t = make_dice_target("labels", (2, 3, 6, 7), gen)

    def fn(x, t):
        return segloss.dice_ce_loss(x, t, label_smoothing=0.1)

    assert_aot_eager_equals_eager(fn, x, t)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_label_smoothing_out_of_range(value):
    x, t = torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"segloss.dice_ce_loss: label_smoothing must lie in "
                                         r"\[0, 1\]"):
        segloss.dice_ce_loss(x, t, label_smoothing=value)
    with pytest.raises(ValueError, match=r"DiceCELoss: label_smoothing must lie in \[0, 1\]"):
        segloss.nn.DiceCELoss(label_smoothing=value)


def test_label_smoothing_needs_softmax():
    x, t = torch.randn(1, 1, 4, 4), torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="segloss.dice_ce_loss: label_smoothing applies to the "
                                         "softmax cross-entropy"):
        segloss.dice_ce_loss(x, t, activation="sigmoid", label_smoothing=0.1)
    with pytest.raises(ValueError, match="DiceCELoss: label_smoothing applies to the softmax"):
        segloss.nn.DiceCELoss(activation="sigmoid", label_smoothing=0.1)
