"""PaymentProcessor: one payment run of one pool.

A run takes the pool's payment lock, settles a payout batch a crashed run
left open, walks the pending blocks (credit when immature, move the credit
to balances when mature, undo it when orphaned) and pays every balance over
the minimum in one ``sendmany``.

Why it never pays twice: the batch (id, addresses, satoshis) is written to
the journal before ``sendmany``, and its id goes with the transaction as
the wallet comment. Balances are debited only when the txid is recorded,
in the same script that closes the journal. A run that finds a journal
open asks the wallet whether a transaction with that comment exists: if it
does, it is recorded; if it does not (and the wallet has had time to
finish any call still running), the batch is dropped and the balances,
untouched, are paid by a later batch.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from twisted.logger import Logger

from nomp.config import PoolConfig
from nomp.daemon import DaemonError
from nomp.daemon.errors import RPC_INVALID_ADDRESS_OR_KEY, RPCError
from nomp.payments.ledger import Batch, PaymentLedger, PendingBlock
from nomp.payments.split import RewardSplit, coins, round_weights, satoshis, split_reward

# The wallet's error codes the run reacts to.
RPC_WALLET_INSUFFICIENT_FUNDS = -6
RPC_WALLET_UNLOCK_NEEDED = -13

# The steps of a run a ``failpoint`` hook is told of, in order: a fault-injection
# test kills the process at each and checks that a later run pays exactly once.
FAILPOINTS = ("after_crediting", "after_journal", "after_sendmany", "after_recording")
LIST_PAGE = 200
_ADDRESS_IN_ERROR = re.compile(r"address: ?(\S+)", re.IGNORECASE)


def _threshold(own: str | None, minimum: int) -> int:
    """A miner's own payout threshold (satoshis, as stored) or the pool's; never below the pool's."""
    try:
        return max(int(own), minimum) if own is not None else minimum
    except ValueError:
        return minimum


class RPC(Protocol):
    """A daemon to call: a DaemonRPC (the wallet) or a DaemonGroup (the chain)."""

    async def call(self, method: str, *params: Any) -> Any: ...


@dataclass(slots=True)
class RunReport:
    """What one run did, for logs and tests."""

    locked_out: bool = False
    immature: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # block hash -> why it is still pending
    paid: dict[str, int] = field(default_factory=dict)
    txid: str | None = None
    set_aside: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # why no payout was made, if one was due


@dataclass(frozen=True, slots=True)
class BlockStatus:
    """What the chain and the wallet say of a pending block."""

    kind: str  # "immature", "mature", "orphaned", "waiting"
    reward: int = 0  # satoshis the pool address got, for immature and mature
    txid: str | None = None
    why: str = ""


