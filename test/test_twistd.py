"""The real entry point: ``twistd -n nomp -c FOLDER`` against a real node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from twisted.trial.unittest import TestCase

from test.servers import RPC_PASSWORD, RPC_USER, free_port, shared_regtest
from test.test_config_paths import SHIPPED_COINS, SHIPPED_CONF

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class TwistdTests(TestCase):
    """twistd runs the pool from a conf folder and stops it cleanly."""

    timeout = 120

    def make_conf(self, address: str) -> Path:
        """The shipped conf, pointed at a test node, on free ports."""
        pair = shared_regtest("twistd")
        conf = Path(self.mktemp())
        (conf / "pools").mkdir(parents=True)
        settings = yaml.safe_load((SHIPPED_CONF / "config.yaml").read_text())
        settings["coins"] = str(SHIPPED_COINS)
        settings["control"]["listen"] = f"tcp:{free_port()}:interface=127.0.0.1"
        settings["web"] = {"listen": f"tcp:{free_port()}:interface=127.0.0.1"}
        (conf / "config.yaml").write_text(yaml.safe_dump(settings))
        pool = yaml.safe_load((SHIPPED_CONF / "pools" / "litecoin.yaml").read_text())
        pool["address"] = address
        pool["daemons"] = [{"url": pair.miner.url, "user": RPC_USER, "password": RPC_PASSWORD}]
        pool["ports"][0]["listen"] = f"tcp:{free_port()}:interface=127.0.0.1"
        (conf / "pools" / "litecoin.yaml").write_text(yaml.safe_dump(pool))
        return conf

    def run_twistd(self, conf: Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "nomp", "-c", str(conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.addCleanup(self.kill_if_running, process)
        return process

    @staticmethod
    def kill_if_running(process: subprocess.Popen[str]) -> None:
        if process.poll() is None:
            process.kill()
            process.wait()

    def read_until(self, process: subprocess.Popen[str], text: str, limit: float = 60) -> str:
        """Output lines up to and including one containing ``text``."""
        assert process.stdout is not None
        seen = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if text in line:
                return "".join(seen)
        self.fail(f"no {text!r} in output:\n{''.join(seen)}")

    def test_runs_and_stops(self) -> None:
        """The pool starts, builds its first job, and stops on SIGTERM.

        twistd ends by re-raising the signal that stopped it, so the status
        says SIGTERM (systemd counts that as a clean stop), not 1.
        """
        pair = shared_regtest("twistd")
        process = self.run_twistd(self.make_conf(pair.new_address()))
        output = self.read_until(process, "new block")
        self.assertIn(f"new block {pair.height() + 1} ", output)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(timeout=30), -signal.SIGTERM)
        assert process.stdout is not None
        self.assertIn("Server Shut Down", process.stdout.read())

    def test_unusable_address_exits_1(self) -> None:
        """A payout address the pool cannot use stops the process with status 1 and a reason."""
        pair = shared_regtest("twistd")
        process = self.run_twistd(self.make_conf(pair.new_address("mweb")))
        self.assertEqual(process.wait(timeout=60), 1)
        assert process.stdout is not None
        output = process.stdout.read()
        self.assertIn("cannot go on: pools/litecoin.yaml: address:", output)
        self.assertIn("MWEB", output)
