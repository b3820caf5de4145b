"""CUDA only: every op (tests/op_cases.py), forward and backward, captured
in a CUDA graph (torch.cuda.graph, as torch.compile(mode="reduce-overhead")
does), replayed on new data written into the captured inputs, and equal bit
for bit to an eager run on that data (the same kernels on the same inputs).
Capture fails if an op synchronises with the host, so this also shows that
no op copies a flag back per call; bad class indices are device-side asserts
instead, checked here in child processes (an assert leaves the CUDA context
unusable).
"""

import subprocess
import sys

import pytest
import torch

from op_cases import cases, prepare

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]

CASES = [case for case in cases() if not case.large]


def _dtype(case):
    return None if case.dtypes == (None,) else torch.float32


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_capture_and_replay_equals_eager(case):
    dtype = _dtype(case)
    inputs = prepare(case.make(torch.Generator().manual_seed(1)), case.float_inputs, dtype,
                     "cuda")
    # Warm up on a side stream first, as torch.cuda.graph requires.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            case.run(inputs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = case.run(inputs)
    fresh = prepare(case.make(torch.Generator().manual_seed(2)), case.float_inputs, dtype, "cuda")
    with torch.no_grad():
        for key, value in fresh.items():
            inputs[key].copy_(value)
    graph.replay()
    torch.cuda.synchronize()
    eager = case.run(fresh)
    for key, value in eager.items():
        assert torch.equal(captured[key], value.detach()), f"{case.id} {key}"


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import torch, segloss\n" + code],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("call, message", [
    ("x = torch.randn(2, 3, 4, 5, device='cuda')\n"
     "t = torch.full((2, 4, 5), 7, device='cuda')\n"
     "segloss.shape_aware_loss(x, t, torch.ones(2, 4, 5, device='cuda'))\n",
     "segloss.shape_aware_loss: class index 7 in target; class indices in target must "
     "lie in [0, 3) or equal ignore_index (-100)"),
    ("x = torch.randn(2, 3, 4, 5, device='cuda')\n"
     "t = torch.full((2, 4, 5), -2, device='cuda', dtype=torch.int32)\n"
     "segloss.shape_aware_loss(x, t, torch.ones(2, 4, 5, device='cuda'), reduction='none')\n",
     "segloss.shape_aware_loss: class index -2 in target"),
    # The backward checks too (its own launch, with a target the forward never saw).
    ("x = torch.randn(2, 3, 4, 5, device='cuda')\n"
     "t = torch.full((2, 4, 5), 3, device='cuda', dtype=torch.uint8)\n"
     "torch.ops.segloss._weighted_cross_entropy_backward(torch.tensor(1.0, device='cuda'), x, t,"
     " None, None, -100, 'mean', torch.tensor(40.0, device='cuda'))\n",
     "segloss.shape_aware_loss: class index 3 in target"),
    ("x = torch.randn(2, 3, 4, 5, device='cuda')\n"
     "t = torch.full((2, 4, 5), 9, device='cuda')\n"
     "segloss.dice_loss(x, t, activation='softmax')\n",
     "segloss._dice_sums: class index 9 in target; class indices in target must lie in "
     "[0, 3)"),
])
def test_bad_class_index_is_a_device_side_assert(call, message):
    proc = _child(call + "torch.cuda.synchronize()\nprint('no error')\n")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "no error" not in output, output
    assert "device-side assert" in output, output
    assert message in output, output


def test_good_class_indices_run_without_synchronising():
    """The same calls with valid labels, under a capture (which raises on a
    synchronisation), in a child so that nothing earlier affects it."""
    proc = _child(
        "x = torch.randn(2, 3, 4, 5, device='cuda', requires_grad=True)\n"
        "t = torch.randint(0, 3, (2, 4, 5), device='cuda')\n"
        "m = torch.ones(2, 4, 5, device='cuda')\n"
        "s = torch.cuda.Stream()\n"
        "with torch.cuda.stream(s):\n"
        "    segloss.shape_aware_loss(x, t, m).backward()\n"
        "    segloss.dice_loss(x, t, activation='softmax').backward()\n"
        "torch.cuda.synchronize()\n"
        "g = torch.cuda.CUDAGraph()\n"
        "with torch.cuda.graph(g):\n"
        "    a = segloss.shape_aware_loss(x, t, m)\n"
        "    b = segloss.dice_loss(x, t, activation='softmax')\n"
        "g.replay()\n"
        "torch.cuda.synchronize()\n"
        "print('ok', float(a), float(b))\n")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr
