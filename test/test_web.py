"""The web API: stats computed as NOMP's website did, and served over real HTTP
from a real redis-server filled by the real ShareRecorder."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, cast

import treq
from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import TestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyRequest

from nomp.config import PoolConfig, PortConfig, RedisConfig, WebConfig
from nomp.daemon import DaemonGroup
from nomp.daemon.errors import DaemonError
from nomp.hashing import ALGORITHMS
from nomp.payments.rounds import PROP
from nomp.store.recorder import ShareRecorder
from nomp.store.redis import RedisService
from nomp.store.schema import PoolKeys, WebKeys
from nomp.web.collector import STARTUP_RETRY, Snapshot, StatsCollector, build_snapshot, empty_stats
from nomp.web.live import LiveStream
from nomp.web.openapi import DOCUMENT
from nomp.web.service import WebService
from nomp.web.stats import AnyPoolConfig, RawPoolData, hashrate_string, pool_stats, sum_shares
from test.fakes import pool_config
from test.servers import shared_redis
from test.waiting import until
from test.webclient import ApiClient, serve

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
            shares=sum_shares(
                [
                    ("1:Maddr.a:1:x1", NOW - 10),
                    ("1:Maddr.a:2:x2", NOW - 20),
                    ("2:Maddr.b:3:x3", NOW - 299),
                    ("-4:Naddr:4:x4", NOW - 1),
                    ("64:Maddr.a:5:x5", NOW - 301),  # outside the window
                    ("garbage", NOW),
                ],
                NOW - 300,
                NOW,
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
        coin = dataclasses.replace(pool_config().coin, algorithm=ALGORITHMS["sha256d"])
        pool = pool_config(coin=coin, hashrate_window=100.0)
        stats = pool_stats(
            pool, RawPoolData(sum_shares([("3:w:1:x", NOW)], NOW - 100, NOW), {}, 0, 0, 0), NOW
        )
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
        recorder = ShareRecorder(
            keys, self.redis.client, cast(IReactorTime, reactor), hashrate_window=300.0, round_policy=PROP
        )
        for _ in range(3):
            recorder.valid_share("Maddr.rig1", 1.0)
        recorder.valid_share("Maddr.rig2", 2.0)
        recorder.valid_share("Qaddr", 8.0)
        recorder.invalid_share("Qaddr", 4.0)
        await recorder.flush()
        config = WebConfig(listen="tcp:0:interface=127.0.0.1", stats_interval=3600.0)
        self.web = WebService(config, lambda: [self.pool], self.redis.client, reactor)
        self.base = await serve(self, self.web)
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
            [{"port": 3333, "difficulty": 0.0625, "vardiff": VARDIFF, "tls": False, "protocol": "stratum"}],
        )
        self.assertEqual((one["family"], one["unit"], one["decimals"]), ("bitcoin", "satoshi", 8))
        error = await self.get("/api/pools/nope", 404, schema_path="/api/pools/{pool}")
        self.assertIn("nope", error["error"])

    async def test_port_numbers(self) -> None:
        """A port's number is the one its listen names; null for a port on a socket
        systemd passes (its number is in the socket unit) and for a unix socket's,
        as the API's description says."""
        ports = (
            PortConfig(listen="systemd:domain=INET:name=stratum-3333", diff=16.0),
            PortConfig(listen="unix:/run/nomp/stratum.sock", diff=16.0),
            PortConfig(listen="ssl:3334:privateKey=key.pem", diff=16.0),
            PortConfig(listen="tcp6:3335:interface=\\:\\:1", diff=16.0),
        )
        config = WebConfig(listen="tcp:0:interface=127.0.0.1", stats_interval=3600.0)
        web = WebService(
            config, lambda: [dataclasses.replace(self.pool, ports=ports)], self.redis.client, reactor
        )
        api = ApiClient(self, await serve(self, web))
        await until(lambda: web.collector.snapshot.pools != ())
        (listed,) = await api.get("/api/pools", 200, "/api/pools")
        self.assertEqual(
            [(port["port"], port["tls"]) for port in listed["ports"]],
            [(None, False), (None, False), (3334, True), (3335, False)],
        )
        described = DOCUMENT["components"]["schemas"]["Port"]["properties"]["port"]["description"]
        self.assertIn("null for a port on a socket systemd passes (systemd:", described)

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

    async def redis_call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        client = self.redis.client()
        assert client is not None
        return await client.eval(script, keys, args)

    async def test_blocks(self) -> None:
        """Blocks newest first with their status; one NOMP recorded (no details) has no reward
        or effort; unreadable members are left out; a bad status is a 400."""
        keys = PoolKeys.for_coin(self.pool.coin.name)
        self.addCleanup(
            self.redis_call,
            "for _, k in ipairs(KEYS) do redis.call('DEL', k) end return 1",
            [keys.blocks_confirmed, keys.block("aa"), keys.blocks_orphaned],
            [],
        )
        await self.redis_call(
            "redis.call('SADD', KEYS[1], ARGV[1], 'not-a-block')"
            " redis.call('HSET', KEYS[2], 'reward', '625000000', 'shares', '3', 'difficulty', '2',"
            " 'solo', '0')"
            " redis.call('SADD', KEYS[3], ARGV[2]) return 1",
            [keys.blocks_confirmed, keys.block("aa"), keys.blocks_orphaned],
            ["aa:tx1:90:Maddr.rig1:1700000000000", "bb:tx2:95:Qaddr:1700000100000"],
        )
        await self.web.collector.collect()
        path = "/api/pools/{pool}/blocks"
        body = await self.get("/api/pools/ltc/blocks", schema_path=path)
        self.assertEqual(body["total"], 3)
        self.assertEqual(
            [
                (b["hash"], b["height"], b["status"], b["reward"], b["effort"], b["miner"])
                for b in body["items"]
            ],
            [
                ("bb", 95, "orphaned", None, None, "Qaddr"),
                ("aa", 90, "confirmed", 625000000, 1.5, "Maddr"),
                ("h", 1, "pending", None, None, "w"),
            ],
        )
        self.assertEqual(body["items"][1]["time"], 1_700_000_000.0)
        confirmed = await self.get("/api/pools/ltc/blocks?status=confirmed&per_page=1", schema_path=path)
        self.assertEqual([b["hash"] for b in confirmed["items"]], ["aa"])
        error = await self.get("/api/pools/ltc/blocks?status=lost", 400, schema_path=path)
        self.assertIn("status must be one of", error["error"])
        await self.get("/api/pools/ltc/blocks?page=-1", 400, schema_path=path)
        await self.get("/api/pools/nope/blocks", 404, schema_path=path)
        pool = await self.get("/api/pools/ltc", schema_path="/api/pools/{pool}")
        self.assertEqual(
            pool["lastBlock"], {"hash": "bb", "height": 95, "time": 1_700_000_100.0, "status": "orphaned"}
        )

    async def test_payments_and_one_miner(self) -> None:
        """Payments newest first; a miner's balances in satoshis and its share of each payout;
        an address the pool knows nothing of is a 404."""
        keys = PoolKeys.for_coin(self.pool.coin.name)
        touched = [keys.payments, keys.immature, keys.balances, keys.paid]
        self.addCleanup(
            self.redis_call, "for _, k in ipairs(KEYS) do redis.call('DEL', k) end return 1", touched, []
        )
        old = {
            "id": "b1",
            "txid": "t1",
            "time": 100.0,
            "amounts": {"Maddr": "5000", "Paddr": "7"},
            "total": "5007",
        }
        new = {
            "id": "b2",
            "txid": "t2",
            "time": 200.0,
            "amounts": {"Maddr": "12345678901"},
            "total": "12345678901",
        }
        await self.redis_call(
            "redis.call('ZADD', KEYS[1], 100, ARGV[1], 200, ARGV[2], 150, 'garbage')"
            " redis.call('HSET', KEYS[2], 'Maddr', '11') redis.call('HSET', KEYS[3], 'Maddr', '22')"
            " redis.call('HSET', KEYS[4], 'Maddr', '12345683901', 'Paddr', '7') return 1",
            touched,
            [json.dumps({**old, "fee": "300"}), json.dumps({**new, "fee": "0"})],
        )
        await self.web.collector.collect()
        payments = await self.get("/api/pools/ltc/payments", schema_path="/api/pools/{pool}/payments")
        self.assertEqual(
            payments["items"],
            [
                {"id": "b2", "txid": "t2", "time": 200.0, "total": 12345678901, "fee": 0, "recipients": 1},
                {"id": "b1", "txid": "t1", "time": 100.0, "total": 5007, "fee": 300, "recipients": 2},
            ],
        )
        path = "/api/pools/{pool}/miners/{address}"
        miner = await self.get("/api/pools/ltc/miners/Maddr", schema_path=path)
        self.assertEqual((miner["immature"], miner["balance"], miner["paid"]), (11, 22, 12345683901))
        self.assertEqual(
            miner["payments"],
            [
                {"txid": "t2", "time": 200.0, "amount": 12345678901},
                {"txid": "t1", "time": 100.0, "amount": 5000},
            ],
        )
        self.assertEqual([w["name"] for w in miner["workers"]], ["Maddr.rig1", "Maddr.rig2"])
        self.assertEqual(miner["workers"][1]["difficulty"], 2.0)
        self.assertEqual(miner["hashrate"], 5 * SCRYPT_RATE_PER_DIFFICULTY)
        # Paid once and gone: still known by its payments.
        gone = await self.get("/api/pools/ltc/miners/Paddr", schema_path=path)
        self.assertEqual((gone["workers"], gone["paid"], gone["hashrate"]), ([], 7, 0))
        error = await self.get("/api/pools/ltc/miners/Zaddr", 404, schema_path=path)
        self.assertIn("Zaddr", error["error"])
        await self.get("/api/pools/nope/miners/Maddr", 404, schema_path=path)

    async def test_live_stats(self) -> None:
        """The event stream sends the stats at once and again after each collection,
        and ends when the service stops."""
        events = EventReader()
        response = await treq.get(self.base + "/api/live_stats", unbuffered=True, pool=self.api.http)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/event-stream"])
        response.deliverBody(events)
        await until(lambda: len(events.events) == 1)
        self.assertEqual(events.events[0]["pools"][self.pool.coin.name]["workerCount"], 3)
        self.assertEqual(len(self.web.live), 1)
        keys = PoolKeys.for_coin(self.pool.coin.name)
        recorder = ShareRecorder(
            keys, self.redis.client, cast(IReactorTime, reactor), hashrate_window=300.0, round_policy=PROP
        )
        recorder.valid_share("Naddr.new", 1.0)
        await recorder.flush()
        await self.web.collector.collect()
        await until(lambda: len(events.events) == 2)
        self.assertEqual(events.events[1]["pools"][self.pool.coin.name]["workerCount"], 4)
        await self.web.stopService()
        await until(lambda: events.ended)
        self.assertEqual(len(self.web.live), 0)

    async def test_network(self) -> None:
        """Each daemon's getmininginfo, or its error; daemon URLs are not shown."""
        await self.web.stopService()
        answers: list[Any] = [
            {"blocks": 812, "difficulty": 0.5, "networkhashps": 1234.5},
            DaemonError("http://10.0.0.5:9332", "getmininginfo", "connection refused"),
            {"blocks": "?"},
        ]
        config = WebConfig(listen="tcp:0:interface=127.0.0.1", stats_interval=3600.0)
        web = WebService(
            config,
            lambda: [self.pool],
            self.redis.client,
            reactor,
            daemons=lambda name: cast(DaemonGroup, FixedDaemons(answers)),
        )
        api = ApiClient(self, await serve(self, web))
        await until(lambda: web.collector.snapshot.pools[0].network != ())
        body = await api.get("/api/pools/ltc/network", schema_path="/api/pools/{pool}/network")
        self.assertEqual(
            body["daemons"],
            [
                {
                    "name": "daemon 1",
                    "ok": True,
                    "height": 812,
                    "difficulty": 0.5,
                    "hashrate": 1234.5,
                    "error": None,
                },
                {
                    "name": "daemon 2",
                    "ok": False,
                    "height": None,
                    "difficulty": None,
                    "hashrate": None,
                    "error": "connection refused",
                },
                {
                    "name": "daemon 3",
                    "ok": False,
                    "height": None,
                    "difficulty": None,
                    "hashrate": None,
                    "error": "getmininginfo: no blocks, difficulty or networkhashps",
                },
            ],
        )
        pool = await api.get("/api/pools/ltc", schema_path="/api/pools/{pool}")
        self.assertEqual(pool["network"], {"height": 812, "difficulty": 0.5, "hashrate": 1234.5})


