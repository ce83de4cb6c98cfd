"""The Ethereum-family miner side against hostile input, property-based.

Three dialects are attacked: eth-proxy and NiceHash EthereumStratum/1.0.0
lines on the stratum port (StringTransports, a task.Clock), and HTTP
getwork requests (a real GetworkSite over StringTransports). The inputs are
the Bitcoin side's (test_stratum_fuzz: mutated requests, garbage, deep
nesting, other encodings, lines over the limit, cut anyhow) started from
the Ethereum family's requests. Shares are hashed for real, on the calling
thread, with an ethash cache of a tiny size (the algorithm is the same at
any size).

The properties, checked after every attack:

* nothing raises out of ``dataReceived``, nothing is logged as a failure
  or an error, no reply is "internal error";
* on the stratum port every non-blank line gets exactly one reply, in
  order, with the request's id, or the connection closes on a line over
  the limit; over getwork every request gets exactly one response, whose
  JSON-RPC body holds one reply per request it carried;
* every message written is one strict-JSON object (on its own line);
* memory per connection stays bounded: the line buffer, the worker names
  a connection mines for (at most MAX_WORKERS), the jobs it remembers, the
  getwork miners kept between requests (at most MAX_MINERS);
* the other miners are untouched: an eth-proxy miner, a NiceHash miner
  and an idle connection on the stratum port keep their state, are sent
  nothing, and get their next share accepted; a getwork miner on another
  login and IP gets its share accepted too.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from nomp.config import EthPoolConfig, PortConfig
from nomp.eth import getwork as getwork_module
from nomp.eth.getwork import MAX_REQUESTS, GetworkResource
from nomp.eth.hasher import EpochHasher, EpochHashers, EthTask
from nomp.eth.pool import EthStratumPool
from nomp.eth.stratum import MAX_WORKERS, NICEHASH_PROTOCOL, EthStratumProtocol
from nomp.eth.work import WorkBook, share_target
from nomp.hashing.ethash import EpochCaches, EthashCache, EthashResult, keccak_256, seed_hash
from nomp.stratum.protocol import MALFORMED_RATE, MAX_LINE
from nomp.stratum.session import MAX_JOBS_REMEMBERED
from test.ethpool import LOGIN, LOGIN_CHECKSUMMED, eth_pool_config
from test.fakes import Connection, FakePool, FakeRecorder, RecordingTransport
from test.test_stratum_fuzz import (
    _STRICT,
    ENCODINGS,
    MAX_CLOCK_ADVANCE,
    ODD_TEXTS,
    UNICODE_BITS,
    Expected,
    FailureCatcher,
    FuzzFailure,
    Target,
    _shown,
    between,
    cut,
    encode,
    expected_replies,
    garbage,
    json_values,
    mutate_bytes,
    mutate_request,
    mutate_text,
    nested,
    overlong_line,
    pick,
)

NOW = 1_700_000_000.0
SHARE_DIFF = 4.0  # a quarter of all nonces make a share
NETWORK_BOUNDARY = 2**256 // 2**40  # no fuzzed share is a block
HEADER = keccak_256(b"nomp eth fuzz work")
SEED = seed_hash(0)
WORK_ANSWER = ["0x" + HEADER.hex(), "0x" + SEED.hex(), f"0x{NETWORK_BOUNDARY:064x}", "0x1"]
STRATUM_PORT = PortConfig(listen="tcp:3340:interface=127.0.0.1", diff=SHARE_DIFF)
GETWORK_PORT = PortConfig(
    listen="tcp:3341:interface=127.0.0.1", diff=SHARE_DIFF, protocol="getwork", max_body=16384
)
OTHER_ADDRESS = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"  # EIP-55's
BAD_CHECKSUM = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"
ZERO_ADDRESS = "0x" + "0" * 40
USERS = (
    LOGIN_CHECKSUMMED,
    LOGIN + ".rig",
    OTHER_ADDRESS + ".x",
    OTHER_ADDRESS.lower(),
    BAD_CHECKSUM,
    ZERO_ADDRESS + ".a",
    "0x1234.rig",
    "alice",
    "alice.rig",
)
WORKERS = ("rig1", "rig2", "", "r i g", "x" * 65, "\u00fc", None, 1)
PROXY_WORKER = f"{LOGIN}.rig1"
NICEHASH_WORKER = f"{LOGIN}.rig2"
GETWORK_WORKER = f"{LOGIN}.rig3"
ATTACKER_IP = "10.0.0.66"
BYSTANDER_IP = "10.0.0.1"
SMALL_MAX_MINERS = 12  # the getwork miners kept, lowered so an attack can reach it
# OEP's codes (-3, -1, 0) and Stratum's.
ERROR_CODES = frozenset({-3, -1, 0, 20, 21, 22, 23, 24, 25})
NOTIFICATIONS = frozenset({"mining.set_difficulty", "mining.notify"})
ETH_METHODS: tuple[str, ...] = (
    "eth_submitLogin",
    "eth_getWork",
    "eth_submitWork",
    "eth_submitHashrate",
    "eth_getBlockByNumber",
    "eth_sendTransaction",
    "mining.subscribe",
    "mining.authorize",
    "mining.submit",
    "mining.extranonce.subscribe",
    "mining.configure",
    "mining.suggest_difficulty",
    "_login",
    "_methods",
    "__init__",
)
AGENTS = ("ethminer-0.19.0", "NiceHashMiner/3.0", "", "x" * 200, NICEHASH_PROTOCOL)
STRATUM_VERSIONS = (NICEHASH_PROTOCOL, "EthereumStratum/2.0.0", "EthereumStratum/", "Stratum/1.0", "")

# ---------------------------------------------------------------------------
# Real hashing, at a tiny size.


@functools.cache
def tiny_cache() -> EthashCache:
    """Epoch 0's seed, sizes a thousandth of epoch 0's: built in a millisecond."""
    return EthashCache(SEED, 64 * 128, 128 * 512, 0, 0)


class InlineEthHashing:
    """HashPoolService's face, computed at once on the calling thread with
    the real C light hash (the hasher's cache: the tiny one)."""

    def submit(self, hasher: EpochHasher, work: EthTask, done: Callable[[EthashResult], None]) -> None:
        done(hasher.check_packed(work.pack(), 1)[0])


def _no_builds(function: Callable[..., Any], *args: Any) -> Any:
    raise AssertionError("a cache was to be built: the tiny one is held")


@functools.cache
def bystander_shares() -> tuple[tuple[int, bytes], ...]:
    """Three (nonce, mix digest) that meet SHARE_DIFF, nonces starting with
    the first NiceHash extranonce (000000) and far from the small nonces
    an attack shrinks to."""
    target = share_target(SHARE_DIFF)
    found = []
    for nonce in itertools.count(0x000000ABCDEF0000):
        result = tiny_cache().hash(HEADER, nonce)
        if result.value <= target:
            found.append((nonce, result.mix_digest))
            if len(found) == 3:
                return tuple(found)
    raise AssertionError("unreachable")


def submit_work_params(nonce: int, mix: bytes, header: bytes = HEADER) -> list[str]:
    return [f"0x{nonce:016x}", "0x" + header.hex(), "0x" + mix.hex()]


# ---------------------------------------------------------------------------
# What goes on the wire.


def hex_text(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


def eth_request(rng: random.Random, job_id: str) -> dict[str, Any]:
    """A request an eth-proxy or NiceHash miner could send."""
    kind = between(rng, 0, 12)
    user = pick(rng, USERS)
    message: dict[str, Any] = {
        "id": between(rng, 0, 100_000) if rng.random() < 0.9 else pick(rng, ("a", None))
    }
    if rng.random() < 0.5:
        message["jsonrpc"] = "2.0"
    if kind == 0:
        message["method"], message["params"] = "eth_submitLogin", [user, "x"]
    elif kind == 1:
        message["method"], message["params"] = "eth_getWork", []
    elif kind <= 4:
        header = pick(rng, ("0x" + HEADER.hex(), "0x" + HEADER.hex().upper(), "0x" + hex_text(rng, 64)))
        nonce = pick(rng, ("0x" + hex_text(rng, 16), "0x" + hex_text(rng, 16).upper()))
        message["method"] = "eth_submitWork"
        message["params"] = [nonce, header, "0x" + hex_text(rng, 64)]
    elif kind == 5:
        message["method"], message["params"] = (
            "eth_submitHashrate",
            ["0x" + hex_text(rng, 6), "0x" + hex_text(rng, 64)],
        )
    elif kind == 6:
        message["method"] = "mining.subscribe"
        message["params"] = [pick(rng, AGENTS), pick(rng, STRATUM_VERSIONS)][: between(rng, 0, 2)]
    elif kind == 7:
        message["method"], message["params"] = "mining.authorize", [user, "x"]
    elif kind <= 10:
        job = pick(rng, (job_id, job_id, "ffffffff", "0", job_id.upper()))
        part = pick(rng, (hex_text(rng, 10), "0x" + hex_text(rng, 10), hex_text(rng, 8), hex_text(rng, 12)))
        message["method"], message["params"] = "mining.submit", [user, job, part]
    elif kind == 11:
        message["method"], message["params"] = "mining.extranonce.subscribe", []
    else:
        message["method"], message["params"] = pick(rng, ETH_METHODS), []
    if rng.random() < 0.3:
        message["worker"] = pick(rng, WORKERS)
    return message


def bitcoin_target(job_id: str) -> Target:
    """What the Bitcoin side's mutators take: text they make near misses of."""
    return Target(workers=USERS, job_id=job_id, ntime=0)


def attack_line(rng: random.Random, job_id: str) -> bytes:
    """One line of an attack, without its terminator (at most MAX_LINE bytes
    unless a mutation splits it)."""
    target = bitcoin_target(job_id)
    roll = rng.random()
    if roll < 0.2:
        line = encode(eth_request(rng, job_id), rng)
    elif roll < 0.8:
        line = encode(mutate_request(rng, eth_request(rng, job_id), target), rng)
        if rng.random() < 0.25:
            line = mutate_bytes(rng, line)
    elif roll < 0.86:
        line = garbage(rng)
    elif roll < 0.88:
        line = nested(rng).data
    elif roll < 0.91:
        line = pick(rng, (b"", b" ", b"\t", b"\r", b" \x0b\x0c "))
    elif roll < 0.94:
        parts = [encode(eth_request(rng, job_id), rng) for _ in range(between(rng, 2, 3))]
        line = pick(rng, (b"", b" ", b",", b"\r", b"\x00")).join(parts)
    elif roll < 0.99:
        text = json.dumps(eth_request(rng, job_id), ensure_ascii=rng.random() < 0.5)
        line = text.encode(pick(rng, ENCODINGS), "surrogatepass")
    else:
        request = encode(eth_request(rng, job_id), rng)
        pad = MAX_LINE - len(request) - pick(rng, (0, 0, 1, 2, 100))
        line = request[:-1] + b" " * max(0, pad) + request[-1:]
    if len(line) > MAX_LINE:
        line = line[: between(rng, 0, MAX_LINE)]
    return line


def prelude(rng: random.Random) -> list[bytes]:
    """Most attacks log in first (in one dialect or the other), so that the
    mutated requests after reach the deeper checks."""
    roll = rng.random()
    user = pick(rng, (LOGIN_CHECKSUMMED, LOGIN + ".rig", OTHER_ADDRESS + ".x"))
    if roll < 0.35:
        return [json.dumps({"id": 1, "method": "eth_submitLogin", "params": [user, "x"]}).encode() + b"\n"]
    if roll < 0.7:
        return [
            b'{"id": 1, "method": "mining.subscribe", "params": ["fuzz/1.0", "EthereumStratum/1.0.0"]}\n',
            json.dumps({"id": 2, "method": "mining.authorize", "params": [user, "x"]}).encode() + b"\n",
        ]
    return []


def attack_stream(rng: random.Random, job_id: str, lines: int) -> bytes:
    """``lines`` lines of attack as a TCP stream delivers them; some end on a
    line over the limit (perhaps with more after it), some never end."""
    out = prelude(rng)
    body = lines - len(out)
    ending = between(rng, 0, 9)
    if ending <= 1:
        body -= 1
    for _ in range(max(0, body)):
        line = attack_line(rng, job_id)
        out.append(line + (b"\r\n" if rng.random() < 0.25 and len(line) < MAX_LINE else b"\n"))
    if ending <= 1:
        out.append(overlong_line(rng, bitcoin_target(job_id)) + b"\n")
        for _ in range(between(rng, 0, 2)):
            out.append(encode(eth_request(rng, job_id), rng) + b"\n")
    elif ending == 2 and out:
        out[-1:] = [out[-1].rstrip(b"\r\n")]
    return b"".join(out)


# ---------------------------------------------------------------------------
# The replies.


def strict_lines(written: bytes, fed: bytes, non_finite_ids: bool = False) -> list[dict[str, Any]]:
    """Every message written: one strict-JSON object a line, each line ended.

    ``non_finite_ids``: getwork echoes an id holding NaN or infinity as it came,
    which is not JSON (test_getwork_non_finite_id_answered_in_json); such an
    id is let through here so the fuzzing goes on past it, and only there.
    """
    if written and not written.endswith(b"\n"):
        raise FuzzFailure(f"unterminated message {_shown(written[-200:])} after {_shown(fed)}")
    messages = []
    for raw in written.split(b"\n")[:-1]:
        try:
            message = _STRICT.decode(raw.decode())
        except ValueError as e:
            message = json.loads(raw) if non_finite_ids and _non_finite_id_only(raw) else None
            if message is None:
                raise FuzzFailure(f"wrote {_shown(raw)}, not strict JSON ({e}), fed {_shown(fed)}") from None
        if not isinstance(message, dict):
            raise FuzzFailure(f"wrote {_shown(raw)}, not an object, fed {_shown(fed)}")
        messages.append(message)
    return messages


def _holds_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_holds_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_non_finite(v) for v in value.values())
    return False


def _non_finite_id_only(raw: bytes) -> bool:
    """Whether ``raw`` is strict JSON but for an id holding NaN or +-Infinity."""
    try:
        message = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(message, dict) or not _holds_non_finite(message.get("id")):
        return False
    try:
        _STRICT.decode(json.dumps({**message, "id": None}))
    except ValueError:
        return False
    return True


def error_of(reply: dict[str, Any]) -> tuple[str | None, Any]:
    """(what is wrong with the reply's shape, its error as (code, message) or None).

    Two shapes: JSON-RPC 2.0's (eth-proxy, getwork: ``jsonrpc``, and an
    ``error`` object only when refused) and Stratum's (NiceHash, and lines
    that cannot be read: ``error`` null or [code, message, null]).
    """
    keys = set(reply)
    if "jsonrpc" in keys:
        if reply["jsonrpc"] != "2.0":
            return "jsonrpc not 2.0", None
        if keys == {"id", "jsonrpc", "result"}:
            return None, None
        if keys != {"id", "jsonrpc", "result", "error"}:
            return "not the keys id, jsonrpc, result (and error)", None
        error = reply["error"]
        if not (
            isinstance(error, dict)
            and set(error) == {"code", "message"}
            and error["code"] in ERROR_CODES
            and isinstance(error["message"], str)
        ):
            return "not an error object {code, message}", None
        if reply["result"] is not None:
            return "a result with an error", None
        return None, (error["code"], error["message"])
    if keys != {"id", "result", "error"}:
        return "not the keys id, result, error", None
    error = reply["error"]
    if error is None:
        return None, None
    if not (
        isinstance(error, list)
        and len(error) == 3
        and error[0] in ERROR_CODES
        and isinstance(error[1], str)
        and error[2] is None
    ):
        return "not an error member [code, message, null]", None
    if reply["result"] not in (None, False):
        return "a result with an error", None
    return None, (error[0], error[1])


def reply_problem(reply: dict[str, Any], want: Expected) -> str | None:
    """What is wrong with a stratum reply to a line, if anything."""
    shape, error = error_of(reply)
    if shape is not None:
        return shape
    if error is not None and error[1] == "internal error":
        return "internal error"
    if want.overlong:
        if reply["id"] is not None or error != (20, f"line longer than {MAX_LINE} bytes"):
            return "not the line-too-long error"
        return None
    if error is not None and error[1] == "invalid JSON":
        if want.readable and not want.deep:
            return "invalid JSON to a JSON line"
        return None if reply["id"] is None else "an id to a line that is not JSON"
    if not want.readable:
        return None if want.deep else "read a line that is not JSON"
    if reply["id"] != want.request_id:
        return f"not the request's id {want.request_id!r}"
    return None


# ---------------------------------------------------------------------------
# HTTP over a StringTransport.


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def parse_responses(data: bytes) -> list[Response]:
    """The HTTP/1.1 responses in ``data`` (Content-Length or chunked bodies)."""
    out = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            raise FuzzFailure(f"incomplete response head {_shown(data)}")
        status_line, *header_lines = head.split(b"\r\n")
        version, status, _ = (status_line + b" ").split(b" ", 2)
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise FuzzFailure(f"odd status line {_shown(status_line)}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    rest = rest[2:]  # no trailers
                    break
                body, rest = body + rest[:size], rest[size + 2 :]
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            body, rest = rest[:length], rest[length:]
        else:
            body, rest = rest, b""
        out.append(Response(int(status), headers, body))
        data = rest
    return out


@dataclass
class HttpRequest:
    method: bytes
    path: bytes
    body: bytes
    chunked: bool = False
    close: bool = False

    def wire(self) -> bytes:
        headers = [b"Host: pool.example", b"Content-Type: application/json"]
        body = self.body
        if self.chunked:
            headers.append(b"Transfer-Encoding: chunked")
            pieces = [body[i : i + 100] for i in range(0, len(body), 100)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        else:
            headers.append(b"Content-Length: %d" % len(body))
        if self.close:
            headers.append(b"Connection: close")
        return self.method + b" " + self.path + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


class HttpChannel:
    """One HTTP connection to the getwork site."""

    def __init__(self, site: Any, ip: str) -> None:
        address = IPv4Address("TCP", ip, 40000)
        self.transport = RecordingTransport(peerAddress=address)
        self.protocol = site.buildProtocol(address)
        self.protocol.makeConnection(self.transport)

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def exchange(self, request: HttpRequest, chunks: list[bytes] | None = None) -> list[Response]:
        for chunk in chunks if chunks is not None else [request.wire()]:
            self.protocol.dataReceived(chunk)
        written = self.transport.value()
        self.transport.clear()
        return parse_responses(written)

    def call(self, path: str, method: str, params: list[Any], request_id: Any = 1) -> dict[str, Any]:
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()
        responses = self.exchange(HttpRequest(b"POST", path.encode(), body))
        if len(responses) != 1 or responses[0].status != 200:
            raise FuzzFailure(f"getwork {method} got {responses!r}")
        reply: dict[str, Any] = json.loads(responses[0].body)
        return reply


def body_messages(body: bytes) -> list[Any] | None:
    """The JSON values of a getwork body as the pool must read them: back to
    back, at most MAX_REQUESTS; None if it holds anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    decoder = json.JSONDecoder()
    values: list[Any] = []
    at = 0
    while True:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        if at == len(text):
            return values
        if len(values) == MAX_REQUESTS:
            return None
        try:
            value, at = decoder.raw_decode(text, at)
        except (ValueError, RecursionError):
            return None
        values.append(value)


def same_json(a: Any, b: Any) -> bool:
    """Whether two values are the same once written as JSON and read back."""
    try:
        return json.dumps(a, sort_keys=True) == json.dumps(json.loads(json.dumps(b)), sort_keys=True)
    except (ValueError, RecursionError):
        return False


# ---------------------------------------------------------------------------
# The arena: a pool, its well-behaved miners, and the attacker.


@functools.cache
def _config(usernames: str) -> EthPoolConfig:
    return eth_pool_config("http://127.0.0.1:8545", [STRATUM_PORT, GETWORK_PORT], usernames=usernames)


@dataclass
class WorkHolder:
    """The pool's WorkSource: its book."""

    book: WorkBook


@dataclass(frozen=True)
class Snapshot:
    """A bystander's state."""

    dialect: str | None
    login: str | None
    extranonce1: bytes | None
    workers: dict[str, str]
    difficulty: float
    sent: dict[str, float]
    valid_shares: int
    invalid_shares: int
    malformed: int

    @classmethod
    def of(cls, connection: Connection) -> Snapshot:
        protocol = connection.protocol
        assert isinstance(protocol, EthStratumProtocol)
        s = connection.session
        return cls(
            protocol.dialect,
            protocol.login,
            s.extranonce1,
            dict(s.workers),
            s.difficulty,
            dict(s.sent),
            s.valid_shares,
            s.invalid_shares,
            s.malformed,
        )


def _call(connection: Connection, message: dict[str, Any]) -> list[dict[str, Any]]:
    connection.send_json(message)
    return _read(connection)


def _read(connection: Connection) -> list[dict[str, Any]]:
    written: bytes = connection.transport.value()
    connection.transport.clear()
    return strict_lines(written, b"")


class EthArena:
    """A fresh pool with work, its well-behaved miners, and an attacker.

    On the stratum port: ``proxy`` (eth-proxy, logged in), ``nicehash``
    (subscribed and authorized), ``idle`` (connected, said nothing). Over
    getwork: ``getwork_miner`` (its own login and IP, one eth_getWork made).
    """

    def __init__(self, usernames: str = "address") -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.config = _config(usernames)
        # Logins are credited in lower case on every port, whatever ``usernames`` is.
        self.proxy_worker = PROXY_WORKER
        self.source = WorkHolder(WorkBook(self.config.stale_heights, None))
        work = self.source.book.add(WORK_ANSWER)
        assert work is not None
        self.work = work
        caches = EpochCaches(limit=2)
        caches.put(tiny_cache())
        self.recorder = FakeRecorder()
        self.blocks = FakePool(None)
        self.pool = EthStratumPool(
            self.config,
            self.source,
            self.blocks,
            InlineEthHashing(),
            EpochHashers(self.config.name, _no_builds, caches=caches),
            self.recorder,
            self.clock,
            wall_clock=self.clock.seconds,
        )
        self.stratum = self.pool.factory(STRATUM_PORT)
        self.site = self.pool.factory(GETWORK_PORT)
        self.site.reactor = self.clock  # the channels' timeouts on the test's clock
        self.getwork: GetworkResource = self.pool.getwork[0]
        self.logged = FailureCatcher()
        self.proxy = self.connect()
        self._expect_true(
            self.proxy,
            {"id": 1, "method": "eth_submitLogin", "params": [LOGIN_CHECKSUMMED, "x"], "worker": "rig1"},
        )
        self.nicehash = self.connect()
        self._expect_true(
            self.nicehash,
            {"id": 1, "method": "mining.subscribe", "params": ["bystander/1.0", NICEHASH_PROTOCOL]},
            check=False,
        )
        self._expect_true(
            self.nicehash, {"id": 2, "method": "mining.authorize", "params": [NICEHASH_WORKER, "x"]}
        )
        self.idle = self.connect()
        self.bystanders = (self.proxy, self.nicehash, self.idle)
        self.getwork_miner = HttpChannel(self.site, BYSTANDER_IP)
        self.getwork_path = f"/{LOGIN_CHECKSUMMED}/rig3"
        reply = self.getwork_miner.call(self.getwork_path, "eth_getWork", [])
        if reply.get("result") != [work.header_hex, work.seed_hex, f"0x{share_target(SHARE_DIFF):064x}"]:
            raise AssertionError(f"getwork bystander got {reply}")
        self.attacker = self.connect()

    def connect(self) -> Connection:
        protocol = self.stratum.buildProtocol(None)  # no IP: bans pass it by
        transport = RecordingTransport()
        protocol.makeConnection(transport)
        return Connection(protocol, transport)

    def _expect_true(self, connection: Connection, message: dict[str, Any], check: bool = True) -> None:
        connection.send_json(message)
        replies = [m for m in _read(connection) if "method" not in m]
        if not replies or (check and replies[-1].get("result") is not True):
            raise AssertionError(f"{message} got {replies}")

    # The stratum port.
    def attack(self, chunks: list[bytes], rng: random.Random | None = None) -> None:
        """Feed ``chunks`` to the stratum attacker, then check every property;
        FuzzFailure if one breaks. ``rng`` advances the clock between chunks."""
        globalLogPublisher.addObserver(self.logged)
        try:
            self._attack(chunks, rng)
            self._check_logged(b"".join(chunks))
        finally:
            globalLogPublisher.removeObserver(self.logged)

    def _check_logged(self, fed: bytes) -> None:
        if self.logged.events:
            raise FuzzFailure(f"logged after {_shown(fed)}:\n" + "\n".join(self.logged.events), crash=True)

    def _attack(self, chunks: list[bytes], rng: random.Random | None) -> None:
        before = {id(c): Snapshot.of(c) for c in self.bystanders}
        protocol = self.attacker.protocol
        delivered: list[bytes] = []
        advanced = 0.0
        for chunk in chunks:
            self._wait_while_paused()
            if self.attacker.closing:
                break  # plain TCP reads no more from a connection being closed
            delivered.append(chunk)
            try:
                protocol.dataReceived(chunk)
            except Exception:
                raise FuzzFailure(
                    f"dataReceived raised on {_shown(chunk)}:\n{traceback.format_exc()}", crash=True
                ) from None
            self._check_logged(b"".join(delivered))
            paused = self.attacker.transport.producerState == "paused"
            bound = len(chunk) + MAX_LINE if paused else MAX_LINE
            if not self.attacker.closing and len(protocol._buffer) > bound:
                raise FuzzFailure(f"{len(protocol._buffer)} bytes buffered after {_shown(chunk)}")
            if rng is not None and advanced < MAX_CLOCK_ADVANCE and rng.random() < 0.2:
                step = rng.random() * 5
                advanced += step
                self.clock.advance(step)
        self._wait_while_paused()
        data = b"".join(delivered)
        expected, closes, _ = expected_replies(data)
        messages = strict_lines(self.attacker.transport.value(), data)
        replies = []
        for message in messages:
            if "method" in message:
                if (
                    set(message) != {"id", "method", "params"}
                    or message["id"] is not None
                    or message["method"] not in NOTIFICATIONS
                    or not isinstance(message["params"], list)
                ):
                    raise FuzzFailure(f"odd notification {message!r}, fed {_shown(data)}")
                continue
            replies.append(message)
        for i, (reply, want) in enumerate(zip(replies, expected, strict=False)):
            problem = reply_problem(reply, want)
            if problem is not None:
                raise FuzzFailure(
                    f"{problem}: reply {reply!r} to line {i} {_shown(want.line)}",
                    crash=problem == "internal error",
                )
        if len(replies) != len(expected):
            missing = expected[len(replies)].line if len(expected) > len(replies) else b""
            raise FuzzFailure(
                f"{len(replies)} replies to {len(expected)} lines; first unanswered {_shown(missing)}; "
                f"extra {replies[len(expected) :]!r}"
            )
        if bool(self.attacker.closing) != closes:
            raise FuzzFailure(f"closing is {self.attacker.closing}, expected {closes}: {_shown(data)}")
        if self.attacker.transport.aborted:
            raise FuzzFailure(f"connection aborted (not closed) on {_shown(data)}")
        if self.pool.pipeline.in_flight:
            raise FuzzFailure(f"{self.pool.pipeline.in_flight} shares in flight after {_shown(data)}")
        self.check_bounded(self.attacker, data)
        self._check_bystanders(before, data)

    def _wait_while_paused(self) -> None:
        transport = self.attacker.transport
        while transport.producerState == "paused" and not self.attacker.closing:
            self.clock.advance(1 / MALFORMED_RATE)

    def check_bounded(self, connection: Connection | None, fed: bytes) -> None:
        if connection is not None:
            session = connection.session
            if len(session.workers) > MAX_WORKERS:
                raise FuzzFailure(f"{len(session.workers)} workers on one connection after {_shown(fed)}")
            if len(session.sent) > MAX_JOBS_REMEMBERED:
                raise FuzzFailure(f"{len(session.sent)} jobs remembered after {_shown(fed)}")
        if len(self.getwork.miners) > getwork_module.MAX_MINERS:
            raise FuzzFailure(f"{len(self.getwork.miners)} getwork miners kept after {_shown(fed)}")

    def _check_bystanders(self, before: dict[int, Snapshot], fed: bytes) -> None:
        for connection in self.bystanders:
            if connection.closing or connection.transport.value():
                raise FuzzFailure(
                    f"bystander closed or written to ({connection.transport.value()!r}) by {_shown(fed)}"
                )
            if Snapshot.of(connection) != before[id(connection)]:
                after = Snapshot.of(connection)
                raise FuzzFailure(f"bystander changed by {_shown(fed)}: {before[id(connection)]} -> {after}")
            if connection.protocol not in self.pool.connections:
                raise FuzzFailure(f"bystander dropped from the pool by {_shown(fed)}")
        attacker_extranonce = self.attacker.session.extranonce1
        attacker_nicehash = getattr(self.attacker.protocol, "dialect", None) == "nicehash"
        self.attacker.lose()
        held = self.pool.extranonces._held
        if self.attacker.protocol in self.pool.connections:
            raise FuzzFailure(f"the attacker is still a connection after it left, fed {_shown(fed)}")
        if (
            attacker_nicehash
            and attacker_extranonce
            and int.from_bytes(attacker_extranonce[1:], "big") in held
        ):
            raise FuzzFailure(f"the attacker's extranonce kept after it left, fed {_shown(fed)}")
        bystander_extranonce = self.nicehash.session.extranonce1
        assert bystander_extranonce is not None
        if int.from_bytes(bystander_extranonce[1:], "big") not in held:
            raise FuzzFailure(f"the bystander's extranonce released by {_shown(fed)}")
        try:
            self.bystanders_mine(fed)
        except FuzzFailure:
            raise
        except Exception:
            raise FuzzFailure(
                f"bystanders' exchange after {_shown(fed)}:\n{traceback.format_exc()}"
            ) from None

    def bystanders_mine(self, fed: bytes) -> None:
        """The well-behaved miners still get their shares accepted."""
        (proxy_nonce, proxy_mix), (nicehash_nonce, _), (getwork_nonce, getwork_mix) = bystander_shares()
        proxy = _call(
            self.proxy,
            {
                "id": 7,
                "method": "eth_submitWork",
                "params": submit_work_params(proxy_nonce, proxy_mix),
                "worker": "rig1",
            },
        )
        if len(proxy) != 1 or proxy[0].get("result") is not True or proxy[0].get("id") != 7:
            raise FuzzFailure(f"eth-proxy bystander's share after {_shown(fed)} got {proxy!r}")
        part = nicehash_nonce.to_bytes(8, "big")[3:].hex()
        nicehash = _call(
            self.nicehash,
            {"id": 8, "method": "mining.submit", "params": [NICEHASH_WORKER, self.work.job_id, part]},
        )
        if nicehash != [{"id": 8, "result": True, "error": None}]:
            raise FuzzFailure(f"NiceHash bystander's share after {_shown(fed)} got {nicehash!r}")
        self.getwork_mines(fed, getwork_nonce, getwork_mix)
        subscribed = _call(
            self.idle, {"id": 9, "method": "mining.subscribe", "params": ["late/1.0", NICEHASH_PROTOCOL]}
        )
        extranonce = subscribed[0]["result"][1]
        if extranonce == self.nicehash.session.extranonce1.hex():  # type: ignore[union-attr]
            raise FuzzFailure(f"extranonce {extranonce} handed out twice after {_shown(fed)}")
        if self.recorder.valid[-3:] != [
            (self.proxy_worker, SHARE_DIFF),
            (NICEHASH_WORKER, SHARE_DIFF),
            (GETWORK_WORKER, SHARE_DIFF),
        ]:
            raise FuzzFailure(
                f"bystanders' shares recorded as {self.recorder.valid[-3:]!r} after {_shown(fed)}"
            )

    def getwork_mines(self, fed: bytes, nonce: int, mix: bytes) -> None:
        if self.getwork_miner.closing:
            raise FuzzFailure(f"the getwork bystander's connection closed by {_shown(fed)}")
        reply = self.getwork_miner.call(
            self.getwork_path, "eth_submitWork", submit_work_params(nonce, mix), 5
        )
        if reply != {"id": 5, "jsonrpc": "2.0", "result": True}:
            raise FuzzFailure(f"getwork bystander's share after {_shown(fed)} got {reply!r}")

    # Getwork.
    def attack_getwork(self, requests: Sequence[HttpRequest], rng: random.Random | None = None) -> None:
        """Send ``requests`` from the attacker's IP, one after the other on
        one connection (a new one once the server closes it), then check."""
        globalLogPublisher.addObserver(self.logged)
        try:
            self._attack_getwork(requests, rng)
            self._check_logged(b"".join(r.wire() for r in requests))
        finally:
            globalLogPublisher.removeObserver(self.logged)

    def _attack_getwork(self, requests: Sequence[HttpRequest], rng: random.Random | None) -> None:
        before = {id(c): Snapshot.of(c) for c in self.bystanders}
        channel = HttpChannel(self.site, ATTACKER_IP)
        for request in requests:
            if channel.closing:
                channel = HttpChannel(self.site, ATTACKER_IP)
            wire = request.wire()
            chunks = cut(rng, wire) if rng is not None else [wire]
            try:
                responses = channel.exchange(request, chunks)
            except FuzzFailure:
                raise
            except Exception:
                raise FuzzFailure(
                    f"getwork raised on {_shown(wire)}:\n{traceback.format_exc()}", crash=True
                ) from None
            self._check_logged(wire)
            if len(responses) != 1:
                raise FuzzFailure(f"{len(responses)} responses to {_shown(wire)}: {responses!r}")
            check_response(request, responses[0])
            self.check_bounded(None, wire)
        if self.pool.pipeline.in_flight:
            raise FuzzFailure(f"{self.pool.pipeline.in_flight} shares in flight after getwork")
        fed = b"".join(r.wire() for r in requests)
        for connection in self.bystanders:
            if connection.transport.value() or Snapshot.of(connection) != before[id(connection)]:
                raise FuzzFailure(f"stratum bystander touched by getwork {_shown(fed)}")
        _, _, (nonce, mix) = bystander_shares()
        self.getwork_mines(fed, nonce, mix)


def check_response(request: HttpRequest, response: Response) -> None:
    """One getwork response, against what its request asked."""
    shown = _shown(request.wire())
    allowed = {200, 400, 403, 404, 405, 417, 501}  # 501: Twisted's to a method no resource takes
    if response.status not in allowed:
        raise FuzzFailure(f"status {response.status} to {shown}: {response.body!r}")
    if request.method != b"POST":
        if response.status == 200 and response.body:
            raise FuzzFailure(f"an answer to {request.method!r}: {shown}")
        return
    if response.status not in (200, 400):
        return
    if response.headers.get(b"content-type") != b"application/json":
        raise FuzzFailure(f"content-type {response.headers.get(b'content-type')!r} to {shown}")
    replies = strict_lines(response.body, request.wire(), non_finite_ids=True)
    for reply in replies:
        shape, error = error_of(reply)
        if shape is not None or "jsonrpc" not in reply:
            raise FuzzFailure(f"{shape or 'not JSON-RPC 2.0'}: {reply!r} to {shown}")
        if error is not None and error[1] == "internal error":
            raise FuzzFailure(f"internal error to {shown}", crash=True)
    messages = body_messages(request.body)
    if len(replies) == 1 and replies[0]["id"] is None and error_of(replies[0])[1] is not None:
        code, text = error_of(replies[0])[1]
        if code == -1 and (
            text.startswith("Invalid login") or (text == "Malformed request" and not messages)
        ):
            return  # the whole request refused
    if response.status == 400 or not messages:
        raise FuzzFailure(f"status {response.status} with {replies!r} to {shown}")
    if len(replies) != len(messages):
        raise FuzzFailure(f"{len(replies)} replies to {len(messages)} requests: {replies!r} to {shown}")
    for reply, message in zip(replies, messages, strict=True):
        want = message.get("id") if isinstance(message, dict) else None
        finite = not isinstance(want, float) or math.isfinite(want)
        if isinstance(want, bool) or not isinstance(want, int | float | str) or not finite:
            want = None  # not a JSON-RPC id: answered as null
        if not same_json(reply["id"], want):
            raise FuzzFailure(f"reply id {reply['id']!r}, not the request's {want!r}: {shown}")


# ---------------------------------------------------------------------------
# Getwork requests.


def getwork_message(rng: random.Random) -> dict[str, Any]:
    kind = between(rng, 0, 6)
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": between(rng, 0, 1000)}
    if kind <= 1:
        message["method"], message["params"] = "eth_getWork", []
    elif kind <= 4:
        header = pick(rng, ("0x" + HEADER.hex(), "0x" + HEADER.hex().upper(), "0x" + hex_text(rng, 64)))
        message["method"] = "eth_submitWork"
        message["params"] = ["0x" + hex_text(rng, 16), header, "0x" + hex_text(rng, 64)]
    elif kind == 5:
        message["method"], message["params"] = (
            "eth_submitHashrate",
            ["0x" + hex_text(rng, 6), "0x" + hex_text(rng, 64)],
        )
    else:
        message["method"], message["params"] = (
            pick(rng, ("eth_getBlockByNumber", *ETH_METHODS)),
            ["pending", False],
        )
    return message


def getwork_body(rng: random.Random) -> bytes:
    target = bitcoin_target("00000001")
    roll = rng.random()
    if roll < 0.2:
        return json.dumps(getwork_message(rng)).encode()
    if roll < 0.65:
        body = encode(mutate_request(rng, getwork_message(rng), target), rng)
        return mutate_bytes(rng, body) if rng.random() < 0.25 else body
    if roll < 0.8:
        count = pick(rng, (2, 3, MAX_REQUESTS, MAX_REQUESTS + 1))
        separator = pick(rng, (b"", b"\n", b" ", b"\r\n", b","))
        return separator.join(encode(getwork_message(rng), rng) for _ in range(count))
    if roll < 0.86:
        return garbage(rng)
    if roll < 0.9:
        return nested(rng).data
    if roll < 0.93:
        return pick(rng, (b"", b" ", b"\n", b"null", b"[]", b"{}", b'{"id":1}', b"[{}]"))
    if roll < 0.97:
        return json.dumps(getwork_message(rng)).encode(pick(rng, ENCODINGS))
    return b" " * between(rng, GETWORK_PORT.max_body - 10, GETWORK_PORT.max_body + 10)


def getwork_path(rng: random.Random) -> bytes:
    roll = rng.random()
    login = pick(
        rng, (LOGIN_CHECKSUMMED, LOGIN, OTHER_ADDRESS, BAD_CHECKSUM, ZERO_ADDRESS, "0x1234", "alice", "")
    )
    if roll < 0.3:
        segments = [login]
    elif roll < 0.6:
        segments = [login, pick(rng, ("rig", "rig-2", "r i g", "x" * 80, "\u00fc", ""))]
    elif roll < 0.75:
        segments = [login, "rig", pick(rng, ("extra", "", "x"))]
    elif roll < 0.9:
        segments = [mutate_text(rng, login), mutate_text(rng, pick(rng, ("rig", "0")))]
    else:
        segments = [pick(rng, (*ODD_TEXTS, *UNICODE_BITS)) for _ in range(between(rng, 0, 4))]
    path = "/" + "/".join(segments)
    if rng.random() < 0.1:
        path += pick(rng, ("?x=1", "#frag", "//", "/"))
    if rng.random() < 0.05:
        path = pick(rng, ("*", "/", "//", "/%00", "/%ff%fe", "/.."))
    return quote(path.encode("utf-8", "surrogatepass"), safe="/?#=*%").encode()


def getwork_request(rng: random.Random) -> HttpRequest:
    method = b"POST" if rng.random() < 0.9 else pick(rng, (b"GET", b"PUT", b"DELETE", b"OPTIONS"))
    return HttpRequest(method, getwork_path(rng), getwork_body(rng), rng.random() < 0.15, rng.random() < 0.15)


# ---------------------------------------------------------------------------
# The tests.


class EthFuzzCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(getwork_module, "MAX_MINERS", SMALL_MAX_MINERS)

    def attack(self, arena: EthArena, chunks: list[bytes], rng: random.Random | None = None) -> None:
        arena.attack(chunks, rng)
        self.assertEqual(self.flushLoggedErrors(), [])


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class StratumFuzzTests(EthFuzzCase):
    """Hostile lines on one stratum connection, in either dialect."""

    @fuzz(300)
    @given(
        st.randoms(use_true_random=False),
        st.integers(min_value=1, max_value=10),
        st.sampled_from(("address", "any")),
    )
    def test_short_streams(self, rng: random.Random, lines: int, usernames: str) -> None:
        arena = EthArena(usernames)
        self.attack(arena, cut(rng, attack_stream(rng, arena.work.job_id, lines)), rng)

    @fuzz(60)
    @given(st.integers(min_value=0, max_value=2**64 - 1))
    def test_long_streams(self, seed: int) -> None:
        """Streams of 150 lines, made from a seed."""
        rng = random.Random(seed)
        arena = EthArena(rng.choice(("address", "any")))
        self.attack(arena, cut(rng, attack_stream(rng, arena.work.job_id, 150)), rng)

    @fuzz(300)
    @given(
        st.integers(min_value=0, max_value=2**32),
        st.sampled_from(("id", "method", "params", "param", "worker", "extra", "whole")),
        st.integers(min_value=0, max_value=4),
        json_values,
        st.sampled_from(("ethproxy", "nicehash", "none")),
    )
    def test_any_value_anywhere(self, seed: int, where: str, index: int, value: Any, dialect: str) -> None:
        """Any JSON value in any field of a valid request, after a valid login in one dialect."""
        arena = EthArena()
        message = eth_request(random.Random(seed), arena.work.job_id)
        if where == "param":
            params = message["params"]
            if index < len(params):
                params[index] = value
            else:
                params.append(value)
        elif where == "extra":
            message[f"x{index}"] = value
        elif where == "whole":
            message = value
        else:
            message[where] = value
        line = json.dumps(message).encode("utf-8", "surrogatepass") + b"\n"
        lines = {
            "ethproxy": [b'{"id": 1, "method": "eth_submitLogin", "params": ["' + LOGIN.encode() + b'"]}\n'],
            "nicehash": [
                b'{"id": 1, "method": "mining.subscribe", "params": ["a", "EthereumStratum/1.0.0"]}\n',
                b'{"id": 2, "method": "mining.authorize", "params": ["' + LOGIN.encode() + b'.a", "x"]}\n',
            ],
            "none": [],
        }[dialect]
        self.attack(arena, [b"".join(lines) + line])

    @fuzz(150)
    @given(
        st.lists(st.binary(max_size=300), min_size=1, max_size=12),
        st.lists(st.integers(0, 4000), max_size=12),
    )
    def test_byte_garbage(self, lines: list[bytes], cuts: list[int]) -> None:
        data = b"\n".join(lines) + b"\n"
        points = sorted({c % len(data) for c in cuts} | {0, len(data)})
        self.attack(EthArena(), [data[a:b] for a, b in itertools.pairwise(points)])

    @fuzz(60)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(("login", "authorize", "submit", "nicehash_submit")),
                st.one_of(
                    st.sampled_from(WORKERS),
                    st.text(max_size=70),
                    st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True),
                ),
            ),
            min_size=1,
            max_size=150,
        ),
        st.booleans(),
    )
    def test_workers_bounded(self, requests: list[tuple[str, Any]], nicehash: bool) -> None:
        """However many worker names a connection gives, it mines for at most MAX_WORKERS."""
        arena = EthArena()
        out = []
        if nicehash:
            out.append(b'{"id": 1, "method": "mining.subscribe", "params": ["a", "EthereumStratum/1.0.0"]}\n')
        for i, (kind, worker) in enumerate(requests, start=10):
            name = worker if isinstance(worker, str) else ""
            message: dict[str, Any]
            if kind == "login":
                message = {"id": i, "method": "eth_submitLogin", "params": [LOGIN], "worker": worker}
            elif kind == "authorize":
                message = {"id": i, "method": "mining.authorize", "params": [f"{LOGIN}.{name}", "x"]}
            elif kind == "submit":
                message = {
                    "id": i,
                    "method": "eth_submitWork",
                    "params": ["0x00", "0x00", "0x00"],
                    "worker": worker,
                }
            else:
                message = {"id": i, "method": "mining.submit", "params": [f"{LOGIN}.{name}", "0", "00"]}
            out.append(json.dumps(message).encode() + b"\n")
        self.attack(arena, [b"".join(out)])

    def test_edge_cases(self) -> None:
        """Named inputs, at once, a byte at a time (if short) and in 1000-byte pieces."""
        login = b'{"id": 1, "method": "eth_submitLogin", "params": ["' + LOGIN.encode() + b'"]}\n'
        subscribe = b'{"id": 1, "method": "mining.subscribe", "params": ["a", "EthereumStratum/1.0.0"]}\n'
        authorize = b'{"id": 2, "method": "mining.authorize", "params": ["' + LOGIN.encode() + b'.a", "x"]}\n'
        huge = str(10**4000).encode()
        cases = (
            b"[" * 100_000 + b"\n",
            b"x" * (MAX_LINE + 1) + b'\n{"id": 1, "method": "eth_getWork"}\n',
            login + b"x" * (MAX_LINE + 1) + b"\n",
            login
            + b'{"id": 2, "method": "eth_submitWork", "params": ["0x'
            + b"0" * 16
            + b'", "0x'
            + HEADER.hex().encode()
            + b'", "0x'
            + b"0" * 64
            + b'"]}\n',
            login + b'{"id": 2, "method": "eth_submitWork", "params": [' + huge + b", 1e400, NaN]}\n",
            login + b'{"id": NaN, "method": "eth_getWork"}\n{"id": 1e400, "method": "eth_getWork"}\n',
            login + b'{"id": 3, "method": "mining.subscribe", "params": ["a", "EthereumStratum/1.0.0"]}\n',
            subscribe + subscribe + authorize + login,
            subscribe
            + authorize
            + b'{"id": 3, "method": "mining.submit", "params": ["'
            + LOGIN.encode()
            + b'.a", "00000001", "0x0000000000"]}\n',
            subscribe
            + authorize
            + b'{"id": 3, "method": "mining.submit", "params": ["'
            + LOGIN.encode()
            + b'.a", "00000001", '
            + huge
            + b"]}\n",
            subscribe
            + b'{"id": 2, "method": "mining.authorize", "params": ["'
            + LOGIN.encode()
            + b"."
            + b"a" * 8000
            + b'", "x"]}\n',
            b'{"id": 1, "method": "mining.subscribe", "params": []}\n'
            b'{"id": 2, "method": "mining.subscribe", "params": [null]}\n',
            b'{"id": 1, "method": "eth_submitLogin", "params": [null]}\n'
            b'{"id": 2, "method": "eth_submitLogin", "params": {}}\n',
            b'{"id": 1, "method": "eth_submitWork", "params": ["0x00", "0x00", "0x00"], '
            b'"worker": {"a": 1}}\n',
            b'{"id": "\\ud800", "method": "eth_\\u0000", "params": ["\\udfff"]}\n',
            '{"id": 4, "method": "eth_getWork"}'.encode("utf-16-le") + b"\n",
            b"\r\n\r\n \t \x0b\x0c\n",
            b'{"id": 8, "method": "eth_getWork"}{"id": 9}\n',
        )
        for data in cases:
            pieces = [[data], [data[i : i + 1000] for i in range(0, len(data), 1000)]]
            if len(data) < 400:
                pieces.append([data[i : i + 1] for i in range(len(data))])
            for chunks in pieces:
                self.attack(EthArena(), chunks)


