"""Load on the Ethereum-family side of the pool (nomp/eth), measured from outside it.

Run: python bench/eth_load.py [--miners 200] [--rate 2.5] [--seconds 15]
     [--fanout 1000,10000] [--threads N] [--dataset] [--blocks N] [--quick]

For example::

    .venv/bin/python bench/eth_load.py              # about a minute on 2 cores
    .venv/bin/python bench/eth_load.py --dataset    # and again with the 1 GiB dataset
    .venv/bin/python bench/eth_load.py --quick      # a smoke test: seconds

The pool runs in a process of its own: the real EthStratumPool (connection
registry, bans, the share pipeline with the Ethereum family's rules,
eth-proxy and NiceHash EthereumStratum/1.0.0 on one stratum port, the
broadcaster) on HashPoolService's threads (--threads, one per CPU as the
pool's default). What is not the pool's own is kept small: work comes from
a WorkBook fed ``eth_getWork`` answers of epoch 0 whose seal hash the bench
derives from the height (no node), shares are counted rather than written
to Redis, block candidates are counted rather than submitted.

The stratum port's difficulty is 1, so every hash is a share: the miners'
shares are real ethash results without a search. The network boundary is
1, so no share is a block (with --blocks N, about one share in N is).

1. Shares: --miners miners, each offering --rate shares/s for --seconds,
   split over load processes (one per CPU, at most 4) that precompute their
   (nonce, mix digest) pairs with nomp's light ethash before the timed part.
   First eth-proxy (``eth_submitWork`` with the mix digest: the pool hashes
   the nonce and compares), then NiceHash (``mining.submit`` with a nonce
   part: the pool hashes it to find the mix digest). Figures: accepted
   shares/s, the pool's CPU per accepted share from /proc (all its threads;
   the reactor thread's and the hashing threads' apart), submit-to-reply
   latency seen by the miners. The pool checks every share with the light
   cache, its default (each hash computes the dataset items it reads from
   the 16 MiB cache of epoch 0); --dataset adds a run with the full dataset
   of epoch 0, generated first in the pool's hashing threads.
2. New work fan-out, in a fresh pool per dialect: a swarm process holds
   --fanout idle miners (eth-proxy logged in and having asked for work;
   NiceHash subscribed and authorized) and takes the time each of them
   reads the next eth-proxy push or ``mining.notify``; the pool takes the
   time it received the new work (before the WorkBook reads the answer and
   EthStratumPool.new_work sends it). Figure: from then until the last
   miner has read it, median of a few rounds (min-max), beside the time
   the pool's own call took.
3. Idle memory: the pool's RSS growth per connected miner at the largest
   swarm, per dialect.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from twisted.internet import defer, reactor, stdio, task
from twisted.internet.endpoints import serverFromString
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.protocols.basic import LineOnlyReceiver

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stratum_load import cpu_seconds, raise_fd_limit, rss_bytes, thread_cpu  # noqa: E402
from nomp.candidate import BlockCandidate  # noqa: E402
from nomp.config import DaemonConfig, EthCoinConfig, EthPoolConfig, PortConfig  # noqa: E402
from nomp.config.model import EthRewards, RewardStep  # noqa: E402
from nomp.eth.hasher import EpochHashers  # noqa: E402
from nomp.eth.pool import EthStratumPool  # noqa: E402
from nomp.eth.rules import submit_work_params  # noqa: E402
from nomp.eth.work import WorkBook  # noqa: E402
from nomp.hashing import ethash  # noqa: E402
from nomp.hashing.pool import HashPoolService  # noqa: E402

LOGIN = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
POOL_ADDRESS = "0x5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c"
FIRST_HEIGHT = 1000  # epoch 0: the cache every process here builds in under a second
BENCH_COIN = EthCoinConfig(
    algorithm="ethash",
    rewards=EthRewards(schedule=(RewardStep(from_block=0, wei=2 * 10**18),)),
    name="ethash-bench",
    symbol="BENCH",
    chain_id=1337,
)
RECORD = struct.Struct("<32sQ")
FIRST_ID = 10  # submits' ids; 1 and 2 are the handshake's, 0 is eth-proxy's pushed work
DRAIN = 10.0  # seconds after the last submit that replies are waited for
PUSH_MARKERS = {"ethproxy": b'"id":0,', "nicehash": b"mining.notify"}
READY_MARKERS = {"ethproxy": b'"id":2,', "nicehash": b"mining.notify"}


def seal_hash(height: int) -> bytes:
    """The seal hash of the bench's work at ``height``: any 32 bytes will do, new ones per height."""
    return ethash.keccak_256(b"nomp bench work" + height.to_bytes(8, "big"))


