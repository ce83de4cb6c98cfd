"""Where the pool's reactor thread stalls under share load, beside the floor.

Run: python bench/stalls.py [--rates 600,1000,2000,3000] [--seconds 10] [--connections 50]
    [--arrivals burst|spread] [--repeat 1] [--web] [--template realistic|empty]
    [--idle MINERS] [--block-every SECONDS] [--plain] [--no-floor]

Starts the pool as bench/stratum_load.py does (redis-server, its fake
daemon with the realistic template, ``twistd -n nomp``), but with a probe
in the pool process that times, on the reactor thread:

- each turn of the reactor: from epoll's return to the next wait, so a
  turn is all the work the reactor did before it could look at a socket
  again (the stall a reply waiting behind it sees);
- each piece of work in a turn: a timed call (every LoopingCall and
  callLater, by the function it runs), a call from another thread (a
  hashing batch's results), each socket's read or write (by protocol);
- each run of the cyclic garbage collector, by generation.

At each rate the same load client then drives, one after the other, the
bare Twisted line server of bench/floor.py (the floor: nothing but
``json.loads`` and an answer) and the pool, --repeat times, and prints for
each: shares/s, server CPU per share, reply p50/p99/max, the pool's p99
over the floor's, and from the probe the turns longer than 1 ms, the
longest turns with what was in them, the work that ever held the reactor
for more than 1 ms, and the collector's pauses.

--idle adds that many subscribed miners that submit nothing (bench/
stratum_load.py's swarm), as a pool's many connections; --block-every
announces a new block (a new template of the same size, through the
control port's blocknotify) at that interval during the phases, so each
new job's work and broadcast show among the turns. --plain runs the pool
without the probe, for its CPU figures alone.

--arrivals burst is bench/stratum_load.py's client (a tick every 5 ms
sending that tick's shares on consecutive connections); spread sends
from a 1 ms tick on random connections, so that at low rates most shares
arrive alone, as from independent miners.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TURN_BUCKETS_MS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
KEPT_TURNS = 12  # the longest turns kept with their contents
ITEMS_PER_TURN = 6  # pieces of work noted per kept turn, the longest first
NOTED_ITEM = 0.0002  # seconds: work shorter than this is counted, not named, in a turn


# -- the probe, in the pool's process


@dataclass
class Tally:
    """Runs of one piece of work: wall time, and the reactor thread's own CPU time."""

    count: int = 0
    total: float = 0.0
    longest: float = 0.0
    over_1ms: int = 0
    cpu_total: float = 0.0
    cpu_longest: float = 0.0
    cpu_over_1ms: int = 0

    def add(self, seconds: float, cpu: float) -> None:
        self.count += 1
        self.total += seconds
        self.cpu_total += cpu
        self.longest = max(self.longest, seconds)
        if seconds > 0.001:
            self.over_1ms += 1
        self.cpu_longest = max(self.cpu_longest, cpu)
        if cpu > 0.001:
            self.cpu_over_1ms += 1


@dataclass
class LongTurns:
    """The turns over 1 ms: their wall time, and how much of it was the
    thread's own CPU or a wait for a core (the rest: the GIL)."""

    count: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    runqueue: float = 0.0

    def add(self, wall: float, cpu: float, runqueue: float) -> None:
        self.count += 1
        self.wall += wall
        self.cpu += cpu
        self.runqueue += runqueue


@dataclass
class ProbeWindow:
    """What the probe saw since its last report."""

    started: float = field(default_factory=time.perf_counter)
    turns: int = 0
    busy: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(TURN_BUCKETS_MS) + 1))
    longest: list[tuple[float, list[tuple[str, float]], float, float, float]] = field(default_factory=list)
    long_turns: LongTurns = field(default_factory=LongTurns)
    work: dict[str, Tally] = field(default_factory=dict)
    gc: dict[int, Tally] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {
            "seconds": time.perf_counter() - self.started,
            "turns": self.turns,
            "busy": self.busy,
            "buckets": self.buckets,
            "longest": [
                {
                    "ms": ms * 1e3,
                    "gc_ms": g * 1e3,
                    "cpu_ms": cpu * 1e3,
                    "runqueue_ms": runqueue * 1e3,
                    "items": [(n, s * 1e3) for n, s in items],
                }
                for ms, items, g, cpu, runqueue in sorted(self.longest, reverse=True)
            ],
            "long_turns": vars(self.long_turns),
            "work": {
                name: vars(t)
                for name, t in sorted(self.work.items(), key=lambda kv: -kv[1].longest)
                if t.longest > 0.0005 or t.cpu_longest > 0.0002 or t.cpu_total > 0.01
            },
            "gc": {str(g): vars(t) for g, t in sorted(self.gc.items())},
        }


