"""Forward+backward timings of segloss's ops against the references in the same run.

    ./dev bench                         # CPU, every suite, with torch.compile anchors
    ./dev bench --suite dice            # one suite (bce, focal, dice, dice_ce, region, shape_aware,
                                        # distance_losses, distance, maps)
    ./dev bench --device cuda           # on a GPU (with each candidate's peak extra memory)
    ./dev bench --no-compile --repeats 10
    ./dev bench --suite dice --memory   # peak extra memory instead of time
    ./dev bench --suite shape_aware --case softmax   # only the cases named so

With --memory, each candidate's peak extra memory during one forward+backward
(the input's gradient included) is measured in a child process in which
glibc returns freed memory to the OS (MALLOC_MMAP_THRESHOLD_), so that the
resident high-water mark tracks live memory; on CUDA from the allocator.

Each row times forward+backward of segloss's op and of its anchors on the
same inputs: the reference implementation users have now (PyTorch's
built-in loss or MONAI's), torch.compile of the same formula written in
PyTorch ops, and a copy of the input and target (a memory-traffic
yardstick). Prints a markdown table per suite and writes
benchmarks/results/<suite>-<device>.json.

Runner suites (distance: segloss.numpy's distance transforms on the CPU,
and with --device cuda the torch ops on the GPU too, benchmarks/distance.py)
have their own runner: they get --device, --repeats (when given; otherwise
the runner's own default) and --out-dir, and every option run.py does not
know is passed through to them, e.g.

    ./dev bench --suite distance --repeats 3 --skip-recipe --cases 512x512/100
"""

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

import segloss  # noqa: E402

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Case:
    name: str
    shape: Tuple[int, ...]
    make_inputs: Callable[[Tuple[int, ...], torch.device], Tuple[torch.Tensor, torch.Tensor]]
    ours: Loss
    reference_name: str
    reference: Loss
    formula: Optional[Loss]  # compiled with torch.compile; None: no such anchor
    repeats: Optional[int] = None  # fewer than --repeats for a slow reference


def binary_target(shape, device):
    return (torch.rand(shape, device=device) > 0.5).float()


def probabilities(shape, device):
    return torch.rand(shape, device=device).clamp_(1e-6, 1 - 1e-6), binary_target(shape, device)


def logits(shape, device):
    return torch.randn(shape, device=device), binary_target(shape, device)


def bce_formula_with_pos_weight(p, y, pos_weight):
    # PyTorch's BCELoss has no pos_weight: the article's weighted BCE in eager ops.
    log_p = torch.log(p).clamp_min(-100)
    log_1mp = torch.log1p(-p).clamp_min(-100)
    return -(pos_weight * y * log_p + (1 - y) * log_1mp).mean()


def bce_cases(device) -> List[Case]:
    pw = torch.tensor([3.0], device=device)
    cases = []
    for shape in [(16, 1, 512, 512), (2, 1, 128, 128, 128)]:
        cases += [
            Case("bce", shape, probabilities, lambda x, y: segloss.binary_cross_entropy(x, y),
                 "torch eager", F.binary_cross_entropy, F.binary_cross_entropy),
            Case("bce, pos_weight", shape, probabilities,
                 lambda x, y: segloss.binary_cross_entropy(x, y, pos_weight=pw),
                 "torch eager", lambda x, y: bce_formula_with_pos_weight(x, y, pw),
                 lambda x, y: bce_formula_with_pos_weight(x, y, pw)),
            Case("bce_with_logits", shape, logits,
                 lambda x, y: segloss.binary_cross_entropy_with_logits(x, y),
                 "torch eager", F.binary_cross_entropy_with_logits,
                 F.binary_cross_entropy_with_logits),
            Case("bce_with_logits, pos_weight", shape, logits,
                 lambda x, y: segloss.binary_cross_entropy_with_logits(x, y, pos_weight=pw),
                 "torch eager",
                 lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=pw),
                 lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=pw)),
        ]
    return cases