class PaymentProcessor:
    """Runs a pool's payments against its chain daemons, wallet and Redis.

    ``failpoint``, a test seam, is called with each name of FAILPOINTS as the
    run passes that step; the pool and its commands pass none.
    """

    log = Logger()

    def __init__(
        self,
        pool: PoolConfig,
        ledger: PaymentLedger,
        chain: RPC,
        wallet: RPC,
        wall_clock: Callable[[], float] = time.time,
        failpoint: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = pool
        self.config = pool.payments
        self.ledger = ledger
        self.chain = chain
        self.wallet = wallet
        self._wall_clock = wall_clock
        self._failpoint = failpoint
        self._valid_addresses: set[str] = set()
        self._batches = 0

    def _reached(self, step: str) -> None:
        if self._failpoint is not None:
            self._failpoint(step)

    async def run(self) -> RunReport:
        report = RunReport()
        token = await self.ledger.acquire(self.config.lock_timeout)
        if token is None:
            report.locked_out = True
            self.log.info("pool {pool}: another payment run holds the lock", pool=self.pool.name)
            return report
        try:
            settled = await self._settle_journal(report)
            await self._walk_blocks(token, report)
            self._reached("after_crediting")
            if settled:
                await self._pay(token, report)
        finally:
            await self.ledger.release(token)
        return report

    # -- blocks --------------------------------------------------------------

    async def _walk_blocks(self, token: int, report: RunReport) -> None:
        blocks = await self.ledger.pending_blocks()
        if not blocks:
            return
        tip = int(await self.chain.call("getblockcount"))
        for block in blocks:
            try:
                status = await self._status(block, tip)
            except DaemonError as e:
                status = BlockStatus("waiting", why=str(e))
            if status.kind == "waiting":
                report.waiting[block.hash] = status.why
                continue
            if status.kind == "orphaned":
                fold = self.config.scheme == "prop" and not block.solo
                if await self.ledger.orphan(token, block, fold, status.why):
                    report.orphaned.append(block.hash)
                    self.log.warn(
                        "pool {pool}: block {height} {hash} orphaned ({why})",
                        pool=self.pool.name,
                        height=block.height,
                        hash=block.hash,
                        why=status.why,
                    )
                continue
            split = block.split or await self._split(block, status.reward)
            if status.kind == "immature":
                if block.state is None and await self.ledger.credit_immature(token, block, split):
                    report.immature.append(block.hash)
                continue
            assert status.txid is not None
            outcome = await self.ledger.credit_mature(token, block, status.txid, split)
            if outcome == 1:
                report.confirmed.append(block.hash)
                self.log.info(
                    "pool {pool}: block {height} {hash} mature: {reward} satoshis credited",
                    pool=self.pool.name,
                    height=block.height,
                    hash=block.hash,
                    reward=split.reward,
                )
            elif outcome == 2:
                report.orphaned.append(block.hash)
                self.log.warn(
                    "pool {pool}: block {hash} carries coinbase {txid}, credited before: not paid again",
                    pool=self.pool.name,
                    hash=block.hash,
                    txid=status.txid,
                )

    async def _status(self, block: PendingBlock, tip: int) -> BlockStatus:
        try:
            info = await self.chain.call("getblock", block.hash)
        except RPCError as e:
            if e.code == RPC_INVALID_ADDRESS_OR_KEY:
                return BlockStatus("waiting", why="the node does not know this block")
            raise
        txid = block.txid or info["tx"][0]
        if int(info["confirmations"]) < 0:
            if tip - block.height >= self.config.orphan_depth:
                return BlockStatus("orphaned", why="not in the main chain")
            return BlockStatus("waiting", why="not in the main chain yet")
        if info["tx"][0] != txid:
            return BlockStatus("orphaned", why=f"the block's coinbase is {info['tx'][0]}, not {txid}")
        try:
            tx = await self.wallet.call("gettransaction", txid)
        except RPCError as e:
            if e.code == RPC_INVALID_ADDRESS_OR_KEY:
                self.log.error(
                    "pool {pool}: the wallet does not know coinbase {txid} of block {hash}: "
                    "is the pool address in this wallet?",
                    pool=self.pool.name,
                    txid=txid,
                    hash=block.hash,
                )
                return BlockStatus("waiting", why="the wallet does not know its coinbase")
            raise
        details = [d for d in tx.get("details", []) if d.get("address") == self.pool.address]
        categories = {d.get("category") for d in details}
        if not details or len(categories) != 1:
            return BlockStatus("waiting", why=f"the wallet shows {sorted(map(str, categories))} for the pool")
        reward = sum(satoshis(Decimal(d["amount"])) for d in details)
        category = categories.pop()
        if category == "generate":
            return BlockStatus("mature", reward, txid)
        if category == "immature":
            return BlockStatus("immature", reward, txid)
        return BlockStatus("waiting", why=f"the wallet says {category} while the chain holds it")

    async def _split(self, block: PendingBlock, reward: int) -> RewardSplit:
        shares = await self.ledger.hash(block.round_key) if block.round_key else {}
        if not shares:
            self.log.error(
                "pool {pool}: no shares recorded for the round of block {hash}: the pool keeps its reward",
                pool=self.pool.name,
                hash=block.hash,
            )
        return split_reward(reward, round_weights(shares), self.config.fee_percent)

    # -- payouts -------------------------------------------------------------

    async def _settle_journal(self, report: RunReport) -> bool:
        """Settle a batch left open; False while it cannot be settled yet."""
        batch = await self.ledger.journal()
        if batch is None:
            return True
        txid = await self._find_sent(batch)
        if txid is not None:
            await self._record(batch, txid, report)
            self.log.warn(
                "pool {pool}: payout batch {batch} was sent as {txid} before the run stopped; recorded",
                pool=self.pool.name,
                batch=batch.id,
                txid=txid,
            )
            return True
        age = self._wall_clock() - batch.created
        if age < self.config.unknown_send_grace:
            report.error = f"payout batch {batch.id} not found in the wallet yet; waiting"
            self.log.warn(
                "pool {pool}: payout batch {batch} is not in the wallet; waiting {left:.0f}s more before "
                "dropping it",
                pool=self.pool.name,
                batch=batch.id,
                left=self.config.unknown_send_grace - age,
            )
            return False
        await self.ledger.cancel_batch(batch)
        self.log.warn(
            "pool {pool}: payout batch {batch} was never sent; its balances stay",
            pool=self.pool.name,
            batch=batch.id,
        )
        return True

    async def _find_sent(self, batch: Batch) -> str | None:
        """The txid of the wallet's send whose comment is the batch id, if any."""
        skip = 0
        while True:
            page = await self.wallet.call("listtransactions", "*", LIST_PAGE, skip, True)
            for entry in page:
                if entry.get("category") == "send" and entry.get("comment") == batch.id:
                    return str(entry["txid"])
            if len(page) < LIST_PAGE or min(int(e.get("time", 0)) for e in page) < batch.created - 3600:
                return None
            skip += LIST_PAGE

    async def _pay(self, token: int, report: RunReport) -> None:
        minimum = satoshis(self.config.minimum_payment)
        own = await self.ledger.hash(self.ledger.keys.payout_minimums)
        aside = await self.ledger.set_aside()
        due = {
            a: v
            for a, v in (await self.ledger.balances()).items()
            if v >= _threshold(own.get(a), minimum) and a not in aside
        }
        for address in sorted(due):
            why = await self._invalid(address)
            if why is not None:
                await self._put_aside(token, address, why, report)
                del due[address]
        while due:
            self._batches += 1
            batch = Batch(
                f"{self.ledger.keys.coin}:{token}:{self._batches}",
                due,
                self._wall_clock(),
                self.config.transaction_fee,
            )
            await self.ledger.open_batch(token, batch)
            self._reached("after_journal")
            subtract = sorted(due) if batch.fee_from == "miners" else []
            try:
                txid = await self.wallet.call(
                    "sendmany", "", {a: coins(v) for a, v in sorted(due.items())}, 1, batch.id, subtract
                )
            except RPCError as e:
                # The wallet answered: nothing was sent.
                await self.ledger.cancel_batch(batch)
                rejected = self._rejected_address(e, due)
                if e.code == RPC_INVALID_ADDRESS_OR_KEY and rejected is not None:
                    await self._put_aside(token, rejected, e.message, report)
                    del due[rejected]
                    continue
                report.error = self._explain(e)
                self.log.error(
                    "pool {pool}: no payout this run: {why}", pool=self.pool.name, why=report.error
                )
                return
            except DaemonError as e:
                # No answer: the batch may have been sent. The journal stays
                # open and the next run asks the wallet.
                report.error = f"sendmany unanswered ({e}); batch {batch.id} is settled by a later run"
                self.log.error("pool {pool}: {why}", pool=self.pool.name, why=report.error)
                return
            self._reached("after_sendmany")
            await self._record(batch, str(txid), report)
            self._reached("after_recording")
            return

    async def _record(self, batch: Batch, txid: str, report: RunReport) -> None:
        fee = 0
        try:
            sent = await self.wallet.call("gettransaction", txid)
            fee = -satoshis(Decimal(sent.get("fee", 0)))
        except DaemonError as e:
            self.log.warn(
                "pool {pool}: fee of {txid} unknown: {error}", pool=self.pool.name, txid=txid, error=e
            )
        pool_fee, miners_fee = (0, fee) if batch.fee_from == "miners" else (fee, 0)
        if await self.ledger.record_batch(batch, txid, pool_fee, miners_fee, self._wall_clock()):
            report.paid = dict(batch.amounts)
            report.txid = txid
            self.log.info(
                "pool {pool}: paid {total} satoshis to {count} addresses in {txid} (fee {fee})",
                pool=self.pool.name,
                total=sum(batch.amounts.values()),
                count=len(batch.amounts),
                txid=txid,
                fee=fee,
            )

    async def _invalid(self, address: str) -> str | None:
        if address in self._valid_addresses:
            return None
        info = await self.wallet.call("validateaddress", address)
        if not info.get("isvalid"):
            return "the wallet says the address is invalid"
        self._valid_addresses.add(address)
        return None

    async def _put_aside(self, token: int, address: str, why: str, report: RunReport) -> None:
        await self.ledger.put_aside(token, address, why)
        report.set_aside[address] = why
        self.log.error(
            "pool {pool}: payouts to {address} set aside ({why}); its balance waits",
            pool=self.pool.name,
            address=address,
            why=why,
        )

    @staticmethod
    def _rejected_address(error: RPCError, due: dict[str, int]) -> str | None:
        match = _ADDRESS_IN_ERROR.search(error.message)
        if match and match.group(1) in due:
            return match.group(1)
        return None

    @staticmethod
    def _explain(error: RPCError) -> str:
        if error.code == RPC_WALLET_INSUFFICIENT_FUNDS:
            return (
                f"the wallet has not enough funds ({error.message}); nothing withheld, tried again next run"
            )
        if error.code == RPC_WALLET_UNLOCK_NEEDED:
            return f"the wallet is locked ({error.message}); unlock it and payouts resume"
        return f"the wallet refused sendmany: {error.message} (code {error.code})"
