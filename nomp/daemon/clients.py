"""Daemon clients from configuration: the one place HTTP connection pools
and DaemonRPCs are made, for the pools, the payment timer and the
``nomp-payments`` command alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory

from nomp.config import DaemonConfig
from nomp.daemon.group import DaemonGroup
from nomp.daemon.rpc import CallObserver, DaemonRPC, HTTPPoster


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    """Daemon connections come and go (one per call when not persistent):
    Twisted's "Starting factory" and "Stopping factory" lines for each are noise."""

    noisy = False


def daemon_rpc(
    http: HTTPPoster,
    daemon: DaemonConfig,
    clock: IReactorTime,
    observer: CallObserver | None = None,
    version: str = "1.0",
) -> DaemonRPC:
    """A DaemonRPC for one configured daemon, over ``http`` (``version``: of JSON-RPC)."""
    return DaemonRPC(
        http,
        daemon.url,
        daemon.user,
        daemon.password,
        clock,
        timeout=daemon.timeout,
        observer=observer,
        version=version,
    )


class DaemonClients:
    """An HTTP connection pool and the daemon clients made on it.

    ``persistent``: keep connections open between calls (a running pool);
    a one-shot command opens one per call and leaves nothing behind.
    ``observer`` is told of every call (metrics). With ``http`` given (a
    test's StubTreq) no pool is made and ``close`` has nothing to do.
    """

    def __init__(
        self,
        reactor: Any,
        persistent: bool = True,
        observer: CallObserver | None = None,
        http: HTTPPoster | None = None,
    ) -> None:
        self._reactor = reactor
        self._observer = observer
        self.pool: HTTPConnectionPool | None = None
        if http is None:
            self.pool = HTTPConnectionPool(reactor, persistent=persistent)
            self.pool._factory = _QuietHTTP11ClientFactory
            http = HTTPClient(Agent(reactor, pool=self.pool))
        self.http: HTTPPoster = http

    def rpc(self, daemon: DaemonConfig, version: str = "1.0") -> DaemonRPC:
        """A client of one daemon (a wallet: never failed over); ``version``:
        of JSON-RPC ("2.0" for the Ethereum family's nodes)."""
        return daemon_rpc(self.http, daemon, self._reactor, self._observer, version)

    def group(self, daemons: Sequence[DaemonConfig]) -> DaemonGroup:
        """The daemons of a pool, in their configured order."""
        return DaemonGroup([self.rpc(d) for d in daemons], self._reactor)

    async def close(self) -> None:
        """Close the connections the pool keeps open (at its owner's stop)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.closeCachedConnections()
