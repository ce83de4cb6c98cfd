"""The PROXY protocol: the pure parser on every kind of header and every
refusal, the wrapper over StringTransports on a task.Clock, a real Stratum
connection through it, and both versions over real loopback TCP."""

from __future__ import annotations

import ipaddress
import json
import struct
from collections.abc import Sequence
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IListeningPort,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from nomp.hashing.pool import HashPoolService
from nomp.stratum.proxyproto import (
    HEADER_TIMEOUT,
    NEED_MORE_DATA,
    V1_MAX_LENGTH,
    V2_MAX_ADDRESS_LENGTH,
    V2_SIGNATURE,
    InvalidProxyHeader,
    IPNetwork,
    NeedMoreData,
    ProxiedAddresses,
    ProxyHeader,
    ProxyHeaderReceiver,
    ProxyProtocolFactory,
    parse_proxy_header,
)
from nomp.stratum.stratumpool import StratumPool
from test.fakes import FakePool, FakeRecorder, InlineHashing, RecordingTransport, pool_config, registry_for

IP4 = ipaddress.IPv4Address
IP6 = ipaddress.IPv6Address

TCP4_LINE = b"PROXY TCP4 203.0.113.7 198.51.100.1 51234 3333\r\n"
TCP4_ADDRESSES = ProxiedAddresses(IP4("203.0.113.7"), 51234, IP4("198.51.100.1"), 3333)
TCP6_LINE = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 3333\r\n"
TCP6_ADDRESSES = ProxiedAddresses(IP6("2001:db8::7"), 51234, IP6("2001:db8::1"), 3333)

PROXY_PEER = IPv4Address("TCP", "10.0.0.5", 40000)  # the load balancer
POOL_HOST = IPv4Address("TCP", "10.0.0.2", 3333)
TRUSTED: tuple[IPNetwork, ...] = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fd00::/8"))
LINE = b'{"id":1,"method":"mining.subscribe","params":[]}\n'


def v2_header(version_command: int, family_protocol: int, block: bytes = b"") -> bytes:
    """A v2 header with any bytes in its fixed part, ``block`` after it."""
    return V2_SIGNATURE + bytes([version_command, family_protocol]) + struct.pack("!H", len(block)) + block


def v2_tcp(addresses: ProxiedAddresses, tlvs: bytes = b"") -> bytes:
    """A v2 PROXY header for TCP over the addresses' family."""
    family_protocol = 0x11 if addresses.source.version == 4 else 0x21
    block = (
        addresses.source.packed
        + addresses.destination.packed
        + struct.pack("!HH", addresses.source_port, addresses.destination_port)
    )
    return v2_header(0x21, family_protocol, block + tlvs)


def v1_tcp(addresses: ProxiedAddresses) -> bytes:
    """A v1 PROXY line for TCP over the addresses' family."""
    family = "TCP4" if addresses.source.version == 4 else "TCP6"
    return (
        f"PROXY {family} {addresses.source} {addresses.destination} "
        f"{addresses.source_port} {addresses.destination_port}\r\n"
    ).encode()


def refusal(data: bytes) -> str:
    """The reason the parser gives for refusing ``data``."""
    result = parse_proxy_header(data)
    if not isinstance(result, InvalidProxyHeader):
        raise AssertionError(f"{data!r} was not refused: {result}")
    return result.reason


def tcp_ports() -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=0xFFFF)


def proxied_addresses() -> st.SearchStrategy[ProxiedAddresses]:
    ipv4 = st.ip_addresses(v=4)
    ipv6 = st.ip_addresses(v=6)
    return st.one_of(
        st.builds(ProxiedAddresses, ipv4, tcp_ports(), ipv4, tcp_ports()),
        st.builds(ProxiedAddresses, ipv6, tcp_ports(), ipv6, tcp_ports()),
    )