def dice_formula(x, y, activation: str, smooth: float = 1e-5):
    """The Dice loss in PyTorch ops (MONAI's defaults), for torch.compile."""
    if activation == "softmax":
        p = torch.softmax(x, 1)
        y = F.one_hot(y[:, 0].long(), x.shape[1]).movedim(-1, 1).to(p.dtype)
    else:
        p = torch.sigmoid(x)
    dims = tuple(range(2, x.dim()))
    intersection = (p * y).sum(dims)
    denominator = p.sum(dims) + y.sum(dims)
    return (1 - (2 * intersection + smooth) / (denominator + smooth)).mean()


def class_map(shape, device, classes=4):
    n, c, *spatial = shape
    return torch.randn(shape, device=device), torch.randint(0, c, (n, 1, *spatial), device=device)


def monai_losses():
    """MONAI's losses module, or None where MONAI is not installed (the GPU
    machines): the references are then the same formulas in eager PyTorch."""
    try:
        from monai import losses
    except ImportError:
        return None
    return losses


NO_MONAI = "torch eager (MONAI not installed)"


def dice_cases(device) -> List[Case]:
    monai = monai_losses()
    sigmoid = lambda x, y: dice_formula(x, y, "sigmoid")  # noqa: E731
    softmax = lambda x, y: dice_formula(x, y, "softmax")  # noqa: E731
    if monai is not None:
        name, ref_sigmoid = "MONAI", monai.DiceLoss(sigmoid=True)
        ref_softmax = monai.DiceLoss(softmax=True, to_onehot_y=True)
    else:
        name, ref_sigmoid, ref_softmax = NO_MONAI, sigmoid, softmax
    cases = []
    for shape in [(16, 1, 512, 512), (2, 1, 128, 128, 128)]:
        cases.append(Case("dice, sigmoid", shape, logits,
                          lambda x, y: segloss.dice_loss(x, y, activation="sigmoid"),
                          name, ref_sigmoid, sigmoid))
    cases.append(Case("dice, softmax, label map", (2, 4, 128, 128, 128), class_map,
                      lambda x, y: segloss.dice_loss(x, y, activation="softmax"),
                      name, ref_softmax, softmax))
    return cases


def region_formula(x, y, loss: str, alpha: float = 0.3, beta: float = 0.7,
                   smooth: float = 1e-5):
    """A region loss over softmax probabilities and a one-hot target in
    PyTorch ops (MONAI's conventions), for torch.compile and as the eager
    reference where MONAI is absent."""
    p = torch.softmax(x, 1)
    y = F.one_hot(y[:, 0].long(), x.shape[1]).movedim(-1, 1).to(p.dtype)
    dims = tuple(range(2, x.dim()))
    tp, predicted, truth = (p * y).sum(dims), p.sum(dims), y.sum(dims)
    if loss == "tversky":
        fp, fn = predicted - tp, truth - tp
        return (1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)).mean()
    if loss == "jaccard":
        return (1 - (2 * tp + smooth) / (2 * (predicted + truth - tp) + smooth)).mean()
    dice = 1 - (2 * tp + smooth) / (predicted + truth + smooth)
    if loss == "log-cosh dice":
        return torch.log(torch.cosh(dice)).mean()
    # generalized Dice, w_type "square": weights over classes per image
    weights = 1 / truth.square()
    finite = torch.where(torch.isinf(weights), 0, weights)
    weights = torch.where(torch.isinf(weights), finite.amax(1, keepdim=True), weights)
    numerator = 2 * (weights * tp).sum(1) + smooth
    denominator = (weights * (predicted + truth)).sum(1) + smooth
    return (1 - numerator / denominator).mean()


def soft_class_target(shape, device):
    """Logits and a soft target over the classes (label smoothing, averaged
    annotations): a softmax of random values."""
    return torch.randn(shape, device=device), torch.softmax(torch.randn(shape, device=device), 1)


