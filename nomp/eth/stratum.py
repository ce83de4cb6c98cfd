"""The Ethereum family's stratum port: eth-proxy and NiceHash
EthereumStratum/1.0.0 on the same port, told apart by a connection's first
request (``eth_submitLogin`` or ``mining.subscribe``).

``EthStratumProtocol`` frames and translates (it is the Bitcoin family's
StratumProtocol with each dialect's replies); ``EthStratumMethods``
answers; ``EthBroadcaster`` sends new work to every miner.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal, Protocol

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger

from nomp.config import EthPoolConfig
from nomp.eth.logins import LoginError, split_user, worker_name
from nomp.eth.shares import (
    INVALID,
    METHOD_NOT_FOUND,
    WORK_NOT_READY,
    EthShare,
    NonceLedger,
    check_submit_work,
    duplicate,
    find_job,
    read_nicehash_nonce,
)
from nomp.eth.work import EthWork, WorkBook, share_target, target_hex
from nomp.hashing.ethash import EthashResult
from nomp.stratum.broadcast import broadcast, default_threads
from nomp.stratum.connection import Connection
from nomp.stratum.defence import ip_of
from nomp.stratum.enforcement import BanEnforcer
from nomp.stratum.errors import NOT_SUBSCRIBED, OTHER, UNAUTHORIZED, StratumError
from nomp.stratum.pipeline import SharePipeline
from nomp.stratum.protocol import StratumFactory, StratumProtocol, encode_notification
from nomp.stratum.registry import ConnectionRegistry
from nomp.stratum.session import MinerSession

Dialect = Literal["ethproxy", "nicehash"]
NICEHASH_PROTOCOL = "EthereumStratum/1.0.0"
# NiceHash's difficulty 1 is the Bitcoin family's target 0x00000000ffff00...,
# about 2^32 hashes: pool difficulty (hashes) times this is NiceHash's.
NICEHASH_UNIT = 0xFFFF / 2**48
MAX_WORKERS = 64  # worker names one connection may mine for
SUBSCRIPTION_ID = "e7a51c0de0000001"


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def push_line(work: EthWork, difficulty: float) -> bytes:
    """eth-proxy's pushed work (id 0, as Claymore's miners expect)."""
    return _encode({"id": 0, "jsonrpc": "2.0", "result": work_params(work, difficulty)})


def work_params(work: EthWork, difficulty: float) -> list[str]:
    """[seal hash, seed hash, share boundary], as eth_getWork answers."""
    return [work.header_hex, work.seed_hex, target_hex(share_target(difficulty))]


def notify_line(work: EthWork, clean: bool) -> bytes:
    """NiceHash's ``mining.notify [job id, seed hash, seal hash, clean]`` (hex without 0x)."""
    return encode_notification("mining.notify", [work.job_id, work.seed_hex[2:], work.header_hex[2:], clean])


class EthStratumProtocol(StratumProtocol):
    """One miner's connection to an Ethereum-family stratum port."""

    handler: EthStratumMethods

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dialect: Dialect | None = None
        self.login: str | None = None  # the address it logged in with
        self._stratum_style = False  # the request being answered is a mining.* one

    def _dispatch(self, request_id: Any, method: str, params: list[Any], message: dict[str, Any]) -> None:
        self._stratum_style = method.startswith("mining.")
        self.handler.eth_request(self, request_id, method, params, message.get("worker"))

    def _nicehash_style(self) -> bool:
        """NiceHash's replies (Stratum's error arrays), also for a stratum
        request before the dialect is known."""
        return self.dialect == "nicehash" or (self.dialect is None and self._stratum_style)

    def reply(self, request_id: Any, result: Any) -> None:
        if self._nicehash_style():
            super().reply(request_id, result)
        else:
            self._write(_encode({"id": request_id, "jsonrpc": "2.0", "result": result}))

    def reply_true(self, request_id: Any) -> None:
        if self._nicehash_style():
            super().reply_true(request_id)
        else:
            self.reply(request_id, True)

    def reply_error(self, request_id: Any, error: StratumError) -> None:
        if self._nicehash_style():
            super().reply_error(request_id, error)
        else:  # JSON-RPC 2.0's error object, as OEP answers
            error_object = {"code": error.code, "message": error.message}
            self._write(_encode({"id": request_id, "jsonrpc": "2.0", "result": None, "error": error_object}))

    def reply_refusal(self, request_id: Any, error: StratumError) -> None:
        self.reply_error(request_id, error)

    def send_difficulty(self, difficulty: float) -> None:
        if self.dialect == "nicehash":
            super().send_difficulty(difficulty * NICEHASH_UNIT)
        else:
            self.handler.difficulty_changed(self)


