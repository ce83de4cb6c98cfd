"""A payment run killed (SIGKILL) at each step of a payout, then run again:
every miner is paid exactly once and the audit is clean. Redis is
restarted while a sent batch is still unrecorded. Real litecoind, real
redis-server, and ``nomp-payments`` run as its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nomp.chain.address import decode_address
from nomp.config import load_config
from nomp.miner import Miner, connect
from nomp.payments.processor import FAILPOINTS
from test.chainhelpers import coinbase_outputs
from test.poolconf import write_conf
from test.rediscli import redis, redis_hash
from test.servers import RPC_PASSWORD, RPC_USER, RedisServer
from test.test_config_paths import REPOSITORY
from test.test_payments_regtest import (
    MATURITY,
    MINERS_WALLET,
    SCRYPT,
    expected_split,
    payments_pair,
    received,
    recorders_idle,
)
from test.test_stratum_e2e import pool_ready, start_pool
from test.waiting import until

COIN = "litecoin-regtest"
LOCK_TIMEOUT = 1.0


def nomp_payments(conf: Path, command: str, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    """``nomp-payments -c conf command`` in a process of its own; with ``failpoint``,
    through test/failpoints.py, which kills it at that step of the run."""
    entry = ["nomp.payments.cli"] if failpoint is None else ["test.failpoints", failpoint]
    return subprocess.run(
        [sys.executable, "-m", *entry, "-c", str(conf), command],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])),
        },
    )


class KilledPaymentRunTests(TestCase):
    timeout = 900

    async def test_killed_at_every_step(self) -> None:
        """Killed after crediting, after the journal, after sendmany (then Redis
        restarts) and after recording: paid once each time, audit clean."""
        pair = payments_pair()
        redis_server = RedisServer(persistent=True).start()
        self.addCleanup(redis_server.stop)
        port = redis_server.port
        pool_address = pair.new_address()
        miners = [str(pair.miner.rpc("getnewaddress", "", "bech32", wallet=MINERS_WALLET)) for _ in range(2)]
        wallet = {"url": f"{pair.miner.url}/wallet/{pair.wallet}", "user": RPC_USER, "password": RPC_PASSWORD}
        settings = {
            "enabled": True,
            "interval": 3600,
            "scheme": "pplns",
            "pplns_window": 0.25,
            "fee_percent": "1.5",
            "minimum_payment": "0.001",
            "lock_timeout": LOCK_TIMEOUT,
            "unknown_send_grace": 1,
            "daemon": wallet,
        }
        conf, stratum_port = write_conf(
            Path(self.mktemp()), pair.miner.url, RPC_USER, RPC_PASSWORD, pool_address, port, payments=settings
        )
        root = start_pool(self, conf)
        await until(lambda: pool_ready(root))
        pool_script = decode_address(pool_address, load_config(conf).pools[0].coin.network).script.hex()

        for failpoint in FAILPOINTS:
            for address in miners:
                start = pair.height()
                miner = Miner(reactor, SCRYPT, f"{address}.rig", threads=1)
                await connect(miner, "127.0.0.1", stratum_port)
                miner.start()
                await until(lambda: pair.height() >= start + 2, timeout=120)  # noqa: B023
                await miner.stop()
            await until(lambda: recorders_idle(root))
            pair.generate(MATURITY)

            killed = nomp_payments(conf, "run", failpoint)
            self.assertEqual(killed.returncode, -9, f"{failpoint}: {killed.stdout}{killed.stderr}")
            if failpoint == "after_sendmany":
                self.assertTrue(redis(port, 0, "GET", f"{COIN}:pay:journal"))
                redis_server.restart()
            time.sleep(LOCK_TIMEOUT + 0.2)  # the dead run's lock expires
            again = nomp_payments(conf, "run")
            self.assertEqual(again.returncode, 0, f"{failpoint}: {again.stdout}{again.stderr}")

            expected = {a: 0 for a in miners}
            for member in redis(port, 0, "SMEMBERS", f"{COIN}:blocksConfirmed"):
                block_hash = member.split(":")[0]
                reward = sum(v for script, v in coinbase_outputs(pair, block_hash) if script == pool_script)
                shares = redis_hash(port, 0, redis_hash(port, 0, f"{COIN}:block:{block_hash}")["round"])
                for address, amount in expected_split(reward, shares).items():
                    expected[address] += amount
            self.assertEqual({a: received(pair, a) for a in miners}, expected, failpoint)
            self.assertEqual(redis_hash(port, 0, f"{COIN}:pay:balance"), {}, failpoint)
            self.assertEqual(redis(port, 0, "GET", f"{COIN}:pay:journal"), [], failpoint)
            audit = nomp_payments(conf, "audit")
            self.assertEqual(audit.returncode, 0, audit.stdout + audit.stderr)
            self.assertIn("clean", audit.stdout)

        payments = redis(port, 0, "ZCARD", f"{COIN}:payments")
        self.assertEqual(payments, [str(len(FAILPOINTS))])