def soft_dice_formula(x, y, smooth: float = 1e-5):
    """MONAI's soft-label Dice (soft_label=True) in PyTorch ops, for
    torch.compile and as the eager reference where MONAI is absent."""
    p = torch.softmax(x, 1)
    dims = tuple(range(2, x.dim()))
    predicted, truth = p.sum(dims), y.sum(dims)
    tp = (predicted + truth - (p - y).abs().sum(dims)) / 2
    return (1 - (2 * tp + smooth) / (predicted + truth + smooth)).mean()


def region_cases(device) -> List[Case]:
    """The region losses on 2x4x128^3, softmax over a label map: each against
    segloss's own dice_loss on the same input (they share its one pass over
    the logits, so they should cost the same) and against MONAI's class."""
    monai = monai_losses()
    shape = (2, 4, 128, 128, 128)
    losses = {
        "tversky": (lambda x, y: segloss.tversky_loss(x, y, activation="softmax", alpha=0.3,
                                                      beta=0.7),
                    monai and monai.TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.3,
                                                beta=0.7)),
        "jaccard": (lambda x, y: segloss.jaccard_loss(x, y, activation="softmax"),
                    monai and monai.DiceLoss(softmax=True, to_onehot_y=True, jaccard=True)),
        "log-cosh dice": (lambda x, y: segloss.log_cosh_dice_loss(x, y, activation="softmax"),
                          None),
        "generalized dice": (lambda x, y: segloss.generalized_dice_loss(x, y,
                                                                         activation="softmax"),
                             monai and monai.GeneralizedDiceLoss(softmax=True, to_onehot_y=True)),
    }
    names = {"tversky": "tversky_loss", "jaccard": "jaccard_loss",
             "log-cosh dice": "log_cosh_dice_loss", "generalized dice": "generalized_dice_loss"}
    dice = lambda x, y: segloss.dice_loss(x, y, activation="softmax")  # noqa: E731
    cases = []
    for loss, (ours, monai_reference) in losses.items():
        if names[loss] not in segloss.__all__:
            continue  # not built yet
        formula = (lambda loss: lambda x, y: region_formula(x, y, loss))(loss)
        cases.append(Case(f"{loss}, softmax, label map, vs dice_loss", shape, class_map, ours,
                          "segloss dice_loss", dice, None))
        if monai_reference is not None:
            cases.append(Case(f"{loss}, softmax, label map", shape, class_map, ours, "MONAI",
                              monai_reference, formula))
        else:
            cases.append(Case(f"{loss}, softmax, label map", shape, class_map, ours,
                              "torch eager" if monai is not None else NO_MONAI, formula,
                              formula))
    # soft_label=True: one more column in the same pass.
    soft = lambda x, y: segloss.dice_loss(x, y, activation="softmax", soft_label=True)  # noqa
    cases.append(Case("dice soft_label, softmax, soft target, vs dice_loss", shape,
                      soft_class_target, soft, "segloss dice_loss", dice, None))
    cases.append(Case("dice soft_label, softmax, soft target", shape, soft_class_target, soft,
                      "MONAI" if monai is not None else NO_MONAI,
                      monai.DiceLoss(softmax=True, soft_label=True) if monai is not None
                      else soft_dice_formula, soft_dice_formula))
    return cases


def nnunet_dice_and_ce(x, y, smooth: float = 1e-5):
    """nnU-Net's DC_and_CE_loss in eager ops: soft Dice on softmax without the
    background (as -dice) plus cross-entropy, on a one-hot target."""
    cross_entropy = F.cross_entropy(x, y[:, 0].long())
    p = torch.softmax(x, 1)
    one_hot = torch.zeros_like(p).scatter_(1, y.long(), 1)
    dims = tuple(range(2, x.dim()))
    tp = (p * one_hot).sum(dims)
    fp = (p * (1 - one_hot)).sum(dims)
    fn = ((1 - p) * one_hot).sum(dims)
    dice = (2 * tp + smooth) / torch.clip(2 * tp + fp + fn + smooth, 1e-8)
    return cross_entropy - dice[:, 1:].mean()


