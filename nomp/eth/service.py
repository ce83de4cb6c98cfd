"""EthPoolService: one Ethereum-family pool in the service tree.

Work is polled with ``eth_getWork`` every ``block_refresh_interval``
seconds from the node in use (see Upstreams) and fetched again at once
after a block. A block candidate is recorded first (durably, among the
shares), then sent with ``eth_submitWork`` to every node; each answer is
logged with the block's seal hash and height.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from nomp.background import KeyedWork, background
from nomp.candidate import BlockCandidate
from nomp.config import EthPoolConfig
from nomp.daemon import DaemonError
from nomp.daemon.clients import DaemonClients
from nomp.daemon.rpc import CallObserver, HTTPPoster
from nomp.eth.hasher import EpochHashers
from nomp.eth.rules import submit_work_params
from nomp.eth.upstreams import Upstreams
from nomp.eth.work import EthWork, WorkBook, WorkError, parse_quantity
from nomp.services import OrderedMultiService

WorkListener = Callable[[EthWork], None]
CANDIDATE_RECORD_WAIT = 1.0  # seconds a candidate may wait for its record before it is submitted anyway
NODE_RETRY = 5.0  # seconds between tries to reach a node at start
SEALED_REMEMBERED = 64


class EthBlockRecords(Protocol):
    """What the pool needs of its recorder for blocks (EthShareRecorder)."""

    def block_found(self, candidate: BlockCandidate, timeout: float = ...) -> defer.Deferred[bool]: ...

    def block_settled(self, block_hash: str, accepted: bool) -> None: ...

    def flush(self) -> defer.Deferred[None]: ...


# Where the node heartbeat goes (OEP's ``<coin>:nodes``): (name, height, difficulty, unix seconds).
NodeStates = Callable[[str, int, int, float], defer.Deferred[Any]]


class EthPoolService(OrderedMultiService):
    """A pool: waits for its node, keeps work current, submits blocks."""

    log = Logger()

    def __init__(
        self,
        config: EthPoolConfig,
        reactor: Any,
        on_fatal: Callable[[str], None],
        recorder: EthBlockRecords,
        hashers: EpochHashers,
        node_states: NodeStates | None = None,
        http: HTTPPoster | None = None,
        rpc_observer: CallObserver | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.setName(f"pool:{config.name}")
        self.config = config
        self._reactor = reactor
        self._on_fatal = on_fatal
        self._recorder = recorder
        self.hashers = hashers
        self._node_states = node_states
        self._http = http
        self._rpc_observer = rpc_observer
        self._wall_clock = wall_clock if wall_clock is not None else time.time
        self._http_pool: HTTPConnectionPool | None = None
        self.upstreams: Upstreams | None = None
        self.book = WorkBook(config.stale_heights, config.coin.ecip1099_block)
        self.ready = False
        self._listeners: list[WorkListener] = []
        self._starting: defer.Deferred[None] | None = None
        self._timers: list[task.LoopingCall] = []
        self._refreshing: defer.Deferred[None] | None = None
        self._checking: defer.Deferred[None] | None = None
        self._refresh_again = False
        self._problem: str | None = None
        self.blocks: Counter[str] = Counter()  # candidates: accepted, rejected, error
        # Refreshes that made no work, by kind: daemon (the node failed), template (unusable work).
        self.job_failures: Counter[str] = Counter()
        self._blocks_in_flight = KeyedWork()  # by seal hash: its record, submission and settlement
        # Seal hashes a node took a block for: another share meeting the same
        # work's boundary is a share, no longer a block.
        self._sealed: deque[str] = deque(maxlen=SEALED_REMEMBERED)
        self._clients: DaemonClients | None = None  # where a reload's nodes are made

    def add_work_listener(self, listener: WorkListener) -> None:
        """Call ``listener(work)`` for every new work (the protocols send it on)."""
        self._listeners.append(listener)

    def startService(self) -> None:
        super().startService()
        clients = self._clients = DaemonClients(self._reactor, observer=self._rpc_observer, http=self._http)
        self._http_pool = clients.pool
        self.upstreams = Upstreams(self.config.name, [clients.rpc(d, "2.0") for d in self.config.daemons])
        self._starting = background(f"start pool {self.config.name}", self._start())

    async def _start(self) -> None:
        await self._wait_for_node()
        if not self.running:
            return
        await self.refresh()
        self.ready = True
        self._start_timers()

    def _start_timers(self) -> None:
        config = self.config
        self._every(config.block_refresh_interval, self.refresh)
        self._every(config.upstream_check_interval, self._check_upstreams)
        if self._node_states is not None:
            self._every(config.state_update_interval, self._heartbeat)

    def _every(self, interval: float, call: Callable[[], object]) -> None:
        timer = task.LoopingCall(call)
        timer.clock = self._reactor
        timer.start(interval, now=False)
        self._timers.append(timer)

    async def _wait_for_node(self) -> None:
        """Until a node answers ``eth_chainId`` (tried in order, the first that
        answers is used): it must be the coin's chain."""
        assert self.upstreams is not None
        upstreams = self.upstreams
        coin = self.config.coin
        while True:
            problems = []
            for index, node in enumerate(upstreams.nodes):
                try:
                    chain_id = parse_quantity(await node.rpc.call("eth_chainId"), "eth_chainId")
                except (DaemonError, WorkError) as e:
                    node.failed()
                    problems.append(str(e))
                    continue
                if chain_id != coin.chain_id:
                    self._on_fatal(
                        f"{self.config.file}: node {node.url} is on chain id {chain_id}, "
                        f"{coin.name} is chain id {coin.chain_id}"
                    )
                    return
                upstreams.use(index)
                self.log.info(
                    "pool {pool}: {coin} (chain id {chain_id}, {algorithm}) from node {url}",
                    pool=self.config.name,
                    coin=coin.name,
                    chain_id=chain_id,
                    algorithm=coin.algorithm,
                    url=node.url,
                )
                return
            self.log.warn(
                "pool {pool}: waiting for a node: {reasons}",
                pool=self.config.name,
                reasons="; ".join(problems),
            )
            await task.deferLater(self._reactor, NODE_RETRY, lambda: None)

    def stopService(self) -> defer.Deferred[None]:
        self.ready = False
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        for timer in self._timers:
            if timer.running:
                timer.stop()
        self._timers = []
        self._refresh_again = False
        for running in (self._refreshing, self._checking):
            if running is not None:
                running.cancel()
        stopping: defer.Deferred[None] = super().stopService()
        stopping.addCallback(lambda _: self.blocks_in_flight())
        stopping.addCallback(lambda _: self._recorder.flush())
        pool, self._http_pool = self._http_pool, None
        if pool is not None:
            stopping.addCallback(lambda _: pool.closeCachedConnections())
        return stopping

    # Work.
    def refresh(self) -> defer.Deferred[None]:
        """Fetch work; never two at once (a call during one runs one more after it)."""
        if not self.running:
            return defer.succeed(None)
        if self._refreshing is not None:
            self._refresh_again = True
            return self._refreshing
        self._refreshing = defer.Deferred.fromCoroutine(self._refresh_once())

        def finished(result: object) -> None:
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                self.log.failure("pool {pool}: work refresh failed", result, pool=self.config.name)
            self._refreshing = None
            if self._refresh_again:
                self._refresh_again = False
                self.refresh()

        self._refreshing.addBoth(finished)
        return self._refreshing

    async def _refresh_once(self) -> None:
        upstreams = self.upstreams
        if upstreams is None:
            return
        try:
            reply = await upstreams.call("eth_getWork")
            pending = None
            if isinstance(reply, list) and len(reply) == 3:  # a node that gives no block number
                block = await upstreams.call("eth_getBlockByNumber", "pending", False)
                pending = parse_quantity(block.get("number") if isinstance(block, dict) else None, "number")
            work = self.book.add(reply, pending)
        except DaemonError as e:
            self._report_problem("daemon", f"eth_getWork failed: {e}")
            return
        except WorkError as e:
            self._report_problem("template", f"unusable work from {upstreams.active.url}: {e}")
            return
        if self._problem is not None:
            self.log.info("pool {pool}: work is back", pool=self.config.name)
            self._problem = None
        if work is not None:
            self._announce(work)

    def _report_problem(self, kind: str, problem: str) -> None:
        self.job_failures[kind] += 1
        if problem != self._problem:  # once per kind of problem, not once per poll
            self.log.error("pool {pool}: {problem}", pool=self.config.name, problem=problem)
            self._problem = problem

    def _announce(self, work: EthWork) -> None:
        self.log.info(
            "pool {pool}: new work at height {height}: seal hash {header}, difficulty {difficulty}",
            pool=self.config.name,
            height=work.height,
            header=work.header_hex,
            difficulty=work.network_difficulty,
        )
        self.hashers.prepare(work, self.config.coin.ecip1099_block)
        for listener in self._listeners:
            try:
                listener(work)
            except Exception:
                self.log.failure("pool {pool}: work listener failed", pool=self.config.name)

    def _check_upstreams(self) -> defer.Deferred[None] | None:
        if self.upstreams is None or self._checking is not None:
            return None
        self._checking = defer.Deferred.fromCoroutine(self.upstreams.check())

        def checked(result: object) -> None:
            self._checking = None
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                self.log.failure("pool {pool}: node check failed", result, pool=self.config.name)

        return self._checking.addBoth(checked)

    def _heartbeat(self) -> defer.Deferred[Any] | None:
        work = self.book.current
        if work is None or self._node_states is None:
            return None
        writing = self._node_states(
            self.config.node_name, work.height, work.network_difficulty, self._wall_clock()
        )

        def failed(failure: Failure) -> None:
            self.log.warn(
                "pool {pool}: node state not written: {reason}",
                pool=self.config.name,
                reason=failure.getErrorMessage(),
            )

        return writing.addErrback(failed)

    # Blocks (the protocols' BlockSink).
    def found_block(self, candidate: BlockCandidate) -> None:
        """A share met the network's boundary: record the candidate, submit it, settle it."""
        key = candidate.block_hash
        if key in self._blocks_in_flight or key in self._sealed:
            return  # the same work sealed twice: one block per seal hash can be in the chain
        self._blocks_in_flight.start(key, f"block {key}", self._handle_block(candidate))

    async def _handle_block(self, candidate: BlockCandidate) -> None:
        if not await self._recorder.block_found(candidate, CANDIDATE_RECORD_WAIT):
            self.log.error(
                "pool {pool}: block candidate {block_hash} not yet in Redis: submitted anyway, "
                "its record waits with the shares",
                pool=self.config.name,
                block_hash=candidate.block_hash,
            )
        assert self.upstreams is not None
        params = submit_work_params(candidate.payload)
        try:
            answers = await self.upstreams.call_each("eth_submitWork", *params)
        finally:
            self.refresh()  # our block or not, the next work at once
        accepted = any(answer is True for answer in answers)
        refused = any(answer is False for answer in answers)
        for node, answer in zip(self.upstreams.nodes, answers, strict=True):
            self.log.info(
                "pool {pool}: block {block_hash} at height {height} (nonce {nonce}) by {worker}: "
                "node {url} says {answer}",
                pool=self.config.name,
                block_hash=candidate.block_hash,
                height=candidate.height,
                nonce=params[0],
                worker=candidate.worker,
                url=node.url,
                answer="accepted" if answer is True else "refused" if answer is False else f"error: {answer}",
            )
        if accepted:
            self._sealed.append(candidate.block_hash)
            self.blocks["accepted"] += 1
            self._recorder.block_settled(candidate.block_hash, True)
            await self._name_block(candidate, params[0])
        elif refused:
            # The same work sealed again would be refused again (its parent and
            # contents are the node's verdict, not the nonce): no second candidate.
            self._sealed.append(candidate.block_hash)
            self.blocks["rejected"] += 1
            self._recorder.block_settled(candidate.block_hash, False)
        else:
            # No node answered: whether it made the chain is the unlocker's to
            # find (it looks for the candidate's nonce), never a guess.
            self.blocks["error"] += 1

    async def _name_block(self, candidate: BlockCandidate, nonce: str) -> None:
        """Log the hash the chain knows the block by (getWork names only its seal hash)."""
        assert self.upstreams is not None
        try:
            block = await self.upstreams.call("eth_getBlockByNumber", hex(candidate.height), False)
        except DaemonError as e:
            self.log.info(
                "pool {pool}: block at height {height} not looked up: {reason}",
                pool=self.config.name,
                height=candidate.height,
                reason=e,
            )
            return
        if (
            isinstance(block, dict)
            and isinstance(block.get("nonce"), str)
            and block["nonce"].lower() == nonce
        ):
            self.log.info(
                "pool {pool}: block {hash} at height {height} is ours (seal hash {seal})",
                pool=self.config.name,
                hash=block.get("hash"),
                height=candidate.height,
                seal=candidate.block_hash,
            )
        else:
            self.log.info(
                "pool {pool}: the chain's block at height {height} is not ours: another got there first",
                pool=self.config.name,
                height=candidate.height,
            )

    # A reload (nomp.reload; nomp.config.diff decided what may change live).
    async def apply(self, new: EthPoolConfig) -> tuple[EthPoolConfig, list[str]]:
        """Take a reloaded configuration's nodes, timers and node name.

        New nodes are used once one of them answers on the coin's chain id;
        otherwise the nodes that run stay, and the note says why. Returns
        the configuration it runs and those notes. A pool still starting
        takes nothing: it says so.
        """
        old = self.config
        if not self.ready or self._clients is None:
            return old, [f"{old.name} is still starting: not reloaded, reload it once it is ready"]
        notes: list[str] = []
        running = new
        if new.daemons != old.daemons:
            upstreams = Upstreams(new.name, [self._clients.rpc(d, "2.0") for d in new.daemons])
            problem = await self._on_chain(upstreams)
            if problem is None:
                self.upstreams = upstreams
            else:
                notes.append(f"{old.file}: daemons not changed: {problem}")
                running = dataclasses.replace(running, daemons=old.daemons)
        self.config = running
        intervals = ("block_refresh_interval", "upstream_check_interval", "state_update_interval")
        if any(getattr(running, key) != getattr(old, key) for key in intervals):
            for timer in self._timers:
                if timer.running:
                    timer.stop()
            self._timers = []
            self._start_timers()
        return running, notes

    async def _on_chain(self, upstreams: Upstreams) -> str | None:
        """Use the first of ``upstreams`` on the coin's chain id: None, or why none is."""
        problems = []
        for index, node in enumerate(upstreams.nodes):
            try:
                chain_id = parse_quantity(await node.rpc.call("eth_chainId"), "eth_chainId")
            except (DaemonError, WorkError) as e:
                problems.append(str(e))
                continue
            if chain_id != self.config.coin.chain_id:
                problems.append(f"node {node.url} is on chain id {chain_id}, not {self.config.coin.chain_id}")
                continue
            upstreams.use(index)
            return None
        return "; ".join(problems)

    @property
    def submitting(self) -> int:
        return len(self._blocks_in_flight)

    def blocks_in_flight(self) -> defer.Deferred[None]:
        """Fires once every block being submitted has its answer."""
        return self._blocks_in_flight.idle()
