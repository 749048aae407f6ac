"""Bad files and bad values give one clear error that names the file or parameter: never a traceback, never a
silent result. Each case runs through ``load_npz`` or ``resolve_device`` and through the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hebbkit.cli import main
from hebbkit.data import ImageSet, check_split, load_npz, synthetic_images
from hebbkit.utils import resolve_device


def _good(path: Path, n: int = 20, size: int = 32, compressed: bool = False) -> Path:
    rng = np.random.default_rng(0)
    save = np.savez_compressed if compressed else np.savez
    save(path, x_train=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), y_train=np.arange(n) % 10)
    return path


def _truncated(folder: Path) -> Path:
    data = _good(folder / "good.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(data[: len(data) // 2])
    return folder / "truncated.npz"


def _bad_crc(folder: Path) -> Path:
    data = bytearray(_good(folder / "good.npz").read_bytes())
    data[200] ^= 0xFF  # inside x_train's stored bytes: the archive's directory still reads, the CRC does not match
    (folder / "bad_crc.npz").write_bytes(bytes(data))
    return folder / "bad_crc.npz"


def _bad_deflate(folder: Path) -> Path:
    data = bytearray(_good(folder / "good.npz", compressed=True).read_bytes())
    data[100:140] = bytes(40)
    (folder / "bad_deflate.npz").write_bytes(bytes(data))
    return folder / "bad_deflate.npz"


def _empty(folder: Path) -> Path:
    (folder / "empty.npz").touch()
    return folder / "empty.npz"


def _renamed_npy(folder: Path) -> Path:
    np.save(folder / "array.npy", np.zeros((4, 32, 32, 3), np.uint8))
    return (folder / "array.npy").rename(folder / "array.npz")


def _text(folder: Path) -> Path:
    (folder / "notes.npz").write_text("x_train, y_train\n")
    return folder / "notes.npz"


def _pickled(folder: Path) -> Path:
    np.savez(folder / "objects.npz", x_train=np.array([{"a": 1}, None], dtype=object), y_train=np.zeros(2, np.int64))
    return folder / "objects.npz"


def _two_channels(folder: Path) -> Path:
    np.savez(folder / "two_channels.npz", x_train=np.zeros((20, 32, 32, 2), np.uint8), y_train=np.arange(20) % 10)
    return folder / "two_channels.npz"


BAD_FILES = {
    "truncated": (_truncated, "is a damaged npz archive (truncated or corrupt"),
    "bad CRC": (_bad_crc, "is a damaged npz archive (truncated or corrupt: Bad CRC-32"),
    "bad deflate stream": (_bad_deflate, "is a damaged npz archive"),
    "0 bytes": (_empty, "is empty (0 bytes), not an npz archive"),
    "renamed .npy": (_renamed_npy, "holds a single .npy array, not an npz archive"),
    "text": (_text, "is not an npz archive"),
    "pickled objects": (_pickled, "holds Python objects, which hebbkit never unpickles"),
    "two channels": (_two_channels, "x_train must have shape (N, H, W, C) with C = 1 or 3 (HWC)"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_npz_is_one_error_naming_the_file_and_the_fault(tmp_path, case):
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(ValueError) as error:
        load_npz(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_no_file_is_unpickled(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle.load called")

    monkeypatch.setattr("pickle.load", refuse)
    monkeypatch.setattr("pickle.loads", refuse)
    with pytest.raises(ValueError, match="Python objects"):
        load_npz(_pickled(tmp_path))


@pytest.mark.parametrize("case", ["truncated", "renamed .npy", "two channels"])
def test_the_command_line_reports_a_bad_npz_in_one_line(tmp_path, capsys, case):
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    code = main(["reproduce", "--preset", "smoke", "--data", str(path), "--out", str(tmp_path / "out"),
                 "--cache", "none", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"hebbkit reproduce: error: {path}") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "table1.md").exists()


def test_too_few_images_for_the_split_are_named():
    three = synthetic_images(3, 0).train
    with pytest.raises(ValueError, match="too few images: the 2 training images hold 2 of the 10 classes"):
        check_split(three.subset(slice(0, 2)), three.subset(slice(2, None)))
    data = synthetic_images(200, 0, seed=1).train
    with pytest.raises(ValueError, match="too few images: 5 validation images"):
        check_split(data, data.subset(slice(0, 5)))
    check_split(data, data.subset(slice(0, 10)))  # enough: no error


def test_training_and_validation_images_of_different_shapes_are_named():
    small, large = synthetic_images(50, 0, size=28).train, synthetic_images(50, 0).train
    with pytest.raises(ValueError, match=r"the training images are \(3, 28, 28\) \(C, H, W\) but the validation "
                                         r"images are \(3, 32, 32\)"):
        check_split(small, large)
    grey = ImageSet(torch.zeros(20, 1, 32, 32, dtype=torch.uint8), torch.arange(20) % 10, tuple("0123456789"),
                    (0.0,), (1.0,))
    check_split(grey, grey)  # one channel, any size: accepted


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available here")
def test_mps_without_apple_gpu_is_the_same_clear_error_as_cuda():
    with pytest.raises(ValueError, match=r"^device='mps' asks for MPS \(Apple GPUs\), which is not available here; "
                                         r"use 'cpu' or 'auto'$"):
        resolve_device("mps")


@pytest.mark.parametrize("device", ["meta", "xla", "cuda:x", "gpu"])
def test_devices_that_cannot_run_hebbkit_are_refused(device):
    with pytest.raises(ValueError, match=rf"^device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got '{device}'$"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("device", ["meta", "mps", "cuda"])
def test_the_command_line_refuses_unavailable_devices_in_one_line(tmp_path, capsys, device):
    path = _good(tmp_path / "data.npz")
    code = main(["reproduce", "--preset", "smoke", "--device", device, "--data", str(path), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hebbkit reproduce: error: device") and err.count("\n") == 1
    assert "not available here" in err or "must be 'auto'" in err


def test_a_bad_device_in_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("HEBBKIT_DEVICE", "meta")
    with pytest.raises(ValueError, match="^HEBBKIT_DEVICE must be"):
        resolve_device("auto")


# ---------------------------------------------------------------- explicit --data, long paths, labels


def test_the_workbook_refuses_an_explicit_data_file_that_does_not_exist(tmp_path, capsys, monkeypatch):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook = new_notebook(cells=[new_code_cell("QUICK = True\nFIGURES = None\nDATA = None", metadata={"tags": ["parameters"]}),
                                   new_code_cell("from hebbkit.data import load_data\nload_data(DATA)")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, folder / "03_conv_filters.ipynb")
    monkeypatch.chdir(tmp_path)
    code = main(["workbook", "--quick", "--only", "03", "--data", "nope.npz", "--notebooks", str(folder),
                 "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2 and "skipped" not in captured.out and "Traceback" not in captured.err
    assert captured.err == "hebbkit workbook: error: --data nope.npz: no npz file at nope.npz\n"
    assert not (tmp_path / "out" / "03_conv_filters.ipynb").exists()
    damaged = tmp_path / "damaged.npz"
    damaged.write_text("not an archive")
    assert main(["workbook", "--store-outputs", "--only", "03", "--data", str(damaged), "--notebooks", str(folder)]) == 2
    assert capsys.readouterr().err.startswith(f"hebbkit workbook: error: --data {damaged}: {damaged} is not an npz")
    assert nbformat.read(folder / "03_conv_filters.ipynb", as_version=4) == notebook  # nothing stored


@pytest.mark.parametrize("command", [["reproduce", "--preset", "smoke", "--cache", "none"], ["workbook"],
                                     ["layers", "--preset", "smoke"]])
def test_an_output_folder_whose_name_is_too_long_is_one_line(tmp_path, capsys, command):
    long = tmp_path / ("a" * 300) / "below"
    assert main([*command, "--out", str(long)]) == 2
    err = capsys.readouterr().err
    assert err == f"hebbkit {command[0]}: error: --out: the folder {long} cannot be written (File name too long)\n"
    assert list(tmp_path.iterdir()) == []


def test_figures_check_on_a_folder_whose_name_is_too_long_is_one_line(tmp_path, capsys):
    long = tmp_path / ("a" * 300)
    assert main(["figures", "--check", "--out", str(long)]) == 2
    assert capsys.readouterr().err == (f"hebbkit figures: error: --out: {long / 'oja_single_neuron.png'} cannot be "
                                       f"read (File name too long)\n")


def test_check_output_dir_turns_any_os_error_into_a_value_error(tmp_path, monkeypatch):
    from hebbkit.utils import check_output_dir

    with pytest.raises(ValueError, match=r"^--cache: the folder .*a{300} cannot be written \(File name too long\)$"):
        check_output_dir("--cache", tmp_path / ("a" * 300))
    monkeypatch.setattr(Path, "exists", lambda self: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(ValueError, match=r"^--out: the folder .* cannot be written \(Permission denied\)$"):
        check_output_dir("--out", tmp_path / "x")


def _labelled(path: Path, labels, **extra) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    np.savez(path, x_train=images, y_train=np.asarray(labels), **extra)
    return path


def _stray(labels: int = 100) -> np.ndarray:
    y = np.arange(labels) % 10
    y[57] = 10
    return y


TEN_NAMES = np.array(["c%d" % k for k in range(10)])
BAD_LABELS = {
    "stray label, classes stored": (lambda p: _labelled(p, _stray(), classes=TEN_NAMES),
                                    "y_train must lie in 0..9, got 1 label(s) outside it: 10 (the first at index 57)"),
    "stray label on one image": (lambda p: _labelled(p, _stray()),
                                 "too few images: label 10 has a single training image (the first at index 57)"),
    "labels with gaps": (lambda p: _labelled(p, np.where(np.arange(100) % 10 == 9, 12, np.arange(100) % 10)),
                         "no training image has label 9, 10, 11 of 0..12: the training labels must be 0..K-1"),
    "negative label": (lambda p: _labelled(p, np.where(np.arange(100) == 3, -2, np.arange(100) % 10)),
                       "y_train must lie in 0..K-1, got 1 label(s) outside it: -2 (the first at index 3)"),
    "one class": (lambda p: _labelled(p, np.zeros(40, np.int64)), "holds 1 class (0): a classification needs at least 2"),
    "one named class": (lambda p: _labelled(p, np.zeros(40, np.int64), classes=np.array(["cat"])),
                        "holds 1 class (cat): a classification needs at least 2"),
}


@pytest.mark.parametrize("case", BAD_LABELS)
def test_bad_label_sets_are_one_line_naming_the_file_and_the_labels(tmp_path, capsys, case):
    make, message = BAD_LABELS[case]
    path = make(tmp_path / "data.npz")
    code = main(["reproduce", "--preset", "smoke", "--data", str(path), "--out", str(tmp_path / "out"),
                 "--cache", "none", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"hebbkit reproduce: error: {path}: ") and message in err
    assert err.count("\n") == 1 and not (tmp_path / "out" / "table1.md").exists()


def test_a_folder_of_one_class_is_refused(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "cats" / "cat").mkdir(parents=True)
    for index in range(3):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "cats" / "cat" / f"{index}.png")
    assert main(["reproduce", "--preset", "smoke", "--data", str(tmp_path / "cats"), "--out", str(tmp_path / "out"),
                 "--cache", "none", "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"hebbkit reproduce: error: {tmp_path / 'cats'}: holds 1 class (cat): a "
                                       f"classification needs at least 2\n")


def test_the_split_names_the_class_missing_from_the_training_images():
    images = ImageSet(torch.zeros(23, 1, 4, 4, dtype=torch.uint8), torch.tensor([*range(10)] * 2 + [10, 10, 3]),
                      tuple(map(str, range(11))), (0.0,), (1.0,))
    with pytest.raises(ValueError, match=r"hold 10 of the 11 classes; every class is needed, and no training image "
                                         r"has label 10 \(2 among the validation images\)"):
        check_split(images.subset(slice(0, 20)), images.subset(slice(20, None)))
    one = ImageSet(images.images, torch.zeros(23, dtype=torch.int64), ("only",), (0.0,), (1.0,))
    with pytest.raises(ValueError, match="the images hold 1 class: a classification needs at least 2"):
        check_split(one, one)
