"""Values and input gradients of the segloss Dice loss: segloss.dice_loss,
torch.ops.segloss.dice_loss, segloss.nn.DiceLoss and the private ops
torch.ops.segloss._dice_sums / _dice_sums_backward.

Every value is compared with an independent reference: MONAI's DiceLoss, the
float64 NumPy formula with its analytic gradient (reference.dice_np), or an
eager PyTorch composite differentiated by autograd (reference.dice_torch /
dice_sums_torch). Only the TorchScript and torch.compile tests compare segloss
with itself (exact equality with eager mode).
"""

import itertools
import re
import warnings

import numpy as np
import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
try:
    from monai.losses import DiceLoss as MonaiDiceLoss
except ImportError:  # MONAI is optional (absent on the GPU machines): its comparisons skip
    MonaiDiceLoss = None

import segloss
from helpers import (CPU_ISAS, MONAI_FORMS, assert_close_to_scale, assert_matches,
                     dice_forward_backward, dice_loss_shape, make_dice_grad_output,
                     make_dice_input, make_dice_target, make_labels, make_mask, run_python,
                     run_python_with_cpu_isa)
from helpers import (SCRIPTED_DICE_CHILD, make_scripted_dice_data,
                     run_scripted_dice_model)
from helpers import make_class_weights as _weights
from helpers import monai_cases as _monai_cases
from helpers import monai_onehot as _monai_onehot
from reference import ACTIVATIONS, dice_np, dice_reference, dice_sums_torch, dice_torch

needs_monai = pytest.mark.skipif(MonaiDiceLoss is None, reason="needs MONAI")

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

REDUCTIONS = ("mean", "sum", "none")
GAMMAS = (1.0, 2.0, 1.5, 3.0)
SHAPE_2D = (2, 3, 6, 7)
SHAPE_3D = (2, 3, 3, 4, 5)


def _case(activation, gen, *, shape=SHAPE_2D, target="soft", label_dtype=torch.int64,
          gamma=1.0, smooth=(1e-5, 1e-5), batch_dice=False, include_background=True,
          class_weights=False, ignore_index=None, mask=None, reduction="mean",
          dtype=torch.float64, device="cpu"):
    """(input, target, grad_output, options): one Dice problem, options as
    segloss.dice_loss's keyword arguments."""
    x = make_dice_input(activation, shape, gen, dtype, device)
    t_dtype = label_dtype if target.startswith("labels") else dtype
    t = make_dice_target(target, shape, gen, t_dtype, device, ignore_index=ignore_index)
    options = dict(activation=activation, gamma=gamma, smooth_nr=smooth[0], smooth_dr=smooth[1],
                   batch_dice=batch_dice, include_background=include_background,
                   class_weights=_weights(shape[1], gen, dtype, device) if class_weights else None,
                   ignore_index=ignore_index, mask=make_mask(mask, shape, gen, device),
                   reduction=reduction)
    g = make_dice_grad_output(shape, gen, dtype, device, batch_dice=batch_dice,
                              include_background=include_background, reduction=reduction)
    return x, t, g, options


def _check(x, t, g, options, reference=dice_reference, entry="functional", tol_dtype=None,
           msg=""):
    loss, grad = dice_forward_backward(x, t, g, entry, **options)
    ref_loss, ref_grad = reference(x, t, grad_output=g, **options)
    assert loss.dtype == x.dtype and grad.dtype == x.dtype, (loss.dtype, grad.dtype)
    assert loss.device == x.device and grad.device == x.device
    assert_matches(loss, ref_loss, tol_dtype, msg=f"{msg} loss")
    assert_matches(grad, ref_grad, tol_dtype, msg=f"{msg} grad")
    return loss, grad


# --------------------------------------------------------------------------
# 1. MONAI's DiceLoss.
#
# MONAI conventions adapted to: `weight` has one entry per *kept* channel
# (segloss's class_weights[1:] without the background) and is ignored when one
# channel is kept; include_background=False and to_onehot_y are ignored for a
# one-channel input; reduction "none" keeps singleton spatial dims ((N, C', 1, 1)
# or (C', 1, 1) with batch=True); squared_pred=True is gamma = 2 (computed
# through vector norms) and is exact only with float64 targets, so with
# squared_pred a class-index target goes to MONAI as a float64 one-hot
# (_monai_onehot) rather than through to_onehot_y (float32), and a one-channel
# integer target as floats (vector_norm needs floats).

