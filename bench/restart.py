"""How a restart looks to the miners: how soon each mines on the new process,
and whether a share was lost or counted twice.

Run: python bench/restart.py [--miners 8] [--restarts 6] [--drain 5]

A litecoind regtest pair and a redis-server are started for the run, and
listening sockets (Stratum, control, web) are held here as systemd's socket
units hold them. ``twistd -n nomp`` processes are started on them as
systemd starts a socket-activated ``Type=notify`` service
(test.socketactivation), while ``--miners`` nomp-miners (one thread each)
mine through them without a pause. Each restart is one of two orders, in
turn:

- ``handover``: a new process is started on the same sockets, and once it
  says READY=1 the old one gets SIGTERM;
- ``stop-then-start`` (what ``systemctl restart`` does): the old process
  gets SIGTERM, and once it has exited a new one is started; the miners'
  connections wait in the sockets' backlog meanwhile.

At SIGTERM a process stops accepting, sends its miners ``client.reconnect``,
waits for them to leave (at most ``--drain`` seconds), writes its shares to
Redis and exits. For each restart, on this process's clock, from the
SIGTERM: when the old process had exited and the new one said READY=1
(stop-then-start), and for each miner, when the new process sent it its
first job (it mines again) and accepted its first share (which takes as
long as finding one: the miners are slow and share two cores). At the end,
the shares the miners were told were accepted are compared with Redis's
count, lost (fewer in Redis) or doubled (more), and the connection attempts
that failed are counted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nomp.hashing import ALGORITHMS  # noqa: E402
from nomp.miner import Miner, connect  # noqa: E402
from test.poolconf import write_conf  # noqa: E402
from test.rediscli import redis_hash  # noqa: E402
from test.servers import RPC_PASSWORD, RPC_USER, RedisServer, RegtestPair  # noqa: E402
from test.socketactivation import InheritedSockets, PoolProcess  # noqa: E402
from test.waiting import until  # noqa: E402

COIN = "litecoin-regtest"
DIFFICULTY = 0.0625
ORDERS = ("handover", "stop-then-start")
WAIT = 120.0  # seconds anything here may take before the run is called failed


def write_folder(folder: Path, pair: RegtestPair, redis_port: int, drain: float) -> tuple[Path, str]:
    address = pair.new_address()
    listen = InheritedSockets.endpoint("stratum")
    conf, _ = write_conf(
        folder,
        pair.miner.url,
        RPC_USER,
        RPC_PASSWORD,
        address,
        redis_port,
        ports=[{"listen": listen, "diff": DIFFICULTY}],
    )
    settings = yaml.safe_load((conf / "config.yaml").read_text())
    settings["drain_seconds"] = drain
    settings["control"]["listen"] = InheritedSockets.endpoint("control")
    settings["web"]["listen"] = InheritedSockets.endpoint("web")
    (conf / "config.yaml").write_text(yaml.safe_dump(settings))
    return conf, address


async def ready(process: PoolProcess) -> None:
    await until(lambda: process.ready.called or not process.running, timeout=WAIT)
    if not process.ready.called:
        raise RuntimeError(f"{process.name} exited before it was ready:\n{process.log()}")


@dataclass
class Figures:
    """One restart's, in seconds from the SIGTERM."""

    jobs: list[float] = field(default_factory=list)  # each miner's first job from the new process
    accepted: list[float] = field(default_factory=list)  # each miner's first share it accepted
    exited: float | None = None  # stop-then-start: the old process gone
    ready: float | None = None  # stop-then-start: the new one's READY=1


