"""The Ethereum family's payer (nomp.payments.ethpayer, nomp.payments.ethpayledger):
its pure decisions, its Redis scripts against a real redis-server, and whole
payout runs against the dev node (test/ethnode) with the pool's key funded in
the genesis block: paid once and exactly, whatever step a run stops at and
whatever the node answers."""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any
from unittest import mock

from eth._utils.address import generate_contract_address
from eth_keys.datatypes import PrivateKey
from eth_typing import Address
from twisted.internet import defer, reactor
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txredisapi import ResponseError

from nomp.config import DaemonConfig, EthPaymentsConfig, EthPoolConfig, RedisConfig
from nomp.daemon.clients import DaemonClients
from nomp.daemon.errors import DaemonUnreachable, RPCError
from nomp.daemon.rpc import DaemonRPC
from nomp.payments import ethpayer
from nomp.payments.ethpayer import (
    FAILPOINTS,
    EthPayer,
    EthPayerService,
    PayoutReport,
    Settle,
    StopKind,
    TxSeen,
    Watch,
    next_nonce,
    refused,
    select_payees,
    settle_decision,
    watch_decision,
)
from nomp.payments.ethpayledger import EthPayLedger, JournalEntry, Reserved, Unconfirmed, pricing_to_json
from nomp.payments.ethsigner import (
    TRANSFER_GAS,
    DynamicPricing,
    KeyFileError,
    LegacyPricing,
    PayoutKey,
    SigningError,
    load_key,
    sign_transfer,
)
from nomp.store.oepschema import OepKeys, dust_field, login_payment_member, payment_member, shannon, wei_of
from nomp.store.redis import RedisService
from test.ethnode import ETHER, GWEI, OUTSIDE, DevNode, Fork, sign_transaction, start_dev_node
from test.ethpool import ETHERBASE, eth_pool_config, stratum_port
from test.servers import shared_redis
from test.waiting import until

DB = 5  # of the shared redis-server: this module's own, emptied before each test
COIN = "ethash-dev"
SECRET = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
KEY = PayoutKey(SECRET)
POOL_ACCOUNT = bytes.fromhex(KEY.address[2:])
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20
MINIMUM = Decimal("0.1")
LEGACY = LegacyPricing(GWEI)


def account(login: str) -> bytes:
    return bytes.fromhex(login[2:])


def entry(nonce: int = 3, tx_hash: str | None = None, login: str = ALICE) -> JournalEntry:
    if tx_hash is None:
        return JournalEntry(login, ETHER, ETHER, nonce, LEGACY, 1.0)
    return JournalEntry(login, ETHER, ETHER, nonce, LEGACY, 1.0, "signed", tx_hash, "0x01")


def unconfirmed(nonce: int = 3) -> Unconfirmed:
    return Unconfirmed("0x" + "ab" * 32, ALICE, ETHER, ETHER, nonce, 21_000 * GWEI, "0x01", 1.0)


class PayeeTests(SynchronousTestCase):
    """Who a run pays."""

    def test_threshold_and_order(self) -> None:
        """At least the minimum is paid (OEP paid strictly above it), lowest login first."""
        payees = select_payees({CAROL: 10, ALICE: 5, BOB: 4}, 5)
        self.assertEqual(payees.due, [(ALICE, 5), (CAROL, 10)])
        self.assertEqual(payees.unpayable, {})

    def test_not_payable(self) -> None:
        """A login set aside, or that is not an address, waits; one below the minimum is not listed."""
        mixed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"  # its EIP-55 checksum broken
        payees = select_payees(
            {ALICE: 9, BOB: 9, "rig-farm": 9, mixed: 9, "0x" + "00" * 20: 9, CAROL: 1}, 5, {BOB}
        )
        self.assertEqual(payees.due, [(ALICE, 9)])
        self.assertEqual(set(payees.unpayable), {BOB, "rig-farm", mixed, "0x" + "00" * 20})
        self.assertEqual(payees.unpayable[BOB], "set aside")

    def test_next_nonce(self) -> None:
        """Past the node's count and past every nonce the payer gave a payout."""
        self.assertEqual(next_nonce(0, []), 0)
        self.assertEqual(next_nonce(7, [2, 5]), 7)
        self.assertEqual(next_nonce(4, [4, 6]), 7)  # the node forgot 4 to 6: they stay the payer's


class SettleDecisionTests(SynchronousTestCase):
    """What is done with a journal entry a run left open, from what the node shows."""

    def test_unsigned(self) -> None:
        """Reserved, never signed: sign it, whatever the node says."""
        self.assertEqual(settle_decision(entry(), None, 10), Settle.SIGN)

    def test_found(self) -> None:
        """Pooled or mined (even reverted): paid."""
        for seen in (TxSeen(), TxSeen(9, 1), TxSeen(9, 0), TxSeen(9, None)):
            self.assertEqual(settle_decision(entry(3, "0xaa"), seen, 4), Settle.PAID)

    def test_nonce_taken(self) -> None:
        """Not found and the mined nonce past the entry's: another transaction took it."""
        self.assertEqual(settle_decision(entry(3, "0xaa"), None, 4), Settle.FOREIGN)

    def test_never_reached(self) -> None:
        """Not found and its nonce still free: the same bytes again."""
        self.assertEqual(settle_decision(entry(3, "0xaa"), None, 3), Settle.RESEND)
        self.assertEqual(settle_decision(entry(3, "0xaa"), None, 0), Settle.RESEND)

    def test_watch(self) -> None:
        """A payout recorded paid leaves the watch once mined deep enough; reverted, it fails."""
        payout = unconfirmed(3)
        self.assertEqual(watch_decision(payout, TxSeen(), 100, 3, 12), Watch.WAITING)
        self.assertEqual(watch_decision(payout, TxSeen(90, 1), 100, 4, 12), Watch.WAITING)
        self.assertEqual(watch_decision(payout, TxSeen(89, 1), 100, 4, 12), Watch.CONFIRMED)
        self.assertEqual(watch_decision(payout, TxSeen(89, None), 100, 4, 12), Watch.CONFIRMED)
        self.assertEqual(watch_decision(payout, TxSeen(89, 0), 100, 4, 12), Watch.FAILED)
        self.assertEqual(watch_decision(payout, None, 100, 3, 12), Watch.REBROADCAST)
        self.assertEqual(watch_decision(payout, None, 100, 4, 12), Watch.FOREIGN)

    def test_refused(self) -> None:
        """Only an answer saying the node did not take it is a refusal."""

        def error(message: str) -> RPCError:
            return RPCError("http://node", "eth_sendRawTransaction", -32000, message)

        for message in (
            "transaction underpriced",
            "replacement transaction underpriced",
            "insufficient funds for gas * price + value",
            "invalid sender",
            "intrinsic gas too low",
        ):
            self.assertTrue(refused(error(message)), message)
        for message in ("already known", "nonce too low", "service unavailable", "known transaction: 0xab"):
            self.assertFalse(refused(error(message)), message)
        self.assertFalse(refused(DaemonUnreachable("http://node", "eth_sendRawTransaction", "timeout")))


class JournalEntryTests(SynchronousTestCase):
    """A journal entry is all it takes to sign its transaction, the same each time."""

    def test_round_trip(self) -> None:
        for pricing in (LEGACY, DynamicPricing(30 * GWEI, 2 * GWEI, 25_000)):
            stored = JournalEntry(BOB, 3 * 10**19 + 7, 3 * 10**19 + 1, 2**40, pricing, 12.5)
            self.assertEqual(JournalEntry.from_json(stored.to_json()), stored)
            signed = stored.signed("0x" + "cd" * 32, "0x02f8")
            self.assertEqual(JournalEntry.from_json(signed.to_json()), signed)
        payout = unconfirmed()
        self.assertEqual(Unconfirmed.from_json(payout.tx_hash, payout.to_json()), payout)

    def test_json_as_the_encoder_writes_it(self) -> None:
        """The records written out by hand are, byte for byte, what json's encoder writes of
        their fields with the keys sorted: any login text, either pricing, any wall time."""
        rng = random.Random(7)
        logins = [BOB, 'a "quoted" \\ login', "l\u00f6gin \u2603", "\x00\n\t"]
        times = [12.5, 1_764_612_345.678912, 0.1, 3, 1e22, float("inf")]
        for login in logins:
            for created in times:
                for pricing in (LEGACY, DynamicPricing(30 * GWEI, 2 * GWEI, 25_000)):
                    amount, value = rng.getrandbits(90), rng.getrandbits(80)
                    stored = JournalEntry(login, amount, value, 2**40, pricing, created)
                    signed = stored.signed("0x" + rng.randbytes(32).hex(), "0x" + rng.randbytes(110).hex())
                    for e in (stored, signed):
                        fields = {
                            "login": e.login,
                            "amount": str(e.amount),
                            "value": str(e.value),
                            "nonce": e.nonce,
                            "pricing": pricing_to_json(e.pricing),
                            "created": e.created,
                            "state": e.state,
                            "tx_hash": e.tx_hash,
                            "raw": e.raw,
                        }
                        self.assertEqual(e.to_json(), json.dumps(fields, sort_keys=True))
                    payout = Unconfirmed.of(signed, created)
                    fields = {
                        "login": payout.login,
                        "amount": str(payout.amount),
                        "value": str(payout.value),
                        "nonce": payout.nonce,
                        "max_cost": str(payout.max_cost),
                        "raw": payout.raw,
                        "recorded": payout.recorded,
                    }
                    self.assertEqual(payout.to_json(), json.dumps(fields, sort_keys=True))

    def test_signing_again_gives_the_same_transaction(self) -> None:
        stored = JournalEntry.from_json(entry(5).to_json())
        first = sign_transfer(KEY, 1337, stored.nonce, stored.login, stored.value, stored.pricing)
        again = JournalEntry.from_json(stored.to_json())
        second = sign_transfer(KEY, 1337, again.nonce, again.login, again.value, again.pricing)
        self.assertEqual((first.raw, first.tx_hash), (second.raw, second.tx_hash))

    def test_failpoints(self) -> None:
        self.assertEqual(FAILPOINTS, ("after_reserving", "after_signing", "after_sending", "after_recording"))