class ReactorProbe:
    """Times the epoll reactor's turns and what runs in them (see the module's docstring)."""

    def __init__(self, reactor: Any, out: Path) -> None:
        self.reactor = reactor
        self.out = out
        self.window = ProbeWindow()
        self.turn_started: float | None = None
        self.turn_items: list[tuple[str, float]] = []
        self.turn_gc = 0.0
        self.gc_started = self.gc_cpu_started = 0.0
        self.labels: dict[Any, str] = {}
        # This thread's scheduler counters: its CPU time and its time waiting
        # for a CPU, so a long turn can be told apart as work, waiting for
        # a core, or neither (waiting for the GIL).
        self.schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        self.turn_sched = (0, 0)
        poller = reactor._poller
        probe = self

        class TimedPoller:
            def __getattr__(self, name: str) -> Any:
                return getattr(poller, name)

            def poll(self, *args: Any) -> Any:
                probe.end_turn()
                try:
                    return poller.poll(*args)
                finally:
                    probe.start_turn()

        reactor._poller = TimedPoller()
        do_read_or_write = reactor._doReadOrWrite
        reactor._doReadOrWrite = lambda selectable, fd, event: self.timed(
            self.io_label(selectable), do_read_or_write, selectable, fd, event
        )
        # partials, not lambdas: a library that copies ``reactor.callLater`` into a
        # class attribute at import (txredisapi does) would bind a function to its
        # instances, passing itself as the delay; a partial does not bind.
        reactor.callLater = partial(self._timed_call_later, reactor.callLater)
        reactor.callFromThread = partial(self._timed_call_from_thread, reactor.callFromThread)
        gc.callbacks.append(self.collected)

    def _timed_call_later(self, call_later: Any, delay: float, f: Any, *a: Any, **kw: Any) -> Any:
        return call_later(delay, partial(self.timed, self.label(f)), f, *a, **kw)

    def _timed_call_from_thread(self, call_from_thread: Any, f: Any, *a: Any, **kw: Any) -> Any:
        return call_from_thread(partial(self.timed, "from a thread: " + self.label(f)), f, *a, **kw)

    def label(self, f: Any) -> str:
        if isinstance(f, partial):
            return self.label(f.func)
        if type(f).__name__ == "LoopingCall":
            return "LoopingCall " + self.label(f.f)
        owner = getattr(f, "__self__", None)
        if owner is not None and hasattr(f, "__func__"):
            return f"{type(owner).__name__}.{f.__name__}"
        return getattr(f, "__qualname__", type(f).__name__)

    def io_label(self, selectable: Any) -> str:
        protocol = getattr(selectable, "protocol", None)
        kind = type(protocol if protocol is not None else selectable)
        label = self.labels.get(kind)
        if label is None:
            label = self.labels[kind] = f"I/O {kind.__module__}.{kind.__qualname__}"
        return label

    def timed(self, name: str, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            return f(*args, **kwargs)
        finally:
            took = time.perf_counter() - started
            tally = self.window.work.get(name)
            if tally is None:
                tally = self.window.work[name] = Tally()
            tally.add(took, time.thread_time() - cpu_started)
            if took >= NOTED_ITEM:
                self.turn_items.append((name, took))

    def collected(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.gc_started, self.gc_cpu_started = time.perf_counter(), time.thread_time()
            return
        took = time.perf_counter() - self.gc_started
        cpu = time.thread_time() - self.gc_cpu_started
        generation = info["generation"]
        tally = self.window.gc.get(generation)
        if tally is None:
            tally = self.window.gc[generation] = Tally()
        tally.add(took, cpu)
        self.turn_gc += took

    def sched(self) -> tuple[int, int]:
        running, waiting, _ = os.pread(self.schedstat, 100, 0).split()
        return int(running), int(waiting)

    def start_turn(self) -> None:
        self.turn_sched = self.sched()
        self.turn_started = time.perf_counter()

    def end_turn(self) -> None:
        started, self.turn_started = self.turn_started, None
        if started is None:
            return
        took = time.perf_counter() - started
        window = self.window
        window.turns += 1
        window.busy += took
        ms = took * 1e3
        bucket = next((i for i, edge in enumerate(TURN_BUCKETS_MS) if ms < edge), len(TURN_BUCKETS_MS))
        window.buckets[bucket] += 1
        if took > 0.001:
            running, waiting = self.sched()
            cpu = (running - self.turn_sched[0]) / 1e9
            runqueue = (waiting - self.turn_sched[1]) / 1e9
            window.long_turns.add(took, cpu, runqueue)
            kept = window.longest
            if len(kept) < KEPT_TURNS or took > kept[-1][0]:
                items = sorted(self.turn_items, key=lambda item: -item[1])[:ITEMS_PER_TURN]
                kept.append((took, items, self.turn_gc, cpu, runqueue))
                kept.sort(key=lambda entry: -entry[0])
                del kept[KEPT_TURNS:]
        self.turn_items = []
        self.turn_gc = 0.0

    def dump(self) -> None:
        with self.out.open("a") as f:
            f.write(
                json.dumps({**self.window.report(), "threads": threads(), "batches": hash_batches()}) + "\n"
            )
        self.window = ProbeWindow()


def run_probed_pool(out: Path, argv: list[str], plain: bool) -> None:
    """``twistd argv`` with the probe on its reactor; SIGUSR2 writes a report to ``out``
    (``plain``: an empty one, without the probe's own cost). SIGUSR1 is the pool's own
    (it reopens the log file)."""
    from twisted.internet import reactor as installed  # noqa: PLC0415 - the default (epoll) one
    from twisted.scripts import twistd  # noqa: PLC0415

    reactor: Any = installed
    watch_hash_pools()

    if plain:
        signal.signal(signal.SIGUSR2, lambda signum, frame: reactor.callFromThread(empty_report, out))
    else:
        probe = ReactorProbe(reactor, out)
        signal.signal(signal.SIGUSR2, lambda signum, frame: reactor.callFromThread(probe.dump))
    sys.argv = ["twistd", *argv]
    twistd.run()


def threads() -> dict[str, str]:
    """This process's threads: native id -> name (the C extension's from /proc)."""
    names = {str(t.native_id): t.name for t in threading.enumerate()}
    for task in Path("/proc/self/task").iterdir():
        names.setdefault(task.name, (task / "comm").read_text().strip())
    return names


HASH_POOLS: list[Any] = []  # the pool's HashPoolService, once made


def watch_hash_pools() -> None:
    """Note every HashPoolService made from now on, for its count of batches."""
    from nomp.hashing.pool import HashPoolService  # noqa: PLC0415 - in the pool's process only

    made = HashPoolService.__init__

    def noted(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        HASH_POOLS.append(self)

    HashPoolService.__init__ = noted  # type: ignore[method-assign]


def hash_batches() -> int:
    """Share batches the pool's HashPoolService has handed to its threads, ever."""
    return sum(getattr(pool, "batches", 0) for pool in HASH_POOLS)


def empty_report(out: Path) -> None:
    with out.open("a") as f:
        f.write(json.dumps({"threads": threads(), "batches": hash_batches()}) + "\n")


# -- the bench, in this process


@dataclass
class Pool:
    pid: int
    port: int
    reports: Path
    redis: Any  # test.servers.RedisServer
    daemon_port: int
    control_port: int
    env: dict[str, str]

    def new_block(self) -> None:
        """The daemon makes its next template and the pool is told, as blocknotify does."""
        from bench.stratum_load import control, rpc  # noqa: PLC0415

        rpc(self.daemon_port, "bench_newblock")
        control(self.control_port, "blocknotify scrypt")

    def redis_scripts(self) -> int:
        """Scripts Redis has run (EVAL and EVALSHA), ever."""
        stats = str(self.redis.command("INFO", "commandstats"))
        calls = 0
        for line in stats.splitlines():
            if line.startswith(("cmdstat_eval:", "cmdstat_evalsha:")):
                calls += int(line.split("calls=")[1].split(",")[0])
        return calls

    def report(self) -> dict[str, Any] | None:
        """The probe's report since the last one."""
        before = self.reports.read_text().count("\n") if self.reports.exists() else 0
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = self.reports.read_text().splitlines() if self.reports.exists() else []
            if len(lines) > before:
                report: dict[str, Any] | None = json.loads(lines[-1])
                return report
            time.sleep(0.02)
        raise RuntimeError("the probe did not report")


@contextlib.contextmanager
def probed_pool(template: str, web: bool, plain: bool) -> Iterator[Pool]:
    from bench.stratum_load import TRANSACTIONS, wait_port, write_conf  # noqa: PLC0415
    from test.servers import RedisServer, free_port  # noqa: PLC0415

    python = sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    redis = RedisServer().start()
    processes: list[subprocess.Popen[Any]] = []
    try:
        daemon_port, scrypt_port, sha_port, control_port = (free_port() for _ in range(4))
        web_port = free_port() if web else None
        load = str(ROOT / "bench" / "stratum_load.py")
        processes.append(
            subprocess.Popen(
                [python, load, "--daemon", str(daemon_port), template, str(TRANSACTIONS)], env=env
            )
        )
        wait_port(daemon_port)
        conf = Path(tempfile.mkdtemp(prefix="nomp-stalls-"))
        write_conf(conf, daemon_port, redis.port, scrypt_port, sha_port, control_port, web=web_port)
        reports = conf / "probe.jsonl"
        argv = ["-n", "--pidfile=", "nomp", "-c", str(conf)]
        probe = ["--probe", str(reports), *(["--plain"] if plain else [])]
        pool = subprocess.Popen([python, __file__, *probe, "--", *argv], env=env)
        processes.append(pool)
        wait_port(scrypt_port)
        time.sleep(2)  # first templates
        yield Pool(pool.pid, scrypt_port, reports, redis, daemon_port, control_port, env)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        redis.stop()


@contextlib.contextmanager
def floor_server() -> Iterator[tuple[int, int]]:
    from bench.stratum_load import wait_port  # noqa: PLC0415
    from test.servers import free_port  # noqa: PLC0415

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "floor.py"), "--serve", "twisted", str(port)]
    )
    try:
        wait_port(port)
        yield port, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


