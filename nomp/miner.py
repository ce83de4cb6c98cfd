"""``nomp-miner``: a small Stratum miner, to smoke-test a pool port.

    nomp-miner stratum+tcp://127.0.0.1:3333 -u ADDRESS[.WORKER] [-p x] [-t THREADS] [-d SECONDS]
    nomp-miner stratum+ssl://pool.example:3334 -u ADDRESS [--ca FILE | --insecure]
    nomp-miner getwork+http://127.0.0.1:8888/ADDRESS[/WORKER] [--max-shares N]
    nomp-miner ethproxy+tcp://127.0.0.1:8008 -u ADDRESS[.WORKER] (also ethproxy+ssl://)
    nomp-miner nicehash+tcp://127.0.0.1:8008 -u ADDRESS[.WORKER] (also nicehash+ssl://)

It grinds nonces with nomp's own C share check (scrypt or sha256d), submits
every share that meets the difficulty the pool set, and prints how many
were accepted and rejected. It is a test tool, not a fast miner.

It follows ``client.reconnect`` as a careful miner does: no more shares on
that connection, the pool's answers to the ones sent read, the connection
closed, ``wait`` seconds (the third parameter) waited, then a new
connection to the host and port given, or to the same ones without them.

``stratum+ssl://`` and ``stratum+tls://`` (the same thing) connect with TLS.
The pool's certificate must then chain to a trusted CA and name the host of
the URL: the system's CAs, or those of ``--ca FILE``; ``--insecure`` takes
any certificate.

The getwork+http, ethproxy and nicehash URLs mine ethash (etchash with
``--ecip1099-block``): see nomp.ethminer.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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

from nomp import ethminer
from nomp.hashing import ALGORITHMS, Algorithm, JobHasher, ShareWork
from nomp.minerkit import MinerStats, connection_failure, tls_options

NONCES_PER_CALL = 32
DEFAULT_PORT = 3333
SCHEMES = {"stratum+tcp": False, "stratum+ssl": True, "stratum+tls": True}  # scheme -> TLS


@dataclass(frozen=True, slots=True)
class PoolURL:
    """Where the pool listens, and whether with TLS."""

    host: str
    port: int
    tls: bool


def parse_pool_url(url: str) -> PoolURL:
    """``stratum+tcp://``, ``stratum+ssl://`` or ``stratum+tls://`` HOST:PORT;
    a bare HOST:PORT is plain TCP. ValueError names what is wrong."""
    parts = urlsplit(url if "://" in url else f"stratum+tcp://{url}")
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {parts.scheme!r}: use one of {', '.join(SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    port = parts.port  # raises ValueError when out of range or not a number
    return PoolURL(parts.hostname, port if port is not None else DEFAULT_PORT, SCHEMES[scheme])


@dataclass(frozen=True, slots=True)
class MinerJob:
    """A job as the pool sent it, ready to hash."""

    job_id: str
    hasher: JobHasher
    version: int
    ntime: int
    generation: int  # bumped on every clean job


@dataclass
class Reconnection:
    """One ``client.reconnect`` the miner followed, timed on its reactor's clock."""

    asked: float  # the pool's client.reconnect read
    host: str
    port: int
    left: float | None = None  # the old connection closed, each answer on it read
    # The new connection made: by the kernel, for a listening socket no
    # process takes from yet (systemd's, in a restart), before any answer.
    connected: float | None = None
    job: float | None = None  # the first job on the new connection: mining again
    accepted: float | None = None  # the first share accepted on the new connection
    failed: str | None = None  # why there is no new connection


def reconnect_address(params: list[Any], host: str, port: int) -> tuple[str, int, float]:
    """(host, port, wait) of ``client.reconnect``'s params, the current host and
    port where they are left out or null; ValueError when they cannot be read."""
    try:
        new_host = str(params[0]) if len(params) > 0 and params[0] else host
        new_port = int(params[1]) if len(params) > 1 and params[1] not in (None, "") else port
        wait = float(params[2]) if len(params) > 2 and params[2] is not None else 0.0
    except (TypeError, ValueError):
        raise ValueError(f"client.reconnect with params it cannot read: {params!r}") from None
    if not 0 < new_port < 65536 or not 0 <= wait < 3600:
        raise ValueError(f"client.reconnect with params it cannot read: {params!r}")
    return new_host, new_port, wait


