"""`segloss info`: what it reports (the CPU kernels' instruction set too), and a
reader that stops early (`| head`)."""

import os
import subprocess
import sys

import pytest
import torch

import helpers
from helpers import CPU_ISAS, missing_cpu_flags, run_python, widest_cpu_isa


def test_info_reports_the_build():
    out = subprocess.run([sys.executable, "-m", "segloss", "info"], capture_output=True,
                         text=True, check=True).stdout
    assert f"torch            {torch.__version__}" in out
    assert "segloss CUDA ops" in out and "CPU threads" in out


def test_info_into_a_closed_pipe_is_quiet():
    process = subprocess.Popen([sys.executable, "-m", "segloss", "info"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before anything is written
    stderr = process.stderr.read().decode()
    process.wait()
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


# --------------------------------------------------------------------------
# The instruction set of the CPU kernels (csrc/ops/cpu/isa.cpp), reported by
# segloss info through torch.ops.segloss._cpu_instruction_set; what the CPU
# has is read from /proc/cpuinfo (tests/helpers.py), not from segloss.

def _info(cpu_isa=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SEGLOSS_CPU_ISA"}
    if cpu_isa is not None:
        env["SEGLOSS_CPU_ISA"] = cpu_isa
    return subprocess.run([sys.executable, "-m", "segloss", "info"], capture_output=True,
                          text=True, check=True, env=env)


def _cpu_kernels(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("CPU kernels ")]
    return line.split()[2]


def segloss_isa_in_process(isa: str) -> str:
    """segloss._library.cpu_instruction_set() in a fresh process with SEGLOSS_CPU_ISA=isa."""
    proc = run_python("from segloss._library import cpu_instruction_set\n"
                      "print(cpu_instruction_set())", env_update={"SEGLOSS_CPU_ISA": isa})
    return proc.stdout.strip()


def test_info_reports_the_widest_instruction_set_the_cpu_has():
    assert _cpu_kernels(_info().stdout) == widest_cpu_isa()
    assert _cpu_kernels(_info("").stdout) == widest_cpu_isa()  # empty: no cap


@pytest.mark.parametrize("isa", CPU_ISAS)
def test_info_reports_the_instruction_set_selected_by_the_environment(isa):
    if missing_cpu_flags(isa):
        pytest.skip(f"this CPU lacks {isa}")
    out = _info(isa).stdout
    assert f"CPU kernels      {isa} (SEGLOSS_CPU_ISA={isa})" in out.splitlines()
    assert segloss_isa_in_process(isa) == isa


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_a_cap_the_cpu_lacks_selects_what_it_has(isa):
    if not missing_cpu_flags(isa):
        pytest.skip(f"this CPU has {isa}")
    assert _cpu_kernels(_info(isa).stdout) == widest_cpu_isa()


@pytest.mark.parametrize("value", ["avx-512", "AVX2", "sse4"])
def test_an_unknown_cap_is_ignored_with_a_warning(value):
    proc = _info(value)
    assert _cpu_kernels(proc.stdout) == widest_cpu_isa()
    assert (f"segloss: ignoring SEGLOSS_CPU_ISA='{value}', which is not one of 'baseline', "
            "'avx2' or 'avx512'") in proc.stderr



def test_instruction_set_helper_skips_where_the_cpu_lacks_the_set(monkeypatch):
    # tests/helpers.py's run_python_with_cpu_isa, as on a CPU with AVX2 but
    # no FMA (its /proc/cpuinfo flags faked): the avx2 tests skip, unrun.
    monkeypatch.setattr(helpers, "cpu_flags", lambda: frozenset({"sse2", "avx2"}))
    assert helpers.missing_cpu_flags("avx2") == ["fma"] and helpers.widest_cpu_isa() == "baseline"
    with pytest.raises(pytest.skip.Exception, match="lacks avx2"):
        helpers.run_python_with_cpu_isa("avx2", "raise SystemExit(1)")


def test_instruction_set_helper_fails_when_another_set_ran():
    # A child whose report is not the set asked for fails the test.
    with pytest.raises(AssertionError, match="asked for baseline"):
        helpers.run_python_with_cpu_isa("baseline", "print('segloss CPU kernels: avx512')")
