"""CIFAR-10 in memory: from an npz file, or through torchvision (downloaded when online).

Where the data comes from, first match wins:
1. an explicit ``path`` (``--data`` on the command line): an ``.npz`` file, or a folder holding ``cifar10.npz``;
2. the ``HEBBKIT_DATA`` environment variable, read the same way;
3. ``torchvision.datasets.CIFAR10`` under ``root`` (default ``~/.cache/hebbkit``), downloaded if missing.

The npz holds uint8 arrays ``x_train`` (N, 32, 32, 3) HWC, ``y_train`` (N,) in 0..9, and optionally
``x_test``, ``y_test`` and a boolean ``test_exact``. Everything is kept as tensors; batches are slices.
A file that is not such an archive (empty, truncated, corrupt, a lone ``.npy``, text, pickled objects) is a
``ValueError`` naming the file and what is wrong; pickles are never loaded.
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

ENV_VAR = "HEBBKIT_DATA"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
IMAGE_SIZE = 32
NUM_TRAIN, NUM_VAL = 40_000, 10_000
REGIMES = (1, 2, 3, 4, 5, 10, 25, 100)
DEFAULT_ROOT = Path.home() / ".cache" / "hebbkit"  # torchvision's copy
FIX = f"set {ENV_VAR}=PATH to a CIFAR-10 npz file, or pass --data PATH"


class DataUnavailableError(RuntimeError):
    """No CIFAR-10 could be found or downloaded."""


@dataclass
class ImageSet:
    """Images as uint8 (N, 3, H, W) and labels as int64 (N,); ``exact`` marks pixel-exact images."""

    images: Tensor
    labels: Tensor
    exact: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor | slice) -> "ImageSet":
        exact = None if self.exact is None else self.exact[index]
        return ImageSet(self.images[index], self.labels[index], exact)

    def float(self, device: torch.device | str = "cpu", normalize: bool = True) -> Tensor:
        """Images as float32 in [0, 1], standardised per channel with CIFAR-10's statistics if ``normalize``."""
        x = self.images.to(device).float().div_(255)
        if normalize:
            mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x


@dataclass
class CIFAR10:
    """The training set and, when available, the official test set."""

    train: ImageSet
    test: ImageSet | None

    def protocol_split(self) -> tuple[ImageSet, ImageSet]:
        """The protocol's split: the first 40,000 training images train, the last 10,000 validate."""
        if len(self.train) != NUM_TRAIN + NUM_VAL:
            raise ValueError(f"the protocol split needs {NUM_TRAIN + NUM_VAL} training images, got {len(self.train)}")
        return self.train.subset(slice(0, NUM_TRAIN)), self.train.subset(slice(NUM_TRAIN, None))


def _check_images(name: str, x: np.ndarray) -> None:
    if x.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {x.dtype}")
    if x.ndim != 4 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(
            f"{name} must have shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) (CIFAR-10's {IMAGE_SIZE}×{IMAGE_SIZE} RGB "
            f"images, HWC), got {x.shape}"
        )


def _check_labels(name: str, y: np.ndarray, n: int) -> None:
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the images, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got {y.dtype}")
    if n and (y.min() < 0 or y.max() >= len(CLASSES)):
        raise ValueError(f"{name} must lie in 0..{len(CLASSES) - 1}, got range {y.min()}..{y.max()}")


