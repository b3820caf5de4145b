"""Calls every segloss op once on CUDA, forward and backward (the small cases
of tests/op_cases.py, float32): the workload that scripts/gpu_check runs
under compute-sanitizer's memcheck and racecheck, which slow every kernel
down a lot, so the inputs are small.

    python scripts/cuda_ops_once.py [--device cuda] [-k SUBSTRING]
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from op_cases import cases, prepare  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("-k", dest="only", help="only the cases whose name contains this")
    args = parser.parse_args(argv)
    count = 0
    for case in cases():
        if case.large or (args.only and args.only not in case.id):
            continue
        dtype = None if case.dtypes == (None,) else torch.float32
        inputs = prepare(case.make(torch.Generator().manual_seed(0)), case.float_inputs, dtype,
                         args.device)
        outputs = case.run(inputs)
        if args.device == "cuda":
            torch.cuda.synchronize()
        print(f"{case.id}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in outputs.items()),
              flush=True)
        count += 1
    print(f"{count} op calls")
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())
