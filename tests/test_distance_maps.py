"""The distance maps of the boundary losses (signed_distance_map,
boundary_distance_map) and the plain transform on the binary sweep.

References: SciPy's distance_transform_edt through the formulas MONAI uses
(BoundaryLoss.compute_distance_map, HausdorffDTLoss.distance_field), MONAI's
own methods, and a brute-force transform (every pixel against every pixel of
the other class, float64)."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

import segloss
import segloss.numpy as snp
from distance_reference import random_disks

try:
    from monai.losses import BoundaryLoss, HausdorffDTLoss
except ImportError:  # MONAI is optional (absent on the GPU machines)
    BoundaryLoss = HausdorffDTLoss = None

needs_monai = pytest.mark.skipif(BoundaryLoss is None, reason="needs MONAI")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

INTEGER_DTYPES = (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                  np.int64, np.uint64)


def scipy_signed(mask, sampling=None):
    """MONAI's signed map in float64: -(edt(m) - 1) inside, edt(~m) outside."""
    m = mask != 0
    if not m.any() or m.all():
        return np.zeros(m.shape)
    return np.where(m, -(ndi.distance_transform_edt(m, sampling) - 1),
                    ndi.distance_transform_edt(~m, sampling))


def scipy_boundary(mask, sampling=None):
    m = mask != 0
    if not m.any() or m.all():
        return np.zeros(m.shape)
    return ndi.distance_transform_edt(m, sampling) + ndi.distance_transform_edt(~m, sampling)


def float32_signed(mask):
    """As MONAI rounds it: the float64 distance to float32, then -(d - 1)."""
    m = mask != 0
    d = scipy_boundary(mask).astype(np.float32)
    return np.where(m, -(d - np.float32(1)), d) if m.any() and not m.all() else d


def brute_force_other_class(mask, sampling=None):
    """Every pixel's distance to the nearest pixel of the other class."""
    m = (mask != 0).reshape(-1)
    spacing = np.ones(mask.ndim) if sampling is None else np.asarray(sampling, float)
    coords = np.indices(mask.shape).reshape(mask.ndim, -1).T * spacing
    out = np.zeros(m.size)
    if m.all() or not m.any():
        return out.reshape(mask.shape)
    for i in range(m.size):
        other = coords[m != m[i]]
        out[i] = np.sqrt(((other - coords[i]) ** 2).sum(1).min())
    return out.reshape(mask.shape)


def _masks(rng):
    yield "noise", rng.random((23, 31)) < 0.5
    yield "sparse", rng.random((19, 17)) < 0.05
    yield "dense", rng.random((19, 17)) < 0.95
    yield "disks", random_disks((64, 48), 6, rng) > 0
    yield "single-pixel", np.pad(np.ones((1, 1), bool), ((5, 9), (3, 7)))
    yield "single-background", ~np.pad(np.ones((1, 1), bool), ((5, 9), (3, 7)))
    yield "empty", np.zeros((6, 7), bool)
    yield "full", np.ones((6, 7), bool)
    yield "3d-noise", rng.random((7, 9, 11)) < 0.3
    yield "3d-disks", random_disks((20, 18, 16), 3, rng) > 0
    yield "1d", rng.random(40) < 0.5
    yield "4d", rng.random((4, 5, 3, 6)) < 0.5


# --------------------------------------------------------------------------
# segloss.numpy


def test_numpy_maps_equal_scipy_formulas_bit_for_bit():
    rng = np.random.default_rng(0)
    for name, mask in _masks(rng):
        np.testing.assert_array_equal(snp.signed_distance_map(mask), scipy_signed(mask), name)
        np.testing.assert_array_equal(snp.boundary_distance_map(mask), scipy_boundary(mask), name)
        if mask.any() and not mask.all():
            np.testing.assert_array_equal(snp.distance_transform_edt(mask),
                                          ndi.distance_transform_edt(mask), name)


