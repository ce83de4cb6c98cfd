"""The whole service tree with an Ethereum-family pool, as twistd builds it: a miner
mines on the dev node through the pool's stratum port, and the site's API on the
web port shows the pool, its login (looked up by its checksummed address) and the
candidates it found, from what the pool wrote to a real redis-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from nomp.config import load_config
from nomp.eth.service import EthPoolService
from nomp.ethminer import EthProxyMiner, connect, parse_eth_url
from nomp.service import NompService
from nomp.tap import build_service
from test.ethnode import start_dev_node
from test.ethpool import ETHERBASE, LOGIN, LOGIN_CHECKSUMMED, POOL_ADDRESS
from test.servers import free_port, shared_redis
from test.test_config_paths import SHIPPED_COINS
from test.webclient import ApiClient

DB = 12  # of the shared redis-server, emptied first
SHARE_DIFF = 8
NETWORK_DIFF = 32  # one share in four is a block
SHARES = 32  # none of 32 shares a block: a 1-in-10,000 run


class SiteTests(TestCase):
    timeout = 240

    def conf(self, redis_port: int, node_url: str) -> Path:
        folder = Path(self.mktemp())
        (folder / "pools").mkdir(parents=True)
        settings = {
            "coins": str(SHIPPED_COINS),
            "instance": 3,
            "redis": {"port": redis_port, "db": DB},
            "control": {"listen": f"tcp:{free_port()}:interface=127.0.0.1"},
            "web": {"listen": f"tcp:{self.web}:interface=127.0.0.1", "stats_interval": 0.2},
            "logging": {"level": "warn"},
        }
        pool = {
            "coin": "ethash-dev",
            "address": POOL_ADDRESS,
            "daemons": [{"url": node_url, "timeout": 5}],
            "ports": [{"listen": f"tcp:{self.stratum}:interface=127.0.0.1", "diff": SHARE_DIFF}],
            "block_refresh_interval": 0.05,
            "state_update_interval": 0.2,
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(settings))
        (folder / "pools" / "dev.yaml").write_text(yaml.safe_dump(pool))
        return folder

    async def test_mined_shares_on_the_site(self) -> None:
        redis = shared_redis()
        redis.command("FLUSHDB", db=DB)
        node = start_dev_node(self, ETHERBASE, difficulty=NETWORK_DIFF)
        self.stratum, self.web = free_port(), free_port()
        root: NompService = build_service(
            load_config(self.conf(redis.port, node.url)),
            reactor,
            exit_with=lambda status: None,
            shutdown=lambda: None,
        )
        root.startService()
        self.addCleanup(lambda: root.stopService() if root.running else None)
        pool = root.getServiceNamed("pool:dev")
        assert isinstance(pool, EthPoolService)
        for _ in range(400):
            if pool.ready and pool.hashers.caches.peek(0, 0) is not None:
                break
            await deferLater(reactor, 0.025, lambda: None)
        self.assertTrue(pool.ready)
        miner = EthProxyMiner(reactor, LOGIN_CHECKSUMMED, "x", "proxy", max_shares=SHARES)
        await connect(miner, parse_eth_url(f"ethproxy+tcp://127.0.0.1:{self.stratum}"))
        self.assertTrue(await miner.authorized, miner.refusal)
        miner.start()
        await miner.finished
        await miner.stop()

        api = ApiClient(self, f"http://127.0.0.1:{self.web}")
        found = node.chain.height
        self.assertGreaterEqual(found, 1, "the pool found blocks")
        # Until a collection after the last share and candidate were written.
        path = "/api/pools/{pool}/miners/{address}"
        for _ in range(200):
            pools: list[Any] = await api.get("/api/pools", schema_path="/api/pools")
            if pools[0]["workers"] == 1 and pools[0]["blocks"]["pending"] == found:
                account = await api.get(f"/api/pools/dev/miners/{LOGIN_CHECKSUMMED}", schema_path=path)
                if account["shares"] == miner.stats.accepted * SHARE_DIFF:
                    break
            await deferLater(reactor, 0.05, lambda: None)
        (dev,) = pools
        self.assertEqual(
            (dev["name"], dev["family"], dev["unit"], dev["miners"]), ("dev", "ethereum", "wei", 1)
        )
        self.assertEqual(dev["blocks"], {"pending": found, "confirmed": 0, "orphaned": 0})
        self.assertGreater(dev["hashrate"], 0)
        self.assertGreaterEqual(dev["network"]["height"], found)
        account = await api.get(f"/api/pools/dev/miners/{LOGIN_CHECKSUMMED}", schema_path=path)
        self.assertEqual(account["address"], LOGIN)
        self.assertEqual([w["name"] for w in account["workers"]], [f"{LOGIN}.proxy"])
        self.assertEqual(account["shares"], miner.stats.accepted * SHARE_DIFF)
        blocks = await api.get("/api/pools/dev/blocks", schema_path="/api/pools/{pool}/blocks")
        self.assertEqual(blocks["total"], found)
        self.assertEqual({b["status"] for b in blocks["items"]}, {"pending"})
