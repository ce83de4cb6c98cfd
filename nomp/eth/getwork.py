"""HTTP getwork: ``POST /<login>[/<worker>]`` with JSON-RPC bodies.

Each request body holds one or more JSON-RPC requests (back to back, as
OEP reads them); the response holds their replies, once every share in it
is judged. A miner's state (difficulty, vardiff, counters) is kept per
login and worker between requests, and forgotten after
``connection_timeout`` seconds without one.

Each HTTP connection holds one of the pool's connection slots (the
``banning`` limits its stratum ports count against too) from its accept to
its close; one over a limit is closed before a byte is read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.web import http, resource, server

from nomp.config import EthPoolConfig
from nomp.eth.logins import LoginError, check_address, worker_name
from nomp.eth.shares import (
    INVALID,
    METHOD_NOT_FOUND,
    WORK_NOT_READY,
    EthShare,
    NonceLedger,
    check_submit_work,
)
from nomp.eth.stratum import WorkSource, work_params
from nomp.eth.work import share_target
from nomp.hashing.ethash import EthashResult
from nomp.stratum.banning import normalise_ip
from nomp.stratum.connection import PortSettings
from nomp.stratum.defence import ip_of
from nomp.stratum.enforcement import BanEnforcer
from nomp.stratum.errors import OTHER, StratumError
from nomp.stratum.pipeline import SharePipeline
from nomp.stratum.session import MinerSession

MAX_REQUESTS = 16  # JSON-RPC requests one body may hold
MAX_MINERS = 100_000  # miners whose state is kept between requests


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


class GetworkMiner:
    """One login and worker's state between requests."""

    __slots__ = ("ip", "seen_at", "session")

    def __init__(self, session: MinerSession, ip: str | None) -> None:
        self.session = session
        self.ip = ip
        self.seen_at = session.connected_at


class GetworkConnection:
    """The Connection the share pipeline answers one request's shares through."""

    def __init__(self, miner: GetworkMiner, settings: PortSettings, exchange: GetworkExchange) -> None:
        self.session = miner.session
        self.settings = settings
        self.ip = miner.ip
        self.peer = miner.ip or "?"
        self._exchange = exchange

    @property
    def closing(self) -> bool:
        return self._exchange.done

    def peer_port(self) -> int | None:
        return None

    def reply(self, request_id: Any, result: Any) -> None:
        self._exchange.answered(_encode({"id": request_id, "jsonrpc": "2.0", "result": result}))

    def reply_true(self, request_id: Any) -> None:
        self.reply(request_id, True)

    def reply_refusal(self, request_id: Any, error: StratumError) -> None:
        self.reply_error(request_id, error)

    def reply_error(self, request_id: Any, error: StratumError) -> None:
        self._exchange.answered(_error(request_id, error))

    def send_difficulty(self, difficulty: float) -> None:
        pass  # the next eth_getWork carries the new boundary

    def send_line(self, line: bytes) -> None:
        pass  # nothing is pushed over getwork

    def direct_fd(self) -> int | None:
        return None

    def send_rest(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass  # a banned IP's next request is refused


def _error(request_id: Any, error: StratumError) -> bytes:
    error_object = {"code": error.code, "message": error.message}
    return _encode({"id": request_id, "jsonrpc": "2.0", "result": None, "error": error_object})


class GetworkExchange:
    """One HTTP request's replies, in order, sent once all have come."""

    def __init__(self, request: server.Request, expected: int) -> None:
        self._request = request
        self._expected = expected
        self._replies: list[bytes] = []
        self.done = False
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, _: object) -> None:
        self.done = True  # the miner hung up: its shares still count, their replies go nowhere

    def answered(self, line: bytes) -> None:
        self._replies.append(line)
        if len(self._replies) == self._expected:
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        request = self._request
        request.setHeader(b"content-type", b"application/json")
        body = self._replies[0] if len(self._replies) == 1 else b"\n".join(self._replies)
        request.write(body + b"\n")
        request.finish()


