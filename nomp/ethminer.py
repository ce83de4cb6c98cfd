"""``nomp-miner``'s ethash mode: a small CPU miner for Ethereum-family pool ports.

    nomp-miner getwork+http://HOST:PORT/LOGIN[/WORKER] [-t THREADS] [-d SECONDS] [--max-shares N]
    nomp-miner ethproxy+tcp://HOST:PORT -u LOGIN[.WORKER] [-p PASSWORD]
    nomp-miner ethproxy+ssl://HOST:PORT -u LOGIN[.WORKER] [--ca FILE | --insecure]
    nomp-miner nicehash+tcp://HOST:PORT -u LOGIN[.WORKER] [-p PASSWORD]
    nomp-miner nicehash+ssl://HOST:PORT -u LOGIN[.WORKER] [--ca FILE | --insecure]
    ... [--ecip1099-block N]   (etchash: Ethereum Classic 11700000, Mordor 2520000)

Three dialects, one grinder:

- ``getwork+http``: JSON-RPC over HTTP POST, as geth and open-ethereum-pool
  serve it: ``eth_getWork`` polled (every half second and right after each
  share), ``eth_submitWork``, and ``eth_submitHashrate`` now and then. A
  node's own RPC port speaks it too.
- ``ethproxy+tcp``: eth-proxy stratum (newline-delimited JSON):
  ``eth_submitLogin``, ``eth_getWork``, work pushed with id 0,
  ``eth_submitWork`` with a top-level ``worker``.
- ``nicehash+tcp``: EthereumStratum/1.0.0: ``mining.subscribe``,
  ``mining.authorize``, ``mining.set_difficulty`` (in NiceHash's units),
  ``mining.notify``, ``mining.submit`` of the nonce's part after the
  pool's extranonce.

The seed hash of a job names its epoch. Under etchash (``--ecip1099-block``)
pools send the seed of ethash epoch 2E for etchash epoch E, whose cache
and dataset sizes are those of epoch E: the miner needs the activation
block to tell. It hashes in light mode (a cache of tens of MiB, built in a
thread in about a second at the first epochs): a test tool, not a fast miner.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import sys
from collections import deque
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, ClassVar, Final, Literal
from urllib.parse import urlsplit

import treq
from OpenSSL import SSL
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from nomp.hashing import ethash
from nomp.hashing.ethash import EPOCH_LENGTH, MAX_EPOCH, EpochCaches, EthashCache, EthashResult
from nomp.minerkit import MinerStats, connection_failure, tls_options

Dialect = Literal["getwork", "ethproxy", "nicehash"]

AGENT: Final = "nomp-miner/1.0"
NICEHASH_PROTOCOL: Final = "EthereumStratum/1.0.0"
# NiceHash's difficulty 1 is Bitcoin's: about 2^32 hashes a share.
NICEHASH_DIFF1_TARGET: Final = 0xFFFF << 208
BATCH: Final = 8  # nonces per C call: the cache reads of 8 hashes go side by side
CHUNK: Final = 512  # nonces per trip to a thread (a quarter second or so): new work waits no longer
STALE: Final = "stale"  # a share the pool refused after it had sent newer work
REFUSED: Final = "result false"
# scheme -> (dialect, TLS)
ETH_SCHEMES: Final[dict[str, tuple[Dialect, bool]]] = {
    "getwork+http": ("getwork", False),
    "ethproxy+tcp": ("ethproxy", False),
    "ethproxy+ssl": ("ethproxy", True),
    "ethproxy+tls": ("ethproxy", True),
    "nicehash+tcp": ("nicehash", False),
    "nicehash+ssl": ("nicehash", True),
    "nicehash+tls": ("nicehash", True),
}
# open-ethereum-pool's: its HTTP proxy and its stratum port (forks serve NiceHash on the latter)
DEFAULT_PORTS: Final[dict[Dialect, int]] = {"getwork": 8888, "ethproxy": 8008, "nicehash": 8008}


def _say(text: str, error: bool = False) -> None:
    print(text, file=sys.stderr if error else sys.stdout)


@dataclass(frozen=True, slots=True)
class EthPoolURL:
    """An Ethereum-family pool port: its dialect, where it is, whether with
    TLS and (getwork) the path that names the login and worker."""

    dialect: Dialect
    host: str
    port: int
    tls: bool = False
    path: str = "/"

    @property
    def http_url(self) -> str:
        """Where getwork requests are POSTed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"


def is_eth_url(url: str) -> bool:
    """Whether ``url`` has one of the ethash schemes (:data:`ETH_SCHEMES`)."""
    return "://" in url and url.split("://", 1)[0].lower() in ETH_SCHEMES


