"""The region losses other than Dice: segloss.tversky_loss (and focal
Tversky), segloss.jaccard_loss, segloss.log_cosh_dice_loss and
segloss.generalized_dice_loss, their ops, nn modules and the shared private
epilogue _region_loss_from_sums.

Table-driven over LOSSES. Every value is compared with an independent
reference: MONAI (TverskyLoss, DiceLoss(jaccard=True), log(cosh()) of
DiceLoss(reduction="none"), GeneralizedDiceLoss) or the float64 eager formulas of
reference.region_torch_loss differentiated by autograd. Only the TorchScript
and torch.compile tests compare segloss with itself.
"""

import functools
import itertools
import math
import re

import pytest
import torch
import torch._dynamo
try:
    from monai.losses import DiceLoss as MonaiDiceLoss
    from monai.losses import GeneralizedDiceLoss as MonaiGeneralizedDiceLoss
    from monai.losses import TverskyLoss as MonaiTverskyLoss
except ImportError:  # MONAI is optional (absent on the GPU machines): its comparisons skip
    MonaiDiceLoss = MonaiGeneralizedDiceLoss = MonaiTverskyLoss = None

import segloss
from helpers import (MONAI_FORMS, assert_close_to_scale, assert_matches,
                     assert_region_entries_match, dice_forward_backward,
                     dice_loss_shape, make_class_weights, make_dice_grad_output, make_dice_input,
                     make_dice_target, make_mask, monai_cases, monai_onehot,
                     run_python)
from helpers import (SCRIPTED_DICE_CHILD, make_scripted_dice_data,
                     run_scripted_dice_model)
from reference import ACTIVATIONS, dice_focal_torch, region_torch

needs_monai = pytest.mark.skipif(MonaiDiceLoss is None, reason="needs MONAI")

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

REDUCTIONS = ("mean", "sum", "none")


class Spec:
    """One region loss: its function name, nn module, whether it exposes
    Dice's gamma, sets of its own options to test, and whether it combines
    the classes into one value per image (generalized Dice)."""

    def __init__(self, name, module, has_gamma, params, per_image=False):
        self.name = name
        self.module = module
        self.has_gamma = has_gamma
        self.params = params  # list of dicts of the loss's own options
        self.per_image = per_image

    def gammas(self):
        return (1.0, 2.0, 1.5) if self.has_gamma else (1.0,)

    def loss_shape(self, shape, batch_dice, include_background, reduction):
        if not self.per_image:
            return dice_loss_shape(shape, batch_dice, include_background, reduction)
        if reduction != "none":
            return ()
        return (1,) if batch_dice else (shape[0],)

    def grad_output(self, shape, gen, dtype=torch.float64, *, batch_dice, include_background,
                    reduction):
        if not self.per_image:
            return make_dice_grad_output(shape, gen, dtype, batch_dice=batch_dice,
                                         include_background=include_background,
                                         reduction=reduction)
        out_shape = self.loss_shape(shape, batch_dice, include_background, reduction)
        if reduction == "none":
            return (-1.5 + 3 * torch.rand(out_shape, generator=gen, dtype=torch.float64)).to(dtype)
        return torch.tensor(1.25, dtype=dtype)


LOSSES = {
    "tversky_loss": Spec("tversky_loss", segloss.nn.TverskyLoss, False,
                         [dict(alpha=0.3, beta=0.7), dict(alpha=0.8, beta=0.2, focal_gamma=0.75),
                          dict(alpha=0.5, beta=0.5, focal_gamma=2.0)]),
    "jaccard_loss": Spec("jaccard_loss", segloss.nn.JaccardLoss, True, [dict()]),
    "log_cosh_dice_loss": Spec("log_cosh_dice_loss", segloss.nn.LogCoshDiceLoss, True, [dict()]),
    "generalized_dice_loss": Spec("generalized_dice_loss", segloss.nn.GeneralizedDiceLoss, False,
                                  [dict(w_type="square"), dict(w_type="simple"),
                                   dict(w_type="uniform")], per_image=True),
}
PER_CLASS = [name for name in LOSSES if not LOSSES[name].per_image]
NAMES = list(LOSSES)


def _options(spec, activation, *, gamma=1.0, params=None, smooth=(1e-5, 1e-5), batch_dice=False,
             include_background=True, class_weights=None, ignore_index=None, mask=None,
             reduction="mean"):
    options = dict(activation=activation, smooth_nr=smooth[0], smooth_dr=smooth[1],
                   batch_dice=batch_dice, include_background=include_background,
                   class_weights=class_weights, ignore_index=ignore_index, mask=mask,
                   reduction=reduction, **(params or {}))
    if spec.has_gamma:
        options["gamma"] = gamma
    else:
        assert gamma == 1.0
    return options


# --------------------------------------------------------------------------
# 1. MONAI: TverskyLoss, DiceLoss(jaccard=True), and log(cosh()) of the
# per-(n, c) DiceLoss(reduction="none") reduced by hand (MONAI has no
# log-cosh Dice). MONAI's TverskyLoss has no `weight`: a weighted Tversky is
# MONAI's reduction="none" times the weights, reduced by hand. Conventions
# as in test_dice.py: MONAI's `weight` has one entry per kept channel;
# its "none" keeps singleton spatial dims for DiceLoss, not for TverskyLoss.

def _monai_per_class(name, params, gamma, monai_options, x, target):
    """MONAI's per-(n, c) (or per-c with batch) loss terms, unreduced."""
    options = dict(monai_options, reduction="none")
    if name == "tversky_loss":
        terms = MonaiTverskyLoss(alpha=params.get("alpha", 0.5), beta=params.get("beta", 0.5),
                                 **options)(x, target)
        return terms ** params.get("focal_gamma", 1.0)
    terms = MonaiDiceLoss(squared_pred=gamma == 2.0, jaccard=name == "jaccard_loss",
                          **options)(x, target)
    terms = terms.reshape(terms.shape[:2] if not monai_options["batch"] else terms.shape[:1])
    return torch.log(torch.cosh(terms)) if name == "log_cosh_dice_loss" else terms


