"""Autograd (gradcheck against finite differences) and operator registration
(torch.library.opcheck) of the segloss binary cross-entropy ops."""

import re

import pytest
import torch

from helpers import (BACKWARD_OPS, assert_matches, OP_NAMES, OPS, REDUCTIONS, make_grad_output, make_input,
                     make_target, make_weight)
from reference import KINDS, reference

# (shape, weight kind, pos_weight kind): small shapes, broadcast weights.
GRADCHECK_CASES = [
    ((2, 3, 2, 3), None, None),
    ((2, 3, 2, 3), "c11", None),
    ((2, 3, 2, 3), None, "1c11"),
    ((2, 3, 2, 3), "full_t", "last"),
    ((2, 2, 2, 2, 3), "scalar", "c11"),
    ((7,), "last", "scalar"),
    ((), "scalar", "scalar"),
]


@pytest.mark.parametrize("shape,w_kind,pw_kind", GRADCHECK_CASES,
                         ids=[f"{len(s)}d-w={w}-pw={p}" for s, w, p in GRADCHECK_CASES])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind, reduction, shape, w_kind, pw_kind, device, gen):
    # Probabilities stay in [0.02, 0.98], far enough from 0 and 1 for the
    # finite differences.
    x = make_input(kind, shape, gen, device=device).requires_grad_()
    y = make_target(shape, gen, device=device)
    w = make_weight(w_kind, shape, gen, device=device)
    pw = make_weight(pw_kind, shape, gen, device=device, low=0.5, high=3.0)
    op = OPS[kind]
    assert torch.autograd.gradcheck(lambda x: op(x, y, w, pw, reduction), (x,), eps=1e-6,
                                    atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("argument", ["target", "weight", "pos_weight"])
@pytest.mark.parametrize("input_requires_grad", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_of_other_arguments_is_refused(kind, argument, input_requires_grad, gen):
    shape = (2, 3, 4)
    args = {
        "input": make_input(kind, shape, gen).requires_grad_(input_requires_grad),
        "target": make_target(shape, gen),
        "weight": make_weight("last", shape, gen),
        "pos_weight": make_weight("last", shape, gen),
    }
    args[argument].requires_grad_()
    message = (f"{OP_NAMES[kind]}: the gradient with respect to {argument} is not implemented")
    with pytest.raises(RuntimeError, match=re.escape(message)):
        OPS[kind](args["input"], args["target"], args["weight"], args["pos_weight"], "mean")
    # Detached, as the message says, it works.
    args[argument] = args[argument].detach()
    OPS[kind](args["input"], args["target"], args["weight"], args["pos_weight"], "mean")


# --------------------------------------------------------------------------
# opcheck: schema, autograd registration, FakeTensor/Meta kernels, AOT dispatch.

# (dtype, shape, weight kind, pos_weight kind, input requires grad)
OPCHECK_SAMPLES = [
    (torch.float64, (2, 3, 4, 5), None, None, True),
    (torch.float32, (2, 3, 4, 5), "c11", None, True),
    (torch.float32, (2, 3, 4, 5), None, "1c11", True),
    (torch.float64, (2, 3, 4, 5, 3), "full_t", "last", True),
    (torch.float32, (9,), "scalar", "full", False),
    (torch.bfloat16, (2, 1, 3, 5), "last", "c11", True),
]


def _sample(kind, dtype, shape, w_kind, pw_kind, gen, device):
    x = make_input(kind, shape, gen, dtype, device)
    y = make_target(shape, gen, dtype, device)
    w = make_weight(w_kind, shape, gen, dtype, device)
    pw = make_weight(pw_kind, shape, gen, dtype, device, low=0.5, high=3.0)
    return x, y, w, pw


def _sample_ids(samples):
    return [f"{str(d)[6:]}-{len(s)}d-w={w}-pw={p}-{'grad' if g else 'nograd'}"
            for d, s, w, p, g in samples]


@pytest.mark.parametrize("dtype,shape,w_kind,pw_kind,requires_grad", OPCHECK_SAMPLES,
                         ids=_sample_ids(OPCHECK_SAMPLES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_opcheck_forward(kind, reduction, dtype, shape, w_kind, pw_kind, requires_grad,
                         device, gen):
    x, y, w, pw = _sample(kind, dtype, shape, w_kind, pw_kind, gen, device)
    x.requires_grad_(requires_grad)
    torch.library.opcheck(OPS[kind].default, (x, y), {"weight": w, "pos_weight": pw,
                                                      "reduction": reduction})


@pytest.mark.parametrize("dtype,shape,w_kind,pw_kind", [s[:4] for s in OPCHECK_SAMPLES],
                         ids=[i.rsplit("-", 1)[0] for i in _sample_ids(OPCHECK_SAMPLES)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_opcheck_backward(kind, reduction, dtype, shape, w_kind, pw_kind, device, gen):
    # The backward ops are not differentiable: their samples need no grad.
    x, y, w, pw = _sample(kind, dtype, shape, w_kind, pw_kind, gen, device)
    g = make_grad_output(reduction, shape, gen, dtype, device)
    torch.library.opcheck(BACKWARD_OPS[kind].default, (g, x, y, w, pw, reduction))


@pytest.mark.parametrize("kind", KINDS)
def test_opcheck_positional_defaults(kind, gen):
    # The schema's defaults: weight=None, pos_weight=None, reduction="mean".
    x, y, _, _ = _sample(kind, torch.float32, (4, 5), None, None, gen, "cpu")
    torch.library.opcheck(OPS[kind].default, (x.requires_grad_(), y))
    ref, _ = reference(kind, x, y, reduction="mean")
    assert_matches(OPS[kind](x, y), ref)