class Killed(Exception):
    """A run stopped at a failpoint, as a process killed there would be."""


def kill_at(step: str) -> Callable[[str], None]:
    def reached(name: str) -> None:
        if name == step:
            raise Killed(step)

    return reached


class Node:
    """The node's RPC as the payer sees it, with the faults of a real one on demand:
    ``before_send`` runs (once) just before a transaction goes; ``on_send`` before
    each, told how many went before it; ``lose_reply`` sends it and then fails as a
    lost answer; ``refuse`` answers every send with that error message, as geth
    refuses, without passing it on."""

    def __init__(self, rpc: DaemonRPC) -> None:
        self.rpc = rpc
        self.before_send: Callable[[], None] | None = None
        self.on_send: Callable[[int], None] | None = None
        self.lose_reply = False
        self.refuse: str | None = None
        self.sent: list[str] = []

    async def call(self, method: str, *params: Any) -> Any:
        if method == "eth_sendRawTransaction":
            if self.on_send is not None:
                self.on_send(len(self.sent))
            self.sent.append(params[0])
            hook, self.before_send = self.before_send, None
            if hook is not None:
                hook()
            if self.refuse is not None:
                raise RPCError(self.rpc.url, method, -32000, self.refuse)
            if self.lose_reply:
                self.lose_reply = False
                await self.rpc.call(method, *params)
                raise DaemonUnreachable(self.rpc.url, method, "no answer in 5s")
        return await self.rpc.call(method, *params)


class RedisTestCase(TestCase):
    """A real redis-server (db 5, emptied before each test) and the payer's ledger on it."""

    timeout = 120

    async def asyncSetUp(self) -> None:
        self.server = shared_redis()
        self.server.command("FLUSHDB", db=DB)
        self.redis_service = RedisService(RedisConfig(port=self.server.port, db=DB))
        self.redis_service.startService()
        self.addCleanup(self.redis_service.stopService)
        await until(lambda: self.redis_service.client() is not None)
        self.keys = OepKeys.for_coin(COIN)

    def setUp(self) -> defer.Deferred[None]:  # type: ignore[override]  # trial waits for it
        return defer.Deferred.fromCoroutine(self.asyncSetUp())

    def ledger(self) -> EthPayLedger:
        client = self.redis_service.client()
        assert client is not None
        return EthPayLedger(client, self.keys)

    def redis(self, *args: str | int | float) -> Any:
        return self.server.command(*args, db=DB)

    def hash(self, key: str) -> dict[str, str]:
        flat = self.redis("HGETALL", key)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def amount(self, key: str, name: str) -> int:
        found = self.hash(key)
        return wei_of(found.get(name), found.get(dust_field(name)))

    def credit(self, balances: Mapping[str, int]) -> None:
        """Balances as the unlocker leaves them: each login's and the pool's total, with dust."""
        for login, wei in balances.items():
            have = self.amount(self.keys.miner(login), "balance")
            whole, dust = divmod(have + wei, GWEI)
            self.redis("HSET", self.keys.miner(login), "balance", whole, dust_field("balance"), dust)
            total = self.amount(self.keys.finances, "balance")
            whole, dust = divmod(total + wei, GWEI)
            self.redis("HSET", self.keys.finances, "balance", whole, dust_field("balance"), dust)


