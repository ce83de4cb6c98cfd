"""Block templates shaped like a busy mainnet's, for the benchmarks' fake daemon.

A ``getblocktemplate`` reply carries every transaction of the next block
serialised as the node would mine it, so the pool pays for parsing them,
for a merkle branch as deep as the block is wide and for a ``mining.notify``
line as long. Here every transaction is a real serialisation (inputs with
signature-sized scripts or witnesses, P2PKH and P2WPKH outputs), its txid
and witness hash computed from those bytes, and the template's
``default_witness_commitment`` is the one litecoind would give for them.

Each template draws fresh transactions, so nothing the pool computed for
one block can serve the next.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

COIN = 100_000_000
SUBSIDY = 625_000_000  # litecoin's block reward after its third halving
WITNESS_RESERVED_VALUE = bytes(32)
COMMITMENT_HEADER = bytes.fromhex("6a24aa21a9ed")  # OP_RETURN, push 36, the BIP141 tag
SIGNATURE_SIZE = 72  # a DER signature with its sighash byte
PUBKEY_SIZE = 33  # compressed


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    return b"\xfe" + n.to_bytes(4, "little")


def merkle_root(hashes: list[bytes]) -> bytes:
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


@dataclass(frozen=True, slots=True)
class Transaction:
    """One serialised transaction with its ids (internal byte order)."""

    data: bytes
    txid: bytes
    wtxid: bytes
    fee: int
    weight: int
    segwit: bool


def _push(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def _output(rng: random.Random) -> bytes:
    amount = rng.randrange(10_000, 50 * COIN).to_bytes(8, "little")
    if rng.random() < 0.6:
        script = b"\x00\x14" + rng.randbytes(20)  # P2WPKH
    else:
        script = b"\x76\xa9\x14" + rng.randbytes(20) + b"\x88\xac"  # P2PKH
    return amount + varint(len(script)) + script


def _signature(rng: random.Random) -> bytes:
    return b"\x30" + rng.randbytes(SIGNATURE_SIZE - 2) + b"\x01"


def _pubkey(rng: random.Random) -> bytes:
    return bytes([rng.choice((2, 3))]) + rng.randbytes(PUBKEY_SIZE - 1)


def transaction(rng: random.Random, segwit: bool) -> Transaction:
    """A spend of one to three outputs into one to three outputs: P2WPKH
    inputs (their signatures in the witness) if ``segwit``, else P2PKH."""
    inputs = rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
    outputs = rng.choices((1, 2, 3), weights=(2, 7, 1))[0]
    vin = bytearray(varint(inputs))
    witness = bytearray()
    for _ in range(inputs):
        vin += rng.randbytes(32) + rng.randrange(4).to_bytes(4, "little")
        if segwit:
            vin += b"\x00"  # empty scriptSig
            witness += b"\x02" + _push(_signature(rng)) + _push(_pubkey(rng))
        else:
            script_sig = _push(_signature(rng)) + _push(_pubkey(rng))
            vin += varint(len(script_sig)) + script_sig
        vin += b"\xfd\xff\xff\xff"  # nSequence: RBF off, locktime on
    vout = varint(outputs) + b"".join(_output(rng) for _ in range(outputs))
    version, locktime = (2).to_bytes(4, "little"), bytes(4)
    stripped = version + bytes(vin) + vout + locktime
    full = version + b"\x00\x01" + bytes(vin) + vout + bytes(witness) + locktime if segwit else stripped
    weight = len(stripped) * 3 + len(full)
    fee = (weight + 3) // 4 * rng.randrange(10, 200)  # 10-200 litoshi per virtual byte
    return Transaction(full, sha256d(stripped), sha256d(full), fee, weight, segwit)


def witness_commitment(transactions: list[Transaction]) -> bytes:
    """The coinbase output script BIP141 asks for these transactions (the
    coinbase's own witness hash counts as zero)."""
    root = merkle_root([bytes(32)] + [tx.wtxid for tx in transactions])
    return COMMITMENT_HEADER + sha256d(root + WITNESS_RESERVED_VALUE)


def template_reply(
    rng: random.Random,
    height: int,
    previous_block_hash: str,
    curtime: int,
    transactions: int = 200,
    segwit_share: float = 0.6,
    bits: str = "1b00ffff",
) -> dict[str, Any]:
    """A ``getblocktemplate`` reply as litecoind 0.21 gives it (before MWEB)
    with ``transactions`` fresh transactions, about ``segwit_share`` of them
    spending segwit outputs."""
    txs = [transaction(rng, rng.random() < segwit_share) for _ in range(transactions)]
    return {
        "capabilities": ["proposal"],
        "version": 536870912,
        "rules": ["csv", "!segwit", "taproot"],
        "vbavailable": {},
        "vbrequired": 0,
        "previousblockhash": previous_block_hash,
        "transactions": [
            {
                "data": tx.data.hex(),
                "txid": tx.txid[::-1].hex(),
                "hash": tx.wtxid[::-1].hex(),
                "depends": [],
                "fee": tx.fee,
                "sigops": 4,
                "weight": tx.weight,
            }
            for tx in txs
        ],
        "coinbaseaux": {},
        "coinbasevalue": SUBSIDY + sum(tx.fee for tx in txs),
        "longpollid": f"{previous_block_hash}{height}",
        "mintime": curtime - 600,
        "mutable": ["time", "transactions", "prevblock"],
        "noncerange": "00000000ffffffff",
        "sigoplimit": 80000,
        "sizelimit": 4000000,
        "weightlimit": 4000000,
        "curtime": curtime,
        "bits": bits,
        "height": height,
        "default_witness_commitment": witness_commitment(txs).hex(),
    }
