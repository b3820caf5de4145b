"""Test-data builders and comparison helpers shared by the segloss tests."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional, Sequence

import pytest
import torch

import segloss  # noqa: F401  (registers the torch.ops.segloss ops, as for users)
from reference import LOGITS, PROBABILITY

OPS = {
    PROBABILITY: torch.ops.segloss.binary_cross_entropy,
    LOGITS: torch.ops.segloss.binary_cross_entropy_with_logits,
}
BACKWARD_OPS = {
    PROBABILITY: torch.ops.segloss._binary_cross_entropy_backward,
    LOGITS: torch.ops.segloss._binary_cross_entropy_with_logits_backward,
}
OP_NAMES = {
    PROBABILITY: "segloss.binary_cross_entropy",
    LOGITS: "segloss.binary_cross_entropy_with_logits",
}
REDUCTIONS = ("none", "mean", "sum")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rand(shape, gen, low=0.0, high=1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64)


def make_input(kind: str, shape, gen, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Probabilities in [0.02, 0.98] or logits ~ 3 * N(0, 1)."""
    if kind == PROBABILITY:
        values = _rand(shape, gen, 0.02, 0.98)
    else:
        values = 3.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    return values.to(device=device, dtype=dtype)


def make_target(shape, gen, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """Soft labels in [0, 1], with about a third exactly 0 and a third exactly 1."""
    soft = _rand(shape, gen)
    pick = _rand(shape, gen)
    values = torch.where(pick < 1 / 3, 0.0, torch.where(pick < 2 / 3, 1.0, soft))
    return values.to(device=device, dtype=dtype)


def weight_shape(spec: str, shape: Sequence[int]):
    """The shape a weight of kind `spec` has for an input of `shape`, or None if
    that kind makes no sense for it."""
    nd = len(shape)
    if spec == "scalar":
        return ()
    if spec in ("full", "full_t", "expanded") and nd >= 1:
        return tuple(shape)
    if spec == "last" and nd >= 1:
        return (shape[-1],)
    if spec == "c11" and nd >= 4:  # (C, 1, 1) / (C, 1, 1, 1)
        return (shape[1],) + (1,) * (nd - 2)
    if spec == "1c11" and nd >= 4:  # (1, C, 1, 1) / (1, C, 1, 1, 1)
        return (1, shape[1]) + (1,) * (nd - 2)
    if spec == "h1" and nd >= 2:  # (H, 1): broadcast along the innermost dimension
        return (shape[-2], 1)
    if spec == "n111" and nd >= 2:  # (N, 1, ..., 1)
        return (shape[0],) + (1,) * (nd - 1)
    return None


def make_weight(spec: Optional[str], shape, gen, dtype=torch.float64, device="cpu", *,
                low=0.5, high=2.0) -> Optional[torch.Tensor]:
    """A positive weight of kind `spec` (see weight_shape) for an input of `shape`.

    'full_t' is a non-contiguous (transposed, or for 1-D strided) view of the
    full shape, 'expanded' a stride-0 expansion of a (1, ..., W) tensor.
    """
    if spec is None:
        return None
    wshape = weight_shape(spec, shape)
    assert wshape is not None, (spec, shape)
    if spec == "full_t":
        if len(wshape) >= 2:
            swapped = list(wshape)
            swapped[-1], swapped[-2] = swapped[-2], swapped[-1]
            w = _rand(swapped, gen, low, high).transpose(-1, -2)
        else:
            w = _rand((2 * wshape[0],), gen, low, high)[::2]
        assert not w.is_contiguous()
        return w.to(device=device, dtype=dtype)
    if spec == "expanded":
        w = _rand((1,) * (len(wshape) - 1) + (wshape[-1],), gen, low, high)
        return w.to(device=device, dtype=dtype).expand(wshape)
    return _rand(wshape, gen, low, high).to(device=device, dtype=dtype)


def make_grad_output(reduction: str, shape, gen, dtype=torch.float64, device="cpu"):
    """A non-trivial upstream gradient: input-shaped for 'none', else 0-dim 1.25."""
    if reduction == "none":
        return _rand(shape, gen, -1.5, 1.5).to(device=device, dtype=dtype)
    return torch.tensor(1.25, dtype=dtype, device=device)


def forward_backward(kind, x, y, weight=None, pos_weight=None, reduction="mean",
                     grad_output=None):
    """The op's loss and input gradient (grad is None when grad_output is None)."""
    x = x.detach().requires_grad_(grad_output is not None)
    loss = OPS[kind](x, y, weight, pos_weight, reduction)
    grad = None
    if grad_output is not None:
        (grad,) = torch.autograd.grad(loss, x, grad_output)
    return loss.detach(), grad


def tolerances(dtype: torch.dtype, expected: torch.Tensor):
    """(rtol, atol) for comparing a result of `dtype` with a float64 reference:
    1e-12 for float64, 1e-6 for float32 and the dtype's resolution for the
    half types, each atol scaled by the reference's largest magnitude."""
    finite = expected[torch.isfinite(expected)] if expected.numel() else expected
    scale = float(finite.detach().abs().max()) if finite.numel() else 1.0
    scale = max(scale, 1e-30)
    if dtype == torch.float64:
        return 1e-12, 1e-12
    if dtype == torch.float32:
        return 1e-6, 1e-6 * scale
    eps = torch.finfo(dtype).eps  # float16: 2**-10, bfloat16: 2**-7
    return eps, eps * scale


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, dtype=None, msg=""):
    """actual (any device, dtype `dtype`) equals the float64 reference within
    that dtype's tolerance; NaN must match NaN."""
    dtype = actual.dtype if dtype is None else dtype
    expected = expected.to(torch.float64)
    assert actual.shape == expected.shape, (msg, actual.shape, expected.shape)
    rtol, atol = tolerances(dtype, expected)
    torch.testing.assert_close(actual.detach().to("cpu", torch.float64), expected, rtol=rtol,
                               atol=atol, equal_nan=True, msg=lambda m: f"{msg}\n{m}")


