"""The torch ops two_nearest_distances and unet_weight_map: per image equal to
segloss.numpy (itself checked against brute force in test_distance_numpy.py)
and to the brute-force reference, on every device; Meta kernels, opcheck,
TorchScript, torch.compile, determinism, errors."""

import numpy as np
import pytest
import torch
import torch._dynamo

import segloss
import segloss.numpy as snp
from distance_reference import (brute_force_squared, distance_of_ids, random_disks,
                                random_pixels, two_nearest_from, unet_weight_formula,
                                voronoi_partition)
from helpers import run_python

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

two_nearest_op = torch.ops.segloss.two_nearest_distances
weight_map_op = torch.ops.segloss.unet_weight_map

TORCH_INTEGER_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
                        torch.uint16, torch.uint32, torch.uint64]


def _batch(shape, count=3, seed=0):
    """A batch of instance maps: disks, touching cells, an empty image."""
    rng = np.random.default_rng(seed)
    images = [random_disks(shape, 6, rng), voronoi_partition(shape, 5, rng, gaps=True),
              np.zeros(shape, np.int64)][:count]
    return np.stack(images)


def _numpy_per_image(labels: np.ndarray, sampling=None):
    results = [snp.two_nearest_distances(image, sampling, return_labels=True) for image in labels]
    return [np.stack([r[k] for r in results]) for k in range(4)]


@pytest.mark.parametrize("shape", [(17, 23), (7, 9, 11)], ids=["2d", "3d"])
@pytest.mark.parametrize("sampling", [None, "anisotropic"])
def test_two_nearest_equals_numpy_and_brute_force(shape, sampling, device):
    labels = _batch(shape)
    spacing = None if sampling is None else [0.5 + 0.4 * d for d in range(len(shape))]
    d1, d2, l1, l2 = segloss.two_nearest_distances(torch.from_numpy(labels).to(device), spacing,
                                                   return_labels=True)
    assert d1.device.type == device and d1.dtype == torch.float64 and l1.dtype == torch.int64
    expected = _numpy_per_image(labels, spacing)
    for got, want in zip((d1, d2, l1, l2), expected):
        np.testing.assert_array_equal(got.cpu().numpy(), want)
    for n, image in enumerate(labels):
        ids, squared = brute_force_squared(image, spacing)
        e1, e2 = two_nearest_from(np.sqrt(squared), image.shape)
        np.testing.assert_allclose(d1[n].cpu().numpy(), e1, rtol=1e-12 if spacing else 0, atol=0)
        np.testing.assert_allclose(d2[n].cpu().numpy(), e2, rtol=1e-12 if spacing else 0, atol=0)


def test_second_distance_never_below_the_first(device):
    # With sampling the two nearest are ranked by their exact keys and each
    # distance is rounded on its own, so at near-ties the second's value can
    # come out an ulp below the first's (11 of 87,840 pixels of these images
    # before d2 was raised to d1 there); the outputs keep d1 <= d2, and d2
    # stays within an ulp or two of the distance to its own instance.
    rng = np.random.default_rng(0)
    for trial in range(40):
        shape = [(37, 53), (11, 13, 17)][trial % 2]
        labels = (random_pixels(shape, 30, 10, rng) if trial % 4 < 2
                  else random_disks(shape, 8, rng))
        sampling = [float(rng.choice([0.1, 1 / 3, 2.5, 0.7, 1.3])) for _ in shape]
        d1, d2, l1, l2 = snp.two_nearest_distances(labels, sampling, return_labels=True)
        assert np.all(d1 <= d2), trial
        ids, squared = brute_force_squared(labels, sampling)
        own = distance_of_ids(np.sqrt(squared), ids, l2)
        found = l2 != 0
        np.testing.assert_array_max_ulp(d2[found], own[found], maxulp=2)
        got = segloss.two_nearest_distances(torch.from_numpy(labels[None]).to(device), sampling)
        np.testing.assert_array_equal(got[0][0].cpu().numpy(), d1)
        np.testing.assert_array_equal(got[1][0].cpu().numpy(), d2)


