"""CPU timings of the exact two-nearest-instance distance transform and the
U-Net weight map (segloss.numpy) against the references, in the same run on
the same synthetic cell images.

    python benchmarks/distance.py                        # every case, 10 repeats
    python benchmarks/distance.py --repeats 3 --cases 512x512/100 --cases 128x128x128/100
    python benchmarks/distance.py --skip-recipe          # without the slow per-instance recipe
    python benchmarks/run.py --suite distance --repeats 3 --skip-recipe

Through run.py, --repeats and --out-dir are run.py's own options and are
passed on; every option run.py does not know (--skip-recipe, --cases) is
passed through to this runner unchanged.

Candidates per case (one thread unless stated):
  segloss d1,d2        snp.two_nearest_distances(labels)
  segloss weight map   snp.unet_weight_map(labels)
  scipy EDT            one scipy.ndimage.distance_transform_edt(labels == 0), the
                       yardstick: one plain distance transform of the same image
  edt                  edt.edt(labels == 0, parallel=1), the fastest plain
                       distance transform we know (skipped if not installed)
  per-instance SciPy   the usual recipe for the weight map: one SciPy distance
                       transform per instance, running min-2, then the formula
                       (timed once: it is slow)
  segloss 2 threads    snp.two_nearest_distances(labels, threads=2)

With --device cuda, also the torch ops on the GPU (the image as a batch of one):
  segloss CUDA d1,d2       segloss.two_nearest_distances(labels)
  segloss CUDA weight map  segloss.unet_weight_map(labels)
  segloss CPU op d1,d2     the same op on the CPU, every torch thread (the
                           GPU machine's CPU path)
  ... x16                  the same two on a batch of 16 such images (2D cases)
  cupy EDT                 one cupyx.scipy.ndimage.distance_transform_edt of the
                           background on the GPU (where CuPy is installed)
  copy                     a device-to-device copy of the labels and of two
                           float64 images (what d1, d2 write): the bandwidth
                           yardstick
  segloss CUDA d1,d2 MiB   its peak extra GPU memory

With --memory (CPU), instead of time: each candidate's peak extra resident
memory during one call, outputs included, in a child process whose freed
memory goes back to the OS (harness.peak_extra_memory_mib):
  segloss d1,d2, segloss weight map, scipy EDT, edt (as above)

The candidates' calls are interleaved (harness.interleaved_median_ms: each
round calls every candidate once), so that each ratio compares the same
stretches of the machine's state. Time runs go on in a child process under
harness.STEADY_ALLOCATOR (unless MALLOC_MMAP_THRESHOLD_ or
MALLOC_TRIM_THRESHOLD_ is set already): glibc keeps freed memory for reuse,
so that no candidate's time depends on what the candidates before it freed.

Prints a markdown table and writes <out-dir>/distance-time-cpu.json (or
distance-time-cuda.json, distance-memory-cpu.json).
"""

import argparse
import importlib.metadata
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import scipy
from scipy import ndimage

import torch  # only for harness's timing helpers and device descriptions

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

import segloss.numpy as snp  # noqa: E402

CPU = torch.device("cpu")
W0, SIGMA = 10.0, 5.0  # unet_weight_map's defaults, used by the recipe too

# (shape, number of cells); a case's name is "512x512/25".
# 512x512/2: two large cells, so that most pixels' second-nearest cell is far
# (the CUDA passes' pixel search is longest there).
CASES: List[Tuple[Tuple[int, ...], int]] = [
    ((512, 512), 2),
    ((512, 512), 25),
    ((512, 512), 100),
    ((512, 512), 400),
    ((1024, 1024), 300),
    ((128, 128, 128), 100),
]

CANDIDATES = ["segloss d1,d2", "segloss weight map", "scipy EDT", "edt", "per-instance SciPy",
              "segloss 2 threads", "segloss CUDA d1,d2", "segloss CUDA weight map", "copy",
              "segloss CUDA d1,d2 MiB", "segloss CPU op d1,d2", "segloss CUDA d1,d2 x16",
              "segloss CPU op d1,d2 x16", "cupy EDT"]
