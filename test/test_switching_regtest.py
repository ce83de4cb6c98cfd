"""A switching port over two real chains, in one pool process.

The tree of nomp.tap runs two pools on two litecoind regtest pairs (the
shipped Litecoin regtest coin and a renamed copy of it, as in
test_multicoin) with one real redis-server, and a switch over both. A raw
Stratum client logged in with a 40-hex key hash mines a block on the first
coin; ``nomp-cli coinswitch`` moves it to the second without a reconnect
(the same connection gets the second pool's job, clean); its next block is
the second chain's and its share the second coin's; a share it made for the
first pool's job before the switch is still the first coin's, block and
all. A restart resumes on the second pool.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import treq
import yaml
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from nomp.chain.address import address_of, decode_address
from nomp.chain.jobs import Job
from nomp.config.load import listen_address
from nomp.service import NompService
from nomp.switching.service import SwitchingService
from test.chainhelpers import coinbase_outputs
from test.fakes import find_nonce
from test.poolconf import CoinPool, renamed_coin, write_pools_conf
from test.rediscli import redis, redis_hash
from test.servers import RPC_PASSWORD, RPC_USER, RedisServer, free_port, shared_regtests
from test.test_control import run_nomp_cli
from test.test_multicoin import Coin, job_height, pool_service, prepare_chain
from test.test_stratum_e2e import pool_ready, start_pool
from test.waiting import until
from test.webclient import ApiClient

DB = 0  # of the test's own redis-server
KEY_HASH = "751e76e8199196d454941c45d1b3a323f1433bd6"
LOGIN = f"{KEY_HASH}.rig"
SWITCH_DIFF = 0.00001  # under the regtest target's difficulty: every hash is a share, about half are blocks
EXTRANONCE2 = bytes.fromhex("00c0ffee")


class StratumClient(LineOnlyReceiver):
    """A miner's side of one Stratum connection: requests answered by id,
    notifications kept in order."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._answers: dict[int, defer.Deferred[dict[str, Any]]] = {}
        self._ids = iter(range(1, 2**31))
        self.lost = False

    def lineReceived(self, line: bytes) -> None:
        message = json.loads(line)
        waiting = self._answers.pop(message.get("id"), None) if message.get("id") is not None else None
        if waiting is not None:
            waiting.callback(message)
        else:
            self.notifications.append(message)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True

    def request(self, method: str, params: list[Any]) -> defer.Deferred[dict[str, Any]]:
        request_id = next(self._ids)
        answer: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._answers[request_id] = answer
        self.sendLine(json.dumps({"id": request_id, "method": method, "params": params}).encode())
        return answer

    def jobs(self) -> list[tuple[str, bool]]:
        """(job id, clean) of every mining.notify so far."""
        return [
            (m["params"][0], m["params"][-1]) for m in self.notifications if m["method"] == "mining.notify"
        ]


