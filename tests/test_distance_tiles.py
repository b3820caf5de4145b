"""The CUDA distance kernels' algorithms on the CPU.

* The maps (csrc/core/binary_distance_tiles.h): tests/cpp/
  binary_distance_tiles.cpp runs the kernels' steps tile by tile with the
  host compiler, and its maps must equal the CPU op's bit for bit and SciPy's
  formulas, with every tile form (whole slabs, groups of lines, and lines too
  long for a tile) forced on small images by small tile sizes.
* The two-nearest transform (two_nearest.h's two_nearest_on_line in tiles):
  tests/cpp/two_nearest_tiles.cpp fuzzes its passes against the CPU driver
  and envelope_line, bit for bit.

The CUDA kernels themselves are compared with the CPU ops on a GPU
(test_cuda_equality.py, through scripts/gpu_check)."""

import os
import subprocess

import numpy as np
import pytest
import torch

import segloss
from distance_reference import random_disks
from helpers import compile_host_program
from test_distance_maps import brute_force_other_class, float32_signed, scipy_boundary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "tests", "cpp", "binary_distance_tiles.cpp")
TWO_NEAREST_SOURCE = os.path.join(ROOT, "tests", "cpp", "two_nearest_tiles.cpp")

# (target pixels, largest tile in bytes, the device's opt-in shared memory in
# bytes, global-memory tiles' scratch in bytes): the kernels' own sizes
# (core::kTileTarget, kMaxTileBytes, an H100's or H200's 227 KiB,
# kScratchBytes), then sizes that make small images take groups of lines (a
# slab does not fit), a few lines per group, and no tile in shared memory at
# all (every pass in global-memory tiles of at least one group of lines).
OPTIN_BYTES = 227 << 10
TILE_SIZES = {"kernel": (2048, 40 << 10, OPTIN_BYTES, 256 << 20),
              "groups": (64, 1200, 1200, 256 << 20), "narrow": (8, 400, 400, 800),
              "global": (2048, 16, 16, 600)}


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return compile_host_program(SOURCE, tmp_path_factory.mktemp("tiles"))


def run_tiles(program, tmp_path, masks, kind, state, sizes, sampling=None, with_forms=False):
    """The maps of a stack of masks (images x spatial) through the program
    (and with_forms: each pass's tile form)."""
    masks = np.ascontiguousarray(masks != 0, dtype=np.uint8)
    spatial = masks.shape[1:]
    spacing = [1.0] * len(spatial) if sampling is None else list(sampling)
    source, result = tmp_path / "mask.bin", tmp_path / "maps.bin"
    masks.tofile(source)
    target, max_bytes, optin_bytes, scratch_bytes = TILE_SIZES[sizes]
    forms = subprocess.run([program, kind, state, str(target), str(max_bytes), str(optin_bytes),
                            str(scratch_bytes),
                            str(masks.shape[0]), str(len(spatial))] + [str(s) for s in spatial] +
                           [repr(s) for s in spacing] + [str(source), str(result)],
                           check=True, capture_output=True, text=True).stdout.split()
    maps = np.fromfile(result, np.float32).reshape(masks.shape)
    return (maps, forms) if with_forms else maps


def stacks(rng):
    yield "noise", rng.random((3, 23, 31)) < 0.5
    yield "sparse", rng.random((2, 19, 17)) < 0.05
    yield "dense", rng.random((2, 19, 17)) < 0.95
    yield "disks", np.stack([random_disks((64, 48), 6, rng) > 0 for _ in range(2)])
    yield "empty-full-single", np.stack([np.zeros((15, 11), bool), np.ones((15, 11), bool),
                                         np.pad(np.ones((1, 1), bool), ((5, 9), (3, 7)))])
    # Long runs of one class and lines that pass no border (no search).
    small_object = np.zeros((2, 40, 37), bool)
    small_object[0, 18:21, 30:33] = True
    small_object[1, 0, 0] = True
    yield "small-object", small_object
    yield "3d-noise", rng.random((2, 7, 9, 11)) < 0.3
    yield "3d-disks", np.stack([random_disks((20, 18, 16), 3, rng) > 0 for _ in range(2)])
    ball = np.zeros((1, 24, 22, 20), bool)
    ball[0, 10:13, 9:12, 12:15] = True
    yield "3d-small-object", ball
    yield "1d", rng.random((3, 40)) < 0.5
    yield "4d", rng.random((2, 4, 5, 3, 6)) < 0.5


