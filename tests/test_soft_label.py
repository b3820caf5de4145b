"""soft_label=True on the region losses (dice_loss, jaccard_loss,
tversky_loss, log_cosh_dice_loss, generalized_dice_loss): MONAI's soft-label
formulation, TP = (P + T - D) / 2 with D = sum m |p - y|^gamma, from the
fourth column of the sums op (_dice_sums(..., soft_label=True)).

References: MONAI's DiceLoss / TverskyLoss / GeneralizedDiceLoss with
soft_label=True, and the float64 eager formulas of reference.region_torch
(soft_label=True) differentiated by autograd. Only the TorchScript and
torch.compile tests compare segloss with itself.
"""

import itertools

import pytest
import torch
try:
    from monai.losses import DiceLoss as MonaiDiceLoss
    from monai.losses import GeneralizedDiceLoss as MonaiGeneralizedDiceLoss
    from monai.losses import TverskyLoss as MonaiTverskyLoss
except ImportError:  # MONAI is optional (absent on the GPU machines): its comparisons skip
    MonaiDiceLoss = MonaiGeneralizedDiceLoss = MonaiTverskyLoss = None

import segloss
from helpers import (assert_aot_eager_equals_eager, assert_close_to_scale, assert_matches,
                     assert_region_entries_match,
                     dice_forward_backward,
                     make_class_weights, make_dice_input, make_dice_target, make_mask,
                     monai_onehot)
from reference import ACTIVATIONS, dice_sums_torch, region_torch

needs_monai = pytest.mark.skipif(MonaiDiceLoss is None, reason="needs MONAI")

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")


# key: (the segloss function, its own options, gamma)
LOSSES = {
    "dice": ("dice_loss", {}, 1.0),
    "dice-squared": ("dice_loss", {}, 2.0),
    "dice-g1.5": ("dice_loss", {}, 1.5),
    "jaccard": ("jaccard_loss", {}, 1.0),
    "jaccard-squared": ("jaccard_loss", {}, 2.0),
    "log-cosh": ("log_cosh_dice_loss", {}, 1.0),
    "tversky": ("tversky_loss", dict(alpha=0.3, beta=0.7), 1.0),
    "focal-tversky": ("tversky_loss", dict(alpha=0.8, beta=0.2, focal_gamma=0.75), 1.0),
    "gdl-square": ("generalized_dice_loss", dict(w_type="square"), 1.0),
    "gdl-simple": ("generalized_dice_loss", dict(w_type="simple"), 1.0),
    "gdl-uniform": ("generalized_dice_loss", dict(w_type="uniform"), 1.0),
}
HAS_GAMMA = {"dice_loss", "jaccard_loss", "log_cosh_dice_loss"}


def _options(key, activation, **options):
    function, params, gamma = LOSSES[key]
    options = dict(activation=activation, soft_label=True, **params, **options)
    if function in HAS_GAMMA:
        options["gamma"] = gamma
    return function, options


# --------------------------------------------------------------------------
# 1. MONAI, soft and hard targets, 2D and 3D.

def _monai_loss(key, activation, reduction, batch, include_background, onehot):
    function, params, gamma = LOSSES[key]
    common = dict(sigmoid=activation == "sigmoid", softmax=activation == "softmax",
                  to_onehot_y=onehot, include_background=include_background, batch=batch,
                  soft_label=True)
    monai_reduction = "none" if function == "log_cosh_dice_loss" else reduction
    if function == "tversky_loss":
        loss = MonaiTverskyLoss(alpha=params["alpha"], beta=params["beta"], reduction="none",
                                **common)
        focal = params.get("focal_gamma", 1.0)

        def call(x, t):
            terms = loss(x, t) ** focal
            return {"mean": terms.mean, "sum": terms.sum, "none": lambda: terms}[reduction]()
        return call
    if function == "generalized_dice_loss":
        return MonaiGeneralizedDiceLoss(w_type=params["w_type"], reduction=reduction, **common)
    loss = MonaiDiceLoss(squared_pred=gamma == 2.0, jaccard=function == "jaccard_loss",
                         reduction=monai_reduction, **common)
    if function != "log_cosh_dice_loss":
        return loss

    def log_cosh(x, t):
        terms = torch.log(torch.cosh(loss(x, t)))
        return {"mean": terms.mean, "sum": terms.sum, "none": lambda: terms}[reduction]()
    return log_cosh


MONAI_KEYS = [key for key in LOSSES if LOSSES[key][2] in (1.0, 2.0)]


@needs_monai
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("include_background,batch,reduction", [
    (True, False, "mean"), (False, True, "none"), (True, True, "sum"), (False, False, "none")],
    ids=["bg-image-mean", "nobg-batch-none", "bg-batch-sum", "nobg-image-none"])