def parse_eth_url(url: str) -> EthPoolURL:
    """``getwork+http://HOST:PORT/LOGIN[/WORKER]``, ``ethproxy+tcp://HOST:PORT``
    (``+ssl``, ``+tls``) or ``nicehash+tcp://HOST:PORT`` (``+ssl``, ``+tls``).
    ValueError names what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ETH_SCHEMES:
        raise ValueError(f"unknown scheme {parts.scheme!r}: use one of {', '.join(ETH_SCHEMES)}")
    dialect, tls = ETH_SCHEMES[scheme]
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    port = parts.port  # raises ValueError when out of range or not a number
    path = parts.path or "/"
    if dialect != "getwork" and path != "/":
        raise ValueError(f"{scheme}:// takes no path: give the login with -u LOGIN[.WORKER]")
    return EthPoolURL(
        dialect, parts.hostname, port if port is not None else DEFAULT_PORTS[dialect], tls, path
    )


def getwork_path(user: str) -> str:
    """The getwork path of ``LOGIN[.WORKER]``: ``/LOGIN[/WORKER]``."""
    login, _, worker = user.partition(".")
    return f"/{login}/{worker}" if worker else f"/{login}"


# --- epochs ---


class SeedEpochs:
    """Which ethash epoch a seed hash is of: seeds are computed upward from
    epoch 0 as far as asked and kept."""

    def __init__(self) -> None:
        self._seeds = [bytes(32)]
        self._epochs = {bytes(32): 0}

    def epoch_of(self, seed: bytes) -> int:
        """The epoch whose seed hash is ``seed``; ValueError when none up to MAX_EPOCH is."""
        while seed not in self._epochs:
            if len(self._seeds) > MAX_EPOCH:
                raise ValueError(f"the seed hash {seed.hex()} is of no epoch up to {MAX_EPOCH}")
            following = ethash.keccak_256(self._seeds[-1])
            self._epochs[following] = len(self._seeds)
            self._seeds.append(following)
        return self._epochs[seed]


seed_epochs: Final = SeedEpochs()


def work_epochs(seed_epoch: int, block_number: int | None, activation: int | None) -> tuple[int, int]:
    """(seed epoch, size epoch) of work whose seed hash is of ``seed_epoch``.

    Plain ethash (``activation`` None) uses one epoch for both. Under etchash
    the block number, when the pool gives it, settles it; else a seed epoch
    whose first block (as a 30,000-block epoch) is at or past activation is
    etchash's, with half its number as size epoch. That holds for every
    activation on a 60,000-block boundary, as Classic's and Mordor's are.
    """
    if activation is None:
        return seed_epoch, seed_epoch
    if block_number is not None:
        epochs = ethash.epochs_for(block_number, activation)
        if epochs[0] == seed_epoch:
            return epochs
    if seed_epoch * EPOCH_LENGTH >= activation:
        return seed_epoch, seed_epoch // 2
    return seed_epoch, seed_epoch


def nicehash_target(difficulty: float | int | str) -> int:
    """The highest final hash a share of NiceHash ``difficulty`` may have:
    0x00000000ffff0000... (difficulty 1) divided by it, floored, in exact
    arithmetic (a float difficulty is the binary fraction it holds)."""
    value = Fraction(difficulty)
    if value <= 0:
        raise ValueError("difficulty must be > 0")
    return min(int(Fraction(NICEHASH_DIFF1_TARGET) / value), 2**256 - 1)


def _hex(value: Any, length: int | None = None) -> bytes:
    """Bytes of a hex string, with or without 0x; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"not a hex string: {value!r}")
    raw = bytes.fromhex(value[2:] if value[:2].lower() == "0x" else value)
    if length is not None and len(raw) != length:
        raise ValueError(f"{value!r} is not {length} bytes")
    return raw


