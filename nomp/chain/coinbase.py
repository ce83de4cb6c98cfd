"""The coinbase transaction: reward split, scriptSig with BIP34 height and
the extranonce slot, and the two halves Stratum sends around it."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from nomp.chain.encoding import push_data, push_number, varint
from nomp.chain.template import BlockTemplate

# Consensus bounds on the coinbase scriptSig (bad-cb-length).
MIN_SCRIPT_SIG = 2
MAX_SCRIPT_SIG = 100
SEQUENCE_FINAL = b"\xff\xff\xff\xff"
WITNESS_RESERVED_VALUE = bytes(32)


@dataclass(frozen=True, slots=True)
class Recipient:
    """A share of every block reward paid in the coinbase (a pool fee, say)."""

    script: bytes
    fraction: Fraction  # of the coinbase value, 0 < fraction < 1
    label: str = ""


@dataclass(frozen=True, slots=True)
class PayoutPlan:
    """Where a coinbase pays: the pool's script and the fixed recipients."""

    pool_script: bytes
    recipients: tuple[Recipient, ...] = ()

    def split(self, coinbase_value: int) -> list[tuple[bytes, int]]:
        """(script, satoshis) per output, the pool first; they add up to
        ``coinbase_value`` exactly, the rounding remainder going to the pool.
        Recipients whose share rounds to nothing get no output."""
        paid = [(r.script, int(coinbase_value * r.fraction)) for r in self.recipients]
        paid = [(script, amount) for script, amount in paid if amount > 0]
        pool = coinbase_value - sum(amount for _, amount in paid)
        if pool < 0:
            raise ValueError("recipients take more than the whole reward")
        return [(self.pool_script, pool), *paid]


@dataclass(frozen=True, slots=True)
class CoinbaseLayout:
    """Per-pool choices in the coinbase."""

    tx_version: int = 2
    signature: bytes = b"/nomp/"
    extranonce1_size: int = 4
    extranonce2_size: int = 4

    @property
    def extranonce_size(self) -> int:
        """Bytes of extranonce1 + extranonce2."""
        return self.extranonce1_size + self.extranonce2_size


@dataclass(frozen=True, slots=True)
class Coinbase:
    """A coinbase split around its extranonce.

    ``coinb1 + extranonce + coinb2`` is the transaction without witness
    data: what its txid and the merkle root are computed from.
    """

    coinb1: bytes
    coinb2: bytes
    outputs: tuple[tuple[bytes, int], ...]
    witness: bool  # the block carries the witness reserved value

    def serialize(self, extranonce: bytes) -> bytes:
        """The transaction as hashed for its txid."""
        return self.coinb1 + extranonce + self.coinb2

    def serialize_for_block(self, extranonce: bytes) -> bytes:
        """The transaction as it goes into the block.

        With a witness commitment in the outputs, BIP141 requires the
        coinbase to carry the 32-byte witness reserved value.
        """
        if not self.witness:
            return self.serialize(extranonce)
        version, rest = self.coinb1[:4], self.coinb1[4:]
        body, locktime = self.coinb2[:-4], self.coinb2[-4:]
        witness = b"\x01" + push_data(WITNESS_RESERVED_VALUE)
        return version + b"\x00\x01" + rest + extranonce + body + witness + locktime


def build_coinbase(template: BlockTemplate, plan: PayoutPlan, layout: CoinbaseLayout) -> Coinbase:
    """The coinbase for a template."""
    height = push_number(template.height)
    extranonce_push = bytes([layout.extranonce_size])
    signature = push_data(layout.signature) if layout.signature else b""
    script_sig_size = len(height) + 1 + layout.extranonce_size + len(signature)
    if not MIN_SCRIPT_SIG <= script_sig_size <= MAX_SCRIPT_SIG:
        raise ValueError(f"coinbase scriptSig of {script_sig_size} bytes")

    outputs = plan.split(template.coinbase_value)
    if template.witness_commitment is not None:
        outputs.append((template.witness_commitment, 0))
    serialized_outputs = varint(len(outputs)) + b"".join(
        amount.to_bytes(8, "little") + varint(len(script)) + script for script, amount in outputs
    )

    coinb1 = (
        layout.tx_version.to_bytes(4, "little")
        + b"\x01"  # one input
        + bytes(32)
        + b"\xff\xff\xff\xff"  # the null prevout
        + varint(script_sig_size)
        + height
        + extranonce_push
    )
    coinb2 = signature + SEQUENCE_FINAL + serialized_outputs + bytes(4)  # locktime 0
    return Coinbase(coinb1, coinb2, tuple(outputs), template.witness_commitment is not None)
