"""Per-share cost of the share check, next to hashlib (and for ethash, next
to PyPI ``ethash``, chfast's C library).

Run: python bench/hashing.py [--ethash-epoch N] [--skip-full-dataset]
(pinned to one CPU core; the full ethash dataset is generated on every core)

A share check is the whole path from a miner's extranonce2/ntime/nonce to
the PoW hash: coinbase hash, merkle root through the branch, 80-byte
header, proof of work. Figures are the best of several rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import platform
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import ethash as reference_ethash
from twisted.internet import defer, reactor, task

from nomp.hashing import ALGORITHMS, JobHasher, ShareWork, ethash, implementation
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


def ethash_work(count: int) -> list[tuple[bytes, int]]:
    return [(rng.randbytes(32), rng.getrandbits(64)) for _ in range(count)]


def batches(
    hash_many: Callable[[list[tuple[bytes, int]]], object], pairs: Iterator[tuple[bytes, int]], size: int
) -> Callable[[], object]:
    """One call of ``hash_many`` on the next ``size`` pairs."""
    return lambda: hash_many([next(pairs) for _ in range(size)])


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_ethash_light(epoch: int) -> ethash.EthashCache:
    """Cache build and light verification, ours and PyPI ethash's, in this process."""
    print(f"ethash light, epoch {epoch} (kernels: {ethash.implementation()})")
    header, nonce = ethash_work(1)[0]
    builds = [timed(lambda: ethash.EthashCache.build(epoch, epoch)) for _ in range(2)]
    cache = ethash.EthashCache.build(epoch, epoch)
    # PyPI ethash builds its (one, global) epoch context on first use: the
    # first hash minus a second one is its build time.
    first = timed(lambda: reference_ethash.hash(epoch, header, nonce))
    reference_build = first - timed(lambda: reference_ethash.hash(epoch, header, nonce ^ 1))
    mib = cache.cache_size / 2**20
    print(f"  cache build ({mib:.1f} MiB)  nomp {min(builds):5.2f} s  PyPI ethash {reference_build:5.2f} s")
    assert cache.hash(header, nonce) == reference_ethash.hash(epoch, header, nonce)[::-1]

    # Fresh inputs every call: the same header again would find its cache
    # lines already in the CPU's caches.
    pairs = itertools.cycle(ethash_work(4096))
    # Valid shares (the right mix digest, final hash at the target) cost a
    # whole hash to verify; junk (a made-up digest whose final hash misses the
    # target) is refused by both libraries from the final hash alone.
    work = ethash_work(512)
    valid = itertools.cycle(
        [(h, n, r.mix_digest, r.value) for (h, n), r in zip(work, cache.hash_many(work), strict=True)]
    )
    junk = itertools.cycle([(h, n, bytes(32), ethash.boundary(2**32)) for h, n in ethash_work(512)])

    def verify(shares: Iterator[tuple[bytes, int, bytes, int]]) -> Callable[[], object]:
        def check() -> None:
            header, nonce, digest, target = next(shares)
            assert cache.verify(header, nonce, digest, target) == (shares is valid)

        return check

    def reference_verify(shares: Iterator[tuple[bytes, int, bytes, int]]) -> Callable[[], object]:
        def check() -> None:
            header, nonce, digest, target = next(shares)
            boundary = target.to_bytes(32, "big")
            assert reference_ethash.verify(epoch, header, digest, nonce, boundary) == (shares is valid)

        return check

    figures = {
        "nomp, 1 share/call": best_per_item(lambda: cache.hash(*next(pairs)), 1, 0.5),
        **{
            f"nomp, {size} shares/call": best_per_item(batches(cache.hash_many, pairs, size), size, 0.5)
            for size in (2, 4, 8, 32)
        },
        "nomp verify(), valid share": best_per_item(verify(valid), 1, 0.5),
        "nomp verify(), junk share": best_per_item(verify(junk), 1, 0.5),
        "PyPI ethash.hash": best_per_item(lambda: reference_ethash.hash(epoch, *next(pairs)), 1, 0.5),
        "PyPI ethash.verify, valid": best_per_item(reference_verify(valid), 1, 0.5),
        "PyPI ethash.verify, junk": best_per_item(reference_verify(junk), 1, 0.5),
    }
    for label, micros in figures.items():
        print(f"  {label:<28} {micros:>9.1f} us/share  {1e6 / micros:>8.0f} shares/s")
    return cache


def huge_pages() -> str:
    """How much of this process's memory the kernel backs with huge pages (Linux)."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return f"{int(line.split()[1]) / 2**20:.2f} GiB in huge pages"
    except OSError:
        pass
    return "huge pages unknown"


def generate_dataset(cache: ethash.EthashCache, cores: set[int]) -> tuple[ethash.EthashDataset, float]:
    """The whole dataset, in chunks handed to one thread per core (the way
    the pool's hashing threads would build it), each thread unpinned."""
    dataset = ethash.EthashDataset(cache)
    chunks = dataset.chunks(1 << 16)
    lock = threading.Lock()

    def work() -> None:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)
        while True:
            with lock:
                if not chunks:
                    return
                begin, end = chunks.pop()
            dataset.generate(begin, end)

    workers = [threading.Thread(target=work) for _ in cores]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return dataset, time.perf_counter() - start


def bench_ethash_full(cache: ethash.EthashCache, cores: set[int]) -> None:
    print(f"ethash full dataset, epoch {cache.size_epoch} ({cache.dataset_size / 2**30:.2f} GiB)")
    dataset, seconds = generate_dataset(cache, cores)
    items = dataset.items
    print(
        f"  generated on {len(cores)} threads in {seconds:.1f} s: {items / seconds / 1e6:.2f} M items/s"
        f" ({seconds / items * 1e6 * len(cores):.2f} us per item per thread); {huge_pages()}"
    )
    pairs = itertools.cycle(ethash_work(4096))
    check = next(pairs)
    assert dataset.hash(*check) == cache.hash(*check)
    # Right after generation single hashes run slower for a while (the
    # kernel is still settling the fresh memory), so the figures start after
    # a warm-up, whose own figure is shown too.
    start = time.perf_counter()
    warm_up = 0
    while time.perf_counter() - start < 3:
        dataset.hash(*next(pairs))
        warm_up += 1
    print(f"  1 share/call, first 3 s after generation: {3e6 / warm_up:.2f} us/share")
    figures = {"1 share/call": best_per_item(lambda: dataset.hash(*next(pairs)), 1)}
    for size in (2, 4, 8, 32):
        figures[f"{size} shares/call"] = best_per_item(batches(dataset.hash_many, pairs, size), size)
    for label, micros in figures.items():
        print(f"  {label:<28} {micros:>9.2f} us/share")
    dataset.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ethash-epoch", type=int, default=300, help="ethash epoch measured (default 300)")
    parser.add_argument(
        "--skip-full-dataset", action="store_true", help="no full ethash dataset (minutes to generate)"
    )
    options = parser.parse_args()
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else {0}
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
    cache = bench_ethash_light(options.ethash_epoch)
    if not options.skip_full_dataset:
        print()
        bench_ethash_full(cache, cores)
    del cache
    print()
    bench_pool()  # last: it runs the reactor, which exits the process when it stops


if __name__ == "__main__":
    main()
