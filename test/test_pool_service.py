"""PoolService against a real litecoind: start-up, jobs, blocknotify, blocks."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nomp.candidate import BlockCandidate
from nomp.chain.jobs import Job
from nomp.config import DaemonConfig, PoolConfig, RecipientConfig, RedisConfig, load_config
from nomp.payments.rounds import PROP
from nomp.pool.blocks import BlockOutcome
from nomp.pool.service import SETTLE_AFTER, PoolService
from nomp.store.recorder import ShareRecorder
from nomp.store.redis import RedisService
from nomp.store.schema import PoolKeys
from test.chainhelpers import candidate_of, solve
from test.fakes import FakeBlockRecords
from test.rediscli import redis, redis_hash
from test.servers import RPC_PASSWORD, RPC_USER, RegtestPair, shared_redis, shared_regtest
from test.test_config_paths import SHIPPED_CONF
from test.waiting import until

DB = 8  # of the shared redis-server; each test has a coin of its own


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

    async def test_latest_template(self) -> None:
        """The last usable template and when it was read, for profit switching: none before
        the start, the first job's after it, the new block's after a blocknotify."""
        pool = pool_for(self.pair)
        self.assertIsNone(PoolService(pool, reactor, self.fatal.append, self.blocks).latest_template)
        service = await self.start(pool)
        first = service.latest_template
        assert first is not None
        self.assertEqual(first.template, self.jobs[0].template)
        self.assertLessEqual(first.read_at, reactor.seconds())
        (new_tip,) = self.pair.generate(1)
        await service.block_notify(new_tip)
        latest = service.latest_template
        assert latest is not None
        self.assertEqual(latest.template.height, first.template.height + 1)
        self.assertGreaterEqual(latest.read_at, first.read_at)

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


class DurableCandidateTests(TestCase):
    """Block candidates through a real ShareRecorder on a real redis-server,
    against a real litecoind: recorded before the node sees them, and settled
    from the chain by the next process when the one that found them died."""

    timeout = 120

    def setUp(self) -> None:
        self.pair = shared_regtest("service")
        self.redis_server = shared_redis()
        self.keys = PoolKeys.for_coin(f"D{os.urandom(4).hex()}")
        self.fatal: list[str] = []
        self.jobs: list[Job] = []

    def redis(self, *command: str) -> list[str]:
        return redis(self.redis_server.port, DB, *command)

    async def start(self, wall_clock: Callable[[], float] = time.time) -> tuple[PoolService, ShareRecorder]:
        """A pool service and its recorder (as one process of the pool has them)."""
        connection = RedisService(RedisConfig(port=self.redis_server.port, db=DB))
        connection.startService()
        self.addCleanup(connection.stopService)
        await until(lambda: connection.client() is not None)
        recorder = ShareRecorder(
            self.keys, connection.client, reactor, wall_clock=wall_clock, round_policy=PROP
        )
        service = PoolService(
            pool_for(self.pair), reactor, self.fatal.append, recorder, wall_clock=wall_clock
        )
        service.add_job_listener(self.jobs.append)
        service.startService()
        self.addCleanup(service.stopService)
        await until(lambda: service.ready or self.fatal)
        self.assertEqual(self.fatal, [])
        return service, recorder

    def candidate(self) -> BlockCandidate:
        job = self.jobs[-1]
        extranonce = os.urandom(8)
        return candidate_of(job, extranonce, solve(job, extranonce).header)

    async def test_recorded_before_the_node_sees_it(self) -> None:
        """When submitblock goes out the candidate is already in Redis; once the node has it,
        it is a pending block there."""
        service, _ = await self.start()
        block = self.candidate()
        in_redis_at_submit: list[list[str]] = []
        assert service.submitter is not None
        submit = service.submitter.submit

        async def watched(candidate: BlockCandidate) -> BlockOutcome:
            in_redis_at_submit.append(self.redis("HKEYS", self.keys.blocks_candidates))
            return await submit(candidate)

        service.submitter.submit = watched  # type: ignore[method-assign]
        service.found_block(block)
        await until(lambda: self.redis("SMEMBERS", self.keys.blocks_pending))
        self.assertEqual(in_redis_at_submit, [[block.block_hash]])
        (member,) = self.redis("SMEMBERS", self.keys.blocks_pending)
        self.assertTrue(member.startswith(f"{block.block_hash}:{block.coinbase_txid}:{block.height}:"))
        self.assertEqual(self.redis("HKEYS", self.keys.blocks_candidates), [])
        self.assertEqual(self.pair.miner.rpc("getbestblockhash"), block.block_hash)

    async def test_next_start_settles_what_a_killed_process_left(self) -> None:
        """A process recorded two candidates and died: one had reached the node, one had not.
        The next process settles both from the chain: the first a pending block, the second
        refused (its round reopened), and neither is left unsettled."""
        _, recorder = await self.start()
        submitted, lost = self.candidate(), self.candidate()
        for block in (submitted, lost):
            self.assertTrue(await recorder.block_found(block))
        self.assertIsNone(self.pair.miner.rpc("submitblock", submitted.payload.hex()))
        # The next process, started when those candidates are old enough that
        # no other process can still be submitting them.
        later = time.time() + SETTLE_AFTER + 1
        await self.start(wall_clock=lambda: later)
        await until(lambda: not self.redis("HKEYS", self.keys.blocks_candidates))
        (member,) = self.redis("SMEMBERS", self.keys.blocks_pending)
        self.assertTrue(member.startswith(f"{submitted.block_hash}:"))
        stats = redis_hash(self.redis_server.port, DB, self.keys.stats)
        self.assertEqual((stats.get("validBlocks"), stats.get("invalidBlocks")), ("1", "1"))