def dice_ce_cases(device) -> List[Case]:
    monai = monai_losses()
    if monai is not None:
        name, reference = "MONAI", monai.DiceCELoss(softmax=True, to_onehot_y=True)
    else:
        name, reference = NO_MONAI, nnunet_dice_and_ce
    shape = (2, 4, 128, 128, 128)
    return [
        Case("dice+ce, softmax, label map", shape, class_map,
             lambda x, y: segloss.dice_ce_loss(x, y, activation="softmax"),
             name, reference, nnunet_dice_and_ce),
        Case("dice+ce, softmax, label map, no background", shape, class_map,
             lambda x, y: segloss.dice_ce_loss(x, y, activation="softmax",
                                               include_background=False),
             "nnU-Net-style eager", nnunet_dice_and_ce, nnunet_dice_and_ce),
    ]


def torchvision_sigmoid_focal_loss(x, y, alpha: float = 0.25, gamma: float = 2.0):
    """torchvision.ops.sigmoid_focal_loss(reduction="mean"), its ops as
    torchvision writes them (torchvision is not installable beside this CPU
    torch: no matching wheel on PyPI)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    return (alpha_t * loss).mean()


def softmax_focal_formula(x, y, gamma: float = 2.0):
    """MONAI's softmax focal loss (one-hot target, mean over N * C * S) in
    PyTorch ops, for torch.compile and as the reference where MONAI is absent."""
    log_p = torch.log_softmax(x, 1)
    onehot = F.one_hot(y[:, 0].long(), x.shape[1]).movedim(-1, 1).to(x.dtype)
    return (-(1 - log_p.exp()).pow(gamma) * log_p * onehot).mean()


def balanced_bce_formula(x, y):
    beta = 1 - y.mean(tuple(range(1, y.dim())), keepdim=True)
    return -(beta * y * F.logsigmoid(x) + (1 - beta) * (1 - y) * F.logsigmoid(-x)).mean()


def dice_focal_formula(x, y, gamma: float = 2.0, smooth: float = 1e-5):
    """MONAI's DiceFocalLoss(softmax=True, to_onehot_y=True): a softmax Dice and
    a sigmoid focal term on the one-hot target, in PyTorch ops."""
    onehot = F.one_hot(y[:, 0].long(), x.shape[1]).movedim(-1, 1).to(x.dtype)
    p = torch.softmax(x, 1)
    dims = tuple(range(2, x.dim()))
    dice = 1 - (2 * (p * onehot).sum(dims) + smooth) / (p.sum(dims) + onehot.sum(dims) + smooth)
    bce = F.binary_cross_entropy_with_logits(x, onehot, reduction="none")
    focal = torch.exp(gamma * F.logsigmoid(-x * (2 * onehot - 1))) * bce
    return dice.mean() + focal.mean()


def focal_cases(device) -> List[Case]:
    monai = monai_losses()
    if monai is not None:
        name, softmax_reference = "MONAI", monai.FocalLoss(use_softmax=True, to_onehot_y=True)
        dice_focal_reference = monai.DiceFocalLoss(softmax=True, to_onehot_y=True)
    else:
        name, softmax_reference = NO_MONAI, softmax_focal_formula
        dice_focal_reference = dice_focal_formula
    cases = []
    for shape in [(16, 1, 512, 512), (2, 1, 128, 128, 128)]:
        cases += [
            Case("sigmoid focal", shape, logits,
                 lambda x, y: segloss.focal_loss(x, y, 2.0, 0.25),
                 "torchvision's formula, eager", torchvision_sigmoid_focal_loss,
                 torchvision_sigmoid_focal_loss),
            Case("balanced bce", shape, logits,
                 lambda x, y: segloss.balanced_bce_with_logits(x, y),
                 "torch eager", balanced_bce_formula, balanced_bce_formula),
        ]
    shape = (2, 4, 128, 128, 128)
    cases += [
        Case("softmax focal, label map", shape, class_map,
             lambda x, y: segloss.focal_loss(x, y, 2.0, activation="softmax"),
             name, softmax_reference, softmax_focal_formula),
        Case("dice+focal (sigmoid focal), softmax, label map", shape, class_map,
             lambda x, y: segloss.dice_focal_loss(x, y, activation="softmax",
                                                  focal_activation="sigmoid"),
             name, dice_focal_reference, dice_focal_formula),
        Case("dice+focal (softmax focal), softmax, label map", shape, class_map,
             lambda x, y: segloss.dice_focal_loss(x, y, activation="softmax"),
             "dice + softmax focal, eager",
             lambda x, y: dice_formula(x, y, "softmax") + softmax_focal_formula(x, y),
             lambda x, y: dice_formula(x, y, "softmax") + softmax_focal_formula(x, y)),
    ]
    return cases


def shape_aware_cases(device) -> List[Case]:
    """The shape-aware loss on 8 images of 512x512 with about 100 cells each:
    the usual pipeline (per-instance SciPy weight maps, then PyTorch's BCE
    with weight=) against segloss with instances=; and with precomputed
    weight maps, segloss against PyTorch's BCE with weight=."""
    import numpy as np
    import distance  # the cell images and the per-instance recipe

    shape = (8, 1, 512, 512)
    instances_np = np.stack([distance.cells(shape[2:], 100, seed) for seed in range(shape[0])])
    instances = torch.from_numpy(instances_np).to(device)
    weight_map = segloss.unet_weight_map(instances)[:, None]

    def usual_pipeline(x, y):
        maps = np.stack([distance.per_instance_recipe(labels) for labels in instances_np])
        return F.binary_cross_entropy_with_logits(
            x, y, weight=torch.from_numpy(maps)[:, None].to(x.device))

    def bce_with_map(x, y):
        return F.binary_cross_entropy_with_logits(x, y, weight=weight_map)

    cases = [
        Case("shape-aware, instances", shape, logits,
             lambda x, y: segloss.shape_aware_loss(x, y, instances=instances),
             "per-instance SciPy + torch BCE weight=", usual_pipeline, None, repeats=1),
        Case("shape-aware, precomputed map", shape, logits,
             lambda x, y: segloss.shape_aware_loss(x, y, weight_map),
             "torch BCE weight=", bce_with_map, bce_with_map),
    ]
    return cases + multi_class_shape_aware_cases(device)


