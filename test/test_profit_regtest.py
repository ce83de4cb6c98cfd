"""Profit switching end to end: nomp.tap's service tree on the test's reactor with
two scrypt pools on two independent litecoind regtest chains (test_multicoin's
coins), a switch over them and profit switching reading prices from a file.

A nomp-miner mines on the switch's port. While the file prices the first coin
higher, its blocks go to the first chain; once the file prices the second coin
higher, the service switches the port and the same miner's blocks go to the
second chain, without reconnecting. The web API shows the decision.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nomp.config import load_config
from nomp.config.load import listen_address
from nomp.hashing import ALGORITHMS
from nomp.miner import Miner, connect
from nomp.service import NompService
from nomp.switching.profit import revenue_per_hash
from nomp.switching.profitservice import ProfitSwitchingService
from test.poolconf import CoinPool, renamed_coin, write_pools_conf
from test.servers import RPC_PASSWORD, RPC_USER, RedisServer, free_port, shared_regtests
from test.test_multicoin import prepare_chain
from test.test_stratum_e2e import pool_ready, start_pool
from test.waiting import until
from test.webclient import ApiClient

SCRYPT = ALGORITHMS["scrypt"]
DB = 0  # of the test's own redis-server


def profit_service(root: NompService) -> ProfitSwitchingService:
    service = root.getServiceNamed("profit-switching")
    assert isinstance(service, ProfitSwitchingService)
    return service


class ProfitSwitchingRegtestTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.pairs = shared_regtests("profit-litecoin", "profit-copycoin")
        with ThreadPoolExecutor(2) as preparing:
            list(preparing.map(prepare_chain, self.pairs))
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)

    def write_conf(self, prices: Path) -> tuple[Path, int]:
        """The two pools, a switch over them on a port of its own, profit switching
        every second from ``prices``; (conf folder, the switch's port)."""
        pools = [
            CoinPool(name, coin, pair.miner.url, pair.new_address(), RPC_USER, RPC_PASSWORD)
            for (name, coin), pair in zip(
                (("litecoin", "litecoin-regtest"), ("copycoin", "copycoin-regtest")), self.pairs, strict=True
            )
        ]
        second = renamed_coin("litecoin-regtest", "copycoin-regtest", "rCPY")
        # A whole rCPY is 10^9 base units: a tenth of what the same reward of rLTC is worth.
        second["decimals"] = 9
        conf, _ = write_pools_conf(
            Path(self.mktemp()), pools, self.redis.port, DB, coins={"copycoin-regtest": second}
        )
        switch_port = free_port()
        settings = yaml.safe_load((conf / "config.yaml").read_text())
        settings["switching"] = {
            "scrypt": {
                "algorithm": "scrypt",
                "pools": ["litecoin", "copycoin"],
                "ports": [{"listen": f"tcp:{switch_port}:interface=127.0.0.1", "diff": 0.0625}],
            }
        }
        settings["profit_switching"] = {
            "interval": 1,
            "hysteresis": "0.05",
            "minimum_stay": 0,
            "prices": {"file": str(prices), "unit": "BTC"},
        }
        (conf / "config.yaml").write_text(yaml.safe_dump(settings))
        return conf, switch_port

    async def test_price_change_moves_the_miners(self) -> None:
        """The dearer coin gets the blocks; a price change switches the port and the miner follows."""
        prices = Path(self.mktemp())
        prices.write_text(json.dumps({"rLTC": "0.002", "rCPY": "0.0001"}))
        conf, switch_port = self.write_conf(prices)
        config = load_config(conf)
        root = start_pool(self, conf)
        await until(lambda: pool_ready(root))
        self.assertEqual(root.fatal_errors, [])
        profit = profit_service(root)
        await until(lambda: bool(profit.snapshot().switches))
        (state,) = profit.snapshot().switches
        self.assertEqual((state.current, state.decision.reason), ("litecoin", "litecoin earns the most"))
        # Each pool is valued by its own coin file's decimals.
        for pool, decimals in (("litecoin", 8), ("copycoin", 9)):
            estimate = state.ranking.estimate(pool)
            assert estimate is not None
            expected = revenue_per_hash(estimate.reward, decimals, estimate.price, estimate.target)
            self.assertEqual(estimate.revenue, expected)

        litecoin, copycoin = self.pairs
        address = litecoin.new_address()  # a regtest address: both coins' network
        miner = Miner(reactor, SCRYPT, f"{address}.rig", threads=1)
        self.addCleanup(miner.stop)
        await connect(miner, "127.0.0.1", switch_port)
        self.assertTrue(await miner.authorized)
        start = (litecoin.height(), copycoin.height())
        miner.start()
        await until(lambda: litecoin.height() >= start[0] + 2, timeout=120)
        self.assertEqual(copycoin.height(), start[1])

        prices.write_text(json.dumps({"rLTC": "0.0001", "rCPY": "0.002"}))
        await until(lambda: profit.snapshot().switches[0].current == "copycoin", timeout=30)
        moved = (litecoin.height(), copycoin.height())
        await until(lambda: copycoin.height() >= moved[1] + 2, timeout=120)
        await miner.stop()
        # A share of the old job in flight at the move may still have been a block there.
        self.assertLessEqual(litecoin.height(), moved[0] + 1)
        self.assertEqual(miner.connections, 1)  # moved, not reconnected
        self.assertGreater(miner.stats.accepted, 0)

        web = listen_address(config.settings.web.listen)
        assert web is not None
        api = ApiClient(self, f"http://127.0.0.1:{web[1]}")
        body = await api.get("/api/switching/profit", schema_path="/api/switching/profit")
        (switch,) = body["switches"]
        self.assertEqual(switch["current"], "copycoin")
        self.assertEqual(switch["switches"]["done"], 1)
        self.assertEqual([e["pool"] for e in switch["ranking"]], ["copycoin", "litecoin"])
        self.assertEqual(body["prices"]["ok"], True)