def _reduce(terms, weights, reduction):
    if weights is not None:
        terms = terms * weights
    return {"mean": terms.mean, "sum": terms.sum, "none": lambda: terms}[reduction]()


def _monai_params():
    for name, spec in LOSSES.items():
        for gamma in spec.gammas() if spec.has_gamma else (1.0,):
            if gamma not in (1.0, 2.0):
                continue  # MONAI has squared_pred only
            for i, params in enumerate(spec.params):
                for form_param in monai_cases():
                    form, include_background = form_param.values
                    if spec.per_image and MONAI_FORMS[form][3] is not None:
                        continue  # MONAI's GeneralizedDiceLoss has no ignore_index
                    yield pytest.param(name, gamma, params, form, include_background,
                                       id=f"{name}-g{gamma}-p{i}-{form_param.id}")


@needs_monai
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch", [False, True], ids=["per-image", "batch"])
@pytest.mark.parametrize("name,gamma,params,form,include_background", list(_monai_params()))
def test_matches_monai(name, gamma, params, form, include_background, batch, reduction, gen):
    spec = LOSSES[name]
    activation, c, kind, ignore = MONAI_FORMS[form]
    for spatial, smooth, weighted in itertools.product([(6, 7), (3, 4, 5)],
                                                       [(1e-5, 1e-5), (0.3, 1.7)],
                                                       [False, True]):
        if weighted and (c == 1 or spec.per_image):
            continue  # MONAI ignores `weight` when one channel is kept; GDL has none
        msg = f"{spatial} smooth={smooth} weighted={weighted}"
        shape = (2, c) + spatial
        x = make_dice_input(activation, shape, gen)
        t = make_dice_target(kind, shape, gen, ignore_index=ignore)
        weights = make_class_weights(c, gen) if weighted else None
        options = _options(spec, activation, gamma=gamma, params=params, smooth=smooth,
                           batch_dice=batch, include_background=include_background,
                           class_weights=weights, ignore_index=ignore, reduction=reduction)
        monai_options = dict(sigmoid=activation == "sigmoid", softmax=activation == "softmax",
                             smooth_nr=smooth[0], smooth_dr=smooth[1], batch=batch,
                             include_background=include_background)
        monai_target = t.double() if c == 1 else t
        if kind == "labels1" and c > 1:
            if gamma == 1.0:
                monai_options["to_onehot_y"] = True
            else:
                monai_target = monai_onehot(t, c, ignore)
        if ignore is not None:
            monai_options["ignore_index"] = ignore
        g = spec.grad_output(shape, gen, batch_dice=batch, include_background=include_background,
                             reduction=reduction)
        loss, grad = dice_forward_backward(x, t, g, loss=name, **options)

        xm = x.clone().requires_grad_()
        tol = 1e-10
        if spec.per_image:
            # MONAI's GDL reduces by itself; its weights are float32 (1e-8 relative)
            monai_loss = MonaiGeneralizedDiceLoss(reduction=reduction, **params,
                                                  **monai_options)(xm, monai_target)
            monai_loss = monai_loss.reshape(loss.shape)
            tol = 1e-7
        else:
            kept_weights = None
            if weighted:
                kept_weights = weights if include_background else weights[1:]
            monai_loss = _reduce(_monai_per_class(name, params, gamma, monai_options, xm,
                                                  monai_target), kept_weights, reduction)
        (monai_grad,) = torch.autograd.grad(monai_loss, xm, g)
        assert loss.shape == spec.loss_shape(shape, batch, include_background, reduction)
        assert_close_to_scale(loss, monai_loss, tol, f"{msg} loss")
        assert_close_to_scale(grad, monai_grad, tol, f"{msg} grad")


@needs_monai
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["tversky_loss", "jaccard_loss"])
def test_monai_own_reduction_and_weight(name, reduction, gen):
    # MONAI reducing by itself (and weighting, for Jaccard), not by hand.
    x = make_dice_input("softmax", (2, 4, 6, 7), gen)
    t = make_dice_target("labels1", (2, 4, 6, 7), gen)
    w = make_class_weights(4, gen)
    common = dict(softmax=True, to_onehot_y=True, include_background=False, reduction=reduction)
    if name == "tversky_loss":
        monai = MonaiTverskyLoss(alpha=0.2, beta=0.9, **common)
        ours = dict(alpha=0.2, beta=0.9)
    else:
        monai = MonaiDiceLoss(jaccard=True, weight=w[1:], **common)
        ours = dict(class_weights=w)
    loss = getattr(segloss, name)(x, t, activation="softmax", include_background=False,
                                  reduction=reduction, **ours)
    expected = monai(x, t)
    assert_close_to_scale(loss, expected.reshape(loss.shape), 1e-12)


@needs_monai
def test_tversky_half_half_is_dice_and_one_one_is_monai_jaccard_form(gen):
    x = make_dice_input("sigmoid", (2, 3, 6, 7), gen)
    t = make_dice_target("soft", (2, 3, 6, 7), gen)
    # (I + s) / (P/2 + T/2 + s) = (2I + 2s) / (P + T + 2s): Dice with doubled smoothing
    assert_close_to_scale(segloss.tversky_loss(x, t, reduction="none"),
                          segloss.dice_loss(x, t, smooth_nr=2e-5, smooth_dr=2e-5,
                                            reduction="none"), 1e-12)
    # alpha = beta = 1: TP / (TP + FP + FN) = I / (P + T - I), smoothing not doubled
    expected = MonaiTverskyLoss(sigmoid=True, alpha=1.0, beta=1.0, smooth_nr=0.0,
                                smooth_dr=0.0, reduction="none")(x, t)
    jaccard = segloss.jaccard_loss(x, t, smooth_nr=0.0, smooth_dr=0.0, reduction="none")
    assert_close_to_scale(jaccard, expected, 1e-12)


# --------------------------------------------------------------------------
# 2. The float64 eager formulas, every option.

