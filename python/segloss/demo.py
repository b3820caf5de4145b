"""``segloss demo``: what each loss is for, on images of touching cells.

The data are generated at run time (nothing is downloaded) and are the same
for the same seed: round and elongated cells, many of them touching, rendered
with a dip in brightness where two cells meet, blurred, with noise
(:func:`touching_cells`). As in the U-Net paper, the target separates
touching cells: each cell's pixels that touch another cell (8-neighbours)
become background, leaving a 2-pixel gap (:func:`separate_touching`), and the
task is "cell interior" against "background and gaps". The U-Net weight map
(``segloss.numpy.unet_weight_map``, w0 = 10, sigma = 3 px for cells 8 to 26 px
across, balanced class weights) puts its weight on those gaps.

A small U-Net is trained from the same seed, on the same batches, with BCE,
weighted BCE, Dice, Dice + cross-entropy and the shape-aware (weight-map)
loss, and each is scored on held-out images it did not train on: the pixel
Dice, and how many cells come out as separate objects (:func:`instance_scores`).

Needs SciPy (connected components, blur) and tqdm for the progress bar
(optional: plain lines without it), matplotlib for the figure. Importing this
module imports torch and NumPy.
"""

import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import segloss
import segloss.nn
import segloss.numpy as snp
from segloss._progress import Progress

__all__ = ["touching_cells", "separate_touching", "InstanceScores", "instance_scores",
           "merging_objects", "dice_score", "SmallUNet", "run"]

Loss = Callable[[Tensor, Tensor, Tensor], Tensor]  # (logits, target, weight map) -> loss
Seed = Union[int, np.random.SeedSequence]

W0, SIGMA = 10.0, 3.0  # the weight map's border weight and width (px), see the module docstring


# --------------------------------------------------------------------------
# Data: touching cells.
# --------------------------------------------------------------------------

