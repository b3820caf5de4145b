"""The distance transform and the U-Net weight give the same bits on CPU and
GPU: their double arithmetic is rounded per operation, never fused into a
multiply-add (csrc/core/rounding.h).

* Pinned results: with single-pixel instances every squared distance is
  ((s0 di)^2 + (s1 dj)^2) + (s2 dk)^2 rounded after each operation, which
  NumPy computes independently (it never fuses); the ops must give exactly
  those bits on every device. The data is chosen so that a fused
  multiply-add changes many of them (counted with exact rational arithmetic),
  so a contracting build fails here.
* The weight map against the float64 formula, to 1 float32 ulp (segloss's
  exp and NumPy's differ by up to 2 ulp of a double; the float32 rounding
  hides that except next to a rounding boundary). Where the border term is
  too small to change the weight, its exp is skipped: a C++ program checks
  that every skip gives the bits the addition would (tests/cpp/
  unet_weight_skip.cpp).
* The PTX that nvcc makes of the core's distance and weight code has no fma
  instruction (skipped where nvcc is absent); a control expression shows the
  grep finds one where nvcc does contract.
"""

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import segloss
from distance_reference import brute_force_squared, unet_weight_formula
from helpers import compile_host_program

CORE = Path(__file__).resolve().parents[1] / "csrc" / "core"

CASES = {
    "2d": dict(shape=(41, 53), sampling=(1.0, 1.3), points=[(7, 11), (30, 44)]),
    "3d": dict(shape=(13, 15, 17), sampling=(0.7, 1.3, 1.1), points=[(2, 3, 4), (10, 12, 9)]),
}


def _single_pixel_instances(shape, points, ids=(7, 9)):
    labels = np.zeros((1,) + shape, np.int64)
    for i, point in zip(ids, points):
        labels[(0,) + point] = i
    return labels


def _fused_differs(shape, sampling, point) -> int:
    """How many pixels' squared distance to `point` a fused multiply-add in the
    last pass (base + offset * offset rounded once) would change."""
    coords = np.indices(shape).reshape(len(shape), -1).T
    changed = 0
    for pixel in coords:
        offsets = [float(s * (c - p)) for s, c, p in zip(sampling, pixel, point)]
        base = 0.0
        for o in offsets[:-1]:
            base = base + o * o
        unfused = base + offsets[-1] * offsets[-1]
        fused = float(Fraction(base) + Fraction(offsets[-1]) ** 2)  # correctly rounded
        changed += fused != unfused
    return changed


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_distances_are_unfused_sums(case, device):
    shape, sampling, points = CASES[case]["shape"], CASES[case]["sampling"], CASES[case]["points"]
    labels = _single_pixel_instances(shape, points)
    d1, d2, l1, l2 = torch.ops.segloss.two_nearest_distances(
        torch.from_numpy(labels).to(device), list(sampling), True)
    ids, squared = brute_force_squared(labels[0], sampling)  # unfused, axis by axis
    distance = dict(zip(ids.tolist(), np.sqrt(squared)))
    l1, l2 = l1[0].cpu().numpy(), l2[0].cpu().numpy()
    assert set(np.unique(l1)) == {7, 9} and np.all(l1 != l2)
    want1 = np.where(l1 == 7, distance[7], distance[9])
    want2 = np.where(l2 == 7, distance[7], distance[9])
    np.testing.assert_array_equal(d1[0].cpu().numpy(), want1)
    np.testing.assert_array_equal(d2[0].cpu().numpy(), want2)
    # The test's power: a fused last pass would change this many values.
    assert _fused_differs(shape, sampling, points[0]) > 0.01 * np.prod(shape)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("sigma", [0.3, 2.0, 25.0])
def test_weight_map_to_one_float32_ulp(case, sigma, device):
    shape, sampling, points = CASES[case]["shape"], CASES[case]["sampling"], CASES[case]["points"]
    labels = _single_pixel_instances(shape, points)
    got = segloss.unet_weight_map(torch.from_numpy(labels).to(device), w0=7.5, sigma=sigma,
                                  sampling=list(sampling)).cpu().numpy()[0]
    _, squared = brute_force_squared(labels[0], sampling)
    d = np.sort(np.sqrt(squared), axis=0)
    want = unet_weight_formula(labels[0], d[0], d[1], w0=7.5, sigma=sigma).astype(np.float32)
    np.testing.assert_array_max_ulp(got, want, maxulp=1)


