"""The payer's two kinds of transaction, encoded and signed here: a plain value transfer
as a legacy transaction with EIP-155 replay protection, or as an EIP-1559 (type 2) one.

eth-account signs the same transactions byte for byte (the tests hold this module to
it over many random transfers), and ethsigner falls back on it where coincurve is
missing; but its general machinery (a transaction model built and checked for any
kind of transaction, then RLP objects, then the signature recovered again through
eth-keys' objects) costs about a millisecond a transfer, most of the payer's time at
ten thousand payouts. What is here is only these two fixed shapes:

- RLP (the yellow paper's appendix B) of a flat list of byte strings, the empty
  access list of a type-2 transfer being the one nested item: a few lines, where
  the ``rlp`` package's general encoder, inferring a serializer for each item,
  costs more than the signature;
- Keccak-256 from nomp's own C code (nomp.hashing.ethash, the one that checks ethash
  shares): one C call, where eth-hash passes through layers of Python to pycryptodome's;
- the signature from libsecp256k1 through coincurve, recoverable and in low-s form
  (EIP-2) as libsecp256k1 always makes it, with its recovery id as v (EIP-155) or
  y-parity (EIP-1559).

Inputs are taken as checked (ethsigner.sign_transfer checks them): integers already
in range, the recipient as its 20 bytes. Nothing here holds or shows the key: the
caller passes its coincurve PrivateKey.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Protocol

from nomp.hashing.ethash import keccak_256 as keccak

TYPE_2 = b"\x02"  # EIP-2718's type byte of an EIP-1559 transaction
_EMPTY_LIST = b"\xc0"  # RLP of [], the access list of a plain transfer


class RecoverableSigner(Protocol):
    """What is needed of coincurve's PrivateKey."""

    def sign_recoverable(self, message: bytes, hasher: None = None) -> bytes: ...


class SignedTx(NamedTuple):
    """A signed transfer: its raw bytes and hash, and what was signed (the digest) with
    the 65-byte recoverable signature (r, s, recovery id), to recover its sender from."""

    raw: bytes
    tx_hash: bytes
    digest: bytes
    signature: bytes


def rlp_length(length: int, offset: int) -> bytes:
    """RLP's prefix of a byte string (offset 0x80) or a list (0xc0) whose payload is
    ``length`` bytes."""
    if length < 56:
        return bytes((offset + length,))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(size),)) + size


def rlp_bytes(item: bytes) -> bytes:
    """RLP of a byte string: a single byte below 0x80 is itself."""
    if len(item) == 1 and item[0] < 0x80:
        return item
    return rlp_length(len(item), 0x80) + item


def rlp_list(encoded: bytes) -> bytes:
    """RLP of a list, from its items' RLP joined."""
    return rlp_length(len(encoded), 0xC0) + encoded


def quantity(value: int) -> bytes:
    """An integer as RLP carries it: big-endian, no leading zero bytes, 0 empty."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _int(value: int) -> bytes:
    """RLP of an integer (``rlp_bytes(quantity(value))``)."""
    if value < 0x80:
        return bytes((value,)) if value else b"\x80"
    data = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return rlp_length(len(data), 0x80) + data


# A run signs every payout at one price and on one chain: the fields those fix are
# encoded once.
@functools.lru_cache(maxsize=64)
def _ints(*values: int) -> bytes:
    return b"".join([_int(v) for v in values])


def _signature(signer: RecoverableSigner, digest: bytes) -> tuple[bytes, int]:
    """The 64 bytes r || s and the recovery id (0 or 1) of ``digest``'s signature."""
    signature = signer.sign_recoverable(digest, hasher=None)
    recovery = signature[64]
    if recovery > 1:
        # Only when r overflowed the curve order (odds of about 2^-127): neither
        # EIP-155's v nor EIP-1559's y-parity can carry it.
        raise ValueError(f"recovery id {recovery} cannot be carried by a transaction")
    return signature[:64], recovery


def legacy_transfer(
    signer: RecoverableSigner,
    chain_id: int,
    nonce: int,
    gas_price: int,
    gas: int,
    to: bytes,
    value: int,
) -> SignedTx:
    """A legacy transfer with EIP-155 replay protection: the digest signed is that of
    [nonce, gas price, gas, to, value, data, chain id, 0, 0], v is 35 + 2 chain id + the
    recovery id."""
    head = _int(nonce) + _ints(gas_price, gas) + rlp_bytes(to) + _int(value) + b"\x80"
    digest = keccak(rlp_list(head + _ints(chain_id) + b"\x80\x80"))
    rs, recovery = _signature(signer, digest)
    v = chain_id * 2 + 35 + recovery
    raw = rlp_list(head + _int(v) + rlp_bytes(rs[:32].lstrip(b"\0")) + rlp_bytes(rs[32:].lstrip(b"\0")))
    return SignedTx(raw, keccak(raw), digest, rs + bytes((recovery,)))


def dynamic_transfer(
    signer: RecoverableSigner,
    chain_id: int,
    nonce: int,
    max_priority_fee: int,
    max_fee: int,
    gas: int,
    to: bytes,
    value: int,
) -> SignedTx:
    """An EIP-1559 transfer: the digest signed is that of 0x02 then [chain id, nonce, max
    priority fee, max fee, gas, to, value, data, access list]; the signature's y-parity,
    r and s follow in the transaction."""
    head = (
        _ints(chain_id)
        + _int(nonce)
        + _ints(max_priority_fee, max_fee, gas)
        + rlp_bytes(to)
        + _int(value)
        + b"\x80"
        + _EMPTY_LIST
    )
    digest = keccak(TYPE_2 + rlp_list(head))
    rs, recovery = _signature(signer, digest)
    signed = head + _int(recovery) + rlp_bytes(rs[:32].lstrip(b"\0")) + rlp_bytes(rs[32:].lstrip(b"\0"))
    raw = TYPE_2 + rlp_list(signed)
    return SignedTx(raw, keccak(raw), digest, rs + bytes((recovery,)))
