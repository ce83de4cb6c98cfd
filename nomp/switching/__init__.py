"""Coin-switching ports: one port per algorithm whose miners mine for one of
several pools at a time, and move between them without reconnecting.

`Switches` is what the service named "switching" offers the parts that
decide when to move (the control port, a profit-switching service);
`SwitchRefused` is how it says no to a bad request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twisted.internet import defer

__all__ = ["SwitchRefused", "Switches"]


class SwitchRefused(Exception):
    """A switch request that cannot be done: an unknown switch, a pool that
    is not one of the switch's, or the pool it is already on.

    ``message`` is the one-line answer for the operator."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Switches(Protocol):
    """Every configured switch, its pools, and the move between them."""

    def switch_names(self) -> Sequence[str]:
        """Every configured switch's name."""
        ...

    def algorithm(self, switch: str) -> str:
        """The switch's algorithm (``KeyError`` for an unknown switch)."""
        ...

    def pools(self, switch: str) -> Sequence[str]:
        """The pool names of the switch, its default first."""
        ...

    def current(self, switch: str) -> str:
        """The pool the switch's miners mine for now."""
        ...

    def switch(self, switch: str, pool: str, reason: str) -> defer.Deferred[str]:
        """Move every miner of ``switch`` to ``pool``.

        Fires with a one-line answer once the miners have the new pool's
        job and the new pool is recorded; errbacks with `SwitchRefused`
        for a bad request. ``reason`` goes to the log ("operator",
        "profit: ...")."""
        ...
