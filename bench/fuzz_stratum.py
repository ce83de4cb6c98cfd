"""Malformed Stratum input, and what it costs the miners beside it.

Run: python bench/fuzz_stratum.py [--seconds 20] [--rate 200] [--flood-rate 3600]
                                  [--flood-connections 8] [--flood-tick 0.1] [--periods 10]
                                  [--seed N]
     python bench/fuzz_stratum.py --properties [--inputs 1000000] [--seed N] [--lines 410]
     python bench/fuzz_stratum.py --properties --replay STREAM_SEED

The flood (the default). Starts the pool of bench/stratum_load.py (a
redis-server, the fake daemon, ``twistd -n nomp`` with a scrypt port that
takes every hash as a share) and runs a legitimate miner on it: one
connection from 127.0.0.2 that subscribes, authorizes and submits --rate
shares/s, timing each reply. Beside it, --flood-connections connections,
one from each of 127.0.3.1, 127.0.3.2, ..., are switched on and off by
turns: on, they send --flood-rate malformed lines/s in all from a process
of their own, what is due sent every --flood-tick seconds (by default a
burst every 100 ms, 45 lines on each connection, as a script that sends
and sleeps would; 0.005 spreads them out). The miner runs
--seconds without the flood and as long with it, in --periods periods of
each, starting without (so both conditions see the same spells of a
noisy machine; replies in the first 0.1 s after a switch count for
neither). The lines are the fuzz tests' (test/test_stratum_fuzz.py:
mutated requests, garbage, other encodings, deep nesting, at most 8 KiB),
keeping those the pool must answer with error 20 and count as malformed:
not JSON, not an object, an id that is an object, an array or a boolean,
no method, params not a list.

The pool runs with bans on, but the malformed limit raised to
``MALFORMED`` (more than the flood sends from one address within its
window), so the flood is not banned: the run measures what reading and
answering bad lines costs, as from a botnet whose every address stays
under the default limit (20 in 60 s).

Prints the miner's reply p50/p99/max without and with the flood, the
ratio of the p99s, the malformed lines/s achieved, the error replies the
flood got back, and the pool's extra CPU per malformed line (all its
threads, and its reactor thread alone), read from /proc; then the pool's
own Python per malformed line with no I/O (the same lines into a
StratumProtocol on the test fakes, in this process). The miner
acknowledges each read at once (see QuickAckMiner).

--properties runs the property fuzzer instead: the generators, the
mutators, the harness and the properties of test/test_stratum_fuzz.py,
without hypothesis: each stream is a fresh pool (a StratumServer on
StringTransports, with the real share check) with well-behaved miners, and
an attacker connection fed ``--lines`` lines of mutated requests, garbage,
other encodings and deep nesting, cut at random into dataReceived calls.
Every stream has its own seed, drawn from ``--seed``; a failing one is
printed with its seed, and ``--replay`` runs that stream alone. It prints
the inputs (lines) fed, lines/s, the replies, the error replies, the
connections the server closed, the crashes (an exception out of
dataReceived, a failure or error logged, an "internal error" reply) and
the other property violations, and exits 1 on any crash or violation.
"""

from __future__ import annotations

import argparse
import json
import random
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402
from twisted.internet.protocol import Factory  # noqa: E402
from twisted.logger import ILogObserver, LogEvent, globalLogBeginner  # noqa: E402
from zope.interface import provider  # noqa: E402

from bench.stratum_load import (  # noqa: E402
    SCRYPT_ADDRESS,
    Load,
    LoadClient,
    cpu_seconds,
    raise_fd_limit,
    run_until_done,
    running_pool,
    thread_cpu,
)
from nomp.stratum.protocol import MAX_LINE  # noqa: E402
from test.test_stratum_fuzz import (  # noqa: E402
    STREAM_LINES,
    FuzzFailure,
    Stream,
    Tally,
    Target,
    attack_line,
    iter_seeds,
)

SHOWN_FAILURES = 5
SHOWN_CHARACTERS = 6000

# The flood.
MINER_SOURCE = "127.0.0.2"
FLOOD_NET = "127.0.3."
CORPUS = 20_000  # fuzz lines drawn; the malformed ones are sent, over and over
# Per address: far more than a flood connection sends within the window,
# kept short so the pool holds few times per address, as it would with the
# default limit (20 in 60 s) and a crowd of addresses.
MALFORMED = {"count": 100_000, "window": 10}
ERROR_20 = b'"error":[20,'
SUBMIT_TICK = 0.005  # seconds between the miner's submits (or bursts of them)
SETTLE = 0.1  # seconds after a switch of the flood whose replies count for neither condition


