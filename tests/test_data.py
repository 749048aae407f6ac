"""The data loader: npz files of several shapes (valid and malformed), image folders, torchvision names (faked:
no downloads here), the offline error, splits, labelled subsets, synthetic images, the real files."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hebbkit.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    ENV_VAR,
    DataUnavailableError,
    Dataset,
    ImageSet,
    check_percent,
    describe_source,
    labelled_subset,
    load_data,
    load_npz,
    split,
    synthetic_images,
    unavailable_reason,
)


def arrays(n: int = 20, n_test: int = 10, shape: tuple[int, ...] = (32, 32, 3), classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n, *shape), dtype=np.uint8),
        "y_train": np.arange(n) % classes,
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": np.arange(n_test) % classes,
        "test_exact": np.arange(n_test) < 3,
    }


def write(tmp_path: Path, name: str = "cifar10.npz", **content) -> Path:
    path = tmp_path / name
    np.savez(path, **content)
    return path


def numpy_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std of HWC (or single-channel HW) uint8 images scaled to [0, 1]."""
    x = x.astype(np.float64).reshape(*x.shape[:3], -1) / 255
    return x.mean((0, 1, 2)), x.std((0, 1, 2))


# ---------------------------------------------------------------------------------------------- npz


@pytest.mark.parametrize(
    "shape, classes, chw",
    [((28, 28), 10, (1, 28, 28)), ((28, 28, 1), 3, (1, 28, 28)), ((32, 32, 3), 10, (3, 32, 32)),
     ((16, 16, 3), 4, (3, 16, 16))],
)
def test_npz_of_any_shape_loads_with_its_classes_and_statistics(tmp_path, shape, classes, chw):
    content = arrays(40, 12, shape, classes)
    data = load_data(write(tmp_path, "digits.npz", **content))
    assert data.name == "digits" and data.train.shape == data.test.shape == chw
    assert data.train.classes == data.test.classes == tuple(str(k) for k in range(classes))
    assert data.train.num_classes == classes and len(data.train) == 40 and len(data.test) == 12
    x = content["x_train"].reshape(40, *shape[:2], -1)
    assert torch.equal(data.train.images, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    mean, std = numpy_stats(content["x_train"])
    np.testing.assert_allclose(data.train.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(data.train.std, std, rtol=1e-12)
    assert data.test.mean == data.train.mean and data.test.std == data.train.std  # training statistics for both
    assert data.test.exact.tolist() == [True] * 3 + [False] * 9


def test_load_npz_keeps_exact_pixels_and_labels(tmp_path):
    content = arrays()
    data = load_npz(write(tmp_path, **content))
    assert data.train.images.dtype == torch.uint8
    assert torch.equal(data.train.images[4, 1], torch.from_numpy(content["x_train"][4, :, :, 1]))
    assert data.train.labels.dtype == torch.int64 and data.train.labels.tolist() == list(np.arange(20) % 10)


def test_npz_classes_mean_and_std_are_used_when_stored(tmp_path):
    content = arrays(20, 4, (8, 8, 3), 3)
    names = np.array(["cat", "dog", "emu"])
    data = load_data(write(tmp_path, **content, classes=names, mean=np.array([0.1, 0.2, 0.3]), std=np.ones(3)))
    assert data.train.classes == ("cat", "dog", "emu") and data.train.mean == (0.1, 0.2, 0.3)
    assert torch.allclose(data.test.float()[0, 2], torch.from_numpy(content["x_test"][0, :, :, 2]) / 255 - 0.3)


def test_a_cifar10_shaped_npz_gets_cifar10_names(tmp_path, monkeypatch):
    monkeypatch.setattr("hebbkit.data.PROTOCOL_IMAGES", 30)  # CIFAR-10's 50,000, scaled down to keep the test fast
    content = arrays(30, 0)
    path = write(tmp_path, x_train=content["x_train"], y_train=content["y_train"])
    assert load_data(path).train.classes == CIFAR10_CLASSES
    others = ((29, (32, 32, 3), 10), (30, (32, 32, 1), 10), (30, (16, 16, 3), 10), (30, (32, 32, 3), 9))
    for n, shape, classes in others:
        content = arrays(n, 0, shape, classes)
        path = write(tmp_path, x_train=content["x_train"], y_train=content["y_train"])
        assert load_data(path).train.classes == tuple(str(k) for k in range(classes))


def test_load_npz_accepts_a_folder_and_train_only_files(tmp_path):
    content = arrays()
    write(tmp_path, x_train=content["x_train"], y_train=content["y_train"])
    data = load_data(tmp_path)
    assert len(data.train) == 20 and data.test is None


def test_load_data_reads_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(write(tmp_path, **arrays())))
    assert len(load_data().train) == 20


def test_float_standardises_with_the_sets_statistics():
    images = ImageSet(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64),
                      ("a",), (0.5,), (0.25,))
    assert torch.equal(images.float(), torch.full((2, 1, 4, 4), 2.0))
    assert torch.equal(images.float(normalize=False), torch.ones(2, 1, 4, 4))
    kept = images.subset(slice(0, 1))
    assert (kept.classes, kept.mean, kept.std, len(kept)) == (("a",), (0.5,), (0.25,), 1)


