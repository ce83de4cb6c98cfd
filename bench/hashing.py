"""Per-share cost of the share check, next to hashlib.

Run: python bench/hashing.py  (pinned to one CPU core)

A share check is the whole path from a miner's extranonce2/ntime/nonce to
the PoW hash: coinbase hash, merkle root through the branch, 80-byte
header, proof of work. Figures are the best of several rounds.
"""

from __future__ import annotations

import hashlib
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from functools import partial

from twisted.internet import defer, reactor, task

from nomp.hashing import ALGORITHMS, JobHasher, ShareWork, implementation
from nomp.hashing._native import lib
from nomp.hashing.pool import HashPoolService

ROUNDS = 7
rng = random.Random(7)


def best_per_item(function: Callable[[], object], items_per_call: int, seconds: float = 0.3) -> float:
    """Best time per item in microseconds over ROUNDS rounds of about ``seconds`` each."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            function()
        if time.perf_counter() - start > seconds / 10:
            break
        calls *= 2
    per_round = max(1, int(calls * seconds / (time.perf_counter() - start) / 10))
    results = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(per_round):
            function()
        results.append((time.perf_counter() - start) / per_round / items_per_call)
    return min(results) * 1e6


def make_job(algorithm: str, branch_length: int) -> JobHasher:
    # A mainnet-like coinbase: ~100 bytes before the extranonce, ~150 after.
    return JobHasher(
        ALGORITHMS[algorithm],
        rng.randbytes(100),
        rng.randbytes(150),
        [rng.randbytes(32) for _ in range(branch_length)],
        rng.randbytes(32),
        0x1A0FFFFF,
    )


def works(count: int) -> list[ShareWork]:
    return [ShareWork(rng.randbytes(8), 0x20000000, 1700000000, rng.getrandbits(32)) for _ in range(count)]


def python_sha256d_share(
    coinb1: bytes, extranonce: bytes, coinb2: bytes, branch: list[bytes], head: bytes, tail: bytes
) -> bytes:
    """The same share check written with hashlib, for comparison."""
    d = hashlib.sha256
    node = d(d(coinb1 + extranonce + coinb2).digest()).digest()
    for step in branch:
        node = d(d(node + step).digest()).digest()
    return d(d(head + node + tail).digest()).digest()


def sha256d_row(branch_length: int) -> str:
    job = make_job("sha256d", branch_length)
    one = works(1)
    record = one[0].pack()
    packed = b"".join(w.pack() for w in works(32))
    single = best_per_item(lambda: job.check(one), 1)
    raw = best_per_item(lambda: job.check_packed(record, 1), 1)
    batched = best_per_item(lambda: job.check_packed(packed, 32), 32)
    coinb1, coinb2 = rng.randbytes(100), rng.randbytes(150)
    branch = [rng.randbytes(32) for _ in range(branch_length)]
    head, tail = rng.randbytes(36), rng.randbytes(12)
    reference = best_per_item(
        lambda: python_sha256d_share(coinb1, b"12345678", coinb2, branch, head, tail), 1
    )
    columns = f"{single:>6.2f} ({raw:.2f} raw)  {batched:>14.2f}  {reference:>16.2f}"
    return f"  {branch_length:>6}  {columns}"


def bench_sha256d() -> None:
    print("sha256d share check (us per share)")
    print(f"  {'branch':>6}  {'1 share/call':>16}  {'32 shares/call':>14}  {'hashlib (Python)':>16}")
    for branch_length in (0, 6, 12):
        print(sha256d_row(branch_length))


def bench_scrypt() -> None:
    print("scrypt share check (us per share)")
    job = make_job("scrypt", 12)
    header = rng.randbytes(80)
    reference = best_per_item(lambda: hashlib.scrypt(header, salt=header, n=1024, r=1, p=1, dklen=32), 1, 0.5)
    for size in (1, 2, 3, 8, 16, 32, 64):
        batch = works(size)
        packed = b"".join(w.pack() for w in batch)
        per_share = best_per_item(partial(job.check_packed, packed, size), size, 0.5)
        label = "1 share/call (latency)" if size == 1 else f"{size} shares/call"
        print(f"  {label:<24} {per_share:>8.1f}")
    print(f"  {'hashlib.scrypt alone':<24} {reference:>8.1f}")


def bench_pool() -> None:
    """Shares through HashPoolService on one thread: the path the pool really uses."""
    print("through HashPoolService, 1 thread, bursts of 256 shares (us per share)")
    service = HashPoolService(reactor, threads=1)
    service.startService()

    async def burst(job: JobHasher, work: list[ShareWork]) -> float:
        start = time.perf_counter()
        await defer.gatherResults([service.check(job, w) for w in work])
        return (time.perf_counter() - start) / len(work) * 1e6

    async def run() -> None:
        for algorithm in ("sha256d", "scrypt"):
            job = make_job(algorithm, 12)
            figures = [await burst(job, works(256)) for _ in range(5)]
            print(f"  {algorithm:<8} best {min(figures):8.2f}  median {statistics.median(figures):8.2f}")
        service.stopService()

    task.react(lambda _: defer.Deferred.fromCoroutine(run()))


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    print(f"CPU: {platform.processor() or platform.machine()}, one core; code paths: {implementation()}")
    sha256d_row(0)  # warm-up: caches, buffers, CPU clock
    bench_sha256d()
    print()
    bench_scrypt()
    for lanes in (8, 16):
        if lib.nomp_scrypt_set_lanes(lanes) != 0:
            print(f"  ({lanes}-lane kernel not available on this CPU)")
    lib.nomp_scrypt_set_lanes(0)
    print()
    bench_pool()


if __name__ == "__main__":
    main()
