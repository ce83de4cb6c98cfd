"""bench/eth_load.py still runs: its quick mode, end to end, as a smoke test.

Only what it reports is checked (every share accepted and answered, every
miner reached by new work, each figure line printed), never a time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
SHARES = re.compile(r"^(eth-proxy|nicehash) +accepted (\d+)/(\d+) \((\d+) rejected, (\d+) unanswered")
FANOUT = re.compile(
    r"^fan-out +(eth-proxy|nicehash) to (\d+) miners: last read .* (\d+)/(\d+) miners got it$"
)
IDLE = re.compile(r"^idle +(eth-proxy|nicehash): (\d+) miners, pool RSS .* KiB per miner$")


class EthLoadBenchTests(SynchronousTestCase):
    def test_quick(self) -> None:
        """--quick exits 0 with a share line per dialect, a fan-out line per
        dialect and size, and an idle-memory line per dialect."""
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "eth_load.py"), "--quick"],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        lines = result.stdout.splitlines()
        self.assertIn("CPUs, Python", lines[0])

        shares = [m for m in map(SHARES.match, lines) if m]
        self.assertEqual([m[1] for m in shares], ["eth-proxy", "nicehash"], result.stdout)
        for m in shares:
            accepted, sent, rejected, unanswered = (int(m[i]) for i in range(2, 6))
            self.assertGreater(sent, 0, m[0])
            self.assertEqual((accepted, rejected, unanswered), (sent, 0, 0), m[0])

        fanouts = [m for m in map(FANOUT.match, lines) if m]
        self.assertEqual(
            [(m[1], int(m[2])) for m in fanouts],
            [("eth-proxy", 50), ("eth-proxy", 200), ("nicehash", 50), ("nicehash", 200)],
            result.stdout,
        )
        for m in fanouts:
            self.assertEqual(int(m[3]), int(m[4]), m[0])

        idle = [m for m in map(IDLE.match, lines) if m]
        self.assertEqual([(m[1], int(m[2])) for m in idle], [("eth-proxy", 200), ("nicehash", 200)])
