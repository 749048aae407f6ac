"""Small shared plumbing: devices, seeding, atomic files."""

from __future__ import annotations

import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .checks import check_positive



DEVICE_VARIABLE = "HEBBKIT_DEVICE"  # e.g. "cpu" to keep a GPU machine's runs on the CPU


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"``/``None`` → ``$HEBBKIT_DEVICE`` when set, else CUDA when available, else CPU; otherwise
    ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``, each only where this machine has it (else ``ValueError``)."""
    parameter = "device"
    if device in (None, "auto"):
        if not os.environ.get(DEVICE_VARIABLE):
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        parameter, device = DEVICE_VARIABLE, os.environ[DEVICE_VARIABLE]
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        resolved, cause = None, error
    else:
        cause = None
    if resolved is None or resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"{parameter} must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}"
        ) from cause
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{parameter}={device!r} asks for CUDA, which is not available here; use 'cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"{parameter}={device!r} asks for GPU {resolved.index}, but this machine has "
                             f"{torch.cuda.device_count()}; use 'cuda' or 'auto'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{parameter}={device!r} asks for MPS (Apple GPUs), which is not available here; "
                         f"use 'cpu' or 'auto'")
    return resolved


def expect_close(what: str, actual: object, expected: object, tolerance: float) -> None:
    """Check numbers from a training run against expected values, within ``± tolerance`` each, and print one
    line that does not depend on the exact values (so that nbval can compare it on any CPU).

    ``actual`` and ``expected``: numbers, flat mappings of numbers (``{"hpca": 27.7, ...}``), pandas Series or
    DataFrames with the same labels. Raises ``AssertionError`` naming every entry out of tolerance (or missing).
    """
    check_positive("tolerance", tolerance)
    got, want = _flat_numbers(actual), _flat_numbers(expected)
    if got.keys() != want.keys():
        measured = {key: round(value, 1) for key, value in got.items()}
        raise AssertionError(f"{what}: expected the entries {sorted(want)}, got these: {measured}")
    off = {key: (got[key], want[key]) for key in want if not abs(got[key] - want[key]) <= tolerance}
    if off:
        listed = "; ".join(f"{key}: {value:.4g} (expected {target:.4g})" for key, (value, target) in off.items())
        raise AssertionError(f"{what}: {len(off)} of {len(want)} values differ by more than {tolerance:g}: {listed}")
    count = "the value lies" if len(want) == 1 else f"all {len(want)} values lie"
    print(f"{what}: {count} within ±{tolerance:g} of the expected")


def _flat_numbers(values: object) -> dict[str, float]:
    """Numbers keyed by a readable label: ``{"": x}`` for one number, else one entry per cell."""
    if hasattr(values, "stack") and hasattr(values, "columns"):  # a DataFrame: one entry per cell
        values = values.stack()
    if hasattr(values, "items"):
        flat = {}
        for key, value in values.items():
            label = " / ".join(map(str, key)) if isinstance(key, tuple) else str(key)
            flat[label] = float(value)
        return flat
    return {"value": float(values)}


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


def check_output_dir(parameter: str, path: str | Path) -> Path:
    """Return ``path`` as a folder that exists and can be written (created with its parents if missing), else
    raise a ``ValueError`` naming ``parameter``: call it before any work, so that no result is lost to a bad path.
    Any ``OSError`` on the way (a name too long, no permission, a read-only disk) is that one-line ``ValueError``."""
    path = Path(path).expanduser()
    try:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{parameter} must be a folder, but {path} is a file")
        if existing is not None and not existing.is_dir():
            raise ValueError(f"{parameter}: cannot create the folder {path}, because {existing} is a file")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(f"{parameter}: the folder {path} cannot be written ({error.strerror or error})") from None
    return path


def to_markdown(table, index: bool = True) -> str:
    """A GitHub Markdown table of a DataFrame whose cells are already formatted (``index``: as the first column)."""
    header = ([""] if index else []) + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in zip(table.index, table.values):
        cells = ([str(label)] if index else []) + [str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
