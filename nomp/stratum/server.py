"""StratumServer: one pool's miners, their requests, jobs and shares."""

from __future__ import annotations

import random
import re
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from nomp.background import background
from nomp.chain.address import AddressError, decode_address
from nomp.chain.jobs import Job, JobRegistry
from nomp.config import PoolConfig, PortConfig
from nomp.hashing import ShareHash
from nomp.hashing.pool import HashPoolService
from nomp.pool.blocks import BlockOutcome
from nomp.store.recorder import BlockRecord, RecorderFull, RecordsShares
from nomp.stratum.errors import NOT_SUBSCRIBED, OTHER, UNAUTHORIZED, StratumError
from nomp.stratum.protocol import StratumProtocol, encode_notification
from nomp.stratum.session import MAX_WORKER_NAME, MinerSession
from nomp.stratum.shares import EXTRANONCE2_SIZE, ShareLedger, Submission, check_submit, judge
from nomp.stratum.vardiff import VarDiff

_WORKER_NAME = re.compile(r"[A-Za-z0-9._\-@+]+")  # no ':' (it separates fields in Redis)
SUBSCRIPTION_ID = "deadbeefcafebabe"
MAX_WORKERS = 64  # names one connection may authorize (proxies carry several)


class JobSource(Protocol):
    """What the Stratum side needs of its pool: jobs, and a way to submit blocks."""

    registry: JobRegistry | None

    async def submit_block(self, job: Job, extranonce: bytes, header: bytes) -> BlockOutcome: ...


