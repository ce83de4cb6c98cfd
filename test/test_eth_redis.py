"""The whole service tree with an Ethereum-family pool, against the dev node
and a real redis-server: nomp-miner mines through the getwork, eth-proxy and
NiceHash ports in turn; the chain engine imports the blocks, and Redis holds
exactly the accepted shares and the candidates, in open-ethereum-pool's keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import treq
import yaml
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from nomp.config import load_config
from nomp.eth.service import EthPoolService
from nomp.ethminer import EthMiner, EthProxyMiner, GetworkMiner, NiceHashMiner, connect, parse_eth_url
from nomp.service import NompService
from nomp.tap import build_service
from test.ethnode import start_dev_node
from test.ethpool import ETHERBASE, LOGIN, POOL_ADDRESS
from test.servers import free_port, shared_redis
from test.test_config_paths import SHIPPED_COINS

DB = 12
SHARE_DIFF = 8
NETWORK_DIFF = 32  # one share in four is a block
SHARES_EACH = 12


class EndToEndTests(TestCase):
    timeout = 240

    def setUp(self) -> None:
        self.redis = shared_redis()
        self.redis.command("FLUSHDB", db=DB)
        self.node = start_dev_node(self, ETHERBASE, difficulty=NETWORK_DIFF)
        self.stratum, self.getwork, self.web = free_port(), free_port(), free_port()

    def conf(self) -> Path:
        folder = Path(self.mktemp())
        (folder / "pools").mkdir(parents=True)
        settings = {
            "coins": str(SHIPPED_COINS),
            "instance": 3,
            "redis": {"port": self.redis.port, "db": DB},
            "control": {"listen": f"tcp:{free_port()}:interface=127.0.0.1"},
            "web": {"listen": f"tcp:{self.web}:interface=127.0.0.1"},
            "logging": {"level": "warn"},
        }
        pool = {
            "coin": "ethash-dev",
            "address": POOL_ADDRESS,
            "daemons": [{"url": self.node.url, "timeout": 5}],
            "ports": [
                {"listen": f"tcp:{self.stratum}:interface=127.0.0.1", "diff": SHARE_DIFF},
                {
                    "listen": f"tcp:{self.getwork}:interface=127.0.0.1",
                    "diff": SHARE_DIFF,
                    "protocol": "getwork",
                },
            ],
            "block_refresh_interval": 0.05,
            "state_update_interval": 0.2,
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(settings))
        (folder / "pools" / "dev.yaml").write_text(yaml.safe_dump(pool))
        return folder

    def redis_list(self, *command: str | int) -> list[str]:
        return [_text(value) for value in self.redis.command(*command, db=DB)]

    def keys(self, pattern: str) -> list[str]:
        return sorted(self.redis_list("KEYS", pattern))

    def hash(self, key: str) -> dict[str, str]:
        flat = self.redis_list("HGETALL", key)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def mine(self, miner: EthMiner, url: str) -> int:
        await connect(miner, parse_eth_url(url))
        self.assertTrue(await miner.authorized, miner.refusal)
        miner.start()
        await miner.finished
        await miner.stop()
        self.assertIsNone(miner.lost)
        return miner.stats.accepted

    async def test_three_protocols_into_redis(self) -> None:
        root: NompService = build_service(
            load_config(self.conf()), reactor, exit_with=lambda status: None, shutdown=lambda: None
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
        accepted = 0
        accepted += await self.mine(
            GetworkMiner(reactor, max_shares=SHARES_EACH, poll_interval=0.1, hashrate_interval=None),
            f"getwork+http://127.0.0.1:{self.getwork}/{LOGIN}/gw",
        )
        accepted += await self.mine(
            EthProxyMiner(reactor, LOGIN, "x", "proxy", max_shares=SHARES_EACH),
            f"ethproxy+tcp://127.0.0.1:{self.stratum}",
        )
        accepted += await self.mine(
            NiceHashMiner(reactor, f"{LOGIN}.nh", "x", max_shares=SHARES_EACH),
            f"nicehash+tcp://127.0.0.1:{self.stratum}",
        )
        await deferLater(reactor, 0.5, lambda: None)  # a heartbeat or two
        await self.check_oep_api(accepted)
        await root.stopService()
        self.check_redis(pool, accepted)

    async def check_oep_api(self, accepted: int) -> None:
        """OEP's API on the web port reads what the pool wrote."""
        http = HTTPConnectionPool(reactor)
        self.addCleanup(http.closeCachedConnections)

        async def get(path: str) -> Any:
            response = await treq.get(f"http://127.0.0.1:{self.web}/oep/dev/api/{path}", pool=http)
            self.assertEqual(response.code, 200, path)
            return json.loads(await response.content())

        stats = await get("stats")
        self.assertEqual(stats["minersTotal"], 1)
        self.assertGreater(stats["hashrate"], 0)
        self.assertEqual(stats["nodes"][0]["name"], "main")
        self.assertEqual(stats["candidatesTotal"], self.node.chain.height)
        account = await get(f"accounts/{LOGIN}")
        self.assertEqual(sorted(account["workers"]), ["gw", "nh", "proxy"])
        self.assertEqual(account["stats"]["blocksFound"], self.node.chain.height)
        blocks = await get("blocks")
        self.assertEqual(len(blocks["candidates"]), self.node.chain.height)

    def check_redis(self, pool: EthPoolService, accepted: int) -> None:
        coin = "ethash-dev"
        chain = self.node.chain
        self.assertGreaterEqual(chain.height, 1, "the engine imported the pool's blocks")
        self.assertEqual(pool.blocks["accepted"], chain.height)
        rounds = [f"{coin}:shares:roundCurrent", *self.keys(f"{coin}:shares:round[0-9]*")]
        credited = sum(int(v) for key in rounds for v in self.hash(key).values())
        self.assertEqual(credited, accepted * SHARE_DIFF, "every accepted share credited once, none else")
        stats = self.hash(f"{coin}:stats")
        self.assertEqual(int(stats["validShares"]), accepted)
        self.assertEqual(self.redis.command("ZCARD", f"{coin}:hashrate", db=DB), accepted)
        workers = {m.split(":")[2] for m in self.redis_list("ZRANGE", f"{coin}:hashrate", 0, -1)}
        self.assertEqual(workers, {"gw", "proxy", "nh"})
        members = self.redis_list("ZRANGE", f"{coin}:blocks:candidates", 0, -1)
        self.assertEqual(len(members), chain.height, "one candidate per block, none twice")
        sealed = {"0x" + chain.block_at(n).header.nonce.hex() for n in range(1, chain.height + 1)}  # type: ignore[union-attr]
        self.assertEqual({m.split(":")[0] for m in members}, sealed)
        self.assertEqual(len(self.keys(f"{coin}:shares:round[0-9]*")), chain.height)
        self.assertEqual(int(self.hash(f"{coin}:miners:{LOGIN}")["blocksFound"]), chain.height)
        nodes = self.hash(f"{coin}:nodes")
        self.assertEqual(nodes["main:name"], "main")
        self.assertGreaterEqual(int(nodes["main:height"]), 1)
        self.assertEqual(self.redis.command("LLEN", f"{coin}:recorder:setAside", db=DB), 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
