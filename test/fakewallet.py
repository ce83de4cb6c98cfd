"""A scripted chain and wallet for the payment paths a real node will not
produce on demand (a lost sendmany reply, a wallet that runs dry on cue).

Only the calls the payment run makes are answered; each records its calls.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from nomp.daemon.errors import DaemonUnreachable, RPCError
from nomp.payments.split import coins


class FakeChain:
    """getblockcount and getblock: blocks are (confirmations, coinbase txid)."""

    def __init__(self, tip: int) -> None:
        self.tip = tip
        self.blocks: dict[str, tuple[int, str]] = {}

    async def call(self, method: str, *params: Any) -> Any:
        if method == "getblockcount":
            return self.tip
        if method == "getblock":
            if params[0] not in self.blocks:
                raise RPCError("fake", method, -5, "Block not found")
            confirmations, txid = self.blocks[params[0]]
            return {"confirmations": confirmations, "tx": [txid]}
        raise AssertionError(f"unexpected chain call {method}")


class FakeWallet:
    """gettransaction, validateaddress, sendmany, listtransactions.

    ``coinbases``: txid -> (category, satoshis) paid to ``pool_address``.
    ``on_sendmany`` may raise (an RPCError, DaemonUnreachable) or return a
    txid; ``sent_but_unanswered`` makes the send happen and the reply be lost.
    """

    def __init__(self, pool_address: str) -> None:
        self.pool_address = pool_address
        self.coinbases: dict[str, tuple[str, int]] = {}
        self.invalid: set[str] = set()
        self.sends: list[tuple[str, dict[str, str], str]] = []  # txid, amounts, comment
        self.on_sendmany: Callable[[dict[str, str]], None] | None = None
        self.sent_but_unanswered = False
        self.calls: list[str] = []

    async def call(self, method: str, *params: Any) -> Any:
        self.calls.append(method)
        if method == "gettransaction":
            txid = params[0]
            if txid in self.coinbases:
                category, amount = self.coinbases[txid]
                detail = {
                    "address": self.pool_address,
                    "category": category,
                    "amount": Decimal(coins(amount)),
                }
                return {"details": [detail]}
            for sent, amounts, _ in self.sends:
                if sent == txid:
                    details = [
                        {"address": address, "category": "send", "amount": -Decimal(amount)}
                        for address, amount in amounts.items()
                    ]
                    return {"fee": Decimal("-0.00001000"), "details": details}
            raise RPCError("fake", method, -5, "Invalid or non-wallet transaction id")
        if method == "validateaddress":
            return {"isvalid": params[0] not in self.invalid}
        if method == "sendmany":
            _, amounts, _, comment, _ = params
            if self.on_sendmany is not None:
                self.on_sendmany(amounts)
            txid = f"{len(self.sends) + 1:064x}"
            self.sends.append((txid, dict(amounts), comment))
            if self.sent_but_unanswered:
                raise DaemonUnreachable("fake", method, "no answer in 10s")
            return txid
        if method == "listtransactions":
            entries = []
            for txid, amounts, comment in self.sends:
                for address in amounts:
                    entries.append(
                        {"category": "send", "address": address, "txid": txid, "comment": comment, "time": 0}
                    )
            return entries
        raise AssertionError(f"unexpected wallet call {method}")