class EthStratumFactory(StratumFactory):
    """Builds the connections of one Ethereum-family stratum port."""

    handler: EthStratumMethods

    def buildProtocol(self, addr: IAddress | None) -> EthStratumProtocol | None:
        now = self.clock.seconds()
        ip = ip_of(addr)
        if ip is not None and not self.admit(ip, now):
            return None
        session = MinerSession(difficulty=self.settings.port.diff, connected_at=now)
        vardiff = self.settings.vardiff
        if vardiff is not None:
            session.vardiff = vardiff.start(now)
        return EthStratumProtocol(self.handler, self.settings, session, self.clock, self.idle_timeout, ip)


class Extranonces:
    """NiceHash extranonces: 3 bytes, the process's instance byte and a
    counter, each held by one connection until it closes."""

    def __init__(self, instance: int = 0) -> None:
        self.instance = instance
        self._next = 0
        self._held: set[int] = set()

    def take(self) -> bytes | None:
        for _ in range(0x10000):
            value, self._next = self._next, (self._next + 1) & 0xFFFF
            if value not in self._held:
                self._held.add(value)
                return bytes([self.instance]) + value.to_bytes(2, "big")
        return None

    def release(self, extranonce: bytes) -> None:
        if len(extranonce) == 3:
            self._held.discard(int.from_bytes(extranonce[1:], "big"))


class WorkSource(Protocol):
    """Where the current work is (the pool's EthPoolService)."""

    book: WorkBook