CASES = {
    # id: (shape, target kind, ignore_index, mask, batch, include_background, weighted, reduction)
    "soft-2d-mean": ((2, 3, 6, 7), "soft", None, None, False, True, False, "mean"),
    "binary-3d-batch-nobg-weights-none": ((2, 3, 3, 4, 5), "binary", None, None, True, False,
                                          True, "none"),
    "labels-ignore-mask-sum": ((2, 3, 6, 7), "labels", 255, "n1s-float", False, True, True,
                               "sum"),
    "labels1-C1-11s-none": ((3, 1, 5, 6), "labels1", None, "11s-bool", False, True, False,
                            "none"),
    "onehot-3d-nobg-batch-mean": ((2, 4, 3, 4, 5), "onehot", None, None, True, False, False,
                                  "mean"),
    "labels-ignore0-n111-3d-none": ((2, 3, 3, 4, 5), "labels", 0, "n111-bool", False, False,
                                    True, "none"),
}


def _reference_params():
    for name, spec in LOSSES.items():
        for gamma in spec.gammas():
            for i, params in enumerate(spec.params):
                yield pytest.param(name, gamma, params, id=f"{name}-g{gamma}-p{i}")


def _problem(name, case, activation, gen, *, gamma=1.0, params=None, dtype=torch.float64,
             smooth=(1e-5, 1e-5)):
    shape, kind, ignore, mask, batch, bg, weighted, reduction = CASES[case]
    x = make_dice_input(activation, shape, gen, dtype)
    t = make_dice_target(kind, shape, gen, None if kind.startswith("labels") else dtype,
                         ignore_index=ignore)
    options = _options(LOSSES[name], activation, gamma=gamma, params=params, smooth=smooth,
                       batch_dice=batch, include_background=bg,
                       class_weights=make_class_weights(shape[1], gen, dtype) if weighted
                       else None,
                       ignore_index=ignore, mask=make_mask(mask, shape, gen),
                       reduction=reduction)
    g = LOSSES[name].grad_output(shape, gen, dtype, batch_dice=batch, include_background=bg,
                                 reduction=reduction)
    return x, t, g, options


@pytest.mark.parametrize("activation,case", [
    (activation, case) for activation, case in itertools.product(ACTIVATIONS, CASES)
    if not (activation == "softmax" and CASES[case][0][1] == 1)])  # a constant softmax
@pytest.mark.parametrize("name,gamma,params", list(_reference_params()))
def test_matches_reference(name, gamma, params, activation, case, gen):
    x, t, g, options = _problem(name, case, activation, gen, gamma=gamma, params=params)
    assert_region_entries_match(name, x, t, g, options)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("name", NAMES)
def test_lower_precision_matches_reference(name, activation, dtype, gen):
    # Sums accumulate in float32; the loss comes back in the input's dtype.
    spec = LOSSES[name]
    case = "labels-ignore-mask-sum" if activation == "softmax" else "soft-2d-mean"
    x, t, g, options = _problem(name, case, activation, gen, gamma=spec.gammas()[-1],
                                params=spec.params[-1], dtype=dtype)
    loss, grad = dice_forward_backward(x, t, g, loss=name, **options)
    ref_loss, ref_grad = region_torch(name, x.double(), t, grad_output=g.double(), **{
        k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
        for k, v in options.items()})
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_matches(loss, ref_loss, dtype, msg="loss")
    assert_matches(grad, ref_grad, dtype, msg="grad")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_half_large_input_stays_finite(name, dtype, gen):
    # 2 x 512 x 512 pixels: float16 sums would overflow (max 65504).
    x = make_dice_input("sigmoid", (2, 1, 512, 512), gen, torch.float32)
    t = make_dice_target("binary", (2, 1, 512, 512), gen, torch.float32, foreground=0.5)
    expected = getattr(segloss, name)(x, t)
    loss = getattr(segloss, name)(x.to(dtype), t.to(dtype))
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.float(), expected, rtol=2e-2, atol=1e-3)


# --------------------------------------------------------------------------
# 3. Special values: empty targets, the focal term at a perfect score,
# log-cosh's stability.

@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("name", PER_CLASS)
def test_nothing_predicted_nothing_true_unsmoothed_is_a_perfect_score(name, batch_dice):
    # Activation "none" with p = 0 and y = 0 in channel 1: 0 / 0 there.
    x = torch.full((2, 2, 4, 5), 0.3, dtype=torch.float64)
    x[:, 1] = 0.0
    t = torch.zeros_like(x)
    t[:, 0, :2] = 1.0
    options = dict(activation="none", smooth_nr=0.0, smooth_dr=0.0, batch_dice=batch_dice,
                   reduction="none")
    if name == "tversky_loss":
        options["focal_gamma"] = 0.75
    x.requires_grad_()
    loss = getattr(segloss, name)(x, t, **options)
    assert torch.all(loss[..., 1] == 0)
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()
    ref, _ = region_torch(name, x, t, **options)
    assert_matches(loss.detach(), ref)


@pytest.mark.parametrize("name", PER_CLASS)
def test_empty_target_with_default_smoothing(name, gen):
    # A channel without target scores s_nr / (... + s_dr) in its ratio: near
    # 1 (loss near 0) when nothing is predicted, else a loss near its maximum
    # that pushes the false positives down.
    x = torch.full((1, 2, 8, 8), -30.0, dtype=torch.float64)  # sigmoid ~ 1e-13
    t = torch.zeros_like(x)
    near_empty = getattr(segloss, name)(x, t, reduction="none")
    assert torch.all(near_empty < 1e-3)
    x[:, 1] = 3.0  # predicted everywhere, nothing true
    x.requires_grad_()
    loss = getattr(segloss, name)(x, t, reduction="none")
    ceiling = {"log_cosh_dice_loss": math.log(math.cosh(1.0))}.get(name, 1.0)
    assert loss[0, 1] > 0.99 * ceiling
    loss[0, 1].backward()
    assert torch.all(x.grad[:, 1] > 0)  # lowering the logits lowers the loss


