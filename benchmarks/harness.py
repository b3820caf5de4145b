"""A small side-by-side timing harness: every candidate runs in the same
process on the same inputs; we report medians and ratios, never absolute
targets. Used by benchmarks/run.py."""

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, warmup: int = 3,
              repeats: int = 20) -> float:
    """Median wall time of fn() in milliseconds (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


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


def machine_description(device: torch.device) -> str:
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


def write_json(path: str, rows: List[Row], device: torch.device, extra: dict) -> None:
    payload = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_description(device),
        "torch": torch.__version__,
        "device": str(device),
        **extra,
        "rows": [asdict(r) for r in rows],
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
