"""segloss.boundary_loss and segloss.hausdorff_dt_loss (and their nn modules).

References: MONAI 1.6.1's BoundaryLoss, HausdorffDTLoss and
LogHausdorffDTLoss (float64 inputs; MONAI rounds its distance maps to
float32, and raises the Hausdorff maps to alpha in float32); and float64
formulas written here from the definitions, with the distance maps from
scipy.ndimage.distance_transform_edt rounded to float32 (the maps' dtype),
their gradients from torch autograd. Only the TorchScript, torch.compile and
precomputed-map tests compare segloss with itself.
"""

import functools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

try:
    from monai.losses import BoundaryLoss as MonaiBoundaryLoss
    from monai.losses import HausdorffDTLoss as MonaiHausdorffDTLoss
    from monai.losses import LogHausdorffDTLoss as MonaiLogHausdorffDTLoss
except ImportError:  # MONAI is optional (absent on the GPU machines)
    MonaiBoundaryLoss = MonaiHausdorffDTLoss = MonaiLogHausdorffDTLoss = None

import segloss
import segloss.distance
import segloss.nn
from helpers import assert_aot_eager_equals_eager, assert_matches, run_python

needs_monai = pytest.mark.skipif(MonaiBoundaryLoss is None, reason="needs MONAI")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

SHAPES = {"2d": (3, 3, 12, 13), "3d": (3, 3, 6, 7, 8)}
ACTIVATIONS = ("sigmoid", "softmax", "none")
REDUCTIONS = ("mean", "sum", "none")
# The Hausdorff tests take each alpha with one reduction, to keep the count down.
ALPHA_FOR = {"mean": 2.0, "sum": 1.0, "none": 3.5}


# --------------------------------------------------------------------------
# Data: blobs of each class, with empty and full masks in some images.

