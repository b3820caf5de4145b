"""The float32 elementary functions of csrc/core (exp, log, log1p, sigmoid,
log-sigmoid) within the accuracy budget (4 ulp of the float32 result), against
the C library's double versions rounded to float32: tests/cpp/float_math_error.cpp,
built here with the host compiler and run over every 97th float32 of each
function's range. The full sweep (every float32) is the same program with
stride 1: `c++ -O2 -std=c++17 -ffp-contract=off tests/cpp/float_math_error.cpp
-o /tmp/fme && /tmp/fme 1` (about 7 minutes on one core)."""

import os
import subprocess

import pytest

from helpers import compile_host_program

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "tests", "cpp", "float_math_error.cpp")
BUDGET_ULP = 4.0  # the project's accuracy budget for float32 per-element math
STRIDE = 97  # a prime: every exponent, varied mantissas


@pytest.fixture(scope="module")
def errors(tmp_path_factory):
    binary = compile_host_program(SOURCE, tmp_path_factory.mktemp("float_math"))
    out = subprocess.run([binary, str(STRIDE)], check=True, capture_output=True,
                         text=True).stdout
    table = {}
    for line in out.splitlines():
        name, checked, max_error, worst = line.split()
        table[name] = (int(checked), float(max_error), float(worst))
    return table


@pytest.mark.parametrize("name", ["exp", "exp_nonpositive", "one_minus_exp", "log", "log1p",
                                  "log1p_unit", "sigmoid", "log_sigmoid"])
def test_within_the_ulp_budget(errors, name):
    checked, max_error, worst = errors[name]
    assert checked > 10_000_000
    assert max_error <= BUDGET_ULP, f"{name}: {max_error} ulp at {worst}"
