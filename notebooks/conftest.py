"""nbval: the notebooks that train on CIFAR-10 skip, with the reason, where no copy can be had
(no ``HEBBKIT_DATA`` npz, no torchvision download); the others still run."""

import functools

import pytest

from hebbkit.data import DataUnavailableError, load_cifar10


@functools.cache
def _cifar_unavailable() -> str | None:
    try:
        load_cifar10()
    except (DataUnavailableError, FileNotFoundError) as error:
        return str(error)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb" and "load_cifar10(" in item.path.read_text():
            reason = _cifar_unavailable()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
