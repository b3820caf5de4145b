"""label_smoothing= on segloss.dice_ce_loss (softmax): the CE half equals
F.cross_entropy(label_smoothing=) (class-index and probability targets,
class weights, ignore_index) and MONAI's DiceCELoss(label_smoothing=), from
the eighth column of the sums (sum m (-log p) per class).

References: MONAI's DiceCELoss and reference.dice_ce_torch, whose CE is
F.cross_entropy with label_smoothing. Only the TorchScript and
torch.compile tests compare segloss with itself.

label_smoothing= on the multi-class segloss.shape_aware_loss (at the end):
F.cross_entropy(weight=, label_smoothing=) with a map of ones, a float64
formula weighted by the map otherwise.
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


@pytest.mark.parametrize("label_smoothing", (0.0,) + SMOOTHING)
def test_targets_of_weight_zero_only_give_nan_as_torch(label_smoothing, gen):
    # The weighted mean over no weight is 0 / 0: torch's NaN, with smoothing
    # too (its smoothing term alone would be finite / 0 = inf).
    x = make_dice_input("softmax", (1, 3, 3, 5), gen)
    labels = torch.zeros(1, 3, 5, dtype=torch.int64)
    w = torch.tensor([0.0, 3.0, 0.5], dtype=torch.float64)
    ce = segloss.dice_ce_loss(x, labels, class_weights=w, label_smoothing=label_smoothing,
                              lambda_dice=0.0)
    want = torch.nn.functional.cross_entropy(x, labels, weight=w,
                                             label_smoothing=label_smoothing)
    assert bool(torch.isnan(want)) and bool(torch.isnan(ce))


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


@pytest.mark.parametrize("label_smoothing", SMOOTHING)
def test_an_infinite_target_term_follows_torch(label_smoothing, gen):
    # A -inf logit where the target has mass: torch mixes a probability
    # target first, (1 - e) y + e / C, so at e = 1 the target's own infinite
    # term is absent (inf, not 0 * inf = NaN); a class-index target reduces
    # the two terms first (NaN at e = 1), as segloss does for both.
    x = make_dice_input("softmax", (1, 3, 4, 5), gen)
    x[0, 2, 1, 3] = -float("inf")
    labels = torch.zeros(1, 4, 5, dtype=torch.int64)
    labels[0, 1, 3] = 2
    probabilities = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).double()
    for target in (probabilities, labels):
        want = torch.nn.functional.cross_entropy(x, target, label_smoothing=label_smoothing)
        got = segloss.dice_ce_loss(x, target, lambda_dice=0.0, label_smoothing=label_smoothing)
        assert torch.equal(got, want) or bool(torch.isnan(got) & torch.isnan(want)), (
            target.dtype, got, want)


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


# --------------------------------------------------------------------------
# label_smoothing= on the multi-class segloss.shape_aware_loss (the fused
# _weighted_cross_entropy op): F.cross_entropy(weight=, label_smoothing=)
# with a map of ones, the weight-map-weighted float64 formula otherwise.

import torch.nn.functional as F  # noqa: E402

SHAPE_AWARE_SHAPES = {"2d": (2, 4, 7, 9), "3d": (2, 3, 3, 4, 5)}
SA_IGNORE = 255


def _shape_aware_data(shape, gen, dtype=torch.float64):
    pixel_shape = (shape[0],) + tuple(shape[2:])
    x = (3 * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)
    t = torch.randint(0, shape[1], pixel_shape, generator=gen)
    t[torch.rand(pixel_shape, generator=gen) < 0.15] = SA_IGNORE
    w = (0.5 + 3 * torch.rand(pixel_shape, generator=gen, dtype=torch.float64)).to(dtype)
    c = (0.5 + 1.5 * torch.rand(shape[1], generator=gen, dtype=torch.float64)).to(dtype)
    return x, t, w, c


def smoothed_shape_aware_reference(x, t, w, c, e, reduction):
    """w [(1 - e) c_t (-log p_t) + e / C sum_k c_k (-log p_k)] in float64 over
    the pixels not ignored; 'mean' over their count, 'weighted_mean' over
    sum w c_t (F.cross_entropy's divisor for both terms when w = 1)."""
    counted = t != SA_IGNORE
    safe_t = torch.where(counted, t, 0)
    log_p = F.log_softmax(x.double(), dim=1)
    cw = torch.ones(x.shape[1], dtype=torch.float64) if c is None else c.double()
    nll = -log_p.gather(1, safe_t.unsqueeze(1)).squeeze(1) * cw[safe_t]
    smooth = -(log_p * cw.view(1, -1, *([1] * (x.dim() - 2)))).sum(1)
    per_pixel = w.double() * ((1 - e) * nll + e / x.shape[1] * smooth)
    per_pixel = torch.where(counted, per_pixel, torch.zeros_like(per_pixel))
    if reduction == "none":
        return per_pixel
    if reduction == "sum":
        return per_pixel.sum()
    if reduction == "mean":
        return per_pixel.sum() / counted.sum()
    return per_pixel.sum() / (w.double() * cw[safe_t] * counted).sum()


def _shape_aware_value_and_grad(x, t, w, g, **options):
    leaf = x.detach().clone().requires_grad_()
    loss = segloss.shape_aware_loss(leaf, t, w, ignore_index=SA_IGNORE, **options)
    (grad,) = torch.autograd.grad(loss, leaf, g)
    return loss.detach(), grad


@pytest.mark.parametrize("label_smoothing", SMOOTHING)
@pytest.mark.parametrize("dims", sorted(SHAPE_AWARE_SHAPES))
def test_shape_aware_matches_cross_entropy(dims, label_smoothing, gen):
    """A map of ones: 'weighted_mean' (with class weights) and 'mean'
    (without) are F.cross_entropy's mean, 'sum' and 'none' its own."""
    x, t, _, c = _shape_aware_data(SHAPE_AWARE_SHAPES[dims], gen)
    ones = torch.ones(t.shape, dtype=torch.float64)
    for reduction, ours, theirs, weight in (("weighted_mean", "weighted_mean", "mean", c),
                                             ("mean", "mean", "mean", None),
                                             ("sum", "sum", "sum", c), ("none", "none", "none", c)):
        g = torch.rand(t.shape if ours == "none" else (), generator=gen, dtype=torch.float64)
        loss, grad = _shape_aware_value_and_grad(x, t, ones, g, weight=weight, reduction=ours,
                                                 label_smoothing=label_smoothing)
        leaf = x.clone().requires_grad_()
        expected = F.cross_entropy(leaf, t, weight=weight, ignore_index=SA_IGNORE,
                                   reduction=theirs, label_smoothing=label_smoothing)
        (expected_grad,) = torch.autograd.grad(expected, leaf, g)
        assert_matches(loss, expected.detach(), msg=f"{reduction} loss")
        assert_matches(grad, expected_grad, msg=f"{reduction} grad")


@pytest.mark.parametrize("label_smoothing", (0.1, 1.0))
@pytest.mark.parametrize("dims", sorted(SHAPE_AWARE_SHAPES))
def test_shape_aware_weight_map_formula(dims, label_smoothing, gen):
    x, t, w, c = _shape_aware_data(SHAPE_AWARE_SHAPES[dims], gen)
    for reduction in ("none", "mean", "sum", "weighted_mean"):
        for weight in (c, None):
            g = torch.rand(t.shape if reduction == "none" else (), generator=gen,
                           dtype=torch.float64)
            for target, weight_map in ((t, w), (t[:, None], w[:, None])):
                loss, grad = _shape_aware_value_and_grad(x, target, weight_map, g,
                                                         weight=weight, reduction=reduction,
                                                         label_smoothing=label_smoothing)
                leaf = x.clone().requires_grad_()
                expected = smoothed_shape_aware_reference(leaf, t, w, weight, label_smoothing,
                                                          reduction)
                (expected_grad,) = torch.autograd.grad(expected, leaf, g)
                assert_matches(loss, expected.detach(), msg=f"{reduction} loss")
                assert_matches(grad, expected_grad, msg=f"{reduction} grad")


def test_shape_aware_smoothing_from_instances_and_module(gen):
    """The map computed from instance labels, through the functional form,
    the op and the nn module (and its scripted copy), equals the reference
    with that map."""
    from distance_reference import random_disks
    import numpy as np
    import segloss.numpy as snp

    x, t, _, c = _shape_aware_data(SHAPE_AWARE_SHAPES["2d"], gen)
    rng = np.random.default_rng(0)
    instances = torch.from_numpy(np.stack([random_disks(t.shape[1:], 3, rng)
                                           for _ in range(t.shape[0])]))
    w = torch.from_numpy(np.stack([snp.unet_weight_map(i) for i in instances.numpy()]))
    expected = smoothed_shape_aware_reference(x, t, w, c, 0.2, "weighted_mean")
    options = dict(weight=c, ignore_index=SA_IGNORE, reduction="weighted_mean")
    module = segloss.nn.ShapeAwareLoss(label_smoothing=0.2, **options)
    assert "label_smoothing=0.2" in repr(module)
    assert "label_smoothing" not in repr(segloss.nn.ShapeAwareLoss())
    got = [segloss.shape_aware_loss(x, t, instances=instances, label_smoothing=0.2, **options),
           torch.ops.segloss.shape_aware_loss(x, t, instances=instances, label_smoothing=0.2,
                                              **options),
           module(x, t, instances=instances), torch.jit.script(module)(x, t, instances=instances),
           module(x, t, w)]
    for value in got:
        assert_matches(value, expected)


@pytest.mark.parametrize("reduction", ["weighted_mean", "none"])
def test_shape_aware_gradcheck(reduction, gen):
    x, t, w, c = _shape_aware_data((2, 3, 3, 4), gen)
    assert torch.autograd.gradcheck(
        lambda v: segloss.shape_aware_loss(v, t, w, weight=c, ignore_index=SA_IGNORE,
                                           reduction=reduction, label_smoothing=0.3),
        (x.requires_grad_(),))


def test_shape_aware_opcheck(gen):
    x, t, w, c = _shape_aware_data((2, 3, 5, 6), gen, torch.float32)
    torch.library.opcheck(torch.ops.segloss.shape_aware_loss.default,
                          (x.requires_grad_(), t, w),
                          dict(weight=c, ignore_index=SA_IGNORE, reduction="weighted_mean",
                               label_smoothing=0.25))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["f32", "f16", "bf16"])