class SwitchingTwoChainsTests(TestCase):
    timeout = 240

    def setUp(self) -> None:
        self.coins = two_coins()
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)

    def write_conf(self) -> Path:
        conf, self.switch_port = write_switch_conf(Path(self.mktemp()), self.coins, self.redis.port)
        return conf

    async def start(self, conf: Path) -> NompService:
        root = start_pool(self, conf)
        await until(lambda: pool_ready(root), timeout=60)
        self.assertEqual(root.fatal_errors, [])
        return root

    async def connect(self) -> StratumClient:
        client = StratumClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.switch_port), client)
        transport = client.transport
        assert transport is not None
        self.addCleanup(transport.loseConnection)
        return client

    def submit(self, client: StratumClient, job: Job, extranonce1: bytes, block: bool) -> list[Any]:
        """Submit params of a share of ``job``: a block, or a share that is not one."""
        target = job.template.target
        nonce = find_nonce(job, extranonce1 + EXTRANONCE2, lambda v: (v <= target) == block)
        ntime = job.template.curtime
        return [LOGIN, job.job_id, EXTRANONCE2.hex(), f"{ntime:08x}", f"{nonce:08x}"]

    def current_job(self, root: NompService, pool: str) -> Job:
        registry = pool_service(root, pool).registry
        assert registry is not None and registry.current is not None
        return registry.current

    def keys_of(self, coin: Coin) -> tuple[dict[str, str], set[str]]:
        """The coin's stats counters and the workers credited in any of its rounds."""
        port = self.redis.port
        credited: set[str] = set()
        for key in redis(port, DB, "KEYS", f"{coin.coin}:shares:round*"):
            credited |= set(redis_hash(port, DB, key))
        return redis_hash(port, DB, f"{coin.coin}:stats"), credited

    def our_block(self, coin: Coin, height: int) -> bool:
        """Whether the block at ``height`` of the coin's chain pays the coin's pool."""
        network = pool_network(self.root, coin.pool)
        script = decode_address(coin.pool_address, network).script.hex()
        block_hash = coin.pair.miner.rpc("getblockhash", height)
        return bool(coinbase_outputs(coin.pair, block_hash)[0][0] == script)

    async def test_switch_without_reconnecting(self) -> None:
        """Shares and blocks go to the pool the switch is on; a late share of the old pool's
        job to the old pool; the switch survives a restart."""
        conf = self.write_conf()
        root = self.root = await self.start(conf)
        litecoin, copycoin = self.coins
        worker = f"{address_of(bytes.fromhex(f'76a914{KEY_HASH}88ac'), pool_network(root, 'litecoin'))}.rig"

        client = await self.connect()
        subscribed = await client.request("mining.subscribe", ["switch-test/1"])
        extranonce1 = bytes.fromhex(subscribed["result"][1])
        self.assertEqual((await client.request("mining.authorize", [LOGIN, "x"]))["result"], True)
        await until(lambda: bool(client.jobs()))
        self.assertEqual(client.jobs()[-1][0], self.current_job(root, "litecoin").job_id)

        # A block on the first chain.
        height = litecoin.pair.height()
        job = self.current_job(root, "litecoin")
        self.assertEqual(
            (await client.request("mining.submit", self.submit(client, job, extranonce1, True)))["result"],
            True,
        )
        await until(
            lambda: litecoin.pair.height() == height + 1 and job_height(root, "litecoin") == height + 2
        )
        await until(lambda: client.jobs()[-1][0] == self.current_job(root, "litecoin").job_id)
        late = self.submit(client, self.current_job(root, "litecoin"), extranonce1, True)

        # The switch, by the operator's command.
        seen = len(client.jobs())
        status, output = await run_nomp_cli("-c", str(conf), "coinswitch", "scrypt", "copycoin")
        self.assertEqual(
            (status, output),
            (
                0,
                "ok switch scrypt: litecoin -> copycoin, 1 miner moved (1 kept their extranonce1, "
                "0 sent mining.set_extranonce, 0 asked to reconnect)\n",
            ),
        )
        await until(lambda: len(client.jobs()) > seen)
        self.assertEqual(client.jobs()[-1], (self.current_job(root, "copycoin").job_id, True))
        self.assertFalse(client.lost)
        self.assertNotIn("mining.set_extranonce", [m["method"] for m in client.notifications])
        status, output = await run_nomp_cli("-c", str(conf), "coinswitch", "scrypt", "copycoin")
        self.assertEqual((status, output), (1, "error switch scrypt is on copycoin already\n"))

        # A block on the second chain, from the same connection.
        copy_height = copycoin.pair.height()
        job = self.current_job(root, "copycoin")
        self.assertEqual(
            (await client.request("mining.submit", self.submit(client, job, extranonce1, True)))["result"],
            True,
        )
        await until(lambda: copycoin.pair.height() == copy_height + 1)
        self.assertTrue(self.our_block(copycoin, copy_height + 1))

        # The share made for the first pool's job before the switch: the first chain's block.
        self.assertEqual((await client.request("mining.submit", late))["result"], True)
        await until(lambda: litecoin.pair.height() == height + 2)
        self.assertTrue(self.our_block(litecoin, height + 1))
        self.assertTrue(self.our_block(litecoin, height + 2))

        await until(lambda: self.keys_of(litecoin)[0].get("validBlocks") == "2")
        await until(lambda: self.keys_of(copycoin)[0].get("validBlocks") == "1")
        stats, credited = self.keys_of(litecoin)
        self.assertEqual((stats["validShares"], credited), ("2", {worker}))
        stats, credited = self.keys_of(copycoin)
        self.assertEqual((stats["validShares"], credited), ("1", {worker}))
        self.assertEqual(redis(self.redis.port, DB, "GET", "nomp:switching:scrypt:current"), ["copycoin"])

        await self.check_web(root, conf)

        # A restart resumes on the second pool: a new miner gets its job.
        await root.stopService()
        root = self.root = await self.start(conf)
        switching = root.getServiceNamed("switching")
        assert isinstance(switching, SwitchingService)
        await until(lambda: switching.current("scrypt") == "copycoin")
        client = await self.connect()
        await client.request("mining.subscribe", [])
        await until(lambda: bool(client.jobs()))
        self.assertEqual(client.jobs()[-1][0], self.current_job(root, "copycoin").job_id)

    async def check_web(self, root: NompService, conf: Path) -> None:
        """/metrics counts the switch; /api/switching shows the switch on its pool."""
        web = listen_address(yaml.safe_load((conf / "config.yaml").read_text())["web"]["listen"])
        assert web is not None
        api = ApiClient(self, f"http://127.0.0.1:{web[1]}")
        response = await treq.get(f"{api.base}/metrics", pool=api.http)
        text = (await response.content()).decode()
        (family,) = [f for f in text_string_to_metric_families(text) if f.name == "nomp_coin_switches"]
        samples = {
            (s.labels["switch"], s.labels["pool"]): s.value
            for s in family.samples
            if s.name.endswith("_total")
        }
        self.assertEqual(samples, {("scrypt", "copycoin"): 1.0})
        (switch,) = await api.get("/api/switching", schema_path="/api/switching")
        self.assertEqual(
            (switch["name"], switch["current"], switch["pools"]),
            ("scrypt", "copycoin", ["litecoin", "copycoin"]),
        )
        self.assertEqual((switch["miners"], switch["switches"], switch["last_reason"]), (1, 1, "operator"))


