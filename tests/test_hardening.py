"""Hardening (issue 6, parts 3 and 4): leaks, threads, 64-bit indexing, determinism.

A. Leaks. Every op, called a few thousand times (forward and backward for the
   losses), keeps the process's memory flat: RSS, bytes in use by malloc and
   live Python objects, measured after a warm-up (scripts/leak_check, whose
   cases and measures these tests import, runs 100,000 calls of each). A
   self-test checks that the measures do catch small leaks.

B. Threads. The NumPy functions (which release the GIL) give results
   bitwise identical to a serial run when called from 8 Python threads at
   once and inside forked DataLoader workers (num_workers=2, fork), and they
   do let other Python threads run meanwhile; the torch ops give identical
   results when called from several Python threads at once.

C. 64-bit indexing, skipped unless SEGLOSS_BIG_TESTS=1 (scripts/big_index
   runs them; each stays under about 9.5 GiB of memory and checks its
   result against a cheap independent reference, chunk by chunk): BCE with
   logits on more than 2^31 float16 elements with a stride-0 weight and a
   broadcast pos_weight, forward and gradient; the Dice sums, loss and
   gradient over more than 2^31 pixels of a uint8 label map; the softmax
   Dice sums and the multi-class (shape-aware) cross-entropy, loss and
   gradient, over more than 2^31 elements; the NumPy distance transforms,
   weight maps and the torch weight-map op on a 151-million-pixel uint8 map
   (their working memory is 32 bytes per pixel, so 2^31 pixels would need
   64 GiB). One test of this part is cheap and always runs: label views whose
   element offsets pass 2^32 (a strided view into a 4 GiB buffer of which
   only the touched pages are resident).

D. Determinism. Every op gives bitwise identical results (forward and input
   gradient) on repeated runs and for torch.set_num_threads(1), 2 and 3, and
   the NumPy functions for threads=1, 2 and 4.
   (This found that the binary shape_aware_loss's "weighted_mean" divided by
   ATen's mean of the map, whose parallel split follows the thread count;
   it now sums the map in a fixed order.)
"""

from __future__ import annotations

import ctypes
import gc
import importlib.machinery
import importlib.util
import os
import threading
import time
from functools import partial
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

import segloss
import segloss.numpy as snp
from distance_reference import (random_pixels, scipy_per_instance,
                                two_nearest_from, unet_weight_formula, voronoi_partition)
from helpers import (OPS, make_dice_input, make_input, make_labels, make_mask, make_target,
                     make_weight)
