"""The payment run against a real redis-server and a scripted wallet: the
split maths, the wallet's refusals, a lost sendmany reply, the lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from decimal import Decimal
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task, threads
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site

from nomp.candidate import BlockCandidate
from nomp.config import PaymentsConfig, RedisConfig, load_config
from nomp.daemon.errors import DaemonUnreachable, RPCError
from nomp.payments.audit import audit
from nomp.payments.ledger import PaymentLedger
from nomp.payments.processor import FAILPOINTS, PaymentProcessor, RunReport
from nomp.payments.rounds import PROP
from nomp.payments.service import PaymentService
from nomp.payments.split import coins, round_weights, satoshis, split_reward
from nomp.store.recorder import ShareRecorder
from nomp.store.redis import RedisService
from nomp.store.schema import PoolKeys
from test.fakedaemon import FakeDaemon, FakeRPCError, Handler
from test.fakes import REGTEST_ADDRESS, pool_config
from test.fakewallet import FakeChain, FakeWallet
from test.poolconf import write_conf
from test.servers import RedisServer, shared_redis
from test.test_config_paths import REPOSITORY
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


async def record_block(
    keys: PoolKeys,
    redis: RedisService,
    chain: FakeChain,
    wallet: FakeWallet,
    now: float,
    height: int,
    shares: list[tuple[str, float]],
    category: str = "generate",
) -> str:
    """A block whose round holds ``shares``, recorded by the real recorder, known
    to the chain and (its coinbase, in ``category``) to the wallet; its hash."""
    recorder = ShareRecorder(keys, redis.client, task.Clock(), wall_clock=lambda: now, round_policy=PROP)
    for worker, difficulty in shares:
        recorder.valid_share(worker, difficulty)
    block_hash, txid = f"{height:064x}", f"{height + 10**6:064x}"
    recorder.block_found(
        BlockCandidate(block_hash, txid, height, shares[-1][0], REWARD, False, 0.0, now, b"")
    )
    recorder.block_settled(block_hash, True)
    await recorder.flush()
    chain.blocks[block_hash] = (chain.tip - height + 1, txid)
    wallet.coinbases[txid] = (category, REWARD)
    return block_hash


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
        return await record_block(
            self.keys, self.redis_service, self.chain, self.wallet, self.now, height, shares, category
        )

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


# The environment variable that once made a payment run SIGKILL itself at a step.
OLD_FAILPOINT_VARIABLE = "NOMP_PAYMENTS_FAILPOINT"
WALLET_METHODS = ("gettransaction", "validateaddress", "sendmany", "listtransactions")
CHAIN_METHODS = ("getblockcount", "getblock")


def answered(rpc: FakeChain | FakeWallet, method: str, params: list[Any]) -> Any:
    """What the scripted chain or wallet answers, as a FakeDaemon handler gives it."""
    outcome: list[Any] = []
    defer.Deferred.fromCoroutine(rpc.call(method, *params)).addBoth(outcome.append)
    (result,) = outcome  # the fakes never wait
    if isinstance(result, Failure):
        if isinstance(result.value, RPCError):
            raise FakeRPCError(result.value.code, result.value.message)
        result.raiseException()
    return result


def nomp_payments(
    conf: Path, *args: str, entry: tuple[str, ...] = ("nomp.payments.cli",), env: dict[str, str] | None = None
) -> defer.Deferred[subprocess.CompletedProcess[str]]:
    """``nomp-payments -c conf args`` (or another ``python -m`` entry) in a process of its
    own, waited for on a thread so that the reactor serves the test's daemon meanwhile."""
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    return threads.deferToThread(
        subprocess.run,
        [sys.executable, "-m", *entry, "-c", str(conf), *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
    )


class PaymentCommandTests(TestCase):
    """``nomp-payments`` and PaymentService against a redis-server of their own and the
    scripted chain and wallet served over HTTP as one daemon."""

    timeout = 120

    def setUp(self) -> defer.Deferred[None]:  # type: ignore[override]  # trial waits for it
        return defer.Deferred.fromCoroutine(self._set_up())

    async def _set_up(self) -> None:
        self.server = RedisServer().start()
        self.addCleanup(self.server.stop)
        self.redis_service = RedisService(RedisConfig(port=self.server.port))
        self.redis_service.startService()
        self.addCleanup(self.redis_service.stopService)
        await until(lambda: self.redis_service.client() is not None)
        self.chain = FakeChain(tip=1000)
        self.wallet = FakeWallet(REGTEST_ADDRESS)
        handlers: dict[str, Handler] = {m: partial(answered, self.wallet, m) for m in WALLET_METHODS}
        handlers.update({m: partial(answered, self.chain, m) for m in CHAIN_METHODS})
        site: Any = Site(FakeDaemon(handlers))
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}"  # type: ignore[attr-defined]
        payments = {"enabled": True, "minimum_payment": "0.01", "fee_percent": "1"}
        self.conf, _ = write_conf(
            Path(self.mktemp()), url, "nomp", "secret", REGTEST_ADDRESS, self.server.port, payments=payments
        )
        self.pool = load_config(self.conf).pools[0]
        client = self.redis_service.client()
        assert client is not None
        self.ledger = PaymentLedger(client, PoolKeys.for_coin(self.pool.coin.name))
        self.height = 900

    async def mature_block(self) -> str:
        self.height += 1
        return await record_block(
            self.ledger.keys,
            self.redis_service,
            self.chain,
            self.wallet,
            time.time(),
            self.height,
            [(ALICE, 1.0), (BOB, 1.0)],
        )

    async def test_audit_prints_only_its_answer(self) -> None:
        """``audit`` writes its checks and verdict and nothing else; with ``-v`` its log
        has no line for each connection of the wallet calls (one each) or Redis."""
        for _ in range(3):
            await self.mature_block()
        paid = await PaymentProcessor(self.pool, self.ledger, self.chain, self.wallet).run()
        self.assertEqual(len(paid.confirmed), 3)
        self.assertIsNotNone(paid.txid)
        expected = await audit(self.ledger, self.wallet, self.pool.address)
        self.assertTrue(expected.clean)
        answer = f"pool {self.pool.name}:\n" + "".join(f"  {line}\n" for line in expected.lines())
        calls = len(self.wallet.calls)
        done = await nomp_payments(self.conf, "audit")
        self.assertEqual(len(self.wallet.calls) - calls, 4)  # three coinbases and a payout, over HTTP
        self.assertEqual((done.returncode, done.stdout, done.stderr), (0, answer, ""))

        verbose = await nomp_payments(self.conf, "-v", "audit")
        self.assertEqual((verbose.returncode, verbose.stdout), (0, answer))
        self.assertEqual([line for line in verbose.stderr.splitlines() if "actory" in line], [])

    async def test_failpoint_variable_ignored_by_the_command(self) -> None:
        """The environment variable that once killed a run at a step changes nothing: the run
        passes each step, pays and reports."""
        for step in FAILPOINTS:
            await self.mature_block()
            done = await nomp_payments(self.conf, "run", env={OLD_FAILPOINT_VARIABLE: step})
            self.assertEqual(done.returncode, 0, f"{step}: {done.stdout}{done.stderr}")
            self.assertIn("confirmed 1,", done.stdout)
            self.assertIn("paid 4950000000 satoshis to 2 addresses in ", done.stdout)
        self.assertEqual(len(self.wallet.sends), len(FAILPOINTS))

    async def test_injected_failpoint_kills_at_each_step(self) -> None:
        """The fault tests' entry point (the same command with a failpoint hook injected) dies
        at the step it names: before the payout, with its batch journalled, sent, recorded."""
        journal = self.ledger.keys.journal
        for step, journalled, sends in zip(FAILPOINTS, (False, True, True, False), (0, 0, 1, 1), strict=True):
            self.server.command("DEL", journal)
            self.server.command("DEL", self.ledger.keys.payment_lock)
            before = len(self.wallet.sends)
            await self.mature_block()
            killed = await nomp_payments(self.conf, "run", entry=("test.failpoints", step))
            self.assertEqual((killed.returncode, killed.stdout), (-9, ""), f"{step}: {killed.stderr}")
            self.assertEqual(self.server.command("GET", journal) is not None, journalled, step)
            self.assertEqual(len(self.wallet.sends) - before, sends, step)

    async def test_failpoint_variable_ignored_by_the_service(self) -> None:
        """PaymentService started with the variable set runs past every step: nothing
        signals the process."""
        signalled: list[tuple[int, int]] = []
        self.patch(os, "kill", lambda pid, number: signalled.append((pid, number)))
        for step in FAILPOINTS:
            self.patch(os, "environ", {**os.environ, OLD_FAILPOINT_VARIABLE: step})
            service = PaymentService(self.pool, self.redis_service.client, lambda: self.chain, reactor)
            service.startService()
            try:
                await self.mature_block()
                report = await service.run_once()
            finally:
                await service.stopService()
            assert report is not None
            self.assertEqual(len(report.paid), 2, step)
        self.assertEqual(signalled, [])