class GetworkFuzzTests(EthFuzzCase):
    """Hostile HTTP getwork requests from one IP."""

    def attack_getwork(
        self, arena: EthArena, requests: list[HttpRequest], rng: random.Random | None = None
    ) -> None:
        arena.attack_getwork(requests, rng)
        self.assertEqual(self.flushLoggedErrors(), [])

    @fuzz(300)
    @given(
        st.randoms(use_true_random=False),
        st.integers(min_value=1, max_value=8),
        st.sampled_from(("address", "any")),
    )
    def test_requests(self, rng: random.Random, count: int, usernames: str) -> None:
        arena = EthArena(usernames)
        self.attack_getwork(arena, [getwork_request(rng) for _ in range(count)], rng)

    @fuzz(300)
    @given(
        st.integers(min_value=0, max_value=2**32),
        st.sampled_from(("id", "method", "params", "param", "extra", "whole")),
        st.integers(min_value=0, max_value=3),
        json_values,
    )
    def test_any_value_anywhere(self, seed: int, where: str, index: int, value: Any) -> None:
        arena = EthArena()
        message: Any = getwork_message(random.Random(seed))
        if where == "param":
            params = message["params"]
            if index < len(params):
                params[index] = value
            else:
                params.append(value)
        elif where == "extra":
            message[f"x{index}"] = value
        elif where == "whole":
            message = value
        else:
            message[where] = value
        body = json.dumps(message).encode("utf-8", "surrogatepass")
        self.attack_getwork(arena, [HttpRequest(b"POST", f"/{LOGIN}/rig".encode(), body)])

    @fuzz(150)
    @given(st.binary(max_size=400), st.lists(st.text(max_size=12), max_size=4))
    def test_any_body_any_path(self, body: bytes, segments: list[str]) -> None:
        path = quote(("/" + "/".join(segments)).encode("utf-8", "surrogatepass"), safe="/").encode()
        self.attack_getwork(
            EthArena("any"),
            [HttpRequest(b"POST", path, body), HttpRequest(b"POST", f"/{LOGIN}".encode(), body)],
        )

    @fuzz(30)
    @given(st.lists(st.text(alphabet="abcdef0123456789", min_size=1, max_size=8), min_size=1, max_size=60))
    def test_miners_bounded(self, workers: list[str]) -> None:
        """However many logins and workers poll, at most MAX_MINERS are kept."""
        arena = EthArena("any")
        body = b'{"id": 1, "method": "eth_getWork", "params": []}'
        requests = [HttpRequest(b"POST", f"/login{i % 7}/{w}".encode(), body) for i, w in enumerate(workers)]
        self.attack_getwork(arena, requests)
        self.assertLessEqual(len(arena.getwork.miners), SMALL_MAX_MINERS)

    def test_edge_cases(self) -> None:
        path = f"/{LOGIN}/rig".encode()
        get_work = b'{"id": 1, "method": "eth_getWork", "params": []}'
        bodies = (
            b"[" * 8000,
            b"[" * 5000 + b"]" * 5000,
            b'{"id": ' + b"[" * 3000 + b"]" * 3000 + b', "method": "eth_getWork"}',
            b'{"id": ' + str(10**4000).encode() + b', "method": "eth_getWork"}',
            b'{"id": ' + b"9" * 4400 + b', "method": "eth_getWork"}',
            get_work * MAX_REQUESTS,
            get_work * (MAX_REQUESTS + 1),
            b'{"id": 1, "method": "eth_submitWork", "params": ["0x'
            + b"0" * 16
            + b'", "0x'
            + HEADER.hex().encode()
            + b'", "0x'
            + b"0" * 64
            + b'"]}' * 2,
            b'{"method": "eth_getWork"}',
            b'{"id": 1, "method": "eth_getWork", "params": {}}',
            b'{"id": 1, "method": 5}',
            b"\xff\xfe" + get_work,
            get_work.decode().encode("utf-16"),
            b"",
        )
        for body in bodies:
            for chunked in (False, True):
                self.attack_getwork(EthArena(), [HttpRequest(b"POST", path, body, chunked=chunked)])
        for bad_path in (b"/", b"/a/b/c", b"/0x1234", b"/%ff", b"//" + LOGIN.encode() + b"//rig//"):
            self.attack_getwork(EthArena(), [HttpRequest(b"POST", bad_path, get_work)])
        self.attack_getwork(EthArena(), [HttpRequest(b"GET", path, b""), HttpRequest(b"PUT", path, get_work)])