def _image_set(x: np.ndarray, y: np.ndarray, exact: np.ndarray | None = None) -> ImageSet:
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return ImageSet(images, torch.from_numpy(y.astype(np.int64)), None if exact is None else torch.from_numpy(exact))


ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive's first bytes (an empty archive: the second)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the npz at ``path``, or a ``ValueError`` saying what the file is instead."""
    with path.open("rb") as handle:
        head = handle.read(6)
    if not head:
        raise ValueError(f"{path} is empty (0 bytes), not an npz archive")
    if head == b"\x93NUMPY":
        raise ValueError(f"{path} holds a single .npy array, not an npz archive of x_train, y_train, ...")
    if head[:4] not in ZIP_MAGIC:
        raise ValueError(f"{path} is not an npz archive (npz files are zip archives; this one starts with {head!r})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {}
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                except ValueError as error:  # object arrays: numpy refuses them without allow_pickle
                    raise ValueError(
                        f"{path}: array {key!r} holds Python objects, which hebbkit never unpickles; store uint8 and "
                        f"integer arrays"
                    ) from error
            return arrays
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{path} is a damaged npz archive (truncated or corrupt: {error}); copy it again") from error


def load_npz(path: str | Path) -> CIFAR10:
    """Read and validate a CIFAR-10-style npz (see module docstring); errors name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "cifar10.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no npz file at {path}")
    arrays = _read_npz(path)
    try:
        return _validated(arrays)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _validated(arrays: dict[str, np.ndarray]) -> CIFAR10:
    missing = {"x_train", "y_train"} - arrays.keys()
    if missing:
        raise ValueError(f"lacks the keys {sorted(missing)}; it has {sorted(arrays)}")
    _check_images("x_train", arrays["x_train"])
    _check_labels("y_train", arrays["y_train"], len(arrays["x_train"]))
    test = None
    if "x_test" in arrays or "y_test" in arrays:
        if not {"x_test", "y_test"} <= arrays.keys():
            raise ValueError("must hold both x_test and y_test, or neither")
        _check_images("x_test", arrays["x_test"])
        _check_labels("y_test", arrays["y_test"], len(arrays["x_test"]))
        exact = arrays.get("test_exact")
        if exact is not None and (exact.dtype != np.bool_ or exact.shape != (len(arrays["x_test"]),)):
            raise ValueError(f"test_exact must be a bool array of shape ({len(arrays['x_test'])},)")
        test = _image_set(arrays["x_test"], arrays["y_test"], exact)
    return CIFAR10(_image_set(arrays["x_train"], arrays["y_train"]), test)


def load_cifar10(path: str | Path | None = None, root: str | Path | None = None, download: bool = True) -> CIFAR10:
    """CIFAR-10 from ``path``, else ``$HEBBKIT_DATA``, else torchvision under ``root`` (see module docstring)."""
    source = path or os.environ.get(ENV_VAR)
    if source:
        return load_npz(source)
    import torchvision

    root = Path(root or DEFAULT_ROOT).expanduser()
    try:
        train = torchvision.datasets.CIFAR10(root, train=True, download=download)
        test = torchvision.datasets.CIFAR10(root, train=False, download=download)
    except Exception as error:  # no network, no files: say how to fix it
        raise DataUnavailableError(
            f"CIFAR-10 is not available: torchvision could not load or download it into {root} ({error}). "
            f"Either go online so torchvision can download it, or point hebbkit at an npz file with "
            f"x_train/y_train[/x_test/y_test] uint8 arrays: pass --data PATH (data=PATH in Python) or set "
            f"{ENV_VAR}=PATH."
        ) from error
    return CIFAR10(
        _image_set(train.data, np.asarray(train.targets)), _image_set(test.data, np.asarray(test.targets))
    )


def describe_source(path: str | Path | None = None, root: str | Path | None = None) -> str:
    """Where :func:`load_cifar10` would take CIFAR-10 from, in words (reads nothing but the file system)."""
    if path or os.environ.get(ENV_VAR):
        given, origin = (path, "--data") if path else (os.environ[ENV_VAR], f"${ENV_VAR}")
        file = Path(given) / "cifar10.npz" if Path(given).is_dir() else Path(given)
        state = "" if file.is_file() else " — no such file"
        return f"npz file {file.resolve()} (from {origin}){state}"
    root = Path(root or DEFAULT_ROOT).expanduser()
    if (root / "cifar-10-batches-py").is_dir():
        return f"torchvision's copy in {root}"
    return f"torchvision, downloading into {root} on first use (needs the internet; or {FIX})"


def unavailable_reason(path: str | Path | None = None, root: str | Path | None = None) -> str | None:
    """Why :func:`load_cifar10` cannot provide CIFAR-10 here, in one short line; ``None`` when it can."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision's "Downloading ..." chatter
            load_cifar10(path, root)
    except DataUnavailableError:
        where = Path(root or DEFAULT_ROOT).expanduser()
        return f"no CIFAR-10: ${ENV_VAR} is not set and torchvision could not download it into {where} (offline?)"
    except (FileNotFoundError, ValueError) as error:
        return f"no usable CIFAR-10: {error}"
    return None


def check_split(train: ImageSet, val: ImageSet) -> None:
    """Raise a ``ValueError`` unless ``train`` and ``val`` can feed the pipeline: 3×32×32 images, every class
    among the training images, and at least as many validation images."""
    for name, images in (("training", train), ("validation", val)):
        if images.images.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"the {name} images must be 3×{IMAGE_SIZE}×{IMAGE_SIZE} (CIFAR-10), got {tuple(images.images.shape[1:])}"
            )
    present = train.labels.unique().tolist()
    if len(present) < len(CLASSES):
        raise ValueError(
            f"too few images: the {len(train)} training images hold {len(present)} of the {len(CLASSES)} classes; "
            f"every class is needed (CIFAR-10 has {NUM_TRAIN + NUM_VAL:,} training images)"
        )
    if len(val) < len(CLASSES):
        raise ValueError(
            f"too few images: {len(val)} validation images cannot measure a {len(CLASSES)}-class accuracy; "
            f"give at least {len(CLASSES)} (CIFAR-10 has {NUM_VAL:,})"
        )


