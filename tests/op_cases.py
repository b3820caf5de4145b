"""One call of every segloss op, forward and backward, as data: the table that
the CUDA-vs-CPU equality sweep (test_cuda_equality.py) and the CUDA-graph
capture tests (test_cuda_graphs.py) walk.

An OpCase makes its inputs on the CPU from a seeded generator (float64 for
the floating ones, which `prepare` rounds to the dtype under test) and runs
the op on them, returning named outputs: the forward results and the
gradient of the input for a fixed upstream gradient (also an input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

import segloss
import segloss.numpy as snp
from distance_reference import random_disks, voronoi_partition
from helpers import _rand  # noqa: F401  (loads the op library)

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

Inputs = Dict[str, torch.Tensor]


@dataclass
class OpCase:
    name: str
    make: Callable[[torch.Generator], Inputs]
    run: Callable[[Inputs], Inputs]
    # Bitwise equal across devices (the math is shared and deterministic and
    # rounded per operation, csrc/core/rounding.h); else within a tolerance.
    exact: bool = False
    dtypes: Tuple[torch.dtype, ...] = FLOAT_DTYPES
    # Tiled launches past the grid limits: millions of elements, GPU runs only.
    large: bool = False
    float_inputs: Tuple[str, ...] = field(default=())  # the rest keep their dtype
    # CUDA against the CPU in float32 (test_cuda_equality.py): looser for
    # sums over millions of elements, which each side rounds in its own order.
    float32_rtol: float = 2e-6
    # The exact cases' CPU reference: segloss.numpy, image by image.
    numpy_reference: Optional[Callable[[Inputs], Inputs]] = None

    @property
    def id(self) -> str:
        return self.name


def prepare(inputs: Inputs, names, dtype: torch.dtype, device, compute_dtype=None) -> Inputs:
    """The inputs on `device`: the floating ones rounded to `dtype` (then, for
    a reference, converted to `compute_dtype`), the others as they are."""
    out = {}
    for key, value in inputs.items():
        if key in names:
            value = value.to(dtype)
            if compute_dtype is not None:
                value = value.to(compute_dtype)
        out[key] = value.to(device)
    return out


def _grad(loss: torch.Tensor, x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, x, grad_output)
    return grad


def _upstream(gen, shape):
    """A fixed upstream gradient: random per element, or 1.25 for a 0-dim loss."""
    if len(shape) == 0:
        return torch.tensor(1.25, dtype=torch.float64)
    return _rand(shape, gen, -1.5, 1.5)


def _labels(gen, shape, count, dtype, ignore=None, ignore_fraction=0.1):
    labels = torch.randint(0, count, shape, generator=gen)
    if ignore is not None:
        labels = torch.where(_rand(shape, gen) < ignore_fraction, ignore, labels)
    return labels.to(dtype)


def _instances(shape, seed=0, count=2):
    rng = np.random.default_rng(seed)
    images = [random_disks(shape, 6, rng), voronoi_partition(shape, 5, rng, gaps=True)]
    return torch.from_numpy(np.stack(images[:count]))


# --------------------------------------------------------------------------
# Binary cross-entropy

def _bce_case(form, shape, reduction, large=False):
    op = (segloss.binary_cross_entropy if form == "probabilities"
          else segloss.binary_cross_entropy_with_logits)
    c = shape[1]

    def make(gen):
        x = (_rand(shape, gen, 0.02, 0.98) if form == "probabilities"
             else 3 * torch.randn(shape, generator=gen, dtype=torch.float64))
        inputs = {"x": x, "y": _rand(shape, gen)}
        if not large:
            inputs["weight"] = _rand((c,) + (1,) * (len(shape) - 2), gen, 0.5, 2.0)
            inputs["pos_weight"] = _rand((c,) + (1,) * (len(shape) - 2), gen, 1.0, 3.0)
        inputs["go"] = _upstream(gen, shape if reduction == "none" else ())
        return inputs

    def run(i):
        x = i["x"].requires_grad_()
        loss = op(x, i["y"], i.get("weight"), i.get("pos_weight"), reduction)
        return {"loss": loss.detach(), "grad": _grad(loss, x, i["go"])}

    dims = f"{len(shape) - 2}d"
    return OpCase(f"bce-{form}-{dims}-{reduction}" + ("-large" if large else ""), make, run,
                  large=large, float_inputs=("x", "y", "weight", "pos_weight", "go"),
                  dtypes=(torch.float32,) if large else FLOAT_DTYPES)


# --------------------------------------------------------------------------
# Dice, Dice + CE and their fused sums

def _dice_case(name, shape, *, activation, target, loss="dice_loss", label_dtype=torch.int64,
               ignore=None, mask=False, large=False, dtypes=FLOAT_DTYPES, float32_rtol=2e-6,
               **options):
    fn = getattr(segloss, loss)
    n, c = shape[0], shape[1]
    spatial = tuple(shape[2:])
    reduction = options.get("reduction", "mean")

    def make(gen):
        x = (_rand(shape, gen, 0.02, 0.98) if activation == "none"
             else 2.5 * torch.randn(shape, generator=gen, dtype=torch.float64))
        inputs = {"x": x}
        if target == "dense":
            inputs["t"] = _rand(shape, gen)
        else:
            inputs["t"] = _labels(gen, (n,) + spatial, 2 if c == 1 else c, label_dtype, ignore)
        if mask:
            inputs["mask"] = (_rand((n, 1) + spatial, gen) > 0.3).to(torch.float64)
        if "class_weights" in options:
            inputs["class_weights"] = _rand((c,), gen, 0.5, 2.0)
        out_c = c - (0 if options.get("include_background", True) else 1)
        out_shape = () if reduction != "none" else (
            (out_c,) if options.get("batch_dice") else (n, out_c))
        inputs["go"] = _upstream(gen, out_shape)
        return inputs

    def run(i):
        x = i["x"].requires_grad_()
        kwargs = {k: v for k, v in options.items() if k != "class_weights"}
        if "class_weights" in i:
            kwargs["class_weights"] = i["class_weights"]
        value = fn(x, i["t"], activation=activation, ignore_index=ignore, mask=i.get("mask"),
                   **kwargs)
        return {"loss": value.detach(), "grad": _grad(value, x, i["go"])}

    floats = ("x", "mask", "class_weights", "go") + (("t",) if target == "dense" else ())
    return OpCase(name, make, run, large=large, dtypes=dtypes, float_inputs=floats,
                  float32_rtol=float32_rtol)


def _dice_sums_case(name, shape, *, activation, target, gamma, cross_entropy, ignore=None,
                    soft_label=False, focal_activation=None, focal_gamma=2.0):
    n, c = shape[0], shape[1]
    spatial = tuple(shape[2:])
    columns = 8 if cross_entropy else 4 if soft_label else 6 if focal_activation else 3

    def make(gen):
        inputs = {"x": _rand(shape, gen, 0.02, 0.98) if activation == "none"
                  else 2.5 * torch.randn(shape, generator=gen, dtype=torch.float64)}
        inputs["t"] = (_rand(shape, gen) if target == "dense"
                       else _labels(gen, (n, 1) + spatial, c, torch.int32, ignore))
        inputs["grad_sums"] = _rand((n, c, columns), gen, -1.0, 1.0)
        return inputs

    def run(i):
        args = (i["t"], activation, gamma, ignore, None, cross_entropy, "segloss._dice_sums",
                soft_label, focal_activation, focal_gamma)
        sums = torch.ops.segloss._dice_sums(i["x"], *args)
        grad = torch.ops.segloss._dice_sums_backward(i["grad_sums"].to(sums.dtype), i["x"], *args)
        return {"sums": sums, "grad": grad}

    floats = ("x", "grad_sums") + (("t",) if target == "dense" else ())
    return OpCase(name, make, run, float_inputs=floats)


# --------------------------------------------------------------------------
# Shape-aware losses and their multi-class kernel

def _shape_aware_binary_case(name, spatial, *, instances, from_logits, reduction):
    n = 2

    def make(gen):
        shape = (n, 1) + spatial
        x = (2.5 * torch.randn(shape, generator=gen, dtype=torch.float64) if from_logits
             else _rand(shape, gen, 0.02, 0.98))
        inputs = {"x": x, "y": (_rand(shape, gen) > 0.5).to(torch.float64),
                  "go": _upstream(gen, shape if reduction == "none" else ())}
        if instances:
            inputs["instances"] = _instances(spatial)
        else:
            inputs["map"] = _rand((n,) + spatial, gen, 1.0, 11.0)
        return inputs

    def run(i):
        x = i["x"].requires_grad_()
        loss = segloss.shape_aware_loss(x, i["y"], i.get("map"), instances=i.get("instances"),
                                        class_weights="balanced" if instances else None,
                                        from_logits=from_logits, reduction=reduction)
        return {"loss": loss.detach(), "grad": _grad(loss, x, i["go"])}

    return OpCase(name, make, run, float_inputs=("x", "y", "map", "go"))


def _shape_aware_multiclass_case(name, shape, *, label_dtype, reduction, ignore=-100,
                                 class_weight=True, large=False, label_smoothing=0.0):
    n, c = shape[0], shape[1]
    spatial = tuple(shape[2:])

    def make(gen):
        inputs = {"x": 2.5 * torch.randn(shape, generator=gen, dtype=torch.float64),
                  "t": _labels(gen, (n,) + spatial, c, label_dtype, ignore),
                  "map": _rand((n,) + spatial, gen, 1.0, 11.0),
                  "go": _upstream(gen, (n,) + spatial if reduction == "none" else ())}
        if class_weight:
            inputs["w"] = _rand((c,), gen, 0.5, 2.0)
        return inputs

    def run(i):
        x = i["x"].requires_grad_()
        loss = segloss.shape_aware_loss(x, i["t"], i["map"], weight=i.get("w"),
                                        ignore_index=ignore, reduction=reduction,
                                        label_smoothing=label_smoothing)
        return {"loss": loss.detach(), "grad": _grad(loss, x, i["go"])}

    return OpCase(name, make, run, large=large, float_inputs=("x", "map", "w", "go"),
                  dtypes=(torch.float32,) if large else FLOAT_DTYPES)


def _weighted_ce_case(name, shape, *, label_dtype, reduction, ignore=255, gamma=0.0,
                      label_smoothing=0.0, scale=2.5):
    n, c = shape[0], shape[1]
    spatial = tuple(shape[2:])

    def make(gen):
        return {"x": scale * torch.randn(shape, generator=gen, dtype=torch.float64),
                "t": _labels(gen, (n,) + spatial, c, label_dtype, ignore),
                "map": _rand((n,) + spatial, gen, 1.0, 11.0),
                "w": _rand((c,), gen, 0.5, 2.0),
                "go": _upstream(gen, (n,) + spatial if reduction == "none" else ())}

    def run(i):
        args = (i["t"], i["map"], i["w"], ignore, reduction)
        options = dict(gamma=gamma, label_smoothing=label_smoothing)
        loss, total_weight = torch.ops.segloss._weighted_cross_entropy(i["x"], *args, **options)
        grad = torch.ops.segloss._weighted_cross_entropy_backward(i["go"], i["x"], *args,
                                                                  total_weight, **options)
        return {"loss": loss, "total_weight": total_weight, "grad": grad}

    return OpCase(name, make, run, float_inputs=("x", "map", "w", "go"))


# --------------------------------------------------------------------------
# Distance transform and weight map: bitwise

def _sparse_cells(shape, seed=0):
    """Two small cells per image, far apart, on a background: most lines meet
    no cell, and most pixels' second-nearest cell is far (the CUDA search's
    long case, where it skips empty and far blocks)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int64)
    for image in labels:
        for cell in (1, 2):
            corner = [int(rng.integers(0, size - 4)) for size in image.shape]
            image[tuple(slice(c, c + 4) for c in corner)] = cell
    return torch.from_numpy(labels)