from reference import KINDS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_script(name: str):
    path = os.path.join(REPO, "scripts", name)
    loader = importlib.machinery.SourceFileLoader(f"segloss_script_{name}", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


# ==========================================================================
# A. Leaks
# ==========================================================================

leak_check = _load_script("leak_check")
LEAK_CASES = leak_check.cases()
LEAK_CALLS, LEAK_WARMUP = 2000, 300
# Over 2,000 calls: 128 KiB of malloc'd memory is a leak of ~64 bytes per
# call; 500 Python objects one per 4 calls. RSS moves in pages and with the
# allocator's arenas, so its limit is looser. (Measured noise on the
# development machine: heap 0-2 KiB, blocks < 10, RSS < 0.1 MiB.)
CI_LIMITS = leak_check.Limits(rss=4 << 20, heap=128 << 10, blocks=500)


@pytest.mark.parametrize("case", list(LEAK_CASES))
def test_memory_stays_flat(case):
    torch.set_num_threads(1)  # restored by conftest
    result = leak_check.measure(case, LEAK_CASES[case], LEAK_CALLS, LEAK_WARMUP)
    problems = leak_check.failures(result, CI_LIMITS)
    assert not problems, f"{case}: {'; '.join(problems)}\n{leak_check.table([result], CI_LIMITS)}"


def test_leak_measures_catch_small_leaks():
    """The measures see a leak of 64 malloc'd bytes, of one Python object and
    of one small tensor per call (and the cases above are measured the same
    way)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    kept: list = []
    leaks = {
        "64 bytes of C heap": lambda: (lambda: libc.malloc(64)),
        "a Python object": lambda: (lambda: kept.append(object())),
        "a 16-element tensor": lambda: (lambda: kept.append(torch.empty(16))),
    }
    for name, make in leaks.items():
        result = leak_check.measure(name, make, LEAK_CALLS, 100)
        assert leak_check.failures(result, CI_LIMITS), f"a leak of {name} per call went unseen"
    kept.clear()


# ==========================================================================
# Shared cases for B and D: each is a run() giving a tuple of tensors
# (outputs and, for the losses, the input gradient) from fixed inputs.
# ==========================================================================

SHAPE = (2, 3, 128, 128)    # 98,304 elements: 48 blocks of 2048, 8 Dice units per image
BINARY = (2, 1, 192, 192)   # 73,728 elements: above ATen's 32,768-element grain too
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _loss_run(x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor]):
    """run() -> (loss, d loss / d x) with a fixed non-trivial upstream gradient."""
    def run():
        leaf = x.detach().requires_grad_()
        loss = loss_fn(leaf)
        g = torch.Generator().manual_seed(99)
        grad_out = (0.5 + torch.rand(loss.shape, generator=g)).to(loss.dtype)
        (grad,) = torch.autograd.grad(loss, leaf, grad_out)
        return loss.detach(), grad
    return run


def random_disks(shape, count, rng) -> np.ndarray:
    """Up to `count` disks (balls) of radius 2-9 with ids 1..count, later ones
    not overwriting earlier ones; drawn in local windows (fast)."""
    labels = np.zeros(shape, np.int64)
    for i in range(1, count + 1):
        centre = [rng.uniform(0, s) for s in shape]
        radius = rng.uniform(2.0, 9.0)
        lo = [max(0, int(c - radius)) for c in centre]
        hi = [min(s, int(c + radius) + 2) for c, s in zip(centre, shape)]
        grid = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre)) < radius ** 2
        window = labels[tuple(slice(a, b) for a, b in zip(lo, hi))]
        window[inside & (window == 0)] = i
    return labels


def _instances(shape, seed, count=20, dtype=torch.int32):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([random_disks(shape[1:], count, rng)
                                      for _ in range(shape[0])])).to(dtype)


def _torch_cases() -> Dict[str, Callable[[], tuple]]:
    """name -> run (returns the results to compare)."""
    g = torch.Generator().manual_seed(20251202)
    cases: Dict[str, Callable[[], tuple]] = {}

    def add(name, run):
        cases[name] = run

    for kind in KINDS:
        for dtype in FLOATS:
            for reduction in ("mean", "sum", "none"):
                x = make_input(kind, SHAPE, g, dtype)
                y = make_target(SHAPE, g, dtype)
                w = make_weight("full", SHAPE, g, dtype)
                pw = make_weight("c11", SHAPE, g, dtype)
                add(f"bce-{kind}-{str(dtype)[6:]}-{reduction}",
                    _loss_run(x, partial(OPS[kind], target=y, weight=w, pos_weight=pw,
                                         reduction=reduction)))

    classes = make_labels((2,) + SHAPE[2:], 3, g, ignore_index=255)
    classes_u8 = make_labels((2,) + SHAPE[2:], 3, g, torch.uint8)
    class_weights = torch.tensor([0.5, 1.0, 2.5])
    for dtype in (torch.float32, torch.float64, torch.float16):
        name = str(dtype)[6:]
        add(f"dice-sigmoid-soft-{name}", _loss_run(
            make_dice_input("sigmoid", SHAPE, g, dtype),
            partial(segloss.dice_loss, target=make_target(SHAPE, g, dtype),
                    activation="sigmoid")))
        add(f"dice-softmax-labels-ignore-{name}", _loss_run(
            make_dice_input("softmax", SHAPE, g, dtype),
            partial(segloss.dice_loss, target=classes, activation="softmax", ignore_index=255,
                    include_background=False, class_weights=class_weights)))
        add(f"dice_ce-softmax-labels-{name}", _loss_run(
            make_dice_input("softmax", SHAPE, g, dtype),
            partial(segloss.dice_ce_loss, target=classes, activation="softmax",
                    ignore_index=255, class_weights=class_weights)))
    add("dice-softmax-uint8-batch-gamma2-mask-none", _loss_run(
        make_dice_input("softmax", SHAPE, g, torch.float32),
        partial(segloss.dice_loss, target=classes_u8, activation="softmax", gamma=2.0,
                batch_dice=True, mask=make_mask("n1s-float", SHAPE, g), reduction="none")))
    add("dice-none-soft-gamma1.5-sum", _loss_run(
        make_dice_input("none", SHAPE, g, torch.float32),
        partial(segloss.dice_loss, target=make_target(SHAPE, g, torch.float32),
                activation="none", gamma=1.5, reduction="sum")))
    add("dice_ce-sigmoid-binary-mask", _loss_run(
        make_dice_input("sigmoid", SHAPE, g, torch.float32),
        partial(segloss.dice_ce_loss, target=(torch.rand(SHAPE, generator=g) < 0.3).float(),
                activation="sigmoid", class_weights=class_weights,
                mask=make_mask("11s-bool", SHAPE, g))))

    # Shape-aware loss.
    instances = _instances((2,) + BINARY[2:], 1)
    weight_map = segloss.unet_weight_map(instances).unsqueeze(1)
    binary_target = (torch.rand(BINARY, generator=g) < 0.4).float()
    for reduction in ("mean", "sum", "none", "weighted_mean"):
        add(f"shape_aware-binary-map-{reduction}", _loss_run(
            make_input("logits", BINARY, g, torch.float32),
            partial(segloss.shape_aware_loss, target=binary_target, weight_map=weight_map,
                    reduction=reduction)))
    for dtype in (torch.float32, torch.float16):
        add(f"shape_aware-binary-instances-balanced-{str(dtype)[6:]}", _loss_run(
            make_input("logits", BINARY, g, dtype),
            partial(segloss.shape_aware_loss, target=binary_target.to(dtype),
                    instances=instances, class_weights="balanced")))
    add("shape_aware-binary-probabilities", _loss_run(
        make_input("probability", BINARY, g, torch.float64),
        partial(segloss.shape_aware_loss, target=binary_target.double(), weight_map=weight_map,
                from_logits=False)))
    mc_instances = _instances((2,) + SHAPE[2:], 2)
    mc_map = segloss.unet_weight_map(mc_instances)
    for reduction in ("mean", "weighted_mean", "sum", "none"):
        add(f"shape_aware-multiclass-map-weight-ignore-{reduction}", _loss_run(
            make_input("logits", SHAPE, g, torch.float32),
            partial(segloss.shape_aware_loss, target=classes, weight_map=mc_map,
                    weight=class_weights, ignore_index=255, reduction=reduction)))
    add("shape_aware-multiclass-instances-float16", _loss_run(
        make_input("logits", SHAPE, g, torch.float16),
        partial(segloss.shape_aware_loss, target=classes_u8, instances=mc_instances)))

    # Distance ops.
    labels2d = _instances((3, 150, 170), 3, 40, torch.int64)
    labels3d = _instances((2, 24, 30, 28), 4, 15, torch.uint8)
    add("two_nearest_distances-2d-sampling",
        lambda: segloss.two_nearest_distances(labels2d, sampling=(0.7, 1.3), return_labels=True))
    add("two_nearest_distances-3d", lambda: segloss.two_nearest_distances(labels3d))
    pixel = 0.5 + torch.rand(labels3d.shape, generator=g)
    add("unet_weight_map-2d-balanced",
        lambda: (segloss.unet_weight_map(labels2d, class_weights="balanced"),))
    add("unet_weight_map-3d-pixel-weights-everywhere",
        lambda: (segloss.unet_weight_map(labels3d, class_weights=pixel, border_everywhere=True,
                                         sampling=(2.0, 1.0, 1.0)),))
    return cases


TORCH_CASES = _torch_cases()


def _numpy_cases() -> Dict[str, Callable[[int], tuple]]:
    """name -> run(threads) giving a tuple of arrays."""
    rng = np.random.default_rng(11)
    disks2d = random_disks((180, 210), 50, rng).astype(np.uint16)
    cells3d = voronoi_partition((30, 34, 32), 12, rng, gaps=True)          # int64
    pixels3d = random_pixels((28, 30, 26), 60, 9, rng).astype(np.int8)
    fortran = np.asfortranarray(random_disks((120, 130), 30, rng).astype(np.int32))
    mask4d = rng.random((6, 7, 8, 9)) > 0.2
    weights3d = rng.uniform(0.5, 2.0, cells3d.shape).astype(np.float32)

    return {
        "two_nearest-2d-sampling-labels": lambda t: snp.two_nearest_distances(
            disks2d, sampling=(0.8, 1.1), return_labels=True, threads=t),
        "two_nearest-3d-voronoi": lambda t: snp.two_nearest_distances(
            cells3d, return_labels=True, threads=t),
        "two_nearest-3d-pixels-int8": lambda t: snp.two_nearest_distances(pixels3d, threads=t),
        "unet-2d-balanced-fortran": lambda t: (snp.unet_weight_map(
            fortran, class_weights="balanced", threads=t),),
        "unet-3d-pixel-weights-everywhere": lambda t: (snp.unet_weight_map(
            cells3d, class_weights=weights3d, sampling=(2.0, 1.0, 0.5), border_everywhere=True,
            threads=t),),
        "unet-2d-mapping-sigma": lambda t: (snp.unet_weight_map(
            disks2d[::2, ::3], w0=5.0, sigma=3.0, class_weights={0: 0.7, 1: 1.4}, threads=t),),
        "edt-2d-sampling": lambda t: (snp.distance_transform_edt(
            disks2d == 0, sampling=(0.5, 2.0), threads=t),),
        "edt-4d": lambda t: (snp.distance_transform_edt(mask4d, threads=t),),
    }


NUMPY_CASES = _numpy_cases()


def _same(got: tuple, want: tuple) -> bool:
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        if isinstance(a, np.ndarray):
            if a.dtype != b.dtype or not np.array_equal(a, b):
                return False
        elif a.dtype != b.dtype or not torch.equal(a, b):
            return False
    return True


# ==========================================================================
# B. Threads
# ==========================================================================

def _run_in_threads(count: int, work: Callable[[int], None], timeout: float = 300):
    """Runs work(index) in `count` threads started together; re-raises the first error."""
    barrier = threading.Barrier(count)
    errors: list = []

    def body(index):
        try:
            barrier.wait()
            work(index)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "threads still running (deadlock?)"
    if errors:
        raise errors[0]


def test_numpy_functions_from_8_threads_match_serial():
    serial = {name: run(1) for name, run in NUMPY_CASES.items()}
    names = list(NUMPY_CASES)
    mismatches: list = []

    def work(index):
        for round_ in range(3):
            for k in range(len(names)):
                name = names[(index + k + round_) % len(names)]
                threads = 1 + (index + k) % 2  # half of the calls start threads of their own
                if not _same(NUMPY_CASES[name](threads), serial[name]):
                    mismatches.append((index, round_, name, threads))

    _run_in_threads(8, work)
    assert not mismatches


def test_numpy_functions_release_the_gil():
    """While one call runs, another Python thread keeps running: it records
    timestamps in the middle of the call (impossible if the GIL were held)."""
    labels = random_pixels((112, 112, 112), 300, 40, np.random.default_rng(2)).astype(np.int32)
    mask = labels == 0
    calls = {
        "two_nearest_distances": lambda: snp.two_nearest_distances(labels),
        "unet_weight_map": lambda: snp.unet_weight_map(labels, class_weights="balanced"),
        "distance_transform_edt": lambda: snp.distance_transform_edt(mask),
    }
    for name, call in calls.items():
        stamps: List[float] = []
        stop = threading.Event()

        def ticker():
            while not stop.is_set():
                stamps.append(time.perf_counter())
                for _ in range(200):
                    pass

        thread = threading.Thread(target=ticker)
        thread.start()
        while not stamps:
            time.sleep(0.001)
        begin = time.perf_counter()
        call()
        end = time.perf_counter()
        stop.set()
        thread.join()
        quarter = 0.25 * (end - begin)
        middle = [s for s in stamps if begin + quarter < s < end - quarter]
        assert middle, f"{name}: no other Python thread ran during its {end - begin:.3f} s"


class _DistanceDataset(torch.utils.data.Dataset):
    """Item i: the NumPy functions (threads 1 or 2) and the torch weight-map op
    on image i, with the worker's pid."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        threads = 1 + i % 2
        return {
            "pid": os.getpid(),
            "two_nearest": snp.two_nearest_distances(image, sampling=(1.0, 0.6),
                                                     return_labels=True, threads=threads),
            "unet": snp.unet_weight_map(image, class_weights="balanced", threads=threads),
            "edt": snp.distance_transform_edt(image == 0, threads=threads),
            "torch_unet": segloss.unet_weight_map(torch.from_numpy(image)[None]).numpy(),
        }


def _identity(item):
    return item


def test_numpy_functions_in_forked_dataloader_workers():
    rng = np.random.default_rng(4)
    images = [random_disks((130 + 7 * i, 150), 25, rng).astype(np.int32) for i in range(6)]
    dataset = _DistanceDataset(images)
    # The parent computes first, with threads: its thread pools exist before the fork.
    serial = [dataset[i] for i in range(len(images))]
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2,
                                         multiprocessing_context="fork", collate_fn=_identity,
                                         timeout=120)
    got = list(loader)
    assert len(got) == len(serial)
    assert {item["pid"] for item in got}.isdisjoint({os.getpid()})
    for i, (a, b) in enumerate(zip(got, serial)):
        for key in ("two_nearest", "unet", "edt", "torch_unet"):
            want = b[key] if isinstance(b[key], tuple) else (b[key],)
            have = a[key] if isinstance(a[key], tuple) else (a[key],)
            assert _same(have, want), (i, key)


