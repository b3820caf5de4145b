"""`segloss demo` end to end, with few steps: every loss trains, the table is
printed and the figure written; and its data: the instance labels of the
coins photograph."""

import numpy as np
import pytest

pytest.importorskip("skimage")

from distance_reference import coins_instances  # noqa: E402
from segloss import demo  # noqa: E402


def test_coins_and_instances_follow_the_gallery_recipe():
    image, labels = demo.coins_and_instances(scale=1)
    reference = coins_instances()
    assert image.shape == reference.shape and image.dtype == np.float32
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 1e-4
    # The same partition, ids renumbered 1..n.
    assert np.array_equal(labels > 0, reference > 0)
    pairs = np.unique(np.stack([labels.ravel(), reference.ravel()]), axis=1)
    assert pairs.shape[1] == len(np.unique(reference)) == labels.max() + 1
    half_image, half_labels = demo.coins_and_instances()
    assert half_image.shape == half_labels.shape == (reference.shape[0] // 2,
                                                     reference.shape[1] // 2)
    assert np.array_equal(np.unique(half_labels), np.arange(half_labels.max() + 1))


def test_demo_trains_every_loss_and_writes_the_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    figure = tmp_path / "demo.png"
    status = demo.run(steps=8, device="cpu", figure=str(figure))
    out = capsys.readouterr().out
    assert status == 0, out
    for name in ("BCE", "weighted BCE", "Dice", "Dice + CE", "shape-aware (U-Net)"):
        assert f"\n{name} " in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rejects_bad_arguments():
    with pytest.raises(ValueError, match="--steps must be >= 1"):
        demo.run(steps=0)
