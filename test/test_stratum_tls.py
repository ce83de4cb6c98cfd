"""Stratum over TLS ports (an ``ssl:`` endpoint), with a real TLS client."""

from __future__ import annotations

from typing import Any

import twisted.test
from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from nomp.stratum.protocol import MAX_LINE
from nomp.stratum.server import StratumFactory
from test.fakes import StratumHarness, pool_config

PEM = FilePath(twisted.test.__file__).sibling("server.pem").path


class Client(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.made: defer.Deferred[None] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()

    @property
    def tcp(self) -> Any:
        """The transport with its TCP methods."""
        return self.transport

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class TLSLineTooLongTests(TestCase):
    async def test_line_too_long_closes_tls_connection(self) -> None:
        """On a TLS port a line over the limit closes the connection, as on plain TCP."""
        harness = StratumHarness(pool_config(), task.Clock())
        factory = StratumFactory(harness.server, harness.config.ports[0])
        port = await serverFromString(reactor, f"ssl:0:interface=127.0.0.1:privateKey={PEM}").listen(factory)
        self.addCleanup(port.stopListening)
        client = Client()
        reactor.connectSSL(  # type: ignore[attr-defined]
            "127.0.0.1",
            port.getHost().port,
            protocol.ClientFactory.forProtocol(lambda: client),
            ssl.CertificateOptions(verify=False),
        )
        await client.made
        client.tcp.write(b"x" * (MAX_LINE + 1))
        for _ in range(20):  # 2 MB more, no newline
            await task.deferLater(reactor, 0.02, lambda: None)
            if client.lost.called:
                break
            client.tcp.write(b"y" * 100_000)
        await task.deferLater(reactor, 0.3, lambda: None)
        still_open = [(p.peer, len(p._buffer)) for p in harness.server.connections]
        for p in list(harness.server.connections):
            p._tcp.abortConnection()
        if not client.lost.called:
            client.tcp.abortConnection()
        await client.lost
        await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((still_open, client.received.count(b"line longer")), ([], 1))
