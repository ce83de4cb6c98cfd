"""The web API: stats computed as NOMP's website did, and served over real HTTP
from a real redis-server filled by the real ShareRecorder."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.trial.unittest import TestCase

from nomp.config import RedisConfig, WebConfig
from nomp.store.keys import PoolKeys, WebKeys
from nomp.store.recorder import ShareRecorder
from nomp.store.redis import RedisService
from nomp.web.service import WebService
from nomp.web.stats import RawPoolData, hashrate_string, pool_stats
from test.fakes import pool_config
from test.servers import shared_redis
from test.waiting import until
from test.webclient import ApiClient

VARDIFF = {"min": 0.001, "max": 1000.0}
DB = 11  # of the shared redis-server
NOW = 1_700_000_000.0
SCRYPT_RATE_PER_DIFFICULTY = 2**32 / 2**16 / 300  # H/s per difficulty in a 300 s window


class HashrateStringTests(TestCase):
    def test_units(self) -> None:
        """Always at least KH, thousands until at most 1000, two decimals, as NOMP's."""
        self.assertEqual(hashrate_string(0), "0.00 KH")
        self.assertEqual(hashrate_string(1_000_000), "1000.00 KH")
        self.assertEqual(hashrate_string(1_500_000), "1.50 MH")
        self.assertEqual(hashrate_string(2.5e15), "2.50 PH")
        self.assertEqual(hashrate_string(3e18), "3000.00 PH")


class PoolStatsTests(TestCase):
    """Known shares give exact numbers."""

    def test_known_shares(self) -> None:
        """Valid difficulty within the window counts; invalid shares count workers, not hashrate."""
        raw = RawPoolData(
            hashrate=(
                ("1:Maddr.a:1:x1", NOW - 10),
                ("1:Maddr.a:2:x2", NOW - 20),
                ("2:Maddr.b:3:x3", NOW - 299),
                ("-4:Naddr:4:x4", NOW - 1),
                ("64:Maddr.a:5:x5", NOW - 301),  # outside the window
                ("garbage", NOW),
            ),
            counters={"validShares": "4", "invalidShares": "1"},
            pending=2,
            confirmed=3,
            orphaned=1,
        )
        stats = pool_stats(pool_config(), raw, NOW)
        self.assertEqual(stats.hashrate, 4 * SCRYPT_RATE_PER_DIFFICULTY)
        self.assertEqual(
            [(w.name, w.shares, w.invalid_shares) for w in stats.workers],
            [
                ("Maddr.a", 2.0, 0.0),
                ("Maddr.b", 2.0, 0.0),
                ("Naddr", 0.0, 4.0),
            ],
        )
        self.assertEqual(stats.workers[0].hashrate, 2 * SCRYPT_RATE_PER_DIFFICULTY)
        self.assertEqual(
            [(m.address, m.workers, m.shares, m.invalid_shares) for m in stats.miners],
            [
                ("Maddr", 2, 4.0, 0.0),
                ("Naddr", 1, 0.0, 4.0),
            ],
        )
        self.assertEqual((stats.blocks.pending, stats.blocks.confirmed, stats.blocks.orphaned), (2, 3, 1))

    def test_sha256d_multiplier(self) -> None:
        """sha256d's multiplier is 1: a difficulty-1 share is 2**32 hashes."""
        coin = dataclasses.replace(pool_config().coin, algorithm="sha256d")
        pool = pool_config(coin=coin, hashrate_window=100.0)
        stats = pool_stats(pool, RawPoolData((("3:w:1:x", NOW),), {}, 0, 0, 0), NOW)
        self.assertEqual(stats.hashrate, 3 * 2**32 / 100)