def _two_nearest_case(name, labels_fn, sampling, label_dtype, large=False):
    def make(gen):
        return {"labels": labels_fn().to(label_dtype)}

    def run(i):
        d1, d2, l1, l2 = torch.ops.segloss.two_nearest_distances(i["labels"], sampling, True)
        return {"d1": d1, "d2": d2, "l1": l1, "l2": l2}

    def numpy_reference(i):
        per_image = [snp.two_nearest_distances(image, sampling, return_labels=True)
                     for image in i["labels"].numpy()]
        return {key: torch.from_numpy(np.stack([r[k] for r in per_image]))
                for k, key in enumerate(("d1", "d2", "l1", "l2"))}

    return OpCase(name, make, run, exact=True, dtypes=(None,), large=large,
                  numpy_reference=numpy_reference)


def _weight_map_case(name, labels_fn, large=False, **options):
    def make(gen):
        inputs = {"labels": labels_fn()}
        if options.get("pixel"):
            inputs["pixel"] = _rand(tuple(inputs["labels"].shape), gen, 0.5, 2.0).float()
        return inputs

    def run(i):
        kwargs = {k: v for k, v in options.items() if k != "pixel"}
        if "pixel" in i:
            kwargs["class_weights"] = i["pixel"]
        return {"map": segloss.unet_weight_map(i["labels"], **kwargs)}

    def numpy_reference(i):
        kwargs = {k: v for k, v in options.items() if k != "pixel"}
        maps = []
        for n, image in enumerate(i["labels"].numpy()):
            if "pixel" in i:
                kwargs["class_weights"] = i["pixel"][n].numpy()
            maps.append(snp.unet_weight_map(image, **kwargs))
        return {"map": torch.from_numpy(np.stack(maps))}

    return OpCase(name, make, run, exact=True, dtypes=(None,), large=large,
                  numpy_reference=numpy_reference)


