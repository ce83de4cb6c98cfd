"""ConnectionRegistry: one pool's open miner connections."""

from __future__ import annotations

from collections.abc import Iterator

from nomp.stratum.connection import Connection


class ConnectionRegistry:
    """The open connections of a pool, all its ports together."""

    def __init__(self) -> None:
        self._open: set[Connection] = set()

    def add(self, connection: Connection) -> None:
        self._open.add(connection)

    def discard(self, connection: Connection) -> None:
        self._open.discard(connection)

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
        """The connections that mine: they have an extranonce1."""
        return [c for c in self._open if c.session.extranonce1 is not None]

    def from_ip(self, ip: str) -> list[Connection]:
        return [c for c in self._open if c.ip == ip]
