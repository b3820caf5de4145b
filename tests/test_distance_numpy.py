"""segloss.numpy: two-nearest-instance distances, U-Net weight maps and the plain
distance transform against brute force, SciPy and the weight formula."""

import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy import ndimage

import segloss.numpy as snp
from distance_reference import (balanced_class_weight, brute_force_squared, coins_instances,
                                distance_of_ids, random_disks, random_pixels,
                                scipy_per_instance, two_nearest_from, unet_weight_formula,
                                voronoi_partition)
from helpers import compile_host_program

INTEGER_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                  np.uint64]


def _assert_close(actual, expected, exact):
    assert actual.shape == expected.shape and actual.dtype == np.float64
    assert np.array_equal(np.isinf(actual), np.isinf(expected))
    if exact:
        np.testing.assert_array_equal(actual, expected)
    else:
        finite = np.isfinite(expected)
        np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-12, atol=0)


def check_two_nearest(labels, sampling=None, threads=1, per_instance=None):
    """Our d1, d2, l1, l2 against per-instance distances (brute force unless given)."""
    exact = sampling is None
    if per_instance is None:
        ids, squared = brute_force_squared(labels, sampling)
        per_instance = (ids, np.sqrt(squared))
    ids, distances = per_instance
    d1, d2, l1, l2 = snp.two_nearest_distances(labels, sampling, return_labels=True,
                                               threads=threads)
    e1, e2 = two_nearest_from(distances, labels.shape)
    _assert_close(d1, e1, exact)
    _assert_close(d2, e2, exact)
    # The ids: at their reported distances, distinct, 0 exactly where missing.
    assert l1.dtype == labels.dtype and l2.dtype == labels.dtype
    _assert_close(distance_of_ids(distances, ids, l1), d1, exact)
    _assert_close(distance_of_ids(distances, ids, l2), d2, exact)
    both = (l1 != 0) & (l2 != 0)
    assert not np.any(l1[both] == l2[both])
    np.testing.assert_array_equal(l1 == 0, np.isinf(d1))
    np.testing.assert_array_equal(l2 == 0, np.isinf(d2))
    return d1, d2


