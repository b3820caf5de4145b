"""The shape-aware (U-Net) loss, binary form: equal to PyTorch's BCE with the
weight map as `weight=`, the on-the-fly weight map equal to the precomputed
one, gradcheck, opcheck, TorchScript, torch.compile, half precision, errors."""

import numpy as np
import pytest
import torch
import torch._dynamo
import torch.nn.functional as F

import segloss
import segloss.nn
import segloss.numpy as snp
from distance_reference import random_disks
from helpers import run_python

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

op = torch.ops.segloss.shape_aware_loss

# (input shape, per-pixel shape)
LAYOUTS = {
    "2d-channel": ((2, 1, 18, 22), (2, 18, 22)),
    "2d": ((2, 18, 22), (2, 18, 22)),
    "3d-channel": ((2, 1, 6, 9, 11), (2, 6, 9, 11)),
    "3d": ((2, 6, 9, 11), (2, 6, 9, 11)),
}


def _instances(pixel_shape, seed=0):
    rng = np.random.default_rng(seed)
    images = [random_disks(pixel_shape[1:], 5, rng) for _ in range(pixel_shape[0] - 1)]
    images.append(np.zeros(pixel_shape[1:], np.int64))  # an image without instances
    return torch.from_numpy(np.stack(images))


def _data(layout, gen, dtype=torch.float64, device="cpu"):
    shape, pixel_shape = LAYOUTS[layout]
    x = (3 * torch.randn(shape, generator=gen, dtype=torch.float64)).to(device, dtype)
    y = (torch.rand(shape, generator=gen) > 0.5).to(device, dtype)
    return x, y, _instances(pixel_shape).to(device)


def _numpy_weight_map(instances, **kwargs):
    return torch.from_numpy(np.stack([snp.unet_weight_map(image, **kwargs)
                                      for image in instances.cpu().numpy()]))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "weighted_mean"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probabilities"])
def test_equals_torch_bce_with_weight(layout, reduction, from_logits, gen, device):
    x, y, instances = _data(layout, gen, device=device)
    if not from_logits:
        x = torch.sigmoid(x)
    w = _numpy_weight_map(instances).to(device, torch.float64).reshape(x.shape)
    reference = F.binary_cross_entropy_with_logits if from_logits else F.binary_cross_entropy
    expected = reference(x, y, weight=w, reduction="none")
    expected = {"none": expected, "mean": expected.mean(), "sum": expected.sum(),
                "weighted_mean": expected.sum() / w.sum()}[reduction]
    for weight_map in (w, w.reshape(LAYOUTS[layout][1])):  # the input's or the per-pixel shape
        got = segloss.shape_aware_loss(x, y, weight_map, from_logits=from_logits,
                                       reduction=reduction)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    # The map computed on the fly from the instances is the NumPy map exactly.
    on_the_fly = segloss.shape_aware_loss(x, y, instances=instances, from_logits=from_logits,
                                          reduction=reduction)
    precomputed = segloss.shape_aware_loss(x, y, w, from_logits=from_logits, reduction=reduction)
    assert torch.equal(on_the_fly, precomputed)


@pytest.mark.parametrize("options", [dict(w0=3.0, sigma=2.0), dict(class_weights="balanced"),
                                     dict(class_weights={0: 0.5, 1: 2.0}),
                                     dict(sampling=(0.5, 2.0)), dict(sampling=0.7)],
                         ids=["w0-sigma", "balanced", "mapping", "sampling", "sampling-number"])
def test_on_the_fly_options_equal_the_numpy_map(options, gen, device):
    x, y, instances = _data("2d-channel", gen, device=device)
    w = _numpy_weight_map(instances, **options).to(device, torch.float64)[:, None]
    expected = segloss.shape_aware_loss(x, y, w)
    assert torch.equal(segloss.shape_aware_loss(x, y, instances=instances, **options), expected)
    module_options = dict(options)
    if "sampling" in module_options:  # the module takes one spacing per spatial dim
        module_options["sampling"] = list(np.broadcast_to(options["sampling"], 2))
    module = segloss.nn.ShapeAwareLoss(**module_options)
    assert torch.equal(module(x, y, instances=instances), expected)


