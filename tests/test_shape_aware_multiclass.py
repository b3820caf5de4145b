"""The shape-aware (U-Net) loss, multi-class form: softmax cross-entropy with a
class-index target, weighted per pixel by the U-Net weight map and per class
by `weight`. Checked against `F.cross_entropy(..., reduction="none") * w`
composites in float64 (values and gradients), the on-the-fly map against the
precomputed one, gradcheck, opcheck, TorchScript, torch.compile, half
precision, layouts, empty inputs, determinism and errors."""

import numpy as np
import pytest
import torch
import torch._dynamo
import torch.nn.functional as F

import segloss
import segloss.nn
import segloss.numpy as snp
from distance_reference import random_disks
from helpers import CPU_ISAS, run_python, run_python_with_cpu_isa

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

op = torch.ops.segloss.shape_aware_loss
kernel = torch.ops.segloss._weighted_cross_entropy
REDUCTIONS = ["none", "mean", "sum", "weighted_mean"]
IGNORE = 255

# (input shape (N, C, *spatial))
SHAPES = {"2d": (3, 4, 14, 17), "3d": (2, 3, 5, 7, 9)}


def _instances(pixel_shape, seed=0):
    rng = np.random.default_rng(seed)
    images = [random_disks(pixel_shape[1:], 4, rng) for _ in range(pixel_shape[0] - 1)]
    images.append(np.zeros(pixel_shape[1:], np.int64))  # an image without instances
    return torch.from_numpy(np.stack(images))


def _data(shape, gen, dtype=torch.float64, device="cpu", ignored=True):
    x = (3 * torch.randn(shape, generator=gen, dtype=torch.float64)).to(device, dtype)
    pixel_shape = (shape[0],) + tuple(shape[2:])
    t = torch.randint(0, shape[1], pixel_shape, generator=gen)
    if ignored:
        t[torch.rand(pixel_shape, generator=gen) < 0.15] = IGNORE
    return x, t.to(device), _instances(pixel_shape).to(device)


def _numpy_weight_map(instances, **kwargs):
    return torch.from_numpy(np.stack([snp.unet_weight_map(image, **kwargs)
                                      for image in instances.cpu().numpy()]))


def _reference(x, t, w, weight=None, ignore_index=IGNORE, reduction="mean"):
    """F.cross_entropy(reduction="none") times the map and the class weights."""
    counted = t != ignore_index
    per_pixel = F.cross_entropy(x, t, ignore_index=ignore_index, reduction="none") * w
    coefficient = w * counted
    if weight is not None:
        class_weight = weight[torch.where(counted, t, 0)]
        per_pixel, coefficient = per_pixel * class_weight, coefficient * class_weight
    if reduction == "none":
        return per_pixel
    if reduction == "sum":
        return per_pixel.sum()
    if reduction == "mean":
        return per_pixel.sum() / counted.sum()
    return per_pixel.sum() / coefficient.sum()