class Extranonce1Allocator:
    """Hands out 4-byte extranonce1 values no two live connections share."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._next = (rng or random.SystemRandom()).getrandbits(32)
        self._used: set[int] = set()

    def take(self) -> bytes:
        if len(self._used) >= 2**32:
            raise RuntimeError("extranonce1 space exhausted")
        while self._next in self._used:
            self._next = (self._next + 1) % 2**32
        value = self._next
        self._used.add(value)
        self._next = (value + 1) % 2**32
        return value.to_bytes(4, "big")

    def release(self, extranonce1: bytes) -> None:
        self._used.discard(int.from_bytes(extranonce1, "big"))


class StratumFactory(Factory):
    """Builds connections for one port: its starting difficulty and vardiff."""

    noisy = False

    def __init__(self, server: StratumServer, port: PortConfig) -> None:
        self.server = server
        self.port = port
        self.clock = server.clock
        self.vardiff = VarDiff(port.vardiff) if port.vardiff is not None else None
        # Solo: shares count for the miner alone and his blocks are his.
        self.solo = port.solo or server.config.payments.scheme == "solo"

    def buildProtocol(self, addr: IAddress | None) -> StratumProtocol:
        now = self.clock.seconds()
        session = MinerSession(difficulty=self.port.diff, connected_at=now)
        if self.vardiff is not None:
            session.vardiff = self.vardiff.start(now)
        return StratumProtocol(self, session)


class StratumServer:
    """Routes miners' requests; the reactor thread only routes, hashing is
    done by the HashPoolService."""

    log = Logger()

    def __init__(
        self,
        config: PoolConfig,
        pool: JobSource,
        hashing: HashPoolService,
        recorder: RecordsShares,
        clock: IReactorTime,
    ) -> None:
        self.config = config
        self.pool = pool
        self.hashing = hashing
        self.recorder = recorder
        self.clock = clock
        self.connection_timeout = config.connection_timeout
        self.connections: set[StratumProtocol] = set()
        self.ledger = ShareLedger()
        self.extranonces = Extranonce1Allocator()
        self._lines: dict[str, tuple[bytes, bytes]] = {}  # job id -> (clean, continuing) notify
        self.in_flight = 0  # shares being hashed
        self._idle_waiters: list[defer.Deferred[None]] = []
        self._methods = {
            "mining.subscribe": self._subscribe,
            "mining.authorize": self._authorize,
            "mining.submit": self._submit,
            "mining.extranonce.subscribe": self._extranonce_subscribe,
            "mining.get_transactions": self._get_transactions,
        }

    # Connections.
    def connected(self, protocol: StratumProtocol) -> None:
        self.connections.add(protocol)

    def disconnected(self, protocol: StratumProtocol) -> None:
        self.connections.discard(protocol)
        if protocol.session.extranonce1 is not None:
            self.extranonces.release(protocol.session.extranonce1)

    def malformed(self, protocol: StratumProtocol) -> None:
        """A request that could not be read."""
        protocol.session.malformed += 1

    def request(self, protocol: StratumProtocol, request_id: Any, method: str, params: list[Any]) -> None:
        handler = self._methods.get(method)
        if handler is None:
            raise StratumError(OTHER, f"unknown method {method[:64]!r}")
        handler(protocol, request_id, params)

    # Jobs.
    def new_job(self, job: Job) -> None:
        """Send a new job to every subscribed miner, then forget dead jobs."""
        started = self.clock.seconds()
        lines = (
            encode_notification("mining.notify", job.notify_params(True)),
            encode_notification("mining.notify", job.notify_params(False)),
        )
        self._lines[job.job_id] = lines
        # The same bytes for everyone: the loop does as little as it can.
        line, job_id = lines[0 if job.clean else 1], job.job_id
        sent = 0
        for protocol in list(self.connections):
            if protocol.session.extranonce1 is not None:
                protocol.session.job_sent(job_id)
                protocol.send_line(line)
                sent += 1
        registry = self.pool.registry
        if registry is not None:
            live = registry.live_ids()
            self.ledger.keep_only(live)
            self._lines = {i: self._lines[i] for i in live if i in self._lines}
        if job.clean:
            self.log.info(
                "pool {pool}: job {job_id} sent to {miners} miners in {ms:.1f} ms",
                pool=self.config.name,
                job_id=job_id,
                miners=sent,
                ms=(self.clock.seconds() - started) * 1000,
            )

    def _send_job(self, protocol: StratumProtocol, job: Job, clean: bool) -> None:
        lines = self._lines.get(job.job_id)
        if lines is None:
            return
        protocol.session.job_sent(job.job_id)
        protocol.send_line(lines[0] if clean else lines[1])

    def retarget_quiet(self) -> None:
        """Lower the difficulty of miners whose shares stopped coming."""
        now = self.clock.seconds()
        for protocol in list(self.connections):
            session = protocol.session
            vardiff = protocol.factory.vardiff
            if vardiff is not None and session.vardiff is not None and session.subscribed:
                new = vardiff.on_quiet(session.vardiff, now, session.difficulty)
                if new is not None:
                    self._set_difficulty(protocol, new)

    def _set_difficulty(self, protocol: StratumProtocol, difficulty: float) -> None:
        # Sent at once; it applies to the next job the miner gets. Shares of
        # jobs it already has are judged by the lower of old and new.
        protocol.session.difficulty = difficulty
        protocol.send_difficulty(difficulty)

    # Requests.
    def _subscribe(self, protocol: StratumProtocol, request_id: Any, params: list[Any]) -> None:
        session = protocol.session
        if params and isinstance(params[0], str):
            session.user_agent = params[0][:128]
        if session.extranonce1 is None:
            session.extranonce1 = self.extranonces.take()
        subscriptions = [
            ["mining.set_difficulty", SUBSCRIPTION_ID],
            ["mining.notify", SUBSCRIPTION_ID],
        ]
        protocol.reply(request_id, [subscriptions, session.extranonce1.hex(), EXTRANONCE2_SIZE])
        protocol.send_difficulty(session.difficulty)
        registry = self.pool.registry
        if registry is not None and registry.current is not None:
            self._send_job(protocol, registry.current, True)

    def _authorize(self, protocol: StratumProtocol, request_id: Any, params: list[Any]) -> None:
        if not params or not isinstance(params[0], str):
            raise StratumError(OTHER, "invalid params: expected username, password")
        name = params[0]
        password = params[1] if len(params) > 1 and isinstance(params[1], str) else ""
        problem = self._check_worker_name(name)
        if (
            problem is None
            and name not in protocol.session.workers
            and len(protocol.session.workers) >= MAX_WORKERS
        ):
            problem = f"at most {MAX_WORKERS} workers per connection"
        if problem is not None:
            protocol.reply_refusal(request_id, StratumError(UNAUTHORIZED, problem))
            return
        protocol.session.workers[name] = password[:256]
        protocol.reply(request_id, True)

    def _check_worker_name(self, name: str) -> str | None:
        if not 0 < len(name) <= MAX_WORKER_NAME or not _WORKER_NAME.fullmatch(name):
            return f"invalid worker name: use letters, digits and ._-@+ (at most {MAX_WORKER_NAME})"
        if self.config.usernames == "address":
            address = name.split(".", 1)[0]
            try:
                decode_address(address, self.config.coin.network)
            except AddressError as e:
                return f"{address} is not a {self.config.coin.name} address: {e}"
        return None

    def _extranonce_subscribe(self, protocol: StratumProtocol, request_id: Any, params: list[Any]) -> None:
        protocol.reply(request_id, True)

    def _get_transactions(self, protocol: StratumProtocol, request_id: Any, params: list[Any]) -> None:
        raise StratumError(OTHER, "mining.get_transactions is not supported")

    def _submit(self, protocol: StratumProtocol, request_id: Any, params: list[Any]) -> None:
        session = protocol.session
        now = self.clock.seconds()
        registry = self.pool.registry
        if registry is None:
            raise StratumError(OTHER, "the pool has no job yet")
        try:
            submission = check_submit(params, session, registry, self.ledger, now)
        except StratumError as e:
            session.invalid_shares += 1
            worker = params[0] if params and isinstance(params[0], str) else ""
            # Only an authorized, subscribed miner's submits count: for its
            # invalid shares (as NOMP) and for its vardiff.
            if worker in session.workers and e.code not in (UNAUTHORIZED, NOT_SUBSCRIBED):
                self.recorder.invalid_share(worker, session.difficulty)
                self._vardiff_on_share(protocol, now)
            raise
        self._vardiff_on_share(protocol, now)
        self.in_flight += 1
        self.hashing.check(submission.job.hasher, submission.work).addBoth(
            self._landed, protocol, request_id, submission
        )

    def _landed(
        self, hashed: ShareHash | Failure, protocol: StratumProtocol, request_id: Any, submission: Submission
    ) -> None:
        # One callback for both outcomes: this runs for every share.
        try:
            if isinstance(hashed, Failure):
                self.log.failure("share check failed", hashed)
                protocol.reply_error(request_id, StratumError(OTHER, "internal error"))
            else:
                self._hashed(hashed, protocol, request_id, submission)
        except Exception:
            self.log.failure("share of {worker} not handled", worker=submission.worker)
            protocol.reply_error(request_id, StratumError(OTHER, "internal error"))
        finally:
            self._share_done()

    def _share_done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def idle(self) -> defer.Deferred[None]:
        """Fires once no share is being hashed."""
        if self.in_flight == 0:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def _vardiff_on_share(self, protocol: StratumProtocol, now: float) -> None:
        vardiff = protocol.factory.vardiff
        session = protocol.session
        if vardiff is not None and session.vardiff is not None:
            new = vardiff.on_share(session.vardiff, now, session.difficulty)
            if new is not None:
                self._set_difficulty(protocol, new)

    def _hashed(
        self, hashed: ShareHash, protocol: StratumProtocol, request_id: Any, submission: Submission
    ) -> None:
        verdict = judge(submission, hashed, submission.job.hasher.algorithm)
        session = protocol.session
        if not verdict.accepted:
            session.invalid_shares += 1
            self.recorder.invalid_share(submission.worker, verdict.difficulty)
            assert verdict.error is not None
            protocol.reply_error(request_id, verdict.error)
            return
        try:
            self.recorder.valid_share(submission.worker, verdict.difficulty, protocol.factory.solo)
        except RecorderFull as e:
            self.log.error("share of {worker} not recorded: {reason}", worker=submission.worker, reason=e)
            protocol.reply_error(request_id, StratumError(OTHER, "the pool cannot record shares now"))
            if verdict.block:  # the block is still worth submitting
                self._block_found(submission, hashed, protocol.factory.solo)
            return
        session.valid_shares += 1
        protocol.reply_true(request_id)
        if verdict.block:
            self._block_found(submission, hashed, protocol.factory.solo)

    def _block_found(self, submission: Submission, hashed: ShareHash, solo: bool) -> None:
        job = submission.job
        record = self.recorder.block_found(
            submission.worker, job.template.height, job.template.coinbase_value, solo
        )
        self.log.info(
            "pool {pool}: {worker} found a block candidate at height {height}",
            pool=self.config.name,
            worker=submission.worker,
            height=job.template.height,
        )
        background("submit block", self._submit_block(submission, hashed, record))

    async def _submit_block(self, submission: Submission, hashed: ShareHash, record: BlockRecord) -> None:
        try:
            outcome = await self.pool.submit_block(submission.job, submission.extranonce, hashed.header)
        except BaseException:
            self.recorder.block_settled(record, False, "", None)
            raise
        self.recorder.block_settled(record, outcome.accepted, outcome.block_hash, outcome.coinbase_txid)

    def close_all(self) -> None:
        """Close every miner connection (at shutdown)."""
        for protocol in list(self.connections):
            protocol.close()
