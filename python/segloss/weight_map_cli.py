"""``segloss weight-map``: U-Net weight maps for label images on disk.

    segloss weight-map LABELS... -o DIR [--w0 W] [--sigma S]
                       [--class-weights none|balanced|B,F] [--sampling X[,X...]]
                       [--border-everywhere] [--recursive] [--overwrite] [--preview]
                       [--workers N] [--threads T] [--quiet]

Torch-free: it needs NumPy and ``segloss.numpy`` only. Pillow (.png), tifffile
(.tif, .tiff), matplotlib (--preview) and tqdm (the progress bar) are optional
and imported when needed.
"""

import argparse
import importlib.util
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

EXTENSIONS = (".npy", ".png", ".tif", ".tiff")

DESCRIPTION = """\
Write the U-Net weight map (Ronneberger et al. 2015) of every label image,
w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) with d1, d2 the distances to the
nearest and second-nearest instance, as a float32 .npy file (the same values as
segloss.numpy.unet_weight_map)."""

EPILOG = """\
inputs:
  Integer instance maps (0 = background), 2D or 3D: .npy, .png (needs Pillow;
  single-channel: mode L, P (palette indices), I;16 or I) and .tif/.tiff (needs
  tifffile; 3D stacks). A folder stands for the label files directly inside it
  (everything below it with --recursive), sorted; hidden files and the output
  folder are left out.

outputs:
  A file given by name, NAME.EXT, is written to DIR/NAME.npy; a file found in a
  folder keeps its path below that folder, DIR/SUB/NAME.npy. Inputs that would
  still share an output (a.png and a.tif, or the same name from two folders
  given separately) are an error, reported before any work. A file is skipped
  if any of its outputs (.npy, or .png with --preview) exists, unless
  --overwrite. Outputs are written to a temporary file and renamed, so an
  interrupted run leaves no partial file.

  A progress bar (tqdm) goes to stderr when it is a terminal, otherwise (or
  without tqdm installed) one line per file; failures are always reported there
  (path: reason) and the other files go on.

exit status:
  0 all written (or skipped), 1 some file failed, 2 usage error."""

ClassWeights = Union[None, str, Dict[int, float]]
Sampling = Union[None, float, Tuple[float, ...]]


# --- option parsing ---------------------------------------------------------------------------

def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def _positive_number(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _class_weights(text: str) -> ClassWeights:
    """``none``, ``balanced`` or ``B,F`` -> the ``class_weights`` of unet_weight_map."""
    if text.lower() == "none":
        return None
    if text.lower() == "balanced":
        return "balanced"
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(
            f"must be none, balanced or two numbers B,F (background, foreground), got {text!r}")
    return {0: _number(parts[0]), 1: _number(parts[1])}


def _sampling(text: str) -> Sampling:
    """One spacing for every axis, or a comma-separated spacing per axis."""
    values = tuple(_positive_number(part) for part in text.split(","))
    return values[0] if len(values) == 1 else values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="LABELS",
                        help="label image files (.npy, .png, .tif, .tiff) or folders of them")
    parser.add_argument("-o", "--output-dir", required=True, type=Path, metavar="DIR",
                        help="where to write the weight maps (created if missing)")
    parser.add_argument("--w0", type=_number, default=10.0, metavar="W",
                        help="border weight w0 (default 10)")
    parser.add_argument("--sigma", type=_positive_number, default=5.0, metavar="S",
                        help="border width sigma, in the units of --sampling (default 5)")
    parser.add_argument("--class-weights", type=_class_weights, default=None,
                        metavar="none|balanced|B,F",
                        help="w_c: none (1 everywhere, default), balanced (n_pixels / (2 * "
                             "n_pixels_of_the_class)) or B,F (background and foreground weight)")
    parser.add_argument("--sampling", type=_sampling, default=None, metavar="X[,X...]",
                        help="pixel spacing: one number, or one per axis (default 1)")
    parser.add_argument("--border-everywhere", action="store_true",
                        help="add the border term on instance pixels too (default: background "
                             "only)")
    parser.add_argument("--recursive", action="store_true",
                        help="search folders recursively")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (default: skip those files)")
    parser.add_argument("--preview", action="store_true",
                        help="also write DIR/NAME.png, a plot of the map with a colour bar (for 3D "
                             "the middle slice along axis 0; needs matplotlib)")
    parser.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                        help="worker processes (default 1: in this process)")
    parser.add_argument("--threads", type=_positive_int, default=1, metavar="T",
                        help="threads per worker for the kernel (default 1)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress and no summary; failures are still reported")
    # So that run() reports problems it finds in the inputs the way argparse does (exit status 2).
    parser.set_defaults(usage_error=parser.error)


# --- reading and writing ----------------------------------------------------------------------