class LedgerTests(RedisTestCase):
    """The scripts' arithmetic: exact wei past int64 and 2^53, carried between Shannon and dust."""

    async def test_reserve_and_give_back_exactly(self) -> None:
        """21.000000000999999999 ether (past int64 wei) reserved from a balance with less dust
        (a borrow), then given back: every field as it was, to the wei."""
        ledger = self.ledger()
        balance = 25 * ETHER + 5
        amount = 21 * ETHER + 999_999_999
        self.credit({ALICE: balance})
        token = await ledger.acquire(10)
        assert token is not None
        reserved = JournalEntry(ALICE, amount, amount, 0, LEGACY, 1.0)
        await ledger.reserve(token, reserved)
        miner = self.keys.miner(ALICE)
        self.assertEqual(self.amount(miner, "balance"), balance - amount)
        self.assertEqual(self.amount(miner, "pending"), amount)
        self.assertEqual(self.amount(self.keys.finances, "pending"), amount)
        self.assertEqual(self.hash(miner)["pending"], str(shannon(amount)))
        self.assertEqual(
            self.redis("ZRANGE", self.keys.payments_pending, 0, -1), [f"{ALICE}:{shannon(amount)}"]
        )
        self.assertEqual(await ledger.journal(), [reserved])
        self.assertTrue(await ledger.give_back(token, reserved))
        self.assertFalse(await ledger.give_back(token, reserved))
        self.assertEqual(self.amount(miner, "balance"), balance)
        self.assertEqual(self.amount(miner, "pending"), 0)
        self.assertEqual(self.amount(self.keys.finances, "balance"), balance)
        self.assertEqual(self.redis("ZCARD", self.keys.payments_pending), 0)
        self.assertEqual(await ledger.journal(), [])

    async def test_reserve_refusals(self) -> None:
        """Not above the balance, one open payout per login, nonces only rising, the lock held."""
        ledger = self.ledger()
        self.credit({ALICE: ETHER, BOB: ETHER})
        token = await ledger.acquire(10)
        assert token is not None
        with self.assertRaisesRegex(ResponseError, "^NOFUNDS"):
            await ledger.reserve(token, JournalEntry(ALICE, ETHER + 1, ETHER + 1, 0, LEGACY, 1.0))
        await ledger.reserve(token, JournalEntry(ALICE, ETHER, ETHER, 4, LEGACY, 1.0))
        with self.assertRaisesRegex(ResponseError, "^JOURNALOPEN"):
            await ledger.reserve(token, JournalEntry(ALICE, 1, 1, 5, LEGACY, 1.0))
        with self.assertRaisesRegex(ResponseError, "^NONCE"):
            await ledger.reserve(token, JournalEntry(BOB, 1, 1, 4, LEGACY, 1.0))
        with self.assertRaisesRegex(ResponseError, "^NOLOCK"):
            await ledger.reserve(token + 1, JournalEntry(BOB, 1, 1, 5, LEGACY, 1.0))
        self.redis("HSET", self.keys.finances, "pending", "1.5")
        with self.assertRaisesRegex(ResponseError, "^BADAMOUNT .*finances pending is not an integer"):
            await ledger.reserve(token, JournalEntry(BOB, 1, 1, 5, LEGACY, 1.0))
        self.assertEqual(self.amount(self.keys.miner(BOB), "balance"), ETHER)
        self.assertEqual(self.amount(self.keys.miner(BOB), "pending"), 0)
        self.assertEqual([e.login for e in await ledger.journal()], [ALICE])

    async def test_amounts_past_doubles(self) -> None:
        """Balances whose Shannon pass 2^52 (where the scripts leave the sums to Redis,
        whose integers are exact) and amounts that borrow and carry dust: every field
        exact, to the wei, through a reserve, a give-back, a reserve again and a record.
        A payout of 2^53 Shannon (9 million ether) or more is refused before any script."""
        ledger = self.ledger()
        huge = 2**60 * GWEI + 7
        amount = (2**52 - 1) * GWEI + 999_999_999
        self.credit({ALICE: huge, BOB: ETHER})
        token = await ledger.acquire(10)
        assert token is not None
        entries = [
            JournalEntry(ALICE, amount, amount, 0, LEGACY, 1.0),
            JournalEntry(BOB, 5, 5, 1, LEGACY, 1.0),
        ]
        self.assertEqual(await ledger.reserve_batch(token, entries), Reserved(2, None))
        miner, finances = self.keys.miner(ALICE), self.keys.finances
        self.assertEqual(self.amount(miner, "balance"), huge - amount)
        self.assertEqual(self.amount(miner, "pending"), amount)
        self.assertEqual(self.amount(finances, "pending"), amount + 5)
        self.assertEqual(await ledger.give_back_batch(token, entries), [True, True])
        self.assertEqual((self.amount(miner, "balance"), self.amount(miner, "pending")), (huge, 0))
        self.assertEqual(self.amount(finances, "balance"), huge + ETHER)
        await ledger.reserve_batch(token, entries)
        signed = [e.signed("0x" + f"{n:064x}", "0x01") for n, e in enumerate(entries, 1)]
        self.assertEqual(await ledger.record_signed_batch(token, signed), [True, True])
        self.assertEqual(await ledger.record_paid_batch(signed, 2.0), [True, True])
        self.assertEqual(self.amount(miner, "paid"), amount)
        self.assertEqual(self.amount(miner, "balance"), huge - amount)
        self.assertEqual(self.amount(finances, "paid"), amount + 5)
        self.assertEqual(self.amount(finances, "balance"), huge + ETHER - amount - 5)
        self.assertEqual(self.amount(finances, "pending"), 0)
        too_much = JournalEntry(ALICE, 2**53 * GWEI, 2**53 * GWEI, 2, LEGACY, 1.0)
        with self.assertRaisesRegex(ValueError, "2\\^53 Shannon"):
            await ledger.reserve_batch(token, [too_much])
        self.assertEqual(self.amount(miner, "balance"), huge - amount)

    async def test_reserve_batch_stops_at_the_first_refusal(self) -> None:
        """A batch is reserved in order up to the payout that cannot be: the ones before it
        written, it and the ones after it not; the refusal says why."""
        ledger = self.ledger()
        self.credit({ALICE: ETHER, BOB: ETHER, CAROL: ETHER})
        token = await ledger.acquire(10)
        assert token is not None
        batch = [
            JournalEntry(ALICE, ETHER, ETHER, 0, LEGACY, 1.0),
            JournalEntry(BOB, ETHER + 1, ETHER + 1, 1, LEGACY, 1.0),
            JournalEntry(CAROL, ETHER, ETHER, 2, LEGACY, 1.0),
        ]
        reserved = await ledger.reserve_batch(token, batch)
        self.assertEqual(reserved.count, 1)
        assert reserved.refusal is not None
        self.assertTrue(reserved.refusal.startswith(f"NOFUNDS the balance of {BOB}"), reserved.refusal)
        self.assertEqual(await ledger.journal(), batch[:1])
        for login in (BOB, CAROL):
            self.assertEqual(self.amount(self.keys.miner(login), "balance"), ETHER)
        self.assertEqual(self.amount(self.keys.finances, "pending"), ETHER)
        for refused_batch, why in (
            ([JournalEntry(CAROL, 1, 1, 0, LEGACY, 1.0)], "^NONCE"),
            (
                [JournalEntry(CAROL, 1, 1, 3, LEGACY, 1.0), JournalEntry(CAROL, 1, 1, 4, LEGACY, 1.0)],
                "^JOURNALOPEN",
            ),
        ):
            reserved = await ledger.reserve_batch(token, refused_batch)
            self.assertRegex(reserved.refusal or "", why)
        with self.assertRaisesRegex(ResponseError, "^NOLOCK"):
            await ledger.reserve_batch(token + 1, [JournalEntry(BOB, 1, 1, 9, LEGACY, 1.0)])
        self.redis("HSET", self.keys.payouts_aside, BOB, "reverted")
        reserved = await ledger.reserve_batch(token, [JournalEntry(BOB, 1, 1, 9, LEGACY, 1.0)])
        self.assertEqual(reserved, Reserved(0, f"ASIDE payouts to {BOB} are set aside"))
        self.redis("HDEL", self.keys.payouts_aside, BOB)
        self.redis("HSET", self.keys.miner(BOB), "pending", "x")
        reserved = await ledger.reserve_batch(token, [JournalEntry(BOB, 1, 1, 9, LEGACY, 1.0)])
        self.assertRegex(
            reserved.refusal or "", f"^BADAMOUNT {self.keys.miner(BOB)} pending is not an integer"
        )
        self.assertEqual([e.login for e in await ledger.journal()], [ALICE, CAROL])
        self.assertEqual(self.amount(self.keys.miner(BOB), "balance"), ETHER)

    async def test_batch_records_check_every_amount_first(self) -> None:
        """A record of paid, or a give-back, with one login's amounts not OEP's numbers writes
        nothing, for no payout of its batch."""
        ledger = self.ledger()
        self.credit({ALICE: ETHER, BOB: ETHER})
        token = await ledger.acquire(10)
        assert token is not None
        entries = [JournalEntry(login, ETHER, ETHER, n, LEGACY, 1.0) for n, login in enumerate((ALICE, BOB))]
        await ledger.reserve_batch(token, entries)
        signed = [e.signed("0x" + f"{n:064x}", "0x01") for n, e in enumerate(entries, 1)]
        self.assertEqual(await ledger.record_signed_batch(token, signed), [True, True])
        self.assertEqual(await ledger.record_signed_batch(token, signed), [False, False])
        self.redis("HSET", self.keys.miner(BOB), "paid", "0.5")
        with self.assertRaisesRegex(ResponseError, f"^BADAMOUNT .*{BOB}.* paid is not an integer"):
            await ledger.record_paid_batch(signed, 2.0)
        self.redis("HSET", self.keys.miner(BOB), "balance", "x")
        with self.assertRaisesRegex(ResponseError, f"^BADAMOUNT .*{BOB}.* balance is not an integer"):
            await ledger.give_back_batch(token, entries)
        self.assertEqual(await ledger.journal(), signed)
        self.assertEqual(self.amount(self.keys.miner(ALICE), "pending"), ETHER)
        self.assertEqual(self.redis("ZCARD", self.keys.payments_all), 0)
        self.redis("HSET", self.keys.miner(BOB), "paid", "0", "balance", "0")
        self.redis("HSET", self.keys.finances, dust_field("paid"), "1000000000")
        with self.assertRaisesRegex(
            ResponseError, f"^BADAMOUNT .*finances {dust_field('paid')} is not below a Shannon"
        ):
            await ledger.record_paid_batch(signed, 2.0)
        self.redis("HSET", self.keys.finances, dust_field("paid"), "0")
        self.assertEqual(await ledger.journal(), signed)
        self.assertEqual(await ledger.record_paid_batch(signed[:1], 2.0), [True])
        self.assertEqual(await ledger.record_paid_batch(signed, 2.0), [False, True])
        self.assertEqual(await ledger.give_back_batch(token, entries), [False, False])
        self.assertEqual(self.redis("ZCARD", self.keys.payments_all), 2)

    async def test_balances_of_any_login(self) -> None:
        """The scan's JSON reply keeps a login that is any text (a pool with usernames: any):
        quotes, slashes, backslashes, non-ASCII."""
        odd = 'rig "farm" \\ a/b \u00fc\u4e2d'
        self.redis("HSET", self.keys.miner(odd), "balance", 3, dust_field("balance"), 4)
        self.redis("HSET", self.keys.miner(ALICE), "balance", 1)
        self.assertEqual(await self.ledger().balances(), {odd: 3 * GWEI + 4, ALICE: GWEI})
        self.redis("HSET", self.keys.payouts_aside, odd, 'a "reason"')
        self.assertEqual(await self.ledger().aside(), {odd: 'a "reason"'})

    async def test_balances_scan(self) -> None:
        """Every miners:<login> hash's balance, across SCAN pages."""
        balances = {f"0x{i:040x}": i * GWEI + i for i in range(1, 1200)}
        for login, wei in balances.items():
            whole, dust = divmod(wei, GWEI)
            self.redis("HSET", self.keys.miner(login), "balance", whole, dust_field("balance"), dust)
        self.redis("HSET", self.keys.miner(ALICE), "lastShare", 5)
        self.assertEqual(await self.ledger().balances(), {**balances, ALICE: 0})