@pytest.mark.parametrize("dims", sorted(SHAPES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("class_weighted", [False, True], ids=["", "class-weights"])
def test_equals_cross_entropy_composite(dims, reduction, class_weighted, gen, device):
    x, t, instances = _data(SHAPES[dims], gen, device=device)
    w = _numpy_weight_map(instances).to(device, torch.float64)
    weight = (torch.rand(x.shape[1], generator=gen, dtype=torch.float64) + 0.5).to(device) \
        if class_weighted else None
    x_ref = x.clone().requires_grad_()
    expected = _reference(x_ref, t, w, weight, reduction=reduction)
    grad_output = torch.rand(expected.shape, generator=gen, dtype=torch.float64).to(device)
    (expected * grad_output).sum().backward()
    # The target and the map with or without a channel dim of 1.
    for target, weight_map in ((t, w), (t[:, None], w[:, None])):
        leaf = x.clone().requires_grad_()
        got = segloss.shape_aware_loss(leaf, target, weight_map, weight=weight,
                                       ignore_index=IGNORE, reduction=reduction)
        torch.testing.assert_close(got, expected.detach(), rtol=1e-12, atol=1e-13)
        (got * grad_output).sum().backward()
        torch.testing.assert_close(leaf.grad, x_ref.grad, rtol=1e-12, atol=1e-13)
    # The map computed on the fly from the instances is the NumPy map exactly.
    on_the_fly = segloss.shape_aware_loss(x, t, instances=instances, weight=weight,
                                          ignore_index=IGNORE, reduction=reduction)
    precomputed = segloss.shape_aware_loss(x, t, w, weight=weight, ignore_index=IGNORE,
                                           reduction=reduction)
    assert torch.equal(on_the_fly, precomputed)


def test_means_relate_to_pytorch_cross_entropy(gen, device):
    """With a map of ones, "mean" is F.cross_entropy's mean without class
    weights, and "weighted_mean" is its class-weighted mean."""
    x, t, _ = _data(SHAPES["2d"], gen, device=device)
    ones = torch.ones(t.shape, dtype=torch.float64, device=device)
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64, device=device)
    torch.testing.assert_close(
        segloss.shape_aware_loss(x, t, ones, ignore_index=IGNORE),
        F.cross_entropy(x, t, ignore_index=IGNORE), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        segloss.shape_aware_loss(x, t, ones, weight=weight, ignore_index=IGNORE,
                                 reduction="weighted_mean"),
        F.cross_entropy(x, t, weight=weight, ignore_index=IGNORE), rtol=1e-12, atol=0)


@pytest.mark.parametrize("options", [dict(w0=3.0, sigma=2.0), dict(class_weights="balanced"),
                                     dict(class_weights={0: 0.5, 1: 2.0}),
                                     dict(sampling=(0.5, 2.0)), dict(sampling=0.7)],
                         ids=["w0-sigma", "balanced", "mapping", "sampling", "sampling-number"])
def test_on_the_fly_options_equal_the_numpy_map(options, gen, device):
    x, t, instances = _data(SHAPES["2d"], gen, device=device)
    w = _numpy_weight_map(instances, **options).to(device, torch.float64)
    expected = segloss.shape_aware_loss(x, t, w, ignore_index=IGNORE)
    got = segloss.shape_aware_loss(x, t, instances=instances, ignore_index=IGNORE, **options)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "none"])
