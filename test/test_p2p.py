"""P2P block notify: the wire format, the session, the protocol, and the notifier
against scripted peers and against a real litecoind regtest node."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp.chain.jobs import Job, JobRegistry
from nomp.config import load_config
from nomp.config.model import P2PConfig
from nomp.p2p.protocol import NodeProtocol
from nomp.p2p.service import USER_AGENT, P2PNotifier, p2p_notifier
from nomp.p2p.session import PROTOCOL_VERSION, Session
from nomp.p2p.wire import (
    MAX_HEADERS,
    MAX_INV_ITEMS,
    MAX_PAYLOAD,
    MSG_BLOCK,
    MSG_MWEB_FLAG,
    MSG_TX,
    MSG_WITNESS_BLOCK,
    Frame,
    InvItem,
    Version,
    WireError,
    checksum,
    decode_frames,
    decode_headers,
    decode_inv,
    decode_nonce,
    decode_varint,
    decode_version,
    display_hash,
    encode_frame,
    encode_getheaders,
    encode_headers,
    encode_inv,
    encode_nonce,
    encode_varint,
    encode_version,
    header_hash,
    wire_hash,
)
from nomp.pool.service import PoolService
from nomp.tap import build_service
from test.fakes import FakeBlockRecords
from test.poolconf import write_conf
from test.servers import RegtestPair, free_port, shared_regtest
from test.test_pool_service import pool_for
from test.waiting import until

REGTEST = bytes.fromhex("fabfb5da")
LITECOIN_MAIN = bytes.fromhex("fbc0b6db")
DEMO_ADDRESS = "rltc1qey3dpjf7avevcavv6uk33juxyyyyndgfuc2s2l"  # the shipped demo pool's
# Bitcoin's genesis block header and hash: a vector every implementation shares.
GENESIS_HEADER = bytes.fromhex(
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e"
    "67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
)
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
TIP = "11" * 32
NODE = Version(
    version=70016,
    services=1,
    timestamp=1_700_000_000,
    nonce=42,
    user_agent="/LitecoinCore:0.21.2.1/",
    start_height=7,
    relay=True,
)
HELLO = Version(
    version=PROTOCOL_VERSION,
    services=0,
    timestamp=1_700_000_001,
    nonce=7,
    user_agent="/nomp:test/",
    start_height=0,
    relay=False,
)


def block_hash(n: int) -> bytes:
    """A distinct 32-byte hash in wire order."""
    return bytes([n]) * 32


# The wire format.
class VarintTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """Each size class at its edges, in its shortest form."""
        cases = {
            0: "00",
            0xFC: "fc",
            0xFD: "fdfd00",
            0xFFFF: "fdffff",
            0x10000: "fe00000100",
            0xFFFFFFFF: "feffffffff",
            0x100000000: "ff0000000001000000",
            2**64 - 1: "ffffffffffffffffff",
        }
        for value, encoded in cases.items():
            self.assertEqual(encode_varint(value).hex(), encoded)
            self.assertEqual(decode_varint(bytes.fromhex(encoded)), (value, len(encoded) // 2))

    def test_offset(self) -> None:
        self.assertEqual(decode_varint(b"\xaa\xfd\x00\x01\xbb", 1), (0x100, 4))

    def test_non_canonical_refused(self) -> None:
        """A number in more bytes than it needs is refused, as Core refuses it."""
        for encoded in ("fdfc00", "feffff0000", "ffffffffff00000000", "fd0000"):
            with self.assertRaisesRegex(WireError, "non-canonical CompactSize"):
                decode_varint(bytes.fromhex(encoded))

    def test_truncated_refused(self) -> None:
        for encoded in ("", "fd", "fd00", "fe000001", "ff00000000000001"):
            with self.assertRaisesRegex(WireError, "truncated CompactSize"):
                decode_varint(bytes.fromhex(encoded))

    def test_encode_out_of_range(self) -> None:
        for value in (-1, 2**64):
            with self.assertRaises(ValueError):
                encode_varint(value)


class FrameTests(SynchronousTestCase):
    def test_verack_bytes(self) -> None:
        """An empty message, byte for byte: mainnet Bitcoin's verack, checksum of nothing 5df6e0e2."""
        self.assertEqual(
            encode_frame(bytes.fromhex("f9beb4d9"), "verack").hex(),
            "f9beb4d9" + "76657261636b000000000000" + "00000000" + "5df6e0e2",
        )
        self.assertEqual(checksum(b"").hex(), "5df6e0e2")

    def test_round_trip_and_partial(self) -> None:
        """Whole messages are taken, a partial one is left for more bytes."""
        first = encode_frame(REGTEST, "ping", encode_nonce(5))
        second = encode_frame(REGTEST, "verack")
        third = encode_frame(REGTEST, "inv", encode_inv([InvItem(MSG_BLOCK, block_hash(1))]))
        stream = first + second + third
        for cut in range(len(stream) + 1):
            frames, used = decode_frames(stream[:cut], REGTEST)
            complete = [end for end in (len(first), len(first + second), len(stream)) if end <= cut]
            self.assertEqual(used, complete[-1] if complete else 0)
            self.assertEqual(len(frames), len(complete))
        frames, used = decode_frames(stream, REGTEST)
        self.assertEqual(
            frames,
            [
                Frame("ping", encode_nonce(5)),
                Frame("verack", b""),
                Frame("inv", encode_inv([InvItem(MSG_BLOCK, block_hash(1))])),
            ],
        )
        self.assertEqual(used, len(stream))

    def test_bytearray(self) -> None:
        frames, _ = decode_frames(bytearray(encode_frame(REGTEST, "pong", encode_nonce(1))), REGTEST)
        self.assertEqual(frames, [Frame("pong", encode_nonce(1))])
        self.assertIsInstance(frames[0].payload, bytes)

    def test_wrong_magic(self) -> None:
        """Another network's message is refused as soon as its header is in."""
        message = encode_frame(LITECOIN_MAIN, "version", b"x" * 100)
        with self.assertRaisesRegex(WireError, "wrong network magic fbc0b6db \\(expected fabfb5da\\)"):
            decode_frames(message[:24], REGTEST)
        # After a good message too: nothing past it is trusted.
        with self.assertRaisesRegex(WireError, "wrong network magic"):
            decode_frames(encode_frame(REGTEST, "verack") + message, REGTEST)

    def test_bad_checksum(self) -> None:
        message = bytearray(encode_frame(REGTEST, "ping", encode_nonce(9)))
        message[-1] ^= 1
        with self.assertRaisesRegex(WireError, "ping checksum [0-9a-f]{8} does not match its payload's"):
            decode_frames(bytes(message), REGTEST)

    def test_oversized_payload(self) -> None:
        """A length over the limit is refused from the header alone, before any payload."""
        header = REGTEST + b"inv".ljust(12, b"\0") + struct.pack("<I", MAX_PAYLOAD + 1) + bytes(4)
        with self.assertRaisesRegex(WireError, f"inv payload of {MAX_PAYLOAD + 1} bytes is over the limit"):
            decode_frames(header, REGTEST)
        small = encode_frame(REGTEST, "ping", encode_nonce(1))
        self.assertEqual(len(decode_frames(small, REGTEST, max_payload=8)[0]), 1)
        with self.assertRaisesRegex(WireError, "over the limit of 7"):
            decode_frames(small, REGTEST, max_payload=7)

    def test_malformed_command(self) -> None:
        """The command is printable ASCII, then NULs only."""
        for raw in (
            bytes(12),
            b"ver\0ack\0\0\0\0\0",
            b"ping\x01".ljust(12, b"\0"),
            b"\xffping".ljust(12, b"\0"),
        ):
            message = REGTEST + raw + struct.pack("<I", 0) + checksum(b"")
            with self.assertRaisesRegex(WireError, "invalid command field"):
                decode_frames(message, REGTEST)
        # All twelve characters used, no NUL: valid.
        full = encode_frame(REGTEST, "abcdefghijkl")
        self.assertEqual(decode_frames(full, REGTEST)[0], [Frame("abcdefghijkl", b"")])

    def test_encode_refuses(self) -> None:
        with self.assertRaises(ValueError):
            encode_frame(b"\xfa\xbf", "ping")
        with self.assertRaises(ValueError):
            encode_frame(REGTEST, "")
        with self.assertRaises(ValueError):
            encode_frame(REGTEST, "thirteenchars")
        with self.assertRaises(ValueError):
            encode_frame(REGTEST, "pïng")
        with self.assertRaises(ValueError):
            encode_frame(REGTEST, "inv", bytes(MAX_PAYLOAD + 1))