@needs_monai
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("gamma", [1.0, 2.0], ids=["gamma1", "squared_pred"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch", [False, True], ids=["per-image", "batch"])
@pytest.mark.parametrize("form,include_background", list(_monai_cases()))
def test_matches_monai(form, include_background, batch, reduction, gamma, gen):
    activation, c, kind, ignore = MONAI_FORMS[form]
    kept = c if include_background else c - 1
    for spatial, smooth, weighted in itertools.product([(6, 7), (3, 4, 5)],
                                                       [(1e-5, 1e-5), (0.3, 1.7)],
                                                       [False, True]):
        if weighted and c == 1:
            continue  # MONAI ignores `weight` when one channel is kept
        msg = f"{spatial} smooth={smooth} weighted={weighted}"
        shape = (2, c) + spatial
        x = make_dice_input(activation, shape, gen)
        t = make_dice_target(kind, shape, gen, ignore_index=ignore)
        options = dict(activation=activation, gamma=gamma, smooth_nr=smooth[0],
                       smooth_dr=smooth[1], batch_dice=batch,
                       include_background=include_background, reduction=reduction)
        monai_options = dict(sigmoid=activation == "sigmoid", softmax=activation == "softmax",
                             squared_pred=gamma == 2.0, smooth_nr=smooth[0],
                             smooth_dr=smooth[1], batch=batch,
                             include_background=include_background, reduction=reduction)
        monai_target = t.double() if c == 1 else t
        if kind == "labels1" and c > 1:
            if gamma == 1.0:
                monai_options["to_onehot_y"] = True
            else:
                monai_target = _monai_onehot(t, c, ignore)
        if ignore is not None:
            options["ignore_index"] = monai_options["ignore_index"] = ignore
        if weighted:
            w = _weights(c, gen)
            if not include_background:
                w[0] = 7.0  # never used: the background's loss is dropped
            options["class_weights"] = w
            monai_options["weight"] = w if include_background else w[1:].clone()
        g = make_dice_grad_output(shape, gen, batch_dice=batch,
                                  include_background=include_background, reduction=reduction)
        loss, grad = dice_forward_backward(x, t, g, **options)

        xm = x.clone().requires_grad_()
        monai_loss = MonaiDiceLoss(**monai_options)(xm, monai_target)
        if reduction == "none":
            expected_shape = ((kept,) if batch else (2, kept)) + (1,) * len(spatial)
            assert monai_loss.shape == expected_shape, msg
            (monai_grad,) = torch.autograd.grad(monai_loss, xm, g.reshape(expected_shape))
            monai_loss = monai_loss.reshape(loss.shape)
        else:
            (monai_grad,) = torch.autograd.grad(monai_loss, xm, g)
        assert loss.shape == dice_loss_shape(shape, batch, include_background, reduction)
        assert_close_to_scale(loss, monai_loss, 1e-10, f"{msg} loss")
        assert_close_to_scale(grad, monai_grad, 1e-10, f"{msg} grad")


@pytest.mark.parametrize("gamma", [1.0, 2.0])
@pytest.mark.parametrize("activation,kind", [("sigmoid", "binary"), ("softmax", "onehot"),
                                             ("sigmoid", "soft")])
@needs_monai
def test_references_match_monai(activation, kind, gamma, gen):
    # The two references themselves, against MONAI (no segloss involved).
    x, t, g, options = _case(activation, gen, target=kind, gamma=gamma, reduction="none",
                             include_background=False, class_weights=True)
    w = options["class_weights"]
    xm = x.clone().requires_grad_()
    monai_loss = MonaiDiceLoss(sigmoid=activation == "sigmoid", softmax=activation == "softmax",
                               squared_pred=gamma == 2.0, include_background=False,
                               weight=w[1:], reduction="none")(xm, t)
    monai_loss = monai_loss.reshape(g.shape)
    (monai_grad,) = torch.autograd.grad(monai_loss, xm, g)
    for reference in (dice_reference, dice_torch):
        loss, grad = reference(x, t, grad_output=g, **options)
        assert_close_to_scale(loss, monai_loss, 1e-12, f"{reference.__name__} loss")
        assert_close_to_scale(grad, monai_grad, 1e-12, f"{reference.__name__} grad")


# --------------------------------------------------------------------------
# 2. The float64 NumPy formula for any gamma, every activation and option.

NUMPY_CASES = {
    "soft": dict(target="soft"),
    "soft-batch-none": dict(target="soft", batch_dice=True, reduction="none"),
    "binary-nobg-weights-sum": dict(target="binary", include_background=False,
                                    class_weights=True, reduction="sum"),
    "soft-mask-batch-nobg-3d": dict(target="soft", mask="n1s-float", batch_dice=True,
                                    include_background=False, shape=SHAPE_3D),
    "labels-11s-weights-none": dict(target="labels", mask="11s-bool", class_weights=True,
                                    reduction="none"),
    "labels1-uint8-ignore-n111-batch-sum-3d": dict(
        target="labels1", label_dtype=torch.uint8, ignore_index=255, mask="n111-float",
        batch_dice=True, reduction="sum", shape=SHAPE_3D),
    "soft-smooth-weights-none": dict(target="soft", smooth=(0.7, 0.2), class_weights=True,
                                     reduction="none"),
    "binary-unsmoothed-s-mask": dict(target="binary", smooth=(0.0, 0.0), mask="s-float"),
    # The first image entirely masked out, no smoothing: its Dice is defined as 1.
    "labels-unsmoothed-empty-image-none": dict(target="labels", smooth=(0.0, 0.0),
                                               mask="n111-bool", reduction="none"),
    "1d-soft-nobg-weights-none": dict(target="soft", shape=(3, 4, 29), include_background=False,
                                      class_weights=True, reduction="none"),
    # 4900 pixels per image: several of the CPU kernel's 2048-pixel units.
    "multiblock-mask-weights": dict(target="soft", shape=(2, 3, 70, 70), mask="n1s-bool",
                                    class_weights=True),
}


@pytest.mark.parametrize("case", NUMPY_CASES.keys())
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_numpy_reference(activation, gamma, case, device, gen):
    x, t, g, options = _case(activation, gen, gamma=gamma, device=device, **NUMPY_CASES[case])
    _check(x, t, g, options)


@pytest.mark.parametrize("case", ["soft-batch-none", "labels-11s-weights-none",
                                  "labels1-uint8-ignore-n111-batch-sum-3d",
                                  "multiblock-mask-weights"])
@pytest.mark.parametrize("gamma", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32_matches_numpy_reference(activation, gamma, case, device, gen):
    x, t, g, options = _case(activation, gen, gamma=gamma, dtype=torch.float32, device=device,
                             **NUMPY_CASES[case])
    _check(x, t, g, options)


@pytest.mark.parametrize("case", NUMPY_CASES.keys())
def test_numpy_and_torch_references_agree(case, gen):
    # The analytic NumPy gradient against autograd through the eager composite.
    for activation, gamma in itertools.product(ACTIVATIONS, GAMMAS):
        x, t, g, options = _case(activation, gen, gamma=gamma, **NUMPY_CASES[case])
        np_loss, np_grad = dice_reference(x, t, grad_output=g, **options)
        torch_loss, torch_grad = dice_torch(x, t, grad_output=g, **options)
        assert_close_to_scale(np_loss, torch_loss, 1e-12, f"{activation} {gamma} loss")
        assert_close_to_scale(np_grad, torch_grad, 1e-12, f"{activation} {gamma} grad")


@pytest.mark.parametrize("entry", ["functional", "op", "module"])
@pytest.mark.parametrize("case", ["labels1-uint8-ignore-n111-batch-sum-3d",
                                  "soft-smooth-weights-none", "binary-nobg-weights-sum"])
def test_entry_points_match_numpy_reference(entry, case, gen):
    x, t, g, options = _case("softmax", gen, gamma=1.5, **NUMPY_CASES[case])
    _check(x, t, g, options, entry=entry)


@needs_monai
def test_default_options_are_monai_defaults_with_sigmoid(gen):
    # dice_loss(x, y) and DiceLoss()(x, y): sigmoid, gamma 1, smoothing 1e-5, mean.
    x = make_dice_input("sigmoid", SHAPE_2D, gen)
    y = make_dice_target("binary", SHAPE_2D, gen)
    ref, _ = dice_np(x.numpy(), y.numpy())
    expected = MonaiDiceLoss(sigmoid=True)(x, y)
    assert_close_to_scale(torch.from_numpy(np.asarray(ref)), expected, 1e-12)
    for loss in (segloss.dice_loss(x, y), torch.ops.segloss.dice_loss(x, y),
                 segloss.nn.DiceLoss()(x, y)):
        assert_close_to_scale(loss, expected, 1e-12)


# --------------------------------------------------------------------------
# 3. Class-index targets, ignore_index and masks against the eager composite.

def _label_cases():
    for dtype in (torch.int64, torch.int32, torch.uint8, torch.bool):
        for c in ((1, 2) if dtype == torch.bool else (1, 4)):
            for ignore in (None, 255, -100):
                if dtype == torch.bool and ignore is not None:
                    continue
                if dtype == torch.uint8 and ignore == -100:
                    continue
                # (a softmax over one channel is refused: test_errors)
                acts = ("sigmoid", "none") if c == 1 else ("softmax", "sigmoid")
                for activation in acts:
                    for layout in ("labels", "labels1"):
                        yield pytest.param(
                            dtype, c, ignore, activation, layout,
                            id=f"{str(dtype)[6:]}-C{c}-ignore={ignore}-{activation}-{layout}")


@pytest.mark.parametrize("label_dtype,c,ignore_index,activation,layout", list(_label_cases()))
def test_label_maps_match_torch_composite(label_dtype, c, ignore_index, activation, layout,
                                          device, gen):
    shape = (3, c, 5, 6)
    x, t, g, options = _case(activation, gen, shape=shape, target=layout,
                             label_dtype=label_dtype, ignore_index=ignore_index,
                             gamma=1.5, reduction="none")
    if ignore_index is not None:
        assert bool((t == ignore_index).any())
    _check(x, t, g, options, reference=dice_torch)


@pytest.mark.parametrize("activation", ["sigmoid", "none"])
def test_one_channel_label_map_is_the_binary_mask(activation, gen):
    # With C == 1 the label map is the foreground mask: the same as the
    # float target (N, 1, *spatial) holding it.
    shape = (2, 1, 9, 8)
    x = make_dice_input(activation, shape, gen)
    labels = make_labels((2, 9, 8), 2, gen)
    g = torch.tensor(1.25, dtype=torch.float64)
    as_float = labels.unsqueeze(1).to(torch.float64)
    ref_loss, ref_grad = dice_reference(x, as_float, grad_output=g, activation=activation)
    for target in (labels, labels.unsqueeze(1), labels.bool(), labels.to(torch.uint8)):
        loss, grad = dice_forward_backward(x, target, g, activation=activation)
        assert_matches(loss, ref_loss)
        assert_matches(grad, ref_grad)


MASK_SPECS = ["n1s-float", "n1s-bool", "11s-float", "11s-bool", "n111-float", "n111-bool",
              "s-float", "s-bool"]


@pytest.mark.parametrize("batch_dice", [False, True], ids=["per-image", "batch"])
@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("target", ["binary", "labels-ignore"])
@pytest.mark.parametrize("mask", MASK_SPECS)
def test_masks_match_torch_composite(mask, target, activation, batch_dice, device, gen):
    shape = SHAPE_3D if mask.endswith("bool") else SHAPE_2D
    kind, ignore = ("labels", 255) if target == "labels-ignore" else (target, None)
    x, t, g, options = _case(activation, gen, shape=shape, target=kind, ignore_index=ignore,
                             mask=mask, batch_dice=batch_dice, gamma=2.0, reduction="none",
                             device=device)
    _check(x, t, g, options, reference=dice_torch)
    # Masked-out pixels get no gradient, in any channel.
    _, grad = dice_forward_backward(x, t, g, **options)
    excluded = (options["mask"] == 0).expand((shape[0], 1) + shape[2:])
    assert bool(excluded.any())
    assert bool((grad.cpu() * excluded.cpu()).eq(0).all())


@needs_monai
def test_mask_with_float_target_equals_zeroing_input_and_target_in_monai(gen):
    # MONAI's MaskedDiceLoss-style masking (p * m, y * m) is the same Dice as
    # segloss's mask when the activation is applied before masking.
    shape = (2, 3, 6, 7)
    x = make_dice_input("softmax", shape, gen)
    y = make_dice_target("onehot", shape, gen)
    mask = make_mask("n1s-bool", shape, gen)
    g = torch.tensor(0.75, dtype=torch.float64)
    loss, grad = dice_forward_backward(x, y, g, activation="softmax", mask=mask)
    xm = x.clone().requires_grad_()
    expected = MonaiDiceLoss()(torch.softmax(xm, 1) * mask, y * mask)
    (expected_grad,) = torch.autograd.grad(expected, xm, g)
    assert_close_to_scale(loss, expected, 1e-12)
    assert_close_to_scale(grad, expected_grad, 1e-12)


@pytest.mark.parametrize("ignore_index", [0, 2, 255])
def test_ignore_index_equals_mask(ignore_index, gen):
    # Pixels labelled ignore_index are excluded from every channel: the same
    # as a mask that drops them, with the label replaced by any valid one.
    shape = (2, 3, 7, 6)
    x = make_dice_input("softmax", shape, gen)
    labels = make_labels((2, 7, 6), 3, gen, ignore_index=ignore_index)
    keep = labels != ignore_index
    g = torch.tensor(1.0, dtype=torch.float64)
    loss, grad = dice_forward_backward(x, labels, g, activation="softmax",
                                       ignore_index=ignore_index)
    ref_loss, ref_grad = dice_reference(x, torch.where(keep, labels, 1), grad_output=g,
                                        activation="softmax", mask=keep.unsqueeze(1))
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)


# --------------------------------------------------------------------------
# 4. gradcheck and opcheck.

def _gradcheck_cases():
    cases = []
    options = itertools.product(ACTIVATIONS, [1.0, 2.0, 1.7], [False, True], [True, False],
                                [False, True], ["soft", "labels", "labels-ignore"],
                                [None, "n1s-float"])
    for i, (act, gamma, batch, bg, weighted, target, mask) in enumerate(options):
        reduction = REDUCTIONS[i % 3]
        cases.append(pytest.param(
            act, gamma, batch, bg, weighted, target, mask, reduction,
            id=f"{act}-g{gamma}-{'batch' if batch else 'img'}-{'bg' if bg else 'nobg'}"
               f"-{'w' if weighted else 'now'}-{target}-mask={mask}-{reduction}"))
    return cases


def _gradcheck(x, t, options, fast_mode):
    x = x.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: segloss.dice_loss(x, t, **options), (x,),
                                    eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=fast_mode)


@pytest.mark.parametrize("activation,gamma,batch_dice,include_background,weighted,target,"
                         "mask,reduction", _gradcheck_cases())
def test_gradcheck(activation, gamma, batch_dice, include_background, weighted, target, mask,
                   reduction, device, gen):
    kind, ignore = ("labels", 255) if target == "labels-ignore" else (target, None)
    x, t, _, options = _case(activation, gen, shape=(2, 3, 3, 4), target=kind,
                             ignore_index=ignore, gamma=gamma, batch_dice=batch_dice,
                             include_background=include_background, class_weights=weighted,
                             mask=mask, reduction=reduction, device=device)
    _gradcheck(x, t, options, fast_mode=True)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 1.7])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_3d_full_jacobian(activation, gamma, device, gen):
    x, t, _, options = _case(activation, gen, shape=(2, 3, 2, 3, 4), target="labels1",
                             label_dtype=torch.int32, ignore_index=-100, gamma=gamma,
                             batch_dice=True, include_background=False, class_weights=True,
                             mask="11s-float", reduction="none", device=device)
    _gradcheck(x, t, options, fast_mode=False)