class EthStratumMethods:
    """Answers one pool's Ethereum-family stratum miners (a ConnectionHandler)."""

    log = Logger()

    def __init__(
        self,
        config: EthPoolConfig,
        source: WorkSource,
        connections: ConnectionRegistry,
        pipeline: SharePipeline[EthShare, EthashResult],
        bans: BanEnforcer,
        ledger: NonceLedger,
        extranonces: Extranonces,
        clock: IReactorTime,
    ) -> None:
        self._config = config
        self._source = source
        self._connections = connections
        self._pipeline = pipeline
        self._bans = bans
        self._ledger = ledger
        self._extranonces = extranonces
        self._clock = clock
        self._addresses_only = config.usernames == "address"
        self._methods: dict[str, Callable[[EthStratumProtocol, Any, list[Any], object], None]] = {
            "eth_submitLogin": self._login,
            "eth_getWork": self._get_work,
            "eth_submitWork": self._submit_work,
            "eth_submitHashrate": self._submit_hashrate,
            "mining.subscribe": self._subscribe,
            "mining.authorize": self._authorize,
            "mining.extranonce.subscribe": self._extranonce_subscribe,
            "mining.submit": self._submit,
        }

    # ConnectionHandler.
    def connected(self, connection: Connection) -> None:
        self._connections.add(connection)

    def disconnected(self, connection: Connection) -> None:
        self._connections.discard(connection)
        self._bans.closed(connection)
        extranonce = connection.session.extranonce1
        if getattr(connection, "dialect", None) == "nicehash" and extranonce:
            self._extranonces.release(extranonce)

    def malformed(self, connection: Connection) -> None:
        connection.session.malformed += 1
        self._bans.malformed(connection)

    def request(self, connection: Connection, request_id: Any, method: str, params: list[Any]) -> None:
        assert isinstance(connection, EthStratumProtocol)
        self.eth_request(connection, request_id, method, params, None)

    def eth_request(
        self, connection: EthStratumProtocol, request_id: Any, method: str, params: list[Any], worker: object
    ) -> None:
        handler = self._methods.get(method)
        if handler is None:
            raise StratumError(METHOD_NOT_FOUND, "Method not found")
        handler(connection, request_id, params, worker)

    def difficulty_changed(self, connection: EthStratumProtocol) -> None:
        """eth-proxy has no set_difficulty: the current work goes again, with the new boundary."""
        work = self._source.book.current
        if work is not None and connection.login is not None:
            connection.session.job_sent(work.job_id)
            connection.send_line(push_line(work, connection.session.difficulty))

    # eth-proxy.
    def _login(
        self, connection: EthStratumProtocol, request_id: Any, params: list[Any], worker: object
    ) -> None:
        if connection.dialect == "nicehash":
            raise StratumError(METHOD_NOT_FOUND, "Method not found")
        if not params or type(params[0]) is not str:
            raise StratumError(INVALID, "Invalid params")
        try:
            login, _ = split_user(params[0], self._addresses_only)
        except LoginError as e:
            self._bans.auth_failed(connection)
            raise StratumError(INVALID, str(e)) from None
        self._add_worker(connection, f"{login}.{worker_name(worker)}")  # before anything changes
        connection.dialect = "ethproxy"
        connection.login = login
        connection.session.extranonce1 = b""  # it mines: new work is pushed to it
        connection.reply(request_id, True)

    def _get_work(
        self, connection: EthStratumProtocol, request_id: Any, params: list[Any], worker: object
    ) -> None:
        if connection.dialect == "nicehash":
            raise StratumError(METHOD_NOT_FOUND, "Method not found")
        work = self._source.book.current
        if work is None:
            raise StratumError(WORK_NOT_READY, "Work not ready")
        connection.session.job_sent(work.job_id)
        connection.reply(request_id, work_params(work, connection.session.difficulty))

    def _submit_hashrate(
        self, connection: EthStratumProtocol, request_id: Any, params: list[Any], worker: object
    ) -> None:
        connection.reply(request_id, True)

    def _submit_work(
        self, connection: EthStratumProtocol, request_id: Any, params: list[Any], worker: object
    ) -> None:
        now = self._clock.seconds()
        login = connection.login
        if login is None or connection.dialect != "ethproxy":
            self._pipeline.refused(connection, None, StratumError(NOT_SUBSCRIBED, "Not subscribed"), now)
            raise StratumError(NOT_SUBSCRIBED, "Not subscribed")
        name = f"{login}.{worker_name(worker)}"
        try:
            self._add_worker(connection, name)
            share = check_submit_work(params, name, connection.session, self._source.book, self._ledger)
        except StratumError as e:
            self._pipeline.refused(connection, name, e, now)
            raise
        self._pipeline.submit(connection, request_id, share, now)

    def _add_worker(self, connection: EthStratumProtocol, name: str) -> None:
        workers = connection.session.workers
        if name not in workers:
            if len(workers) >= MAX_WORKERS:
                raise StratumError(UNAUTHORIZED, f"at most {MAX_WORKERS} workers per connection")
            workers[name] = ""

    # NiceHash EthereumStratum/1.0.0.
    def _subscribe(
        self, connection: EthStratumProtocol, request_id: Any, params: list[Any], worker: object
    ) -> None:
        if connection.dialect is not None:
            raise StratumError(OTHER, "already subscribed")
        if not any(type(p) is str and p.startswith("EthereumStratum/") for p in params[:2]):
            raise StratumError(OTHER, f"this port speaks {NICEHASH_PROTOCOL} and eth-proxy")
        extranonce = self._extranonces.take()
        if extranonce is None:
            raise StratumError(OTHER, "no extranonce free: too many miners on this pool")
        connection.dialect = "nicehash"
        session = connection.session
        if type(params[0]) is str:
            session.user_agent = params[0][:128]
        session.extranonce1 = extranonce
        connection.reply(
            request_id, [["mining.notify", SUBSCRIPTION_ID, NICEHASH_PROTOCOL], extranonce.hex()]
        )

    def _authorize(
        self, connection: EthStratumProtocol, request_id: Any, params: list[Any], worker: object
    ) -> None:
        if connection.dialect != "nicehash":
            raise StratumError(NOT_SUBSCRIBED, "Not subscribed")
        if not params or type(params[0]) is not str:
            raise StratumError(OTHER, "invalid params: expected username, password")
        try:
            login, name = split_user(params[0], self._addresses_only)
            self._add_worker(connection, f"{login}.{name}")  # as credited: bounded, one per spelling
        except (LoginError, StratumError) as e:
            connection.reply_refusal(request_id, StratumError(UNAUTHORIZED, str(e)))
            self._bans.auth_failed(connection)
            return
        first = connection.login is None
        connection.login = login
        connection.reply(request_id, True)
        if first:
            connection.send_difficulty(connection.session.difficulty)
            work = self._source.book.current
            if work is not None:
                connection.session.job_sent(work.job_id)
                connection.send_line(notify_line(work, True))

    def _extranonce_subscribe(
        self, connection: EthStratumProtocol, request_id: Any, params: list[Any], worker: object
    ) -> None:
        connection.reply(request_id, True)  # an extranonce is the connection's for its lifetime

    def _submit(
        self, connection: EthStratumProtocol, request_id: Any, params: list[Any], worker: object
    ) -> None:
        now = self._clock.seconds()
        session = connection.session
        user = params[0] if params else None
        try:
            if len(params) < 3 or type(user) is not str:
                raise StratumError(OTHER, "invalid params: expected worker, job id, nonce")
            name = _credited(user, self._addresses_only)
            if name is None or name not in session.workers:
                raise StratumError(UNAUTHORIZED, "unauthorized worker")
            if connection.dialect != "nicehash" or session.extranonce1 is None:
                raise StratumError(NOT_SUBSCRIBED, "Not subscribed")
            work = find_job(self._source.book, params[1])
            nonce = read_nicehash_nonce(params[2], session.extranonce1)
            if not self._ledger.add(work.height, work.header_hash, nonce):
                raise duplicate()
        except StratumError as e:
            self._pipeline.refused(connection, _credited(user, self._addresses_only), e, now)
            raise
        share = EthShare(name, work, nonce, None, session.difficulties_for(work.job_id))
        self._pipeline.submit(connection, request_id, share, now)