def test_shape_aware_lower_precision(dtype, gen):
    x, t, w, c = _shape_aware_data(SHAPE_AWARE_SHAPES["3d"], gen, dtype)
    g = torch.rand(t.shape, generator=gen).to(dtype)
    loss, grad = _shape_aware_value_and_grad(x, t, w, g, weight=c, reduction="none",
                                             label_smoothing=0.2)
    assert loss.dtype == dtype and grad.dtype == dtype
    leaf = x.double().requires_grad_()
    expected = smoothed_shape_aware_reference(leaf, t, w, c, 0.2, "none")
    (expected_grad,) = torch.autograd.grad(expected, leaf, g.double())
    assert_matches(loss, expected.detach(), msg="loss")
    assert_matches(grad, expected_grad, msg="grad")


def test_shape_aware_compile_fullgraph_equals_eager(gen):
    x, t, w, c = _shape_aware_data(SHAPE_AWARE_SHAPES["2d"], gen, torch.float32)

    def fn(x, t):
        return segloss.shape_aware_loss(x, t, w, weight=c, ignore_index=SA_IGNORE,
                                        label_smoothing=0.1)

    assert_aot_eager_equals_eager(fn, x, t)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_shape_aware_label_smoothing_out_of_range(value):
    x, t = torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64)
    w = torch.ones(1, 4, 4)
    with pytest.raises(ValueError, match=r"segloss.shape_aware_loss: label_smoothing must lie "
                                         r"in \[0, 1\]"):
        segloss.shape_aware_loss(x, t, w, label_smoothing=value)
    with pytest.raises(ValueError, match=r"ShapeAwareLoss: label_smoothing must lie in \[0, 1\]"):
        segloss.nn.ShapeAwareLoss(label_smoothing=value)


def test_shape_aware_binary_form_rejects_label_smoothing():
    x, y, w = torch.randn(2, 1, 4, 4), torch.rand(2, 1, 4, 4).round(), torch.ones(2, 4, 4)
    with pytest.raises(ValueError, match="segloss.shape_aware_loss: label_smoothing applies to "
                                         "the multi-class form"):
        segloss.shape_aware_loss(x, y, w, label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing applies to the multi-class form"):
        segloss.nn.ShapeAwareLoss(label_smoothing=0.1)(x, y, w)
    with pytest.raises(TypeError, match="segloss.shape_aware_loss: label_smoothing must be a "
                                        "number"):
        segloss.shape_aware_loss(x, y, w, label_smoothing="0.1")