def _distance_map_case(name, mask_fn, kind, sampling, spatial_dims, large=False):
    def make(gen):
        return {"mask": mask_fn(gen)}

    def run(i):
        return {"map": torch.ops.segloss.distance_map(i["mask"], kind, spatial_dims, sampling)}

    def numpy_reference(i):
        # The distance to the other class in float32 (the op rounds it first),
        # then the signed map's -(d - 1) inside the mask, in float32.
        mask = i["mask"].numpy()
        images = mask.reshape((-1,) + mask.shape[mask.ndim - spatial_dims:])
        out = []
        for image in images:
            d = snp.boundary_distance_map(image, sampling).astype(np.float32)
            if kind == "signed":
                d = np.where(image != 0, -(d - np.float32(1)), d)
            out.append(d if (image != 0).any() and not (image != 0).all() else np.zeros_like(d))
        return {"map": torch.from_numpy(np.stack(out).reshape(mask.shape))}

    return OpCase(name, make, run, exact=True, dtypes=(None,), large=large,
                  numpy_reference=numpy_reference)


def _random_mask(shape, dtype, p=0.4):
    def make(gen):
        return (torch.rand(shape, generator=gen) < p).to(dtype)
    return make


def _round_objects(shape, dtype, count, small_object=False):
    """Masks of round objects (long runs of both classes) over the last
    len(radius) axes; with small_object one small ball per image instead, so
    that most lines pass no border (the CUDA passes skip them)."""
    def make(gen):
        spatial = shape[2:]
        grid = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in spatial],
                              indexing="ij")
        masks = torch.zeros(shape, dtype=torch.bool)
        for index in range(shape[0] * shape[1]):
            image = masks[index // shape[1], index % shape[1]]
            for _ in range(1 if small_object else count):
                centre = [float(torch.rand((), generator=gen, dtype=torch.float64)) * n
                          for n in spatial]
                radius = 2.5 if small_object else 0.2 * min(spatial)
                image |= sum((g - c) ** 2 for g, c in zip(grid, centre)) < radius ** 2
        return masks.to(dtype)
    return make


def _long_lines():
    """2 images of 1 x 8,400,000: the first pass has 16.8 million lines (one
    per column), past 65,535 blocks of 256 threads, so the grid-stride loops
    wrap (those of the outputs and the weight map too)."""
    gen = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 40, (2, 1, 8_400_000), generator=gen, dtype=torch.int32)
    return torch.where(labels < 37, 0, labels)  # about 7% instance pixels, 3 ids


