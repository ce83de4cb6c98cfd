"""bench/payments.py still runs: both families with a few miners, end to end, as a smoke test.

Only what it reports is checked (every miner paid, each figure line
printed, the Redis round trips a run takes), never a time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
MINERS = 7
FIGURES = (
    r"wall +[\d.]+ ms  cpu +[\d.]+ ms  node +[\d.]+ ms \((\d+) calls\)"
    r"  Redis (\d+) round trips, cpu +[\d.]+ ms$"
)
IMMATURE = re.compile(r"^  unlocker, block immature +" + FIGURES)
MATURED = re.compile(r"^  unlocker, block matured +" + FIGURES)
PAYER = re.compile(r"^  payer, (\d+) payouts +" + FIGURES)
SIGNING = re.compile(
    r"^  signing: (\d+) calls of sign_transfer, cpu +[\d.]+ ms, \d+% of the payer's cpu here"
)
FLOOR = re.compile(
    r"^  floor: eth-account sign_transaction \d+ us cpu per call, recover_transaction \d+ us \(3 "
)
TARGET = re.compile(
    r"^  target: 10000 miners, the pool's own work under 2 s: [\d.]+ s wall, [\d.]+ s cpu at 10000 "
    r"\((met|missed), scaled from 7\); the signing floor alone is [\d.]+x the target$"
)


def bench(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "payments.py"), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"bench/payments.py {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        )
    return result.stdout.splitlines()


def matching(pattern: re.Pattern[str], lines: list[str]) -> re.Match[str]:
    found = [m for m in map(pattern.match, lines) if m]
    if len(found) != 1:
        raise AssertionError(f"{pattern.pattern!r}: {len(found)} lines of\n" + "\n".join(lines))
    return found[0]


class PaymentsBenchTests(SynchronousTestCase):
    def test_bitcoin(self) -> None:
        """The default family: one payout run, its figures printed."""
        lines = bench("--miners", str(MINERS))
        self.assertEqual(
            lines[0], f"payout run for {MINERS} miners (credit one block, pay every balance in one sendmany):"
        )
        self.assertTrue(any(line.startswith("  pool's own work") for line in lines), lines)

    def test_ethereum(self) -> None:
        """--family eth: the unlocker credits the block in two runs, the payer pays every
        miner once, signing each payout; each figure line is printed."""
        lines = bench("--family", "eth", "--miners", str(MINERS), "--floor-samples", "3")
        self.assertIn("CPUs, Python", lines[0])
        immature, matured = matching(IMMATURE, lines), matching(MATURED, lines)
        # The tip and the candidate's block; the round is one HGETALL and the credit one script.
        self.assertEqual(int(immature[1]), 2)
        self.assertEqual(int(matured[1]), 2)
        payer = matching(PAYER, lines)
        self.assertEqual(int(payer[1]), MINERS)
        # The payouts go in batches (of 1, 2 and 4 here), each its reserve, its signed
        # entries and its record: fewer round trips than the four a payout took alone.
        self.assertLess(int(payer[3]), 4 * MINERS)
        self.assertEqual(int(matching(SIGNING, lines)[1]), MINERS)
        matching(FLOOR, lines)
        matching(TARGET, lines)
