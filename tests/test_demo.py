"""`segloss demo`: its generated data (touching cells, deterministic), the
instance score against hand-made cases, and a short run end to end."""

import io
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("scipy")

from segloss import demo  # noqa: E402
from segloss.__main__ import main  # noqa: E402


def _neighbour_pairs(labels: np.ndarray, reach: int) -> set:
    """Pairs of different instances with pixels at most ``reach`` px apart along each axis."""
    h, w = labels.shape
    padded = np.pad(labels, reach)
    pairs = set()
    for dy in range(2 * reach + 1):
        for dx in range(2 * reach + 1):
            other = padded[dy:dy + h, dx:dx + w]
            near = (labels > 0) & (other > 0) & (labels != other)
            pairs.update(zip(labels[near].tolist(), other[near].tolist()))
    return {(a, b) for a, b in pairs if a < b}


def test_touching_cells_shapes_and_determinism():
    image, labels = demo.touching_cells(64, seed=3)
    assert image.shape == labels.shape == (64, 64)
    assert image.dtype == np.float32 and labels.dtype == np.int32
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 1e-4
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))  # ids 1..n
    again_image, again_labels = demo.touching_cells(64, seed=3)
    assert np.array_equal(image, again_image) and np.array_equal(labels, again_labels)
    other_image, other_labels = demo.touching_cells(64, seed=4)
    assert not np.array_equal(labels, other_labels) and not np.array_equal(image, other_image)
    # A SeedSequence works as a seed too, and the same one gives the same image.
    sequence = np.random.SeedSequence(7)
    assert np.array_equal(demo.touching_cells(32, sequence)[0],
                          demo.touching_cells(32, np.random.SeedSequence(7))[0])


def test_cells_touch_and_are_brighter_than_the_background():
    image, labels = demo.touching_cells(96, seed=0)
    assert 20 <= labels.max() <= 60
    assert 0.35 <= np.mean(labels > 0) <= 0.55
    touching = _neighbour_pairs(labels, reach=1)  # pixels of two cells side by side
    assert len(touching) >= 8, touching
    assert len({cell for pair in touching for cell in pair}) >= labels.max() // 3
    # Every cell is one 4-connected piece.
    from scipy import ndimage
    assert all(ndimage.label(labels == cell)[1] == 1 for cell in range(1, labels.max() + 1))
    assert image[labels > 0].mean() > image[labels == 0].mean() + 1


def test_separate_touching_by_hand():
    labels = np.array([[1, 1, 2, 2, 0, 3],
                       [1, 1, 2, 2, 0, 3],
                       [1, 1, 0, 0, 0, 0],
                       [0, 0, 4, 4, 0, 0],
                       [0, 0, 4, 4, 0, 0]])
    # 1 and 2 side by side lose a column each; 1 and 4 touch at a corner and
    # lose a pixel each; 3 touches only the background.
    expected = np.array([[1, 0, 0, 2, 0, 3],
                         [1, 0, 0, 2, 0, 3],
                         [1, 0, 0, 0, 0, 0],
                         [0, 0, 0, 4, 0, 0],
                         [0, 0, 4, 4, 0, 0]])
    assert np.array_equal(demo.separate_touching(labels), expected)


def test_separate_touching_leaves_no_two_cells_adjacent():
    _, labels = demo.touching_cells(96, seed=1)
    separated = demo.separate_touching(labels)
    assert _neighbour_pairs(separated, reach=1) == set()  # not even diagonally
    assert np.all((separated == labels) | (separated == 0))
    assert 0 < np.count_nonzero(labels != separated) < 0.2 * np.count_nonzero(labels)
    # Touching cells end up across a thin gap: pixels at most 3 px apart.
    touching = _neighbour_pairs(labels, reach=1)
    assert len(_neighbour_pairs(separated, reach=3) & touching) >= 0.8 * len(touching)


def _cells() -> np.ndarray:
    """Three 6x6 cells, the first two 2 px apart."""
    cells = np.zeros((12, 24), np.int32)
    cells[1:7, 1:7] = 1
    cells[1:7, 9:15] = 2
    cells[1:7, 17:23] = 5  # ids need not be consecutive
    return cells


def test_instance_scores_perfect():
    cells = _cells()
    assert demo.instance_scores(cells > 0, cells) == demo.InstanceScores(
        cells=3, objects=3, matched=3, merged=0)