def run_python(code: str, *args: str, env_update: Optional[dict] = None,
               timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (this one), failing with its output if it fails."""
    env = dict(os.environ)
    env.update(env_update or {})
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


# --------------------------------------------------------------------------
# The CPU kernels' instruction sets.

CPU_ISAS = ("baseline", "avx2", "avx512")
# The CPU features each instruction-set build needs (CMakeLists.txt's -m
# flags), as /proc/cpuinfo names them: read here independently of segloss's
# own detection.
_ISA_CPU_FLAGS = {"baseline": (), "avx2": ("avx2", "fma"),
                  "avx512": ("avx512f", "avx512dq", "avx512bw", "avx512vl")}
_ISA_REPORT = "segloss CPU kernels:"


def compile_host_program(source: str, directory, sanitize: bool = False) -> str:
    """Builds the one-file C++ program `source` (tests/cpp/) with the host
    compiler into `directory` and returns its path; skips the test without a
    compiler. -ffp-contract=off as the library's host build: no fused
    multiply-adds. sanitize: with AddressSanitizer and UndefinedBehaviorSanitizer,
    any report fatal (skips the test where the compiler cannot link them)."""
    import shutil
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("needs a C++ compiler")
    binary = os.path.join(str(directory), os.path.splitext(os.path.basename(source))[0])
    flags = ["-O2", "-std=c++17", "-ffp-contract=off"]
    if sanitize:
        flags = ["-O1", "-g", "-std=c++17", "-ffp-contract=off",
                 "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    result = subprocess.run([compiler, *flags, source, "-o", binary], capture_output=True,
                            text=True)
    if result.returncode != 0 and sanitize:
        pytest.skip(f"the compiler cannot build with sanitizers: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr
    return binary


def cpu_flags() -> frozenset:
    """The CPU's feature flags from /proc/cpuinfo's first "flags" line (x86
    Linux); empty where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def missing_cpu_flags(isa: str) -> list:
    """The CPU features that the `isa` build needs and this CPU lacks."""
    flags = cpu_flags()
    return [flag for flag in _ISA_CPU_FLAGS[isa] if flag not in flags]


def widest_cpu_isa() -> str:
    """The widest of CPU_ISAS that this CPU can run, from /proc/cpuinfo."""
    return [isa for isa in CPU_ISAS if not missing_cpu_flags(isa)][-1]


def run_python_with_cpu_isa(isa: str, code: str, *args: str, **kwargs
                            ) -> subprocess.CompletedProcess:
    """run_python(code, *args) in a process whose CPU kernels use instruction
    set `isa` (SEGLOSS_CPU_ISA): skips the calling test where the CPU lacks
    it, and checks through segloss's own report that the kernels did use it
    (rather than silently running another)."""
    missing = missing_cpu_flags(isa)
    if missing:
        pytest.skip(f"this CPU lacks {isa} (/proc/cpuinfo has no {', '.join(missing)})")
    env_update = dict(kwargs.pop("env_update", None) or {}, SEGLOSS_CPU_ISA=isa)
    report = ("\nfrom segloss._library import cpu_instruction_set\n"
              f"print({_ISA_REPORT!r}, cpu_instruction_set())\n")
    proc = run_python(code + report, *args, env_update=env_update, **kwargs)
    reported = [line.split(_ISA_REPORT, 1)[1].strip() for line in proc.stdout.splitlines()
                if line.startswith(_ISA_REPORT)]
    assert reported == [isa], f"asked for {isa}, the CPU kernels used {reported}"
    return proc


# --------------------------------------------------------------------------
# Dice loss test data.

def make_dice_input(activation: str, shape, gen, dtype=torch.float64, device="cpu"):
    """Logits ~ 2.5 * N(0, 1) for sigmoid/softmax, probabilities in [0.02, 0.98]
    for activation 'none'."""
    if activation == "none":
        values = _rand(shape, gen, 0.02, 0.98)
    else:
        values = 2.5 * torch.randn(shape, generator=gen, dtype=torch.float64)
    return values.to(device=device, dtype=dtype)


def make_labels(shape, num_labels: int, gen, dtype=torch.int64, device="cpu", *,
                ignore_index=None, ignore_fraction=0.15) -> torch.Tensor:
    """Class indices in [0, num_labels) of `shape`, about `ignore_fraction` of
    them set to ignore_index when that is given."""
    labels = torch.randint(0, num_labels, shape, generator=gen, dtype=torch.int64)
    if ignore_index is not None:
        labels = torch.where(_rand(shape, gen) < ignore_fraction, ignore_index, labels)
    if dtype == torch.bool:
        assert num_labels <= 2 and ignore_index is None
    return labels.to(device=device, dtype=dtype)


def make_dice_target(kind: str, shape, gen, dtype=None, device="cpu", *, ignore_index=None,
                     foreground=0.3) -> torch.Tensor:
    """A Dice target for an input of `shape` (N, C, *spatial):

    'soft'    floats of the input's shape, a third 0, a third 1, a third in (0, 1)
    'binary'  floats 0/1 of the input's shape, about `foreground` of them 1
    'onehot'  floats: the one-hot encoding (over C) of random class indices
    'labels'  class indices (N, *spatial) in [0, C) ([0, 2) for C == 1)
    'labels1' the same as (N, 1, *spatial)
    """
    shape = tuple(shape)
    n, c = shape[:2]
    if kind == "soft":
        return make_target(shape, gen, dtype or torch.float64, device)
    if kind == "binary":
        return (_rand(shape, gen) < foreground).to(device=device, dtype=dtype or torch.float64)
    if kind == "onehot":
        labels = torch.randint(0, c, (n,) + shape[2:], generator=gen)
        onehot = torch.nn.functional.one_hot(labels, c).movedim(-1, 1)
        return onehot.to(device=device, dtype=dtype or torch.float64)
    if kind in ("labels", "labels1"):
        label_shape = (n,) + shape[2:] if kind == "labels" else (n, 1) + shape[2:]
        return make_labels(label_shape, 2 if c == 1 else c, gen, dtype or torch.int64, device,
                           ignore_index=ignore_index)
    raise ValueError(kind)


def mask_shape(spec: str, shape):
    """The shape of a mask of kind `spec` for an input of `shape` (N, C, *spatial)."""
    n, spatial = shape[0], tuple(shape[2:])
    kind = spec.split("-")[0]
    return {"n1s": (n, 1) + spatial, "11s": (1, 1) + spatial,
            "n111": (n, 1) + (1,) * len(spatial), "s": spatial}[kind]


def make_mask(spec: Optional[str], shape, gen, device="cpu") -> Optional[torch.Tensor]:
    """A mask of kind '<shape>-<dtype>' (shape n1s, 11s, n111 or s, see
    mask_shape; dtype float or bool), or None. About 30% of a float or bool
    mask is 0; the float ones' other values are 0.25, 1 or 3 (any nonzero value
    includes the pixel). An n111 mask drops the whole first image."""
    if spec is None:
        return None
    kind, dtype = spec.split("-")
    mshape = mask_shape(spec, shape)
    if kind == "n111":
        keep = torch.ones(mshape, dtype=torch.bool)
        keep[0] = False
    else:
        keep = _rand(mshape, gen) >= 0.3
    if dtype == "bool":
        return keep.to(device)
    values = torch.tensor([0.25, 1.0, 3.0], dtype=torch.float64)[
        torch.randint(0, 3, mshape, generator=gen)]
    return torch.where(keep, values, 0.0).to(device=device, dtype=torch.float32)


def dice_loss_shape(shape, batch_dice: bool, include_background: bool, reduction: str):
    if reduction != "none":
        return ()
    c = shape[1] - (0 if include_background else 1)
    return (c,) if batch_dice else (shape[0], c)


def make_dice_grad_output(shape, gen, dtype=torch.float64, device="cpu", *, batch_dice=False,
                          include_background=True, reduction="mean") -> torch.Tensor:
    """A non-trivial upstream gradient of the loss: random in [-1.5, 1.5] per
    (n, c) for 'none', else 0-dim 1.25."""
    out_shape = dice_loss_shape(shape, batch_dice, include_background, reduction)
    if reduction == "none":
        return _rand(out_shape, gen, -1.5, 1.5).to(device=device, dtype=dtype)
    return torch.tensor(1.25, dtype=dtype, device=device)


def dice_forward_backward(x, target, grad_output=None, entry="functional", loss="dice_loss",
                          **options):
    """segloss's Dice loss (or, with loss="dice_ce_loss", Dice + CE, or another
    region loss by its function name) and input
    gradient (None when grad_output is None), through `entry`: 'functional'
    (segloss.<loss>), 'op' (torch.ops.segloss.<loss>) or 'module'
    (segloss.nn.DiceLoss / DiceCELoss)."""
    x = x.detach().requires_grad_(grad_output is not None)
    if entry == "functional":
        value = getattr(segloss, loss)(x, target, **options)
    elif entry == "op":
        value = getattr(torch.ops.segloss, loss)(x, target, **options)
    elif entry == "module":
        options = dict(options)
        mask = options.pop("mask", None)
        module = {"dice_loss": segloss.nn.DiceLoss, "dice_ce_loss": segloss.nn.DiceCELoss,
                  "tversky_loss": segloss.nn.TverskyLoss, "jaccard_loss": segloss.nn.JaccardLoss,
                  "log_cosh_dice_loss": segloss.nn.LogCoshDiceLoss,
                  "generalized_dice_loss": segloss.nn.GeneralizedDiceLoss}[loss]
        value = module(**options)(x, target, mask)
    else:
        raise ValueError(entry)
    grad = None
    if grad_output is not None:
        (grad,) = torch.autograd.grad(value, x, grad_output)
    return value.detach(), grad


def assert_region_entries_match(loss, x, target, grad_output, options):
    """The region loss `loss` through each entry point (functional, op,
    module) equals the float64 eager reference, loss and input gradient."""
    from reference import region_torch
    ref_loss, ref_grad = region_torch(loss, x, target, grad_output=grad_output, **options)
    for entry in ("functional", "op", "module"):
        value, grad = dice_forward_backward(x, target, grad_output, entry, loss=loss, **options)
        assert value.dtype == x.dtype
        assert_matches(value, ref_loss, msg=f"{entry} loss")
        assert_matches(grad, ref_grad, msg=f"{entry} grad")


def assert_aot_eager_equals_eager(fn, x, target):
    """fn(x, target) compiled with torch.compile(backend="aot_eager",
    fullgraph=True) gives eager's loss and input gradient, bit for bit."""
    import torch._dynamo
    torch._dynamo.reset()
    try:
        compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
        xs = [x.detach().clone().requires_grad_() for _ in range(2)]
        values = [compiled(xs[0], target), fn(xs[1], target)]
        grads = [torch.autograd.grad(v, xi)[0] for v, xi in zip(values, xs)]
        assert torch.equal(values[0], values[1]) and torch.equal(grads[0], grads[1])
    finally:
        torch._dynamo.reset()


def assert_close_to_scale(actual, expected, tol, msg=""):
    """|actual - expected| <= tol * (|expected| + max |expected|), NaN == NaN."""
    expected = expected.detach().to("cpu", torch.float64)
    scale = float(expected.abs().max()) if expected.numel() else 1.0
    assert actual.shape == expected.shape, (msg, actual.shape, expected.shape)
    torch.testing.assert_close(actual.detach().to("cpu", torch.float64), expected, rtol=tol,
                               atol=tol * max(scale, 1e-30), equal_nan=True,
                               msg=lambda m: f"{msg}\n{m}")


def make_class_weights(c, gen, dtype=torch.float64, device="cpu"):
    """Per-channel weights in [0.5, 2]."""
    return (0.5 + 1.5 * torch.rand(c, generator=gen, dtype=torch.float64)).to(device, dtype)


# --------------------------------------------------------------------------
# The forms in which the region losses (Dice, Jaccard, Tversky, ...) are
# compared with MONAI.

MONAI_FORMS = {
    # id: (activation, C, target kind, ignore_index)
    "sigmoid-multilabel": ("sigmoid", 3, "binary", None),
    "sigmoid-soft": ("sigmoid", 3, "soft", None),
    "sigmoid-C1-labels": ("sigmoid", 1, "labels1", None),
    "softmax-onehot": ("softmax", 4, "onehot", None),
    "softmax-to_onehot_y": ("softmax", 4, "labels1", None),
    "softmax-to_onehot_y-ignore255": ("softmax", 4, "labels1", 255),
    "softmax-to_onehot_y-ignore0": ("softmax", 4, "labels1", 0),
}


def monai_cases(forms=None):
    """(form, include_background) parameters over MONAI_FORMS (or `forms`)."""
    for form in forms or MONAI_FORMS:
        c = MONAI_FORMS[form][1]
        for include_background in (True, False):
            if c == 1 and not include_background:
                continue  # MONAI ignores include_background=False for one channel
            yield pytest.param(form, include_background,
                               id=f"{form}-{'bg' if include_background else 'nobg'}")


def monai_onehot(labels, c, ignore_index):
    """The float64 one-hot target that MONAI treats as to_onehot_y would the
    (N, 1, *spatial) labels. MONAI's own one-hot is float32, which its
    squared_pred path (vector norms) turns into float32 rounding of T; so
    for gamma = 2 the test gives it this instead. An ignore_index outside
    [0, C) becomes an all-zero pixel (MONAI's "sentinel" masking), one inside
    stays a one-hot pixel of that class (MONAI masks that class's pixels)."""
    labels = labels[:, 0]
    valid = torch.ones_like(labels, dtype=torch.bool)
    if ignore_index is not None and not 0 <= ignore_index < c:
        valid = labels != ignore_index
    onehot = torch.nn.functional.one_hot(torch.where(valid, labels, 0), c).movedim(-1, 1)
    return onehot.to(torch.float64) * valid.unsqueeze(1)


# --------------------------------------------------------------------------
# A scripted model of Dice-family losses, forward(x, labels, y, mask) ->
# (loss, per_class), run eagerly and in a fresh process that only loads the
# op library (test_dice.py, test_region.py).

SCRIPTED_DICE_CHILD = r"""
import sys
import torch

model_path, library_path, inputs_path, out_path = sys.argv[1:]
torch.ops.load_library(library_path)
model = torch.jit.load(model_path)
inputs = torch.load(inputs_path)
x = inputs["x"].requires_grad_()
loss, per_class = model(x, inputs["labels"], inputs["y"], inputs["mask"])
loss.backward()
torch.save({"loss": loss.detach(), "per_class": per_class.detach(), "grad": x.grad}, out_path)
assert "segloss" not in sys.modules, "the child imported segloss"
"""


def make_scripted_dice_data(gen):
    """The scripted model's inputs: softmax logits [2, 3, 9, 11], labels with
    ignore_index 255, a binary target [2, 1, 9, 11] and a bool mask."""
    shape = (2, 3, 9, 11)
    return {"x": make_dice_input("softmax", shape, gen, torch.float32),
            "labels": make_labels((2, 9, 11), 3, gen, ignore_index=255),
            "y": make_dice_target("binary", (2, 1, 9, 11), gen, torch.float32),
            "mask": make_mask("n1s-bool", shape, gen)}


def run_scripted_dice_model(model, data):
    """The model's loss, per-class output and input gradient on `data`."""
    x = data["x"].clone().requires_grad_()
    loss, per_class = model(x, data["labels"], data["y"], data["mask"])
    loss.backward()
    return {"loss": loss.detach(), "per_class": per_class.detach(), "grad": x.grad}