class StratumClient(LineOnlyReceiver):
    """The miner's connection: JSON-RPC calls and the pool's notifications."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, miner: Miner) -> None:
        self.miner = miner
        self._ids = itertools.count(1)
        self._pending: dict[int, defer.Deferred[Any]] = {}
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.miner.connection_made(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        # The miner hears the real reason first: its calls fail only with "closed".
        self.miner.connection_lost(self, reason if reason is not None else Failure(ConnectionError()))
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.errback(ConnectionError("connection closed"))
        self.closed.callback(None)

    def answered(self) -> defer.Deferred[Any]:
        """Fires once every call sent so far has its answer, or failed with the connection."""
        return defer.DeferredList(list(self._pending.values()), consumeErrors=True)

    def call(self, method: str, params: list[Any]) -> defer.Deferred[Any]:
        """Send a request; the Deferred fires with the whole reply."""
        if self.closed.called:
            return defer.fail(ConnectionError("connection closed"))
        request_id = next(self._ids)
        reply: defer.Deferred[Any] = defer.Deferred()
        self._pending[request_id] = reply
        self.sendLine(json.dumps({"id": request_id, "method": method, "params": params}).encode())
        return reply

    def lineReceived(self, line: bytes) -> None:
        message = json.loads(line)
        if message.get("method"):
            self.miner.notification(message["method"], message.get("params") or [])
            return
        reply = self._pending.pop(message.get("id"), None)
        if reply is not None:
            reply.callback(message)


class Miner:
    """Connects, subscribes, authorizes and grinds until stopped; follows
    ``client.reconnect``.

    ``authorized`` is the first connection's answer. The miner stops
    grinding when the pool closes its connection, or a reconnection fails
    (``gone``).
    """

    def __init__(
        self, reactor: Any, algorithm: Algorithm, user: str, password: str = "x", threads: int = 1
    ) -> None:
        self.reactor = reactor
        self.algorithm = algorithm
        self.user = user
        self.password = password
        self.threads = threads
        self.stats = MinerStats()
        self.client: StratumClient | None = None
        self.extranonce1 = b""
        self.extranonce2_size = 4
        self.difficulty = 1.0
        self.job: MinerJob | None = None
        self.authorized: defer.Deferred[bool] = defer.Deferred()
        self._generation = 0
        self._extranonce2 = itertools.count()
        self._running = False
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="nomp-miner")
        self._grinders: list[defer.Deferred[None]] = []
        self._replies: list[defer.Deferred[Any]] = []
        # Where it connects (set by ``connect``), for a client.reconnect to the same place.
        self.host = ""
        self.port = 0
        self.tls: IOpenSSLClientConnectionCreator | None = None
        self.connections = 0  # connections made: the first, then one per reconnection
        self.connect_failures = 0  # connection attempts that failed (refused, timed out)
        self.accepted_here = 0  # shares accepted on the connection it has now
        self.reconnections: list[Reconnection] = []
        self._leaving: StratumClient | None = None  # the connection a client.reconnect closes
        self._reconnecting: defer.Deferred[None] | None = None
        self.gone = False

    def connection_made(self, client: StratumClient) -> None:
        self.client = client
        self.connections += 1
        self.accepted_here = 0
        subscribed = client.call("mining.subscribe", ["nomp-miner/1.0"])
        subscribed.addCallback(self._subscribed, client)
        subscribed.addCallbacks(self._authorization, self._not_authorized)

    def _subscribed(self, reply: dict[str, Any], client: StratumClient) -> defer.Deferred[bool]:
        _, extranonce1, size = reply["result"]
        self.extranonce1 = bytes.fromhex(extranonce1)
        self.extranonce2_size = int(size)
        authorizing = client.call("mining.authorize", [self.user, self.password])
        return authorizing.addCallback(lambda r: bool(r.get("result")))

    def _authorization(self, authorized: bool) -> None:
        if not self.authorized.called:
            self.authorized.callback(authorized)
        elif not authorized:  # a reconnection the pool did not take
            self.gone = True
            if self.reconnections:
                self.reconnections[-1].failed = f"{self.user} was not authorized"

    def _not_authorized(self, failure: Failure) -> None:
        if not self.authorized.called:
            self.authorized.errback(failure)

    def connection_lost(self, client: StratumClient, reason: Failure) -> None:
        """Before authorization, ``authorized`` fails with why (a refused TLS certificate...)."""
        self._not_authorized(reason)
        if client is self.client and client is not self._leaving:
            self.gone = True  # the pool closed it: no more grinding

    def notification(self, method: str, params: list[Any]) -> None:
        if method == "client.reconnect":
            self._follow_reconnect(params)
        elif method == "mining.set_difficulty":
            self.difficulty = float(params[0])
        elif method == "mining.notify":
            job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, clean = params[:9]
            raw = bytes.fromhex(prevhash)
            internal = b"".join(raw[i : i + 4][::-1] for i in range(0, 32, 4))
            if clean or self.job is None:
                self._generation += 1
            hasher = JobHasher(
                self.algorithm,
                bytes.fromhex(coinb1),
                bytes.fromhex(coinb2),
                [bytes.fromhex(step) for step in branch],
                internal,
                int(nbits, 16),
            )
            self.job = MinerJob(job_id, hasher, int(version, 16), int(ntime, 16), self._generation)
            back = self.reconnections[-1] if self.reconnections else None
            if back is not None and back.connected is not None and back.job is None:
                back.job = self.reactor.seconds()

    def _follow_reconnect(self, params: list[Any]) -> None:
        if self.client is None or self._leaving is not None:
            return  # leaving already
        host, port = self.host, self.port
        if not host and self.client.transport is not None:  # connected by other means than ``connect``
            peer = self.client.transport.getPeer()
            host, port = getattr(peer, "host", ""), getattr(peer, "port", 0)
        host, port, wait = reconnect_address(params, host, port)
        record = Reconnection(self.reactor.seconds(), host, port)
        self.reconnections.append(record)
        self._reconnecting = defer.Deferred.fromCoroutine(self._reconnect(record, wait))

    async def _reconnect(self, record: Reconnection, wait: float) -> None:
        old = self._leaving = self.client
        assert old is not None
        # No share more on this connection: the grinders wait for the next job.
        self.job = None
        self.extranonce1 = b""
        # The pool answers what was sent before it asked (it keeps the
        # connection while it drains): each accepted share is known as such.
        await old.answered()
        if old.transport is not None:
            old.transport.loseConnection()
        await old.closed
        record.left = self.reactor.seconds()
        if wait > 0:
            await task.deferLater(self.reactor, wait)
        try:
            await connect(self, record.host, record.port, self.tls)
        except Exception as e:
            self.connect_failures += 1
            record.failed = f"{type(e).__name__}: {e}"
            self.gone = True
        else:
            record.connected = self.reactor.seconds()
        finally:
            self._leaving = None

    def start(self) -> None:
        """Grind on every thread until stop()."""
        self._running = True
        self._pool.start()
        self._grinders = [defer.Deferred.fromCoroutine(self._grind()) for _ in range(self.threads)]

    async def stop(self) -> None:
        """Stop grinding, wait for the pool's answers to what was sent, disconnect."""
        self._running = False
        await defer.DeferredList(self._grinders)
        if self._reconnecting is not None:
            await self._reconnecting
        await defer.DeferredList(self._replies)
        if not self._pool.joined:  # stop() may be called again
            self._pool.stop()
        if self.client is not None and self.client.transport is not None:
            self.client.transport.loseConnection()
            await self.client.closed

    async def _grind(self) -> None:
        while self._running and not self.gone:
            job = self.job
            if job is None or not self.extranonce1:
                await task.deferLater(self.reactor, 0.05)
                continue
            extranonce2 = (next(self._extranonce2) % 2 ** (8 * self.extranonce2_size)).to_bytes(
                self.extranonce2_size, "big"
            )
            target = self.algorithm.share_target(self.difficulty)
            works = [
                ShareWork(self.extranonce1 + extranonce2, job.version, job.ntime, nonce)
                for nonce in range(NONCES_PER_CALL)
            ]
            results = await deferToThreadPool(self.reactor, self._pool, job.hasher.check, works)
            if self.job is None or self.job.generation != job.generation:
                continue  # a new block came while hashing: this work is stale
            for work, result in zip(works, results, strict=True):
                if result.pow_value <= target:
                    self._submit(job, extranonce2, work)

    def _submit(self, job: MinerJob, extranonce2: bytes, work: ShareWork) -> None:
        if self.client is None:
            return
        self.stats.submitted += 1
        params = [self.user, job.job_id, extranonce2.hex(), f"{work.ntime:08x}", f"{work.nonce:08x}"]
        reply = self.client.call("mining.submit", params)
        reply.addCallbacks(self._answered, lambda _: None)
        self._replies.append(reply)

    def _answered(self, reply: dict[str, Any]) -> None:
        if reply.get("result") is True:
            self.stats.accepted += 1
            self.accepted_here += 1
            back = self.reconnections[-1] if self.reconnections else None
            if back is not None and back.connected is not None and back.accepted is None:
                back.accepted = self.reactor.seconds()
        else:
            error = reply.get("error") or [0, "unknown"]
            assert self.stats.rejected is not None
            self.stats.rejected[f"{error[0]} {error[1]}"] += 1


