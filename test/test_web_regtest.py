"""The web API after a real mining run: nomp-miner mines through the pool on
litecoind regtest, some blocks are orphaned, the rest mature and are paid by
the wallet, and the API answers with the values the chain, the miners and
the payment runs give (over real HTTP, each answer checked against the
OpenAPI document)."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from nomp.chain.encoding import bits_to_target
from nomp.config import load_config
from nomp.config.load import listen_address
from nomp.hashing import ALGORITHMS
from nomp.minerkit import MinerStats
from nomp.service import NompService
from nomp.web.service import WebService
from test.rediscli import redis, redis_hash
from test.servers import RegtestPair, shared_redis
from test.test_payments_regtest import (
    COIN,
    MATURITY,
    mine_blocks,
    payment_service,
    payments_pair,
    received,
    recorders_idle,
    start_paying_pool,
)
from test.waiting import until
from test.webclient import ApiClient

DB = 14  # of the shared redis-server
SCRYPT = ALGORITHMS["scrypt"]
SHARE_DIFFICULTY = 0.0625  # the port's: on regtest every such share is a block
WINDOW = 3600.0  # the hashrate window: the whole test's shares stay in it
POOL = "litecoin"  # the pool file's stem
REGTEST_DIFFICULTY = SCRYPT.difficulty_of(bits_to_target(0x207FFFFF))  # in share units


class ApiAfterMiningTests(TestCase):
    timeout = 600

    async def start(self, pair: RegtestPair) -> tuple[NompService, int, list[str]]:
        port = shared_redis().port
        redis(port, DB, "FLUSHDB")
        # The test collects the stats itself: the collector's own timer, at
        # a time of its choosing, would take the miners' history sample early
        # (one per step), so what a miner's chart shows would hang on timing.
        root, conf, stratum_port, miners = await start_paying_pool(
            self,
            pair,
            port,
            DB,
            "prop",
            pool_options={"hashrate_window": WINDOW},
            web={"stats_interval": 3600},
        )
        # The collector's first collection (or its retry, if Redis was not
        # yet connected) happens before anyone mines, so the one sample the
        # test takes after mining is every miner's first.
        web = root.getServiceNamed("web")
        assert isinstance(web, WebService)
        await until(lambda: web.collector.collected)
        web_port = listen_address(load_config(conf).settings.web.listen)
        assert web_port is not None
        self.api = ApiClient(self, f"http://127.0.0.1:{web_port[1]}")
        return root, stratum_port, miners

    async def mine(self, address: str, stratum_port: int, pair: RegtestPair, blocks: int) -> MinerStats:
        return await mine_blocks(self, address, stratum_port, pair, blocks)

    async def collected(self, root: NompService) -> None:
        """The stats collected now (the collector's timer would do it within its interval)."""
        web = root.getServiceNamed("web")
        assert isinstance(web, WebService)
        await web.collector.collect()

    async def test_values_after_mining_orphans_and_payments(self) -> None:
        pair = payments_pair()
        root, stratum_port, (alice, bob) = await self.start(pair)
        service = payment_service(root)
        port = shared_redis().port

        # Alice's blocks are reorganised away; Bob's mature and are paid.
        start = pair.height()
        alice_stats = await self.mine(alice, stratum_port, pair, blocks=2)
        await until(lambda: recorders_idle(root))
        first = await service.run_once()
        assert first is not None
        pair.miner.rpc("invalidateblock", pair.miner.rpc("getblockhash", start + 1))
        # A block of hers waiting on a side branch at that height would otherwise
        # become the tip the node mines on, and so not be orphaned.
        for block_hash in first.waiting:
            pair.miner.rpc("invalidateblock", block_hash)
        pair.generate(pair.height() - start + 10)
        orphaning = await service.run_once()
        assert orphaning is not None
        # Alice's blocks, and any block of hers that another beat at its height (it waited on
        # its side branch: a second block found on one job).
        self.assertEqual(sorted(orphaning.orphaned), sorted([*first.immature, *first.waiting]))
        bob_stats = await self.mine(bob, stratum_port, pair, blocks=3)
        await until(lambda: recorders_idle(root))
        immature_run = await service.run_once()
        assert immature_run is not None
        await self.collected(root)

        # Before maturity: Bob's blocks pending, his credit immature.
        pending = await self.api.get(
            f"/api/pools/{POOL}/blocks?status=pending", schema_path="/api/pools/{pool}/blocks"
        )
        self.assertEqual(
            sorted(b["hash"] for b in pending["items"]),
            sorted([*immature_run.immature, *immature_run.waiting]),
        )
        self.assertTrue(all(b["miner"] == bob for b in pending["items"]))
        bob_view = await self.api.get(
            f"/api/pools/{POOL}/miners/{bob}", schema_path="/api/pools/{pool}/miners/{address}"
        )
        immature = int(redis_hash(port, DB, f"{COIN}:pay:immature")[bob])
        self.assertGreater(immature, 0)
        self.assertEqual((bob_view["immature"], bob_view["balance"], bob_view["paid"]), (immature, 0, 0))

        pair.generate(MATURITY)
        paying = await service.run_once()
        assert paying is not None
        self.assertIsNone(paying.error)
        self.assertEqual(sorted(paying.confirmed), sorted(immature_run.immature))
        await self.collected(root)

        # Block statuses and efforts.
        listed = await self.api.get(
            f"/api/pools/{POOL}/blocks?per_page=500", schema_path="/api/pools/{pool}/blocks"
        )
        by_status: dict[str, list[dict[str, Any]]] = {"pending": [], "confirmed": [], "orphaned": []}
        for block in listed["items"]:
            by_status[block["status"]].append(block)
        orphaned = sorted([*orphaning.orphaned, *immature_run.orphaned, *paying.orphaned])
        self.assertEqual(sorted(b["hash"] for b in by_status["orphaned"]), orphaned)
        self.assertEqual(sorted(b["hash"] for b in by_status["confirmed"]), sorted(paying.confirmed))
        self.assertEqual(by_status["pending"], [])
        self.assertEqual(listed["total"], len(orphaned) + len(paying.confirmed))
        heights = [b["height"] for b in listed["items"]]
        self.assertEqual(heights, sorted(heights, reverse=True))  # newest first
        for block in listed["items"]:
            detail = redis_hash(port, DB, f"{COIN}:block:{block['hash']}")
            self.assertEqual(block["reward"], int(detail["reward"]))
            self.assertEqual(block["txid"], detail["txid"])
            self.assertEqual(pair.miner.rpc("getblockheader", block["hash"])["height"], block["height"])
        # Effort: each confirmed block's round (PROP: its shares) over the network difficulty.
        confirmed_work = 0.0
        for block in by_status["confirmed"]:
            detail = redis_hash(port, DB, f"{COIN}:block:{block['hash']}")
            work = sum(float(v) for v in redis_hash(port, DB, detail["round"]).values())
            self.assertAlmostEqual(block["effort"], work / REGTEST_DIFFICULTY, delta=block["effort"] * 1e-9)
            confirmed_work += work
        # Every accepted share is in exactly one confirmed round or still in the current one
        # (the orphaned rounds went back to the current round and so to Bob's first block).
        current = sum(float(v) for v in redis_hash(port, DB, f"{COIN}:shares:roundCurrent").values())
        accepted = (alice_stats.accepted + bob_stats.accepted) * SHARE_DIFFICULTY
        self.assertAlmostEqual(confirmed_work + current, accepted, places=9)
        alices = set(orphaning.orphaned)
        orphaned_work = (
            sum(b["effort"] for b in by_status["orphaned"] if b["hash"] in alices) * REGTEST_DIFFICULTY
        )
        self.assertGreater(orphaned_work, 0)
        self.assertLessEqual(orphaned_work, alice_stats.accepted * SHARE_DIFFICULTY + 1e-9)

        # Payments: the one payout, as the wallet sent it.
        payments = await self.api.get(f"/api/pools/{POOL}/payments", schema_path="/api/pools/{pool}/payments")
        (record_json,) = redis(port, DB, "ZRANGE", f"{COIN}:payments", "0", "-1")
        record = json.loads(record_json)
        (payout,) = payments["items"]
        self.assertEqual((payout["txid"], payout["recipients"]), (record["txid"], 2))
        self.assertEqual(payout["total"], sum(paying.paid.values()))
        self.assertEqual(payout["fee"], int(record["fee"]))
        self.assertEqual(
            pair.miner.rpc("gettransaction", payout["txid"], wallet=pair.wallet)["txid"], payout["txid"]
        )

        # Each miner: what the node says they received, their shares and hashrate.
        for address, stats in ((alice, alice_stats), (bob, bob_stats)):
            view = await self.api.get(
                f"/api/pools/{POOL}/miners/{address}", schema_path="/api/pools/{pool}/miners/{address}"
            )
            got = received(pair, address)
            self.assertEqual(got, paying.paid[address])
            self.assertEqual((view["immature"], view["balance"], view["paid"]), (0, 0, got))
            self.assertEqual(
                view["payments"], [{"txid": payout["txid"], "time": payout["time"], "amount": got}]
            )
            (worker,) = view["workers"]
            shares = stats.accepted * SHARE_DIFFICULTY
            self.assertEqual((worker["name"], worker["shares"]), (f"{address}.rig", shares))
            self.assertEqual(worker["difficulty"], SHARE_DIFFICULTY)
            expected_rate = shares * 2**32 / SCRYPT.multiplier / WINDOW
            self.assertAlmostEqual(view["hashrate"], expected_rate, delta=expected_rate * 1e-12)
            self.assertEqual(len(view["history"]), 1)
        self.assertGreater(bob_stats.accepted, 0)

        # The pool and the network, as the node reports them.
        pool = await self.api.get(f"/api/pools/{POOL}", schema_path="/api/pools/{pool}")
        self.assertEqual(
            pool["blocks"],
            {"pending": 0, "confirmed": len(paying.confirmed), "orphaned": len(orphaned)},
        )
        self.assertEqual((pool["miners"], pool["workers"]), (2, 2))
        self.assertEqual(pool["lastBlock"]["hash"], listed["items"][0]["hash"])
        network = await self.api.get(f"/api/pools/{POOL}/network", schema_path="/api/pools/{pool}/network")
        (daemon,) = network["daemons"]
        info = pair.miner.rpc("getmininginfo")
        self.assertEqual(
            (daemon["ok"], daemon["height"], daemon["difficulty"]),
            (True, info["blocks"], float(info["difficulty"])),
        )
        self.assertEqual(pool["network"]["height"], info["blocks"])
        stats = await self.api.get("/api/stats", schema_path="/api/stats")
        self.assertEqual(stats["pools"][COIN]["hashrate"], pool["hashrate"])
        self.assertEqual(stats["pools"][COIN]["blocks"], pool["blocks"])
        missing = await self.api.get(f"/api/pools/{POOL}/miners/{pair.new_address()}", 404)
        self.assertIn("no miner", missing["error"])
