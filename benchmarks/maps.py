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
  edt boundary         edt.edt(mask + 1, parallel=1): the boundary map in one edt call (it
                       gives each pixel its distance to the nearest pixel of another label)

Every segloss map is checked against the SciPy recipe (bit for bit) before
it is timed.

With --device cuda, the torch maps on the GPU instead (round objects: one
512^2 image, a batch of 16, one 128^3 volume; and one small disk in a 2048^2
image), float32 maps as the losses use
them, against the torch op on the CPU with all its threads and, where CuPy is
installed, MONAI's recipe on cupyx.scipy.ndimage.distance_transform_edt:
  segloss GPU signed / boundary   segloss.signed_distance_map(mask) on the GPU
  segloss CPU signed              the same op on the CPU (every thread)
  cupy signed                     where(m, 1 - edt(m), edt(~m)) on the GPU
The GPU maps are compared with the CPU op's (bit for bit) before they are
timed; a mismatch is printed and marked in the table.
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
              "scipy signed", "edt signed", "edt boundary"]
RATIOS = [("edt", "segloss EDT"), ("scipy EDT", "segloss EDT"), ("scipy signed", "segloss signed"),
          ("edt signed", "segloss signed"), ("edt boundary", "segloss boundary")]


def case_name(shape, kind) -> str:
    return "x".join(map(str, shape)) + "/" + kind


