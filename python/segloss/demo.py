"""``segloss demo``: segment the bundled coins image with BCE, weighted BCE and Dice.

A tiny fully-convolutional network is trained on one real image (a reduced
copy of scikit-image's ``data.coins()``, see ``segloss/data/README.md``) to
predict its foreground mask, once with plain BCE-with-logits and once with the
weighted BCE (``beta = n_background / n_foreground``), both computed by the
segloss ops. The target mask is derived here at run time with NumPy only.

Importing this module imports torch and NumPy.
"""

import time
from importlib import resources
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

import segloss
import segloss.nn

__all__ = ["load_coins", "foreground_mask", "dice", "run"]


# --------------------------------------------------------------------------
# Data: the bundled image and a NumPy-only foreground target.
# --------------------------------------------------------------------------

def load_coins() -> np.ndarray:
    """The bundled grayscale coins image, ``uint8[128, 160]``."""
    with resources.files("segloss").joinpath("data", "coins.npy").open("rb") as f:
        return np.load(f, allow_pickle=False)


def _box_blur(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over a ``(2k+1) x (2k+1)`` window (reflect-padded), via a summed-area table."""
    n = 2 * k + 1
    h, w = a.shape
    p = np.pad(a.astype(np.float64), k, mode="reflect")
    s = np.pad(p, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return (s[n:n + h, n:n + w] - s[:h, n:n + w] - s[n:n + h, :w] + s[:h, :w]) / (n * n)


def _otsu_threshold(a: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance."""
    hist, edges = np.histogram(a, bins=bins, range=(float(a.min()), float(a.max())))
    p = hist / hist.sum()
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centers)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 - m0) ** 2 / (w0 * (1 - w0))
    return float(centers[int(np.argmax(np.nan_to_num(between)))])


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Binary coin mask (``float32``, 1 = coin) of the coins image.

    The illumination of the photo is uneven (brighter at the top), so a global
    threshold fails: the image is lightly blurred (3x3), its local background
    (a 51x51 mean) is subtracted, the difference is thresholded with Otsu's
    method, and the mask is cleaned with a 3x3 majority vote.
    """
    smooth = _box_blur(image, 1)
    detail = smooth - _box_blur(smooth, 25)
    mask = detail > _otsu_threshold(detail)
    mask = _box_blur(mask.astype(np.float64), 1) > 0.5
    return mask.astype(np.float32)


def dice(pred: Tensor, target: Tensor) -> float:
    """Dice score ``2|P & T| / (|P| + |T|)`` of two binary masks."""
    pred = pred.float()
    target = target.float()
    denom = float(pred.sum() + target.sum())
    return 1.0 if denom == 0 else 2.0 * float((pred * target).sum()) / denom


# --------------------------------------------------------------------------
# Model and training.
# --------------------------------------------------------------------------

def tiny_fcn(width: int = 16) -> nn.Sequential:
    """Four-layer fully-convolutional net, ~4.8k parameters; dilations widen the receptive field."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.ReLU(),
        nn.Conv2d(width, 1, 1),
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(name: str, desc: str, criterion: nn.Module, x: Tensor, y: Tensor, steps: int,
          seed: int, lr: float, log_every: int) -> dict:
    """Trains a fresh, identically seeded net on ``(x, y)``; returns a result row."""
    torch.manual_seed(seed)
    model = tiny_fcn().to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: List[float] = []
    step_s: List[float] = []
    print(f"-- {name}: {desc}")
    for step in range(1, steps + 1):
        _sync(x.device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        value = loss.item()  # also synchronises
        step_s.append(time.perf_counter() - t0)
        losses.append(value)
        if step == 1 or step % log_every == 0 or step == steps:
            print(f"   step {step:4d}/{steps}  loss {value:.4f}", flush=True)
    with torch.no_grad():
        pred = torch.sigmoid(model(x)) > 0.5
    tp = float((pred & (y > 0.5)).sum())
    # The first step includes one-off warm-up costs; leave it out of the timing.
    timed = step_s[1:] or step_s
    return {
        "name": name,
        "first": losses[0],
        "final": losses[-1],
        "dice": dice(pred, y),
        "precision": tp / max(float(pred.sum()), 1.0),
        "recall": tp / max(float(y.sum()), 1.0),
        "ms": 1000.0 * float(np.median(timed)),
    }


def _table(rows: List[dict]) -> str:
    header = ("loss", "first loss", "final loss", "dice", "precision", "recall", "ms/step")
    lines = [f"{header[0]:<28}" + "".join(f"{h:>11}" for h in header[1:])]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(f"{r['name']:<28}{r['first']:>11.4f}{r['final']:>11.4f}{r['dice']:>11.3f}"
                     f"{r['precision']:>11.3f}{r['recall']:>11.3f}{r['ms']:>11.2f}")
    return "\n".join(lines)


def run(steps: int = 60, device: Optional[str] = None, seed: int = 0, lr: float = 1e-2) -> int:
    """The demo; returns an exit status (0 when every loss fell)."""
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    dev = torch.device(device if device else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"error: device {dev} requested but torch.cuda.is_available() is False")
        return 2

    image = load_coins()
    mask = foreground_mask(image)
    n_fg = float(mask.sum())
    n_bg = float(mask.size - n_fg)
    beta = n_bg / n_fg
    img = image.astype(np.float32)
    img = (img - img.mean()) / img.std()
    x = torch.from_numpy(img)[None, None].to(dev)  # [1, 1, H, W]
    y = torch.from_numpy(mask)[None, None].to(dev)

    print(f"segloss {segloss.__version__} demo: torch {torch.__version__}, device {dev}, "
          f"{torch.get_num_threads()} CPU threads, seed {seed}")
    print(f"image: bundled coins, {image.shape[0]}x{image.shape[1]} uint8; target: "
          f"{int(n_fg)} foreground / {int(n_bg)} background pixels "
          f"({100 * n_fg / mask.size:.1f}% foreground), beta = n_bg/n_fg = {beta:.3f}")
    n_params = sum(p.numel() for p in tiny_fcn().parameters())
    print(f"model: 4-layer FCN, {n_params} parameters; Adam lr {lr:g}, {steps} steps per loss")

    log_every = max(1, steps // 6)  # ~6 progress lines per loss (every 10 steps for 60)
    criteria: List[Tuple[str, str, nn.Module]] = [
        ("BCE", "segloss.nn.BCEWithLogitsLoss()", segloss.nn.BCEWithLogitsLoss()),
        (f"weighted BCE (beta={beta:.2f})", f"segloss.nn.WeightedBCELoss(beta={beta:.3f})",
         segloss.nn.WeightedBCELoss(beta)),
        ("Dice (gamma=2)", "segloss.nn.DiceLoss(activation='sigmoid', gamma=2.0)",
         segloss.nn.DiceLoss(activation="sigmoid", gamma=2.0)),
    ]
    rows = []
    t0 = time.perf_counter()
    for name, desc, criterion in criteria:
        rows.append(train(name, desc, criterion.to(dev), x, y, steps, seed, lr, log_every))
    total = time.perf_counter() - t0

    print()
    print(_table(rows))
    print("dice, precision, recall: sigmoid(logits) > 0.5 against the target")
    print(f"ms/step: median forward+backward+Adam step on {dev}; "
          f"training took {total:.1f} s in all")
    fell = all(r["final"] < r["first"] for r in rows)
    if not fell:
        print("error: a loss did not fall")
    return 0 if fell else 1