def test_float32_and_half_precision(dtype, reduction, gen, device):
    x, t, instances = _data(SHAPES["3d"], gen, device=device)
    x = x.to(dtype)
    w = _numpy_weight_map(instances).to(device)
    weight = torch.tensor([1.0, 2.0, 0.5], device=device)
    x_ref = x.double().requires_grad_()  # the rounded input, in float64
    expected = _reference(x_ref, t, w.double(), weight.double(), reduction=reduction)
    expected.sum().backward()
    leaf = x.clone().requires_grad_()
    got = segloss.shape_aware_loss(leaf, t, w, weight=weight, ignore_index=IGNORE,
                                   reduction=reduction)
    got.sum().backward()
    assert got.dtype == dtype and leaf.grad.dtype == dtype
    # Computed in float32: only the result's own rounding for half types.
    rtol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(got.double(), expected.detach(), rtol=rtol, atol=rtol)
    torch.testing.assert_close(leaf.grad.double(), x_ref.grad, rtol=rtol,
                               atol=rtol * x_ref.grad.abs().max().item())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(reduction, gen):
    x, t, instances = _data((2, 3, 6, 7), gen)
    x.requires_grad_()
    weight = torch.tensor([0.5, 2.0, 1.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda v: segloss.shape_aware_loss(v, t, instances=instances, weight=weight,
                                           ignore_index=IGNORE, reduction=reduction), (x,))
    w = _numpy_weight_map(instances).double()
    assert torch.autograd.gradcheck(
        lambda v: segloss.shape_aware_loss(v, t, w, ignore_index=IGNORE, reduction=reduction),
        (x,))
    x3, t3, instances3 = _data((1, 2, 3, 4, 5), gen)
    assert torch.autograd.gradcheck(
        lambda v: segloss.shape_aware_loss(v, t3, instances=instances3, ignore_index=IGNORE,
                                           reduction=reduction), (x3.requires_grad_(),))


def test_weight_map_and_class_weights_are_constants(gen):
    x, t, instances = _data((2, 3, 6, 7), gen)
    w = _numpy_weight_map(instances).double().requires_grad_()
    x.requires_grad_()
    segloss.shape_aware_loss(x, t, w, ignore_index=IGNORE).backward()
    assert w.grad is None and x.grad is not None
    weight = torch.ones(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="gradient with respect to weight is not implemented"):
        segloss.shape_aware_loss(x, t, w, weight=weight, ignore_index=IGNORE)


def test_opcheck(gen, device):
    x, t, instances = _data((2, 3, 6, 7), gen, dtype=torch.float32, device=device)
    w = _numpy_weight_map(instances).to(device)
    weight = torch.tensor([0.5, 2.0, 1.5], device=device)
    x.requires_grad_()
    torch.library.opcheck(op.default, (x, t, None),
                          {"instances": instances, "balanced": True, "weight": weight,
                           "ignore_index": IGNORE, "reduction": "weighted_mean"})
    for reduction in REDUCTIONS:
        torch.library.opcheck(kernel.default, (x, t, w, weight, IGNORE, reduction))
    labels = torch.where(t == IGNORE, 0, t).to(torch.uint8)
    torch.library.opcheck(kernel.default, (x, labels, None, None, -100, "mean"))


def test_torchscript_and_compile(gen, device):
    x, t, instances = _data((2, 3, 12, 13), gen, dtype=torch.float32, device=device)
    weight = torch.tensor([0.5, 2.0, 1.5], device=device)
    module = segloss.nn.ShapeAwareLoss(class_weights="balanced", weight=weight,
                                       ignore_index=IGNORE, reduction="weighted_mean")
    scripted = torch.jit.script(module)
    assert torch.equal(scripted(x, t, instances=instances), module(x, t, instances=instances))

    def loss_fn(x, t, instances):
        return torch.ops.segloss.shape_aware_loss(x, t, instances=instances, balanced=True,
                                                  weight=weight, ignore_index=IGNORE)

    def loss_and_grad(fn, x, t, instances):
        leaf = x.clone().requires_grad_()
        loss = fn(leaf, t, instances)
        loss.backward()
        return loss.detach(), leaf.grad

    for dynamic in (False, True):
        torch._dynamo.reset()
        compiled = torch.compile(loss_fn, fullgraph=True, dynamic=dynamic)
        for shape in ((2, 3, 12, 13), (3, 3, 9, 8)):
            xs, ts, inst = _data(shape, gen, dtype=torch.float32, device=device)
            for got, want in zip(loss_and_grad(compiled, xs, ts, inst),
                                 loss_and_grad(loss_fn, xs, ts, inst)):
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    torch._dynamo.reset()


def test_scripted_module_in_a_fresh_process(tmp_path, gen, device):
    x, t, instances = _data((2, 3, 12, 13), gen, dtype=torch.float32, device=device)
    module = segloss.nn.ShapeAwareLoss(w0=5.0, weight=torch.tensor([1.0, 2.0, 0.5]),
                                       ignore_index=IGNORE).to(device)
    scripted = torch.jit.script(module)
    expected = scripted(x, t, instances=instances)
    scripted.save(str(tmp_path / "loss.pt"))
    torch.save({"x": x.cpu(), "t": t.cpu(), "instances": instances.cpu(),
                "expected": expected.cpu()}, tmp_path / "data.pt")
    run_python(f"""
import sys, torch
torch.ops.load_library({segloss.library_path()!r})
loss = torch.jit.load({str(tmp_path / 'loss.pt')!r}, map_location={device!r})
data = torch.load({str(tmp_path / 'data.pt')!r})
x = data["x"].to({device!r}).requires_grad_()
got = loss(x, data["t"].to({device!r}), instances=data["instances"].to({device!r}))
got.backward()
assert torch.equal(got.detach().cpu(), data["expected"]) and x.grad is not None
assert "segloss" not in sys.modules
""")


def test_module_weight_follows_the_device_and_repr(gen):
    module = segloss.nn.ShapeAwareLoss(weight=[1.0, 2.0, 3.0], ignore_index=7)
    assert "weight" in dict(module.named_buffers())
    assert "ignore_index=7" in repr(module)
    x, t, instances = _data((2, 3, 6, 7), gen, ignored=False)
    w = _numpy_weight_map(instances).double()
    torch.testing.assert_close(
        module(x, t, w), segloss.shape_aware_loss(x, t, w, weight=torch.tensor([1.0, 2.0, 3.0]),
                                                  ignore_index=7))


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced"])
def test_non_contiguous_inputs(layout, gen, device):
    x, t, instances = _data((2, 4, 10, 12), gen, device=device)
    w = _numpy_weight_map(instances).to(device, torch.float64)
    if layout == "channels_last":
        x_in, t_in, w_in = x.to(memory_format=torch.channels_last), t, w
    elif layout == "transposed":
        x_in = x.transpose(2, 3).contiguous().transpose(2, 3)
        t_in, w_in = t.mT.contiguous().mT, w.mT.contiguous().mT
    else:
        big = torch.zeros(2, 8, 10, 24, dtype=x.dtype, device=device)
        big[:, ::2, :, ::2] = x
        x_in = big[:, ::2, :, ::2]
        t_in, w_in = t, w
    assert not x_in.is_contiguous()
    leaf, want_leaf = x_in.clone().requires_grad_(), x.clone().requires_grad_()
    got = segloss.shape_aware_loss(leaf, t_in, w_in, ignore_index=IGNORE)
    want = segloss.shape_aware_loss(want_leaf, t, w, ignore_index=IGNORE)
    got.backward()
    want.backward()
    assert torch.equal(got, want) and torch.equal(leaf.grad, want_leaf.grad)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_label_dtypes(dtype, gen, device):
    x, t, instances = _data((2, 3, 9, 10), gen, device=device)
    w = _numpy_weight_map(instances).to(device, torch.float64)
    ignore = 100  # representable in every dtype
    t = torch.where(t == IGNORE, ignore, t)
    want = segloss.shape_aware_loss(x, t, w, ignore_index=ignore, reduction="none")
    got = segloss.shape_aware_loss(x, t.to(dtype), w, ignore_index=ignore, reduction="none")
    assert torch.equal(got, want)
    # An ignore_index outside the dtype's range matches no label.
    if dtype == torch.uint8:
        clean = torch.where(t == ignore, 0, t)
        torch.testing.assert_close(
            segloss.shape_aware_loss(x, clean.to(dtype), w, ignore_index=-1),
            _reference(x, clean, w, ignore_index=-1))


def test_bool_target_is_two_classes(gen):
    x = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64)
    t = torch.rand(2, 6, 7, generator=gen) > 0.5
    w = torch.rand(2, 6, 7, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(segloss.shape_aware_loss(x, t, w),
                               _reference(x, t.long(), w, ignore_index=-100))


def test_many_classes(gen, device):
    """C = 70: units of fewer pixels than kBlock."""
    x, t, instances = _data((2, 70, 21, 23), gen, device=device)
    w = _numpy_weight_map(instances).to(device, torch.float64)
    for reduction in ("none", "weighted_mean"):
        torch.testing.assert_close(
            segloss.shape_aware_loss(x, t, w, ignore_index=IGNORE, reduction=reduction),
            _reference(x, t, w, reduction=reduction), rtol=1e-12, atol=1e-13)


def test_extreme_logits(device):
    x = torch.tensor([[[1e4], [-1e4], [0.0]]], dtype=torch.float64, device=device)[..., None]
    t = torch.tensor([[[1]]], device=device)
    w = torch.full((1, 1, 1), 2.0, dtype=torch.float64, device=device)
    leaf = x.clone().requires_grad_()
    got = segloss.shape_aware_loss(leaf, t, w, reduction="sum")
    got.backward()
    ref_leaf = x.clone().requires_grad_()
    want = _reference(ref_leaf, t, w, reduction="sum")
    want.backward()
    assert torch.isfinite(got) and torch.equal(got, want)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=0, atol=0)


