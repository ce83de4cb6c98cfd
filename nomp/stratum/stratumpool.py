"""StratumPool: one pool's Stratum side, assembled from its parts.

Only wiring, and the calls that span several parts (a new job, the sweep
for quiet miners, the drain and shutdown). The parts: the
ConnectionRegistry, the BanEnforcer, the Broadcaster, Subscriptions
(extranonce1s), the SharePipeline with the Bitcoin family's rules,
StratumMethods (the connections' handler) and OperatorMessages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from nomp.chain.jobs import Job
from nomp.config import PoolConfig, PortConfig
from nomp.hashing import ShareHash
from nomp.store.bans import BanStore
from nomp.stratum import difficulty
from nomp.stratum.broadcast import Broadcaster
from nomp.stratum.connection import PortSettings
from nomp.stratum.defence import ban_policy
from nomp.stratum.enforcement import BanEnforcer
from nomp.stratum.messages import OperatorMessages
from nomp.stratum.methods import JobSource, StratumMethods, current_job
from nomp.stratum.pipeline import BlockSink, ShareChecker, SharePipeline, ShareRecords
from nomp.stratum.protocol import StratumFactory
from nomp.stratum.registry import ConnectionRegistry
from nomp.stratum.sharerules import BitcoinShareRules
from nomp.stratum.shares import ShareLedger, Submission
from nomp.stratum.subscriptions import Subscriptions
from nomp.stratum.targets import MinerTarget


class StratumPool:
    """One pool's miners: their connections, requests, jobs and shares."""

    def __init__(
        self,
        config: PoolConfig,
        jobs: JobSource,
        blocks: BlockSink,
        hashing: ShareChecker,
        recorder: ShareRecords,
        clock: IReactorTime,
        ban_store: BanStore | None = None,
        instance: int | None = 0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``instance``: the byte every extranonce1 starts with (0 for a lone
        process); None until ``set_instance`` gives one, and subscribes wait
        for it."""
        self.config = config
        self.clock = clock
        self._jobs = jobs
        self.connections = ConnectionRegistry()
        self.bans = BanEnforcer(config.name, config.banning, self.connections, clock, ban_store)
        self.broadcaster = Broadcaster(config.name, self.connections, clock)
        self.subscriptions = Subscriptions(
            config.name, self.connections, self.broadcaster, partial(current_job, jobs), instance
        )
        self.ledger = ShareLedger()
        self.pipeline: SharePipeline[Submission, ShareHash] = SharePipeline(
            config.name, BitcoinShareRules(), hashing, recorder, blocks, self.bans, clock, wall_clock
        )
        self.methods = StratumMethods(
            config,
            jobs,
            self.connections,
            self.broadcaster,
            self.subscriptions,
            self.pipeline,
            self.bans,
            self.ledger,
            clock,
        )
        self.messages = OperatorMessages(config.name, self.connections)
        self.quiet = difficulty.QuietSweep(self.connections)

    def factory(self, port: PortConfig) -> StratumFactory:
        """The factory of one of the pool's ports."""
        return StratumFactory(
            self.methods,
            self.port_settings(port),
            self.bans.admit,
            self.clock,
            self.config.connection_timeout,
        )

    def port_settings(self, port: PortConfig) -> PortSettings:
        """What each connection of ``port`` is given (a solo scheme makes every port solo)."""
        return PortSettings.for_port(port, self.config.payments.scheme)

    def apply(self, config: PoolConfig) -> None:
        """A reloaded configuration: its bans and limits from now on (the
        StratumService retunes the ports)."""
        # The connections its own ports admitted: a switching port's (nomp.switching)
        # are its switch's to count.
        own = {port.listen for port in (*self.config.ports, *config.ports)}
        self.config = config
        admitted = [c.ip for c in self.connections if c.ip is not None and c.settings.port.listen in own]
        self.bans.gatekeeper.apply_policy(ban_policy(config.banning), admitted)

    def new_job(self, job: Job) -> None:
        """Send a new job to every subscribed miner, then forget dead jobs."""
        registry = self._jobs.registry
        live = registry.live_ids() if registry is not None else [job.job_id]
        self.broadcaster.new_job(job, live)
        self.ledger.keep_only(live)

    def set_instance(self, instance: int | None) -> None:
        """See Subscriptions.set_instance (an InstanceLeaseService listener)."""
        self.subscriptions.set_instance(instance)

    def retarget_quiet(self) -> None:
        """Lower the difficulty of miners whose shares stopped coming."""
        self.quiet.all(self.clock.seconds())

    def retarget_quiet_step(self) -> None:
        """``retarget_quiet`` for a slice of the miners (the service's timer)."""
        self.quiet.step(self.clock.seconds())

    def ask_to_reconnect(self) -> int:
        """``client.reconnect`` without an address to every miner: come back to
        where you are (a drain before a stop; see StratumService.drain); how many."""
        return self.messages.send_reconnect(MinerTarget())

    def close_all(self) -> None:
        """Close every miner connection (at shutdown)."""
        for connection in self.connections.snapshot():
            connection.close()

    def idle(self) -> defer.Deferred[None]:
        """Fires once no share is being hashed."""
        return self.pipeline.idle()
