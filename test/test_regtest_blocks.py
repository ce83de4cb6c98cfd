"""Blocks built by nomp from real litecoind templates, checked by the node.

A block counts only when a real node accepts it: these tests take templates
through the project's daemon client and job builder, search nonces with the
project's C share check, and submit to a real litecoind 0.21 regtest node.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from nomp.chain.coinbase import PayoutPlan, Recipient
from nomp.daemon import DaemonGroup
from test.chainhelpers import coinbase_outputs, connect, mine_block, satoshis
from test.servers import BIP34_HEIGHT, MWEB_ACTIVATION, RegtestPair, shared_regtest

HOGEX_FLAG = 0x08  # serialisation flag of the MWEB HogEx transaction


async def plan_for(
    pair: RegtestPair, daemons: DaemonGroup, kind: str, fee_address: str
) -> tuple[str, PayoutPlan]:
    """A wallet address of ``kind`` and a payout plan paying it, with a 1.5% recipient."""
    address = pair.new_address(kind)
    pool = await daemons.validate_address(address)
    fee = await daemons.validate_address(fee_address)
    return address, PayoutPlan(pool.script, (Recipient(fee.script, Fraction(3, 200), "fee"),))


def output_address(pair: RegtestPair, block_hash: str, index: int) -> str:
    """The address the node decodes for one coinbase output."""
    spk = pair.miner.rpc("getblock", block_hash, 2)["tx"][0]["vout"][index]["scriptPubKey"]
    return str(spk["address"]) if "address" in spk else str(spk["addresses"][0])


class MiningThroughTheErasTests(TestCase):
    """From height 2 to 512 every block is ours and the node takes each one:
    before MWEB, the activation block 432 with its peg-in, after it, and
    above 500 where BIP34 is enforced; with mempool transactions, paying in
    turn to P2PKH, P2SH and bech32 addresses."""

    timeout = 900

    def setUp(self) -> None:
        self.pair = shared_regtest("eras")

    async def test_every_block_accepted(self) -> None:
        """Each of 511 blocks is accepted, moves the tip, and pays exactly the planned outputs."""
        pair = self.pair
        daemons, http_pool = connect(pair)
        self.addCleanup(http_pool.closeCachedConnections)
        fee_address = pair.new_address("legacy")
        kinds = ["legacy", "p2sh-segwit", "bech32"]
        plans = {kind: await plan_for(pair, daemons, kind, fee_address) for kind in kinds}
        first_block_of: dict[str, tuple[str, int]] = {}
        with_transactions = {"before MWEB": 0, "after MWEB": 0}

        while (height := pair.height() + 1) <= 512:
            if height == MWEB_ACTIVATION:
                pair.peg_in()
            elif height > 102 and height % 10 == 0:
                for _ in range(3):
                    pair.wallet_rpc("sendtoaddress", pair.new_address("bech32"), "0.5")
                if height > MWEB_ACTIVATION:
                    pair.peg_in("0.25")
            kind = kinds[height % 3]
            address, plan = plans[kind]
            job, outcome = await mine_block(daemons, plan)
            template = job.template

            self.assertEqual(template.height, height)
            self.assertTrue(outcome.accepted, f"height {height}: {outcome.reason}")
            self.assertEqual(pair.miner.rpc("getbestblockhash"), outcome.block_hash)
            outputs = coinbase_outputs(pair, outcome.block_hash)
            self.assertEqual(
                outputs, [(script.hex(), amount) for script, amount in job.coinbase.outputs]
            )
            self.assertEqual(sum(amount for _, amount in outputs), template.coinbase_value)
            self.assertEqual(outputs[1][1], template.coinbase_value * 3 // 200)
            first_block_of.setdefault(kind, (outcome.block_hash, outputs[0][1]))

            block = pair.miner.rpc("getblock", outcome.block_hash)
            if height >= MWEB_ACTIVATION:
                self.assertIsNotNone(template.mweb, height)
                self.assertIn("mweb", block)
                hogex = template.transactions[-1]
                self.assertEqual(hogex.data[5], HOGEX_FLAG)
                self.assertEqual(block["tx"][-1], hogex.txid[::-1].hex())
                if len(template.transactions) > 1:
                    with_transactions["after MWEB"] += 1
            else:
                self.assertIsNone(template.mweb)
                self.assertNotIn("mweb", block)
                if template.transactions:
                    with_transactions["before MWEB"] += 1

        self.assertEqual(pair.height(), 512)
        self.assertGreater(512, BIP34_HEIGHT)
        self.assertGreaterEqual(with_transactions["before MWEB"], 30)
        self.assertGreaterEqual(with_transactions["after MWEB"], 7)
        # The node decodes each kind of payout back to the wallet's address,
        # and the wallet sees the reward as its own.
        for kind, (block_hash, amount) in first_block_of.items():
            address = plans[kind][0]
            self.assertEqual(output_address(pair, block_hash, 0), address, kind)
            txid = pair.miner.rpc("getblock", block_hash)["tx"][0]
            details = pair.wallet_rpc("gettransaction", txid)["details"]
            mine = [d for d in details if d["address"] == address]
            self.assertEqual([satoshis(d["amount"]) for d in mine], [amount], kind)
            self.assertIn(mine[0]["category"], ("immature", "generate"))


class RejectedBlockTests(TestCase):
    """A block the node refuses comes back with the node's own reason, logged
    with the block hash: nothing is hidden."""

    timeout = 300

    def setUp(self) -> None:
        self.pair = shared_regtest("rejections")
        if self.pair.height() < BIP34_HEIGHT + 5:
            self.pair.generate_to(BIP34_HEIGHT + 5)

    async def rejected(self, tamper: object = None, wrong_branch: bool = False) -> str:
        """Mine one broken block; check it is refused, logged, and the tip unmoved."""
        pair = self.pair
        for _ in range(3):
            pair.wallet_rpc("sendtoaddress", pair.new_address(), "1")
        daemons, http_pool = connect(pair)
        self.addCleanup(http_pool.closeCachedConnections)
        _, plan = await plan_for(pair, daemons, "bech32", pair.new_address())
        tip = pair.miner.rpc("getbestblockhash")
        with capturedLogs() as events:
            _, outcome = await mine_block(daemons, plan, tamper=tamper, wrong_branch=wrong_branch)
        self.assertFalse(outcome.accepted)
        self.assertEqual(pair.miner.rpc("getbestblockhash"), tip)
        logged = [e for e in events if e.get("block_hash") == outcome.block_hash]
        self.assertEqual([e["reason"] for e in logged], [outcome.reason])
        assert outcome.reason is not None
        return outcome.reason

    async def test_wrong_merkle_branch(self) -> None:
        """A header solved on a wrong merkle branch: bad-txnmrklroot."""
        self.assertEqual(await self.rejected(wrong_branch=True), "bad-txnmrklroot")

    async def test_wrong_height(self) -> None:
        """A coinbase with the wrong BIP34 height above 500: bad-cb-height."""
        reason = await self.rejected(lambda t: dataclasses.replace(t, height=t.height + 1))
        self.assertEqual(reason, "bad-cb-height")

    async def test_one_satoshi_too_much(self) -> None:
        """A coinbase paying one satoshi more than the template allows: bad-cb-amount."""
        reason = await self.rejected(
            lambda t: dataclasses.replace(t, coinbase_value=t.coinbase_value + 1)
        )
        self.assertEqual(reason, "bad-cb-amount")
