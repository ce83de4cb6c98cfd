"""The Ethereum family's payer: balances over the minimum paid from the pool's own key.

One run (``EthPayer.run``) holds the pool's lock (the unlocker's: the two
never overlap) and

1. checks the node (the coin's chain id, not syncing, ``require_peers``)
   and that OEP's own payer is not at work (``payments:lock``, or a
   ``payments:pending`` member nomp's journal does not have);
2. watches the payouts recorded paid and not mined deep enough yet: mined
   with status 1, they are done; mined and reverted (status 0), their value
   goes back to the balance and the login is set aside; gone from the
   node, their same raw transaction is sent again;
3. settles every payout the journal holds open (a run stopped half way);
4. pays each login whose balance is at least ``minimum_payment``, lowest
   login first, one transaction each, in batches (up to BATCH payouts, a
   run's first batch one payout and each next twice the last): one script
   reserves a batch (nonces consecutive), its payouts are signed, one script
   records their transactions, each is sent, and one script records the
   ones the node took paid. So a payout costs no Redis round trip of its
   own, and the lock is kept by the scripts that check it.

Why a login is never paid twice. A payout's account nonce is chosen, and
written to the journal with its amount and gas price, in the same script
that moves the amount from the balance to pending, before anything is
signed (for a whole batch, each payout checked before its writes). The
transaction is signed from the journal entry alone (the same entry signs
the same bytes) and its hash and raw bytes are recorded, the whole batch's
at once, before the first of them is sent. The chain runs at most one
transaction of an account at each nonce, so whatever happens after that
(no answer, a crash, the same bytes sent again) at most one payout can be
mined for the entry. A payout is recorded paid once the node answers its
hash, or, when the answer is anything else, once the node shows the
transaction (pooled or mined). What the node says is never guessed at:

- the transaction found: paid;
- not found, and the account's mined nonce already past the entry's: another
  transaction took that nonce (not the payer's: the journal has every one of
  its own). The run stops for the operator and nothing moves;
- not found otherwise: it never reached the chain; the same bytes are sent
  again.

A payout goes back to the balance only when it is certain no node has it:
a transaction signed in this run, whose every send the node answered with a
refusal (underpriced, insufficient funds, ...), and which the node then
does not show; or one signed in this run and never sent, after a payout of
its batch the run stopped at (its nonce would come after one left open, so
it could not be mined until that one is settled; it is paid by a later run
instead).

OEP paid with ``eth_sendTransaction`` from an account unlocked on the node,
and its ``RESOLVE_PAYOUT`` credited back every pending payout, broadcast or
not (a double pay). Here the node holds no key and nothing is credited back
on a guess.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, cast

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from txredisapi import ResponseError

from nomp.config import DaemonConfig, EthPoolConfig
from nomp.daemon import DaemonError
from nomp.daemon.clients import DaemonClients
from nomp.daemon.errors import RPCError
from nomp.daemon.rpc import CallObserver, HTTPPoster
from nomp.eth.work import WorkError, parse_quantity
from nomp.payments.ethpayledger import EthPayLedger, JournalEntry, Reserved, Unconfirmed
from nomp.payments.ethsigner import (
    FeeNotCovered,
    GasPolicy,
    GasPriceError,
    KeyFileError,
    PayoutKey,
    Pricing,
    SignerError,
    checked_address,
    deduct_fee,
    load_key,
    sign_transfer,
)
from nomp.store.client import RedisClient
from nomp.store.oepschema import OepKeys, pending_payment_member, shannon

# The steps of a payout a ``failpoint`` hook is told of, in order: a test
# stops the run at each and checks that a later run pays exactly once. Each is
# passed once a payout, where nothing the run wrote is still on its way to
# Redis: after_reserving once the batch before is recorded paid (that record
# runs while this batch is signed), after_recording with the next batch
# reserved.
FAILPOINTS = ("after_reserving", "after_signing", "after_sending", "after_recording")

# Blocks on top of a payout's before it leaves the watch: a reorganisation
# shallower than that puts it back in the node's pool, or in no block at all.
CONFIRMATIONS = 12

# Refusals of eth_sendRawTransaction (geth's, core-geth's, besu's wording)
# meaning the node did not take the transaction. Any other error may hide a
# transaction taken.
REFUSALS = (
    "underpriced",
    "insufficient funds",
    "intrinsic gas too low",
    "exceeds block gas limit",
    "gas limit reached",
    "invalid sender",
    "exceeds the configured cap",
    "oversized data",
    "max priority fee per gas higher than max fee per gas",
    "fee cap less than",
    "transaction type not supported",
    "only replay-protected",
)
# Errors meaning the node holds the transaction, or the chain has the nonce.
KNOWN = ("already known", "known transaction", "already imported")

# The most payouts one script reserves, records signed or records paid: a batch's
# scripts keep redis-server (which serves nothing else meanwhile) for a few
# milliseconds. A run's first batch is one payout and each next one twice the last:
# a node that refuses every transfer, or a fault at a run's first payout, leaves one
# payout to settle or give back, not a batch.
BATCH = 200
# Signing on the reactor's thread (a payer given no signing threads) yields to the
# reactor once it has computed this long (seconds): the signatures of a batch never
# hold the reactor much longer.
SIGNING_SLICE = 0.005
# The payer service's signing threads. libsecp256k1 signs and recovers without the
# GIL; the Python around each signature (encoding, hashing, the checks) takes it back
# after each C call, within the switch interval the pool process sets (nomp.service),
# while the reactor's thread works on the batches around it. One core is left to the
# reactor's thread (and a local redis-server); past a few threads, the Python around
# the signatures is what holds them back.
SIGNING_THREADS = max(1, min(4, (os.cpu_count() or 1) - 1))

LOCK_RETRY = 5.0  # seconds between tries while the unlocker holds the lock
STARTUP_DELAY = 5.0  # after the unlocker's run at start


class RPC(Protocol):
    """The node the payer asks (one node: a nonce is one node's account state)."""

    async def call(self, method: str, *params: Any) -> Any: ...


class PayoutStopped(Exception):
    """The run stops here; the message says why and what the operator (or the next run) does."""


class PayoutHalted(PayoutStopped):
    """The run stops on a payout only the operator can settle: every run stops there until
    they do."""


class StopKind(StrEnum):
    """Why a run stopped, as a kind (PayoutReport.stop)."""

    HALTED = "halted"  # PayoutHalted: a payout waits for the operator
    STOPPED = "stopped"  # a PayoutStopped of another kind: the next run tries again
    NODE = "node"  # the node failed
    REDIS = "redis"  # Redis refused a write


# -- the pure parts ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payees:
    """Who is due: (login, wei) lowest login first; and logins due but not payable."""

    due: list[tuple[str, int]]
    unpayable: dict[str, str]  # login -> why


def select_payees(balances: Mapping[str, int], minimum: int, aside: Collection[str] = ()) -> Payees:
    """The logins whose balance is at least ``minimum`` wei, in login order.

    A login set aside, or that is not an address (a pool with ``usernames:
    any`` credits names), is not paid: its balance waits.
    """
    due: list[tuple[str, int]] = []
    unpayable: dict[str, str] = {}
    for login in sorted(balances):
        amount = balances[login]
        if amount < minimum:
            continue
        if login in aside:
            unpayable[login] = "set aside"
            continue
        try:
            checked_address(login)
        except (TypeError, ValueError) as e:
            unpayable[login] = str(e)
            continue
        due.append((login, amount))
    return Payees(due, unpayable)


def sign_entries(
    key: PayoutKey, chain_id: int, entries: Sequence[JournalEntry]
) -> tuple[list[JournalEntry], Exception | None]:
    """Each entry signed from itself alone (the same entry signs the same bytes), in order,
    up to the first that cannot be; and why that one cannot (None when all were). Safe in
    any thread: it reads the entries and the key, and writes nothing shared."""
    signed: list[JournalEntry] = []
    for entry in entries:
        try:
            signed.append(signed_entry(key, chain_id, entry))
        except (SignerError, TypeError, ValueError) as e:
            return signed, e
    return signed, None


def signed_entry(key: PayoutKey, chain_id: int, entry: JournalEntry) -> JournalEntry:
    """The entry with its transaction: signed from the entry alone."""
    transfer = sign_transfer(key, chain_id, entry.nonce, entry.login, entry.value, entry.pricing)
    return entry.signed(transfer.tx_hash, transfer.raw_hex)


def next_nonce(pending_count: int, known: Iterable[int]) -> int:
    """The nonce of the next payout: past the node's count of the account's transactions
    (mined and pooled) and past every nonce the payer already gave a payout."""
    return max([pending_count, *(n + 1 for n in known)])


@dataclass(frozen=True, slots=True)
class TxSeen:
    """What the node shows of a transaction: pooled, or mined at ``block`` with ``status``
    (None: a receipt from before Byzantium, which has none, or no receipt yet)."""

    block: int | None = None
    status: int | None = None

    @property
    def mined(self) -> bool:
        return self.block is not None


class Settle(StrEnum):
    SIGN = "sign"  # reserved, never signed: sign it (the entry gives the same bytes)
    PAID = "paid"  # the node shows it: record it paid
    FOREIGN = "foreign"  # another transaction took its nonce: the operator decides
    RESEND = "resend"  # it never reached the chain: send the same bytes


def settle_decision(entry: JournalEntry, seen: TxSeen | None, latest_nonce: int) -> Settle:
    """What to do with an open journal entry, from the node's view of its transaction
    (``seen``, None when the node does not know it) and of the account's mined nonce."""
    if entry.tx_hash is None:
        return Settle.SIGN
    if seen is not None:
        return Settle.PAID
    if latest_nonce > entry.nonce:
        return Settle.FOREIGN
    return Settle.RESEND


class Watch(StrEnum):
    CONFIRMED = "confirmed"  # mined deep enough, status 1 (or no status before Byzantium)
    FAILED = "failed"  # mined deep enough and reverted: the value never arrived
    WAITING = "waiting"  # pooled, or mined not deep enough yet
    REBROADCAST = "rebroadcast"  # the node forgot it and its nonce is free: send it again
    FOREIGN = "foreign"  # the node forgot it and another transaction took its nonce


def watch_decision(
    payout: Unconfirmed, seen: TxSeen | None, tip: int, latest_nonce: int, confirmations: int
) -> Watch:
    """What became of a payout recorded paid."""
    if seen is None:
        return Watch.FOREIGN if latest_nonce > payout.nonce else Watch.REBROADCAST
    if seen.block is None or tip - seen.block + 1 < confirmations:
        return Watch.WAITING
    return Watch.FAILED if seen.status == 0 else Watch.CONFIRMED


def refused(error: DaemonError) -> bool:
    """Whether the node answered that it did not take the transaction."""
    if not isinstance(error, RPCError):
        return False
    message = error.message.lower()
    if any(k in message for k in KNOWN) or "nonce too low" in message:
        return False
    return any(r in message for r in REFUSALS)


# -- one run ----------------------------------------------------------------------


@dataclass(slots=True)
class PayoutReport:
    """What one run did, for logs and tests."""

    locked_out: bool = False
    paid: dict[str, str] = field(default_factory=dict)  # login -> tx hash, recorded this run
    amounts: dict[str, int] = field(default_factory=dict)  # login -> wei debited, recorded this run
    given_back: dict[str, str] = field(default_factory=dict)  # login -> why
    # logins whose payout this run reserved and never sent, because the run stopped at a
    # payout before it in its batch or in the batch before (reserved ahead of it): back in
    # their balances, paid next run
    withdrawn: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)  # tx hashes mined deep enough
    failed: dict[str, str] = field(default_factory=dict)  # tx hash -> login, reverted
    waiting: list[str] = field(default_factory=list)  # tx hashes not mined deep enough yet
    skipped: dict[str, str] = field(default_factory=dict)  # login -> why its balance waits
    error: str | None = None  # why the run stopped, if it did
    stop: StopKind | None = None  # the kind of that error


