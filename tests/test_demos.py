"""The workbook's simulations and image helpers (hebbkit.demos): dead units and their revival, the soft-WTA
collapse, image patches, image folders, whitening, and the pictures of Lagani's layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hebbkit import demos, lagani


def test_conscience_bias_revives_the_dead_unit() -> None:
    points, _ = demos.clusters(600, seed=0)
    centres = demos.cluster_centres()
    _, dead = demos.learn_wta_bias(points, demos.DEAD_UNIT_INIT, lr=0.05, steps=300, bias_rate=0.0)
    path, revived = demos.learn_wta_bias(points, demos.DEAD_UNIT_INIT, lr=0.05, steps=300, bias_rate=0.05)
    assert dead.min() < 0.02 * dead.sum()  # one unit (almost) never wins
    assert revived.min() > 0.25 * revived.sum()  # each wins about a third
    assert demos.nearest_distances(centres, path[-1]).max() < 0.15  # and every centre is found


def test_temperature_sweep_splits_cold_and_collapses_hot() -> None:
    points, _ = demos.clusters(600, seed=0)
    spread, error = demos.temperature_sweep(points, torch.tensor([0.1, 30.0]))
    assert spread[0] > 1.8 and error[0] < 0.1  # on the centres, 2 from the mean
    assert spread[1] < 0.1 and error[1] > 1.8  # all on the mean


def test_image_patches_are_the_pixels_they_claim() -> None:
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    patches = demos.image_patches(images, 3, 50, seed=1)
    assert patches.shape == (50, 27)
    windows = torch.nn.functional.unfold(images, 3).transpose(1, 2).reshape(-1, 27)
    assert all((windows == patch).all(1).any() for patch in patches)
    with pytest.raises(ValueError, match="size"):
        demos.image_patches(images, 7, 5)


def test_load_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 80, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (90, 30), dtype=np.uint8)).save(tmp_path / "sub" / "tall_grey.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    images = demos.load_image_folder(tmp_path, size=16)
    assert images.shape == (2, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    with pytest.raises(FileNotFoundError, match="no images"):
        demos.load_image_folder(tmp_path / "sub" / "missing", size=16)


def test_whitened_patches_are_decorrelated() -> None:
    images = torch.nn.functional.avg_pool2d(torch.randn(40, 3, 20, 20), 3, 1, 1)  # correlated neighbours
    patches = demos.whitened_patches(images, size=4, count=5000, eps=1e-3)
    covariance = torch.cov(patches.T)
    off_diagonal = covariance - torch.diag(torch.diag(covariance))
    assert off_diagonal.abs().max() < 0.1 * torch.diag(covariance).mean()


def test_lagani_pictures_average_the_top_patches() -> None:
    net = lagani.LaganiNet(width=0.05).eval()
    images = torch.randn(30, 3, 32, 32)
    for layer, (size, _) in demos.LAGANI_FIELDS.items():
        pictures = demos.lagani_pictures(net, images, layer, units=3, n_top=5)
        assert pictures.shape == (3, 3, size, size) and torch.isfinite(pictures).all()
    # layer 5 sees whole images: with n_top=1 its picture is one of the images
    top = demos.lagani_pictures(net, images, 5, units=1, n_top=1)[0]
    assert any(torch.equal(top, image) for image in images)
