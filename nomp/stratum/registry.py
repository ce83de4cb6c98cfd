"""ConnectionRegistry: one pool's open miner connections."""

from __future__ import annotations

from collections.abc import Iterator

from nomp.stratum.connection import Connection


class ConnectionRegistry:
    """The open connections of a pool, all its ports together, and which of
    them mine.

    The miners are kept as they are given an extranonce1 and lose it (the
    pool's Subscriptions say so), so a new job's sends start without a look
    at every open connection first.
    """

    def __init__(self) -> None:
        self._open: set[Connection] = set()
        self._mining: dict[Connection, None] = {}  # in the order they subscribed

    def add(self, connection: Connection) -> None:
        self._open.add(connection)

    def discard(self, connection: Connection) -> None:
        self._open.discard(connection)
        self._mining.pop(connection, None)

    def mining(self, connection: Connection) -> None:
        """``connection`` has an extranonce1: it is sent every new job."""
        if connection in self._open:
            self._mining[connection] = None

    def not_mining(self, connection: Connection) -> None:
        """``connection`` has no extranonce1 any more."""
        self._mining.pop(connection, None)

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Connection]:
        return iter(self._open)

    def __contains__(self, connection: object) -> bool:
        return connection in self._open

    def snapshot(self) -> list[Connection]:
        """The connections now, as a list that later closes do not change."""
        return list(self._open)

    def subscribed(self) -> list[Connection]:
        """The connections that mine: open, and given an extranonce1 they still have."""
        return list(self._mining)

    def from_ip(self, ip: str) -> list[Connection]:
        return [c for c in self._open if c.ip == ip]