class PayloadTests(SynchronousTestCase):
    def test_hashes(self) -> None:
        """Wire order is RPC's hex reversed."""
        self.assertEqual(header_hash(GENESIS_HEADER), GENESIS_HASH)
        self.assertEqual(wire_hash(GENESIS_HASH), bytes.fromhex(GENESIS_HASH)[::-1])
        self.assertEqual(display_hash(wire_hash(GENESIS_HASH)), GENESIS_HASH)
        with self.assertRaises(ValueError):
            wire_hash("abcd")

    def test_version_layout(self) -> None:
        """Our version, field by field."""
        payload = encode_version(HELLO)
        agent = b"/nomp:test/"
        self.assertEqual(len(payload), 4 + 8 + 8 + 26 + 26 + 8 + 1 + len(agent) + 4 + 1)
        self.assertEqual(struct.unpack_from("<iQq", payload), (PROTOCOL_VERSION, 0, 1_700_000_001))
        self.assertEqual(payload[20:72], bytes(52))  # two addresses, services 0, no address, port 0
        self.assertEqual(struct.unpack_from("<Q", payload, 72), (7,))
        self.assertEqual(payload[80 : 81 + len(agent)], bytes([len(agent)]) + agent)
        self.assertEqual(payload[-5:], bytes(4) + b"\x00")  # start height 0, relay off

    def test_version_round_trip(self) -> None:
        for message in (HELLO, NODE):
            self.assertEqual(decode_version(encode_version(message)), message)

    def test_version_without_relay(self) -> None:
        """A version without BIP37's relay byte means relay; bytes past it are for later versions."""
        payload = encode_version(NODE)
        self.assertTrue(decode_version(payload[:-1]).relay)
        self.assertEqual(decode_version(payload + b"\x01later"), NODE)

    def test_version_truncated(self) -> None:
        """Cut anywhere before the relay byte, a version is refused."""
        payload = encode_version(NODE)
        for cut in range(len(payload) - 1):
            with self.assertRaises(WireError):
                decode_version(payload[:cut])

    def test_version_user_agent_too_long(self) -> None:
        payload = encode_version(
            Version(70016, 1, 0, 1, "x" * 257, 0, True)  # Core's limit is 256 bytes
        )
        with self.assertRaisesRegex(WireError, "user agent of 257 bytes is over 256"):
            decode_version(payload)
        self.assertEqual(decode_version(encode_version(Version(70016, 1, 0, 1, "x" * 256, 0, True))).nonce, 1)

    def test_inv(self) -> None:
        """Blocks with or without the witness or MWEB flag are blocks; transactions are not."""
        items = [
            InvItem(MSG_TX, block_hash(1)),
            InvItem(MSG_BLOCK, block_hash(2)),
            InvItem(MSG_WITNESS_BLOCK, block_hash(3)),
            InvItem(MSG_WITNESS_BLOCK | MSG_MWEB_FLAG, block_hash(4)),
            InvItem(MSG_TX | MSG_WITNESS_BLOCK, block_hash(5)),  # witness tx: 0x40000001
            InvItem(4, block_hash(6)),  # a compact block is not announced by inv
        ]
        decoded = decode_inv(encode_inv(items))
        self.assertEqual(decoded, items)
        self.assertEqual([item.is_block for item in decoded], [False, True, True, True, False, False])
        self.assertEqual(decode_inv(b"\x00"), [])

    def test_inv_refused(self) -> None:
        one = encode_inv([InvItem(MSG_BLOCK, block_hash(1))])
        with self.assertRaisesRegex(WireError, "inv of 1 items needs 36 bytes, has 35"):
            decode_inv(one[:-1])
        with self.assertRaisesRegex(WireError, "inv of 1 items needs 36 bytes, has 37"):
            decode_inv(one + b"\x00")
        with self.assertRaisesRegex(WireError, f"inv of {MAX_INV_ITEMS + 1} items is over {MAX_INV_ITEMS}"):
            decode_inv(encode_varint(MAX_INV_ITEMS + 1))
        with self.assertRaisesRegex(WireError, "truncated CompactSize"):
            decode_inv(b"")
        with self.assertRaisesRegex(WireError, "non-canonical"):
            decode_inv(b"\xfd\x01\x00" + one[1:])

    def test_headers(self) -> None:
        second = GENESIS_HEADER[:4] + wire_hash(GENESIS_HASH) + GENESIS_HEADER[36:]
        payload = encode_headers([GENESIS_HEADER, second])
        self.assertEqual(len(payload), 1 + 2 * 81)
        self.assertEqual(decode_headers(payload), [GENESIS_HEADER, second])
        self.assertEqual(decode_headers(b"\x00"), [])

    def test_headers_refused(self) -> None:
        payload = encode_headers([GENESIS_HEADER])
        with self.assertRaisesRegex(WireError, "truncated block header: 79 of 80 bytes"):
            decode_headers(payload[:-2])
        with self.assertRaisesRegex(WireError, "truncated CompactSize"):
            decode_headers(payload[:-1])  # the transaction count is missing
        with self.assertRaisesRegex(WireError, "1 bytes after 1 headers"):
            decode_headers(payload + b"\x00")
        with self.assertRaisesRegex(WireError, f"headers of {MAX_HEADERS + 1} entries is over {MAX_HEADERS}"):
            decode_headers(encode_varint(MAX_HEADERS + 1))

    def test_nonce(self) -> None:
        self.assertEqual(decode_nonce(encode_nonce(2**64 - 1)), 2**64 - 1)
        for size in (0, 7, 9):
            with self.assertRaisesRegex(WireError, f"ping payload is {size} bytes, not 8"):
                decode_nonce(bytes(size))

    def test_getheaders_layout(self) -> None:
        payload = encode_getheaders(70015, [block_hash(1)])
        self.assertEqual(payload, struct.pack("<I", 70015) + b"\x01" + block_hash(1) + bytes(32))


# The session.
class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tip: str | None = TIP
        self.session = Session(HELLO, lambda: self.tip)

    def handshake(self, node: Version = NODE) -> None:
        self.assertEqual(self.session.receive(Frame("version", encode_version(node))).send, [("verack", b"")])
        self.session.receive(Frame("verack", b""))

    def test_handshake(self) -> None:
        """Our version first; the node's gets a verack; its verack completes the handshake, and we ask
        for headers announcements and the headers after the pool's tip."""
        self.assertEqual(self.session.opening(), [("version", encode_version(HELLO))])
        reaction = self.session.receive(Frame("version", encode_version(NODE)))
        self.assertEqual(reaction.send, [("verack", b"")])
        self.assertIsNone(reaction.ready)
        self.assertFalse(self.session.ready)
        reaction = self.session.receive(Frame("verack", b""))
        self.assertEqual(reaction.ready, NODE)
        self.assertTrue(self.session.ready)
        self.assertEqual(
            reaction.send,
            [("sendheaders", b""), ("getheaders", encode_getheaders(PROTOCOL_VERSION, [wire_hash(TIP)]))],
        )

    def test_handshake_without_tip(self) -> None:
        self.tip = None
        self.session.receive(Frame("version", encode_version(NODE)))
        self.assertEqual(self.session.receive(Frame("verack", b"")).send, [("sendheaders", b"")])

    def test_old_node(self) -> None:
        """A node before BIP130 is not asked for headers: it announces by inv."""
        old = Version(70011, 1, 0, 1, "/old/", 0, True)
        self.session.receive(Frame("version", encode_version(old)))
        self.assertEqual(self.session.receive(Frame("verack", b"")).send, [])
        reaction = self.session.receive(Frame("inv", encode_inv([InvItem(MSG_BLOCK, block_hash(1))])))
        self.assertEqual((reaction.blocks, reaction.send), ([display_hash(block_hash(1))], []))

    def test_too_old_node(self) -> None:
        with self.assertRaisesRegex(WireError, "protocol version 60000 is below 60001"):
            self.session.receive(Frame("version", encode_version(Version(60000, 1, 0, 1, "", 0, True))))

    def test_out_of_order(self) -> None:
        """Nothing before the node's version; one version, one verack, and that empty."""
        for command, payload in [("verack", b""), ("ping", encode_nonce(1)), ("inv", b"\x00")]:
            with self.assertRaisesRegex(WireError, f"{command} before version"):
                Session(HELLO, lambda: None).receive(Frame(command, payload))
        self.session.receive(Frame("version", encode_version(NODE)))
        with self.assertRaisesRegex(WireError, "a second version"):
            self.session.receive(Frame("version", encode_version(NODE)))
        with self.assertRaisesRegex(WireError, "verack with a payload of 1 bytes"):
            self.session.receive(Frame("verack", b"\x00"))
        self.session.receive(Frame("verack", b""))
        with self.assertRaisesRegex(WireError, "a second verack"):
            self.session.receive(Frame("verack", b""))

    def test_malformed_version(self) -> None:
        with self.assertRaisesRegex(WireError, "truncated"):
            self.session.receive(Frame("version", encode_version(NODE)[:50]))

    def test_ping(self) -> None:
        """A ping is answered with its nonce, also between version and verack."""
        self.session.receive(Frame("version", encode_version(NODE)))
        self.assertEqual(
            self.session.receive(Frame("ping", encode_nonce(99))).send, [("pong", encode_nonce(99))]
        )
        with self.assertRaisesRegex(WireError, "ping payload is 4 bytes"):
            self.session.receive(Frame("ping", bytes(4)))

    def test_inv_of_blocks(self) -> None:
        """Blocks in an inv are news, newest last; we ask for what follows the newest."""
        self.handshake()
        items = [
            InvItem(MSG_TX, block_hash(9)),
            InvItem(MSG_BLOCK, block_hash(1)),
            InvItem(MSG_BLOCK, block_hash(2)),
        ]
        reaction = self.session.receive(Frame("inv", encode_inv(items)))
        self.assertEqual(reaction.blocks, [display_hash(block_hash(1)), display_hash(block_hash(2))])
        self.assertEqual(reaction.via, "inv")
        self.assertEqual(
            reaction.send, [("getheaders", encode_getheaders(PROTOCOL_VERSION, [block_hash(2)]))]
        )

    def test_inv_of_transactions(self) -> None:
        self.handshake()
        reaction = self.session.receive(Frame("inv", encode_inv([InvItem(MSG_TX, block_hash(9))])))
        self.assertEqual((reaction.blocks, reaction.send, reaction.ignored), ([], [], "inv"))

    def test_headers(self) -> None:
        self.handshake()
        reaction = self.session.receive(Frame("headers", encode_headers([GENESIS_HEADER])))
        self.assertEqual((reaction.blocks, reaction.via, reaction.send), ([GENESIS_HASH], "headers", []))
        self.assertEqual(self.session.receive(Frame("headers", b"\x00")).ignored, "headers")

    def test_malformed_announcements(self) -> None:
        self.handshake()
        with self.assertRaises(WireError):
            self.session.receive(Frame("inv", b"\x01" + bytes(35)))
        with self.assertRaises(WireError):
            self.session.receive(Frame("headers", b"\x01" + bytes(80)))

    def test_unknown_commands_ignored(self) -> None:
        self.handshake()
        for command in ("sendcmpct", "feefilter", "addr", "getheaders", "pong", "whatever"):
            self.assertEqual(self.session.receive(Frame(command, b"\x01\x02")).ignored, command)


# The protocol, on a test transport.
class RecordingEvents:
    """A NodeEvents that writes down what it hears."""

    def __init__(self) -> None:
        self.ready: list[Version] = []
        self.blocks: list[tuple[list[str], str]] = []
        self.ignored: list[str] = []
        self.lost: list[Failure] = []

    def handshake_done(self, protocol: NodeProtocol, node: Version) -> None:
        self.ready.append(node)

    def blocks_announced(self, protocol: NodeProtocol, hashes: list[str], via: str) -> None:
        self.blocks.append((hashes, via))

    def message_ignored(self, protocol: NodeProtocol, command: str) -> None:
        self.ignored.append(command)

    def connection_lost(self, protocol: NodeProtocol, reason: Failure) -> None:
        self.lost.append(reason)


def sent_frames(transport: StringTransport) -> list[Frame]:
    frames, used = decode_frames(transport.value(), REGTEST)
    assert used == len(transport.value())
    transport.clear()
    return frames


class ProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events = RecordingEvents()
        self.protocol = NodeProtocol(Session(HELLO, lambda: None), REGTEST, self.events)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_byte_at_a_time(self) -> None:
        """The same conversation whole or a byte at a time: framing does not depend on reads."""
        self.assertEqual(sent_frames(self.transport), [Frame("version", encode_version(HELLO))])
        stream = b"".join(
            [
                encode_frame(REGTEST, "version", encode_version(NODE)),
                encode_frame(REGTEST, "verack"),
                encode_frame(REGTEST, "ping", encode_nonce(3)),
                encode_frame(REGTEST, "sendcmpct", b"\x00" + bytes(8)),
                encode_frame(REGTEST, "inv", encode_inv([InvItem(MSG_BLOCK, block_hash(1))])),
            ]
        )
        for i in range(len(stream)):
            self.protocol.dataReceived(stream[i : i + 1])
        self.assertEqual(
            [frame.command for frame in sent_frames(self.transport)],
            ["verack", "sendheaders", "pong", "getheaders"],
        )
        self.assertEqual(self.events.ready, [NODE])
        self.assertEqual(self.events.ignored, ["sendcmpct"])
        self.assertEqual(self.events.blocks, [([display_hash(block_hash(1))], "inv")])
        self.assertEqual(self.protocol.received, len(stream))
        self.assertIsNone(self.protocol.refused)

    def refused_by(self, data: bytes) -> WireError:
        self.protocol.dataReceived(data)
        self.assertIsNotNone(self.protocol.refused)
        self.assertTrue(self.transport.disconnecting)
        # Nothing more is read on a connection being dropped.
        self.protocol.dataReceived(encode_frame(REGTEST, "version", encode_version(NODE)))
        self.assertEqual(self.events.ready, [])
        assert self.protocol.refused is not None
        return self.protocol.refused

    def test_wrong_magic(self) -> None:
        error = self.refused_by(encode_frame(LITECOIN_MAIN, "version", encode_version(NODE)))
        self.assertIn("wrong network magic", str(error))

    def test_bad_checksum(self) -> None:
        message = bytearray(encode_frame(REGTEST, "version", encode_version(NODE)))
        message[22] ^= 0xFF
        self.assertIn("checksum", str(self.refused_by(bytes(message))))

    def test_oversized(self) -> None:
        header = REGTEST + b"headers".ljust(12, b"\0") + struct.pack("<I", MAX_PAYLOAD + 1) + bytes(4)
        self.assertIn("over the limit", str(self.refused_by(header)))

    def test_malformed_message(self) -> None:
        self.assertIn("truncated", str(self.refused_by(encode_frame(REGTEST, "version", b"\x01\x02"))))

    def test_out_of_order_message(self) -> None:
        self.assertIn(
            "ping before version", str(self.refused_by(encode_frame(REGTEST, "ping", encode_nonce(1))))
        )

    def test_rest_of_batch_dropped(self) -> None:
        """A bad message in a batch: the messages after it are not acted on."""
        self.refused_by(
            encode_frame(REGTEST, "ping", encode_nonce(1))
            + encode_frame(REGTEST, "version", encode_version(NODE))
        )
        self.assertEqual(sent_frames(self.transport), [Frame("version", encode_version(HELLO))])

    def test_connection_lost(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(len(self.events.lost), 1)


# The notifier, against scripted peers on real sockets.
class RecordingPool:
    """The pool as the notifier sees it: block_notify writes down each hash."""

    registry: JobRegistry | None = None

    def __init__(self) -> None:
        self.notified: list[str | None] = []

    def block_notify(self, block_hash: str | None = None) -> defer.Deferred[None]:
        self.notified.append(block_hash)
        return defer.succeed(None)


class ScriptedPeer(Protocol):
    """One connection to a ScriptedNode."""

    def __init__(self, node: ScriptedNode) -> None:
        self.node = node
        self.buffer = bytearray()
        self.lost = False

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True

    def connectionMade(self) -> None:
        self.node.peers.append(self)
        if self.node.mode == "close":
            self.close()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        frames, used = decode_frames(self.buffer, REGTEST)
        del self.buffer[:used]
        for frame in frames:
            self.node.received.append(frame.command)
            if frame.command == "version" and self.node.mode == "handshake":
                self.send("version", encode_version(NODE))
                self.send("verack")

    def send(self, command: str, payload: bytes = b"") -> None:
        self.write(encode_frame(REGTEST, command, payload))

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class ScriptedNode(ServerFactory):
    """A listening socket that plays a node: ``mode`` "handshake" answers a version as a
    node does, "silent" never answers, "close" closes every connection at once."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.peers: list[ScriptedPeer] = []
        self.received: list[str] = []
        self.port: IListeningPort = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.number = int(self.port.getHost().port)  # type: ignore[attr-defined]

    def stop(self) -> defer.Deferred[None]:
        stopping = self.port.stopListening()
        return stopping if stopping is not None else defer.succeed(None)

    def listen_again(self) -> None:
        """On the same port, after ``stop()``."""
        self.port = reactor.listenTCP(self.number, self, interface="127.0.0.1")

    @property
    def last(self) -> ScriptedPeer:
        return self.peers[-1]

    def buildProtocol(self, addr: IAddress | None) -> ScriptedPeer:
        return ScriptedPeer(self)


def lines(events: Sequence[LogEvent], level: LogLevel | None = None) -> list[str]:
    """The notifier's log lines (of one level)."""
    return [
        formatEvent(e)
        for e in events
        if str(e.get("log_namespace", "")).startswith("nomp.p2p")
        and (level is None or e["log_level"] == level)
    ]


class NotifierTests(TestCase):
    """The notifier's reconnections and refusals, against peers that misbehave on purpose."""

    timeout = 60

    def setUp(self) -> None:
        self.pool = RecordingPool()

    def node(self, mode: str = "handshake") -> ScriptedNode:
        node = ScriptedNode(mode)
        self.addCleanup(node.stop)
        return node

    def notifier(self, port: int, **options: Any) -> P2PNotifier:
        options.setdefault("initial_retry", 0.05)
        options.setdefault("max_retry", 0.2)
        notifier = P2PNotifier("ltc", P2PConfig(port=port), REGTEST, self.pool, reactor, **options)
        notifier.startService()
        self.addCleanup(notifier.stopService)
        return notifier

    async def test_blocks_announced(self) -> None:
        """An inv of a block and a headers message each reach block_notify once, newest hash;
        transactions and empty headers do not; a ping is answered."""
        node = self.node()
        notifier = self.notifier(node.number)
        await until(lambda: notifier.connected)
        self.assertEqual(notifier.node, NODE)
        peer = node.last
        peer.send(
            "inv", encode_inv([InvItem(MSG_BLOCK, block_hash(1)), InvItem(MSG_WITNESS_BLOCK, block_hash(2))])
        )
        peer.send("inv", encode_inv([InvItem(MSG_TX, block_hash(3))]))
        peer.send("headers", b"\x00")
        peer.send("headers", encode_headers([GENESIS_HEADER]))
        peer.send("ping", encode_nonce(77))
        await until(lambda: "pong" in node.received)
        self.assertEqual(self.pool.notified, [display_hash(block_hash(2)), GENESIS_HASH])
        self.assertEqual(notifier.announcements, {"inv": 1, "headers": 1})
        self.assertEqual(node.received, ["version", "verack", "sendheaders", "getheaders", "pong"])

    async def test_peer_closes_at_once(self) -> None:
        """A peer that closes before answering our version (a node on another network does):
        one error naming the magic, however often it happens, and the attempts go on."""
        node = self.node("close")
        with capturedLogs() as events:
            notifier = self.notifier(node.number)
            await until(lambda: notifier.problems["closed"] >= 3)
        (error,) = lines(events, LogLevel.error)
        self.assertIn("closed the connection before answering our version", error)
        self.assertIn("fabfb5da", error)
        self.assertFalse(notifier.connected)
        self.assertEqual(self.pool.notified, [])

    async def test_no_answer(self) -> None:
        """A peer that never answers is dropped after the handshake timeout, once logged."""
        node = self.node("silent")
        with capturedLogs() as events:
            notifier = self.notifier(node.number, handshake_timeout=0.1)
            await until(lambda: notifier.problems["timeout"] >= 2)
        (error,) = lines(events, LogLevel.error)
        self.assertIn("no handshake within 0.1 s of connecting", error)

    async def refused(self, data: bytes) -> tuple[P2PNotifier, list[str]]:
        """A handshake, then ``data`` from the node: the notifier drops the connection, logs
        the error and connects again."""
        node = self.node()
        with capturedLogs() as events:
            notifier = self.notifier(node.number)
            await until(lambda: notifier.connected)
            node.last.write(data)
            await until(lambda: notifier.handshakes == 2)
        self.assertEqual(notifier.problems["refused"], 1)
        self.assertEqual(self.pool.notified, [])
        return notifier, lines(events, LogLevel.error)

    async def test_wrong_magic(self) -> None:
        _, errors = await self.refused(encode_frame(LITECOIN_MAIN, "inv", encode_inv([])))
        self.assertEqual(len(errors), 1)
        self.assertIn(
            "sent a message we refuse (wrong network magic fbc0b6db (expected fabfb5da))", errors[0]
        )

    async def test_bad_checksum(self) -> None:
        message = bytearray(encode_frame(REGTEST, "inv", encode_inv([InvItem(MSG_BLOCK, block_hash(1))])))
        message[-1] ^= 1
        (error,) = (await self.refused(bytes(message)))[1]
        self.assertIn("inv checksum", error)

    async def test_oversized(self) -> None:
        header = REGTEST + b"inv".ljust(12, b"\0") + struct.pack("<I", MAX_PAYLOAD + 1) + bytes(4)
        (error,) = (await self.refused(header))[1]
        self.assertIn(f"inv payload of {MAX_PAYLOAD + 1} bytes is over the limit", error)

    async def test_malformed_inv(self) -> None:
        (error,) = (await self.refused(encode_frame(REGTEST, "inv", b"\x02" + bytes(36))))[1]
        self.assertIn("inv of 2 items needs 72 bytes, has 36", error)

    async def test_peer_disconnects(self) -> None:
        """A node that goes away after the handshake: one warning for all the attempts that
        find nobody listening, and one line when it is back."""
        node = self.node()
        with capturedLogs() as events:
            notifier = self.notifier(node.number)
            await until(lambda: notifier.connected)
            await node.stop()
            node.last.close()
            await until(lambda: notifier.attempts >= 4)
            node.listen_again()
            await until(lambda: notifier.handshakes == 2)
        self.assertEqual(len(lines(events, LogLevel.warn)), 1)
        self.assertIn("pool ltc: P2P node 127.0.0.1", lines(events, LogLevel.warn)[0])
        self.assertIn("unavailable (ConnectionDone", lines(events, LogLevel.warn)[0])
        back = [line for line in lines(events, LogLevel.info) if "is back after" in line]
        self.assertEqual(len(back), 1)

    async def test_idle_connection_dropped(self) -> None:
        """A connection that carries nothing for idle_timeout is dropped and made again."""
        node = self.node()
        with capturedLogs() as events:
            notifier = self.notifier(node.number, idle_timeout=0.2)
            await until(lambda: notifier.handshakes >= 2)
        (warning,) = lines(events, LogLevel.warn)
        self.assertIn("NodeSilent: nothing received for 0.2 s", warning)

    async def test_stop(self) -> None:
        """Stopping closes the connection and schedules nothing more."""
        node = self.node()
        notifier = self.notifier(node.number)
        await until(lambda: notifier.connected)
        await notifier.stopService()
        self.assertFalse(notifier.connected)
        await until(lambda: node.last.lost)
        self.assertEqual(len(node.peers), 1)
        timers = [
            call
            for call in reactor.getDelayedCalls()
            if getattr(getattr(call, "func", None), "__self__", None) is notifier
        ]
        self.assertEqual(timers, [])

    async def test_stop_while_connecting(self) -> None:
        notifier = self.notifier(free_port())
        await notifier.stopService()
        self.assertFalse(notifier.running)


class BackoffTests(TestCase):
    """The waits between attempts, on a clock of the test's own."""

    async def test_backoff_and_one_line(self) -> None:
        """0.5 s, then twice as long each time up to 30 s; one line for the whole outage,
        an info line while the node has never answered."""
        clock = task.Clock()
        port = free_port()  # nothing listens there
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        pool = RecordingPool()
        with capturedLogs() as events:
            notifier = P2PNotifier("ltc", P2PConfig(port=port), REGTEST, pool, clock, endpoint=endpoint)
            notifier.startService()
            self.addCleanup(notifier.stopService)
            waits = []
            for _ in range(9):
                await until(lambda: len(clock.getDelayedCalls()) == 1)
                (retry,) = clock.getDelayedCalls()
                waits.append(retry.getTime() - clock.seconds())
                clock.advance(waits[-1])
        self.assertEqual(waits, [0.5, 1, 2, 4, 8, 16, 30, 30, 30])
        self.assertEqual(notifier.attempts, 10)
        (line,) = lines(events)
        self.assertIn(f"pool ltc: P2P node 127.0.0.1:{port}: waiting for it (ConnectionRefusedError", line)


# Against a real node.
def peer_entry(pair: RegtestPair) -> dict[str, Any] | None:
    """The node's getpeerinfo entry for the pool."""
    for peer in pair.miner.rpc("getpeerinfo"):
        if peer["subver"] == USER_AGENT:
            return dict(peer)
    return None


class RegtestTests(TestCase):
    """The notifier against a real litecoind regtest node, inside a real PoolService
    whose poll is an hour: a new job within the test can only come from P2P."""

    timeout = 240

    def setUp(self) -> None:
        self.jobs: list[Job] = []
        self.fatal: list[str] = []

    async def start(self, pair: RegtestPair) -> tuple[PoolService, P2PNotifier]:
        config = pool_for(
            pair,
            block_refresh_interval=3600.0,
            job_rebroadcast_timeout=0.0,
            p2p=P2PConfig(port=pair.miner.p2p_port),
        )
        service = PoolService(config, reactor, self.fatal.append, FakeBlockRecords())
        service.add_job_listener(self.jobs.append)
        notifier = p2p_notifier(config, service, reactor)  # as the tap wires it
        assert notifier is not None
        notifier.setServiceParent(service)
        service.startService()
        self.addCleanup(service.stopService)
        await until(lambda: (service.ready and notifier.connected) or self.fatal)
        self.assertEqual(self.fatal, [])
        return service, notifier

    async def new_job_on(self, pair: RegtestPair) -> str:
        """Mine a block on the node (off the reactor thread); wait for the pool's job on it."""
        (tip,) = await threads.deferToThread(pair.generate, 1)
        await until(lambda: self.jobs[-1].template.previous_block_hash == tip)
        self.assertTrue(self.jobs[-1].clean)
        return tip

    async def test_block_through_p2p(self) -> None:
        """The node lists the pool as an inbound peer of our user agent, relay off, and its
        pings are answered; each block mined makes a new job at once, announced as headers
        (the pool told the node its tip)."""
        pair = shared_regtest("p2p")
        _, notifier = await self.start(pair)
        peer = peer_entry(pair)
        assert peer is not None
        self.assertTrue(peer["inbound"])
        self.assertFalse(peer["relaytxes"])
        self.assertEqual(peer["version"], PROTOCOL_VERSION)
        self.assertEqual(
            notifier.node and notifier.node.user_agent, pair.miner.rpc("getnetworkinfo")["subversion"]
        )
        await until(lambda: "pingtime" in (peer_entry(pair) or {}))  # our pong came back
        jobs = len(self.jobs)
        for _ in range(3):
            await self.new_job_on(pair)
        self.assertEqual(len(self.jobs), jobs + 3)
        self.assertEqual(sum(notifier.announcements.values()), 3)
        self.assertGreaterEqual(notifier.announcements["headers"], 2)  # the first may come by inv

    async def test_wrong_magic_against_the_node(self) -> None:
        """The node drops a peer of another network: one error naming the magic, no news."""
        pair = shared_regtest("p2p")
        pool = RecordingPool()
        config = P2PConfig(port=pair.miner.p2p_port)
        with capturedLogs() as events:
            notifier = P2PNotifier(
                "ltc", config, LITECOIN_MAIN, pool, reactor, initial_retry=0.05, max_retry=0.2
            )
            notifier.startService()
            self.addCleanup(notifier.stopService)
            await until(lambda: notifier.problems["closed"] >= 2)
        (error,) = lines(events, LogLevel.error)
        self.assertIn("is the network magic fbc0b6db its own", error)
        self.assertEqual((notifier.handshakes, pool.notified), (0, []))

    async def test_node_restart(self) -> None:
        """The node stopped and started again: one warning, one line when it is back, a new
        handshake, and the next block still comes through P2P."""
        pair = RegtestPair().start()
        self.addCleanup(pair.stop)
        _, notifier = await self.start(pair)
        await self.new_job_on(pair)
        with capturedLogs() as events:
            await threads.deferToThread(pair.miner.stop)
            await until(lambda: not notifier.connected)
            await threads.deferToThread(pair.miner.start)
            await threads.deferToThread(pair.miner.rpc, "loadwallet", pair.wallet)
            # The pool's own connection counts for the miner: wait for the peer node's.
            await until(lambda: pair.peer.rpc("getconnectioncount") >= 1, step=0.2)
            await until(lambda: notifier.handshakes == 2)
        warnings = lines(events, LogLevel.warn)
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("unavailable", warnings[0])
        self.assertEqual(len([line for line in lines(events, LogLevel.info) if "is back after" in line]), 1)
        self.assertEqual(lines(events, LogLevel.error), [])
        await self.new_job_on(pair)


class TapTests(SynchronousTestCase):
    """The tap puts a notifier under the pool whose p2p section is enabled, and only then."""

    def build(self, **pool: Any) -> Any:
        folder, _ = write_conf(
            Path(self.mktemp()), "http://127.0.0.1:19443", "nomp", "secret", DEMO_ADDRESS, free_port(), **pool
        )
        return build_service(
            load_config(folder), reactor, exit_with=lambda status: None, shutdown=lambda: None
        )

    def test_enabled(self) -> None:
        pool = self.build(p2p={"port": 19444}).getServiceNamed("pool:litecoin")
        notifier = pool.getServiceNamed("p2p:litecoin")
        self.assertIsInstance(notifier, P2PNotifier)
        self.assertEqual(notifier.address, "127.0.0.1:19444")

    def test_disabled_or_absent(self) -> None:
        for pool_changes in ({"p2p": {"port": 19444, "enabled": False}}, {}):
            pool = self.build(**pool_changes).getServiceNamed("pool:litecoin")
            self.assertNotIn("p2p:litecoin", [service.name for service in pool])