NPZ_ERRORS = {
    "missing key": (lambda c: c | {"y_train": None}, r"lacks the keys \['y_train'\]"),
    "two channels": (lambda c: c | {"x_train": c["x_train"][..., :2]}, r"x_train must have shape \(N, H, W, C\) with"),
    "CHW": (lambda c: c | {"x_train": c["x_train"].transpose(0, 3, 1, 2)}, "looks like CHW"),
    "float images": (lambda c: c | {"x_train": c["x_train"].astype(np.float32)}, "x_train must be uint8, got float32"),
    "label count": (lambda c: c | {"y_test": c["y_test"][:-1]}, r"y_test must have shape \(10,\)"),
    "float labels": (lambda c: c | {"y_train": c["y_train"].astype(np.float64)}, "y_train must hold integers"),
    "negative label": (lambda c: c | {"y_train": c["y_train"] - 1}, r"y_train must lie in 0\.\.K-1, got 2 label\(s\) "
                                                                 r"outside it: -1 \(the first at index 0\)"),
    "test label beyond training": (lambda c: c | {"y_test": c["y_test"] + 1}, r"y_test must lie in 0\.\.9, got"),
    "label beyond classes": (lambda c: c | {"classes": np.array(list("abc"))}, r"y_train must lie in 0\.\.2, got"),
    "half a test set": (lambda c: c | {"y_test": None}, "both x_test and y_test"),
    "bad test_exact": (lambda c: c | {"test_exact": c["test_exact"].astype(np.uint8)}, "test_exact must be a bool"),
    "test shape": (lambda c: c | {"x_test": c["x_test"][:, :16]}, r"x_test's images are \(3, 16, 32\)"),
    "no images": (lambda c: c | {"x_train": c["x_train"][:0], "y_train": c["y_train"][:0]}, "x_train holds no images"),
    "mean alone": (lambda c: c | {"mean": np.zeros(3)}, "both mean and std"),
    "std shape": (lambda c: c | {"mean": np.zeros(3), "std": np.ones(1)}, r"std must be a finite float array of shape"),
    "zero std": (lambda c: c | {"mean": np.zeros(3), "std": np.zeros(3)}, "std must be positive"),
    "class names": (lambda c: c | {"classes": np.array([1, 2])}, "classes must be a 1-D unicode array"),
}


@pytest.mark.parametrize("case", NPZ_ERRORS)
def test_a_malformed_npz_names_the_file_and_the_fault(tmp_path, case):
    change, message = NPZ_ERRORS[case]
    content = {key: value for key, value in change(arrays()).items() if value is not None}
    path = write(tmp_path, **content)
    with pytest.raises(ValueError, match=message) as error:
        load_data(path)
    assert str(error.value).startswith(f"{path}: ")