class NonceIndexTests(RedisTestCase):
    """The index of the nonces in use (EthPayLedger.nonces): a new payout's nonce is checked
    in one lookup, with the answers the check over every journal and unconfirmed entry
    gave."""

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.payout_ledger = self.ledger()
        token = await self.payout_ledger.acquire(60)
        assert token is not None
        self.token = token
        self.credit({login: 1000 * ETHER for login in (ALICE, BOB, CAROL)})

    def stored_nonces(self) -> list[int]:
        """Every nonce the journal and the unconfirmed payouts hold, read from the entries."""
        entries = [*self.hash(self.keys.payouts_journal).values()]
        entries += self.hash(self.keys.payouts_unconfirmed).values()
        return [int(json.loads(text)["nonce"]) for text in entries]

    async def reserve(self, login: str, nonce: int) -> JournalEntry:
        reserved = JournalEntry(login, 1, 1, nonce, LEGACY, 1.0)
        await self.payout_ledger.reserve(self.token, reserved)
        return reserved

    async def pay(self, reserved: JournalEntry) -> Unconfirmed:
        """The reserved entry signed (a made-up transaction) and recorded paid."""
        tx_hash = "0x" + os.urandom(32).hex()
        signed = reserved.signed(tx_hash, "0x01")
        self.assertTrue(await self.payout_ledger.record_signed(self.token, signed))
        self.assertTrue(await self.payout_ledger.record_paid(signed, 2.0))
        (payout,) = [u for u in await self.payout_ledger.unconfirmed() if u.tx_hash == tx_hash]
        return payout

    async def test_against_the_scan_of_every_entry(self) -> None:
        """Reserves, give-backs, records, mined and failed payouts, entries deleted by hand and
        the index deleted, in a random order: each reserve is refused for its nonce exactly
        when a nonce at or above it is in an entry."""
        rng = random.Random(14)
        refused = accepted = 0
        for _ in range(300):
            journal = {e.login: e for e in await self.payout_ledger.journal()}
            watched = await self.payout_ledger.unconfirmed()
            action = rng.choice(["reserve"] * 4 + ["give back", "pay", "mined", "failed", "by hand", "index"])
            if action == "reserve":
                login = rng.choice([ALICE, BOB, CAROL])
                if login in journal or login in self.hash(self.keys.payouts_aside):
                    continue
                nonce = rng.randrange(16)
                above = all(nonce > n for n in self.stored_nonces())
                try:
                    await self.reserve(login, nonce)
                except ResponseError as e:
                    self.assertFalse(above, str(e))
                    self.assertTrue(str(e).startswith("NONCE"), str(e))
                    refused += 1
                else:
                    self.assertTrue(above, nonce)
                    accepted += 1
            elif action == "give back" and journal:
                self.assertTrue(
                    await self.payout_ledger.give_back(self.token, rng.choice(list(journal.values())))
                )
            elif action == "pay" and journal:
                await self.pay(rng.choice(list(journal.values())))
            elif action == "mined" and watched:
                self.assertTrue(await self.payout_ledger.mined(rng.choice(watched)))
            elif action == "failed" and watched:
                payout = rng.choice(watched)
                self.assertTrue(await self.payout_ledger.failed(payout, "reverted"))
                self.redis("HDEL", self.keys.payouts_aside, payout.login)
            elif action == "by hand" and journal:
                self.redis("HDEL", self.keys.payouts_journal, rng.choice(list(journal)))
            elif action == "index":
                self.redis("DEL", self.payout_ledger.nonces)
        self.assertGreater(refused, 20)
        self.assertGreater(accepted, 20)

    async def test_one_lookup(self) -> None:
        """Once built, a reserve reads no whole hash, however many payouts are watched."""
        for nonce in range(50):
            await self.pay(await self.reserve(ALICE, nonce))
        hash_reads = ("cmdstat_hgetall", "cmdstat_hvals")
        before = self.command_calls(hash_reads)
        await self.reserve(BOB, 50)
        with self.assertRaisesRegex(ResponseError, "^NONCE"):
            await self.reserve(CAROL, 49)
        self.assertEqual(self.command_calls(hash_reads), before)

    def command_calls(self, names: tuple[str, ...]) -> dict[str, int]:
        """How often this redis-server ran each command, scripts' calls included."""
        found = dict.fromkeys(names, 0)
        for line in str(self.redis("INFO", "commandstats")).splitlines():
            name, _, stats = line.partition(":")
            if name in found:
                found[name] = int(stats.split(",")[0].removeprefix("calls="))
        return found

    async def test_built_for_an_existing_deployment(self) -> None:
        """Entries from before the index (none of them in it): the first reserve builds it
        from both hashes, and refuses a nonce at or below theirs."""
        self.redis("HSET", self.keys.payouts_journal, ALICE, entry(7).to_json())
        self.redis("HSET", self.keys.payouts_unconfirmed, unconfirmed(9).tx_hash, unconfirmed(9).to_json())
        for nonce in (7, 9):
            with self.assertRaisesRegex(ResponseError, "^NONCE"):
                await self.reserve(BOB, nonce)
        await self.reserve(BOB, 10)
        self.assertEqual(
            self.redis("ZRANGE", self.payout_ledger.nonces, 0, -1),
            [
                "-built",
                f"{7:020d}:j:{ALICE}",
                f"{9:020d}:u:{unconfirmed().tx_hash}",
                f"{10:020d}:j:{BOB}",
            ],
        )

    async def test_given_back_nonce_used_again(self) -> None:
        """A nonce given back is free: the next payout may take it."""
        reserved = await self.reserve(ALICE, 5)
        self.assertTrue(await self.payout_ledger.give_back(self.token, reserved))
        await self.reserve(BOB, 5)

    async def test_new_payout_key(self) -> None:
        """The old key's payouts at high nonces: a new key's nonce 0 waits while they are
        watched, and is taken once they are mined (the index keeps no high-water mark)."""
        old = [await self.pay(await self.reserve(login, 100 + i)) for i, login in enumerate((ALICE, BOB))]
        with self.assertRaisesRegex(ResponseError, "^NONCE"):
            await self.reserve(CAROL, 0)
        for payout in old:
            self.assertTrue(await self.payout_ledger.mined(payout))
        self.assertEqual(self.redis("ZRANGE", self.payout_ledger.nonces, 0, -1), ["-built"])
        await self.reserve(CAROL, 0)

    async def test_entry_deleted_by_hand(self) -> None:
        """A journal entry the operator deleted (a payout settled by hand) holds no nonce."""
        await self.reserve(ALICE, 7)
        self.redis("HDEL", self.keys.payouts_journal, ALICE)
        await self.reserve(BOB, 3)
        self.assertEqual(
            self.redis("ZRANGE", self.payout_ledger.nonces, 0, -1), ["-built", f"{3:020d}:j:{BOB}"]
        )


class PayerTestCase(RedisTestCase):
    """A dev node with the pool's key funded in genesis, and a payer on it."""

    fork: Fork = "homestead"
    funds = 100 * ETHER

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.node: DevNode = start_dev_node(self, ETHERBASE, fork=self.fork, alloc={POOL_ACCOUNT: self.funds})
        self.chain = self.node.chain
        self.key_file = self.write_key(0o600)
        clients = DaemonClients(reactor, persistent=False)
        self.addCleanup(clients.close)
        self.rpc = Node(clients.rpc(DaemonConfig(url=self.node.url, timeout=5.0), version="2.0"))
        self.config = self.pool_config()

    def write_key(self, mode: int) -> str:
        path = str(self.mktemp())
        with open(path, "w") as f:
            f.write(SECRET.hex() + "\n")
        os.chmod(path, mode)
        return path

    def pool_config(self, **payments: Any) -> EthPoolConfig:
        options: dict[str, Any] = {
            "enabled": True,
            "key_file": self.key_file,
            "minimum_payment": MINIMUM,
            "lock_timeout": 30.0,
            **payments,
        }
        return eth_pool_config(self.node.url, [stratum_port(4)], payments=EthPaymentsConfig(**options))

    def payer(self, failpoint: Callable[[str], None] | None = None, confirmations: int = 1) -> EthPayer:
        return EthPayer(
            self.config,
            self.ledger(),
            self.rpc,
            load_key(self.key_file),
            failpoint=failpoint,
            confirmations=confirmations,
        )

    async def run_payer(
        self, failpoint: Callable[[str], None] | None = None, confirmations: int = 1
    ) -> PayoutReport:
        return await self.payer(failpoint, confirmations).run()

    def received(self, login: str) -> int:
        return self.chain.balance(account(login))

    def gas_price(self) -> int:
        base_fee: int = getattr(self.chain.head.header, "base_fee_per_gas", None) or 0
        return self.chain.suggested_tip + base_fee

    def assert_books(self, paid: Mapping[str, int], left: Mapping[str, int] | None = None) -> None:
        """OEP's fields as a payout leaves them: ``paid`` (login -> wei debited, in how many
        payouts: their count is the number of payments:<login> members), nothing pending,
        ``left`` still in the balance; the pool's totals the sums; the journal empty."""
        left = left or {}
        for login, wei in paid.items():
            miner = self.keys.miner(login)
            self.assertEqual(self.amount(miner, "paid"), wei, login)
            self.assertEqual(self.amount(miner, "pending"), 0, login)
            self.assertEqual(self.amount(miner, "balance"), left.get(login, 0), login)
            self.assertEqual(self.hash(miner)["paid"], str(shannon(wei)), login)
        self.assertEqual(self.amount(self.keys.finances, "paid"), sum(paid.values()))
        self.assertEqual(self.amount(self.keys.finances, "pending"), 0)
        self.assertEqual(self.amount(self.keys.finances, "balance"), sum(left.values()))
        self.assertEqual(self.redis("ZCARD", self.keys.payments_pending), 0)
        self.assertEqual(self.hash(self.keys.payouts_journal), {})

    def payments_of(self, login: str) -> list[str]:
        return list(self.redis("ZRANGE", self.keys.payments_of(login), 0, -1))