class GetworkResource(resource.Resource):
    """The getwork endpoint of one port."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        config: EthPoolConfig,
        source: WorkSource,
        settings: PortSettings,
        pipeline: SharePipeline[EthShare, EthashResult],
        bans: BanEnforcer,
        ledger: NonceLedger,
        clock: IReactorTime,
    ) -> None:
        super().__init__()
        self._config = config
        self._source = source
        self._settings = settings
        self._pipeline = pipeline
        self._bans = bans
        self._ledger = ledger
        self._clock = clock
        self._addresses_only = config.usernames == "address"
        self.miners: dict[tuple[str, str, str | None], GetworkMiner] = {}
        self._methods: dict[str, Callable[[GetworkConnection, Any, list[Any], str], None]] = {
            "eth_getWork": self._get_work,
            "eth_submitWork": self._submit_work,
            "eth_submitHashrate": self._submit_hashrate,
            "eth_getBlockByNumber": self._pending_block,
        }

    def render_GET(self, request: server.Request) -> bytes:
        request.setResponseCode(http.NOT_ALLOWED)
        request.setHeader(b"allow", b"POST")
        return b""

    def render_POST(self, request: server.Request) -> bytes | int:
        now = self._clock.seconds()
        ip = _client_ip(request)
        if ip is not None and self._bans.gatekeeper.bans.is_banned(ip, now):
            request.setResponseCode(http.FORBIDDEN)
            return b""
        if getattr(request, "too_large", False):
            request.setResponseCode(http.EXPECTATION_FAILED)
            self._bans_malformed(ip)
            return b"Request too large\n"
        path = [segment.decode("utf-8", "replace") for segment in request.postpath or () if segment]
        if not 1 <= len(path) <= 2:
            request.setResponseCode(http.NOT_FOUND)
            return b"POST /<address>[/<worker>]\n"
        try:
            login = check_address(path[0]) if self._addresses_only else path[0].lower()[:64]
        except LoginError as e:
            return self._refuse_all(request, ip, StratumError(INVALID, str(e)))
        worker = worker_name(path[1]) if len(path) == 2 else "0"
        assert request.content is not None
        messages = _messages(request.content.read())
        if not messages:  # None (not JSON) or nothing
            request.setResponseCode(http.BAD_REQUEST)
            return self._refuse_all(request, ip, StratumError(INVALID, "Malformed request"))
        miner = self._miner(login, worker, ip, now)
        connection = GetworkConnection(miner, self._settings, GetworkExchange(request, len(messages)))
        for message in messages:
            self._handle(connection, message, f"{login}.{worker}")
        return server.NOT_DONE_YET

    def _refuse_all(self, request: server.Request, ip: str | None, error: StratumError) -> bytes:
        self._bans_malformed(ip)
        request.setHeader(b"content-type", b"application/json")
        return _error(None, error) + b"\n"

    def _bans_malformed(self, ip: str | None) -> None:
        if ip is not None:
            self._bans._judged(self._bans.gatekeeper.malformed(ip, self._clock.seconds()))

    def _miner(self, login: str, worker: str, ip: str | None, now: float) -> GetworkMiner:
        key = (login, worker, ip)
        miner = self.miners.get(key)
        if miner is None:
            if len(self.miners) >= MAX_MINERS:
                self.forget_idle(now, everything_older=True)
            session = MinerSession(difficulty=self._settings.port.diff, connected_at=now)
            vardiff = self._settings.vardiff
            if vardiff is not None:
                session.vardiff = vardiff.start(now)
            session.extranonce1 = b""
            session.workers[f"{login}.{worker}"] = ""
            miner = GetworkMiner(session, ip)
            self.miners[key] = miner
        miner.seen_at = now
        return miner

    def forget_idle(self, now: float, everything_older: bool = False) -> int:
        """Forget miners that sent nothing for ``connection_timeout`` seconds
        (with ``everything_older``: the older half, to make room)."""
        limit = self._config.connection_timeout
        if everything_older and self.miners:
            ages = sorted(m.seen_at for m in self.miners.values())
            limit = now - ages[len(ages) // 2]
        gone = [key for key, miner in self.miners.items() if now - miner.seen_at >= limit]
        for key in gone:
            del self.miners[key]
        return len(gone)

    def _handle(self, miner: GetworkConnection, message: object, name: str) -> None:
        if not isinstance(message, dict) or "id" not in message:
            miner.reply_error(None, StratumError(INVALID, "Malformed request"))
            self._bans_malformed(miner.ip)
            return
        request_id = message.get("id")
        if not _echoable(request_id):
            request_id = None  # JSON-RPC: an id that cannot be read is answered as null
        method = message.get("method")
        params = message.get("params")
        if params is None:
            params = []
        handler = self._methods.get(method) if isinstance(method, str) else None
        if handler is None:
            miner.reply_error(request_id, StratumError(METHOD_NOT_FOUND, "Method not found"))
            self._bans_malformed(miner.ip)
            return
        if not isinstance(params, list):
            miner.reply_error(request_id, StratumError(INVALID, "Invalid params"))
            return
        try:
            handler(miner, request_id, params, name)
        except StratumError as e:
            miner.reply_error(request_id, e)
        except Exception:
            self.log.failure("getwork {method} from {peer} failed", method=method, peer=miner.peer)
            miner.reply_error(request_id, StratumError(OTHER, "internal error"))

    def _get_work(self, miner: GetworkConnection, request_id: Any, params: list[Any], name: str) -> None:
        work = self._source.book.current
        if work is None:
            raise StratumError(WORK_NOT_READY, "Work not ready")
        miner.session.job_sent(work.job_id)
        miner.reply(request_id, work_params(work, miner.session.difficulty))

    def _submit_hashrate(
        self, miner: GetworkConnection, request_id: Any, params: list[Any], name: str
    ) -> None:
        miner.reply(request_id, True)

    def _pending_block(self, miner: GetworkConnection, request_id: Any, params: list[Any], name: str) -> None:
        """The pending block as ether-proxy asks for it: height, and the miner's share difficulty."""
        work = self._source.book.current
        if work is None:
            raise StratumError(WORK_NOT_READY, "Work not ready")
        difficulty = 2**256 // share_target(miner.session.difficulty)
        miner.reply(request_id, {"number": hex(work.height), "difficulty": hex(difficulty)})

    def _submit_work(self, miner: GetworkConnection, request_id: Any, params: list[Any], name: str) -> None:
        now = self._clock.seconds()
        try:
            share = check_submit_work(params, name, miner.session, self._source.book, self._ledger)
        except StratumError as e:
            self._pipeline.refused(miner, name, e, now)
            raise
        self._pipeline.submit(miner, request_id, share, now)