@pytest.mark.parametrize("activation,target", [("sigmoid", "soft"), ("softmax", "soft"),
                                               ("softmax", "labels")])
@pytest.mark.parametrize("key", MONAI_KEYS)
def test_matches_monai(key, activation, target, include_background, batch, reduction, gen):
    function, options = _options(key, activation, include_background=include_background,
                                 batch_dice=batch, reduction=reduction)
    for spatial in [(6, 7), (3, 4, 5)]:
        shape = (2, 3) + spatial
        x = make_dice_input(activation, shape, gen)
        if target == "soft":
            t = make_dice_target("soft", shape, gen)
        else:
            t = make_dice_target("labels1", shape, gen)
        g = None
        loss, _ = dice_forward_backward(x, t, g, loss=function, **options)
        xm = x.clone().requires_grad_()
        # A float64 one-hot: MONAI's own (to_onehot_y) is float32, which its
        # vector norms would round.
        monai_target = monai_onehot(t, 3, None) if target == "labels" else t
        monai = _monai_loss(key, activation, reduction, batch, include_background, False)
        expected = monai(xm, monai_target)
        # MONAI's generalized Dice rounds its weights (1 / T^2) to float32:
        # about 1e-7 relative, more in gradients where its terms cancel.
        tol = 1e-6 if function == "generalized_dice_loss" else 1e-10
        assert_close_to_scale(loss, expected.reshape(loss.shape), tol, f"{spatial} loss")
        out = torch.randn(loss.shape, generator=gen, dtype=torch.float64)
        _, grad = dice_forward_backward(x, t, out, loss=function, **options)
        (monai_grad,) = torch.autograd.grad(expected.reshape(loss.shape), xm, out)
        assert loss.shape == expected.reshape(loss.shape).shape
        assert_close_to_scale(grad, monai_grad, tol, f"{spatial} grad")


@needs_monai
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("ignore_index", [0, 2, 255])
def test_dice_soft_label_with_ignore_index_matches_monai(ignore_index, gen):
    # MONAI masks input and target with the ignore mask before its norms.
    shape = (2, 3, 6, 7)
    x = make_dice_input("softmax", shape, gen)
    t = make_dice_target("labels1", shape, gen, ignore_index=ignore_index)
    loss, grad = dice_forward_backward(
        x, t, torch.tensor(1.0, dtype=torch.float64), activation="softmax", soft_label=True,
        ignore_index=ignore_index)
    xm = x.clone().requires_grad_()
    expected = MonaiDiceLoss(softmax=True, to_onehot_y=True, soft_label=True,
                             ignore_index=ignore_index)(xm, t)
    (monai_grad,) = torch.autograd.grad(expected, xm)
    assert_close_to_scale(loss, expected, 1e-10)
    assert_close_to_scale(grad, monai_grad, 1e-10)


# --------------------------------------------------------------------------
# 2. The float64 eager formulas, every option, every entry point.

CASES = {
    # id: (shape, target kind, ignore_index, mask, batch, include_background, weighted, reduction)
    "soft-2d-mean": ((2, 3, 6, 7), "soft", None, None, False, True, False, "mean"),
    "soft-3d-batch-nobg-weights-none": ((2, 3, 3, 4, 5), "soft", None, "n1s-float", True, False,
                                        True, "none"),
    "labels-ignore-mask-sum": ((2, 3, 6, 7), "labels", 255, "n1s-float", False, True, True,
                               "sum"),
    "binary-C1-none": ((3, 1, 5, 6), "binary", None, "11s-bool", False, True, False, "none"),
}


def _problem(key, case, activation, gen, dtype=torch.float64):
    shape, kind, ignore, mask, batch, bg, weighted, reduction = CASES[case]
    x = make_dice_input(activation, shape, gen, dtype)
    t = make_dice_target(kind, shape, gen, None if kind == "labels" else dtype,
                         ignore_index=ignore)
    function, options = _options(
        key, activation, batch_dice=batch, include_background=bg,
        class_weights=make_class_weights(shape[1], gen, dtype) if weighted else None,
        ignore_index=ignore, mask=make_mask(mask, shape, gen), reduction=reduction)
    out_shape = region_torch(function, x.double(), t, **_double(options))[0].shape
    g = (0.5 + torch.rand(out_shape, generator=gen, dtype=torch.float64)).to(dtype)
    return function, x, t, g, options


def _double(options):
    return {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
            for k, v in options.items()}


@pytest.mark.parametrize("activation,case", [
    (activation, case) for activation, case in itertools.product(ACTIVATIONS, CASES)
    if not (activation == "softmax" and CASES[case][0][1] == 1)])