def test_empty_inputs_and_all_ignored(device):
    for shape in ((0, 3, 8, 8), (2, 3, 0, 8)):
        x = torch.zeros(shape, device=device, requires_grad=True)
        t = torch.zeros((shape[0],) + shape[2:], dtype=torch.int64, device=device)
        loss = segloss.shape_aware_loss(x, t, instances=t)
        assert loss.shape == () and torch.isnan(loss)  # the mean of nothing, as PyTorch
        assert segloss.shape_aware_loss(x, t, instances=t, reduction="weighted_mean") == 0
        assert segloss.shape_aware_loss(x, t, instances=t, reduction="sum") == 0
        none = segloss.shape_aware_loss(x, t, instances=t, reduction="none")
        assert none.shape == t.shape
        segloss.shape_aware_loss(x, t, instances=t, reduction="sum").backward()
        assert x.grad.shape == x.shape
    x = torch.randn(1, 3, 5, 5, device=device, requires_grad=True)
    t = torch.full((1, 5, 5), IGNORE, device=device)
    w = torch.ones(1, 5, 5, device=device)
    assert torch.isnan(segloss.shape_aware_loss(x, t, w, ignore_index=IGNORE))  # as PyTorch
    loss = segloss.shape_aware_loss(x, t, w, ignore_index=IGNORE, reduction="weighted_mean")
    loss.backward()
    assert loss == 0 and torch.equal(x.grad, torch.zeros_like(x))


