"""A property-based run over the OpenAPI document: schemathesis generates
requests for every operation (valid and invalid parameters) against a real
web service over real HTTP, and every answer must be no server error, a
status the document lists, and a body matching its schema. A Bitcoin-family
pool and an Ethereum-family one are served (test/ethweb.py writes the
latter's keys: blocks, an uncle, an orphan, a payout)."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import cast

from twisted.internet import reactor, utils
from twisted.internet.interfaces import IReactorTime
from twisted.trial.unittest import TestCase

from nomp.config import RedisConfig, WebConfig
from nomp.payments.rounds import PROP
from nomp.store.recorder import ShareRecorder
from nomp.store.redis import RedisService
from nomp.store.schema import PoolKeys
from nomp.web.service import WebService
from test.candidates import candidate
from test.ethpool import LOGIN
from test.ethweb import eth_web_pool, write_eth_pool
from test.fakes import pool_config
from test.servers import shared_redis
from test.waiting import until
from test.webclient import serve

DB = 10  # of the shared redis-server
REPORTS = Path(__file__).resolve().parent.parent / "artifacts" / "schemathesis"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)


class PropertyRunTests(TestCase):
    timeout = 600

    async def test_no_server_error_anywhere(self) -> None:
        server = shared_redis()
        server.command("FLUSHDB", db=DB)
        redis = RedisService(RedisConfig(port=server.port, db=DB))
        redis.startService()
        self.addCleanup(redis.stopService)
        await until(lambda: redis.client() is not None)
        coin = dataclasses.replace(pool_config().coin, name="propcoin")
        pool = pool_config(name="ltc", coin=coin)
        keys = PoolKeys.for_coin(coin.name)
        recorder = ShareRecorder(
            keys, redis.client, cast(IReactorTime, reactor), hashrate_window=300.0, round_policy=PROP
        )
        recorder.valid_share("Maddr.rig1", 1.0)
        recorder.invalid_share("Qaddr", 2.0)
        recorder.block_found(
            candidate(
                "aa" * 32, 7, "Maddr.rig1", time.time(), txid="bb" * 32, reward=5000, network_difficulty=3.0
            )
        )
        recorder.block_settled("aa" * 32, True)
        await recorder.flush()
        ethereum = eth_web_pool("dev")
        await write_eth_pool(ethereum, redis.client, cast(IReactorTime, reactor), time.time())
        web = WebService(
            WebConfig(listen="tcp:0:interface=127.0.0.1"), lambda: [pool, ethereum], redis.client, reactor
        )
        base = await serve(self, web)
        await until(lambda: all(p.workers != () for p in web.collector.snapshot.pools))

        # With any pool name (mostly unknown pools), then with each real pool and a miner of
        # it, so the generated queries reach the code behind the 404s.
        for run, config in (
            ("any-pool", ""),
            ("real-pool", '[parameters]\n"path.pool" = "ltc"\n"path.address" = "Maddr"\n'),
            ("ethereum-pool", f'[parameters]\n"path.pool" = "dev"\n"path.address" = "{LOGIN}"\n'),
        ):
            await self.run_schemathesis(base, run, config)

    async def run_schemathesis(self, base: str, run: str, config: str) -> None:
        workdir = Path(self.workdir())
        (workdir / "schemathesis.toml").write_text(config)
        output, errors, status = await utils.getProcessOutputAndValue(
            str(SCHEMATHESIS),
            [
                "--config-file",
                str(workdir / "schemathesis.toml"),
                "run",
                f"{base}/api/openapi.json",
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                "40",
                "--seed",
                "20261121",
                "--exclude-path",
                "/api/live_stats",  # an endless stream: tested in test_web
                "--workers",
                "1",
            ],
            env={**os.environ, "NO_COLOR": "1"},
            path=str(workdir),  # its report files stay out of the checkout
        )
        report = (output + errors).decode(errors="replace")
        self.assertEqual(status, 0, report)
        self.assertNotIn("500", report.split("SUMMARY")[-1] if "SUMMARY" in report else "")
        self.record(run, report)

    def workdir(self) -> str:
        folder = Path(self.mktemp())
        folder.mkdir(parents=True)
        return str(folder.resolve())

    def record(self, run: str, report: str) -> None:
        # Kept as a file, not printed: its pytest-style summary lines would read, in the
        # test log, as the summary of a test run of their own.
        REPORTS.mkdir(parents=True, exist_ok=True)
        (REPORTS / f"{run}.txt").write_text(report)