def get_work_answer(height: int, block_difficulty: int | None) -> list[str]:
    """What ``eth_getWork`` would answer: seal hash, seed hash, boundary, block number."""
    target = 1 if block_difficulty is None else ethash.boundary(block_difficulty)
    seed = ethash.seed_hash(ethash.epochs_for(height, None)[0])
    return ["0x" + seal_hash(height).hex(), "0x" + seed.hex(), f"0x{target:064x}", hex(height)]


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


# The pool (python bench/eth_load.py --pool THREADS DATASET BLOCKS LOG): it
# prints {"port": ...} once its cache (and dataset) is ready, then answers
# one JSON line per command read on stdin ("work", "stats").
class BenchWork:
    """The pool's work source and block sink: a WorkBook instead of a node."""

    def __init__(self, config: EthPoolConfig, hashers: EpochHashers, block_difficulty: int | None) -> None:
        self.book = WorkBook(config.stale_heights, config.coin.ecip1099_block)
        self.hashers = hashers
        self.block_difficulty = block_difficulty
        self.height = FIRST_HEIGHT - 1
        self.side: EthStratumPool | None = None
        self.blocks = 0

    def next_work(self) -> dict[str, Any]:
        """New work, sent on as EthPoolService does with a new ``eth_getWork`` answer."""
        received = time.time()
        self.height += 1
        work = self.book.add(get_work_answer(self.height, self.block_difficulty))
        assert work is not None and self.side is not None
        self.hashers.prepare(work, None)
        self.side.new_work(work)
        return {"at": received, "call_ms": (time.time() - received) * 1e3, "height": work.height}

    def found_block(self, candidate: BlockCandidate) -> None:
        submit_work_params(candidate.payload)  # what the pool would send to its node
        self.blocks += 1


class CountingRecorder:
    """Share records counted (the pool's recorder writes them to Redis)."""

    def __init__(self) -> None:
        self.valid = 0
        self.invalid = 0

    def valid_share(self, worker: str, difficulty: float, solo: bool = False) -> None:
        self.valid += 1

    def invalid_share(self, worker: str, difficulty: float) -> None:
        self.invalid += 1


class PoolControl(LineOnlyReceiver):
    delimiter = b"\n"

    def __init__(self, commands: dict[str, Callable[[], dict[str, Any]]]) -> None:
        self.commands = commands

    def lineReceived(self, data: bytes) -> None:
        self.sendLine(json.dumps(self.commands[data.decode().strip()]()).encode())

    def connectionLost(self, reason: Any = None) -> None:
        if reactor.running:
            reactor.stop()


