"""StratumMethods: the Bitcoin family's Stratum v1 methods, one pool's.

The connection's handler: it reads each request's params, keeps the
session's state and answers; shares go on to the SharePipeline, bans
evidence to the BanEnforcer, extranonce1s come from Subscriptions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nomp.chain.address import AddressError, decode_address
from nomp.chain.jobs import Job, JobRegistry
from nomp.config import PoolConfig
from nomp.hashing import ShareHash
from nomp.stratum import difficulty
from nomp.stratum.broadcast import Broadcaster
from nomp.stratum.configure import (
    ConfigureError,
    clamp_difficulty,
    negotiate,
    password_options,
    suggested_difficulty,
)
from nomp.stratum.connection import Connection
from nomp.stratum.enforcement import BanEnforcer
from nomp.stratum.errors import OTHER, UNAUTHORIZED, StratumError
from nomp.stratum.pipeline import SharePipeline
from nomp.stratum.registry import ConnectionRegistry
from nomp.stratum.session import MAX_WORKER_NAME
from nomp.stratum.shares import EXTRANONCE2_SIZE, ShareLedger, Submission, check_submit
from nomp.stratum.subscriptions import Subscriptions

_WORKER_NAME = re.compile(r"[A-Za-z0-9._\-@+]+")  # no ':' (it separates fields in Redis)
SUBSCRIPTION_ID = "deadbeefcafebabe"
MAX_WORKERS = 64  # names one connection may authorize (proxies carry several)


class JobSource(Protocol):
    """What the Stratum side needs of its pool's jobs."""

    registry: JobRegistry | None


def current_job(jobs: JobSource) -> Job | None:
    """The job new miners get: the registry's current one, once there is a registry."""
    registry = jobs.registry
    return registry.current if registry is not None else None


