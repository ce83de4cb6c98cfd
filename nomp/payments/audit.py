"""The payment audit: Redis's books against each other and against the wallet.

Every check is a pair of numbers that must be equal; the audit lists each
with its difference, so a clean pool prints zeros.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal

from nomp.payments.ledger import PaymentLedger, split_from_json
from nomp.payments.processor import RPC
from nomp.payments.split import satoshis
from nomp.store.schema import NO_TXID, decode_pending_member


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    expected: int
    found: int

    @property
    def difference(self) -> int:
        return self.found - self.expected


@dataclass(slots=True)
class Audit:
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return all(c.difference == 0 for c in self.checks)

    def check(self, name: str, expected: int, found: int) -> None:
        self.checks.append(Check(name, expected, found))

    def lines(self) -> list[str]:
        width = max((len(c.name) for c in self.checks), default=0)
        out = [
            f"{c.name:<{width}}  expected {c.expected:>20}  found {c.found:>20}  difference {c.difference}"
            for c in self.checks
        ]
        out += [f"note: {n}" for n in self.notes]
        out.append(
            "clean: every difference is zero" if self.clean else "NOT CLEAN: see the differences above"
        )
        return out


async def audit(ledger: PaymentLedger, wallet: RPC, pool_address: str) -> Audit:
    """Check credited = rewards - pool's part, paid = what the wallet sent,
    balances = credited - paid, for the pool and for every address."""
    keys = ledger.keys
    result = Audit()
    totals = {k: int(v) for k, v in (await ledger.hash(keys.payment_totals)).items()}

    # Credits: every confirmed block's split, against the wallet's coinbase.
    credited: dict[str, int] = {}
    rewards = kept = wallet_rewards = 0
    confirmed = await ledger.set_members(keys.blocks_confirmed)
    for member in confirmed:
        confirmed_block = decode_pending_member(member)
        detail = await ledger.hash(keys.block(confirmed_block.block_hash))
        split = split_from_json(detail["split"])
        rewards += split.reward
        kept += split.pool
        for address, amount in split.miners.items():
            credited[address] = credited.get(address, 0) + amount
        txid = confirmed_block.txid or detail.get("txid", NO_TXID)
        tx = await wallet.call("gettransaction", txid)
        wallet_rewards += sum(
            satoshis(Decimal(d["amount"]))
            for d in tx.get("details", [])
            if d.get("category") == "generate" and d.get("address") == pool_address
        )
    result.check("confirmed block rewards: splits vs wallet coinbases", wallet_rewards, rewards)
    result.check(
        "credited to miners + kept by the pool vs rewards", rewards, totals.get("credited", 0) + kept
    )
    result.check("kept by the pool", kept, totals.get("kept", 0))

    # Payments: the history against the wallet's transactions.
    paid_by_history: dict[str, int] = {}
    history_total = 0
    wallet_sent = 0
    expected_sent = 0
    for text in await ledger.history():
        record = json.loads(text)
        amounts = {a: int(v) for a, v in record["amounts"].items()}
        for address, amount in amounts.items():
            paid_by_history[address] = paid_by_history.get(address, 0) + amount
        total = sum(amounts.values())
        history_total += total
        tx = await wallet.call("gettransaction", record["txid"])
        sent = -sum(
            satoshis(Decimal(d["amount"]))
            for d in tx.get("details", [])
            if d.get("category") == "send" and d.get("address") in amounts
        )
        wallet_sent += sent
        miners_fee = int(record["fee"]) if record.get("fee_from") == "miners" else 0
        expected_sent += total - miners_fee
    result.check("paid (history) vs sent by the wallet (+ fees miners paid)", expected_sent, wallet_sent)
    result.check("paid total vs payment history", history_total, totals.get("paid", 0))

    # Balances: credited - paid, per address.
    balances = await ledger.balances()
    paid = {a: int(v) for a, v in (await ledger.hash(keys.paid)).items()}
    for address in sorted(set(credited) | set(balances) | set(paid)):
        result.check(
            f"balance of {address} = credited - paid",
            credited.get(address, 0) - paid_by_history.get(address, 0),
            balances.get(address, 0),
        )
        result.check(f"paid to {address} vs history", paid_by_history.get(address, 0), paid.get(address, 0))

    # Immature: the open credits against the blocks still pending.
    immature = {a: int(v) for a, v in (await ledger.hash(keys.immature)).items()}
    open_credits = 0
    for block in await ledger.pending_blocks():
        if block.state == "immature" and block.split is not None:
            open_credits += sum(block.split.miners.values())
    result.check("immature credits vs pending blocks", open_credits, sum(immature.values()))
    result.check("immature total", open_credits, totals.get("immature", 0))

    journal = await ledger.journal()
    if journal is not None:
        result.notes.append(f"payout batch {journal.id} is open: the next payment run settles it")
    return result