def _cases():
    rng = np.random.default_rng(7)
    cases = {}
    for shape in [(23, 31), (9, 10, 11)]:
        nd = f"{len(shape)}d"
        cases[f"disks-{nd}"] = random_disks(shape, 6, rng)
        cases[f"touching-{nd}"] = voronoi_partition(shape, 7, rng)
        cases[f"voronoi-gaps-{nd}"] = voronoi_partition(shape, 7, rng, gaps=True)
        cases[f"single-pixels-{nd}"] = random_pixels(shape, 12, 12, rng)
        cases[f"repeated-ids-{nd}"] = random_pixels(shape, 40, 3, rng)
        cases[f"dense-{nd}"] = random_pixels(shape, int(np.prod(shape)) // 2, 5, rng)
        cases[f"none-{nd}"] = np.zeros(shape, np.int64)
        one = np.zeros(shape, np.int64)
        one[(1,) * len(shape)] = 4
        cases[f"one-{nd}"] = one
        two = one.copy()
        two[tuple(s - 2 for s in shape)] = 9
        cases[f"two-{nd}"] = two
        cases[f"all-one-instance-{nd}"] = np.full(shape, 3, np.int64)
    cases["thin-line"] = random_pixels((1, 40), 5, 3, rng)
    cases["thin-column"] = random_pixels((40, 1), 5, 3, rng)
    cases["single-pixel-image"] = np.array([[5]])
    # A C-shaped instance around another: the nearest id changes back and forth
    # along lines.
    ring = np.zeros((25, 25), np.int64)
    ring[3:22, 3:6] = ring[3:6, 3:22] = ring[19:22, 3:22] = 1
    ring[11:14, 12:15] = 2
    ring[0, 24] = 3
    cases["nested"] = ring
    return cases


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_nearest_exact_unit_spacing(name):
    check_two_nearest(CASES[name])


_ANISOTROPIC = [(name, sampling)
                for name in ["disks-2d", "touching-3d", "voronoi-gaps-2d", "single-pixels-3d",
                             "nested"]
                for sampling in ([(0.7, 1.9), 1.7] if CASES[name].ndim == 2
                                 else [(2.5, 0.3, 1.1), 1.7])]


@pytest.mark.parametrize("name, sampling", _ANISOTROPIC)
def test_two_nearest_anisotropic(name, sampling):
    check_two_nearest(CASES[name], sampling)


@pytest.mark.parametrize("seed", range(30))
def test_two_nearest_random(seed):
    rng = np.random.default_rng(seed)
    ndim = 2 + seed % 2
    shape = tuple(rng.integers(1, 30 if ndim == 2 else 11, ndim))
    labels = np.zeros(shape, np.int64)
    picked = rng.random(shape) < rng.uniform(0.01, 0.5)
    labels[picked] = rng.integers(1, rng.integers(1, 8) + 1, picked.sum())
    sampling = None if seed % 3 else list(rng.uniform(0.3, 3.0, ndim))
    check_two_nearest(labels, sampling, threads=1 + seed % 3)


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
def test_every_integer_dtype_with_extreme_ids(dtype):
    info = np.iinfo(dtype)
    labels = np.zeros((13, 17), dtype)
    labels[2, 3] = info.max
    labels[9, 14] = info.min if info.min < 0 else 1
    labels[5:7, 8:10] = info.max - 1
    labels[11, 1] = -1 if info.min < 0 else 7
    check_two_nearest(labels)


def test_ids_need_not_be_consecutive():
    labels = np.zeros((15, 15), np.int64)
    labels[2, 2], labels[12, 3], labels[7, 13] = 1000, -5, 2**62
    check_two_nearest(labels)


@pytest.mark.parametrize("layout", ["fortran", "transposed", "strided", "negative-stride",
                                    "read-only"])
def test_layouts_and_input_untouched(layout):
    base = CASES["disks-3d"].astype(np.int32)
    expected = snp.two_nearest_distances(np.ascontiguousarray(base))
    if layout == "fortran":
        labels, want = np.asfortranarray(base), base
    elif layout == "transposed":
        labels = np.ascontiguousarray(base.transpose(2, 0, 1)).transpose(1, 2, 0)
        want = base
    elif layout == "strided":
        big = np.zeros((base.shape[0] * 2, base.shape[1], base.shape[2] * 3), np.int32)
        big[::2, :, ::3] = base
        labels, want = big[::2, :, ::3], base
    elif layout == "negative-stride":
        labels = base[::-1, :, ::-1]
        want = np.ascontiguousarray(labels)
        expected = snp.two_nearest_distances(want)
    else:
        labels = base.copy()
        labels.flags.writeable = False
        want = base
    before = labels.copy()
    got = snp.two_nearest_distances(labels)
    np.testing.assert_array_equal(labels, before)
    for a, e in zip(got, expected):
        assert a.flags.c_contiguous
        np.testing.assert_array_equal(a, e)
    np.testing.assert_array_equal(want, np.ascontiguousarray(labels))


def test_outputs_are_separate_writeable_arrays():
    # The outputs are allocated in pairs (the halves of one array, for huge
    # pages); each must still behave as an array of its own.
    labels = np.zeros((6, 7), np.uint16)
    labels[1, 1], labels[4, 5] = 3, 9
    outputs = snp.two_nearest_distances(labels, return_labels=True)
    for out, dtype in zip(outputs, [np.float64, np.float64, np.uint16, np.uint16]):
        assert out.shape == labels.shape and out.dtype == dtype
        assert out.flags.c_contiguous and out.flags.writeable
    expected = [a.copy() for a in outputs]
    for k, out in enumerate(outputs):
        out[...] = 0
        for j in range(len(outputs)):
            if j != k:
                np.testing.assert_array_equal(outputs[j], expected[j])
        out[...] = expected[k]


def test_misaligned_view_is_handled():
    raw = np.zeros(4 * 20 * 20 + 1, np.uint8)
    labels = raw[1:].view(np.int32).reshape(20, 20)  # unaligned
    labels[3, 4], labels[15, 12] = 1, 2
    check_two_nearest(labels)


@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0, 3)])
def test_empty_arrays(shape):
    labels = np.zeros(shape, np.int32)
    d1, d2, l1, l2 = snp.two_nearest_distances(labels, return_labels=True)
    assert d1.shape == d2.shape == l1.shape == l2.shape == shape
    assert snp.unet_weight_map(labels).shape == shape
    assert snp.unet_weight_map(labels, class_weights="balanced").shape == shape


def test_thread_counts_give_identical_bits():
    labels = random_disks((96, 80), 30, np.random.default_rng(3))
    reference = snp.two_nearest_distances(labels, sampling=(0.9, 1.3), return_labels=True)
    for threads in (2, 3, 8):
        got = snp.two_nearest_distances(labels, sampling=(0.9, 1.3), return_labels=True,
                                        threads=threads)
        for a, e in zip(got, reference):
            np.testing.assert_array_equal(a, e)
        np.testing.assert_array_equal(snp.unet_weight_map(labels, threads=threads),
                                      snp.unet_weight_map(labels))