class StratumMethods:
    """Answers one pool's miners (a ConnectionHandler)."""

    log = Logger()

    def __init__(
        self,
        config: PoolConfig,
        jobs: JobSource,
        connections: ConnectionRegistry,
        broadcaster: Broadcaster,
        subscriptions: Subscriptions,
        pipeline: SharePipeline[Submission, ShareHash],
        bans: BanEnforcer,
        ledger: ShareLedger,
        clock: IReactorTime,
    ) -> None:
        self._config = config
        self._jobs = jobs
        self._connections = connections
        self._broadcaster = broadcaster
        self._subscriptions = subscriptions
        self._pipeline = pipeline
        self._bans = bans
        self._ledger = ledger
        self._clock = clock
        self._version_mask = config.version_mask
        self.methods: dict[str, Callable[[Connection, Any, list[Any]], None]] = {
            "mining.subscribe": self._subscribe,
            "mining.authorize": self._authorize,
            "mining.submit": self.submit,
            "mining.configure": self._configure,
            "mining.suggest_difficulty": self._suggest_difficulty,
            "mining.extranonce.subscribe": self._extranonce_subscribe,
            "mining.get_transactions": self._get_transactions,
        }

    # ConnectionHandler.
    def connected(self, connection: Connection) -> None:
        self._connections.add(connection)

    def disconnected(self, connection: Connection) -> None:
        self._connections.discard(connection)
        self._bans.closed(connection)
        self._subscriptions.released(connection)

    def malformed(self, connection: Connection) -> None:
        connection.session.malformed += 1
        self._bans.malformed(connection)

    def request(self, connection: Connection, request_id: Any, method: str, params: list[Any]) -> None:
        handler = self.methods.get(method)
        if handler is None:
            raise StratumError(OTHER, f"unknown method {method[:64]!r}")
        handler(connection, request_id, params)

    # Requests.
    def _subscribe(self, connection: Connection, request_id: Any, params: list[Any]) -> None:
        session = connection.session
        if params and isinstance(params[0], str):
            session.user_agent = params[0][:128]
        if not self._subscriptions.take(
            connection, request_id, lambda: self._subscribe(connection, request_id, params)
        ):
            return
        assert session.extranonce1 is not None
        subscriptions = [
            ["mining.set_difficulty", SUBSCRIPTION_ID],
            ["mining.notify", SUBSCRIPTION_ID],
        ]
        connection.reply(request_id, [subscriptions, session.extranonce1.hex(), EXTRANONCE2_SIZE])
        connection.send_difficulty(session.difficulty)
        job = current_job(self._jobs)
        if job is not None:
            self._broadcaster.send_job(connection, job, True)

    def _authorize(self, connection: Connection, request_id: Any, params: list[Any]) -> None:
        if not params or not isinstance(params[0], str):
            raise StratumError(OTHER, "invalid params: expected username, password")
        name = params[0]
        password = params[1] if len(params) > 1 and isinstance(params[1], str) else ""
        session = connection.session
        problem = self._check_worker_name(name)
        if problem is None and name not in session.workers and len(session.workers) >= MAX_WORKERS:
            problem = f"at most {MAX_WORKERS} workers per connection"
        if problem is not None:
            connection.reply_refusal(request_id, StratumError(UNAUTHORIZED, problem))
            self._bans.auth_failed(connection)
            return
        session.workers[name] = password[:256]
        connection.reply(request_id, True)
        self._password_difficulty(connection, name, password)

    def _password_difficulty(self, connection: Connection, worker: str, password: str) -> None:
        """``d=N`` in the password pins the connection's difficulty: vardiff
        stops for it. A ``d=`` that holds no difficulty changes nothing (the
        worker is still authorized) but is logged, so the miner's owner can
        find why his difficulty is not what he asked for."""
        options = password_options(password)
        if options.unreadable:
            self.log.info(
                "miner {peer}: {options} in the password of {worker} is not a difficulty: ignored",
                peer=connection.peer,
                # ascii(): the miner's text may hold anything, unpaired surrogates too,
                # and the log must take it as it is shown.
                options=", ".join(ascii(option) for option in options.unreadable),
                worker=worker,
            )
        if options.difficulty is not None:
            difficulty.miner_asked(connection, options.difficulty, self._clock.seconds())
            connection.session.vardiff = None

    def _check_worker_name(self, name: str) -> str | None:
        if not 0 < len(name) <= MAX_WORKER_NAME or not _WORKER_NAME.fullmatch(name):
            return f"invalid worker name: use letters, digits and ._-@+ (at most {MAX_WORKER_NAME})"
        if self._config.usernames == "address":
            address = name.split(".", 1)[0]
            try:
                decode_address(address, self._config.coin.network)
            except AddressError as e:
                return f"{address} is not a {self._config.coin.name} address: {e}"
        return None

    def _extranonce_subscribe(self, connection: Connection, request_id: Any, params: list[Any]) -> None:
        connection.session.extranonce_subscribed = True
        connection.reply(request_id, True)

    def _configure(self, connection: Connection, request_id: Any, params: list[Any]) -> None:
        """BIP310 ``mining.configure``: see nomp.stratum.configure.negotiate."""
        try:
            negotiated = negotiate(params, self._version_mask)
        except ConfigureError as e:
            raise StratumError(OTHER, str(e)) from None
        session = connection.session
        if negotiated.version_mask is not None:
            session.version_mask = negotiated.version_mask
        if negotiated.subscribe_extranonce:
            session.extranonce_subscribed = True
        connection.reply(request_id, negotiated.result)
        if negotiated.minimum_difficulty is not None:
            # A floor within the port's limits (0 asks for none: the port's
            # lowest); it lifts the difficulty now if it is below, and
            # vardiff never goes under it.
            session.minimum_difficulty = clamp_difficulty(
                negotiated.minimum_difficulty, connection.settings.port
            )
            if session.difficulty < session.minimum_difficulty:
                difficulty.miner_asked(connection, session.minimum_difficulty, self._clock.seconds())

    def _suggest_difficulty(self, connection: Connection, request_id: Any, params: list[Any]) -> None:
        """``mining.suggest_difficulty [difficulty]``, up or down within the
        port's limits. On a vardiff port vardiff goes on from there."""
        try:
            requested = suggested_difficulty(params)
        except ValueError as e:
            raise StratumError(OTHER, str(e)) from None
        connection.reply(request_id, True)
        difficulty.miner_asked(connection, requested, self._clock.seconds())

    def _get_transactions(self, connection: Connection, request_id: Any, params: list[Any]) -> None:
        raise StratumError(OTHER, "mining.get_transactions is not supported")

    def submit(
        self, connection: Connection, request_id: Any, params: list[Any], solo: bool | None = None
    ) -> None:
        """``mining.submit``; ``solo`` as SharePipeline.submit takes it."""
        now = self._clock.seconds()
        registry = self._jobs.registry
        if registry is None:
            raise self._pipeline.no_work()
        try:
            submission = check_submit(params, connection.session, registry, self._ledger, now)
        except StratumError as e:
            self._pipeline.refused(connection, params[0] if params else None, e, now)
            raise
        self._pipeline.submit(connection, request_id, submission, now, solo)