@pytest.mark.parametrize("dtype", TORCH_INTEGER_DTYPES, ids=str)
def test_every_integer_dtype(dtype, device):
    labels = np.zeros((2, 11, 13), np.int64)
    labels[0, 2, 3], labels[0, 8, 10], labels[1, 5, 5] = 1, 100, 127
    tensor = torch.from_numpy(labels).to(dtype)
    d1, d2, l1, l2 = two_nearest_op(tensor.to(device), None, True)
    assert l1.dtype == dtype
    expected = _numpy_per_image(labels)
    np.testing.assert_array_equal(d1.cpu().numpy(), expected[0])
    np.testing.assert_array_equal(d2.cpu().numpy(), expected[1])
    np.testing.assert_array_equal(l1.cpu().to(torch.int64).numpy(), expected[2])
    np.testing.assert_array_equal(l2.cpu().to(torch.int64).numpy(), expected[3])


@pytest.mark.parametrize("layout", ["transposed", "strided", "expanded-batch"])
def test_non_contiguous_labels(layout, device):
    labels = torch.from_numpy(_batch((12, 16))).to(device)
    if layout == "transposed":
        view = labels.transpose(1, 2).contiguous().transpose(1, 2)
    elif layout == "strided":
        big = torch.zeros(3, 24, 48, dtype=labels.dtype, device=device)
        big[:, ::2, ::3] = labels
        view = big[:, ::2, ::3]
    else:
        view = labels[:1].expand(3, -1, -1)
        labels = view.contiguous()
    assert not view.is_contiguous()
    for got, want in zip(two_nearest_op(view, None, True), two_nearest_op(labels, None, True)):
        assert torch.equal(got, want)
    assert torch.equal(weight_map_op(view), weight_map_op(labels))


def test_return_labels_false_gives_empty_ids(device):
    labels = torch.from_numpy(_batch((9, 9))).to(device)
    d1, d2, l1, l2 = two_nearest_op(labels)
    assert l1.shape == l2.shape == (0,) and l1.dtype == labels.dtype
    pair = segloss.two_nearest_distances(labels)
    assert len(pair) == 2 and torch.equal(pair[0], d1)


@pytest.mark.parametrize("shape", [(0, 5, 6), (2, 0, 6), (1, 3, 0, 4)])
def test_empty_tensors(shape, device):
    labels = torch.zeros(shape, dtype=torch.int32, device=device)
    d1, d2, l1, l2 = two_nearest_op(labels, None, True)
    assert d1.shape == d2.shape == l1.shape == l2.shape == shape
    assert weight_map_op(labels, balanced=True).shape == shape


def test_weight_map_equals_numpy(device):
    labels = _batch((20, 24))
    tensor = torch.from_numpy(labels).to(device)
    pixel = torch.rand(labels.shape, generator=torch.Generator().manual_seed(1)) + 0.5
    variants = [
        ({}, {}),
        (dict(w0=4.0, sigma=3.0, border_everywhere=True),
         dict(w0=4.0, sigma=3.0, border_everywhere=True)),
        (dict(sampling=[0.8, 1.6]), dict(sampling=[0.8, 1.6])),
        (dict(class_weights="balanced"), dict(class_weights="balanced")),
        (dict(class_weights={0: 0.5, 1: 3.0}), dict(class_weights={0: 0.5, 1: 3.0})),
    ]
    for ours, theirs in variants:
        got = segloss.unet_weight_map(tensor, **ours)
        assert got.dtype == torch.float32 and got.device.type == device
        want = np.stack([snp.unet_weight_map(image, **theirs) for image in labels])
        np.testing.assert_array_equal(got.cpu().numpy(), want, err_msg=str(ours))
    got = segloss.unet_weight_map(tensor, class_weights=pixel.to(device, torch.float64))
    want = np.stack([snp.unet_weight_map(image, class_weights=w.numpy())
                     for image, w in zip(labels, pixel.double())])
    np.testing.assert_array_equal(got.cpu().numpy(), want)


