"""One connection to a node, as a pure state machine: frames in, replies and news out.

The handshake is ours: ``opening()`` is our ``version``; the node's
``version`` gets a ``verack``, and its ``verack`` completes the handshake,
after which we ask for block announcements as headers (BIP130
``sendheaders``) and, when the pool knows the chain's tip, for the headers
after it (``getheaders``): that brings the pool up to date after a
reconnection, and tells the node which headers we have, without which it
announces blocks by ``inv`` whatever we asked. Each block announced by
``inv`` is answered with a ``getheaders`` from it for the same reason.

Then: ``ping`` is answered with a ``pong`` of its nonce; an ``inv`` naming
blocks (MSG_BLOCK, with or without the witness or MWEB flag) or a non-empty
``headers`` is news of a block; everything else is ignored. A message that
does not decode, or comes out of order, raises WireError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nomp.p2p.wire import (
    Frame,
    Version,
    WireError,
    decode_headers,
    decode_inv,
    decode_nonce,
    decode_version,
    display_hash,
    encode_getheaders,
    encode_nonce,
    encode_version,
    header_hash,
    wire_hash,
)

PROTOCOL_VERSION = 70015  # ours: past sendheaders (70012), before wtxidrelay (70016)
SENDHEADERS_VERSION = 70012
MIN_NODE_VERSION = 60001  # BIP31: pings carry a nonce to echo

Outgoing = tuple[str, bytes]  # command, payload


@dataclass(frozen=True, slots=True)
class Reaction:
    """What one message from the node asks of us."""

    send: list[Outgoing] = field(default_factory=list)
    ready: Version | None = None  # the node's version, when this message completed the handshake
    blocks: list[str] = field(default_factory=list)  # announced block hashes (RPC hex), newest last
    via: str = ""  # "inv" or "headers" when ``blocks``
    ignored: str = ""  # the command, when the message means nothing to us


class Session:
    """The state of one connection.

    ``hello`` is our ``version``; ``tip`` gives the hash (RPC hex) of the
    best block the pool knows, or None.
    """

    def __init__(self, hello: Version, tip: Callable[[], str | None]) -> None:
        self.hello = hello
        self._tip = tip
        self.node: Version | None = None  # the node's version, once received
        self.ready = False  # the handshake is complete

    def opening(self) -> list[Outgoing]:
        return [("version", encode_version(self.hello))]

    def receive(self, frame: Frame) -> Reaction:
        command = frame.command
        if command == "version":
            return self._version(frame.payload)
        if self.node is None:
            raise WireError(f"{command} before version")
        if command == "verack":
            return self._verack(frame.payload)
        if command == "ping":
            return Reaction(send=[("pong", encode_nonce(decode_nonce(frame.payload)))])
        if command == "inv":
            blocks = [item.hash for item in decode_inv(frame.payload) if item.is_block]
            if not blocks:
                return Reaction(ignored=command)
            # Asking for what follows the block tells the node we have its
            # header: it announces the next one as a header.
            return Reaction(
                send=self._getheaders(blocks[-1]), blocks=[display_hash(h) for h in blocks], via="inv"
            )
        if command == "headers":
            headers = decode_headers(frame.payload)
            if not headers:
                return Reaction(ignored=command)  # nothing after our tip
            return Reaction(blocks=[header_hash(h) for h in headers], via="headers")
        return Reaction(ignored=command)

    def _version(self, payload: bytes) -> Reaction:
        if self.node is not None:
            raise WireError("a second version")
        node = decode_version(payload)
        if node.version < MIN_NODE_VERSION:
            raise WireError(f"the node's protocol version {node.version} is below {MIN_NODE_VERSION}")
        self.node = node
        return Reaction(send=[("verack", b"")])

    def _verack(self, payload: bytes) -> Reaction:
        assert self.node is not None
        if self.ready:
            raise WireError("a second verack")
        if payload:
            raise WireError(f"verack with a payload of {len(payload)} bytes")
        self.ready = True
        send: list[Outgoing] = []
        if self.node.version >= SENDHEADERS_VERSION:
            send.append(("sendheaders", b""))
            tip = self._tip()
            if tip is not None:
                send += self._getheaders(wire_hash(tip))
        return Reaction(send=send, ready=self.node)

    def _getheaders(self, known: bytes) -> list[Outgoing]:
        assert self.node is not None
        if self.node.version < SENDHEADERS_VERSION:
            return []  # it would announce blocks by inv anyway
        return [("getheaders", encode_getheaders(self.hello.version, [known]))]