THREADED_TORCH_CASES = [
    "bce-probability-float32-mean", "bce-logits-float16-none", "bce-logits-float64-sum",
    "dice-sigmoid-soft-float32", "dice-softmax-labels-ignore-float16",
    "dice_ce-softmax-labels-float32", "dice_ce-sigmoid-binary-mask",
    "shape_aware-binary-map-mean", "shape_aware-binary-instances-balanced-float32",
    "shape_aware-multiclass-map-weight-ignore-weighted_mean",
    "shape_aware-multiclass-instances-float16", "two_nearest_distances-2d-sampling",
    "unet_weight_map-3d-pixel-weights-everywhere",
]


@pytest.mark.parametrize("intra_op_threads", [1, 2])
def test_torch_ops_from_several_threads_match_serial(intra_op_threads):
    torch.set_num_threads(intra_op_threads)
    serial = {name: TORCH_CASES[name]() for name in THREADED_TORCH_CASES}
    mismatches: list = []

    def work(index):
        for round_ in range(2):
            for k in range(len(THREADED_TORCH_CASES)):
                name = THREADED_TORCH_CASES[(index * 3 + k + round_) % len(THREADED_TORCH_CASES)]
                if not _same(TORCH_CASES[name](), serial[name]):
                    mismatches.append((index, round_, name))

    _run_in_threads(4, work)
    assert not mismatches