class PayoutTests(PayerTestCase):
    """A run pays every balance over the minimum, exactly, once."""

    async def test_paid_mined_and_recorded(self) -> None:
        """Two miners over the minimum are paid to the wei, the third waits; OEP's records
        name each transaction; once mined, the watch lets them go."""
        amounts = {ALICE: ETHER + 123_456_789_123_456_789, BOB: MINIMUM_WEI}
        self.credit({**amounts, CAROL: MINIMUM_WEI - 1})
        report = await self.run_payer()
        self.assertIsNone(report.error)
        self.assertEqual(report.amounts, amounts)
        self.assertEqual(set(report.paid), {ALICE, BOB})
        self.assertEqual(len(self.chain.pending_transactions), 2)
        self.chain.mine()
        for login, wei in amounts.items():
            self.assertEqual(self.received(login), wei)
            tx = report.paid[login]
            self.assertEqual(self.payments_of(login), [login_payment_member(tx, shannon(wei))])
        self.assertEqual(
            sorted(self.redis("ZRANGE", self.keys.payments_all, 0, -1)),
            sorted(payment_member(report.paid[login], login, shannon(wei)) for login, wei in amounts.items()),
        )
        self.assert_books(amounts, {CAROL: MINIMUM_WEI - 1})
        self.assertEqual(self.received(CAROL), 0)
        spent = sum(amounts.values()) + 2 * TRANSFER_GAS * self.gas_price()
        self.assertEqual(self.chain.balance(POOL_ACCOUNT), self.funds - spent)
        self.assertEqual(len(self.hash(self.keys.payouts_unconfirmed)), 2)

        again = await self.run_payer()
        self.assertEqual((again.error, again.paid), (None, {}))
        self.assertEqual(sorted(again.confirmed), sorted(report.paid.values()))
        self.assertEqual(self.hash(self.keys.payouts_unconfirmed), {})
        self.assert_books(amounts, {CAROL: MINIMUM_WEI - 1})

    async def test_waits_for_confirmations(self) -> None:
        """A payout stays watched until its block has CONFIRMATIONS blocks on top."""
        self.credit({ALICE: ETHER})
        report = await self.run_payer(confirmations=3)
        self.chain.mine_blocks(2)
        waiting = await self.run_payer(confirmations=3)
        self.assertEqual(waiting.waiting, [report.paid[ALICE]])
        self.chain.mine()
        done = await self.run_payer(confirmations=3)
        self.assertEqual(done.confirmed, [report.paid[ALICE]])

    async def test_miners_pay_the_fee(self) -> None:
        """transaction_fee: miners: the fee's ceiling comes off the payout; the miner's balance
        goes down by the whole amount."""
        self.config = self.pool_config(transaction_fee="miners")
        amount = 2 * ETHER + 17
        self.credit({ALICE: amount})
        report = await self.run_payer()
        self.assertIsNone(report.error)
        self.chain.mine()
        fee = TRANSFER_GAS * self.gas_price()
        self.assertEqual(self.received(ALICE), amount - fee)
        self.assertEqual(self.chain.balance(POOL_ACCOUNT), self.funds - amount)
        self.assert_books({ALICE: amount})

    async def test_pool_account_not_paid_to_itself(self) -> None:
        """The pool's fee credited to the payout key's own account stays there."""
        own = KEY.address.lower()
        self.credit({own: ETHER, ALICE: ETHER})
        report = await self.run_payer()
        self.assertEqual(set(report.paid), {ALICE})
        self.assertIn(own, report.skipped)
        self.assertEqual(self.amount(self.keys.miner(own), "balance"), ETHER)

    async def test_locked_by_the_unlocker(self) -> None:
        """While the unlocker's run holds the pool's lock the payer does nothing."""
        self.credit({ALICE: ETHER})
        self.redis("SET", self.keys.unlocker_lock, "7", "PX", 60_000)
        report = await self.run_payer()
        self.assertTrue(report.locked_out)
        self.assertEqual(self.chain.pending_transactions, ())
        self.assertEqual(self.redis("GET", self.keys.unlocker_lock), "7")

    async def test_oep_payer_at_work(self) -> None:
        """OEP's payments:lock, or a payments:pending member of no journal entry, stops the run."""
        self.credit({ALICE: ETHER})
        self.redis("SET", self.keys.payments_lock, f"{ALICE}:1000000000")
        report = await self.run_payer()
        assert report.error is not None
        self.assertIn("payments:lock", report.error)
        self.redis("DEL", self.keys.payments_lock)
        self.redis("ZADD", self.keys.payments_pending, 1, f"{BOB}:5")
        report = await self.run_payer()
        assert report.error is not None
        self.assertIn(f"{BOB}:5", report.error)
        self.assertEqual(self.chain.pending_transactions, ())
        self.assertEqual(self.amount(self.keys.miner(ALICE), "balance"), ETHER)


MINIMUM_WEI = int(MINIMUM * ETHER)


class KilledRunTests(PayerTestCase):
    """A run stopped at each step of a payout, then a new run: each miner paid exactly once."""

    async def test_killed_at_every_step(self) -> None:
        paid = {ALICE: 0, BOB: 0}
        for round_number, step in enumerate(FAILPOINTS, 1):
            amounts = {ALICE: ETHER + round_number, BOB: 2 * ETHER + 3 * round_number}
            self.credit(amounts)
            with self.assertRaises(Killed):
                await self.run_payer(kill_at(step))
            report = await self.run_payer()
            self.assertIsNone(report.error, step)
            self.chain.mine()
            for login, wei in amounts.items():
                paid[login] += wei
                self.assertEqual(self.received(login), paid[login], step)
                self.assertEqual(len(self.payments_of(login)), round_number, step)
            self.assert_books(paid)
            self.assertEqual(self.chain.pending_transactions, ())
        self.assertEqual(self.chain.nonce(POOL_ACCOUNT), 2 * len(FAILPOINTS))

    async def test_killed_after_signing_then_never_sent_twice(self) -> None:
        """An entry signed and sent again gives the node the same bytes."""
        self.credit({ALICE: ETHER})
        with self.assertRaises(Killed):
            await self.run_payer(kill_at("after_signing"))
        (open_entry,) = await self.ledger().journal()
        self.assertEqual(self.rpc.sent, [])
        await self.run_payer()
        self.assertEqual(self.rpc.sent, [open_entry.raw])


# Seven logins, in the order a run pays them: in batches of 1, 2 and 4.
SEVEN = ["0x" + f"{n:02x}" * 20 for n in (0x17, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6)]


class CountingLedger(EthPayLedger):
    """The payer's ledger, each batch script's size noted, and each lock extension."""

    def __init__(self, redis: Any, keys: OepKeys) -> None:
        super().__init__(redis, keys)
        self.sizes: dict[str, list[int]] = {"reserve": [], "signed": [], "paid": []}
        self.extensions = 0

    async def reserve_batch(self, token: int, entries: Any, lock_timeout: float | None = None) -> Any:
        self.sizes["reserve"].append(len(entries))
        return await super().reserve_batch(token, entries, lock_timeout)

    async def record_signed_batch(self, token: int, entries: Any, lock_timeout: float | None = None) -> Any:
        self.sizes["signed"].append(len(entries))
        return await super().record_signed_batch(token, entries, lock_timeout)

    async def record_paid_batch(
        self, entries: Any, now: float, token: int | None = None, lock_timeout: float | None = None
    ) -> Any:
        self.sizes["paid"].append(len(entries))
        return await super().record_paid_batch(entries, now, token, lock_timeout)

    async def extend(self, token: int, timeout: float) -> bool:
        self.extensions += 1
        return await super().extend(token, timeout)


def kill_at_nth(step: str, nth: int) -> Callable[[str], None]:
    """As kill_at, the ``nth`` time the run passes ``step``."""
    times = 0

    def reached(name: str) -> None:
        nonlocal times
        if name == step:
            times += 1
            if times == nth:
                raise Killed(f"{step} #{nth}")

    return reached