# ------------------------------------------------------------------------------------- image folder


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def test_a_folder_of_grayscale_pngs_is_one_channel_with_sorted_class_names(tmp_path):
    rng = np.random.default_rng(0)
    pictures = {}
    for cls in ("zebra", "ant", "moth"):
        for k in range(2 + len(cls) % 2):
            pictures[cls, k] = rng.integers(0, 256, (6, 5), dtype=np.uint8)
            save_png(tmp_path / "bugs" / cls / f"{k}.png", pictures[cls, k])
    (tmp_path / "bugs" / "ant" / "notes.txt").write_text("not an image: skipped")
    data = load_data(tmp_path / "bugs")
    assert data.name == "bugs" and data.test is None and data.train.classes == ("ant", "moth", "zebra")
    assert data.train.shape == (1, 6, 5) and data.train.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert torch.equal(data.train.images[3, 0], torch.from_numpy(pictures["moth", 0]))
    stacked = np.stack([pictures[key] for key in sorted(pictures, key=lambda key: (key[0], key[1]))])
    mean, std = numpy_stats(stacked)
    np.testing.assert_allclose(data.train.mean + data.train.std, np.concatenate([mean, std]), rtol=1e-12)


def test_a_folder_with_train_and_test_is_two_rgb_sets(tmp_path):
    rng = np.random.default_rng(1)
    for part, count in (("train", 3), ("test", 1)):
        for cls in ("cat", "dog"):
            for k in range(count):
                save_png(tmp_path / part / cls / f"{k}.png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    grey = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    save_png(tmp_path / "test" / "dog" / "grey.png", grey)  # one grayscale image among RGB ones: converted to RGB
    data = load_data(tmp_path)
    assert data.train.classes == data.test.classes == ("cat", "dog")
    assert data.train.shape == data.test.shape == (3, 4, 4)
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1] and data.test.labels.tolist() == [0, 1, 1]
    assert all(torch.equal(data.test.images[2, c], torch.from_numpy(grey)) for c in range(3))
    assert data.test.mean == data.train.mean
    mean, _ = numpy_stats(data.train.images.permute(0, 2, 3, 1).numpy())
    np.testing.assert_allclose(data.train.mean, mean, rtol=1e-12)