def class_indices(shape, device):
    n, c, *spatial = shape
    return torch.randn(shape, device=device), torch.randint(0, c, (n, *spatial), device=device)


def multi_class_shape_aware_cases(device) -> List[Case]:
    """The multi-class shape-aware loss on 2x4x128^3 logits with a class-index
    target and a precomputed U-Net weight map (100 cells per volume), against
    the composite users write: F.cross_entropy(reduction="none") * map; then
    with per-class weights and ignored pixels."""
    import numpy as np
    import distance

    shape = (2, 4, 128, 128, 128)
    instances = torch.from_numpy(np.stack([distance.cells(shape[2:], 100, seed)
                                           for seed in range(shape[0])]))
    weight_map = segloss.unet_weight_map(instances).to(device)
    class_weights = torch.tensor([0.5, 1.0, 2.0, 4.0], device=device)
    ignore = 255

    def composite(x, t):
        return (F.cross_entropy(x, t, reduction="none") * weight_map).mean()

    def with_ignored(make):
        def make_inputs(shape, device):
            x, t = make(shape, device)
            return x, t.masked_fill(torch.rand(t.shape, device=device) < 0.1, ignore)
        return make_inputs

    def weighted_composite(x, t):
        loss = F.cross_entropy(x, t, weight=class_weights, ignore_index=ignore, reduction="none")
        return (loss * weight_map).sum() / (t != ignore).sum()

    return [
        Case("shape-aware, softmax, precomputed map", shape, class_indices,
             lambda x, t: segloss.shape_aware_loss(x, t, weight_map),
             "torch cross_entropy * map", composite, composite),
        Case("shape-aware, softmax, map, class weights, ignore_index", shape,
             with_ignored(class_indices),
             lambda x, t: segloss.shape_aware_loss(x, t, weight_map, weight=class_weights,
                                                   ignore_index=ignore),
             "torch cross_entropy * map", weighted_composite, weighted_composite),
    ]