async def connect(
    miner: Miner, host: str, port: int, tls: IOpenSSLClientConnectionCreator | None = None
) -> StratumClient:
    """Open the miner's connection; with ``tls`` (see tls_options), a TLS one.

    A TLS handshake is still going on when this returns: a refused
    certificate shows as ``miner.authorized`` failing.
    """
    miner.host, miner.port, miner.tls = host, port, tls
    endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(miner.reactor, host, port, timeout=10)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    client = await endpoint.connect(Factory.forProtocol(lambda: StratumClient(miner)))
    assert isinstance(client, StratumClient)
    return client


async def run(reactor: Any, options: argparse.Namespace) -> int:
    url: PoolURL = options.url
    try:
        tls = tls_options(url.host, options.ca, options.insecure) if url.tls else None
    except (OSError, ValueError, SSL.Error) as e:
        print(f"nomp-miner: --ca {options.ca}: {e}", file=sys.stderr)
        return 2
    miner = Miner(reactor, ALGORITHMS[options.algorithm], options.user, options.password, options.threads)
    try:
        await connect(miner, url.host, url.port, tls)
        authorized = await miner.authorized
    except ConnectError as e:
        print(f"nomp-miner: cannot connect to {url.host}:{url.port}: {e}", file=sys.stderr)
        return 1
    except Exception:
        reason = connection_failure(Failure(), url.host)
        print(f"nomp-miner: connection to {url.host}:{url.port} closed: {reason}", file=sys.stderr)
        return 1
    if not authorized:
        print(f"nomp-miner: {options.user} was not authorized", file=sys.stderr)
        return 1
    miner.start()
    await task.deferLater(reactor, options.duration)
    await miner.stop()
    stats = miner.stats
    print(f"submitted {stats.submitted}, accepted {stats.accepted}, rejected {stats.rejected_total}")
    assert stats.rejected is not None
    for reason, count in stats.rejected.most_common():
        print(f"  rejected {count}: {reason}")
    for moved in miner.reconnections:
        print(f"  client.reconnect to {moved.host}:{moved.port}: {moved.failed or 'reconnected'}")
    # Stale shares (21) are normal when blocks come fast: they are no failure.
    failed = sum(n for reason, n in stats.rejected.items() if not reason.startswith("21 "))
    return 0 if stats.accepted > 0 and failed == 0 else 1