def test_weight_map_formula_3d(device):
    labels = _batch((6, 8, 10), count=2)
    got = segloss.unet_weight_map(torch.from_numpy(labels).to(device), sigma=2.0).cpu().numpy()
    for n, image in enumerate(labels):
        ids, squared = brute_force_squared(image)
        d1, d2 = two_nearest_from(np.sqrt(squared), image.shape)
        np.testing.assert_allclose(got[n], unet_weight_formula(image, d1, d2, sigma=2.0),
                                   rtol=1e-6, atol=0)


def test_deterministic_across_runs_and_threads():
    labels = torch.from_numpy(_batch((64, 48)))
    torch.set_num_threads(1)
    reference = two_nearest_op(labels, [1.0, 0.7], True) + (weight_map_op(labels),)
    for threads in (2, 3):
        torch.set_num_threads(threads)
        for _ in range(2):
            got = two_nearest_op(labels, [1.0, 0.7], True) + (weight_map_op(labels),)
            assert all(torch.equal(a, b) for a, b in zip(got, reference))


@pytest.mark.parametrize("count, shape", [(6, (64, 48)), (1, (300, 70))],
                         ids=["images-in-parallel", "bands-in-parallel"])
def test_thread_layouts_give_identical_bits(count, shape):
    # Six small images run one per thread (at least two per thread) with 2 or 3
    # threads; one image of several bands of rows spreads its bands.
    images = [random_disks(shape, 6 + k, np.random.default_rng(k)) for k in range(count)]
    labels = torch.from_numpy(np.stack(images))
    torch.set_num_threads(1)
    reference = two_nearest_op(labels, [1.0, 0.7], True) + (weight_map_op(labels),)
    expected = _numpy_per_image(labels.numpy(), [1.0, 0.7])
    for got, want in zip(reference, expected):
        np.testing.assert_array_equal(got.numpy(), want)
    for threads in (2, 3):
        torch.set_num_threads(threads)
        got = two_nearest_op(labels, [1.0, 0.7], True) + (weight_map_op(labels),)
        assert all(torch.equal(a, b) for a, b in zip(got, reference))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_equals_cpu_on_a_large_batch():
    labels = torch.from_numpy(np.stack([random_disks((200, 300), 80, np.random.default_rng(s))
                                        for s in range(3)]))
    for got, want in zip(two_nearest_op(labels.cuda(), [1.0, 1.3], True),
                         two_nearest_op(labels, [1.0, 1.3], True)):
        assert torch.equal(got.cpu(), want)
    assert torch.equal(weight_map_op(labels.cuda(), balanced=True).cpu(),
                       weight_map_op(labels, balanced=True))


# --------------------------------------------------------------------------
# Meta, opcheck, TorchScript, torch.compile
# --------------------------------------------------------------------------

def test_meta_shapes():
    labels = torch.empty(2, 5, 6, 7, dtype=torch.int16, device="meta")
    d1, d2, l1, l2 = two_nearest_op(labels, [1.0, 2.0, 3.0], True)
    assert d1.shape == (2, 5, 6, 7) and d1.dtype == torch.float64 and l2.dtype == torch.int16
    assert two_nearest_op(labels)[2].shape == (0,)
    w = weight_map_op(labels, balanced=True)
    assert w.shape == (2, 5, 6, 7) and w.dtype == torch.float32
    with pytest.raises(ValueError, match="sigma must be positive"):
        weight_map_op(labels, sigma=0.0)


@pytest.mark.parametrize("return_labels", [False, True])
def test_opcheck_two_nearest(return_labels, device):
    labels = torch.from_numpy(_batch((10, 12))).to(device)
    torch.library.opcheck(two_nearest_op.default, (labels, [1.0, 0.5], return_labels))


@pytest.mark.parametrize("kwargs", [{}, {"balanced": True}, {"class_weights": [0.5, 2.0]},
                                    {"pixel_weights": "tensor", "border_everywhere": True}],
                         ids=["plain", "balanced", "class-weights", "pixel-weights"])
def test_opcheck_weight_map(kwargs, device):
    labels = torch.from_numpy(_batch((10, 12))).to(device)
    kwargs = dict(kwargs)
    if kwargs.get("pixel_weights") == "tensor":
        kwargs["pixel_weights"] = torch.rand(labels.shape, device=device)
    torch.library.opcheck(weight_map_op.default, (labels,), dict(kwargs, sigma=3.0))