def _quantity(value: object, what: str) -> int:
    try:
        return parse_quantity(value, what)
    except WorkError as e:
        raise PayoutStopped(f"the node's {what} is not a quantity: {e}") from None


class EthPayer:
    """Pays one pool's balances from ``key`` through ``node``.

    ``failpoint``, a test seam, is called with each name of FAILPOINTS as a
    payout passes that step; the pool passes none. ``batch``: the most payouts
    a script writes at once (BATCH). ``reactor``: the one signing yields to
    between slices, the global reactor by default (the node's and Redis'
    connections are served there).
    """

    log = Logger()

    def __init__(
        self,
        config: EthPoolConfig,
        ledger: EthPayLedger,
        node: RPC,
        key: PayoutKey,
        wall_clock: Callable[[], float] = time.time,
        failpoint: Callable[[str], None] | None = None,
        confirmations: int = CONFIRMATIONS,
        reactor: IReactorTime | None = None,
        batch: int = BATCH,
        signing: ThreadPool | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"a batch is at least one payout, not {batch}")
        self.config = config
        self.payments = config.payments
        self.ledger = ledger
        self.node = node
        self.key = key
        self.policy = GasPolicy(
            self.payments.gas_pricing, self.payments.max_gas_price_wei, self.payments.priority_fee_wei
        )
        self._wall_clock = wall_clock
        self._failpoint = failpoint
        self._confirmations = confirmations
        if reactor is None:
            from twisted.internet import reactor as global_reactor  # noqa: PLC0415 - only as the default

            reactor = cast(IReactorTime, global_reactor)
        self._reactor = reactor  # what signing yields to between slices, or hands back to
        self._batch = batch
        self._signing = signing
        self._unmined: set[str] = set()  # payouts of this run's view not in a block yet

    def _reached(self, step: str) -> None:
        if self._failpoint is not None:
            self._failpoint(step)

    @property
    def _name(self) -> str:
        return self.config.name

    async def run(self) -> PayoutReport:
        report = PayoutReport()
        token = await self.ledger.acquire(self.payments.lock_timeout)
        if token is None:
            report.locked_out = True
            return report
        self._unmined = set()
        try:
            await self._checks()
            await self._watch(token, report)
            await self._settle(token, await self.ledger.journal(), report)
            await self._pay(token, report)
        except PayoutStopped as e:
            report.error = str(e)
            report.stop = StopKind.HALTED if isinstance(e, PayoutHalted) else StopKind.STOPPED
        except DaemonError as e:
            report.error = f"the node failed ({e}); what is open is settled by the next run"
            report.stop = StopKind.NODE
        except ResponseError as e:
            report.error = f"Redis refused a payout write ({e}); what is open is settled by the next run"
            report.stop = StopKind.REDIS
        finally:
            try:
                await self.ledger.release(token)
            except Exception as e:  # the lock times out anyway
                self.log.warn("pool {pool}: payout lock not released: {e}", pool=self._name, e=e)
        if report.error is not None:
            self.log.error("pool {pool}: payouts stopped: {why}", pool=self._name, why=report.error)
        return report

    async def _keep_lock(self, token: int) -> None:
        if not await self.ledger.extend(token, self.payments.lock_timeout):
            raise PayoutStopped("the run lost its lock (it ran past lock_timeout); the next run goes on")

    # -- checks --

    async def _checks(self) -> None:
        chain_id = _quantity(await self.node.call("eth_chainId"), "eth_chainId")
        if chain_id != self.config.coin.chain_id:
            raise PayoutStopped(
                f"the node is on chain id {chain_id}, {self.config.coin.name} is chain id "
                f"{self.config.coin.chain_id}"
            )
        if await self.node.call("eth_syncing") not in (False, None):
            raise PayoutStopped("the node is syncing; payouts wait until it is done")
        if self.payments.require_peers:
            peers = _quantity(await self.node.call("net_peerCount"), "net_peerCount")
            if peers < self.payments.require_peers:
                raise PayoutStopped(
                    f"the node has {peers} peers, fewer than require_peers ({self.payments.require_peers})"
                )
        holder = await self.ledger.oep_lock()
        if holder is not None:
            raise PayoutStopped(
                f"{self.ledger.keys.payments_lock} is held ({holder}): open-ethereum-pool's payer is at "
                "work on this pool, or left a payout for its RESOLVE_PAYOUT; nomp pays once it is gone"
            )
        ours = {pending_payment_member(e.login, shannon(e.amount)) for e in await self.ledger.journal()}
        strangers = [m for m in await self.ledger.pending_members() if m not in ours]
        if strangers:
            raise PayoutStopped(
                f"{self.ledger.keys.payments_pending} holds {', '.join(strangers)}, which nomp's journal "
                "does not: open-ethereum-pool's payer left them; settle them first"
            )

    # -- what the node shows --

    async def _seen(self, tx_hash: str) -> TxSeen | None:
        found = await self.node.call("eth_getTransactionByHash", tx_hash)
        if found is None:
            return None
        if not isinstance(found, dict) or str(found.get("hash", "")).lower() != tx_hash:
            raise PayoutStopped(f"the node answered {str(found)[:200]!r} for transaction {tx_hash}")
        if found.get("blockNumber") is None:
            return TxSeen()
        block = _quantity(found["blockNumber"], "transaction's block number")
        receipt = await self.node.call("eth_getTransactionReceipt", tx_hash)
        if not isinstance(receipt, dict):
            return TxSeen()  # mined a moment ago: the receipt comes with the next look
        status = receipt.get("status")
        return TxSeen(block, None if status is None else _quantity(status, "receipt status"))

    async def _nonce(self, tag: Literal["latest", "pending"]) -> int:
        return _quantity(
            await self.node.call("eth_getTransactionCount", self.key.address, tag), f"{tag} nonce"
        )

    # -- the watch --

    async def _watch(self, token: int, report: PayoutReport) -> None:
        watched = await self.ledger.unconfirmed()
        if not watched:
            return
        tip = _quantity(await self.node.call("eth_blockNumber"), "eth_blockNumber")
        latest = await self._nonce("latest")
        confirmed: list[Unconfirmed] = []
        try:
            for payout in watched:
                if await self._watch_one(payout, tip, latest, report):
                    confirmed.append(payout)
                if len(confirmed) >= self._batch:
                    await self._confirmed(token, confirmed, report)
                    confirmed = []
        except (PayoutStopped, DaemonError):
            await self._confirmed(token, confirmed, report)
            raise
        await self._confirmed(token, confirmed, report)

    async def _confirmed(self, token: int, payouts: list[Unconfirmed], report: PayoutReport) -> None:
        """Payouts mined deep enough leave the watch, a batch in one script."""
        if not payouts:
            return
        await self._keep_lock(token)  # the watch asks the node of every payout: it takes a while
        await self.ledger.mined_batch(payouts)
        report.confirmed.extend(p.tx_hash for p in payouts)

    async def _watch_one(self, payout: Unconfirmed, tip: int, latest: int, report: PayoutReport) -> bool:
        """What became of one payout recorded paid: True when it is confirmed (the caller
        records it); the rest is done here."""
        seen = await self._seen(payout.tx_hash)
        decision = watch_decision(payout, seen, tip, latest, self._confirmations)
        if decision is Watch.CONFIRMED:
            return True
        if decision is Watch.FAILED:
            why = f"transfer {payout.tx_hash} reverted on chain"
            if await self.ledger.failed(payout, why):
                report.failed[payout.tx_hash] = payout.login
                self.log.error(
                    "pool {pool}: payout of {value} wei to {login} in {tx} reverted (status 0): "
                    "the value is back in its balance and its payouts are set aside "
                    "(HDEL {aside} {login} to pay it again)",
                    pool=self._name,
                    value=payout.value,
                    login=payout.login,
                    tx=payout.tx_hash,
                    aside=self.ledger.keys.payouts_aside,
                )
        elif decision is Watch.WAITING:
            report.waiting.append(payout.tx_hash)
            if seen is None or not seen.mined:
                self._unmined.add(payout.tx_hash)
        elif decision is Watch.FOREIGN:
            raise PayoutHalted(
                f"payout {payout.tx_hash} to {payout.login} ({payout.value} wei, nonce {payout.nonce}) "
                f"was recorded paid but is on no chain the node knows, and nonce {payout.nonce} went to "
                "another transaction of the pool's key: the login was not paid; check the key's "
                "transactions, then pay it by hand or credit it back"
            )
        else:
            await self._rebroadcast(payout)
            report.waiting.append(payout.tx_hash)
            self._unmined.add(payout.tx_hash)
        return False

    async def _rebroadcast(self, payout: Unconfirmed) -> None:
        self.log.warn(
            "pool {pool}: the node lost payout {tx} to {login}; sending it again",
            pool=self._name,
            tx=payout.tx_hash,
            login=payout.login,
        )
        try:
            await self.node.call("eth_sendRawTransaction", payout.raw)
        except RPCError as e:
            if not any(k in e.message.lower() for k in KNOWN):
                raise PayoutStopped(
                    f"the node refused payout {payout.tx_hash} to {payout.login} sent again ({e.message}); "
                    "later payouts would queue behind its nonce"
                ) from None

    # -- the journal --

    async def _settle(self, token: int, entries: list[JournalEntry], report: PayoutReport) -> None:
        """The entries a run left open (lowest nonce first): made paid, or sent (again).
        Entries reserved and never signed go as one batch, as a new payout's do."""
        at = 0
        while at < len(entries):
            entry = entries[at]
            if entry.tx_hash is None:
                unsigned = list(itertools.takewhile(lambda e: e.tx_hash is None, entries[at:]))
                for e in unsigned:
                    self._settling(e, Settle.SIGN)
                await self._sign_and_send(token, unsigned, report)
                at += len(unsigned)
                continue
            await self._keep_lock(token)
            decision = await self._look(entry)
            self._settling(entry, decision)
            if decision is Settle.PAID:
                await self._record(token, [entry], report)
            elif decision is Settle.FOREIGN:
                raise self._foreign(entry)
            else:
                await self._send(token, [entry], report, fresh=False)
            at += 1

    def _settling(self, entry: JournalEntry, decision: Settle) -> None:
        self.log.warn(
            "pool {pool}: payout to {login} (nonce {nonce}) was left {state}: {decision}",
            pool=self._name,
            login=entry.login,
            nonce=entry.nonce,
            state=entry.state,
            decision=decision.value,
        )

    async def _look(self, entry: JournalEntry) -> Settle:
        assert entry.tx_hash is not None
        # The mined nonce first: a payout mined between the two reads is then
        # found, where the other order would see its nonce taken and it gone.
        latest = await self._nonce("latest")
        return settle_decision(entry, await self._seen(entry.tx_hash), latest)

    def _foreign(self, entry: JournalEntry) -> PayoutHalted:
        return PayoutHalted(
            f"nonce {entry.nonce} of the pool's key went to another transaction than payout "
            f"{entry.tx_hash} to {entry.login} ({entry.value} wei): something else signs with the "
            "payout key. Nothing was moved: the payout stays pending in the journal "
            f"({self.ledger.keys.payouts_journal}) until the operator settles it"
        )

    # -- a batch: signed, recorded signed, sent, recorded paid --

    async def _sign_and_send(self, token: int, entries: list[JournalEntry], report: PayoutReport) -> None:
        """Entries reserved and never signed (nonces rising): each signed, the batch's
        transactions recorded in one script, each sent, the batch's paid recorded in one."""
        if not entries:
            return
        signed, failure = await self._sign(entries)
        taken = await self._signed_and_sent(token, entries, signed, failure, report)
        await self._record(token, taken, report)

    async def _signed_and_sent(
        self,
        token: int,
        entries: list[JournalEntry],
        signed: list[JournalEntry],
        failure: Exception | None,
        report: PayoutReport,
    ) -> list[JournalEntry]:
        """A batch after ``_sign``: the ones signed recorded signed and sent, and the ones
        the node took returned, for the caller to record paid. When the run stops here
        (the signing failed, a send did), those are recorded first and the stop raised."""
        stop: PayoutStopped | None = None
        if failure is not None:
            failed, unsent = entries[len(signed)], entries[len(signed) + 1 :]
            # Never signed, so never sent: its amount can go back, and those of the
            # payouts after it (signed or not, none was sent).
            given = await self.ledger.give_back_batch(token, [failed, *unsent], self.payments.lock_timeout)
            if given[0]:
                report.given_back[failed.login] = str(failure)
            report.withdrawn.extend(e.login for e, back in zip(unsent, given[1:], strict=True) if back)
            stop = PayoutStopped(
                f"the payout to {failed.login} could not be signed ({failure}); its amount is back in "
                "its balance" + self._also_back(unsent)
            )
        taken: list[JournalEntry] = []
        if signed:
            await self._record_signed(token, signed)
            taken = await self._send(token, signed, report, fresh=True, record=stop is not None)
        if stop is not None:
            raise stop
        return taken

    @staticmethod
    def _also_back(unsent: Sequence[JournalEntry]) -> str:
        if not unsent:
            return ""
        return f", and so are those of the {len(unsent)} payouts after it in its batch, never sent"

    async def _sign(self, entries: list[JournalEntry]) -> tuple[list[JournalEntry], Exception | None]:
        """The entries signed, from each journal entry alone (the same entry signs the same
        bytes), up to the first that cannot be, and why it cannot: in the signing threads,
        each a contiguous part of the batch; without them on the reactor's thread, which
        gets a turn between slices of SIGNING_SLICE seconds."""
        if not entries:
            return [], None
        if self._signing is None:
            return await self._sign_here(entries)
        chain_id = self.config.coin.chain_id
        parts = max(1, min(self._signing.max, len(entries)))
        size = -(-len(entries) // parts)
        reactor = cast(IReactorFromThreads, self._reactor)
        signing = [
            deferToThreadPool(reactor, self._signing, sign_entries, self.key, chain_id, part)
            for part in (entries[at : at + size] for at in range(0, len(entries), size))
        ]
        try:
            results = await defer.gatherResults(signing, consumeErrors=True)
        except defer.FirstError as e:
            e.subFailure.raiseException()
        signed: list[JournalEntry] = []
        for part, failure in results:
            signed.extend(part)
            if failure is not None:
                # The parts after it were signed too, and are dropped: their entries
                # follow one left unsigned, and go back as the caller decides.
                return signed, failure
        return signed, None

    async def _sign_here(self, entries: list[JournalEntry]) -> tuple[list[JournalEntry], Exception | None]:
        signed: list[JournalEntry] = []
        chain_id = self.config.coin.chain_id
        started = time.perf_counter()
        for entry in entries:
            try:
                signed.append(signed_entry(self.key, chain_id, entry))
            except (SignerError, TypeError, ValueError) as e:
                return signed, e
            if time.perf_counter() - started >= SIGNING_SLICE:
                await task.deferLater(self._reactor, 0, lambda: None)
                started = time.perf_counter()
        return signed, None

    async def _record_signed(self, token: int, entries: list[JournalEntry]) -> None:
        done = await self.ledger.record_signed_batch(token, entries, self.payments.lock_timeout)
        if not all(done):
            stored = {e.login: e for e in await self.ledger.journal()}
            for entry, recorded in zip(entries, done, strict=True):
                found = stored.get(entry.login)
                if not recorded and (found is None or found.tx_hash != entry.tx_hash):
                    raise PayoutStopped(f"the journal entry of {entry.login} changed while it was signed")
        for _ in entries:
            self._reached("after_signing")

    async def _send(
        self, token: int, entries: list[JournalEntry], report: PayoutReport, fresh: bool, record: bool = True
    ) -> list[JournalEntry]:
        """Send each entry's transaction, in nonce order, then record the ones the node took
        paid, in one script, and return them; with ``record`` False they are returned
        unrecorded, for the caller to record. ``fresh``: signed in this run, never sent.

        A run stopped at a payout (no answer, a refusal, its nonce taken) still records
        the ones before it; the ones after it, fresh and never sent, go back to their
        balances (paid by a later run): past a nonce left open, they could not be mined."""
        taken: list[JournalEntry] = []
        stop: PayoutStopped | DaemonError | None = None
        refusal: tuple[JournalEntry, DaemonError] | None = None
        unsent: list[JournalEntry] = []
        for at, entry in enumerate(entries):
            try:
                refused_with = await self._send_one(entry, fresh)
            except (PayoutStopped, DaemonError) as e:
                stop, unsent = e, entries[at + 1 :]
                break
            if refused_with is not None:
                refusal, unsent = (entry, refused_with), entries[at + 1 :]
                break
            taken.append(entry)
        if refusal is None and stop is None:
            if record:
                await self._record(token, taken, report)
            return taken
        # What went out first: the rest is settled by the next run if this fails.
        await self._record(token, taken, report)
        if refusal is not None:
            raise await self._give_back(token, *refusal, unsent, report)
        if unsent and fresh:
            given = await self.ledger.give_back_batch(token, unsent, self.payments.lock_timeout)
            report.withdrawn.extend(e.login for e, back in zip(unsent, given, strict=True) if back)
            if isinstance(stop, PayoutStopped) and not isinstance(stop, PayoutHalted):
                stop = PayoutStopped(
                    f"{stop}; the {len(unsent)} payouts after it in its batch, never sent, "
                    "are back in their balances"
                )
        assert stop is not None
        raise stop

    async def _send_one(self, entry: JournalEntry, fresh: bool) -> DaemonError | None:
        """Send the entry's transaction until the node takes it (it answers its hash, or
        shows it): None; or, ``fresh`` and every send refused with the node not holding
        it, the refusal. Raises PayoutStopped when it cannot be settled now."""
        assert entry.tx_hash is not None and entry.raw is not None
        error: DaemonError | None = None
        answered = True
        for _ in range(2):
            try:
                reply = await self.node.call("eth_sendRawTransaction", entry.raw)
            except DaemonError as e:
                error = e
                answered = answered and isinstance(e, RPCError)
            else:
                if isinstance(reply, str) and reply.lower() == entry.tx_hash:
                    self._reached("after_sending")
                    return None
                error = None
                answered = False
                self.log.error(
                    "pool {pool}: the node answered {reply!r} for payout {tx}",
                    pool=self._name,
                    reply=reply,
                    tx=entry.tx_hash,
                )
            decision = await self._look(entry)
            if decision is Settle.PAID:
                return None
            if decision is Settle.FOREIGN:
                raise self._foreign(entry)
            if fresh and answered and error is not None and refused(error):
                return error
        raise PayoutStopped(
            f"the node did not take payout {entry.tx_hash} to {entry.login} (nonce {entry.nonce}): "
            f"{error or 'an unexpected answer'}; the next run sends the same transaction again"
        )

    async def _give_back(
        self,
        token: int,
        entry: JournalEntry,
        error: DaemonError,
        unsent: list[JournalEntry],
        report: PayoutReport,
    ) -> PayoutStopped:
        """A payout the node refused and does not hold back to its balance, with the
        payouts after it in its batch (never sent); the stop saying so."""
        why = error.message if isinstance(error, RPCError) else str(error)
        given = await self.ledger.give_back_batch(token, [entry, *unsent], self.payments.lock_timeout)
        report.withdrawn.extend(e.login for e, back in zip(unsent, given[1:], strict=True) if back)
        if not given[0]:
            return PayoutStopped(f"the journal entry of {entry.login} changed before it could be given back")
        report.given_back[entry.login] = why
        return PayoutStopped(
            f"the node refused the payout to {entry.login} ({why}) and does not hold it: its "
            f"{entry.amount} wei are back in its balance" + self._also_back(unsent)
        )

    async def _record(self, token: int, entries: list[JournalEntry], report: PayoutReport) -> None:
        """The payouts the node took recorded paid, in one script, which keeps the lock while
        ``token`` holds it."""
        if not entries:
            return
        for entry in entries:
            assert entry.tx_hash is not None
            self._unmined.add(entry.tx_hash)  # mined or not: counted against the account's funds
        done = await self.ledger.record_paid_batch(
            entries, self._wall_clock(), token, self.payments.lock_timeout
        )
        paid = [e for e, recorded in zip(entries, done, strict=True) if recorded and e.tx_hash is not None]
        for entry in paid:
            report.paid[entry.login] = entry.tx_hash  # type: ignore[assignment]
            report.amounts[entry.login] = entry.amount
            # Each payout at debug: an info line a payout, formatted and written on the
            # reactor's thread, costs about as much as the payout's share of its scripts.
            # Redis keeps each one too (payments:all, payments:<login>).
            self.log.debug(
                "pool {pool}: paid {value} wei to {login} in {tx} at nonce {nonce} ({amount} wei from its "
                "balance)",
                pool=self._name,
                value=entry.value,
                login=entry.login,
                tx=entry.tx_hash,
                nonce=entry.nonce,
                amount=entry.amount,
            )
        if paid:
            self.log.info(
                "pool {pool}: paid {count} payouts, {value} wei in all ({amount} wei from balances), "
                "nonces {first}-{last}, {first_login} to {last_login}, the last in {tx}",
                pool=self._name,
                count=len(paid),
                value=sum(e.value for e in paid),
                amount=sum(e.amount for e in paid),
                first=paid[0].nonce,
                last=paid[-1].nonce,
                first_login=paid[0].login,
                last_login=paid[-1].login,
                tx=paid[-1].tx_hash,
            )
        for _ in entries:
            self._reached("after_recording")

    # -- new payouts --

    async def _pay(self, token: int, report: PayoutReport) -> None:
        balances = await self.ledger.balances()
        # The pool's own account paying itself would only burn gas: its balance
        # (the pool's fee, where the unlocker credits it) stays.
        own = balances.pop(self.key.address.lower(), None)
        payees = select_payees(balances, self.payments.minimum_payment_wei, await self.ledger.aside())
        report.skipped.update(payees.unpayable)
        if own is not None and own >= self.payments.minimum_payment_wei:
            report.skipped[self.key.address.lower()] = "the payout key's own account"
        if not payees.due:
            return
        pricing = await self._pricing()
        watched = await self.ledger.unconfirmed()
        known = [p.nonce for p in watched] + [e.nonce for e in await self.ledger.journal()]
        nonce = next_nonce(await self._nonce("pending"), known)
        available = _quantity(
            await self.node.call("eth_getBalance", self.key.address, "latest"), "eth_getBalance"
        )
        # What the payouts not mined yet may still take from it.
        available -= sum(p.value + p.max_cost for p in watched if p.tx_hash in self._unmined)
        due = deque(payees.due)
        size = 1
        # The payouts of the batch before that the node took, and their record paid once
        # sent: it goes after the next batch's reserve, so that redis-server runs it while
        # this process signs that batch.
        unrecorded: list[JournalEntry] = []
        recording: defer.Deferred[None] | None = None
        # From the run's second batch on, the batch after is reserved while this one is
        # signed, so that its reserve is done when its turn comes; the run's first payout
        # still goes alone, and a stop gives the batch reserved ahead back.
        ahead: tuple[list[JournalEntry], PayoutStopped | None, defer.Deferred[Reserved]] | None = None
        sent = False  # a batch of this run's went out
        try:
            while due or ahead is not None:
                if ahead is None:
                    batch, stop = self._next_batch(due, size, nonce, pricing, available, report)
                    size = min(2 * size, self._batch)
                    reserving = self._reserve(token, batch)
                else:
                    (batch, stop, reserving), ahead = ahead, None
                recording, unrecorded = defer.ensureDeferred(self._record(token, unrecorded, report)), []
                reserved = await reserving
                entries = batch[: reserved.count]
                if reserved.refusal is not None:
                    refused_entry, rest = batch[reserved.count], batch[reserved.count + 1 :]
                    if reserved.refusal.startswith("NOFUNDS"):
                        # Its balance moved since it was read: it waits; the rest go on,
                        # their nonces and the funds counted again.
                        report.skipped[refused_entry.login] = reserved.refusal
                        due.extendleft((e.login, e.amount) for e in reversed(rest))
                        stop = None
                    else:
                        stop = PayoutStopped(
                            f"the payout to {refused_entry.login} could not be reserved: {reserved.refusal}"
                        )
                nonce += len(entries)
                available -= sum(e.value + e.max_cost for e in entries)
                if stop is None and due and sent:
                    # Its nonces and funds follow this batch's; its own count is added in its turn.
                    following, following_stop = self._next_batch(due, size, nonce, pricing, available, report)
                    size = min(2 * size, self._batch)
                    ahead = (following, following_stop, self._reserve(token, following))
                try:
                    signed, failure = await self._sign(entries)
                    last, recording = recording, None
                    await last
                    for _ in entries:
                        self._reached("after_reserving")
                    unrecorded = await self._signed_and_sent(token, entries, signed, failure, report)
                    sent = True
                except BaseException:
                    if ahead is not None:
                        await self._withdraw(token, ahead[0], ahead[2], report)
                        ahead = None
                    raise
                if stop is not None:
                    await self._record(token, unrecorded, report)
                    raise stop
            await self._record(token, unrecorded, report)
        finally:
            if recording is not None:
                # The run stops for another reason, which it reports; this record is
                # still waited for (what went out is in the report), and if it failed,
                # its payouts are settled by the next run.
                last, recording = recording, None
                try:
                    await last
                except Exception:
                    self.log.failure("pool {pool}: payouts sent were not recorded paid", pool=self._name)

    def _reserve(self, token: int, batch: list[JournalEntry]) -> defer.Deferred[Reserved]:
        return defer.ensureDeferred(self.ledger.reserve_batch(token, batch, self.payments.lock_timeout))

    async def _withdraw(
        self, token: int, batch: list[JournalEntry], reserving: defer.Deferred[Reserved], report: PayoutReport
    ) -> None:
        """The batch reserved ahead of one the run stops in, never signed: back in the
        balances. If that fails, its entries stay open, reserved, and the next run signs
        and pays them."""
        try:
            reserved = await reserving
            entries = batch[: reserved.count]
            given = await self.ledger.give_back_batch(token, entries, self.payments.lock_timeout)
        except Exception:
            self.log.failure(
                "pool {pool}: the payouts reserved ahead of the stop were not given back; the next "
                "run pays them",
                pool=self._name,
            )
            return
        report.withdrawn.extend(e.login for e, back in zip(entries, given, strict=True) if back)

    def _next_batch(
        self,
        due: deque[tuple[str, int]],
        size: int,
        nonce: int,
        pricing: Pricing,
        available: int,
        report: PayoutReport,
    ) -> tuple[list[JournalEntry], PayoutStopped | None]:
        """Up to ``size`` payouts taken from ``due``, nonces from ``nonce`` on; and the stop
        when the pool's account cannot cover the next one."""
        max_cost = GasPolicy.fee(pricing)
        who: Literal["pool", "miner"] = "miner" if self.payments.transaction_fee == "miners" else "pool"
        now = self._wall_clock()
        batch: list[JournalEntry] = []
        while due and len(batch) < size:
            login, amount = due[0]
            try:
                value = deduct_fee(amount, max_cost, who)
            except FeeNotCovered as e:
                report.skipped[login] = str(e)
                due.popleft()
                continue
            cost = value + max_cost
            if available < cost:
                return batch, PayoutStopped(
                    f"the pool's account {self.key.address} holds {max(available, 0)} wei available, and "
                    f"paying {login} takes up to {cost} wei ({value} and at most {max_cost} of gas): nothing "
                    "withheld; fund the account and the next run pays"
                )
            batch.append(JournalEntry(login, amount, value, nonce + len(batch), pricing, now))
            available -= cost
            due.popleft()
        return batch, None

    async def _pricing(self) -> Pricing:
        gas_price = _quantity(await self.node.call("eth_gasPrice"), "eth_gasPrice")
        latest = await self.node.call("eth_getBlockByNumber", "latest", False)
        if not isinstance(latest, dict):
            raise PayoutStopped("the node has no latest block")
        base_fee = latest.get("baseFeePerGas")
        try:
            return self.policy.price(gas_price, None if base_fee is None else _quantity(base_fee, "base fee"))
        except GasPriceError as e:
            raise PayoutStopped(str(e)) from None


# -- the service ------------------------------------------------------------------


def payer_daemon(pool: EthPoolConfig) -> DaemonConfig:
    """The one node the payer asks and sends to: the payments section's, else the pool's
    first. Never a group that fails over: an account's nonces are one node's view."""
    return pool.payments.daemon or pool.daemons[0]


@dataclass(frozen=True, slots=True)
class Outstanding:
    """The payouts not done with when a run ends."""

    open: int  # in the journal: reserved and not recorded paid
    unconfirmed: int  # recorded paid and not mined deep enough yet


def payout_key(pool: EthPoolConfig) -> PayoutKey:
    """The pool's payout key; KeyFileError naming the pool's file and the key's when it is
    not set, missing or unsafe."""
    key_file = pool.payments.key_file
    if key_file is None:
        raise KeyFileError(f"{pool.file}: payments.key_file is not set; the payer has no key")
    try:
        return load_key(key_file)
    except SignerError as e:
        raise KeyFileError(f"{pool.file}: {e}") from None


# Told of every run as it ends (metrics): its report, or None for a run that raised
# (logged); the payouts outstanding after it (None: locked out, raised, or not read);
# and the wall clock's time then.
PayoutListener = Callable[[PayoutReport | None, Outstanding | None, float], None]


class EthPayerService(Service):
    """Runs EthPayer every ``payments.interval`` seconds, after the unlocker, while Redis is up.

    The payout key is read when the service is made: a missing or unsafe key
    file (``KeyFileError``, its message naming the file and the fix) stops
    the pool from starting, rather than every run failing later.

    ``run_listener`` is told of every run, each one locked out included; a
    run skipped because Redis is not connected is no run.

    The service owns the threads payouts are signed in (SIGNING_THREADS), from
    its start to its stop, apart from the reactor's pool: a DNS lookup never
    waits behind a batch's signatures.
    """

    log = Logger()

    def __init__(
        self,
        config: EthPoolConfig,
        redis: Callable[[], RedisClient | None],
        reactor: Any,
        rpc_observer: CallObserver | None = None,
        http: HTTPPoster | None = None,
        wall_clock: Callable[[], float] = time.time,
        run_listener: PayoutListener | None = None,
    ) -> None:
        self.key = payout_key(config)
        self.config = config
        self.name = f"payer:{config.name}"
        self._redis = redis
        self._reactor = reactor
        self._rpc_observer = rpc_observer  # told of every node call (metrics)
        self._http = http
        self._wall_clock = wall_clock
        self._run_listener = run_listener
        self._clients: DaemonClients | None = None
        self._node: RPC | None = None
        self._loop: task.LoopingCall | None = None
        self._starting: IDelayedCall | None = None
        self._running: defer.Deferred[PayoutReport | None] | None = None
        self._waiting: defer.Deferred[None] | None = None
        self._signing: ThreadPool | None = None

    def startService(self) -> None:
        super().startService()
        if SIGNING_THREADS:
            name = f"nomp-payer-{self.config.name}"
            self._signing = ThreadPool(minthreads=0, maxthreads=SIGNING_THREADS, name=name)
            self._signing.start()
        if self.key.address.lower() != self.config.address.lower():
            self.log.warn(
                "pool {pool}: the payout key's account {key} is not the pool's address {address}, where "
                "block rewards go: payouts draw on what is moved to {key}",
                pool=self.config.name,
                key=self.key.address,
                address=self.config.address,
            )
        self._clients = DaemonClients(self._reactor, observer=self._rpc_observer, http=self._http)
        self._node = self._clients.rpc(payer_daemon(self.config), version="2.0")
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self._reactor
        # The unlocker runs at start: the first payout run comes just after it.
        self._starting = self._reactor.callLater(
            STARTUP_DELAY, self._loop.start, self.config.payments.interval, True
        )

    def _tick(self) -> None:
        if self._running is None or self._running.called:
            self._running = defer.Deferred.fromCoroutine(self.run_once())

    async def run_once(self) -> PayoutReport | None:
        """One payout run now (waiting while the unlocker holds the lock, up to an interval);
        None when Redis is not there or the run failed."""
        waited = 0.0
        while self.running:
            redis, node = self._redis(), self._node
            if redis is None or node is None:
                self.log.info("pool {pool}: payout run skipped: Redis is not ready", pool=self.config.name)
                return None
            ledger = EthPayLedger(redis, OepKeys.for_coin(self.config.coin.name))
            # The signatures come back on the reactor the node's and Redis' connections are
            # served on (EthPayer's default), whatever clock the service's timers run on.
            payer = EthPayer(self.config, ledger, node, self.key, self._wall_clock, signing=self._signing)
            try:
                report = await payer.run()
            except Exception:
                self.log.failure(
                    "pool {pool}: payout run failed; tried again next interval", pool=self.config.name
                )
                self._tell(None, None)
                return None
            self._tell(report, None if report.locked_out else await self._outstanding(ledger))
            if not report.locked_out or waited >= self.config.payments.interval:
                return report
            self._waiting = task.deferLater(self._reactor, LOCK_RETRY, lambda: None)
            try:
                await self._waiting
            except defer.CancelledError:
                return None
            finally:
                self._waiting = None
            waited += LOCK_RETRY
        return None

    async def _outstanding(self, ledger: EthPayLedger) -> Outstanding | None:
        if self._run_listener is None:
            return None
        try:
            return Outstanding(len(await ledger.journal()), len(await ledger.unconfirmed()))
        except Exception:
            self.log.failure(
                "pool {pool}: the payouts outstanding after the run could not be read",
                pool=self.config.name,
            )
            return None

    def _tell(self, report: PayoutReport | None, outstanding: Outstanding | None) -> None:
        if self._run_listener is not None:
            self._run_listener(report, outstanding, self._wall_clock())

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._starting is not None and self._starting.active():
            self._starting.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._waiting is not None:
            self._waiting.cancel()
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        # A run in progress finishes: each write is whole anyway, and a payout
        # stopped between its send and its record is settled by the next start.
        if self._running is not None and not self._running.called:
            await self._running
        signing, self._signing = self._signing, None
        if signing is not None:
            signing.stop()  # its threads idle now: they end at once
        clients, self._clients = self._clients, None
        if clients is not None:
            await clients.close()