async def spread_phase(
    port: int, user: str, connections: int, rate: float, seconds: float, pid: int
) -> dict[str, float]:
    """bench/stratum_load.py's load_phase, sending from a 1 ms tick on random connections."""
    from twisted.internet import defer, reactor, task  # noqa: PLC0415
    from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: PLC0415
    from twisted.internet.protocol import Factory  # noqa: PLC0415

    from bench.stratum_load import Load, LoadClient, cpu_seconds, disconnect, thread_cpu  # noqa: PLC0415

    load = Load(user)
    clients: list[LoadClient] = []
    for i in range(connections):
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(partial(LoadClient, load, i))
        )
        assert isinstance(client, LoadClient)
        clients.append(client)
    await defer.gatherResults([c.ready for c in clients])
    await task.deferLater(reactor, 1.0)
    rng = random.Random(15)
    sent = 0
    cpu_start, wall_start = cpu_seconds(pid), time.perf_counter()
    threads_start = thread_cpu(pid)
    end = wall_start + seconds

    def send() -> None:
        nonlocal sent
        due = int((time.perf_counter() - wall_start) * rate)
        while sent < due:
            rng.choice(clients).submit()
            sent += 1

    loop = task.LoopingCall(send)
    loop.clock = reactor
    loop.start(0.001)
    while time.perf_counter() < end:
        await task.deferLater(reactor, 0.1)
    loop.stop()
    await task.deferLater(reactor, 1.0)
    wall = time.perf_counter() - wall_start
    cpu = cpu_seconds(pid) - cpu_start
    reactor_cpu = thread_cpu(pid)[pid] - threads_start.get(pid, 0)
    disconnect(clients)
    return {"sent": sent, **load.figures(wall, cpu, reactor_cpu)}