def is_malformed(line: bytes) -> bool:
    """Whether the pool must answer ``line`` with error 20 and count it as malformed."""
    if b"\n" in line or len(line) > MAX_LINE or not line.strip():
        return False
    try:
        message = json.loads(line.strip())
    except (ValueError, RecursionError):
        return True
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return True
    request_id = message.get("id")
    if isinstance(request_id, bool | dict | list):
        return True  # an id JSON-RPC does not allow
    params = message.get("params")
    return params is not None and not isinstance(params, list)


def corpus(seed: int) -> list[bytes]:
    """The malformed lines of ``CORPUS`` fuzz lines drawn with ``seed``, each with its newline."""
    rng = random.Random(seed)
    target = Target(
        workers=(SCRYPT_ADDRESS, f"{SCRYPT_ADDRESS}.rig1", "rig.1"), job_id="1", ntime=int(time.time())
    )
    lines = (attack_line(rng, target) for _ in range(CORPUS))
    return [line + b"\n" for line in lines if is_malformed(line)]


# The flood's process (python bench/fuzz_stratum.py --flood PORT CONNECTIONS RATE TICK SEED).
# It draws its lines and says how many, then connects. It answers every line on stdin with
# its counts so far (one JSON line): "on" starts the flood, "off" stops it; EOF ends it.
def run_flood(port: int, connections: int, rate: float, tick: float, seed: int) -> None:
    lines = corpus(seed)
    print(json.dumps({"lines": len(lines), "mean_bytes": sum(map(len, lines)) / len(lines)}), flush=True)
    poller = select.epoll()
    sockets: dict[int, socket.socket] = {}
    for i in range(connections):
        s = socket.socket()
        s.bind((f"{FLOOD_NET}{i + 1}", 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        sockets[s.fileno()] = s
        poller.register(s.fileno(), select.EPOLLIN)
    fds = list(sockets)
    pending = {fd: bytearray() for fd in fds}
    tails = dict.fromkeys(fds, b"")
    stdin = sys.stdin.fileno()
    poller.register(stdin, select.EPOLLIN)
    counts = {"sent": 0, "bytes": 0, "replies": 0, "errors": 0, "closed": 0}
    on = False
    on_since = next_tick = time.perf_counter()
    sent_at_on = at = 0
    while True:
        now = time.perf_counter()
        if on and now >= next_tick:
            next_tick += tick
            # Round robin over the connections, each tick's lines in one send per connection.
            open_fds = [fd for fd in fds if fd in sockets]
            owed = int((now - on_since) * rate) - (counts["sent"] - sent_at_on)
            for _ in range(owed if open_fds else 0):
                pending[open_fds[at % len(open_fds)]] += lines[at % len(lines)]
                at += 1
                counts["sent"] += 1
            for fd, data in pending.items():
                if data and fd in sockets:
                    try:
                        sent = sockets[fd].send(data)
                    except BlockingIOError:
                        sent = 0
                    counts["bytes"] += sent
                    del data[:sent]
        for fd, _ in poller.poll(max(0.0, next_tick - time.perf_counter()) if on else None):
            if fd == stdin:
                command = sys.stdin.readline()
                if not command:
                    return
                if command.strip() == "on" and not on:
                    on, sent_at_on = True, counts["sent"]
                    on_since = next_tick = time.perf_counter()
                elif command.strip() == "off":
                    on = False
                backlog = sum(len(queued) for each, queued in pending.items() if each in sockets)
                print(json.dumps({**counts, "backlog": backlog}), flush=True)
                continue
            try:
                received = sockets[fd].recv(1 << 20)
            except OSError:
                received = b""
            if not received:
                counts["closed"] += 1
                poller.unregister(fd)
                del sockets[fd]
                continue
            # Whole reply lines only: a marker may straddle two reads.
            received = tails[fd] + received
            cut = received.rfind(b"\n") + 1
            counts["replies"] += received.count(b"\n", 0, cut)
            counts["errors"] += received.count(ERROR_20, 0, cut)
            tails[fd] = received[cut:]


class QuickAckMiner(LoadClient):
    """The load client, acknowledging every read at once.

    One connection submitting every few milliseconds (many times what a
    real miner sends, to sample the latency) can lock itself into waiting
    on Nagle's algorithm: once one reply is late, the pool holds each next
    reply until the miner's delayed acknowledgement of the one before,
    which comes with its next submit, so every reply then takes about the
    submit interval. A real miner, submitting every few seconds, never
    meets it.
    """

    def dataReceived(self, data: bytes) -> None:
        transport: Any = self.transport
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # Linux resets it
        super().dataReceived(data)


class Latencies(list[float]):
    """The miner's reply times, kept by whether the flood was on when each reply came."""

    def __init__(self) -> None:
        super().__init__()
        self.by_condition: dict[str, list[float]] = {"alone": [], "flood": []}
        self.condition: str | None = None  # None: a period is settling, its replies are not kept

    def append(self, latency: float) -> None:
        if self.condition is not None:
            self.by_condition[self.condition].append(latency)


@dataclass
class Condition:
    """What the pool and the flood did over the periods of one condition."""

    seconds: float = 0.0
    cpu: float = 0.0  # the pool's CPU seconds, all threads
    reactor_cpu: float = 0.0
    flood: dict[str, float] = field(default_factory=dict)  # the flood's counts over the periods


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def mine_beside(
    port: int, pid: int, options: argparse.Namespace, flood: Callable[[str], dict[str, float]]
) -> tuple[Load, Latencies, dict[str, Condition], dict[str, float]]:
    """One miner submitting at --rate throughout, while the flood is switched off and on by
    turns, --periods times each, starting off."""
    load = Load(SCRYPT_ADDRESS)
    latencies = load.latencies = Latencies()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(MINER_SOURCE, 0))
    miner = await endpoint.connect(Factory.forProtocol(partial(QuickAckMiner, load, 0)))
    assert isinstance(miner, QuickAckMiner)
    await miner.ready
    await task.deferLater(reactor, 1.0)
    debt = 0.0

    def send() -> None:
        nonlocal debt
        debt += options.rate * SUBMIT_TICK
        while debt >= 1:
            miner.submit()
            debt -= 1

    loop = task.LoopingCall(send)
    loop.clock = reactor
    loop.start(SUBMIT_TICK)
    conditions = {"alone": Condition(), "flood": Condition()}
    period = options.seconds / options.periods
    for turn in range(2 * options.periods):
        name = "flood" if turn % 2 else "alone"
        condition = conditions[name]
        latencies.condition = None
        started, cpu, reactor_cpu = time.perf_counter(), cpu_seconds(pid), thread_cpu(pid)[pid]
        counts = flood("on" if name == "flood" else "off")
        await task.deferLater(reactor, SETTLE)
        latencies.condition = name
        await task.deferLater(reactor, period - SETTLE)
        latencies.condition = None
        after = flood("")
        condition.seconds += time.perf_counter() - started
        condition.cpu += cpu_seconds(pid) - cpu
        condition.reactor_cpu += thread_cpu(pid)[pid] - reactor_cpu
        for key, value in after.items():
            condition.flood[key] = condition.flood.get(key, 0) + value - counts[key]
    flood("off")
    loop.stop()
    await task.deferLater(reactor, 1.0)  # the last replies
    assert miner.transport is not None
    miner.transport.loseConnection()
    return load, latencies, conditions, flood("")


def run_beside(options: argparse.Namespace) -> None:
    """The flood run: one miner, the flood off and on by turns; prints both and the flood's cost."""
    banning = {"malformed": MALFORMED}
    with running_pool(options.threads, banning) as pool:
        pid = pool.pool.pid
        print(
            f"pool pid {pid}; banning {json.dumps(banning)}; a miner on {MINER_SOURCE} offering "
            f"{options.rate:g} shares/s for {options.seconds:g} s alone and {options.seconds:g} s "
            f"beside {options.flood_connections} connections ({FLOOD_NET}1-{options.flood_connections}) "
            f"offering {options.flood_rate:g} malformed lines/s, sent every {options.flood_tick * 1e3:g} ms; "
            f"by turns in periods of {options.seconds / options.periods:g} s, starting alone"
        )
        process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--flood",
                str(pool.scrypt_port),
                str(options.flood_connections),
                str(options.flood_rate),
                str(options.flood_tick),
                str(options.seed),
            ],
            env=pool.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        pool.processes.append(process)
        assert process.stdin is not None and process.stdout is not None
        flood_in, flood_out = process.stdin, process.stdout
        corpus_info = json.loads(flood_out.readline())  # drawn before the miner starts

        def flood(command: str) -> dict[str, float]:
            flood_in.write(command + "\n")
            flood_in.flush()
            counts: dict[str, float] = json.loads(flood_out.readline())
            return counts

        results: list[Any] = []

        async def measure() -> None:
            results.extend(await mine_beside(pool.scrypt_port, pid, options, flood))

        run_until_done(measure())
        flood_in.close()
        process.wait(timeout=30)

    load, latencies, conditions, totals = results
    alone, flooded = conditions["alone"], conditions["flood"]
    p99 = {}
    for name, condition in conditions.items():
        times = latencies.by_condition[name]
        p99[name] = percentile(times, 0.99) * 1e3
        print(
            f"miner {name:5}  {len(times):,} replies, p50 {percentile(times, 0.5) * 1e3:.2f} ms, "
            f"p99 {p99[name]:.2f} ms, max {max(times) * 1e3:.1f} ms; pool CPU "
            f"{condition.cpu / condition.seconds * 100:.1f} % of a core (reactor thread "
            f"{condition.reactor_cpu / condition.seconds * 100:.1f} %)"
        )
    print(f"             {load.accepted:,} shares accepted, {load.rejected} refused, in both")
    counts = flooded.flood
    lines = counts["sent"]
    # The pool's CPU beyond what it used as long without the flood.
    extra = flooded.cpu - alone.cpu / alone.seconds * flooded.seconds
    extra_reactor = flooded.reactor_cpu - alone.reactor_cpu / alone.seconds * flooded.seconds
    answered = max(counts["errors"], 1)
    print(
        f"flood        {lines / flooded.seconds:,.0f} malformed lines/s offered, "
        f"{counts['errors'] / flooded.seconds:,.0f}/s answered (the rest wait, throttled) "
        f"({counts['bytes'] / flooded.seconds / 1e6:.2f} MB/s; a corpus of {corpus_info['lines']:,} lines "
        f"of {corpus_info['mean_bytes']:.0f} bytes on average); in all {totals['errors']:,} error-20 replies "
        f"to {totals['sent']:,} lines, {totals['closed']} connections closed by the pool"
    )
    print(
        f"cost         pool CPU {extra / answered * 1e6:.1f} us per malformed line answered "
        f"(reactor thread {extra_reactor / answered * 1e6:.1f} us)"
    )
    print(
        f"p99 ratio    {p99['flood'] / p99['alone']:.2f}, {p99['flood'] - p99['alone']:+.2f} ms "
        f"({p99['alone']:.2f} ms alone, {p99['flood']:.2f} ms beside the flood)"
    )
    print(f"python       the pool's own per malformed line, no I/O: {malformed_logic(options.seed):.1f} us")


