"""HTTP getwork ports under the pool's connection limits: each HTTP
connection holds a slot of ``connections_per_ip`` and ``connections_total``
(shared with the stratum ports) until it closes, counts towards
``connect_rate``, and one over a limit is closed before a byte is read.
Real loopback connections, from 127.0.0.x source addresses."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from ipaddress import ip_network
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from nomp.config import BanningConfig, PortConfig, RateLimitConfig
from nomp.eth.hasher import EpochHashers
from nomp.eth.pool import EthStratumPool
from nomp.eth.work import WorkBook
from nomp.stratum.banning import Refusal
from test.ethpool import LOGIN_CHECKSUMMED, eth_pool_config, stratum_port
from test.fakes import FakePool, FakeRecorder

GETWORK = PortConfig(listen="tcp:0:interface=127.0.0.1", diff=2.0, protocol="getwork")
MINER = "127.0.0.2"
OTHER = "127.0.0.3"
TRUSTED = "127.0.0.4"
THIRD = "127.0.0.5"
REQUEST = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_getWork", "params": []}).encode()


class NoWork:
    """The pool's WorkSource before its first work: eth_getWork is answered "Work not ready"."""

    def __init__(self) -> None:
        self.book = WorkBook(3, None)


class NoHashing:
    def submit(self, hasher: Any, work: Any, done: Callable[[Any], None]) -> None:
        raise AssertionError("no share is sent in these tests")


def _no_builds(function: Callable[..., Any], *args: Any) -> Any:
    raise AssertionError("no cache is built in these tests")


class HttpConnection(Protocol):
    """One HTTP/1.1 connection, kept open between requests."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._reply: defer.Deferred[bytes] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        # The replies are chunked: the last chunk ends them.
        if self._reply is not None and self.received.endswith(b"\r\n0\r\n\r\n"):
            reply, self._reply = self._reply, None
            response, self.received = self.received, b""
            reply.callback(response)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)
        if self._reply is not None:
            self._reply.errback(AssertionError(f"closed before a reply: {self.received!r}"))

    async def post(self) -> bytes:
        """An eth_getWork request: the response's status line and body."""
        assert self.transport is not None
        self._reply = defer.Deferred()
        self.transport.write(
            b"POST /%s/rig HTTP/1.1\r\nHost: pool\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (LOGIN_CHECKSUMMED.encode(), len(REQUEST), REQUEST)
        )
        waiting = self._reply
        waiting.addTimeout(10, reactor)
        return await waiting

    def close(self) -> defer.Deferred[None]:
        assert self.transport is not None
        self.transport.loseConnection()
        return self.closed


def _drop(connection: HttpConnection) -> defer.Deferred[None]:
    if not connection.closed.called:
        assert connection.transport is not None
        connection.transport.loseConnection()
    return connection.closed