def test_numpy_maps_equal_brute_force():
    rng = np.random.default_rng(1)
    for mask in (rng.random((9, 13)) < 0.3, rng.random((5, 6, 7)) < 0.7,
                 random_disks((24, 20), 3, rng) > 0):
        np.testing.assert_array_equal(snp.boundary_distance_map(mask),
                                      brute_force_other_class(mask))
        np.testing.assert_allclose(snp.boundary_distance_map(mask, [0.7, 1.9, 1.3][:mask.ndim]),
                                   brute_force_other_class(mask, [0.7, 1.9, 1.3][:mask.ndim]),
                                   rtol=1e-14)


def test_numpy_maps_runs_on_both_sides_of_the_short_run_bound():
    # A run of at most 32 pixels takes the minimum over its parabolas, a
    # longer one the envelope (core/binary_distance.h): runs of 24 to 42
    # pixels of both classes, along both axes, at the lines' ends and inside.
    rng = np.random.default_rng(4)
    mask = np.zeros((38, 90), bool)
    for row, length in enumerate(range(24, 43)):
        start = [0, 90 - length, int(rng.integers(1, 90 - length))][row % 3]
        mask[2 * row, start:start + length] = True
        mask[2 * row + 1] = rng.random(90) < 0.9
    for m in (mask, ~mask, mask.T, np.ascontiguousarray(~mask.T)):
        np.testing.assert_array_equal(snp.boundary_distance_map(m), brute_force_other_class(m))
        np.testing.assert_array_equal(snp.distance_transform_edt(m), ndi.distance_transform_edt(m))
        # Separable sums round in another order than the brute force's.
        np.testing.assert_allclose(snp.boundary_distance_map(m, [0.7, 1.9]),
                                   brute_force_other_class(m, [0.7, 1.9]), rtol=1e-13)