@pytest.mark.parametrize("gamma", [1.0, 1.7])
@pytest.mark.parametrize("activation", ["sigmoid", "none"])
def test_gradcheck_one_channel_label_map(activation, gamma, device, gen):
    x, t, _, options = _case(activation, gen, shape=(2, 1, 4, 5), target="labels",
                             ignore_index=255, gamma=gamma, mask="n1s-bool", class_weights=True,
                             reduction="sum", device=device)
    _gradcheck(x, t, options, fast_mode=False)


# (id, input dtype, shape, activation, gamma, target kind, label dtype, ignore_index, mask)
OPCHECK_SAMPLES = [
    ("f64-softmax-labels-ignore-mask", torch.float64, (2, 3, 4, 5), "softmax", 1.0, "labels",
     torch.int64, 255, "n1s-bool"),
    ("f32-sigmoid-soft-g2", torch.float32, (2, 3, 4, 5), "sigmoid", 2.0, "soft", None, None,
     None),
    ("f32-none-binary-g1.5-3d-11s", torch.float32, (2, 2, 3, 4, 5), "none", 1.5, "binary", None,
     None, "11s-float"),
    ("bf16-sigmoid-C1-labels1-uint8", torch.bfloat16, (2, 1, 6, 7), "sigmoid", 1.0, "labels1",
     torch.uint8, None, None),
    ("f16-softmax-1d-int32-ignore-n111", torch.float16, (3, 4, 9), "softmax", 3.0, "labels",
     torch.int32, -100, "n111-float"),
]