# Past 65,535 blocks of 256 threads: the element-wise kernels' grid-stride
# loops wrap (kMaxElementwiseBlocks, csrc/cuda/cuda_utils.cuh).
BIG_2D = (1, 1, 4100, 4100)  # 16.8 million > 65,535 * 256


def cases():
    shape2, shape3 = (3, 2, 37, 53), (2, 3, 7, 11, 13)
    table = []
    for form in ("probabilities", "logits"):
        table += [_bce_case(form, shape2, "none"), _bce_case(form, shape2, "mean"),
                  _bce_case(form, shape3, "sum")]
    table += [
        _dice_case("dice-sigmoid-dense-2d-gamma2-mask-none", (3, 2, 37, 53), activation="sigmoid",
                   target="dense", gamma=2.0, mask=True, reduction="none"),
        _dice_case("dice-none-activation-3d-gamma1.5-batch", shape3, activation="none",
                   target="dense", gamma=1.5, batch_dice=True),
        _dice_case("dice-sigmoid-binary-labels-uint8-3d", (2, 1, 7, 11, 13), activation="sigmoid",
                   target="labels", label_dtype=torch.uint8),
        # More channels than one CUDA chunk (8 for Dice, 4 for Dice + CE): the
        # softmax pre-pass and several chunks; labels read in place.
        _dice_case("dice-softmax-labels-uint8-2d-12-channels", (2, 12, 37, 53),
                   activation="softmax", target="labels", label_dtype=torch.uint8, ignore=255,
                   reduction="none"),
        _dice_case("dice_ce-softmax-labels-int32-3d-6-channels", (2, 6, 7, 11, 13),
                   activation="softmax", target="labels", loss="dice_ce_loss",
                   label_dtype=torch.int32, mask=True),
    ]
    for label_dtype, ignore in ((torch.uint8, 255), (torch.int16, -1), (torch.int32, -1),
                                (torch.int64, 99)):
        name = str(label_dtype).split(".")[1]
        table.append(_dice_case(f"dice-softmax-labels-{name}-3d", (2, 4, 7, 11, 13),
                                activation="softmax", target="labels", label_dtype=label_dtype,
                                ignore=ignore, include_background=False, class_weights=True))
    table += [
        _dice_case("dice_ce-softmax-labels-int64-2d", (3, 3, 37, 53), activation="softmax",
                   target="labels", loss="dice_ce_loss", ignore=-1, mask=True),
        _dice_case("dice_ce-softmax-labels-2d-label_smoothing", (3, 3, 37, 53),
                   activation="softmax", target="labels", loss="dice_ce_loss", ignore=255,
                   class_weights=True, label_smoothing=0.1),
        _dice_case("dice_ce-sigmoid-dense-3d-sum-batch", shape3, activation="sigmoid",
                   target="dense", loss="dice_ce_loss", reduction="sum", gamma=2.0,
                   batch_dice=True),
        # Dice + focal (the focal columns): MONAI's sigmoid focal under a
        # softmax Dice over more channels than one CUDA chunk (4), the softmax
        # focal, and the sigmoid one.
        _dice_case("dice_focal-softmax-labels-int32-3d-6-channels-sigmoid-focal",
                   (2, 6, 7, 11, 13), activation="softmax", target="labels",
                   loss="dice_focal_loss", label_dtype=torch.int32, mask=True, alpha=0.25,
                   focal_activation="sigmoid"),
        _dice_case("dice_focal-softmax-labels-uint8-3d-6-channels-softmax-focal",
                   (2, 6, 7, 11, 13), activation="softmax", target="labels",
                   loss="dice_focal_loss", label_dtype=torch.uint8, ignore=255,
                   focal_gamma=0.5, class_weights=True, include_background=False),
        _dice_case("dice_focal-softmax-labels-int64-2d-softmax-focal-sum", (3, 3, 37, 53),
                   activation="softmax", target="labels", loss="dice_focal_loss", ignore=-1,
                   alpha=0.25, reduction="sum", gamma=2.0),
        _dice_case("dice_focal-sigmoid-dense-3d-sum-batch", shape3, activation="sigmoid",
                   target="dense", loss="dice_focal_loss", reduction="sum", gamma=2.0,
                   batch_dice=True, alpha=0.75, focal_gamma=0.5, mask=True),
        _dice_sums_case("_dice_sums-softmax-labels-focal-softmax-2d", (3, 3, 37, 53),
                        activation="softmax", target="labels", gamma=1.0, cross_entropy=False,
                        ignore=255, focal_activation="softmax", focal_gamma=0.5),
        _dice_sums_case("_dice_sums-softmax-dense-focal-sigmoid-3d", shape3,
                        activation="softmax", target="dense", gamma=2.0, cross_entropy=False,
                        focal_activation="sigmoid", focal_gamma=2.0),
        _dice_sums_case("_dice_sums-sigmoid-dense-focal-sigmoid-2d-gamma1.5", (3, 3, 37, 53),
                        activation="sigmoid", target="dense", gamma=1.5, cross_entropy=False,
                        focal_activation="sigmoid", focal_gamma=0.0),
        # The other region losses: epilogues over the same sums.
        _dice_case("tversky-softmax-labels-int32-3d-focal", (2, 4, 7, 11, 13),
                   activation="softmax", target="labels", loss="tversky_loss",
                   label_dtype=torch.int32, ignore=-1, alpha=0.3, beta=0.7, focal_gamma=0.75,
                   reduction="none"),
        _dice_case("tversky-sigmoid-dense-2d-batch", shape2, activation="sigmoid",
                   target="dense", loss="tversky_loss", batch_dice=True, mask=True),
        _dice_case("jaccard-softmax-labels-2d-gamma2", shape2, activation="softmax",
                   target="labels", loss="jaccard_loss", gamma=2.0, class_weights=True),
        _dice_case("log_cosh_dice-sigmoid-dense-3d-sum", shape3, activation="sigmoid",
                   target="dense", loss="log_cosh_dice_loss", reduction="sum"),
        _dice_case("generalized_dice-softmax-labels-3d", (2, 4, 7, 11, 13), activation="softmax",
                   target="labels", loss="generalized_dice_loss", ignore=255,
                   label_dtype=torch.uint8, include_background=False),
        _dice_case("generalized_dice-sigmoid-dense-2d-simple-batch", shape2,
                   activation="sigmoid", target="dense", loss="generalized_dice_loss",
                   w_type="simple", batch_dice=True),
        _dice_sums_case("_dice_sums-softmax-labels-ce-2d", (3, 3, 37, 53), activation="softmax",
                        target="labels", gamma=1.0, cross_entropy=True, ignore=255),
        _dice_sums_case("_dice_sums-sigmoid-dense-3d-gamma1.5", shape3, activation="sigmoid",
                        target="dense", gamma=1.5, cross_entropy=False),
        # soft_label=True: the fourth column, sum m |p - y|^gamma.
        _dice_case("dice-softmax-dense-2d-soft_label", shape2, activation="softmax",
                   target="dense", mask=True, soft_label=True),
        _dice_case("tversky-softmax-labels-3d-soft_label", (2, 4, 7, 11, 13),
                   activation="softmax", target="labels", loss="tversky_loss", ignore=255,
                   alpha=0.2, beta=0.8, soft_label=True, reduction="none"),
        _dice_case("generalized_dice-sigmoid-dense-3d-soft_label", shape3, activation="sigmoid",
                   target="dense", loss="generalized_dice_loss", soft_label=True),
        _dice_sums_case("_dice_sums-none-dense-2d-soft_label-gamma1.5", (3, 3, 37, 53),
                        activation="none", target="dense", gamma=1.5, cross_entropy=False,
                        soft_label=True),
        _shape_aware_binary_case("shape_aware-binary-instances-2d", (37, 53), instances=True,
                                 from_logits=True, reduction="mean"),
        _shape_aware_binary_case("shape_aware-binary-map-probabilities-3d-none", (7, 11, 13),
                                 instances=False, from_logits=False, reduction="none"),
        _shape_aware_multiclass_case("shape_aware-multiclass-int64-2d-weighted_mean",
                                     (3, 4, 37, 53), label_dtype=torch.int64,
                                     reduction="weighted_mean"),
        _shape_aware_multiclass_case("shape_aware-multiclass-int32-3d-none", (2, 3, 7, 11, 13),
                                     label_dtype=torch.int32, reduction="none", ignore=-1),
        _weighted_ce_case("_weighted_cross_entropy-uint8-2d-mean", (3, 5, 37, 53),
                          label_dtype=torch.uint8, reduction="mean"),
        _weighted_ce_case("_weighted_cross_entropy-int16-3d-sum", (2, 3, 7, 11, 13),
                          label_dtype=torch.int16, reduction="sum", ignore=-5),
        # The focal form (gamma > 0; wide logits: p_t near 1 and 0) and label
        # smoothing.
        _weighted_ce_case("_weighted_cross_entropy-int64-2d-weighted_mean-gamma2",
                          (3, 5, 37, 53), label_dtype=torch.int64, reduction="weighted_mean",
                          gamma=2.0, scale=8.0),
        _weighted_ce_case("_weighted_cross_entropy-uint8-3d-none-gamma0.5", (2, 3, 7, 11, 13),
                          label_dtype=torch.uint8, reduction="none", gamma=0.5, scale=8.0),
        _weighted_ce_case("_weighted_cross_entropy-int32-2d-mean-label_smoothing",
                          (3, 5, 37, 53), label_dtype=torch.int32, reduction="mean",
                          label_smoothing=0.2),
        _shape_aware_multiclass_case("shape_aware-multiclass-int64-3d-sum-label_smoothing",
                                     (2, 3, 7, 11, 13), label_dtype=torch.int64,
                                     reduction="sum", ignore=-1, label_smoothing=0.1),
    ]
    labels2 = lambda: _instances((37, 53))  # noqa: E731
    labels3 = lambda: _instances((9, 11, 13))  # noqa: E731
    for label_dtype in (torch.int16, torch.int32, torch.int64, torch.uint8):
        name = str(label_dtype).split(".")[1]
        table.append(_two_nearest_case(f"two_nearest-2d-{name}", labels2, [1.0, 1.3], label_dtype))
    table += [
        _two_nearest_case("two_nearest-3d-int64", labels3, [0.7, 1.3, 1.1], torch.int64),
        _two_nearest_case("two_nearest-3d-unit-int32", labels3, None, torch.int32),
        # The CUDA passes run in tiles (two_nearest_on_line), at unit spacing
        # and with sampling: whole slabs, groups of lines (a 40 x 44 slab of
        # pairs is past the tile's 40 KiB), and lines of 1500 pairs (past 40
        # KiB: a tile in the device's opt-in shared memory). Lines past that
        # (9000 pairs: 288 KB) take tiles in global memory, as do the
        # 16.8M-lines cases below.
        _two_nearest_case("two_nearest-2d-unit-int32", labels2, None, torch.int32),
        _two_nearest_case("two_nearest-3d-groups-unit-int64", lambda: _instances((4, 40, 44)),
                          None, torch.int64),
        _two_nearest_case("two_nearest-3d-groups-sampling-int32", lambda: _instances((4, 40, 44)),
                          [0.3, 1.1, 0.7], torch.int32),
        _two_nearest_case("two_nearest-2d-sparse-long-rows", lambda: _sparse_cells((2, 90, 1400)),
                          None, torch.int32),
        _two_nearest_case("two_nearest-3d-sparse-sampling", lambda: _sparse_cells((1, 30, 70, 90)),
                          [1.0, 0.7, 1.3], torch.int16),
        _two_nearest_case("two_nearest-2d-global-rows", lambda: _sparse_cells((2, 6, 9000)),
                          None, torch.int32),
        _two_nearest_case("two_nearest-2d-global-rows-sampling", lambda: _instances((8, 9000)),
                          [1.3, 0.7], torch.int64),
        _weight_map_case("unet_weight_map-2d-long-axis-unit",
                         lambda: _instances((30, 1500), count=1), class_weights="balanced"),
        _weight_map_case("unet_weight_map-2d-long-axis-sampling",
                         lambda: _instances((30, 1500)), class_weights="balanced",
                         sampling=[1.0, 0.1]),
        _weight_map_case("unet_weight_map-2d-balanced-sampling", labels2, class_weights="balanced",
                         sampling=[1.0, 1.3]),
        _weight_map_case("unet_weight_map-2d-pixel-border_everywhere", labels2, pixel=True,
                         border_everywhere=True, sigma=2.0),
        _weight_map_case("unet_weight_map-3d-fixed-sampling", labels3,
                         class_weights={0: 0.5, 1: 3.0}, sampling=[0.7, 1.3, 1.1], w0=4.0),
    ]
    table += [
        _distance_map_case("distance_map-signed-2d-bool", _random_mask((3, 2, 37, 53), torch.bool),
                           "signed", None, 2),
        _distance_map_case("distance_map-boundary-3d-uint8-sampling",
                           _random_mask((2, 1, 9, 11, 13), torch.uint8, 0.2), "boundary",
                           [0.7, 1.3, 1.1], 3),
        _distance_map_case("distance_map-signed-3d-int64", _random_mask((2, 9, 11, 13), torch.int64),
                           "signed", None, 3),
        # The CUDA passes' tile forms (core/binary_distance_tiles.h): the first
        # pass of a 200 x 300 image takes groups of lines (a slab is past the
        # tile's 40 KiB), a 1500-long axis groups in the device's opt-in
        # shared memory, a 9000-long one tiles in global memory (288 KB a
        # group), in float states and, with sampling, double ones.
        _distance_map_case("distance_map-boundary-2d-round-objects",
                           _round_objects((2, 1, 200, 300), torch.bool, 5), "boundary", None, 2),
        _distance_map_case("distance_map-signed-2d-long-axis",
                           _round_objects((1, 1, 1500, 24), torch.uint8, 6), "signed", None, 2),
        _distance_map_case("distance_map-boundary-2d-long-axis-sampling",
                           _round_objects((1, 1, 1500, 24), torch.uint8, 6), "boundary",
                           [0.5, 0.5], 2),
        _distance_map_case("distance_map-signed-2d-global-axis",
                           _round_objects((1, 1, 9000, 16), torch.uint8, 6), "signed", None, 2),
        _distance_map_case("distance_map-boundary-2d-global-axis-sampling",
                           _round_objects((1, 1, 9000, 16), torch.bool, 6), "boundary",
                           [0.5, 0.5], 2),
        # One small disk in long rows: the tile searches skip blocks of 32
        # (empty, or far from the border) on both axes, with sampling too.
        _distance_map_case("distance_map-boundary-2d-small-object-long-rows",
                           _round_objects((2, 1, 120, 1100), torch.uint8, 1, small_object=True),
                           "boundary", None, 2),
        _distance_map_case("distance_map-signed-2d-small-object-sampling",
                           _round_objects((1, 2, 300, 200), torch.bool, 1, small_object=True),
                           "signed", [0.7, 1.3], 2),
        _distance_map_case("distance_map-signed-3d-small-object",
                           _round_objects((1, 2, 48, 40, 44), torch.bool, 1, small_object=True),
                           "signed", None, 3),
    ]
    # Launches past the grid limits (GPU runs only).
    table += [
        _bce_case("logits", BIG_2D, "none", large=True),
        _dice_case("dice-sigmoid-dense-65540-images-large", (65_540, 2, 3), activation="sigmoid",
                   target="dense", large=True, dtypes=(torch.float32,)),
        _dice_case("dice_ce-softmax-labels-65540-images-large", (65_540, 3, 5),
                   activation="softmax", target="labels", loss="dice_ce_loss", large=True,
                   dtypes=(torch.float32,)),
        _dice_case("dice_focal-softmax-labels-65540-images-large", (65_540, 3, 5),
                   activation="softmax", target="labels", loss="dice_focal_loss", large=True,
                   dtypes=(torch.float32,), focal_activation="sigmoid"),
        # One image's sums over 16.8 million pixels: each CUDA thread adds
        # about 256 of them in float32 before the fixed-order tree.
        _dice_case("dice-sigmoid-17M-pixels-large", BIG_2D, activation="sigmoid", target="dense",
                   large=True, dtypes=(torch.float32,), float32_rtol=1e-5),
        _shape_aware_multiclass_case("shape_aware-multiclass-17M-pixels-none-large",
                                     (1, 2, 4100, 4100), label_dtype=torch.uint8,
                                     reduction="none", ignore=255, large=True),
        _two_nearest_case("two_nearest-16.8M-lines-large", _long_lines, [1.0, 1.3], torch.int32,
                          large=True),
        _weight_map_case("unet_weight_map-16.8M-lines-large", _long_lines, large=True,
                         class_weights="balanced"),
    ]
    return table
