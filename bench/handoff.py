"""What handing shares to the hashing threads and back costs, in one process.

Run: python bench/handoff.py [--rates 600,3000] [--seconds 5] [--burst 1,3] [--threads 1]

HashPoolService on its own, with no sockets: shares of one job are
submitted from the reactor thread at --rates per second, --burst at a time
(from a 1 ms tick), and each is done when its result is back on the
reactor thread. For sha256d the hash itself costs a few
microseconds, so its figures are the hand-off's own cost: the reactor's
timers and wake-ups, the queue, the threads' wake-ups and the GIL. For
scrypt, the same plus the lane kernels (bench/scrypt_lanes.py gives those
alone). Printed per case: CPU per share of the reactor thread (less what
the sending tick costs it alone, measured first) and of the rest of the
process (the hashing threads), batches per share, and submit-to-result
latency p50/p99.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, reactor, task

from nomp.hashing import ALGORITHMS, JobHasher, ShareWork
from nomp.hashing.pool import HashPoolService


def process_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def ticking(seconds: float) -> float:
    """The floor: reactor CPU seconds per second of the 1 ms tick alone, submitting nothing."""
    loop = task.LoopingCall(lambda: None)
    loop.clock = reactor
    started = time.thread_time()
    loop.start(0.001)
    await task.deferLater(reactor, seconds)
    loop.stop()
    return (time.thread_time() - started) / seconds


async def case(
    service: HashPoolService, algorithm: str, rate: float, burst: int, seconds: float
) -> dict[str, float]:
    rng = random.Random(1)
    job = JobHasher(
        ALGORITHMS[algorithm],
        rng.randbytes(100),
        rng.randbytes(150),
        [rng.randbytes(32)] * 9,
        rng.randbytes(32),
        0x1A0FFFFF,
    )
    latencies: list[float] = []
    nonce = 0
    batches_before = service.batches

    bursts = 0

    def done(sent: float, result: object) -> None:
        latencies.append(time.perf_counter() - sent)

    def submit() -> None:
        # A 1 ms tick sends the bursts now due: the epoll reactor's timers
        # are rounded up to the millisecond, so a tick per burst would not
        # keep the rate.
        nonlocal nonce, bursts
        due = int((time.perf_counter() - started) * rate / burst)
        while bursts < due:
            bursts += 1
            sent = time.perf_counter()
            for _ in range(burst):
                nonce += 1
                work = ShareWork(b"\0" * 8, 0x20000000, 1700000000, nonce)
                service.submit(job, work, partial(done, sent))

    before, reactor_before, started = process_seconds(), time.thread_time(), time.perf_counter()
    loop = task.LoopingCall(submit)
    loop.clock = reactor
    loop.start(0.001)
    await task.deferLater(reactor, seconds)
    loop.stop()
    await task.deferLater(reactor, 0.2)
    shares = len(latencies)
    reactor_cpu = time.thread_time() - reactor_before
    others = process_seconds() - before - reactor_cpu
    latencies.sort()
    return {
        "shares": shares,
        "wall": time.perf_counter() - started,
        "reactor_us": reactor_cpu / shares * 1e6,
        "hashing_us": others / shares * 1e6,
        "batches_per_share": (service.batches - batches_before) / shares,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="600,3000")
    parser.add_argument("--bursts", default="1,3")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--algorithms", default="sha256d,scrypt")
    options = parser.parse_args()
    service = HashPoolService(reactor, threads=options.threads)
    service.startService()

    async def run() -> None:
        floor = await ticking(options.seconds)
        print(
            f"the 1 ms tick alone costs the reactor {floor * 1e3:.1f} ms of CPU a second (subtracted below)"
        )
        for algorithm in options.algorithms.split(","):
            for rate in (float(r) for r in options.rates.split(",")):
                for burst in (int(b) for b in options.bursts.split(",")):
                    r = await case(service, algorithm, rate, burst, options.seconds)
                    r["reactor_us"] -= floor * options.seconds / r["shares"] * 1e6
                    print(
                        f"{algorithm:8} {rate:5g}/s in bursts of {burst:2}: CPU per share: "
                        f"reactor {r['reactor_us']:5.1f} us, hashing threads {r['hashing_us']:5.1f} us; "
                        f"{r['batches_per_share']:.2f} batches a share; "
                        f"latency p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms",
                        flush=True,
                    )
        service.stopService()

    def go(_: Any) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(run())

    task.react(go)


if __name__ == "__main__":
    main()
