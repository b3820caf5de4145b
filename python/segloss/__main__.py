"""The ``segloss`` command line (``python -m segloss`` or the ``segloss`` script).

    segloss demo [--steps N] [--size N] [--train-images N] [--test-images N] [--device DEV]
                 [--threads T] [--seed S] [--lr LR] [--figure PNG | --no-figure]
    segloss info
    segloss weight-map LABELS... -o DIR [options]   (see segloss.weight_map_cli)

torch is imported only inside the commands that need it.
"""

import argparse
import os
import sys
from typing import List, Optional


def _cmd_demo(args: argparse.Namespace) -> int:
    from segloss import demo

    return demo.run(steps=args.steps, device=args.device, seed=args.seed, lr=args.lr,
                    figure=None if args.no_figure else args.figure, size=args.size,
                    train_images=args.train_images, test_images=args.test_images,
                    threads=args.threads)


def _cmd_info(args: argparse.Namespace) -> int:
    import platform

    import segloss

    print(f"segloss          {segloss.__version__}")
    print(f"python           {platform.python_version()} ({sys.executable})")
    try:
        import torch
    except ImportError as e:
        print(f"torch            not importable: {e}")
        return 1
    print(f"torch            {torch.__version__}")
    try:
        path = segloss.library_path()
    except ImportError as e:
        print(f"library          not built: {e}")
        return 1
    print(f"library          {path}")
    print(f"torch CUDA build {torch.version.cuda or 'no (CPU-only torch)'}")
    print(f"CUDA available   {torch.cuda.is_available()}"
          + (f" ({torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)})"
             if torch.cuda.is_available() else ""))
    try:
        from segloss._library import cpu_instruction_set

        isa = cpu_instruction_set()  # loads the op library
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(
            "segloss::binary_cross_entropy_with_logits", "CUDA")
        print(f"segloss CUDA ops {'compiled in' if has_cuda else 'not compiled in'}")
    except Exception as e:  # informational only
        print(f"segloss ops      could not be loaded: {e}")
        return 1
    cap = os.environ.get("SEGLOSS_CPU_ISA")
    print(f"CPU kernels      {isa}" + (f" (SEGLOSS_CPU_ISA={cap})" if cap else ""))
    print(f"CPU threads      {torch.get_num_threads()}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _image_side(text: str) -> int:
    value = int(text)
    if value < 16 or value % 4:
        raise argparse.ArgumentTypeError(f"must be a multiple of 4 and >= 16, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    import segloss
    from segloss import weight_map_cli

    parser = argparse.ArgumentParser(
        prog="segloss", description="segloss: fast exact image-segmentation losses for PyTorch.")
    parser.add_argument("--version", action="version", version=f"segloss {segloss.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="train a small U-Net on generated touching cells with each loss and score "
                     "it on held-out images",
        description="Generate images of touching cells (deterministic from --seed; nothing is "
                    "downloaded), train a small U-Net on some with BCE, weighted BCE, Dice, "
                    "Dice + CE and the shape-aware (U-Net weight map) loss, and score each on "
                    "held-out images: pixel Dice, cells matched at IoU >= 0.5, merged cells. "
                    "Prints a table and writes a figure. Needs SciPy; matplotlib for the "
                    "figure; tqdm for progress bars (plain lines without it).")
    demo.add_argument("--steps", type=_positive_int, default=600,
                      help="training steps per loss (default 600)")
    demo.add_argument("--size", type=_image_side, default=96,
                      help="side of the generated images in pixels, a multiple of 4, at least 16 "
                           "(default 96)")
    demo.add_argument("--train-images", type=_positive_int, default=16,
                      help="generated training images (default 16)")
    demo.add_argument("--test-images", type=_positive_int, default=8,
                      help="generated held-out images for the scores (default 8)")
    demo.add_argument("--device", default=None,
                      help="torch device, e.g. cpu or cuda (default: cuda if available, else cpu)")
    demo.add_argument("--threads", type=_positive_int, default=1,
                      help="torch CPU threads (default 1: about as fast for this small model, "
                           "and the numbers do not depend on the machine's core count)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    demo.add_argument("--figure", default="segloss-demo.png",
                      help="where to write the PNG figure (default segloss-demo.png)")
    demo.add_argument("--no-figure", action="store_true", help="do not write the figure")
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("info", help="print versions, library path, CUDA and thread info")
    info.set_defaults(func=_cmd_info)

    weight_map = sub.add_parser(
        "weight-map", help="write U-Net weight maps (.npy) for label images (.npy, .png, .tif)",
        description=weight_map_cli.DESCRIPTION, epilog=weight_map_cli.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    weight_map_cli.add_arguments(weight_map)
    weight_map.set_defaults(func=weight_map_cli.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`segloss info | head`): stop quietly, as Unix
        # tools do. stdout is pointed at /dev/null so that Python's final
        # flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