class ParseV1Tests(unittest.SynchronousTestCase):
    """Version 1, the text line."""

    def test_tcp4(self) -> None:
        """A TCP4 line gives both endpoints and its own length."""
        self.assertEqual(parse_proxy_header(TCP4_LINE), ProxyHeader(len(TCP4_LINE), 1, TCP4_ADDRESSES))

    def test_tcp6(self) -> None:
        """A TCP6 line gives both IPv6 endpoints."""
        self.assertEqual(parse_proxy_header(TCP6_LINE), ProxyHeader(len(TCP6_LINE), 1, TCP6_ADDRESSES))

    def test_tcp6_ipv4_mapped(self) -> None:
        """An IPv4-mapped IPv6 address in dotted form, as inet_ntop writes it, is taken."""
        line = b"PROXY TCP6 ::ffff:203.0.113.7 ::1 1 2\r\n"
        result = parse_proxy_header(line)
        assert isinstance(result, ProxyHeader) and result.addresses is not None
        self.assertEqual(result.addresses.source, IP6("::ffff:203.0.113.7"))

    def test_extreme_ports(self) -> None:
        """Ports 0 and 65535 are in range."""
        result = parse_proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n")
        assert isinstance(result, ProxyHeader) and result.addresses is not None
        self.assertEqual((result.addresses.source_port, result.addresses.destination_port), (0, 65535))

    def test_data_after_header(self) -> None:
        """The length stops at the CRLF, so the stream's data follows it."""
        data = TCP4_LINE + LINE
        result = parse_proxy_header(data)
        assert isinstance(result, ProxyHeader)
        self.assertEqual(data[result.length :], LINE)

    def test_unknown_short(self) -> None:
        """``PROXY UNKNOWN`` alone keeps the connection's own addresses."""
        self.assertEqual(parse_proxy_header(b"PROXY UNKNOWN\r\nrest"), ProxyHeader(15, 1, None))

    def test_unknown_ignores_rest_of_line(self) -> None:
        """After UNKNOWN anything up to the CRLF is ignored, even non-ASCII."""
        line = b"PROXY UNKNOWN whatever \xff 1.2.3.4\r\n"
        self.assertEqual(parse_proxy_header(line), ProxyHeader(len(line), 1, None))

    def test_longest_line(self) -> None:
        """The worst case of the specification, 107 bytes with the CRLF, is taken."""
        full = "ffff:" * 7 + "ffff"
        line = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
        self.assertEqual(len(line), V1_MAX_LENGTH)
        self.assertEqual(parse_proxy_header(line), ProxyHeader(V1_MAX_LENGTH, 1, None))

    def test_too_long_without_crlf(self) -> None:
        """107 bytes without a CRLF are refused without waiting for more."""
        data = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 14)
        self.assertEqual(len(data), V1_MAX_LENGTH)
        self.assertEqual(parse_proxy_header(data[:-1]), NEED_MORE_DATA)
        self.assertIn("without CRLF in its first 107 bytes", refusal(data))

    def test_crlf_one_byte_too_far(self) -> None:
        """A line whose CRLF ends at byte 108 is too long."""
        data = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 15) + b"\r\n"
        self.assertEqual(len(data), V1_MAX_LENGTH + 1)
        self.assertIn("without CRLF", refusal(data))

    def test_every_prefix_needs_more(self) -> None:
        """Each proper prefix of a line asks for more bytes."""
        for end in range(len(TCP6_LINE)):
            self.assertEqual(parse_proxy_header(TCP6_LINE[:end]), NEED_MORE_DATA, TCP6_LINE[:end])

    def test_line_ends(self) -> None:
        """A lone LF or a CR inside the line is refused: only CRLF ends it."""
        self.assertIn("LF without CR", refusal(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"))
        self.assertIn("LF without CR", refusal(b"PROXY UNKNOWN\n"))
        self.assertIn("CR before its CRLF", refusal(b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n"))
        self.assertIn("CR before its CRLF", refusal(b"PROXY UNKNOWN\r\r\n"))

    def test_bad_protocols(self) -> None:
        """Only TCP4, TCP6 and UNKNOWN, in capitals, are protocols."""
        for protocol in (b"UDP4", b"tcp4", b"TCP", b"", b"UNKNOWNX", b"TCP4\t"):
            line = b"PROXY " + protocol + b" 1.2.3.4 5.6.7.8 1 2\r\n"
            self.assertIn("not TCP4, TCP6 or UNKNOWN", refusal(line), line)

    def test_bad_field_layout(self) -> None:
        """Missing, extra or doubled spaces and missing fields are refused."""
        for line in (
            b"PROXY TCP4\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        ):
            self.assertIn("each after one space", refusal(line), line)

    def test_lowercase_or_missing_prefix(self) -> None:
        """``proxy`` in lower case, or PROXY without its space, is no header."""
        self.assertEqual(refusal(b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), "not a PROXY protocol header")
        self.assertEqual(refusal(b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"), "not a PROXY protocol header")

    def test_bad_ipv4_addresses(self) -> None:
        """IPv4 addresses must be four decimal numbers 0-255 without leading zeroes."""
        for address in (
            b"1.2.3.256",
            b"01.2.3.4",
            b"1.2.3",
            b"1.2.3.4.5",
            b"1.2.3.-4",
            b"::1",
            b"0x1.2.3.4",
            b"1.2.3.4/32",
            b"\xef\xbc\x91.2.3.4",
            b"localhost",
        ):
            line = b"PROXY TCP4 " + address + b" 5.6.7.8 1 2\r\n"
            self.assertIn("bad TCP4 source address", refusal(line), line)
            line = b"PROXY TCP4 5.6.7.8 " + address + b" 1 2\r\n"
            self.assertIn("bad TCP4 destination address", refusal(line), line)

    def test_bad_ipv6_addresses(self) -> None:
        """IPv6 addresses must be 128 bits of hex groups; no zone, no IPv4 in TCP6."""
        for address in (
            b"1.2.3.4",
            b"2001:db8::1::2",
            b"2001:db8:0:0:0:0:0:0:1",
            b"fe80::1%eth0",
            b"12345::1",
            b"[::1]",
            b"g::1",
        ):
            line = b"PROXY TCP6 " + address + b" ::1 1 2\r\n"
            self.assertIn("bad TCP6 source address", refusal(line), line)
            line = b"PROXY TCP6 ::1 " + address + b" 1 2\r\n"
            self.assertIn("bad TCP6 destination address", refusal(line), line)

    def test_bad_ports(self) -> None:
        """Ports are decimal 0-65535 without leading zeroes or signs."""
        for port in (b"65536", b"99999", b"123456", b"01", b"00", b"-1", b"+1", b"0x10", b"1e3", b"\xd9\xa1"):
            line = b"PROXY TCP4 1.2.3.4 5.6.7.8 " + port + b" 2\r\n"
            self.assertIn("bad source port", refusal(line), line)
            line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 " + port + b"\r\n"
            self.assertIn("bad destination port", refusal(line), line)


class ParseV2Tests(unittest.SynchronousTestCase):
    """Version 2, the binary header."""

    def test_tcp4(self) -> None:
        """A PROXY command for TCP over IPv4 gives both endpoints."""
        header = v2_tcp(TCP4_ADDRESSES)
        self.assertEqual(len(header), 28)
        self.assertEqual(parse_proxy_header(header + LINE), ProxyHeader(28, 2, TCP4_ADDRESSES))

    def test_tcp6(self) -> None:
        """A PROXY command for TCP over IPv6 gives both endpoints."""
        header = v2_tcp(TCP6_ADDRESSES)
        self.assertEqual(len(header), 52)
        self.assertEqual(parse_proxy_header(header), ProxyHeader(52, 2, TCP6_ADDRESSES))

    def test_tlvs_skipped(self) -> None:
        """TLVs after the addresses belong to the header and are skipped."""
        tlvs = b"\x05\x00\x04abcd" + b"\x04\x00\x00"  # a unique id and a no-op
        header = v2_tcp(TCP4_ADDRESSES, tlvs)
        self.assertEqual(parse_proxy_header(header + LINE), ProxyHeader(len(header), 2, TCP4_ADDRESSES))

    def test_local(self) -> None:
        """LOCAL (a health check) keeps the connection's addresses, whatever block it carries."""
        self.assertEqual(parse_proxy_header(v2_header(0x20, 0x00)), ProxyHeader(16, 2, None))
        with_block = v2_header(0x20, 0x11, b"\x01" * 12)
        self.assertEqual(parse_proxy_header(with_block), ProxyHeader(28, 2, None))
        # The family is to be discarded with LOCAL, even one no sender should use.
        self.assertEqual(parse_proxy_header(v2_header(0x20, 0xFF)), ProxyHeader(16, 2, None))

    def test_unspecified(self) -> None:
        """PROXY with an unspecified family or protocol keeps the connection's addresses."""
        for family_protocol in (0x00, 0x01, 0x10, 0x20):
            header = v2_header(0x21, family_protocol, b"\x00" * 12)
            self.assertEqual(parse_proxy_header(header), ProxyHeader(28, 2, None), hex(family_protocol))

    def test_udp_and_unix_refused(self) -> None:
        """UDP and UNIX sockets are not served: a Stratum port is TCP."""
        for family_protocol, name in (
            (0x12, "UDP over IPv4"),
            (0x22, "UDP over IPv6"),
            (0x31, "UNIX stream"),
        ):
            reason = refusal(v2_header(0x21, family_protocol, b"\x00" * 216))
            self.assertEqual(reason, f"v2 header for {name}: only TCP over IPv4 or IPv6 is served")
        self.assertIn("UNIX datagram", refusal(v2_header(0x21, 0x32, b"\x00" * 216)))

    def test_unknown_family_or_protocol(self) -> None:
        """Families over 3 and protocols over 2 are invalid."""
        for family_protocol in (0x41, 0x13, 0xF1, 0x1F):
            reason = refusal(v2_header(0x21, family_protocol, b"\x00" * 36))
            self.assertIn("unknown family and protocol", reason, hex(family_protocol))

    def test_bad_version(self) -> None:
        """Only version 2 follows the signature."""
        for version_command in (0x01, 0x11, 0x31, 0xF1):
            reason = refusal(v2_header(version_command, 0x11, b"\x00" * 12))
            self.assertIn(f"protocol version {version_command >> 4}, not 2", reason)

    def test_bad_command(self) -> None:
        """Commands other than LOCAL and PROXY are refused."""
        for version_command in (0x22, 0x2F):
            self.assertIn("unknown command", refusal(v2_header(version_command, 0x11, b"\x00" * 12)))

    def test_oversized_length(self) -> None:
        """A length over the bound is refused from the 16 fixed bytes, before the block comes."""
        fixed = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX_ADDRESS_LENGTH + 1)
        self.assertEqual(
            refusal(fixed),
            f"v2 header announces {V2_MAX_ADDRESS_LENGTH + 1} address bytes, over the limit of 1024",
        )
        self.assertIn("over the limit", refusal(V2_SIGNATURE + b"\x21\x11\xff\xff"))
        at_limit = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX_ADDRESS_LENGTH)
        self.assertEqual(parse_proxy_header(at_limit), NEED_MORE_DATA)

    def test_bound_is_a_parameter(self) -> None:
        """The caller may set a tighter bound."""
        header = v2_tcp(TCP4_ADDRESSES, b"\x04\x00\x10" + b"\x00" * 16)
        self.assertEqual(len(header), 16 + 31)
        self.assertIsInstance(parse_proxy_header(header, max_v2_address_length=30), InvalidProxyHeader)
        self.assertIsInstance(parse_proxy_header(header, max_v2_address_length=31), ProxyHeader)

    def test_block_too_short_for_family(self) -> None:
        """An address block shorter than the family needs is refused."""
        self.assertEqual(
            refusal(v2_header(0x21, 0x11, b"\x00" * 11)),
            "v2 header for TCP over IPv4 with 11 address bytes, under 12",
        )
        self.assertIn("IPv6 with 12 address bytes, under 36", refusal(v2_header(0x21, 0x21, b"\x00" * 12)))

    def test_every_prefix_needs_more(self) -> None:
        """Each proper prefix of a header asks for more bytes."""
        header = v2_tcp(TCP6_ADDRESSES, b"\x04\x00\x02zz")
        for end in range(len(header)):
            self.assertEqual(parse_proxy_header(header[:end]), NEED_MORE_DATA, end)

    def test_signature_mismatch(self) -> None:
        """A stream that starts like the signature and then differs is no header."""
        self.assertEqual(refusal(b"\r\n\r\nGET"), "not a PROXY protocol header")
        self.assertEqual(
            refusal(V2_SIGNATURE[:11] + b"X" + b"\x21\x11\x00\x00"), "not a PROXY protocol header"
        )


class ParseAnyTests(unittest.SynchronousTestCase):
    """What neither version matches, and properties over random input."""

    def test_empty(self) -> None:
        """No bytes yet: read more."""
        self.assertEqual(parse_proxy_header(b""), NeedMoreData())

    def test_garbage_refused_from_first_byte(self) -> None:
        """A miner that speaks Stratum at once, or anything else, is refused at its first byte."""
        for data in (LINE, b"{", b"GET / HTTP/1.1\r\n", b"\x16\x03\x01", b"\x00", b" PROXY TCP4"):
            self.assertEqual(refusal(data), "not a PROXY protocol header", data)

    @given(st.binary(max_size=300))
    def test_random_bytes(self, data: bytes) -> None:
        """Any bytes give one of the three results, and a header never longer than the data."""
        result = parse_proxy_header(data)
        self.assertIsInstance(result, NeedMoreData | ProxyHeader | InvalidProxyHeader)
        if isinstance(result, ProxyHeader):
            self.assertGreaterEqual(result.length, 15)
            self.assertLessEqual(result.length, len(data))

    @given(st.sampled_from([b"PROXY ", V2_SIGNATURE + b"\x21"]), st.binary(max_size=300))
    def test_random_bytes_after_a_signature(self, start: bytes, rest: bytes) -> None:
        """Random bytes behind a real signature reach the deep checks and still only give a result."""
        result = parse_proxy_header(start + rest)
        self.assertIsInstance(result, NeedMoreData | ProxyHeader | InvalidProxyHeader)

    @given(proxied_addresses(), st.booleans(), st.binary(max_size=40))
    def test_round_trip(self, addresses: ProxiedAddresses, binary: bool, rest: bytes) -> None:
        """A header written from any addresses parses back to them, whatever follows it."""
        header = v2_tcp(addresses) if binary else v1_tcp(addresses)
        result = parse_proxy_header(header + rest)
        self.assertEqual(result, ProxyHeader(len(header), 2 if binary else 1, addresses))


@implementer(IPushProducer)
class IdleProducer:
    """A producer that does nothing."""

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class RecordingProtocol(Protocol):
    """The wrapped protocol: records what it is told and what its transport says."""

    def __init__(self) -> None:
        self.made_with: tuple[IAddress, IAddress] | None = None
        self.received = b""
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.made_with = (self.transport.getPeer(), self.transport.getHost())

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


class RecordingFactory(Factory[RecordingProtocol]):
    """The wrapped factory: the addresses it built for, and its protocols."""

    def __init__(self, protocol: type[RecordingProtocol] = RecordingProtocol) -> None:
        self.protocol_class = protocol
        self.built_for: list[IAddress | None] = []
        self.protocols: list[RecordingProtocol] = []
        self.refuse = False

    def buildProtocol(self, addr: IAddress | None) -> RecordingProtocol | None:
        self.built_for.append(addr)
        if self.refuse:
            return None
        protocol = self.protocol_class()
        self.protocols.append(protocol)
        return protocol


class ClosingProtocol(RecordingProtocol):
    """Hangs up as soon as it is connected."""

    def connectionMade(self) -> None:
        super().connectionMade()
        assert self.transport is not None
        self.transport.loseConnection()


class _WrapperCase(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.wrapped = RecordingFactory()
        self.factory = ProxyProtocolFactory(self.wrapped, TRUSTED, self.clock)

    def connect(self, peer: IAddress = PROXY_PEER) -> tuple[ProxyHeaderReceiver, StringTransport]:
        """A connection from ``peer``, which the factory must let in."""
        receiver = self.factory.buildProtocol(peer)
        assert receiver is not None
        transport = StringTransport(hostAddress=POOL_HOST, peerAddress=peer)
        receiver.makeConnection(transport)
        return receiver, transport

    def only_protocol(self) -> RecordingProtocol:
        self.assertEqual(len(self.wrapped.protocols), 1)
        return self.wrapped.protocols[0]

    def assert_refused(self, data: bytes, reason: str, events: Sequence[LogEvent]) -> None:
        """``data`` from a proxy got the connection aborted with ``reason`` logged."""
        self.assertEqual(self.wrapped.built_for, [])
        messages = [formatEvent(event) for event in events if event["log_level"] == LogLevel.warn]
        self.assertEqual(messages, [f"proxy 10.0.0.5:40000 sent a bad PROXY header: {reason}: closed"], data)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WrapperHeaderTests(_WrapperCase):
    """The wrapper with good headers: what the wrapped protocol sees."""

    def test_v1_real_address(self) -> None:
        """After a v1 header the wrapped protocol sees the client as peer, the proxied address as host."""
        receiver, transport = self.connect()
        receiver.dataReceived(TCP4_LINE)
        client = IPv4Address("TCP", "203.0.113.7", 51234)
        self.assertEqual(self.wrapped.built_for, [client])
        protocol = self.only_protocol()
        self.assertEqual(protocol.made_with, (client, IPv4Address("TCP", "198.51.100.1", 3333)))
        self.assertIs(protocol.transport, receiver)
        self.assertEqual((receiver.getPeer(), receiver.getHost()), protocol.made_with)
        self.assertFalse(transport.disconnecting)

    def test_v2_ipv6_address(self) -> None:
        """A v2 IPv6 header gives IPv6Address peers and hosts."""
        receiver, _ = self.connect()
        receiver.dataReceived(v2_tcp(TCP6_ADDRESSES, b"\x04\x00\x00"))
        self.assertEqual(
            self.only_protocol().made_with,
            (IPv6Address("TCP", "2001:db8::7", 51234), IPv6Address("TCP", "2001:db8::1", 3333)),
        )

    def test_ipv4_mapped_client_is_ipv4(self) -> None:
        """A client the proxy saw on a dual-stack socket appears as IPv4."""
        receiver, _ = self.connect()
        receiver.dataReceived(b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:10.0.0.5 51234 3333\r\n")
        self.assertEqual(
            self.only_protocol().made_with,
            (IPv4Address("TCP", "203.0.113.7", 51234), IPv4Address("TCP", "10.0.0.5", 3333)),
        )

    def test_connection_made_only_after_header(self) -> None:
        """Nothing is built until the header is whole."""
        receiver, _ = self.connect()
        receiver.dataReceived(TCP4_LINE[:-1])
        self.assertEqual(self.wrapped.built_for, [])
        receiver.dataReceived(TCP4_LINE[-1:])
        self.assertIsNotNone(self.only_protocol().made_with)

    def test_byte_by_byte(self) -> None:
        """A header and a line sent one byte per read arrive whole."""
        for header in (TCP4_LINE, v2_tcp(TCP4_ADDRESSES, b"\x05\x00\x02id")):
            self.wrapped.protocols.clear()
            receiver, transport = self.connect()
            for i in range(len(header + LINE)):
                receiver.dataReceived((header + LINE)[i : i + 1])
            protocol = self.only_protocol()
            self.assertEqual(protocol.received, LINE)
            self.assertEqual(receiver.getPeer(), IPv4Address("TCP", "203.0.113.7", 51234))
            self.assertFalse(transport.disconnecting)

    def test_data_in_same_read(self) -> None:
        """Bytes after the header in the same read go to the wrapped protocol, then later ones too."""
        receiver, _ = self.connect()
        receiver.dataReceived(v2_tcp(TCP4_ADDRESSES) + LINE)
        protocol = self.only_protocol()
        self.assertEqual(protocol.received, LINE)
        receiver.dataReceived(b"more")
        self.assertEqual(protocol.received, LINE + b"more")

    def test_local(self) -> None:
        """A v2 LOCAL header keeps the connection's own addresses."""
        receiver, _ = self.connect()
        receiver.dataReceived(v2_header(0x20, 0x00) + b"hi")
        protocol = self.only_protocol()
        self.assertEqual(protocol.made_with, (PROXY_PEER, POOL_HOST))
        self.assertEqual(protocol.received, b"hi")

    def test_unknown(self) -> None:
        """A v1 UNKNOWN header keeps the connection's own addresses."""
        receiver, _ = self.connect()
        receiver.dataReceived(b"PROXY UNKNOWN\r\n")
        self.assertEqual(self.only_protocol().made_with, (PROXY_PEER, POOL_HOST))

    def test_deadline_cancelled_by_header(self) -> None:
        """Once the header is in, the deadline no longer applies."""
        receiver, transport = self.connect()
        self.clock.advance(HEADER_TIMEOUT - 1)
        receiver.dataReceived(TCP4_LINE)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(HEADER_TIMEOUT * 10)
        self.assertFalse(transport.disconnecting)

    def test_ipv6_proxy_trusted(self) -> None:
        """A proxy connecting over IPv6, with a zone, is checked against IPv6 networks."""
        peer = IPv6Address("TCP", "fd00::5%eth0", 40000)
        receiver, _ = self.connect(peer)
        receiver.dataReceived(TCP4_LINE)
        self.assertEqual(len(self.wrapped.protocols), 1)

    def test_ipv4_mapped_proxy_trusted(self) -> None:
        """A proxy seen through a dual-stack listener is checked as IPv4."""
        self.assertTrue(self.factory.trusts(IPv6Address("TCP", "::ffff:10.0.0.5", 40000)))


class WrapperTransportTests(_WrapperCase):
    """The wrapper as the wrapped protocol's transport."""

    def setUp(self) -> None:
        super().setUp()
        self.receiver, self.transport = self.connect()
        self.receiver.dataReceived(TCP4_LINE)
        self.protocol = self.only_protocol()

    def test_write(self) -> None:
        """write and writeSequence reach the connection."""
        self.receiver.write(b"a")
        self.receiver.writeSequence([b"b", b"c"])
        self.assertEqual(self.transport.value(), b"abc")

    def test_producer(self) -> None:
        """registerProducer and unregisterProducer reach the connection."""
        producer = IdleProducer()
        self.receiver.registerProducer(producer, True)
        self.assertIs(self.transport.producer, producer)
        self.assertTrue(self.transport.streaming)
        self.receiver.unregisterProducer()
        self.assertIsNone(self.transport.producer)

    def test_pause_resume(self) -> None:
        """The wrapped protocol can pause and resume reading from the connection."""
        self.receiver.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.receiver.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.receiver.stopProducing()
        self.assertEqual(self.transport.producerState, "stopped")

    def test_lose_connection(self) -> None:
        """loseConnection closes the connection and shows as disconnecting."""
        self.assertFalse(self.receiver.disconnecting)
        self.receiver.loseConnection()
        self.assertTrue(self.receiver.disconnecting)
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)

    def test_abort_connection(self) -> None:
        """abortConnection aborts the connection."""
        self.receiver.abortConnection()
        self.assertTrue(self.transport.disconnected)  # StringTransport's mark of an abort
        self.assertTrue(self.receiver.disconnecting)

    def test_tcp_options(self) -> None:
        """The TCP options and half-close go to the connection."""
        calls: list[tuple[str, object]] = []
        fake: Any = self.transport
        fake.setTcpNoDelay = lambda on: calls.append(("nodelay", on))
        fake.getTcpNoDelay = lambda: True
        fake.setTcpKeepAlive = lambda on: calls.append(("keepalive", on))
        fake.getTcpKeepAlive = lambda: False
        fake.loseWriteConnection = lambda: calls.append(("half-close", None))
        self.receiver.setTcpNoDelay(True)
        self.receiver.setTcpKeepAlive(True)
        self.receiver.loseWriteConnection()
        self.assertEqual(calls, [("nodelay", True), ("keepalive", True), ("half-close", None)])
        self.assertTrue(self.receiver.getTcpNoDelay())
        self.assertFalse(self.receiver.getTcpKeepAlive())

    def test_connection_lost(self) -> None:
        """The wrapped protocol hears of the end with its reason."""
        reason = Failure(ConnectionDone())
        self.receiver.connectionLost(reason)
        self.assertIs(self.protocol.lost, reason)


class WrapperRefusalTests(_WrapperCase):
    """Every way a connection is refused."""

    def test_untrusted_peer(self) -> None:
        """A peer outside the trusted networks gets no protocol (the port closes it), with a log line."""
        with capturedLogs() as events:
            for peer in (
                IPv4Address("TCP", "10.0.1.5", 40000),
                IPv6Address("TCP", "fe00::5", 40000),
                IPv6Address("TCP", "::ffff:10.0.1.5", 40000),
                UNIXAddress(b"/run/haproxy.sock"),
                None,
            ):
                self.assertIsNone(self.factory.buildProtocol(peer), peer)
        messages = [formatEvent(event) for event in events if event["log_level"] == LogLevel.warn]
        self.assertEqual(messages[0], "connection from 10.0.1.5:40000, not a trusted proxy: closed")
        self.assertEqual(messages[1], "connection from [fe00::5]:40000, not a trusted proxy: closed")
        self.assertEqual(len(messages), 5)
        self.assertEqual(self.wrapped.built_for, [])

    def test_no_trusted_networks(self) -> None:
        """With no trusted network nobody gets in."""
        factory = ProxyProtocolFactory(self.wrapped, [], self.clock)
        self.assertIsNone(factory.buildProtocol(PROXY_PEER))

    def test_bad_headers(self) -> None:
        """Garbage, bad v1 lines and bad v2 headers abort the connection with the reason logged."""
        cases = [
            (LINE, "not a PROXY protocol header"),
            (b"PROXY " + b"x" * 200, "v1 header without CRLF in its first 107 bytes"),
            (b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", "v1 header with bad TCP4 source address b'1.2.3.999'"),
            (b"PROXY TCP6 ::1 ::1::2 1 2\r\n", "v1 header with bad TCP6 destination address b'::1::2'"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "v1 header with bad source port b'65536'"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 007\r\n", "v1 header with bad destination port b'007'"),
            (v2_header(0x11, 0x11, b"\x00" * 12), "v2 signature with protocol version 1, not 2"),
            (
                V2_SIGNATURE + b"\x21\x11\x40\x00",
                "v2 header announces 16384 address bytes, over the limit of 1024",
            ),
            (
                v2_header(0x21, 0x12, b"\x00" * 12),
                "v2 header for UDP over IPv4: only TCP over IPv4 or IPv6 is served",
            ),
        ]
        for data, reason in cases:
            self.wrapped.built_for.clear()
            receiver, transport = self.connect()
            with capturedLogs() as events:
                receiver.dataReceived(data)
                receiver.dataReceived(b"ignored after the refusal")
            self.assertTrue(transport.disconnected, data)
            self.assert_refused(data, reason, events)

    def test_bad_header_byte_by_byte(self) -> None:
        """A bad header is refused as soon as the byte that makes it bad arrives."""
        receiver, transport = self.connect()
        data = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"
        with capturedLogs() as events:
            for i in range(len(data) - 1):
                receiver.dataReceived(data[i : i + 1])
            self.assertFalse(transport.disconnecting)
            receiver.dataReceived(b"\n")
        self.assertTrue(transport.disconnected)
        self.assert_refused(data, "v1 header ends in LF without CR", events)

    def test_deadline(self) -> None:
        """A proxy that never completes its header is dropped when the deadline passes."""
        receiver, transport = self.connect()
        receiver.dataReceived(TCP4_LINE[:10])
        self.clock.advance(HEADER_TIMEOUT - 0.5)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            self.clock.advance(0.5)
        self.assertTrue(transport.disconnected)
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["proxy 10.0.0.5:40000 sent no whole PROXY header in 10.0 s: closed"],
        )
        receiver.dataReceived(TCP4_LINE[10:])
        self.assertEqual(self.wrapped.built_for, [])

    def test_deadline_silent_peer(self) -> None:
        """A proxy that sends nothing at all is dropped too, after the configured time."""
        factory = ProxyProtocolFactory(self.wrapped, TRUSTED, self.clock, header_timeout=3)
        receiver = factory.buildProtocol(PROXY_PEER)
        assert receiver is not None
        transport = StringTransport(hostAddress=POOL_HOST, peerAddress=PROXY_PEER)
        receiver.makeConnection(transport)
        with capturedLogs():
            self.clock.advance(3)
        self.assertTrue(transport.disconnected)

    def test_lost_before_header(self) -> None:
        """A connection lost before its header cancels the deadline and builds nothing."""
        receiver, _ = self.connect()
        receiver.dataReceived(b"PROXY ")
        receiver.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.wrapped.built_for, [])

    def test_wrapped_factory_refuses(self) -> None:
        """A client the wrapped factory refuses is dropped."""
        self.wrapped.refuse = True
        receiver, transport = self.connect()
        with capturedLogs() as events:
            receiver.dataReceived(TCP4_LINE + LINE)
        self.assertTrue(transport.disconnected)
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["proxy 10.0.0.5:40000: 203.0.113.7:51234 refused by the port"],
        )

    def test_wrapped_closes_at_once(self) -> None:
        """Bytes after the header are not given to a protocol that hung up in connectionMade."""
        self.wrapped.protocol_class = ClosingProtocol
        receiver, transport = self.connect()
        receiver.dataReceived(TCP4_LINE + LINE)
        self.assertEqual(self.only_protocol().received, b"")
        self.assertTrue(transport.disconnecting)


class WrappedFactoryTests(unittest.SynchronousTestCase):
    """The factory passes starts and stops on."""

    def test_start_stop(self) -> None:
        """doStart and doStop reach the wrapped factory."""
        calls: list[str] = []

        class Wrapped(Factory[Protocol]):
            def startFactory(self) -> None:
                calls.append("start")

            def stopFactory(self) -> None:
                calls.append("stop")

        factory = ProxyProtocolFactory(Wrapped(), TRUSTED, task.Clock())
        factory.doStart()
        factory.doStop()
        self.assertEqual(calls, ["start", "stop"])


class StratumThroughProxyTests(unittest.SynchronousTestCase):
    """The real StratumProtocol behind the wrapper."""

    def test_miner_address_and_subscribe(self) -> None:
        """The Stratum connection records the miner's address and answers through the wrapper."""
        clock = task.Clock()
        config = pool_config()
        pool = FakePool(registry_for(config))
        server = StratumPool(
            config,
            pool,
            pool,
            cast(HashPoolService, InlineHashing()),
            FakeRecorder(clock),
            clock,
        )
        factory = ProxyProtocolFactory(server.factory(config.ports[0]), TRUSTED, clock)
        receiver = factory.buildProtocol(PROXY_PEER)
        assert receiver is not None
        transport = RecordingTransport(hostAddress=POOL_HOST, peerAddress=PROXY_PEER)
        receiver.makeConnection(transport)
        self.assertEqual(set(server.connections), set())
        receiver.dataReceived(TCP4_LINE + LINE)
        (stratum,) = server.connections
        self.assertEqual(stratum.peer, "203.0.113.7")
        self.assertTrue(transport.no_delay)  # set on the proxied TCP connection through the wrapper
        self.assertIs(transport.producer, stratum)  # registered through the wrapper
        reply = json.loads(transport.value().splitlines()[0])
        self.assertEqual(reply["id"], 1)
        self.assertIsNone(reply["error"])
        receiver.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(set(server.connections), set())


@implementer(IPushProducer)
class LineCatcher(LineOnlyReceiver):
    """A server protocol like Stratum's: registers as producer, answers each line."""

    delimiter = b"\n"

    def __init__(self, seen: defer.Deferred[tuple[IAddress, bytes]], gone: defer.Deferred[None]) -> None:
        self.seen = seen
        self.gone = gone

    def connectionMade(self) -> None:
        IConsumer(self.transport).registerProducer(self, True)  # the wrapper must say it is a consumer

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass

    def lineReceived(self, line: bytes) -> None:
        assert self.transport is not None
        self.seen.callback((self.transport.getPeer(), line))
        self.sendLine(b"ok")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.gone.callback(None)


class Sender(Protocol):
    """The proxy's side: sends its bytes, collects the first answer, sees the end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.answer: defer.Deferred[bytes] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        if not self.answer.called:
            self.answer.callback(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(None)


class LoopbackTests(unittest.TestCase):
    """Over real TCP on 127.0.0.1."""

    async def send(self, factory: ProxyProtocolFactory, data: bytes) -> Sender:
        """Listen with ``factory`` on a free port and connect a Sender of ``data`` to it."""
        port: IListeningPort = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        endpoint = TCP4ClientEndpoint(cast(IReactorTCP, reactor), "127.0.0.1", address.port, timeout=5)
        sender = Sender(data)
        await connectProtocol(endpoint, sender)
        return sender

    async def exchange(self, header: bytes) -> tuple[IAddress, bytes, bytes]:
        """Send ``header`` and a line to a wrapped listener; what the server saw and answered."""
        seen: defer.Deferred[tuple[IAddress, bytes]] = defer.Deferred()
        gone: defer.Deferred[None] = defer.Deferred()
        wrapped = Factory.forProtocol(lambda: LineCatcher(seen, gone))
        loopback = [ipaddress.ip_network("127.0.0.0/8")]
        sender = await self.send(
            ProxyProtocolFactory(wrapped, loopback, cast(IReactorTime, reactor)), header + b"hello miner\n"
        )
        peer, line = await seen
        answer = await sender.answer
        assert sender.transport is not None
        sender.transport.loseConnection()
        await gone
        await sender.closed
        return peer, line, answer

    async def test_v1(self) -> None:
        """A v1 header, then a line: the server protocol sees the client's address and the line."""
        peer, line, answer = await self.exchange(TCP4_LINE)
        self.assertEqual(peer, IPv4Address("TCP", "203.0.113.7", 51234))
        self.assertEqual((line, answer), (b"hello miner", b"ok\n"))

    async def test_v2(self) -> None:
        """A v2 IPv6 header, then a line: the same, in IPv6."""
        peer, line, answer = await self.exchange(v2_tcp(TCP6_ADDRESSES))
        self.assertEqual(peer, IPv6Address("TCP", "2001:db8::7", 51234))
        self.assertEqual((line, answer), (b"hello miner", b"ok\n"))

    async def test_untrusted_peer(self) -> None:
        """A peer outside the trusted networks is closed by the port, its header unread."""
        wrapped = RecordingFactory()
        elsewhere = [ipaddress.ip_network("192.0.2.0/24")]
        with capturedLogs() as events:
            sender = await self.send(
                ProxyProtocolFactory(wrapped, elsewhere, cast(IReactorTime, reactor)), TCP4_LINE + LINE
            )
            await sender.closed
        self.assertFalse(sender.answer.called)
        self.assertEqual(wrapped.built_for, [])
        self.assertTrue(
            any(formatEvent(event).endswith(", not a trusted proxy: closed") for event in events),
            [formatEvent(event) for event in events],
        )
