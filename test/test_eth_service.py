"""EthPoolService against dev nodes: failover at start and while running,
the pending block's height for a node whose getWork has no block number, a
node on another chain, and the full dataset in the hashing threads."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from nomp.config import DaemonConfig
from nomp.eth.hasher import EpochHashers, EthTask
from nomp.eth.work import work_from_rpc
from nomp.hashing.ethash import EpochCaches, EthashCache, seed_hash
from nomp.hashing.pool import HashPoolService
from test.ethnode import start_dev_node
from test.ethnode.rpc import RPCError
from test.ethpool import ETHERBASE, EthPool, eth_pool_config, stratum_port
from test.servers import free_port

DEAD = f"http://127.0.0.1:{free_port()}/"


async def until(condition: Any, what: str, tries: int = 400) -> None:
    for _ in range(tries):
        if condition():
            return
        await deferLater(reactor, 0.025, lambda: None)
    raise AssertionError(f"never: {what}")


class UpstreamTests(TestCase):
    timeout = 60

    async def start(self, urls: list[str], **changes: Any) -> EthPool:
        node = self.nodes[0]
        daemons = tuple(DaemonConfig(url=url, timeout=2.0) for url in urls)
        config = eth_pool_config(node.url, [stratum_port(2.0)], daemons=daemons, **changes)
        return await EthPool(self, node, config).start()

    def setUp(self) -> None:
        self.nodes = [
            start_dev_node(self, ETHERBASE, difficulty=64),
            start_dev_node(self, ETHERBASE, difficulty=64),
        ]

    async def test_first_node_down_at_start(self) -> None:
        """A node that does not answer at start is passed over for the next one."""
        pool = await self.start([DEAD, self.nodes[1].url])
        assert pool.service.upstreams is not None
        self.assertEqual(pool.service.upstreams.active.url, self.nodes[1].url)
        self.assertEqual(pool.service.book.current.header_hash, self.nodes[1].chain.work().header_hash)  # type: ignore[union-attr]

    async def test_failover_while_running(self) -> None:
        """The node in use goes away: after five failed calls it is sick, the
        next check moves to the second node, and its work reaches the miners."""
        first, second = self.nodes
        pool = await self.start([first.url, second.url])

        def broken(params: list[Any]) -> Any:
            raise RPCError(-32000, "no mining work available yet")

        first.rpc._methods["eth_getWork"] = broken
        upstreams = pool.service.upstreams
        assert upstreams is not None
        await until(lambda: upstreams.active.url == second.url, "switched to the second node")
        second.chain.mine()  # new work there
        await until(
            lambda: (
                pool.service.book.current is not None
                and pool.service.book.current.header_hash == second.chain.work().header_hash
            ),
            "the second node's work",
        )
        self.assertGreater(pool.service.job_failures["daemon"], 0)

    async def test_pending_block_height(self) -> None:
        """A node whose eth_getWork has three values: the height is the pending block's."""
        node = self.nodes[0]
        node.chain.mine()
        methods = node.rpc._methods
        full = methods["eth_getWork"]
        methods["eth_getWork"] = lambda params: full(params)[:3]
        pool = await self.start([node.url])
        self.assertEqual(pool.service.book.current.height, 2)  # type: ignore[union-attr]
        self.assertIn("eth_getBlockByNumber", node.rpc.calls)

    async def test_other_chain_is_fatal(self) -> None:
        node = self.nodes[0]
        config = eth_pool_config(node.url, [stratum_port(2.0)])
        fatal: list[str] = []
        pool = EthPool(self, node, config)
        pool.service._on_fatal = fatal.append
        methods = node.rpc._methods
        methods["eth_chainId"] = lambda params: "0x3d"
        pool.hashing.startService()
        self.addCleanup(pool.hashing.stopService)
        pool.service.startService()
        self.addCleanup(pool.service.stopService)
        await until(lambda: fatal, "a fatal error")
        self.assertIn("chain id 61", fatal[0])
        self.assertIn("chain id 1337", fatal[0])


class DatasetTests(TestCase):
    """With ``dataset`` on, the dataset of the work's epoch is generated in the
    hashing threads, chunk by chunk, and shares are then hashed with it: the
    same results as the light cache gives."""

    timeout = 60

    async def test_dataset_generated_and_used(self) -> None:
        hashing = HashPoolService(reactor, 2)
        hashing.startService()
        self.addCleanup(hashing.stopService)
        caches = EpochCaches(limit=2)
        # A small cache filed as epoch 0's: a dataset of 4 MiB, generated in seconds.
        small = EthashCache(seed_hash(0), 64 * 1024 + 64 * 13, 4 * 1024 * 1024 + 128 * 7, 0, 0)
        caches.put(small)
        hashers = EpochHashers("dev", hashing.run, dataset=True, caches=caches)
        header = bytes(range(32))
        reply = ["0x" + header.hex(), "0x" + seed_hash(0).hex(), "0x" + "ff" * 32, "0x5"]
        work = work_from_rpc(reply, None, None, "00000001")
        hashers.prepare(work, None)
        hasher = hashers.hasher(work)
        await until(lambda: hasher.dataset is not None, "the dataset in use", tries=2000)
        tasks = [EthTask(header, nonce) for nonce in range(8)]
        full = [await hashing.check(hasher, task) for task in tasks]
        self.assertEqual(full, small.hash_packed(b"".join(task.pack() for task in tasks), 8))