def two_coins() -> list[Coin]:
    """The switch's two pools: the shipped Litecoin regtest coin and its renamed
    copy, each on a litecoind regtest pair of its own, past MWEB's activation."""
    pairs = shared_regtests("multicoin-litecoin", "multicoin-copycoin")
    for pair in pairs:
        prepare_chain(pair)
    return [
        Coin("litecoin", "litecoin-regtest", "rLTC", pairs[0]),
        Coin("copycoin", "copycoin-regtest", "rCPY", pairs[1]),
    ]


def write_switch_conf(
    folder: Path, coins: list[Coin], redis_port: int, diff: float = SWITCH_DIFF, refresh: float = 3600
) -> tuple[Path, int]:
    """A conf folder with a pool for each coin (each paying a new address of its
    chain, kept in ``pool_address``) and a switch ``scrypt`` over them on one
    port; (folder, the switch's port). ``refresh``: each pool's block_refresh_interval."""
    pools = []
    for coin in coins:
        coin.pool_address = coin.pair.new_address()
        options = {"block_refresh_interval": refresh, "job_rebroadcast_timeout": 0}
        pools.append(
            CoinPool(
                coin.pool,
                coin.coin,
                coin.pair.miner.url,
                coin.pool_address,
                RPC_USER,
                RPC_PASSWORD,
                options=options,
            )
        )
    conf, _ = write_pools_conf(
        folder,
        pools,
        redis_port,
        DB,
        coins={"copycoin-regtest": renamed_coin("litecoin-regtest", "copycoin-regtest", "rCPY")},
        web={"stats_interval": 3600},
    )
    switch_port = free_port()
    settings = yaml.safe_load((conf / "config.yaml").read_text())
    settings["drain_seconds"] = 0
    settings["switching"] = {
        "scrypt": {
            "algorithm": "scrypt",
            "pools": [coin.pool for coin in coins],
            "ports": [{"listen": f"tcp:{switch_port}:interface=127.0.0.1", "diff": diff}],
        }
    }
    (conf / "config.yaml").write_text(yaml.safe_dump(settings))
    return conf, switch_port


def pool_network(root: NompService, pool: str) -> Any:
    return pool_service(root, pool).config.coin.network
