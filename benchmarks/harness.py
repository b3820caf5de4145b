"""A small side-by-side timing harness: every candidate runs in the same
process on the same inputs; we report medians and ratios, never absolute
targets. Used by benchmarks/run.py."""

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _warm_up(fn: Callable[[], object], device: torch.device, warmup: int) -> None:
    # `warmup` calls and at least a quarter second of them: the allocator's
    # and the thread pool's steady state (the first case of a suite read up
    # to 1.4x slow after three calls).
    start = time.perf_counter()
    calls = 0
    while calls < warmup or (calls < 200 and time.perf_counter() - start < 0.25):
        fn()
        calls += 1
    _sync(device)


def _call_ms(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def median_ms(fn: Callable[[], object], device: torch.device, warmup: int = 3,
              repeats: int = 20) -> float:
    """Median wall time of fn() in milliseconds (CUDA events on a GPU), after
    the warm-up."""
    _warm_up(fn, device, warmup)
    return statistics.median(_call_ms(fn, device) for _ in range(repeats))


def interleaved_median_ms(fns: Dict[str, Callable[[], object]], device: torch.device,
                          warmup: int = 3, repeats: int = 20) -> Dict[str, float]:
    """Median wall time of each candidate in milliseconds, their calls
    interleaved: each of `repeats` rounds calls every candidate once, the
    order rotated by one each round (so that no candidate always follows the
    same one). Every candidate then samples the same stretches of the
    machine's state: on the shared 2-core VM, whose speed drifts by 10-30%
    within a minute, ratios of candidates timed in blocks one after another
    moved by as much between runs."""
    for fn in fns.values():
        _warm_up(fn, device, warmup)
    names = list(fns)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            times[name].append(_call_ms(fns[name], device))
    return {name: statistics.median(ms) for name, ms in times.items()}


def _resident_kib() -> Dict[str, int]:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def cpu_memory_measurable() -> bool:
    """Peak resident memory can be reset (Linux /proc/self/clear_refs) and
    freed memory goes back to the OS (glibc with MALLOC_MMAP_THRESHOLD_ set),
    so that the resident high-water mark tracks live allocations."""
    return os.environ.get("MALLOC_MMAP_THRESHOLD_") is not None and os.path.exists(
        "/proc/self/clear_refs")


def rerun_where_memory_is_measurable(script: str, argv: Optional[List[str]]) -> None:
    """For a CPU memory run: unless cpu_memory_measurable(), runs `script`
    again with `argv` (default: this process's arguments) in a child in which
    freed memory goes back to the OS, and exits with the child's status."""
    if cpu_memory_measurable():
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    raise SystemExit(subprocess.call(
        [sys.executable, script, *(sys.argv[1:] if argv is None else argv)], env=env))


# glibc malloc settings under which freed blocks of up to 256 MiB stay in the
# process for reuse (the heap trimmed only past 512 MiB): every timed call
# reuses memory, as repeated calls do in a long-running process, whatever the
# calls before it freed. Left to glibc, the thresholds follow the largest
# block freed so far, and a NumPy call's time depended by 10-20% on which
# candidate ran before it (the distance suite, on the 2-core VM).
STEADY_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20),
                    "MALLOC_TRIM_THRESHOLD_": str(512 << 20)}


def rerun_with_steady_allocator(script: str, argv: Optional[List[str]]) -> bool:
    """For a CPU time run: unless glibc's thresholds are already set (by this
    or by the caller), runs `script` again with `argv` (default: this
    process's arguments) in a child under STEADY_ALLOCATOR and returns True
    (the caller returns; a failing child exits with its status); False where
    the run should go on in this process."""
    if any(key in os.environ for key in STEADY_ALLOCATOR):
        return False
    code = subprocess.call([sys.executable, script, *(sys.argv[1:] if argv is None else argv)],
                           env=dict(os.environ, **STEADY_ALLOCATOR))
    if code != 0:
        raise SystemExit(code)
    return True


def peak_extra_memory_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory in use during fn() beyond what was in use before, in MiB.

    CUDA: the caching allocator's statistics. CPU: the process's resident
    high-water mark, reset through /proc/self/clear_refs (needs
    cpu_memory_measurable()). Call fn() once before, so that one-time
    allocations (compilation, caches) are not counted."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _resident_kib()["VmRSS"]
    fn()
    return (_resident_kib()["VmHWM"] - before) / 1024


@dataclass
class Row:
    case: str
    shape: List[int]
    dtype: str
    ms: Dict[str, float] = field(default_factory=dict)  # candidate -> median ms

    def ratio(self, slower: str, faster: str) -> Optional[float]:
        if slower in self.ms and faster in self.ms and self.ms[faster] > 0:
            return self.ms[slower] / self.ms[faster]
        return None


def machine_description(device: torch.device, torch_threads: bool = True) -> str:
    """The device's name; for the CPU with torch's thread count, or (for
    suites whose candidates do not run on torch's threads) its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if not torch_threads:
        return f"{cpu}, {os.cpu_count()} cores"
    return f"{cpu}, {torch.get_num_threads()} threads"


def markdown_table(rows: List[Row], candidates: List[str], ratios: List[tuple]) -> str:
    header = ["case", "shape", *[c if c.endswith("MiB") else f"{c} ms" for c in candidates],
              *[f"{a} / {b}" for a, b in ratios]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.case, "x".join(map(str, row.shape))]
        cells += [f"{row.ms[c]:.2f}" if c in row.ms else "-" for c in candidates]
        for a, b in ratios:
            r = row.ratio(a, b)
            cells.append(f"{r:.2f}x" if r is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: str, rows: List[Row], device: torch.device, extra: dict,
               torch_threads: bool = True) -> None:
    payload = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_description(device, torch_threads),
        "torch": torch.__version__,
        "device": str(device),
        **extra,
        "rows": [asdict(r) for r in rows],
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