def _opcheck_sample(dtype, shape, activation, gamma, kind, label_dtype, ignore, mask, gen,
                    device):
    x, t, _, options = _case(activation, gen, shape=shape, target=kind,
                             label_dtype=label_dtype or torch.int64, ignore_index=ignore,
                             gamma=gamma, mask=mask, dtype=dtype, device=device)
    return x, t, options


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
def test_opcheck_dice_sums(sample, device, gen):
    x, t, o = _opcheck_sample(*sample[1:], gen, device)
    torch.library.opcheck(torch.ops.segloss._dice_sums.default,
                          (x.requires_grad_(), t, o["activation"], o["gamma"],
                           o["ignore_index"], o["mask"]))


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
def test_opcheck_dice_sums_backward(sample, device, gen):
    x, t, o = _opcheck_sample(*sample[1:], gen, device)
    sums_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad_sums = torch.randn(x.shape[:2] + (3,), generator=gen, dtype=sums_dtype).to(device)
    torch.library.opcheck(torch.ops.segloss._dice_sums_backward.default,
                          (grad_sums, x, t, o["activation"], o["gamma"], o["ignore_index"],
                           o["mask"]))


@pytest.mark.parametrize("extra", [dict(), dict(batch_dice=True, reduction="none"),
                                   dict(include_background=False, class_weights=True,
                                        reduction="sum")],
                         ids=["defaults", "batch-none", "nobg-weights-sum"])
@pytest.mark.parametrize("sample", OPCHECK_SAMPLES[:3], ids=[s[0] for s in OPCHECK_SAMPLES[:3]])
def test_opcheck_dice_loss(sample, extra, device, gen):
    x, t, o = _opcheck_sample(*sample[1:], gen, device)
    o.update(extra)
    if o.get("class_weights") is True:
        o["class_weights"] = _weights(x.shape[1], gen, x.dtype, device)
    torch.library.opcheck(torch.ops.segloss.dice_loss.default, (x.requires_grad_(), t), o)


# --------------------------------------------------------------------------
# The private ops against the eager sums.

@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
def test_private_ops_match_eager_sums(sample, device, gen):
    x, t, o = _opcheck_sample(*sample[1:], gen, device)
    args = (o["activation"], o["gamma"], o["ignore_index"], o["mask"])
    sums = torch.ops.segloss._dice_sums(x, t, *args)
    sums_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    assert sums.shape == x.shape[:2] + (3,) and sums.dtype == sums_dtype
    xr = x.detach().to("cpu", torch.float64).requires_grad_()
    expected = dice_sums_torch(xr, t, *args)
    grad_sums = torch.randn(sums.shape, generator=gen, dtype=torch.float64)
    (expected_grad,) = torch.autograd.grad(expected, xr, grad_sums)
    grad = torch.ops.segloss._dice_sums_backward(grad_sums.to(device, sums_dtype), x, t, *args)
    assert grad.shape == x.shape and grad.dtype == x.dtype
    # Half inputs are computed from their exact values in float32.
    tol_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    assert_matches(sums, expected.detach(), tol_dtype, msg="sums")
    assert_matches(grad, expected_grad, x.dtype if x.dtype != torch.float64 else None,
                   msg="grad")


# --------------------------------------------------------------------------
# 5. TorchScript and torch.compile.

class DiceModel(torch.nn.Module):
    """Two DiceLoss modules (one with a class_weights buffer) and the functional."""

    def __init__(self):
        super().__init__()
        self.multiclass = segloss.nn.DiceLoss(
            activation="softmax", gamma=1.5, batch_dice=True, include_background=False,
            class_weights=torch.tensor([7.0, 0.5, 2.0]), ignore_index=255, reduction="none")
        self.binary = segloss.nn.DiceLoss(gamma=2.0, smooth_nr=0.0, smooth_dr=1e-3)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor,
                mask: torch.Tensor):
        per_class = self.multiclass(x, labels)
        binary = self.binary(x[:, 1:2], y, mask)
        functional = segloss.dice_loss(x, labels, activation="sigmoid", gamma=3.0,
                                       ignore_index=255, mask=mask, reduction="sum")
        return per_class.sum() + binary + functional, per_class


@pytest.fixture
def script_data(gen):
    return make_scripted_dice_data(gen)


def _assert_equal(results, expected):
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        assert results[key].dtype == value.dtype and results[key].shape == value.shape, key
        assert torch.equal(results[key], value), (key, (results[key] - value).abs().max())


def test_scripted_dice_in_process_equals_eager(script_data, tmp_path):
    model = DiceModel()
    scripted = torch.jit.script(model)
    assert "segloss::dice_loss" in str(scripted.inlined_graph)
    scripted.save(str(tmp_path / "model.pt"))
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    expected = run_scripted_dice_model(model, script_data)
    _assert_equal(run_scripted_dice_model(scripted, script_data), expected)
    _assert_equal(run_scripted_dice_model(loaded, script_data), expected)
    # and eager is right
    x, labels = script_data["x"], script_data["labels"]
    ref, _ = dice_reference(x, labels, activation="softmax", gamma=1.5, batch_dice=True,
                            include_background=False, class_weights=torch.tensor([7.0, 0.5, 2.0]),
                            ignore_index=255, reduction="none")
    assert_matches(expected["per_class"], ref)


def test_scripted_dice_runs_in_fresh_process_without_segloss(script_data, tmp_path):
    model = DiceModel()
    torch.jit.script(model).save(str(tmp_path / "model.pt"))
    torch.save(script_data, tmp_path / "inputs.pt")
    run_python(SCRIPTED_DICE_CHILD, str(tmp_path / "model.pt"), segloss.library_path(),
               str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt"), cwd=tmp_path)
    _assert_equal(torch.load(tmp_path / "out.pt"), run_scripted_dice_model(model, script_data))


def test_dice_module_state_dtype_and_repr(gen):
    w = torch.tensor([1.0, 2.0, 0.5])
    module = segloss.nn.DiceLoss(activation="softmax", gamma=2, class_weights=w,
                                 ignore_index=255, reduction="none")
    assert set(module.state_dict()) == {"class_weights"}
    assert repr(module) == (
        "DiceLoss(activation='softmax', gamma=2.0, smooth_nr=1e-05, smooth_dr=1e-05, "
        "batch_dice=False, include_background=True, class_weights=Tensor[3], "
        "ignore_index=255, reduction='none')")
    module = module.to(torch.float64)
    assert module.class_weights.dtype == torch.float64
    x, t, g, options = _case("softmax", gen, target="labels", ignore_index=255, gamma=2.0,
                             reduction="none")
    options["class_weights"] = w
    loss, grad = dice_forward_backward(x, t, g, "module", **options)
    ref_loss, ref_grad = dice_reference(x, t, grad_output=g, **options)
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)


