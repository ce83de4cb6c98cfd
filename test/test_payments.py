"""The payment run against a real redis-server and a scripted wallet: the
split maths, the wallet's refusals, a lost sendmany reply, the lock."""

from __future__ import annotations

import os
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp.config import PaymentsConfig, RedisConfig
from nomp.daemon.errors import DaemonUnreachable, RPCError
from nomp.payments.ledger import PaymentLedger
from nomp.payments.processor import PaymentProcessor, RunReport
from nomp.payments.split import coins, round_weights, satoshis, split_reward
from nomp.store.keys import PoolKeys
from nomp.store.recorder import ShareRecorder
from nomp.store.redis import RedisService
from test.fakes import pool_config
from test.fakewallet import FakeChain, FakeWallet
from test.servers import shared_redis
from test.waiting import until

DB = 9
REWARD = 50 * 100_000_000
ALICE = "ltc1alice"
BOB = "ltc1bob"


class SplitTests(SynchronousTestCase):
    """The reward split is exact: the parts add up to the reward."""

    def test_fee_then_weights(self) -> None:
        split = split_reward(1000, {"a": Fraction(1), "b": Fraction(2)}, Decimal("1.5"))
        self.assertEqual((split.fee, split.miners, split.pool), (15, {"a": 328, "b": 656}, 16))

    def test_nobody(self) -> None:
        split = split_reward(1000, {}, Decimal(0))
        self.assertEqual((split.miners, split.pool), ({}, 1000))

    def test_weights_by_address(self) -> None:
        weights = round_weights({"A.rig1": "0.5", "A.rig2": "0.25", "B": "1e-1", "C": "junk", "D": "-1"})
        self.assertEqual(weights, {"A": Fraction(3, 4), "B": Fraction(1, 10)})

    @given(
        st.integers(0, 21_000_000 * 100_000_000),
        st.dictionaries(
            st.text(min_size=1, max_size=4), st.fractions(min_value=0, max_value=10**6), max_size=30
        ),
        st.decimals(min_value=0, max_value=Decimal("99.99"), places=2),
    )
    def test_parts_add_up(self, reward: int, weights: dict[str, Fraction], fee: Decimal) -> None:
        split = split_reward(reward, weights, fee)
        self.assertEqual(sum(split.miners.values()) + split.pool, reward)
        self.assertTrue(all(v > 0 for v in split.miners.values()))
        self.assertGreaterEqual(split.pool, split.fee)
        if any(weights.values()):  # the floors lose less than a satoshi per miner
            self.assertLess(split.pool - split.fee, sum(1 for w in weights.values() if w))
        else:  # nobody's shares: the pool keeps it all
            self.assertEqual(split.pool, reward)

    def test_coin_amounts(self) -> None:
        self.assertEqual(coins(123456789), "1.23456789")
        self.assertEqual(coins(1), "0.00000001")
        self.assertEqual(satoshis(Decimal("1.23456789")), 123456789)
        self.assertRaises(ValueError, satoshis, Decimal("0.000000001"))