@pytest.fixture(scope="module")
def bands_program(tmp_path_factory):
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpp",
                          "two_nearest_bands.cpp")
    return compile_host_program(source, tmp_path_factory.mktemp("bands"))


@pytest.mark.parametrize("seed", [1, 2])
def test_bands_and_partitions_give_identical_bits(bands_program, seed):
    # The transform cuts images into bands of rows (distance_transform.h);
    # tests/cpp/two_nearest_bands.cpp runs random images with bands of every
    # size and randomly partitioned work against its own default run (bit for
    # bit) and a brute-force minimum.
    result = subprocess.run([bands_program, "fuzz", "3000", str(seed)], capture_output=True,
                            text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


@pytest.mark.parametrize("shape", [(300, 70), (12, 40, 45)], ids=["2d", "3d"])
def test_images_of_several_bands(shape):
    # Large enough for several bands at the library's band size (a band holds
    # about 16384 pixels and at least 8 rows), with threads splitting them.
    labels = random_disks(shape, 20, np.random.default_rng(11))
    check_two_nearest(labels, threads=3, per_instance=scipy_per_instance(labels))


def _child_weight_map(labels, queue):
    queue.put(snp.unet_weight_map(labels, threads=2))


def test_forked_worker_gives_the_same_result():
    labels = random_disks((64, 64), 12, np.random.default_rng(5))
    parent = snp.unet_weight_map(labels, threads=2)  # threads used before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_weight_map, args=(labels, queue))
    child.start()
    result = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(result, parent)


@pytest.mark.parametrize("shape, cells", [((160, 210), 60), ((24, 40, 36), 25)], ids=["2d", "3d"])
def test_larger_images_against_per_instance_scipy(shape, cells):
    labels = random_disks(shape, cells, np.random.default_rng(sum(shape)))
    check_two_nearest(labels, per_instance=scipy_per_instance(labels))
    spacing = (1.3, 0.6) if len(shape) == 2 else (2.0, 0.7, 0.7)
    check_two_nearest(labels, spacing, threads=2,
                      per_instance=scipy_per_instance(labels, sampling=spacing))


def test_coins_watershed_instances():
    pytest.importorskip("skimage")
    labels = coins_instances()
    assert len(np.unique(labels)) > 10
    check_two_nearest(labels, per_instance=scipy_per_instance(labels))
    ids, distances = scipy_per_instance(labels)
    d1, d2 = two_nearest_from(distances, labels.shape)
    expected = unet_weight_formula(labels, d1, d2)
    np.testing.assert_allclose(snp.unet_weight_map(labels), expected, rtol=1e-6)


# --------------------------------------------------------------------------
# Weight maps
# --------------------------------------------------------------------------

def _reference_weights(labels, sampling=None, w0=10.0, sigma=5.0, class_weight=None,
                       border_everywhere=False):
    ids, squared = brute_force_squared(labels, sampling)
    d1, d2 = two_nearest_from(np.sqrt(squared), labels.shape)
    return unet_weight_formula(labels, d1, d2, w0, sigma, class_weight, border_everywhere)


@pytest.mark.parametrize("name", ["disks-2d", "disks-3d", "touching-2d", "voronoi-gaps-3d",
                                  "none-2d", "one-2d", "two-3d", "nested"])
def test_weight_map_defaults(name):
    labels = CASES[name]
    got = snp.unet_weight_map(labels)
    assert got.dtype == np.float32 and got.shape == labels.shape
    np.testing.assert_allclose(got, _reference_weights(labels), rtol=1e-6, atol=0)


def test_weight_map_options():
    labels = CASES["disks-2d"]
    rng = np.random.default_rng(11)
    pixel = rng.uniform(0.5, 2.0, labels.shape)
    variants = [
        (dict(w0=3.0, sigma=2.0), dict(w0=3.0, sigma=2.0)),
        (dict(sampling=(0.5, 1.5)), dict(sampling=(0.5, 1.5))),
        (dict(border_everywhere=True), dict(border_everywhere=True)),
        (dict(class_weights="balanced"), dict(class_weight=balanced_class_weight(labels))),
        (dict(class_weights={0: 0.25, 1: 4.0}),
         dict(class_weight=np.where(labels != 0, 4.0, 0.25))),
        (dict(class_weights={1: 2.0}), dict(class_weight=np.where(labels != 0, 2.0, 1.0))),
        (dict(class_weights=pixel), dict(class_weight=pixel.astype(np.float32).astype(np.float64))),
    ]
    for ours, reference in variants:
        np.testing.assert_allclose(snp.unet_weight_map(labels, **ours),
                                   _reference_weights(labels, **reference), rtol=1e-6, atol=0,
                                   err_msg=str(ours))


def test_balanced_weights_with_one_class_absent():
    # The present class covers every pixel: n / (2 n) = 0.5; no border term.
    for labels in (np.zeros((8, 9), np.int64), np.full((8, 9), 2, np.int64)):
        np.testing.assert_array_equal(snp.unet_weight_map(labels, class_weights="balanced"),
                                      balanced_class_weight(labels).astype(np.float32))
        assert np.all(balanced_class_weight(labels) == 0.5)


# --------------------------------------------------------------------------
# distance_transform_edt: SciPy's result
# --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_distance_transform_edt_equals_scipy(seed):
    rng = np.random.default_rng(100 + seed)
    ndim = 1 + seed % 4
    shape = tuple(rng.integers(1, {1: 60, 2: 40, 3: 12, 4: 6}[ndim], ndim))
    image = (rng.random(shape) < rng.uniform(0.5, 0.99)).astype(
        [np.bool_, np.uint8, np.int64, np.float32][seed % 4])
    sampling = None if seed % 2 else list(rng.uniform(0.2, 4.0, ndim))
    expected = ndimage.distance_transform_edt(image, sampling=sampling)
    got = snp.distance_transform_edt(image, sampling=sampling, threads=1 + seed % 2)
    assert got.dtype == np.float64 and got.shape == expected.shape
    if sampling is None:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("image", [np.ones(5), np.ones((2, 3)), np.ones((3, 4, 2)), np.array(5),
                                   np.zeros((3, 3)), np.array([np.nan, 0.0, 2.0])],
                         ids=["ones-1d", "ones-2d", "ones-3d", "0d", "zeros", "nan"])
@pytest.mark.parametrize("sampling", [None, 1.5])
def test_distance_transform_edt_edge_cases_match_scipy(image, sampling):
    expected = ndimage.distance_transform_edt(image, sampling=sampling)
    got = snp.distance_transform_edt(image, sampling=sampling)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------
# Without torch
# --------------------------------------------------------------------------

_NO_TORCH = textwrap.dedent(r"""
    import sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is hidden in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())
    import numpy as np
    import segloss
    import segloss.numpy as snp

    labels = np.zeros((20, 30), np.int32)
    labels[3:6, 4:8] = 1
    labels[12:15, 20:25] = 2
    d1, d2, l1, l2 = snp.two_nearest_distances(labels, return_labels=True, threads=2)
    w = snp.unet_weight_map(labels, class_weights="balanced")
    e = snp.distance_transform_edt(labels == 0)
    assert segloss.numpy is snp
    assert "torch" not in sys.modules, "torch was imported"
    np.save(sys.argv[1], np.stack([d1, d2, l1, l2, w, e]))
""")


def test_numpy_module_works_without_torch(tmp_path):
    out = tmp_path / "result.npy"
    env = dict(os.environ)
    subprocess.run([sys.executable, "-c", _NO_TORCH, str(out)], check=True, env=env,
                   timeout=120)
    labels = np.zeros((20, 30), np.int32)
    labels[3:6, 4:8] = 1
    labels[12:15, 20:25] = 2
    d1, d2, l1, l2 = snp.two_nearest_distances(labels, return_labels=True)
    expected = np.stack([d1, d2, l1, l2, snp.unet_weight_map(labels, class_weights="balanced"),
                         ndimage.distance_transform_edt(labels == 0)])
    np.testing.assert_array_equal(np.load(out), expected)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

GOOD = np.zeros((6, 7), np.int32)


@pytest.mark.parametrize("call, error, match", [
    (lambda: snp.two_nearest_distances(GOOD.astype(np.float32)), TypeError,
     "labels must be an array of integer instance ids.*float32"),
    (lambda: snp.two_nearest_distances(GOOD.astype(bool)), TypeError, "binary mask"),
    (lambda: snp.two_nearest_distances(np.zeros(5, np.int32)), ValueError,
     r"2D or 3D instance map, got 1 dimensions \(shape \(5,\)\)"),
    (lambda: snp.two_nearest_distances(np.zeros((2, 3, 4, 5), np.int32)), ValueError,
     "got 4 dimensions"),
    (lambda: snp.two_nearest_distances(GOOD, sampling=(1.0,)), ValueError,
     r"one value per axis \(2\), got 1"),
    (lambda: snp.two_nearest_distances(GOOD, sampling=(1.0, 0.0)), ValueError,
     "sampling must be positive.*got 0.0 for axis 1"),
    (lambda: snp.two_nearest_distances(GOOD, sampling=-2), ValueError, "sampling must be positive"),
    (lambda: snp.two_nearest_distances(GOOD, sampling=(1.0, float("nan"))), ValueError,
     "sampling must be positive"),
    (lambda: snp.two_nearest_distances(GOOD, sampling="ab"), TypeError,
     "sampling must be a number or a sequence of numbers, got str"),
    (lambda: snp.two_nearest_distances(GOOD, sampling=[1.0, "x"]), TypeError,
     "sampling must be a number or a sequence of numbers"),
    (lambda: snp.two_nearest_distances(GOOD, threads=0), ValueError, "threads must be"),
    (lambda: snp.unet_weight_map(GOOD, sigma=0), ValueError, "sigma must be positive"),
    (lambda: snp.unet_weight_map(GOOD, sigma=-1), ValueError, "sigma must be positive"),
    (lambda: snp.unet_weight_map(GOOD, w0=float("inf")), ValueError, "w0 must be finite"),
    (lambda: snp.unet_weight_map(GOOD, class_weights="inverse"), ValueError,
     "class_weights must be None, 'balanced'"),
    (lambda: snp.unet_weight_map(GOOD, class_weights={2: 1.0}), ValueError, "keys 0"),
    (lambda: snp.unet_weight_map(GOOD, class_weights=np.ones((6, 6))), ValueError,
     r"labels' shape \(6, 7\)"),
    (lambda: snp.distance_transform_edt(np.ones((3, 3)), sampling=(1, 2, 3)), ValueError,
     r"one value per axis \(2\), got 3"),
    (lambda: snp.distance_transform_edt(np.array([["a", ""], ["b", "c"]])), TypeError,
     r"^segloss\.numpy\.distance_transform_edt: input must be an array of numbers or bools"),
    (lambda: snp.distance_transform_edt(np.zeros(3, "datetime64[s]")), TypeError,
     "numbers or bools.*datetime64"),
    (lambda: snp.distance_transform_edt(np.array([None, 1], dtype=object)), TypeError,
     "numbers or bools.*object"),
    (lambda: snp.distance_transform_edt(np.ones((1,) * 9)), ValueError,
     r"^segloss\.numpy\.distance_transform_edt: input must have 1 to 8 dimensions, got 9"),
    (lambda: snp.signed_distance_map(np.ones((1,) * 9, bool)), ValueError,
     r"^segloss\.numpy\.signed_distance_map: .*got 9"),
    (lambda: snp.unet_weight_map(GOOD, w0=None), TypeError,
     r"^segloss\.numpy\.unet_weight_map: w0 must be a real number, got None"),
    (lambda: snp.unet_weight_map(GOOD, sigma="5"), TypeError, "sigma must be a real number"),
    (lambda: snp.unet_weight_map(GOOD, class_weights={0: None}), TypeError,
     r"class_weights\[0\] must be a real number, got None"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_more_threads_than_allowed_or_startable_give_the_serial_result():
    # Far more threads than the work has chunks (capped at 1024), and a
    # process whose address space has room for only a few thread stacks:
    # the threads the system refuses leave their chunks to the calling
    # thread (this aborted the process before). SciPy is the reference.
    code = textwrap.dedent("""
        import re, resource, sys
        import numpy as np
        from scipy import ndimage
        import segloss.numpy as snp
        mask = np.ones((3000, 48), bool)
        mask[::97, ::13] = False
        labels = (~mask).astype(np.int32)
        labels[::97, ::13] = np.arange(1, mask[::97, ::13].size + 1).reshape(-1, 4)
        expected = ndimage.distance_transform_edt(mask)
        inverted = ~mask  # (the signed map's foreground: the sparse pixels)
        expected_signed = np.where(inverted, -(ndimage.distance_transform_edt(inverted) - 1),
                                   ndimage.distance_transform_edt(~inverted))
        assert np.array_equal(snp.distance_transform_edt(mask, threads=2**40), expected)
        status = open("/proc/self/status").read()
        size = int(re.search(r"VmSize:\\s+(\\d+)", status).group(1)) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + (96 << 20), resource.RLIM_INFINITY))
        assert np.array_equal(snp.distance_transform_edt(mask, threads=1000), expected)
        assert np.array_equal(snp.signed_distance_map(inverted, threads=1000), expected_signed)
        d1, _ = snp.two_nearest_distances(labels, threads=1000)
        assert np.array_equal(d1, expected)
        print("done")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr
