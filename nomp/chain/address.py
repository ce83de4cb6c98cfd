"""Addresses as a coin network defines them: base58check (P2PKH, P2SH)
and bech32/bech32m (BIP173, BIP350) segwit addresses, decoded to the
scriptPubKey they pay to. Used to check miners' usernames without asking
the daemon for each one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nomp.config import NetworkConfig

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {c: i for i, c in enumerate(_BASE58)}
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {c: i for i, c in enumerate(_BECH32)}
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
MAX_ADDRESS_LENGTH = 90  # BIP173's limit; base58 addresses are shorter


class AddressError(ValueError):
    """Not an address of this network; the message says why."""


@dataclass(frozen=True, slots=True)
class Address:
    """A decoded address."""

    text: str
    kind: str  # p2pkh, p2sh, witness_v0_keyhash, witness_v0_scripthash, witness_v1_taproot, witness_unknown
    script: bytes


def decode_address(text: str, network: NetworkConfig) -> Address:
    """The address ``text`` on ``network``, or AddressError."""
    if not text or len(text) > MAX_ADDRESS_LENGTH or not text.isascii():
        raise AddressError("not an address")
    hrp = text.rsplit("1", 1)[0].lower() if "1" in text else ""
    if network.mweb_hrp and hrp == network.mweb_hrp:
        raise AddressError("MWEB addresses cannot be paid from a coinbase")
    if network.bech32_hrp and hrp == network.bech32_hrp:
        return _decode_segwit(text, network.bech32_hrp)
    data = text.lower().rsplit("1", 1)[-1]
    single_case = text in (text.lower(), text.upper())  # bech32 never mixes cases; base58 mostly does
    if hrp and single_case and len(data) >= 7 and all(c in _BECH32_INDEX for c in data):
        raise AddressError(f"prefix {hrp!r} is not this network's ({network.bech32_hrp!r})")
    return _decode_base58(text, network)


def _decode_base58(text: str, network: NetworkConfig) -> Address:
    number = 0
    for char in text:
        digit = _BASE58_INDEX.get(char)
        if digit is None:
            raise AddressError(f"invalid character {char!r}")
        number = number * 58 + digit
    leading_zeros = len(text) - len(text.lstrip("1"))
    raw = bytes(leading_zeros) + number.to_bytes((number.bit_length() + 7) // 8, "big")
    if len(raw) != 25:
        raise AddressError("wrong length")
    payload, checksum = raw[:-4], raw[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != checksum:
        raise AddressError("bad checksum")
    version, hash160 = payload[0], payload[1:]
    if version == network.pubkey_address_prefix:
        return Address(text, "p2pkh", b"\x76\xa9\x14" + hash160 + b"\x88\xac")
    if version in network.script_address_prefixes:
        return Address(text, "p2sh", b"\xa9\x14" + hash160 + b"\x87")
    raise AddressError(f"version byte {version} is not this network's")


def _polymod(values: list[int]) -> int:
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            if (top >> i) & 1:
                check ^= _GENERATOR[i]
    return check


def _decode_segwit(text: str, hrp: str) -> Address:
    if text != text.lower() and text != text.upper():
        raise AddressError("mixed case")
    text = text.lower()
    separator = text.rfind("1")
    data = []
    for char in text[separator + 1 :]:
        value = _BECH32_INDEX.get(char)
        if value is None:
            raise AddressError(f"invalid character {char!r}")
        data.append(value)
    if len(data) < 7:
        raise AddressError("too short")
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    constant = _polymod(expanded + data)
    version = data[0]
    if constant != (_BECH32_CONST if version == 0 else _BECH32M_CONST):
        raise AddressError("bad checksum")
    program = _regroup(data[1:-6])
    if version > 16 or not 2 <= len(program) <= 40:
        raise AddressError("bad witness program")
    if version == 0 and len(program) not in (20, 32):
        raise AddressError("bad witness program length")
    if version == 0:
        kind = "witness_v0_keyhash" if len(program) == 20 else "witness_v0_scripthash"
    elif version == 1 and len(program) == 32:
        kind = "witness_v1_taproot"
    else:
        kind = "witness_unknown"
    opcode = 0 if version == 0 else 0x50 + version
    return Address(text, kind, bytes([opcode, len(program)]) + program)


def _regroup(five_bit: list[int]) -> bytes:
    """5-bit groups to bytes; leftover padding must be zero and under 5 bits."""
    accumulator = bits = 0
    out = bytearray()
    for value in five_bit:
        accumulator = (accumulator << 5) | value
        bits += 5
        while bits >= 8:
            bits -= 8
            out.append((accumulator >> bits) & 0xFF)
    if bits >= 5 or (accumulator << (8 - bits)) & 0xFF:
        raise AddressError("bad padding")
    return bytes(out)


def address_of(script: bytes, network: NetworkConfig) -> str:
    """The address on ``network`` that pays ``script`` (decode_address's
    inverse), or AddressError for a script the network has no address for."""
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return _encode_base58(bytes([network.pubkey_address_prefix]) + script[3:23])
    if len(script) == 23 and script[:2] == b"\xa9\x14" and script[22:] == b"\x87":
        return _encode_base58(bytes([network.script_address_prefixes[0]]) + script[2:22])
    opcode = script[0] if script else -1
    if (opcode == 0 or 0x51 <= opcode <= 0x60) and len(script) >= 2 and script[1] == len(script) - 2:
        if network.bech32_hrp is None:
            raise AddressError(f"chain {network.chain} has no segwit (bech32) addresses")
        return _encode_segwit(network.bech32_hrp, 0 if opcode == 0 else opcode - 0x50, script[2:])
    raise AddressError(f"no address pays script {script.hex()}")


def _encode_base58(payload: bytes) -> str:
    raw = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(raw, "big")
    digits = []
    while number:
        number, digit = divmod(number, 58)
        digits.append(_BASE58[digit])
    leading_zeros = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * leading_zeros + "".join(reversed(digits))


def _encode_segwit(hrp: str, version: int, program: bytes) -> str:
    data = [version, *_to_five_bits(program)]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    constant = _BECH32_CONST if version == 0 else _BECH32M_CONST
    checksum = _polymod(expanded + data + [0] * 6) ^ constant
    data += [(checksum >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32[value] for value in data)


def _to_five_bits(data: bytes) -> list[int]:
    accumulator = bits = 0
    out = []
    for byte in data:
        accumulator = (accumulator << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append((accumulator >> bits) & 31)
    if bits:
        out.append((accumulator << (5 - bits)) & 31)
    return out
