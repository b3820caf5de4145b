"""TorchScript: a scripted model that uses the segloss losses is saved, then
loaded and trained-through in a fresh process that only loads the op library
(no `import segloss`), and gives exactly the eager numbers."""

import pytest
import torch

import segloss
from helpers import make_input, make_target, run_python
from reference import LOGITS

# TorchScript is deprecated upstream but still how these models are served.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")


class SegLossModel(torch.nn.Module):
    """Both functional losses and WeightedBCELoss, with buffers for the weights."""

    def __init__(self):
        super().__init__()
        self.weighted = segloss.nn.WeightedBCELoss(torch.tensor([0.5, 2.0, 3.0]).view(3, 1, 1))
        self.register_buffer("weight", torch.linspace(0.5, 2.0, 7))
        self.register_buffer("pos_weight", torch.tensor(2.5))

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        a = segloss.binary_cross_entropy_with_logits(x, y, self.weight, None, "sum")
        b = self.weighted(x, y)
        per_element = segloss.binary_cross_entropy(torch.sigmoid(x), y, None, self.pos_weight,
                                                   "none")
        return a + b + per_element.mean(), per_element


_CHILD = r"""
import sys
import torch

model_path, library_path, inputs_path, out_path = sys.argv[1:]
torch.ops.load_library(library_path)
model = torch.jit.load(model_path)
inputs = torch.load(inputs_path)
x = inputs["x"].requires_grad_()
loss, per_element = model(x, inputs["y"])
loss.backward()
torch.save({"loss": loss.detach(), "per_element": per_element.detach(), "grad": x.grad},
           out_path)
assert "segloss" not in sys.modules, "the child imported segloss"
"""


def _eager(model, x, y):
    x = x.clone().requires_grad_()
    loss, per_element = model(x, y)
    loss.backward()
    return {"loss": loss.detach(), "per_element": per_element.detach(), "grad": x.grad}


@pytest.fixture
def data(gen):
    shape = (2, 3, 5, 7)
    return make_input(LOGITS, shape, gen, torch.float32), make_target(shape, gen, torch.float32)


def _assert_equal(results, expected):
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        assert results[key].dtype == value.dtype, key
        assert torch.equal(results[key], value), (key, (results[key] - value).abs().max())


def test_scripted_model_in_process_equals_eager(data, tmp_path):
    x, y = data
    model = SegLossModel()
    scripted = torch.jit.script(model)
    graph = str(scripted.inlined_graph)
    assert "segloss::binary_cross_entropy_with_logits" in graph
    assert "segloss::binary_cross_entropy(" in graph
    path = tmp_path / "model.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    expected = _eager(model, x, y)
    _assert_equal(_eager(scripted, x, y), expected)
    _assert_equal(_eager(loaded, x, y), expected)


def test_scripted_model_runs_in_fresh_process_without_segloss(data, tmp_path):
    x, y = data
    model = SegLossModel()
    torch.jit.script(model).save(str(tmp_path / "model.pt"))
    torch.save({"x": x, "y": y}, tmp_path / "inputs.pt")
    run_python(_CHILD, str(tmp_path / "model.pt"), segloss.library_path(),
               str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt"), cwd=tmp_path)
    results = torch.load(tmp_path / "out.pt")
    _assert_equal(results, _eager(model, x, y))


# --------------------------------------------------------------------------
# Every public functional form compiles with torch.jit.script, Python
# conveniences included, and gives the eager result.

def _labels():
    labels = torch.zeros(2, 9, 11, dtype=torch.int32)
    labels[:, 1:4, 1:4], labels[:, 5:8, 2:6], labels[1, 2:6, 7:10] = 1, 2, 3
    return labels


def _functional_calls():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 9, 11, generator=gen, dtype=torch.float64)
    classes = torch.randint(0, 3, (2, 9, 11), generator=gen)
    y = torch.rand(2, 3, 9, 11, generator=gen, dtype=torch.float64)
    x1 = x[:, :1]
    labels = _labels()
    binary = (labels > 0).double().unsqueeze(1)
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    return {
        "binary_cross_entropy": (segloss.binary_cross_entropy,
                                 (torch.sigmoid(x), y), {"reduction": "sum"}),
        "binary_cross_entropy_with_logits": (segloss.binary_cross_entropy_with_logits,
                                             (x, y), {"pos_weight": weight.view(3, 1, 1)}),
        "dice_loss": (segloss.dice_loss, (x, classes),
                      {"activation": "softmax", "include_background": False}),
        "dice_ce_loss": (segloss.dice_ce_loss, (x, classes), {"class_weights": weight}),
        "focal_loss sigmoid": (segloss.focal_loss, (x, y), {"alpha": [0.2, 0.3, 0.9],
                                                            "reduction": "sum"}),
        "focal_loss sigmoid label map": (segloss.focal_loss, (x, classes.float()),
                                         {"ignore_index": 2, "include_background": False}),
        "focal_loss softmax": (segloss.focal_loss, (x, classes),
                               {"gamma": 0.5, "alpha": 0.25, "activation": "softmax",
                                "ignore_index": 2}),
        "balanced_bce_with_logits": (segloss.balanced_bce_with_logits, (x, y),
                                     {"per_image": False}),
        "boundary_loss": (segloss.boundary_loss, (x, classes),
                          {"activation": "softmax", "include_background": False,
                           "batch": True}),
        "hausdorff_dt_loss": (segloss.hausdorff_dt_loss, (x, y),
                              {"alpha": 1.5, "log": True, "reduction": "none"}),
        "unet_weight_map": (segloss.unet_weight_map, (labels,),
                            {"w0": 5.0, "class_weights": {0: 1.0, 1: 2.0}, "sampling": 1.5}),
        "unet_weight_map balanced": (segloss.unet_weight_map, (labels,),
                                     {"class_weights": "balanced", "sampling": [1.0, 2.0]}),
        "shape_aware_loss binary": (segloss.shape_aware_loss, (x1, binary),
                                    {"instances": labels, "class_weights": "balanced",
                                     "sampling": 1.5, "reduction": "weighted_mean"}),
        "shape_aware_loss multi-class": (segloss.shape_aware_loss, (x, classes),
                                         {"instances": labels, "weight": weight,
                                          "class_weights": {1: 3.0}}),
    }


@pytest.mark.parametrize("case", list(_functional_calls()))
def test_every_functional_form_scripts(case):
    fn, args, kwargs = _functional_calls()[case]
    scripted = torch.jit.script(fn)
    expected = fn(*args, **kwargs)
    assert torch.equal(scripted(*args, **kwargs), expected)


def _two_nearest(labels: torch.Tensor):
    # return_labels is a constant at each call site (boolean dispatch, as for
    # torch.nn.functional.max_pool2d's return_indices).
    d1, d2 = segloss.two_nearest_distances(labels, 1.5)
    e1, e2, l1, l2 = segloss.two_nearest_distances(labels, [1.0, 2.0], return_labels=True)
    return d1, d2, e1, e2, l1, l2


def test_two_nearest_distances_scripts():
    labels = _labels()
    got = torch.jit.script(_two_nearest)(labels)
    expected = (*segloss.two_nearest_distances(labels, 1.5),
                *segloss.two_nearest_distances(labels, (1.0, 2.0), return_labels=True))
    assert len(got) == len(expected) == 6
    for g, e in zip(got, expected):
        assert torch.equal(g, e)