# ==========================================================================
# D. Determinism
# ==========================================================================

TORCH_THREAD_SEQUENCE = (1, 2, 3, 1, 2)


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_torch_op_is_bitwise_deterministic_across_runs_and_threads(case):
    run = TORCH_CASES[case]
    want = None
    for threads in TORCH_THREAD_SEQUENCE:
        torch.set_num_threads(threads)
        got = run()
        if want is None:
            want = got
        else:
            assert _same(got, want), f"{case}: {threads} threads differ from 1"


@pytest.mark.parametrize("case", list(NUMPY_CASES))
def test_numpy_function_is_bitwise_deterministic_across_runs_and_threads(case):
    run = NUMPY_CASES[case]
    want = run(1)
    for threads in (2, 4, 1, 4, 2):
        assert _same(run(threads), want), f"{case}: threads={threads} differs from threads=1"


def test_the_sizes_cross_block_and_grain_boundaries():
    """The inputs above are large enough for threads to split them: several
    kBlock (2048) blocks and Dice units per image, and more elements than
    ATen's parallel grain (32768)."""
    assert np.prod(SHAPE) > 16 * 2048 and np.prod(SHAPE[2:]) > 4 * 2048
    assert np.prod(BINARY) > 32768


# ==========================================================================
# C. 64-bit indexing
# ==========================================================================

BIG = os.environ.get("SEGLOSS_BIG_TESTS") == "1"
big = pytest.mark.skipif(not BIG, reason="64-bit indexing test over > 2^31 elements (up to "
                         "~9.5 GiB of memory, minutes): set SEGLOSS_BIG_TESTS=1 or run "
                         "scripts/big_index")
GiB = 2 ** 30
TWO31 = 2 ** 31
# Reference chunks: 16 MiB of float32, under glibc's largest mmap threshold,
# so that their temporaries are reused from the heap instead of being mapped
# (and page-faulted) anew each time.
CHUNK = 2 ** 22


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _available_memory() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.fixture
def big_report(request):
    """Resets the peak RSS (VmHWM), skips if memory is short, and prints the
    test's sizes, peak memory and time (scripts/big_index shows them)."""
    notes: Dict[str, object] = {}
    gc.collect()
    leak_check._libc.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass
    start = _status("VmRSS")
    began = time.perf_counter()

    def need(gib: float):
        available = _available_memory() / GiB
        if available < gib + 1.0:
            pytest.skip(f"needs about {gib:.1f} GiB free, {available:.1f} GiB available")
    notes["need"] = need
    yield notes
    peak = _status("VmHWM")
    print(f"\n[big] {request.node.name}: {notes.get('sizes', '')}; peak RSS "
          f"{peak / GiB:.2f} GiB ({(peak - start) / GiB:.2f} GiB above the start); "
          f"{time.perf_counter() - began:.0f} s; {notes.get('result', '')}", flush=True)