def test_float32_and_half_precision(gen, device):
    x, y, instances = _data("2d-channel", gen, dtype=torch.float32, device=device)
    w = _numpy_weight_map(instances).to(device)[:, None]
    expected = F.binary_cross_entropy_with_logits(x.double(), y.double(), weight=w.double())
    got = segloss.shape_aware_loss(x, y, instances=instances)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=0)
    for dtype in (torch.float16, torch.bfloat16):
        for reduction in ("mean", "weighted_mean"):
            got = segloss.shape_aware_loss(x.to(dtype), y.to(dtype), instances=instances,
                                           reduction=reduction)
            assert got.dtype == dtype and torch.isfinite(got)
            want = segloss.shape_aware_loss(x, y, instances=instances, reduction=reduction)
            torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.2e-7, 1.0, 3e4])
def test_half_weighted_mean_of_small_or_large_weights(dtype, scale, gen):
    # sum(w l) / sum(w) does not depend on the weights' scale: the result is
    # the float64 one rounded once, also where w l itself would be subnormal
    # in float16 (found by the long fuzz profile: 1.0 for 1.0127).
    x, y, instances = _data("2d", gen)
    x = x.to(dtype)
    w = (scale * _numpy_weight_map(instances).double()).float()
    per_pixel = F.binary_cross_entropy_with_logits(x.double(), y, reduction="none")
    want = (w.double().reshape(x.shape) * per_pixel).sum() / w.double().sum()
    got = segloss.shape_aware_loss(x, y.to(dtype), w, reduction="weighted_mean")
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "none"])
def test_gradcheck(reduction, gen):
    x, y, instances = _data("2d-channel", gen)
    x = x[:, :, :9, :10].contiguous().requires_grad_()
    y, instances = y[:, :, :9, :10], instances[:, :9, :10].contiguous()
    assert torch.autograd.gradcheck(
        lambda t: segloss.shape_aware_loss(t, y, instances=instances, reduction=reduction), (x,))
    w = _numpy_weight_map(instances).double()
    assert torch.autograd.gradcheck(
        lambda t: segloss.shape_aware_loss(t, y, w, reduction=reduction), (x,))


def test_weight_map_is_a_constant(gen):
    x, y, instances = _data("2d", gen)
    w = _numpy_weight_map(instances).double().requires_grad_()
    x.requires_grad_()
    segloss.shape_aware_loss(x, y, w).backward()
    assert w.grad is None and x.grad is not None


def test_empty_batch_and_images_without_instances(device):
    x = torch.zeros(0, 1, 8, 8, device=device)
    loss = segloss.shape_aware_loss(x, x, instances=torch.zeros(0, 8, 8, dtype=torch.int64,
                                                                device=device))
    assert loss.shape == () and torch.isnan(loss)  # the mean of nothing, as PyTorch's BCE
    x = torch.randn(1, 1, 8, 8, device=device)
    y = torch.ones_like(x)
    none = torch.zeros(1, 8, 8, dtype=torch.int64, device=device)
    one = none.clone()
    one[0, 2:4, 2:4] = 7
    for instances in (none, one):  # no second instance: the map is w_c = 1
        torch.testing.assert_close(segloss.shape_aware_loss(x, y, instances=instances),
                                   F.binary_cross_entropy_with_logits(x, y))
    zero_weights = torch.zeros(1, 8, 8, device=device)
    assert segloss.shape_aware_loss(x, y, zero_weights, reduction="weighted_mean") == 0
    empty = torch.zeros(0, 1, 8, 8, device=device)
    assert segloss.shape_aware_loss(empty, empty, empty, reduction="weighted_mean") == 0


def test_opcheck(gen, device):
    x, y, instances = _data("2d-channel", gen, dtype=torch.float32, device=device)
    w = _numpy_weight_map(instances).to(device)
    torch.library.opcheck(op.default, (x.requires_grad_(), y, None),
                          {"instances": instances, "balanced": True, "reduction": "weighted_mean"})
    torch.library.opcheck(op.default, (x, y, w), {"reduction": "mean"})


