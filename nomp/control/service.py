"""ControlService: ``help``, ``pools``, ``blocknotify <pool> [<blockhash>]``.

One command per line, one reply line per command ("ok ..." or "error ..."),
so it works from telnet as well as from ``nomp-cli``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from nomp.pool.service import PoolService

_BLOCK_HASH = re.compile(r"[0-9a-fA-F]{64}")
HELP = "commands: help | pools | blocknotify <pool> [<blockhash>] | quit"


class ControlProtocol(LineOnlyReceiver):
    """One admin connection."""

    log = Logger()
    delimiter = b"\n"
    MAX_LENGTH = 4096

    def __init__(self, pools: Mapping[str, PoolService]) -> None:
        self._pools = pools
        self._commands: dict[str, Callable[[list[str]], str]] = {
            "help": lambda _: f"ok {HELP}",
            "pools": self._list_pools,
            "blocknotify": self._blocknotify,
        }

    def lineReceived(self, line: bytes) -> None:
        try:
            words = line.decode("utf-8").split()
        except UnicodeDecodeError:
            self._answer("error not UTF-8 text")
            return
        if not words:
            return
        command, args = words[0].lower(), words[1:]
        if command in ("quit", "exit"):
            self._answer("ok bye")
            assert self.transport is not None
            self.transport.loseConnection()
            return
        handler = self._commands.get(command)
        if handler is None:
            self._answer(f"error unknown command {command[:40]!r}; {HELP}")
            return
        try:
            self._answer(handler(args))
        except Exception:
            self.log.failure("control command {command} failed", command=command)
            self._answer("error internal error")

    def lineLengthExceeded(self, line: bytes) -> None:
        self._answer("error line too long")
        assert self.transport is not None
        self.transport.loseConnection()

    def _answer(self, text: str) -> None:
        self.sendLine(text.encode("utf-8"))

    def _find_pool(self, name: str) -> PoolService | None:
        wanted = name.lower()
        for pool in self._pools.values():
            if wanted in (pool.config.name.lower(), pool.config.coin.name.lower()):
                return pool
        return None

    def _list_pools(self, args: list[str]) -> str:
        listed = [
            f"{p.config.name} ({p.config.coin.name}, {'ready' if p.ready else 'starting'})"
            for p in self._pools.values()
        ]
        return "ok " + ("; ".join(listed) or "no pools")

    def _blocknotify(self, args: list[str]) -> str:
        if not 1 <= len(args) <= 2:
            return "error usage: blocknotify <pool> [<blockhash>]"
        pool = self._find_pool(args[0])
        if pool is None:
            return f"error no pool {args[0][:64]!r}"
        block_hash = args[1] if len(args) == 2 else None
        if block_hash is not None and not _BLOCK_HASH.fullmatch(block_hash):
            return "error a block hash is 64 hex digits"
        pool.block_notify(block_hash)
        return f"ok {pool.config.name} notified"


class ControlFactory(Factory):
    noisy = False

    def __init__(self, pools: Mapping[str, PoolService]) -> None:
        self.pools = pools

    def buildProtocol(self, addr: IAddress | None) -> ControlProtocol:
        return ControlProtocol(self.pools)


def control_service(
    listen: str, pools: Mapping[str, PoolService], reactor: Any
) -> StreamServerEndpointService:
    """The control port as a service of the tree."""
    service = StreamServerEndpointService(serverFromString(reactor, listen), ControlFactory(pools))
    service._raiseSynchronously = True
    service.setName("control")
    return service