class HostileInputEdgeTests(EthFuzzCase):
    """One case each of what the properties above check loosely or not at
    all: reply shapes, the size of what a connection keeps, the state a
    refusal leaves, the names shares are credited under."""

    def test_getwork_non_finite_id_answered_in_json(self) -> None:
        """Python's json reads NaN and 1e400 (infinity): echoed as they are,
        the reply is not JSON (the stratum port answers such ids with null)."""
        arena = EthArena()
        channel = HttpChannel(arena.site, ATTACKER_IP)
        for raw_id in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b'[{"a": NaN}]'):
            body = b'{"id": ' + raw_id + b', "method": "eth_getWork", "params": []}'
            (response,) = channel.exchange(HttpRequest(b"POST", f"/{LOGIN}/rig".encode(), body))
            self.assertEqual(response.status, 200)
            try:
                _STRICT.decode(response.body.decode())
            except ValueError as e:
                self.fail(f"id {raw_id.decode()}: the reply {response.body!r} is not JSON ({e})")

    def test_nicehash_worker_names_bounded_in_size(self) -> None:
        """A NiceHash connection keeps each authorized name as sent: 64 names
        of the line's length are half a megabyte, for workers credited as
        ``<login>.0``. A name as credited is at most 64 + 1 + 64 characters."""
        arena = EthArena()
        attacker = arena.attacker
        _call(attacker, {"id": 1, "method": "mining.subscribe", "params": ["a", NICEHASH_PROTOCOL]})
        for i in range(MAX_WORKERS):
            name = f"{LOGIN}.{i}" + "b" * 8000
            _call(attacker, {"id": 2 + i, "method": "mining.authorize", "params": [name, "x"]})
        held = sum(len(name) for name in attacker.session.workers)
        self.assertLessEqual(held, MAX_WORKERS * 129)

    def test_eth_proxy_accepted_share_in_json_rpc_2(self) -> None:
        """eth-proxy replies are JSON-RPC 2.0 (``jsonrpc``, no ``error`` unless
        refused), as OEP's are: an accepted share's reply too."""
        arena = EthArena()
        (nonce, mix), _, _ = bystander_shares()
        params = submit_work_params(nonce, mix)
        accepted = _call(arena.proxy, {"id": 7, "method": "eth_submitWork", "params": params})
        refused = _call(arena.proxy, {"id": 8, "method": "eth_submitWork", "params": params})
        self.assertEqual(set(refused[0]), {"id", "jsonrpc", "result", "error"})
        self.assertEqual(accepted, [{"id": 7, "jsonrpc": "2.0", "result": True}])

    def test_refused_eth_proxy_login_changes_nothing(self) -> None:
        """An eth_submitLogin refused (the connection has its 64 workers)
        leaves the connection logged in as it was."""
        arena = EthArena()
        miner = arena.connect()
        for i in range(MAX_WORKERS):
            _call(miner, {"id": i, "method": "eth_submitLogin", "params": [LOGIN], "worker": f"w{i}"})
        refused = _call(
            miner, {"id": 99, "method": "eth_submitLogin", "params": [OTHER_ADDRESS], "worker": "w0"}
        )
        self.assertEqual(refused[0]["error"]["code"], 24)
        self.assertEqual(miner.protocol.login, LOGIN)  # type: ignore[attr-defined]
        (nonce, mix), _, _ = bystander_shares()
        params = submit_work_params(nonce, mix)
        reply = _call(miner, {"id": 100, "method": "eth_submitWork", "params": params, "worker": "w0"})
        self.assertEqual(reply[0]["result"], True, reply)

    def test_any_usernames_one_name_per_login(self) -> None:
        """With usernames ``any``, a login in mixed case is credited under one
        name whichever way it mines (getwork lowers it, the stratum port keeps it)."""
        arena = EthArena("any")
        proxy_share, _, getwork_share = bystander_shares()
        miner = arena.connect()
        _call(miner, {"id": 1, "method": "eth_submitLogin", "params": ["Alice"], "worker": "rig"})
        _call(
            miner,
            {
                "id": 2,
                "method": "eth_submitWork",
                "params": submit_work_params(*proxy_share),
                "worker": "rig",
            },
        )
        channel = HttpChannel(arena.site, ATTACKER_IP)
        channel.call("/Alice/rig", "eth_submitWork", submit_work_params(*getwork_share))
        self.assertEqual(len(arena.recorder.valid), 2)
        self.assertEqual(arena.recorder.valid[0][0], arena.recorder.valid[1][0])