class GetworkLimitTests(TestCase):
    timeout = 30

    async def start(self, **banning: Any) -> None:
        config = eth_pool_config(
            "http://127.0.0.1:8545", [GETWORK, stratum_port(2.0)], banning=BanningConfig(**banning)
        )
        hashers = EpochHashers(config.name, _no_builds)
        self.pool = EthStratumPool(
            config, NoWork(), FakePool(None), NoHashing(), hashers, FakeRecorder(), reactor
        )
        self.ports = []
        for port in config.ports:
            listening = await serverFromString(reactor, port.listen).listen(self.pool.factory(port))
            self.addCleanup(listening.stopListening)
            self.ports.append(listening.getHost().port)
        self.getwork_port, self.stratum_port = self.ports

    async def connect(self, source: str, port: int | None = None) -> HttpConnection:
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", port or self.getwork_port, timeout=10, bindAddress=(source, 0)
        )
        connection: HttpConnection = await connectProtocol(endpoint, HttpConnection())
        self.addCleanup(_drop, connection)
        return connection

    async def admitted(self, source: str) -> HttpConnection:
        """A connection the pool took: it answers a request on it."""
        connection = await self.connect(source)
        await self.assert_served(connection)
        return connection

    async def assert_served(self, connection: HttpConnection) -> None:
        response = await connection.post()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "), response)
        self.assertIn(b"Work not ready", response)

    async def assert_refused(self, source: str, port: int | None = None) -> None:
        connection = await self.connect(source, port)
        closed = connection.closed
        closed.addTimeout(10, reactor)
        await closed
        self.assertEqual(connection.received, b"")

    async def until_open(self, ip: str, count: int) -> None:
        """Until the pool counts ``count`` open connections from ``ip``."""
        for _ in range(400):
            if self.pool.bans.gatekeeper.connections(ip) == count:
                return
            await deferLater(reactor, 0.01, lambda: None)
        self.fail(f"{ip} holds {self.pool.bans.gatekeeper.connections(ip)} connections, not {count}")

    async def test_connections_per_ip(self) -> None:
        await self.start(connections_per_ip=2)
        first = await self.admitted(MINER)
        second = await self.admitted(MINER)
        await self.assert_refused(MINER)
        self.assertEqual(self.pool.bans.refused, {Refusal.TOO_MANY_FROM_IP.value: 1})
        await self.assert_served(first)
        await self.assert_served(second)
        await self.admitted(OTHER)  # another address has slots of its own
        self.assertEqual(self.pool.bans.gatekeeper.connections(MINER), 2)
        self.assertEqual(self.pool.bans.gatekeeper.open_connections, 3)

    async def test_closing_one_lets_a_new_one_in(self) -> None:
        await self.start(connections_per_ip=2)
        first = await self.admitted(MINER)
        await self.admitted(MINER)
        await self.assert_refused(MINER)
        await first.close()
        await self.until_open(MINER, 1)
        await self.admitted(MINER)
        await self.assert_refused(MINER)
        self.assertEqual(self.pool.bans.refused, {Refusal.TOO_MANY_FROM_IP.value: 2})

    async def test_connections_total(self) -> None:
        await self.start(connections_total=2)
        await self.admitted(MINER)
        other = await self.admitted(OTHER)
        await self.assert_refused(MINER)
        await self.assert_refused(THIRD)
        self.assertEqual(self.pool.bans.refused, {Refusal.TOO_MANY_TOTAL.value: 2})
        await other.close()
        await self.until_open(OTHER, 0)
        await self.admitted(THIRD)

    async def test_shared_with_the_stratum_port(self) -> None:
        await self.start(connections_per_ip=2)
        await self.admitted(MINER)
        stratum = await self.connect(MINER, self.stratum_port)
        await self.until_open(MINER, 2)
        await self.assert_refused(MINER)  # over getwork, with the stratum connection counted
        await self.assert_refused(MINER, self.stratum_port)  # and the other way round
        await stratum.close()
        await self.until_open(MINER, 1)
        await self.admitted(MINER)

    async def test_connect_rate(self) -> None:
        await self.start(connect_rate=RateLimitConfig(count=2, window=60.0))
        first = await self.admitted(MINER)
        await first.close()
        await self.until_open(MINER, 0)
        await self.admitted(MINER)
        await self.assert_refused(MINER)  # the third attempt in the window, though one is open
        self.assertEqual(self.pool.bans.refused, {Refusal.TOO_FAST.value: 1})
        await self.admitted(OTHER)

    async def test_whitelisted_not_counted(self) -> None:
        await self.start(
            connections_per_ip=1,
            connections_total=1,
            connect_rate=RateLimitConfig(count=1, window=60.0),
            whitelist=(ip_network(TRUSTED),),
        )
        held = [await self.admitted(TRUSTED) for _ in range(3)]
        self.assertEqual(self.pool.bans.gatekeeper.open_connections, 0)
        await self.admitted(MINER)
        await self.assert_refused(OTHER)  # the total: the whitelisted connections are not in it
        for connection in held:
            await self.assert_served(connection)
        self.assertEqual(self.pool.bans.refused, {Refusal.TOO_MANY_TOTAL.value: 1})

    async def test_banned_refused_at_connect(self) -> None:
        await self.start()
        self.pool.bans.ban(MINER, None, "a test")
        await self.assert_refused(MINER)
        self.assertEqual(self.pool.bans.refused, {Refusal.BANNED.value: 1})

    async def test_reload_counts_the_getwork_connections(self) -> None:
        await self.start(connections_per_ip=1, whitelist=(ip_network(TRUSTED),))
        held = await self.admitted(MINER)
        await self.admitted(TRUSTED)
        banning = dataclasses.replace(self.pool.config.banning, whitelist=())
        self.pool.apply(dataclasses.replace(self.pool.config, banning=banning))
        self.assertEqual(self.pool.bans.gatekeeper.open_connections, 2)
        await self.assert_refused(MINER)
        await self.assert_refused(TRUSTED)
        await held.close()
        await self.until_open(MINER, 0)
        self.assertEqual(self.pool.bans.gatekeeper.open_connections, 1)
