"""What one scrypt call costs by how many headers it hashes, per lane kernel.

Run: python bench/scrypt_lanes.py [--counts 1,2,3,4,8,9,16] [--rounds 7] [--isa sse2]

For each count of headers, the CPU time of one ``nomp_scrypt`` call (the
best of --rounds rounds, in this thread) with the kernel chosen by batch
size, and with each kernel this CPU has pinned (--isa builds them from no more
than that instruction set, as ``nomp_scrypt_use_kernels`` does). A small
batch is what a pool at a low share rate hashes: the question is what a
batch of one, two or three costs next to a full one, and whether a few
one-lane calls in a row (the one-lane column runs up to three) beat one
call of a wider kernel. The process pins itself to one CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nomp.hashing._native import ffi, lib


def call_cost(headers: bytes, count: int, rounds: int) -> float:
    """Best microseconds of CPU for one call hashing ``count`` headers."""
    out = ffi.new("unsigned char[]", 32 * count)
    calls = max(1, int(0.05 / (200e-6 * max(1, count / 4))))
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(calls):
            lib.nomp_scrypt(headers, count, out)
        best = min(best, (time.thread_time() - started) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", default="1,2,3,4,5,8,9,12,16")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--isa", help="portable, sse2, avx2, avx512f or avx512vl (default: the CPU's best)")
    options = parser.parse_args()
    if options.isa and lib.nomp_scrypt_use_kernels(options.isa.encode()) != 0:
        parser.error(f"this CPU has no {options.isa} scrypt kernels")
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = random.Random(7)
    counts = [int(c) for c in options.counts.split(",")]
    kernels = ffi.string(lib.nomp_scrypt_kernels()).decode()
    pinned = [int(part.split(":")[0]) for part in kernels.split() if not part.endswith(":none")]
    print(f"kernels {kernels}; microseconds of CPU per call (per header)")
    header = "count  by size        " + "".join(f"{lanes:>2} lanes pinned   " for lanes in pinned)
    print(header)
    for count in counts:
        headers = rng.randbytes(80 * count)
        cells = []
        for lanes in (0, *pinned):
            if lanes and count > max(3, lanes * 2):
                cells.append(" " * 17)
                continue
            lib.nomp_scrypt_set_lanes(lanes)
            cost = call_cost(headers, count, options.rounds)
            cells.append(f"{cost:7.0f} ({cost / count:5.0f})  ")
        lib.nomp_scrypt_set_lanes(0)
        print(f"{count:5}  " + "".join(cells))


if __name__ == "__main__":
    main()