def test_image_folder_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty'} holds no cifar10.npz and no class sub-folders"):
        load_data(tmp_path / "empty")
    (tmp_path / "gap" / "a").mkdir(parents=True)
    save_png(tmp_path / "gap" / "b" / "0.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=f"class folder {tmp_path / 'gap' / 'a'} holds no images"):
        load_data(tmp_path / "gap")
    save_png(tmp_path / "sizes" / "a" / "0.png", np.zeros((2, 2), np.uint8))
    save_png(tmp_path / "sizes" / "b" / "0.png", np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match=r"sizes/b/0.png is 2×3 but .*sizes/a/0.png is 2×2: all images must have"):
        load_data(tmp_path / "sizes")
    save_png(tmp_path / "broken" / "a" / "0.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "broken" / "b").mkdir()
    (tmp_path / "broken" / "b" / "0.png").write_text("no picture")
    with pytest.raises(ValueError, match=f"{tmp_path / 'broken' / 'b' / '0.png'} is not a readable image"):
        load_data(tmp_path / "broken")
    for part, cls in (("train", "a"), ("test", "z"), ("extra", "a")):
        save_png(tmp_path / "parts" / part / cls / "0.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"holds train/ and test/ beside \['extra'\]"):
        load_data(tmp_path / "parts")
    (tmp_path / "parts" / "extra" / "a" / "0.png").unlink()
    (tmp_path / "parts" / "extra" / "a").rmdir()
    (tmp_path / "parts" / "extra").rmdir()
    with pytest.raises(ValueError, match=r"test class folder .*test/z has no training folder"):
        load_data(tmp_path / "parts")


# -------------------------------------------------------------------------------------- torchvision


def pixels(n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic uint8 images, all different, in the layout ``shape``."""
    return (np.arange(n * int(np.prod(shape))) % 251).astype(np.uint8).reshape(n, *shape)


def fake(name: str, shape: tuple[int, ...], by_split: bool, classes: list[str] | None):
    """A stand-in for torchvision's dataset class ``name`` (no download): records its arguments in ``calls`` and
    holds ``pixels`` as ``data`` and labels 0, 1, 2, 0, ... the way torchvision's class does."""

    class Fake:
        calls: list = []

        def __init__(self, root, download=False, **split):
            Fake.calls.append((Path(root), download, split))
            n = 4 if split in ({"train": False}, {"split": "test"}) else 6
            if by_split:  # SVHN, STL10: numpy arrays, .labels
                self.data, self.labels = pixels(n, shape), np.arange(n) % 3
            else:  # MNIST-like: tensors; CIFAR-like: numpy data; both .targets
                self.data = torch.from_numpy(pixels(n, shape)) if len(shape) == 2 else pixels(n, shape)
                self.targets = (torch.arange(n) % 3) if len(shape) == 2 else list(np.arange(n) % 3)

    if classes:
        Fake.classes = classes
    Fake.__name__ = name
    return Fake


FAKES = {  # the name as a user may type it: torchvision's class, its image layout, hebbkit's (C, H, W), classes
    "cifar-10": ("CIFAR10", (32, 32, 3), (3, 32, 32), ["a", "b", "c"]),
    "CIFAR100": ("CIFAR100", (32, 32, 3), (3, 32, 32), ["x", "y", "z"]),
    "mnist": ("MNIST", (28, 28), (1, 28, 28), ["0 - zero", "1 - one", "2 - two"]),
    "fashion_mnist": ("FashionMNIST", (28, 28), (1, 28, 28), ["t", "u", "v"]),
    "svhn": ("SVHN", (3, 32, 32), (3, 32, 32), None),
    "Stl10": ("STL10", (3, 96, 96), (3, 96, 96), ["p", "q", "r"]),
}


@pytest.mark.parametrize("typed", FAKES)
def test_torchvision_names_map_to_their_datasets(tmp_path, monkeypatch, typed):
    name, layout, chw, classes = FAKES[typed]
    by_split = name in ("SVHN", "STL10")
    cls = fake(name, layout, by_split, classes)
    monkeypatch.setattr(f"torchvision.datasets.{name}", cls)
    data = load_data(typed, root=tmp_path, download=False)
    assert data.name == name and data.train.shape == data.test.shape == chw
    assert (len(data.train), len(data.test)) == (6, 4) and data.train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert data.train.classes == tuple(classes or ("0", "1", "2"))
    splits = ({"split": "train"}, {"split": "test"}) if by_split else ({"train": True}, {"train": False})
    assert cls.calls == [(tmp_path, False, split) for split in splits]
    expected = pixels(6, layout)
    expected = expected[:, None] if len(layout) == 2 else expected if by_split else expected.transpose(0, 3, 1, 2)
    assert torch.equal(data.train.images, torch.from_numpy(np.ascontiguousarray(expected)))
    mean, std = numpy_stats(expected.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(data.test.mean + data.test.std, np.concatenate([mean, std]), rtol=1e-12)


def test_offline_without_data_says_both_ways_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    for source, name in ((None, "CIFAR10"), ("fashionmnist", "FashionMNIST")):
        with pytest.raises(DataUnavailableError) as error:
            load_data(source, root=tmp_path, download=False)
        message = str(error.value)
        assert message.startswith(f"{name} is not available: torchvision could not load or download it into {tmp_path}")
        assert "go online" in message and "--data PATH" in message and ENV_VAR in message and "\n" not in message


def test_offline_without_data_is_one_short_reason(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr("torchvision.datasets.CIFAR10.download", lambda self: None)  # offline, even where online
    monkeypatch.setattr("torchvision.datasets.MNIST.download", lambda self: None)
    reason = unavailable_reason(root=tmp_path)
    offline = f"torchvision could not download it into {tmp_path} (offline?)"
    assert reason == f"no CIFAR10: ${ENV_VAR} is not set and {offline}"
    assert unavailable_reason("MNIST", tmp_path) == f"no MNIST: {offline}"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.npz"))
    assert unavailable_reason() == f"no usable CIFAR-10: no npz file at {tmp_path / 'missing.npz'}"
    monkeypatch.setenv(ENV_VAR, str(write(tmp_path, **arrays())))
    assert unavailable_reason() is None


def test_unknown_sources_list_what_is_accepted(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data source 'imagenet' \(from --data\): no such file") as error:
        load_data("imagenet")
    names = "CIFAR10, CIFAR100, MNIST, FashionMNIST, SVHN, STL10"
    for accepted in ("npz file", "one sub-folder of images per class", names):
        assert accepted in str(error.value)
    with pytest.raises(FileNotFoundError, match=f"no file or folder at {tmp_path / 'pics'} .*npz file"):
        load_data(tmp_path / "pics")
    with pytest.raises(FileNotFoundError, match=f"^no npz file at {tmp_path / 'nothing.npz'}$"):
        load_data(tmp_path / "nothing.npz")
    with pytest.raises(FileNotFoundError, match="no npz file"):
        load_npz(tmp_path)


def test_describe_source_names_file_folder_variable_or_download(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert describe_source(root=tmp_path).startswith(f"torchvision's CIFAR10, downloading into {tmp_path} on first use")
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert describe_source(root=tmp_path) == f"torchvision's CIFAR10 in {tmp_path}"
    svhn = describe_source("svhn", tmp_path)
    assert svhn.startswith(f"torchvision's SVHN, downloading into {tmp_path} on first use (from --data)")
    path = write(tmp_path, **arrays())
    assert describe_source(tmp_path) == f"npz file {path} (from --data)"
    (tmp_path / "pictures").mkdir()
    assert describe_source(tmp_path / "pictures") == f"image folder {tmp_path / 'pictures'} (from --data)"
    unknown = "imagenet (from --data) — no such file or folder, nor a torchvision dataset name"
    assert describe_source("imagenet") == unknown
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone.npz"))
    assert describe_source() == f"npz file {tmp_path / 'gone.npz'} (from ${ENV_VAR}) — no such file"


# ------------------------------------------------------------------------------------------- splits


def indexed_images(count: int, classes: int = 10) -> ImageSet:
    """``count`` 1×1×2 images whose pixels encode their index; labels cycle through ``classes``."""
    index = torch.arange(count)
    images = torch.stack([index % 256, index // 256], 1).to(torch.uint8).view(count, 1, 1, 2)
    return ImageSet(images, index % classes, tuple(str(k) for k in range(classes)), (0.0,), (1.0,))


def image_index(images: ImageSet) -> torch.Tensor:
    return images.images[:, 0, 0, 0].long() + 256 * images.images[:, 0, 0, 1].long()


@pytest.mark.parametrize("count, num_val", [(50_000, 10_000), (123, 24), (60_000, 12_000)])
def test_split_is_the_reference_split(count, num_val):
    images = indexed_images(count)
    for seed in (0, 7):
        pool, val = split(images, seed)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))  # reproduce.split's order
        assert torch.equal(image_index(pool), order[:-num_val]) and torch.equal(image_index(val), order[-num_val:])
        assert pool.classes == images.classes and pool.std == (1.0,)
    pool, val = split(images, None)
    assert torch.equal(image_index(pool), torch.arange(count - num_val))
    assert torch.equal(image_index(val), torch.arange(count - num_val, count))


def test_split_refuses_too_few_images():
    with pytest.raises(ValueError, match="too few images: 2 validation images cannot measure a 10-class accuracy"):
        split(indexed_images(12), None)
    with pytest.raises(ValueError, match="training images hold 2 of the 4 classes"):
        split(indexed_images(3, 4), None)


# ---------------------------------------------------------------------------------- labelled subsets


def labels_with_counts(counts: list[int], seed: int = 0) -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def test_labelled_subset_is_stratified():
    labels = labels_with_counts([400, 300, 200, 500, 400, 400, 400, 400, 400, 400])
    index = labelled_subset(labels, 5, seed=3)
    counts = torch.bincount(labels[index], minlength=10).tolist()
    assert counts == [20, 15, 10, 25, 20, 20, 20, 20, 20, 20]
    assert torch.equal(index, index.unique(sorted=True))


def test_labelled_subsets_are_nested_for_one_seed():
    labels = labels_with_counts([400] * 10)
    subsets = [set(labelled_subset(labels, p, seed=1).tolist()) for p in (1, 2, 5, 10, 25, 100)]
    assert all(small < large for small, large in zip(subsets, subsets[1:]))
    assert subsets[-1] == set(range(len(labels)))


def test_labelled_subset_is_seeded():
    labels = labels_with_counts([400] * 10)
    assert torch.equal(labelled_subset(labels, 10, seed=7), labelled_subset(labels, 10, seed=7))
    assert not torch.equal(labelled_subset(labels, 10, seed=7), labelled_subset(labels, 10, seed=8))


def test_tiny_regimes_keep_one_image_per_class():
    labels = labels_with_counts([30] * 10)
    assert torch.bincount(labels[labelled_subset(labels, 1, seed=0)]).tolist() == [1] * 10


@pytest.mark.parametrize("percent", [0, -1, 100.5, "5", True, float("nan")])
def test_regime_outside_0_100_is_rejected(percent):
    with pytest.raises(ValueError, match=r"regime \(labelled percentage\) must lie in \(0, 100\]"):
        check_percent(percent)


# ---------------------------------------------------------------------------------- synthetic images


def digest(data: Dataset) -> str:
    h = hashlib.sha256()
    for images in (data.train, data.test):
        h.update(images.images.numpy().tobytes())
        h.update(images.labels.numpy().tobytes())
    return h.hexdigest()


def test_synthetic_images_are_the_old_synthetic_cifar10_bit_for_bit():
    # digests of synthetic_cifar10 computed before it became synthetic_images (commit c4a2f65)
    assert digest(synthetic_images()) == "0b209fc4b85ca04b684375ecf923d13d5db99c888087681fc426a7a817bf4366"
    assert digest(synthetic_images(seed=1)) == "68d5a121ae249f64b2af58c853915a6f126c36bb8bb14213e9a0b813cf6acf60"
    assert digest(synthetic_images(50, 0, 3, 28)) == "41eac56ee53f6ae15d28fa1d973e4d2f4e920d42f9ac5193b7cdf1b5f1c3a4c2"


@pytest.mark.parametrize("channels, size, classes", [(1, 28, 10), (3, 16, 4), (2, 8, 3)])
def test_synthetic_images_of_other_shapes(channels, size, classes):
    data = synthetic_images(40, 8, channels, size, classes, seed=2)
    assert data.name == "synthetic" and data.train.shape == data.test.shape == (channels, size, size)
    assert data.train.classes == tuple(str(k) for k in range(classes)) and len(data.train.mean) == channels
    assert torch.bincount(data.train.labels).tolist() == [40 // classes + (k < 40 % classes) for k in range(classes)]
    assert data.train.images.float().std() > 20  # gratings and noise, not a constant


def test_synthetic_images_refuse_bad_sizes():
    with pytest.raises(ValueError, match="channels must be an integer >= 1, got 0"):
        synthetic_images(channels=0)


# ----------------------------------------------------------------------------------------- real data


def test_real_cifar10_npz(cifar_npz):
    data = load_data(cifar_npz)
    train, val = split(data.train, None)
    assert (len(train), len(val)) == (40_000, 10_000) and torch.equal(val.images, data.train.images[40_000:])
    assert data.train.shape == (3, 32, 32) and data.train.classes == CIFAR10_CLASSES
    assert torch.bincount(data.train.labels).tolist() == [5000] * 10
    assert data.test is not None and len(data.test) == 10_000
    assert data.test.exact[:1017].all() and not data.test.exact[1017:].any()
    np.testing.assert_allclose(data.train.mean, CIFAR10_MEAN, atol=1e-4)
    np.testing.assert_allclose(data.train.std, CIFAR10_STD, atol=1e-4)
    counts = torch.bincount(train.labels[labelled_subset(train.labels, 1, seed=0)])
    assert counts.tolist() == [40] * 10  # 1 % of 40,000, stratified


def test_real_mnist_npz(cifar_npz):
    path = cifar_npz.parent / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"no mnist.npz beside {cifar_npz}")
    data = load_data(path)
    assert data.name == "mnist" and data.train.shape == (1, 28, 28)
    assert (len(data.train), len(data.test)) == (60_000, 10_000)
    assert data.train.classes == tuple("0123456789")
    np.testing.assert_allclose(data.train.mean + data.train.std, (0.1307, 0.3081), atol=1e-4)  # the usual constants