@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
def test_generalized_dice_of_absent_classes(w_type):
    # Image 0: class 0 present, class 1 absent (weight: the largest finite
    # one, so its false positives count); image 1: every class absent (all
    # weights 0 for square/simple: loss 1 - s_nr / s_dr = 0, gradient 0).
    x = torch.full((2, 2, 4, 5), 0.3, dtype=torch.float64, requires_grad=True)
    t = torch.zeros(2, 2, 4, 5, dtype=torch.float64)
    t[0, 0, :2] = 1.0
    loss = segloss.generalized_dice_loss(x, t, activation="none", w_type=w_type,
                                         reduction="none")
    ref, _ = region_torch("generalized_dice_loss", x, t, activation="none", w_type=w_type,
                          reduction="none")
    assert_matches(loss.detach(), ref)
    loss.sum().backward()
    assert torch.all(x.grad[0, 1] > 0)  # the absent class's false positives are penalised
    if w_type != "uniform":
        assert loss[1] == 0 and torch.equal(x.grad[1], torch.zeros_like(x.grad[1]))
    # unsmoothed, nothing predicted, nothing true: a perfect score, never NaN
    x0 = torch.zeros(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    loss = segloss.generalized_dice_loss(x0, t[1:], activation="none", w_type=w_type,
                                         smooth_nr=0.0, smooth_dr=0.0)
    loss.backward()
    assert loss == 0 and torch.isfinite(x0.grad).all()


def test_focal_tversky_at_a_perfect_score_has_zero_gradient():
    x = torch.tensor([[[[0.0, 1.0, 1.0, 0.0]]]], dtype=torch.float64, requires_grad=True)
    t = x.detach().clone()
    loss = segloss.tversky_loss(x, t, activation="none", focal_gamma=0.75, smooth_nr=0.0,
                                smooth_dr=0.0)
    assert loss == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_focal_gamma_raises_each_term_not_the_mean(gen):
    # segmentation_models_pytorch's TverskyLoss raises the mean instead.
    x = make_dice_input("sigmoid", (2, 3, 6, 7), gen)
    t = make_dice_target("binary", (2, 3, 6, 7), gen)
    terms = segloss.tversky_loss(x, t, alpha=0.7, beta=0.3, reduction="none")
    focal = segloss.tversky_loss(x, t, alpha=0.7, beta=0.3, focal_gamma=0.75)
    assert_close_to_scale(focal, (terms ** 0.75).mean(), 1e-14)
    assert not torch.isclose(focal, terms.mean() ** 0.75, rtol=1e-6)


@pytest.mark.parametrize("smooth_nr", [0.0, 1e-5, 2.0, 1e6])
def test_log_cosh_is_stable_and_accurate_for_every_dice(smooth_nr, gen):
    # smooth_nr > smooth_dr makes the Dice loss negative, down to -1e11.
    x = make_dice_input("sigmoid", (2, 2, 5, 6), gen)
    t = make_dice_target("binary", (2, 2, 5, 6), gen)
    options = dict(smooth_nr=smooth_nr, smooth_dr=1e-5, reduction="none")
    x.requires_grad_()
    d = segloss.dice_loss(x, t, **options)
    loss = segloss.log_cosh_dice_loss(x, t, **options)
    d64 = d.detach()
    # log cosh d = |d| - log 2 + log1p(exp(-2|d|)), written independently with mpmath-free math
    expected = torch.tensor([math.log(math.cosh(v)) if abs(v) < 300 else
                             abs(v) - math.log(2.0) for v in d64.flatten().tolist()],
                            dtype=torch.float64).reshape(d64.shape)
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-14, atol=1e-300)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    (expected_grad,) = torch.autograd.grad((torch.tanh(d64) * d).sum(), x)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name,options", [
    ("dice_loss", dict(smooth_nr=1.0, smooth_dr=1e-20, include_background=False)),
    ("tversky_loss", dict(smooth_nr=1.0, smooth_dr=1e-20,
                          class_weights=torch.tensor([0.0, 1.0]))),
    ("generalized_dice_loss", dict(smooth_nr=1.0, smooth_dr=1e-37, activation="none")),
])
def test_float32_group_that_weighs_nothing_has_zero_gradient(name, options):
    # Found by the fuzz: num / den^2 of a group that weighs 0 (dropped, weight
    # 0, or generalized Dice with every class absent) overflows float32, and
    # its gradient was 0 * inf = NaN; the epilogue runs in float64.
    if name == "generalized_dice_loss":
        x, t = torch.tensor([[[0.9505]]]), torch.tensor([[0]])
    else:
        x, t = torch.tensor([[[-1e4], [1.6011]]]), torch.tensor([[1]])
    g = torch.tensor(1.0)
    loss, grad = dice_forward_backward(x, t, g, loss=name, **options)
    ref_loss, ref_grad = region_torch(name, x.double(), t, grad_output=g.double(), **{
        k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in options.items()})
    assert torch.isfinite(grad).all()
    assert_matches(loss, ref_loss, torch.float32)
    assert_matches(grad, ref_grad, torch.float32)


def test_focal_tversky_keeps_a_nan_term():
    # Found by the fuzz: a NaN term scored 0 under focal_gamma != 1.
    x = torch.tensor([[[0.3, float("nan")]]])
    y = torch.tensor([[[1.0, 0.0]]])
    for focal_gamma in (0.75, 1.0, 2.0):
        assert torch.isnan(segloss.tversky_loss(x, y, focal_gamma=focal_gamma))


def test_float32_tversky_keeps_an_alpha_below_float32_range():
    # Found by the fuzz: alpha = 1e-300 was 0 in a float32 epilogue. Here
    # TP = 0, FN = 0, FP > 0: the loss is 1 for every alpha > 0, 0 at alpha = 0.
    x, y = torch.tensor([[[-3.0, -2.0]]]), torch.zeros(1, 1, 2)
    options = dict(beta=0.0, smooth_nr=0.0, smooth_dr=0.0)
    assert float(segloss.tversky_loss(x, y, alpha=1e-300, **options)) == 1.0
    assert float(segloss.tversky_loss(x, y, alpha=0.0, **options)) == 0.0


