"""The ``segloss weight-map`` command line.

The expected maps are ``segloss.numpy.unet_weight_map`` of the same labels with
the same parameters (that function is checked against a brute-force reference
in its own tests); the command must write exactly those values.
"""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import segloss.numpy as snp
from segloss.__main__ import main


def _labels(shape=(32, 40), seed=0, dtype=np.int32) -> np.ndarray:
    """An instance map of a few (possibly overlapping) boxes."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype)
    for instance in range(1, 6):
        box = tuple(slice(start, start + size) for start, size in
                    zip(rng.integers(0, np.array(shape) - 2), rng.integers(2, 9, len(shape))))
        labels[box] = instance
    assert len(np.unique(labels)) >= 3  # background and at least two instances
    return labels


def _weight_map(*args) -> int:
    return main(["weight-map", *map(str, args)])


def _load(path: Path) -> np.ndarray:
    weights = np.load(path, allow_pickle=False)
    assert weights.dtype == np.float32
    return weights


def _files(folder: Path) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_npy_2d_and_3d(tmp_path):
    flat, volume = _labels(), _labels((5, 32, 40), seed=1, dtype=np.uint16)
    np.save(tmp_path / "flat.npy", flat)
    np.save(tmp_path / "volume.npy", volume)
    out = tmp_path / "out" / "new"  # created, parents included

    assert _weight_map(tmp_path / "flat.npy", tmp_path / "volume.npy", "-o", out) == 0
    assert np.array_equal(_load(out / "flat.npy"), snp.unet_weight_map(flat))
    assert np.array_equal(_load(out / "volume.npy"), snp.unet_weight_map(volume))


@pytest.mark.parametrize("dtype, mode", [(np.uint8, "L"), (np.uint16, "I;16")])
def test_png(tmp_path, dtype, mode):
    Image = pytest.importorskip("PIL.Image")
    labels = _labels(dtype=dtype) * 37  # ids need not be consecutive; > 255 for I;16
    image = Image.fromarray(labels)
    assert image.mode == mode
    image.save(tmp_path / "labels.png")

    assert _weight_map(tmp_path / "labels.png", "-o", tmp_path / "out") == 0
    assert np.array_equal(_load(tmp_path / "out" / "labels.npy"), snp.unet_weight_map(labels))


def test_tiff_stack(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    labels = _labels((4, 32, 40), seed=2, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", labels, photometric="minisblack")

    assert _weight_map(tmp_path / "stack.tif", "-o", tmp_path / "out") == 0
    assert np.array_equal(_load(tmp_path / "out" / "stack.npy"), snp.unet_weight_map(labels))


def test_folders_and_recursive(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    top, nested = _labels(seed=3), _labels(seed=4)
    np.save(data / "top.npy", top)
    np.save(data / "sub" / "nested.npy", nested)
    np.save(data / ".hidden.npy", top)
    (data / "notes.txt").write_text("not a label image")

    assert _weight_map(data, "-o", tmp_path / "flat") == 0
    assert _files(tmp_path / "flat") == {"top.npy"}

    # The output folder inside the input folder is not read back as input.
    out = data / "weights"
    assert _weight_map(data, "-o", out, "--recursive") == 0
    assert _files(out) == {"top.npy", "sub/nested.npy"}
    assert np.array_equal(_load(out / "sub" / "nested.npy"), snp.unet_weight_map(nested))
    assert _weight_map(data, "-o", out, "--recursive", "--overwrite") == 0
    assert _files(out) == {"top.npy", "sub/nested.npy"}


@pytest.mark.parametrize("options, parameters", [
    (["--class-weights", "balanced"], dict(class_weights="balanced")),
    (["--class-weights", "0.5,2"], dict(class_weights={0: 0.5, 1: 2.0})),
    (["--sampling", "2"], dict(sampling=2.0)),
    (["--sampling", "1.5,0.5"], dict(sampling=[1.5, 0.5])),
    (["--w0", "3", "--sigma", "2.5", "--border-everywhere", "--threads", "2"],
     dict(w0=3.0, sigma=2.5, border_everywhere=True)),
])
def test_parameters(tmp_path, options, parameters):
    labels = _labels(seed=5)
    np.save(tmp_path / "labels.npy", labels)

    assert _weight_map(tmp_path / "labels.npy", "-o", tmp_path / "out", *options) == 0
    assert np.array_equal(_load(tmp_path / "out" / "labels.npy"),
                          snp.unet_weight_map(labels, **parameters))


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, capsys):
    labels = _labels(seed=6)
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "out"
    assert _weight_map(tmp_path / "labels.npy", "-o", out) == 0
    np.save(out / "labels.npy", np.zeros(3, np.float32))  # stands for an older result
    capsys.readouterr()

    assert _weight_map(tmp_path / "labels.npy", "-o", out) == 0
    assert "exists; use --overwrite" in capsys.readouterr().err
    assert _load(out / "labels.npy").shape == (3,)

    assert _weight_map(tmp_path / "labels.npy", "-o", out, "--overwrite") == 0
    assert np.array_equal(_load(out / "labels.npy"), snp.unet_weight_map(labels))


def test_bad_files_are_reported_and_the_others_written(tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    data = tmp_path / "data"
    data.mkdir()
    good = _labels(seed=7)
    np.save(data / "good.npy", good)
    (data / "garbage.npy").write_bytes(b"these are not the bytes of a .npy file")
    np.save(data / "float.npy", good.astype(np.float64))
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(data / "rgb.png")
    np.save(data / "volume.npy", _labels((3, 32, 40)))

    out = tmp_path / "out"
    assert _weight_map(data, "-o", out, "--sampling", "1,2") == 1
    err = capsys.readouterr().err
    assert _files(out) == {"good.npy"}
    assert np.array_equal(_load(out / "good.npy"), snp.unet_weight_map(good, sampling=[1, 2]))
    failures = {line.split(":")[0]: line for line in err.splitlines() if line.startswith("failed")}
    assert failures.keys() == {f"failed {data / name}" for name in
                               ("garbage.npy", "float.npy", "rgb.png", "volume.npy")}
    assert "not a .npy file" in failures[f"failed {data / 'garbage.npy'}"]
    assert "integer" in failures[f"failed {data / 'float.npy'}"]
    assert "'RGB'" in failures[f"failed {data / 'rgb.png'}"]
    assert "one value per axis" in failures[f"failed {data / 'volume.npy'}"]
    assert "1 written, 0 skipped, 4 failed" in err


def test_a_tiff_without_an_image_is_reported(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(data / "good.tif", _labels(seed=3))
    # A valid TIFF header whose first directory offset is 0: no image at all.
    (data / "headless.tif").write_bytes(b"II*\x00\x00\x00\x00\x00")
    assert _weight_map(data, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert _files(tmp_path / "out") == {"good.npy"}
    failed = [line for line in err.splitlines() if line.startswith(f"failed {data / 'headless.tif'}")]
    assert len(failed) == 1 and "holds no image" in failed[0], err


def test_named_pipes_are_not_read(tmp_path, capsys):
    # A pipe named like a label file would block its read forever: a folder
    # scan skips it, and naming it is a usage error.
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "good.npy", _labels(seed=5))
    os.mkfifo(data / "pipe.npy")
    assert _weight_map(data, "-o", tmp_path / "out") == 0
    assert _files(tmp_path / "out") == {"good.npy"}
    with pytest.raises(SystemExit) as exit:
        _weight_map(data / "pipe.npy", "-o", tmp_path / "out2")
    assert exit.value.code == 2
    assert "not a regular file or a folder" in capsys.readouterr().err


@pytest.mark.parametrize("module, name, package", [("PIL", "labels.png", "pillow"),
                                                   ("tifffile", "labels.tif", "tifffile")])
def test_missing_optional_package(tmp_path, capsys, monkeypatch, module, name, package):
    (tmp_path / name).write_bytes(b"never read")
    np.save(tmp_path / "other.npy", _labels())
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail

    assert _weight_map(tmp_path / name, tmp_path / "other.npy", "-o", tmp_path / "out") == 1
    assert f"pip install {package}" in capsys.readouterr().err
    assert _files(tmp_path / "out") == {"other.npy"}


def test_preview(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    pytest.importorskip("matplotlib")
    np.save(tmp_path / "flat.npy", _labels())
    np.save(tmp_path / "volume.npy", _labels((3, 32, 40)))

    out = tmp_path / "out"
    assert _weight_map(tmp_path / "flat.npy", tmp_path / "volume.npy", "-o", out, "--preview") == 0
    assert _files(out) == {"flat.npy", "flat.png", "volume.npy", "volume.png"}
    for name in ("flat.png", "volume.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_workers_give_identical_results(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for seed in range(3):
        np.save(data / f"labels{seed}.npy", _labels(seed=seed))

    assert _weight_map(data, "-o", tmp_path / "one", "--class-weights", "balanced") == 0
    assert _weight_map(data, "-o", tmp_path / "two", "--class-weights", "balanced",
                       "--workers", "2") == 0
    assert _files(tmp_path / "two") == _files(tmp_path / "one") == {
        f"labels{seed}.npy" for seed in range(3)}
    for seed in range(3):
        assert np.array_equal(_load(tmp_path / "two" / f"labels{seed}.npy"),
                              _load(tmp_path / "one" / f"labels{seed}.npy"))


@pytest.mark.parametrize("options", [
    ["--class-weights", "heavy"], ["--class-weights", "1,2,3"], ["--class-weights", "1,x"],
    ["--sampling", "0"], ["--sampling", "1,-2"], ["--sampling", "a"], ["--sigma", "0"],
    ["--w0", "nan"], ["--workers", "0"], ["--threads", "two"],
])
def test_bad_option_values_are_usage_errors(tmp_path, capsys, options):
    np.save(tmp_path / "labels.npy", _labels())
    with pytest.raises(SystemExit) as exit:
        _weight_map(tmp_path / "labels.npy", "-o", tmp_path / "out", *options)
    assert exit.value.code == 2
    assert options[0] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_inputs_are_usage_errors_before_any_work(tmp_path, capsys):
    for folder in ("a", "b", "empty"):
        (tmp_path / folder).mkdir()
    np.save(tmp_path / "a" / "x.npy", _labels())
    np.save(tmp_path / "b" / "x.npy", _labels())
    (tmp_path / "notes.txt").write_text("")
    cases = {"no label images": [tmp_path / "empty"],
             "no such file": [tmp_path / "missing.npy"],
             "unsupported file type": [tmp_path / "notes.txt"],
             "would both be written": [tmp_path / "a", tmp_path / "b"]}
    for message, inputs in cases.items():
        with pytest.raises(SystemExit) as exit:
            _weight_map(*inputs, "-o", tmp_path / "out")
        assert exit.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit:
        _weight_map(tmp_path / "a")  # no --output-dir
    assert exit.value.code == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_quiet(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tqdm")
    for seed in range(2):
        np.save(tmp_path / f"labels{seed}.npy", _labels(seed=seed))
    (tmp_path / "broken.npy").write_bytes(b"not a .npy file")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert _weight_map(tmp_path, "-o", tmp_path / "out") == 1
    shown = terminal.getvalue()
    # tqdm's bar, redrawn in place; per-file lines only for failures, above the bar.
    assert "\r100%|" in shown and "| 3/3 [" in shown and "file/s]" in shown
    assert "written " not in shown
    lines = [line.split("\r")[-1] for line in shown.splitlines()]
    assert any(line.startswith(f"failed {tmp_path / 'broken.npy'}: ") for line in lines)
    assert lines[-1].startswith("2 written, 0 skipped, 1 failed")

    monkeypatch.undo()
    assert _weight_map(tmp_path, "-o", tmp_path / "quiet", "--quiet") == 1
    err = capsys.readouterr().err.splitlines()  # failures only
    assert len(err) == 1 and err[0].startswith(f"failed {tmp_path / 'broken.npy'}: ")


def test_plain_lines_on_a_terminal_without_tqdm(tmp_path, monkeypatch):
    np.save(tmp_path / "labels.npy", _labels())
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` fail
    assert _weight_map(tmp_path, "-o", tmp_path / "out") == 0
    written, summary = terminal.getvalue().splitlines()
    assert written == f"written {tmp_path / 'labels.npy'} -> {tmp_path / 'out' / 'labels.npy'}"
    assert summary.startswith("1 written, 0 skipped, 0 failed")
    assert "\r" not in terminal.getvalue()


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_entry_point(tmp_path):
    labels = _labels(seed=8)
    np.save(tmp_path / "labels.npy", labels)
    result = _run("-m", "segloss", "weight-map", str(tmp_path / "labels.npy"),
                  "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert f"written {tmp_path / 'labels.npy'}" in result.stderr
    assert np.array_equal(_load(tmp_path / "out" / "labels.npy"), snp.unet_weight_map(labels))


def test_works_without_torch(tmp_path):
    # `import segloss` imports torch where it is installed (to register the
    # ops); here it is not importable, as on a data-pipeline machine.
    np.save(tmp_path / "labels.npy", _labels())
    argv = ["weight-map", str(tmp_path), "-o", str(tmp_path / "out"), "--quiet"]
    result = _run("-c", "import sys; sys.modules['torch'] = None; "
                        "from segloss.__main__ import main; "
                        f"rc = main({argv!r}); assert sys.modules['torch'] is None; sys.exit(rc)")
    assert result.returncode == 0, result.stderr
