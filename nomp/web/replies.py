"""Redis replies as text, for the stats readers. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def text(value: Any) -> str:
    """A Redis reply value as text (the client may hand back bytes or numbers it converted)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(flat: Sequence[Any] | None) -> dict[str, str]:
    """A flat Redis reply [k1, v1, k2, v2, ...] as a dict of text."""
    flat = flat or []
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def scored(flat: Sequence[Any] | None) -> list[tuple[str, str]]:
    """A flat WITHSCORES reply [member, score, ...] as (member, score) pairs of text, in its order."""
    flat = flat or []
    return [(text(flat[i]), text(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]