@pytest.mark.parametrize("key", list(LOSSES))
def test_matches_reference(key, activation, case, gen):
    function, x, t, g, options = _problem(key, case, activation, gen)
    assert_region_entries_match(function, x, t, g, options)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("key", ["dice-g1.5", "jaccard", "focal-tversky", "gdl-square"])
def test_lower_precision_matches_reference(key, activation, dtype, gen):
    # Sums accumulate in float32; the loss comes back in the input's dtype.
    case = "labels-ignore-mask-sum" if activation == "softmax" else "soft-2d-mean"
    function, x, t, g, options = _problem(key, case, activation, gen, dtype)
    loss, grad = dice_forward_backward(x, t, g, loss=function, **options)
    ref_loss, ref_grad = region_torch(function, x.double(), t, grad_output=g.double(),
                                      **_double(options))
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_matches(loss, ref_loss, dtype, msg="loss")
    assert_matches(grad, ref_grad, dtype, msg="grad")


# --------------------------------------------------------------------------
# 3. What soft labels change, and what they do not.

@pytest.mark.parametrize("kind", ["binary", "labels", "onehot"])
@pytest.mark.parametrize("key", ["dice", "jaccard", "tversky", "gdl-simple", "log-cosh"])
def test_hard_targets_give_the_default_form(key, kind, gen):
    # With y in {0, 1} and gamma = 1, |p - y| = p + y - 2 p y: D = P + T - 2 I,
    # so TP = I and the two forms agree to rounding.
    shape = (2, 3, 6, 7)
    x = make_dice_input("softmax", shape, gen)
    t = make_dice_target(kind, shape, gen)
    function, options = _options(key, "softmax", reduction="none")
    g = torch.rand(region_torch(function, x, t, **options)[0].shape, generator=gen,
                   dtype=torch.float64)
    soft = dice_forward_backward(x, t, g, loss=function, **options)
    hard = dice_forward_backward(x, t, g, loss=function, **dict(options, soft_label=False))
    for a, b in zip(soft, hard):
        assert_close_to_scale(a, b, 1e-12)


@pytest.mark.parametrize("function", ["dice_loss", "jaccard_loss"])
def test_squared_soft_labels_give_the_default_form(function, gen):
    shape = (2, 3, 6, 7)
    x = make_dice_input("sigmoid", shape, gen)
    t = make_dice_target("soft", shape, gen)
    g = torch.rand(2, 3, generator=gen, dtype=torch.float64)
    options = dict(activation="sigmoid", gamma=2.0, reduction="none")
    soft = dice_forward_backward(x, t, g, loss=function, soft_label=True, **options)
    hard = dice_forward_backward(x, t, g, loss=function, **options)
    for a, b in zip(soft, hard):
        assert_close_to_scale(a, b, 1e-12)


@pytest.mark.parametrize("key", ["dice", "jaccard", "tversky", "gdl-square", "dice-g1.5"])
def test_prediction_equal_to_a_soft_target_is_a_perfect_score(key, gen):
    # The reason for soft labels: p = y scores 0 (the default form does not).
    # At p = y, d|p - y|/dp is the subgradient 0 (sign(0), as torch's abs and
    # MONAI's vector_norm give): Dice's and Jaccard's gradients vanish there,
    # Tversky's with alpha != beta does not (its FP and FN still move).
    y = make_dice_target("soft", (2, 3, 6, 7), gen)
    function, options = _options(key, "none", smooth_nr=0.0, smooth_dr=0.0, reduction="sum")
    one = torch.tensor(1.0, dtype=torch.float64)
    loss, grad = dice_forward_backward(y, y, one, loss=function, **options)
    assert abs(float(loss)) < 1e-14
    default = getattr(segloss, function)(y, y, **dict(options, soft_label=False))
    assert float(default) > 0.1
    _, ref_grad = region_torch(function, y, y, grad_output=one, **options)
    assert_matches(grad, ref_grad)
    if function != "tversky_loss":
        assert grad.abs().max() < 1e-13


def test_sums_op_fourth_column(gen):
    x = make_dice_input("softmax", (2, 3, 6, 7), gen)
    t = make_dice_target("soft", (2, 3, 6, 7), gen)
    mask = make_mask("n1s-float", (2, 3, 6, 7), gen)
    for gamma in (1.0, 1.5, 2.0):
        sums = torch.ops.segloss._dice_sums(x, t, "softmax", gamma, None, mask, False,
                                            "segloss._dice_sums", True)
        expected = dice_sums_torch(x, t, "softmax", gamma, None, mask, soft_label=True)
        assert sums.shape == (2, 3, 4)
        assert_close_to_scale(sums, expected, 1e-13)


