"""Small shared plumbing: devices, seeding, atomic files."""

from __future__ import annotations

import json
import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Collection, Iterator, Mapping, TypeVar

import numpy as np
import torch


T = TypeVar("T")


def check_choice(parameter: str, value: T, choices: Collection[T]) -> T:
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError`` naming ``parameter`` and them."""
    if value not in choices:
        raise ValueError(f"{parameter} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_positive(parameter: str, value: float, integer: bool = False) -> float:
    """Return ``value`` if it is a number > 0 (an integer >= 1 with ``integer``), else raise ``ValueError``."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        raise ValueError(f"{parameter} must be {'an integer >= 1' if integer else 'a number > 0'}, got {value!r}")
    return value


def lookup(parameter: str, name: str | T, table: Mapping[str, T]) -> T:
    """``table[name]``; a non-string ``name`` (an entry itself) passes through; an unknown name raises a
    ``ValueError`` that names ``parameter`` and the accepted choices."""
    if not isinstance(name, str):
        return name
    return table[check_choice(parameter, name, table)]


DEVICE_VARIABLE = "HEBBKIT_DEVICE"  # e.g. "cpu" to keep a GPU machine's runs on the CPU


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"``/``None`` → ``$HEBBKIT_DEVICE`` when set, else CUDA when available, else CPU; anything else is
    passed to ``torch.device``."""
    parameter = "device"
    if device in (None, "auto"):
        if not os.environ.get(DEVICE_VARIABLE):
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        parameter, device = DEVICE_VARIABLE, os.environ[DEVICE_VARIABLE]
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"{parameter} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{parameter}={device!r} asks for CUDA, which is not available here; use 'cpu' or 'auto'")
    return resolved


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    with atomic_path(path) as temp:
        temp.write_text(text)


def read_records(path: str | Path) -> list[dict]:
    """The JSON records of a JSON-lines file (empty if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_record(path: str | Path, record: dict) -> None:
    """Append one JSON record to a JSON-lines file atomically (rewrite to a temp file, then rename)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    write_text_atomic(path, old + json.dumps(record, sort_keys=True) + "\n")