def _quantity(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError(f"not a hex quantity: {value!r}")
    return int(value, 16)


def error_text(error: Any) -> str:
    """``CODE MESSAGE`` of a JSON-RPC error: an object ``{code, message}`` or a
    stratum array ``[code, message, data]``."""
    if isinstance(error, dict):
        return f"{error.get('code')} {error.get('message')}"
    if isinstance(error, list | tuple) and len(error) >= 2:
        return f"{error[0]} {error[1]}"
    return str(error)


def verdict(reply: dict[str, Any]) -> str | None:
    """None when the reply accepts a share, else why not."""
    error = reply.get("error")
    if error:
        return error_text(error)
    return None if reply.get("result") is True else REFUSED


# --- the grinder ---


@dataclass(frozen=True, slots=True)
class EthJob:
    """Work as the pool sent it, ready to hash."""

    job_id: str  # NiceHash's job id; the header hash's hex in the other dialects
    header: bytes
    seed_epoch: int
    size_epoch: int
    target: int
    generation: int  # bumped on every job that makes older ones stale
    extranonce: bytes = b""  # NiceHash: the nonce's first bytes, the pool's
    block_number: int | None = None

    @property
    def nonce_bits(self) -> int:
        """Bits of the nonce the miner picks."""
        return 64 - 8 * len(self.extranonce)

    def nonce(self, counter: int) -> int:
        """The full 64-bit nonce: the extranonce, then ``counter``'s low bits."""
        bits = self.nonce_bits
        return (int.from_bytes(self.extranonce, "big") << bits) | (counter & ((1 << bits) - 1))


@dataclass(frozen=True, slots=True)
class Found:
    """A nonce whose final hash met its job's target."""

    job: EthJob
    nonce: int
    result: EthashResult


class EthMiner:
    """Grinds the newest job on ``threads`` threads and submits, one at a
    time, the shares that meet its target. The dialects below talk to the
    pool: they call :meth:`set_work` and implement :meth:`submit_share`.

    ``authorized`` fires with whether the pool took the login (``refusal``
    says why not); ``finished`` fires when ``max_shares`` shares were
    accepted or the pool went away (``lost`` says why).
    """

    dialect: ClassVar[Dialect]

    def __init__(
        self,
        reactor: Any,
        threads: int = 1,
        ecip1099_block: int | None = None,
        max_shares: int | None = None,
        caches: EpochCaches = ethash.caches,
    ) -> None:
        self.reactor = reactor
        self.threads = threads
        self.ecip1099_block = ecip1099_block
        self.max_shares = max_shares
        self.caches = caches
        self.stats = MinerStats()
        self.job: EthJob | None = None
        self.hashes = 0  # hashed so far
        self.authorized: defer.Deferred[bool] = defer.Deferred()
        self.refusal: str | None = None
        self.finished: defer.Deferred[None] = defer.Deferred()
        self.lost: Failure | None = None
        self._generation = 0
        # A random start, so two miners on one login do not hash the same nonces.
        self._counter = random.getrandbits(64)
        self._running = False
        self._stopping = False
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="nomp-miner")
        self._grinders: list[defer.Deferred[None]] = []
        self._ready: dict[tuple[int, int], EthashCache] = {}
        self._builds: dict[tuple[int, int], defer.Deferred[None]] = {}
        self._queue: deque[Found] = deque()
        self._submitter: defer.Deferred[None] | None = None

    @property
    def name(self) -> str:
        """Who the miner mines for, for messages."""
        raise NotImplementedError

    # --- what the dialects call ---

    def set_work(
        self,
        job_id: str,
        header: bytes,
        seed: bytes,
        target: int,
        *,
        block_number: int | None = None,
        clean: bool = True,
        extranonce: bytes = b"",
    ) -> EthJob | None:
        """Mine this from now on (the same work again changes nothing). A
        ``clean`` job makes shares of older ones stale. None, and a line on
        standard error, when the seed is of no epoch."""
        try:
            seed_epoch = seed_epochs.epoch_of(seed)
        except ValueError as e:
            _say(f"nomp-miner: work ignored: {e}", error=True)
            return None
        seed_epoch, size_epoch = work_epochs(seed_epoch, block_number, self.ecip1099_block)
        current = self.job
        if current is not None and replace(current, generation=0) == EthJob(
            job_id, header, seed_epoch, size_epoch, target, 0, extranonce, block_number
        ):
            return current
        if clean or current is None:
            self._generation += 1
        job = EthJob(
            job_id, header, seed_epoch, size_epoch, target, self._generation, extranonce, block_number
        )
        self.job = job
        self._want_cache(seed_epoch, size_epoch)
        return job

    def _want_cache(self, seed_epoch: int, size_epoch: int) -> None:
        key = (seed_epoch, size_epoch)
        if key in self._ready or key in self._builds:
            return
        # The reactor's thread pool: a build (a second or more) must not hold the reactor
        # thread, and the grinding threads may not be started yet.
        building: defer.Deferred[EthashCache] = deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self.caches.get, seed_epoch, size_epoch
        )

        def built(cache: EthashCache) -> None:
            self._ready[key] = cache
            # Keep the caches of the newest job and one more: a pool may go back an epoch.
            for old in [k for k in self._ready if k != key][:-1]:
                del self._ready[old]

        def failed(failure: Failure) -> None:
            _say(f"nomp-miner: cannot build the cache of epoch {seed_epoch}: {failure.value}", error=True)

        done = building.addCallbacks(built, failed)
        done.addBoth(lambda _: self._builds.pop(key, None))
        if not done.called:
            self._builds[key] = done

    def _finish(self) -> None:
        if not self.finished.called:
            self.finished.callback(None)

    def _not_authorized(self, failure: Failure) -> None:
        if not self.authorized.called:
            self.authorized.errback(failure)

    def _authorize(self, reply: dict[str, Any] | None) -> None:
        """``authorized`` from a login reply (None: taken without one)."""
        if self.authorized.called:
            return
        if reply is None or reply.get("result") is True:
            self.authorized.callback(True)
            return
        self.refusal = error_text(reply["error"]) if reply.get("error") else "refused"
        self.authorized.callback(False)

    # --- what the dialects implement ---

    def submit_share(self, found: Found) -> defer.Deferred[dict[str, Any]]:
        """Send a share; the Deferred fires with the pool's reply."""
        raise NotImplementedError

    async def refresh(self) -> None:
        """Take in whatever new work the pool has before the next share is sent."""
        # Pushed work waiting in the same read as the last reply is read first.
        await task.deferLater(self.reactor, 0)

    async def disconnect(self) -> None:
        """Close the link to the pool."""

    # --- grinding ---

    def start(self) -> None:
        """Grind on every thread until stop(), or until ``finished``."""
        self._running = True
        self._pool.start()
        self._grinders = [defer.Deferred.fromCoroutine(self._grind()) for _ in range(self.threads)]

    async def stop(self) -> None:
        """Stop grinding, wait for the pool's answer to what was sent, disconnect."""
        self._running = False
        self._stopping = True
        await defer.DeferredList(self._grinders)
        if self._submitter is not None:
            await self._submitter
        await self.disconnect()
        if self._builds:
            await defer.DeferredList(list(self._builds.values()))
        if self._pool.started and not self._pool.joined:
            self._pool.stop()

    async def _grind(self) -> None:
        while self._running and not self.finished.called:
            job = self.job
            cache = None if job is None else self._ready.get((job.seed_epoch, job.size_epoch))
            if job is None or cache is None:
                await task.deferLater(self.reactor, 0.05)
                continue
            start = self._counter
            self._counter = (start + CHUNK) % 2**64
            found, hashed = await deferToThreadPool(self.reactor, self._pool, self._search, job, cache, start)
            self.hashes += hashed
            for nonce, result in found:
                self._found(Found(job, nonce, result))

    def _search(
        self, job: EthJob, cache: EthashCache, start: int
    ) -> tuple[list[tuple[int, EthashResult]], int]:
        """In a grinding thread: hash CHUNK nonces from ``start`` unless new work comes first."""
        found: list[tuple[int, EthashResult]] = []
        hashed = 0
        for batch in range(start, start + CHUNK, BATCH):
            if self.job is not job or not self._running:
                break
            nonces = [job.nonce(counter) for counter in range(batch, batch + BATCH)]
            results = cache.hash_many([(job.header, nonce) for nonce in nonces])
            hashed += BATCH
            found += [(n, r) for n, r in zip(nonces, results, strict=True) if r.value <= job.target]
        return found, hashed

    def _found(self, found: Found) -> None:
        if found.job.generation != self._generation:
            return  # newer work made it stale while it was hashed
        self._queue.append(found)
        if self._submitter is None or self._submitter.called:
            self._submitter = defer.Deferred.fromCoroutine(self._submit_queued())

    async def _submit_queued(self) -> None:
        """One share at a time, newer work taken in between: after a share that
        was a block, the shares left of its job are stale and are not sent."""
        while self._queue and self._running and not self.finished.called:
            found = self._queue.popleft()
            if found.job.generation != self._generation:
                continue
            self.stats.submitted += 1
            try:
                reply = await self.submit_share(found)
            except Exception:
                continue  # no answer (the pool went away): counted neither way
            await self.refresh()
            reason = verdict(reply)
            if reason is None:
                self.stats.accepted += 1
                if self.max_shares is not None and self.stats.accepted >= self.max_shares:
                    self._finish()
                continue
            if reason == REFUSED and found.job.generation != self._generation:
                reason = STALE
            assert self.stats.rejected is not None
            self.stats.rejected[reason] += 1