@pytest.fixture
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compile_run(fn, x, t, mask, w, g):
    x = x.detach().clone().requires_grad_()
    loss = fn(x, t, mask, w)
    (grad,) = torch.autograd.grad(loss, x, g)
    return loss.detach(), grad


def _dice_fn(**options):
    def loss(x, t, mask, w):
        return segloss.dice_loss(x, t, mask=mask, class_weights=w, **options)
    return loss


COMPILE_CASES = {
    # id: (shape, activation, target kind, ignore_index, mask, weighted, options)
    "softmax-labels-ignore-mask-none": ((2, 3, 5, 7), "softmax", "labels", 255, "n1s-bool",
                                        False, dict(gamma=1.5, reduction="none")),
    "sigmoid-soft-batch-nobg-weights-mean": ((2, 3, 5, 7), "sigmoid", "soft", None, None, True,
                                             dict(gamma=2.0, batch_dice=True,
                                                  include_background=False)),
    "none-binary-3d-11s-sum": ((2, 2, 3, 4, 5), "none", "binary", None, "11s-float", False,
                               dict(gamma=3.0, reduction="sum", smooth=(0.0, 1e-5))),
    "sigmoid-C1-labels1-uint8-mean": ((3, 1, 6, 5), "sigmoid", "labels1", None, "n111-bool",
                                      True, dict()),
}


def _compile_data(case, gen, shape=None):
    default_shape, activation, kind, ignore, mask, weighted, options = COMPILE_CASES[case]
    shape = shape or default_shape
    label_dtype = torch.uint8 if "uint8" in case else torch.int64
    x, t, g, opts = _case(activation, gen, shape=shape, target=kind, label_dtype=label_dtype,
                          ignore_index=ignore, mask=mask, class_weights=weighted,
                          dtype=torch.float32, **options)
    fn = _dice_fn(activation=activation, ignore_index=ignore,
                  **{k: v for k, v in opts.items()
                     if k not in ("activation", "ignore_index", "mask", "class_weights")})
    return fn, (x, t, opts["mask"], opts["class_weights"], g)


def _assert_same(actual, expected):
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype
        assert torch.equal(a, e), (a - e).abs().max()


@pytest.mark.parametrize("case", COMPILE_CASES.keys())
def test_aot_eager_equals_eager(case, gen, _fresh_dynamo):
    fn, data = _compile_data(case, gen)
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    _assert_same(_compile_run(compiled, *data), _compile_run(fn, *data))


def _softmax_dice(x, t, mask, w):
    # Literal options: closure floats would become symbolic under dynamic=True.
    return segloss.dice_loss(x, t, activation="softmax", gamma=1.5, ignore_index=255, mask=mask,
                             class_weights=w, reduction="none")


def test_aot_eager_dynamic_shapes_compile_once(gen, _fresh_dynamo):
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    case = "softmax-labels-ignore-mask-none"
    compiled = torch.compile(_softmax_dice, backend=counter, fullgraph=True, dynamic=True)
    # Sizes other than 0 and 1 (which dynamo specialises on).
    frames = []
    for shape in [(2, 3, 5, 7), (4, 3, 6, 9), (5, 3, 8, 2)]:
        _, data = _compile_data(case, gen, shape)
        _assert_same(_compile_run(compiled, *data), _compile_run(_softmax_dice, *data))
        frames.append(counter.frame_count)
    # No recompilation for the new shapes. (The first compile may count twice:
    # dynamo restarts its analysis once to specialise the float arguments.)
    assert frames[0] in (1, 2) and frames[1:] == [frames[0]] * 2, frames
    assert "segloss.dice_loss" in counter.graphs[-1].code


@pytest.mark.slow
def test_inductor_equals_eager(gen, _fresh_dynamo):
    fn, data = _compile_data("softmax-labels-ignore-mask-none", gen)
    compiled = torch.compile(fn, backend="inductor", fullgraph=True)
    # Inductor fuses the float64 epilogue (a division may become a product
    # with the reciprocal): equal to rounding, which the softmax backward
    # amplifies where its terms cancel.
    for a, e in zip(_compile_run(compiled, *data), _compile_run(fn, *data)):
        assert a.shape == e.shape and a.dtype == e.dtype
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------
# 6. Half precision on realistic sizes: sums accumulate in float32.

HALF_SHAPES = {"2d-512": (2, 1, 512, 512), "3d-128": (2, 1, 128, 128, 128)}


def _half_problem(shape, dtype, gen):
    # The reference sees the operands as the op does: rounded to `dtype`.
    x = make_dice_input("sigmoid", shape, gen, torch.float32).to(dtype)
    y = make_dice_target("binary", shape, gen, dtype, foreground=0.3)
    return x, y


@needs_monai
@pytest.mark.parametrize("shape", HALF_SHAPES.values(), ids=HALF_SHAPES.keys())
def test_float16_large_is_accurate_where_monai_overflows(shape, gen):
    x, y = _half_problem(shape, torch.float16, gen)
    g = torch.tensor(1.0, dtype=torch.float16)
    loss, grad = dice_forward_backward(x, y, g)
    assert loss.dtype == torch.float16 and grad.dtype == torch.float16
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
    ref_loss, ref_grad = dice_torch(x, y, grad_output=g.double())
    assert abs(float(loss) - float(ref_loss)) <= 1e-3, (float(loss), float(ref_loss))
    # The gradient's elements (~1e-6 to 1e-7) are float16 subnormals: each is
    # the reference rounded to float16, within half a unit of 2**-24.
    torch.testing.assert_close(grad.double(), ref_grad, rtol=2 ** -10, atol=2 ** -24)
    # For context: MONAI's float16 sums of ~1e5 elements overflow 65504 to inf,
    # and inf / inf gives a NaN loss.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_loss = MonaiDiceLoss(sigmoid=True)(x, y)
    assert bool(torch.isnan(monai_loss)), f"MONAI float16 gave {float(monai_loss)}"


