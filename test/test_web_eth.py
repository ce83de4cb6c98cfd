"""Ethereum-family pools on the site's API: open-ethereum-pool's keys, written by the
pool's recorder and its unlocker's and payer's scripts (test/ethweb.py) into a real
redis-server, read by the real StatsCollector beside a Bitcoin-family pool and
served over real HTTP; every answer checked against the OpenAPI document."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, cast

from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp.config import EthPoolConfig, RedisConfig, WebConfig
from nomp.eth.logins import LoginError
from nomp.payments.rounds import PROP
from nomp.store.oepschema import OepKeys
from nomp.store.recorder import ShareRecorder
from nomp.store.redis import RedisService
from nomp.store.schema import PoolKeys, WebKeys
from nomp.web.collector import StatsCollector, empty_stats
from nomp.web.ethcollector import glob_escaped
from nomp.web.oepstats import HASHRATE_FLOOR
from nomp.web.service import WebService
from nomp.web.stats import (
    NODE_STALE_AFTER,
    Balances,
    DaemonInfo,
    RawPoolData,
    eth_balances,
    eth_block,
    eth_candidate,
    eth_nodes,
    eth_payment,
    miner_address,
    pool_stats,
    sum_eth_shares,
)
from test.ethpool import LOGIN, LOGIN_CHECKSUMMED, POOL_ADDRESS
from test.ethweb import (
    CANDIDATE_HEIGHT,
    CREDITS,
    CURRENT_DIFFICULTY,
    HASHRATE_WINDOW,
    LOGIN_BALANCE,
    LOGIN_IMMATURE,
    NEPHEW_HEIGHT,
    NODE_DIFFICULTY,
    NODE_HEIGHT,
    ORPHAN_HEIGHT,
    OTHER,
    OTHER_BALANCE,
    PAYOUT,
    PAYOUT_TX,
    UNCLE_HEIGHT,
    eth_block_hash,
    eth_web_pool,
    write_eth_pool,
)
from test.fakes import pool_config
from test.servers import shared_redis
from test.waiting import until
from test.webclient import ApiClient, serve

DB = 11  # of the shared redis-server; each test has coins of its own
NOW = 1_800_000_000.0
SHANNON = 10**9
NONCE = "0x00000000000000ff"
HASH = "0x" + "ab" * 32


def own_pool(test: object, name: str = "dev") -> EthPoolConfig:
    """The test pool on a coin named for this test alone."""
    pool = eth_web_pool(name)
    return dataclasses.replace(pool, coin=dataclasses.replace(pool.coin, name=f"ethweb{id(test)}"))


class PureTests(SynchronousTestCase):
    """OEP's members as the API's records; every member that is not one is left out."""

    def test_blocks(self) -> None:
        """Immature is pending and matured confirmed, orphan-flagged orphaned anywhere; an uncle
        is at its own height with its nephew's and the uncle's reward; a candidate has no hash
        or reward yet; effort is the round's shares over the network difficulty."""
        reward = 3_750_000_000_000_000_001
        uncle = eth_block(f"7:0:{NONCE}:{HASH}:1700:100:250:{reward}", "9", matured=True, solo=False)
        assert uncle is not None
        self.assertEqual(
            (uncle.height, uncle.nephew_height, uncle.uncle, uncle.status, uncle.reward, uncle.hash),
            (7, 9, True, "confirmed", reward, HASH),
        )
        self.assertEqual((uncle.worker, uncle.miner, uncle.txid, uncle.effort), (None, None, "-", 2.5))
        pending = eth_block(f"0:0:{NONCE}:{HASH}:1700:100:50:5", "12", matured=False, solo=False)
        assert pending is not None
        self.assertEqual((pending.status, pending.uncle, pending.nephew_height), ("pending", False, None))
        orphan = eth_block(f"0:1:{NONCE}:0x0:1700:100:50:0", "12", matured=False, solo=False)
        assert orphan is not None
        self.assertEqual((orphan.status, orphan.hash, orphan.reward), ("orphaned", None, 0))
        candidate = eth_candidate(f"{NONCE}:{HASH}:{HASH}:1700:200:100", "13", solo=False)
        assert candidate is not None
        self.assertEqual(
            (candidate.height, candidate.status, candidate.hash, candidate.reward, candidate.effort),
            (13, "pending", None, None, 0.5),
        )
        self.assertEqual(candidate.time, 1700.0)
        solo = eth_candidate(f"{NONCE}:{HASH}:{HASH}:1700:200:100", "13", solo=True)
        assert solo is not None
        self.assertEqual((solo.solo, solo.effort), (True, None))
        for member, score in (
            ("1:2:3", "5"),
            (f"0:2:{NONCE}:{HASH}:1700:100:50:5", "5"),  # orphan flag 2
            (f"0:0:{NONCE}:0x0:1700:100:50:5", "5"),  # no hash, not an orphan
            (f"0:0:{NONCE}:{HASH}:1700:100:50:5", "5.5"),  # not a height
        ):
            self.assertIsNone(eth_block(member, score, matured=True, solo=False), member)
        self.assertIsNone(eth_candidate("x:y", "5", solo=False))
        self.assertIsNone(eth_candidate(f"{NONCE}:{HASH}:{HASH}:1700:200:100", "0", solo=False))

    def test_payments(self) -> None:
        """OEP's payment log is in whole Shannon: that in wei; no fee is recorded."""
        payment = eth_payment(f"{HASH}:{LOGIN}:1500000000", "1700.5")
        assert payment is not None
        self.assertEqual(
            (payment.id, payment.txid, payment.time, dict(payment.amounts), payment.total, payment.fee),
            (HASH, HASH, 1700.5, {LOGIN: 1_500_000_000 * SHANNON}, 1_500_000_000 * SHANNON, None),
        )
        for member, score in ((f"{HASH}:{LOGIN}:1.5", "1"), (f"{HASH}:1", "1"), (f"{HASH}:{LOGIN}:1", "x")):
            self.assertIsNone(eth_payment(member, score), member)

    def test_balances_exact(self) -> None:
        """Shannon and dust make exact wei, far past a double's 2^53; an amount that is not
        an integer is left out, the others kept."""
        fields: dict[str, dict[str, str | None]] = {
            LOGIN: {"balance": "5750000000", "balanceDust": "94", "immature": "2500000000", "paid": "1"},
            OTHER: {"balance": "x", "paid": "3", "paidDust": "999999999", "immatureDust": None},
        }
        self.assertEqual(
            eth_balances(fields),
            Balances(
                immature={LOGIN: 2_500_000_000 * SHANNON},
                balance={LOGIN: 5_750_000_000_000_000_094},
                paid={LOGIN: SHANNON, OTHER: 3 * SHANNON + 999_999_999},
            ),
        )

    def test_nodes(self) -> None:
        """Each node of <coin>:nodes by name; its network hashrate is difficulty over the block
        time; one whose heartbeat is old, or which lacks a field, is not ok."""
        fields = {
            "main:name": "main",
            "main:height": "110",
            "main:difficulty": "1300",
            "main:lastBeat": str(int(NOW) - 3),
            "old:height": "90",
            "old:difficulty": "1000",
            "old:lastBeat": str(int(NOW - NODE_STALE_AFTER) - 1),
            "half:height": "1",
        }
        self.assertEqual(
            eth_nodes(fields, NOW, 13.0),
            (
                DaemonInfo("half", False, error="no height, difficulty or lastBeat"),
                DaemonInfo("main", True, 110, 1300.0, 100.0),
                DaemonInfo(
                    "old", False, 90, 1000.0, 1000 / 13, f"no heartbeat for {NODE_STALE_AFTER + 1:.0f} s"
                ),
            ),
        )

    def test_miner_address(self) -> None:
        """An Ethereum login is looked up in lower case; a checksummed address must check;
        a Bitcoin address is taken as given."""
        stats = empty_stats(eth_web_pool())
        self.assertEqual(miner_address(stats, LOGIN_CHECKSUMMED), LOGIN)
        self.assertEqual(miner_address(stats, LOGIN.upper().replace("0X", "0x")), LOGIN)
        self.assertEqual(miner_address(stats, "0X" + LOGIN[2:]), LOGIN)
        self.assertEqual(miner_address(stats, "AnyName"), "anyname")
        wrong = LOGIN_CHECKSUMMED[:-1] + LOGIN_CHECKSUMMED[-1].swapcase()
        with self.assertRaises(LoginError):
            miner_address(stats, wrong)
        self.assertEqual(miner_address(empty_stats(pool_config()), "Maddr"), "Maddr")

    def test_hashrate_is_oeps(self) -> None:
        """Summed difficulty over OEP's span: the window, never below 600 s, nor longer than
        the time since the earliest share."""
        members = [(f"600:{LOGIN}:rig:1", NOW - 100), (f"300:{LOGIN}:rig:2", NOW - 50), ("300:x:y", NOW)]
        members += [(f"-5:{LOGIN}:rig:3", NOW), (f"5:{LOGIN}:rig:x", NOW), (f"5:{LOGIN}:rig:4", NOW + 1)]
        shares, earliest = sum_eth_shares(members, NOW - 1800, NOW)
        self.assertEqual(earliest, NOW - 100)
        self.assertEqual(list(shares), [f"{LOGIN}.rig"])
        self.assertEqual(
            (shares[f"{LOGIN}.rig"].valid, shares[f"{LOGIN}.rig"].last_difficulty), (900.0, 300.0)
        )
        long_window = dataclasses.replace(eth_web_pool(), hashrate_window=1800.0)
        raw = RawPoolData(shares, {}, 0, 0, 0, earliest_share=earliest)
        stats = pool_stats(long_window, raw, NOW)
        self.assertEqual(stats.hashrate, 900 / HASHRATE_FLOOR)
        raw = RawPoolData(shares, {}, 0, 0, 0, earliest_share=NOW - 1000)
        self.assertEqual(pool_stats(long_window, raw, NOW).hashrate, 900 / 1000)
        self.assertEqual(pool_stats(eth_web_pool(), raw, NOW).hashrate, 900 / HASHRATE_WINDOW)
        self.assertEqual([(m.address, m.workers) for m in stats.miners], [(LOGIN, 1)])
        self.assertEqual(
            (stats.family, stats.unit.name, stats.unit.decimals, stats.algorithm),
            ("ethereum", "wei", 18, "ethash"),
        )

    def test_glob_escaped(self) -> None:
        self.assertEqual(glob_escaped("a*b?c[d]e\\f:"), "a\\*b\\?c\\[d\\]e\\\\f:")