class BatchTests(PayerTestCase):
    """Payouts in batches: one script reserves a batch, one records its transactions, one
    records its paid; a run stopped inside a batch still pays each login once."""

    def credit_seven(self, round_number: int = 1) -> dict[str, int]:
        amounts = {login: ETHER + 1000 * i + round_number for i, login in enumerate(SEVEN)}
        self.credit(amounts)
        return amounts

    signing: ThreadPool | None = None  # the payers' signing threads; None: the reactor's thread

    def batch_payer(self, failpoint: Callable[[str], None] | None = None, batch: int = 200) -> EthPayer:
        client = self.redis_service.client()
        assert client is not None
        self.counting = CountingLedger(client, self.keys)
        return EthPayer(
            self.config,
            self.counting,
            self.rpc,
            KEY,
            failpoint=failpoint,
            confirmations=1,
            batch=batch,
            signing=self.signing,
        )

    async def test_batches_grow(self) -> None:
        """A run's first batch is one payout, each next twice the last, up to the batch size;
        the lock is kept by the batch scripts, with no extension of its own."""
        amounts = self.credit_seven()
        report = await self.batch_payer().run()
        self.assertIsNone(report.error)
        self.assertEqual(self.counting.sizes, {"reserve": [1, 2, 4], "signed": [1, 2, 4], "paid": [1, 2, 4]})
        self.assertEqual(self.counting.extensions, 0)
        self.chain.mine()
        self.assertEqual({login: self.received(login) for login in SEVEN}, amounts)
        self.assert_books(amounts)
        self.assertEqual(self.chain.nonce(POOL_ACCOUNT), 7)

        self.credit_seven(2)
        report = await self.batch_payer(batch=2).run()
        self.assertIsNone(report.error)
        self.assertEqual(self.counting.sizes["reserve"], [1, 2, 2, 2])
        self.chain.mine()
        self.assertEqual(self.chain.nonce(POOL_ACCOUNT), 14)

    async def test_scripts_keep_the_lock(self) -> None:
        """A batch's reserve and its signed record start the lock's timeout again: each time
        the run is past one, the lock's timeout is the full one again, though the step
        before cut it to a second."""
        self.credit_seven()
        ttls: list[int] = []
        steps = [""]

        def cut_short(step: str) -> None:
            if step != steps[-1] and step in ("after_reserving", "after_signing"):
                ttls.append(int(self.redis("PTTL", self.keys.unlocker_lock)))
                self.redis("PEXPIRE", self.keys.unlocker_lock, 1000)
            steps.append(step)

        report = await self.batch_payer(cut_short).run()
        self.assertIsNone(report.error)
        self.assertEqual(len(ttls), 6)
        self.assertTrue(all(ttl > 1000 for ttl in ttls), ttls)

    async def test_killed_inside_a_batch(self) -> None:
        """Stopped inside the third batch at each step (reserved; signed; 3 of its 4 sent;
        recorded), then run again: each login paid once, its nonce the next."""
        paid = dict.fromkeys(SEVEN, 0)
        cases = (("after_reserving", 4), ("after_signing", 5), ("after_sending", 6), ("after_recording", 5))
        for round_number, (step, nth) in enumerate(cases, 1):
            amounts = self.credit_seven(round_number)
            with self.assertRaises(Killed):
                await self.batch_payer(kill_at_nth(step, nth)).run()
            report = await self.batch_payer().run()
            self.assertIsNone(report.error, step)
            self.chain.mine()
            for login, wei in amounts.items():
                paid[login] += wei
                self.assertEqual(self.received(login), paid[login], step)
                self.assertEqual(len(self.payments_of(login)), round_number, step)
            self.assert_books(paid)
            self.assertEqual(self.chain.pending_transactions, (), step)
            self.assertEqual(self.chain.nonce(POOL_ACCOUNT), 7 * round_number, step)

    async def test_refused_inside_a_batch(self) -> None:
        """The node refuses the second payout of the third batch: the ones before it are
        paid, it goes back to its balance, and the two after it (signed, never sent) too,
        so that no payout waits behind a nonce left free; the next run pays them."""
        amounts = self.credit_seven()

        def refuse_fifth(sent_before: int) -> None:
            self.rpc.refuse = "transaction underpriced" if sent_before == 4 else None

        self.rpc.on_send = refuse_fifth
        report = await self.batch_payer().run()
        assert report.error is not None
        self.assertIn(f"the node refused the payout to {SEVEN[4]} (transaction underpriced)", report.error)
        self.assertIn("the 2 payouts after it in its batch, never sent", report.error)
        self.assertEqual(report.given_back, {SEVEN[4]: "transaction underpriced"})
        self.assertEqual(report.withdrawn, SEVEN[5:])
        self.assertEqual(set(report.paid), set(SEVEN[:4]))
        self.assertEqual(len(self.rpc.sent), 5)
        for login in SEVEN[4:]:
            self.assertEqual(self.amount(self.keys.miner(login), "balance"), amounts[login], login)
            self.assertEqual(self.amount(self.keys.miner(login), "pending"), 0, login)
        self.assertEqual(self.hash(self.keys.payouts_journal), {})
        self.rpc.on_send = None
        self.rpc.refuse = None
        await self.check_next_run_pays(SEVEN[4:], amounts)
        self.assertEqual(self.chain.nonce(POOL_ACCOUNT), 7)

    async def test_refused_with_the_next_batch_reserved(self) -> None:
        """The node refuses the first payout of the second batch while the third is reserved
        ahead: the second's other payout and the whole third go back to their balances,
        never signed or never sent, and the next run pays them."""
        amounts = self.credit_seven()

        def refuse_second(sent_before: int) -> None:
            self.rpc.refuse = "transaction underpriced" if sent_before == 1 else None

        self.rpc.on_send = refuse_second
        report = await self.batch_payer().run()
        assert report.error is not None
        self.assertIn(f"the node refused the payout to {SEVEN[1]} (transaction underpriced)", report.error)
        self.assertEqual(self.counting.sizes["reserve"], [1, 2, 4])
        self.assertEqual(report.given_back, {SEVEN[1]: "transaction underpriced"})
        self.assertEqual(report.withdrawn, SEVEN[2:])
        self.assertEqual(set(report.paid), {SEVEN[0]})
        for login in SEVEN[1:]:
            self.assertEqual(self.amount(self.keys.miner(login), "balance"), amounts[login], login)
            self.assertEqual(self.amount(self.keys.miner(login), "pending"), 0, login)
        self.assertEqual(self.hash(self.keys.payouts_journal), {})
        self.assertEqual(self.redis("ZCARD", self.keys.payments_pending), 0)
        self.rpc.on_send = None
        self.rpc.refuse = None
        await self.check_next_run_pays(SEVEN[1:], amounts)
        self.assertEqual(self.chain.nonce(POOL_ACCOUNT), 7)

    async def test_node_unreachable_inside_a_batch(self) -> None:
        """The fifth send and the looks after it fail: the four before are recorded paid,
        the fifth stays open in the journal, the two after it go back to their balances;
        the next run settles the fifth and pays the two."""
        amounts = self.credit_seven()

        def cut(sent_before: int) -> None:
            if sent_before == 4:
                self.node.rpc.disconnect = {"eth_sendRawTransaction", "eth_getTransactionByHash"}

        self.rpc.on_send = cut
        report = await self.batch_payer().run()
        assert report.error is not None
        self.assertIn("the node failed", report.error)
        self.assertEqual(set(report.paid), set(SEVEN[:4]))
        self.assertEqual(report.withdrawn, SEVEN[5:])
        (open_entry,) = await self.ledger().journal()
        self.assertEqual((open_entry.login, open_entry.state), (SEVEN[4], "signed"))
        for login in SEVEN[5:]:
            self.assertEqual(self.amount(self.keys.miner(login), "balance"), amounts[login], login)
        self.rpc.on_send = None
        self.node.rpc.disconnect = set()
        await self.check_next_run_pays(SEVEN[4:], amounts)
        self.assertEqual(self.chain.nonce(POOL_ACCOUNT), 7)

    async def test_signing_fails_inside_a_batch(self) -> None:
        """The signer fails on the fifth payout: the four before it are paid, it and the two
        after it are back in their balances, the run says why; the next run pays them."""
        amounts = self.credit_seven()

        def failing(key: PayoutKey, chain_id: int, nonce: int, to: str, value: int, pricing: Any) -> Any:
            if to == SEVEN[4]:
                raise SigningError("signing failed (RuntimeError)")
            return sign_transfer(key, chain_id, nonce, to, value, pricing)

        with mock.patch.object(ethpayer, "sign_transfer", failing):
            report = await self.batch_payer().run()
        assert report.error is not None
        self.assertIn(f"the payout to {SEVEN[4]} could not be signed", report.error)
        self.assertEqual(report.given_back, {SEVEN[4]: "signing failed (RuntimeError)"})
        self.assertEqual(report.withdrawn, SEVEN[5:])
        self.assertEqual(set(report.paid), set(SEVEN[:4]))
        self.assertEqual(self.hash(self.keys.payouts_journal), {})
        await self.check_next_run_pays(SEVEN[4:], amounts)

    async def test_balance_moved_inside_a_batch(self) -> None:
        """A login's balance below what the run read when its batch is reserved: it waits
        (NOFUNDS), the rest of the batch is paid with the nonces after the ones before."""
        await self.check_balance_moved(4)

    async def test_balance_moved_at_a_batch_start(self) -> None:
        """The first payout of the third batch cannot be reserved (NOFUNDS): the batch signs
        nothing at first, the rest of it is paid with the nonces after the second batch's."""
        await self.check_balance_moved(3)

    async def check_next_run_pays(self, logins: list[str], amounts: dict[str, int]) -> None:
        """The next run, with nothing failing, pays ``logins`` without an error; once mined,
        each of the seven has received exactly ``amounts`` and the books agree."""
        report = await self.batch_payer().run()
        self.assertIsNone(report.error)
        self.assertEqual(set(report.paid), set(logins))
        self.chain.mine()
        self.assertEqual({login: self.received(login) for login in SEVEN}, amounts)
        self.assert_books(amounts)

    async def check_balance_moved(self, index: int) -> None:
        """The run pays the seven but ``SEVEN[index]``, whose balance drops by one wei
        after the run read it: that login is skipped (NOFUNDS) and keeps its balance, the
        six others are paid with six nonces."""
        amounts = self.credit_seven()
        payer = self.batch_payer()
        read = payer.ledger.balances
        moved = SEVEN[index]

        async def stale() -> dict[str, int]:
            balances = await read()
            self.redis("HINCRBY", self.keys.miner(moved), "balance", -1)
            return balances

        payer.ledger.balances = stale  # type: ignore[method-assign]
        report = await payer.run()
        self.assertIsNone(report.error)
        self.assertTrue(report.skipped[moved].startswith("NOFUNDS"), report.skipped)
        self.assertEqual(set(report.paid), set(SEVEN) - {moved})
        self.chain.mine()
        self.assertEqual(self.chain.nonce(POOL_ACCOUNT), 6)
        self.assertEqual(self.received(moved), 0)
        self.assertEqual(self.amount(self.keys.miner(moved), "balance"), amounts[moved] - GWEI)

    async def test_entry_changed_before_its_record(self) -> None:
        """A journal entry not the one reserved when its transaction is recorded (something
        else wrote it): the run stops before sending anything."""
        self.credit({ALICE: ETHER})

        def rewrite(step: str) -> None:
            if step == "after_reserving":
                self.redis("HSET", self.keys.payouts_journal, ALICE, entry(nonce=99).to_json())

        report = await self.batch_payer(rewrite).run()
        self.assertEqual(report.error, f"the journal entry of {ALICE} changed while it was signed")
        self.assertEqual(self.rpc.sent, [])

    async def test_entry_gone_before_its_give_back(self) -> None:
        """A payout refused whose journal entry went meanwhile (settled by hand): nothing is
        given back twice, and the run says so."""
        self.credit({ALICE: ETHER})
        self.rpc.refuse = "transaction underpriced"
        self.rpc.before_send = lambda: self.redis("HDEL", self.keys.payouts_journal, ALICE)
        report = await self.batch_payer().run()
        self.assertEqual(report.error, f"the journal entry of {ALICE} changed before it could be given back")
        self.assertEqual(report.given_back, {})
        self.assertEqual(self.amount(self.keys.miner(ALICE), "pending"), ETHER)

    async def test_record_lost_when_the_run_stops(self) -> None:
        """The next batch's reserve fails while the batch before's record is on its way and
        fails too: the run stops for the first, and the lost record is logged, its payouts
        left in the journal for the next run, which records them paid."""
        amounts = self.credit_seven()
        payer = self.batch_payer()
        reserve, record = payer.ledger.reserve_batch, payer.ledger.record_paid_batch

        async def failing_reserve(token: int, entries: Any, lock_timeout: float | None = None) -> Any:
            if self.counting.sizes["reserve"] == [1, 2]:
                raise ResponseError("ERR reserve refused")
            return await reserve(token, entries, lock_timeout)

        async def failing_record(
            entries: Any, now: float, token: int | None = None, lock_timeout: float | None = None
        ) -> Any:
            if len(entries) == 2:
                raise ResponseError("ERR record refused")
            return await record(entries, now, token, lock_timeout)

        payer.ledger.reserve_batch = failing_reserve  # type: ignore[method-assign]
        payer.ledger.record_paid_batch = failing_record  # type: ignore[method-assign]
        report = await payer.run()
        self.assertEqual(report.stop, StopKind.REDIS)
        self.assertIn("ERR reserve refused", report.error or "")
        self.assertEqual(len(self.flushLoggedErrors(ResponseError)), 1, "the lost record, logged")
        self.assertEqual(set(report.paid), set(SEVEN[:1]))
        self.assertEqual({e.login for e in await self.ledger().journal()}, set(SEVEN[1:3]))
        report = await self.batch_payer().run()
        self.assertIsNone(report.error)
        self.assertEqual(set(report.paid), set(SEVEN[1:]))
        self.chain.mine()
        self.assertEqual({login: self.received(login) for login in SEVEN}, amounts)
        self.assert_books(amounts)

    async def test_signing_yields_to_the_reactor(self) -> None:
        """Signing a batch gives the reactor a turn between slices: a call scheduled at the
        first signature of the second batch runs before its second signature."""
        self.credit({login: ETHER for login in SEVEN[:3]})
        order: list[str] = []

        def noted(key: PayoutKey, chain_id: int, nonce: int, to: str, value: int, pricing: Any) -> Any:
            order.append(f"sign {nonce}")
            if nonce == 1:
                reactor.callLater(0, order.append, "reactor")
            return sign_transfer(key, chain_id, nonce, to, value, pricing)

        with (
            mock.patch.object(ethpayer, "sign_transfer", noted),
            mock.patch.object(ethpayer, "SIGNING_SLICE", 0),
        ):
            report = await self.batch_payer().run()
        self.assertIsNone(report.error)
        self.assertEqual(order, ["sign 0", "sign 1", "reactor", "sign 2"])