@pytest.mark.parametrize("shape", HALF_SHAPES.values(), ids=HALF_SHAPES.keys())
def test_bfloat16_large_is_accurate(shape, gen):
    x, y = _half_problem(shape, torch.bfloat16, gen)
    g = torch.tensor(1.0, dtype=torch.bfloat16)
    loss, grad = dice_forward_backward(x, y, g)
    assert loss.dtype == torch.bfloat16 and grad.dtype == torch.bfloat16
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
    ref_loss, ref_grad = dice_torch(x, y, grad_output=g.double())
    # Only the rounding of the result to bfloat16 (8 significant bits).
    assert abs(float(loss) - float(ref_loss)) <= 2 ** -9 * abs(float(ref_loss)) + 1e-6
    torch.testing.assert_close(grad.double(), ref_grad, rtol=2 ** -8, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_half_precision_small_with_options(activation, dtype, gen):
    x, t, g, options = _case(activation, gen, shape=(2, 4, 9, 10), target="labels",
                             ignore_index=255, gamma=1.5, mask="n1s-float", class_weights=True,
                             include_background=False, reduction="none", dtype=dtype)
    _check(x, t, g, options)


# --------------------------------------------------------------------------
# 7. Edge cases.

@pytest.mark.parametrize("target", ["dense", "labels"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_empty_targets_with_default_smoothing(activation, target, gen):
    shape = (2, 3, 6, 5)
    x = make_dice_input(activation, shape, gen)
    t = (torch.zeros(shape, dtype=torch.float64) if target == "dense"
         else torch.zeros((2, 6, 5), dtype=torch.int64))
    for reduction in REDUCTIONS:
        g = make_dice_grad_output(shape, gen, reduction=reduction)
        _check(x, t, g, dict(activation=activation, reduction=reduction), msg=reduction)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("target", ["dense", "labels-C1", "labels-all-ignored"])
def test_nothing_predicted_nothing_true_unsmoothed_is_a_perfect_score(target, batch_dice, gamma,
                                                                       gen):
    # P + T + s_dr == 0 for every (n, c): loss 0 and gradient 0, no NaN.
    if target == "dense":
        x = torch.zeros((2, 3, 4, 5), dtype=torch.float64)
        t = torch.zeros(x.shape, dtype=torch.float64)
        ignore = None
    elif target == "labels-C1":
        x = torch.zeros((2, 1, 4, 5), dtype=torch.float64)
        t = torch.zeros((2, 4, 5), dtype=torch.int64)
        ignore = None
    else:  # every pixel ignored: nothing counts, whatever the input
        x = make_dice_input("none", (2, 3, 4, 5), gen)
        t = torch.full((2, 1, 4, 5), 255, dtype=torch.int64)
        ignore = 255
    for reduction in REDUCTIONS:
        g = torch.ones(dice_loss_shape(x.shape, batch_dice, True, reduction),
                       dtype=torch.float64)
        loss, grad = dice_forward_backward(x, t, g, activation="none", gamma=gamma,
                                           smooth_nr=0.0, smooth_dr=0.0, batch_dice=batch_dice,
                                           ignore_index=ignore, reduction=reduction)
        assert not bool(torch.isnan(loss).any()) and not bool(torch.isnan(grad).any())
        assert bool((loss == 0).all()), (reduction, loss)
        assert bool((grad == 0).all()), (reduction, grad)


def test_unsmoothed_empty_group_among_others(gen):
    # Image 0, channel 1: nothing predicted, nothing true: loss 0, no gradient
    # there; every other (n, c) as the reference.
    shape = (2, 3, 5, 6)
    x = make_dice_input("none", shape, gen)
    y = make_dice_target("binary", shape, gen)
    x[0, 1] = 0
    y[0, 1] = 0
    g = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64).reshape(2, 3)
    options = dict(activation="none", gamma=1.5, smooth_nr=0.0, smooth_dr=0.0,
                   reduction="none")
    loss, grad = _check(x, y, g, options)
    assert float(loss[0, 1]) == 0.0 and bool((grad[0, 1] == 0).all())


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 3, 0, 5), (2, 3, 0), (0, 2, 3, 0, 4),
                                   (2, 0, 0, 5)],
                         ids=["N=0", "H=0", "L=0", "N=0,D=0", "C=0,H=0"])
@pytest.mark.parametrize("target", ["dense", "labels"])
def test_zero_size(target, shape, reduction, batch_dice, gen):
    x = make_dice_input("softmax", shape, gen)
    t = (make_dice_target("soft", shape, gen) if target == "dense"
         else torch.zeros((shape[0],) + shape[2:], dtype=torch.int64))
    g = torch.ones(dice_loss_shape(shape, batch_dice, True, reduction), dtype=torch.float64)
    options = dict(activation="softmax", batch_dice=batch_dice, reduction=reduction)
    loss, grad = dice_forward_backward(x, t, g, **options)
    assert grad.shape == x.shape
    ref_loss, ref_grad = dice_torch(x, t, grad_output=g, **options)
    # mean over no (n, c) is NaN, as torch's; an empty image scores
    # 1 - s_nr / s_dr = 0.
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)
    if shape[0] == 0 and not batch_dice and reduction == "mean":
        assert bool(torch.isnan(loss))


def _layouts(t, kind):
    if kind == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if kind == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "sliced":
        big = torch.zeros(t.shape[:-1] + (2 * t.shape[-1] + 1,), dtype=t.dtype)
        big[..., 1::2] = t
        return big[..., 1::2]
    raise ValueError(kind)


@pytest.mark.parametrize("target", ["dense", "labels"])
@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_noncontiguous_operands(activation, layout, target, gen):
    shape = (2, 3, 6, 7)
    x, t, g, options = _case(activation, gen, shape=shape,
                             target="soft" if target == "dense" else "labels1",
                             ignore_index=None if target == "dense" else 255, mask="n1s-float",
                             gamma=1.5, class_weights=True, reduction="none")
    x_nc, t_nc = _layouts(x, layout), _layouts(t, layout)
    options["mask"] = _layouts(options["mask"], layout)
    options["class_weights"] = _layouts(options["class_weights"].reshape(1, 3), "sliced")[0]
    assert not x_nc.is_contiguous() and not options["class_weights"].is_contiguous()
    if layout != "channels_last":  # one channel: channels_last is contiguous too
        assert not t_nc.is_contiguous() and not options["mask"].is_contiguous()
    _check(x_nc, t_nc, g, options)
    # A slice of the channels too.
    wide = make_dice_input(activation, (2, 6, 6, 7), gen)
    _check(wide[:, ::2], t, g, options)


def test_other_dtypes_of_target_mask_and_weights(gen):
    # A float32 target, float64 mask and float32 class_weights with a float64
    # input: converted, the result in the input's dtype.
    x, t, g, options = _case("sigmoid", gen, target="soft", mask="n1s-float",
                             class_weights=True, reduction="none")
    t32 = t.to(torch.float32)
    options["mask"] = options["mask"].to(torch.float64)
    options["class_weights"] = options["class_weights"].to(torch.float32)
    loss, grad = dice_forward_backward(x, t32, g, **options)
    assert loss.dtype == torch.float64 and grad.dtype == torch.float64
    ref_loss, ref_grad = dice_reference(x, t32.to(torch.float64), grad_output=g, **options)
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_bitwise_deterministic_across_runs_and_threads(activation, dtype, gen):
    shape = (2, 3, 70, 70)  # 4900 pixels per image: three units each
    x, t, _, options = _case(activation, gen, shape=shape, target="labels", ignore_index=255,
                             mask="n1s-float", gamma=1.5, dtype=dtype)
    results = []
    for threads in (1, 2, 1, 2):
        torch.set_num_threads(threads)
        for reduction in ("none", "mean"):
            options["reduction"] = reduction
            g = make_dice_grad_output(shape, torch.Generator().manual_seed(1), dtype,
                                      reduction=reduction)
            results.append((reduction, *dice_forward_backward(x, t, g, **options)))
    bits = torch.int32 if dtype == torch.float32 else torch.int16
    first = {r: (loss, grad) for r, loss, grad in results[:2]}
    for reduction, loss, grad in results:
        assert torch.equal(loss.view(bits), first[reduction][0].view(bits)), reduction
        assert torch.equal(grad.view(bits), first[reduction][1].view(bits)), reduction
    options["reduction"] = "mean"
    ref, _ = dice_reference(x, t, **options)
    assert_matches(first["mean"][0], ref)