def mask_of(shape, kind, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.random(shape) < 0.5
    if kind == "object":  # one small disk: the CUDA searches' long case (GPU runs)
        grid = np.ogrid[tuple(slice(0, s) for s in shape)]
        centre = [rng.uniform(0, s) for s in shape]
        return sum((g - c) ** 2 for g, c in zip(grid, centre)) < 8.0 ** 2
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
    parser.add_argument("--device", default="cpu",
                        help="cuda: the torch maps on the GPU against the CPU op and CuPy")
    # The runner suites share run.py's passthrough options: those of the
    # distance suite (--skip-recipe) are ignored here.
    args, _ = parser.parse_known_args(argv)
    if args.device != "cpu":
        gpu_main(args, torch.device(args.device))
        return
    if args.cases and not any(name in names for name in args.cases):
        args.cases = None  # only the distance suite's names: every case
    try:
        import edt
    except ImportError:
        edt = None
        print("note: the edt package is not installed; its columns are skipped")
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
            candidates = {
                "segloss EDT": lambda: snp.distance_transform_edt(m8),
                "scipy EDT": lambda: ndimage.distance_transform_edt(m8),
                "segloss signed": lambda: snp.signed_distance_map(m8),
                "segloss boundary": lambda: snp.boundary_distance_map(m8),
                "scipy signed": lambda: scipy_signed(mask),
            }
            if edt is not None:
                inverse = (~mask).astype(np.uint8)
                two_class = m8 + 1  # background 1, foreground 2: both are labels to edt
                # edt computes in float32: the same map to float32's rounding.
                np.testing.assert_allclose(edt.edt(two_class, parallel=1),
                                           snp.boundary_distance_map(m8), rtol=2e-7, err_msg=name)
                candidates["edt"] = lambda: edt.edt(m8, parallel=1)
                candidates["edt signed"] = lambda: np.where(
                    mask, 1 - edt.edt(m8, parallel=1), edt.edt(inverse, parallel=1))
                candidates["edt boundary"] = lambda: edt.edt(two_class, parallel=1)
            row.ms.update(harness.interleaved_median_ms(candidates, CPU, warmup=1,
                                                        repeats=args.repeats))
            rows[name] = row
            print(f"{name:18s} " + "  ".join(f"{k} {v:.2f}" for k, v in row.ms.items()),
                  flush=True)

    what = (f"one call per candidate, one thread, median of {args.repeats} rounds (each "
            f"candidate once per round); time in ms")
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


# (name, images, shape); 2048x2048/object: one small disk, where a pixel's
# search would cross most of its line without the skipped blocks.
GPU_CASES = [("512x512/disks", 1, (512, 512)), ("16x512x512/disks", 16, (512, 512)),
             ("128x128x128/disks", 1, (128, 128, 128)), ("2048x2048/object", 1, (2048, 2048))]
GPU_CANDIDATES = ["segloss GPU signed", "segloss GPU boundary", "segloss CPU signed",
                  "cupy signed"]
GPU_RATIOS = [("segloss CPU signed", "segloss GPU signed"), ("cupy signed", "segloss GPU signed")]


def gpu_main(args, device: torch.device) -> None:
    import segloss
    try:
        import cupy
        from cupyx.scipy import ndimage as cupy_ndimage
    except ImportError:
        cupy = None
        print("note: CuPy is not installed; its column is skipped")
    chosen = [name for name, _, _ in GPU_CASES if name in (args.cases or [])]
    rows: Dict[str, harness.Row] = {}
    for name, images, shape in GPU_CASES:
        if chosen and name not in chosen:
            continue
        kind = name.split("/")[1]
        masks = np.stack([mask_of(shape, kind, seed) for seed in range(images)])
        cpu_mask = torch.from_numpy(masks)
        gpu_mask = cpu_mask.to(device)
        spatial = len(shape)
        expected = segloss.signed_distance_map(cpu_mask, spatial_dims=spatial)
        equal = torch.equal(segloss.signed_distance_map(gpu_mask, spatial_dims=spatial).cpu(),
                            expected)
        equal &= torch.equal(segloss.boundary_distance_map(gpu_mask, spatial_dims=spatial).cpu(),
                             segloss.boundary_distance_map(cpu_mask, spatial_dims=spatial))
        if not equal:
            print(f"MISMATCH: {name}: the GPU maps differ from the CPU op's", flush=True)
        row = harness.Row(case=kind if equal else f"{kind} (GPU != CPU!)", shape=[images, *shape],
                          dtype="bool")
        gpu_time = lambda fn: harness.median_ms(fn, device, warmup=2, repeats=args.repeats)  # noqa: E731
        row.ms["segloss GPU signed"] = gpu_time(
            lambda: segloss.signed_distance_map(gpu_mask, spatial_dims=spatial))
        row.ms["segloss GPU boundary"] = gpu_time(
            lambda: segloss.boundary_distance_map(gpu_mask, spatial_dims=spatial))
        row.ms["segloss CPU signed"] = harness.median_ms(
            lambda: segloss.signed_distance_map(cpu_mask, spatial_dims=spatial), CPU, warmup=1,
            repeats=args.repeats)
        if cupy is not None:
            cupy_masks = cupy.asarray(masks)

            def cupy_signed():
                for m in cupy_masks:  # per image, as MONAI's recipe runs
                    cupy.where(m, 1 - cupy_ndimage.distance_transform_edt(m),
                               cupy_ndimage.distance_transform_edt(~m))
            row.ms["cupy signed"] = gpu_time(cupy_signed)
        rows[name] = row
        print(f"{name:18s} " + "  ".join(f"{k} {v:.3f}" for k, v in row.ms.items()), flush=True)
    what = (f"one call per candidate, median of {args.repeats}; time in ms; the CPU op with "
            f"{torch.get_num_threads()} threads")
    print(f"\nmaps on {harness.machine_description(device)}, {time.strftime('%Y-%m-%d')}; {what}")
    candidates = [c for c in GPU_CANDIDATES if any(c in row.ms for row in rows.values())]
    ratios = [(a, b) for a, b in GPU_RATIOS if a in candidates and b in candidates]
    print(harness.markdown_table(list(rows.values()), candidates, ratios))
    out = os.path.join(args.out_dir, f"maps-time-{device.type}.json")
    os.makedirs(args.out_dir, exist_ok=True)
    harness.write_json(out, list(rows.values()), device, {"suite": "maps", "what": what})
    print(f"wrote {out}\n")


if __name__ == "__main__":
    main()