def malformed_logic(seed: int, rounds: int = 7) -> float:
    """Microseconds of the pool's Python per malformed line (the flood's
    lines, one read each) with no I/O: a real StratumProtocol and pool on
    the test fakes, bans on as in the run; best of a few rounds of CPU time."""
    import dataclasses  # noqa: PLC0415 - only this measure needs them

    from nomp.config import RateLimitConfig  # noqa: PLC0415
    from nomp.stratum import protocol  # noqa: PLC0415
    from test.fakes import StratumHarness, pool_config  # noqa: PLC0415
    from test.test_stratum_protocol import NOW  # noqa: PLC0415

    clock = task.Clock()
    clock.advance(NOW)
    config = pool_config()
    limit = RateLimitConfig(count=int(MALFORMED["count"]), window=float(MALFORMED["window"]))
    harness = StratumHarness(
        dataclasses.replace(config, banning=dataclasses.replace(config.banning, malformed=limit)), clock
    )
    # What answering a malformed line costs, not waiting: the throttle that
    # slows a flooding connection is lifted for this measure.
    burst, protocol.MALFORMED_BURST = protocol.MALFORMED_BURST, float("inf")
    try:
        connection = harness.connect(ip=f"{FLOOD_NET}1")
        lines = corpus(seed)
        best = float("inf")
        for _ in range(rounds):
            started = time.thread_time()
            for line in lines:
                connection.send(line)
                connection.transport.clear()
            best = min(best, time.thread_time() - started)
            clock.advance(MALFORMED["window"] + 1)  # the window empties: never banned
    finally:
        protocol.MALFORMED_BURST = burst
    assert not connection.closing, "the flood's connection stays open"
    return best / len(lines) * 1e6