class RedisTestCase(TestCase):
    """A real Redis (db 11) and the test's own coins."""

    timeout = 60

    async def asyncSetUp(self) -> None:
        self.server = shared_redis()
        self.redis = RedisService(RedisConfig(port=self.server.port, db=DB))
        self.redis.startService()
        self.addCleanup(self.redis.stopService)
        await until(lambda: self.redis.client() is not None)
        self.server.command("DEL", WebKeys().stat_history, db=DB)
        self.eth = own_pool(self)
        self.keys = OepKeys.for_coin(self.eth.coin.name)
        self.addCleanup(self.forget, self.keys.coin)

    def setUp(self) -> Any:
        return defer.Deferred.fromCoroutine(self.asyncSetUp())

    def forget(self, coin: str) -> None:
        keys = self.server.command("KEYS", f"{glob_escaped(coin)}:*", db=DB)
        if keys:
            self.server.command("DEL", *keys, db=DB)

    def client(self) -> Any:
        client = self.redis.client()
        assert client is not None
        return client


class ApiTests(RedisTestCase):
    """The web service over an Ethereum-family pool and a Bitcoin-family one."""

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.data = await write_eth_pool(self.eth, self.redis.client, cast(IReactorTime, reactor), NOW)
        self.bitcoin = pool_config(
            name="ltc", coin=dataclasses.replace(pool_config().coin, name=f"webeth{id(self)}")
        )
        self.addCleanup(self.forget, self.bitcoin.coin.name)
        recorder = ShareRecorder(
            PoolKeys.for_coin(self.bitcoin.coin.name),
            self.redis.client,
            cast(IReactorTime, reactor),
            hashrate_window=300.0,
            wall_clock=lambda: NOW - 10,
            round_policy=PROP,
        )
        recorder.valid_share("Maddr.rig1", 1.0)
        await recorder.flush()
        self.clock = task.Clock()
        self.clock.advance(NOW)
        config = WebConfig(listen="tcp:0:interface=127.0.0.1", stats_interval=3600.0)
        # The collections on the test's clock: the pool's records are at NOW.
        self.web = WebService(
            config, lambda: [self.bitcoin, self.eth], self.redis.client, reactor, clock=self.clock
        )
        self.api = ApiClient(self, await serve(self, self.web))
        await self.web.collector.collect()

    async def get(self, path: str, code: int = 200, schema_path: str | None = None) -> Any:
        return await self.api.get(path, code, schema_path)

    async def test_pools(self) -> None:
        """Both families in /api/pools, from one collection: the Ethereum pool's unit is wei,
        its hashrate OEP's, its network its node's heartbeat."""
        listed = await self.get("/api/pools", schema_path="/api/pools")
        self.assertEqual([p["name"] for p in listed], ["ltc", "dev"])
        ltc, dev = listed
        self.assertEqual((ltc["family"], ltc["unit"], ltc["decimals"]), ("bitcoin", "satoshi", 8))
        self.assertEqual(dev, await self.get("/api/pools/dev", schema_path="/api/pools/{pool}"))
        self.assertEqual(
            (dev["family"], dev["unit"], dev["decimals"], dev["algorithm"], dev["symbol"]),
            ("ethereum", "wei", 18, "ethash", "DEV"),
        )
        self.assertEqual(dev["hashrate"], CURRENT_DIFFICULTY / HASHRATE_WINDOW)
        self.assertEqual((dev["miners"], dev["workers"]), (2, 3))
        self.assertEqual(dev["blocks"], {"pending": 2, "confirmed": 2, "orphaned": 1})
        self.assertEqual(
            dev["network"],
            {"height": NODE_HEIGHT, "difficulty": NODE_DIFFICULTY, "hashrate": NODE_DIFFICULTY / 13.0},
        )
        self.assertEqual(
            dev["lastBlock"],
            {
                "hash": None,
                "height": CANDIDATE_HEIGHT,
                "time": self.data.found_at[CANDIDATE_HEIGHT],
                "status": "pending",
            },
        )
        self.assertEqual(
            [(p["port"], p["protocol"], p["tls"]) for p in dev["ports"]],
            [(8008, "stratum", False), (8888, "getwork", False)],
        )
        network = await self.get("/api/pools/dev/network", schema_path="/api/pools/{pool}/network")
        self.assertEqual([(d["name"], d["ok"]) for d in network["daemons"]], [("main", True)])

    async def test_stats_and_history(self) -> None:
        """NOMP's /api/stats and /api/pool_stats hold the Ethereum pool under its coin."""
        stats = await self.get("/api/stats", schema_path="/api/stats")
        dev = stats["pools"][self.keys.coin]
        self.assertEqual((dev["algorithm"], dev["workerCount"]), ("ethash", 3))
        self.assertEqual(sorted(dev["workers"]), sorted([f"{LOGIN}.rig1", f"{LOGIN}.rig2", f"{OTHER}.0"]))
        self.assertEqual(dev["workers"][f"{LOGIN}.rig1"]["shares"], 12_000_000_000)
        self.assertEqual(stats["algos"]["ethash"]["workers"], 3)
        self.assertEqual(stats["global"]["workers"], 4)
        (entry,) = await self.get("/api/pool_stats", schema_path="/api/pool_stats")
        self.assertEqual(entry["pools"][self.keys.coin]["workerCount"], 3)

    async def test_blocks(self) -> None:
        """Every block newest first: the candidate and the immature block pending, the orphan,
        the uncle at its own height with its nephew's and its reward in wei, the block."""
        path = "/api/pools/{pool}/blocks"
        body = await self.get("/api/pools/dev/blocks", schema_path=path)
        self.assertEqual(body["total"], 5)
        rows = [
            (b["height"], b["status"], b["uncle"], b["nephewHeight"], b["hash"], b["reward"])
            for b in body["items"]
        ]
        self.assertEqual(
            rows,
            [
                (CANDIDATE_HEIGHT, "pending", False, None, None, None),
                (104, "pending", False, None, eth_block_hash(104), sum(CREDITS[104].values())),
                (ORPHAN_HEIGHT, "orphaned", False, None, None, 0),
                (
                    UNCLE_HEIGHT,
                    "confirmed",
                    True,
                    NEPHEW_HEIGHT,
                    eth_block_hash(UNCLE_HEIGHT),
                    sum(CREDITS[101].values()),
                ),
                (100, "confirmed", False, None, eth_block_hash(100), sum(CREDITS[100].values())),
            ],
        )
        first = body["items"][0]
        self.assertEqual(
            (first["worker"], first["miner"], first["txid"], first["solo"]), (None, None, "-", False)
        )
        self.assertEqual(first["effort"], 4.0)  # 3e9 + 1e9 of shares over a difficulty of 1e9
        self.assertEqual(first["time"], self.data.found_at[CANDIDATE_HEIGHT])
        orphaned = await self.get("/api/pools/dev/blocks?status=orphaned", schema_path=path)
        self.assertEqual([b["height"] for b in orphaned["items"]], [ORPHAN_HEIGHT])
        error = await self.get("/api/pools/dev/blocks?status=uncle", 400, schema_path=path)
        self.assertIn("status must be one of", error["error"])

    async def test_payments_and_miner(self) -> None:
        """The payout with its transaction hash, in the wei the payment log knows; the
        miner's balances in exact wei (found by its checksummed address too), its payout,
        its workers; a wrong checksum, or a login the pool does not know, is a 404."""
        payments = await self.get("/api/pools/dev/payments", schema_path="/api/pools/{pool}/payments")
        logged = PAYOUT // SHANNON * SHANNON
        self.assertEqual(
            payments["items"],
            [
                {
                    "id": PAYOUT_TX,
                    "txid": PAYOUT_TX,
                    "time": self.data.paid_at,
                    "total": logged,
                    "fee": None,
                    "recipients": 1,
                }
            ],
        )
        path = "/api/pools/{pool}/miners/{address}"
        miner = await self.get(f"/api/pools/dev/miners/{LOGIN_CHECKSUMMED}", schema_path=path)
        self.assertEqual(miner, await self.get(f"/api/pools/dev/miners/{LOGIN}", schema_path=path))
        self.assertEqual(miner["address"], LOGIN)
        self.assertEqual(
            (miner["immature"], miner["balance"], miner["paid"]), (LOGIN_IMMATURE, LOGIN_BALANCE, PAYOUT)
        )
        self.assertEqual(
            miner["payments"], [{"txid": PAYOUT_TX, "time": self.data.paid_at, "amount": logged}]
        )
        self.assertEqual([w["name"] for w in miner["workers"]], [f"{LOGIN}.rig1", f"{LOGIN}.rig2"])
        self.assertEqual(miner["hashrate"], 14_000_000_000 / HASHRATE_WINDOW)
        other = await self.get(f"/api/pools/dev/miners/{OTHER}", schema_path=path)
        self.assertEqual(
            (other["balance"], other["immature"], other["paid"]), (OTHER_BALANCE, CREDITS[104][OTHER], 0)
        )
        # The pool's fee, a balance of the pool's own address; it sends no shares.
        fee = await self.get(f"/api/pools/dev/miners/{POOL_ADDRESS}", schema_path=path)
        self.assertEqual((fee["balance"], fee["workers"]), (CREDITS[100][POOL_ADDRESS], []))
        wrong = LOGIN_CHECKSUMMED[:-1] + LOGIN_CHECKSUMMED[-1].swapcase()
        error = await self.get(f"/api/pools/dev/miners/{wrong}", 404, schema_path=path)
        self.assertIn("checksum", error["error"])
        await self.get(f"/api/pools/dev/miners/0x{'ee' * 20}", 404, schema_path=path)


