"""The CIFAR-10 loader: npz files (valid and malformed), the offline error, labelled subsets, the real file."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hebbkit.data import (
    CLASSES,
    ENV_VAR,
    MEAN,
    STD,
    DataUnavailableError,
    ImageSet,
    check_percent,
    describe_source,
    labelled_subset,
    load_cifar10,
    load_npz,
    synthetic_cifar10,
    unavailable_reason,
)


def arrays(n: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        "y_train": np.arange(n) % 10,
        "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        "y_test": np.arange(n_test) % 10,
        "test_exact": np.arange(n_test) < 3,
    }


def write(tmp_path: Path, name: str = "cifar10.npz", **content) -> Path:
    path = tmp_path / name
    np.savez(path, **content)
    return path


def test_load_npz_converts_hwc_to_chw_and_keeps_everything(tmp_path):
    content = arrays()
    data = load_npz(write(tmp_path, **content))
    assert data.train.images.shape == (20, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert torch.equal(data.train.images[4, 1], torch.from_numpy(content["x_train"][4, :, :, 1]))
    assert data.train.labels.dtype == torch.int64 and data.train.labels.tolist() == list(np.arange(20) % 10)
    assert data.test is not None and len(data.test) == 10
    assert data.test.exact.tolist() == [True] * 3 + [False] * 7


def test_load_npz_accepts_a_folder_and_train_only_files(tmp_path):
    content = arrays()
    write(tmp_path, x_train=content["x_train"], y_train=content["y_train"])
    data = load_npz(tmp_path)
    assert len(data.train) == 20 and data.test is None


def test_load_cifar10_reads_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(write(tmp_path, **arrays())))
    assert len(load_cifar10().train) == 20


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no npz file"):
        load_npz(tmp_path / "nothing.npz")


def test_wrong_keys_are_named(tmp_path):
    content = arrays()
    with pytest.raises(ValueError, match=r"lacks the keys \['y_train'\]"):
        load_npz(write(tmp_path, x_train=content["x_train"], labels=content["y_train"]))


def test_wrong_image_shape_is_named(tmp_path):
    content = arrays()
    content["x_train"] = content["x_train"][..., :2]
    with pytest.raises(ValueError, match=r"cifar10.npz: x_train must have shape \(N, 32, 32, 3\)"):
        load_npz(write(tmp_path, **content))


def test_wrong_image_dtype_is_named(tmp_path):
    content = arrays()
    content["x_train"] = content["x_train"].astype(np.float32)
    with pytest.raises(ValueError, match="x_train must be uint8, got float32"):
        load_npz(write(tmp_path, **content))


def test_label_count_mismatch_is_named(tmp_path):
    content = arrays()
    content["y_test"] = content["y_test"][:-1]
    with pytest.raises(ValueError, match=r"y_test must have shape \(10,\)"):
        load_npz(write(tmp_path, **content))


def test_label_dtype_is_named(tmp_path):
    content = arrays()
    content["y_train"] = content["y_train"].astype(np.float64)
    with pytest.raises(ValueError, match="y_train must hold integers"):
        load_npz(write(tmp_path, **content))


def test_label_range_is_named(tmp_path):
    content = arrays()
    content["y_train"][3] = 10
    with pytest.raises(ValueError, match=r"y_train must lie in 0\.\.9, got range 0\.\.10"):
        load_npz(write(tmp_path, **content))


def test_half_a_test_set_is_an_error(tmp_path):
    content = arrays()
    del content["y_test"]
    with pytest.raises(ValueError, match="both x_test and y_test"):
        load_npz(write(tmp_path, **content))


def test_bad_test_exact_is_an_error(tmp_path):
    content = arrays()
    content["test_exact"] = content["test_exact"].astype(np.uint8)
    with pytest.raises(ValueError, match="test_exact must be a bool array"):
        load_npz(write(tmp_path, **content))


def test_offline_without_data_says_both_ways_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(DataUnavailableError) as error:
        load_cifar10(root=tmp_path, download=False)
    message = str(error.value)
    assert "go online" in message and "--data PATH" in message and ENV_VAR in message


def test_offline_without_data_is_one_short_reason(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr("torchvision.datasets.CIFAR10.download", lambda self: None)  # offline, even where online
    reason = unavailable_reason(root=tmp_path)
    assert reason == f"no CIFAR-10: ${ENV_VAR} is not set and torchvision could not download it into {tmp_path} (offline?)"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.npz"))
    assert unavailable_reason() == f"no usable CIFAR-10: no npz file at {tmp_path / 'missing.npz'}"
    monkeypatch.setenv(ENV_VAR, str(write(tmp_path, **arrays())))
    assert unavailable_reason() is None


def test_describe_source_names_file_variable_or_download(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert describe_source(root=tmp_path).startswith(f"torchvision, downloading into {tmp_path} on first use")
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert describe_source(root=tmp_path) == f"torchvision's copy in {tmp_path}"
    path = write(tmp_path, **arrays())
    assert describe_source(tmp_path) == f"npz file {path} (from --data)"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone.npz"))
    assert describe_source() == f"npz file {tmp_path / 'gone.npz'} (from ${ENV_VAR}) — no such file"


def test_protocol_split_needs_fifty_thousand_images():
    with pytest.raises(ValueError, match="50000 training images"):
        synthetic_cifar10(100, 10).protocol_split()


def test_float_standardises_with_cifar_statistics():
    images = ImageSet(torch.full((2, 3, 4, 4), 255, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    x = images.float()
    expected = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(x[0, :, 0, 0], expected)
    assert torch.equal(images.float(normalize=False), torch.ones(2, 3, 4, 4))


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


# ----------------------------------------------------------------------------------------- real data


def test_real_cifar10_npz(cifar_npz):
    data = load_npz(cifar_npz)
    train, val = data.protocol_split()
    assert (len(train), len(val)) == (40_000, 10_000)
    assert data.train.images.shape == (50_000, 3, 32, 32)
    assert torch.bincount(data.train.labels).tolist() == [5000] * len(CLASSES)
    assert data.test is not None and len(data.test) == 10_000
    assert data.test.exact[:1017].all() and not data.test.exact[1017:].any()
    mean = data.train.images.sum((0, 2, 3), dtype=torch.int64) / (50_000 * 32 * 32 * 255)
    assert torch.allclose(mean.float(), torch.tensor(MEAN), atol=1e-4)
    counts = torch.bincount(train.labels[labelled_subset(train.labels, 1, seed=0)])
    assert counts.tolist() == [40] * 10  # 1 % of 40,000, stratified
