"""Image datasets in memory: an npz file, a folder of images, or a torchvision dataset (downloaded when online).

Where the data comes from (:func:`load_data`), first match wins:
1. an explicit ``source`` (``--data`` on the command line, ``DATA`` in the notebooks);
2. the ``HEBBKIT_DATA`` environment variable, read the same way;
3. ``torchvision.datasets.CIFAR10`` under ``root`` (default ``~/.cache/hebbkit``), downloaded if missing.

A source is, in this order: an existing file (read as an npz); an existing folder holding ``cifar10.npz``
(that file); any other existing folder (an image folder); else a torchvision dataset name, any case:
CIFAR10, CIFAR100, MNIST, FashionMNIST, SVHN, STL10 (their official train and test splits, under ``root``).

npz layout: uint8 ``x_train`` (N, H, W, C) HWC with C = 1 or 3, or (N, H, W) for one channel; integer ``y_train``
(N,) in 0..K-1, K >= 2, at least two images of each label; optionally ``x_test``, ``y_test`` (the same layout), a boolean ``test_exact`` (N_test,), float
``mean`` and ``std`` (C,) and unicode ``classes`` (K,). Without ``classes`` the names are "0".."K-1" with
K = max training label + 1, except that a CIFAR-10-shaped file (50,000 training images of 32×32×3, 10 classes)
gets CIFAR-10's names. A file that is not such an archive (empty, truncated, corrupt, a lone ``.npy``, text,
pickled objects) is a ``ValueError`` naming the file and what is wrong; pickles are never loaded.

Image folder layout (torchvision's ImageFolder): one sub-folder per class, class names the sorted sub-folder
names (hidden ones ignored), images (.png, .jpg, .jpeg, .bmp, .ppm, .pgm, .tif, .tiff, .webp) anywhere below
them; or sub-folders ``train/`` and ``test/`` each in that layout (test class folders named as training ones).
Images whose modes are all grayscale ("L" or "1") give one channel, otherwise every image is converted to RGB.
All images must have the same size: a different one is a ``ValueError`` naming both files (resize them first);
at least two class folders of at least two images each.

A dataset without a separate test set (an npz without ``x_test``, an image folder without ``train/``/``test/``)
has ``test = None``: the experiments validate on :func:`split`'s held-out images and report no test accuracy.
Per-channel ``mean`` and ``std`` come from the training images (or the npz) and are shared by train and test.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

ENV_VAR = "HEBBKIT_DATA"
DEFAULT_NAME = "CIFAR10"  # what load_data reads when given nothing
DEFAULT_ROOT = Path.home() / ".cache" / "hebbkit"  # torchvision's copies
FIX = f"set {ENV_VAR}=PATH to a CIFAR-10 npz file, or pass --data PATH"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # published training statistics (load_data computes its own)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
PROTOCOL_IMAGES, NUM_VAL = 50_000, 10_000  # CIFAR-10's training set; the paper validates on its last 10,000
REGIMES = (1, 2, 3, 4, 5, 10, 25, 100)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
GRAYSCALE_MODES = ("L", "1")
# torchvision name -> (training and test keyword arguments, layout of its .data, what it keeps under root)
TORCHVISION = {
    "CIFAR10": ({"train": True}, {"train": False}, "NHWC", "cifar-10-batches-py"),
    "CIFAR100": ({"train": True}, {"train": False}, "NHWC", "cifar-100-python"),
    "MNIST": ({"train": True}, {"train": False}, "NHW", "MNIST"),
    "FashionMNIST": ({"train": True}, {"train": False}, "NHW", "FashionMNIST"),
    "SVHN": ({"split": "train"}, {"split": "test"}, "NCHW", "train_32x32.mat"),
    "STL10": ({"split": "train"}, {"split": "test"}, "NCHW", "stl10_binary"),
}
ACCEPTED = (
    "give an npz file (x_train, y_train[, x_test, y_test]), a folder with one sub-folder of images per class, "
    f"or a torchvision dataset name ({', '.join(TORCHVISION)}; any case)"
)


class DataUnavailableError(RuntimeError):
    """A torchvision dataset could not be found or downloaded."""


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W), labels as int64 (N,), the class names in label order, the per-channel
    ``mean``/``std`` of the dataset's training images in [0, 1]; ``exact`` marks pixel-exact images."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    exact: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: Tensor | slice) -> ImageSet:
        exact = None if self.exact is None else self.exact[index]
        return ImageSet(self.images[index], self.labels[index], self.classes, self.mean, self.std, exact)

    def float(self, device: torch.device | str = "cpu", normalize: bool = True) -> Tensor:
        """Images as float32 in [0, 1], standardised per channel with ``mean``/``std`` if ``normalize``."""
        x = self.images.to(device).float().div_(255)
        if normalize:
            mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x


@dataclass
class Dataset:
    """The training set and, when the source has one, its separate test set (else ``None``)."""

    train: ImageSet
    test: ImageSet | None
    name: str = "unnamed"


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 (N, C, H, W) ``images`` scaled to [0, 1]: exact integer
    sums from per-chunk histograms (no float copy of the set), divided once in float64."""
    if len(images) == 0:
        raise ValueError("no training images to compute the mean and std from")
    counts = torch.zeros(images.shape[1], 256, dtype=torch.int64)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].transpose(0, 1).reshape(images.shape[1], -1)
        for channel, values in enumerate(block):
            counts[channel] += torch.bincount(values, minlength=256)
    levels = torch.arange(256, dtype=torch.int64)
    means, stds = [], []
    for row in counts:
        n, total, squares = int(row.sum()), int((row * levels).sum()), int((row * levels * levels).sum())
        means.append(total / (n * 255))
        stds.append(math.sqrt((n * squares - total * total) / (n * n * 255 * 255)))
    return tuple(means), tuple(stds)


