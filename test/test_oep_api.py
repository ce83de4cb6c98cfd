"""open-ethereum-pool's API under /oep/<pool>/api/, against a real
redis-server holding OEP's keys: the documented JSON shapes (oep.md
section 9), OEP's hashrate maths, 404s, CORS and cache headers."""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from nomp.config import RedisConfig
from nomp.store.redis import RedisService
from nomp.web.oepapi import OepApi, OepApiResource
from nomp.web.oepstats import Share, block_document, hashrates, parse_share, payment_document
from test.ethpool import LOGIN, eth_pool_config, stratum_port
from test.servers import shared_redis

DB = 14
NOW = 1_800_000_000.0
OTHER = "0x" + "ab" * 20


class PureTests(SynchronousTestCase):
    def test_hashrate_is_oeps(self) -> None:
        """Σ difficulty over min(window, max(600 s, since the first share))."""
        shares = [Share(4_000_000_000, LOGIN, "rig", NOW - 100), Share(2_000_000_000, LOGIN, "rig", NOW - 50)]
        self.assertEqual(hashrates(shares, NOW, 1800), {LOGIN: 6_000_000_000 / 600})
        old = [*shares, Share(1_000_000_000, LOGIN, "rig", NOW - 1200)]
        self.assertEqual(hashrates(old, NOW, 1800), {LOGIN: 7_000_000_000 / 1200})
        self.assertEqual(hashrates(old, NOW, 900), {LOGIN: 6_000_000_000 / 600})

    def test_members(self) -> None:
        self.assertEqual(parse_share(f"4:{LOGIN}:rig:1", NOW), Share(4, LOGIN, "rig", NOW))
        self.assertEqual(parse_share("4:rig:1", NOW, login=LOGIN), Share(4, LOGIN, "rig", NOW))
        self.assertIsNone(parse_share("x:rig:1", NOW, login=LOGIN))
        self.assertIsNone(parse_share("4:rig", NOW))
        block = block_document("3:0:0x00000000000000ff:0xbeef:1700:100:90:2500000000000000000", 5, False)
        self.assertEqual(
            block,
            {
                "height": 5,
                "timestamp": 1700,
                "difficulty": 100,
                "shares": 90,
                "uncle": True,
                "uncleHeight": 3,
                "orphan": False,
                "hash": "0xbeef",
                "reward": "2500000000000000000",
            },
        )
        self.assertIsNone(block_document("1:2:3", 5, False))
        self.assertEqual(
            payment_document(f"0xtx:{LOGIN}:1000", NOW),
            {"timestamp": int(NOW), "tx": "0xtx", "address": LOGIN, "amount": 1000},
        )