def run_pool(threads: int, dataset: bool, block_difficulty: int | None, log: str) -> None:
    raise_fd_limit()
    log_file = open(log, "a")  # noqa: SIM115 - the pool logs to it until the process ends
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)], redirectStandardIO=False)
    config = EthPoolConfig(
        name="bench",
        file="pools/bench.yaml",
        coin=BENCH_COIN,
        address=POOL_ADDRESS,
        daemons=(DaemonConfig(url="http://127.0.0.1:8545"),),  # never called: the work is the bench's
        ports=(PortConfig(listen="tcp:0:interface=127.0.0.1:backlog=4096", diff=1),),
        connection_timeout=3600,
        dataset=dataset,
    )
    hashing = HashPoolService(reactor, threads)
    hashers = EpochHashers(config.name, hashing.run, dataset)
    source = BenchWork(config, hashers, block_difficulty)
    recorder = CountingRecorder()
    side = EthStratumPool(config, source, source, hashing, hashers, recorder, reactor)
    source.side = side
    started = time.perf_counter()

    def stats() -> dict[str, Any]:
        return {
            "shares": dict(side.pipeline.shares),
            "recorded": recorder.valid,
            "connections": len(side.connections),
            "blocks": source.blocks,
        }

    control = PoolControl({"work": source.next_work, "stats": stats})

    async def start() -> None:
        hashing.startService()
        listening = await serverFromString(reactor, config.ports[0].listen).listen(
            side.factory(config.ports[0])
        )
        current = source.next_work()
        assert source.book.current is not None
        hasher = hashers.hasher(source.book.current)
        while hashers.caches.peek(0, 0) is None or (dataset and hasher.dataset is None):
            await task.deferLater(reactor, 0.05, lambda: None)
        control.sendLine(
            json.dumps(
                {
                    "port": listening.getHost().port,
                    "ready_s": time.perf_counter() - started,
                    "height": current["height"],
                }
            ).encode()
        )

    stdio.StandardIO(control)
    reactor.callWhenRunning(lambda: defer.ensureDeferred(start()))
    reactor.run()


# The miners that submit shares (python bench/eth_load.py --miners-of PORT
# DIALECT COUNT RATE SECONDS INDEX): they log in, precompute their shares,
# print {"ready": COUNT}, submit from a "go" on stdin, and print what came back.
def read_until(sock: socket.socket, buffer: bytearray, done: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """Messages read on a blocking socket up to the one ``done`` says ends the handshake."""
    messages = []
    while True:
        while b"\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the pool closed a miner's connection")
            buffer += chunk
        end = buffer.index(b"\n")
        message = json.loads(buffer[:end])
        del buffer[: end + 1]
        if message.get("error"):
            raise RuntimeError(f"the pool refused the handshake: {message}")
        messages.append(message)
        if done(message):
            return messages


def handshake_lines(dialect: str, worker: str) -> bytes:
    """A miner's first requests: eth-proxy's login and work request, or NiceHash's subscribe and authorize."""
    if dialect == "ethproxy":
        return line(
            {"id": 1, "jsonrpc": "2.0", "method": "eth_submitLogin", "params": [LOGIN], "worker": worker}
        ) + line({"id": 2, "jsonrpc": "2.0", "method": "eth_getWork", "params": []})
    return line(
        {"id": 1, "method": "mining.subscribe", "params": ["nomp-bench/1.0", "EthereumStratum/1.0.0"]}
    ) + line({"id": 2, "method": "mining.authorize", "params": [f"{LOGIN}.{worker}", "x"]})


def handshake(sock: socket.socket, dialect: str, worker: str) -> tuple[str, bytes]:
    """Log in as a miner does; (what names the work: seal hash or job id, the extranonce)."""
    buffer = bytearray()
    sock.sendall(handshake_lines(dialect, worker))
    if dialect == "ethproxy":
        messages = read_until(sock, buffer, lambda m: m.get("id") == 2)
        return messages[-1]["result"][0], b""
    messages = read_until(sock, buffer, lambda m: m.get("method") == "mining.notify")
    extranonce = bytes.fromhex(next(m for m in messages if m.get("id") == 1)["result"][1])
    return messages[-1]["params"][0], extranonce


