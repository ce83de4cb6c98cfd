"""``nomp-miner``: a small Stratum miner, to smoke-test a pool port.

    nomp-miner stratum+tcp://127.0.0.1:3333 -u ADDRESS[.WORKER] [-p x] [-t THREADS] [-d SECONDS]

It grinds nonces with nomp's own C share check (scrypt or sha256d), submits
every share that meets the difficulty the pool set, and prints how many
were accepted and rejected. It is a test tool, not a fast miner.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.threadpool import ThreadPool

from nomp.hashing import ALGORITHMS, Algorithm, JobHasher, ShareWork

NONCES_PER_CALL = 32


@dataclass(frozen=True, slots=True)
class MinerJob:
    """A job as the pool sent it, ready to hash."""

    job_id: str
    hasher: JobHasher
    version: int
    ntime: int
    generation: int  # bumped on every clean job


@dataclass
class MinerStats:
    """What the pool said of our shares."""

    submitted: int = 0
    accepted: int = 0
    rejected: Counter[str] | None = None

    def __post_init__(self) -> None:
        self.rejected = Counter()

    @property
    def rejected_total(self) -> int:
        assert self.rejected is not None
        return sum(self.rejected.values())


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

    def connectionLost(self, reason: Any = None) -> None:
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.errback(ConnectionError("connection closed"))
        self.closed.callback(None)

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
    """Connects, subscribes, authorizes and grinds until stopped."""

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

    def connection_made(self, client: StratumClient) -> None:
        self.client = client
        client.call("mining.subscribe", ["nomp-miner/1.0"]).addCallback(self._subscribed)

    def _subscribed(self, reply: dict[str, Any]) -> None:
        assert self.client is not None
        _, extranonce1, size = reply["result"]
        self.extranonce1 = bytes.fromhex(extranonce1)
        self.extranonce2_size = int(size)
        self.client.call("mining.authorize", [self.user, self.password]).addCallback(
            lambda r: self.authorized.callback(bool(r.get("result")))
        )

    def notification(self, method: str, params: list[Any]) -> None:
        if method == "mining.set_difficulty":
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

    def start(self) -> None:
        """Grind on every thread until stop()."""
        self._running = True
        self._pool.start()
        self._grinders = [defer.Deferred.fromCoroutine(self._grind()) for _ in range(self.threads)]

    async def stop(self) -> None:
        """Stop grinding, wait for the pool's answers to what was sent, disconnect."""
        self._running = False
        await defer.DeferredList(self._grinders)
        await defer.DeferredList(self._replies)
        self._pool.stop()
        if self.client is not None and self.client.transport is not None:
            self.client.transport.loseConnection()
            await self.client.closed

    async def _grind(self) -> None:
        while self._running and not (self.client is not None and self.client.closed.called):
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
        else:
            error = reply.get("error") or [0, "unknown"]
            assert self.stats.rejected is not None
            self.stats.rejected[f"{error[0]} {error[1]}"] += 1


async def connect(miner: Miner, host: str, port: int) -> StratumClient:
    """Open the miner's connection."""
    endpoint = TCP4ClientEndpoint(miner.reactor, host, port, timeout=10)
    client = await endpoint.connect(Factory.forProtocol(lambda: StratumClient(miner)))
    assert isinstance(client, StratumClient)
    return client


async def run(reactor: Any, options: argparse.Namespace) -> int:
    url = urlsplit(options.url if "://" in options.url else f"stratum+tcp://{options.url}")
    miner = Miner(reactor, ALGORITHMS[options.algorithm], options.user, options.password, options.threads)
    await connect(miner, url.hostname or "127.0.0.1", url.port or 3333)
    if not await miner.authorized:
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
    # Stale shares (21) are normal when blocks come fast: they are no failure.
    failed = sum(n for reason, n in stats.rejected.items() if not reason.startswith("21 "))
    return 0 if stats.accepted > 0 and failed == 0 else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nomp-miner", description="Mine a few shares on a pool port.")
    parser.add_argument("url", help="stratum+tcp://HOST:PORT")
    parser.add_argument("-u", "--user", required=True, help="the payout address, optionally .worker")
    parser.add_argument("-p", "--password", default="x")
    parser.add_argument("-a", "--algorithm", default="scrypt", choices=sorted(ALGORITHMS))
    parser.add_argument("-t", "--threads", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds to mine")
    options = parser.parse_args(argv)

    async def main_task(reactor: Any) -> None:
        status = await run(reactor, options)
        if status:
            raise SystemExit(status)  # react() exits with it

    task.react(lambda reactor: defer.Deferred.fromCoroutine(main_task(reactor)))


if __name__ == "__main__":
    main()