class ApiTests(TestCase):
    timeout = 30

    def setUp(self) -> defer.Deferred[None]:  # type: ignore[override]  # trial waits for it
        return defer.Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.redis = shared_redis()
        self.redis.command("FLUSHDB", db=DB)
        self.write_keys()
        service = RedisService(RedisConfig(port=self.redis.port, db=DB))
        service.startService()
        self.addCleanup(service.stopService)
        for _ in range(200):
            if service.client() is not None:
                break
            await deferLater(reactor, 0.02, lambda: None)
        config = eth_pool_config("http://127.0.0.1:1/", [stratum_port(4.0)], hashrate_window=1800.0)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.api = OepApi(config, service.client, self.clock, keep=5.0)
        root = Resource()
        root.putChild(b"oep", OepApiResource({"dev": self.api}))
        site = Site(root)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}/oep/"
        self.http = HTTPConnectionPool(reactor)
        self.addCleanup(self.http.closeCachedConnections)

    def write_keys(self) -> None:
        r = lambda *args: self.redis.command(*args, db=DB)  # noqa: E731
        r(
            "HSET",
            "ethash-dev:nodes",
            "main:name",
            "main",
            "main:height",
            "12",
            "main:difficulty",
            "64",
            "main:lastBeat",
            "1799999999",
        )
        r(
            "HSET",
            "ethash-dev:stats",
            "roundShares",
            "80",
            "lastBlockFound",
            "1799999000",
            "validShares",
            "20",
        )
        r("ZADD", "ethash-dev:hashrate", NOW - 10, f"40:{LOGIN}:rig:1", NOW - 20, f"20:{OTHER}:0:2")
        r("ZADD", f"ethash-dev:hashrate:{LOGIN}", NOW - 10, "40:rig:1")
        r(
            "HSET",
            f"ethash-dev:miners:{LOGIN}",
            "balance",
            "12",
            "immature",
            "3",
            "lastShare",
            "1799999990",
            "blocksFound",
            "1",
        )
        r("HSET", "ethash-dev:shares:roundCurrent", LOGIN, "60")
        r("ZADD", "ethash-dev:blocks:candidates", 11, "0x0000000000000001:0xaa:0xbb:1799999000:64:100")
        r(
            "ZADD",
            "ethash-dev:blocks:immature",
            9,
            "0:0:0x0000000000000002:0xcc:1799998000:64:90:5000000000000000000",
        )
        r("ZADD", "ethash-dev:blocks:matured", 3, "0:1:0x0000000000000003:0xdd:1799990000:64:70:0")
        r("ZADD", "ethash-dev:payments:all", 1799999500, f"0xt1:{LOGIN}:1000000000")
        r("ZADD", f"ethash-dev:payments:{LOGIN}", 1799999500, "0xt1:1000000000")

    async def get(self, path: str) -> tuple[int, Any, Any]:
        response = await treq.get(self.base + path, pool=self.http)
        body = await response.content()
        return response.code, json.loads(body) if body else None, response.headers

    async def test_stats(self) -> None:
        code, stats, headers = await self.get("dev/api/stats")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders("access-control-allow-origin"), ["*"])
        self.assertEqual(headers.getRawHeaders("cache-control"), ["no-cache"])
        self.assertEqual(
            stats["nodes"], [{"name": "main", "height": "12", "difficulty": "64", "lastBeat": "1799999999"}]
        )
        self.assertEqual(stats["stats"], {"roundShares": 80, "lastBlockFound": 1799999000})
        self.assertEqual((stats["minersTotal"], stats["hashrate"]), (2, 60 / 600))
        self.assertEqual((stats["candidatesTotal"], stats["immatureTotal"], stats["maturedTotal"]), (1, 1, 1))
        self.assertEqual(stats["now"], int(NOW * 1000))

    async def test_miners_blocks_payments(self) -> None:
        _, miners, _ = await self.get("dev/api/miners")
        self.assertEqual(
            miners["miners"][LOGIN], {"lastBeat": int(NOW - 10), "hr": 40 / 600, "offline": False}
        )
        _, blocks, _ = await self.get("dev/api/blocks")
        self.assertEqual([b["height"] for b in blocks["candidates"]], [11])
        self.assertEqual((blocks["candidates"][0]["hash"], blocks["candidates"][0]["reward"]), ("", ""))
        self.assertEqual(blocks["immature"][0]["reward"], "5000000000000000000")
        self.assertEqual(blocks["matured"][0]["orphan"], True)
        _, payments, _ = await self.get("dev/api/payments")
        self.assertEqual(
            payments,
            {
                "payments": [{"timestamp": 1799999500, "tx": "0xt1", "address": LOGIN, "amount": 1000000000}],
                "paymentsTotal": 1,
            },
        )

    async def test_account(self) -> None:
        code, account, _ = await self.get(f"dev/api/accounts/{LOGIN}")
        self.assertEqual(code, 200)
        self.assertEqual(account["stats"]["balance"], 12)
        self.assertEqual(account["roundShares"], 60)
        self.assertEqual(account["payments"], [{"timestamp": 1799999500, "tx": "0xt1", "amount": 1000000000}])
        self.assertEqual(sorted(account["workers"]), ["rig"])
        self.assertEqual((account["workersOnline"], account["workersOffline"]), (1, 0))

    async def test_not_found(self) -> None:
        for path in (
            f"dev/api/accounts/{OTHER}",
            "dev/api/accounts/0x12",
            "dev/api/nothing",
            "other/api/stats",
            "dev",
        ):
            code, body, _ = await self.get(path)
            self.assertEqual((code, body), (404, None), path)

    async def test_kept_for_the_interval(self) -> None:
        """OEP's snapshot: the same answer until stats_interval has passed."""
        await self.get("dev/api/stats")
        self.redis.command("HSET", "ethash-dev:stats", "roundShares", "81", db=DB)
        _, again, _ = await self.get("dev/api/stats")
        self.assertEqual(again["stats"]["roundShares"], 80)
        self.clock.advance(6)
        _, later, _ = await self.get("dev/api/stats")
        self.assertEqual(later["stats"]["roundShares"], 81)