def _labels(shape, gen):
    """Class indices [N, *spatial]: image 0 has boxes of every class, image 1
    is all background (channel 0 full, the others empty), image 2 has no
    class C - 1 (an empty mask)."""
    n, c, *spatial = shape
    labels = torch.zeros((n, *spatial), dtype=torch.int64)
    for i in range(n):
        classes = [] if i == 1 else list(range(1, c if i != 2 else c - 1))
        for k in classes:
            for _ in range(2):
                lo = [int(torch.randint(0, s - 2, (1,), generator=gen)) for s in spatial]
                size = [int(torch.randint(2, max(3, s // 2), (1,), generator=gen))
                        for s in spatial]
                box = tuple(slice(a, a + b) for a, b in zip(lo, size))
                labels[(i,) + box] = k
    return labels


def _one_hot(labels, c):
    return F.one_hot(labels, c).movedim(-1, 1).double()


def _logits(shape, labels, gen):
    """Logits that lean towards the target, so that the predicted masks
    (p > 0.5) have borders; image 0 channel 1 predicts nothing and image 2
    channel 0 everything (sigmoid), for empty and full predicted masks."""
    x = 2.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    x = x + 3.0 * (_one_hot(labels, shape[1]) - 0.5)
    x[0, 1] = -6.0 - x[0, 1].abs()
    x[2, 0] = 6.0 + x[2, 0].abs()
    return x


def _input(activation, x):
    """What the loss is given: logits, or probabilities for 'none'."""
    return torch.sigmoid(x) if activation == "none" else x


def _target(kind, labels, c, gen=None):
    if kind == "labels":
        return labels
    if kind == "labels_n1":
        return labels.unsqueeze(1).to(torch.int32)
    if kind == "onehot":
        return _one_hot(labels, c)
    assert kind == "soft"  # probabilities whose argmax is the label
    soft = torch.softmax(4.0 * _one_hot(labels, c)
                         + torch.rand(_one_hot(labels, c).shape, generator=gen,
                                      dtype=torch.float64), 1)
    soft[:, -1, :2] = 0.5  # exactly the threshold: background (MONAI's target > 0.5)
    return soft


# --------------------------------------------------------------------------
# The float64 reference, from the definitions.

def _edt(mask, sampling=None):
    return distance_transform_edt(mask, sampling)


def _maps(masks, kind, sampling=None):
    """Per image and channel: the signed or boundary distance map of a bool
    array [N, C, *spatial] as MONAI rounds it (SciPy's float64 distances to
    float32, then the signed map's -(d - 1) in float32); 0 for an empty or
    full mask. `sampling`: SciPy's, the pixel spacing."""
    out = np.zeros(masks.shape, np.float32)
    for n in range(masks.shape[0]):
        for c in range(masks.shape[1]):
            m = masks[n, c]
            if not m.any() or m.all():
                continue
            inside = _edt(m, sampling).astype(np.float32)
            outside = _edt(~m, sampling).astype(np.float32)
            if kind == "signed":  # outside: distance to the mask; inside: -(d - 1)
                out[n, c] = np.where(m, -(inside - np.float32(1)), outside)
            else:  # distance to the nearest pixel of the other class
                out[n, c] = (_edt(m, sampling) + _edt(~m, sampling)).astype(np.float32)
    return torch.from_numpy(out.astype(np.float64))


def _reference_operands(x, target, activation, include_background):
    """p (float64, autograd through x), g (float64 values) and the target's
    masks (numpy bool), channel 0 dropped after the activation."""
    c = x.shape[1]
    if activation == "sigmoid":
        p = torch.sigmoid(x.double())
    elif activation == "softmax":
        p = torch.softmax(x.double(), 1)
    else:
        p = x.double()
    if target.is_floating_point():
        g = target.double()
    else:
        labels = target[:, 0] if target.dim() == x.dim() else target
        g = (labels.unsqueeze(1) == 1).double() if c == 1 else _one_hot(labels.long(), c)
    if not include_background and c > 1:
        p, g = p[:, 1:], g[:, 1:]
    return p, g, (g > 0.5).numpy()


def boundary_reference(x, target, activation="sigmoid", include_background=True, batch=False,
                       reduction="mean", sampling=None):
    p, _, masks = _reference_operands(x, target, activation, include_background)
    phi = _maps(masks, "signed", sampling)
    spatial = list(range(2, x.dim()))
    loss = (p * phi).sum(spatial) / float(np.prod(x.shape[2:]))
    if batch:
        loss = loss.mean(0)
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


def hausdorff_reference(x, target, alpha=2.0, log=False, activation="sigmoid",
                        include_background=False, batch=False, reduction="mean",
                        sampling=None):
    p, g, masks = _reference_operands(x, target, activation, include_background)
    d_p = _maps((p.detach() > 0.5).numpy(), "boundary", sampling)
    d_g = _maps(masks, "boundary", sampling)
    per_pixel = (p - g) ** 2 * (d_p ** alpha + d_g ** alpha)
    spatial = list(range(2, x.dim()))
    loss = per_pixel.mean(([0] if batch else []) + spatial)
    loss = {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]
    return torch.log(1 + loss) if log else loss


def _forward_backward(fn, x, *args, **kwargs):
    xr = x.detach().clone().requires_grad_()
    loss = fn(xr, *args, **kwargs)
    g = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype,
                       device=loss.device).view(loss.shape)
    (grad,) = torch.autograd.grad(loss, xr, g)
    return loss.detach(), grad


def _case(spatial, activation, target_kind, gen, c=3):
    shape = (SHAPES[spatial][0], c) + SHAPES[spatial][2:]
    labels = _labels(shape, gen)
    x = _input(activation, _logits(shape, labels, gen))
    return x, _target(target_kind, labels, c, gen)


# --------------------------------------------------------------------------
# Against the float64 reference.

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("target_kind", ["labels", "labels_n1", "onehot", "soft"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("spatial", list(SHAPES))
def test_boundary_matches_float64_reference(spatial, activation, target_kind,
                                            include_background, batch, reduction, gen):
    x, t = _case(spatial, activation, target_kind, gen)
    kwargs = dict(activation=activation, include_background=include_background, batch=batch,
                  reduction=reduction)
    loss, grad = _forward_backward(segloss.boundary_loss, x, t, **kwargs)
    ref_loss, ref_grad = _forward_backward(boundary_reference, x, t, **kwargs)
    assert loss.dtype == torch.float64
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("target_kind", ["labels", "labels_n1", "onehot", "soft"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("spatial", list(SHAPES))
def test_hausdorff_matches_float64_reference(spatial, activation, target_kind,
                                             include_background, batch, reduction, gen):
    x, t = _case(spatial, activation, target_kind, gen)
    kwargs = dict(alpha=ALPHA_FOR[reduction], activation=activation,
                  include_background=include_background, batch=batch, reduction=reduction)
    loss, grad = _forward_backward(segloss.hausdorff_dt_loss, x, t, **kwargs)
    ref_loss, ref_grad = _forward_backward(hausdorff_reference, x, t, **kwargs)
    assert loss.dtype == torch.float64
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_log_hausdorff_matches_float64_reference(alpha, reduction, gen):
    x, t = _case("2d", "softmax", "labels", gen)
    kwargs = dict(alpha=alpha, log=True, activation="softmax", reduction=reduction)
    loss, grad = _forward_backward(segloss.hausdorff_dt_loss, x, t, **kwargs)
    ref_loss, ref_grad = _forward_backward(hausdorff_reference, x, t, **kwargs)
    assert_matches(loss, ref_loss)
    assert_matches(grad, ref_grad)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("spatial, sampling", [("2d", [2.0, 0.5]), ("2d", 1.5),
                                               ("3d", [3.0, 0.7, 0.8])])
def test_sampling_matches_float64_reference(spatial, sampling, activation, gen):
    # The maps with the pixel spacing (an anisotropic volume's voxel size):
    # SciPy's distance_transform_edt(..., sampling) in the reference.
    x, t = _case(spatial, activation, "labels", gen)
    dims = x.dim() - 2
    per_dim = [sampling] * dims if isinstance(sampling, float) else sampling
    for fn, ref, kwargs in ((segloss.boundary_loss, boundary_reference, {"batch": True}),
                            (segloss.hausdorff_dt_loss, hausdorff_reference, {}),
                            (segloss.hausdorff_dt_loss, hausdorff_reference,
                             {"alpha": 1.5, "log": True, "reduction": "none"})):
        kwargs = dict(kwargs, activation=activation)
        loss, grad = _forward_backward(fn, x, t, sampling=sampling, **kwargs)
        ref_loss, ref_grad = _forward_backward(ref, x, t, sampling=per_dim, **kwargs)
        assert_matches(loss, ref_loss)
        assert_matches(grad, ref_grad)
        # The spacing does change the loss.
        unit_loss, _ = _forward_backward(fn, x, t, **kwargs)
        assert not torch.allclose(loss, unit_loss)
    # As a module option (one number per spatial dim), scripted too.
    for module in (segloss.nn.BoundaryLoss(activation=activation, sampling=per_dim),
                   segloss.nn.LogHausdorffDTLoss(activation=activation, sampling=per_dim)):
        expected = (boundary_reference if isinstance(module, segloss.nn.BoundaryLoss)
                    else functools.partial(hausdorff_reference, log=True))(
                        x, t, activation=activation, sampling=per_dim,
                        include_background=module.include_background)
        assert_matches(module(x, t), expected)
        assert torch.equal(torch.jit.script(module)(x, t), module(x, t))
        assert f"sampling={per_dim}" in repr(module)


def test_sampling_gradcheck_and_compile(gen):
    x, t = _case("2d", "softmax", "labels", gen)
    x = x[:2, :, :6, :7].clone()
    t = t[:2, :6, :7].clone()
    for fn in (segloss.boundary_loss, segloss.hausdorff_dt_loss):
        torch.autograd.gradcheck(
            lambda v: fn(v, t, activation="softmax", sampling=[1.7, 0.6]),
            (x.clone().requires_grad_(),))
        assert_aot_eager_equals_eager(
            lambda v, l: fn(v, l, activation="softmax", sampling=[1.7, 0.6]), x.float(), t)


@pytest.mark.parametrize("target_kind", ["labels", "labels_n1", "onehot"])
@pytest.mark.parametrize("spatial", list(SHAPES))
def test_one_channel(spatial, target_kind, gen):
    # One channel: a class-index target is the binary mask itself (labels 0
    # and 1); include_background=False is ignored (MONAI warns and ignores it).
    x, t = _case(spatial, "sigmoid", target_kind, gen, c=2)
    x = x[:, 1:]
    if target_kind == "onehot":
        t = t[:, 1:]
    for include_background in (True, False):
        for fn, ref in ((segloss.boundary_loss, boundary_reference),
                        (segloss.hausdorff_dt_loss, hausdorff_reference)):
            kwargs = dict(include_background=include_background, reduction="none")
            loss, grad = _forward_backward(fn, x, t, **kwargs)
            ref_loss, ref_grad = _forward_backward(ref, x, t, **kwargs)
            assert loss.shape == (x.shape[0], 1)
            assert_matches(loss, ref_loss)
            assert_matches(grad, ref_grad)


def test_empty_and_full_masks_have_zero_maps():
    # Empty and full masks have no border: their maps are 0 (MONAI's
    # convention), so a channel whose target and prediction are each empty
    # or full costs nothing, even where they disagree (image 0, channel 0:
    # the target is full, the prediction empty).
    x = torch.full((2, 2, 6, 7), -5.0, dtype=torch.float64)
    x[1, 0] = 5.0
    labels = torch.zeros(2, 6, 7, dtype=torch.int64)
    for fn in (segloss.boundary_loss, segloss.hausdorff_dt_loss):
        loss = fn(x, labels, include_background=True, reduction="none")
        assert torch.equal(loss, torch.zeros_like(loss)), fn


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_on_device(device, dtype, gen):
    # On the input's device (CUDA on a GPU machine), against the float64
    # reference on the CPU.
    x, t = _case("3d", "softmax", "labels", gen)
    y = _target("soft", t, 3, gen)
    for fn, ref, target, kwargs in (
            (segloss.boundary_loss, boundary_reference, t, {"batch": True}),
            (segloss.hausdorff_dt_loss, hausdorff_reference, t, {"alpha": 3.5}),
            (segloss.hausdorff_dt_loss, hausdorff_reference, y, {"reduction": "none"})):
        kwargs = dict(kwargs, activation="softmax")
        loss, grad = _forward_backward(fn, x.to(device, dtype), target.to(device), **kwargs)
        assert loss.device.type == grad.device.type == device and loss.dtype == dtype
        ref_loss, ref_grad = _forward_backward(ref, x.to(dtype).double(), target, **kwargs)
        assert_matches(loss, ref_loss)
        assert_matches(grad, ref_grad)


def test_non_contiguous_input_and_every_label_dtype(gen):
    x, labels = _case("2d", "softmax", "labels", gen)
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    assert not xt.is_contiguous()
    for fn in (segloss.boundary_loss, segloss.hausdorff_dt_loss):
        expected = fn(x, labels, activation="softmax", reduction="none")
        for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.uint16,
                      torch.uint32, torch.uint64):
            t = labels.to(dtype)
            assert torch.equal(fn(xt, t, activation="softmax", reduction="none"), expected)
        cl = x.to(memory_format=torch.channels_last)
        assert torch.equal(fn(cl, labels, activation="softmax", reduction="none"), expected)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("fn", [segloss.boundary_loss, segloss.hausdorff_dt_loss],
                         ids=["boundary", "hausdorff"])
def test_meta_tensors_give_the_shape_and_dtype(fn, reduction, gen):
    # Shape inference without data (the label check needs values: skipped).
    x, labels = _case("2d", "softmax", "labels", gen)
    expected = fn(x, labels, activation="softmax", reduction=reduction)
    actual = fn(x.to("meta"), labels.to("meta"), activation="softmax", reduction=reduction)
    assert actual.device.type == "meta"
    assert (actual.shape, actual.dtype) == (expected.shape, expected.dtype)


# --------------------------------------------------------------------------
# Against MONAI.

def _monai_options(activation, target_kind):
    options = {"sigmoid": {"sigmoid": True}, "softmax": {"softmax": True},
               "none": {}}[activation]
    return dict(options, to_onehot_y=target_kind == "labels_n1")


def _monai_forward_backward(cls, x, t, **kwargs):
    xr = x.detach().clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = cls(**kwargs)(xr, t)
    (grad,) = torch.autograd.grad(loss.sum(), xr)
    return loss.detach(), grad


@needs_monai
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("target_kind", ["labels_n1", "onehot"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("spatial", list(SHAPES))
def test_boundary_matches_monai(spatial, activation, target_kind, include_background, batch,
                                reduction, gen):
    x, t = _case(spatial, activation, target_kind, gen)
    expected, expected_grad = _monai_forward_backward(
        MonaiBoundaryLoss, x, t, include_background=include_background, batch=batch,
        reduction=reduction, **_monai_options(activation, target_kind))
    xs = x.clone().requires_grad_()
    loss = segloss.boundary_loss(xs, t, activation=activation,
                                 include_background=include_background, batch=batch,
                                 reduction=reduction)
    (grad,) = torch.autograd.grad(loss.sum(), xs)
    assert loss.shape == expected.shape
    # float32 maps times float64 probabilities. MONAI's map inside the mask
    # is float32(d) - 1 rounded again in float32, the map's float32(d - 1):
    # one float32 ulp apart at some pixels.
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-9)


@needs_monai
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("target_kind", ["labels_n1", "onehot"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("spatial", list(SHAPES))
def test_hausdorff_matches_monai(spatial, activation, target_kind, include_background, batch,
                                 reduction, gen):
    x, t = _case(spatial, activation, target_kind, gen)
    alpha = ALPHA_FOR[reduction]
    expected, expected_grad = _monai_forward_backward(
        MonaiHausdorffDTLoss, x, t, alpha=alpha, include_background=include_background,
        batch=batch, reduction=reduction, **_monai_options(activation, target_kind))
    xs = x.clone().requires_grad_()
    loss = segloss.hausdorff_dt_loss(xs, t, alpha, activation=activation,
                                     include_background=include_background, batch=batch,
                                     reduction=reduction)
    (grad,) = torch.autograd.grad(loss.sum(), xs)
    if reduction == "none":
        # MONAI's broadcastable [N, C', 1, ...] ([1, C', 1, ...] with batch);
        # ours [N, C'] ([C']).
        assert expected.shape == ((1,) if batch else ()) + loss.shape + (1,) * (x.dim() - 2)
        expected = expected.reshape(loss.shape)
    else:
        assert loss.shape == expected.shape == ()
    # MONAI raises the float32 maps to alpha in float32.
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-9)


# A two-channel softmax runs the fused sigmoid rows on x_1 - x_0: against
# the float64 reference (a softmax) and MONAI, with both channels kept or the
# background dropped, in float64 and float32.
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("target_kind", ["labels", "onehot", "soft"])
@pytest.mark.parametrize("spatial", list(SHAPES))
def test_two_class_softmax_matches_float64_reference(spatial, target_kind, include_background,
                                                     reduction, gen):
    x, t = _case(spatial, "softmax", target_kind, gen, c=2)
    kwargs = dict(activation="softmax", include_background=include_background,
                  reduction=reduction)
    for ours, reference in ((segloss.boundary_loss, boundary_reference),
                            (segloss.hausdorff_dt_loss, hausdorff_reference)):
        loss, grad = _forward_backward(ours, x, t, **kwargs)
        ref_loss, ref_grad = _forward_backward(reference, x, t, **kwargs)
        assert_matches(loss, ref_loss)
        assert_matches(grad, ref_grad)


@needs_monai
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("spatial", list(SHAPES))
def test_two_class_softmax_matches_monai(spatial, include_background, dtype, gen):
    x, t = _case(spatial, "softmax", "labels_n1", gen, c=2)
    x = x.to(dtype)
    options = dict(include_background=include_background, **_monai_options("softmax",
                                                                         "labels_n1"))
    # float32: sigmoid(x_1 - x_0) and MONAI's softmax differ in the last bits.
    tolerance = dict(rtol=1e-6, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-5,
                                                                                atol=1e-6)
    for ours, cls in ((segloss.boundary_loss, MonaiBoundaryLoss),
                      (segloss.hausdorff_dt_loss, MonaiHausdorffDTLoss)):
        expected, expected_grad = _monai_forward_backward(cls, x, t, **options)
        xs = x.clone().requires_grad_()
        loss = ours(xs, t, activation="softmax", include_background=include_background)
        (grad,) = torch.autograd.grad(loss.sum(), xs)
        torch.testing.assert_close(loss, expected, **tolerance)
        torch.testing.assert_close(grad, expected_grad, **tolerance)


@needs_monai
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_log_hausdorff_matches_monai(reduction, batch, gen):
    x, t = _case("3d", "softmax", "onehot", gen)
    expected, expected_grad = _monai_forward_backward(
        MonaiLogHausdorffDTLoss, x, t, alpha=ALPHA_FOR[reduction], softmax=True, batch=batch,
        reduction=reduction)
    for module in (segloss.nn.LogHausdorffDTLoss(ALPHA_FOR[reduction], activation="softmax",
                                                 batch=batch, reduction=reduction),
                   segloss.nn.HausdorffDTLoss(ALPHA_FOR[reduction], log=True,
                                              activation="softmax", batch=batch,
                                              reduction=reduction)):
        xs = x.clone().requires_grad_()
        loss = module(xs, t)
        (grad,) = torch.autograd.grad(loss.sum(), xs)
        torch.testing.assert_close(loss, expected.reshape(loss.shape), rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-9)


@needs_monai
def test_modules_match_monai_one_channel(gen):
    # One channel: MONAI ignores include_background=False and to_onehot_y.
    # MONAI's HausdorffDTLoss is given the labels as floats: it stores the
    # target's distance map in a tensor of the target's dtype, which
    # truncates the distances of an integer target.
    x, t = _case("2d", "sigmoid", "labels_n1", gen, c=2)
    x = x[:, 1:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = (MonaiBoundaryLoss(sigmoid=True, include_background=False)(x, t),
                    MonaiHausdorffDTLoss(sigmoid=True)(x, t.double()))
    assert_matches(segloss.nn.BoundaryLoss(include_background=False)(x, t), expected[0])
    torch.testing.assert_close(segloss.nn.HausdorffDTLoss()(x, t), expected[1], rtol=1e-6,
                               atol=0)


# --------------------------------------------------------------------------
# Precomputed maps, gradcheck, half types.

def test_precomputed_distance_map_equals_on_the_fly(gen):
    x, labels = _case("2d", "softmax", "labels", gen)
    masks = _one_hot(labels, 3) > 0.5
    full = segloss.signed_distance_map(masks)
    assert full.dtype == torch.float32 and full.shape == x.shape
    for include_background in (True, False):
        kwargs = dict(activation="softmax", include_background=include_background,
                      reduction="none")
        expected = _forward_backward(segloss.boundary_loss, x, labels, **kwargs)
        kept = full if include_background else full[:, 1:]
        for phi in (full, kept, kept.double(), kept.clone().requires_grad_()):
            got = _forward_backward(segloss.boundary_loss, x, labels, distance_map=phi,
                                    **kwargs)
            assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    module = segloss.nn.BoundaryLoss(activation="softmax")
    assert torch.equal(module(x, labels, full), module(x, labels))


@pytest.mark.parametrize("channels", [3, 2])  # 2: a softmax is a sigmoid of x_1 - x_0
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck(activation, channels, gen):
    x, t = _case("2d", activation, "labels", gen, c=channels)
    x = x[:2, :, :6, :7].clone()
    t = t[:2, :6, :7].clone()
    p = {"sigmoid": torch.sigmoid, "softmax": lambda v: torch.softmax(v, 1),
         "none": lambda v: v}[activation](x)
    # Far enough from 0.5 that the finite differences keep the predicted masks.
    assert float((p - 0.5).abs().min()) > 1e-4
    soft = _target("soft", t, channels, gen)
    for target in (t, soft):
        for fn, kwargs in ((segloss.boundary_loss, {"batch": True}),
                           (segloss.hausdorff_dt_loss, {"alpha": 3.5, "log": True}),
                           (segloss.hausdorff_dt_loss, {"reduction": "none"})):
            torch.autograd.gradcheck(
                lambda v: fn(v, target, activation=activation, **kwargs),
                (x.clone().requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_accumulate_in_float32(dtype, gen):
    x, t = _case("2d", "softmax", "labels", gen)
    x = x.to(dtype)
    for fn, ref in ((segloss.boundary_loss, boundary_reference),
                    (segloss.hausdorff_dt_loss, hausdorff_reference)):
        for reduction in ("mean", "none"):
            loss, grad = _forward_backward(fn, x, t, activation="softmax",
                                           reduction=reduction)
            assert loss.dtype == grad.dtype == dtype
            # The float64 reference of the same (rounded) input.
            ref_loss, ref_grad = _forward_backward(ref, x.double(), t, activation="softmax",
                                                   reduction=reduction)
            assert_matches(loss, ref_loss, dtype)
            assert_matches(grad, ref_grad.to(dtype), dtype)
            # float32 inputs: within float32's tolerance.
            loss32 = fn(x.float(), t, activation="softmax", reduction=reduction)
            assert loss32.dtype == torch.float32
            assert_matches(loss32, ref_loss)


# --------------------------------------------------------------------------
# TorchScript and torch.compile.

def _both_losses(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (segloss.boundary_loss(x, t, activation="softmax", include_background=False)
            + segloss.hausdorff_dt_loss(x, y, 1.5, log=True, batch=True, reduction="sum")
            + segloss.hausdorff_dt_loss(x, t, activation="softmax", reduction="none").sum())


def test_functional_forms_script(gen):
    x, t = _case("3d", "softmax", "labels_n1", gen)
    y = _one_hot(t[:, 0].long(), 3)
    scripted = torch.jit.script(_both_losses)
    assert torch.equal(scripted(x, t, y), _both_losses(x, t, y))
    for fn in (segloss.boundary_loss, segloss.hausdorff_dt_loss):
        s = torch.jit.script(fn)
        for kwargs in ({}, {"activation": "none", "batch": True, "reduction": "none"}):
            assert torch.equal(s(torch.sigmoid(x), y, **kwargs), fn(torch.sigmoid(x), y, **kwargs))


def test_modules_script(gen):
    x, t = _case("2d", "softmax", "labels", gen)
    modules = [segloss.nn.BoundaryLoss(activation="softmax", batch=True, reduction="none"),
               segloss.nn.HausdorffDTLoss(alpha=1.0, activation="softmax",
                                          include_background=True),
               segloss.nn.LogHausdorffDTLoss(activation="softmax", reduction="sum")]
    for module in modules:
        scripted = torch.jit.script(module)
        assert torch.equal(scripted(x, t), module(x, t)), module
    phi = segloss.signed_distance_map(_one_hot(t, 3) > 0.5)
    assert torch.equal(torch.jit.script(modules[0])(x, t, phi), modules[0](x, t))
    assert "log=True" in repr(modules[2]) and "activation='softmax'" in repr(modules[0])


_CHILD = """
import sys, torch
model_path, library_path, inputs_path = sys.argv[1:]
torch.ops.load_library(library_path)
assert "segloss" not in sys.modules
x, t, y, expected = torch.load(inputs_path)
model = torch.jit.load(model_path)
x.requires_grad_()
loss = model(x, t, y)
loss.backward()
assert torch.equal(loss.detach(), expected[0]) and torch.equal(x.grad, expected[1])
print("ok")
"""


class _Losses(torch.nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _both_losses(x, t, y)


@pytest.mark.skipif(getattr(segloss.distance, "_TEMPORARY_MAPS", False),
                    reason="the temporary SciPy maps are Python functions: a scripted model "
                           "that calls them cannot be saved")
def test_scripted_in_fresh_process(tmp_path, gen):
    x, t = _case("2d", "softmax", "labels", gen)
    y = _one_hot(t, 3)
    scripted = torch.jit.script(_Losses())
    xr = x.clone().requires_grad_()
    loss = scripted(xr, t, y)
    loss.backward()
    scripted.save(str(tmp_path / "model.pt"))
    torch.save((x, t, y, (loss.detach(), xr.grad)), tmp_path / "inputs.pt")
    out = run_python(_CHILD, str(tmp_path / "model.pt"), segloss.library_path(),
                     str(tmp_path / "inputs.pt"))
    assert "ok" in out.stdout


def test_compile_fullgraph(gen):
    x, t = _case("2d", "softmax", "labels", gen)
    x = x.float()
    y = _one_hot(t, 3).float()
    assert_aot_eager_equals_eager(
        lambda v, l: segloss.boundary_loss(v, l, activation="softmax"), x, t)
    assert_aot_eager_equals_eager(
        lambda v, l: segloss.hausdorff_dt_loss(v, l, 3.5, activation="softmax", batch=True), x, t)
    assert_aot_eager_equals_eager(
        lambda v, l: segloss.hausdorff_dt_loss(v, l, log=True, include_background=True), x, y)
    phi = segloss.signed_distance_map(y > 0.5)
    assert_aot_eager_equals_eager(
        lambda v, l: segloss.boundary_loss(v, l, phi, reduction="sum"), x, y)


@pytest.mark.slow
def test_inductor_matches_eager(gen):
    x, t = _case("2d", "softmax", "labels", gen)
    x = x.float()
    y = _one_hot(t, 3).float()

    def losses(v):
        return (segloss.boundary_loss(v, t, activation="softmax")
                + segloss.hausdorff_dt_loss(v, y, log=True, include_background=True))

    torch._dynamo.reset()
    try:
        compiled = torch.compile(losses, backend="inductor", fullgraph=True)
        got = _forward_backward(compiled, x)
        expected = _forward_backward(losses, x)
    finally:
        torch._dynamo.reset()
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------
# Errors name the function and the argument.

X = torch.randn(2, 3, 5, 6)
LABELS = torch.randint(0, 3, (2, 5, 6))


@pytest.mark.parametrize("call,match", [
    (lambda: segloss.hausdorff_dt_loss(X, LABELS, 0.0),
     "segloss.hausdorff_dt_loss: alpha must be > 0, got 0.0"),
    (lambda: segloss.hausdorff_dt_loss(X, LABELS, alpha=-1.0),
     "segloss.hausdorff_dt_loss: alpha must be > 0, got -1.0"),
    (lambda: segloss.hausdorff_dt_loss(X, LABELS, float("nan")),
     "segloss.hausdorff_dt_loss: alpha must be > 0, got nan"),
    (lambda: segloss.boundary_loss(X, LABELS, activation="relu"),
     "segloss.boundary_loss: activation must be 'sigmoid', 'softmax' or 'none', got 'relu'"),
    (lambda: segloss.hausdorff_dt_loss(X, LABELS, activation="softmax2d"),
     "segloss.hausdorff_dt_loss: activation must be 'sigmoid', 'softmax' or 'none'"),
    (lambda: segloss.boundary_loss(X, LABELS, reduction="max"),
     "segloss.boundary_loss: reduction must be 'mean', 'sum' or 'none', got 'max'"),
    (lambda: segloss.hausdorff_dt_loss(X, torch.rand(2, 2, 5, 6)),
     r"segloss.hausdorff_dt_loss: target must have the input's shape \[2, 3, 5, 6\]"),
    (lambda: segloss.boundary_loss(X, torch.randint(0, 3, (2, 5, 7))),
     r"segloss.boundary_loss: class indices must be \[N, \*spatial\] or \[N, 1, \*spatial\]"),
    (lambda: segloss.boundary_loss(X, torch.randint(0, 3, (2, 2, 5, 6))),
     r"segloss.boundary_loss: class indices must be"),
    (lambda: segloss.hausdorff_dt_loss(X, LABELS + 1),
     r"segloss.hausdorff_dt_loss: class indices must lie in \[0, 3\), got values in \[1, 3\]"),
    (lambda: segloss.boundary_loss(X[:, :1], LABELS),
     r"segloss.boundary_loss: class indices must lie in \[0, 2\)"),
    (lambda: segloss.boundary_loss(X[:, :1], LABELS, activation="softmax"),
     "segloss.boundary_loss: activation='softmax' needs at least 2 channels"),
    (lambda: segloss.boundary_loss(X[0], LABELS[0]),
     r"segloss.boundary_loss: input must be \[N, C, H, W\] or \[N, C, D, H, W\]"),
    (lambda: segloss.boundary_loss(X, LABELS, torch.zeros(2, 1, 5, 6)),
     r"segloss.boundary_loss: distance_map must have the input's shape \[2, 3, 5, 6\] or the "
     r"kept channels' shape \[2, 3, 5, 6\], got \[2, 1, 5, 6\]"),
    (lambda: segloss.boundary_loss(X, LABELS, torch.zeros(2, 3, 5, 6, dtype=torch.int32)),
     "segloss.boundary_loss: distance_map must be floating point"),
    (lambda: segloss.boundary_loss(X, LABELS, torch.zeros(2, 3, 5, 6), sampling=[2.0, 1.0]),
     "segloss.boundary_loss: sampling applies to the map computed here; a given "
     "distance_map is used as it is"),
    (lambda: segloss.hausdorff_dt_loss(X, LABELS, sampling=[2.0, 1.0, 1.0]),
     r"segloss.hausdorff_dt_loss: sampling must have one value per spatial dim \(2\), got 3"),
    (lambda: segloss.boundary_loss(X, LABELS, sampling=[2.0, -1.0]),
     "segloss.boundary_loss: sampling must be positive, got -1.0 for spatial dim 1"),
    (lambda: segloss.hausdorff_dt_loss(X, LABELS, sampling=float("nan")),
     "segloss.hausdorff_dt_loss: sampling must be positive, got nan for spatial dim 0"),
])
def test_errors_name_the_function_and_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("make,match", [
    (lambda: segloss.nn.HausdorffDTLoss(alpha=0.0),
     "segloss.nn.HausdorffDTLoss: alpha must be > 0, got 0.0"),
    (lambda: segloss.nn.LogHausdorffDTLoss(alpha=-2.0),
     "segloss.nn.LogHausdorffDTLoss: alpha must be > 0"),
    (lambda: segloss.nn.BoundaryLoss(activation="tanh"),
     "segloss.nn.BoundaryLoss: activation must be 'sigmoid', 'softmax' or 'none'"),
    (lambda: segloss.nn.HausdorffDTLoss(reduction="avg"),
     "segloss.nn.HausdorffDTLoss: reduction must be one of"),
])
def test_module_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_module_sampling_must_be_one_number_per_dim():
    # A single number needs the input's number of spatial dims: the
    # functional forms take one, the modules a sequence.
    for make in (lambda: segloss.nn.BoundaryLoss(sampling=2.0),
                 lambda: segloss.nn.HausdorffDTLoss(sampling=0.5)):
        with pytest.raises(TypeError, match="sampling must be a sequence of numbers, one per "
                                            "spatial dim, got"):
            make()
