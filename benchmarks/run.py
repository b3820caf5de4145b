"""Forward+backward timings of segloss's ops against PyTorch in the same run.

    ./dev bench                      # CPU, all rows, with torch.compile anchors
    ./dev bench --device cuda        # on a GPU
    ./dev bench --no-compile --repeats 10

Anchors per row: torch eager (the built-in loss where PyTorch has one, else
the formula in eager ops), torch.compile of that same function, and a copy of
the bytes the forward reads (input and target), a memory-bandwidth yardstick.
Prints a markdown table and writes benchmarks/results/bce-<device>.json.
"""

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

import segloss  # noqa: E402

SHAPES = [(16, 1, 512, 512), (2, 1, 128, 128, 128)]


def bce_formula_with_pos_weight(p, y, pos_weight):
    # PyTorch's BCELoss has no pos_weight: the article's weighted BCE in eager ops.
    log_p = torch.log(p).clamp_min(-100)
    log_1mp = torch.log1p(-p).clamp_min(-100)
    return -(pos_weight * y * log_p + (1 - y) * log_1mp).mean()


def cases(device):
    """(name, make_input, ours, reference) with reference a plain PyTorch function."""
    pos_weight = torch.tensor([3.0], device=device)
    return [
        ("bce", torch.rand, lambda x, y: segloss.binary_cross_entropy(x, y),
         lambda x, y: F.binary_cross_entropy(x, y)),
        ("bce, pos_weight", torch.rand,
         lambda x, y: segloss.binary_cross_entropy(x, y, pos_weight=pos_weight),
         lambda x, y: bce_formula_with_pos_weight(x, y, pos_weight)),
        ("bce_with_logits", torch.randn,
         lambda x, y: segloss.binary_cross_entropy_with_logits(x, y),
         lambda x, y: F.binary_cross_entropy_with_logits(x, y)),
        ("bce_with_logits, pos_weight", torch.randn,
         lambda x, y: segloss.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight),
         lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight)),
    ]


def forward_backward(loss_fn, x, y):
    def step():
        x.grad = None
        loss_fn(x, y).backward()
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile anchor")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/bce-<device>.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)

    candidates = ["segloss", "torch eager", "torch.compile", "copy"]
    rows = []
    for shape in SHAPES:
        for name, make_input, ours, reference in cases(device):
            x = make_input(shape, device=device).clamp_(1e-6, 1 - 1e-6) if make_input is torch.rand \
                else make_input(shape, device=device)
            x.requires_grad_(True)
            y = (torch.rand(shape, device=device) > 0.5).float()
            row = harness.Row(case=name, shape=list(shape), dtype="float32")
            time_it = lambda fn: harness.median_ms(fn, device, repeats=args.repeats)  # noqa: E731
            row.ms["segloss"] = time_it(forward_backward(ours, x, y))
            row.ms["torch eager"] = time_it(forward_backward(reference, x, y))
            if not args.no_compile:
                torch._dynamo.reset()
                compiled = torch.compile(reference, fullgraph=True)
                row.ms["torch.compile"] = time_it(forward_backward(compiled, x, y))
            xd = x.detach()
            row.ms["copy"] = time_it(lambda: (xd.clone(), y.clone()))
            rows.append(row)
            print(f"{name:30s} {'x'.join(map(str, shape)):18s} " +
                  "  ".join(f"{k} {v:.2f} ms" for k, v in row.ms.items()), flush=True)

    ratios = [("torch eager", "segloss"), ("torch.compile", "segloss"), ("segloss", "copy")]
    print()
    print(f"{harness.machine_description(device)}, torch {torch.__version__}, float32, "
          f"forward+backward, median of {args.repeats}")
    print(harness.markdown_table(rows, candidates, ratios))
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"bce-{device.type}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    harness.write_json(out, rows, device, {"what": "forward+backward, float32", "repeats": args.repeats})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
