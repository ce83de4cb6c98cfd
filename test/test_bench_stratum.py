"""bench/stratum_load.py and bench/floor.py --fan-out still run: short runs,
end to end, as smoke tests.

Only what they report is checked (every share accepted, every miner
reached by every new block, each figure line printed), never a time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
SHARES = re.compile(r"^scrypt +(\d+)/s offered: accepted (\d+)/(\d+) \((\d+) rejected\), .* reply p50 ")
CLOSED_LOOP = re.compile(r"^scrypt +closed loop, .*: accepted (\d+)/(\d+) \((\d+) rejected\), .* reply p50 ")
NOTIFY = re.compile(r"^notify +(\d+) miners: first .* last .* over (\d+) blocks$")
SPAWNED = re.compile(r"^spawned +(\d+) miners: first .* last .* over (\d+) blocks$")
BLOCK = re.compile(r"^ +first [\d.]+, last [\d.]+ ms(.*); pool: template fetched .* sent to (\d+) miners in ")
FLOOR = re.compile(r"^(write|send|send_each|halves|broadcast) +(\d+) miners: first .* over (\d+) blocks$")


def run(test: SynchronousTestCase, script: str, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    test.assertEqual(result.returncode, 0, result.stdout + result.stderr)
    return result.stdout.splitlines()


class StratumLoadBenchTests(SynchronousTestCase):
    def test_short_run(self) -> None:
        """Two rates, the closed loop and two fan-out sizes on the realistic
        template: a share line per rate and one for the closed loop, every
        share accepted; a notify line per size and a line per block, each
        miner reached and the pool's account read; a line per size for the
        blocks announced by a spawned nomp-notify."""
        lines = run(
            self, "stratum_load.py", "--rates", "100,200", "--seconds", "1", "--connections", "5",
            "--miners", "20,40", "--blocks", "2",
        )  # fmt: skip
        self.assertIn("realistic template", lines[0])
        shares = [m for m in map(SHARES.match, lines) if m]
        self.assertEqual([int(m[1]) for m in shares], [100, 200], lines)
        for m in shares:
            accepted, sent, rejected = int(m[2]), int(m[3]), int(m[4])
            self.assertGreater(sent, 0, m[0])
            self.assertEqual((accepted, rejected), (sent, 0), m[0])
        (closed,) = [m for m in map(CLOSED_LOOP.match, lines) if m]
        self.assertGreater(int(closed[2]), 0, closed[0])
        self.assertEqual((int(closed[1]), int(closed[3])), (int(closed[2]), 0), closed[0])
        spawned = [m for m in map(SPAWNED.match, lines) if m]
        self.assertEqual([(int(m[1]), int(m[2])) for m in spawned], [(20, 2), (40, 2)], lines)
        notify = [m for m in map(NOTIFY.match, lines) if m]
        self.assertEqual([(int(m[1]), int(m[2])) for m in notify], [(20, 2), (40, 2)], lines)
        blocks = [m for m in map(BLOCK.match, lines) if m]
        self.assertEqual([int(m[2]) for m in blocks], [20, 20, 40, 40], lines)
        self.assertEqual([m[1] for m in blocks], [""] * 4, "a miner never got a new block")

    def test_fan_out_floor(self) -> None:
        """The floor's five ways of sending each reach a small swarm."""
        lines = run(self, "floor.py", "--fan-out", "--miners", "20", "--blocks", "2")
        floors = [m for m in map(FLOOR.match, lines) if m]
        self.assertEqual(
            [(m[1], int(m[2]), int(m[3])) for m in floors],
            [
                ("write", 20, 2),
                ("send", 20, 2),
                ("send_each", 20, 2),
                ("halves", 20, 2),
                ("broadcast", 20, 2),
            ],
            lines,
        )
