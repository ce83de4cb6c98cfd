"""The Bitcoin P2P wire format, as far as a block listener needs it: pure functions.

A message is a 24-byte header (the network's 4-byte magic, a 12-byte
NUL-padded ASCII command, the payload's length as uint32 LE, and the first
4 bytes of sha256d(payload)) and the payload. Integers are little-endian;
counts and string lengths are CompactSize ("varint") numbers, which must be
in their shortest form. Hashes travel in internal byte order, the reverse
of the hex that RPC shows: ``display_hash`` and ``wire_hash`` convert.

Everything that does not decode raises WireError with what was wrong.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

HEADER_SIZE = 24
COMMAND_SIZE = 12
MAGIC_SIZE = 4
CHECKSUM_SIZE = 4
# The largest payload accepted, as Bitcoin Core's MAX_PROTOCOL_MESSAGE_LENGTH:
# the listener asks for no blocks, so nothing it is sent comes near it.
MAX_PAYLOAD = 4_000_000
MAX_INV_ITEMS = 50_000  # Core's MAX_INV_SZ
MAX_HEADERS = 2_000  # Core's MAX_HEADERS_RESULTS
MAX_USER_AGENT = 256  # bytes; Core's MAX_SUBVERSION_LENGTH
BLOCK_HEADER_SIZE = 80
NET_ADDRESS_SIZE = 26  # services, IPv6 (or IPv4-mapped) address, port: a version's addresses

# Inventory types. A witness or MWEB flag on MSG_BLOCK still names a block.
MSG_TX = 1
MSG_BLOCK = 2
MSG_WITNESS_FLAG = 1 << 30
MSG_MWEB_FLAG = 1 << 29  # Litecoin
MSG_WITNESS_BLOCK = MSG_BLOCK | MSG_WITNESS_FLAG

_UINT32 = struct.Struct("<I")
_VERSION_HEAD = struct.Struct("<iQq")  # version, services, timestamp
_INV_ITEM = struct.Struct("<I32s")


class WireError(ValueError):
    """Bytes that are not a valid message; the text says what is wrong."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One message as framed: its command and its (checksummed) payload."""

    command: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Version:
    """A ``version`` message: the first thing each side sends."""

    version: int  # the protocol version
    services: int
    timestamp: int  # Unix seconds
    nonce: int  # tells a connection to oneself apart
    user_agent: str
    start_height: int
    relay: bool  # BIP37: whether the sender wants transaction announcements


@dataclass(frozen=True, slots=True)
class InvItem:
    kind: int
    hash: bytes  # 32 bytes, wire order

    @property
    def is_block(self) -> bool:
        return self.kind & ~(MSG_WITNESS_FLAG | MSG_MWEB_FLAG) == MSG_BLOCK


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def checksum(payload: bytes) -> bytes:
    return sha256d(payload)[:CHECKSUM_SIZE]


def display_hash(wire: bytes) -> str:
    """A hash in wire order as RPC shows it (reversed, lower-case hex)."""
    return wire[::-1].hex()


def wire_hash(display: str) -> bytes:
    """RPC's hex of a hash in wire order."""
    raw = bytes.fromhex(display)
    if len(raw) != 32:
        raise ValueError(f"a hash is 32 bytes, got {len(raw)}")
    return raw[::-1]


def header_hash(header: bytes) -> str:
    """The block hash (sha256d of the 80-byte header) as RPC shows it."""
    return display_hash(sha256d(header[:BLOCK_HEADER_SIZE]))


# CompactSize numbers and strings.
def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"a CompactSize is not negative, got {value}")
    if value < 0xFD:
        return bytes([value])
    if value <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", value)
    if value <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", value)
    if value <= 0xFFFFFFFFFFFFFFFF:
        return b"\xff" + struct.pack("<Q", value)
    raise ValueError(f"a CompactSize is at most 2^64 - 1, got {value}")


_VARINT_FORMS = {0xFD: (2, "<H", 0xFD), 0xFE: (4, "<I", 0x10000), 0xFF: (8, "<Q", 0x100000000)}


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """(value, offset after it); non-shortest forms are refused, as Core refuses them."""
    if offset >= len(data):
        raise WireError("truncated CompactSize")
    first = data[offset]
    if first < 0xFD:
        return first, offset + 1
    size, form, smallest = _VARINT_FORMS[first]
    end = offset + 1 + size
    if end > len(data):
        raise WireError("truncated CompactSize")
    (value,) = struct.unpack_from(form, data, offset + 1)
    if value < smallest:
        raise WireError(f"non-canonical CompactSize: {value} in {1 + size} bytes")
    return value, end


def encode_var_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return encode_varint(len(raw)) + raw


def _take(data: bytes, offset: int, size: int, what: str) -> tuple[bytes, int]:
    end = offset + size
    if end > len(data):
        raise WireError(f"truncated {what}: {len(data) - offset} of {size} bytes")
    return data[offset:end], end


# Frames.
def encode_frame(magic: bytes, command: str, payload: bytes = b"") -> bytes:
    name = command.encode("ascii")
    if len(magic) != MAGIC_SIZE:
        raise ValueError(f"a network magic is {MAGIC_SIZE} bytes, got {len(magic)}")
    if not 0 < len(name) <= COMMAND_SIZE:
        raise ValueError(f"a command is 1 to {COMMAND_SIZE} ASCII characters, got {command!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    return b"".join(
        [magic, name.ljust(COMMAND_SIZE, b"\0"), _UINT32.pack(len(payload)), checksum(payload), payload]
    )


def _command_name(raw: bytes) -> str:
    name, _, padding = raw.partition(b"\0")
    if not name or padding.strip(b"\0") or not all(0x20 <= c <= 0x7E for c in name):
        raise WireError(f"invalid command field {raw!r}")
    return name.decode("ascii")


def decode_frames(
    buffer: bytes | bytearray, magic: bytes, max_payload: int = MAX_PAYLOAD
) -> tuple[list[Frame], int]:
    """The whole messages at the start of ``buffer``, and how many bytes they took.

    An incomplete last message is left for more bytes. A wrong magic, a
    malformed command, a payload over ``max_payload`` (known from the header
    alone) or a bad checksum raises WireError: the stream cannot be trusted
    past it.
    """
    frames: list[Frame] = []
    offset = 0
    while len(buffer) - offset >= HEADER_SIZE:
        found = bytes(buffer[offset : offset + MAGIC_SIZE])
        if found != magic:
            raise WireError(f"wrong network magic {found.hex()} (expected {magic.hex()})")
        command = _command_name(bytes(buffer[offset + 4 : offset + 16]))
        (length,) = _UINT32.unpack_from(buffer, offset + 16)
        if length > max_payload:
            raise WireError(f"{command} payload of {length} bytes is over the limit of {max_payload}")
        end = offset + HEADER_SIZE + length
        if end > len(buffer):
            break
        payload = bytes(buffer[offset + HEADER_SIZE : end])
        expected = buffer[offset + 20 : offset + HEADER_SIZE]
        if checksum(payload) != expected:
            raise WireError(
                f"{command} checksum {expected.hex()} does not match its payload's {checksum(payload).hex()}"
            )
        frames.append(Frame(command, payload))
        offset = end
    return frames, offset


# Payloads.
def _net_address(services: int) -> bytes:
    """A version's address field with no address in it (Core reads and ignores it)."""
    return struct.pack("<Q", services) + bytes(16) + b"\0\0"


def encode_version(message: Version) -> bytes:
    return b"".join(
        [
            _VERSION_HEAD.pack(message.version, message.services, message.timestamp),
            _net_address(0),  # the node's address, as seen from here: not told
            _net_address(message.services),  # ours: none to offer
            struct.pack("<Q", message.nonce),
            encode_var_str(message.user_agent),
            struct.pack("<i", message.start_height),
            b"\x01" if message.relay else b"\x00",
        ]
    )


def decode_version(payload: bytes) -> Version:
    version, services, timestamp = _VERSION_HEAD.unpack_from(
        _take(payload, 0, _VERSION_HEAD.size, "version")[0]
    )
    offset = _VERSION_HEAD.size
    _, offset = _take(payload, offset, 2 * NET_ADDRESS_SIZE, "version addresses")
    raw_nonce, offset = _take(payload, offset, 8, "version nonce")
    length, offset = decode_varint(payload, offset)
    if length > MAX_USER_AGENT:
        raise WireError(f"user agent of {length} bytes is over {MAX_USER_AGENT}")
    raw_agent, offset = _take(payload, offset, length, "user agent")
    raw_height, offset = _take(payload, offset, 4, "start height")
    # Absent: BIP37 says relay. Bytes after it are left to later protocol versions, as Core leaves them.
    relay = offset >= len(payload) or payload[offset] != 0
    return Version(
        version=version,
        services=services,
        timestamp=timestamp,
        nonce=struct.unpack("<Q", raw_nonce)[0],
        user_agent=raw_agent.decode("utf-8", errors="replace"),
        start_height=struct.unpack("<i", raw_height)[0],
        relay=relay,
    )


def decode_nonce(payload: bytes, command: str = "ping") -> int:
    """A ping's or pong's payload: a 64-bit nonce."""
    if len(payload) != 8:
        raise WireError(f"{command} payload is {len(payload)} bytes, not 8")
    return int(struct.unpack("<Q", payload)[0])


def encode_nonce(nonce: int) -> bytes:
    return struct.pack("<Q", nonce)


def decode_inv(payload: bytes) -> list[InvItem]:
    count, offset = decode_varint(payload)
    if count > MAX_INV_ITEMS:
        raise WireError(f"inv of {count} items is over {MAX_INV_ITEMS}")
    if len(payload) - offset != count * _INV_ITEM.size:
        raise WireError(
            f"inv of {count} items needs {count * _INV_ITEM.size} bytes, has {len(payload) - offset}"
        )
    return [InvItem(kind, item_hash) for kind, item_hash in _INV_ITEM.iter_unpack(payload[offset:])]


def encode_inv(items: list[InvItem]) -> bytes:
    return encode_varint(len(items)) + b"".join(_INV_ITEM.pack(item.kind, item.hash) for item in items)


def decode_headers(payload: bytes) -> list[bytes]:
    """A ``headers`` message: the 80-byte headers (each followed on the wire by a transaction count)."""
    count, offset = decode_varint(payload)
    if count > MAX_HEADERS:
        raise WireError(f"headers of {count} entries is over {MAX_HEADERS}")
    headers = []
    for _ in range(count):
        header, offset = _take(payload, offset, BLOCK_HEADER_SIZE, "block header")
        _, offset = decode_varint(payload, offset)  # the transaction count, 0 in headers
        headers.append(header)
    if offset != len(payload):
        raise WireError(f"{len(payload) - offset} bytes after {count} headers")
    return headers


def encode_headers(headers: list[bytes]) -> bytes:
    return encode_varint(len(headers)) + b"".join(header + b"\x00" for header in headers)


def encode_getheaders(version: int, locator: list[bytes], stop: bytes = bytes(32)) -> bytes:
    """Ask for the headers after the first of ``locator`` (wire-order hashes) the node knows."""
    return struct.pack("<I", version) + encode_varint(len(locator)) + b"".join(locator) + stop
