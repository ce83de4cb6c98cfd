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
   login first, one transaction each.

Why a login is never paid twice. A payout's account nonce is chosen, and
written to the journal with its amount and gas price, in the same script
that moves the amount from the balance to pending, before anything is
signed. The transaction is signed from the journal entry alone (the same
entry signs the same bytes) and its hash and raw bytes are recorded before
it is sent. The chain runs at most one transaction of an account at each
nonce, so whatever happens after that (no answer, a crash, the same bytes
sent again) at most one payout can be mined for the entry. A payout is
recorded paid once the node answers its hash, or, when the answer is
anything else, once the node shows the transaction (pooled or mined). What
the node says is never guessed at:

- the transaction found: paid;
- not found, and the account's mined nonce already past the entry's: another
  transaction took that nonce (not the payer's: the journal has every one of
  its own). The run stops for the operator and nothing moves;
- not found otherwise: it never reached the chain; the same bytes are sent
  again.

A payout goes back to the balance only when it is certain no node has it:
a transaction signed in this run, whose every send the node answered with a
refusal (underpriced, insufficient funds, ...), and which the node then
does not show.

OEP paid with ``eth_sendTransaction`` from an account unlocked on the node,
and its ``RESOLVE_PAYOUT`` credited back every pending payout, broadcast or
not (a double pay). Here the node holds no key and nothing is credited back
on a guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NoReturn, Protocol

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from txredisapi import ResponseError

