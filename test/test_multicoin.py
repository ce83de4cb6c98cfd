"""Two coins in one pool process, mining at the same time.

One service tree (nomp.tap's, on the test's reactor) runs two pool files: the
shipped Litecoin regtest coin, and a second coin the test writes (the same
chain rules under another name and symbol, so its Redis keys are its own).
Each pool has its own litecoind regtest pair (two independent chains), and
both share one redis-server, the hashing threads, the control port and the web
site. nomp-miner mines on both Stratum ports at once; then each coin's keys
are checked to hold only its own shares and blocks, each pool's payments pay
its miners on its own chain to the satoshi, the web API shows each pool with
its own blocks and payouts, and a block notification for one coin refreshes
that pool alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from nomp.chain.address import decode_address
from nomp.config import Config, load_config
from nomp.config.load import listen_address
from nomp.config.model import NetworkConfig
from nomp.hashing import ALGORITHMS
from nomp.miner import Miner, connect
from nomp.minerkit import MinerStats
from nomp.payments.processor import RunReport
from nomp.payments.service import PaymentService
from nomp.pool.service import PoolService
from nomp.service import NompService
from nomp.store.schema import parse_hashrate_member
from nomp.web.service import WebService
from test.chainhelpers import coinbase_outputs
from test.poolconf import CoinPool, renamed_coin, write_pools_conf
from test.rediscli import redis, redis_hash
from test.servers import (
    RPC_PASSWORD,
    RPC_USER,
    NodeRPCError,
    RedisServer,
    RegtestPair,
    shared_regtests,
)
from test.test_control import run_nomp_cli
from test.test_payments_regtest import (
    FEE_PERCENT,
    MATURITY,
    MINERS_WALLET,
    expected_split,
    received,
    recorders_idle,
)
from test.test_stratum_e2e import pool_ready, start_pool
from test.waiting import until
from test.webclient import ApiClient

SCRYPT = ALGORITHMS["scrypt"]
DB = 0  # of the test's own redis-server
BLOCKS_EACH = 2  # blocks each miner mines on its chain
SHARED_KEYS = {"statHistory"}  # the web's history: one entry for every pool
SHARED_PREFIX = "nomp:instance:"  # the process's extranonce1 byte, one for all its pools
NOT_FOUND = -5  # litecoind's RPC error for a block or transaction it does not know


@dataclass
class Coin:
    """One of the two pools, with its chain and its miners."""

    pool: str  # the pool file's stem: the pool's name
    coin: str  # the coin's name: its Redis keys' prefix
    symbol: str
    pair: RegtestPair
    pool_address: str = ""
    miners: list[str] = field(default_factory=list)  # two payout addresses, mining one after the other
    stratum_port: int = 0
    stats: dict[str, MinerStats] = field(default_factory=dict)  # by payout address

    def workers(self) -> set[str]:
        return {f"{address}.rig" for address in self.miners}


def prepare_chain(pair: RegtestPair) -> None:
    """Past MWEB's activation, with a wallet for the miners apart from the pool's."""
    if pair.height() < 440:
        pair.generate_to(440)
    try:
        pair.miner.rpc("createwallet", MINERS_WALLET)
    except NodeRPCError as e:
        if "already exists" not in e.message and "already loaded" not in e.message:
            raise


def known_to(pair: RegtestPair, method: str, item: str) -> bool:
    """Whether the pair's node knows the block or transaction ``item``."""
    try:
        pair.miner.rpc(method, item)
    except NodeRPCError as e:
        if e.code == NOT_FOUND:
            return False
        raise
    return True


def template_requests(metrics: str) -> dict[str, int]:
    """getblocktemplate calls so far, by pool, from the /metrics text."""
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics):
        if family.name != "nomp_daemon_rpc_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels["method"] == "getblocktemplate":
                pool = sample.labels["pool"]
                counts[pool] = counts.get(pool, 0) + int(sample.value)
    return counts