@pytest.mark.parametrize("sizes", list(TILE_SIZES))
@pytest.mark.parametrize("state", ["float", "double"])
def test_tiled_maps_equal_the_cpu_op_and_scipy(program, tmp_path, sizes, state):
    rng = np.random.default_rng(5)
    for name, masks in stacks(rng):
        mask = torch.from_numpy(masks)
        dims = masks.ndim - 1
        signed = run_tiles(program, tmp_path, masks, "signed", state, sizes)
        boundary = run_tiles(program, tmp_path, masks, "boundary", state, sizes)
        np.testing.assert_array_equal(
            signed, segloss.signed_distance_map(mask, spatial_dims=dims).numpy(), name)
        np.testing.assert_array_equal(
            boundary, segloss.boundary_distance_map(mask, spatial_dims=dims).numpy(), name)
        for image, s, b in zip(masks, signed, boundary):
            np.testing.assert_array_equal(s, float32_signed(image), name)
            np.testing.assert_array_equal(b, scipy_boundary(image).astype(np.float32), name)


@pytest.mark.parametrize("sizes", ["kernel", "narrow", "global"])
def test_tiled_maps_with_sampling(program, tmp_path, sizes):
    # Anisotropic spacing takes double states; every value is the minimum of
    # the same rounded parabolas as the CPU's (its envelope's choice on long
    # runs may round differently in the last bits).
    rng = np.random.default_rng(6)
    for sampling, masks in (([0.7, 1.9], rng.random((2, 19, 23)) < 0.4),
                            ([1.3, 0.6, 2.2], rng.random((1, 8, 11, 9)) < 0.3)):
        boundary = run_tiles(program, tmp_path, masks, "boundary", "double", sizes, sampling)
        expected = segloss.boundary_distance_map(torch.from_numpy(masks),
                                                 spatial_dims=masks.ndim - 1,
                                                 sampling=sampling).numpy()
        np.testing.assert_allclose(boundary, expected, rtol=1e-6, atol=0)
        for image, b in zip(masks, boundary):
            np.testing.assert_allclose(b, brute_force_other_class(image, sampling), rtol=1e-6)


@pytest.mark.parametrize("shape, sizes, state, forms", [
    # A 96 x 330 slab is 124 KiB of floats: the first pass takes groups.
    ((96, 330), "kernel", "float", ["groups", "slabs"]),
    ((96, 330), "kernel", "double", ["groups", "slabs"]),
    ((30, 45), "kernel", "float", ["slabs", "slabs"]),
    ((30, 45), "groups", "float", ["groups", "slabs"]),
    ((30, 45), "narrow", "double", ["global", "slabs"]),  # 30 x 4 doubles > 400 bytes
    ((30, 45), "global", "float", ["global", "global"])])
def test_tile_forms_are_taken_as_sized(program, tmp_path, shape, sizes, state, forms):
    rng = np.random.default_rng(7)
    masks = rng.random((2,) + shape) < 0.5
    maps, taken = run_tiles(program, tmp_path, masks, "boundary", state, sizes, with_forms=True)
    assert taken == forms
    np.testing.assert_array_equal(maps, segloss.boundary_distance_map(torch.from_numpy(masks)))


@pytest.mark.parametrize("shape, state, forms", [
    # The README's lengths at the kernels' sizes on an H100 or H200: across
    # lines, 40 KiB tiles hold lines of up to 1,203 pixels and the 227 KiB
    # opt-in up to 6,835; along the last axis, 9,635 and 54,691 floats
    # (4,817 and 27,345 doubles).
    ((1203, 9), "float", ["groups", "slabs"]),
    ((1204, 9), "float", ["optin-slabs", "slabs"]),  # a whole slab fits the opt-in
    ((1204, 9), "double", ["optin-slabs", "slabs"]),
    ((1204, 64), "float", ["optin-groups", "slabs"]),
    ((6835, 9), "double", ["optin-groups", "slabs"]),
    ((6836, 9), "float", ["global", "slabs"]),
    ((9635,), "float", ["slabs"]),
    ((9636,), "float", ["optin-slabs"]),
    ((54691,), "float", ["optin-slabs"]),
    ((54692,), "float", ["global"]),
    ((4817,), "double", ["slabs"]),
    ((4818,), "double", ["optin-slabs"]),
    ((27346,), "double", ["global"])])