def _fill_pattern(flat: torch.Tensor, pattern: torch.Tensor):
    """flat[i] = pattern[i % len(pattern)], without temporaries of flat's size."""
    n, length = flat.numel(), pattern.numel()
    whole = n // length
    flat[: whole * length].view(whole, length).copy_(pattern)
    flat[whole * length:].copy_(pattern[: n - whole * length])


def _zeros(shape, dtype) -> torch.Tensor:
    """Zeros whose pages stay unmapped (and out of the RSS) until written:
    calloc'd memory from np.zeros."""
    return torch.from_numpy(np.zeros(shape, dtype))


def _chunks(n: int, size: int):
    for begin in range(0, n, size):
        yield begin, min(n, begin + size)


class _Worst:
    """The largest violation of |got - want| <= rtol |want| + atol over chunks."""

    def __init__(self, rtol, atol):
        self.rtol, self.atol, self.excess, self.where = rtol, atol, 0.0, None

    def add(self, got: torch.Tensor, want: torch.Tensor, offset: int):
        excess = (got.float() - want).abs() - (self.rtol * want.abs() + self.atol)
        value, index = excess.reshape(-1).max(0)
        if float(value) > self.excess:
            self.excess, self.where = float(value), offset + int(index)

    def check(self, what: str):
        assert self.where is None, (f"{what}: off by up to {self.excess:.3g} beyond the "
                                    f"tolerance, at flat index {self.where}")


