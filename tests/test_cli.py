"""`segloss info`: what it reports, and a reader that stops early (`| head`)."""

import subprocess
import sys

import torch


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