def round_objects(shape, device):
    """Logits and a binary target of round objects (a third of the pixels),
    the logits agreeing with the target at most pixels: the distance maps of
    both are those of a plausible segmentation, not of noise."""
    import maps  # the mask builder of the maps benchmark
    n, c, *spatial = shape
    target = np.stack([np.stack([maps.mask_of(tuple(spatial), "disks", seed=n_ * c + c_)
                                 for c_ in range(c)]) for n_ in range(n)])
    y = torch.from_numpy(target).float().to(device)
    x = (4 * y - 2) + 1.5 * torch.randn(shape, device=device)
    return x, y


def distance_loss_cases(device) -> List[Case]:
    """The boundary and Hausdorff DT losses, maps computed every call, against
    MONAI's (SciPy transforms per image and channel). No torch.compile
    anchor: the references' maps are SciPy calls."""
    monai = monai_losses()
    if monai is None:
        print("note: MONAI is not installed; the distance_losses suite needs it")
        return []
    cases = []
    for shape in [(8, 2, 256, 256), (2, 2, 96, 96, 96)]:
        cases += [
            Case("hausdorff_dt_loss, sigmoid", shape, round_objects,
                 lambda x, y: segloss.hausdorff_dt_loss(x, y, activation="sigmoid"),
                 "MONAI HausdorffDTLoss", monai.HausdorffDTLoss(sigmoid=True), None, repeats=10),
            Case("boundary_loss, sigmoid", shape, round_objects,
                 lambda x, y: segloss.boundary_loss(x, y, activation="sigmoid"),
                 "MONAI BoundaryLoss", monai.BoundaryLoss(sigmoid=True), None, repeats=10),
            Case("hausdorff_dt_loss, softmax", shape, round_objects,
                 lambda x, y: segloss.hausdorff_dt_loss(x, y, activation="softmax"),
                 "MONAI HausdorffDTLoss", monai.HausdorffDTLoss(softmax=True), None, repeats=10),
        ]
    return cases


SUITES = {"bce": bce_cases, "focal": focal_cases, "dice": dice_cases,
          "dice_ce": dice_ce_cases, "region": region_cases, "shape_aware": shape_aware_cases,
          "distance_losses": distance_loss_cases}


def run_distance(argv: List[str]) -> None:
    import distance  # benchmarks/distance.py, imported only when asked for
    distance.main(argv)


# Suites with their own runner, called with an argument list.
def run_maps(argv: List[str]) -> None:
    import maps  # benchmarks/maps.py: the plain transform and the loss maps
    maps.main(argv)


RUNNERS: Dict[str, Callable[[List[str]], None]] = {"distance": run_distance, "maps": run_maps}
MEMORY_RUNNERS = {"distance"}  # the runners with a --memory mode (CPU)


def forward_backward(loss_fn: Loss, x: torch.Tensor, y: torch.Tensor):
    def step():
        x.grad = None
        loss_fn(x, y).backward()
    return step