@big
def test_big_bce_with_logits_float16_over_2_31_elements(big_report):
    """BCE with logits on 2.18e9 float16 elements (1.5% past 2^31) with a
    stride-0 weight expanded over all of them and a per-row pos_weight:
    the mean, and the gradient of the sum element by element, against the
    formula in float32 chunks. The target is real (written) in the first 2^24
    elements and from 2^31 - 2^25 to the end, zero (unmapped pages)
    between, so that input, gradient and target fit in ~8.4 GiB."""
    big_report["need"](9.0)
    rows, cols = 33288, 65521
    n = rows * cols
    assert n > TWO31 + 2 ** 25
    g = torch.Generator().manual_seed(31)
    x = torch.empty((rows, cols), dtype=torch.float16)
    _fill_pattern(x.view(-1), (3 * torch.randn(1_000_003, generator=g)).half())
    y = _zeros((rows, cols), np.float16)
    target_pattern = make_target((999_983,), g, torch.float16)
    for begin, end in ((0, 2 ** 24), (TWO31 - 2 ** 25, n)):
        _fill_pattern(y.view(-1)[begin:end], target_pattern)
    weight_row = (0.5 + torch.rand(cols, generator=g)).half()
    weight = weight_row.view(1, cols).expand(rows, cols)           # stride (0, 1)
    pos_weight = (1 + (torch.arange(rows) % 13) / 4).half().view(rows, 1)
    big_report["sizes"] = f"input {rows}x{cols} = {n} float16 ({n * 2 / GiB:.2f} GiB)"

    mean = segloss.binary_cross_entropy_with_logits(x, y, weight, pos_weight, "mean")
    x.requires_grad_()
    loss_sum = segloss.binary_cross_entropy_with_logits(x, y, weight, pos_weight, "sum")
    (grad,) = torch.autograd.grad(loss_sum, x)
    x.requires_grad_(False)

    total = 0.0
    # The op (as PyTorch's) computes 1 - sigmoid(x) in float32 where y = 1:
    # an absolute error of about eps(float32) w beta for large x.
    eps32 = torch.finfo(torch.float32).eps
    worst = _Worst(rtol=2 ** -10, atol=2 * eps32 * float(weight_row.max() * pos_weight.max()))
    w = weight_row.float().view(1, cols)
    for r0, r1 in _chunks(rows, CHUNK // cols):
        xc, yc, pc = x[r0:r1].float(), y[r0:r1].float(), pos_weight[r0:r1].float()
        # w [(1 - y) softplus(x) + beta y softplus(-x)] and its derivative
        # w [(1 - y) sigmoid(x) - beta y sigmoid(-x)]: no cancellation.
        loss = w * ((1 - yc) * F.softplus(xc) + pc * yc * F.softplus(-xc))
        total += float(loss.sum(dtype=torch.float64))
        want = w * ((1 - yc) * torch.sigmoid(xc) - pc * yc * torch.sigmoid(-xc))
        worst.add(grad[r0:r1], want, r0 * cols)
    expected_mean = total / n
    big_report["result"] = (f"mean {float(mean):.6g} vs {expected_mean:.6g}, gradient "
                            f"max excess {worst.excess:.2g}")
    assert abs(float(mean) - expected_mean) <= 2 ** -10 * expected_mean
    worst.check("gradient")


@big
def test_big_dice_sigmoid_uint8_label_map_over_2_31_pixels(big_report):
    """Dice (sigmoid, one channel) over 2^31 + 2^25 + 13 pixels of bfloat16
    logits and a uint8 label map: the float32 sums I, P, T, the loss and the
    gradient element by element against chunked sums. The labels are written
    in three 2^24..2^25-pixel regions (start, around 2^31, end), zero
    elsewhere."""
    big_report["need"](9.0)
    n = TWO31 + 2 ** 25 + 13
    g = torch.Generator().manual_seed(32)
    x = torch.empty((1, 1, n), dtype=torch.bfloat16)
    _fill_pattern(x.view(-1), (2.5 * torch.randn(1_000_003, generator=g)).bfloat16())
    labels = _zeros((1, n), np.uint8)
    label_pattern = (torch.rand(65_537, generator=g) < 0.4).to(torch.uint8)
    for begin, end in ((0, 2 ** 24), (TWO31 - 2 ** 24, TWO31 + 2 ** 24), (n - 2 ** 24, n)):
        _fill_pattern(labels[0, begin:end], label_pattern)
    big_report["sizes"] = f"input 1x1x{n} bfloat16 ({n * 2 / GiB:.2f} GiB), labels uint8"

    sums = torch.ops.segloss._dice_sums(x, labels, "sigmoid", 1.0, None, None)
    intersection = prediction = truth = 0.0
    for a, b in _chunks(n, CHUNK):
        p, yc = torch.sigmoid(x[0, 0, a:b].float()), labels[0, a:b].float()
        intersection += float((p * yc).sum(dtype=torch.float64))
        prediction += float(p.sum(dtype=torch.float64))
        truth += float(yc.sum(dtype=torch.float64))
    want = torch.tensor([intersection, prediction, truth], dtype=torch.float64)
    assert sums.shape == (1, 1, 3)
    torch.testing.assert_close(sums.view(3).double(), want, rtol=1e-5, atol=0)

    x.requires_grad_()
    loss = segloss.dice_loss(x, labels, activation="sigmoid")
    (grad,) = torch.autograd.grad(loss, x)
    x.requires_grad_(False)
    loss = float(loss.detach())
    numerator, denominator = 2 * intersection + 1e-5, prediction + truth + 1e-5
    expected_loss = 1 - numerator / denominator
    d_intersection, d_prediction = -2 / denominator, numerator / denominator ** 2
    worst = _Worst(rtol=2 ** -7, atol=1e-3 * abs(d_intersection))
    for a, b in _chunks(n, CHUNK):
        xc, yc = x[0, 0, a:b].float(), labels[0, a:b].float()
        want_grad = torch.sigmoid(xc) * torch.sigmoid(-xc) * (d_intersection * yc + d_prediction)
        worst.add(grad[0, 0, a:b], want_grad, a)
    big_report["result"] = (f"sums {sums.view(3).tolist()} vs {want.tolist()}, loss "
                            f"{loss:.5g} vs {expected_loss:.5g}, gradient max excess "
                            f"{worst.excess:.2g}")
    assert abs(loss - expected_loss) <= 2 ** -7 * expected_loss
    worst.check("gradient")


@big
def test_big_softmax_two_classes_over_2_31_elements(big_report):
    """Two classes over 2^30 + 2^24 + 7 pixels (2^31 + 2^25 + 14 float16
    logits): the softmax Dice sums with ignore_index and the weighted softmax
    cross-entropy of the multi-class shape-aware loss (its fused op, with
    class weights and ignore_index; the map is left out as the public loss
    would materialise a float32 one): the mean, its divisor, and the gradient
    of the sum element by element, against chunked references. Labels {0, 1,
    255} are written at the start, where the second class's offsets cross
    2^31, and at the end."""
    big_report["need"](9.0)
    pixels = 2 ** 30 + 2 ** 24 + 7
    g = torch.Generator().manual_seed(33)
    x = torch.empty((1, 2, pixels), dtype=torch.float16)
    _fill_pattern(x.view(-1), (2.5 * torch.randn(1_000_003, generator=g)).half())
    target = _zeros((1, pixels), np.uint8)
    label_pattern = torch.tensor([0, 1, 255], dtype=torch.uint8)[
        torch.randint(0, 3, (65_537,), generator=g)]
    crossing = TWO31 - pixels  # class 1's element offset passes 2^31 at this pixel
    for begin, end in ((0, 2 ** 23), (crossing - 2 ** 22, crossing + 2 ** 22),
                       (pixels - 2 ** 24, pixels)):
        _fill_pattern(target[0, begin:end], label_pattern)
    class_weights = torch.tensor([0.7, 1.9])
    big_report["sizes"] = (f"input 1x2x{pixels} float16 ({2 * pixels} elements, "
                           f"{4 * pixels / GiB:.2f} GiB), target uint8")

    sums = torch.ops.segloss._dice_sums(x, target, "softmax", 1.0, 255, None)
    mean, divisor = torch.ops.segloss._weighted_cross_entropy(x, target, None, class_weights,
                                                              255, "mean")
    want_sums = torch.zeros(2, 3, dtype=torch.float64)
    nll_sum, counted = 0.0, 0
    for a, b in _chunks(pixels, CHUNK // 2):
        xc, tc = x[0, :, a:b].float(), target[0, a:b].long()
        valid = tc != 255
        safe = torch.where(valid, tc, 0)
        p = torch.softmax(xc, 0)
        for c in range(2):
            yc = (safe == c) & valid
            want_sums[c, 0] += float((p[c] * yc).sum(dtype=torch.float64))
            want_sums[c, 1] += float((p[c] * valid).sum(dtype=torch.float64))
            want_sums[c, 2] += float(yc.sum())
        nll = -torch.log_softmax(xc, 0).gather(0, safe[None])[0]
        nll_sum += float((class_weights[safe] * nll * valid).sum(dtype=torch.float64))
        counted += int(valid.sum())
    torch.testing.assert_close(sums[0].double(), want_sums, rtol=1e-5, atol=0)
    assert float(divisor) == pytest.approx(counted, rel=1e-7)
    expected_mean = nll_sum / counted
    assert abs(float(mean) - expected_mean) <= 2 ** -10 * expected_mean

    x.requires_grad_()
    loss_sum, _ = torch.ops.segloss._weighted_cross_entropy(x, target, None, class_weights,
                                                            255, "sum")
    (grad,) = torch.autograd.grad(loss_sum, x)
    x.requires_grad_(False)
    # softmax - 1 for the true class in float32: an absolute error of about
    # eps(float32) times the class weight.
    worst = _Worst(rtol=2 ** -10, atol=2 * torch.finfo(torch.float32).eps * 1.9)
    for a, b in _chunks(pixels, CHUNK // 2):
        xc, tc = x[0, :, a:b].float(), target[0, a:b].long()
        valid = tc != 255
        safe = torch.where(valid, tc, 0)
        onehot = torch.stack([safe == 0, safe == 1]).float()
        want = (torch.softmax(xc, 0) - onehot) * (class_weights[safe] * valid)
        for c in range(2):
            worst.add(grad[0, c, a:b], want[c], c * pixels + a)
    big_report["result"] = (f"sums ok, divisor {float(divisor):.0f} vs {counted}, mean "
                            f"{float(mean):.5g} vs {expected_mean:.5g}, gradient max excess "
                            f"{worst.excess:.2g}")
    worst.check("gradient")


def _row_and_column(rows: int, cols: int, r: int, c: int) -> np.ndarray:
    """uint8 instances: 1 is row r, 2 is column c (but for (r, c), which is 1)."""
    labels = np.zeros((rows, cols), np.uint8)
    labels[:, c] = 2
    labels[r, :] = 1
    return labels


def _row_and_column_distances(r0: int, r1: int, cols: int, r: int, c: int):
    """Exact (to the row, to the column) distances of rows [r0, r1) of
    _row_and_column; the column lacks (r, c), so on row r it is one row away."""
    y = np.arange(r0, r1, dtype=np.float64)[:, None]
    x = np.arange(cols, dtype=np.float64)[None, :]
    to_row = np.broadcast_to(np.abs(y - r), (r1 - r0, cols))
    dx = np.abs(x - c)
    to_column = np.where(y == r, np.sqrt(dx * dx + 1), np.broadcast_to(dx, (r1 - r0, cols)))
    return to_row, to_column


@big
def test_big_distance_transforms_on_151_million_pixels(big_report):
    """The NumPy transforms and weight map and the torch weight-map op on a
    12289 x 12301 uint8 map (their pair buffer is 4.5 GiB: byte offsets past
    2^32) of two instances, a full row and a full column, whose distances
    are exact integers (or sqrt(k^2 + 1)): d1, d2 and the EDT bit for bit,
    the float32 weight maps to 2 ulps."""
    big_report["need"](7.5)
    rows, cols, r, c = 12289, 12301, 4097, 8191
    labels = _row_and_column(rows, cols, r, c)
    sigma, w0 = 3000.0, 10.0
    foreground = rows + cols - 1
    total = rows * cols
    balanced = (total / (2 * (total - foreground)), total / (2 * foreground))
    big_report["sizes"] = f"labels {rows}x{cols} = {total} uint8 pixels"
    mismatches = []

    def weights(r0, r1, class_weight):
        to_row, to_column = _row_and_column_distances(r0, r1, cols, r, c)
        d1, d2 = np.minimum(to_row, to_column), np.maximum(to_row, to_column)
        block = labels[r0:r1]
        w = np.where(block == 0, class_weight[0], class_weight[1])
        return (w + np.where(block == 0, w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma ** 2)),
                             0.0)).astype(np.float32)

    d1, d2 = snp.two_nearest_distances(labels, threads=2)
    for r0, r1 in _chunks(rows, 256):
        to_row, to_column = _row_and_column_distances(r0, r1, cols, r, c)
        if not (np.array_equal(d1[r0:r1], np.minimum(to_row, to_column))
                and np.array_equal(d2[r0:r1], np.maximum(to_row, to_column))):
            mismatches.append(("two_nearest_distances", r0))
    del d1, d2

    edt = snp.distance_transform_edt(labels == 0, threads=2)
    for r0, r1 in _chunks(rows, 256):
        to_row, to_column = _row_and_column_distances(r0, r1, cols, r, c)
        exact = np.minimum(to_row, np.broadcast_to(np.abs(np.arange(cols) - c), to_row.shape))
        if not np.array_equal(edt[r0:r1], exact):
            mismatches.append(("distance_transform_edt", r0))
    del edt

    for name, compute, class_weight in (
            ("numpy.unet_weight_map(balanced)",
             lambda: snp.unet_weight_map(labels, w0=w0, sigma=sigma, class_weights="balanced",
                                         threads=2), balanced),
            ("torch unet_weight_map",
             lambda: segloss.unet_weight_map(torch.from_numpy(labels)[None], w0=w0,
                                             sigma=sigma)[0].numpy(), (1.0, 1.0))):
        got = compute()
        for r0, r1 in _chunks(rows, 256):
            want = weights(r0, r1, class_weight)
            if not np.allclose(got[r0:r1], want, rtol=2.5e-7, atol=0):
                mismatches.append((name, r0))
        del got
    big_report["result"] = "all exact" if not mismatches else f"mismatches {mismatches[:5]}"
    assert not mismatches


def test_label_views_with_element_offsets_past_2_32():
    """uint8 instance maps that are strided views into a 4 GiB buffer (offsets
    up to 4.3e9 elements; only the written pages become resident): the NumPy
    functions and the torch ops against SciPy and the weight formula."""
    rows, cols = 2 ** 17 + 1, 32771
    try:
        buffer = np.zeros((rows, cols), np.uint8)
    except MemoryError:
        pytest.skip("cannot reserve a 4 GiB (lazily mapped) buffer here")
    view = buffer[::256, ::64]
    assert view.shape == (513, 513)
    last = (view.shape[0] - 1) * view.strides[0] + (view.shape[1] - 1) * view.strides[1]
    assert last > 2 ** 32
    view[...] = random_disks(view.shape, 40, np.random.default_rng(6)).astype(np.uint8)
    dense = np.ascontiguousarray(view)
    ids, distances = scipy_per_instance(dense)
    e1, e2 = two_nearest_from(distances, dense.shape)
    expected_weights = unet_weight_formula(dense, e1, e2)

    d1, d2 = snp.two_nearest_distances(view)
    np.testing.assert_array_equal(d1, e1)
    np.testing.assert_array_equal(d2, e2)
    np.testing.assert_allclose(snp.unet_weight_map(view, threads=2), expected_weights,
                               rtol=1e-6, atol=0)
    np.testing.assert_array_equal(snp.distance_transform_edt(view),
                                  ndimage.distance_transform_edt(dense))
    labels = torch.from_numpy(view)[None]
    assert labels.stride()[1:] == (256 * cols, 64)
    t1, t2 = segloss.two_nearest_distances(labels)
    np.testing.assert_array_equal(t1[0].numpy(), e1)
    np.testing.assert_array_equal(t2[0].numpy(), e2)
    np.testing.assert_allclose(segloss.unet_weight_map(labels)[0].numpy(), expected_weights,
                               rtol=1e-6, atol=0)


# --------------------------------------------------------------------------
# E. Misaligned memory: tensors viewed from a byte offset (torch.from_numpy of
# a NumPy view, torch.frombuffer) are copied before the kernels read whole
# elements from them. Normally the results only have to equal the aligned
# run's; under scripts/sanitize, UBSan also fails any misaligned load.

def misaligned(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy of `tensor` whose data starts one byte past an 8-aligned
    address (and so is aligned for no element size above 1)."""
    data = tensor.detach().contiguous().numpy()
    raw = np.zeros(data.nbytes + 16, np.uint8)
    start = (-raw.ctypes.data) % 8 + 1
    view = raw[start:start + data.nbytes].view(data.dtype).reshape(data.shape)
    view[...] = data
    out = torch.from_numpy(view)
    assert out.data_ptr() % 8 == 1 and torch.equal(out, tensor.detach())
    return out


def _misalignment_cases():
    g = torch.Generator().manual_seed(6)
    x = make_dice_input("softmax", SHAPE, g, torch.float32)
    probabilities = torch.sigmoid(x)
    soft = make_target(SHAPE, g, torch.float32)
    classes = make_labels((2,) + SHAPE[2:], 3, g)
    instances = _instances((2,) + SHAPE[2:], 3, dtype=torch.int64)
    weight_map = segloss.unet_weight_map(instances)
    weight = make_weight("full", SHAPE, g, torch.float32)
    return {
        "bce-logits": (lambda a, t, w: segloss.binary_cross_entropy_with_logits(
            a, t, weight=w, pos_weight=w), (x, soft, weight)),
        "bce-probability": (lambda a, t, w: segloss.binary_cross_entropy(a, t, weight=w),
                            (probabilities, soft, weight)),
        "dice-soft": (lambda a, t, m: segloss.dice_loss(a, t, mask=m),
                      (x, soft, soft[:, :1].contiguous())),
        "dice_ce-labels": (lambda a, t, w: segloss.dice_ce_loss(a, t, class_weights=w),
                           (x, classes, torch.tensor([0.5, 1.0, 2.0]))),
        "shape_aware-multiclass": (lambda a, t, w: segloss.shape_aware_loss(
            a, t, weight_map=w), (x, classes, weight_map)),
        "shape_aware-binary": (lambda a, t, w: segloss.shape_aware_loss(
            a, t, weight_map=w), (x[:, :1].contiguous(), soft[:, :1].contiguous(),
                                  weight_map.unsqueeze(1))),
        "two_nearest_distances": (lambda labels: segloss.two_nearest_distances(
            labels, return_labels=True), (instances,)),
        "unet_weight_map": (lambda labels, w: segloss.unet_weight_map(
            labels, class_weights=w), (instances, weight_map)),
    }


MISALIGNMENT_CASES = _misalignment_cases()


@pytest.mark.parametrize("case", list(MISALIGNMENT_CASES))
def test_misaligned_tensors_give_the_aligned_results(case):
    run, args = MISALIGNMENT_CASES[case]

    def results(tensors):
        leaf = tensors[0]
        if leaf.is_floating_point():
            leaf = leaf.detach().requires_grad_()
        out = run(leaf, *tensors[1:])
        out = out if isinstance(out, tuple) else (out,)
        if leaf.requires_grad:
            out += torch.autograd.grad(out[0].sum(), leaf)
        return tuple(o.detach() for o in out)

    want = results(args)
    got = results(tuple(misaligned(a) for a in args))
    assert _same(got, want)
