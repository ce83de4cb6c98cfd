"""PaymentService: a pool's payment runs on a timer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from nomp.config import DaemonConfig, PoolConfig
from nomp.daemon import DaemonRPC
from nomp.daemon.clients import DaemonClients, daemon_rpc
from nomp.daemon.rpc import CallObserver, HTTPPoster
from nomp.payments.audit import Audit, audit
from nomp.payments.ledger import PaymentLedger
from nomp.payments.processor import RPC, PaymentProcessor, RunReport
from nomp.store.client import RedisClient
from nomp.store.schema import PoolKeys


def wallet_daemon(pool: PoolConfig) -> DaemonConfig:
    """The one wallet a pool pays from: its payments daemon, else its first daemon.

    Never a group that fails over: a sendmany must not go to two wallets.
    """
    return pool.payments.daemon or pool.daemons[0]


def wallet_rpc(
    pool: PoolConfig, http: HTTPPoster, clock: Any, observer: CallObserver | None = None
) -> DaemonRPC:
    """A client of the pool's wallet over ``http``; ``observer`` is told of every call (metrics)."""
    return daemon_rpc(http, wallet_daemon(pool), clock, observer)


class PaymentService(Service):
    """Runs PaymentProcessor every ``payments.interval`` seconds while Redis is up."""

    log = Logger()

    def __init__(
        self,
        pool: PoolConfig,
        redis: Callable[[], RedisClient | None],
        chain: Callable[[], RPC | None],
        reactor: Any,
        http: HTTPPoster | None = None,
        rpc_observer: CallObserver | None = None,
    ) -> None:
        self.pool = pool
        self._rpc_observer = rpc_observer  # told of every wallet call (metrics)
        self._redis = redis
        self._chain = chain
        self._reactor = reactor
        self._http = http
        self._clients: DaemonClients | None = None
        self._wallet: DaemonRPC | None = None
        self._loop: task.LoopingCall | None = None
        self._running: defer.Deferred[RunReport | None] | None = None
        self._processor: PaymentProcessor | None = None  # kept: it remembers addresses checked

    def startService(self) -> None:
        super().startService()
        self._clients = DaemonClients(self._reactor, observer=self._rpc_observer, http=self._http)
        self._wallet = self._clients.rpc(wallet_daemon(self.pool))
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self._reactor
        self._loop.start(self.pool.payments.interval, now=False)

    def _tick(self) -> None:
        if self._running is None or self._running.called:
            self._running = defer.Deferred.fromCoroutine(self.run_once())

    async def run_once(self) -> RunReport | None:
        """One payment run now; None when Redis or the pool's daemons are not there yet."""
        redis, chain, wallet = self._redis(), self._chain(), self._wallet
        if redis is None or chain is None or wallet is None:
            self.log.info(
                "pool {pool}: payment run skipped: Redis or the daemon is not ready", pool=self.pool.name
            )
            return None
        if self._processor is None:
            ledger = PaymentLedger(redis, PoolKeys.for_coin(self.pool.coin.name))
            self._processor = PaymentProcessor(self.pool, ledger, chain, wallet)
        try:
            return await self._processor.run()
        except Exception:
            self.log.failure(
                "pool {pool}: payment run failed; tried again next interval", pool=self.pool.name
            )
            return None

    def run_now(self) -> defer.Deferred[RunReport | None]:
        """One run now, for the operator; the run under way instead, if there is one."""
        if self._running is None or self._running.called:
            self._running = defer.Deferred.fromCoroutine(self.run_once())
        running = self._running
        waiter: defer.Deferred[RunReport | None] = defer.Deferred()

        def answer(report: RunReport | None) -> RunReport | None:
            waiter.callback(report)
            return report

        running.addCallback(answer)
        return waiter

    async def audit(self) -> Audit | None:
        """The payment audit (nomp.payments.audit) now; None when Redis or the wallet is not there."""
        redis, wallet = self._redis(), self._wallet
        if redis is None or wallet is None:
            return None
        return await audit(
            PaymentLedger(redis, PoolKeys.for_coin(self.pool.coin.name)), wallet, self.pool.address
        )

    def apply(self, pool: PoolConfig) -> None:
        """A reloaded pool configuration (nomp.config.diff kept its scheme):
        the runs from now on use its payments section and wallet. A run
        under way finishes as it began."""
        old, self.pool = self.pool, pool
        self._processor = None  # the next run is made with the new settings
        if wallet_daemon(pool) != wallet_daemon(old) and self._clients is not None:
            self._wallet = self._clients.rpc(wallet_daemon(pool))
        if pool.payments.interval != old.payments.interval and self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = task.LoopingCall(self._tick)
            self._loop.clock = self._reactor
            self._loop.start(pool.payments.interval, now=False)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        # A run in progress finishes: stopping between sendmany and its
        # record would only leave the journal for the next start to settle.
        if self._running is not None and not self._running.called:
            await self._running
        clients, self._clients = self._clients, None
        if clients is not None:
            await clients.close()