def test_sums_op_has_no_soft_and_cross_entropy_layout():
    x, t = torch.randn(1, 2, 3, 3), torch.rand(1, 2, 3, 3)
    with pytest.raises(ValueError, match="segloss.dice_ce_loss: the sums have either the "
                                         "soft-label column or the cross-entropy columns"):
        torch.ops.segloss._dice_sums(x, t, "softmax", 1.0, None, None, True,
                                     "segloss.dice_ce_loss", True)


# --------------------------------------------------------------------------
# 4. Autograd, opcheck, TorchScript, torch.compile, autocast.

@pytest.mark.parametrize("key,activation", [
    (key, ACTIVATIONS[i % len(ACTIVATIONS)]) for i, key in enumerate(LOSSES)])
def test_gradcheck(key, activation, gen):
    shape = (2, 3, 3, 4)
    x = make_dice_input(activation, shape, gen).requires_grad_()
    t = make_dice_target("soft", shape, gen)
    function, options = _options(key, activation, batch_dice=key.endswith("squared"),
                                 mask=make_mask("n1s-float", shape, gen),
                                 class_weights=make_class_weights(3, gen), reduction="sum")
    fn = getattr(segloss, function)
    assert torch.autograd.gradcheck(lambda x: fn(x, t, **options), (x,), eps=1e-6, atol=1e-8,
                                    rtol=1e-6)


@pytest.mark.parametrize("key,dtype", [
    ("dice-g1.5", torch.float64), ("jaccard", torch.float32), ("log-cosh", torch.bfloat16),
    ("tversky", torch.float64), ("gdl-uniform", torch.float32)])
def test_opcheck(key, dtype, gen):
    shape = (2, 3, 4, 5)
    x = make_dice_input("softmax", shape, gen, dtype).requires_grad_()
    t = make_dice_target("labels", shape, gen, ignore_index=255)
    function, options = _options(key, "softmax", ignore_index=255,
                                 mask=make_mask("n1s-bool", shape, gen), reduction="none")
    torch.library.opcheck(getattr(torch.ops.segloss, function).default, (x, t), options)


def test_opcheck_sums_op(gen):
    x = make_dice_input("sigmoid", (2, 3, 4, 5), gen).requires_grad_()
    t = make_dice_target("soft", (2, 3, 4, 5), gen)
    torch.library.opcheck(torch.ops.segloss._dice_sums.default,
                          (x, t, "sigmoid", 1.5, None, None, False, "segloss.dice_loss", True))


class SoftModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dice = segloss.nn.DiceLoss(activation="softmax", soft_label=True)
        self.tversky = segloss.nn.TverskyLoss(activation="softmax", alpha=0.2, beta=0.8,
                                              soft_label=True, reduction="none")
        self.gdl = segloss.nn.GeneralizedDiceLoss(activation="softmax", soft_label=True)

    def forward(self, x, t):
        return (self.dice(x, t) + self.tversky(x, t).sum() + self.gdl(x, t)
                + segloss.jaccard_loss(x, t, activation="softmax", soft_label=True)
                + segloss.log_cosh_dice_loss(x, t, activation="softmax", soft_label=True))


def test_scripted_model_equals_eager(gen):
    x = make_dice_input("softmax", (2, 3, 6, 7), gen)
    t = make_dice_target("soft", (2, 3, 6, 7), gen)
    model = SoftModel()
    assert torch.equal(torch.jit.script(model)(x, t), model(x, t))
    assert "soft_label=True" in repr(model.dice)


def test_compile_fullgraph_equals_eager(gen):
    x = make_dice_input("softmax", (2, 3, 6, 7), gen, torch.float32)
    t = make_dice_target("soft", (2, 3, 6, 7), gen, torch.float32)
    assert_aot_eager_equals_eager(SoftModel(), x, t)


@pytest.mark.parametrize("function", ["dice_loss", "jaccard_loss", "log_cosh_dice_loss",
                                      "tversky_loss", "generalized_dice_loss"])
def test_autocast_computes_in_float32(function, gen):
    # Every region loss under autocast, as PyTorch's own losses: float32 out.
    x = make_dice_input("softmax", (2, 3, 6, 7), gen, torch.float32)
    t = make_dice_target("soft", (2, 3, 6, 7), gen, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = getattr(segloss, function)(x.bfloat16(), t, activation="softmax",
                                          soft_label=True)
    assert loss.dtype == torch.float32
    expected = getattr(segloss, function)(x.bfloat16().float(), t, activation="softmax",
                                          soft_label=True)
    assert torch.equal(loss, expected)