class ApiTests(TestCase):
    """A real web service on a loopback port over a real Redis."""

    async def asyncSetUp(self) -> None:
        server = shared_redis()
        self.redis = RedisService(RedisConfig(port=server.port, db=DB))
        self.redis.startService()
        self.addCleanup(self.redis.stopService)
        await until(lambda: self.redis.client() is not None)
        coin = dataclasses.replace(pool_config().coin, name=f"webtest{id(self)}")
        self.pool = pool_config(name="ltc", coin=coin)
        keys = PoolKeys.for_coin(coin.name)
        client = self.redis.client()
        assert client is not None
        await client.eval(
            "for _, k in ipairs(KEYS) do redis.call('DEL', k) end return 1",
            [WebKeys().stat_history, keys.hashrate, keys.stats, keys.blocks_pending],
            [],
        )
        await client.eval("return redis.call('SADD', KEYS[1], 'h:t:1:w:1')", [keys.blocks_pending], [])
        recorder = ShareRecorder(keys, self.redis.client, cast(IReactorTime, reactor), hashrate_window=300.0)
        for _ in range(3):
            recorder.valid_share("Maddr.rig1", 1.0)
        recorder.valid_share("Maddr.rig2", 2.0)
        recorder.valid_share("Qaddr", 8.0)
        recorder.invalid_share("Qaddr", 4.0)
        await recorder.flush()
        config = WebConfig(listen="tcp:0:interface=127.0.0.1", stats_interval=3600.0)
        self.web = WebService(config, [self.pool], self.redis.client, reactor)
        self.web.startService()
        self.addCleanup(self.web.stopService)
        listening = self.web.endpoint._waitingForPort
        assert listening is not None
        port = await listening
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.api = ApiClient(self, self.base)
        await until(lambda: self.web.collector.snapshot.pools[0].workers != ())

    def setUp(self) -> Any:
        from twisted.internet import defer

        return defer.ensureDeferred(self.asyncSetUp())

    async def get(self, path: str, code: int = 200, schema_path: str | None = None) -> Any:
        return await self.api.get(path, code, schema_path)

    async def test_stats(self) -> None:
        """/api/stats in NOMP's shape with the recorded shares' numbers."""
        body = await self.get("/api/stats", schema_path="/api/stats")
        pool = body["pools"][self.pool.coin.name]
        self.assertEqual(pool["hashrate"], 13 * SCRYPT_RATE_PER_DIFFICULTY)
        self.assertEqual(pool["workerCount"], 3)
        self.assertEqual(pool["hashrateString"], hashrate_string(13 * SCRYPT_RATE_PER_DIFFICULTY))
        self.assertEqual(pool["workers"]["Qaddr"]["invalidshares"], 4.0)
        self.assertEqual(pool["poolStats"]["validShares"], "5")
        self.assertEqual(pool["poolStats"]["invalidShares"], "1")
        self.assertEqual(pool["blocks"], {"pending": 1, "confirmed": 0, "orphaned": 0})
        self.assertEqual(body["algos"]["scrypt"]["workers"], 3)

    async def test_pools(self) -> None:
        """/api/pools and /api/pools/<pool> list ports, vardiff and counts."""
        (listed,) = await self.get("/api/pools", schema_path="/api/pools")
        one = await self.get("/api/pools/ltc", schema_path="/api/pools/{pool}")
        self.assertEqual(listed, one)
        self.assertEqual((one["miners"], one["workers"], one["algorithm"]), (2, 3, "scrypt"))
        self.assertEqual(
            one["ports"],
            [{"port": 3333, "difficulty": 0.0625, "vardiff": VARDIFF, "tls": False}],
        )
        error = await self.get("/api/pools/nope", 404, schema_path="/api/pools/{pool}")
        self.assertIn("nope", error["error"])

    async def test_miners(self) -> None:
        """Miners are paginated, highest hashrate first."""
        path = "/api/pools/{pool}/miners"
        body = await self.get("/api/pools/ltc/miners?page=0&per_page=1", schema_path=path)
        self.assertEqual((body["total"], body["page"], body["per_page"]), (2, 0, 1))
        self.assertEqual(
            body["items"],
            [
                {
                    "address": "Qaddr",
                    "hashrate": 8 * SCRYPT_RATE_PER_DIFFICULTY,
                    "workers": 1,
                    "shares": 8.0,
                    "invalidShares": 4.0,
                }
            ],
        )
        second = await self.get("/api/pools/ltc/miners?page=1&per_page=1", schema_path=path)
        self.assertEqual(
            [(m["address"], m["workers"], m["shares"]) for m in second["items"]], [("Maddr", 2, 5.0)]
        )
        for query in ("page=x", "per_page=0", "per_page=501", "page=-1"):
            error = await self.get(f"/api/pools/ltc/miners?{query}", 400, schema_path=path)
            self.assertIsInstance(error["error"], str)
        await self.get("/api/pools/nope/miners", 404, schema_path=path)

    async def test_history_and_unknown(self) -> None:
        """/api/pool_stats holds the collection, also in Redis; unknown API paths are JSON 404s."""
        (entry,) = await self.get("/api/pool_stats", schema_path="/api/pool_stats")
        self.assertEqual(entry["pools"][self.pool.coin.name]["workerCount"], 3)
        client = self.redis.client()
        assert client is not None
        stored = await client.eval(
            "return redis.call('ZRANGE', KEYS[1], 0, -1)", [WebKeys().stat_history], []
        )
        self.assertEqual([json.loads(m) for m in stored], [entry])
        error = await self.get("/api/nothing/here", 404)
        self.assertIn("/api/nothing/here", error["error"])
        document = await self.get("/api/openapi.json")
        self.assertEqual(document["openapi"], "3.0.3")
