"""The plain distance transform and the boundary losses' distance maps on the
CPU, one thread, against SciPy and the `edt` package in the same run.

    python benchmarks/maps.py [--repeats 7] [--cases 512x512/disks ...]
    ./dev bench --suite maps

Candidates (masks of round objects, or of noise at 50%):
  segloss EDT          segloss.numpy.distance_transform_edt(mask)
  edt                  edt.edt(mask, parallel=1), the fastest plain transform we know
  scipy EDT            scipy.ndimage.distance_transform_edt(mask)
  segloss signed       segloss.numpy.signed_distance_map(mask): both classes, one sweep
  segloss boundary     segloss.numpy.boundary_distance_map(mask)
  scipy signed         MONAI's recipe: where(m, -(edt(m) - 1), edt(~m)), two SciPy transforms
  edt signed           the same recipe on two edt.edt transforms

Every segloss map is checked against the SciPy recipe (bit for bit) before
it is timed.
"""

import argparse
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import scipy
from scipy import ndimage

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import segloss.numpy as snp  # noqa: E402
import torch  # noqa: E402  (harness's machine description)

CPU = torch.device("cpu")
SHAPES = [(512, 512), (1024, 1024), (128, 128, 128)]
KINDS = ["disks", "noise"]
CANDIDATES = ["segloss EDT", "edt", "scipy EDT", "segloss signed", "segloss boundary",
              "scipy signed", "edt signed"]
RATIOS = [("edt", "segloss EDT"), ("scipy EDT", "segloss EDT"), ("scipy signed", "segloss signed"),
          ("edt signed", "segloss signed")]


def case_name(shape, kind) -> str:
    return "x".join(map(str, shape)) + "/" + kind


def mask_of(shape, kind, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.random(shape) < 0.5
    # Round objects covering about a third of the image, as cells or organs.
    mask = np.zeros(shape, bool)
    count = 100 if len(shape) == 2 else 60
    radius = 0.3 * (np.prod(shape) / count) ** (1 / len(shape))
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    for _ in range(count):
        centre = [rng.uniform(0, s) for s in shape]
        r = radius * rng.uniform(0.6, 1.2)
        mask |= sum((g - c) ** 2 for g, c in zip(grid, centre)) < r * r
    return mask


def scipy_signed(m):
    return np.where(m, -(ndimage.distance_transform_edt(m) - 1), ndimage.distance_transform_edt(~m))


def main(argv: Optional[List[str]] = None) -> None:
    names = [case_name(s, k) for s in SHAPES for k in KINDS]
    parser = argparse.ArgumentParser(prog="maps.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cases", action="append", metavar="NAME",
                        help=f"run only these cases (repeatable): {', '.join(names)}; other "
                             "names (the distance suite's) are ignored")
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--device", default="cpu", help="cpu only (the maps' GPU timings run "
                                                        "through scripts/gpu_check)")
    # The runner suites share run.py's passthrough options: those of the
    # distance suite (--skip-recipe) are ignored here.
    args, _ = parser.parse_known_args(argv)
    if args.device != "cpu":
        print(f"maps: the CPU transforms only; skipped on {args.device} (the GPU maps run in "
              "the CUDA-vs-CPU sweep of scripts/gpu_check)")
        return
    if args.cases and not any(name in names for name in args.cases):
        args.cases = None  # only the distance suite's names: every case
    try:
        import edt
    except ImportError:
        edt = None
        print("note: the edt package is not installed; its columns are skipped")
    time_it = lambda fn: harness.median_ms(fn, CPU, warmup=1, repeats=args.repeats)  # noqa: E731

    rows: Dict[str, harness.Row] = {}
    for shape in SHAPES:
        for kind in KINDS:
            name = case_name(shape, kind)
            if args.cases and name not in args.cases:
                continue
            mask = mask_of(shape, kind)
            # uint8, as edt prefers it; every candidate gets the same array.
            m8 = mask.astype(np.uint8)
            assert np.array_equal(snp.signed_distance_map(m8), scipy_signed(mask)), name
            row = harness.Row(case=kind, shape=list(shape), dtype="uint8")
            row.ms["segloss EDT"] = time_it(lambda: snp.distance_transform_edt(m8))
            row.ms["scipy EDT"] = time_it(lambda: ndimage.distance_transform_edt(m8))
            row.ms["segloss signed"] = time_it(lambda: snp.signed_distance_map(m8))
            row.ms["segloss boundary"] = time_it(lambda: snp.boundary_distance_map(m8))
            row.ms["scipy signed"] = time_it(lambda: scipy_signed(mask))
            if edt is not None:
                inverse = (~mask).astype(np.uint8)
                row.ms["edt"] = time_it(lambda: edt.edt(m8, parallel=1))
                row.ms["edt signed"] = time_it(lambda: np.where(
                    mask, 1 - edt.edt(m8, parallel=1), edt.edt(inverse, parallel=1)))
            rows[name] = row
            print(f"{name:18s} " + "  ".join(f"{k} {v:.2f}" for k, v in row.ms.items()),
                  flush=True)

    what = f"one call per candidate, one thread, median of {args.repeats}; time in ms"
    print(f"\nmaps: {harness.machine_description(CPU, torch_threads=False)}, "
          f"{time.strftime('%Y-%m-%d')}, numpy {np.__version__}, scipy {scipy.__version__}; "
          f"{what}")
    candidates = [c for c in CANDIDATES if any(c in row.ms for row in rows.values())]
    ratios = [(a, b) for a, b in RATIOS if a in candidates and b in candidates]
    print(harness.markdown_table(list(rows.values()), candidates, ratios))
    out = os.path.join(args.out_dir, "maps-time-cpu.json")
    os.makedirs(args.out_dir, exist_ok=True)
    harness.write_json(out, list(rows.values()), CPU, {"suite": "maps", "what": what},
                       torch_threads=False)
    print(f"wrote {out}\n")


if __name__ == "__main__":
    main()
