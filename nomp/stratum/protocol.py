"""StratumProtocol: frames lines, decodes JSON-RPC, encodes replies.

It holds no pool logic: requests go to its ``ConnectionHandler`` (the
pool's Stratum methods), and replies come back through ``reply``,
``reply_error`` and the ``send_*`` methods. ``StratumFactory`` builds one
per accepted connection, with its port's settings resolved once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from nomp.stratum.connection import ConnectionHandler, PortSettings
from nomp.stratum.defence import ip_of
from nomp.stratum.errors import OTHER, StratumError, error_reply
from nomp.stratum.session import MinerSession

MAX_LINE = 8192  # a submit is about 150 bytes; configure requests a few hundred
# A connection that sends malformed lines is read more slowly, so a flood
# of them cannot take the reactor thread from the miners beside it: each
# connection is answered MALFORMED_BURST malformed lines at once, then
# MALFORMED_RATE a second; the lines after wait, unread, in the socket (a
# miner's well-formed lines never count). Bans come on top of this.
MALFORMED_BURST = 20.0
MALFORMED_RATE = 50.0
# Bytes a throttled connection may have waiting, read but not handled, where
# its reads cannot be paused (TLS); past them it is closed. Where reads pause,
# what waits is what the last read brought.
MAX_BACKLOG = 256 * 1024
# Brackets a request may open: a few in any real request. The bound keeps
# what a line may cost from depending on the interpreter's recursion limit
# (json's C scanner recurses on the C stack as deep as the limit lets it,
# and libraries raise that limit).
MAX_BRACKETS = 256
_TRUE_RESULT = b'"result":true,"error":null}\n'
# The scanner json.loads uses (the stubs do not declare the attribute).
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
# First bytes on which json.loads guesses an encoding other than UTF-8 (a
# BOM's first byte, a NUL) or skips whitespace before the value.
_NOT_PLAIN = frozenset(b"\x00\xef\xfe\xff \t\n\r")


def _parse(line: bytes) -> Any:
    """json.loads(line), sparing its guess of the encoding for the usual
    line, and its formatted error for a line that is not JSON.

    A line that opens with none of ``_NOT_PLAIN`` and whose second byte is
    not NUL is one json.loads reads as UTF-8 (surrogates allowed): it is
    scanned here as json.loads scans it, and a plain ValueError says it is
    not one JSON value. Anything else goes to json.loads.
    """
    if line and line[0] not in _NOT_PLAIN and line[1:2] != b"\x00":
        text = line.decode("utf-8", "surrogatepass")
        try:
            value, end = _scan(text, 0)
        except StopIteration:  # what the scanner raises when no value starts here
            raise ValueError("not JSON") from None
        if end != len(text) and text[end:].strip(" \t\n\r"):  # JSON's whitespace may follow
            raise ValueError("more than one JSON value")
        return value
    return json.loads(line)


@implementer(IPushProducer)
class StratumProtocol(LineOnlyReceiver, TimeoutMixin):
    """One miner's connection."""

    log = Logger()
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(
        self,
        handler: ConnectionHandler,
        settings: PortSettings,
        session: MinerSession,
        clock: IReactorTime,
        idle_timeout: float,
        ip: str | None = None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.session = session
        self.clock = clock
        self._idle_timeout = idle_timeout
        self.peer: str = ""
        self.ip = ip  # the normalised IP its bans and limits go by (None: not an IP peer)
        self._send: Callable[[bytes], int] | None = None  # the socket's send, for plain TCP
        self._fd: int | None = None  # its file descriptor, for broadcasts
        # While a read is handled: the replies it makes, sent together when
        # it is done (one send per read, whatever the number of lines).
        self._replies: list[bytes] | None = None
        self._malformed_allowance = MALFORMED_BURST  # malformed lines it may send now
        self._allowance_at = clock.seconds()
        self._throttle: IDelayedCall | None = None  # set while its lines wait
        self._reads_paused = False  # the throttle paused the transport's reads

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """TimeoutMixin's timer, on the injected clock."""
        call: IDelayedCall = self.clock.callLater(period, func)
        return call

    @property
    def closing(self) -> bool:
        transport = self.transport
        return transport is None or not self.connected or bool(getattr(transport, "disconnecting", False))

    def peer_port(self) -> int | None:
        transport = self.transport
        port = getattr(transport.getPeer(), "port", None) if transport is not None else None
        return port if isinstance(port, int) else None

    @property
    def _tcp(self) -> Any:
        """The transport with its TCP-only methods (producer, abort)."""
        return self.transport

    def connectionMade(self) -> None:
        assert self.transport is not None
        address: IAddress = self.transport.getPeer()
        self.peer = f"{getattr(address, 'host', address)}"
        # Told to pause when our writes back up: a miner that stops reading
        # is dropped instead of growing the pool's memory.
        self._tcp.registerProducer(self, True)
        # Replies leave at once instead of waiting for the miner's next
        # packet or delayed acknowledgement (Nagle): each read's replies go
        # out in one send, so this costs no extra packets.
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            try:
                no_delay(True)
            except OSError as e:  # the socket already gone: connectionLost follows
                self.log.debug("miner {peer}: TCP_NODELAY not set: {error}", peer=self.peer, error=e)
        if isinstance(self.transport, tcp.Connection) and not self.transport.TLS:
            self._send = self.transport.socket.send
            self._fd = self.transport.socket.fileno()
        self.setTimeout(self._idle_timeout)
        self.handler.connected(self)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.setTimeout(None)
        if self._throttle is not None and self._throttle.active():
            self._throttle.cancel()
        self._throttle = None
        self.handler.disconnected(self)

    # IPushProducer: the transport calls these about our writes.
    def pauseProducing(self) -> None:
        self.log.warn("miner {peer} is not reading its data: dropped", peer=self.peer)
        self._tcp.abortConnection()

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass

    def timeoutConnection(self) -> None:
        self.log.info("miner {peer} idle: dropped", peer=self.peer)
        self._tcp.abortConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.log.warn("miner {peer} sent a line over {limit} bytes: dropped", peer=self.peer, limit=MAX_LINE)
        self.reply_error(None, StratumError(OTHER, f"line longer than {MAX_LINE} bytes"))
        self._buffer = b""
        self.close()

    def close(self) -> None:
        """Close after what is queued is sent.

        A TLS transport does not close while a producer is registered, and
        it goes on delivering data meanwhile: unregister first.
        """
        if self.transport is None:
            return
        self._send_replies()
        self._tcp.unregisterProducer()
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.transport is not None and self.transport.disconnecting:  # type: ignore[attr-defined]
            return  # closing: nothing more is read or answered
        self._replies = []
        try:
            self._buffer += data
            self._take_lines()
        finally:
            self._send_replies()
            self._replies = None

    def _take_lines(self) -> None:
        """Handle the whole lines received, as LineOnlyReceiver does, up to a
        throttle; the rest stays in the buffer for when it ends."""
        buffer, start = self._buffer, 0
        transport: Any = self.transport
        while self._throttle is None:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if transport.disconnecting:
                self._buffer = b""  # a line closed the connection: the ones after are not read
                return
            line, start = buffer[start:end], end + 1
            if len(line) > self.MAX_LENGTH:
                self.lineLengthExceeded(line)
                return
            self.lineReceived(line)
        self._buffer = buffer[start:] if start else buffer
        if transport.disconnecting:
            return
        if self._throttle is None:
            if len(self._buffer) > self.MAX_LENGTH:
                self.lineLengthExceeded(self._buffer)
        elif not self._reads_paused and len(self._buffer) > MAX_BACKLOG:
            self.log.warn("miner {peer}: too much malformed input waiting: dropped", peer=self.peer)
            self._buffer = b""
            self.reply_error(None, StratumError(OTHER, "too much malformed input"))
            self.close()

    def _spend_allowance(self) -> None:
        """One malformed line more: past the allowance, its lines wait."""
        now = self.clock.seconds()
        refilled = self._malformed_allowance + (now - self._allowance_at) * MALFORMED_RATE
        self._malformed_allowance = min(MALFORMED_BURST, refilled) - 1
        self._allowance_at = now
        if self._malformed_allowance >= 0 or self._throttle is not None or self.closing:
            return
        self._throttle = self.clock.callLater(-self._malformed_allowance / MALFORMED_RATE, self._unthrottle)
        pause = getattr(self.transport, "pauseProducing", None)
        if pause is not None:
            pause()  # the kernel holds the rest, and TCP slows the sender
            self._reads_paused = True

    def _unthrottle(self) -> None:
        self._throttle = None
        if self.closing:
            return
        if self._reads_paused:
            self._reads_paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]
        self.dataReceived(b"")  # the lines that waited

    def _send_replies(self) -> None:
        """Send what the read being handled has answered so far."""
        replies = self._replies
        if replies:
            self._replies = []
            self._send_now(replies[0] if len(replies) == 1 else b"".join(replies))

    def lineReceived(self, line: bytes) -> None:
        self.resetTimeout()
        line = line.strip()
        if not line:
            return
        if len(line) > MAX_BRACKETS and line.count(b"[") + line.count(b"{") > MAX_BRACKETS:
            self._malformed(None, "invalid JSON")
            return
        try:
            message = _parse(line)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
            self._malformed(None, "invalid JSON")
            return
        if not isinstance(message, dict):
            self._malformed(None, "a request must be a JSON object")
            return
        request_id = message.get("id")
        method = message.get("method")
        params = message.get("params")
        if params is None:
            params = []  # some miners send null for no params
        if isinstance(request_id, float):
            request_id = None  # not an id a miner sends; answered, but not echoed
        elif not isinstance(request_id, int | str | None) or isinstance(request_id, bool):
            # An object, an array or a boolean: not a JSON-RPC id. Answering
            # it would grant what was asked under an id the miner cannot match.
            self._malformed(None, "id must be a number, a string or null")
            return
        if not isinstance(method, str):
            self._malformed(request_id, "missing method")
            return
        if not isinstance(params, list):
            self._malformed(request_id, "params must be a list")
            return
        try:
            self._dispatch(request_id, method, params, message)
        except StratumError as e:
            self.reply_error(request_id, e)
        except Exception:
            self.log.failure("request {method} from {peer} failed", method=method, peer=self.peer)
            self.reply_error(request_id, StratumError(OTHER, "internal error"))

    def _dispatch(self, request_id: Any, method: str, params: list[Any], message: dict[str, Any]) -> None:
        """Hand a request to the handler (a dialect reading more of the message overrides this)."""
        self.handler.request(self, request_id, method, params)

    def _malformed(self, request_id: Any, problem: str) -> None:
        self._write(error_reply(request_id, OTHER, problem))
        self.handler.malformed(self)
        self._spend_allowance()

    # Replies and notifications.
    def _write(self, data: bytes) -> None:
        replies = self._replies
        if replies is not None:
            replies.append(data)  # sent with the rest of the read's replies
            return
        self._send_now(data)

    def _send_now(self, data: bytes) -> None:
        transport: Any = self.transport
        if transport is None or not self.connected:
            return
        if self._send is not None and self.direct_fd() is not None:
            # Nothing queued: hand the bytes to the kernel now. Twisted's
            # write would register the socket for writability, send on the
            # next reactor turn and unregister it: two more system calls
            # and a turn of delay per reply.
            try:
                sent = self._send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # write() below lets Twisted find the connection lost
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

    def direct_fd(self) -> int | None:
        """The socket that may be sent on directly now: plain TCP, open, with
        nothing queued in Twisted (bytes sent around the queue would overtake
        it). None otherwise: Twisted's write then."""
        transport: Any = self.transport
        if self._fd is None or transport is None or not self.connected:
            return None
        if transport.dataBuffer or transport._tempDataBuffer or self._replies:
            return None
        return self._fd

    def send_rest(self, data: bytes) -> None:
        """What a broadcast's send left over, queued in Twisted."""
        if self.transport is not None and self.connected:
            self.transport.write(data)

    def reply(self, request_id: Any, result: Any) -> None:
        self._write(_encode({"id": request_id, "result": result, "error": None}))

    def reply_true(self, request_id: Any) -> None:
        """The reply to an accepted share, without a trip through json.dumps
        for the usual integer id."""
        if type(request_id) is int:
            self._write(b'{"id":%d,' % request_id + _TRUE_RESULT)
        else:
            self._write(b'{"id":' + json.dumps(request_id).encode() + b"," + _TRUE_RESULT)

    def reply_refusal(self, request_id: Any, error: StratumError) -> None:
        """``result: false`` with the reason (mining.authorize refused)."""
        self._write(_encode({"id": request_id, "result": False, "error": error.wire()}))

    def reply_error(self, request_id: Any, error: StratumError) -> None:
        self._write(error.reply(request_id))

    def send_difficulty(self, difficulty: float) -> None:
        self._write(_encode({"id": None, "method": "mining.set_difficulty", "params": [difficulty]}))

    def send_line(self, line: bytes) -> None:
        """A prepared notification (the same bytes go to every miner)."""
        self._write(line)


class StratumFactory(Factory):
    """Builds the connections of one port.

    ``admit(ip, now)`` says whether a new connection from ``ip`` may open
    (bans and limits); a refused one is closed before a byte is read.
    """

    noisy = False

    def __init__(
        self,
        handler: ConnectionHandler,
        settings: PortSettings,
        admit: Callable[[str, float], bool],
        clock: IReactorTime,
        idle_timeout: float,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.admit = admit
        self.clock = clock
        self.idle_timeout = idle_timeout

    def buildProtocol(self, addr: IAddress | None) -> StratumProtocol | None:
        now = self.clock.seconds()
        ip = ip_of(addr)
        # None makes the port close the socket before reading a byte.
        if ip is not None and not self.admit(ip, now):
            return None
        session = MinerSession(difficulty=self.settings.port.diff, connected_at=now)
        vardiff = self.settings.vardiff
        if vardiff is not None:
            session.vardiff = vardiff.start(now)
        return StratumProtocol(self.handler, self.settings, session, self.clock, self.idle_timeout, ip)


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def encode_notification(method: str, params: list[Any]) -> bytes:
    """A server-to-miner notification line."""
    return _encode({"id": None, "method": method, "params": params})