class ThreadedBatchTests(BatchTests):
    """The same batches signed in threads, as EthPayerService signs them: three threads, so
    that the third batch (four payouts) is signed in two parts and the second (two) in two."""

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.signing = ThreadPool(minthreads=0, maxthreads=3, name="test-payer-signing")
        self.signing.start()
        self.addCleanup(self.signing.stop)

    async def test_signing_yields_to_the_reactor(self) -> None:
        """Only signing on the reactor's thread goes in slices."""

    test_signing_yields_to_the_reactor.skip = "signed in threads: the reactor's thread never signs"  # type: ignore[attr-defined]

    async def test_signed_in_threads(self) -> None:
        """Every payout is signed in a signing thread, none on the reactor's, and the batch's
        parts come back in nonce order: the node takes each transaction at its nonce."""
        self.credit({login: ETHER for login in SEVEN})
        threads: dict[int, threading.Thread] = {}

        def noted(key: PayoutKey, chain_id: int, nonce: int, to: str, value: int, pricing: Any) -> Any:
            threads[nonce] = threading.current_thread()
            return sign_transfer(key, chain_id, nonce, to, value, pricing)

        with mock.patch.object(ethpayer, "sign_transfer", noted):
            report = await self.batch_payer().run()
        self.assertIsNone(report.error)
        self.assertEqual(sorted(threads), list(range(7)))
        self.assertNotIn(threading.main_thread(), threads.values())
        self.assertEqual(set(report.paid), set(SEVEN))
        self.chain.mine()
        self.assertEqual(self.chain.nonce(POOL_ACCOUNT), 7)