def test_long_lines_take_optin_then_global_memory(program, tmp_path, shape, state, forms):
    rng = np.random.default_rng(8)
    masks = rng.random((1,) + shape) < 0.01
    maps, taken = run_tiles(program, tmp_path, masks, "boundary", state, "kernel",
                            with_forms=True)
    assert taken == forms
    np.testing.assert_array_equal(maps, segloss.boundary_distance_map(
        torch.from_numpy(masks), spatial_dims=len(shape)))


@pytest.mark.parametrize("seed, sanitize", [(1, False), (2, True)],
                         ids=["seed1", "seed2-sanitizers"])
def test_tiled_maps_fuzz(program, tmp_path, seed, sanitize):
    # 3000 random stacks (1-4 dims, noise and boxes of every density, random
    # tile sizes, float and double states, shared- and global-memory tiles)
    # against the CPU driver, bit for bit, and on small images a brute-force
    # minimum: inside the program; once under ASan and UBSan (a search
    # reading past its tile's line would be a silent wrong read on the GPU).
    if sanitize:
        program = compile_host_program(SOURCE, tmp_path, sanitize=True)
    trials = "1500" if sanitize else "3000"
    result = subprocess.run([program, "fuzz", trials, str(seed)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"ok {trials}", (
        result.stdout + result.stderr)


@pytest.fixture(scope="module")
def two_nearest_program(tmp_path_factory):
    return compile_host_program(TWO_NEAREST_SOURCE, tmp_path_factory.mktemp("two_nearest"))


@pytest.mark.parametrize("seed, sanitize", [(1, False), (2, False), (3, True)],
                         ids=["seed1", "seed2", "seed3-sanitizers"])
def test_two_nearest_tile_passes_equal_the_cpu_driver(two_nearest_program, tmp_path, seed,
                                                      sanitize):
    # Random lines (the search against envelope_line and pass 0's scan) and
    # random label batches through the kernels' passes with random tile sizes
    # (every form), against the CPU driver, bit for bit, ids included; once
    # under ASan and UBSan (a search reading past its tile's line would be
    # a silent wrong read on the GPU).
    program = two_nearest_program
    if sanitize:
        program = compile_host_program(TWO_NEAREST_SOURCE, tmp_path, sanitize=True)
    trials = "1500" if sanitize else "3000"
    result = subprocess.run([program, "fuzz", trials, str(seed)], capture_output=True, text=True)
    lines = result.stdout.split("\n")
    assert result.returncode == 0 and lines[0] == "ok", result.stdout + result.stderr
    forms = [int(word) for word in lines[1].split()[0:8:2]]  # slabs, groups, global, opt-in
    assert min(forms) > 100, lines[1]


@pytest.mark.parametrize("shape, forms", [
    # The README's lengths at the kernels' sizes on an H100 or H200: lines
    # of up to 1,249 pairs fit 40 KiB tiles and up to 7,097 the opt-in.
    ((1249, 3), (1, 1, 0, 0)),
    ((1250, 3), (1, 0, 0, 1)),
    ((7097,), (0, 0, 0, 1)),
    ((7098, 2), (1, 0, 1, 0))])
def test_two_nearest_long_lines_take_optin_then_global_memory(two_nearest_program, shape, forms):
    result = subprocess.run([two_nearest_program, "kernel-sizes", "5"] + [str(s) for s in shape],
                            capture_output=True, text=True)
    lines = result.stdout.split("\n")
    assert result.returncode == 0 and lines[0] == "ok", result.stdout + result.stderr
    assert tuple(int(word) for word in lines[1].split()[0:8:2]) == forms, lines[1]
