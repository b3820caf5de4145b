"""A second derivative through segloss's analytic backward raises, naming the
public function (as PyTorch's once_differentiable does), instead of coming
out as None or zeros; first derivatives under create_graph=True (a gradient
penalty) are unchanged. The expected gradients are torch.autograd's of the
float64 formulas in PyTorch ops."""

import pytest
import torch
import torch.nn.functional as F

import segloss

SHAPE = (2, 3, 5, 4)


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, SHAPE[1], (SHAPE[0],) + SHAPE[2:], generator=gen)
    soft = torch.rand(SHAPE, generator=gen, dtype=torch.float64)
    return x, labels, soft


def _dice_torch(x, labels):
    p = x.softmax(1)
    y = F.one_hot(labels, SHAPE[1]).movedim(-1, 1).to(x.dtype)
    dims = tuple(range(2, x.dim()))
    ratio = (2 * (p * y).sum(dims) + 1e-5) / (p.sum(dims) + y.sum(dims) + 1e-5)
    return (1 - ratio).mean()


# (name, segloss call, the same loss in PyTorch ops): each loss's own backward op.
CASES = [
    ("binary_cross_entropy_with_logits",
     lambda x, labels, soft: segloss.binary_cross_entropy_with_logits(x, soft),
     lambda x, labels, soft: F.binary_cross_entropy_with_logits(x, soft)),
    ("binary_cross_entropy",
     lambda x, labels, soft: segloss.binary_cross_entropy(x.sigmoid(), soft),
     lambda x, labels, soft: F.binary_cross_entropy(x.sigmoid(), soft)),
    ("focal_loss",
     lambda x, labels, soft: segloss.focal_loss(x, labels, 2.0, None, activation="softmax"),
     lambda x, labels, soft: ((1 - x.softmax(1)) ** 2 * -x.log_softmax(1)).gather(
         1, labels.unsqueeze(1)).sum() / x.numel()),
    ("dice_loss",
     lambda x, labels, soft: segloss.dice_loss(x, labels, activation="softmax"),
     lambda x, labels, soft: _dice_torch(x, labels)),
    ("dice_ce_loss",
     lambda x, labels, soft: segloss.dice_ce_loss(x, labels),
     lambda x, labels, soft: _dice_torch(x, labels) + F.cross_entropy(x, labels)),
    ("shape_aware_loss",
     lambda x, labels, soft: segloss.shape_aware_loss(x, labels, torch.ones_like(soft[:, 0])),
     lambda x, labels, soft: F.cross_entropy(x, labels)),
]


@pytest.mark.parametrize("name,loss,formula", CASES, ids=[c[0] for c in CASES])
def test_second_derivative_raises_and_first_is_unchanged(name, loss, formula):
    x, labels, soft = _inputs()
    x.requires_grad_()
    (grad,) = torch.autograd.grad(loss(x, labels, soft), x, create_graph=True)
    (expected,) = torch.autograd.grad(formula(x, labels, soft), x, create_graph=True)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)
    assert grad.requires_grad
    direction = torch.linspace(-1, 1, x.numel(), dtype=x.dtype).view_as(x)
    with pytest.raises(RuntimeError, match=rf"segloss\.{name}: the second derivative"):
        torch.autograd.grad((grad * direction).sum(), x)
    # Without create_graph nothing changes: the gradient is a plain tensor.
    (plain,) = torch.autograd.grad(loss(x, labels, soft), x)
    assert not plain.requires_grad
    torch.testing.assert_close(plain, expected.detach(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name,loss", [
    ("boundary_loss", lambda x, labels: segloss.boundary_loss(x, labels, activation="softmax")),
    ("hausdorff_dt_loss",
     lambda x, labels: segloss.hausdorff_dt_loss(x, labels, activation="softmax")),
    ("tversky_loss", lambda x, labels: segloss.tversky_loss(x, labels, activation="softmax")),
    ("generalized_dice_loss",
     lambda x, labels: segloss.generalized_dice_loss(x, labels, activation="softmax")),
    ("dice_focal_loss", lambda x, labels: segloss.dice_focal_loss(x, labels,
                                                                   activation="softmax")),
    ("balanced_bce_with_logits",
     lambda x, labels: segloss.balanced_bce_with_logits(x, (labels > 0).to(x.dtype)[:, None]
                                                        .expand_as(x))),
], ids=lambda value: value if isinstance(value, str) else "")
def test_second_derivative_raises_for_every_family(name, loss):
    x, labels, _ = _inputs(1)
    x.requires_grad_()
    (grad,) = torch.autograd.grad(loss(x, labels), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"segloss\.\w+: the second derivative"):
        torch.autograd.grad(grad.square().sum(), x)


def test_a_gradient_penalty_on_other_parameters_still_trains():
    # create_graph=True where the second derivative is never taken through
    # segloss: the first-order gradient and the step are as without it.
    x, labels, _ = _inputs(2)
    weight = torch.randn(SHAPE[1], SHAPE[1], dtype=torch.float64, requires_grad=True)
    logits = torch.einsum("ij,njhw->nihw", weight, x)
    loss = segloss.dice_ce_loss(logits, labels)
    (grad,) = torch.autograd.grad(loss, weight, create_graph=True)
    logits_ref = torch.einsum("ij,njhw->nihw", weight, x)
    (expected,) = torch.autograd.grad(_dice_torch(logits_ref, labels)
                                      + F.cross_entropy(logits_ref, labels), weight)
    torch.testing.assert_close(grad.detach(), expected, rtol=1e-9, atol=1e-12)