def test_log_cosh_of_a_tiny_dice_loss_keeps_its_relative_accuracy():
    # d ~ 1e-6: cosh(d) - 1 ~ 5e-13 would lose digits as cosh(d) - 1.
    x = torch.full((1, 1, 4, 4), 0.999999, dtype=torch.float64)
    t = torch.ones_like(x)
    d = float(segloss.dice_loss(x, t, activation="none", smooth_nr=0.0, smooth_dr=0.0))
    loss = float(segloss.log_cosh_dice_loss(x, t, activation="none", smooth_nr=0.0,
                                            smooth_dr=0.0))
    expected = d * d / 2 - d ** 4 / 12  # series of log cosh
    assert abs(loss - expected) <= 1e-14 * expected


# --------------------------------------------------------------------------
# 4. gradcheck, opcheck.

def _gradcheck_cases():
    for name in NAMES:
        spec = LOSSES[name]
        options = itertools.product(ACTIVATIONS, ["soft", "labels-ignore"],
                                    [(False, True, False, None), (True, False, True, "n1s-float")])
        for i, (act, target, (batch, bg, weighted, mask)) in enumerate(options):
            gamma = spec.gammas()[i % len(spec.gammas())]
            params = spec.params[i % len(spec.params)]
            yield pytest.param(name, act, target, batch, bg, weighted, mask, gamma, params,
                               REDUCTIONS[i % 3],
                               id=f"{name}-{act}-{target}-{'batch' if batch else 'img'}-"
                                  f"{'bg' if bg else 'nobg'}-g{gamma}-{i}")


@pytest.mark.parametrize("name,activation,target,batch,bg,weighted,mask,gamma,params,reduction",
                         list(_gradcheck_cases()))
def test_gradcheck(name, activation, target, batch, bg, weighted, mask, gamma, params, reduction,
                   gen):
    kind, ignore = ("labels", 255) if target == "labels-ignore" else (target, None)
    shape = (2, 3, 3, 4)
    x = make_dice_input(activation, shape, gen).requires_grad_()
    t = make_dice_target(kind, shape, gen, ignore_index=ignore)
    options = _options(LOSSES[name], activation, gamma=gamma, params=params, batch_dice=batch,
                       include_background=bg,
                       class_weights=make_class_weights(3, gen) if weighted else None,
                       ignore_index=ignore, mask=make_mask(mask, shape, gen),
                       reduction=reduction)
    fn = getattr(segloss, name)
    assert torch.autograd.gradcheck(lambda x: fn(x, t, **options), (x,), eps=1e-6, atol=1e-8,
                                    rtol=1e-6)


OPCHECK_SAMPLES = {
    # id: (dtype, shape, activation, target kind, ignore_index, mask, extra options)
    "f64-softmax-labels-ignore-mask-nobg-weights": (
        torch.float64, (2, 3, 4, 5), "softmax", "labels", 255, "n1s-bool",
        dict(include_background=False, class_weights=True, reduction="sum")),
    "f32-sigmoid-soft-batch-none": (torch.float32, (2, 3, 4, 5), "sigmoid", "soft", None, None,
                                    dict(batch_dice=True, reduction="none")),
    "bf16-none-binary-3d": (torch.bfloat16, (2, 2, 3, 4, 5), "none", "binary", None,
                            "11s-float", dict()),
}


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES)
@pytest.mark.parametrize("name", NAMES)
def test_opcheck(name, sample, gen):
    dtype, shape, activation, kind, ignore, mask, extra = OPCHECK_SAMPLES[sample]
    x = make_dice_input(activation, shape, gen, dtype).requires_grad_()
    t = make_dice_target(kind, shape, gen, None if kind == "labels" else dtype,
                         ignore_index=ignore)
    options = _options(LOSSES[name], activation, params=LOSSES[name].params[-1],
                       ignore_index=ignore, mask=make_mask(mask, shape, gen), **{
                           k: (make_class_weights(shape[1], gen, dtype) if k == "class_weights"
                               else v) for k, v in extra.items()})
    torch.library.opcheck(getattr(torch.ops.segloss, name).default, (x, t), options)


@pytest.mark.parametrize("name", ["dice_loss", *NAMES])
def test_opcheck_region_loss_from_sums(name, gen):
    sums = torch.rand(3, 4, 3, generator=gen, dtype=torch.float64) * 10
    sums[..., 0] = torch.minimum(sums[..., 0], torch.minimum(sums[..., 1], sums[..., 2]))
    sums.requires_grad_()
    w = make_class_weights(4, gen)
    for args in [(sums, name, 1e-5, 1e-5, True, False, w, "mean"),
                 (sums, name, 0.0, 1.0, False, True, None, "none", 0.3, 0.8, 0.75, "simple")]:
        torch.library.opcheck(torch.ops.segloss._region_loss_from_sums.default, args)


# --------------------------------------------------------------------------
# 5. TorchScript and torch.compile.

class RegionModel(torch.nn.Module):
    """Each region loss as a module and as a function."""

    def __init__(self):
        super().__init__()
        self.tversky = segloss.nn.TverskyLoss(
            activation="softmax", alpha=0.3, beta=0.7, focal_gamma=0.75, batch_dice=True,
            include_background=False, class_weights=torch.tensor([7.0, 0.5, 2.0]),
            ignore_index=255, reduction="none")
        self.jaccard = segloss.nn.JaccardLoss(gamma=2.0, smooth_nr=0.0, smooth_dr=1e-3)
        self.log_cosh = segloss.nn.LogCoshDiceLoss(activation="softmax", ignore_index=255,
                                                   reduction="sum")
        self.generalized = segloss.nn.GeneralizedDiceLoss(activation="softmax", w_type="simple",
                                                          ignore_index=255, reduction="none")

    def forward(self, x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor,
                mask: torch.Tensor):
        per_class = self.tversky(x, labels)
        modules = (per_class.sum() + self.jaccard(x[:, 1:2], y, mask) + self.log_cosh(x, labels)
                   + self.generalized(x, labels, mask).sum())
        functional = (
            segloss.tversky_loss(x, labels, activation="sigmoid", alpha=0.9, beta=0.1,
                                 ignore_index=255, mask=mask)
            + segloss.jaccard_loss(x, labels, activation="softmax", gamma=1.5, ignore_index=255)
            + segloss.log_cosh_dice_loss(x[:, 1:2], y, mask=mask, batch_dice=True,
                                         soft_label=True)
            + segloss.generalized_dice_loss(x, labels, activation="softmax", batch_dice=True,
                                            include_background=False, ignore_index=255))
        return modules + functional, per_class