def pool_service(root: NompService, name: str) -> PoolService:
    service = root.getServiceNamed(f"pool:{name}")
    assert isinstance(service, PoolService)
    return service


def payment_service(root: NompService, name: str) -> PaymentService:
    (payer,) = [s for s in pool_service(root, name) if isinstance(s, PaymentService)]
    return payer


def job_height(root: NompService, name: str) -> int:
    """The height of the block the pool's current job builds."""
    registry = pool_service(root, name).registry
    assert registry is not None and registry.current is not None
    return registry.current.template.height


def job_at(root: NompService, name: str, height: int) -> Callable[[], bool]:
    """Whether the pool's current job builds the block at ``height``, when called."""
    return lambda: job_height(root, name) == height


class TwoCoinsInOneProcessTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        litecoin_pair, copycoin_pair = shared_regtests("multicoin-litecoin", "multicoin-copycoin")
        with ThreadPoolExecutor(2) as preparing:
            list(preparing.map(prepare_chain, (litecoin_pair, copycoin_pair)))
        self.coins = [
            Coin("litecoin", "litecoin-regtest", "rLTC", litecoin_pair),  # the shipped coin file
            Coin("copycoin", "copycoin-regtest", "rCPY", copycoin_pair),  # written by the test
        ]
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)

    def write_conf(self) -> Config:
        pools = []
        for coin in self.coins:
            pair = coin.pair
            coin.pool_address = pair.new_address()
            coin.miners = [
                str(pair.miner.rpc("getnewaddress", "", "bech32", wallet=MINERS_WALLET)) for _ in range(2)
            ]
            payments = {
                "enabled": True,
                "interval": 3600,  # the test runs the payments itself
                "scheme": "prop",
                "fee_percent": str(FEE_PERCENT),
                "minimum_payment": "0.001",
                "orphan_depth": 2,
                "daemon": {
                    "url": f"{pair.miner.url}/wallet/{pair.wallet}",
                    "user": RPC_USER,
                    "password": RPC_PASSWORD,
                },
            }
            options = {
                "payments": payments,
                # New blocks only from the pool's own finds and from blocknotify:
                # no poll or rebroadcast refreshes a pool behind the test's back.
                "block_refresh_interval": 3600,
                "job_rebroadcast_timeout": 0,
                "hashrate_window": 3600,
            }
            pools.append(
                CoinPool(
                    coin.pool,
                    coin.coin,
                    pair.miner.url,
                    coin.pool_address,
                    RPC_USER,
                    RPC_PASSWORD,
                    options=options,
                )
            )
        second = renamed_coin("litecoin-regtest", "copycoin-regtest", "rCPY")
        conf, ports = write_pools_conf(
            Path(self.mktemp()),
            pools,
            self.redis.port,
            DB,
            coins={"copycoin-regtest": second},
            web={"stats_interval": 3600},  # the test collects the stats itself
        )
        for coin in self.coins:
            coin.stratum_port = ports[coin.pool]
        return load_config(conf)

    def network(self, coin: Coin) -> NetworkConfig:
        """The coin's network as the pool read it from its coin file."""
        (pool,) = [p for p in self.config.pools if p.name == coin.pool]
        return pool.coin.network

    async def mine_together(self, work: Sequence[tuple[Coin, str]]) -> None:
        """A nomp-miner for each (coin, address), all connected and authorized before any
        starts; each stops once its chain is BLOCKS_EACH blocks higher."""
        miners = []
        for coin, address in work:
            miner = Miner(reactor, SCRYPT, f"{address}.rig", threads=1)
            self.addCleanup(miner.stop)  # a test that fails midway leaves no miner's threads behind
            await connect(miner, "127.0.0.1", coin.stratum_port)
            self.assertTrue(await miner.authorized)
            miners.append(miner)

        async def mine(coin: Coin, address: str, miner: Miner) -> None:
            start = coin.pair.height()
            miner.start()
            await until(lambda: coin.pair.height() >= start + BLOCKS_EACH, timeout=120)
            await miner.stop()
            coin.stats[address] = miner.stats

        await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(mine(coin, address, miner))
                for (coin, address), miner in zip(work, miners, strict=True)
            ],
            consumeErrors=True,
        )

    async def test_two_coins_mining_at_once(self) -> None:
        """Both pools mine, record, pay and serve their own coin; a blocknotify moves one."""
        config = self.config = self.write_conf()
        self.assertEqual(sorted(p.coin.name for p in config.pools), sorted(c.coin for c in self.coins))
        root = self.root = start_pool(self, config.directory)
        await until(lambda: pool_ready(root))
        self.assertEqual(root.fatal_errors, [])
        starts = {coin.pool: coin.pair.height() for coin in self.coins}

        # The first miner of each coin, both at once; then the second of each.
        for turn in range(2):
            await self.mine_together([(coin, coin.miners[turn]) for coin in self.coins])
        await until(lambda: recorders_idle(root))

        main_chain = self.check_keys(starts)
        reports = await self.pay(main_chain)
        web_port = listen_address(config.settings.web.listen)
        assert web_port is not None
        api = ApiClient(self, f"http://127.0.0.1:{web_port[1]}")
        await self.check_web(root, api, reports)
        await self.check_blocknotify(root, config, api)

    def check_keys(self, starts: dict[str, int]) -> dict[str, set[str]]:
        """Every key in Redis is one coin's or one of the few every pool shares; each coin's
        hold only its own miners' shares and its own chain's blocks. Each pool's blocks
        in its chain's main chain (since ``starts``, the heights by pool), by pool name."""
        port = self.redis.port
        prefixes = tuple(f"{coin.coin}:" for coin in self.coins)
        main_chain: dict[str, set[str]] = {}
        for key in redis(port, DB, "KEYS", "*"):
            self.assertTrue(
                key.startswith(prefixes) or key in SHARED_KEYS or key.startswith(SHARED_PREFIX), key
            )
        for coin, other in zip(self.coins, self.coins[::-1], strict=True):
            workers = coin.workers()
            keys = redis(port, DB, "KEYS", f"{coin.coin}:*")
            self.assertTrue(keys)
            rounds = [k for k in keys if k.startswith(f"{coin.coin}:shares:round")]
            credited: set[str] = set()
            for key in rounds:
                credited |= set(redis_hash(port, DB, key))
            self.assertEqual(credited, workers)
            hashrate = redis(port, DB, "ZRANGE", f"{coin.coin}:hashrate", "0", "-1")
            members = [parse_hashrate_member(m) for m in hashrate]
            self.assertEqual({m[1] for m in members if m is not None}, workers)
            counters = redis_hash(port, DB, f"{coin.coin}:stats")
            self.assertEqual(int(counters["validShares"]), sum(s.accepted for s in coin.stats.values()))

            # The blocks: ours on this chain, each recorded by this coin alone.
            pool_script = decode_address(coin.pool_address, self.network(coin)).script.hex()
            ours = set()
            for height in range(starts[coin.pool] + 1, coin.pair.height() + 1):
                block_hash = coin.pair.miner.rpc("getblockhash", height)
                if coinbase_outputs(coin.pair, block_hash)[0][0] == pool_script:
                    ours.add(block_hash)
            self.assertGreaterEqual(len(ours), 2 * BLOCKS_EACH)
            pending = [m.split(":") for m in redis(port, DB, "SMEMBERS", f"{coin.coin}:blocksPending")]
            recorded = {fields[0] for fields in pending}
            self.assertLessEqual(ours, recorded)
            for block_hash, _, _, worker, *_ in pending:
                self.assertIn(worker, workers)
                self.assertTrue(known_to(coin.pair, "getblockheader", block_hash))
                self.assertFalse(known_to(other.pair, "getblockheader", block_hash))
            self.assertEqual(int(counters["validBlocks"]), len(recorded))
            main_chain[coin.pool] = ours
        return main_chain

    async def pay(self, main_chain: dict[str, set[str]]) -> dict[str, tuple[RunReport, list[str]]]:
        """Both pools' payments, run at once: first the blocks are immature, then, once
        both chains have matured them, each pool pays its miners on its own chain.
        ``main_chain``: each pool's blocks in its chain, by pool name. By pool name: the
        paying run's report and every block either run orphaned (a side-branch block
        can already be deep enough to orphan at the first run)."""
        port = self.redis.port

        async def run(coin: Coin) -> RunReport:
            report = await payment_service(self.root, coin.pool).run_once()
            assert report is not None
            self.assertIsNone(report.error)
            return report

        async def both() -> list[RunReport]:
            return list(
                await defer.gatherResults(
                    [defer.Deferred.fromCoroutine(run(coin)) for coin in self.coins], consumeErrors=True
                )
            )

        pending = {c.pool: redis(port, DB, "SMEMBERS", f"{c.coin}:blocksPending") for c in self.coins}
        first = await both()
        for coin, report in zip(self.coins, first, strict=True):
            # Two blocks found on one job (the second before the miner had the next
            # job) compete at one height: the node keeps the loser off the main
            # chain, and the run leaves it waiting until it is deep enough to orphan.
            self.assertEqual(
                sorted(report.immature + list(report.waiting) + report.orphaned),
                sorted(m.split(":")[0] for m in pending[coin.pool]),
            )
            self.assertEqual(set(report.immature), main_chain[coin.pool])
            self.assertEqual(report.paid, {})
        with ThreadPoolExecutor(2) as maturing:
            list(maturing.map(lambda coin: coin.pair.generate(MATURITY), self.coins))
        second = await both()

        reports = {}
        for coin, other, before, report in zip(self.coins, self.coins[::-1], first, second, strict=True):
            reports[coin.pool] = (report, before.orphaned + report.orphaned)
            self.assertEqual(set(report.confirmed), main_chain[coin.pool])
            self.assertEqual(
                sorted(report.confirmed + report.orphaned + before.orphaned),
                sorted(m.split(":")[0] for m in pending[coin.pool]),
            )
            pool_script = decode_address(coin.pool_address, self.network(coin)).script.hex()
            expected = {address: 0 for address in coin.miners}
            for block_hash in report.confirmed:
                reward = sum(
                    v for script, v in coinbase_outputs(coin.pair, block_hash) if script == pool_script
                )
                detail = redis_hash(port, DB, f"{coin.coin}:block:{block_hash}")
                for address, amount in expected_split(reward, redis_hash(port, DB, detail["round"])).items():
                    expected[address] += amount
            self.assertTrue(all(amount > 0 for amount in expected.values()), expected)
            self.assertEqual(report.paid, expected)
            self.assertEqual({a: received(coin.pair, a) for a in coin.miners}, expected)
            paid = {a: int(v) for a, v in redis_hash(port, DB, f"{coin.coin}:pay:paid").items()}
            self.assertEqual(paid, expected)
            self.assertEqual(redis_hash(port, DB, f"{coin.coin}:pay:immature"), {})
            self.assertEqual(redis_hash(port, DB, f"{coin.coin}:pay:balance"), {})
            # The payout is a transaction of this chain alone.
            assert report.txid is not None
            self.assertTrue(known_to(coin.pair, "getrawtransaction", report.txid))
            self.assertFalse(known_to(other.pair, "getrawtransaction", report.txid))
        return reports

    async def check_web(
        self, root: NompService, api: ApiClient, reports: dict[str, tuple[RunReport, list[str]]]
    ) -> None:
        """The API lists both pools, each with its own blocks, payout and miners; each
        pool has its own page."""
        web = root.getServiceNamed("web")
        assert isinstance(web, WebService)
        await web.collector.collect()

        listed = await api.get("/api/pools", schema_path="/api/pools")
        self.assertEqual(
            {(p["name"], p["coin"], p["symbol"]) for p in listed},
            {(c.pool, c.coin, c.symbol) for c in self.coins},
        )
        stats = await api.get("/api/stats", schema_path="/api/stats")
        self.assertEqual(set(stats["pools"]), {c.coin for c in self.coins})
        for coin, other in zip(self.coins, self.coins[::-1], strict=True):
            report, orphaned = reports[coin.pool]
            pool = await api.get(f"/api/pools/{coin.pool}", schema_path="/api/pools/{pool}")
            self.assertEqual(
                pool["blocks"],
                {"pending": 0, "confirmed": len(report.confirmed), "orphaned": len(orphaned)},
            )
            self.assertEqual((pool["miners"], pool["workers"]), (2, 2))
            self.assertEqual(pool["network"]["height"], coin.pair.height())
            blocks = await api.get(
                f"/api/pools/{coin.pool}/blocks?per_page=500", schema_path="/api/pools/{pool}/blocks"
            )
            self.assertEqual(sorted(b["hash"] for b in blocks["items"]), sorted(report.confirmed + orphaned))
            payments = await api.get(
                f"/api/pools/{coin.pool}/payments", schema_path="/api/pools/{pool}/payments"
            )
            (payout,) = payments["items"]
            self.assertEqual((payout["txid"], payout["total"]), (report.txid, sum(report.paid.values())))
            for address in coin.miners:
                view = await api.get(
                    f"/api/pools/{coin.pool}/miners/{address}",
                    schema_path="/api/pools/{pool}/miners/{address}",
                )
                self.assertEqual(
                    (view["immature"], view["balance"], view["paid"]), (0, 0, report.paid[address])
                )
                # A miner of one coin is nobody in the other's pool.
                await api.get(f"/api/pools/{other.pool}/miners/{address}", 404)

            response = await treq.get(f"{api.base}/pools/{coin.pool}", pool=api.http)
            self.assertEqual(response.code, 200)
            page = (await response.text()).split("<title>", 1)[1]
            self.assertIn(f"{coin.pool} ({coin.symbol})", page.split("</title>", 1)[0])

    async def check_blocknotify(self, root: NompService, config: Config, api: ApiClient) -> None:
        """``blocknotify`` for one coin, through nomp-cli and the control port, fetches a
        template for that pool alone: the other's job stays on its old block although
        its chain moved on (the maturing blocks)."""
        control = listen_address(config.settings.control.listen)
        assert control is not None

        async def template_counts() -> dict[str, int]:
            response = await treq.get(f"{api.base}/metrics", pool=api.http)
            return template_requests(await response.text())

        # Each step: the coin notified, as the daemon's blocknotify names it (a pool
        # name, or a coin name), and whether a block hash comes with it.
        for coin, other, named, with_hash in (
            (self.coins[0], self.coins[1], self.coins[0].pool, True),
            (self.coins[1], self.coins[0], self.coins[1].coin, False),
        ):
            before = await template_counts()
            other_height = job_height(root, other.pool)
            (block_hash,) = coin.pair.generate(1)
            self.assertLess(job_height(root, coin.pool), coin.pair.height() + 1)
            command = ["blocknotify", named, *([block_hash] if with_hash else [])]
            status, output = await run_nomp_cli("--control", f"127.0.0.1:{control[1]}", *command)
            self.assertEqual((status, output), (0, f"ok {coin.pool} notified\n"))
            await until(job_at(root, coin.pool, coin.pair.height() + 1))
            after = await template_counts()
            self.assertGreater(after[coin.pool], before[coin.pool])
            self.assertEqual(after[other.pool], before[other.pool])
            self.assertEqual(job_height(root, other.pool), other_height)
