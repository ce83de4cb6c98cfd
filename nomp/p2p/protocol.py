"""NodeProtocol: frames bytes into messages for a Session and its replies back into bytes."""

from __future__ import annotations

from typing import Protocol as Interface

from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from nomp.p2p.session import Session
from nomp.p2p.wire import MAX_PAYLOAD, Version, WireError, decode_frames, encode_frame


class NodeEvents(Interface):
    """What the listener hears of one connection."""

    def handshake_done(self, protocol: NodeProtocol, node: Version) -> None: ...

    def blocks_announced(self, protocol: NodeProtocol, hashes: list[str], via: str) -> None: ...

    def message_ignored(self, protocol: NodeProtocol, command: str) -> None: ...

    def connection_lost(self, protocol: NodeProtocol, reason: Failure) -> None: ...


class NodeProtocol(Protocol):
    """One connection to a node.

    A message that does not decode ends the connection at once: ``refused``
    holds why, for the listener to tell (the stream cannot be trusted past
    it). ``received`` counts the bytes the node sent.
    """

    def __init__(
        self, session: Session, magic: bytes, events: NodeEvents, max_payload: int = MAX_PAYLOAD
    ) -> None:
        self.session = session
        self._magic = magic
        self._events = events
        self._max_payload = max_payload
        self._buffer = bytearray()
        self.received = 0
        self.refused: WireError | None = None

    def connectionMade(self) -> None:
        self._send(self.session.opening())

    def dataReceived(self, data: bytes) -> None:
        if self.refused is not None:
            return  # closing: nothing after a bad message is read
        self.received += len(data)
        self._buffer += data
        try:
            frames, used = decode_frames(self._buffer, self._magic, self._max_payload)
        except WireError as e:
            self._refuse(e)
            return
        del self._buffer[:used]
        for frame in frames:
            try:
                reaction = self.session.receive(frame)
            except WireError as e:
                self._refuse(e)
                return
            self._send(reaction.send)
            if reaction.ready is not None:
                self._events.handshake_done(self, reaction.ready)
            if reaction.blocks:
                self._events.blocks_announced(self, reaction.blocks, reaction.via)
            elif reaction.ignored:
                self._events.message_ignored(self, reaction.ignored)

    def _send(self, messages: list[tuple[str, bytes]]) -> None:
        assert self.transport is not None
        for command, payload in messages:
            self.transport.write(encode_frame(self._magic, command, payload))

    def _refuse(self, error: WireError) -> None:
        self.refused = error
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._events.connection_lost(self, reason)