@pytest.fixture
def script_data(gen):
    return make_scripted_dice_data(gen)


def _assert_equal(results, expected):
    """Equal losses; input gradients equal up to the order in which the
    TorchScript interpreter accumulates the eight losses' contributions."""
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        assert results[key].dtype == value.dtype and results[key].shape == value.shape, key
        if key == "grad":
            torch.testing.assert_close(results[key], value, rtol=1e-6, atol=1e-8)
        else:
            assert torch.equal(results[key], value), (key, (results[key] - value).abs().max())


def test_scripted_in_process_equals_eager(script_data, tmp_path):
    model = RegionModel()
    scripted = torch.jit.script(model)
    graph = str(scripted.inlined_graph)
    for name in NAMES:
        assert f"segloss::{name}" in graph, name
    scripted.save(str(tmp_path / "model.pt"))
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    expected = run_scripted_dice_model(model, script_data)
    _assert_equal(run_scripted_dice_model(scripted, script_data), expected)
    _assert_equal(run_scripted_dice_model(loaded, script_data), expected)
    ref, _ = region_torch("tversky_loss", script_data["x"], script_data["labels"],
                          activation="softmax", alpha=0.3, beta=0.7, focal_gamma=0.75,
                          batch_dice=True, include_background=False,
                          class_weights=torch.tensor([7.0, 0.5, 2.0]), ignore_index=255,
                          reduction="none")
    assert_matches(expected["per_class"], ref)


def test_scripted_runs_in_fresh_process_without_segloss(script_data, tmp_path):
    model = RegionModel()
    torch.jit.script(model).save(str(tmp_path / "model.pt"))
    torch.save(script_data, tmp_path / "inputs.pt")
    run_python(SCRIPTED_DICE_CHILD, str(tmp_path / "model.pt"), segloss.library_path(),
               str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt"), cwd=tmp_path)
    _assert_equal(torch.load(tmp_path / "out.pt"), run_scripted_dice_model(model, script_data))


@pytest.mark.parametrize("name", NAMES)
def test_scripted_functional_form(name, gen):
    scripted = torch.jit.script(getattr(segloss, name))
    x, t, g, options = _problem(name, "labels-ignore-mask-sum", "softmax", gen,
                                params=LOSSES[name].params[-1])
    assert torch.equal(scripted(x, t, **options), getattr(segloss, name)(x, t, **options))


@pytest.fixture
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compile_case(name, gen):
    x, t, g, options = _problem(name, "labels-ignore-mask-sum", "softmax", gen,
                                gamma=LOSSES[name].gammas()[-1], params=LOSSES[name].params[-1],
                                dtype=torch.float32)
    mask, w = options.pop("mask"), options.pop("class_weights")
    fn = getattr(segloss, name)

    def loss(x, t, mask, w):
        return fn(x, t, mask=mask, class_weights=w, **options)

    return loss, (x, t, mask, w, g)


def _compile_run(fn, x, t, mask, w, g):
    x = x.detach().clone().requires_grad_()
    loss = fn(x, t, mask, w)
    (grad,) = torch.autograd.grad(loss, x, g)
    return loss.detach(), grad


@pytest.mark.parametrize("name", NAMES)
def test_aot_eager_equals_eager(name, gen, _fresh_dynamo):
    fn, data = _compile_case(name, gen)
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    for a, e in zip(_compile_run(compiled, *data), _compile_run(fn, *data)):
        assert torch.equal(a, e), (a - e).abs().max()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_inductor_matches_eager(name, gen, _fresh_dynamo):
    fn, data = _compile_case(name, gen)
    compiled = torch.compile(fn, backend="inductor", fullgraph=True)
    # Inductor fuses the epilogue's float32 arithmetic: equal to rounding.
    for a, e in zip(_compile_run(compiled, *data), _compile_run(fn, *data)):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# 6. Modules, errors.

def test_module_reprs_and_state():
    w = torch.tensor([1.0, 2.0, 0.5])
    tversky = segloss.nn.TverskyLoss(activation="softmax", alpha=0.3, beta=0.7,
                                     focal_gamma=0.75, class_weights=w, ignore_index=255)
    assert repr(tversky) == (
        "TverskyLoss(activation='softmax', alpha=0.3, beta=0.7, focal_gamma=0.75, "
        "smooth_nr=1e-05, smooth_dr=1e-05, batch_dice=False, include_background=True, "
        "class_weights=Tensor[3], ignore_index=255, reduction='mean')")
    assert set(tversky.state_dict()) == {"class_weights"}
    assert repr(segloss.nn.JaccardLoss(gamma=2, batch_dice=True, ddp=True)) == (
        "JaccardLoss(activation='sigmoid', gamma=2.0, smooth_nr=1e-05, smooth_dr=1e-05, "
        "batch_dice=True, include_background=True, reduction='mean', ddp=True)")
    assert repr(segloss.nn.GeneralizedDiceLoss(activation="softmax", w_type="simple")) == (
        "GeneralizedDiceLoss(activation='softmax', w_type='simple', smooth_nr=1e-05, "
        "smooth_dr=1e-05, batch_dice=False, include_background=True, reduction='mean')")
    assert repr(segloss.nn.LogCoshDiceLoss(reduction="none")) == (
        "LogCoshDiceLoss(activation='sigmoid', gamma=1.0, smooth_nr=1e-05, smooth_dr=1e-05, "
        "batch_dice=False, include_background=True, reduction='none')")


X = torch.randn(2, 3, 4, 4)
SOFT = torch.rand(2, 3, 4, 4)


def _error_cases():
    for name in NAMES:
        fn = f"segloss.{name}"
        yield pytest.param(name, ValueError, f"{fn}: reduction must be", dict(reduction="max"),
                           id=f"{name}-reduction")
        yield pytest.param(name, ValueError, f"{fn}: smooth_nr and smooth_dr must be >= 0",
                           dict(smooth_dr=-1.0), id=f"{name}-smooth")
        yield pytest.param(name, ValueError, f"{fn}: smooth_dr = 1e-100 is below the smallest",
                           dict(smooth_dr=1e-100), id=f"{name}-float32-smooth")
        yield pytest.param(name, RuntimeError, f"{fn}: class_weights must have shape \\[C\\]",
                           dict(class_weights=torch.ones(2)), id=f"{name}-class-weights")
        yield pytest.param(name, ValueError, f"{fn}: activation must be",
                           dict(activation="relu"), id=f"{name}-activation")
        if LOSSES[name].has_gamma:
            yield pytest.param(name, ValueError, f"{fn}: gamma must be a finite number >= 1",
                               dict(gamma=0.5), id=f"{name}-gamma")
    for arg, value, rule in [("alpha", -1.0, ">= 0"), ("beta", -0.5, ">= 0"),
                             ("focal_gamma", 0.0, "> 0"), ("focal_gamma", -2.0, "> 0")]:
        yield pytest.param("tversky_loss", ValueError,
                           f"segloss.tversky_loss: {arg} must be {rule}, got {value:g}",
                           {arg: value}, id=f"tversky_loss-{arg}{value}")
    for arg in ("alpha", "beta", "focal_gamma"):  # (every gradient would be inf * 0)
        yield pytest.param("tversky_loss", ValueError,
                           f"segloss.tversky_loss: {arg} must be finite, got inf",
                           {arg: float("inf")}, id=f"tversky_loss-{arg}-inf")
    yield pytest.param("generalized_dice_loss", ValueError,
                       "segloss.generalized_dice_loss: w_type must be 'square', 'simple' or "
                       "'uniform', got 'cube'", dict(w_type="cube"), id="generalized-w_type")


@pytest.mark.parametrize("entry", ["op", "functional"])
@pytest.mark.parametrize("name,exc,message,kwargs", list(_error_cases()))
def test_errors(name, exc, message, kwargs, entry):
    fn = getattr(torch.ops.segloss if entry == "op" else segloss, name)
    with pytest.raises(exc, match=message):
        fn(X, SOFT, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_include_background_false_is_ignored_for_one_channel(name):
    # As MONAI (which warns): with one channel there is no other to keep.
    x, y = X[:, :1].double().requires_grad_(), SOFT[:, :1].double()
    loss = getattr(segloss, name)(x, y, include_background=False, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), x)
    ref_loss, ref_grad = region_torch(name, x, y, include_background=True, reduction="none",
                                      grad_output=torch.ones_like(loss))
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)