def test_tiny_smoothing_of_float64_input_counts(gen):
    # float64 sums hold smooth_dr = 1e-100: nothing true, nothing predicted
    # and no numerator smoothing score 1 - 0 / 1e-100 = 1, not the 0 / 0 rule.
    x = torch.zeros(2, 2, 4, dtype=torch.float64)
    loss = segloss.dice_loss(x, torch.zeros_like(x), activation="none", smooth_nr=0.0,
                             smooth_dr=1e-100)
    assert float(loss) == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("gamma", [1.0 + 2.0 ** -30, 1.0 + 1e-8])
def test_gamma_just_above_one_has_a_finite_gradient_at_zero(gamma, dtype):
    # gamma - 1 rounds to 0 in float32: d p^gamma / dp at p = 0 must still be
    # 0 (as in float64), not 0 * log 0 = NaN.
    x = torch.tensor([[[0.0, 0.25, 0.5], [1.0, 0.0, 0.75]]], dtype=dtype)
    y = torch.tensor([[[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]], dtype=dtype)
    g = torch.tensor(1.0, dtype=torch.float64)
    loss, grad = dice_forward_backward(x, y, g.to(dtype), activation="none", gamma=gamma)
    ref_loss, ref_grad = dice_torch(x.double(), y.double(), activation="none", gamma=gamma,
                                    grad_output=g)
    assert torch.isfinite(grad).all()
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(loss.double(), ref_loss, **tol)
    torch.testing.assert_close(grad.double(), ref_grad, **tol)


# --------------------------------------------------------------------------
# 8. Each CPU instruction set, selected in a fresh process by SEGLOSS_CPU_ISA.

_ISA_CHILD = r"""
import sys, torch, segloss
cases = torch.load(sys.argv[1])
results = {}
for key, (x, t, g, options) in cases.items():
    x = x.clone().requires_grad_()
    loss = segloss.dice_loss(x, t, **options)
    loss.backward(g)
    results[key] = (loss.detach(), x.grad)
torch.save(results, sys.argv[2])
"""


def _isa_cases(gen):
    cases = {}
    # 1517 and 2350 pixels: no multiple of any vector width, one and two units.
    for shape in [(2, 3, 37, 41), (2, 3, 50, 47)]:
        for dtype in (torch.float32, torch.float64):
            for activation, gamma in [("softmax", 1.5), ("sigmoid", 1.5), ("sigmoid", 2.0),
                                      ("none", 1.0)]:
                for target in ("soft", "labels"):
                    key = f"{shape}-{dtype}-{activation}-{gamma}-{target}"
                    cases[key] = _case(activation, gen, shape=shape, target=target,
                                       ignore_index=255 if target == "labels" else None,
                                       mask="n1s-float" if target == "labels" else None,
                                       gamma=gamma, class_weights=True, reduction="none",
                                       dtype=dtype)
    return cases


@pytest.mark.parametrize("isa", CPU_ISAS)
def test_each_cpu_instruction_set(isa, tmp_path, gen):
    cases = _isa_cases(gen)
    torch.save(cases, tmp_path / "cases.pt")
    run_python_with_cpu_isa(isa, _ISA_CHILD, str(tmp_path / "cases.pt"),
                            str(tmp_path / "results.pt"))
    results = torch.load(tmp_path / "results.pt")
    assert results.keys() == cases.keys()
    for key, (x, t, g, options) in cases.items():
        loss, grad = results[key]
        ref_loss, ref_grad = dice_reference(x, t, grad_output=g, **options)
        assert loss.dtype == x.dtype and grad.dtype == x.dtype
        assert_matches(loss, ref_loss, torch.float32, msg=f"{isa} {key} loss")
        assert_matches(grad, ref_grad, torch.float32, msg=f"{isa} {key} grad")


# --------------------------------------------------------------------------
# 9. Errors.

def _error_cases():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=gen)
    y = torch.rand(2, 3, 4, 5, generator=gen)
    labels = torch.randint(0, 3, (2, 4, 5), generator=gen)

    def c(id, exc, message, args, kwargs=None):
        return pytest.param(exc, message, args, kwargs or {}, id=id)

    bad_label = labels.clone()
    bad_label[1, 3, 4] = 3
    negative_label = labels.clone()
    negative_label[0, 0, 0] = -1
    binary_bad = (labels > 0).long()
    binary_bad[1, 2, 2] = 2
    return [
        c("activation", ValueError,
          "activation must be 'sigmoid', 'softmax' or 'none', got 'relu'", (x, y),
          {"activation": "relu"}),
        c("gamma-below-1", ValueError, "gamma must be a finite number >= 1, got 0.5", (x, y),
          {"gamma": 0.5}),
        c("gamma-inf", ValueError, "gamma must be a finite number >= 1, got inf", (x, y),
          {"gamma": float("inf")}),
        c("gamma-nan", ValueError, "gamma must be a finite number >= 1, got nan", (x, y),
          {"gamma": float("nan")}),
        c("smooth-dr-below-float32", ValueError,
          "smooth_dr = 1e-100 is below the smallest normal float32", (x, y),
          {"smooth_dr": 1e-100}),
        c("smooth-nr-subnormal-float32", ValueError,
          "smooth_nr = 1e-40 is below the smallest normal float32", (x.half(), y.half()),
          {"smooth_nr": 1e-40}),
        c("input-2d", RuntimeError,
          "input must have shape (N, C, *spatial) with 1 to 3 spatial dimensions, got shape "
          "[2, 3]", (x[:, :, 0, 0], y[:, :, 0, 0])),
        c("input-6d", RuntimeError,
          "input must have shape (N, C, *spatial) with 1 to 3 spatial dimensions, got shape "
          "[2, 3, 4, 5, 1, 1]", (x[..., None, None], y[..., None, None])),
        c("input-long", TypeError,
          "input must be a float32, float64, float16 or bfloat16 tensor, got Long",
          (x.long(), labels)),
        c("float-target-shape", RuntimeError,
          "a floating-point target must have the input's shape [2, 3, 4, 5], got [2, 3, 5, 4]",
          (x, y.transpose(-1, -2))),
        # (A float label map is class indices, whole numbers only:
        # test_float_label_maps.py.)
        c("float-target-label-shape-fractional", ValueError,
          "a float class-index target must hold whole numbers (class indices)",
          (x, labels.float() + 0.5)),
        c("label-shape", RuntimeError,
          "a class-index target must have shape [2, 4, 5] or [2, 1, 4, 5] for input of shape "
          "[2, 3, 4, 5], got [2, 5, 4]", (x, labels.transpose(-1, -2))),
        # (An integer target of the input's shape is one-hot: test_float_label_maps.py.)
        c("label-dense-shape", RuntimeError, "a class-index target must have shape",
          (x, y.long()[:, :2])),
        c("label-too-big", RuntimeError,
          "class indices in target must lie in [0, 3) for input with 3 channel(s)",
          (x, bad_label)),
        c("label-negative", RuntimeError, "class indices in target must lie in [0, 3)",
          (x, negative_label)),
        c("label-too-big-with-ignore", RuntimeError,
          "class indices in target must lie in [0, 3) or equal ignore_index", (x, bad_label),
          {"ignore_index": 255}),
        c("label-no-channel", ValueError,
          "a class-index target needs an input with at least one channel, got input of shape "
          "[2, 0, 4, 5] and a target of 40 class indices", (x[:, :0], labels)),
        c("binary-label-2", RuntimeError, "class indices in target must lie in [0, 2)",
          (x[:, :1], binary_bad)),
        c("ignore-float-target", ValueError,
          "ignore_index applies to class-index targets only", (x, y), {"ignore_index": 255}),
        c("mask-shape", RuntimeError,
          "mask of shape [3, 1, 4, 5] is not broadcastable to [2, 1, 4, 5]", (x, y),
          {"mask": torch.ones(3, 1, 4, 5)}),
        c("mask-channels", RuntimeError,
          "mask of shape [2, 3, 4, 5] is not broadcastable to [2, 1, 4, 5]", (x, y),
          {"mask": torch.ones(2, 3, 4, 5)}),
        c("class_weights-shape", RuntimeError,
          "class_weights must have shape [C] = [3] (one weight per channel of the input), "
          "got [2]", (x, y), {"class_weights": torch.ones(2)}),
        c("class_weights-2d", RuntimeError, "class_weights must have shape [C] = [3]", (x, y),
          {"class_weights": torch.ones(3, 1)}),
        c("class_weights-long", TypeError,
          "class_weights must be a float32, float64, float16 or bfloat16 tensor, got Long",
          (x, y), {"class_weights": torch.ones(3, dtype=torch.long)}),
        c("reduction", ValueError, "reduction must be 'none', 'mean' or 'sum', got 'avg'",
          (x, y), {"reduction": "avg"}),
        c("smooth_nr-negative", ValueError, "smooth_nr and smooth_dr must be >= 0", (x, y),
          {"smooth_nr": -1e-5}),
        c("smooth_dr-negative", ValueError, "smooth_nr and smooth_dr must be >= 0", (x, y),
          {"smooth_dr": -1.0}),
        c("softmax-one-channel", ValueError,
          "activation='softmax' needs at least 2 channels, got input of shape [2, 1, 4, 5] (a "
          "softmax over one channel is 1 everywhere); use activation='sigmoid' for a binary "
          "mask", (x[:, :1], labels), {"activation": "softmax"}),
        c("target-meta", RuntimeError, "target is on meta but input is on cpu",
          (x, y.to("meta"))),
        c("mask-meta", RuntimeError, "mask is on meta but input is on cpu", (x, y),
          {"mask": torch.ones(2, 1, 4, 5, device="meta")}),
    ]


