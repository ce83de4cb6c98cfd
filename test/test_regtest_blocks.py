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

from nomp.chain.coinbase import CoinbaseLayout, PayoutPlan, Recipient
from nomp.chain.jobs import JobRegistry
from nomp.chain.template import BlockTemplate
from nomp.daemon import DaemonGroup
from nomp.hashing import ALGORITHMS
from nomp.payments.split import satoshis
from nomp.pool.blocks import BlockSubmitter
from test.chainhelpers import (
    LITECOIN_RULES,
    candidate_of,
    coinbase_outputs,
    connect,
    mine_block,
    solve,
)
from test.servers import BIP34_HEIGHT, MWEB_ACTIVATION, RegtestPair, shared_regtest

HOGEX_FLAG = 0x08  # serialisation flag of the MWEB HogEx transaction
BECH32M_CONSTANT = 0x2BC830A3  # BIP350
BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32m_address(hrp: str, version: int, program: bytes) -> str:
    """A segwit v1+ address (BIP350), to give the node one it did not make."""

    def polymod(values: list[int]) -> int:
        generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
        check = 1
        for value in values:
            top = check >> 25
            check = (check & 0x1FFFFFF) << 5 ^ value
            for i in range(5):
                check ^= generator[i] if (top >> i) & 1 else 0
        return check

    bits = "".join(f"{byte:08b}" for byte in program)
    bits += "0" * (-len(bits) % 5)
    data = [version] + [int(bits[i : i + 5], 2) for i in range(0, len(bits), 5)]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    checksum = polymod([*expanded, *data, 0, 0, 0, 0, 0, 0]) ^ BECH32M_CONSTANT
    data += [(checksum >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(BECH32_CHARSET[d] for d in data)


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
            self.assertEqual(outputs, [(script.hex(), amount) for script, amount in job.coinbase.outputs])
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


class SubmitAnswerTests(TestCase):
    """Every answer of submitblock is read: a block the node refuses comes
    back with the node's own reason, logged with the block hash; duplicate
    and inconclusive are told apart from acceptance; any address the node
    validates can be paid."""

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

    async def test_duplicate(self) -> None:
        """The same block submitted twice: the second answer is duplicate, and kept."""
        daemons, http_pool = connect(self.pair)
        self.addCleanup(http_pool.closeCachedConnections)
        _, plan = await plan_for(self.pair, daemons, "bech32", self.pair.new_address())
        job, first = await mine_block(daemons, plan)
        self.assertTrue(first.accepted)
        extranonce = bytes.fromhex("f000000ff111111f")
        header = bytes.fromhex(self.pair.miner.rpc("getblockheader", first.block_hash, False))
        again = await BlockSubmitter(daemons).submit(candidate_of(job, extranonce, header))
        self.assertEqual((again.accepted, again.reason), (False, "duplicate"))

    async def test_inconclusive(self) -> None:
        """A valid block on a previous block just replaced: inconclusive (a side branch)."""
        daemons, http_pool = connect(self.pair)
        self.addCleanup(http_pool.closeCachedConnections)
        _, plan = await plan_for(self.pair, daemons, "bech32", self.pair.new_address())
        template = BlockTemplate.from_rpc(await daemons.get_block_template(LITECOIN_RULES))
        job = JobRegistry(ALGORITHMS["scrypt"], plan, CoinbaseLayout()).add(template, 0.0)
        assert job is not None
        self.pair.generate(1)  # someone else's block at the same height
        extranonce = bytes(8)
        outcome = await BlockSubmitter(daemons).submit(
            candidate_of(job, extranonce, solve(job, extranonce).header)
        )
        self.assertEqual((outcome.accepted, outcome.reason), (False, "inconclusive"))

    async def test_taproot_payout(self) -> None:
        """A taproot address works as the payout: its scriptPubKey comes from validateaddress."""
        output_key = bytes(range(1, 33))
        address = bech32m_address("rltc", 1, output_key)
        daemons, http_pool = connect(self.pair)
        self.addCleanup(http_pool.closeCachedConnections)
        info = await daemons.validate_address(address)
        self.assertEqual(info.script, b"\x51\x20" + output_key)
        _, outcome = await mine_block(daemons, PayoutPlan(info.script))
        self.assertTrue(outcome.accepted, outcome.reason)
        self.assertEqual(output_address(self.pair, outcome.block_hash, 0), address)

    async def test_wrong_height(self) -> None:
        """A coinbase with the wrong BIP34 height above 500: bad-cb-height."""
        reason = await self.rejected(lambda t: dataclasses.replace(t, height=t.height + 1))
        self.assertEqual(reason, "bad-cb-height")

    async def test_one_satoshi_too_much(self) -> None:
        """A coinbase paying one satoshi more than the template allows: bad-cb-amount."""
        reason = await self.rejected(lambda t: dataclasses.replace(t, coinbase_value=t.coinbase_value + 1))
        self.assertEqual(reason, "bad-cb-amount")
