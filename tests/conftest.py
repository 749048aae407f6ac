"""Shared fixtures. Tests that need the real CIFAR-10 npz skip when ../shared/data is absent."""

from pathlib import Path

import pytest

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10.npz"


@pytest.fixture
def cifar_npz() -> Path:
    """Path of the offline CIFAR-10 npz beside the checkout; skips the test where it is absent."""
    if not SHARED_CIFAR.is_file():
        pytest.skip(f"real CIFAR-10 not available at {SHARED_CIFAR}")
    return SHARED_CIFAR