def _echoable(request_id: object) -> bool:
    """A JSON-RPC id: a string, a finite number or null (NaN and infinities are not JSON)."""
    if type(request_id) is float:
        return math.isfinite(request_id)
    return request_id is None or type(request_id) in (int, str)


def _messages(body: bytes) -> list[object] | None:
    """The JSON values of a body, back to back; None if it holds anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    decoder = json.JSONDecoder()
    messages: list[object] = []
    position = 0
    while True:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if position == len(text):
            return messages
        if len(messages) == MAX_REQUESTS:
            return None
        try:
            value, position = decoder.raw_decode(text, position)
        except (ValueError, RecursionError):
            return None
        messages.append(value)


def _client_ip(request: server.Request) -> str | None:
    host = getattr(request.getClientAddress(), "host", None)
    if not isinstance(host, str):
        return None
    try:
        return normalise_ip(host)
    except ValueError:
        return None


class GetworkRequest(server.Request):
    """A request whose body stops being kept past the site's ``max_body``."""

    too_large = False
    _received = 0

    def handleContentChunk(self, data: bytes) -> None:
        site = getattr(self.channel, "site", None)
        limit = getattr(site, "max_body", None)
        self._received += len(data)
        if limit is not None and self._received > limit:
            self.too_large = True
            return
        super().handleContentChunk(data)


class HeldChannel(policies.ProtocolWrapper):
    """An HTTP connection and the slot it holds (``ip`` None: a peer without one)."""

    def __init__(self, site: GetworkSite, channel: IProtocol, ip: str | None) -> None:
        super().__init__(site, channel)  # type: ignore[arg-type]  # the site registers its channels
        self.ip = ip


class GetworkSite(server.Site):
    """One getwork port.

    ``admit(ip, now)`` says whether a new connection from ``ip`` may open
    (bans and limits, as on the pool's stratum ports); an admitted one holds
    its slot until it closes and ``release(ip)`` frees it.
    """

    noisy = False
    requestFactory = GetworkRequest

    def __init__(
        self,
        root: GetworkResource,
        max_body: int,
        idle_timeout: float,
        admit: Callable[[str, float], bool],
        release: Callable[[str], None],
        clock: IReactorTime,
    ) -> None:
        super().__init__(root, timeout=idle_timeout)
        self.max_body = max_body
        self._admit = admit
        self._release = release
        self._clock = clock
        self.channels: set[HeldChannel] = set()  # the open connections (admitted, not closed)

    def buildProtocol(self, addr: IAddress | None) -> HeldChannel | None:  # type: ignore[override]
        ip = ip_of(addr)
        # None makes the port close the socket before reading a byte.
        if ip is not None and not self._admit(ip, self._clock.seconds()):
            return None
        channel = super().buildProtocol(addr)
        assert channel is not None
        return HeldChannel(self, channel, ip)

    def open_ips(self) -> list[str]:
        """The IP of each open connection, one per connection."""
        return [channel.ip for channel in self.channels if channel.ip is not None]

    # The wrapper's side of a WrappingFactory: its slot was taken when it was built.
    def registerProtocol(self, channel: HeldChannel) -> None:
        self.channels.add(channel)

    def unregisterProtocol(self, channel: HeldChannel) -> None:
        self.channels.discard(channel)
        if channel.ip is not None:
            self._release(channel.ip)

    def log(self, request: http.Request) -> None:
        pass  # one line per poll would drown the log