def _dataset(
    name: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor] | None,
    classes: tuple[str, ...],
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    exact: Tensor | None = None,
) -> Dataset:
    """A :class:`Dataset` from uint8 (N, C, H, W) images and int64 labels; mean/std from ``train`` unless given."""
    mean, std = stats or channel_stats(train[0])
    test_set = None if test is None else ImageSet(*test, classes, mean, std, exact)
    return Dataset(ImageSet(*train, classes, mean, std), test_set, name)


# ---------------------------------------------------------------------------------------------- npz


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
                        f"integer arrays (and class names as a unicode array)"
                    ) from error
            return arrays
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{path} is a damaged npz archive (truncated or corrupt: {error}); copy it again") from error


def _npz_images(key: str, x: np.ndarray) -> Tensor:
    """uint8 (N, H, W[, C]) with C = 1 or 3 as a (N, C, H, W) tensor."""
    if x.dtype != np.uint8:
        raise ValueError(f"{key} must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        hint = " (this looks like CHW: store HWC)" if x.ndim == 4 and x.shape[1] in (1, 3) else ""
        raise ValueError(
            f"{key} must have shape (N, H, W, C) with C = 1 or 3 (HWC), or (N, H, W) for one channel, "
            f"got {x.shape}{hint}"
        )
    if len(x) == 0:
        raise ValueError(f"{key} holds no images")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _listed(values) -> str:
    """Up to ten values, comma-separated ("..." after them)."""
    values = [str(v) for v in values]
    return ", ".join(values[:10]) + (", ..." if len(values) > 10 else "")


def _labels(key: str, y: np.ndarray, n: int, num_classes: int | None = None) -> Tensor:
    """Integer labels (n,) in 0..num_classes-1 (any non-negative ones when ``num_classes`` is None); an error
    names the labels outside that range and where the first is."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{key} must have shape ({n},) to match the images, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{key} must hold integers, got {y.dtype}")
    outside = (y < 0) if num_classes is None else (y < 0) | (y >= num_classes)
    if outside.any():
        upper = "K-1" if num_classes is None else num_classes - 1
        where = np.flatnonzero(outside)
        raise ValueError(f"{key} must lie in 0..{upper}, got {len(where)} label(s) outside it: "
                         f"{_listed(np.unique(y[where]))} (the first at index {where[0]})")
    return torch.from_numpy(y.astype(np.int64))


def _check_classes(labels: Tensor, classes: tuple[str, ...], fix: str) -> None:
    """At least two classes, and at least two training images of each (labels 0..K-1 without gaps, none a stray
    label on a single image), or a ``ValueError`` naming the class count or the offending labels; ``fix`` says
    where K comes from and how to change it."""
    if len(classes) < 2:
        raise ValueError(f"holds {len(classes)} class ({_listed(classes)}): a classification needs at least 2")
    counts = torch.bincount(labels, minlength=len(classes))

    def named(found: Tensor) -> str:
        indices = found.flatten().tolist()
        return _listed(k if classes[k] == str(k) else f"{k} ({classes[k]})" for k in indices)

    absent = torch.nonzero(counts == 0)
    if len(absent):
        raise ValueError(f"no training image has label {named(absent)} of 0..{len(classes) - 1}: the training "
                         f"labels must be 0..K-1 with every class present ({fix})")
    single = torch.nonzero(counts == 1)
    if len(single):
        first = int(torch.nonzero(labels == single[0])[0])
        raise ValueError(f"too few images: label {named(single)} has a single training image (the first at index "
                         f"{first}); every class needs at least 2, one for training and one to validate ({fix})")


def _stored_stats(arrays: dict[str, np.ndarray], channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if not {"mean", "std"} & arrays.keys():
        return None
    if not {"mean", "std"} <= arrays.keys():
        raise ValueError("must hold both mean and std, or neither")
    stats = []
    for key in ("mean", "std"):
        value = arrays[key]
        if not np.issubdtype(value.dtype, np.floating) or value.shape != (channels,) or not np.isfinite(value).all():
            raise ValueError(
                f"{key} must be a finite float array of shape ({channels},), got {value.dtype} {value.shape}"
            )
        stats.append(tuple(float(v) for v in value))
    if min(stats[1]) <= 0:
        raise ValueError(f"std must be positive, got {stats[1]}")
    return stats[0], stats[1]


def _stored_classes(arrays: dict[str, np.ndarray], train: Tensor, labels: Tensor) -> tuple[str, ...]:
    """The npz's ``classes``, else CIFAR-10's names for a CIFAR-10-shaped file, else "0".."K-1"."""
    if "classes" in arrays:
        names = arrays["classes"]
        if names.dtype.kind != "U" or names.ndim != 1 or len(names) == 0 or len(set(names.tolist())) != len(names):
            raise ValueError(f"classes must be a 1-D unicode array of distinct names, got {names.dtype} {names.shape}")
        return tuple(names.tolist())
    count = int(labels.max()) + 1
    if count == len(CIFAR10_CLASSES) and tuple(train.shape) == (PROTOCOL_IMAGES, 3, 32, 32):
        return CIFAR10_CLASSES
    return tuple(str(k) for k in range(count))


def _npz_dataset(arrays: dict[str, np.ndarray], name: str) -> Dataset:
    missing = {"x_train", "y_train"} - arrays.keys()
    if missing:
        raise ValueError(f"lacks the keys {sorted(missing)}; it has {sorted(arrays)}")
    images = _npz_images("x_train", arrays["x_train"])
    labels = _labels("y_train", arrays["y_train"], len(images))
    classes = _stored_classes(arrays, images, labels)
    labels = _labels("y_train", arrays["y_train"], len(images), len(classes))
    _check_classes(labels, classes, "K is the length of classes" if "classes" in arrays else
                   "K is the largest label + 1: renumber the labels, or store classes")
    test, exact = None, None
    if "x_test" in arrays or "y_test" in arrays:
        if not {"x_test", "y_test"} <= arrays.keys():
            raise ValueError("must hold both x_test and y_test, or neither")
        test_images = _npz_images("x_test", arrays["x_test"])
        if test_images.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"x_test's images are {tuple(test_images.shape[1:])} (C, H, W) but x_train's are "
                f"{tuple(images.shape[1:])}"
            )
        test = (test_images, _labels("y_test", arrays["y_test"], len(test_images), len(classes)))
        if "test_exact" in arrays:
            exact = arrays["test_exact"]
            if exact.dtype != np.bool_ or exact.shape != (len(test_images),):
                raise ValueError(f"test_exact must be a bool array of shape ({len(test_images)},)")
            exact = torch.from_numpy(exact)
    stats = _stored_stats(arrays, images.shape[1])
    return _dataset(name, (images, labels), test, classes, stats, exact)


def load_npz(path: str | Path) -> Dataset:
    """Read and validate an npz in the layout of the module docstring (a folder: its ``cifar10.npz``); errors
    name the file. The dataset is named after the file."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "cifar10.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no npz file at {path}")
    arrays = _read_npz(path)
    try:
        return _npz_dataset(arrays, path.stem)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


# ------------------------------------------------------------------------------------- image folder


def _folders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` by name, hidden ones (".git", ".ipynb_checkpoints") left out."""
    return sorted((entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
                  key=lambda entry: entry.name)


def _class_folders(folder: Path) -> list[Path]:
    folders = _folders(folder)
    if not folders:
        npz = sorted(file.name for file in folder.glob("*.npz"))
        hint = f"; to read an npz file pass it instead: {', '.join(npz)}" if npz else f"; {ACCEPTED}"
        raise ValueError(
            f"{folder} holds no cifar10.npz and no class sub-folders (one folder of images per class){hint}"
        )
    return folders


def _image_files(folder: Path) -> list[Path]:
    files = sorted(
        path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )
    if not files:
        raise ValueError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _read_images(files: list[Path], channels: int, size: tuple[int, int], first: Path) -> Tensor:
    """The images at ``files`` as uint8 (N, C, H, W); every one must be ``size`` (width, height) like ``first``."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), size[1], size[0], channels), np.uint8)
    for index, file in enumerate(files):
        try:
            with Image.open(file) as image:
                if image.size != size:
                    raise ValueError(
                        f"{file} is {image.size[0]}×{image.size[1]} but {first} is {size[0]}×{size[1]}: all images "
                        f"must have one size (resize them beforehand)"
                    )
                out[index] = np.asarray(image.convert(mode)).reshape(size[1], size[0], channels)
        except (OSError, SyntaxError, Image.DecompressionBombError) as error:
            raise ValueError(f"{file} is not a readable image ({error})") from None
    return torch.from_numpy(out.transpose(0, 3, 1, 2).copy())


def _image_header(file: Path) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    try:
        with Image.open(file) as image:
            return image.mode, image.size
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"{file} is not a readable image ({error})") from None


def load_folder(folder: str | Path) -> Dataset:
    """Read an image folder (layout in the module docstring); the dataset is named after the folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"no image folder at {folder}")
    parts = {entry.name: entry for entry in _folders(folder)}
    if {"train", "test"} <= parts.keys():
        if len(parts) > 2:
            raise ValueError(
                f"{folder} holds train/ and test/ beside {sorted(parts.keys() - {'train', 'test'})}: give either only "
                f"train/ and test/, or one sub-folder per class"
            )
        roots = {"train": parts["train"], "test": parts["test"]}
    else:
        roots = {"train": folder}
    classes = tuple(entry.name for entry in _class_folders(roots["train"]))
    listed: dict[str, tuple[list[Path], list[int]]] = {}
    for part, root in roots.items():
        files, labels = [], []
        for entry in _class_folders(root):
            if entry.name not in classes:
                raise ValueError(f"test class folder {entry} has no training folder in {roots['train']} ({classes})")
            found = _image_files(entry)
            files += found
            labels += [classes.index(entry.name)] * len(found)
        listed[part] = (files, labels)
    all_files = [file for files, _ in listed.values() for file in files]
    headers = [_image_header(file) for file in all_files]
    channels = 1 if all(mode in GRAYSCALE_MODES for mode, _ in headers) else 3
    sets = {
        part: (_read_images(files, channels, headers[0][1], all_files[0]), torch.tensor(labels, dtype=torch.int64))
        for part, (files, labels) in listed.items()
    }
    try:
        _check_classes(sets["train"][1], classes, "one sub-folder of images per class")
    except ValueError as error:
        raise ValueError(f"{roots['train']}: {error}") from None
    return _dataset(folder.name, sets["train"], sets.get("test"), classes)


# -------------------------------------------------------------------------------------- torchvision


def torchvision_name(source: str | Path) -> str | None:
    """The torchvision dataset ``source`` names (case and "-"/"_" ignored: "cifar-10", "fashion_mnist"), or None."""
    key = str(source).lower().replace("-", "").replace("_", "")
    return next((name for name in TORCHVISION if name.lower() == key), None)


def _chw(data, layout: str) -> Tensor:
    images = torch.as_tensor(np.asarray(data), dtype=torch.uint8)
    if layout == "NHW":
        return images.unsqueeze(1).contiguous()
    return images.permute(0, 3, 1, 2).contiguous() if layout == "NHWC" else images.contiguous()


def load_torchvision(name: str, root: str | Path | None = None, download: bool = True) -> Dataset:
    """A torchvision dataset (a name :func:`torchvision_name` knows) with its official train and test splits,
    read from (and, with ``download``, downloaded into) ``root``."""
    canonical = torchvision_name(name)
    if canonical is None:
        raise ValueError(f"unknown torchvision dataset {name!r}: the names are {', '.join(TORCHVISION)} (any case)")
    import torchvision

    train_args, test_args, layout, _ = TORCHVISION[canonical]
    root = Path(root or DEFAULT_ROOT).expanduser()
    make = getattr(torchvision.datasets, canonical)
    try:
        train, test = make(root, download=download, **train_args), make(root, download=download, **test_args)
    except Exception as error:  # no network, no files: say how to fix it
        raise DataUnavailableError(
            f"{canonical} is not available: torchvision could not load or download it into {root} ({error}). "
            f"Either go online so torchvision can download it, or point hebbkit at an npz file with "
            f"x_train/y_train[/x_test/y_test] uint8 arrays or at a folder of images: pass --data PATH (data=PATH in "
            f"Python) or set {ENV_VAR}=PATH."
        ) from error
    labels = [torch.as_tensor(np.asarray(part.targets if hasattr(part, "targets") else part.labels), dtype=torch.int64)
              for part in (train, test)]
    classes = tuple(getattr(train, "classes", None) or (str(k) for k in range(int(labels[0].max()) + 1)))
    return _dataset(canonical, (_chw(train.data, layout), labels[0]), (_chw(test.data, layout), labels[1]), classes)


# -------------------------------------------------------------------------------------------- sources


def _given(source: str | Path | None) -> tuple[str | Path, str]:
    """The source to read and where it came from: ``source``, else ``$HEBBKIT_DATA``, else CIFAR-10's name."""
    if source:
        return source, "--data"
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR], f"${ENV_VAR}"
    return DEFAULT_NAME, "default"


def _kind(source: str | Path, origin: str) -> tuple[str, Path | str]:
    """("npz", file), ("folder", folder) or ("torchvision", name) for ``source`` (given by ``origin``); errors
    say what is accepted."""
    path = Path(source).expanduser()
    if path.is_file() or (path.is_dir() and (path / "cifar10.npz").is_file()):
        return "npz", path
    if path.is_dir():
        return "folder", path
    name = torchvision_name(source)
    if name is not None:
        return "torchvision", name
    if path.suffix.lower() == ".npz":
        raise FileNotFoundError(f"no npz file at {path}")
    if path.suffix or os.sep in str(source) or path.is_absolute():
        raise FileNotFoundError(f"no file or folder at {path} (from {origin}); {ACCEPTED}")
    raise ValueError(
        f"unknown data source {str(source)!r} (from {origin}): no such file or folder, nor a torchvision name; "
        f"{ACCEPTED}"
    )


def load_data(source: str | Path | None = None, root: str | Path | None = None, download: bool = True) -> Dataset:
    """The dataset ``source`` names, else ``$HEBBKIT_DATA``'s, else torchvision's CIFAR-10 (module docstring);
    torchvision datasets live in (and are downloaded into, with ``download``) ``root``."""
    kind, where = _kind(*_given(source))
    if kind == "npz":
        return load_npz(where)
    if kind == "folder":
        return load_folder(where)
    return load_torchvision(where, root, download)


def describe_source(source: str | Path | None = None, root: str | Path | None = None) -> str:
    """Where :func:`load_data` would take the data from, in words (reads nothing but the file system)."""
    given, origin = _given(source)
    suffix = "" if origin == "default" else f" (from {origin})"
    try:
        kind, where = _kind(given, origin)
    except (FileNotFoundError, ValueError):
        path = Path(given).expanduser().resolve()
        if path.suffix.lower() == ".npz":
            return f"npz file {path}{suffix} — no such file"
        return f"{given}{suffix} — no such file or folder, nor a torchvision dataset name"
    if kind == "npz":
        file = where / "cifar10.npz" if where.is_dir() else where
        return f"npz file {file.resolve()}{suffix}"
    if kind == "folder":
        return f"image folder {where.resolve()}{suffix}"
    root = Path(root or DEFAULT_ROOT).expanduser()
    if (root / TORCHVISION[where][3]).exists():
        return f"torchvision's {where} in {root}{suffix}"
    return f"torchvision's {where}, downloading into {root} on first use{suffix} (needs the internet; or {FIX})"


def unavailable_reason(source: str | Path | None = None, root: str | Path | None = None) -> str | None:
    """Why :func:`load_data` cannot provide the data here, in one short line; ``None`` when it can."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision's "Downloading ..." chatter
            load_data(source, root)
    except DataUnavailableError:
        given, origin = _given(source)
        where = Path(root or DEFAULT_ROOT).expanduser()
        unset = f"${ENV_VAR} is not set and " if origin == "default" else ""
        return f"no {torchvision_name(given)}: {unset}torchvision could not download it into {where} (offline?)"
    except (FileNotFoundError, ValueError) as error:
        return f"no usable CIFAR-10: {error}"  # the wording callers' messages and tests still expect (issue 11)
    return None


# ------------------------------------------------------------------------------------------- splits


def split(images: ImageSet, seed: int | None) -> tuple[ImageSet, ImageSet]:
    """(pool, validation): ``images`` shuffled by ``seed`` (``None``: kept in order), the last ``NUM_VAL``
    validate when there are exactly 50,000 (CIFAR-10: the paper's 40,000 / 10,000), otherwise the last 20 %
    (at least one); then :func:`check_split`."""
    total = len(images)
    num_val = NUM_VAL if total == PROTOCOL_IMAGES else max(1, total // 5)
    if seed is None:
        order = torch.arange(total)
    else:
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    pool, val = images.subset(order[:-num_val]), images.subset(order[-num_val:])
    check_split(pool, val)
    return pool, val


def check_split(train: ImageSet, val: ImageSet) -> None:
    """Raise a ``ValueError`` unless ``train`` and ``val`` can feed the pipeline: one image shape in both, every
    class among the training images, and at least as many validation images as classes."""
    if train.shape != val.shape:
        raise ValueError(f"the training images are {train.shape} (C, H, W) but the validation images are {val.shape}")
    classes = train.num_classes
    if classes < 2:
        raise ValueError(f"the images hold {classes} class: a classification needs at least 2")
    present = train.labels.unique().tolist()
    if len(present) < classes:
        absent = sorted(set(range(classes)) - set(present))
        counts = [int((val.labels == label).sum()) for label in absent[:10]]
        raise ValueError(
            f"too few images: the {len(train)} training images hold {len(present)} of the {classes} classes; "
            f"every class is needed, and no training image has label {_listed(absent)} ({_listed(counts)} among "
            f"the validation images)"
        )
    if len(val) < classes:
        raise ValueError(
            f"too few images: {len(val)} validation images cannot measure a {classes}-class accuracy; "
            f"give at least {classes}"
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


def synthetic_images(
    num_train: int = 500, num_test: int = 100, channels: int = 3, size: int = 32, num_classes: int = 10, seed: int = 0
) -> Dataset:
    """A small stand-in for tests and offline demos, named "synthetic": each class is an oriented grating (its
    own angle, frequency and per-channel amplitude) with random phase and pixel noise, so the classes are
    learnable but not trivial. Labels balanced over the classes; mean/std from the training images."""
    for name, value, least in (("num_train", num_train, 1), ("num_test", num_test, 0), ("channels", channels, 1),
                               ("size", size, 1), ("num_classes", num_classes, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    generator = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=generator)]
        angle = labels.float() * torch.pi / num_classes
        frequency = 0.25 + 0.05 * (labels % 3).float()
        colour = torch.stack([(labels // 2**c) % 2 for c in range(channels)], 1)
        colour[:, -1] += labels == 0
        colour = 0.3 + 0.7 * colour.float().clamp(max=1)
        grid = torch.arange(size).float()
        yy, xx = torch.meshgrid(grid, grid, indexing="ij")
        phase = torch.rand(n, generator=generator) * 2 * torch.pi
        along = xx * torch.cos(angle).view(-1, 1, 1) + yy * torch.sin(angle).view(-1, 1, 1)
        wave = torch.sin(frequency.view(-1, 1, 1) * along + phase.view(-1, 1, 1))
        image = 0.5 + 0.35 * wave.unsqueeze(1) * colour.view(-1, channels, 1, 1)
        image = image + 0.15 * torch.randn(n, channels, size, size, generator=generator)
        return (image.clamp(0, 1) * 255).round().to(torch.uint8), labels

    train, test = make(num_train), make(num_test)
    return _dataset("synthetic", train, test, tuple(str(k) for k in range(num_classes)))
