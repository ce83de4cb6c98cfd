"""P2PNotifier: the pool as a peer of its coin daemon, hearing of each block as it comes.

A block announced on the P2P port (an ``inv`` or ``headers``) makes the
pool fetch a template at once, as blocknotify does; the getblocktemplate
poll goes on as the fallback. When the connection cannot be made or is
lost, the notifier connects again after ``initial_retry`` (0.5 s), then
twice as long each time up to ``max_retry`` (30 s); an outage is logged once (nomp.outage) and its
end when the handshake is done again. A node that sends what we cannot
read, closes before answering our ``version`` (a wrong network magic, or a
node refusing peers) or does not answer it is an error, logged once per
kind until a handshake succeeds; a connection silent for ``idle_timeout``
(the node pings every two minutes) is dropped and made again.
"""

from __future__ import annotations

import importlib.metadata
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from nomp.chain.jobs import JobRegistry
from nomp.config import PoolConfig
from nomp.config.model import P2PConfig
from nomp.outage import Outage
from nomp.p2p.protocol import NodeProtocol
from nomp.p2p.session import PROTOCOL_VERSION, Session
from nomp.p2p.wire import Version

INITIAL_RETRY = 0.5  # seconds before the first reconnection
MAX_RETRY = 30.0  # the longest wait between attempts
CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 30.0  # from the TCP connection to the node's verack
IDLE_TIMEOUT = 300.0  # a node pings every 120 s: this long without a byte is a dead connection

try:
    USER_AGENT = f"/nomp:{importlib.metadata.version('nomp')}/"  # BIP14
except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
    USER_AGENT = "/nomp/"


class NodeSilent(Exception):
    """The connection carried nothing for longer than a node's ping interval."""


class NotifiedPool(Protocol):
    """What the notifier needs of its pool (PoolService)."""

    @property
    def registry(self) -> JobRegistry | None: ...

    def block_notify(self, block_hash: str | None = None) -> defer.Deferred[None]: ...


def _random_nonce() -> int:
    return secrets.randbits(64)


