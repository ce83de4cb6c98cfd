"""PoolService against a real litecoind: start-up, jobs, blocknotify, blocks."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nomp.chain.jobs import Job
from nomp.config import DaemonConfig, PoolConfig, RecipientConfig, load_config
from nomp.pool.service import PoolService
from test.chainhelpers import candidate_of, solve
from test.fakes import FakeBlockRecords
from test.servers import RPC_PASSWORD, RPC_USER, RegtestPair, shared_regtest
from test.test_config_paths import SHIPPED_CONF
from test.waiting import until


def pool_for(pair: RegtestPair, **changes: Any) -> PoolConfig:
    """The shipped demo pool, pointed at a test node."""
    pool = load_config(SHIPPED_CONF).pools[0]
    daemon = DaemonConfig(url=pair.miner.url, user=RPC_USER, password=RPC_PASSWORD, timeout=10)
    fields: dict[str, Any] = {
        "daemons": (daemon,),
        "address": pair.new_address("bech32"),
        "reward_recipients": (RecipientConfig(pair.new_address("legacy"), Decimal("2.5")),),
    }
    fields.update(changes)
    return dataclasses.replace(pool, **fields)


class PoolServiceTests(TestCase):
    """A pool service keeps a current job from a real node and submits blocks to it."""

    timeout = 120

    def setUp(self) -> None:
        self.pair = shared_regtest("service")
        self.jobs: list[Job] = []
        self.fatal: list[str] = []
        self.blocks = FakeBlockRecords()

    async def start(self, pool: PoolConfig) -> PoolService:
        service = PoolService(pool, reactor, self.fatal.append, self.blocks)
        service.add_job_listener(self.jobs.append)
        service.startService()
        self.addCleanup(service.stopService)
        await until(lambda: service.ready or self.fatal)
        return service

    async def test_start_and_follow_blocks(self) -> None:
        """The first job is clean; blocknotify of the known block does nothing, of a new one makes
        a clean job."""
        service = await self.start(pool_for(self.pair))
        self.assertEqual(self.fatal, [])
        self.assertEqual(len(self.jobs), 1)
        first = self.jobs[0]
        self.assertTrue(first.clean)
        self.assertEqual(first.template.height, self.pair.height() + 1)
        # The reward split pays 2.5% to the recipient.
        self.assertEqual(first.coinbase.outputs[1][1], first.template.coinbase_value * 25 // 1000)

        await service.block_notify(first.template.previous_block_hash)
        self.assertEqual(len(self.jobs), 1)

        (new_tip,) = self.pair.generate(1)
        await service.block_notify(new_tip)
        self.assertEqual(len(self.jobs), 2)
        self.assertTrue(self.jobs[1].clean)
        self.assertEqual(self.jobs[1].template.previous_block_hash, new_tip)

    async def test_own_block_and_next_job(self) -> None:
        """A solved job is accepted by the node and the next job follows at once."""
        service = await self.start(pool_for(self.pair))
        job = self.jobs[-1]
        extranonce = bytes.fromhex("0102030405060708")
        candidate = candidate_of(job, extranonce, solve(job, extranonce).header)
        service.found_block(candidate)
        await until(lambda: self.blocks.settled)
        self.assertEqual(self.blocks.found, [candidate])
        self.assertEqual(self.blocks.settled, [(candidate.block_hash, True)])
        self.assertEqual(service.blocks["accepted"], 1)
        self.assertEqual(self.pair.miner.rpc("getbestblockhash"), candidate.block_hash)
        self.assertEqual(
            candidate.coinbase_txid, self.pair.miner.rpc("getblock", candidate.block_hash)["tx"][0]
        )
        await until(lambda: self.jobs[-1].template.height == job.template.height + 1)
        self.assertTrue(self.jobs[-1].clean)

    async def test_polling_finds_new_blocks(self) -> None:
        """Without blocknotify, the poll timer picks up a block mined elsewhere."""
        await self.start(pool_for(self.pair, block_refresh_interval=0.1))
        (new_tip,) = self.pair.generate(1)
        await until(lambda: self.jobs[-1].template.previous_block_hash == new_tip)

    async def test_rebroadcast_picks_up_transactions(self) -> None:
        """After job_rebroadcast_timeout, new mempool transactions come as a non-clean job."""
        self.pair.generate_to(max(self.pair.height(), 110))  # mature coins to spend
        await self.start(pool_for(self.pair, job_rebroadcast_timeout=0.3))
        count = len(self.jobs[-1].template.transactions)
        self.pair.wallet_rpc("sendtoaddress", self.pair.new_address(), "1")
        await until(lambda: len(self.jobs[-1].template.transactions) > count)
        self.assertFalse(self.jobs[-1].clean)

    async def test_mweb_payout_address_is_fatal(self) -> None:
        """An MWEB payout address stops the pool with a clear message."""
        await self.start(pool_for(self.pair, address=self.pair.new_address("mweb")))
        self.assertEqual(len(self.fatal), 1)
        self.assertIn("pools/litecoin.yaml: address:", self.fatal[0])
        self.assertIn("MWEB", self.fatal[0])
        self.assertEqual(self.jobs, [])

    async def test_invalid_payout_address_is_fatal(self) -> None:
        """An address that is not valid on the chain stops the pool with a clear message."""
        await self.start(pool_for(self.pair, address="ltc1qg82tlhg5d6mxz5lwy9v7xwsuqkq2vmk7jr4wfc"))
        self.assertEqual(len(self.fatal), 1)
        self.assertIn("is not a valid", self.fatal[0])

    async def test_wrong_chain_is_fatal(self) -> None:
        """A pool whose coin is on another chain than the daemon stops with a clear message."""
        pool = pool_for(self.pair)
        coin = dataclasses.replace(pool.coin, network=dataclasses.replace(pool.coin.network, chain="main"))
        await self.start(dataclasses.replace(pool, coin=coin))
        self.assertEqual(len(self.fatal), 1)
        self.assertIn("expects chain 'main', the daemon is on 'regtest'", self.fatal[0])

    async def test_stop_while_waiting(self) -> None:
        """A pool waiting for an unreachable daemon stops cleanly."""
        pool = pool_for(self.pair)
        dead = DaemonConfig(url="http://127.0.0.1:1", user="x", password="y", timeout=1)
        service = PoolService(
            dataclasses.replace(pool, daemons=(dead,)), reactor, self.fatal.append, self.blocks
        )
        service.startService()
        await task.deferLater(reactor, 0.2)
        await defer.maybeDeferred(service.stopService)
        self.assertFalse(service.ready)
        self.assertEqual(self.fatal, [])