class NodeFaultTests(PayerTestCase):
    """What the node answers, or does not, when a payout goes."""

    async def test_node_unreachable_during_send(self) -> None:
        """The send and every look after it fail: the run stops with the payout pending in the
        journal; the next run, the node back, settles it: paid once."""
        self.credit({ALICE: ETHER, BOB: ETHER})
        self.node.rpc.disconnect = {"eth_sendRawTransaction", "eth_getTransactionByHash"}
        report = await self.run_payer()
        assert report.error is not None
        self.assertIn("the node failed", report.error)
        (open_entry,) = await self.ledger().journal()
        self.assertEqual((open_entry.login, open_entry.state), (ALICE, "signed"))
        self.assertEqual(self.amount(self.keys.miner(ALICE), "pending"), ETHER)
        self.assertEqual(self.amount(self.keys.miner(BOB), "balance"), ETHER)
        self.node.rpc.disconnect = set()
        report = await self.run_payer()
        self.assertIsNone(report.error)
        self.assertEqual(set(report.paid), {ALICE, BOB})
        self.chain.mine()
        self.assertEqual((self.received(ALICE), self.received(BOB)), (ETHER, ETHER))
        self.assert_books({ALICE: ETHER, BOB: ETHER})

    async def test_answer_lost(self) -> None:
        """The node took the transaction but its answer was lost: the look finds it pooled,
        it is recorded paid in the same run, never sent twice."""
        self.credit({ALICE: ETHER})
        self.rpc.lose_reply = True
        report = await self.run_payer()
        self.assertIsNone(report.error)
        self.assertEqual(set(report.paid), {ALICE})
        self.assertEqual(len(self.rpc.sent), 1)
        self.chain.mine()
        self.assertEqual(self.received(ALICE), ETHER)
        self.assert_books({ALICE: ETHER})

    async def test_node_forgot_a_payout(self) -> None:
        """A payout recorded paid that the node dropped is sent again, the same bytes."""
        self.credit({ALICE: ETHER})
        report = await self.run_payer()
        self.assertEqual(len(self.chain.drop_pending()), 1)
        again = await self.run_payer()
        self.assertEqual(again.waiting, [report.paid[ALICE]])
        self.assertEqual(self.rpc.sent[0], self.rpc.sent[1])
        self.chain.mine()
        self.assertEqual(self.received(ALICE), ETHER)
        self.assert_books({ALICE: ETHER})

    def foreign_raw(self, nonce: int) -> bytes:
        """A transaction of the pool's key the payer did not make."""
        return sign_transaction(
            self.fork, PrivateKey(SECRET), chain_id=1337, nonce=nonce, to=OUTSIDE, value=1, gas_price=GWEI
        )

    def assert_nothing_moved(self, login: str, amount: int) -> None:
        miner = self.keys.miner(login)
        self.assertEqual((self.amount(miner, "pending"), self.amount(miner, "balance")), (amount, 0))
        self.assertEqual(self.amount(miner, "paid"), 0)
        self.assertEqual(self.redis("ZCARD", self.keys.payments_all), 0)
        self.assertEqual(self.received(login), 0)

    async def test_foreign_transaction_took_the_nonce(self) -> None:
        """Stopped after signing; then another transaction of the key is mined at that nonce:
        the next runs stop for the operator, nothing moved, nothing else paid."""
        self.credit({ALICE: ETHER, BOB: ETHER})
        with self.assertRaises(Killed):
            await self.run_payer(kill_at("after_signing"))
        (open_entry,) = await self.ledger().journal()
        self.chain.send(self.foreign_raw(open_entry.nonce))
        self.chain.mine()
        for _ in range(2):
            report = await self.run_payer()
            assert report.error is not None
            self.assertIn(
                f"nonce {open_entry.nonce} of the pool's key went to another transaction", report.error
            )
            self.assertEqual(await self.ledger().journal(), [open_entry])
            self.assert_nothing_moved(ALICE, ETHER)
            self.assertEqual(self.amount(self.keys.miner(BOB), "balance"), ETHER)
        self.assertEqual(self.rpc.sent, [])

    async def test_nonce_too_low(self) -> None:
        """Another transaction of the key mined just before the payout goes: the node says
        nonce too low, the payout is not found, the run stops for the operator."""
        self.credit({ALICE: ETHER})

        def foreign() -> None:
            self.chain.send(self.foreign_raw(0))
            self.chain.mine()

        self.rpc.before_send = foreign
        report = await self.run_payer()
        assert report.error is not None
        self.assertIn("went to another transaction", report.error)
        self.assert_nothing_moved(ALICE, ETHER)
        (open_entry,) = await self.ledger().journal()
        self.assertEqual((open_entry.state, open_entry.nonce), ("signed", 0))

    async def test_refused(self) -> None:
        """Every send of a payout signed in this run answered with a refusal, and the node
        not holding it: it goes back to the balance and the run stops with the node's reason;
        once the node takes payouts again, each is paid once."""
        self.credit({ALICE: ETHER, BOB: ETHER})
        self.rpc.refuse = "insufficient funds for gas * price + value"
        report = await self.run_payer()
        assert report.error is not None, report
        self.assertIn("insufficient funds for gas * price + value", report.error)
        self.assertIn("back in its balance", report.error)
        self.assertEqual(report.given_back, {ALICE: "insufficient funds for gas * price + value"})
        self.assertEqual(self.chain.pending_transactions, ())
        for login in (ALICE, BOB):
            self.assertEqual(self.amount(self.keys.miner(login), "balance"), ETHER)
            self.assertEqual(self.amount(self.keys.miner(login), "pending"), 0)
        self.assertEqual(self.hash(self.keys.payouts_journal), {})
        self.rpc.refuse = None
        report = await self.run_payer()
        self.assertEqual(set(report.paid), {ALICE, BOB})
        self.chain.mine()
        self.assertEqual((self.received(ALICE), self.received(BOB)), (ETHER, ETHER))
        self.assert_books({ALICE: ETHER, BOB: ETHER})

    async def test_refused_after_a_restart(self) -> None:
        """A payout signed by a run that stopped may have gone out: refused now, it stays
        pending in the journal (only the operator can know), and nothing else is paid."""
        self.credit({ALICE: ETHER, BOB: ETHER})
        with self.assertRaises(Killed):
            await self.run_payer(kill_at("after_signing"))
        self.rpc.refuse = "transaction underpriced"
        report = await self.run_payer()
        assert report.error is not None, report
        self.assertIn("the next run sends the same transaction again", report.error)
        self.assertEqual(report.given_back, {})
        self.assertEqual(self.amount(self.keys.miner(ALICE), "pending"), ETHER)
        self.assertEqual(self.amount(self.keys.miner(BOB), "balance"), ETHER)
        self.rpc.refuse = None
        report = await self.run_payer()
        self.assertEqual(set(report.paid), {ALICE, BOB})
        self.chain.mine()
        self.assert_books({ALICE: ETHER, BOB: ETHER})

    async def test_underpriced(self) -> None:
        """The dev node's own refusal (a gas price under its floor), through the node client:
        given back as above."""
        self.credit({ALICE: ETHER, BOB: ETHER})
        self.chain.min_gas_price = 2 * self.gas_price()
        report = await self.run_payer()
        assert report.error is not None, report
        self.assertIn("transaction underpriced", report.error)
        self.assertEqual(report.given_back, {ALICE: "transaction underpriced"}, report.error)
        self.assertEqual(report.paid, {})
        for login in (ALICE, BOB):
            self.assertEqual(self.amount(self.keys.miner(login), "balance"), ETHER)
            self.assertEqual(self.amount(self.keys.miner(login), "pending"), 0)
        self.assertEqual(self.amount(self.keys.finances, "balance"), 2 * ETHER)
        self.assertEqual(self.hash(self.keys.payouts_journal), {})
        self.assertEqual(self.redis("ZCARD", self.keys.payments_pending), 0)
        self.chain.min_gas_price = 1
        report = await self.run_payer()
        self.assertEqual(set(report.paid), {ALICE, BOB})
        self.chain.mine()
        self.assertEqual((self.received(ALICE), self.received(BOB)), (ETHER, ETHER))
        self.assert_books({ALICE: ETHER, BOB: ETHER})

    async def test_insufficient_balance(self) -> None:
        """The pool's account cannot cover a payout and its gas: the run stops before
        reserving it, nothing withheld."""
        self.credit({ALICE: ETHER // 2, BOB: 200 * ETHER})
        report = await self.run_payer()
        assert report.error is not None
        self.assertIn(f"the pool's account {KEY.address} holds", report.error)
        self.assertIn("nothing withheld", report.error)
        self.assertEqual(set(report.paid), {ALICE})
        self.assertEqual(self.amount(self.keys.miner(BOB), "balance"), 200 * ETHER)
        self.assertEqual(self.amount(self.keys.miner(BOB), "pending"), 0)
        self.assertEqual(self.hash(self.keys.payouts_journal), {})

    async def test_gas_price_too_high(self) -> None:
        """Gas above the ceiling: no payout, GasPriceTooHigh's message, nothing withheld."""
        self.config = self.pool_config(max_gas_price_gwei=Decimal("0.5"), priority_fee_gwei=0)
        self.credit({ALICE: ETHER})
        report = await self.run_payer()
        assert report.error is not None
        self.assertIn(
            f"gas price {self.gas_price()} wei is above the ceiling of {GWEI // 2} wei", report.error
        )
        self.assertEqual(self.amount(self.keys.miner(ALICE), "balance"), ETHER)
        self.assertEqual(self.rpc.sent, [])

    async def test_wrong_chain(self) -> None:
        """A node on another chain than the coin's: nothing is signed."""
        self.config = replace(self.config, coin=replace(self.config.coin, chain_id=61))
        self.credit({ALICE: ETHER})
        report = await self.run_payer()
        assert report.error is not None
        self.assertIn("chain id 1337", report.error)
        self.assertEqual(self.rpc.sent, [])


class LondonTests(PayerTestCase):
    """EIP-1559 payouts, and a transfer the chain runs and reverts."""

    fork: Fork = "london"

    async def test_dynamic_pricing(self) -> None:
        """A type-2 payout: the miner gets the value, the pool pays base fee and tip only."""
        self.config = self.pool_config(gas_pricing="dynamic", priority_fee_gwei=2)
        self.credit({ALICE: 3 * ETHER + 1})
        report = await self.run_payer()
        self.assertIsNone(report.error)
        (pooled,) = self.chain.pending_transactions
        self.assertEqual(pooled.type_id, 2)
        block = self.chain.mine()
        self.assertEqual(self.received(ALICE), 3 * ETHER + 1)
        base_fee = block.header.base_fee_per_gas
        assert base_fee is not None
        paid_per_gas = base_fee + 2 * GWEI
        self.assertEqual(
            self.chain.balance(POOL_ACCOUNT), self.funds - 3 * ETHER - 1 - TRANSFER_GAS * paid_per_gas
        )
        self.assert_books({ALICE: 3 * ETHER + 1})

    async def test_reverted_transfer(self) -> None:
        """A login that is a contract whose code runs out of a transfer's gas: mined with
        status 0, the value goes back to its balance, its records go, it is set aside."""
        await self.reverted()

    async def test_reverted_transfer_miners_paying_the_fee(self) -> None:
        """The same when the miners pay the fee: the whole amount debited goes back (the fee's
        ceiling too), so the login's paid is the sum of its recorded payouts, none."""
        self.config = self.pool_config(transaction_fee="miners")
        await self.reverted()

    async def reverted(self) -> None:
        self.chain.send(
            sign_transaction(
                self.fork,
                PrivateKey(SECRET),
                chain_id=1337,
                nonce=0,
                to=b"",
                value=0,
                gas=100_000,
                gas_price=2 * self.gas_price(),
                data=bytes.fromhex("605b60005360016000f3"),  # deploys the one-byte code JUMPDEST
            )
        )
        self.chain.mine()
        contract = "0x" + generate_contract_address(Address(POOL_ACCOUNT), 0).hex()
        self.credit({contract: ETHER, ALICE: ETHER})
        report = await self.run_payer()
        self.assertEqual(set(report.paid), {contract, ALICE})
        self.chain.mine()
        report = await self.run_payer()
        self.assertEqual(list(report.failed.values()), [contract])
        self.assertEqual(self.received(contract), 0)
        if self.config.payments.transaction_fee == "pool":
            self.assertEqual(self.received(ALICE), ETHER)
        else:  # the fee's ceiling off her payout
            self.assertTrue(0.999 * ETHER < self.received(ALICE) < ETHER)
        miner = self.keys.miner(contract)
        self.assertEqual((self.amount(miner, "balance"), self.amount(miner, "paid")), (ETHER, 0))
        self.assertEqual(self.payments_of(contract), [])
        self.assertIn(contract, self.hash(self.keys.payouts_aside))
        again = await self.run_payer()
        self.assertEqual(again.paid, {})
        self.assertEqual(again.skipped[contract], "set aside")


class ServiceTests(PayerTestCase):
    """EthPayerService: the key read when it is made, runs on its own node client."""

    def service(self) -> EthPayerService:
        return EthPayerService(self.config, self.redis_service.client, reactor)

    async def test_runs(self) -> None:
        self.credit({ALICE: ETHER})
        service = self.service()
        service.startService()
        self.addCleanup(service.stopService)
        report = await service.run_once()
        assert report is not None
        self.assertEqual(set(report.paid), {ALICE})
        self.chain.mine()
        self.assertEqual(self.received(ALICE), ETHER)

    async def test_signs_in_its_threads(self) -> None:
        """With signing threads, the service's runs sign in its own, not the reactor's,
        which end when it stops; without, on the reactor's thread."""
        for threads in (2, 0):
            self.credit({ALICE: ETHER, BOB: ETHER})
            signers: list[threading.Thread] = []

            def noted(
                key: PayoutKey,
                chain_id: int,
                nonce: int,
                to: str,
                value: int,
                pricing: Any,
                signers: list[threading.Thread] = signers,
            ) -> Any:
                signers.append(threading.current_thread())
                return sign_transfer(key, chain_id, nonce, to, value, pricing)

            with mock.patch.object(ethpayer, "SIGNING_THREADS", threads):
                service = self.service()
                service.startService()
            with mock.patch.object(ethpayer, "sign_transfer", noted):
                report = await service.run_once()
            await service.stopService()
            assert report is not None
            self.assertEqual(set(report.paid), {ALICE, BOB}, threads)
            self.assertEqual(len(signers), 2, threads)
            names = [t.name for t in signers]
            if threads:
                self.assertTrue(all("nomp-payer-dev" in name for name in names), names)
            else:
                self.assertEqual(signers, [threading.main_thread()] * 2)
            self.assertEqual([t for t in threading.enumerate() if "nomp-payer-dev" in t.name], [])
            self.chain.mine()

    def test_unsafe_key_file(self) -> None:
        """A key file others can read is refused when the service is made, saying how to fix it."""
        self.key_file = self.write_key(0o644)
        self.config = self.pool_config()
        with self.assertRaises(KeyFileError) as caught:
            self.service()
        message = str(caught.exception)
        self.assertIn("pools/dev.yaml", message)
        self.assertIn("mode 0644", message)
        self.assertIn(f"chmod 600 {self.key_file}", message)
        self.assertNotIn(SECRET.hex(), message)

    def test_missing_key_file(self) -> None:
        self.key_file = self.mktemp()
        self.config = self.pool_config()
        with self.assertRaisesRegex(KeyFileError, "cannot open the payout key file"):
            self.service()
