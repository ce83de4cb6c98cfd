"""PoolService: one coin's pool in the service tree."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from nomp.background import KeyedWork, background
from nomp.candidate import BlockCandidate
from nomp.chain.coinbase import CoinbaseLayout
from nomp.chain.jobs import Job, JobRegistry
from nomp.chain.template import BlockTemplate, TemplateError
from nomp.config import PoolConfig
from nomp.daemon import DaemonError, DaemonGroup
from nomp.daemon.clients import DaemonClients
from nomp.daemon.rpc import CallObserver, HTTPPoster
from nomp.pool.blocks import BlockSubmitter
from nomp.pool.startup import StartupError, resolve_payouts, wait_for_daemon
from nomp.services import OrderedMultiService

JobListener = Callable[[Job], None]

# Seconds a block candidate may wait for its record to be in Redis before
# it is submitted anyway: a block delayed longer risks more than its record.
CANDIDATE_RECORD_WAIT = 1.0
SETTLE_INTERVAL = 60.0  # seconds between looks for candidates no answer settled
# A candidate younger than this may still be in another process's hands
# (several processes of one pool share Redis): its daemons' answer is awaited.
SETTLE_AFTER = 300.0


class UnsettledCandidate(Protocol):
    """A candidate recorded and never settled, as the recorder reads it back."""

    @property
    def block_hash(self) -> str: ...

    @property
    def height(self) -> int: ...

    @property
    def found_at(self) -> float:
        """Unix seconds."""
        ...


class BlockRecords(Protocol):
    """What the pool needs of its recorder for blocks (ShareRecorder)."""

    def block_found(self, candidate: BlockCandidate, timeout: float = ...) -> defer.Deferred[bool]: ...

    def block_settled(self, block_hash: str, accepted: bool) -> None: ...

    async def unsettled_candidates(self) -> Sequence[UnsettledCandidate]: ...

    def flush(self) -> defer.Deferred[None]: ...


@dataclass(frozen=True, slots=True)
class TemplateRead:
    """A usable template a daemon gave, and when (reactor seconds) it was read."""

    template: BlockTemplate
    read_at: float


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
        recorder: BlockRecords,
        http: HTTPPoster | None = None,
        rpc_observer: CallObserver | None = None,
        wall_clock: Callable[[], float] | None = None,
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
        self._latest_template: TemplateRead | None = None
        self.ready = False
        self._recorder = recorder
        self._wall_clock = wall_clock if wall_clock is not None else time.time
        self.blocks: Counter[str] = Counter()  # candidates, by one of BLOCK_RESULTS
        self.job_failures: Counter[str] = Counter()  # refreshes that made no job: daemon, template, job
        self._blocks_in_flight = KeyedWork()  # by block hash: its record, submission and settlement
        self._settle: task.LoopingCall | None = None
        self._clients: DaemonClients | None = None  # where a reload's daemons are made

    @property
    def latest_template(self) -> TemplateRead | None:
        """The last template that made a job or matched the current one (None before
        the first): what the network pays and asks now, as profit switching reads it."""
        return self._latest_template

    def add_job_listener(self, listener: JobListener) -> None:
        """Call ``listener(job)`` for every new job (Stratum sends them on)."""
        self._listeners.append(listener)

    def startService(self) -> None:
        super().startService()
        clients = self._clients = DaemonClients(self._reactor, observer=self._rpc_observer, http=self._http)
        self._http_pool = clients.pool  # closed by stopService
        self.daemons = clients.group(self.config.daemons)
        self.submitter = BlockSubmitter(self.daemons, self.config.name)
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
            coin.algorithm,
            plan,
            CoinbaseLayout(tx_version=coin.transactions.version, signature=pool.pool_signature.encode()),
            # Ids from a random start: a miner a switching port moves between
            # pools keeps the jobs of the one it left, and tells them apart by id.
            first_id=secrets.randbits(32),
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
        # Candidates a stopped process recorded but never heard the daemons on.
        self._settle = task.LoopingCall(self.settle_candidates)
        self._settle.clock = self._reactor
        self._settle.start(SETTLE_INTERVAL, now=True)

    def stopService(self) -> defer.Deferred[None]:
        self.ready = False
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        if self._settle is not None and self._settle.running:
            self._settle.stop()
        if self._rebroadcast is not None and self._rebroadcast.active():
            self._rebroadcast.cancel()
        # A refresh under way (a block just submitted asks for one) would outlive
        # the service with its daemon call and timer.
        self._refresh_again = None
        if self._refreshing is not None:
            self._refreshing.cancel()
        stopping: defer.Deferred[None] = super().stopService()
        # After the miners are gone (the Stratum service stops among the
        # children): a block found last is submitted before the daemon
        # connections close, and its settlement written (the recorder's
        # drain came before; this writes what the answers added).
        stopping.addCallback(lambda _: self.blocks_in_flight())
        stopping.addCallback(lambda _: self._recorder.flush())
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

        def finished(result: object) -> None:
            # _refresh_once handles its own errors; anything reaching here is
            # a bug, logged, and the next poll runs as usual.
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                self.log.failure("pool {pool}: template refresh failed", result, pool=self.config.name)
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
        started = self._reactor.seconds()
        try:
            reply = await self.daemons.get_block_template(self.config.coin.gbt_rules)
            fetched = self._reactor.seconds()
            template = BlockTemplate.from_rpc(reply)
        except DaemonError as e:
            self._report_template_problem("daemon", f"getblocktemplate failed: {e}")
            return
        except TemplateError as e:
            self._report_template_problem("template", f"unusable template: {e}")
            return
        except defer.CancelledError:
            return  # the service stopped
        read = self._reactor.seconds()
        try:
            job = self.registry.add(template, read, force=force)
        except Exception as e:
            # Miners keep the last good job; the next poll tries again.
            self._report_template_problem(
                "job", f"template at height {template.height} could not become a job: {type(e).__name__}: {e}"
            )
            if not isinstance(
                e, ValueError
            ):  # the coinbase builder's refusals are ValueErrors; the rest are bugs
                self.log.failure("pool {pool}: job not made", pool=self.config.name)
            return
        if self._template_error is not None:
            self.log.info("pool {pool}: templates are back", pool=self.config.name)
            self._template_error = None
        self._latest_template = TemplateRead(template, fetched)
        if job is not None:
            made = self._reactor.seconds()
            self._announce(job, (fetched - started, read - fetched, made - read))

    def _report_template_problem(self, kind: str, problem: str) -> None:
        self.job_failures[kind] += 1
        # Once per kind of problem: a daemon down for an hour is one line, not 3600.
        if problem != self._template_error:
            self.log.error("pool {pool}: {problem}", pool=self.config.name, problem=problem)
            self._template_error = problem

    def _announce(self, job: Job, took: tuple[float, float, float]) -> None:
        """Hand a new job to the listeners; ``took``: the seconds its
        template took to fetch and to read, and the job to make."""
        template = job.template
        if job.clean:
            self.log.info(
                "pool {pool}: new block {height} on {prevhash}: {txs} transactions, reward {reward}; "
                "template fetched in {fetch_ms:.1f} ms, read in {read_ms:.1f} ms, "
                "job made in {job_ms:.1f} ms",
                pool=self.config.name,
                height=template.height,
                prevhash=template.previous_block_hash,
                txs=len(template.transactions),
                reward=template.coinbase_value,
                fetch_ms=took[0] * 1000,
                read_ms=took[1] * 1000,
                job_ms=took[2] * 1000,
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

    # Blocks (the Stratum side's BlockSink).
    def found_block(self, candidate: BlockCandidate) -> None:
        """A share met the network target: record the candidate, submit it, settle it."""
        if candidate.block_hash in self._blocks_in_flight:
            return  # the same block twice (a resubmitted share): one submission
        self._blocks_in_flight.start(
            candidate.block_hash, f"block {candidate.block_hash}", self._handle_block(candidate)
        )

    async def _handle_block(self, candidate: BlockCandidate) -> None:
        # Recorded before any node sees it: a process killed after the
        # submission cannot lose the block's credit (settle_candidates
        # finds it at the next start).
        if not await self._recorder.block_found(candidate, CANDIDATE_RECORD_WAIT):
            self.log.error(
                "pool {pool}: block candidate {block_hash} not yet in Redis: submitted anyway, "
                "its record waits with the shares",
                pool=self.config.name,
                block_hash=candidate.block_hash,
            )
        assert self.submitter is not None
        try:
            outcome = await self.submitter.submit(candidate)
        except BaseException:
            self.blocks["error"] += 1
            raise  # logged by background(); the candidate waits for settle_candidates
        finally:
            self.refresh()  # our block or not, the next template at once
        if outcome.accepted:
            self.blocks["accepted"] += 1
            self._recorder.block_settled(candidate.block_hash, True)
        elif all(result.error is not None for result in outcome.results):
            # No daemon answered: whether the block is in the chain is for
            # settle_candidates to find out, never a guess.
            self.blocks["error"] += 1
        elif outcome.reached_a_node:
            await self._settle_side_branch(candidate)
        else:
            self.blocks["rejected"] += 1
            self._recorder.block_settled(candidate.block_hash, False)

    async def _settle_side_branch(self, candidate: BlockCandidate) -> None:
        # A valid block the main chain does not hold (yet): another block at
        # its height came first, or a node had it already. The node keeping
        # it settles it accepted: a reorganisation can still make it the
        # main chain's, and the payments orphan it if none does.
        assert self.submitter is not None
        try:
            known = await self.submitter.known(candidate.block_hash)
        except DaemonError as e:
            self.blocks["error"] += 1
            self.log.warn(
                "pool {pool}: block candidate {block_hash} off the main chain, not settled yet: {reason}",
                pool=self.config.name,
                block_hash=candidate.block_hash,
                reason=e,
            )
            return
        self.blocks["accepted" if known else "rejected"] += 1
        self._recorder.block_settled(candidate.block_hash, known)

    def settle_candidates(self) -> defer.Deferred[None]:
        """Settle from the chain the candidates recorded but never settled
        (the process stopped before the daemons answered, or none could
        answer). A candidate the node cannot answer for waits."""
        return defer.Deferred.fromCoroutine(self._settle_candidates())

    async def _settle_candidates(self) -> None:
        if self.submitter is None:
            return
        try:
            candidates = await self._recorder.unsettled_candidates()
        except Exception as e:
            self.log.warn(
                "pool {pool}: unsettled block candidates not read: {reason}", pool=self.config.name, reason=e
            )
            return
        now = self._wall_clock()
        for candidate in candidates:
            block_hash = candidate.block_hash
            if block_hash in self._blocks_in_flight or now - candidate.found_at < SETTLE_AFTER:
                continue
            try:
                known = await self.submitter.known(block_hash)
            except DaemonError as e:
                self.log.warn(
                    "pool {pool}: block candidate {block_hash} not settled yet: {reason}",
                    pool=self.config.name,
                    block_hash=block_hash,
                    reason=e,
                )
                continue
            self.log.info(
                "pool {pool}: block candidate {block_hash} at height {height} settled from the chain: "
                "{state}",
                pool=self.config.name,
                block_hash=block_hash,
                height=candidate.height,
                state="the node has it" if known else "unknown to the node",
            )
            self._recorder.block_settled(block_hash, known)

    # A reload (nomp.reload; nomp.config.diff decided what may change live).
    async def apply(self, new: PoolConfig) -> tuple[PoolConfig, list[str]]:
        """Take a reloaded configuration's daemons, payout and timers.

        New daemons are used once one of them answers on the coin's chain,
        a new payout (address, reward recipients, signature) once the
        daemon has given the scripts of its addresses; either refused keeps
        what runs, and the note says why. Returns the configuration it runs
        and those notes. A pool still starting takes nothing: it says so.
        """
        old = self.config
        if not self.ready or self.daemons is None or self.registry is None or self._clients is None:
            return old, [f"{old.name} is still starting: not reloaded, reload it once it is ready"]
        notes: list[str] = []
        running = new
        if new.daemons != old.daemons:
            daemons = self._clients.group(new.daemons)
            try:
                info = await daemons.chain_info()
                if info.chain != new.coin.network.chain:
                    raise StartupError(
                        f"the new daemons are on chain {info.chain!r}, not {new.coin.network.chain!r}"
                    )
            except (DaemonError, StartupError) as e:
                notes.append(_not_changed(old.file, "daemons", e))
                running = dataclasses.replace(running, daemons=old.daemons)
            else:
                self.daemons, self.submitter = daemons, BlockSubmitter(daemons, self.config.name)
        payout = ("address", "reward_recipients", "pool_signature")
        if any(getattr(new, key) != getattr(old, key) for key in payout):
            try:
                plan = await resolve_payouts(running, self.daemons)
            except (DaemonError, StartupError) as e:
                notes.append(_not_changed(old.file, "payout", e))
                running = dataclasses.replace(running, **{key: getattr(old, key) for key in payout})
            else:
                self.registry.plan = plan
                self.registry.layout = CoinbaseLayout(
                    tx_version=new.coin.transactions.version, signature=running.pool_signature.encode()
                )
        self.config = running
        if running.block_refresh_interval != old.block_refresh_interval and self._poll is not None:
            if self._poll.running:
                self._poll.stop()
            self._poll = task.LoopingCall(self.refresh)
            self._poll.clock = self._reactor
            self._poll.start(running.block_refresh_interval, now=False)
        if running.job_rebroadcast_timeout != old.job_rebroadcast_timeout:
            if self._rebroadcast is not None and self._rebroadcast.active():
                self._rebroadcast.cancel()
            self._rearm_rebroadcast()
        if any(getattr(running, key) != getattr(old, key) for key in payout):
            await self.refresh(force=True)  # the miners' next job pays as the new configuration says
        return running, notes

    @property
    def submitting(self) -> int:
        """Blocks being recorded or submitted, their answer not settled yet."""
        return len(self._blocks_in_flight)

    def blocks_in_flight(self) -> defer.Deferred[None]:
        """Fires once every block being submitted has its answer."""
        return self._blocks_in_flight.idle()


def _not_changed(file: str, what: str, error: Exception) -> str:
    """A reload's refusal, naming the pool file once."""
    return f"{file}: {what} not changed: {str(error).removeprefix(f'{file}: ')}"