def _scriptable(labels: torch.Tensor):
    d1, d2, l1, l2 = torch.ops.segloss.two_nearest_distances(labels, [1.0, 2.0], True)
    w = torch.ops.segloss.unet_weight_map(labels, w0=5.0, sigma=2.0, balanced=True)
    return d1 + d2, l1, w


def test_torchscript_in_a_fresh_process(tmp_path, device):
    labels = torch.from_numpy(_batch((14, 15))).to(device)
    scripted = torch.jit.script(_scriptable)
    expected = _scriptable(labels)
    for got, want in zip(scripted(labels), expected):
        assert torch.equal(got, want)
    path = tmp_path / "weights.pt"
    scripted.save(str(path))
    torch.save({"labels": labels.cpu(), "expected": [t.cpu() for t in expected]},
               tmp_path / "data.pt")
    run_python(f"""
import sys, torch
torch.ops.load_library({segloss.library_path()!r})
fn = torch.jit.load({str(path)!r})
data = torch.load({str(tmp_path / 'data.pt')!r})
got = fn(data["labels"].to({device!r}))
assert all(torch.equal(g.cpu(), e) for g, e in zip(got, data["expected"]))
assert "segloss" not in sys.modules
""")


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph(dynamic, device):
    torch._dynamo.reset()
    compiled = torch.compile(_scriptable, fullgraph=True, dynamic=dynamic, backend="inductor")
    for shape in [(9, 11), (12, 10)]:
        labels = torch.from_numpy(_batch(shape)).to(device)
        for got, want in zip(compiled(labels), _scriptable(labels)):
            assert torch.equal(got, want)
    torch._dynamo.reset()


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

LABELS = torch.zeros(2, 6, 7, dtype=torch.int64)


@pytest.mark.parametrize("call, error, match", [
    (lambda: two_nearest_op(LABELS.float()), TypeError,
     "two_nearest_distances: labels must be a tensor of integer instance ids.*Float"),
    (lambda: two_nearest_op(LABELS.bool()), TypeError, "binary mask"),
    (lambda: two_nearest_op(LABELS[0, 0]), ValueError,
     r"Tensor\[N, H, W\] or Tensor\[N, D, H, W\].*got 1 dimensions"),
    (lambda: two_nearest_op(LABELS[None, None]), ValueError, "got 5 dimensions"),
    (lambda: two_nearest_op(LABELS, [1.0]), ValueError,
     r"one value per spatial dim of labels \(2\), got 1"),
    (lambda: two_nearest_op(LABELS, [1.0, -1.0]), ValueError,
     "sampling must be positive.*got -1 for spatial dim 1"),
    (lambda: weight_map_op(LABELS, sigma=-1.0), ValueError, "unet_weight_map: sigma must be"),
    (lambda: weight_map_op(LABELS, w0=float("nan")), ValueError, "w0 must be finite"),
    (lambda: weight_map_op(LABELS, balanced=True, class_weights=[1.0, 2.0]), ValueError,
     "at most one of class_weights, balanced=True and pixel_weights"),
    (lambda: weight_map_op(LABELS, class_weights=[1.0]), ValueError,
     r"\[background_weight, foreground_weight\], got 1 values"),
    (lambda: weight_map_op(LABELS, pixel_weights=torch.ones(2, 6, 6)), ValueError,
     r"pixel_weights must have labels' shape \[2, 6, 7\], got \[2, 6, 6\]"),
    (lambda: weight_map_op(LABELS, pixel_weights=torch.ones(2, 6, 7, dtype=torch.int32)),
     TypeError, "pixel_weights must be a float32, float64, float16 or bfloat16 tensor"),
    (lambda: segloss.unet_weight_map(LABELS, class_weights="inverse"), ValueError,
     "class_weights must be None, 'balanced'"),
    (lambda: segloss.unet_weight_map(LABELS, class_weights={3: 1.0}), ValueError, "keys 0"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_pixel_weights_on_another_device():
    with pytest.raises(RuntimeError, match="pixel_weights is on cpu but labels is on cuda"):
        weight_map_op(LABELS.cuda(), pixel_weights=torch.ones(2, 6, 7))