@provider(ILogObserver)
def discard(event: LogEvent) -> None:
    """Each arena watches the log for failures itself; nothing to keep."""


def run(seed: int, lines: int) -> tuple[Tally, FuzzFailure | None]:
    """One stream: its tally, and the failure it found if any."""
    stream = Stream.of(seed, lines)
    try:
        return stream.run(), None
    except FuzzFailure as failure:
        data = b"".join(stream.chunks)
        tally = Tally(streams=1, lines=data.count(b"\n"), bytes=len(data))
        if failure.crash:
            tally.crashes = 1
        else:
            tally.violations = 1
        return tally, failure


def show(seed: int, failure: FuzzFailure) -> None:
    kind = "CRASH" if failure.crash else "VIOLATION"
    text = str(failure)
    if len(text) > SHOWN_CHARACTERS:
        text = text[:SHOWN_CHARACTERS] + f"... ({len(text)} characters)"
    print(f"\n{kind} in stream {seed} (replay: python bench/fuzz_stratum.py --replay {seed}):\n{text}\n")


def report(total: Tally, elapsed: float, seed: int | None) -> None:
    if seed is not None:
        print(f"seed                {seed}")
    print(f"streams             {total.streams:,}")
    print(f"inputs (lines) fed  {total.lines:,}")
    print(f"bytes fed           {total.bytes:,}")
    print(f"dataReceived calls  {total.data_received:,}")
    print(f"elapsed             {elapsed:.1f} s")
    print(f"lines/s             {total.lines / elapsed:,.0f}")
    print(f"replies             {total.replies:,}")
    print(f"error replies       {total.errors:,}")
    print(f"connections closed  {total.closes:,}")
    print(f"crashes             {total.crashes:,}")
    print(f"violations          {total.violations:,}")