def read_labels(path: Path) -> np.ndarray:
    """The label array stored in a .npy, .png or .tif/.tiff file (not yet checked to be integer)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with open(path, "rb") as f:
            # Checked here: np.load would take anything else for a pickle and say only that.
            if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                raise ValueError("not a .npy file (no NumPy header)")
            f.seek(0)
            return np.load(f, allow_pickle=False)
    if suffix == ".png":
        return _read_png(path)
    return _read_tiff(path)


def _read_png(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading .png files needs Pillow: pip install pillow") from None
    with Image.open(path) as image:
        bands = image.getbands()
        if len(bands) != 1:
            raise ValueError(f"PNG mode {image.mode!r} has {len(bands)} channels; a label image "
                             "must be single-channel integer (mode L, P, I;16 or I)")
        return np.asarray(image)


def _read_tiff(path: Path) -> np.ndarray:
    try:
        import tifffile
    except ImportError:
        raise ImportError("reading .tif/.tiff files needs tifffile: pip install tifffile") from None
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ValueError("the TIFF file holds no image")
        series = tif.series[0]
        # An S (samples) axis is a colour or multi-channel image; taken as is it would pass for a
        # 3D volume.
        if "S" in series.axes:
            raise ValueError(f"a colour image (axes {series.axes}, shape {series.shape}); label "
                             "images must be single-channel (write 3D stacks with "
                             "tifffile.imwrite(..., photometric='minisblack'))")
        return series.asarray()


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    # Via a temporary file and a rename: an interrupted run leaves no truncated output that a
    # rerun would then skip.
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            write(f)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_preview(weights: np.ndarray, path: Path, title: str) -> None:
    # A bare Figure on an Agg canvas: no pyplot state, no GUI backend, safe in worker processes.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image = weights
    if weights.ndim == 3:
        middle = weights.shape[0] // 2
        image = weights[middle]
        title += f" (slice {middle} of {weights.shape[0]} along axis 0)"
    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    shown = axes.imshow(image, cmap="viridis", interpolation="nearest")
    figure.colorbar(shown, ax=axes, label="weight")
    axes.set_title(title, fontsize="medium")
    _write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=100))


# --- one file (runs in the workers) -----------------------------------------------------------

@dataclass(frozen=True)
class Options:
    """The weight-map parameters, the same for every file."""
    w0: float
    sigma: float
    class_weights: ClassWeights
    sampling: Sampling
    border_everywhere: bool
    threads: int


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    preview: Optional[Path]  # None without --preview

    def outputs(self) -> List[Path]:
        return [self.output] + ([self.preview] if self.preview is not None else [])


def _reason(error: BaseException) -> str:
    # One line for the report, whatever the exception's message looks like.
    return " ".join(str(error).split()) or type(error).__name__


def process(job: Job, options: Options) -> Optional[str]:
    """Writes one weight map (and its preview); returns None, or why it failed.

    Top level and never raising, so that it runs the same in spawned worker processes.
    """
    try:
        labels = read_labels(job.source)
    except Exception as e:
        return f"cannot read: {_reason(e)}"
    try:
        import segloss.numpy as snp  # here, not at the top: `segloss info` must not need it

        weights = snp.unet_weight_map(labels, options.w0, options.sigma, options.class_weights,
                                      options.sampling, border_everywhere=options.border_everywhere,
                                      threads=options.threads)
        _write_atomically(job.output, lambda f: np.save(f, weights, allow_pickle=False))
    except Exception as e:
        return _reason(e)
    if job.preview is not None:
        try:
            _write_preview(weights, job.preview, job.source.name)
        except Exception as e:
            return f"preview: {_reason(e)}"
    return None


def _results(jobs: Sequence[Job], options: Options,
             workers: int) -> Iterator[Tuple[Job, Optional[str]]]:
    """(job, None or why it failed) for every job, in the order they finish."""
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, process(job, options)
        return
    # spawn: the same on every platform, and no fork of a parent that may hold threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(process, job, options): job for job in jobs}
        try:
            for future in as_completed(futures):
                try:
                    error = future.result()
                except Exception as e:  # the worker died (e.g. killed for memory)
                    error = f"worker failed: {_reason(e)}"
                yield futures[future], error
        except BaseException:  # Ctrl-C: do not start the files still queued
            pool.shutdown(wait=False, cancel_futures=True)
            raise


# --- inputs -----------------------------------------------------------------------------------

def _is_label_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTENSIONS


def _folder_files(folder: Path, recursive: bool, output_dir: Path) -> List[Path]:
    files: List[Path] = []
    for root, dirs, names in os.walk(folder):
        # Pruned in place; the output folder is left out so that a rerun does not read its own
        # .npy outputs as labels.
        dirs[:] = sorted(d for d in dirs if recursive and not d.startswith(".")
                         and Path(root, d).resolve() != output_dir)
        # Regular files only: a named pipe or device would block the read.
        files.extend(Path(root, name) for name in sorted(names)
                     if _is_label_file(name) and Path(root, name).is_file())
    return files


def _find_inputs(args: argparse.Namespace) -> List[Tuple[Path, Path]]:
    """(label file, its path below --output-dir without the suffix), each file once."""
    found: List[Tuple[Path, Path]] = []
    seen = set()
    output_dir = args.output_dir.resolve()
    for given in map(Path, args.inputs):
        if given.is_dir():
            files = [(f, f.relative_to(given)) for f in _folder_files(given, args.recursive,
                                                                       output_dir)]
        elif given.is_file():
            if given.suffix.lower() not in EXTENSIONS:
                args.usage_error(f"{given}: unsupported file type (supported: "
                                 f"{', '.join(EXTENSIONS)})")
            files = [(given, Path(given.name))]
        elif given.exists():
            args.usage_error(f"{given}: not a regular file or a folder")
        else:
            args.usage_error(f"{given}: no such file or folder")
        for source, relative in files:
            if source.resolve() not in seen:
                seen.add(source.resolve())
                found.append((source, relative.with_suffix("")))
    if not found:
        hint = "" if args.recursive else " (use --recursive to search subfolders)"
        args.usage_error(f"no label images ({', '.join(EXTENSIONS)}) found in "
                         f"{' '.join(args.inputs)}{hint}")
    return found


def _plan(args: argparse.Namespace) -> List[Job]:
    """One job per input file; every usage problem is reported here, before any work."""
    if args.output_dir.exists() and not args.output_dir.is_dir():
        args.usage_error(f"--output-dir {args.output_dir} is not a folder")
    if args.preview and importlib.util.find_spec("matplotlib") is None:
        args.usage_error("--preview needs matplotlib: pip install matplotlib")
    inputs = _find_inputs(args)
    jobs: List[Job] = []
    source_of: Dict[Path, Path] = {}
    for source, relative in inputs:
        output = args.output_dir / relative
        job = Job(source, output.with_name(output.name + ".npy"),
                  output.with_name(output.name + ".png") if args.preview else None)
        if job.output in source_of:
            args.usage_error(f"{source_of[job.output]} and {source} would both be written to "
                             f"{job.output}; rename one, or write them to separate output "
                             "folders")
        source_of[job.output] = source
        jobs.append(job)
    sources = {source.resolve() for source, _ in inputs}
    for job in jobs:
        for path in job.outputs():
            if path.resolve() in sources:
                args.usage_error(f"the output {path} would replace an input; choose another "
                                 "--output-dir")
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        args.usage_error(f"cannot create --output-dir {args.output_dir}: {_reason(e)}")
    return jobs


# --- reporting --------------------------------------------------------------------------------

class _Report:
    """Progress and per-file lines on stderr, and the counts for the summary.

    On a terminal (with tqdm installed) a bar, and only failures as lines;
    otherwise one plain line per file.
    """

    def __init__(self, total: int, quiet: bool) -> None:
        from segloss._progress import Progress

        self.quiet = quiet
        self.progress = Progress(total, unit="file", enabled=not quiet)
        self.counts = {"written": 0, "skipped": 0, "failed": 0}
        self.start = time.monotonic()

    def file(self, status: str, line: str) -> None:
        """One finished file; ``line`` describes it (shown per file only without the bar)."""
        self.counts[status] += 1
        if status == "failed" or not (self.quiet or self.progress.shown):
            self.progress.write(line)
        self.progress.update()

    def finish(self, output_dir: Path) -> None:
        self.progress.close()
        if not self.quiet:
            counts = self.counts
            hint = " (outputs exist; use --overwrite)" if counts["skipped"] else ""
            self.progress.write(f"{counts['written']} written, {counts['skipped']} skipped{hint}, "
                                f"{counts['failed']} failed in {time.monotonic() - self.start:.1f}"
                                f" s (output: {output_dir})")


def run(args: argparse.Namespace) -> int:
    """The ``weight-map`` command: 0 if no file failed, else 1 (usage errors exit with 2)."""
    jobs = _plan(args)
    options = Options(args.w0, args.sigma, args.class_weights, args.sampling,
                      args.border_everywhere, args.threads)
    report = _Report(len(jobs), args.quiet)
    todo = []
    for job in jobs:
        existing = [path for path in job.outputs() if path.exists()]
        if existing and not args.overwrite:
            report.file("skipped", f"skipped {job.source}: {existing[0]} exists; use --overwrite")
        else:
            todo.append(job)
    for job, error in _results(todo, options, args.workers):
        if error is None:
            written = " and ".join(str(path) for path in job.outputs())
            report.file("written", f"written {job.source} -> {written}")
        else:
            report.file("failed", f"failed {job.source}: {error}")
    report.finish(args.output_dir)
    return 1 if report.counts["failed"] else 0
