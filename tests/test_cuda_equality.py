"""The equality sweep: every op (tests/op_cases.py), forward and backward, 2D
and 3D, every floating dtype, odd sizes, class-index targets of several
integer dtypes, and (on a GPU) launches past the grid limits, on the device
under test against a reference.

* cuda: the same op on the CPU in the same dtype. Tolerances:
  - the distance transform and the weight map: bitwise (the same per-line
    passes, or at unit spacing their pixel-parallel form, which gives the
    same pairs: tests/cpp/two_nearest_tiles.cpp; unfused double arithmetic,
    csrc/core/rounding.h);
  - float64: rtol 1e-12, atol 1e-12 x the output's largest magnitude (CUDA's
    exp and log differ from glibc's in the last bit; sums run in another
    order);
  - float32: rtol 2e-6, atol 2e-6 x that magnitude: each side is within 1e-6
    of the float64 result (the suite's float32 tolerance), and nvcc fuses
    multiply-adds in the float polynomials where the baseline CPU build
    cannot (1e-5 for the Dice sums over 16.8 million pixels of one image,
    rounded in float32 in another order on each side);
  - float16 / bfloat16: 2 eps of the dtype (each side rounds a float32
    result to the dtype).
* cpu (this runs in CI, so the sweep's own machinery is tested without a
  GPU): the CPU op in the dtype against the CPU op in float64 on the same
  (rounded) inputs, with the suite's tolerances (helpers.tolerances); the
  distance cases against segloss.numpy image by image, bitwise. The large
  cases are skipped on the CPU.
"""

import pytest
import torch

from helpers import tolerances
from op_cases import OpCase, cases, prepare

CASES = cases()


def _params():
    for case in CASES:
        for dtype in case.dtypes:
            name = case.id if dtype is None else f"{case.id}-{str(dtype).split('.')[1]}"
            yield pytest.param(case, dtype, id=name)


def _device_tolerance(case: OpCase, dtype, expected: torch.Tensor):
    finite = expected[torch.isfinite(expected)]
    scale = max(float(finite.abs().max()) if finite.numel() else 1.0, 1e-30)
    if dtype == torch.float64:
        return 1e-12, 1e-12 * scale
    if dtype == torch.float32:
        return case.float32_rtol, case.float32_rtol * scale
    eps = torch.finfo(dtype).eps
    return 2 * eps, 2 * eps * scale


def _compare(got: dict, want: dict, tolerance, exact: bool, label: str):
    assert got.keys() == want.keys(), (label, got.keys(), want.keys())
    for key in want:
        a, b = got[key].detach().cpu(), want[key].detach().cpu()
        assert a.shape == b.shape, (label, key, a.shape, b.shape)
        if exact:
            assert a.dtype == b.dtype and torch.equal(a, b), f"{label} {key}: not bitwise equal"
            continue
        b = b.to(torch.float64)
        rtol, atol = tolerance(b)
        torch.testing.assert_close(a.to(torch.float64), b, rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m: f"{label} {key}:\n{m}")


def _run(case: OpCase, dtype, device, compute_dtype=None):
    inputs = case.make(torch.Generator().manual_seed(20240601))
    return case.run(prepare(inputs, case.float_inputs, dtype, device, compute_dtype))


@pytest.mark.parametrize("case, dtype", _params())
def test_equals_reference(case: OpCase, dtype, device):
    if device == "cuda":
        got = _run(case, dtype, "cuda")
        want = _run(case, dtype, "cpu")
        _compare(got, want, lambda e: _device_tolerance(case, dtype, e), case.exact, case.id)
        return
    if case.large:
        pytest.skip("launches past the GPU's grid limits: GPU runs only")
    if case.exact:
        inputs = case.make(torch.Generator().manual_seed(20240601))
        got, want = case.run(inputs), case.numpy_reference(inputs)
        _compare(got, {k: v.to(got[k].dtype) for k, v in want.items()}, None, True, case.id)
        return
    if dtype == torch.float64:
        pytest.skip("float64 on the CPU is the reference")
    got = _run(case, dtype, "cpu")
    want = _run(case, dtype, "cpu", compute_dtype=torch.float64)
    _compare(got, want, lambda e: tolerances(dtype, e), False, case.id)


def test_the_sweep_covers_every_op():
    """Every public op and kernel entry is in the table (a new op must be added)."""
    names = " ".join(case.id for case in CASES)
    for op in ("bce-probabilities", "bce-logits", "dice-", "dice_ce-", "_dice_sums-",
               "shape_aware-binary", "shape_aware-multiclass", "_weighted_cross_entropy-",
               "two_nearest-", "unet_weight_map-", "distance_map-signed", "distance_map-boundary"):
        assert op in names, op
    for dims in ("2d", "3d"):
        assert sum(dims in case.id for case in CASES) >= 8, dims
    assert {str(d) for c in CASES for d in c.dtypes if d is not None} == {
        "torch.float32", "torch.float64", "torch.float16", "torch.bfloat16"}
