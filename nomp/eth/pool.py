"""EthStratumPool: one Ethereum-family pool's miner side, assembled from its parts.

Only wiring, and the calls that span several parts (new work, the sweep
for quiet miners, shutdown). The parts: the ConnectionRegistry, the
BanEnforcer, the SharePipeline with the Ethereum family's rules, the
stratum port's methods (eth-proxy and NiceHash), the getwork endpoints and
the broadcaster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from nomp.config import EthPoolConfig, PortConfig
from nomp.eth.getwork import GetworkResource, GetworkSite
from nomp.eth.hasher import EpochHashers
from nomp.eth.rules import EthShareRules
from nomp.eth.shares import EthShare, NonceLedger
from nomp.eth.stratum import EthBroadcaster, EthStratumFactory, EthStratumMethods, Extranonces, WorkSource
from nomp.eth.work import EthWork
from nomp.hashing.ethash import EthashResult
from nomp.store.bans import BanStore
from nomp.stratum import difficulty
from nomp.stratum.connection import PortSettings
from nomp.stratum.defence import ban_policy
from nomp.stratum.enforcement import BanEnforcer
from nomp.stratum.pipeline import BlockSink, ShareChecker, SharePipeline, ShareRecords
from nomp.stratum.registry import ConnectionRegistry


class EthStratumPool:
    """One Ethereum-family pool's miners: connections, requests, work and shares."""

    def __init__(
        self,
        config: EthPoolConfig,
        source: WorkSource,
        blocks: BlockSink,
        hashing: ShareChecker,
        hashers: EpochHashers,
        recorder: ShareRecords,
        clock: IReactorTime,
        ban_store: BanStore | None = None,
        instance: int | None = 0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self._source = source
        self.connections = ConnectionRegistry()
        self.bans = BanEnforcer(config.name, config.banning, self.connections, clock, ban_store)
        self.ledger = NonceLedger()
        rules = EthShareRules(hashers, config.coin.rewards.block_reward)
        self.pipeline: SharePipeline[EthShare, EthashResult] = SharePipeline(
            config.name, rules, hashing, recorder, blocks, self.bans, clock, wall_clock
        )
        self.extranonces = Extranonces(instance or 0)
        self.methods = EthStratumMethods(
            config, source, self.connections, self.pipeline, self.bans, self.ledger, self.extranonces, clock
        )
        self.broadcaster = EthBroadcaster(config.name, self.connections, clock)
        self.getwork: list[GetworkResource] = []
        self.getwork_sites: list[GetworkSite] = []
        self.quiet = difficulty.QuietSweep(self.connections)

    def factory(self, port: PortConfig) -> Any:
        """The factory of one of the pool's ports (a getwork port's is a web site)."""
        settings = self.port_settings(port)
        if port.protocol == "getwork":
            resource = GetworkResource(
                self.config, self._source, settings, self.pipeline, self.bans, self.ledger, self.clock
            )
            self.getwork.append(resource)
            # Its connections count against the same limits as the stratum ports'.
            site = GetworkSite(
                resource,
                port.max_body,
                self.config.connection_timeout,
                self.bans.admit,
                self.bans.gatekeeper.connection_closed,
                self.clock,
            )
            self.getwork_sites.append(site)
            return site
        return EthStratumFactory(
            self.methods, settings, self.bans.admit, self.clock, self.config.connection_timeout
        )

    def port_settings(self, port: PortConfig) -> PortSettings:
        """What each connection of ``port`` is given (a solo port's blocks are its finder's)."""
        return PortSettings.for_port(port, "prop")

    def apply(self, config: EthPoolConfig) -> None:
        """A reloaded configuration: its bans and limits from now on (the
        StratumService retunes the ports)."""
        self.config = config
        open_ips = [c.ip for c in self.connections if c.ip is not None]
        for site in self.getwork_sites:
            open_ips += site.open_ips()
        self.bans.gatekeeper.apply_policy(ban_policy(config.banning), open_ips)

    def new_work(self, work: EthWork) -> None:
        """Send new work to every miner that mines, then forget shares of dropped heights."""
        self.ledger.keep_only(self._source.book.live_heights())
        self.broadcaster.new_work(work)

    def set_instance(self, instance: int | None) -> None:
        """The byte NiceHash extranonces start with (an InstanceLeaseService listener)."""
        if instance is not None:
            self.extranonces.instance = instance

    def retarget_quiet(self) -> None:
        """Lower the difficulty of miners whose shares stopped coming; forget
        getwork miners gone for good."""
        now = self.clock.seconds()
        self.quiet.all(now)
        for resource in self.getwork:
            resource.forget_idle(now)

    def retarget_quiet_step(self) -> None:
        """``retarget_quiet`` for a slice of the miners (the service's timer); the
        getwork miners gone for good are forgotten once a round."""
        now = self.clock.seconds()
        if self.quiet.step(now):
            for resource in self.getwork:
                resource.forget_idle(now)

    def close_all(self) -> None:
        for connection in self.connections.snapshot():
            connection.close()

    def idle(self) -> defer.Deferred[None]:
        return self.pipeline.idle()
