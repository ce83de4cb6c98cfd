"""The PROXY protocol (HAProxy, versions 1 and 2) for ports behind a load balancer.

A proxy that relays miners' TCP connections puts one header in front of each
stream, saying whom it relays. ``parse_proxy_header`` reads that header and
touches no I/O; ``ProxyProtocolFactory`` wraps a listening port's factory so
that each connection reads the header first and the wrapped protocol then sees
the miner's address from ``transport.getPeer()``.

Written from haproxy's ``doc/proxy-protocol.txt``. Choices the specification
leaves to the receiver:

- A header split over several reads is accepted (the recommended tolerance);
  a deadline, not a single read, bounds how long it may take.
- v1 ``UNKNOWN``, v2 ``LOCAL`` and v2 ``PROXY`` with an unspecified family or
  protocol are accepted and keep the connection's own addresses.
- v2 ``PROXY`` for UDP or UNIX sockets is refused: the port serves TCP, so a
  proxy announcing datagrams or local sockets is misconfigured, and accepting
  it would put all its clients under the proxy's one address, where banning
  one miner bans every other.
- v2 TLVs are skipped, not read (not even a CRC32C one).
- The v2 address block is bounded (``V2_MAX_ADDRESS_LENGTH``), well under the
  format's 65535, so a peer cannot make the pool buffer much before checking.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the longest line, CRLF included: UNKNOWN with two full IPv6 addresses
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_LENGTH = 16  # signature, version and command, family and protocol, length
# IPv6 addresses take 36 bytes; the rest is room for TLVs (SSL details, an
# AWS endpoint id, a unique id of up to 128 bytes).
V2_MAX_ADDRESS_LENGTH = 1024
HEADER_TIMEOUT = 10.0  # seconds; the specification asks for at least 3, a TCP retransmit

_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")  # decimal, no leading zeroes
_V2_LOCAL = 0x0
_V2_PROXY = 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = range(4)
_PROTO_UNSPEC, _PROTO_STREAM, _PROTO_DGRAM = range(3)
_V2_REFUSED = {
    (_AF_INET, _PROTO_DGRAM): "UDP over IPv4",
    (_AF_INET6, _PROTO_DGRAM): "UDP over IPv6",
    (_AF_UNIX, _PROTO_STREAM): "UNIX stream",
    (_AF_UNIX, _PROTO_DGRAM): "UNIX datagram",
}


@dataclass(frozen=True, slots=True)
class NeedMoreData:
    """The bytes so far are the start of a header: read more, then parse again."""


@dataclass(frozen=True, slots=True)
class ProxiedAddresses:
    """The relayed connection's endpoints: the client and what it connected to."""

    source: IPAddress
    source_port: int
    destination: IPAddress
    destination_port: int


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete, valid header of ``length`` bytes; the stream's own data
    starts after it.

    ``addresses`` is None for a connection that relays no client (v1
    ``UNKNOWN``, v2 ``LOCAL`` such as a health check, v2 unspecified family):
    the connection's own addresses stand.
    """

    length: int
    version: Literal[1, 2]
    addresses: ProxiedAddresses | None


@dataclass(frozen=True, slots=True)
class InvalidProxyHeader:
    """Not a PROXY header, or one this receiver refuses; ``reason`` says why."""

    reason: str


ProxyHeaderResult = NeedMoreData | ProxyHeader | InvalidProxyHeader
NEED_MORE_DATA = NeedMoreData()


def parse_proxy_header(data: bytes, max_v2_address_length: int = V2_MAX_ADDRESS_LENGTH) -> ProxyHeaderResult:
    """What the first bytes of a connection hold: the start of a header, a
    whole header (then ``data[header.length:]`` is the stream's own data), or
    something to refuse. Never raises on any input."""
    if not data:
        return NEED_MORE_DATA
    if V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]):
        return _parse_v2(data, max_v2_address_length)
    if V1_PREFIX.startswith(data[: len(V1_PREFIX)]):
        return _parse_v1(data)
    return InvalidProxyHeader("not a PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeaderResult:
    line_feed = data.find(b"\n", 0, V1_MAX_LENGTH)
    if line_feed == -1:
        if len(data) >= V1_MAX_LENGTH:
            return InvalidProxyHeader(f"v1 header without CRLF in its first {V1_MAX_LENGTH} bytes")
        return NEED_MORE_DATA
    if data[line_feed - 1] != ord("\r"):
        return InvalidProxyHeader("v1 header ends in LF without CR")
    length = line_feed + 1
    line = data[len(V1_PREFIX) : line_feed - 1]
    if b"\r" in line:
        return InvalidProxyHeader("v1 header holds a CR before its CRLF")
    protocol, _, fields = line.partition(b" ")
    if protocol == b"UNKNOWN":
        return ProxyHeader(length, 1, None)  # the rest of the line is to be ignored
    if protocol not in (b"TCP4", b"TCP6"):
        return InvalidProxyHeader(f"v1 header for protocol {protocol!r}, not TCP4, TCP6 or UNKNOWN")
    parts = fields.split(b" ")
    if len(parts) != 4:
        return InvalidProxyHeader(
            "v1 header wants source and destination addresses, then ports, each after one space"
        )
    source, destination = (_v1_address(part, protocol) for part in parts[:2])
    source_port, destination_port = (_v1_port(part) for part in parts[2:])
    if source is None:
        return InvalidProxyHeader(f"v1 header with bad {protocol.decode()} source address {parts[0]!r}")
    if destination is None:
        return InvalidProxyHeader(f"v1 header with bad {protocol.decode()} destination address {parts[1]!r}")
    if source_port is None:
        return InvalidProxyHeader(f"v1 header with bad source port {parts[2]!r}")
    if destination_port is None:
        return InvalidProxyHeader(f"v1 header with bad destination port {parts[3]!r}")
    return ProxyHeader(length, 1, ProxiedAddresses(source, source_port, destination, destination_port))


def _v1_address(text: bytes, protocol: bytes) -> IPAddress | None:
    # ipaddress would take an IPv6 zone ("fe80::1%eth0"), which the format has not.
    if not text.isascii() or b"%" in text:
        return None
    try:
        if protocol == b"TCP4":
            return ipaddress.IPv4Address(text.decode())  # refuses leading zeroes
        return ipaddress.IPv6Address(text.decode())
    except ValueError:
        return None


def _v1_port(text: bytes) -> int | None:
    if _V1_PORT.fullmatch(text) is None:
        return None
    port = int(text)
    return port if port <= 0xFFFF else None


def _parse_v2(data: bytes, max_address_length: int) -> ProxyHeaderResult:
    if len(data) < V2_FIXED_LENGTH:
        return NEED_MORE_DATA
    version_command, family_protocol, address_length = struct.unpack_from("!BBH", data, len(V2_SIGNATURE))
    version, command = version_command >> 4, version_command & 0x0F
    if version != 2:
        return InvalidProxyHeader(f"v2 signature with protocol version {version}, not 2")
    if command not in (_V2_LOCAL, _V2_PROXY):
        return InvalidProxyHeader(f"v2 header with unknown command {command:#x}")
    if address_length > max_address_length:
        return InvalidProxyHeader(
            f"v2 header announces {address_length} address bytes, over the limit of {max_address_length}"
        )
    length = V2_FIXED_LENGTH + address_length
    if len(data) < length:
        return NEED_MORE_DATA
    if command == _V2_LOCAL:
        return ProxyHeader(length, 2, None)  # the family and addresses are to be ignored
    family, protocol = family_protocol >> 4, family_protocol & 0x0F
    if family > _AF_UNIX or protocol > _PROTO_DGRAM:
        return InvalidProxyHeader(f"v2 header with unknown family and protocol {family_protocol:#04x}")
    if family == _AF_UNSPEC or protocol == _PROTO_UNSPEC:
        return ProxyHeader(length, 2, None)
    refused = _V2_REFUSED.get((family, protocol))
    if refused is not None:
        return InvalidProxyHeader(f"v2 header for {refused}: only TCP over IPv4 or IPv6 is served")
    ip_size = 4 if family == _AF_INET else 16
    needed = 2 * ip_size + 4
    if address_length < needed:
        name = "IPv4" if family == _AF_INET else "IPv6"
        return InvalidProxyHeader(
            f"v2 header for TCP over {name} with {address_length} address bytes, under {needed}"
        )
    start = V2_FIXED_LENGTH
    raw_source = data[start : start + ip_size]
    raw_destination = data[start + ip_size : start + 2 * ip_size]
    source_port, destination_port = struct.unpack_from("!HH", data, start + 2 * ip_size)
    source: IPAddress
    destination: IPAddress
    if family == _AF_INET:
        source, destination = ipaddress.IPv4Address(raw_source), ipaddress.IPv4Address(raw_destination)
    else:
        source, destination = ipaddress.IPv6Address(raw_source), ipaddress.IPv6Address(raw_destination)
    return ProxyHeader(length, 2, ProxiedAddresses(source, source_port, destination, destination_port))


# The Twisted side.


def tcp_address(ip: IPAddress, port: int) -> IPv4Address | IPv6Address:
    """The Twisted address of a relayed endpoint. An IPv4 client that the
    proxy saw through an IPv6 socket (``::ffff:a.b.c.d``) comes out as IPv4,
    so one miner has one address whichever way the proxy listens."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return IPv4Address("TCP", str(ip), port)
    return IPv6Address("TCP", str(ip), port)


def describe(address: IAddress | None) -> str:
    """``host:port`` for logs (``[host]:port`` for IPv6)."""
    if address is None:
        return "an unknown address"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    return str(address)


def _peer_ip(address: IAddress) -> IPAddress | None:
    """The IP of a connecting peer, IPv4 for an IPv4-mapped one; None for a
    peer that has no IP (a UNIX socket)."""
    if not isinstance(address, IPv4Address | IPv6Address):
        return None
    try:
        ip = ipaddress.ip_address(address.host.partition("%")[0])  # without an IPv6 zone
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ProxyProtocolFactory(Factory["ProxyHeaderReceiver"]):
    """Wraps the factory of a port that sits behind PROXY-speaking proxies.

    Only peers in ``trusted_proxies`` are let in; any other is closed before
    a byte is read, since whoever may send a header chooses the address the
    pool believes. Each connection must send its header within
    ``header_timeout`` seconds of ``clock``; then ``wrapped_factory`` builds
    the protocol, given the client's address.
    """

    log = Logger()
    noisy = False

    def __init__(
        self,
        wrapped_factory: IProtocolFactory,
        trusted_proxies: Iterable[IPNetwork],
        clock: IReactorTime,
        header_timeout: float = HEADER_TIMEOUT,
        max_v2_address_length: int = V2_MAX_ADDRESS_LENGTH,
    ) -> None:
        self.wrapped_factory = wrapped_factory
        self.trusted_proxies = tuple(trusted_proxies)
        self.clock = clock
        self.header_timeout = header_timeout
        self.max_v2_address_length = max_v2_address_length

    def trusts(self, address: IAddress | None) -> bool:
        """Whether ``address`` is one of the proxies allowed to send headers."""
        ip = _peer_ip(address) if address is not None else None
        return ip is not None and any(ip in network for network in self.trusted_proxies)

    def doStart(self) -> None:
        self.wrapped_factory.doStart()
        super().doStart()

    def doStop(self) -> None:
        self.wrapped_factory.doStop()
        super().doStop()

    def buildProtocol(self, addr: IAddress | None) -> ProxyHeaderReceiver | None:
        if not self.trusts(addr):
            # None makes the port close the socket at once.
            self.log.warn("connection from {peer}, not a trusted proxy: closed", peer=describe(addr))
            return None
        return ProxyHeaderReceiver(self)


@implementer(ITCPTransport, IConsumer, IPushProducer)
class ProxyHeaderReceiver(Protocol):
    """One connection from a proxy: reads the PROXY header, then builds the
    wrapped protocol and serves as its transport.

    The wrapped protocol is made only once the header is complete, so its
    ``connectionMade`` already sees the client's address. As its transport
    this passes everything to the TCP connection underneath, except
    ``getPeer`` (the client) and ``getHost`` (the address the client
    connected to on the proxy), which the header decides.
    """

    log = Logger()

    def __init__(self, factory: ProxyProtocolFactory) -> None:
        self.proxy_factory = factory
        self.wrapped: IProtocol | None = None
        self.disconnecting = False
        self._received = b""
        self._deadline: IDelayedCall | None = None
        self._peer: IPv4Address | IPv6Address | None = None
        self._host: IPv4Address | IPv6Address | None = None

    @property
    def _connection(self) -> ITCPTransport:
        """The TCP connection from the proxy (a StringTransport in tests, with
        the same methods)."""
        return cast(ITCPTransport, self.transport)

    @property
    def proxy(self) -> str:
        """The proxy's own address, for logs."""
        return describe(self._connection.getPeer())

    def connectionMade(self) -> None:
        factory = self.proxy_factory
        self._deadline = factory.clock.callLater(factory.header_timeout, self._header_overdue)

    def dataReceived(self, data: bytes) -> None:
        if self.wrapped is not None:
            self.wrapped.dataReceived(data)
            return
        if self.disconnecting:
            return
        self._received += data  # bounded: the parser refuses past its limits
        match parse_proxy_header(self._received, self.proxy_factory.max_v2_address_length):
            case NeedMoreData():
                return
            case InvalidProxyHeader(reason=reason):
                self.log.warn(
                    "proxy {proxy} sent a bad PROXY header: {reason}: closed", proxy=self.proxy, reason=reason
                )
                self._drop()
            case ProxyHeader() as header:
                self._start_wrapped(header)

    def _start_wrapped(self, header: ProxyHeader) -> None:
        self._cancel_deadline()
        rest = self._received[header.length :]
        self._received = b""
        addresses = header.addresses
        if addresses is None:
            self._peer, self._host = self._connection.getPeer(), self._connection.getHost()
        else:
            self._peer = tcp_address(addresses.source, addresses.source_port)
            self._host = tcp_address(addresses.destination, addresses.destination_port)
        wrapped = self.proxy_factory.wrapped_factory.buildProtocol(self._peer)
        if wrapped is None:
            self.log.info(
                "proxy {proxy}: {peer} refused by the port", proxy=self.proxy, peer=describe(self._peer)
            )
            self._drop()
            return
        self.wrapped = wrapped
        wrapped.makeConnection(self)
        if rest and not self.disconnecting:
            wrapped.dataReceived(rest)

    def _header_overdue(self) -> None:
        self._deadline = None
        self.log.warn(
            "proxy {proxy} sent no whole PROXY header in {timeout} s: closed",
            proxy=self.proxy,
            timeout=self.proxy_factory.header_timeout,
        )
        self._drop()

    def _drop(self) -> None:
        self._cancel_deadline()
        self._received = b""
        self.abortConnection()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        self.disconnecting = True
        if self.wrapped is not None:
            self.wrapped.connectionLost(reason)

    # ITCPTransport, IConsumer and IPushProducer for the wrapped protocol.

    def getPeer(self) -> IPv4Address | IPv6Address:
        return self._peer if self._peer is not None else self._connection.getPeer()

    def getHost(self) -> IPv4Address | IPv6Address:
        return self._host if self._host is not None else self._connection.getHost()

    def write(self, data: bytes) -> None:
        self._connection.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self._connection.writeSequence(data)

    def loseConnection(self) -> None:
        self.disconnecting = True
        self._connection.loseConnection()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._connection.abortConnection()

    def loseWriteConnection(self) -> None:
        self._connection.loseWriteConnection()

    def getTcpNoDelay(self) -> bool:
        return self._connection.getTcpNoDelay()

    def setTcpNoDelay(self, enabled: bool) -> None:
        self._connection.setTcpNoDelay(enabled)

    def getTcpKeepAlive(self) -> bool:
        return self._connection.getTcpKeepAlive()

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self._connection.setTcpKeepAlive(enabled)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        IConsumer(self.transport).registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        IConsumer(self.transport).unregisterProducer()

    def pauseProducing(self) -> None:
        IPushProducer(self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        IPushProducer(self.transport).resumeProducing()

    def stopProducing(self) -> None:
        IPushProducer(self.transport).stopProducing()
