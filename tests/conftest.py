"""Shared fixtures. Tests that need the real CIFAR-10 npz skip when ../shared/data is absent.

The suite runs on the CPU even where a GPU is present (``device="auto"`` follows ``HEBBKIT_DEVICE``), so that
its exact-equality and determinism checks hold everywhere; tests/test_device.py runs the CUDA path explicitly.
"""

import os
from pathlib import Path

import pytest

from hebbkit.utils import DEVICE_VARIABLE

os.environ.setdefault(DEVICE_VARIABLE, "cpu")

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10.npz"


@pytest.fixture
def cifar_npz() -> Path:
    """Path of the offline CIFAR-10 npz beside the checkout; skips the test where it is absent."""
    if not SHARED_CIFAR.is_file():
        pytest.skip(f"real CIFAR-10 not available at {SHARED_CIFAR}")
    return SHARED_CIFAR
