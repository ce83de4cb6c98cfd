"""WebService: the stats collector and the HTTP endpoint serving the API.

Its pools are the ones the process runs (``pools``, read again when a
reload says they changed), so that a pool a reload adds or removes is on the
site and the API, or off them, without a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime

from nomp.config import EthPoolConfig, WebConfig
from nomp.daemon import DaemonGroup
from nomp.services import OrderedMultiService
from nomp.store.client import RedisClient
from nomp.web.app import WebApp, WebSite
from nomp.web.collector import RunningPools, StatsCollector
from nomp.web.live import LiveStream
from nomp.web.oepapi import OepApi, OepApiResource
from nomp.web.pages import Pages
from nomp.web.profitapi import ProfitView


class WebService(OrderedMultiService):
    """Owns the collector and the listening port: the port closes first on stop."""

    def __init__(
        self,
        config: WebConfig,
        pools: RunningPools,
        redis: Callable[[], RedisClient | None],
        reactor: Any,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        daemons: Callable[[str], DaemonGroup | None] = lambda name: None,
        clock: IReactorTime | None = None,
        profit: ProfitView | None = None,
        switching: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        """``pools``: the pools the process runs, both families (see ``pools_changed``).
        ``clock`` times the collections and dates their stats; the reactor's by default.
        ``profit``: profit switching's state, when it runs; ``switching``: the
        switches' states (SwitchingService.documents), when there are switches."""
        super().__init__()
        self.setName("web")
        self._pools = pools
        self._redis = redis
        self._reactor = reactor
        self._keep = config.stats_interval
        self.collector = StatsCollector(
            pools,
            redis,
            reactor if clock is None else clock,
            interval=config.stats_interval,
            retention=config.history_retention,
            daemons=daemons,
        )
        self.collector.setServiceParent(self)
        pages = Pages(
            lambda: self.collector.snapshot, profit=profit is not None, switching=switching is not None
        ).resource()
        self.live = LiveStream(config.max_live_clients)
        self.collector.add_listener(self.live.publish)
        # Each Ethereum-family pool's OEP API by name, kept in step with the pools (_follow_oep).
        self._oep: dict[str, OepApi] = {}
        self._follow_oep()
        site = WebSite(
            WebApp(
                lambda: self.collector.snapshot,
                metrics,
                pages,
                self.live,
                OepApiResource(self._oep),
                profit,
                switching,
            )
        )
        self.endpoint = StreamServerEndpointService(serverFromString(reactor, config.listen), site)
        self.endpoint._raiseSynchronously = True  # a port already taken stops the start
        self.endpoint.setServiceParent(self)

    def pools_changed(self) -> None:
        """The running pools changed (a reload added, removed or changed some): the
        site, the API and the collected stats follow them now."""
        self._follow_oep()
        self.collector.pools_changed()

    def _follow_oep(self) -> None:
        eth = {pool.name: pool for pool in self._pools() if isinstance(pool, EthPoolConfig)}
        for gone in self._oep.keys() - eth.keys():
            del self._oep[gone]
        for name, pool in eth.items():
            api = self._oep.get(name)
            if api is None:
                self._oep[name] = OepApi(pool, self._redis, self._reactor, keep=self._keep)
            else:
                api.config = pool  # its coin, and so its keys, changes only at a restart

    def stopService(self) -> defer.Deferred[None]:
        self.live.close()  # open event streams would hold their connections past the stop
        return super().stopService()
