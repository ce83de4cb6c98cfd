"""PoolService: one coin's pool in the service tree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from treq.client import HTTPClient
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory

from nomp.background import background
from nomp.chain.coinbase import CoinbaseLayout
from nomp.chain.jobs import Job, JobRegistry
from nomp.chain.template import BlockTemplate, TemplateError
from nomp.config import PoolConfig
from nomp.daemon import DaemonError, DaemonGroup, DaemonRPC
from nomp.daemon.rpc import CallObserver, HTTPPoster
from nomp.hashing import ALGORITHMS
from nomp.pool.blocks import BlockOutcome, BlockSubmitter
from nomp.pool.startup import StartupError, resolve_payouts, wait_for_daemon
from nomp.services import OrderedMultiService

JobListener = Callable[[Job], None]


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    """Daemon connections come and go; "Starting factory" for each is noise."""

    noisy = False


class PoolService(OrderedMultiService):
    """A pool: waits for its daemon, keeps jobs current, submits blocks.

    Templates are polled every ``block_refresh_interval`` seconds, fetched at
    once on blocknotify and after our own block, and refetched for new
    transactions ``job_rebroadcast_timeout`` seconds after the last job.
    """

    log = Logger()

    def __init__(
        self,
        config: PoolConfig,
        reactor: Any,
        on_fatal: Callable[[str], None],
        http: HTTPPoster | None = None,
        rpc_observer: CallObserver | None = None,
    ) -> None:
        super().__init__()
        self.setName(f"pool:{config.name}")
        self.config = config
        self._reactor = reactor
        self._on_fatal = on_fatal
        self._http = http
        self._rpc_observer = rpc_observer  # told of every daemon call (metrics)
        self._http_pool: HTTPConnectionPool | None = None
        self.daemons: DaemonGroup | None = None
        self.registry: JobRegistry | None = None
        self.submitter: BlockSubmitter | None = None
        self._listeners: list[JobListener] = []
        self._starting: defer.Deferred[None] | None = None
        self._poll: task.LoopingCall | None = None
        self._rebroadcast: IDelayedCall | None = None
        self._refreshing: defer.Deferred[None] | None = None
        self._refresh_again: bool | None = None  # None: nothing queued; else force flag
        self._waiters: list[defer.Deferred[None]] = []
        self._template_error: str | None = None
        self.ready = False

    def add_job_listener(self, listener: JobListener) -> None:
        """Call ``listener(job)`` for every new job (Stratum sends them on)."""
        self._listeners.append(listener)

    def startService(self) -> None:
        super().startService()
        http = self._http
        if http is None:
            self._http_pool = HTTPConnectionPool(self._reactor, persistent=True)
            self._http_pool._factory = _QuietHTTP11ClientFactory
            http = HTTPClient(Agent(self._reactor, pool=self._http_pool))
        self.daemons = DaemonGroup(
            [
                DaemonRPC(
                    http,
                    d.url,
                    d.user,
                    d.password,
                    self._reactor,
                    timeout=d.timeout,
                    observer=self._rpc_observer,
                )
                for d in self.config.daemons
            ],
            self._reactor,
        )
        self.submitter = BlockSubmitter(self.daemons)
        self._starting = background(f"start pool {self.config.name}", self._start())

    async def _start(self) -> None:
        assert self.daemons is not None
        pool = self.config
        try:
            await wait_for_daemon(pool, self.daemons, self._reactor)
            plan = await resolve_payouts(pool, self.daemons)
        except StartupError as e:
            self._on_fatal(str(e))
            return
        except DaemonError as e:
            self._on_fatal(f"{pool.file}: cannot check addresses: {e}")
            return
        coin = pool.coin
        self.registry = JobRegistry(
            ALGORITHMS[coin.algorithm],
            plan,
            CoinbaseLayout(tx_version=coin.transactions.version, signature=pool.pool_signature.encode()),
        )
        self.log.info(
            "pool {pool}: {coin} on chain {chain}, paying to {address} (script {script})",
            pool=pool.name,
            coin=coin.name,
            chain=coin.network.chain,
            address=pool.address,
            script=plan.pool_script.hex(),
        )
        await self.refresh()
        self.ready = True
        self._poll = task.LoopingCall(self.refresh)
        self._poll.clock = self._reactor
        self._poll.start(pool.block_refresh_interval, now=False)

    def stopService(self) -> defer.Deferred[None]:
        self.ready = False
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        if self._rebroadcast is not None and self._rebroadcast.active():
            self._rebroadcast.cancel()
        # A refresh under way (a block just submitted asks for one) would outlive
        # the service with its daemon call and timer.
        self._refresh_again = None
        if self._refreshing is not None:
            self._refreshing.cancel()
        stopping: defer.Deferred[None] = super().stopService()
        pool, self._http_pool = self._http_pool, None
        if pool is not None:
            stopping.addCallback(lambda _: pool.closeCachedConnections())
        return stopping

    def refresh(self, force: bool = False) -> defer.Deferred[None]:
        """Fetch a template and make a job if it is new work.

        Never two at once: a call during a refresh queues one more after
        it (a forced one if any caller forced), and the Deferred fires when
        a refresh that started after the call has finished.
        """
        if not self.running:
            return defer.succeed(None)  # stopped: a late caller gets no new work
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._refreshing is None:
            self._run_refresh(force, [waiter])
        else:
            self._refresh_again = bool(self._refresh_again) or force
            self._waiters.append(waiter)
        return waiter

    def _run_refresh(self, force: bool, waiters: list[defer.Deferred[None]]) -> None:
        self._refreshing = defer.Deferred.fromCoroutine(self._refresh_once(force))

        def finished(_: object) -> None:
            self._refreshing = None
            for waiter in waiters:
                waiter.callback(None)
            if self._refresh_again is not None:
                again, self._refresh_again = self._refresh_again, None
                queued, self._waiters = self._waiters, []
                self._run_refresh(again, queued)

        self._refreshing.addBoth(finished)

    async def _refresh_once(self, force: bool) -> None:
        if self.daemons is None or self.registry is None:
            return
        try:
            reply = await self.daemons.get_block_template(self.config.coin.gbt_rules)
            template = BlockTemplate.from_rpc(reply)
        except DaemonError as e:
            self._report_template_problem(f"getblocktemplate failed: {e}")
            return
        except TemplateError as e:
            self._report_template_problem(f"unusable template: {e}")
            return
        except defer.CancelledError:
            return  # the service stopped
        except Exception:
            self.log.failure("pool {pool}: template refresh failed", pool=self.config.name)
            return
        if self._template_error is not None:
            self.log.info("pool {pool}: templates are back", pool=self.config.name)
            self._template_error = None
        job = self.registry.add(template, self._reactor.seconds(), force=force)
        if job is not None:
            self._announce(job)

    def _report_template_problem(self, problem: str) -> None:
        # Once per kind of problem: a daemon down for an hour is one line, not 3600.
        if problem != self._template_error:
            self.log.error("pool {pool}: {problem}", pool=self.config.name, problem=problem)
            self._template_error = problem

    def _announce(self, job: Job) -> None:
        template = job.template
        if job.clean:
            self.log.info(
                "pool {pool}: new block {height} on {prevhash}: {txs} transactions, reward {reward}",
                pool=self.config.name,
                height=template.height,
                prevhash=template.previous_block_hash,
                txs=len(template.transactions),
                reward=template.coinbase_value,
            )
        else:
            self.log.debug(
                "pool {pool}: job {job_id} refreshed: {txs} transactions, reward {reward}",
                pool=self.config.name,
                job_id=job.job_id,
                txs=len(template.transactions),
                reward=template.coinbase_value,
            )
        self._rearm_rebroadcast()
        for listener in self._listeners:
            try:
                listener(job)
            except Exception:
                self.log.failure("pool {pool}: job listener failed", pool=self.config.name)

    def _rearm_rebroadcast(self) -> None:
        timeout = self.config.job_rebroadcast_timeout
        if timeout <= 0 or not self.running:
            return
        if self._rebroadcast is not None and self._rebroadcast.active():
            self._rebroadcast.reset(timeout)
        else:
            self._rebroadcast = self._reactor.callLater(timeout, self.refresh, True)

    def block_notify(self, block_hash: str | None = None) -> defer.Deferred[None]:
        """A new block was announced: fetch a template now, unless we are on it already."""
        current = self.registry.current if self.registry is not None else None
        if (
            block_hash is not None
            and current is not None
            and current.template.previous_block_hash == block_hash.lower()
        ):
            return defer.succeed(None)
        return self.refresh()

    async def submit_block(self, job: Job, extranonce: bytes, header: bytes) -> BlockOutcome:
        """Submit a block candidate, then fetch the next template at once."""
        assert self.submitter is not None
        outcome = await self.submitter.submit(job, extranonce, header)
        self.refresh()
        return outcome