def test_skipped_border_terms_would_not_change_the_weight(tmp_path):
    # Random weights, w0 and exponents, three in four within 1e-6 of the
    # skip's bound: wherever border_term_is_negligible says so, adding the
    # term must give the weight back, bit for bit.
    source = Path(__file__).resolve().parent / "cpp" / "unet_weight_skip.cpp"
    program = compile_host_program(str(source), tmp_path)
    result = subprocess.run([program, "1000000", "7"], capture_output=True, text=True)
    lines = result.stdout.split("\n")
    assert result.returncode == 0 and lines[0] == "ok", result.stdout + result.stderr
    words = lines[1].split()  # "S skipped, N near the bound"
    skipped, near_bound = int(words[0]), int(words[2])
    assert skipped > 100_000 and near_bound > 100_000, lines[1]


_PTX_SOURCE = r"""
#include "binary_distance_tiles.h"
#include "two_nearest.h"
#include "unet_weight.h"
using namespace segloss::core;
extern "C" __global__ void scan(const long long* labels, int64_t n, double spacing,
                                NearestPair* out) {
  scan_line([&](int64_t i) { return InstanceId(labels[i]); }, n, spacing, out, 1);
}
extern "C" __global__ void envelope(NearestPair* line, int64_t n, double spacing,
                                    bool integer_keys, double* base, InstanceId* ids,
                                    EnvelopePiece* scratch) {
  const LineCandidates candidates{base, base + 2 * n, ids};
  gather_line(line, 1, n, spacing, candidates);
  envelope_line(candidates, n, spacing, integer_keys, scratch, StridedPairs{line, 1});
}
extern "C" __global__ void search(const NearestPair* line, int64_t n, double spacing,
                                  bool one_id, const double* floors,
                                  const LineIdRange* block_ids, NearestPair* out) {
  out[threadIdx.x] = two_nearest_on_line(line + threadIdx.x, 1, threadIdx.x, n, spacing, one_id,
                                         floors, block_ids);
}
extern "C" __global__ void search_floors(const NearestPair* line, double spacing, double* out) {
  out[threadIdx.x] = position_floor(line[threadIdx.x], threadIdx.x, key_scale(spacing));
}
extern "C" __global__ void map_search(const double* line, int64_t n, double spacing,
                                      const double* floors, double* out) {
  out[threadIdx.x] = nearest_on_line(line + threadIdx.x, 1, threadIdx.x, n, spacing, floors);
}
extern "C" __global__ void weight(const NearestPair* pairs, const float* pixel, float* out,
                                  UnetWeightParams params, ClassWeights classes) {
  out[threadIdx.x] = unet_weight(pairs[threadIdx.x], pixel, classes, params);
}
extern "C" __global__ void control(const double* a, double* out) { out[0] = a[0] + a[1] * a[1]; }
"""


def _fma_per_kernel(ptx: str) -> dict:
    counts, name = {}, None
    for line in ptx.splitlines():
        if ".entry" in line:
            name = line.split(".entry")[1].strip().split("(")[0]
            counts[name] = 0
        elif name is not None and "fma." in line:
            counts[name] += 1
    return counts


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_core_ptx_has_no_fused_multiply_add(tmp_path):
    source = tmp_path / "core.cu"
    source.write_text(_PTX_SOURCE)
    ptx = tmp_path / "core.ptx"
    subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-O3", "-std=c++17", "--expt-relaxed-constexpr",
                    f"-I{CORE}", str(source), "-o", str(ptx)],
                   check=True, capture_output=True, timeout=300)
    counts = _fma_per_kernel(ptx.read_text())
    assert counts["control"] >= 1, counts  # nvcc does contract a + b * b by default
    probes = ["scan", "envelope", "search", "search_floors", "map_search", "weight"]
    assert all(counts[name] == 0 for name in probes), counts
