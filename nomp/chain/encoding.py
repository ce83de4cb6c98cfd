"""Bitcoin serialisation helpers."""

from __future__ import annotations

from nomp.hashing import sha256d

OP_0 = 0x00
OP_PUSHDATA1 = 0x4C
OP_1NEGATE = 0x4F
OP_1 = 0x51


def varint(n: int) -> bytes:
    """CompactSize encoding of a count."""
    if n < 0:
        raise ValueError("varint of a negative number")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def script_number(n: int) -> bytes:
    """The minimal little-endian sign-magnitude encoding of a CScriptNum."""
    if n == 0:
        return b""
    magnitude = abs(n)
    out = bytearray()
    while magnitude:
        out.append(magnitude & 0xFF)
        magnitude >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if n < 0 else 0x00)
    elif n < 0:
        out[-1] |= 0x80
    return bytes(out)


def push_data(data: bytes) -> bytes:
    """The shortest script push of ``data`` (up to 255 bytes)."""
    if len(data) < OP_PUSHDATA1:
        return bytes([len(data)]) + data
    if len(data) <= 0xFF:
        return bytes([OP_PUSHDATA1, len(data)]) + data
    raise ValueError("push_data supports at most 255 bytes")


def push_number(n: int) -> bytes:
    """A number pushed the way Bitcoin Core's CScript << int64 does it.

    BIP34 heights 1..16 become OP_1..OP_16, larger ones a minimal push.
    """
    if n == -1 or 1 <= n <= 16:
        return bytes([OP_1 + n - 1]) if n > 0 else bytes([OP_1NEGATE])
    if n == 0:
        return bytes([OP_0])
    return push_data(script_number(n))


def hash_to_internal(display_hex: str) -> bytes:
    """A hash as RPC shows it (big-endian hex) in the byte order blocks use."""
    return bytes.fromhex(display_hex)[::-1]


def internal_to_display(raw: bytes) -> str:
    """The reverse of hash_to_internal."""
    return raw[::-1].hex()


def block_hash(header: bytes) -> str:
    """The block id of an 80-byte header, as RPC shows it."""
    return internal_to_display(sha256d(header))


def txid(serialized: bytes) -> str:
    """The txid of a transaction serialised without witness data."""
    return internal_to_display(sha256d(serialized))


def bits_to_target(bits: int) -> int:
    """Expand compact nBits into a target."""
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))
