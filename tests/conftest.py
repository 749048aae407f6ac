"""Shared fixtures. Tests that need the real CIFAR-10 npz read ``$HEBBKIT_DATA`` (else the copy beside a
developer's checkout, ../shared/data/cifar10.npz) and skip, saying how to provide one, where neither exists.

The suite runs on the CPU even where a GPU is present (``device="auto"`` follows ``HEBBKIT_DEVICE``), so that
its exact-equality and determinism checks hold everywhere; tests/test_device.py runs the CUDA path explicitly.
"""

import os
from pathlib import Path

import pytest

from hebbkit.data import ENV_VAR
from hebbkit.utils import DEVICE_VARIABLE

os.environ.setdefault(DEVICE_VARIABLE, "cpu")

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10.npz"


@pytest.fixture
def cifar_npz() -> Path:
    """Path of the real CIFAR-10 npz: ``$HEBBKIT_DATA``, else the shared copy; skips the test where neither is."""
    path = Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else SHARED_CIFAR
    path = path / "cifar10.npz" if path.is_dir() else path
    if not path.is_file():
        pytest.skip(f"no real CIFAR-10 npz at {path}: set {ENV_VAR}=PATH to run this test")
    return path


@pytest.fixture
def one_thread():
    """Torch on one CPU thread for the test, so that training numbers do not depend on the core count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
