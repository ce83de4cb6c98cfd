"""StratumServer: one pool's miners, their requests, jobs and shares."""

from __future__ import annotations

import re
from collections import Counter
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
from nomp.store.bans import BanStore
from nomp.store.recorder import BlockRecord, RecorderFull, RecordsShares
from nomp.stratum.banning import Ban, Gatekeeper, normalise_ip
from nomp.stratum.broadcast import broadcast, default_threads
from nomp.stratum.configure import (
    ConfigureError,
    clamp_difficulty,
    negotiate,
    password_options,
    suggested_difficulty,
)
from nomp.stratum.defence import SharedBans, ban_policy, ip_of
from nomp.stratum.errors import (
    DUPLICATE_SHARE,
    JOB_NOT_FOUND,
    LOW_DIFFICULTY,
    NOT_SUBSCRIBED,
    OTHER,
    UNAUTHORIZED,
    StratumError,
)
from nomp.stratum.extranonce import Extranonce1Allocator, change_extranonce1, with_earlier_extranonce1
from nomp.stratum.protocol import StratumProtocol, encode_notification
from nomp.stratum.session import MAX_WORKER_NAME, MinerSession
from nomp.stratum.shares import EXTRANONCE2_SIZE, ShareLedger, Submission, check_submit, judge
from nomp.stratum.targets import MinerTarget, select
from nomp.stratum.vardiff import VarDiff

_WORKER_NAME = re.compile(r"[A-Za-z0-9._\-@+]+")  # no ':' (it separates fields in Redis)
SUBSCRIPTION_ID = "deadbeefcafebabe"
MAX_WORKERS = 64  # names one connection may authorize (proxies carry several)

# What became of each submitted share, as counted in StratumServer.shares:
# accepted, refused by Stratum error code, refused because it could not be
# recorded, or lost to a failed check.
SHARE_REFUSALS = {
    JOB_NOT_FOUND: "stale",
    DUPLICATE_SHARE: "duplicate",
    LOW_DIFFICULTY: "low_difficulty",
    UNAUTHORIZED: "unauthorized",
    NOT_SUBSCRIBED: "not_subscribed",
    OTHER: "invalid",
}
SHARE_RESULTS = ("accepted", *SHARE_REFUSALS.values(), "unrecorded", "error")
BLOCK_RESULTS = ("accepted", "rejected", "error")  # daemons' answers, as counted in StratumServer.blocks


