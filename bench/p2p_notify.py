"""How soon a block on the node becomes the pool's new job: poll, blocknotify, P2P.

Run: python bench/p2p_notify.py [--blocks 15] [--rounds 2] [--seed 1]

A litecoind regtest pair is started for the run, the miner node with
``-logtimemicros`` (its log lines carry microseconds) and with
``-blocknotify`` running nomp-notify (compiled afresh from
nomp/notify/nomp_notify.c) to a control port in this process. Each phase
runs a real PoolService against the node, one way of hearing of blocks at
a time:

- ``poll``: getblocktemplate every ``block_refresh_interval`` (the default,
  1 s), nothing else;
- ``blocknotify``: the node's -blocknotify through nomp-notify to the real
  control service, which calls the pool's block_notify; the poll every hour;
- ``p2p``: the pool's P2P notifier on the node's P2P port; the poll every hour.

The other two ways are off in each phase (the control port knows no pool
outside the blocknotify phase, so the node's nomp-notify is refused). In a
phase the node mines ``--blocks`` blocks (generatetoaddress, in a thread, so
the reactor is free), each after a random pause of 0.2 to 1.2 s so that the
poll's phase is not always the same, and the pool's job on each block is
awaited. The phases run in turn, ``--rounds`` times.

Times, all from the one wall clock the node's log and this process share:
``block``, the node's ``UpdateTip`` log line of the block (it is connected,
before generatetoaddress returns and before any announcement); ``rpc``,
generatetoaddress returning here; ``heard``, the pool's block_notify called
(by the control port or the notifier); ``job``, the pool's job listener
given the new clean job (the template fetched, read and made a job).
"""

from __future__ import annotations

import argparse
import operator
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet import defer, task, threads

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nomp.chain.jobs import Job  # noqa: E402
from nomp.config.model import P2PConfig  # noqa: E402
from nomp.control.service import control_service  # noqa: E402
from nomp.notify.build import build  # noqa: E402
from nomp.p2p.service import p2p_notifier  # noqa: E402
from nomp.pool.service import PoolService  # noqa: E402
from test.fakes import FakeBlockRecords  # noqa: E402
from test.servers import RegtestPair, free_port  # noqa: E402
from test.test_pool_service import pool_for  # noqa: E402

MODES = ("poll", "blocknotify", "p2p")
JOB_WAIT = 10.0  # seconds a block's job may take before the run is given up
_UPDATE_TIP = re.compile(r"^(\S+) UpdateTip: new best=([0-9a-f]{64}) ")


class TimedPool(PoolService):
    """A PoolService that notes when block_notify was called, and for which block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heard: dict[str, float] = {}

    def block_notify(self, block_hash: str | None = None) -> defer.Deferred[None]:
        if block_hash is not None:
            self.heard.setdefault(block_hash, time.time())
        return super().block_notify(block_hash)


@dataclass
class Sample:
    mode: str
    block_hash: str
    rpc: float  # generatetoaddress returned
    job: float  # the job on it was made
    heard: float | None  # block_notify called
    block: float = 0.0  # the node's UpdateTip line, filled in from its log at the end


@dataclass
class Run:
    pair: RegtestPair
    control_port: int
    pools: dict[str, PoolService] = field(default_factory=dict)  # what the control port knows
    samples: list[Sample] = field(default_factory=list)


def start_pair(root: Path, notifier: Path, control_port: int) -> RegtestPair:
    """RegtestPair.start, with the miner's log in microseconds and its blocknotify."""
    pair = RegtestPair(root)
    try:
        pair.miner.start(
            "-logtimemicros", f"-blocknotify={notifier} 127.0.0.1:{control_port} litecoin-regtest %s"
        )
        pair.peer.start("-disablewallet", f"-connect=127.0.0.1:{pair.miner.p2p_port}")
        pair.miner.rpc("createwallet", pair.wallet)
        pair.wait_connected()
        pair.generate(1)
    except BaseException:
        pair.stop()
        raise
    return pair


async def until(reactor: Any, condition: Callable[[], object], timeout: float, what: str) -> None:
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.002)
        waited += 0.002


