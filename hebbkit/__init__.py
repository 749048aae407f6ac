"""hebbkit: Hebbian learning for deep networks — rules, plastic layers, reproducible experiments.

Submodules and the main classes load on first use (``hebbkit.data``, ``hebbkit.HPCA``, ...), so that
``import hebbkit`` and ``hebbkit --help`` do not pay for torch until something needs it.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

__version__ = "0.1.0"

SUBMODULES = tuple(sorted(module.name for module in pkgutil.iter_modules(__path__) if not module.name.startswith("_")))
_CLASSES = {
    "HebbianConv2d": "layers", "HebbianLinear": "layers",
    "Hebb": "rules", "Oja": "rules", "Competitive": "rules", "HPCA": "rules", "make_rule": "rules",
}
__all__ = [*SUBMODULES, *_CLASSES]


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _CLASSES:
        return getattr(importlib.import_module(f".{_CLASSES[name]}", __name__), name)
    raise AttributeError(f"module 'hebbkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