def test_torchscript_and_compile(gen, device):
    x, y, instances = _data("2d-channel", gen, dtype=torch.float32, device=device)
    module = segloss.nn.ShapeAwareLoss(class_weights="balanced", reduction="weighted_mean")
    scripted = torch.jit.script(module)
    assert torch.equal(scripted(x, y, instances=instances), module(x, y, instances=instances))

    def loss_fn(x, y, instances):
        return torch.ops.segloss.shape_aware_loss(x, y, instances=instances, balanced=True)

    def loss_and_grad(fn):
        leaf = x.clone().requires_grad_()
        loss = fn(leaf, y, instances)
        loss.backward()
        return loss.detach(), leaf.grad

    torch._dynamo.reset()
    compiled = torch.compile(loss_fn, fullgraph=True)
    for got, want in zip(loss_and_grad(compiled), loss_and_grad(loss_fn)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    torch._dynamo.reset()


def test_scripted_module_in_a_fresh_process(tmp_path, gen, device):
    x, y, instances = _data("2d-channel", gen, dtype=torch.float32, device=device)
    scripted = torch.jit.script(segloss.nn.ShapeAwareLoss(w0=5.0, class_weights={0: 1.0, 1: 2.0}))
    expected = scripted(x, y, instances=instances)
    scripted.save(str(tmp_path / "loss.pt"))
    torch.save({"x": x.cpu(), "y": y.cpu(), "instances": instances.cpu(),
                "expected": expected.cpu()}, tmp_path / "data.pt")
    run_python(f"""
import sys, torch
torch.ops.load_library({segloss.library_path()!r})
loss = torch.jit.load({str(tmp_path / 'loss.pt')!r})
data = torch.load({str(tmp_path / 'data.pt')!r})
x = data["x"].to({device!r}).requires_grad_()
got = loss(x, data["y"].to({device!r}), instances=data["instances"].to({device!r}))
got.backward()
assert torch.equal(got.detach().cpu(), data["expected"]) and x.grad is not None
assert "segloss" not in sys.modules
""")


X = torch.zeros(2, 1, 6, 7)
INSTANCES = torch.zeros(2, 6, 7, dtype=torch.int64)


@pytest.mark.parametrize("call, error, match", [
    (lambda: op(X, X), ValueError, "give exactly one of weight_map .* got neither"),
    (lambda: op(X, X, X, instances=INSTANCES), ValueError, "got both"),
    (lambda: op(X, X, instances=INSTANCES.float()), TypeError,
     "instances must be a tensor of integer instance ids"),
    (lambda: op(X, X, instances=INSTANCES[:, :5]), ValueError,
     r"instances must have shape \[2, 6, 7\] or \[2, 1, 6, 7\] for input of shape \[2, 1, 6, 7\]"),
    (lambda: op(X, X, torch.ones(2, 6, 6)), ValueError, "weight_map must have shape"),
    (lambda: op(X, X, torch.ones(2, 6, 7, dtype=torch.int64)), TypeError,
     "weight_map must be a float32"),
    (lambda: op(X, X, torch.ones(2, 6, 7), balanced=True), ValueError,
     "apply to instances; a given weight_map is used as it is"),
    (lambda: op(X, X, instances=INSTANCES, reduction="average"), ValueError,
     "reduction must be 'none', 'mean', 'sum' or 'weighted_mean'"),
    (lambda: op(torch.zeros(2, 3, 4, 6, 7), torch.zeros(2, 3, 4, 6, 7), instances=INSTANCES),
     ValueError, "takes one channel"),
    (lambda: op(torch.zeros(2, 7), torch.zeros(2, 7), instances=INSTANCES), ValueError,
     r"input must be \[N, 1, \*spatial\] or \[N, \*spatial\]"),
    (lambda: op(X, X, instances=INSTANCES, sigma=0.0), ValueError, "sigma must be positive"),
    (lambda: segloss.shape_aware_loss(X, X, instances=INSTANCES, class_weights="inverse"),
     ValueError, "class_weights must be None, 'balanced'"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