_PREFIX = r"segloss\.dice_loss: "


@pytest.mark.parametrize("exc,message,args,kwargs", _error_cases())
@pytest.mark.parametrize("entry", ["op", "functional"])
def test_errors(entry, exc, message, args, kwargs):
    fn = torch.ops.segloss.dice_loss if entry == "op" else segloss.dice_loss
    with pytest.raises(exc, match=_PREFIX + re.escape(message)):
        fn(*args, **kwargs)


@pytest.mark.parametrize("argument", ["target", "mask"])
@pytest.mark.parametrize("input_requires_grad", [True, False])
def test_gradient_of_target_and_mask_is_refused(argument, input_requires_grad, gen):
    x = make_dice_input("sigmoid", SHAPE_2D, gen).requires_grad_(input_requires_grad)
    args = {"target": make_dice_target("soft", SHAPE_2D, gen),
            "mask": make_mask("n1s-float", SHAPE_2D, gen).double()}
    args[argument].requires_grad_()
    with pytest.raises(RuntimeError, match=re.escape(
            f"segloss.dice_loss: the gradient with respect to {argument} is not implemented")):
        segloss.dice_loss(x, args["target"], mask=args["mask"])
    args[argument] = args[argument].detach()
    segloss.dice_loss(x, args["target"], mask=args["mask"])


def test_label_out_of_range_in_a_late_unit_is_an_error(gen):
    # 4900 pixels per image: the bad label is in image 1's last unit.
    x = make_dice_input("softmax", (2, 3, 70, 70), gen)
    labels = make_labels((2, 70, 70), 3, gen)
    labels[1, 69, 69] = 3
    with pytest.raises(RuntimeError, match=re.escape("class indices in target must lie in [0, 3)")):
        segloss.dice_loss(x, labels, activation="softmax")
    labels[1, 69, 69] = 255  # fine once ignored
    ref, _ = dice_reference(x, labels, activation="softmax", ignore_index=255)
    assert_matches(segloss.dice_loss(x, labels, activation="softmax", ignore_index=255), ref)


@pytest.mark.parametrize("kwargs,message", [
    (dict(activation="relu"), "activation must be 'sigmoid', 'softmax' or 'none', got 'relu'"),
    (dict(gamma=0.5), "gamma must be >= 1, got 0.5"),
    (dict(reduction="avg"), "reduction must be one of"),
], ids=["activation", "gamma", "reduction"])
def test_dice_module_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        segloss.nn.DiceLoss(**kwargs)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch_dice", [False, True])
def test_meta_tensors_give_shapes_and_dtypes(batch_dice, reduction):
    x = torch.empty(2, 3, 5, 7, device="meta", dtype=torch.bfloat16)
    labels = torch.empty(2, 5, 7, device="meta", dtype=torch.int64)
    out = segloss.dice_loss(x, labels, activation="softmax", batch_dice=batch_dice,
                            include_background=False, reduction=reduction)
    assert out.device.type == "meta" and out.dtype == torch.bfloat16
    assert out.shape == dice_loss_shape(x.shape, batch_dice, False, reduction)
    sums = torch.ops.segloss._dice_sums(x, labels, "softmax", 1.0, None, None)
    assert sums.shape == (2, 3, 3) and sums.dtype == torch.float32
    sums = torch.ops.segloss._dice_sums(x.double(), labels, "softmax", 1.0, None, None)
    assert sums.dtype == torch.float64


_LABEL_DTYPES_CHILD = r"""
import sys, torch, segloss
out = {}
gen = torch.Generator().manual_seed(0)
for dtype in (torch.uint8, torch.int32, torch.int16, torch.bool):
    channels = 1 if dtype == torch.bool else 4
    x = torch.randn(2, channels, 64, 48, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 2 if channels == 1 else channels, (2, 64, 48), generator=gen)
    options = {"activation": "sigmoid" if channels == 1 else "softmax"}
    if dtype == torch.uint8:
        labels[0, :3] = 255
        options["ignore_index"] = 255
    results = []
    for target in (labels.to(dtype), labels):
        xg = x.clone().requires_grad_()
        loss = segloss.dice_loss(xg, target, **options)
        loss.backward()
        results.append((loss.detach(), xg.grad))
    out[str(dtype)] = results
torch.save(out, sys.argv[1])
"""


@pytest.mark.parametrize("isa", CPU_ISAS)
def test_narrow_label_dtypes_read_in_place_equal_int64(isa, tmp_path):
    # uint8 / int32 maps are read in place (others converted); each
    # instruction set gives exactly the int64 map's loss and gradient, over
    # several 2048-pixel blocks.
    run_python_with_cpu_isa(isa, _LABEL_DTYPES_CHILD, str(tmp_path / "out.pt"))
    for dtype, ((loss, grad), (loss64, grad64)) in torch.load(tmp_path / "out.pt").items():
        assert torch.equal(loss, loss64), dtype
        assert torch.equal(grad, grad64), dtype