def run_suite(name: str, device: torch.device, args) -> None:
    rows, extra_columns = [], []
    for case in SUITES[name](device):
        if args.case and not any(part in case.name for part in args.case):
            continue
        torch.manual_seed(0)
        x, y = case.make_inputs(case.shape, device)
        x.requires_grad_(True)
        row = harness.Row(case=case.name, shape=list(case.shape), dtype="float32")
        repeats = case.repeats or args.repeats
        time_it = lambda fn: harness.median_ms(  # noqa: E731
            fn, device, warmup=min(3, repeats), repeats=repeats)
        candidates: Dict[str, Callable] = {"segloss": forward_backward(case.ours, x, y),
                                           "reference": forward_backward(case.reference, x, y)}
        if not args.no_compile and case.formula is not None:
            torch._dynamo.reset()
            candidates["torch.compile"] = forward_backward(
                torch.compile(case.formula, fullgraph=True), x, y)
        for label, step in candidates.items():
            if args.memory:
                step()  # one-time allocations (compilation, caches) are not counted
                x.grad = None  # the new gradient counts
                row.ms[f"{label} MiB"] = harness.peak_extra_memory_mib(step, device)
            else:
                row.ms[label] = time_it(step)
                if device.type == "cuda":  # the allocator's statistics: no second run needed
                    x.grad = None
                    row.ms[f"{label} MiB"] = harness.peak_extra_memory_mib(step, device)
        if not args.memory:
            xd = x.detach()
            row.ms["copy"] = time_it(lambda: (xd.clone(), y.clone()))
        row.case = f"{case.name} (vs {case.reference_name})"
        rows.append(row)
        print(f"{row.case:44s} {'x'.join(map(str, case.shape)):18s} " +
              "  ".join(f"{k} {v:.2f}" for k, v in row.ms.items()), flush=True)
        extra_columns = list(candidates)

    if args.memory:
        candidates = [f"{c} MiB" for c in extra_columns]
        ratios = [("reference MiB", "segloss MiB"), ("torch.compile MiB", "segloss MiB")]
        what = "peak extra memory of one forward+backward (input gradient included), MiB"
    else:
        candidates = ["segloss", "reference", "torch.compile", "copy"]
        ratios = [("reference", "segloss"), ("torch.compile", "segloss"), ("segloss", "copy")]
        what = (f"forward+backward, median of {args.repeats} (of fewer where a case says so); "
                "time in ms")
        if device.type == "cuda":
            candidates += [f"{c} MiB" for c in extra_columns]
            what += "; peak extra memory of one forward+backward in MiB"
    print(f"\n{name}: {harness.machine_description(device)}, torch {torch.__version__}, "
          f"float32, {what}")
    print(harness.markdown_table(rows, candidates, ratios))
    kind = "memory" if args.memory else "time"
    out = os.path.join(args.out_dir, f"{name}-{kind}-{device.type}.json")
    os.makedirs(args.out_dir, exist_ok=True)
    harness.write_json(out, rows, device, {"suite": name, "what": what})
    print(f"wrote {out}\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted({**SUITES, **RUNNERS}), action="append",
                        help="run only these suites (repeatable); default: all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=None,
                        help="default: 20 (runner suites: their own default)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile anchor")
    parser.add_argument("--case", action="append",
                        help="run only the cases whose name contains this (repeatable)")
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--memory", action="store_true",
                        help="measure peak extra memory instead of time")
    args, passthrough = parser.parse_known_args(argv)
    names = args.suite or sorted({**SUITES, **RUNNERS})
    if passthrough and not any(name in RUNNERS for name in names):
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    runner_argv = ["--out-dir", args.out_dir, *passthrough]
    if args.repeats is not None:
        runner_argv = ["--repeats", str(args.repeats), *runner_argv]
    else:
        args.repeats = 20
    device = torch.device(args.device)
    if args.memory and device.type == "cpu":
        harness.rerun_where_memory_is_measurable(__file__, argv)
    for name in names:
        if name not in RUNNERS:
            run_suite(name, device, args)
        elif args.memory and name not in MEMORY_RUNNERS:
            print(f"{name}: no --memory mode, skipped\n")
        elif args.memory:
            RUNNERS[name](runner_argv + ["--memory"])
        else:
            RUNNERS[name](runner_argv + ["--device", str(device)])


if __name__ == "__main__":
    main()