from nomp.config import DaemonConfig, EthPoolConfig
from nomp.daemon import DaemonError
from nomp.daemon.clients import DaemonClients
from nomp.daemon.errors import RPCError
from nomp.daemon.rpc import CallObserver, HTTPPoster
from nomp.eth.work import WorkError, parse_quantity
from nomp.payments.ethpayledger import EthPayLedger, JournalEntry, Unconfirmed
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
# stops the run at each and checks that a later run pays exactly once.
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
    payout passes that step; the pool passes none.
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
    ) -> None:
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
            await self._watch(report)
            for entry in await self.ledger.journal():
                await self._keep_lock(token)
                await self._settle(token, entry, report)
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

    async def _watch(self, report: PayoutReport) -> None:
        watched = await self.ledger.unconfirmed()
        if not watched:
            return
        tip = _quantity(await self.node.call("eth_blockNumber"), "eth_blockNumber")
        latest = await self._nonce("latest")
        for payout in watched:
            seen = await self._seen(payout.tx_hash)
            decision = watch_decision(payout, seen, tip, latest, self._confirmations)
            if decision is Watch.CONFIRMED:
                await self.ledger.mined(payout)
                report.confirmed.append(payout.tx_hash)
            elif decision is Watch.FAILED:
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

    async def _settle(self, token: int, entry: JournalEntry, report: PayoutReport) -> None:
        """An entry a run left open: made paid, or sent (again)."""
        decision = Settle.SIGN if entry.tx_hash is None else await self._look(entry)
        self.log.warn(
            "pool {pool}: payout to {login} (nonce {nonce}) was left {state}: {decision}",
            pool=self._name,
            login=entry.login,
            nonce=entry.nonce,
            state=entry.state,
            decision=decision.value,
        )
        if decision is Settle.PAID:
            await self._record(entry, report)
        elif decision is Settle.FOREIGN:
            raise self._foreign(entry)
        elif decision is Settle.SIGN:
            await self._send(token, await self._sign(token, entry, report), report, fresh=True)
        else:
            await self._send(token, entry, report, fresh=False)

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

    async def _sign(self, token: int, entry: JournalEntry, report: PayoutReport) -> JournalEntry:
        try:
            signed = sign_transfer(
                self.key, self.config.coin.chain_id, entry.nonce, entry.login, entry.value, entry.pricing
            )
        except (SignerError, TypeError, ValueError) as e:
            # Never signed, so never sent: its amount can go back.
            if await self.ledger.give_back(token, entry):
                report.given_back[entry.login] = str(e)
            raise PayoutStopped(
                f"the payout to {entry.login} could not be signed ({e}); its amount is back in its balance"
            ) from None
        entry = entry.signed(signed.tx_hash, signed.raw_hex)
        if not await self.ledger.record_signed(token, entry):
            stored = {e.login: e for e in await self.ledger.journal()}.get(entry.login)
            if stored is None or stored.tx_hash != entry.tx_hash:
                raise PayoutStopped(f"the journal entry of {entry.login} changed while it was signed")
        self._reached("after_signing")
        return entry

    async def _send(self, token: int, entry: JournalEntry, report: PayoutReport, fresh: bool) -> None:
        """Send the entry's transaction and record it paid; when the node does not answer
        its hash, settle by what the node shows. ``fresh``: signed in this run, never sent."""
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
                    await self._record(entry, report)
                    return
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
                await self._record(entry, report)
                return
            if decision is Settle.FOREIGN:
                raise self._foreign(entry)
            if fresh and answered and error is not None and refused(error):
                await self._give_back(token, entry, error, report)
        raise PayoutStopped(
            f"the node did not take payout {entry.tx_hash} to {entry.login} (nonce {entry.nonce}): "
            f"{error or 'an unexpected answer'}; the next run sends the same transaction again"
        )

    async def _give_back(
        self, token: int, entry: JournalEntry, error: DaemonError, report: PayoutReport
    ) -> NoReturn:
        why = error.message if isinstance(error, RPCError) else str(error)
        if not await self.ledger.give_back(token, entry):
            raise PayoutStopped(f"the journal entry of {entry.login} changed before it could be given back")
        report.given_back[entry.login] = why
        raise PayoutStopped(
            f"the node refused the payout to {entry.login} ({why}) and does not hold it: its "
            f"{entry.amount} wei are back in its balance"
        )

    async def _record(self, entry: JournalEntry, report: PayoutReport) -> None:
        assert entry.tx_hash is not None
        self._unmined.add(entry.tx_hash)  # mined or not: counted against the account's funds
        if await self.ledger.record_paid(entry, self._wall_clock()):
            report.paid[entry.login] = entry.tx_hash
            report.amounts[entry.login] = entry.amount
            self.log.info(
                "pool {pool}: paid {value} wei to {login} in {tx} ({amount} wei from its balance)",
                pool=self._name,
                value=entry.value,
                login=entry.login,
                tx=entry.tx_hash,
                amount=entry.amount,
            )
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
        max_cost = GasPolicy.fee(pricing)
        watched = await self.ledger.unconfirmed()
        known = [p.nonce for p in watched] + [e.nonce for e in await self.ledger.journal()]
        nonce = next_nonce(await self._nonce("pending"), known)
        available = _quantity(
            await self.node.call("eth_getBalance", self.key.address, "latest"), "eth_getBalance"
        )
        # What the payouts not mined yet may still take from it.
        available -= sum(p.value + p.max_cost for p in watched if p.tx_hash in self._unmined)
        who: Literal["pool", "miner"] = "miner" if self.payments.transaction_fee == "miners" else "pool"
        for login, amount in payees.due:
            await self._keep_lock(token)
            try:
                value = deduct_fee(amount, max_cost, who)
            except FeeNotCovered as e:
                report.skipped[login] = str(e)
                continue
            cost = value + max_cost
            if available < cost:
                raise PayoutStopped(
                    f"the pool's account {self.key.address} holds {max(available, 0)} wei available, and "
                    f"paying {login} takes up to {cost} wei ({value} and at most {max_cost} of gas): nothing "
                    "withheld; fund the account and the next run pays"
                )
            entry = JournalEntry(login, amount, value, nonce, pricing, self._wall_clock())
            try:
                await self.ledger.reserve(token, entry)
            except ResponseError as e:
                if str(e).startswith("NOFUNDS"):
                    report.skipped[login] = str(e)
                    continue
                raise PayoutStopped(f"the payout to {login} could not be reserved: {e}") from None
            self._reached("after_reserving")
            await self._send(token, await self._sign(token, entry, report), report, fresh=True)
            nonce += 1
            available -= cost

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

    def startService(self) -> None:
        super().startService()
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
            payer = EthPayer(self.config, ledger, node, self.key, self._wall_clock)
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
        clients, self._clients = self._clients, None
        if clients is not None:
            await clients.close()