class CollectorTests(RedisTestCase):
    """The collector's reads of an Ethereum-family pool, on a task.Clock."""

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.clock = task.Clock()
        self.clock.advance(NOW)

    def collector(self, redis: Any = None) -> StatsCollector:
        return StatsCollector(
            lambda: [self.eth], redis or self.redis.client, self.clock, interval=60.0, retention=3600.0
        )

    def command(self, *args: str | int | float) -> Any:
        return self.server.command(*args, db=DB)

    async def test_sums_in_redis_match_the_reference(self) -> None:
        """The Lua sums per worker equal sum_eth_shares over the same members: members
        outside the window or not OEP's, and more members than one chunk."""
        members: list[tuple[str, float]] = [
            (f"5:{LOGIN}:rig:1", NOW - 1),
            (f"-2:{LOGIN}:rig:2", NOW - 2),
            ("junk", NOW - 3),
            (f"x:{LOGIN}:rig:3", NOW - 4),
            (f"7:{LOGIN}:rig:4", NOW - HASHRATE_WINDOW - 1),
            (f"7:{LOGIN}:rig:5", NOW + 1),
            (f"7:{LOGIN}:a:b:6", NOW - 5),
        ]
        members += [
            (f"{1 + n % 7}000000000:0x{n % 13:040x}:r{n % 3}:{n}", NOW - 299 + n * 0.02)
            for n in range(12_000)
        ]
        for first in range(0, len(members), 1000):
            args: list[Any] = []
            for member, score in members[first : first + 1000]:
                args += [repr(score), member]
            self.command("ZADD", self.keys.hashrate, *args)
        collector = self.collector()
        await collector.collect()
        expected, earliest = sum_eth_shares(members, NOW - HASHRATE_WINDOW, NOW)
        (stats,) = collector.snapshot.pools
        got = {w.name: w for w in stats.workers}
        self.assertEqual(sorted(got), sorted(expected))
        for name, sums in expected.items():
            worker = got[name]
            self.assertEqual(worker.shares, sums.valid)
            self.assertEqual((worker.last_share, worker.difficulty), (sums.last_share, sums.last_difficulty))
        self.assertEqual(stats.hashrate, sum(s.valid for s in expected.values()) / HASHRATE_WINDOW)
        self.assertEqual(earliest, NOW - 299)

    async def test_balances_read_again_when_finances_change(self) -> None:
        """The miners' hashes are scanned at the first collection, and again only once the
        pool's finances changed (every script moving a miner's amount moves them too)."""
        miner = self.keys.miner(LOGIN)
        self.command("HSET", miner, "balance", "5", "balanceDust", "7")
        self.command("HSET", self.keys.finances, "balance", "5", "balanceDust", "7")
        collector = self.collector()
        await collector.collect()
        self.assertEqual(collector.snapshot.pools[0].balances.balance, {LOGIN: 5 * SHANNON + 7})
        self.command("HSET", miner, "balance", "6")
        await collector.collect()
        self.assertEqual(collector.snapshot.pools[0].balances.balance, {LOGIN: 5 * SHANNON + 7})
        self.command("HSET", self.keys.finances, "balance", "6")
        await collector.collect()
        self.assertEqual(collector.snapshot.pools[0].balances.balance, {LOGIN: 6 * SHANNON + 7})

    async def test_balances_scanned_in_steps(self) -> None:
        """More miners than one SCAN step: every one is found; keys of the coin that are not
        miners' hashes are not."""
        self.command(
            "EVAL",
            "for n = 0, 1199 do redis.call('HSET', KEYS[1] .. string.format('0x%040x', n), 'paid', n) end",
            1,
            self.keys.miner(""),
        )
        self.command("SET", self.keys.miner("0xnotahash"), "1")
        self.command("HSET", self.keys.finances, "paid", "1")
        collector = self.collector()
        await collector.collect()
        paid = collector.snapshot.pools[0].balances.paid
        self.assertEqual(len(paid), 1_200)
        self.assertEqual(paid[f"0x{1199:040x}"], 1199 * SHANNON)

    async def test_payments_follow_the_log(self) -> None:
        """New payouts are added; one the payer took back out (its transfer reverted) goes from
        the snapshot too; a member that is not a payment is passed over."""
        log = self.keys.payments_all
        self.command("ZADD", log, "100", f"0xt1:{LOGIN}:1", "150", "not:a:payment:at:all")
        collector = self.collector()
        await collector.collect()
        self.assertEqual([p.txid for p in collector.snapshot.pools[0].payments], ["0xt1"])
        self.command("ZADD", log, "200", f"0xt2:{OTHER}:2")
        await collector.collect()
        self.assertEqual([p.txid for p in collector.snapshot.pools[0].payments], ["0xt2", "0xt1"])
        self.command("ZREM", log, f"0xt2:{OTHER}:2")
        self.command("ZADD", log, "300", f"0xt3:{OTHER}:3")  # as many as before: taken out, one added
        await collector.collect()
        self.assertEqual([p.txid for p in collector.snapshot.pools[0].payments], ["0xt3", "0xt1"])
        self.command("ZREM", log, f"0xt3:{OTHER}:3")
        await collector.collect()
        self.assertEqual([p.txid for p in collector.snapshot.pools[0].payments], ["0xt1"])

    async def test_matured_read_when_it_grows(self) -> None:
        """blocks:matured crosses the wire whole only when its size changed; its blocks stay
        in the snapshot between."""
        matured = self.keys.blocks_matured
        self.command("ZADD", matured, "5", f"0:0:{NONCE}:{HASH}:1700:100:50:5", "6", "garbage")
        collector = self.collector()
        await collector.collect()
        self.assertEqual([b.height for b in collector.snapshot.pools[0].found], [5])
        sent: list[Any] = []

        def recorded(reply: Any) -> Any:
            sent.append(reply[7])
            return reply

        class Recording:
            """The real client, keeping what each read sent of blocks:matured."""

            def __init__(self, client: Any) -> None:
                self.client = client

            def eval(self, script: str, keys_: list[str], args: list[Any]) -> defer.Deferred[Any]:
                reply: defer.Deferred[Any] = self.client.eval(script, keys_, args)
                return reply.addCallback(recorded) if matured in keys_ else reply

        collector._redis = lambda: Recording(self.client())
        await collector.collect()
        self.command("ZADD", matured, "7", f"0:1:{NONCE}:0x0:1800:100:50:0")
        await collector.collect()
        self.assertIsNone(sent[0])
        self.assertEqual(len(sent[1]), 6)
        found = collector.snapshot.pools[0].found
        self.assertEqual([(b.height, b.status) for b in found], [(7, "orphaned"), (5, "confirmed")])

    async def test_redis_away_keeps_the_last_snapshot(self) -> None:
        """Redis away: the last snapshot, Ethereum pool and all, stays served and a warning is
        logged once; collections then resume."""
        await write_eth_pool(self.eth, self.redis.client, cast(IReactorTime, reactor), NOW)
        connected = [True]
        collector = self.collector(redis=lambda: self.redis.client() if connected[0] else None)
        await collector.collect()
        served = collector.snapshot
        self.assertEqual(served.pools[0].blocks.confirmed, 2)
        connected[0] = False
        self.clock.advance(60)
        with capturedLogs() as logged:
            await collector.collect()
            await collector.collect()
        self.assertIs(collector.snapshot, served)
        self.assertEqual(len([e for e in logged if e["log_level"].name == "warn"]), 1)
        connected[0] = True
        await collector.collect()
        self.assertEqual(collector.snapshot.time, NOW + 60)
        self.assertEqual(collector.snapshot.pools[0].blocks.confirmed, 2)

    async def test_miner_history_sampled(self) -> None:
        """The Ethereum pool's miners are sampled for their charts, kept in Redis as the
        Bitcoin pools' are, and read back by a new collector."""
        await write_eth_pool(self.eth, self.redis.client, cast(IReactorTime, reactor), NOW)
        self.addCleanup(self.command, "DEL", PoolKeys.for_coin(self.eth.coin.name).miner_history)
        await self.collector().collect()
        again = self.collector()
        await again.collect()
        history = again.snapshot.pools[0].miner_history[LOGIN]
        self.assertEqual([at for at, _ in history], [NOW])
        self.assertEqual(history[0][1], 14_000_000_000 / HASHRATE_WINDOW)
        self.assertEqual(
            json.loads(again.snapshot.history_json)[0]["pools"][self.keys.coin]["workerCount"], 3
        )