def _normalised_radius(cell: Tuple[float, ...], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """(distance / the ellipse's radius in that direction) from the cell's centre: <= 1 inside."""
    cy, cx, a, b, angle = cell
    dy, dx = yy - cy, xx - cx
    along = dx * math.cos(angle) + dy * math.sin(angle)
    across = -dx * math.sin(angle) + dy * math.cos(angle)
    return np.hypot(along / a, across / b)


def _radius(cell: Tuple[float, ...], direction: float) -> float:
    """The ellipse's radius in ``direction`` (radians)."""
    _, _, a, b, angle = cell
    phi = direction - angle
    return a * b / math.hypot(b * math.cos(phi), a * math.sin(phi))


def touching_cells(size: int = 96, seed: Seed = 0,
                   coverage: float = 0.45) -> Tuple[np.ndarray, np.ndarray]:
    """A generated ``size`` x ``size`` microscopy-like image and its cell instances.

    Cells are ellipses: round (radius 5-8 px, 60%) or elongated (semi-axes
    9-13 and 4-6 px), placed until they cover ``coverage`` of the image. Most
    (80%) are placed against an earlier cell, their centres 85% of the sum of
    their radii (along the line between them) apart, so that they overlap a
    little; where cells overlap, a pixel goes to the cell it is relatively
    closest to (the smaller distance / radius), so those cells touch along a
    shared border. A cell may cover at most 20% of its area of
    earlier cells; each cell keeps its largest 4-connected piece if that has
    at least 15 px.

    The image: each cell has its own brightness (0.55-1), falling to 55% of
    it within 3 px of the cell's border, so two touching cells show a dip
    where they meet; background 0.1; Gaussian blur (sigma 1 px), Gaussian
    noise (sd 0.08); then scaled to zero mean and unit variance.

    Returns ``(image, labels)``: float32 and int32 ``[size, size]``, labels
    0 for background and 1..n for the cells. The same ``seed`` (an int or a
    ``numpy.random.SeedSequence``) gives the same arrays.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    closest = np.full((size, size), np.inf)  # the smallest normalised radius so far
    owner = np.zeros((size, size), np.int32)
    cells: List[Tuple[float, ...]] = []
    for _ in range(40 * size * size // 1000):  # attempts; enough to reach the coverage
        if np.count_nonzero(owner) >= coverage * size * size:
            break
        if rng.random() < 0.6:
            a = b = rng.uniform(5.0, 8.0)
        else:
            a, b = rng.uniform(9.0, 13.0), rng.uniform(4.0, 6.0)
        angle = rng.uniform(0.0, math.pi)
        if cells and rng.random() < 0.8:  # against an earlier cell: they will touch
            neighbour = cells[rng.integers(len(cells))]
            direction = rng.uniform(0.0, 2 * math.pi)
            distance = 0.85 * (_radius(neighbour, direction)
                               + _radius((0, 0, a, b, angle), direction + math.pi))
            cy = neighbour[0] + distance * math.sin(direction)
            cx = neighbour[1] + distance * math.cos(direction)
        else:
            cy, cx = rng.uniform(0, size, 2)
        cell = (cy, cx, a, b, angle)
        radius = _normalised_radius(cell, yy, xx)
        inside = radius <= 1
        area = np.count_nonzero(inside)
        if area < 15 or np.count_nonzero(inside & (owner > 0)) > 0.2 * area:
            continue
        cells.append(cell)
        take = inside & (radius < closest)
        closest[take] = radius[take]
        owner[take] = len(cells)

    labels = np.zeros((size, size), np.int32)
    for cell in range(1, len(cells) + 1):
        pieces, count = ndimage.label(owner == cell)
        if count:
            largest = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
            if np.count_nonzero(largest) >= 15:
                labels[largest] = labels.max() + 1

    # Distance to the nearest pixel with a 4-neighbour of another label (the
    # cells' borders, shared ones included): the brightness falls towards it.
    padded = np.pad(labels, 1, mode="edge")
    border = np.zeros((size, size), bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        border |= padded[dy:dy + size, dx:dx + size] != labels
    to_border = snp.distance_transform_edt(~border)
    brightness = np.concatenate([[0.0], rng.uniform(0.55, 1.0, labels.max())])
    image = np.where(labels > 0,
                     brightness[labels] * (0.55 + 0.45 * np.clip(to_border / 3.0, 0.0, 1.0)), 0.1)
    image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0.0, 0.08, image.shape)
    return ((image - image.mean()) / image.std()).astype(np.float32), labels


def separate_touching(labels: np.ndarray) -> np.ndarray:
    """``labels`` with every instance pixel that has a pixel of another
    instance among its 8 neighbours set to background (0).

    Touching cells then lie apart, with a background gap of 2 px between
    them (1 px taken from each side), and no two cells are even diagonal
    neighbours, so they are separate objects under 4- and 8-connectivity:
    the U-Net paper's "separating background labels between touching cells".
    Pixels next to the background only are kept.
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    padded = np.pad(labels, 1)  # background outside: the image edge takes nothing
    separated = labels.copy()
    for dy in range(3):
        for dx in range(3):
            neighbour = padded[dy:dy + h, dx:dx + w]
            separated[(labels > 0) & (neighbour > 0) & (neighbour != labels)] = 0
    return separated


# --------------------------------------------------------------------------
# Scores.
# --------------------------------------------------------------------------

def dice_score(prediction: np.ndarray, target: np.ndarray) -> float:
    """Dice score ``2|P & T| / (|P| + |T|)`` of two binary masks (1 if both empty)."""
    prediction, target = np.asarray(prediction, bool), np.asarray(target, bool)
    total = int(prediction.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & target).sum()) / total


@dataclass
class InstanceScores:
    """Counts of one or more images (they add up with ``+``)."""
    cells: int = 0       # true cells
    objects: int = 0     # predicted objects (connected components)
    matched: int = 0     # true cells matched one-to-one by an object at IoU >= 0.5
    merged: int = 0      # true cells that share an object with another cell (see instance_scores)

    def __add__(self, other: "InstanceScores") -> "InstanceScores":
        return InstanceScores(self.cells + other.cells, self.objects + other.objects,
                              self.matched + other.matched, self.merged + other.merged)

    @property
    def matched_fraction(self) -> float:
        return self.matched / self.cells if self.cells else 1.0