class FixedDaemons:
    """A DaemonGroup's call_each with fixed answers (a result or a DaemonError each)."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    async def call_each(self, method: str, *params: Any) -> list[Any]:
        assert method == "getmininginfo"
        return list(self.answers)


class EventReader(Protocol):
    """Collects the data of server-sent events as JSON."""

    def __init__(self) -> None:
        self.buffer = b""
        self.events: list[Any] = []
        self.ended = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    self.events.append(json.loads(line[6:]))

    def connectionLost(self, reason: Any = None) -> None:
        self.ended = True


class StreamRequest(DummyRequest):
    """A DummyRequest that keeps the push producer it is given, as a real request does."""

    producer: Any = None
    channel: Any = "connected"  # a real request's channel is None once its connection is lost

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


class LiveStreamTests(TestCase):
    def snapshot(self, now: float) -> Snapshot:
        return build_snapshot([empty_stats(pool_config())], [], now)

    def test_slow_reader_dropped(self) -> None:
        """A client whose socket buffer is full when the next event is due has its stream ended."""
        live = LiveStream()
        slow, quick = StreamRequest([b""]), StreamRequest([b""])
        slow_ended = live.open(cast(Request, slow), self.snapshot(1.0))
        quick_ended = live.open(cast(Request, quick), self.snapshot(1.0))
        assert not isinstance(slow_ended, bytes) and not isinstance(quick_ended, bytes)
        slow.producer.pauseProducing()  # the transport says its buffer is full
        live.publish(self.snapshot(2.0))
        self.assertTrue(slow_ended.called)
        self.assertFalse(quick_ended.called)
        self.assertEqual(len(live), 1)
        self.assertEqual(len(quick.written), 2)  # the first event and this one
        self.assertEqual(len(slow.written), 1)
        self.assertIn(b'"time":2', quick.written[1])

    def test_limit(self) -> None:
        """Streams beyond the limit get a 503 with a message; a closed one frees its place."""
        live = LiveStream(max_clients=1)
        first = StreamRequest([b""])
        live.open(cast(Request, first), self.snapshot(1.0))
        second = StreamRequest([b""])
        refused = live.open(cast(Request, second), self.snapshot(1.0))
        self.assertEqual(second.responseCode, 503)
        self.assertIsInstance(refused, bytes)
        first.finish()  # the client went away
        self.assertEqual(len(live), 0)
        third = StreamRequest([b""])
        self.assertNotIsInstance(live.open(cast(Request, third), self.snapshot(1.0)), bytes)


class CollectorTests(TestCase):
    """The collector on a task.Clock over a real Redis."""

    async def asyncSetUp(self) -> None:
        server = shared_redis()
        self.server = server
        self.redis = RedisService(RedisConfig(port=server.port, db=DB))
        self.redis.startService()
        self.addCleanup(self.redis.stopService)
        await until(lambda: self.redis.client() is not None)
        server.command("DEL", WebKeys().stat_history, db=DB)
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.pool = pool_config(
            name="ltc", coin=dataclasses.replace(pool_config().coin, name=f"coll{id(self)}")
        )

    def setUp(self) -> Any:
        return defer.ensureDeferred(self.asyncSetUp())

    def collector(self, retention: float = 3600.0, redis: Any = None) -> StatsCollector:
        return StatsCollector(
            lambda: [self.pool], redis or self.redis.client, self.clock, interval=60.0, retention=retention
        )

    async def mine_and_collect(self, collector: StatsCollector, rounds: int, step: float) -> None:
        """``rounds`` times: one share of Maddr.a written to Redis, a collection, ``step`` seconds."""
        keys = PoolKeys.for_coin(self.pool.coin.name)
        self.addCleanup(self.server.command, "DEL", keys.hashrate, keys.miner_history, db=DB)
        recorder = ShareRecorder(
            keys,
            self.redis.client,
            self.clock,
            hashrate_window=300.0,
            wall_clock=self.clock.seconds,
            round_policy=PROP,
        )
        for _ in range(rounds):
            recorder.valid_share("Maddr.a", 1.0)
            await recorder.flush()
            await collector.collect()
            self.clock.advance(step)

    def history(self, collector: StatsCollector) -> list[int]:
        return [entry["time"] for entry in json.loads(collector.snapshot.history_json)]

    async def test_history_survives_a_restart_and_is_trimmed(self) -> None:
        """A new collector reads the history back from Redis; entries older than the retention go
        from memory and from Redis."""
        first = self.collector(retention=150.0)
        for _ in range(2):
            await first.collect()
            self.clock.advance(60)
        self.assertEqual(self.history(first), [int(NOW), int(NOW) + 60])
        second = self.collector(retention=150.0)
        await second.collect()
        self.assertEqual(self.history(second), [int(NOW), int(NOW) + 60, int(NOW) + 120])
        self.clock.advance(60)
        await second.collect()  # NOW is now 180 s old
        self.assertEqual(self.history(second), [int(NOW) + 60, int(NOW) + 120, int(NOW) + 180])
        self.assertEqual(self.server.command("ZCARD", WebKeys().stat_history, db=DB), 3)

    async def test_redis_away_keeps_the_last_snapshot(self) -> None:
        """While Redis is away the last snapshot is served and one warning is logged;
        then collection resumes."""
        connected: list[bool] = [True]
        collector = self.collector(redis=lambda: self.redis.client() if connected[0] else None)
        await collector.collect()
        served = collector.snapshot
        connected[0] = False
        self.clock.advance(60)
        with capturedLogs() as logged:
            await collector.collect()
            await collector.collect()
        self.assertIs(collector.snapshot, served)
        (warning,) = [e for e in logged if e["log_level"].name == "warn"]
        self.assertEqual(warning["age"], 60)
        connected[0] = True
        await collector.collect()
        self.assertEqual(collector.snapshot.time, NOW + 60)

    async def test_redis_not_there_yet_at_start(self) -> None:
        """A collection before Redis is connected (the pool starting) is an info line, not a
        warning; the first collection once it is there makes the snapshot, and says Redis
        answered, not that it is "back"."""
        connected: list[bool] = [False]
        collector = self.collector(redis=lambda: self.redis.client() if connected[0] else None)
        with capturedLogs() as logged:
            await collector.collect()
            await collector.collect()
            connected[0] = True
            self.clock.advance(60)
            await collector.collect()
        lines = [(e["log_level"].name, formatEvent(e)) for e in logged if e.get("subject") == "Stats: Redis"]
        self.assertEqual(
            lines,
            [
                ("info", "Stats: Redis: waiting for it (RedisUnavailable: not connected)"),
                ("info", "Stats: Redis answered after 60 s"),
            ],
        )
        self.assertEqual([e for e in logged if e["log_level"].name != "info"], [])
        self.assertEqual(collector.snapshot.time, NOW + 60)

    async def test_a_bug_is_not_an_outage(self) -> None:
        """An error in a collection that is not Redis being away (here a TypeError from the
        client) is logged as a failure each time, never as Redis waiting or unavailable; the
        last snapshot stays served and no early retry is scheduled for it."""
        broken = [False]

        class Buggy:
            """The real client, whose eval has a bug while ``broken``."""

            def __init__(self, client: Any) -> None:
                self.client = client

            def eval(self, script: str, keys_: list[str], args: list[Any]) -> defer.Deferred[Any]:
                if broken[0]:
                    raise TypeError("a bug in the read")
                result: defer.Deferred[Any] = self.client.eval(script, keys_, args)
                return result

        collector = self.collector(redis=lambda: Buggy(self.redis.client()))
        for collected_before in (False, True):
            broken[0] = True
            served = collector.snapshot
            with capturedLogs() as logged:
                await collector.collect()
                await collector.collect()
            self.assertEqual(len(self.flushLoggedErrors(TypeError)), 2)
            self.assertEqual([e["log_level"].name for e in logged], ["critical", "critical"])
            self.assertIn("unexpected error", logged[0]["log_format"])
            self.assertIs(collector.snapshot, served)
            self.assertEqual(self.clock.getDelayedCalls(), [], collected_before)
            broken[0] = False
            await collector.collect()
            self.assertIsNot(collector.snapshot, served)

    async def test_first_snapshot_soon_after_redis_connects(self) -> None:
        """Started before Redis is connected, the collector tries again every STARTUP_RETRY
        seconds until its first snapshot, not a whole interval later; the retries stop with
        the service."""
        connected: list[bool] = [False]
        collector = self.collector(redis=lambda: self.redis.client() if connected[0] else None)
        collector.startService()  # a first collection, at once: Redis is not there
        for _ in range(3):
            self.clock.advance(STARTUP_RETRY)  # each attempt fails at once, no Redis to wait for
        self.assertEqual(collector.snapshot.time, NOW)  # still the empty one made at start
        connected[0] = True
        self.clock.advance(STARTUP_RETRY)
        await until(lambda: collector.snapshot.time == NOW + 4 * STARTUP_RETRY)
        self.assertFalse([c for c in self.clock.getDelayedCalls() if c.getTime() < NOW + 60])
        stopped = collector.stopService()
        if stopped is not None:
            await stopped
        self.assertEqual(self.clock.getDelayedCalls(), [])

    async def test_a_success_cancels_the_startup_retry(self) -> None:
        """A collection asked for by someone else that succeeds while a startup retry is
        pending cancels the retry: it would only sample the miners again off the timer."""
        connected: list[bool] = [False]
        collector = self.collector(redis=lambda: self.redis.client() if connected[0] else None)
        self.assertFalse(collector.collected)
        collector.startService()  # fails: no Redis; a retry is due in STARTUP_RETRY
        self.assertTrue([c for c in self.clock.getDelayedCalls() if c.getTime() == NOW + STARTUP_RETRY])
        connected[0] = True
        await collector.collect()
        self.assertTrue(collector.collected)
        self.assertFalse([c for c in self.clock.getDelayedCalls() if c.getTime() < NOW + 60])
        stopped = collector.stopService()
        if stopped is not None:
            await stopped

    async def test_pools_followed(self) -> None:
        """The collector lists the pools as they run: told of a change, a pool added is listed at
        once with nothing read and read (its miner history too) by the next collection, a pool
        kept keeps its stats under its new configuration, a pool removed goes."""
        running = [self.pool]
        collector = StatsCollector(
            lambda: running, self.redis.client, self.clock, interval=60.0, retention=3600.0
        )
        await self.mine_and_collect(collector, rounds=1, step=60)
        added = pool_config(name="added", coin=dataclasses.replace(self.pool.coin, name=f"add{id(self)}"))
        keys = PoolKeys.for_coin(added.coin.name)
        self.addCleanup(self.server.command, "DEL", keys.stats, keys.miner_history, db=DB)
        self.server.command("HSET", keys.stats, "validShares", "3", db=DB)
        sample = json.dumps({"time": NOW, "miners": {"Xaddr": 5.0}})
        self.server.command("ZADD", keys.miner_history, NOW, sample, db=DB)
        ported = dataclasses.replace(self.pool, ports=(PortConfig(listen="tcp:4444", diff=8.0),))
        running[:] = [ported, added]
        collector.pools_changed()
        ltc, shown = collector.snapshot.pools
        self.assertEqual((ltc.pool, shown.pool), (ported, added))
        self.assertEqual([w.name for w in ltc.workers], ["Maddr.a"])
        self.assertEqual((shown.counters, shown.workers), ({}, ()))
        await collector.collect()
        shown = collector.snapshot.pools[1]
        self.assertEqual(shown.counters["validShares"], "3")
        self.assertEqual(shown.miner_history["Xaddr"], ((NOW, 5.0),))
        running[:] = [ported]
        collector.pools_changed()
        self.assertEqual([stats.pool for stats in collector.snapshot.pools], [ported])
        await collector.collect()
        self.assertEqual([stats.pool for stats in collector.snapshot.pools], [ported])
        self.assertEqual(json.loads(collector.snapshot.stats_json)["pools"].keys(), {self.pool.coin.name})

    def collector_and_added(
        self, coin: str, valid_shares: int
    ) -> tuple[list[AnyPoolConfig], StatsCollector, PoolConfig]:
        """A collector of the running pools (the list, this test's pool alone for now;
        its timer an hour apart), and a pool ``added`` of coin ``coin`` not yet running,
        whose ``validShares`` in Redis is ``valid_shares``."""
        running: list[AnyPoolConfig] = [self.pool]
        collector = StatsCollector(
            lambda: running, self.redis.client, self.clock, interval=3600.0, retention=3600.0
        )
        added = pool_config(name="added", coin=dataclasses.replace(self.pool.coin, name=coin))
        keys = PoolKeys.for_coin(added.coin.name)
        self.addCleanup(self.server.command, "DEL", keys.stats, db=DB)
        self.server.command("HSET", keys.stats, "validShares", str(valid_shares), db=DB)
        return running, collector, added

    async def test_a_change_is_collected_at_once(self) -> None:
        """A running collector told of a pool added reads it at once, not at the next
        interval, even when the change comes while a collection is under way."""
        running, collector, added = self.collector_and_added(f"now{id(self)}", valid_shares=4)
        collector.startService()  # its first collection is under way
        self.addCleanup(collector.stopService)
        running.append(added)
        collector.pools_changed()

        def read() -> bool:
            stats = collector.snapshot.pool("added")
            return stats is not None and stats.counters.get("validShares") == "4"

        await until(read)
        self.assertEqual(self.clock.seconds(), NOW)

    async def test_stop_waits_for_a_reloads_collection(self) -> None:
        """A stop waits for the collection a reload started, not only the timer's: once
        stopped, the collector has nothing left reading Redis."""
        running, collector, added = self.collector_and_added(f"stop{id(self)}", valid_shares=7)
        collector.startService()
        self.addCleanup(collector.stopService)  # again, if a check fails first: then a no-op
        await until(lambda: collector.collected)
        running.append(added)
        collector.pools_changed()  # starts a collection; the timer's next is an hour off
        stopping = collector.stopService()
        assert stopping is not None
        self.assertFalse(stopping.called)
        await stopping
        stats = collector.snapshot.pool("added")
        assert stats is not None
        self.assertEqual(stats.counters.get("validShares"), "7")

    async def test_collections_do_not_overlap(self) -> None:
        """A collection asked for while one is under way waits for it instead of running beside it."""
        collector = self.collector()
        first, second = collector.collect(), collector.collect()
        await first
        await second
        self.assertEqual(self.history(collector), [int(NOW)])

    async def test_miner_history_sampled(self) -> None:
        """Each miner's hashrate is kept at most every retention/288 seconds."""
        collector = self.collector(retention=288 * 120.0)  # a sample every 120 s
        await self.mine_and_collect(collector, rounds=4, step=60)
        history = collector.snapshot.pools[0].miner_history["Maddr"]
        self.assertEqual([at for at, _ in history], [NOW, NOW + 120])
        # Between samples, snapshots share one frozen copy instead of copying it each time.
        before = collector.snapshot.pools[0].miner_history
        await collector.collect()  # NOW + 240: 120 s after the last sample, a new one
        self.clock.advance(60)
        sampled = collector.snapshot.pools[0].miner_history
        self.assertIsNot(sampled, before)
        await collector.collect()  # NOW + 300: no sample
        self.assertIs(collector.snapshot.pools[0].miner_history, sampled)
        self.assertEqual(
            [rate for _, rate in history], [SCRYPT_RATE_PER_DIFFICULTY, 3 * SCRYPT_RATE_PER_DIFFICULTY]
        )

    async def test_miner_history_survives_a_restart(self) -> None:
        """The samples are kept in Redis: a new collector starts with them, trimmed to the retention."""
        retention = 288 * 120.0  # a sample every 120 s
        first = self.collector(retention=retention)
        await self.mine_and_collect(first, rounds=3, step=120)
        keys = PoolKeys.for_coin(self.pool.coin.name)
        before = first.snapshot.pools[0].miner_history["Maddr"]
        self.assertEqual([at for at, _ in before], [NOW, NOW + 120, NOW + 240])

        self.clock.advance(retention - 360 + 1)  # NOW is now just past the retention
        second = self.collector(retention=retention)
        await second.collect()
        # NOW's sample is too old now and is not read back. None is taken now (no
        # share in the hashrate window), so Redis is trimmed at the next one.
        self.assertEqual(second.snapshot.pools[0].miner_history["Maddr"], before[1:])
        self.assertEqual(self.server.command("ZCARD", keys.miner_history, db=DB), 3)
        await self.mine_and_collect(second, rounds=1, step=0)
        self.assertEqual(self.server.command("ZCARD", keys.miner_history, db=DB), 3)  # -NOW, +now

    async def test_history_read_failing_half_way_is_read_again_whole(self) -> None:
        """Redis failing between the history's reads at start: the next collection reads it
        all again, and no entry is kept twice."""
        first = self.collector(retention=86400.0)
        await self.mine_and_collect(first, rounds=2, step=3600)
        keys = PoolKeys.for_coin(self.pool.coin.name)
        failed: list[str] = []

        class FailingOnce:
            """The real client, but the first read of the miner history fails."""

            def __init__(self, client: Any) -> None:
                self.client = client

            def eval(self, script: str, keys_: list[str], args: list[Any]) -> defer.Deferred[Any]:
                if keys_ == [keys.miner_history] and not failed:
                    failed.append(keys_[0])
                    return defer.fail(ConnectionError("Redis went away"))
                result: defer.Deferred[Any] = self.client.eval(script, keys_, args)
                return result

        second = self.collector(retention=86400.0, redis=lambda: FailingOnce(self.redis.client()))
        await second.collect()
        self.assertEqual(failed, [keys.miner_history])
        await second.collect()
        self.assertEqual(self.history(second), [int(NOW), int(NOW) + 3600, int(NOW) + 7200])
        times = [at for at, _ in second.snapshot.pools[0].miner_history["Maddr"]]
        self.assertEqual(times[:2], [NOW, NOW + 3600])
        self.assertEqual(len(times), len(set(times)))

    async def test_foreign_miner_history_members_skipped(self) -> None:
        """Members of the miner history that are not samples are passed over, not fatal."""
        keys = PoolKeys.for_coin(self.pool.coin.name)
        self.addCleanup(self.server.command, "DEL", keys.miner_history, db=DB)
        for member in ("not json", '{"time": "x", "miners": {}}', '{"time": 1}', '{"time": 5, "miners": []}'):
            self.server.command("ZADD", keys.miner_history, str(NOW - 10), member, db=DB)
        good = json.dumps({"time": NOW - 5, "miners": {"Maddr": 12.5}})
        self.server.command("ZADD", keys.miner_history, str(NOW - 5), good, db=DB)
        collector = self.collector()
        await collector.collect()
        self.assertEqual(collector.snapshot.pools[0].miner_history, {"Maddr": ((NOW - 5, 12.5),)})

    async def test_sums_in_redis_match_the_reference(self) -> None:
        """The collector's Lua sums equal sum_shares over the same members: odd worker names,
        members outside the window or unreadable, and more members than one chunk."""
        keys = PoolKeys.for_coin(self.pool.coin.name)
        self.addCleanup(self.server.command, "DEL", keys.hashrate, db=DB)
        members: list[tuple[str, float]] = [
            ("0.5:a:b:c:1:x", NOW - 1),  # a worker name holding colons
            ("-2:Maddr.rig:2:y", NOW - 2),
            ("junk", NOW - 3),
            ("x:Maddr.rig:3:z", NOW - 4),
            ("1:Maddr.rig:4:old", NOW - 301),
            ("1:Maddr.rig:5:future", NOW + 1),
        ]
        members += [(f"{1 + n % 7}:W{n % 13}.r:{n}:{n}", NOW - 300 + n * 0.02) for n in range(12_000)]
        for first in range(0, len(members), 1000):
            args: list[Any] = []
            for member, score in members[first : first + 1000]:
                args += [repr(score), member]
            self.server.command("ZADD", keys.hashrate, *args, db=DB)
        collector = self.collector()
        await collector.collect()
        expected = sum_shares(members, NOW - self.pool.hashrate_window, NOW)
        got = {w.name: w for w in collector.snapshot.pools[0].workers}
        self.assertEqual(sorted(got), sorted(expected))
        for name, sums in expected.items():
            worker = got[name]
            self.assertAlmostEqual(worker.shares, sums.valid, places=6)
            self.assertAlmostEqual(worker.invalid_shares, sums.invalid, places=6)
            self.assertEqual((worker.last_share, worker.difficulty), (sums.last_share, sums.last_difficulty))