def test_images_with_zero_or_one_instance(gen, device):
    x = torch.randn(1, 3, 8, 8, generator=gen).to(device)
    t = torch.randint(0, 3, (1, 8, 8), generator=gen).to(device)
    none = torch.zeros(1, 8, 8, dtype=torch.int64, device=device)
    one = none.clone()
    one[0, 2:4, 2:4] = 7
    for instances in (none, one):  # no second instance: the map is w_c = 1
        torch.testing.assert_close(segloss.shape_aware_loss(x, t, instances=instances),
                                   F.cross_entropy(x, t))


def test_same_bits_for_any_thread_count(gen):
    x, t, instances = _data((2, 4, 64, 80), gen, dtype=torch.float32)
    w = _numpy_weight_map(instances)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        leaf = x.clone().requires_grad_()
        loss = segloss.shape_aware_loss(leaf, t, w, ignore_index=IGNORE, reduction="weighted_mean")
        loss.backward()
        results.append((loss.detach(), leaf.grad))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_autocast_computes_in_float32(gen):
    x, t, instances = _data((2, 3, 6, 7), gen, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = segloss.shape_aware_loss(x.bfloat16(), t, instances=instances, ignore_index=IGNORE)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, segloss.shape_aware_loss(
        x.bfloat16().float(), t, instances=instances, ignore_index=IGNORE))


X = torch.zeros(2, 3, 6, 7)
T = torch.zeros(2, 6, 7, dtype=torch.int64)
W = torch.ones(2, 6, 7)