def main(argv: list[str] | None = None) -> None:
    def url_argument(url: str) -> PoolURL | ethminer.EthPoolURL:
        try:
            return ethminer.parse_eth_url(url) if ethminer.is_eth_url(url) else parse_pool_url(url)
        except ValueError as e:
            if str(e).startswith("unknown scheme"):
                scheme = url.split("://", 1)[0]
                known = ", ".join([*SCHEMES, *ethminer.ETH_SCHEMES])
                raise argparse.ArgumentTypeError(f"unknown scheme {scheme!r}: use one of {known}") from None
            raise argparse.ArgumentTypeError(str(e)) from None

    parser = argparse.ArgumentParser(prog="nomp-miner", description="Mine a few shares on a pool port.")
    parser.add_argument(
        "url",
        type=url_argument,
        help="stratum+tcp://HOST:PORT, or stratum+ssl://HOST:PORT (also stratum+tls://) for TLS; "
        "for ethash getwork+http://HOST:PORT/ADDRESS[/WORKER], ethproxy+tcp://HOST:PORT or "
        "nicehash+tcp://HOST:PORT (+ssl:// for TLS)",
    )
    parser.add_argument(
        "-u",
        "--user",
        help="the payout address, optionally .worker (required but for getwork, which can have them "
        "in the URL's path)",
    )
    parser.add_argument("-p", "--password", default="x")
    parser.add_argument(
        "-a", "--algorithm", choices=sorted(ALGORITHMS), help="stratum: scrypt (default) or sha256d"
    )
    parser.add_argument("-t", "--threads", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds to mine")
    checking = parser.add_argument_group(
        "TLS",
        "With stratum+ssl:// the pool's certificate is verified by default: it must chain to a "
        "CA the system trusts and name the URL's host (DNS name or IP address).",
    ).add_mutually_exclusive_group()
    checking.add_argument(
        "--ca",
        metavar="FILE",
        help="trust the CA certificates in this PEM file instead of the system's "
        "(a pool's self-signed certificate can be its own CA)",
    )
    checking.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the pool's certificate at all: encrypted, but anyone in between can "
        "pose as the pool",
    )
    ethminer.add_arguments(parser)
    options = parser.parse_args(argv)
    runner: Callable[[Any, argparse.Namespace], Coroutine[Any, Any, int]] = run
    if isinstance(options.url, ethminer.EthPoolURL):
        ethminer.check_options(parser, options)
        runner = ethminer.run
    else:
        if options.user is None:
            parser.error("the following arguments are required: -u/--user")
        if options.max_shares is not None or options.ecip1099_block is not None:
            parser.error("--max-shares and --ecip1099-block are for the ethash URLs")
        if options.algorithm is None:
            options.algorithm = "scrypt"
        if not options.url.tls and (options.ca or options.insecure):
            parser.error("--ca and --insecure are for stratum+ssl:// and stratum+tls:// URLs")

    async def main_task(reactor: Any) -> None:
        status = await runner(reactor, options)
        if status:
            raise SystemExit(status)  # react() exits with it

    task.react(lambda reactor: defer.Deferred.fromCoroutine(main_task(reactor)))


if __name__ == "__main__":
    main()