def _credited(user: object, addresses_only: bool) -> str | None:
    """The name a NiceHash user's shares are credited to, or None if it cannot be one."""
    if type(user) is not str:
        return None
    try:
        login, name = split_user(user, addresses_only)
    except LoginError:
        return None
    return f"{login}.{name}"


class EthBroadcaster:
    """Sends new work to a pool's Ethereum-family stratum miners: NiceHash
    miners one notify line, eth-proxy miners a push per difficulty."""

    log = Logger()

    def __init__(self, pool_name: str, connections: ConnectionRegistry, clock: IReactorTime) -> None:
        self._pool_name = pool_name
        self._connections = connections
        self._clock = clock
        self.threads = default_threads()

    def new_work(self, work: EthWork) -> int:
        """Send ``work`` to every miner that mines; how many it went to."""
        started = self._clock.seconds()
        groups: dict[bytes, list[Connection]] = {}
        notify = notify_line(work, True)
        pushes: dict[float, bytes] = {}
        miners = [c for c in self._connections if c.session.extranonce1 is not None]
        for connection in miners:
            if getattr(connection, "dialect", None) == "nicehash":
                if getattr(connection, "login", None) is None:
                    continue  # not authorized: it gets its first work then
                line = notify
            else:
                difficulty = connection.session.difficulty
                line = pushes.get(difficulty) or pushes.setdefault(difficulty, push_line(work, difficulty))
            groups.setdefault(line, []).append(connection)
        for line, connections in groups.items():
            broadcast(connections, line, self.threads)
        for connection in miners:
            connection.session.job_sent(work.job_id)
        self.log.info(
            "pool {pool}: work {job_id} at height {height} sent to {miners} miners in {ms:.1f} ms",
            pool=self._pool_name,
            job_id=work.job_id,
            height=work.height,
            miners=sum(len(c) for c in groups.values()),
            ms=(self._clock.seconds() - started) * 1000,
        )
        return len(miners)