@pytest.mark.parametrize("call, error, match", [
    (lambda: op(X, T.clone().fill_(3), W), IndexError,
     r"class indices in target must lie in \[0, 3\) or equal ignore_index \(-100\)"),
    (lambda: op(X, T.clone().fill_(-1), W), IndexError, "must lie in"),
    (lambda: op(X, T, W, from_logits=False), ValueError, "from_logits=False applies to the binary"),
    (lambda: op(X[:, :1], T, W), ValueError, "needs at least 2 classes"),
    (lambda: op(X, X.long(), W), ValueError, "the binary form takes a float target"),
    (lambda: op(X, T[:, :5], W), ValueError,
     r"target must have shape \[2, 6, 7\] or \[2, 1, 6, 7\] for input of shape \[2, 3, 6, 7\]"),
    (lambda: op(X, T, W[:, :5]), ValueError, r"weight_map must have shape \[2, 6, 7\]"),
    (lambda: op(X, T, instances=T[:, :5]), ValueError, r"instances must have shape \[2, 6, 7\]"),
    (lambda: op(X, T, W, weight=torch.ones(4)), ValueError,
     r"weight \(per-class weights\) must have shape \[3\]"),
    (lambda: op(X, T, W, weight=torch.ones(3, dtype=torch.int64)), TypeError,
     "weight must be a float32"),
    (lambda: op(X, T, W, instances=T), ValueError, "got both"),
    (lambda: op(X, T), ValueError, "got neither"),
    (lambda: op(X[0], T[0], W[0]), ValueError, "2 or 3 spatial dims"),
    (lambda: op(X, T, W, reduction="avg"), ValueError, "reduction must be"),
    (lambda: op(X[:, :1], X[:, :1], W, weight=torch.ones(1)), ValueError,
     "apply to the multi-class form"),
    (lambda: op(X[:, :1], X[:, :1], W, ignore_index=0), ValueError,
     "apply to the multi-class form"),
    (lambda: kernel(X, T.float(), W, None, -100, "mean"), TypeError,
     "target must hold integer class indices"),
    (lambda: kernel(X, T, W, None, -100, "avg"), ValueError,
     "reduction must be 'none', 'mean', 'sum' or 'weighted_mean'"),
    (lambda: torch.ops.segloss._weighted_cross_entropy_backward(
        torch.ones(2), X, T, W, None, -100, "mean", torch.tensor(1.0)), RuntimeError,
     "grad_output must be a 0-dim tensor"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# Each CPU instruction set, selected in a fresh process by SEGLOSS_CPU_ISA:
# every label dtype read in place, with and without class weights.
_ISA_CHILD = r"""
import sys, torch, segloss
cases = torch.load(sys.argv[1])
results = {}
for key, (x, t, w, weight, g) in cases.items():
    x = x.clone().requires_grad_()
    loss = segloss.shape_aware_loss(x, t, w, weight=weight, ignore_index=200, reduction="none")
    loss.backward(g)
    results[key] = (loss.detach(), x.grad)
torch.save(results, sys.argv[2])
"""


@pytest.mark.parametrize("isa", CPU_ISAS)
def test_each_cpu_instruction_set(isa, tmp_path, gen):
    cases = {}
    # 1517 pixels: no multiple of any vector width; C = 3 and 70 (smaller units).
    for shape in [(2, 3, 37, 41), (1, 70, 37, 41)]:
        for dtype in (torch.float32, torch.float64):
            for label_dtype in (torch.uint8, torch.int32, torch.int64):
                for weighted in (False, True):
                    x, t, _ = _data(shape, gen, dtype=dtype, ignored=False)
                    t[torch.rand(t.shape, generator=gen) < 0.2] = 200
                    w = torch.rand(t.shape, generator=gen, dtype=dtype)
                    weight = torch.rand(shape[1], generator=gen, dtype=dtype) if weighted else None
                    g = torch.rand(t.shape, generator=gen, dtype=dtype)
                    cases[f"{shape}-{dtype}-{label_dtype}-{weighted}"] = (
                        x, t.to(label_dtype), w, weight, g)
    torch.save(cases, tmp_path / "cases.pt")
    run_python_with_cpu_isa(isa, _ISA_CHILD, str(tmp_path / "cases.pt"),
                            str(tmp_path / "results.pt"))
    results = torch.load(tmp_path / "results.pt")
    assert results.keys() == cases.keys()
    for key, (x, t, w, weight, g) in cases.items():
        loss, grad = results[key]
        x_ref = x.double().requires_grad_()
        expected = _reference(x_ref, t.long(), w.double(),
                              None if weight is None else weight.double(), ignore_index=200,
                              reduction="none")
        expected.backward(g.double())
        rtol = 1e-5 if x.dtype == torch.float32 else 1e-12
        torch.testing.assert_close(loss.double(), expected.detach(), rtol=rtol, atol=rtol,
                                   msg=lambda m: f"{isa} {key} loss: {m}")
        torch.testing.assert_close(grad.double(), x_ref.grad, rtol=rtol, atol=rtol,
                                   msg=lambda m: f"{isa} {key} grad: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nan_and_inf_logits_propagate_as_in_pytorch(dtype, device):
    x = torch.zeros(1, 3, 1, 6, dtype=dtype, device=device)
    x[0, 0, 0, 0] = float("nan")  # a NaN non-target logit
    x[0, 1, 0, 1] = float("nan")  # a NaN target logit
    x[0, 2, 0, 2] = float("inf")
    x[0, 0, 0, 3] = float("-inf")
    x[0, 2, 0, 4] = float("nan")  # at an ignored pixel: loss 0
    t = torch.tensor([[[1, 1, 0, 1, -100, 2]]], device=device)
    w = torch.ones(1, 1, 6, dtype=dtype, device=device)
    got = segloss.shape_aware_loss(x, t, w, reduction="none")
    want = F.cross_entropy(x, t, reduction="none")
    torch.testing.assert_close(got, want, equal_nan=True)
