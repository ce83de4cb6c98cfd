"""StratumService: a pool's listening ports and the timers of its miners."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString

from nomp.config import BanningConfig, PortConfig
from nomp.services import OrderedMultiService
from nomp.stratum.enforcement import BanEnforcer
from nomp.stratum.proxyproto import ProxyProtocolFactory

QUIET_CHECK_INTERVAL = 5.0  # seconds between looks for miners gone quiet


class _PoolConfig(Protocol):
    @property
    def banning(self) -> BanningConfig: ...


class MinerSide(Protocol):
    """One pool's miner side, as its ports need it (StratumPool, EthStratumPool)."""

    @property
    def config(self) -> _PoolConfig: ...

    @property
    def bans(self) -> BanEnforcer: ...

    def factory(self, port: PortConfig) -> Any: ...

    def retarget_quiet(self) -> None: ...

    def close_all(self) -> None: ...

    def idle(self) -> defer.Deferred[None]: ...


class StratumService(OrderedMultiService):
    """Listens on a pool's ports; at stop, closes connections and waits for
    the shares still being checked, so the recorder gets all of them."""

    def __init__(self, server: MinerSide, ports: tuple[PortConfig, ...], reactor: Any) -> None:
        super().__init__()
        self.setName("stratum")
        self.server = server
        banning = server.config.banning
        shared_bans = server.bans.shared
        if shared_bans is not None:
            # Added before the ports: bans are read at start (and a banned
            # miner that got in before the read is closed by it).
            sync = TimerService(
                banning.sync_interval, lambda: defer.Deferred.fromCoroutine(shared_bans.sync())
            )
            sync.clock = reactor
            sync.setServiceParent(self)
        purge = TimerService(banning.purge_interval, lambda: server.bans.gatekeeper.purge(reactor.seconds()))
        purge.clock = reactor
        purge.setServiceParent(self)
        for port in ports:
            factory: Any = server.factory(port)
            if port.proxy_protocol:
                factory = ProxyProtocolFactory(factory, list(port.proxy_protocol), reactor)
            listening = StreamServerEndpointService(serverFromString(reactor, port.listen), factory)
            # A port that cannot be bound stops start-up instead of being logged and skipped.
            listening._raiseSynchronously = True
            listening.setServiceParent(self)
        sweep = TimerService(QUIET_CHECK_INTERVAL, server.retarget_quiet)
        sweep.clock = reactor
        sweep.setServiceParent(self)

    def stopService(self) -> defer.Deferred[None]:
        stopping: defer.Deferred[None] = super().stopService()  # no new connections
        stopping.addCallback(lambda _: self.server.close_all())
        stopping.addCallback(lambda _: self.server.idle())
        shared_bans = self.server.bans.shared
        if shared_bans is not None:
            stopping.addCallback(lambda _: defer.Deferred.fromCoroutine(shared_bans.flush()))
        return stopping