def check_percent(percent: float) -> float:
    """Return ``percent`` if it lies in (0, 100], else raise ``ValueError``."""
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
        raise ValueError(f"regime (labelled percentage) must lie in (0, 100], got {percent!r}")
    return float(percent)


def labelled_subset(labels: Tensor, percent: float, seed: int) -> Tensor:
    """Indices of a stratified, seeded labelled subset holding ``percent`` % of each class.

    Nested: for one seed, every class's images are ranked by a single seeded permutation and the first
    ``round(percent/100 · n_class)`` are taken, so the 1 % subset lies inside the 5 %, inside the 10 %...
    """
    check_percent(percent)
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for cls in labels.unique(sorted=True):
        members = (labels == cls).nonzero().flatten()
        order = members[torch.randperm(len(members), generator=generator)]
        picked.append(order[: max(1, round(percent / 100 * len(members)))])
    return torch.cat(picked).sort().values


def synthetic_cifar10(num_train: int = 500, num_test: int = 100, size: int = 32, seed: int = 0) -> CIFAR10:
    """A small CIFAR-10-shaped stand-in for tests and offline demos: each class is an oriented, coloured
    grating (its own angle, frequency and colour) with random phase and pixel noise, so the classes are
    learnable but not trivial. uint8 HWC-equivalent tensors, labels balanced over the 10 classes."""
    generator = torch.Generator().manual_seed(seed)

    def make(n: int) -> ImageSet:
        labels = torch.arange(n) % len(CLASSES)
        labels = labels[torch.randperm(n, generator=generator)]
        angle = labels.float() * torch.pi / len(CLASSES)
        frequency = 0.25 + 0.05 * (labels % 3).float()
        colour = torch.stack([(labels % 2), (labels // 2) % 2, (labels // 4) % 2 + (labels == 0)], 1).float()
        colour = 0.3 + 0.7 * colour.clamp(max=1)
        grid = torch.arange(size).float()
        yy, xx = torch.meshgrid(grid, grid, indexing="ij")
        phase = torch.rand(n, generator=generator) * 2 * torch.pi
        along = xx * torch.cos(angle).view(-1, 1, 1) + yy * torch.sin(angle).view(-1, 1, 1)
        wave = torch.sin(frequency.view(-1, 1, 1) * along + phase.view(-1, 1, 1))
        image = 0.5 + 0.35 * wave.unsqueeze(1) * colour.view(-1, 3, 1, 1)
        image = image + 0.15 * torch.randn(n, 3, size, size, generator=generator)
        return ImageSet((image.clamp(0, 1) * 255).round().to(torch.uint8), labels)

    return CIFAR10(make(num_train), make(num_test))