def test_instance_scores_merged_pair():
    cells = _cells()
    prediction = cells > 0
    prediction[3, 7:9] = True  # a 1 px bridge across the gap joins cells 1 and 2
    scores = demo.instance_scores(prediction, cells)
    assert scores == demo.InstanceScores(cells=3, objects=2, matched=1, merged=2)
    assert scores.matched_fraction == pytest.approx(1 / 3)
    objects = np.zeros_like(cells)
    objects[prediction] = 1
    objects[cells == 5] = 2
    assert demo.merging_objects(objects, cells).tolist() == [True, False]


def test_instance_scores_split_cell():
    cells = _cells()
    prediction = cells > 0
    prediction[:, 3:5] = False  # cell 1 cut into two pieces of a third of it each
    assert demo.instance_scores(prediction, cells) == demo.InstanceScores(
        cells=3, objects=4, matched=2, merged=0)


def test_instance_scores_missing_and_partial_cells():
    cells = _cells()
    prediction = cells > 0
    prediction[cells == 2] = False   # missed
    prediction[1:4, 17:23] = False   # half of cell 5: IoU 0.5 still matches
    assert demo.instance_scores(prediction, cells) == demo.InstanceScores(
        cells=3, objects=2, matched=2, merged=0)
    prediction[4, 17] = False        # a pixel less: IoU below 0.5
    assert demo.instance_scores(prediction, cells).matched == 1
    assert demo.instance_scores(np.zeros_like(prediction), cells) == demo.InstanceScores(
        cells=3, objects=0, matched=0, merged=0)


def test_instance_scores_use_4_connectivity():
    cells = np.zeros((4, 4), np.int32)
    cells[:2, :2], cells[2:, 2:] = 1, 2   # diagonal neighbours at one corner
    assert demo.instance_scores(cells > 0, cells) == demo.InstanceScores(
        cells=2, objects=2, matched=2, merged=0)


def test_instance_scores_add_up_over_images():
    cells = _cells()
    total = demo.instance_scores(cells > 0, cells) + demo.instance_scores(cells == 1, cells)
    assert total == demo.InstanceScores(cells=6, objects=4, matched=4, merged=0)


NAMES = ("BCE", "weighted BCE", "Dice", "Dice + CE", "shape-aware (U-Net)")


def test_demo_end_to_end(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    figure = tmp_path / "demo.png"
    threads = torch.get_num_threads()
    status = demo.run(steps=6, device="cpu", figure=str(figure), size=32, train_images=3,
                      test_images=2, batch=2, threads=2)
    assert torch.get_num_threads() == threads  # restored
    captured = capsys.readouterr()
    assert "2 CPU thread(s)" in captured.out
    assert status == 0, captured.out
    table = captured.out.split("held-out: 2 images, ")[1].splitlines()
    assert table[1].split() == ["loss", "pixel", "Dice", "cells", "matched", "merged",
                                "objects", "ms/step"]
    for name, line in zip(NAMES, table[3:8]):
        assert line.startswith(name)
        assert 0 <= float(line[22:].split()[0]) <= 1  # the pixel Dice
    # stderr is not a terminal here: plain progress lines, the last one per loss at the end.
    for name in NAMES:
        assert any(line.startswith(name) and " step 6/6  loss " in line
                   for line in captured.err.splitlines()), captured.err
    assert "\r" not in captured.err
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_demo_progress_bars_on_a_terminal(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    # A wide terminal: tqdm cuts a bar to COLUMNS, which pytest-xdist's workers
    # set to 80, where "| 3/3 [..., loss ..., 6.7 ms/step]" loses its end.
    monkeypatch.setenv("COLUMNS", "200")
    demo.run(steps=3, device="cpu", figure=None, size=16, train_images=1, test_images=1)
    shown = terminal.getvalue()
    for name in NAMES:  # one tqdm bar per loss, the loss and step time after it
        bar = next(line for line in shown.split("\n") if line.split("\r")[-1].startswith(name))
        assert "100%|" in bar and "| 3/3 [" in bar and " ms/step]" in bar, bar
    assert " step 3/3 " not in shown  # no plain lines
    assert "held-out" in capsys.readouterr().out


def test_demo_command_line(tmp_path, capsys):
    status = main(["demo", "--steps", "2", "--size", "16", "--train-images", "1",
                   "--test-images", "1", "--device", "cpu", "--no-figure"])
    out = capsys.readouterr().out
    assert "held-out: 1 images" in out and "figure" not in out
    assert status in (0, 1)  # two steps need not lower every loss
    with pytest.raises(SystemExit):
        main(["demo", "--size", "30"])
    assert "multiple of 4" in capsys.readouterr().err


def test_demo_rejects_bad_arguments():
    with pytest.raises(ValueError, match="--steps must be >= 1"):
        demo.run(steps=0)
    with pytest.raises(ValueError, match="--size must be a multiple of 4"):
        demo.run(size=30)