def describe(report: dict[str, Any]) -> list[str]:
    buckets = report["buckets"]
    over = sum(buckets[TURN_BUCKETS_MS.index(1.0) :])
    edges = [f"<{e:g}" for e in TURN_BUCKETS_MS] + [f">={TURN_BUCKETS_MS[-1]:g}"]
    lines = [
        f"    reactor: {report['turns']} turns, busy {report['busy'] / report['seconds'] * 100:.0f} %, "
        f"{over} turns over 1 ms; turns by ms: "
        + " ".join(f"{e}:{n}" for e, n in zip(edges, buckets, strict=True) if n)
    ]
    long = report["long_turns"]
    if long["count"]:
        wall = long["wall"]
        lines.append(
            f"      turns over 1 ms: {wall * 1e3:.1f} ms in all, of which the thread's CPU "
            f"{long['cpu'] / wall * 100:.0f} %, waiting for a core {long['runqueue'] / wall * 100:.0f} %, "
            f"the rest (GIL) {(wall - long['cpu'] - long['runqueue']) / wall * 100:.0f} %"
        )
    for turn in report["longest"][:5]:
        items = ", ".join(f"{name} {ms:.2f}" for name, ms in turn["items"])
        gc_part = f", gc {turn['gc_ms']:.2f}" if turn["gc_ms"] else ""
        lines.append(
            f"      turn {turn['ms']:.2f} ms (cpu {turn['cpu_ms']:.2f}, runqueue {turn['runqueue_ms']:.2f}"
            f"{gc_part}): {items}"
        )
    for name, t in list(report["work"].items())[:10]:
        lines.append(
            f"      work {name}: {t['count']} runs, CPU {t['cpu_total'] * 1e3:.0f} ms in all, "
            f"longest {t['longest'] * 1e3:.2f} ms "
            f"(its CPU: longest {t['cpu_longest'] * 1e3:.2f} ms, {t['cpu_over_1ms']} over 1 ms, "
            f"mean {t['cpu_total'] / t['count'] * 1e6:.0f} us)"
        )
    for generation, t in report["gc"].items():
        lines.append(
            f"      gc generation {generation}: {t['count']} runs, longest {t['longest'] * 1e3:.2f} ms "
            f"(its CPU: longest {t['cpu_longest'] * 1e3:.2f} ms, "
            f"mean {t['cpu_total'] / t['count'] * 1e6:.0f} us)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="600,1000,2000,3000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--arrivals", choices=("burst", "spread"), default="burst")
    parser.add_argument("--repeat", type=int, default=1, help="floor and pool phases per rate")
    parser.add_argument("--web", action="store_true", help="the web site on, stats collected every 5 s")
    parser.add_argument("--template", choices=("realistic", "empty"), default="realistic")
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--plain", action="store_true", help="the pool without the probe (its figures only)")
    parser.add_argument("--idle", type=int, default=0, help="idle subscribed miners beside the load")
    parser.add_argument("--block-every", type=float, default=0, help="seconds between new blocks")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    options, rest = parser.parse_known_args()
    if options.probe:
        run_probed_pool(Path(options.probe), [a for a in rest if a != "--"], options.plain)
        return

    from twisted.internet import reactor  # noqa: PLC0415, F401 - installed before bench.stratum_load's

    from bench.stratum_load import raise_fd_limit, run_until_done  # noqa: PLC0415

    raise_fd_limit()
    rates = [float(r) for r in options.rates.split(",")]
    with (
        probed_pool(options.template, options.web, options.plain) as pool,
        floor_server() as (floor_port, floor_pid),
    ):
        print(
            f"{os.cpu_count()} CPUs; {options.template} template; {options.connections} connections; "
            f"{options.arrivals} arrivals; {options.seconds:g} s a phase",
            flush=True,
        )
        runs: dict[float, list[tuple[dict[str, float], dict[str, float] | None]]] = {}
        floor = None if options.no_floor else (floor_port, floor_pid)
        run_until_done(measure(options, rates, pool, floor, runs))
    if options.repeat > 1 or len(rates) > 1:
        print("median (min-max) over the runs at each rate:")
        for rate, results in runs.items():
            print(f"{rate:5g}/s " + summary([pool_run for pool_run, _ in results], [f for _, f in results]))


async def measure(
    options: argparse.Namespace,
    rates: list[float],
    pool: Pool,
    floor: tuple[int, int] | None,
    runs: dict[float, list[tuple[dict[str, float], dict[str, float] | None]]],
) -> None:
    from bench.stratum_load import SCRYPT_ADDRESS, load_phase, thread_cpu  # noqa: PLC0415

    phase = load_phase if options.arrivals == "burst" else spread_phase
    if options.idle:
        from bench.stratum_load import SwarmProcess  # noqa: PLC0415

        swarm = SwarmProcess(pool.port, pool.env)
        ready = swarm.ask(f"grow {options.idle}")["ready"]
        print(f"{ready} idle miners subscribed", flush=True)
    blocks: Any = None
    if options.block_every:
        from twisted.internet import reactor as installed  # noqa: PLC0415
        from twisted.internet import task  # noqa: PLC0415

        threads: Any = installed
        # From a thread: the calls block, and the load client shares this reactor.
        blocks = task.LoopingCall(lambda: threads.callInThread(pool.new_block))
        blocks.clock = installed
        blocks.start(options.block_every, now=False)
    for rate in rates:
        for _ in range(options.repeat):
            floor_run = None
            if floor is not None:
                floor_run = await phase(
                    floor[0], "bench.floor", options.connections, rate, options.seconds, floor[1]
                )
            start = pool.report()  # the window starts with the phase
            threads_before, scripts_before = thread_cpu(pool.pid), pool.redis_scripts()
            r = await phase(pool.port, SCRYPT_ADDRESS, options.connections, rate, options.seconds, pool.pid)
            threads_after = thread_cpu(pool.pid)
            r["scripts_per_s"] = (pool.redis_scripts() - scripts_before) / options.seconds
            report = pool.report()
            by_thread: dict[str, float] = {}
            if start and report and report["batches"] > start["batches"]:
                r["shares_per_batch"] = r["accepted"] / (report["batches"] - start["batches"])
            names = report["threads"] if report else {}
            for tid, seconds in threads_after.items():
                name = names.get(str(tid), "other")
                name = (
                    "reactor" if tid == pool.pid else "hashing" if name.startswith("nomp-hash") else "other"
                )
                by_thread[name] = by_thread.get(name, 0.0) + seconds - threads_before.get(tid, 0.0)
            for name, seconds in by_thread.items():
                r[f"{name}_us"] = seconds / max(r["accepted"], 1) * 1e6
            runs.setdefault(rate, []).append((r, floor_run))
            ratio = f", {r['p99_ms'] / floor_run['p99_ms']:.1f}x the floor's p99" if floor_run else ""
            threads = ", ".join(f"{n} {r[f'{n}_us']:.0f}" for n in sorted(by_thread))
            batches = f"{r['shares_per_batch']:.1f} shares a batch, " if "shares_per_batch" in r else ""
            print(
                f"{rate:5g}/s pool:  {r['shares_per_s']:.0f}/s, CPU {r['cpu_us_per_share']:.0f} us/share "
                f"(threads: {threads}), {batches}{r['scripts_per_s']:.0f} Redis scripts/s, "
                f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms{ratio}",
                flush=True,
            )
            if floor_run:
                print(
                    f"{rate:5g}/s floor: {floor_run['shares_per_s']:.0f}/s, CPU "
                    f"{floor_run['cpu_us_per_share']:.0f} us/request, p50 {floor_run['p50_ms']:.2f} ms, "
                    f"p99 {floor_run['p99_ms']:.2f} ms, max {floor_run['max_ms']:.1f} ms",
                    flush=True,
                )
            if report and "turns" in report:
                print("\n".join(describe(report)), flush=True)
    if blocks is not None:
        blocks.stop()


def spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def summary(pool_runs: list[dict[str, float]], floor_runs: list[dict[str, float] | None]) -> str:
    text = (
        f"pool p99 {spread([r['p99_ms'] for r in pool_runs], 2)} ms, "
        f"CPU {spread([r['cpu_us_per_share'] for r in pool_runs], 0)} us/share"
    )
    floors = [f for f in floor_runs if f is not None]
    if len(floors) == len(pool_runs):
        ratios = [r["p99_ms"] / f["p99_ms"] for r, f in zip(pool_runs, floors, strict=True)]
        text += (
            f"; floor p99 {spread([f['p99_ms'] for f in floors], 2)} ms, "
            f"CPU {spread([f['cpu_us_per_share'] for f in floors], 0)} us/request; "
            f"pool/floor p99 {spread(ratios, 2)}"
        )
    return text


if __name__ == "__main__":
    main()