def run_properties(args: argparse.Namespace) -> int:
    """The --properties run: property fuzzing in process, without hypothesis."""
    globalLogBeginner.beginLoggingTo([discard], redirectStandardIO=False)

    if args.replay is not None:
        started = time.perf_counter()
        tally, failure = run(args.replay, args.lines)
        if failure is not None:
            show(args.replay, failure)
        report(tally, time.perf_counter() - started, None)
        return 1 if failure is not None else 0

    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    total = Tally()
    shown = 0
    started = last_progress = time.perf_counter()
    for stream_seed in iter_seeds(seed):
        if total.lines >= args.inputs:
            break
        tally, failure = run(stream_seed, args.lines)
        total.add(tally)
        if failure is not None and shown < SHOWN_FAILURES:
            show(stream_seed, failure)
            shown += 1
        now = time.perf_counter()
        if now - last_progress >= 10:
            last_progress = now
            rate = total.lines / (now - started)
            print(
                f"... {total.lines:,} lines, {rate:,.0f}/s, {total.crashes + total.violations} failures",
                file=sys.stderr,
            )
    report(total, time.perf_counter() - started, seed)
    return 1 if total.crashes or total.violations else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=20, help="the miner's time alone, and beside the flood"
    )
    parser.add_argument("--rate", type=float, default=200, help="the miner's shares/s")
    parser.add_argument("--flood-rate", type=float, default=3600, help="malformed lines/s in all")
    parser.add_argument("--flood-connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="the pool's hashing threads")
    parser.add_argument("--flood-tick", type=float, default=0.1, help="seconds between the flood's sends")
    parser.add_argument("--periods", type=int, default=10, help="periods of each condition, by turns")
    parser.add_argument("--flood", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--properties", action="store_true", help="run the property fuzzer instead")
    parser.add_argument("--inputs", type=int, default=1_000_000, help="--properties: lines to feed in all")
    parser.add_argument("--seed", type=int, help="the run's seed (default: a random one, printed)")
    parser.add_argument("--lines", type=int, default=STREAM_LINES, help="--properties: lines per stream")
    parser.add_argument(
        "--replay", type=int, metavar="STREAM_SEED", help="--properties: run one stream and show it"
    )
    args = parser.parse_args(argv)
    if args.properties or args.replay is not None:
        return run_properties(args)
    if args.flood:
        port, connections, rate, tick, seed = args.flood
        run_flood(int(port), int(connections), float(rate), float(tick), int(seed))
        return 0
    if args.seed is None:
        args.seed = random.SystemRandom().getrandbits(32)
    raise_fd_limit()
    run_beside(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
