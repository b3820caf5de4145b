"""torch.compile(fullgraph=True): forward and backward through the segloss ops
equal eager mode exactly (the compiled graph calls the same kernels)."""

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing

from helpers import OPS, REDUCTIONS, make_grad_output, make_input, make_target, make_weight
from reference import KINDS, LOGITS, PROBABILITY

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _data(kind, shape, gen, dtype=torch.float32, w_kind=None, pw_kind=None):
    return (make_input(kind, shape, gen, dtype), make_target(shape, gen, dtype),
            make_weight(w_kind, shape, gen, dtype),
            make_weight(pw_kind, shape, gen, dtype, low=0.5, high=3.0))


def _run(fn, inputs, grad_outputs, n_grad):
    """fn's outputs and the gradients of its first n_grad inputs."""
    inputs = [t.detach().clone().requires_grad_(i < n_grad) if t is not None else None
              for i, t in enumerate(inputs)]
    outputs = fn(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    grads = torch.autograd.grad(outputs, inputs[:n_grad], grad_outputs)
    return [o.detach() for o in outputs], list(grads)


def _assert_same(actual, expected):
    for a_list, e_list in zip(actual, expected):
        assert len(a_list) == len(e_list)
        for a, e in zip(a_list, e_list):
            assert a.shape == e.shape and a.dtype == e.dtype
            assert torch.equal(a, e), (a - e).abs().max()


def _single_op(kind, reduction):
    op = OPS[kind]

    def loss(x, y, w, pw):
        return op(x, y, w, pw, reduction)

    return loss


@pytest.mark.parametrize("weights", [(None, None), ("c11", "last"), ("full_t", "scalar")],
                         ids=["plain", "c11-last", "full_t-scalar"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_aot_eager_equals_eager(kind, reduction, weights, gen):
    shape = (2, 3, 5, 7)
    inputs = _data(kind, shape, gen, torch.float32, *weights)
    g = make_grad_output(reduction, shape, gen, torch.float32)
    fn = _single_op(kind, reduction)
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    _assert_same(_run(compiled, inputs, (g,), 1), _run(fn, inputs, (g,), 1))


@pytest.mark.parametrize("kind", KINDS)
def test_aot_eager_dynamic_shapes_compile_once(kind, gen):
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    fn = _single_op(kind, "mean")
    compiled = torch.compile(fn, backend=counter, fullgraph=True, dynamic=True)
    # Sizes other than 0 and 1 (which dynamo specialises on).
    for shape in [(2, 3, 5, 7), (4, 3, 6, 9), (5, 3, 8, 2)]:
        inputs = _data(kind, shape, gen, torch.float32, "c11", "last")
        g = make_grad_output("mean", shape, gen, torch.float32)
        _assert_same(_run(compiled, inputs, (g,), 1), _run(fn, inputs, (g,), 1))
    assert counter.frame_count == 1


def _both_ops(x, p, y, w, pw):
    # Both ops in one graph: keeps the number of (slow) inductor compiles small.
    return (OPS[LOGITS](x, y, w, pw, "none"),
            OPS[PROBABILITY](p, y, w, pw, "mean"))


def _both_ops_data(shape, gen):
    x = make_input(LOGITS, shape, gen, torch.float32)
    p = make_input(PROBABILITY, shape, gen, torch.float32)
    y = make_target(shape, gen, torch.float32)
    w = make_weight("c11", shape, gen, torch.float32)
    pw = make_weight("full_t", shape, gen, torch.float32, low=0.5, high=3.0)
    grads = (make_grad_output("none", shape, gen, torch.float32),
             make_grad_output("mean", shape, gen, torch.float32))
    return (x, p, y, w, pw), grads


@pytest.mark.slow
def test_inductor_equals_eager(gen):
    inputs, grads = _both_ops_data((2, 3, 5, 7), gen)
    compiled = torch.compile(_both_ops, backend="inductor", fullgraph=True)
    _assert_same(_run(compiled, inputs, grads, 2), _run(_both_ops, inputs, grads, 2))


@pytest.mark.slow
def test_inductor_dynamic_equals_eager(gen):
    compiled = torch.compile(_both_ops, backend="inductor", fullgraph=True, dynamic=True)
    for shape in [(2, 3, 5, 7), (4, 3, 6, 11)]:
        inputs, grads = _both_ops_data(shape, gen)
        _assert_same(_run(compiled, inputs, grads, 2), _run(_both_ops, inputs, grads, 2))
