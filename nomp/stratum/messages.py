"""The operator's messages to miners: ``client.reconnect`` and ``client.show_message``."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from nomp.stratum.connection import Connection
from nomp.stratum.protocol import encode_notification
from nomp.stratum.registry import ConnectionRegistry
from nomp.stratum.targets import MinerTarget, select


class OperatorMessages:
    """Sends one pool's miners what the operator asks (the control port)."""

    log = Logger()

    def __init__(self, pool_name: str, connections: ConnectionRegistry) -> None:
        self._pool_name = pool_name
        self._connections = connections

    def miners(self, target: MinerTarget) -> list[Connection]:
        """The open connections ``target`` picks."""
        return select(target, self._connections)

    def send_reconnect(
        self, target: MinerTarget, host: str | None = None, port: int | None = None, wait: int | None = None
    ) -> int:
        """``client.reconnect`` to the miners ``target`` picks; how many.

        Without host and port a miner reconnects to where it is. The
        connections stay open: a miner that ignores the request mines on.
        """
        params: list[Any] = []
        if host is not None and port is not None:
            # The port as a string: cgminer and its descendants read only a string there.
            params = [host, str(port)] if wait is None else [host, str(port), wait]
        return self._notify(target, "client.reconnect", params)

    def show_message(self, target: MinerTarget, text: str) -> int:
        """``client.show_message`` to the miners ``target`` picks; how many."""
        return self._notify(target, "client.show_message", [text])

    def _notify(self, target: MinerTarget, method: str, params: list[Any]) -> int:
        line = encode_notification(method, params)
        chosen = self.miners(target)
        for connection in chosen:
            connection.send_line(line)
        self.log.info(
            "pool {pool}: {method} {params} sent to {miners} miners ({target})",
            pool=self._pool_name,
            method=method,
            params=params,
            miners=len(chosen),
            target=target.describe(),
        )
        return len(chosen)