class JobSource(Protocol):
    """What the Stratum side needs of its pool: jobs, and a way to submit blocks."""

    registry: JobRegistry | None

    async def submit_block(self, job: Job, extranonce: bytes, header: bytes) -> BlockOutcome: ...


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

    def buildProtocol(self, addr: IAddress | None) -> StratumProtocol | None:
        now = self.clock.seconds()
        ip = ip_of(addr)
        # None makes the port close the socket before reading a byte.
        if ip is not None and not self.server.admit(ip, now):
            return None
        session = MinerSession(difficulty=self.port.diff, connected_at=now)
        if self.vardiff is not None:
            session.vardiff = self.vardiff.start(now)
        protocol = StratumProtocol(self, session)
        protocol.ip = ip
        return protocol


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
        ban_store: BanStore | None = None,
        instance: int | None = 0,
    ) -> None:
        """``instance``: the byte every extranonce1 starts with (0 for a lone
        process); None until ``set_instance`` gives one, and subscribes wait
        for it."""
        self.config = config
        self.pool = pool
        self.hashing = hashing
        self.recorder = recorder
        self.clock = clock
        self.connection_timeout = config.connection_timeout
        self.connections: set[StratumProtocol] = set()
        self.gatekeeper = Gatekeeper(ban_policy(config.banning))
        # Without a store (tests of the protocol alone) bans stay in this process.
        self.shared_bans = (
            SharedBans(self.gatekeeper, ban_store, clock, self._enforce) if ban_store is not None else None
        )
        self.refused: Counter[str] = Counter()  # connections refused, by reason
        self.shares: Counter[str] = Counter()  # submitted shares, by one of SHARE_RESULTS
        self.blocks: Counter[str] = Counter()  # block candidates, by one of BLOCK_RESULTS
        self.ledger = ShareLedger()
        self.extranonces = Extranonce1Allocator(instance=instance)
        # Subscribes answered once the instance byte is known: connection -> (id, params).
        self._awaiting_instance: dict[StratumProtocol, tuple[Any, list[Any]]] = {}
        self._lines: dict[str, tuple[bytes, bytes]] = {}  # job id -> (clean, continuing) notify
        self.in_flight = 0  # shares being hashed
        self.broadcast_threads = default_threads()  # job broadcasts send on this many threads at once
        self._idle_waiters: list[defer.Deferred[None]] = []
        self._version_mask = int(config.version_mask, 16)
        self._methods = {
            "mining.subscribe": self._subscribe,
            "mining.authorize": self._authorize,
            "mining.submit": self._submit,
            "mining.configure": self._configure,
            "mining.suggest_difficulty": self._suggest_difficulty,
            "mining.extranonce.subscribe": self._extranonce_subscribe,
            "mining.get_transactions": self._get_transactions,
        }

    # Connections.
    def connected(self, protocol: StratumProtocol) -> None:
        self.connections.add(protocol)

    def disconnected(self, protocol: StratumProtocol) -> None:
        self.connections.discard(protocol)
        if protocol.ip is not None:
            self.gatekeeper.connection_closed(protocol.ip)
        if protocol.session.extranonce1 is not None:
            self.extranonces.release(protocol.session.extranonce1)
        self._awaiting_instance.pop(protocol, None)

    def malformed(self, protocol: StratumProtocol) -> None:
        """A request that could not be read."""
        protocol.session.malformed += 1
        if protocol.ip is not None:
            self._judged(self.gatekeeper.malformed(protocol.ip, self.clock.seconds()))

    # Bans and limits.
    def admit(self, ip: str, now: float) -> bool:
        """Whether a new connection from ``ip`` may open (it then holds a slot until closed)."""
        admission = self.gatekeeper.admit(ip, now)
        if admission.refusal is None:
            return True
        # Debug only: a flood of refusals must not flood the log too.
        self.refused[admission.refusal.value] += 1
        self.log.debug("connection from {ip} refused: {reason}", ip=ip, reason=admission.refusal.value)
        return False

    def _judged(self, ban: Ban | None) -> None:
        """Act on what the gatekeeper made of a miner's behaviour."""
        if ban is None:
            return
        self.log.warn(
            "pool {pool}: {ip} banned for {seconds:.0f} s: {reason}",
            pool=self.config.name,
            ip=ban.ip,
            seconds=ban.remaining(self.clock.seconds()),
            reason=ban.reason,
        )
        if self.shared_bans is not None:
            self.shared_bans.banned(ban)
        self._enforce(ban)

    def _enforce(self, ban: Ban) -> None:
        """Close every connection from a banned IP."""
        for protocol in [p for p in self.connections if p.ip == ban.ip]:
            protocol.close()

    def list_bans(self) -> tuple[Ban, ...]:
        """The bans in force, soonest to end first."""
        return self.gatekeeper.bans.list(self.clock.seconds())

    def ban_ip(self, ip: str, duration: float | None, reason: str) -> Ban | None:
        """Ban ``ip`` (for the pool's ban time if ``duration`` is None): None if it is whitelisted.

        ValueError for a string that is not an IP or a duration that is not > 0.
        """
        ban = self.gatekeeper.bans.ban(ip, self.clock.seconds(), duration=duration, reason=reason)
        self._judged(ban)
        return ban

    def lift_ban(self, ip: str) -> bool:
        """End the ban on ``ip`` now, here and for the pool's other processes: whether it had one."""
        key = normalise_ip(ip)  # ValueError for a string that is not an IP
        lifted = self.gatekeeper.bans.lift(key)
        if self.shared_bans is not None:
            self.shared_bans.lifted(key)
        return lifted

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
        miners = [protocol for protocol in self.connections if protocol.session.extranonce1 is not None]
        broadcast(miners, line, self.broadcast_threads)
        # After the sends, so the last miner gets the job sooner: no share of
        # it can be read before this loop is done.
        for protocol in miners:
            protocol.session.job_sent(job_id)
        sent = len(miners)
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
                    self._vardiff_changed(protocol, new)

    def _set_difficulty(self, protocol: StratumProtocol, difficulty: float) -> None:
        # Sent at once; it applies to the next job the miner gets. Shares of
        # jobs it already has are judged by the lower of old and new.
        protocol.session.difficulty = difficulty
        protocol.send_difficulty(difficulty)

    def _vardiff_changed(self, protocol: StratumProtocol, difficulty: float) -> None:
        # Vardiff knows the port's limits, not the floor the miner asked for.
        difficulty = max(difficulty, protocol.session.minimum_difficulty)
        if difficulty != protocol.session.difficulty:
            self._set_difficulty(protocol, difficulty)

    def _miner_difficulty(self, protocol: StratumProtocol, requested: float) -> None:
        """Give the miner the difficulty it asked for, as far as its port
        allows. Before subscribing it becomes the starting difficulty,
        sent with the subscription."""
        session = protocol.session
        difficulty = clamp_difficulty(requested, protocol.factory.port, session.minimum_difficulty)
        if session.vardiff is not None:
            session.vardiff.restart(self.clock.seconds())
        if difficulty == session.difficulty:
            return
        if session.subscribed:
            self._set_difficulty(protocol, difficulty)
        else:
            session.difficulty = difficulty

    # Requests.
    def _subscribe(self, protocol: StratumProtocol, request_id: Any, params: list[Any]) -> None:
        session = protocol.session
        if params and isinstance(params[0], str):
            session.user_agent = params[0][:128]
        if session.extranonce1 is None:
            if self.extranonces.instance is None:
                self._await_instance(protocol, request_id, params)
                return
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
            if protocol.ip is not None:
                self._judged(self.gatekeeper.auth_failed(protocol.ip, self.clock.seconds()))
            return
        protocol.session.workers[name] = password[:256]
        protocol.reply(request_id, True)
        self._password_difficulty(protocol, name, password)

    def _password_difficulty(self, protocol: StratumProtocol, worker: str, password: str) -> None:
        """``d=N`` in the password pins the connection's difficulty: vardiff
        stops for it. A ``d=`` that holds no difficulty changes nothing (the
        worker is still authorized) but is logged, so the miner's owner can
        find why his difficulty is not what he asked for."""
        options = password_options(password)
        if options.unreadable:
            self.log.info(
                "miner {peer}: {options} in the password of {worker} is not a difficulty: ignored",
                peer=protocol.peer,
                # ascii(): the miner's text may hold anything, unpaired surrogates too,
                # and the log must take it as it is shown.
                options=", ".join(ascii(option) for option in options.unreadable),
                worker=worker,
            )
        if options.difficulty is not None:
            self._miner_difficulty(protocol, options.difficulty)
            protocol.session.vardiff = None

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
        protocol.session.extranonce_subscribed = True
        protocol.reply(request_id, True)

    def _configure(self, protocol: StratumProtocol, request_id: Any, params: list[Any]) -> None:
        """BIP310 ``mining.configure``: see nomp.stratum.configure.negotiate."""
        try:
            negotiated = negotiate(params, self._version_mask)
        except ConfigureError as e:
            raise StratumError(OTHER, str(e)) from None
        session = protocol.session
        if negotiated.version_mask is not None:
            session.version_mask = negotiated.version_mask
        if negotiated.subscribe_extranonce:
            session.extranonce_subscribed = True
        protocol.reply(request_id, negotiated.result)
        if negotiated.minimum_difficulty is not None:
            # A floor within the port's limits (0 asks for none: the port's
            # lowest); it lifts the difficulty now if it is below, and
            # vardiff never goes under it.
            port = protocol.factory.port
            session.minimum_difficulty = clamp_difficulty(negotiated.minimum_difficulty, port)
            if session.difficulty < session.minimum_difficulty:
                self._miner_difficulty(protocol, session.minimum_difficulty)

    def _suggest_difficulty(self, protocol: StratumProtocol, request_id: Any, params: list[Any]) -> None:
        """``mining.suggest_difficulty [difficulty]``, up or down within the
        port's limits. On a vardiff port vardiff goes on from there."""
        try:
            requested = suggested_difficulty(params)
        except ValueError as e:
            raise StratumError(OTHER, str(e)) from None
        protocol.reply(request_id, True)
        self._miner_difficulty(protocol, requested)

    def _get_transactions(self, protocol: StratumProtocol, request_id: Any, params: list[Any]) -> None:
        raise StratumError(OTHER, "mining.get_transactions is not supported")

    def _submit(self, protocol: StratumProtocol, request_id: Any, params: list[Any]) -> None:
        session = protocol.session
        now = self.clock.seconds()
        registry = self.pool.registry
        if registry is None:
            self.shares[SHARE_REFUSALS[OTHER]] += 1
            raise StratumError(OTHER, "the pool has no job yet")
        try:
            submission = check_submit(params, session, registry, self.ledger, now)
        except StratumError as e:
            session.invalid_shares += 1
            self.shares[SHARE_REFUSALS.get(e.code, "invalid")] += 1
            worker = params[0] if params and isinstance(params[0], str) else ""
            # Only an authorized, subscribed miner's submits count: for its
            # invalid shares (as NOMP) and for its vardiff.
            if worker in session.workers and e.code not in (UNAUTHORIZED, NOT_SUBSCRIBED):
                self.recorder.invalid_share(worker, session.difficulty)
                self._vardiff_on_share(protocol, now)
                if protocol.ip is not None:
                    self._judged(self.gatekeeper.share(protocol.ip, False, now))
            raise
        self._vardiff_on_share(protocol, now)
        self._hash(protocol, request_id, submission)

    def _hash(self, protocol: StratumProtocol, request_id: Any, submission: Submission) -> None:
        self.in_flight += 1
        self.hashing.submit(
            submission.job.hasher,
            submission.work,
            lambda hashed: self._landed(hashed, protocol, request_id, submission),
        )

    def _landed(
        self, hashed: ShareHash | Failure, protocol: StratumProtocol, request_id: Any, submission: Submission
    ) -> None:
        # One callback for both outcomes: this runs for every share.
        try:
            if isinstance(hashed, Failure):
                self.shares["error"] += 1
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
                self._vardiff_changed(protocol, new)

    def _hashed(
        self, hashed: ShareHash, protocol: StratumProtocol, request_id: Any, submission: Submission
    ) -> None:
        verdict = judge(submission, hashed, submission.job.hasher.algorithm)
        if not verdict.accepted and self._check_again(protocol, request_id, submission):
            return  # judged once more, and only then counted
        session = protocol.session
        if protocol.ip is not None:
            self._judged(self.gatekeeper.share(protocol.ip, verdict.accepted, self.clock.seconds()))
        if not verdict.accepted:
            session.invalid_shares += 1
            self.recorder.invalid_share(submission.worker, verdict.difficulty)
            assert verdict.error is not None
            self.shares[SHARE_REFUSALS.get(verdict.error.code, "invalid")] += 1
            protocol.reply_error(request_id, verdict.error)
            return
        try:
            self.recorder.valid_share(submission.worker, verdict.difficulty, protocol.factory.solo)
        except RecorderFull as e:
            self.shares["unrecorded"] += 1
            self.log.error("share of {worker} not recorded: {reason}", worker=submission.worker, reason=e)
            protocol.reply_error(request_id, StratumError(OTHER, "the pool cannot record shares now"))
            if verdict.block:  # the block is still worth submitting
                self._block_found(submission, hashed, protocol.factory.solo)
            return
        session.valid_shares += 1
        self.shares["accepted"] += 1
        protocol.reply_true(request_id)
        if verdict.block:
            self._block_found(submission, hashed, protocol.factory.solo)

    def _block_found(self, submission: Submission, hashed: ShareHash, solo: bool) -> None:
        job = submission.job
        record = self.recorder.block_found(
            submission.worker,
            job.template.height,
            job.template.coinbase_value,
            solo,
            network_difficulty=job.hasher.algorithm.difficulty_of(job.template.target),
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
            self.blocks["error"] += 1
            self.recorder.block_settled(record, False, "", None)
            raise
        self.blocks["accepted" if outcome.accepted else "rejected"] += 1
        self.recorder.block_settled(record, outcome.accepted, outcome.block_hash, outcome.coinbase_txid)

    # The operator's messages.
    def miners(self, target: MinerTarget) -> list[StratumProtocol]:
        """The open connections ``target`` picks."""
        return select(target, self.connections)

    def send_reconnect(
        self, target: MinerTarget, host: str | None = None, port: int | None = None, wait: int | None = None
    ) -> int:
        """``client.reconnect`` to the miners ``target`` picks; how many.

        Without host and port a miner reconnects to where it is. The
        connections stay open: a miner that ignores the request mines on.
        """
        params: list[Any] = []
        if host is not None and port is not None:
            # The port as a string: cgminer and its descendants read only a string there.
            params = [host, str(port)] if wait is None else [host, str(port), wait]
        return self._notify(target, "client.reconnect", params)

    def show_message(self, target: MinerTarget, text: str) -> int:
        """``client.show_message`` to the miners ``target`` picks; how many."""
        return self._notify(target, "client.show_message", [text])

    def _notify(self, target: MinerTarget, method: str, params: list[Any]) -> int:
        line = encode_notification(method, params)
        chosen = self.miners(target)
        for protocol in chosen:
            protocol.send_line(line)
        self.log.info(
            "pool {pool}: {method} {params} sent to {miners} miners ({target})",
            pool=self.config.name,
            method=method,
            params=params,
            miners=len(chosen),
            target=target.describe(),
        )
        return len(chosen)

    # Changing extranonce1s.
    def set_extranonce(self, protocol: StratumProtocol) -> bool:
        """Give a connection a new extranonce1: ``mining.set_extranonce``, then
        the current job, clean, so its next work uses the new value.

        False, and nothing sent, for a connection not subscribed, or not
        extranonce-subscribed, or while no instance byte is held. Shares of
        jobs sent before are checked against the old value (``_check_again``).
        """
        session = protocol.session
        if session.extranonce1 is None or not session.extranonce_subscribed:
            return False
        if self.extranonces.instance is None:
            return False
        new = self.extranonces.take()
        old = change_extranonce1(session, new)
        if old is not None:
            self.extranonces.release(old)  # after the take: the new value is never the old one
        protocol.send_line(encode_notification("mining.set_extranonce", [new.hex(), EXTRANONCE2_SIZE]))
        registry = self.pool.registry
        if registry is not None and registry.current is not None:
            self._send_job(protocol, registry.current, True)
        return True

    def set_instance(self, instance: int | None) -> None:
        """The process's instance byte is now ``instance`` (see InstanceLeaseService).

        None: no byte is held just now; new subscribes wait, and live
        connections keep their extranonce1. A byte other than the one live
        extranonce1s start with re-partitions them: each extranonce-subscribed
        connection gets a new one, the others are asked to reconnect and
        closed. Waiting subscribes are then answered.
        """
        if instance is None:
            self.extranonces.suspend()
            return
        if self.extranonces.use(instance):
            self._repartition(instance)
        waiting, self._awaiting_instance = self._awaiting_instance, {}
        for protocol, (request_id, params) in waiting.items():
            try:
                self._subscribe(protocol, request_id, params)
            except Exception:
                self.log.failure("pool {pool}: a waiting subscribe failed", pool=self.config.name)
                protocol.reply_error(request_id, StratumError(OTHER, "internal error"))

    def _repartition(self, instance: int) -> None:
        moved = closed = 0
        reconnect = encode_notification("client.reconnect", [])
        for protocol in list(self.connections):
            session = protocol.session
            if session.extranonce1 is None:
                continue
            if self.set_extranonce(protocol):
                moved += 1
            else:
                # Its extranonce1 may now be another process's: it must not mine on with it.
                session.extranonce1 = None
                protocol.send_line(reconnect)
                protocol.close()
                closed += 1
        self.log.warn(
            "pool {pool}: extranonce1 instance byte now {instance}: {moved} miners given a new "
            "extranonce1, {closed} asked to reconnect",
            pool=self.config.name,
            instance=instance,
            moved=moved,
            closed=closed,
        )

    def _await_instance(self, protocol: StratumProtocol, request_id: Any, params: list[Any]) -> None:
        # No instance byte yet (it is being leased from Redis): the subscribe
        # is answered by set_instance, the connection timeout still applies.
        if protocol in self._awaiting_instance:
            raise StratumError(OTHER, "a subscribe is already waiting for the pool to start")
        if not self._awaiting_instance:
            self.log.info(
                "pool {pool}: subscribes wait for the extranonce1 instance byte", pool=self.config.name
            )
        self._awaiting_instance[protocol] = (request_id, params)

    def _check_again(self, protocol: StratumProtocol, request_id: Any, submission: Submission) -> bool:
        """Hash a refused share once more with the extranonce1 its job was
        sent with before a set_extranonce: the miner may have made it before
        it read the change. Whether it went to be hashed."""
        again = with_earlier_extranonce1(submission, protocol.session)
        if again is None:
            return False
        self._hash(protocol, request_id, again)
        return True

    def close_all(self) -> None:
        """Close every miner connection (at shutdown)."""
        for protocol in list(self.connections):
            protocol.close()