# --- HTTP getwork ---


class GetworkMiner(EthMiner):
    """HTTP getwork: ``eth_getWork`` every ``poll_interval`` seconds and after
    each share, ``eth_submitWork``, ``eth_submitHashrate`` every
    ``hashrate_interval`` seconds (None: never). :func:`connect` sets the URL."""

    dialect = "getwork"

    def __init__(
        self,
        reactor: Any,
        threads: int = 1,
        ecip1099_block: int | None = None,
        max_shares: int | None = None,
        poll_interval: float = 0.5,
        hashrate_interval: float | None = 10.0,
        caches: EpochCaches = ethash.caches,
    ) -> None:
        super().__init__(reactor, threads, ecip1099_block, max_shares, caches)
        self.url = ""
        self.poll_interval = poll_interval
        self.hashrate_interval = hashrate_interval
        self.miner_id = os.urandom(32)  # eth_submitHashrate's id of this miner
        self._http = HTTPConnectionPool(reactor)
        self._ids = itertools.count(1)
        self._polls = itertools.count(1)
        self._applied = 0  # the poll whose reply set the work: an older reply is not applied
        self._trouble: str | None = None
        self._poller: defer.Deferred[None] | None = None
        self._nap: defer.Deferred[None] | None = None

    @property
    def name(self) -> str:
        return self.url

    async def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        """One JSON-RPC call; the reply object. Raises on no reply, HTTP errors and bad JSON."""
        # Compact: open-ethereum-pool refuses bodies over 256 bytes, and a submit is 224.
        body = json.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params},
            separators=(",", ":"),
        ).encode()
        response = await treq.post(
            self.url,
            body,
            headers=Headers({b"Content-Type": [b"application/json"]}),
            pool=self._http,
            timeout=10,
            reactor=self.reactor,
        )
        content = await response.content()
        if response.code != 200:
            raise RuntimeError(f"HTTP {response.code} from {self.url}")
        # The reply may be followed by others (open-ethereum-pool answers each object of a body).
        reply, _ = json.JSONDecoder().raw_decode(content.decode().strip())
        if not isinstance(reply, dict):
            raise ValueError(f"not a JSON-RPC reply: {reply!r}")
        return reply

    async def open(self, url: str) -> None:
        """The first eth_getWork: a refusal other than "work not ready" is a
        refused login; then polling starts."""
        self.url = url
        reply = await self.call("eth_getWork", [])  # no answer (a refused connection...) raises
        error = reply.get("error")
        if error and not _not_ready(error):
            self._authorize(reply)
            return
        self._take(reply)
        self._authorize(None)
        self._poller = defer.Deferred.fromCoroutine(self._poll_loop())

    def _take(self, reply: dict[str, Any]) -> None:
        error = reply.get("error")
        if error:
            self._trouble_is(f"eth_getWork: {error_text(error)}")
            return
        try:
            result = reply["result"]
            header, seed, target = _hex(result[0], 32), _hex(result[1], 32), _quantity(result[2])
            number = _quantity(result[3]) if len(result) > 3 else None
        except (KeyError, IndexError, TypeError, ValueError) as e:
            self._trouble_is(f"eth_getWork: malformed work: {e}")
            return
        self._trouble = None
        self.set_work(header.hex(), header, seed, target, block_number=number)

    def _trouble_is(self, trouble: str) -> None:
        if trouble != self._trouble:  # once, not every half second
            _say(f"nomp-miner: {trouble}", error=True)
        self._trouble = trouble

    async def poll(self) -> None:
        """eth_getWork now; its work replaces the job unless a later poll answered first."""
        serial = next(self._polls)
        try:
            reply = await self.call("eth_getWork", [])
        except Exception as e:
            self._trouble_is(f"eth_getWork: {type(e).__name__}: {e}")
            return
        if serial > self._applied:
            self._applied = serial
            self._take(reply)

    async def _poll_loop(self) -> None:
        reported_at, reported = self.reactor.seconds(), 0
        while not self._stopping:
            self._nap = task.deferLater(self.reactor, self.poll_interval)
            try:
                await self._nap
            except defer.CancelledError:
                return
            finally:
                self._nap = None
            await self.poll()
            now = self.reactor.seconds()
            if self.hashrate_interval is not None and now - reported_at >= self.hashrate_interval:
                rate = int((self.hashes - reported) / (now - reported_at))
                reported_at, reported = now, self.hashes
                with contextlib.suppress(Exception):  # a report lost is no matter
                    await self.call("eth_submitHashrate", [hex(rate), "0x" + self.miner_id.hex()])

    def submit_share(self, found: Found) -> defer.Deferred[dict[str, Any]]:
        params = [
            f"0x{found.nonce:016x}",
            "0x" + found.job.header.hex(),
            "0x" + found.result.mix_digest.hex(),
        ]
        return defer.Deferred.fromCoroutine(self.call("eth_submitWork", params))

    async def refresh(self) -> None:
        await self.poll()

    async def disconnect(self) -> None:
        self._stopping = True
        if self._nap is not None:
            self._nap.cancel()
        if self._poller is not None:
            await self._poller
        await self._http.closeCachedConnections()


