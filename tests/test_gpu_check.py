"""scripts/gpu_check without a GPU: the no-GPU exit, the commands of a dry
run, installing from a folder of wheels (a tiny wheel built here), the
equality sweep through the script with --device cpu, the stage time limit,
and the summary's parsers (pytest junit XML, compute-sanitizer and
benchmark output)."""

import argparse
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check"


def _load():
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


gpu_check = _load()


def _script(*args, timeout=120, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    proc = _script("--work", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gpu_check: no CUDA GPU" in proc.stdout and "Nothing was checked" in proc.stdout
    assert not (tmp_path / "logs" / "summary.md").exists()


def _tiny_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel (a zip with the dist-info files pip reads)."""
    name = "segloss_tiny_dep-0.1-py3-none-any.whl"
    info = "segloss_tiny_dep-0.1.dist-info"
    files = {
        "segloss_tiny_dep/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: segloss-tiny-dep\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / name, "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
        wheel.writestr(f"{info}/RECORD", record)
    return folder / name


def test_dry_run_prints_every_stage_command(tmp_path):
    wheel = _tiny_wheel(tmp_path / "wheels")
    proc = _script("--dry-run", "--device", "cpu", "--wheels", str(wheel.parent),
                   "--work", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split("]")[0].strip("["): line for line in proc.stdout.splitlines()}
    site = str(tmp_path / "work" / "site")
    assert "pip install --no-index --no-deps" in lines["install"]
    assert f"--target {site}" in lines["install"] and str(wheel) in lines["install"]
    assert "--no-build-isolation" in lines["build"] and str(ROOT) in lines["build"]
    assert "test_cuda_equality.py" in lines["tests"] and "--junitxml" in lines["tests"]
    assert "benchmarks/run.py --device cpu" in lines["bench"]
    assert f"PYTHONPATH={site}" in lines["tests"]


def test_install_stage_installs_the_folder_of_wheels(tmp_path):
    wheel = _tiny_wheel(tmp_path / "wheels")
    work = tmp_path / "work"
    proc = _script("--device", "cpu", "--stages", "install", "--wheels", str(wheel.parent),
                   "--work", str(work))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| install | ok |" in proc.stdout
    check = subprocess.run([sys.executable, "-c", "import segloss_tiny_dep as m; print(m.VALUE)"],
                           capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(work / "site")))
    assert check.stdout.strip() == "42", check.stderr
    assert (work / "logs" / "install.log").exists() and (work / "logs" / "summary.md").exists()


def test_the_sweep_runs_through_the_script_on_the_cpu(tmp_path):
    results = tmp_path / "results"
    proc = _script("--device", "cpu", "--stages", "tests", "--work", str(tmp_path),
                   "--results", str(results),
                   "--pytest", "-k 'bce-logits-2d-mean or two_nearest-2d-int32'", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    per_file = gpu_check.parse_junit(str(tmp_path / "logs" / "junit.xml"))
    assert per_file["test_cuda_equality.py"]["passed"] >= 4, per_file
    assert per_file["test_cuda_equality.py"]["failed"] == 0
    assert "| test_cuda_equality.py |" in proc.stdout
    # Two files for a caller that brings back few: the summary and every log.
    assert sorted(p.name for p in results.iterdir()) == ["logs.tar.gz", "summary.md"]
    with tarfile.open(results / "logs.tar.gz") as archive:
        assert "gpu_check_logs/junit.xml" in archive.getnames()
    assert "| test_cuda_equality.py |" in (results / "summary.md").read_text()


def test_the_benchmark_stage_runs_every_suite_the_distance_ones_first():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert sorted(gpu_check.BENCH_SUITES) == sorted({**run.SUITES, **run.RUNNERS})
    assert gpu_check.BENCH_SUITES[:3] == ["distance", "maps", "distance_losses"]
    args = argparse.Namespace(python="python3", device="cuda", bench_repeats=5, out="out",
                              work="work", time_limit=470)
    command = gpu_check.bench_command(gpu_check.Runner(args))
    suites = [command[k + 1] for k, arg in enumerate(command) if arg == "--suite"]
    assert suites == gpu_check.BENCH_SUITES


def test_a_stage_past_its_time_limit_that_ignores_the_interrupt_is_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "INTERRUPT_GRACE", 1.0)
    log = tmp_path / "stage.log"
    start = time.monotonic()
    code, timed_out = gpu_check.run_logged(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
         "signal.SIG_IGN); print('started', flush=True); time.sleep(60)"],
        str(log), 2.0, dict(os.environ))
    assert timed_out and code == -9 and time.monotonic() - start < 30
    assert "started" in log.read_text() and "timed out" in log.read_text()


def test_tests_past_their_time_limit_are_interrupted_and_still_counted(tmp_path):
    (tmp_path / "test_some.py").write_text(
        "import time, pytest\n"
        "@pytest.mark.parametrize('k', range(5))\n"
        "def test_quick(k): pass\n"
        "def test_slow(): time.sleep(60)\n")
    junit = tmp_path / "junit.xml"
    start = time.monotonic()
    code, timed_out = gpu_check.run_logged(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml",
         str(junit), str(tmp_path / "test_some.py")], str(tmp_path / "tests.log"), 8.0,
        dict(os.environ), cwd=str(tmp_path))
    assert timed_out and code != -9 and time.monotonic() - start < 30
    assert gpu_check.parse_junit(str(junit)) == {
        "test_some.py": {"passed": 5, "failed": 0, "skipped": 0}}


def test_junit_summary_counts_per_file(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_sample.py").write_text(
        "import pytest\n"
        "def test_pass(): pass\n"
        "def test_fail(): assert False\n"
        "@pytest.mark.skip(reason='no')\n"
        "def test_skip(): pass\n"
        "class TestGroup:\n"
        "    @pytest.mark.parametrize('k', [1, 2])\n"
        "    def test_in_class(self, k): pass\n")
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "--junitxml", str(junit), "-o", "junit_family=xunit2", "tests"],
                   cwd=tmp_path, capture_output=True, timeout=120)
    per_file = gpu_check.parse_junit(str(junit))
    assert per_file == {"test_sample.py": {"passed": 3, "failed": 1, "skipped": 1}}
    results = [gpu_check.StageResult("tests", "failed", 12.0, details={"per_file": per_file}),
               gpu_check.StageResult("sanitizer", "ok", 30.0,
                                     details={"memcheck": "0 errors", "racecheck": "0 hazards"}),
               gpu_check.StageResult("bench", "ok", 60.0,
                                     details={"tables": ["| case | segloss ms |", "|---|---|"]})]
    failures = gpu_check.parse_junit_failures(str(junit))
    assert len(failures) == 1 and failures[0].startswith("tests.test_sample::test_fail - ")
    assert "assert False" in failures[0], failures
    results[0].details["failures"] = failures
    summary = gpu_check.format_summary(results, "H200")
    assert "| test_sample.py | 3 | 1 | 1 |" in summary
    assert "## Failed tests\n\n- tests.test_sample::test_fail - " in summary
    # Printed, the tables come first and the verdict last.
    shown = gpu_check.format_bench_tables(results) + gpu_check.format_summary(
        results, "H200", with_bench=False)
    assert shown.index("| case | segloss ms |") < shown.index("| **total** | 3 | 1 | 1 |")
    assert "## Benchmarks" not in gpu_check.format_summary(results, "H200", with_bench=False)
    assert "| **total** | 3 | 1 | 1 |" in summary
    assert "- memcheck: 0 errors" in summary and "| case | segloss ms |" in summary
    assert gpu_check.exit_status(results) == 1
    results[0] = gpu_check.StageResult("tests", "ok", details={"per_file": {
        "test_sample.py": {"passed": 3, "failed": 0, "skipped": 1}}})
    assert gpu_check.exit_status(results) == 0


def test_sanitizer_finding_names_the_first_report_and_the_program_failure():
    memcheck = ("========= COMPUTE-SANITIZER\n"
                "dice-2d-small: loss ()\n"
                "========= Invalid __global__ read of size 4 bytes\n"
                "=========     at dice_partial_sums_kernel(...)+0x1a0\n"
                "=========     by thread (3,0,0) in block (7,0,0)\n"
                "=========     Address 0x7f00 is out of bounds\n"
                "=========\n"
                "Traceback (most recent call last):\n"
                "torch.AcceleratorError: CUDA error: unspecified launch failure\n"
                "========= ERROR SUMMARY: 1 error\n")
    finding = gpu_check.sanitizer_finding(memcheck, 1, False)
    assert finding.startswith("1 error; first: Invalid __global__ read of size 4 bytes / at "
                              "dice_partial_sums_kernel(...)+0x1a0 / by thread (3,0,0)"), finding
    assert finding.endswith("; the program failed: torch.AcceleratorError: CUDA error: "
                            "unspecified launch failure"), finding
    assert gpu_check.sanitizer_finding(
        "========= COMPUTE-SANITIZER\nbce-2d: loss ()\n74 op calls\n"
        "========= ERROR SUMMARY: 0 errors\n", 0, False) == "0 errors"
    assert gpu_check.sanitizer_finding(
        "========= COMPUTE-SANITIZER\nbce-2d: loss ()\ndice-3d: loss ()\n", -9,
        True) == "timed out after dice-3d"


def test_sanitizer_and_benchmark_output_parsers():
    assert gpu_check.parse_sanitizer_log(
        "========= COMPUTE-SANITIZER\nok\n========= ERROR SUMMARY: 0 errors\n") == "0 errors"
    assert gpu_check.parse_sanitizer_log(
        "========= RACECHECK SUMMARY: 2 hazards displayed (2 errors, 0 warnings)\n"
    ) == "2 hazards displayed (2 errors, 0 warnings)"
    assert gpu_check.parse_sanitizer_log(
        "========= Error: Device not supported\n").startswith("could not run: ")
    text = ("bce (vs torch eager)   16x1x512x512   segloss 1.00  reference 2.00\n"
            "wrote /x/bce-time-cuda.json\n\n"
            "bce: NVIDIA H200, torch 2.11, float32, forward+backward, median of 5; time in ms\n"
            "| case | shape | segloss ms |\n|---|---|---|\n| bce | 16x1 | 1.00 |\n"
            "wrote /x/bce-time-cuda.json\n")
    assert gpu_check.parse_bench_log(text) == [
        "bce: NVIDIA H200, torch 2.11, float32, forward+backward, median of 5; time in ms",
        "| case | shape | segloss ms |", "|---|---|---|", "| bce | 16x1 | 1.00 |", ""]