@pytest.mark.parametrize("length", [4000, 4200])
def test_numpy_maps_long_lines_stay_exact(length):
    # Squared distances up to length^2: the working memory is float below
    # 2^24 (4000^2) and double above (4200^2); both exact.
    mask = np.ones(length, bool)
    mask[0] = False
    mask[length // 3] = False
    np.testing.assert_array_equal(snp.distance_transform_edt(mask),
                                  ndi.distance_transform_edt(mask))
    np.testing.assert_array_equal(snp.boundary_distance_map(mask), scipy_boundary(mask))
    square = np.ones((length // 2, 2), bool)
    square[0, 0] = False
    np.testing.assert_array_equal(snp.signed_distance_map(square), scipy_signed(square))


@pytest.mark.parametrize("sampling", [[0.5, 1.7], [3.0, 0.25], 2.5])
def test_numpy_maps_anisotropic_sampling(sampling):
    rng = np.random.default_rng(2)
    mask = rng.random((31, 27)) < 0.4
    np.testing.assert_allclose(snp.signed_distance_map(mask, sampling),
                               scipy_signed(mask, sampling), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(snp.boundary_distance_map(mask, sampling),
                               scipy_boundary(mask, sampling), rtol=1e-14)
    np.testing.assert_allclose(snp.distance_transform_edt(mask, sampling),
                               ndi.distance_transform_edt(mask, sampling), rtol=1e-14)


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
def test_numpy_maps_every_integer_dtype(dtype):
    rng = np.random.default_rng(3)
    values = rng.integers(0, 3, (15, 18)) * (rng.random((15, 18)) < 0.5)
    mask = values.astype(dtype)  # any nonzero value is foreground
    np.testing.assert_array_equal(snp.signed_distance_map(mask), scipy_signed(values != 0))
    np.testing.assert_array_equal(snp.boundary_distance_map(mask), scipy_boundary(values != 0))


def test_numpy_maps_layouts():
    rng = np.random.default_rng(4)
    base = rng.random((20, 30, 12)) < 0.4
    for view in (np.asfortranarray(base), base[::2, 1::3, ::-1], base.transpose(2, 0, 1),
                 np.broadcast_to(base[:1], (5, 30, 12))):
        np.testing.assert_array_equal(snp.signed_distance_map(view), scipy_signed(view))
        np.testing.assert_array_equal(snp.boundary_distance_map(view), scipy_boundary(view))
    before = base.copy()
    snp.signed_distance_map(base, threads=2)
    np.testing.assert_array_equal(base, before)


def test_numpy_maps_threads_give_the_same_bits():
    mask = random_disks((96, 80), 10, np.random.default_rng(5)) > 0
    for fn in (snp.signed_distance_map, snp.boundary_distance_map, snp.distance_transform_edt):
        np.testing.assert_array_equal(fn(mask, threads=1), fn(mask, threads=3))


def test_numpy_maps_errors():
    with pytest.raises(TypeError, match=r"segloss.numpy.signed_distance_map: mask must be .*"
                                        r"float64.*mask > 0.5"):
        snp.signed_distance_map(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="segloss.numpy.boundary_distance_map: sampling must "
                                         "have one value per axis"):
        snp.boundary_distance_map(np.zeros((3, 3), bool), [1.0])
    with pytest.raises(ValueError, match="segloss.numpy.signed_distance_map: sampling must be "
                                         "positive"):
        snp.signed_distance_map(np.zeros((3, 3), bool), -1.0)
    with pytest.raises(ValueError, match="segloss.numpy.signed_distance_map: mask must have at "
                                         "least one dimension"):
        snp.signed_distance_map(np.bool_(True))


# --------------------------------------------------------------------------
# torch: segloss.signed_distance_map / boundary_distance_map


def _per_image(mask, spatial_dims, fn):
    m = mask.cpu().numpy()
    images = m.reshape((-1,) + m.shape[m.ndim - spatial_dims:])
    return torch.from_numpy(np.stack([fn(image) for image in images]).reshape(m.shape))


@pytest.mark.parametrize("shape, spatial_dims", [((3, 2, 21, 26), None), ((4, 17, 19), None),
                                                 ((2, 3, 7, 9, 11), None), ((2, 7, 9, 11), 3),
                                                 ((5, 30), 1)])
def test_torch_maps_equal_float32_scipy_formulas(shape, spatial_dims, gen):
    mask = torch.rand(shape, generator=gen) < 0.35
    mask[0] = False  # an empty image (or images) ...
    mask[-1] = True  # ... and a full one
    dims = spatial_dims if spatial_dims is not None else (3 if len(shape) == 5 else 2)
    signed = segloss.signed_distance_map(mask, spatial_dims=spatial_dims)
    boundary = segloss.boundary_distance_map(mask, spatial_dims=spatial_dims)
    assert signed.dtype == boundary.dtype == torch.float32 and signed.shape == mask.shape
    torch.testing.assert_close(signed, _per_image(mask, dims, float32_signed), rtol=0, atol=0)
    torch.testing.assert_close(
        boundary, _per_image(mask, dims, lambda m: scipy_boundary(m).astype(np.float32)),
        rtol=0, atol=0)


@needs_monai
@pytest.mark.parametrize("spatial", [(23, 29), (9, 12, 10)])
def test_torch_maps_equal_monai(spatial, gen):
    target = (torch.rand((3, 2) + spatial, generator=gen) < 0.3).float()
    target[1, 0] = 0
    target[2, 1] = 1
    expected = BoundaryLoss().compute_distance_map(target)
    torch.testing.assert_close(segloss.signed_distance_map(target > 0.5), expected, rtol=0, atol=0)
    field = HausdorffDTLoss()
    for c in range(2):  # MONAI's distance_field takes one channel
        torch.testing.assert_close(segloss.boundary_distance_map(target[:, c:c + 1] > 0.5),
                                   field.distance_field(target[:, c:c + 1]), rtol=0, atol=0)


def test_torch_maps_dtypes_layouts_and_sampling(gen):
    base = torch.rand(2, 3, 16, 20, generator=gen) < 0.4
    expected = segloss.signed_distance_map(base)
    for dtype in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        torch.testing.assert_close(segloss.signed_distance_map(base.to(dtype) * 3 if dtype not in
                                                               (torch.bool,) else base),
                                   expected, rtol=0, atol=0)
    wide = torch.rand(2, 3, 16, 40, generator=gen) < 0.4
    view = wide[..., ::2]
    torch.testing.assert_close(segloss.boundary_distance_map(view),
                               segloss.boundary_distance_map(view.contiguous()), rtol=0, atol=0)
    channels_last = base.to(torch.uint8).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(segloss.signed_distance_map(channels_last), expected, rtol=0,
                               atol=0)
    got = segloss.boundary_distance_map(base, sampling=[0.5, 1.5])
    want = _per_image(base, 2, lambda m: scipy_boundary(m, [0.5, 1.5]).astype(np.float32))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    torch.testing.assert_close(segloss.boundary_distance_map(base, sampling=2.0),
                               segloss.boundary_distance_map(base) * 2, rtol=1e-6, atol=0)


def test_torch_maps_empty_tensors():
    for shape in [(0, 2, 5, 5), (2, 0, 5, 5), (2, 1, 0, 5)]:
        out = segloss.signed_distance_map(torch.zeros(shape, dtype=torch.bool))
        assert out.shape == shape and out.dtype == torch.float32


def test_torch_maps_opcheck_meta_and_compile(gen):
    mask = torch.rand(2, 2, 9, 11, generator=gen) < 0.5
    for kind in ("signed", "boundary"):
        torch.library.opcheck(torch.ops.segloss.distance_map, (mask, kind, 2, None))
        torch.library.opcheck(torch.ops.segloss.distance_map, (mask.to(torch.int32), kind, 2,
                                                               [1.0, 2.0]))
    meta = torch.ops.segloss.distance_map(mask.to("meta"), "signed", 2)
    assert meta.shape == mask.shape and meta.dtype == torch.float32

    def fn(m):
        return segloss.signed_distance_map(m) + segloss.boundary_distance_map(m, 1.5)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(mask), fn(mask), rtol=0, atol=0)


def test_torch_maps_script(gen):
    mask = torch.rand(2, 1, 9, 11, generator=gen) < 0.5
    for fn in (segloss.signed_distance_map, segloss.boundary_distance_map):
        scripted = torch.jit.script(fn)
        torch.testing.assert_close(scripted(mask, [1.0, 2.0]), fn(mask, [1.0, 2.0]), rtol=0,
                                   atol=0)
        torch.testing.assert_close(scripted(mask, 2.0, 2), fn(mask, 2.0), rtol=0, atol=0)


def test_torch_maps_scripted_in_fresh_process(tmp_path, gen):
    # A scripted model that calls the op, loaded in a process that imports
    # only the library (as a C++ program or a serving process would).
    class Model(torch.nn.Module):
        def forward(self, mask: torch.Tensor) -> torch.Tensor:
            return segloss.signed_distance_map(mask) + segloss.boundary_distance_map(mask)

    path = tmp_path / "model.pt"
    torch.jit.script(Model()).save(str(path))
    mask = torch.rand(2, 1, 9, 11, generator=gen) < 0.5
    torch.save(mask, tmp_path / "mask.pt")
    expected = Model()(mask)
    code = (f"import torch; torch.ops.load_library({segloss.library_path()!r}); "
            f"m = torch.jit.load({str(path)!r}); x = torch.load({str(tmp_path / 'mask.pt')!r}); "
            f"torch.save(m(x), {str(tmp_path / 'out.pt')!r})")
    subprocess.run([sys.executable, "-c", code], check=True)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, rtol=0, atol=0)


def test_torch_maps_errors():
    with pytest.raises(TypeError, match=r"segloss.signed_distance_map: mask must be a tensor of "
                                        r"bools or integers .*Float.*mask > 0.5"):
        segloss.signed_distance_map(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"segloss.boundary_distance_map: spatial_dims must be "
                                         r"between 1 and the mask's dims \(2"):
        segloss.boundary_distance_map(torch.zeros(4, 4, dtype=torch.bool), spatial_dims=3)
    with pytest.raises(ValueError, match=r"segloss.signed_distance_map: sampling must have one "
                                         r"value per spatial dim \(2\), got 3"):
        segloss.signed_distance_map(torch.zeros(1, 4, 4, dtype=torch.bool), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="segloss.boundary_distance_map: sampling must be "
                                         "positive"):
        segloss.boundary_distance_map(torch.zeros(1, 4, 4, dtype=torch.bool), 0.0)
    with pytest.raises(ValueError, match="segloss.distance_map: kind must be 'signed' or "
                                         "'boundary', got 'plain'"):
        torch.ops.segloss.distance_map(torch.zeros(1, 4, 4, dtype=torch.bool), "plain", 2)
    with pytest.raises(TypeError, match="segloss.signed_distance_map: sampling must be a number"):
        segloss.signed_distance_map(torch.zeros(1, 4, 4, dtype=torch.bool), "x")


# --------------------------------------------------------------------------
# The pointwise rows of the distance losses (core/distance_losses.h)

ROWS = {
    "sigmoid_boundary_loss": lambda x, y, a: torch.sigmoid(x) * a,
    "sigmoid_hausdorff_dt_loss": lambda x, y, a: (torch.sigmoid(x) - y) ** 2 * a,
    "boundary_loss": lambda p, y, a: p * a,
    "hausdorff_dt_loss": lambda p, y, a: (p - y) ** 2 * a,
}


@pytest.mark.parametrize("row", sorted(ROWS))
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_distance_loss_rows_match_float64_formulas(row, reduction, gen):
    x = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64) * 4
    y = (torch.rand(x.shape, generator=gen) > 0.5).double()
    a = torch.randn(x.shape, generator=gen, dtype=torch.float64) * 20
    xr = x.clone().requires_grad_()
    loss = torch.ops.segloss._pointwise_loss(xr, y, None, a, reduction, row, [], "t")
    xe = x.clone().requires_grad_()
    expected = ROWS[row](xe, y, a)
    expected = {"none": expected, "sum": expected.sum(), "mean": expected.mean()}[reduction]
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    g = torch.rand(loss.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(loss, xr, g)[0],
                               torch.autograd.grad(expected, xe, g)[0], rtol=1e-12, atol=1e-12)
    small = (slice(0, 1), slice(0, 1), slice(0, 3), slice(0, 4))
    torch.autograd.gradcheck(
        lambda v: torch.ops.segloss._pointwise_loss(v, y[small], None, a[small], reduction, row,
                                                    [], "t"),
        (x[small].clone().requires_grad_(),))
    torch.library.opcheck(torch.ops.segloss._pointwise_loss,
                          (x.float().requires_grad_(), y.float(), None, a.float(), reduction, row,
                           [], "t"))


def test_distance_loss_rows_half_inputs_keep_float32_weights(gen):
    # A squared distance weight beyond float16's range (65504) stays finite:
    # the operands are read in float32 for half inputs.
    x = torch.randn(2, 1, 8, 8, generator=gen)
    y = (torch.rand(x.shape, generator=gen) > 0.5).float()
    a = torch.full(x.shape, 1e5)
    for dtype in (torch.float16, torch.bfloat16):
        loss = torch.ops.segloss._pointwise_loss(x.to(dtype), y.to(dtype), None, a, "mean",
                                                 "sigmoid_hausdorff_dt_loss", [], "t")
        expected = ((torch.sigmoid(x.to(dtype).float()) - y) ** 2 * a).mean()
        assert torch.isfinite(loss)
        torch.testing.assert_close(loss.float(), expected, rtol=1e-2, atol=0)


def test_distance_loss_rows_require_their_operand(gen):
    x = torch.randn(1, 1, 4, 4, generator=gen)
    with pytest.raises(ValueError, match="distance_weight"):
        torch.ops.segloss._pointwise_loss(x, x, None, None, "mean", "sigmoid_hausdorff_dt_loss",
                                          [], "segloss.hausdorff_dt_loss")