def precompute(dialect: str, work: str, index: int, miners: int, shares: int) -> list[list[bytes]]:
    """Each miner's submit lines, in order: real ethash solutions of the work
    (every hash is a share at difficulty 1), from the light cache."""
    lines: list[list[bytes]] = []
    if dialect == "nicehash":
        for m in range(miners):
            user = f"{LOGIN}.g{index}-m{m}"
            lines.append(
                [
                    line({"id": FIRST_ID + k, "method": "mining.submit", "params": [user, work, f"{k:010x}"]})
                    for k in range(shares)
                ]
            )
        return lines
    cache = ethash.EthashCache.build(0, 0)
    header = bytes.fromhex(work[2:])
    for m in range(miners):
        # The top bit set: NiceHash nonces of the same work start with the
        # pool's instance byte 0, so the two dialects' shares never collide.
        nonces = [(1 << 63) | (index << 48) | (m << 32) | k for k in range(shares)]
        results = cache.hash_packed(b"".join(RECORD.pack(header, n) for n in nonces), len(nonces))
        lines.append(
            [
                line(
                    {
                        "id": FIRST_ID + k,
                        "jsonrpc": "2.0",
                        "method": "eth_submitWork",
                        "params": [f"0x{nonce:016x}", work, "0x" + result.mix_digest.hex()],
                        "worker": f"g{index}-m{m}",
                    }
                )
                for k, (nonce, result) in enumerate(zip(nonces, results, strict=True))
            ]
        )
    return lines


def run_miners(port: int, dialect: str, miners: int, rate: float, seconds: float, index: int) -> None:
    raise_fd_limit()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(miners)]
    for sock in socks:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    works = {handshake(sock, dialect, f"g{index}-m{m}")[0] for m, sock in enumerate(socks)}
    assert len(works) == 1, "one work for every miner"
    per_miner = max(1, math.ceil(rate * seconds))
    started = time.perf_counter()
    lines = precompute(dialect, works.pop(), index, miners, per_miner)
    print(json.dumps({"ready": miners, "precompute_s": time.perf_counter() - started}), flush=True)
    sys.stdin.readline()  # go

    poller = select.epoll()
    by_fd = {sock.fileno(): m for m, sock in enumerate(socks)}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    buffers = {fd: b"" for fd in by_fd}
    sent_at: dict[tuple[int, int], float] = {}
    latencies: list[float] = []
    errors: list[Any] = []
    accepted = rejected = 0
    interval = 1 / (miners * rate)
    total = miners * per_miner
    go_wall, start = time.time(), time.perf_counter()
    last_reply = go_wall
    sent = 0
    while True:
        now = time.perf_counter()
        while sent < total and start + sent * interval <= now:
            m, k = sent % miners, sent // miners
            socks[m].sendall(lines[m][k])
            sent_at[(m, FIRST_ID + k)] = now
            sent += 1
        if sent == total and (not sent_at or now > start + sent * interval + DRAIN):
            break
        timeout = max(0.0, start + sent * interval - now) if sent < total else 0.05
        for fd, _ in poller.poll(timeout):
            data = buffers[fd] + socks[by_fd[fd]].recv(65536)
            received = time.perf_counter()
            *complete, buffers[fd] = data.split(b"\n")
            for raw in complete:
                message = json.loads(raw)
                began = sent_at.pop((by_fd[fd], message.get("id")), None)
                if began is None:
                    continue  # pushed work
                latencies.append(received - began)
                if message.get("result") is True:
                    accepted += 1
                    last_reply = time.time()
                else:
                    rejected += 1
                    if len(errors) < 5:
                        errors.append(message.get("error"))
    result = {
        "sent": sent,
        "accepted": accepted,
        "rejected": rejected,
        "unanswered": len(sent_at),
        "errors": errors,
        "latencies": latencies,
        "go": go_wall,
        "last_reply": last_reply,
    }
    print(json.dumps(result), flush=True)