def _not_ready(error: Any) -> bool:
    """open-ethereum-pool's ``{code: 0, "Work not ready"}``: no template yet."""
    code = error.get("code") if isinstance(error, dict) else error[0] if isinstance(error, list) else None
    return code in (0, "0")


# --- stratum dialects ---


class LineClient(LineOnlyReceiver):
    """A newline-delimited JSON connection: requests and their replies, and
    what the pool sends unasked (notifications, eth-proxy's pushed work)."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, miner: StreamMiner) -> None:
        self.miner = miner
        self._ids = itertools.count(1)  # eth-proxy pushes work with id 0
        self._pending: dict[int, defer.Deferred[dict[str, Any]]] = {}
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.miner.connection_made(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.miner.connection_lost(reason if reason is not None else Failure(ConnectionError()))
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.errback(ConnectionError("connection closed"))
        self.closed.callback(None)

    def call(self, method: str, params: list[Any], **fields: Any) -> defer.Deferred[dict[str, Any]]:
        """Send a request (``fields`` added at its top level); the Deferred fires with the reply."""
        if self.closed.called:
            return defer.fail(ConnectionError("connection closed"))
        request_id = next(self._ids)
        reply: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._pending[request_id] = reply
        message: dict[str, Any] = {"id": request_id}
        if self.miner.jsonrpc:
            message["jsonrpc"] = "2.0"
        message.update(method=method, params=params, **fields)
        self.sendLine(json.dumps(message).encode())
        return reply

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return  # not JSON: nothing a miner can act on
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if isinstance(method, str):
            params = message.get("params")
            self.miner.notification(method, params if isinstance(params, list) else [])
            return
        request_id = message.get("id")
        reply = self._pending.pop(request_id, None) if isinstance(request_id, int) and request_id else None
        if reply is not None:
            reply.callback(message)
        else:
            self.miner.unasked(message)


class StreamMiner(EthMiner):
    """A miner on one TCP (or TLS) connection: :func:`connect` opens it."""

    jsonrpc: ClassVar[bool] = False  # whether requests carry "jsonrpc": "2.0"

    def __init__(
        self,
        reactor: Any,
        threads: int = 1,
        ecip1099_block: int | None = None,
        max_shares: int | None = None,
        caches: EpochCaches = ethash.caches,
    ) -> None:
        super().__init__(reactor, threads, ecip1099_block, max_shares, caches)
        self.client: LineClient | None = None

    def connection_made(self, client: LineClient) -> None:
        self.client = client
        defer.Deferred.fromCoroutine(self.handshake()).addErrback(self._not_authorized)

    async def handshake(self) -> None:
        """Log in; fire ``authorized``."""
        raise NotImplementedError

    def connection_lost(self, reason: Failure) -> None:
        """Before authorization, ``authorized`` fails with why; after it, mining ends."""
        self._not_authorized(reason)
        if not self._stopping:
            self.lost = reason
        self._finish()

    def notification(self, method: str, params: list[Any]) -> None:
        """A request from the pool."""

    def unasked(self, message: dict[str, Any]) -> None:
        """A reply to no request of ours."""

    def _call(self, method: str, params: list[Any], **fields: Any) -> defer.Deferred[dict[str, Any]]:
        if self.client is None:
            return defer.fail(ConnectionError("not connected"))
        return self.client.call(method, params, **fields)

    async def disconnect(self) -> None:
        self._stopping = True
        if self.client is not None and self.client.transport is not None:
            self.client.transport.loseConnection()
            await self.client.closed


class EthProxyMiner(StreamMiner):
    """eth-proxy stratum: ``eth_submitLogin [login, password]`` with the
    worker at the top level, ``eth_getWork``, pushed work, ``eth_submitWork``."""

    dialect = "ethproxy"
    jsonrpc = True

    def __init__(
        self,
        reactor: Any,
        login: str,
        password: str = "x",
        worker: str | None = None,
        threads: int = 1,
        ecip1099_block: int | None = None,
        max_shares: int | None = None,
        caches: EpochCaches = ethash.caches,
    ) -> None:
        super().__init__(reactor, threads, ecip1099_block, max_shares, caches)
        self.login = login
        self.password = password
        self.worker = worker

    @property
    def name(self) -> str:
        return self.login if self.worker is None else f"{self.login}.{self.worker}"

    def _worker(self) -> dict[str, str]:
        return {} if self.worker is None else {"worker": self.worker}

    async def handshake(self) -> None:
        reply = await self._call("eth_submitLogin", [self.login, self.password], **self._worker())
        if reply.get("result") is not True:
            self._authorize(reply)
            return
        self.unasked(await self._call("eth_getWork", []))  # "work not ready": pushed later
        self._authorize(None)

    def unasked(self, message: dict[str, Any]) -> None:
        result = message.get("result")
        if not isinstance(result, list):
            return
        try:
            header, seed, target = _hex(result[0], 32), _hex(result[1], 32), _quantity(result[2])
            number = _quantity(result[3]) if len(result) > 3 else None
        except (IndexError, ValueError) as e:
            _say(f"nomp-miner: malformed work ignored: {e}", error=True)
            return
        self.set_work(header.hex(), header, seed, target, block_number=number)

    def submit_share(self, found: Found) -> defer.Deferred[dict[str, Any]]:
        params = [
            f"0x{found.nonce:016x}",
            "0x" + found.job.header.hex(),
            "0x" + found.result.mix_digest.hex(),
        ]
        return self._call("eth_submitWork", params, **self._worker())


class NiceHashMiner(StreamMiner):
    """EthereumStratum/1.0.0: ``mining.subscribe``, ``mining.extranonce.subscribe``,
    ``mining.authorize [user, password]``; difficulty and extranonce changes
    apply from the next job."""

    dialect = "nicehash"

    def __init__(
        self,
        reactor: Any,
        user: str,
        password: str = "x",
        threads: int = 1,
        ecip1099_block: int | None = None,
        max_shares: int | None = None,
        caches: EpochCaches = ethash.caches,
    ) -> None:
        super().__init__(reactor, threads, ecip1099_block, max_shares, caches)
        self.user = user
        self.password = password
        self.extranonce: bytes | None = None
        self.difficulty: float | int = 1  # NiceHash's, until the pool sets one

    @property
    def name(self) -> str:
        return self.user

    async def handshake(self) -> None:
        reply = await self._call("mining.subscribe", [AGENT, NICEHASH_PROTOCOL])
        if reply.get("error") or not isinstance(reply.get("result"), list):
            self._authorize(reply if reply.get("error") else {"error": "mining.subscribe refused"})
            return
        try:
            self.extranonce = _extranonce(reply["result"][1])
        except (IndexError, ValueError) as e:
            self._authorize({"error": f"mining.subscribe: bad extranonce: {e}"})
            return
        # Optional in the protocol: a pool that has it may move our extranonce later.
        self._call("mining.extranonce.subscribe", []).addErrback(lambda _: None)
        self._authorize(await self._call("mining.authorize", [self.user, self.password]))

    def notification(self, method: str, params: list[Any]) -> None:
        try:
            if method == "mining.set_difficulty":
                difficulty = params[0]
                nicehash_target(difficulty)  # refuses what is no difficulty
                self.difficulty = difficulty
            elif method == "mining.set_extranonce":
                self.extranonce = _extranonce(params[0])
            elif method == "mining.notify":
                job_id, seed, header, clean = params[:4]
                if self.extranonce is None:
                    return
                self.set_work(
                    str(job_id),
                    _hex(header, 32),
                    _hex(seed, 32),
                    nicehash_target(self.difficulty),
                    clean=bool(clean),
                    extranonce=self.extranonce,
                )
        except (IndexError, TypeError, ValueError) as e:
            _say(f"nomp-miner: {method} ignored: {e}", error=True)

    def submit_share(self, found: Found) -> defer.Deferred[dict[str, Any]]:
        job = found.job
        miner_part = found.nonce & ((1 << job.nonce_bits) - 1)
        digits = job.nonce_bits // 4
        return self._call("mining.submit", [self.user, job.job_id, f"{miner_part:0{digits}x}"])


def _extranonce(value: Any) -> bytes:
    raw = _hex(value)
    if len(raw) > 7:
        raise ValueError(f"{value!r} leaves the miner no nonce")
    return raw


# --- connecting and the command line ---


async def connect(
    miner: EthMiner, url: EthPoolURL, tls: IOpenSSLClientConnectionCreator | None = None
) -> None:
    """Open the miner's link to ``url``; with ``tls`` (nomp.miner.tls_options),
    a TLS one. Then ``miner.authorized`` says whether the pool took the login.

    For getwork this is the first eth_getWork; for the stratum dialects a
    TLS handshake may still be going on when this returns: a refused
    certificate shows as ``miner.authorized`` failing.
    """
    if isinstance(miner, GetworkMiner):
        await miner.open(url.http_url)
        return
    assert isinstance(miner, StreamMiner)
    endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(miner.reactor, url.host, url.port, timeout=10)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    await endpoint.connect(Factory.forProtocol(lambda: LineClient(miner)))


def miner_for(
    reactor: Any,
    url: EthPoolURL,
    user: str | None = None,
    password: str = "x",
    threads: int = 1,
    ecip1099_block: int | None = None,
    max_shares: int | None = None,
) -> EthMiner:
    """The miner of ``url``'s dialect. ``user`` is ``LOGIN[.WORKER]`` (for
    getwork, in the URL's path instead)."""
    options: dict[str, Any] = {"threads": threads, "ecip1099_block": ecip1099_block, "max_shares": max_shares}
    if url.dialect == "getwork":
        return GetworkMiner(reactor, **options)
    if user is None:
        raise ValueError(f"{url.dialect} needs -u LOGIN[.WORKER]")
    if url.dialect == "ethproxy":
        login, _, worker = user.partition(".")
        return EthProxyMiner(reactor, login, password, worker or None, **options)
    return NiceHashMiner(reactor, user, password, **options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options only the ethash URLs take."""
    group = parser.add_argument_group(
        "ethash", "For getwork+http://, ethproxy+tcp:// and nicehash+tcp:// URLs."
    )
    group.add_argument("--max-shares", type=int, metavar="N", help="stop once the pool has accepted N shares")
    group.add_argument(
        "--ecip1099-block",
        type=int,
        metavar="N",
        help="etchash: the chain's ECIP-1099 activation block (Ethereum Classic 11700000, "
        "Mordor 2520000); without it, plain ethash",
    )


def check_options(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    """Usage errors of an ethash command line (exit 2); settles the getwork path."""
    url: EthPoolURL = options.url
    if options.algorithm is not None:
        parser.error("-a is for stratum+tcp:// URLs: ethash URLs mine ethash (--ecip1099-block: etchash)")
    if not url.tls and (options.ca or options.insecure):
        parser.error("--ca and --insecure are for ethproxy+ssl:// and nicehash+ssl:// URLs")
    if options.max_shares is not None and options.max_shares < 1:
        parser.error("--max-shares must be at least 1")
    if options.threads < 1:
        parser.error("--threads must be at least 1")
    if url.dialect == "getwork":
        if options.user is not None and url.path != "/":
            parser.error("getwork takes the login from the URL's path or from -u, not both")
        if options.user is not None:
            options.url = EthPoolURL(url.dialect, url.host, url.port, url.tls, getwork_path(options.user))
    elif options.user is None:
        parser.error(f"{url.dialect} needs -u LOGIN[.WORKER]")


async def run(reactor: Any, options: argparse.Namespace) -> int:
    """Mine for ``options.duration`` seconds or ``options.max_shares`` shares; the exit status."""
    url: EthPoolURL = options.url
    try:
        tls = tls_options(url.host, options.ca, options.insecure) if url.tls else None
    except (OSError, ValueError, SSL.Error) as e:
        _say(f"nomp-miner: --ca {options.ca}: {e}", error=True)
        return 2
    miner = miner_for(
        reactor,
        url,
        options.user,
        options.password,
        options.threads,
        options.ecip1099_block,
        options.max_shares,
    )
    try:
        refused = await _authorized(miner, url, tls)
        if refused is None:
            miner.start()
            timer: defer.Deferred[None] = task.deferLater(reactor, options.duration)
            await defer.DeferredList([timer, miner.finished], fireOnOneCallback=True, consumeErrors=True)
            if not timer.called:
                timer.cancel()
    finally:
        await miner.stop()  # also unstarted: a cache build may be under way
    if refused is not None:
        return refused
    if miner.lost is not None:
        reason = connection_failure(miner.lost, url.host)
        _say(f"nomp-miner: connection to {url.host}:{url.port} closed: {reason}", error=True)
    return report(miner.stats)


async def _authorized(
    miner: EthMiner, url: EthPoolURL, tls: IOpenSSLClientConnectionCreator | None
) -> int | None:
    """Connect and log in: None, or the exit status and a line on why not."""
    try:
        await connect(miner, url, tls)
        authorized = await miner.authorized
    except ConnectError as e:
        _say(f"nomp-miner: cannot connect to {url.host}:{url.port}: {e}", error=True)
        return 1
    except Exception:
        reason = connection_failure(Failure(), url.host)
        _say(f"nomp-miner: connection to {url.host}:{url.port} closed: {reason}", error=True)
        return 1
    if not authorized:
        refusal = f": {miner.refusal}" if miner.refusal else ""
        _say(f"nomp-miner: {miner.name} was not authorized{refusal}", error=True)
        return 1
    return None


def report(stats: MinerStats) -> int:
    """Print the summary; the exit status: 0 when shares were accepted and
    none refused but as stale."""
    _say(f"submitted {stats.submitted}, accepted {stats.accepted}, rejected {stats.rejected_total}")
    assert stats.rejected is not None
    for reason, count in stats.rejected.most_common():
        _say(f"  rejected {count}: {reason}")
    failed = sum(n for reason, n in stats.rejected.items() if not _is_stale(reason))
    return 0 if stats.accepted > 0 and failed == 0 else 1


def _is_stale(reason: str) -> bool:
    # 21 is stratum's "job not found"; NiceHash pools use it for stale shares too.
    return reason == STALE or reason.startswith("21 ")


__all__ = [
    "ETH_SCHEMES",
    "EthJob",
    "EthMiner",
    "EthPoolURL",
    "EthProxyMiner",
    "Found",
    "GetworkMiner",
    "LineClient",
    "NiceHashMiner",
    "SeedEpochs",
    "StreamMiner",
    "add_arguments",
    "check_options",
    "connect",
    "error_text",
    "getwork_path",
    "is_eth_url",
    "miner_for",
    "nicehash_target",
    "parse_eth_url",
    "report",
    "run",
    "seed_epochs",
    "verdict",
    "work_epochs",
]
