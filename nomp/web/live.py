"""LiveStream: /api/live_stats, server-sent events of every new stats snapshot.

Each event's data is the body of /api/stats, as NOMP's live stats were, so
a page keeps its numbers current without polling. A client that stops
reading is dropped instead of having events queue up for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from nomp.web.collector import Snapshot

RETRY_MS = 5000  # how long a browser waits before reconnecting a dropped stream


@implementer(IPushProducer)
@dataclass(eq=False)
class _Client:
    """One open stream; as its request's producer it learns when its socket's buffer is full."""

    request: Request
    ended: defer.Deferred[None] = field(default_factory=defer.Deferred)
    paused: bool = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


def event(snapshot: Snapshot) -> bytes:
    return b"data: " + snapshot.stats_json + b"\n\n"


class LiveStream:
    """The open event streams; ``publish`` sends a snapshot to each."""

    log = Logger()

    def __init__(self, max_clients: int = 1000) -> None:
        self._max_clients = max_clients
        self._clients: dict[Request, _Client] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def open(self, request: Request, snapshot: Snapshot) -> defer.Deferred[None] | bytes:
        """Start a stream on ``request`` with ``snapshot``; the Deferred fires when the server ends it."""
        if len(self._clients) >= self._max_clients:
            request.setResponseCode(503)
            request.setHeader(b"Content-Type", b"application/json")
            request.setHeader(b"Retry-After", str(RETRY_MS // 1000).encode())
            return b'{"error": "too many live streams open; try again later"}'
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")  # a reverse proxy must pass events on at once
        client = _Client(request)
        request.registerProducer(client, True)
        self._clients[request] = client
        request.notifyFinish().addBoth(lambda _: self._forget(request))
        request.write(f"retry: {RETRY_MS}\n\n".encode() + event(snapshot))
        return client.ended

    def _forget(self, request: Request) -> None:
        client = self._clients.pop(request, None)
        if client is not None and request.channel is not None:
            # (a connection already lost has no channel left to unregister from)
            request.unregisterProducer()

    def publish(self, snapshot: Snapshot) -> None:
        body = event(snapshot)
        for request, client in list(self._clients.items()):
            if client.paused:
                # It has not read the last event yet: end its stream; its browser reconnects.
                self.log.info("Live stats: dropping a client that stopped reading")
                self._end(request, client)
            else:
                request.write(body)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for request, client in list(self._clients.items()):
            self._end(request, client)

    def _end(self, request: Request, client: _Client) -> None:
        self._forget(request)
        if not client.ended.called:
            client.ended.callback(None)  # Klein finishes the request
