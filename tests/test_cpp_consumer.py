"""A C++ program (tests/cpp/) built with CMake against the installed torch's
LibTorch and ``find_package(segloss)``: it loads a TorchScript model saved
here whose forward calls segloss losses, runs forward and backward with no
Python, and must print what Python computes."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.utils

import segloss
from helpers import make_labels
from test_packaging import SCHEMA_OPS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")


class ConsumerModel(torch.nn.Module):
    """BCE, Dice + CE and the shape-aware loss (binary and multi-class, maps
    computed on the fly from instance labels), on buffers it carries."""

    def __init__(self, example_input, classes, instances):
        super().__init__()
        self.register_buffer("example_input", example_input)
        self.register_buffer("classes", classes)
        self.register_buffer("instances", instances)
        self.register_buffer("foreground", (instances > 0).to(example_input.dtype).unsqueeze(1))
        self.register_buffer("class_weights", torch.tensor([0.5, 1.0, 2.0],
                                                           dtype=example_input.dtype))
        self.dice_ce = segloss.nn.DiceCELoss(class_weights=self.class_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bce = segloss.binary_cross_entropy_with_logits(x[:, :1], self.foreground)
        dice_ce = self.dice_ce(x, self.classes) + segloss.dice_ce_loss(
            x, self.classes, activation="sigmoid", include_background=False)
        shape_aware = segloss.shape_aware_loss(x[:, :1], self.foreground,
                                               instances=self.instances, w0=5.0, sigma=2.0)
        shape_aware_classes = segloss.shape_aware_loss(
            x, self.classes, instances=self.instances, class_weights="balanced",
            weight=self.class_weights, reduction="weighted_mean")
        return bce + dice_ce + shape_aware + shape_aware_classes


def _model():
    gen = torch.Generator().manual_seed(11)
    x = 2 * torch.randn(2, 3, 17, 19, generator=gen, dtype=torch.float64)
    classes = make_labels((2, 17, 19), 3, gen)
    instances = torch.zeros(2, 17, 19, dtype=torch.int32)
    instances[:, 2:7, 3:9], instances[:, 8:14, 4:10], instances[1, 3:12, 12:17] = 1, 2, 3
    return ConsumerModel(x, classes, instances)


def _cmake():
    # The venv's CMake (>= 3.27, a build tool of ./dev), else the system's.
    here = Path(sys.executable).parent / "cmake"
    return str(here) if here.exists() else shutil.which("cmake")


@pytest.fixture(scope="module")
def consumer():
    """Configures and builds tests/cpp into build/cpp-consumer-<digest> (kept
    between runs: a rebuild is incremental). One folder per torch and segloss
    install: CMake keeps the Torch_DIR and segloss_DIR it found first, so a
    folder shared by two venvs built the second's program against the first's."""
    cmake = _cmake()
    if cmake is None:
        pytest.skip("cmake not found")
    prefix = ";".join([torch.utils.cmake_prefix_path, segloss.cmake_prefix_path()])
    build = ROOT / "build" / f"cpp-consumer-{hashlib.sha1(prefix.encode()).hexdigest()[:10]}"
    generator = ["-G", "Ninja"] if shutil.which("ninja", path=str(Path(cmake).parent)
                                                + os.pathsep + os.environ.get("PATH", "")) else []
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep
           + os.environ.get("PATH", "")}
    for command in ([cmake, "-S", str(ROOT / "tests" / "cpp"), "-B", str(build), *generator,
                     "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={prefix}",
                     f"-DCONSUMER_TORCH_HAS_CUDA={'ON' if torch.version.cuda else 'OFF'}"],
                    [cmake, "--build", str(build)]):
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return build / "segloss_consumer"


def _run(executable, model_path):
    # No Python in the program, and no LD_LIBRARY_PATH: the rpaths CMake
    # wrote (torch's, and segloss's from its package config) must suffice.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    proc = subprocess.run([str(executable), str(model_path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    ops, values = set(), {}
    for line in proc.stdout.splitlines():
        key, value = line.split(" ", 1)
        if key == "op":
            ops.add(value.removeprefix("segloss::"))
        else:
            values[key] = float(value)
    return ops, values


def test_cpp_program_runs_scripted_segloss_model(consumer, tmp_path):
    model = _model()
    path = tmp_path / "model.pt"
    torch.jit.script(model).save(str(path))

    x = model.example_input.clone().requires_grad_(True)
    loss = model(x)
    loss.backward()

    ops, values = _run(consumer, path)
    assert ops == set(SCHEMA_OPS), "the C++ program does not see every op"
    # Same library, same float64 inputs, deterministic kernels: the same bits
    # up to the printing's 17 significant digits.
    assert values["loss"] == pytest.approx(loss.item(), rel=1e-15)
    assert values["grad_norm"] == pytest.approx(x.grad.norm().item(), rel=1e-15)


def test_cpp_program_links_no_python(consumer):
    needed = subprocess.run(["readelf", "-d", str(consumer)], capture_output=True, text=True,
                            check=True).stdout
    assert "libsegloss_ops.so" in needed
    assert "libpython" not in needed