async def phase(reactor: Any, run: Run, mode: str, blocks: int, rng: random.Random) -> None:
    pair = run.pair
    changes: dict[str, Any] = {"job_rebroadcast_timeout": 0.0}
    if mode != "poll":
        changes["block_refresh_interval"] = 3600.0
    if mode == "p2p":
        changes["p2p"] = P2PConfig(port=pair.miner.p2p_port)
    config = pool_for(pair, **changes)
    fatal: list[str] = []
    pool = TimedPool(config, reactor, fatal.append, FakeBlockRecords())
    made: dict[str, float] = {}

    def job_made(job: Job) -> None:
        if job.clean:
            made.setdefault(job.template.previous_block_hash, time.time())

    pool.add_job_listener(job_made)
    notifier = p2p_notifier(config, pool, reactor)
    if notifier is not None:
        notifier.setServiceParent(pool)
    pool.startService()
    try:

        def ready() -> bool:
            return pool.ready and (notifier is None or notifier.connected)

        await until(reactor, lambda: ready() or fatal, 60, "the pool")
        if fatal:
            raise RuntimeError(f"the pool stopped: {fatal}")
        if mode == "blocknotify":
            run.pools[config.coin.name] = pool
        address = pair.new_address()
        for _ in range(blocks):
            await task.deferLater(reactor, rng.uniform(0.2, 1.2))
            (block_hash,) = await threads.deferToThread(mine, pair, address)
            rpc = time.time()
            await until(
                reactor, partial(operator.contains, made, block_hash), JOB_WAIT, f"the job on {block_hash}"
            )
            run.samples.append(Sample(mode, block_hash, rpc, made[block_hash], pool.heard.get(block_hash)))
    finally:
        run.pools.clear()
        await pool.stopService()


def mine(pair: RegtestPair, address: str) -> list[str]:
    return [str(h) for h in pair.wallet_rpc("generatetoaddress", 1, address)]


def read_block_times(pair: RegtestPair, samples: list[Sample]) -> None:
    """Each sample's block time from the miner's UpdateTip lines."""
    seen: dict[str, float] = {}
    with (pair.miner.datadir / "regtest" / "debug.log").open(encoding="utf-8", errors="replace") as log:
        for line in log:
            match = _UPDATE_TIP.match(line)
            if match:
                stamp = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
                seen.setdefault(match.group(2), stamp.timestamp())
    for sample in samples:
        sample.block = seen[sample.block_hash]


def figures(samples: list[float]) -> str:
    """Median, 90th percentile and range, in milliseconds."""
    if not samples:
        return f"{'-':>7} {'-':>7} {'-':>17}"
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    spread = f"{ordered[0]:.1f}-{ordered[-1]:.1f}"
    return f"{statistics.median(ordered):7.1f} {p90:7.1f} {spread:>17}"


def report(samples: list[Sample], blocks: int, rounds: int) -> None:
    print(f"{blocks} blocks per phase, {rounds} rounds: {blocks * rounds} blocks per way; milliseconds")
    columns = f"{'median':>7} {'p90':>7} {'range':>17}"
    print(f"{'':12} {'block to job':^33}   {'rpc to job':^33}   {'block to heard':^33}")
    print(f"{'':12} {columns}   {columns}   {columns}")
    for mode in MODES:
        rows = [s for s in samples if s.mode == mode]
        print(
            f"{mode:12} {figures([(s.job - s.block) * 1000 for s in rows])}   "
            f"{figures([(s.job - s.rpc) * 1000 for s in rows])}   "
            f"{figures([(s.heard - s.block) * 1000 for s in rows if s.heard is not None])}"
        )


async def bench(reactor: Any, options: argparse.Namespace) -> None:
    rng = random.Random(options.seed)
    with tempfile.TemporaryDirectory(prefix="nomp-bench-p2p-") as folder:
        notifier = Path(folder) / "nomp-notify"
        build(notifier)
        control_port = free_port()
        pair = start_pair(Path(folder) / "chain", notifier, control_port)
        run = Run(pair, control_port)
        control = control_service(f"tcp:{control_port}:interface=127.0.0.1", run.pools, reactor)
        control.privilegedStartService()
        control.startService()
        try:
            for _ in range(options.rounds):
                for mode in MODES:
                    await phase(reactor, run, mode, options.blocks, rng)
            read_block_times(pair, run.samples)
        finally:
            await control.stopService()
            pair.stop()
    report(run.samples, options.blocks, options.rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=15, help="blocks per phase (default 15)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three phases (default 2)")
    parser.add_argument("--seed", type=int, default=1, help="of the pauses between blocks (default 1)")
    options = parser.parse_args()
    if options.blocks < 1 or options.rounds < 1:
        parser.error("--blocks and --rounds must be at least 1")
    task.react(lambda reactor: defer.ensureDeferred(bench(reactor, options)))


if __name__ == "__main__":
    main()
