"""nomp-miner mines through each of the pool's three Ethereum-family
protocols in turn; the dev node's chain engine imports the blocks."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nomp.ethminer import EthMiner, EthProxyMiner, GetworkMiner, NiceHashMiner, connect, parse_eth_url
from test.ethpool import LOGIN, EthPool, eth_pool, getwork_port, stratum_port

SHARE_DIFF = 8.0
NETWORK_DIFF = 32  # one share in four is a block: none in 32 shares is a 1-in-10,000 run
SHARES = 32


class MiningTests(TestCase):
    timeout = 180

    async def mine(self, pool: EthPool, miner: EthMiner, url: str) -> None:
        await connect(miner, parse_eth_url(url))
        self.assertTrue(await miner.authorized, miner.refusal)
        miner.start()
        await miner.finished
        await miner.stop()
        self.assertIsNone(miner.lost)
        await pool.side.idle()
        await pool.service.blocks_in_flight()
        self.check_books(pool, miner)

    def check_books(self, pool: EthPool, miner: EthMiner) -> None:
        pipeline = pool.side.pipeline
        accepted = pipeline.shares["accepted"]
        self.assertEqual(miner.stats.accepted, accepted)
        self.assertGreaterEqual(accepted, SHARES)
        self.assertEqual(len(pool.recorder.valid), accepted, "every accepted share recorded, once")
        found = [c.block_hash for c in pool.blocks.found]
        self.assertEqual(len(found), len(set(found)), "no block recorded twice")
        chain = pool.node.chain
        self.assertGreaterEqual(chain.height, 1, "the engine imported the pool's blocks")
        self.assertEqual(pool.service.blocks["accepted"], chain.height)
        sealed = {chain.block_at(n).header.nonce for n in range(1, chain.height + 1)}  # type: ignore[union-attr]
        submitted = {c.payload[:8] for c in pool.blocks.found}
        self.assertLessEqual(sealed, submitted, "each block in the chain is one the pool recorded")

    async def test_getwork(self) -> None:
        pool = await eth_pool(self, [getwork_port(SHARE_DIFF)], difficulty=NETWORK_DIFF)
        miner = GetworkMiner(reactor, max_shares=SHARES, poll_interval=0.1, hashrate_interval=None)
        await self.mine(pool, miner, f"getwork+http://127.0.0.1:{pool.ports[0]}/{LOGIN}/rig")

    async def test_eth_proxy(self) -> None:
        pool = await eth_pool(self, [stratum_port(SHARE_DIFF)], difficulty=NETWORK_DIFF)
        miner = EthProxyMiner(reactor, LOGIN, "x", "rig", max_shares=SHARES)
        await self.mine(pool, miner, f"ethproxy+tcp://127.0.0.1:{pool.ports[0]}")

    async def test_nicehash(self) -> None:
        pool = await eth_pool(self, [stratum_port(SHARE_DIFF)], difficulty=NETWORK_DIFF)
        miner = NiceHashMiner(reactor, f"{LOGIN}.rig", "x", max_shares=SHARES)
        await self.mine(pool, miner, f"nicehash+tcp://127.0.0.1:{pool.ports[0]}")