@pytest.mark.parametrize("module", [spec.module for spec in LOSSES.values()]
                         + [segloss.nn.DiceCELoss, segloss.nn.DiceFocalLoss],
                         ids=lambda m: m.__name__)
def test_modules_refuse_negative_class_weights(module):
    # As MONAI's weight, checked once on construction.
    with pytest.raises(ValueError, match=re.escape(
            f"{module.__name__}: class_weights must be non-negative, got [1.0, -0.5, 2.0]")):
        module(class_weights=torch.tensor([1.0, -0.5, 2.0]))
    module(class_weights=torch.tensor([1.0, 0.0, 2.0]))


@needs_monai
@pytest.mark.filterwarnings("ignore:single channel prediction")
def test_include_background_false_with_one_channel_matches_monai():
    x, y = X[:, :1].double(), (SOFT[:, :1] > 0.5).double()
    options = dict(sigmoid=True, include_background=False, reduction="none")
    for loss, monai in (("dice_loss", MonaiDiceLoss(**options)),
                        ("tversky_loss", MonaiTverskyLoss(alpha=0.3, beta=0.7, **options)),
                        ("generalized_dice_loss", MonaiGeneralizedDiceLoss(**options))):
        params = dict(alpha=0.3, beta=0.7) if loss == "tversky_loss" else {}
        got = getattr(segloss, loss)(x, y, include_background=False, reduction="none", **params)
        assert_matches(got, monai(x, y).reshape(got.shape))


def test_private_epilogue_names_the_loss_and_rejects_unknown_ones():
    sums = torch.rand(2, 3, 3)
    with pytest.raises(TypeError, match="segloss.dice_loss: sums must be a float32, float64"):
        torch.ops.segloss._region_loss_from_sums((sums * 10).long(), "dice_loss", 1e-5, 1e-5,
                                                 True, True, None, "mean")
    with pytest.raises(ValueError, match="segloss.tversky_loss: beta must be >= 0"):
        torch.ops.segloss._region_loss_from_sums(sums, "tversky_loss", 1e-5, 1e-5, True, True,
                                                 None, "mean", 0.5, -1.0, 1.0)
    with pytest.raises(ValueError, match="segloss._region_loss_from_sums: loss must be one of "
                                         "'dice_loss', 'tversky_loss', 'jaccard_loss', "
                                         "'log_cosh_dice_loss', 'generalized_dice_loss', got "
                                         "'focal_loss'"):
        torch.ops.segloss._region_loss_from_sums(sums, "focal_loss", 1e-5, 1e-5, True, True,
                                                 None, "mean")


