"""How segloss is found and loaded: the ops registered by ``import segloss``
(in either order with ``import torch``), the torch-free install, the op
library without Python, and ``./dev``'s idempotence. Each case runs in a
fresh interpreter, since this one has imported segloss already."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_python

ROOT = Path(__file__).resolve().parent.parent

# The op names as the schema file declares them: the test does not ask the
# library which ops it has.
SCHEMA_OPS = re.findall(r'm\.def\(\s*"(\w+)\(', (ROOT / "csrc/ops/registration.cpp").read_text())


def test_schema_file_declares_the_ops():
    assert {"binary_cross_entropy", "dice_loss", "dice_ce_loss", "_dice_sums",
            "shape_aware_loss", "unet_weight_map"} <= set(SCHEMA_OPS)


_RESOLVE_EVERY_OP = """
missing = [name for name in {ops!r} if not hasattr(torch.ops.segloss, name)]
assert not missing, f"not registered: {{missing}}"
x = torch.randn(2, 3, 8, 8)
t = torch.randint(0, 3, (2, 8, 8))
print(float(torch.ops.segloss.dice_loss(x, t, activation="softmax")))
"""


@pytest.mark.parametrize("imports", ["import torch\nimport segloss", "import segloss\nimport torch",
                                     "import torch, segloss.numpy"])
def test_import_segloss_registers_every_op(imports):
    out = run_python(imports + "\n" + _RESOLVE_EVERY_OP.format(ops=SCHEMA_OPS)).stdout
    assert 0 < float(out) < 1


_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # as if torch were not installed: `import torch` fails
import numpy as np
import segloss
import segloss.numpy as snp
assert "torch" not in sys.modules or sys.modules["torch"] is None
labels = np.zeros((8, 9), np.int32)
labels[1, 1], labels[6, 7] = 3, 5
d1, d2 = snp.two_nearest_distances(labels)
assert d1[1, 1] == 0 and d2[1, 1] == np.hypot(5, 6)
try:
    segloss.dice_loss
except ImportError as e:
    print("ImportError:", e)
else:
    raise AssertionError("segloss.dice_loss without torch")
from segloss.__main__ import main
np.save(sys.argv[1] + "/labels.npy", labels)
assert main(["weight-map", sys.argv[1] + "/labels.npy", "-o", sys.argv[1] + "/out", "--quiet"]) == 0
print(np.load(sys.argv[1] + "/out/labels.npy").dtype)
"""


def test_without_torch_numpy_and_weight_map_work(tmp_path):
    out = run_python(_WITHOUT_TORCH, str(tmp_path)).stdout
    assert "ImportError" in out and "torch" in out
    assert out.strip().endswith("float32")


def test_library_path_alone_registers_the_ops():
    # A serving process that loads the library by path, never importing segloss.
    from segloss import library_path

    code = ("import sys, torch\n"
            f"torch.ops.load_library({library_path()!r})\n"
            + _RESOLVE_EVERY_OP.format(ops=SCHEMA_OPS)
            + "assert 'segloss' not in sys.modules\n")
    run_python(code)


def test_op_library_needs_no_python():
    from segloss import library_path

    needed = subprocess.run(["readelf", "-d", library_path()], capture_output=True, text=True,
                            check=True).stdout
    assert "libsegloss_ops.so" in needed  # its soname
    assert "libpython" not in needed
    undefined = subprocess.run(["nm", "-D", "--undefined-only", library_path()],
                               capture_output=True, text=True, check=True).stdout
    python_api = [s for s in undefined.split() if re.match(r"_?Py[A-Z_]", s)]
    assert not python_api, f"the op library uses the Python C API: {python_api[:5]}"


def test_cmake_prefix_path_holds_the_package_config():
    import segloss

    folder = Path(segloss.cmake_prefix_path()) / "segloss"
    assert (folder / "seglossConfig.cmake").is_file()
    assert f'PACKAGE_VERSION "{segloss.__version__}"' in (
        folder / "seglossConfigVersion.cmake").read_text()


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="runs ./dev, whose venv is not the one running the tests")
def test_dev_is_idempotent():
    # The suite runs from `./dev test`, so the venv and the build are ready:
    # setting up again must install and build nothing.
    proc = subprocess.run([str(ROOT / "dev"), "setup"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    assert "[dev]" not in proc.stderr, f"./dev setup did work again:\n{proc.stderr}"


def test_readme_names_every_public_function_module_and_op():
    # The README is the API reference: a public name it does not mention is
    # one users cannot find (LogCoshDiceLoss was, until this test).
    import segloss
    import segloss.nn
    import segloss.numpy
    readme = (ROOT / "README.md").read_text()
    public = [f"{module.__name__}.{name}" for module in (segloss, segloss.nn, segloss.numpy)
              for name in module.__all__]
    assert len(public) > 40
    missing = [name for name in public if not re.search(rf"\b{name.split('.')[-1]}\b", readme)]
    missing += [f"segloss::{op}" for op in SCHEMA_OPS if f"`segloss::{op}`" not in readme]
    assert not missing, f"not in README.md: {missing}"