async def restart(
    reactor: Any, order: str, old: PoolProcess, start: Any, miners: list[Miner], number: int
) -> tuple[PoolProcess, Figures]:
    """One restart; the new process, and its figures."""
    figures = Figures()
    if order == "handover":
        new = start()
        await ready(new)
        signalled = reactor.seconds()
        old.terminate()
    else:
        signalled = reactor.seconds()
        old.terminate()
        await old.ended
        figures.exited = reactor.seconds() - signalled
        new = start()

        def readied(_: object) -> None:
            figures.ready = reactor.seconds() - signalled

        new.ready.addCallback(readied)

    def back() -> bool:
        return all(
            len(m.reconnections) == number
            and (m.reconnections[-1].accepted is not None or m.reconnections[-1].failed is not None)
            for m in miners
        )

    await until(back, timeout=WAIT)
    status = await old.ended
    if status != -15:
        raise RuntimeError(f"{old.name} ended with {status}:\n{old.log()}")
    failed = [m.reconnections[-1].failed for m in miners if m.reconnections[-1].failed]
    if failed:
        raise RuntimeError(f"reconnections failed: {failed}")
    for miner in miners:
        moved = miner.reconnections[-1]
        assert moved.job is not None and moved.accepted is not None
        figures.jobs.append(moved.job - signalled)
        figures.accepted.append(moved.accepted - signalled)
    await until(lambda: all(m.accepted_here >= 3 for m in miners), timeout=WAIT)  # mining there
    return new, figures


def spread(times: list[float]) -> str:
    return f"{min(times):.2f} / {statistics.median(times):.2f} / {max(times):.2f} s"


async def bench(reactor: Any, options: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="nomp-restart-bench-"))
    pair = RegtestPair(work / "nodes").start()
    redis_server = RedisServer().start()
    sockets = InheritedSockets(["stratum", "control", "web"], backlog=4096)
    processes: list[PoolProcess] = []
    try:
        conf, address = write_folder(work / "conf", pair, redis_server.port, options.drain)

        def start() -> PoolProcess:
            process = PoolProcess(f"pool{len(processes) + 1}", conf, sockets).start()
            processes.append(process)
            return process

        current = start()
        await ready(current)
        miners = [Miner(reactor, ALGORITHMS["scrypt"], f"{address}.rig{i}") for i in range(options.miners)]
        for miner in miners:
            await connect(miner, "127.0.0.1", sockets.port("stratum"))
            if not await miner.authorized:
                raise RuntimeError(f"{miner.user} not authorized")
            miner.start()
        await until(lambda: all(m.stats.accepted >= 3 for m in miners), timeout=WAIT)

        every: dict[str, list[Figures]] = {order: [] for order in ORDERS}
        print("min / median / max over the miners, from the SIGTERM")
        for number in range(1, options.restarts + 1):
            order = ORDERS[(number - 1) % len(ORDERS)]
            current, figures = await restart(reactor, order, current, start, miners, number)
            every[order].append(figures)
            steps = ""
            if figures.exited is not None:
                steps = f"; old process gone {figures.exited:.2f} s, new one ready {figures.ready or 0:.2f} s"
            print(
                f"restart {number} ({order}): first job {spread(figures.jobs)}, "
                f"first share accepted {spread(figures.accepted)}{steps}"
            )
        for miner in miners:
            await miner.stop()
        current.terminate()
        await current.ended

        accepted = sum(m.stats.accepted for m in miners)
        rejected = sum(m.stats.rejected_total for m in miners)
        counters = redis_hash(redis_server.port, 0, f"{COIN}:stats")
        recorded, refused = int(counters.get("validShares", 0)), int(counters.get("invalidShares", 0))
        print()
        for order, runs in every.items():
            if runs:
                jobs = [t for figures in runs for t in figures.jobs]
                firsts = [t for figures in runs for t in figures.accepted]
                print(
                    f"{order}: {len(runs)} restarts, {len(jobs)} miner reconnections: first job "
                    f"{spread(jobs)}, first share accepted {spread(firsts)}"
                )
        print(
            f"shares accepted {accepted}, in Redis {recorded}: lost {max(accepted - recorded, 0)}, "
            f"doubled {max(recorded - accepted, 0)}; refused {rejected}, in Redis {refused}"
        )
        print(
            f"connection attempts that failed: {sum(m.connect_failures for m in miners)}; "
            f"connections made: {sum(m.connections for m in miners)}"
        )
    finally:
        for process in processes:
            killing = process.kill_if_running()
            if killing is not None:
                await killing
        sockets.close()
        redis_server.stop()
        pair.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--miners", type=int, default=8, help="nomp-miners, one thread each")
    parser.add_argument("--restarts", type=int, default=6, help="restarts, the two orders in turn")
    parser.add_argument("--drain", type=float, default=5.0, help="drain_seconds of the pool processes")
    options = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(bench(reactor, options)))


if __name__ == "__main__":
    main()