def _overlaps(objects: np.ndarray, cells: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(shared, object_area, cell_area)``: ``shared[o, c]`` is the number of
    pixels of object ``o + 1`` in cell ``c``, where cells are numbered 0..n-1
    in the order of their ids."""
    ids, cell_index = np.unique(cells, return_inverse=True)
    cell_index = cell_index.reshape(np.shape(cells))
    if ids[0] != 0:  # no background: index 0 must still mean background
        cell_index = cell_index + 1
    n_cells = int(np.count_nonzero(ids))
    n_objects = int(objects.max(initial=0))
    overlap = np.bincount((objects * (n_cells + 1) + cell_index).ravel(),
                          minlength=(n_objects + 1) * (n_cells + 1))
    overlap = overlap.reshape(n_objects + 1, n_cells + 1)
    return overlap[1:, 1:], overlap.sum(axis=1)[1:], overlap.sum(axis=0)[1:]


def merging_objects(objects: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """For each object id 1..n of ``objects``: whether it covers at least half
    of the pixels of two or more cells (bool ``[n]``)."""
    shared, _, cell_area = _overlaps(objects, cells)
    return (shared * 2 >= cell_area).sum(axis=1) >= 2


def instance_scores(prediction: np.ndarray, cells: np.ndarray) -> InstanceScores:
    """How well the objects of a binary ``prediction`` reproduce the ``cells``.

    Objects are the 4-connected components of ``prediction`` (pixels that
    share an edge; diagonal neighbours alone do not join). ``cells`` is the
    true instance map (0 background, ids > 0; here the target's instances,
    touching cells already separated).

    * matched: the number of cells matched one-to-one by an object with
      intersection over union >= 0.5. Pairs are matched by decreasing IoU,
      each cell and object at most once (above 0.5 a cell can have only one
      such object, so this only settles exact ties at 0.5).
    * merged: the number of cells that share an object with another cell.
      An object *takes* a cell when it covers at least half of that cell's
      pixels; every cell taken by an object that takes two or more cells
      counts. Two touching cells predicted as one blob are 2 merged cells
      (and, as the blob's IoU with each is below 0.5, none matched).
    """
    from scipy import ndimage

    objects, count = ndimage.label(np.asarray(prediction, bool))  # 4-connectivity in 2D
    shared, object_area, cell_area = _overlaps(objects, cells)
    iou = shared / np.maximum(object_area[:, None] + cell_area[None, :] - shared, 1)
    matched = 0
    used_objects, used_cells = set(), set()
    for o, c in sorted(np.argwhere(iou >= 0.5).tolist(), key=lambda pair: -iou[tuple(pair)]):
        if o not in used_objects and c not in used_cells:
            used_objects.add(o)
            used_cells.add(c)
            matched += 1
    takes = shared * 2 >= cell_area
    merged = int(takes[takes.sum(axis=1) >= 2].any(axis=0).sum())
    return InstanceScores(len(cell_area), count, matched, merged)


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
# Training.
# --------------------------------------------------------------------------

@dataclass
class _Split:
    """Images, targets and weight maps as ``[N, 1, H, W]`` tensors, and the instances."""
    image: Tensor
    target: Tensor
    weight_map: Tensor
    labels: np.ndarray      # [N, H, W] touching instances (the annotation)
    cells: np.ndarray       # [N, H, W] separated instances (the target's cells)


def _make_split(seeds: Sequence[np.random.SeedSequence], size: int) -> _Split:
    images, labels, cells, maps = [], [], [], []
    for seed in seeds:
        image, instances = touching_cells(size, seed)
        separated = separate_touching(instances)
        images.append(image)
        labels.append(instances)
        cells.append(separated)
        maps.append(snp.unet_weight_map(separated, w0=W0, sigma=SIGMA, class_weights="balanced"))
    cells_array = np.stack(cells)
    return _Split(torch.from_numpy(np.stack(images))[:, None],
                  torch.from_numpy((cells_array > 0).astype(np.float32))[:, None],
                  torch.from_numpy(np.stack(maps))[:, None], np.stack(labels), cells_array)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(name: str, loss_fn: Loss, data: _Split, steps: int, batch: int, crop: int, seed: int,
          lr: float, device: torch.device) -> Dict[str, object]:
    """Trains a fresh U-Net on random batches of ``data``: ``batch`` images,
    cropped to ``crop`` x ``crop`` at one random place, turned by a random
    multiple of 90 degrees and maybe flipped. The weights and the batches are
    the same for every loss (both come from ``seed``)."""
    torch.manual_seed(seed)
    model = SmallUNet().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Decaying to 0 lets every model settle, so that the scores compare the
    # losses rather than where the last noisy steps left each model.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    batches = torch.Generator().manual_seed(seed)
    stacked = torch.cat([data.image, data.target, data.weight_map], 1).to(device)
    progress = Progress(steps, description=f"{name:<22}", unit="step")
    plain_every = max(1, steps // 4)
    step_ms: List[float] = []
    losses: List[float] = []
    for step in range(1, steps + 1):
        chosen = torch.randint(len(stacked), (batch,), generator=batches)
        top, left = torch.randint(stacked.shape[2] - crop + 1, (2,), generator=batches).tolist()
        turns, flip = torch.randint(4, (2,), generator=batches).tolist()
        _sync(device)
        start = time.perf_counter()
        sample = stacked[chosen.to(device), :, top:top + crop, left:left + crop]
        sample = torch.rot90(sample, turns, (2, 3))
        if flip % 2:
            sample = sample.flip(3)
        x, y, w = sample[:, :1], sample[:, 1:2], sample[:, 2:]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y, w)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())  # also synchronises
        step_ms.append(1000 * (time.perf_counter() - start))
        # The first step pays one-off warm-up costs: left out of the timing.
        ms = float(np.median(step_ms[1:] or step_ms))
        status = f"loss {losses[-1]:.4f}, {ms:.1f} ms/step"
        progress.update(1, status)
        if not progress.shown and (step % plain_every == 0 or step == steps):
            progress.write(f"{name:<22} step {step}/{steps}  {status}")
    progress.close()
    return {"name": name, "model": model.eval(), "first": losses[0],
            "last": float(np.mean(losses[-max(1, steps // 10):])), "ms": ms}


def _predict(model: nn.Module, images: Tensor, device: torch.device) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(images.to(device)))[:, 0].cpu().numpy()


def _score(row: Dict[str, object], data: _Split) -> None:
    predicted = row["probability"] > 0.5
    row["dice"] = dice_score(predicted, data.cells > 0)
    row["per_image"] = [instance_scores(p, c) for p, c in zip(predicted, data.cells)]
    row["instances"] = sum(row["per_image"], InstanceScores())


def _table(rows: List[Dict[str, object]]) -> str:
    header = (f"{'loss':<22}{'pixel Dice':>11}{'cells matched':>15}{'merged':>8}{'objects':>9}"
              f"{'ms/step':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        scores = r["instances"]
        matched = f"{scores.matched}/{scores.cells} {100 * scores.matched_fraction:3.0f}%"
        lines.append(f"{r['name']:<22}{r['dice']:>11.3f}{matched:>15}{scores.merged:>8d}"
                     f"{scores.objects:>9d}{r['ms']:>9.1f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Figure.
# --------------------------------------------------------------------------

def _object_colours(objects: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """RGB of the predicted objects: random light colours, red for an object
    that merges cells (:func:`merging_objects`)."""
    rng = np.random.default_rng(1)
    palette = np.vstack([[0.0, 0.0, 0.0], rng.uniform(0.35, 1.0, (objects.max(initial=0), 3))
                         * (0.6, 1.0, 1.0)])  # damped red: red is kept for merges
    palette[1:][merging_objects(objects, cells)] = (0.9, 0.1, 0.1)
    return palette[objects]


def _figure(path: str, data: _Split, rows: List[Dict[str, object]], size: int) -> None:
    """Draws the held-out image with the most merged cells, all losses
    together (the first if none merges): where the losses differ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from scipy import ndimage

    merged = np.sum([[scores.merged for scores in row["per_image"]] for row in rows], axis=0)
    index = int(np.argmax(merged))
    image, labels, cells = data.image[index, 0].numpy(), data.labels[index], data.cells[index]
    weight_map = data.weight_map[index, 0].numpy()
    rng = np.random.default_rng(0)  # random colours tell touching instances apart
    colours = ListedColormap(np.vstack([[0, 0, 0], rng.uniform(0.3, 1, (labels.max(), 3))]))
    columns = max(5, len(rows))
    # A thin last column holds the weight map's colour bar, so that the two
    # rows of panels line up.
    fig = plt.figure(figsize=(2.9 * columns + 0.6, 6.4), constrained_layout=True)
    grid = fig.add_gridspec(2, columns + 1, width_ratios=[1] * columns + [0.05])
    gaps = (labels > 0) & (cells == 0)
    panels = [(f"held-out image {index + 1} of {len(data.cells)}", image, "gray"),
              (f"labels ({labels.max()} cells)", labels, colours),
              ("target: cell interiors,\ntouching cells 2 px apart", cells, colours),
              (f"the gaps: {np.count_nonzero(gaps)} px of cells\nthat are background in the "
               "target", gaps, "gray"),
              (f"U-Net weight map\n(w0={W0:g}, sigma={SIGMA:g} px, balanced)", weight_map, "magma")]
    for column, (title, values, cmap) in enumerate(panels):
        ax = fig.add_subplot(grid[0, column])
        labelled = cmap is colours
        drawn = ax.imshow(values, cmap=cmap, interpolation="nearest",
                          vmin=0 if labelled else None, vmax=labels.max() if labelled else None)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
        if cmap == "magma":
            fig.colorbar(drawn, cax=fig.add_subplot(grid[0, columns]))
    for column, row in enumerate(rows):
        ax = fig.add_subplot(grid[1, column])
        objects, _ = ndimage.label(row["probability"][index] > 0.5)
        ax.imshow(_object_colours(objects, cells), interpolation="nearest")
        scores = row["instances"]
        ax.set_title(f"{row['name']}\nDice {row['dice']:.3f}, {scores.matched}/{scores.cells} "
                     f"matched,\n{scores.merged} merged ({row['per_image'][index].merged} here)",
                     fontsize=10)
        ax.set_axis_off()
    fig.suptitle(f"segloss demo: the held-out {size}x{size} image with the most merged cells "
                 "(top) and the objects each loss's U-Net predicts in it (bottom; red: one object "
                 f"over two or more cells).\nScores over all {len(data.cells)} held-out images; "
                 "\"here\": in this image", fontsize=11)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------
# The command.
# --------------------------------------------------------------------------

def run(steps: int = 600, device: Optional[str] = None, seed: int = 0, lr: float = 3e-3,
        figure: Optional[str] = "segloss-demo.png", size: int = 96, train_images: int = 16,
        test_images: int = 8, batch: int = 4, crop: int = 64, threads: int = 1) -> int:
    """The demo; returns an exit status (0 when every loss fell).

    ``threads``: torch's CPU threads while it runs (restored afterwards).
    One by default: with one thread the numbers for a seed do not depend on
    how many cores a machine has, and this small U-Net gains little from
    more. On the 2-core development VM two threads took 22 ms per step
    against 25 ms with one while the VM was nearly idle, but 302 ms against
    43 ms (medians) while other work kept both cores busy.
    """
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if size < 16 or size % 4:
        raise ValueError(f"--size must be a multiple of 4 and >= 16, got {size}")
    if crop < 16 or crop % 4:
        raise ValueError(f"crop must be a multiple of 4 and >= 16, got {crop}")
    if min(train_images, test_images, batch, threads) < 1:
        raise ValueError("--train-images, --test-images, batch and --threads must be >= 1, got "
                         f"{train_images}, {test_images}, {batch}, {threads}")
    dev = torch.device(device if device else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"error: device {dev} requested but torch.cuda.is_available() is False")
        return 2
    try:
        import scipy  # noqa: F401
    except ImportError as e:
        print(f"error: segloss demo needs SciPy (pip install 'segloss[demo]'): {e}")
        return 2
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(steps, dev, seed, lr, figure, size, train_images, test_images, batch,
                    min(crop, size))
    finally:
        torch.set_num_threads(previous_threads)


def _run(steps: int, device: torch.device, seed: int, lr: float, figure: Optional[str],
         size: int, train_images: int, test_images: int, batch: int, crop: int) -> int:
    start = time.perf_counter()
    # Independent streams: the held-out images do not depend on the number of
    # training images.
    train_seeds, test_seeds = np.random.SeedSequence(seed).spawn(2)
    training = _make_split(train_seeds.spawn(train_images), size)
    held_out = _make_split(test_seeds.spawn(test_images), size)
    foreground = float(training.target.mean())
    beta = (1 - foreground) / foreground

    print(f"segloss {segloss.__version__} demo: torch {torch.__version__}, device {device}, "
          f"{torch.get_num_threads()} CPU thread(s), seed {seed}")
    print(f"data: generated touching cells, {size}x{size}; {train_images} training images "
          f"({int(training.labels.max(axis=(1, 2)).sum())} cells), {test_images} held-out "
          f"({int(held_out.labels.max(axis=(1, 2)).sum())} cells); target: cell interiors "
          f"({100 * foreground:.1f}% of pixels), touching cells 2 px apart")
    print(f"U-Net weight map: w0={W0:g}, sigma={SIGMA:g} px, balanced class weights")
    print(f"model: small U-Net, {sum(p.numel() for p in SmallUNet().parameters())} parameters; "
          f"{steps} steps per loss of {batch} random {crop}x{crop} crops (turned and flipped), "
          f"Adam lr {lr:g} with cosine decay")

    shape_aware = segloss.nn.ShapeAwareLoss()
    bce = segloss.nn.BCEWithLogitsLoss()
    weighted_bce = segloss.nn.WeightedBCELoss(beta).to(device)
    dice = segloss.nn.DiceLoss(activation="sigmoid")
    dice_ce = segloss.nn.DiceCELoss(activation="sigmoid")
    criteria: List[Tuple[str, Loss]] = [
        ("BCE", lambda logits, target, _: bce(logits, target)),
        (f"weighted BCE (b={beta:.2f})", lambda logits, target, _: weighted_bce(logits, target)),
        ("Dice", lambda logits, target, _: dice(logits, target)),
        ("Dice + CE", lambda logits, target, _: dice_ce(logits, target)),
        ("shape-aware (U-Net)", shape_aware),
    ]
    rows = []
    for name, loss_fn in criteria:
        row = train(name, loss_fn, training, steps, batch, crop, seed, lr, device)
        row["probability"] = _predict(row.pop("model"), held_out.image, device)
        _score(row, held_out)
        rows.append(row)

    print()
    print(f"held-out: {test_images} images, {rows[0]['instances'].cells} cells")
    print(_table(rows))
    print("pixel Dice: sigmoid(logits) > 0.5 against the cell interiors, all held-out pixels\n"
          "objects: its 4-connected components; cells matched: one-to-one by an object at "
          "IoU >= 0.5\nmerged: cells that share an object with another cell (it covers half of "
          f"each)\nms/step: median forward + backward + Adam step on {device}")
    if figure:
        try:
            _figure(figure, held_out, rows, size)
            print(f"figure: {figure}")
        except ImportError as e:
            print(f"figure skipped: matplotlib is not installed ({e})")
    print(f"total: {time.perf_counter() - start:.1f} s")
    fell = all(r["last"] < r["first"] for r in rows)
    if not fell:
        print("error: a loss did not fall")
    return 0 if fell else 1
