"""Argument checks that name the parameter and what it accepts; the standard library only, so that the
registries the command line reads stay light."""

from __future__ import annotations

from typing import Collection, Mapping, TypeVar

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


PRECISION_NAMES = ("float32", "bfloat16")  # backprop's compute precision (loops.PRECISIONS maps them to dtypes)
