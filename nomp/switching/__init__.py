"""Coin-switching ports: one port per algorithm whose miners mine for one of
several pools at a time, and move between them without reconnecting.

`Switches` is what the service named "switching" offers the parts that
decide when to move (the control port, a profit-switching service): the
SwitchingService of the process that serves the miners, or the
RelayedSwitches of a main process whose workers serve them;
`SwitchRefused` is how it says no to a bad request. `ShowsStatus` is how
profit switching has its lines in the control port's ``status`` beside
the switches'.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol, runtime_checkable

from twisted.internet import defer

__all__ = ["ShowsStatus", "SwitchRefused", "Switches", "already_on", "request_refusal"]


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


@runtime_checkable
class ShowsStatus(Protocol):
    """Switches whose ``status`` lines can carry another part's after their
    own (SwitchesService): profit switching, built on the switches, shows
    its lines through them."""

    def add_status(self, lines: Callable[[], Sequence[str]]) -> None:
        """Have each ``status`` end with ``lines()``."""
        ...


def request_refusal(
    switches: Mapping[str, Sequence[str]], known_pools: Collection[str], switch: str, pool: str
) -> str | None:
    """Why ``coinswitch <switch> <pool>`` names what is not there, or None.

    ``switches``: each switch's pools by its name; ``known_pools``: every
    pool of the process (for a clear answer)."""
    pools = switches.get(switch)
    if pools is None:
        known = ", ".join(switches) or "none configured"
        return f"no switch {switch[:64]!r} (switches: {known})"
    if pool not in pools:
        if pool not in known_pools:
            return f"no pool {pool[:64]!r}"
        return f"pool {pool} is not one of switch {switch}'s ({', '.join(pools)})"
    return None


def already_on(switch: str, pool: str) -> str:
    """The refusal of a move to the pool the switch is on (the main process
    of worker processes knows it from each worker's answer)."""
    return f"switch {switch} is on {pool} already"