RATIOS = [("scipy EDT", "segloss d1,d2"), ("per-instance SciPy", "segloss weight map"),
          ("segloss d1,d2", "segloss 2 threads"), ("segloss d1,d2", "edt"),
          ("segloss d1,d2", "segloss CUDA d1,d2"), ("segloss CUDA d1,d2", "copy"),
          ("segloss CPU op d1,d2", "segloss CUDA d1,d2"),
          ("segloss CPU op d1,d2 x16", "segloss CUDA d1,d2 x16"),
          ("cupy EDT", "segloss CUDA d1,d2")]


def case_name(shape: Tuple[int, ...], n: int) -> str:
    return f"{'x'.join(map(str, shape))}/{n}"


def cells(shape: Tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    """An int32 instance map of n roughly round cells (ids 1..n) on background 0.

    Disks (balls in 3D) with uniform random centres and radii
    0.35 * (pixels / n) ** (1 / ndim) * U(0.6, 1); a later cell does not
    overwrite an earlier one (so an id can be missing if its disk is covered).
    Only each disk's bounding box is touched."""
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    labels = np.zeros(shape, np.int32)
    scale = 0.35 * (np.prod(shape) / n) ** (1 / len(shape))
    centres = rng.uniform(0, shape, size=(n, len(shape)))
    radii = scale * rng.uniform(0.6, 1.0, size=n)
    for i, (centre, r) in enumerate(zip(centres, radii), start=1):
        lo = np.maximum(np.floor(centre - r).astype(int), 0)
        hi = np.minimum(np.ceil(centre + r).astype(int) + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        squared = sum((g - c) ** 2 for g, c in zip(np.ogrid[box], centre))
        view = labels[box]
        view[(squared <= r * r) & (view == 0)] = i
    return labels


def per_instance_recipe(labels: np.ndarray, w0: float = W0, sigma: float = SIGMA) -> np.ndarray:
    """The usual U-Net weight map recipe: one SciPy distance transform per
    instance, keeping the two smallest distances per pixel (a running min-2,
    cheaper than stacking and sorting), then the weight on background pixels."""
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for i in np.unique(labels):
        if i == 0:
            continue
        d = ndimage.distance_transform_edt(labels != i)
        larger = np.maximum(d1, d)
        np.minimum(d1, d, out=d1)
        np.minimum(d2, larger, out=d2)
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return np.where(labels == 0, 1.0 + border, 1.0).astype(np.float32)


def import_edt():
    try:
        import edt
    except ImportError:
        return None
    return edt


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def once_ms(fn) -> Tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return (time.perf_counter() - t0) * 1e3, result


def time_gpu(row: "harness.Row", labels: np.ndarray, n_cells: int, device: torch.device,
             repeats: int) -> None:
    """The torch ops on the GPU, the copy yardstick, the op's peak memory, and
    the op on the CPU (every torch thread); in 2D also on batches of 16."""
    import segloss

    batch = torch.from_numpy(labels)[None].to(device)
    outputs = [torch.empty(batch.shape, dtype=torch.float64, device=device) for _ in range(2)]
    time_it = lambda fn: harness.median_ms(fn, device, warmup=2, repeats=repeats)  # noqa: E731
    row.ms["segloss CUDA d1,d2"] = time_it(lambda: segloss.two_nearest_distances(batch))
    row.ms["segloss CUDA weight map"] = time_it(lambda: segloss.unet_weight_map(batch))
    row.ms["copy"] = time_it(lambda: (batch.clone(), [o.clone() for o in outputs]))
    row.ms["segloss CUDA d1,d2 MiB"] = harness.peak_extra_memory_mib(
        lambda: segloss.two_nearest_distances(batch), device)
    cpu_time = lambda fn: harness.median_ms(fn, CPU, warmup=1, repeats=repeats)  # noqa: E731
    on_cpu = batch.cpu()
    row.ms["segloss CPU op d1,d2"] = cpu_time(lambda: segloss.two_nearest_distances(on_cpu))
    try:
        import cupy
        from cupyx.scipy import ndimage as cupy_ndimage
        background = cupy.asarray(labels == 0)
        row.ms["cupy EDT"] = time_it(lambda: cupy_ndimage.distance_transform_edt(background))
    except ImportError:
        pass
    if labels.ndim == 2:  # a batch of 16 different images of this kind
        stack = np.stack([labels] + [cells(labels.shape, n_cells, seed)
                                     for seed in range(1, 16)])
        batch16, on_cpu16 = torch.from_numpy(stack).to(device), torch.from_numpy(stack)
        row.ms["segloss CUDA d1,d2 x16"] = time_it(lambda: segloss.two_nearest_distances(batch16))
        row.ms["segloss CPU op d1,d2 x16"] = cpu_time(
            lambda: segloss.two_nearest_distances(on_cpu16))


def selected_cases(names: Optional[List[str]]):
    """(name, shape, cells, labels, background) of each case in `names` (all
    if None)."""
    for shape, n in CASES:
        name = case_name(shape, n)
        if not names or name in names:
            labels = cells(shape, n, seed=0)
            yield name, shape, n, labels, labels == 0


def memory_main(args: argparse.Namespace) -> None:
    """Peak extra memory of one call of each CPU candidate, in MiB."""
    edt = import_edt()
    rows: List[harness.Row] = []
    for name, shape, n, labels, background in selected_cases(args.cases):
        candidates = {"segloss d1,d2": lambda: snp.two_nearest_distances(labels),
                      "segloss weight map": lambda: snp.unet_weight_map(labels),
                      "scipy EDT": lambda: ndimage.distance_transform_edt(background)}
        if edt is not None:
            candidates["edt"] = lambda: edt.edt(background, parallel=1)
        row = harness.Row(case=f"{n} cells", shape=list(shape), dtype="int32")
        for label, fn in candidates.items():
            fn()  # one-time allocations are not counted
            row.ms[f"{label} MiB"] = harness.peak_extra_memory_mib(fn, CPU)
        rows.append(row)
        print(f"{name:18s} " + "  ".join(f"{k} {v:.1f}" for k, v in row.ms.items()), flush=True)
    what = "peak extra resident memory of one call (outputs included), int32 labels, MiB"
    print(f"\ndistance memory: {harness.machine_description(CPU, torch_threads=False)}, "
          f"{time.strftime('%Y-%m-%d')}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"edt {version('edt')}; {what}")
    columns = [c for c in ["segloss d1,d2 MiB", "segloss weight map MiB", "scipy EDT MiB",
                           "edt MiB"] if any(c in row.ms for row in rows)]
    ratios = [(a, b) for a, b in [("scipy EDT MiB", "segloss d1,d2 MiB"),
                                  ("scipy EDT MiB", "segloss weight map MiB")]
              if a in columns and b in columns]
    print(harness.markdown_table(rows, columns, ratios))
    out = os.path.join(args.out_dir, "distance-memory-cpu.json")
    os.makedirs(args.out_dir, exist_ok=True)
    harness.write_json(out, rows, CPU, {"suite": "distance", "what": what,
                                        "numpy": np.__version__, "scipy": scipy.__version__,
                                        "edt": version("edt")}, torch_threads=False)
    print(f"wrote {out}\n")


def main(argv: Optional[List[str]] = None) -> None:
    names = [case_name(shape, n) for shape, n in CASES]
    parser = argparse.ArgumentParser(prog="distance.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-recipe", action="store_true",
                        help="skip the (slow) per-instance SciPy recipe")
    parser.add_argument("--cases", action="append", choices=names, metavar="NAME",
                        help=f"run only these cases (repeatable): {', '.join(names)}")
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--device", default="cpu",
                        help="cuda: also time the torch ops on the GPU")
    parser.add_argument("--memory", action="store_true",
                        help="peak extra memory of one call instead of time (CPU)")
    args = parser.parse_args(argv)
    if args.memory:
        harness.rerun_where_memory_is_measurable(__file__, argv)
        return memory_main(args)
    if harness.rerun_with_steady_allocator(__file__, argv):
        return
    gpu = torch.device(args.device) if args.device != "cpu" else None

    edt = import_edt()
    if edt is None:
        print("note: the edt package is not installed; the edt column is skipped")

    rows: Dict[str, harness.Row] = {}  # case name -> row
    checks: Dict[str, bool] = {}
    for name, shape, n, labels, background in selected_cases(args.cases):
        row = harness.Row(case=f"{n} cells", shape=list(shape), dtype="int32")
        candidates = {
            "segloss d1,d2": lambda: snp.two_nearest_distances(labels),
            "segloss weight map": lambda: snp.unet_weight_map(labels),
            "scipy EDT": lambda: ndimage.distance_transform_edt(background),
            "segloss 2 threads": lambda: snp.two_nearest_distances(labels, threads=2),
        }
        if edt is not None:
            candidates["edt"] = lambda: edt.edt(background, parallel=1)
        row.ms.update(harness.interleaved_median_ms(candidates, CPU, warmup=1,
                                                    repeats=args.repeats))
        if not args.skip_recipe:
            row.ms["per-instance SciPy"], recipe = once_ms(lambda: per_instance_recipe(labels))
            ours = snp.unet_weight_map(labels, w0=W0, sigma=SIGMA)
            checks[name] = bool(np.allclose(recipe, ours, rtol=1e-5))
        if gpu is not None:
            time_gpu(row, labels, n, gpu, args.repeats)
        rows[name] = row
        print(f"{name:18s} " + "  ".join(f"{k} {v:.2f}" for k, v in row.ms.items()), flush=True)
        if name in checks:
            if checks[name]:
                print(f"{name:18s} check: the recipe's weight map equals segloss's (rtol 1e-5)")
            else:
                print(f"\n!!! WARNING {name}: the per-instance recipe's weight map differs from "
                      f"segloss's (np.allclose rtol 1e-5 fails); the comparison is not apples "
                      f"to apples !!!\n", flush=True)

    recipe_note = "" if args.skip_recipe else "; per-instance SciPy: 1 run"
    what = (f"one call per candidate on int32 labels, one thread unless stated, median of "
            f"{args.repeats} rounds (each candidate once per round){recipe_note}; time in ms")
    gpu_name = "" if gpu is None else f", GPU {harness.machine_description(gpu)}"
    print(f"\ndistance: {harness.machine_description(CPU, torch_threads=False)}{gpu_name}, "
          f"{time.strftime('%Y-%m-%d')}, "
          f"numpy {np.__version__}, scipy {scipy.__version__}, edt {version('edt')}; {what}")
    candidates = [c for c in CANDIDATES if any(c in row.ms for row in rows.values())]
    ratios = [(a, b) for a, b in RATIOS if a in candidates and b in candidates]
    print(harness.markdown_table(list(rows.values()), candidates, ratios))

    cell_count_ratio = None
    if "512x512/25" in rows and "512x512/400" in rows:
        cell_count_ratio = (rows["512x512/400"].ms["segloss d1,d2"] /
                            rows["512x512/25"].ms["segloss d1,d2"])
        print(f"\n512x512: segloss d1,d2 ms (400 cells) / (25 cells) = {cell_count_ratio:.2f}")
    if checks:
        failed = [k for k, ok in checks.items() if not ok]
        print("recipe check: " + (f"FAILED for {', '.join(failed)}" if failed else
                                  "the recipe's weight map equals segloss's in every case"))

    out = os.path.join(args.out_dir, f"distance-time-{'cpu' if gpu is None else gpu.type}.json")
    os.makedirs(args.out_dir, exist_ok=True)
    harness.write_json(out, list(rows.values()), CPU, {
        "suite": "distance", "what": what, "numpy": np.__version__,
        "scipy": scipy.__version__, "edt": version("edt"), "recipe_matches": checks,
        "segloss_d1d2_400_over_25_cells_512x512": cell_count_ratio}, torch_threads=False)
    print(f"wrote {out}\n")


if __name__ == "__main__":
    main()
