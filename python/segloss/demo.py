"""``segloss demo``: train a small U-Net on a real image with each segloss loss.

The image is scikit-image's coins photograph (``skimage.data.coins()``,
bundled with scikit-image: no network), its instance labels come from the
watershed recipe of scikit-image's gallery ("Comparing edge-based and
region-based segmentation"), and the foreground target is "any coin". The
U-Net weight map and the nearest-instance map come from ``segloss.numpy``.
A small U-Net is trained from the same seed with BCE, weighted BCE, Dice,
Dice + cross-entropy and the shape-aware (U-Net weight map) loss; the demo
prints a summary table and writes a figure of the data and of every loss's
prediction.

Needs scikit-image (and SciPy, which it depends on); matplotlib for the
figure. Importing this module imports torch and NumPy.
"""

import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import segloss
import segloss.nn
import segloss.numpy as snp

__all__ = ["coins_and_instances", "SmallUNet", "dice_score", "run"]

Loss = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------
# Data: the coins photograph and its instance labels.
# --------------------------------------------------------------------------

def coins_and_instances(scale: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """The coins image (float32, zero mean, unit variance) and its instance
    labels (int32, 0 is background), both reduced by ``scale`` per axis.

    The labels follow scikit-image's gallery recipe at full resolution: a
    Sobel elevation map, markers below 30 (background) and above 150
    (coins), watershed, holes filled, connected components. The image is
    reduced by block means, the labels by taking every ``scale``-th pixel.
    """
    from scipy import ndimage
    from skimage import data, filters, segmentation

    coins = data.coins()
    elevation = filters.sobel(coins)
    markers = np.zeros_like(coins)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    regions = segmentation.watershed(elevation, markers)
    labels, _ = ndimage.label(ndimage.binary_fill_holes(regions - 1))
    h, w = (s // scale * scale for s in coins.shape)
    image = coins[:h, :w].astype(np.float32).reshape(h // scale, scale, w // scale, scale)
    image = image.mean(axis=(1, 3))
    # Striding can drop a small instance: renumber the ids left as 1..n.
    ids, labels = np.unique(labels[:h:scale, :w:scale], return_inverse=True)
    labels = labels.reshape(h // scale, w // scale).astype(np.int32)
    if ids[0] != 0:  # no background pixel left (cannot happen for coins)
        labels += 1
    return (image - image.mean()) / image.std(), labels


# --------------------------------------------------------------------------
# Model.
# --------------------------------------------------------------------------

def _double_conv(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True))


class SmallUNet(nn.Module):
    """A two-level U-Net (Ronneberger et al. 2015, scaled down): two 3x3 conv
    blocks per level, max-pool down, transposed-conv up, skip connections,
    one logit channel. Input sides must be multiples of 4."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.down1 = _double_conv(1, width)
        self.down2 = _double_conv(width, 2 * width)
        self.bottom = _double_conv(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.merge2 = _double_conv(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.merge1 = _double_conv(2 * width, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        level1 = self.down1(x)
        level2 = self.down2(F.max_pool2d(level1, 2))
        bottom = self.bottom(F.max_pool2d(level2, 2))
        up2 = self.merge2(torch.cat([self.up2(bottom), level2], 1))
        up1 = self.merge1(torch.cat([self.up1(up2), level1], 1))
        return self.head(up1)


# --------------------------------------------------------------------------
# Training and scoring.
# --------------------------------------------------------------------------

def dice_score(prediction: Tensor, target: Tensor) -> float:
    """Dice score ``2|P & T| / (|P| + |T|)`` of two binary masks (1 if both empty)."""
    prediction, target = prediction.bool(), target.bool()
    total = int(prediction.sum() + target.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & target).sum()) / total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Progress:
    """One line per loss: a bar redrawn in place on a terminal, a few plain
    lines otherwise (logs, CI)."""

    def __init__(self, name: str, steps: int) -> None:
        self.name, self.steps = name, steps
        self.tty = sys.stdout.isatty()
        self.every = max(1, steps // 4)

    def update(self, step: int, loss: float, ms: float) -> None:
        done = step == self.steps
        if not self.tty and not done and step % self.every:
            return
        filled = 24 * step // self.steps
        line = (f"{self.name:<22} [{'#' * filled}{'.' * (24 - filled)}] {step:4d}/{self.steps}"
                f"  loss {loss:.4f}  {ms:6.1f} ms/step")
        if self.tty:
            print("\r" + line, end="\n" if done else "", flush=True)
        else:
            print(line, flush=True)


def train(name: str, loss_fn: Loss, x: Tensor, y: Tensor, steps: int, seed: int,
          lr: float) -> Dict[str, object]:
    """Trains a fresh U-Net, seeded identically for every loss, on (x, y)."""
    torch.manual_seed(seed)
    model = SmallUNet().to(x.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    progress = _Progress(name, steps)
    step_ms: List[float] = []
    losses: List[float] = []
    for step in range(1, steps + 1):
        _sync(x.device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # also synchronises
        step_ms.append(1000 * (time.perf_counter() - start))
        progress.update(step, losses[-1], float(np.median(step_ms[1:] or step_ms)))
    model.eval()
    with torch.no_grad():
        probability = torch.sigmoid(model(x))[0, 0]
    return {"name": name, "first": losses[0], "final": losses[-1],
            # The first step pays one-off warm-up costs: left out of the timing.
            "ms": float(np.median(step_ms[1:] or step_ms)), "probability": probability.cpu()}


def _count_objects(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask)[1])


def _table(rows: List[Dict[str, object]], coins: int) -> str:
    header = f"{'loss':<22}{'first loss':>11}{'final loss':>11}{'Dice':>8}{'objects':>9}{'ms/step':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['name']:<22}{r['first']:>11.4f}{r['final']:>11.4f}{r['dice']:>8.3f}"
                     f"{r['objects']:>9d}{r['ms']:>9.1f}")
    lines.append(f"Dice: sigmoid(logits) > 0.5 against the coin mask; objects: its connected "
                 f"components (the labels have {coins} coins)")
    return "\n".join(lines)


def _figure(path: str, image: np.ndarray, labels: np.ndarray, weight_map: np.ndarray,
            nearest: np.ndarray, rows: List[Dict[str, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    rng = np.random.default_rng(0)  # random colours tell touching instances apart
    colours = ListedColormap(np.vstack([[0, 0, 0], rng.uniform(0.25, 1, (labels.max(), 3))]))
    columns = max(5, len(rows))
    # A thin last column holds the weight map's colour bar, so that the two
    # rows of panels line up.
    fig = plt.figure(figsize=(3.0 * columns + 0.6, 5.6), constrained_layout=True)
    grid = fig.add_gridspec(2, columns + 1, width_ratios=[1] * columns + [0.05])
    panels = [("coins (skimage.data.coins)", image, "gray"),
              (f"instance labels ({labels.max()} coins)", labels, colours),
              ("target: coin mask", labels > 0, "gray"),
              ("nearest instance (l1)", nearest, colours),
              ("U-Net weight map w(x)", weight_map, "magma")]  # next to its colour bar
    for column, (title, values, cmap) in enumerate(panels):
        ax = fig.add_subplot(grid[0, column])
        labelled = cmap is colours
        shown = ax.imshow(values, cmap=cmap, interpolation="nearest",
                          vmin=0 if labelled else None, vmax=labels.max() if labelled else None)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
        if cmap == "magma":
            fig.colorbar(shown, cax=fig.add_subplot(grid[0, columns]))
    for column, row in enumerate(rows):
        ax = fig.add_subplot(grid[1, column])
        ax.imshow(row["probability"].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{row['name']}\nDice {row['dice']:.3f}, {row['objects']} objects",
                     fontsize=10)
        ax.set_axis_off()
    fig.suptitle("segloss demo: the data (top) and each loss's predicted coin probability "
                 "(same U-Net, seed and steps)")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(steps: int = 150, device: Optional[str] = None, seed: int = 0, lr: float = 3e-3,
        figure: Optional[str] = "segloss-demo.png") -> int:
    """The demo; returns an exit status (0 when every loss fell)."""
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    dev = torch.device(device if device else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"error: device {dev} requested but torch.cuda.is_available() is False")
        return 2
    try:
        image, labels = coins_and_instances()
    except ImportError as e:
        print(f"error: segloss demo needs scikit-image (pip install scikit-image): {e}")
        return 2

    mask = (labels > 0).astype(np.float32)
    weight_map = snp.unet_weight_map(labels, w0=10.0, sigma=5.0, class_weights="balanced")
    _, _, nearest, _ = snp.two_nearest_distances(labels, return_labels=True)
    foreground = float(mask.mean())
    beta = (1 - foreground) / foreground
    # The U-Net halves the sides twice: pad them to multiples of 4 (reflected
    # image, weight 0 and background in the padding), score on the image.
    h, w = image.shape
    pad = (0, -w % 4, 0, -h % 4)
    x = F.pad(torch.from_numpy(image)[None, None], pad, mode="reflect").to(dev)
    y = F.pad(torch.from_numpy(mask)[None, None], pad).to(dev)
    w_map = F.pad(torch.from_numpy(weight_map)[None, None], pad).to(dev)

    print(f"segloss {segloss.__version__} demo: torch {torch.__version__}, device {dev}, "
          f"{torch.get_num_threads()} CPU threads, seed {seed}")
    print(f"data: skimage.data.coins() at half size, {h}x{w}; {int(labels.max())} coins by "
          f"the gallery's watershed recipe, {100 * foreground:.1f}% foreground; U-Net weight "
          f"map w0=10, sigma=5, balanced w_c (max {weight_map.max():.2f})")
    print(f"model: small U-Net, {sum(p.numel() for p in SmallUNet().parameters())} parameters; "
          f"Adam lr {lr:g}, {steps} steps per loss")

    shape_aware = segloss.nn.ShapeAwareLoss()
    criteria: List[Tuple[str, Loss]] = [
        ("BCE", segloss.nn.BCEWithLogitsLoss().to(dev)),
        (f"weighted BCE (b={beta:.2f})", segloss.nn.WeightedBCELoss(beta).to(dev)),
        ("Dice", segloss.nn.DiceLoss(activation="sigmoid").to(dev)),
        ("Dice + CE", segloss.nn.DiceCELoss(activation="sigmoid").to(dev)),
        ("shape-aware (U-Net)", lambda logits, target: shape_aware(logits, target, w_map)),
    ]
    rows = []
    start = time.perf_counter()
    for name, loss_fn in criteria:
        row = train(name, loss_fn, x, y, steps, seed, lr)
        row["probability"] = row["probability"][:h, :w]
        predicted = row["probability"] > 0.5
        row["dice"] = dice_score(predicted, torch.from_numpy(mask))
        row["objects"] = _count_objects(predicted.numpy())
        rows.append(row)
    total = time.perf_counter() - start

    print()
    print(_table(rows, int(labels.max())))
    print(f"ms/step: median forward + backward + Adam step on {dev}; training took "
          f"{total:.1f} s in all")
    if figure:
        try:
            _figure(figure, image, labels, weight_map, nearest, rows)
            print(f"figure: {figure}")
        except ImportError as e:
            print(f"figure skipped: matplotlib is not installed ({e})")
    fell = all(r["final"] < r["first"] for r in rows)
    if not fell:
        print("error: a loss did not fall")
    return 0 if fell else 1
