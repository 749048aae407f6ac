"""nbval: the notebooks that train on CIFAR-10 skip, with the reason and the setting that fixes it, where no
copy can be had (no ``HEBBKIT_DATA`` npz, no torchvision download); the others still run. The same rule as
``hebbkit workbook``'s."""

import functools

import pytest

from hebbkit.data import FIX, unavailable_reason
from hebbkit.workbook import needs_data

_reason = functools.cache(unavailable_reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb" and needs_data(item.path) and _reason():
            item.add_marker(pytest.mark.skip(reason=f"{_reason()}; to run it, {FIX}"))
