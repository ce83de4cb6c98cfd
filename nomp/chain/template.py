"""``getblocktemplate`` replies, checked and typed.

A daemon that lies or breaks must not crash the pool or yield bad blocks:
every field the pool uses is checked here, once, and a bad reply becomes a
TemplateError naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nomp.chain.encoding import bits_to_target, hash_to_internal

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
# Litecoin's MAX_MONEY (84e6 coins) bounds any coinbase of the supported coins.
MAX_COINBASE_VALUE = 84_000_000 * 100_000_000


class TemplateError(ValueError):
    """A block template the pool cannot use; the message names the field."""


@dataclass(frozen=True, slots=True)
class TemplateTransaction:
    """One transaction of a template, kept as the daemon serialised it."""

    data: bytes
    txid: bytes  # internal byte order
    fee: int


@dataclass(frozen=True, slots=True)
class BlockTemplate:
    """The fields of a block template the pool builds jobs from."""

    height: int
    version: int
    previous_block_hash: str  # display (RPC) order
    bits: int
    target: int
    curtime: int
    mintime: int
    coinbase_value: int
    transactions: tuple[TemplateTransaction, ...]
    witness_commitment: bytes | None
    mweb: bytes | None
    rules: tuple[str, ...]

    @property
    def prevhash_internal(self) -> bytes:
        """The previous block hash in header byte order."""
        return hash_to_internal(self.previous_block_hash)

    @classmethod
    def from_rpc(cls, reply: Mapping[str, Any]) -> BlockTemplate:
        """Check and convert a ``getblocktemplate`` reply."""
        if not isinstance(reply, Mapping):
            raise TemplateError("getblocktemplate: not an object")
        bits = int(_hex(reply, "bits", _HEX8), 16)
        target_hex = reply.get("target")
        target = int(_hex(reply, "target", _HEX64), 16) if target_hex is not None else bits_to_target(bits)
        if target <= 0:
            raise TemplateError("getblocktemplate: target is zero")
        transactions = reply.get("transactions", [])
        if not isinstance(transactions, list):
            raise TemplateError("getblocktemplate: transactions: not a list")
        commitment = reply.get("default_witness_commitment")
        mweb = reply.get("mweb")
        rules = reply.get("rules", [])
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise TemplateError("getblocktemplate: rules: not a list of strings")
        curtime = _int(reply, "curtime", 0, 2**32 - 1)
        return cls(
            height=_int(reply, "height", 1, 2**31 - 1),
            version=_int(reply, "version", 0, 2**32 - 1),
            previous_block_hash=_hex(reply, "previousblockhash", _HEX64).lower(),
            bits=bits,
            target=target,
            curtime=curtime,
            mintime=_int(reply, "mintime", 0, 2**32 - 1) if "mintime" in reply else curtime,
            coinbase_value=_int(reply, "coinbasevalue", 0, MAX_COINBASE_VALUE),
            transactions=tuple(_transaction(tx, i) for i, tx in enumerate(transactions)),
            witness_commitment=_bytes(commitment, "default_witness_commitment") if commitment else None,
            mweb=_bytes(mweb, "mweb") if mweb is not None else None,
            rules=tuple(rules),
        )


def _int(reply: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = reply.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise TemplateError(f"getblocktemplate: {key}: expected an integer in [{low}, {high}], got {value!r}")
    return value


def _hex(reply: Mapping[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = reply.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise TemplateError(f"getblocktemplate: {key}: malformed {value!r}")
    return value


def _bytes(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise TemplateError(f"getblocktemplate: {where}: not a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise TemplateError(f"getblocktemplate: {where}: not hex") from None


def _transaction(tx: Any, index: int) -> TemplateTransaction:
    where = f"transactions[{index}]"
    if not isinstance(tx, Mapping):
        raise TemplateError(f"getblocktemplate: {where}: not an object")
    data = _bytes(tx.get("data"), f"{where}.data")
    if len(data) < 10:
        raise TemplateError(f"getblocktemplate: {where}.data: too short for a transaction")
    txid = tx.get("txid", tx.get("hash"))
    if not isinstance(txid, str) or not _HEX64.fullmatch(txid):
        raise TemplateError(f"getblocktemplate: {where}.txid: malformed {txid!r}")
    fee = tx.get("fee", 0)
    if not isinstance(fee, int) or isinstance(fee, bool) or fee < 0:
        raise TemplateError(f"getblocktemplate: {where}.fee: malformed {fee!r}")
    return TemplateTransaction(data=data, txid=hash_to_internal(txid), fee=fee)
