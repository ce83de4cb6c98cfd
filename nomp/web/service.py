"""WebService: the stats collector and the HTTP endpoint serving the API."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime

from nomp.config import EthPoolConfig, PoolConfig, WebConfig
from nomp.daemon import DaemonGroup
from nomp.services import OrderedMultiService
from nomp.store.client import RedisClient
from nomp.web.app import WebApp, WebSite
from nomp.web.collector import StatsCollector
from nomp.web.live import LiveStream
from nomp.web.oepapi import OepApi, OepApiResource
from nomp.web.pages import Pages
from nomp.web.profitapi import ProfitView


class WebService(OrderedMultiService):
    """Owns the collector and the listening port: the port closes first on stop."""

    def __init__(
        self,
        config: WebConfig,
        pools: Sequence[PoolConfig],
        redis: Callable[[], RedisClient | None],
        reactor: Any,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        daemons: Callable[[str], DaemonGroup | None] = lambda name: None,
        eth_pools: Sequence[EthPoolConfig] = (),
        clock: IReactorTime | None = None,
        profit: ProfitView | None = None,
        switching: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        """``clock`` times the collections and dates their stats; the reactor's by default.
        ``profit``: profit switching's state, when it runs; ``switching``: the
        switches' states (SwitchingService.documents), when there are switches."""
        super().__init__()
        self.setName("web")
        self.collector = StatsCollector(
            pools,
            redis,
            reactor if clock is None else clock,
            interval=config.stats_interval,
            retention=config.history_retention,
            daemons=daemons,
            eth_pools=eth_pools,
        )
        self.collector.setServiceParent(self)
        pages = Pages(
            lambda: self.collector.snapshot, profit=profit is not None, switching=switching is not None
        ).resource()
        self.live = LiveStream(config.max_live_clients)
        self.collector.add_listener(self.live.publish)
        oep = (
            OepApiResource({p.name: OepApi(p, redis, reactor, keep=config.stats_interval) for p in eth_pools})
            if eth_pools
            else None
        )
        site = WebSite(
            WebApp(lambda: self.collector.snapshot, metrics, pages, self.live, oep, profit, switching)
        )
        self.endpoint = StreamServerEndpointService(serverFromString(reactor, config.listen), site)
        self.endpoint._raiseSynchronously = True  # a port already taken stops the start
        self.endpoint.setServiceParent(self)

    def stopService(self) -> defer.Deferred[None]:
        self.live.close()  # open event streams would hold their connections past the stop
        return super().stopService()