@pytest.mark.parametrize("kwargs,message", [
    (dict(alpha=-1), "segloss.nn.TverskyLoss: alpha must be >= 0, got -1"),
    (dict(beta=-1), "segloss.nn.TverskyLoss: beta must be >= 0, got -1"),
    (dict(focal_gamma=0), "segloss.nn.TverskyLoss: focal_gamma must be > 0, got 0"),
    (dict(alpha=float("inf")), "segloss.nn.TverskyLoss: alpha must be finite, got inf"),
    (dict(focal_gamma=float("inf")),
     "segloss.nn.TverskyLoss: focal_gamma must be finite, got inf"),
    (dict(reduction="max"), "segloss.nn.TverskyLoss: reduction must be one of"),
    (dict(activation="relu"), "segloss.nn.TverskyLoss: activation must be"),
    (dict(ddp=True), "segloss.nn.TverskyLoss: ddp=True needs batch_dice=True"),
])
def test_tversky_module_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        segloss.nn.TverskyLoss(**kwargs)


@pytest.mark.parametrize("module", [segloss.nn.JaccardLoss, segloss.nn.LogCoshDiceLoss])
def test_dice_like_modules_reject_bad_arguments(module):
    """gamma, checked by the options the region modules share."""
    with pytest.raises(ValueError, match=f"segloss.nn.{module.__name__}: gamma must be >= 1"):
        module(gamma=0.5)


@pytest.mark.parametrize("name", NAMES)
def test_ddp_needs_batch_dice_and_a_process_group(name):
    fn = getattr(segloss, name)
    with pytest.raises(ValueError, match=f"segloss.{name}: ddp=True needs batch_dice=True"):
        fn(X, SOFT, ddp=True)
    with pytest.raises(RuntimeError, match=f"segloss.{name}: ddp=True needs an initialised"):
        fn(X, SOFT, batch_dice=True, ddp=True)


def test_generalized_dice_module_rejects_an_unknown_w_type():
    with pytest.raises(ValueError, match="segloss.nn.GeneralizedDiceLoss: w_type must be "
                                         "'square', 'simple' or 'uniform', got 'cube'"):
        segloss.nn.GeneralizedDiceLoss(w_type="cube")


@pytest.mark.parametrize("name", ["dice_loss"] + NAMES + ["dice_focal_loss"])
def test_dropped_background_gets_no_gradient_from_a_nan_logit(name, gen):
    """include_background=False drops channel 0 before the formula, as MONAI
    drops it from the input: a NaN logit there leaves the sigmoid loss finite
    and channel 0's gradient 0 at its finite pixels, as the float64
    references (was NaN: 0 / NaN in the formula's backward)."""
    x = make_dice_input("sigmoid", (2, 3, 4, 5), gen)
    x[1, 0, 2, 3] = float("nan")
    labels = torch.randint(0, 3, (2, 4, 5), generator=gen)
    leaf = x.clone().requires_grad_()
    value = getattr(segloss, name)(leaf, labels, include_background=False)
    (grad,) = torch.autograd.grad(value, leaf)
    reference = dice_focal_torch if name == "dice_focal_loss" else \
        functools.partial(region_torch, name)
    want, want_grad = reference(x, labels, include_background=False,
                                grad_output=torch.tensor(1.0, dtype=torch.float64))
    finite = torch.isfinite(x)
    assert bool(torch.isfinite(value)) and bool(torch.isfinite(want))
    assert bool((grad[:, 0][finite[:, 0]] == 0).all()) and bool(
        (want_grad[:, 0][finite[:, 0]] == 0).all())
    assert_matches(value, want)
    assert_matches(grad[finite], want_grad[finite])


@needs_monai
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("weight", [[0.5, 2.0, 1.5], (1, 2, 3), 2.5, 3],
                         ids=["list", "int-tuple", "float", "int"])
def test_modules_take_monai_weights_as_numbers(weight):
    # MONAI's `weight`: a sequence of numbers, or one number for every class
    # (a 0-D tensor reaches the functions, which give it to every channel).
    from monai.losses import DiceFocalLoss, FocalLoss
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 6, 5), generator=gen)
    pairs = [
        (segloss.nn.DiceLoss(activation="softmax", class_weights=weight),
         MonaiDiceLoss(softmax=True, to_onehot_y=True, weight=weight)),
        (segloss.nn.DiceFocalLoss(activation="softmax", focal_activation="sigmoid",
                                  class_weights=weight),
         DiceFocalLoss(softmax=True, to_onehot_y=True, weight=weight)),
        (segloss.nn.FocalLoss(activation="softmax", class_weights=weight),
         FocalLoss(use_softmax=True, to_onehot_y=True, weight=weight)),
    ]
    for ours, theirs in pairs:
        # (MONAI's focal term runs in float32.)
        torch.testing.assert_close(ours(x, labels), theirs(x, labels).double(), rtol=2e-7,
                                   atol=0)
    as_tensor = torch.as_tensor(weight, dtype=torch.float64)
    for module in (segloss.nn.TverskyLoss, segloss.nn.JaccardLoss, segloss.nn.DiceCELoss,
                   segloss.nn.GeneralizedDiceLoss):
        assert torch.equal(module(activation="softmax", class_weights=weight)(x, labels),
                           module(activation="softmax", class_weights=as_tensor.expand(3)
                                  if as_tensor.dim() == 0 else as_tensor)(x, labels))


def test_modules_name_class_weights_they_cannot_read():
    with pytest.raises(TypeError, match=r"segloss\.nn\.DiceLoss: class_weights must be a tensor, "
                                        r"a sequence of numbers or a number, got \['a', 'b'\]"):
        segloss.nn.DiceLoss(class_weights=["a", "b"])


@pytest.mark.parametrize("name", ["generalized_dice_loss", "dice_ce_loss", "dice_focal_loss"])
@pytest.mark.parametrize("target", ["soft", "labels"])
def test_losses_that_need_a_class_refuse_zero_channels(name, target):
    # Their formulas read or normalise over the classes (the plain region
    # losses give the mean of nothing, NaN, as torch.mean).
    x = torch.randn(2, 0, 4, 4)
    t = torch.rand(2, 0, 4, 4) if target == "soft" else torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"segloss\.{name}: input must have at least one "
                                         r"channel, got shape \[2, 0, 4, 4\]"):
        getattr(segloss, name)(x, t)