class P2PNotifier(Service):
    """One pool's P2P connection to its node."""

    log = Logger()

    def __init__(
        self,
        pool_name: str,
        config: P2PConfig,
        magic: bytes,
        pool: NotifiedPool,
        reactor: Any,
        endpoint: IStreamClientEndpoint | None = None,
        nonce: Callable[[], int] = _random_nonce,
        initial_retry: float = INITIAL_RETRY,
        max_retry: float = MAX_RETRY,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.setName(f"p2p:{pool_name}")
        self.pool_name = pool_name
        self.config = config
        self._magic = magic
        self._pool = pool
        self._reactor = reactor
        self.address = f"{config.host}:{config.port}"
        self._endpoint = endpoint or HostnameEndpoint(
            reactor, config.host, config.port, timeout=CONNECT_TIMEOUT
        )
        self._nonce = nonce
        self._initial_retry = initial_retry
        self._max_retry = max_retry
        self._handshake_timeout = handshake_timeout
        self._idle_timeout = idle_timeout
        self._outage = Outage(
            self.log,
            f"pool {pool_name}: P2P node {self.address}",
            reactor,
            (
                error.ConnectError,
                error.ConnectionLost,
                error.ConnectionDone,
                error.TimeoutError,
                error.DNSLookupError,
                NodeSilent,
            ),
        )
        self._delay = initial_retry
        self._connecting: defer.Deferred[Any] | None = None
        self._protocol: NodeProtocol | None = None
        self._retry: IDelayedCall | None = None
        self._timer: IDelayedCall | None = None  # the handshake's deadline, then the idle check
        self._timed_out: str | None = None  # why we dropped the connection, when we did
        self._seen = 0  # bytes received at the last idle check
        self._problem: str | None = None  # the error last logged, until a handshake succeeds
        self._closed: defer.Deferred[None] | None = None
        self.node: Version | None = None  # the node's version while connected
        self.attempts = 0  # connections tried
        self.handshakes = 0
        self.announcements: Counter[str] = Counter()  # by how they came: inv, headers
        self.ignored: Counter[str] = Counter()  # messages that mean nothing here, by command
        self.problems: Counter[str] = Counter()  # refused connections, by kind

    @property
    def connected(self) -> bool:
        """The handshake is done and the connection is up."""
        return self.node is not None

    def startService(self) -> None:
        super().startService()
        self._connect()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        for call in (self._retry, self._timer):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._timer = None
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is None or self._protocol.transport is None:
            return defer.succeed(None)
        self._closed = defer.Deferred()
        self._protocol.transport.loseConnection()
        return self._closed

    # Connecting.
    def _hello(self) -> Version:
        return Version(
            version=PROTOCOL_VERSION,
            services=0,  # we serve nothing: no blocks, no transactions
            timestamp=int(self._reactor.seconds()),
            nonce=self._nonce(),
            user_agent=USER_AGENT,
            start_height=0,  # a node announces only blocks above a peer's start height - 2000
            relay=not self.config.disable_transactions,
        )

    def _tip(self) -> str | None:
        registry = self._pool.registry
        current = registry.current if registry is not None else None
        return current.template.previous_block_hash if current is not None else None

    def _connect(self) -> None:
        self._retry = None
        session = Session(self._hello(), self._tip)
        factory = Factory.forProtocol(lambda: NodeProtocol(session, self._magic, self))
        factory.noisy = False  # a line per attempt otherwise; the outage says what matters
        self.attempts += 1
        connecting = self._endpoint.connect(factory)
        self._connecting = connecting
        connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, protocol: NodeProtocol) -> None:
        self._connecting = None
        self._protocol = protocol
        self._timed_out = None
        self._timer = self._reactor.callLater(self._handshake_timeout, self._no_handshake, protocol)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if not self.running:
            return  # cancelled by stopService
        assert failure.value is not None
        self._outage.failed(failure.value, "connecting again with backoff")
        self._again()

    def _again(self) -> None:
        delay, self._delay = self._delay, min(self._delay * 2, self._max_retry)
        self._retry = self._reactor.callLater(delay, self._connect)

    def _drop(self, protocol: NodeProtocol, why: str) -> None:
        self._timed_out = why
        assert protocol.transport is not None
        protocol.transport.abortConnection()  # type: ignore[attr-defined]

    def _no_handshake(self, protocol: NodeProtocol) -> None:
        self._timer = None
        self._drop(protocol, f"no handshake within {self._handshake_timeout:g} s")

    def _idle_check(self, protocol: NodeProtocol) -> None:
        self._timer = None
        if protocol.received == self._seen:
            self._drop(protocol, f"nothing received for {self._idle_timeout:g} s")
            return
        self._seen = protocol.received
        self._timer = self._reactor.callLater(self._idle_timeout, self._idle_check, protocol)

    # NodeEvents.
    def handshake_done(self, protocol: NodeProtocol, node: Version) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._seen = protocol.received
        self._timer = self._reactor.callLater(self._idle_timeout, self._idle_check, protocol)
        self.node = node
        self.handshakes += 1
        self._delay = self._initial_retry
        self._problem = None
        self._outage.succeeded()
        self.log.info(
            "pool {pool}: P2P peer of {address} ({agent}, protocol {version}, height {height}): "
            "listening for blocks",
            pool=self.pool_name,
            address=self.address,
            agent=node.user_agent,
            version=node.version,
            height=node.start_height,
        )

    def blocks_announced(self, protocol: NodeProtocol, hashes: list[str], via: str) -> None:
        self.announcements[via] += 1
        block_hash = hashes[-1]  # the newest; the template is fetched once whatever came before
        self.log.debug(
            "pool {pool}: P2P: block {block_hash} announced by {via}",
            pool=self.pool_name,
            block_hash=block_hash,
            via=via,
            blocks=len(hashes),
        )
        notified = self._pool.block_notify(block_hash)
        notified.addErrback(
            lambda failure: self.log.failure(
                "pool {pool}: P2P block notify failed", failure, pool=self.pool_name
            )
        )

    def message_ignored(self, protocol: NodeProtocol, command: str) -> None:
        self.ignored[command] += 1

    def connection_lost(self, protocol: NodeProtocol, reason: Failure) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._protocol = None
        self.node = None
        if self._closed is not None:  # stopService closed it
            closed, self._closed = self._closed, None
            closed.callback(None)
            return
        if not self.running:
            return
        session = protocol.session
        if protocol.refused is not None:
            self._refused("refused", f"sent a message we refuse ({protocol.refused})")
        elif not session.ready and self._timed_out is not None:
            self._refused("timeout", f"{self._timed_out} of connecting: is it the node's P2P port?")
        elif session.node is None and protocol.received == 0:
            self._refused(
                "closed",
                f"closed the connection before answering our version: is the network magic "
                f"{self._magic.hex()} its own, or is it refusing peers (full, or this address banned)?",
            )
        elif self._timed_out is not None:
            self._outage.failed(NodeSilent(self._timed_out), "connecting again with backoff")
        else:
            assert reason.value is not None
            self._outage.failed(reason.value, "connecting again with backoff")
        self._again()

    def _refused(self, kind: str, problem: str) -> None:
        self.problems[kind] += 1
        if problem == self._problem:
            return  # said already: once until a handshake succeeds
        self._problem = problem
        self.log.error(
            "pool {pool}: P2P node {address} {problem}; connecting again with backoff",
            pool=self.pool_name,
            address=self.address,
            problem=problem,
        )


def p2p_notifier(pool: PoolConfig, service: NotifiedPool, reactor: Any) -> P2PNotifier | None:
    """The pool's notifier if its ``p2p`` section is enabled."""
    if pool.p2p is None or not pool.p2p.enabled:
        return None
    magic = pool.p2p_magic
    assert magic is not None  # the config refuses an enabled p2p without one
    return P2PNotifier(pool.name, pool.p2p, magic, service, reactor)
