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
