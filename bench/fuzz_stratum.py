"""Fuzz the Stratum server with seeded random streams, without hypothesis.

Run: python bench/fuzz_stratum.py [--inputs 1000000] [--seed N] [--lines 410]
     python bench/fuzz_stratum.py --replay STREAM_SEED

The generators, the mutators, the harness and the properties are those of
test/test_stratum_fuzz.py: each stream is a fresh pool (a StratumServer on
StringTransports, with the real share check) with well-behaved miners, and
an attacker connection fed ``--lines`` lines of mutated requests, garbage,
other encodings and deep nesting, cut at random into dataReceived calls.
Every stream has its own seed, drawn from ``--seed``; a failing one is
printed with its seed, and ``--replay`` runs that stream alone.

Prints the inputs (lines) fed, lines/s, the replies, the error replies,
the connections the server closed, the crashes (an exception out of
dataReceived, a failure or error logged, an "internal error" reply) and
the other property violations. Exits 1 on any crash or violation.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.logger import ILogObserver, LogEvent, globalLogBeginner  # noqa: E402
from zope.interface import provider  # noqa: E402

from test.test_stratum_fuzz import STREAM_LINES, FuzzFailure, Stream, Tally, iter_seeds  # noqa: E402

SHOWN_FAILURES = 5
SHOWN_CHARACTERS = 6000


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inputs", type=int, default=1_000_000, help="lines to feed in all")
    parser.add_argument("--seed", type=int, help="the run's seed (default: a random one, printed)")
    parser.add_argument("--lines", type=int, default=STREAM_LINES, help="lines per stream")
    parser.add_argument("--replay", type=int, metavar="STREAM_SEED", help="run one stream and show it")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