class PaymentRunTests(TestCase):
    """One pool's blocks (written by the real recorder), a scripted wallet."""

    timeout = 60

    def setUp(self) -> defer.Deferred[None]:  # type: ignore[override]  # trial waits for it
        return defer.Deferred.fromCoroutine(self._set_up())

    async def _set_up(self) -> None:
        self.server = shared_redis()
        self.redis_service = RedisService(RedisConfig(port=self.server.port, db=DB))
        self.redis_service.startService()
        self.addCleanup(self.redis_service.stopService)
        await until(lambda: self.redis_service.client() is not None)
        self.keys = PoolKeys.for_coin(f"P{os.urandom(4).hex()}")
        self.now = 1_700_000_000.0
        settings = PaymentsConfig(
            enabled=True, minimum_payment=Decimal("0.01"), fee_percent=Decimal(1), unknown_send_grace=60
        )
        self.pool = pool_config(payments=settings)
        client = self.redis_service.client()
        assert client is not None
        self.ledger = PaymentLedger(client, self.keys)
        self.chain = FakeChain(tip=1000)
        self.wallet = FakeWallet(self.pool.address)

    def processor(self) -> PaymentProcessor:
        return PaymentProcessor(self.pool, self.ledger, self.chain, self.wallet, wall_clock=lambda: self.now)

    def redis(self, *args: Any) -> Any:
        return self.server.command(*args, db=DB)

    async def found(self, height: int, shares: list[tuple[str, float]], category: str = "generate") -> str:
        """A block whose round holds ``shares``, recorded by the real recorder."""
        recorder = ShareRecorder(
            self.keys, self.redis_service.client, task.Clock(), wall_clock=lambda: self.now
        )
        for worker, difficulty in shares:
            recorder.valid_share(worker, difficulty)
        record = recorder.block_found(shares[-1][0], height, REWARD)
        block_hash, txid = f"{height:064x}", f"{height + 10**6:064x}"
        recorder.block_settled(record, True, block_hash, txid)
        await recorder.flush()
        self.chain.blocks[block_hash] = (self.chain.tip - height + 1, txid)
        self.wallet.coinbases[txid] = (category, REWARD)
        return block_hash

    async def test_immature_then_mature(self) -> None:
        """Credited immature first, then moved to balances and paid."""
        block = await self.found(900, [(f"{ALICE}.a", 3.0), (BOB, 1.0)], category="immature")
        first = await self.processor().run()
        self.assertEqual(first.immature, [block])
        self.assertEqual(self.redis("HGETALL", self.keys.immature), [ALICE, "3712500000", BOB, "1237500000"])

        self.wallet.coinbases[f"{900 + 10**6:064x}"] = ("generate", REWARD)
        second = await self.processor().run()
        self.assertEqual(second.confirmed, [block])
        self.assertEqual(second.paid, {ALICE: 3712500000, BOB: 1237500000})
        self.assertEqual(self.wallet.sends[0][1], {ALICE: "37.12500000", BOB: "12.37500000"})
        self.assertEqual(self.redis("HGETALL", self.keys.immature), [])
        self.assertEqual(self.redis("HGETALL", self.keys.balances), [])
        totals = dict(zip(*[iter(self.redis("HGETALL", self.keys.payment_totals))] * 2, strict=True))
        self.assertEqual(totals["kept"], str(REWARD // 100))
        self.assertEqual(totals["paid"], str(REWARD - REWARD // 100))

    async def test_own_minimum(self) -> None:
        """A miner's own threshold holds his payout back until his balance reaches it;
        one below the pool's minimum counts as the pool's."""
        await self.found(900, [(ALICE, 1.0), (BOB, 1.0)])
        self.redis("HSET", self.keys.payout_minimums, ALICE, str(100 * 100_000_000), BOB, "1")
        report = await self.processor().run()
        self.assertEqual(set(report.paid), {BOB})
        self.assertEqual(self.redis("HKEYS", self.keys.balances), [ALICE])
        self.redis("HSET", self.keys.payout_minimums, ALICE, str(REWARD // 4))
        again = await self.processor().run()
        self.assertEqual(set(again.paid), {ALICE})

    async def test_same_coinbase_twice(self) -> None:
        """A second pending block carrying an already credited coinbase is not paid again."""
        block = await self.found(900, [(ALICE, 1.0)])
        copy_hash = "cc" * 32
        txid = self.chain.blocks[block][1]
        self.redis("SADD", self.keys.blocks_pending, f"{copy_hash}:{txid}:900:{ALICE}:1")
        self.redis("HSET", self.keys.block(copy_hash), "round", self.keys.round(900))
        self.chain.blocks[copy_hash] = (101, txid)
        report = await self.processor().run()
        self.assertEqual(report.confirmed, [block])
        self.assertEqual(report.orphaned, [copy_hash])
        self.assertEqual(report.paid, {ALICE: REWARD - REWARD // 100})

    async def test_orphaned_block(self) -> None:
        """Off the main chain and buried: orphaned, its immature credit undone, its
        PROP shares folded into the current round."""
        block = await self.found(990, [(ALICE, 2.0)], category="immature")
        await self.processor().run()
        self.chain.blocks[block] = (-1, self.chain.blocks[block][1])
        report = await self.processor().run()
        self.assertEqual(report.orphaned, [block])
        self.assertEqual(self.redis("HGETALL", self.keys.immature), [])
        self.assertEqual(self.redis("HGETALL", self.keys.round_current), [ALICE, "2"])
        self.assertEqual(self.redis("SMEMBERS", self.keys.blocks_orphaned)[0].split(":")[0], block)

    async def test_unknown_block_waits(self) -> None:
        """A block the node cannot look up is retried, never dropped."""
        block = await self.found(900, [(ALICE, 1.0)])
        del self.chain.blocks[block]
        for _ in range(3):
            report = await self.processor().run()
            self.assertIn(block, report.waiting)
        self.assertEqual(len(self.redis("SMEMBERS", self.keys.blocks_pending)), 1)

    async def test_invalid_address_set_aside(self) -> None:
        """An address the wallet calls invalid is set aside; the others are paid."""
        await self.found(900, [(ALICE, 1.0), (BOB, 1.0), ("notanaddress.rig", 1.0)])
        self.wallet.invalid.add("notanaddress")
        report = await self.processor().run()
        self.assertEqual(set(report.paid), {ALICE, BOB})
        self.assertIn("notanaddress", report.set_aside)
        self.assertEqual(self.redis("HKEYS", self.keys.balances), ["notanaddress"])

    async def test_sendmany_rejects_an_address(self) -> None:
        """sendmany refusing one address: it is set aside and the batch goes without it."""
        await self.found(900, [(ALICE, 1.0), (BOB, 1.0)])

        def refuse_bob(amounts: dict[str, str]) -> None:
            if BOB in amounts:
                raise RPCError("fake", "sendmany", -5, f"Invalid Litecoin address: {BOB}")

        self.wallet.on_sendmany = refuse_bob
        report = await self.processor().run()
        self.assertEqual(set(report.paid), {ALICE})
        self.assertIn(BOB, report.set_aside)
        self.assertEqual(self.redis("GET", self.keys.journal), None)

    async def no_payout(self, error: Exception) -> RunReport:
        await self.found(900, [(ALICE, 1.0)])

        def fail(amounts: dict[str, str]) -> None:
            raise error

        self.wallet.on_sendmany = fail
        report = await self.processor().run()
        self.assertEqual(report.paid, {})
        self.assertEqual(self.redis("HGETALL", self.keys.balances), [ALICE, str(REWARD - REWARD // 100)])
        self.assertEqual(self.redis("GET", self.keys.journal), None)
        # Next run the wallet is fine: the whole balance is paid, nothing withheld.
        self.wallet.on_sendmany = None
        again = await self.processor().run()
        self.assertEqual(again.paid, {ALICE: REWARD - REWARD // 100})
        return report

    async def test_insufficient_funds(self) -> None:
        report = await self.no_payout(RPCError("fake", "sendmany", -6, "Insufficient funds"))
        assert report.error is not None
        self.assertIn("not enough funds", report.error)

    async def test_wallet_locked(self) -> None:
        report = await self.no_payout(RPCError("fake", "sendmany", -13, "Please enter the wallet passphrase"))
        assert report.error is not None
        self.assertIn("locked", report.error)

    async def test_sendmany_unanswered_but_sent(self) -> None:
        """The wallet sent the batch but its reply was lost: the journal stays open,
        the next run finds the send by its comment and records it once."""
        await self.found(900, [(ALICE, 1.0)])
        self.wallet.sent_but_unanswered = True
        first = await self.processor().run()
        self.assertEqual(first.paid, {})
        assert first.error is not None
        self.assertIn("unanswered", first.error)
        self.assertTrue(self.redis("GET", self.keys.journal))
        self.wallet.sent_but_unanswered = False
        second = await self.processor().run()
        self.assertEqual(second.paid, {ALICE: REWARD - REWARD // 100})
        self.assertEqual(len(self.wallet.sends), 1)
        self.assertEqual(self.redis("HGETALL", self.keys.balances), [])
        self.assertEqual(self.redis("HGETALL", self.keys.paid), [ALICE, str(REWARD - REWARD // 100)])

    async def test_wallet_unreachable(self) -> None:
        """No answer and nothing sent: the batch waits out the grace time, then is
        dropped and paid afresh, once."""
        await self.found(900, [(ALICE, 1.0)])

        def unreachable(amounts: dict[str, str]) -> None:
            raise DaemonUnreachable("fake", "sendmany", "Connection refused")

        self.wallet.on_sendmany = unreachable
        await self.processor().run()
        self.wallet.on_sendmany = None
        self.now += 30
        waiting = await self.processor().run()
        self.assertEqual(waiting.paid, {})
        assert waiting.error is not None
        self.assertIn("waiting", waiting.error)
        self.now += 31
        paid = await self.processor().run()
        self.assertEqual(paid.paid, {ALICE: REWARD - REWARD // 100})
        self.assertEqual(len(self.wallet.sends), 1)

    async def test_lock(self) -> None:
        """One run per pool at a time; a run that lost its lock cannot write."""
        await self.found(900, [(ALICE, 1.0)])
        token = await self.ledger.acquire(60)
        assert token is not None
        report = await self.processor().run()
        self.assertTrue(report.locked_out)
        self.assertEqual(self.wallet.calls, [])
        await self.ledger.release(token)
        self.redis("SET", self.keys.payment_lock, str(token + 100))  # someone else's now
        blocks = await self.ledger.pending_blocks()
        split = split_reward(REWARD, {ALICE: Fraction(1)}, Decimal(0))
        with self.assertRaises(Exception) as raised:
            await self.ledger.credit_mature(token, blocks[0], "tx", split)
        self.assertIn("NOLOCK", str(raised.exception))