# The swarm of idle miners (python bench/eth_load.py --swarm PORT DIALECT):
# commands on stdin, "grow N" (connect and log in up to N miners, then print
# {"ready": n}) and "arm" (print {"armed": n}; then, once every miner has read
# its next pushed work, print their arrival times).
def run_swarm(port: int, dialect: str) -> None:
    raise_fd_limit()
    poller = select.epoll()
    poller.register(0, select.EPOLLIN)
    sockets: dict[int, socket.socket] = {}
    tails: dict[int, bytes] = {}
    ready: set[int] = set()
    arrived: dict[int, float] = {}
    armed_at: float | None = None
    target = 0
    started = 0.0
    push, ready_marker = PUSH_MARKERS[dialect], READY_MARKERS[dialect]
    commands = b""

    def report(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    while True:
        for _ in range(min(200, target - len(sockets))):  # then read: keep the pool's backlog moving
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(handshake_lines(dialect, f"swarm{len(sockets)}"))
            s.setblocking(False)
            sockets[s.fileno()], tails[s.fileno()] = s, b""
            poller.register(s.fileno(), select.EPOLLIN)
        # Kept lean: its own slowness would count as the pool's delay.
        for fd, _ in poller.poll(0.01 if len(sockets) < target else 0.1):
            if fd == 0:
                commands += os.read(0, 4096)
                if not commands:
                    return  # stdin closed
                while b"\n" in commands:
                    command, commands = commands.split(b"\n", 1)
                    words = command.split()
                    if words[0] == b"grow":
                        target, started = int(words[1]), time.perf_counter()
                    elif words[0] == b"arm":
                        arrived, armed_at = {}, time.time()
                        report({"armed": len(ready)})
                continue
            data = tails[fd] + sockets[fd].recv(65536)
            now = time.time()
            if armed_at is not None and fd not in arrived and push in data:
                arrived[fd] = now
            elif fd not in ready and ready_marker in data:
                ready.add(fd)
                data = b""  # what came with the handshake is not a push
            tails[fd] = data[-32:]
        if target and len(ready) == target and started:
            report({"ready": len(ready), "seconds": time.perf_counter() - started})
            started = 0.0
        if armed_at is not None and (len(arrived) == len(ready) or time.time() - armed_at > 60):
            report({"arrivals": sorted(arrived.values()), "miners": len(ready)})
            armed_at = None


# The bench itself.
class Child:
    """A process of this bench that speaks JSON lines on its stdin and stdout."""

    def __init__(self, *args: str, stderr: IO[bytes] | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            bufsize=0,
        )
        self.pid = self.process.pid
        self.name = " ".join(args[:2])
        self._buffer = b""

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()

    def read(self, timeout: float = 120) -> dict[str, Any]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError(f"{self.name}: no answer in {timeout:g} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"{self.name} ended (exit {self.process.wait()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(raw)
        return answer

    def ask(self, command: str, timeout: float = 120) -> dict[str, Any]:
        self.send(command)
        return self.read(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                self.process.wait(timeout=10)


class Pool(Child):
    def __init__(self, options: argparse.Namespace, dataset: bool = False) -> None:
        self.log = Path(tempfile.mkdtemp(prefix="nomp-eth-bench-")) / "pool.log"
        blocks = str(options.blocks or 0)
        super().__init__("--pool", str(options.threads), str(int(dataset)), blocks, str(self.log))
        try:
            started = self.read(timeout=600 if dataset else 60)
        except RuntimeError:
            self.stop()
            raise
        self.port: int = started["port"]
        self.ready_s: float = started["ready_s"]

    def stop(self) -> None:
        super().stop()
        errors = [x for x in self.log.read_text().splitlines() if "Traceback" in x or "[critical]" in x]
        if errors:
            print(f"         the pool logged errors, see {self.log}: {errors[0]}")


def share_phase(pool: Pool, dialect: str, options: argparse.Namespace) -> dict[str, Any]:
    """Miners submitting shares at the offered rate; the pool's figures."""
    loaders = max(1, min(os.cpu_count() or 1, 4, options.miners))
    counts = [options.miners // loaders + (1 if i < options.miners % loaders else 0) for i in range(loaders)]
    miners = [
        Child(
            "--miners-of",
            str(pool.port),
            dialect,
            str(count),
            str(options.rate),
            str(options.seconds),
            str(index),
        )
        for index, count in enumerate(counts)
    ]
    try:
        precompute = max(m.read(timeout=300)["precompute_s"] for m in miners)
        before = pool.ask("stats")
        time.sleep(0.5)
        cpu_start, threads_start = cpu_seconds(pool.pid), thread_cpu(pool.pid)
        for m in miners:
            m.send("go")
        reports = [m.read(timeout=options.seconds + DRAIN + 60) for m in miners]
        cpu = cpu_seconds(pool.pid) - cpu_start
        threads_end = thread_cpu(pool.pid)
        after = pool.ask("stats")
    finally:
        for m in miners:
            m.stop()
    reactor_cpu = threads_end[pool.pid] - threads_start.get(pool.pid, 0.0)
    hashing_cpu = sum(
        threads_end[t] - threads_start[t] for t in threads_end if t in threads_start and t != pool.pid
    )
    accepted = sum(r["accepted"] for r in reports)
    latencies = sorted(x for r in reports for x in r["latencies"])
    wall = max(r["last_reply"] for r in reports) - min(r["go"] for r in reports)
    counted = after["shares"].get("accepted", 0) - before["shares"].get("accepted", 0)
    return {
        "sent": sum(r["sent"] for r in reports),
        "accepted": accepted,
        "rejected": sum(r["rejected"] for r in reports),
        "unanswered": sum(r["unanswered"] for r in reports),
        "errors": [e for r in reports for e in r["errors"]][:3],
        "pool_accepted": counted,
        "blocks": after["blocks"] - before["blocks"],
        "precompute_s": precompute,
        "shares_per_s": accepted / max(wall, 1e-9),
        "cpu_us": cpu / max(counted, 1) * 1e6,
        "reactor_us": reactor_cpu / max(counted, 1) * 1e6,
        "hashing_us": hashing_cpu / max(counted, 1) * 1e6,
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else math.nan,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else math.nan,
        "max_ms": latencies[-1] * 1e3 if latencies else math.nan,
    }


def print_shares(label: str, r: dict[str, Any], offered: float) -> None:
    errors = f"; errors {r['errors']}" if r["errors"] else ""
    blocks = f", {r['blocks']} blocks" if r["blocks"] else ""
    print(
        f"{label:10} accepted {r['accepted']}/{r['sent']} ({r['rejected']} rejected, "
        f"{r['unanswered']} unanswered{blocks}), {r['shares_per_s']:.0f} shares/s ({offered:g} offered), "
        f"pool CPU {r['cpu_us']:.0f} us/share (reactor thread {r['reactor_us']:.0f}, "
        f"hashing threads {r['hashing_us']:.0f}), reply p50 {r['p50_ms']:.2f} ms, "
        f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms{errors}"
    )


def fanout_phase(options: argparse.Namespace, dialect: str, name: str) -> None:
    """New work to ever more idle miners of one dialect, in a pool of their own."""
    pool = Pool(options)
    swarm: Child | None = None
    try:
        rss_before = rss_bytes(pool.pid)
        swarm = Child("--swarm", str(pool.port), dialect)
        rss_after, held = rss_before, 0
        for size in options.fanout:
            grown = swarm.ask(f"grow {size}", timeout=300)
            held = grown["ready"]
            time.sleep(1)
            rss_after = rss_bytes(pool.pid)
            lasts, middles, calls, reached = [], [], [], []
            for _ in range(options.rounds):
                swarm.ask("arm")
                work = pool.ask("work")
                arrivals = swarm.read(timeout=90)
                delays = [t - work["at"] for t in arrivals["arrivals"]]
                reached.append(len(delays))
                if delays:
                    lasts.append(max(delays) * 1e3)
                    middles.append(statistics.median(delays) * 1e3)
                calls.append(work["call_ms"])
                time.sleep(0.3)
            print(
                f"fan-out    {name} to {held} miners: last read {statistics.median(lasts):.1f} ms after "
                f"the pool got the work (median of {len(lasts)}, {min(lasts):.1f}-{max(lasts):.1f}), "
                f"p50 {statistics.median(middles):.1f} ms; the pool's new_work call "
                f"{statistics.median(calls):.1f} ms; {min(reached)}/{held} miners got it"
            )
        print(
            f"idle       {name}: {held} miners, pool RSS {rss_before / 2**20:.1f} -> "
            f"{rss_after / 2**20:.1f} MiB, {(rss_after - rss_before) / max(held, 1) / 1024:.2f} KiB per miner"
        )
    finally:
        if swarm is not None:
            swarm.stop()
        pool.stop()


def shares_run(options: argparse.Namespace, dataset: bool) -> None:
    pool = Pool(options, dataset)
    mode = "full dataset" if dataset else "light cache"
    try:
        if dataset:
            print(f"dataset    epoch 0's generated in the pool's hashing threads in {pool.ready_s:.1f} s")
        for dialect, name in (("ethproxy", "eth-proxy"), ("nicehash", "nicehash")):
            result = share_phase(pool, dialect, options)
            print_shares(f"{name}", result, options.miners * options.rate)
            print(
                f"           ({mode}; miners' shares precomputed in {result['precompute_s']:.1f} s; "
                f"{result['pool_accepted']} accepted by the pool)"
            )
    finally:
        pool.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--miners", type=int, default=200, help="miners submitting shares")
    parser.add_argument("--rate", type=float, default=2.5, help="shares/s each miner offers")
    parser.add_argument("--seconds", type=float, default=15, help="of share load per dialect")
    parser.add_argument(
        "--fanout",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1000, 10000],
        help="idle miners new work goes to, in turn (comma-separated)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="new work sent per fan-out size")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the pool's hashing threads")
    parser.add_argument("--dataset", action="store_true", help="also a run with the full dataset (1 GiB)")
    parser.add_argument(
        "--blocks", type=int, metavar="N", help="network difficulty N: about one share in N is a block"
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds: a smoke test")
    parser.add_argument("--pool", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--miners-of", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--swarm", nargs=2, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.pool:
        threads, dataset, blocks, log = options.pool
        run_pool(int(threads), dataset == "1", int(blocks) or None, log)
        return
    if options.miners_of:
        port, dialect, count, rate, seconds, index = options.miners_of
        run_miners(int(port), dialect, int(count), float(rate), float(seconds), int(index))
        return
    if options.swarm:
        run_swarm(int(options.swarm[0]), options.swarm[1])
        return
    if options.quick:
        options.miners, options.rate, options.seconds = 10, 5.0, 2.0
        options.fanout, options.rounds = [50, 200], 1
    raise_fd_limit()
    blocks = f"1 share in {options.blocks} a block" if options.blocks else "no share a block"
    print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"ethash kernels {ethash.implementation()}; "
        f"pool with {options.threads} hashing threads, port difficulty 1 (every hash a share), {blocks}"
    )
    print(
        f"shares: {options.miners} miners x {options.rate:g} shares/s for {options.seconds:g} s per "
        f"dialect, checked with the light cache (the pool's default)"
        + (", then with the full dataset" if options.dataset else "")
        + f"; fan-out to {', '.join(map(str, options.fanout))} idle miners, {options.rounds} rounds each"
    )
    shares_run(options, dataset=False)
    if options.dataset:
        shares_run(options, dataset=True)
    for dialect, name in (("ethproxy", "eth-proxy"), ("nicehash", "nicehash")):
        fanout_phase(options, dialect, name)


if __name__ == "__main__":
    main()
