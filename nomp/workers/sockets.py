"""The Stratum listening sockets: held by the main process, served by its workers.

With ``workers`` above 1 the main process opens every Stratum port's
listening socket itself (``HeldSockets``: its StratumServices listen as
ever, but never accept) and hands the descriptors to each worker it
starts. A worker adopts them (``InheritedSockets``), as a socket-activated
process adopts systemd's. Every worker accepts from the one kernel queue
of each port: a connection waiting there is taken by whichever worker is
free, and a worker that dies takes none of the waiting ones with it.

A process that serves no miners at all (``--role`` without ``stratum``)
listens on nothing (``unbound``).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

# The environment variable a worker finds its sockets in: a JSON list of
# [listen, descriptor, address family], one per Stratum port.
SOCKETS_VARIABLE = "NOMP_WORKER_SOCKETS"


@dataclass(frozen=True, slots=True)
class HeldSocket:
    """One port's listening socket, as a worker is given it."""

    listen: str  # the port's ``listen``, as the configuration says it
    fileno: int
    family: int


@implementer(IListeningPort)
class _HeldPort:
    """A listening port held open for the workers: its socket listens, and
    nothing here accepts from it."""

    def __init__(self, holder: HeldSockets, listen: str, port: Any) -> None:
        self._holder = holder
        self._listen = listen
        self._port = port

    @property
    def socket(self) -> socket.socket:
        held: socket.socket = self._port.socket
        return held

    def startListening(self) -> None:
        raise NotImplementedError("a held port listens from the start")

    def stopListening(self) -> defer.Deferred[None] | None:
        self._holder.forget(self._listen, self)
        stopped: defer.Deferred[None] | None = self._port.stopListening()
        return stopped

    def getHost(self) -> Any:
        return self._port.getHost()


@implementer(IStreamServerEndpoint)
@dataclass(frozen=True, slots=True)
class _HeldEndpoint:
    holder: HeldSockets
    described: str  # the port's ``listen``
    endpoint: IStreamServerEndpoint

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:  # noqa: N803
        return self.endpoint.listen(protocolFactory).addCallback(self._hold)

    def _hold(self, port: Any) -> _HeldPort:
        # Not a descriptor of the reactor's from now on: the workers accept.
        port.stopReading()
        held = _HeldPort(self.holder, self.described, port)
        self.holder.hold(self.described, held)
        return held


class HeldSockets:
    """The main process's Stratum listening sockets, by ``listen``."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._held: dict[str, _HeldPort] = {}

    def endpoint(self, listen: str) -> IStreamServerEndpoint:
        """The endpoint a StratumService listens on for ``listen``: the one
        the string describes, its socket held for the workers."""
        return _HeldEndpoint(self, listen, serverFromString(self._reactor, listen))

    def hold(self, listen: str, port: _HeldPort) -> None:
        self._held[listen] = port

    def forget(self, listen: str, port: _HeldPort) -> None:
        if self._held.get(listen) is port:
            del self._held[listen]

    def sockets(self) -> list[HeldSocket]:
        """Every socket held now, for a worker about to start."""
        held = self._held.items()
        return [HeldSocket(listen, port.socket.fileno(), port.socket.family) for listen, port in held]


def describe(sockets: list[HeldSocket], first_fd: int) -> str:
    """The value of SOCKETS_VARIABLE for a worker given ``sockets`` as
    descriptors ``first_fd``, ``first_fd + 1``, ... in that order."""
    return json.dumps([[held.listen, first_fd + i, int(held.family)] for i, held in enumerate(sockets)])


class InheritedSockets:
    """A worker's Stratum sockets, given by the main process."""

    def __init__(self, reactor: Any, sockets: Mapping[str, tuple[int, int]]) -> None:
        """``sockets``: each port's (descriptor, address family) by its ``listen``."""
        self._reactor = reactor
        self._sockets = dict(sockets)

    @classmethod
    def from_environment(cls, reactor: Any, environ: Mapping[str, str] | None = None) -> InheritedSockets:
        """The sockets SOCKETS_VARIABLE names; ValueError when it is not what the
        main process writes."""
        text = (os.environ if environ is None else environ).get(SOCKETS_VARIABLE, "[]")
        try:
            entries = json.loads(text)
            sockets = {str(listen): (int(fd), int(family)) for listen, fd, family in entries}
        except (ValueError, TypeError) as e:
            raise ValueError(f"{SOCKETS_VARIABLE} is not a list of [listen, fd, family]: {e}") from None
        return cls(reactor, sockets)

    @property
    def listens(self) -> tuple[str, ...]:
        return tuple(self._sockets)

    def endpoint(self, listen: str) -> IStreamServerEndpoint:
        """The port's inherited socket. A port the main process did not give
        (one a reload added since this worker started) is listened on by
        nothing here: the main process holds its socket, and replaces its
        workers so that each is given it (nomp.workers.reload). A TLS port's
        socket is a plain listening one: the worker does the TLS itself, with
        the key and certificate its ``listen`` names."""
        inherited = self._sockets.pop(listen, None)  # an adopted descriptor is closed: once only
        if inherited is None:
            return unbound(listen)
        fd, family = inherited
        if _endpoint_type(listen) == "ssl":
            # The ssl: endpoint as Twisted reads the string (its key, certificate,
            # chain and options), listening through _AdoptingTLS on the socket given.
            tls: IStreamServerEndpoint = serverFromString(
                _AdoptingTLS(self._reactor, fd, socket.AddressFamily(family)), listen
            )
            return tls
        return AdoptedStreamServerEndpoint(self._reactor, fd, socket.AddressFamily(family))


def _endpoint_type(listen: str) -> str:
    return listen.split(":", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class _AdoptingTLS:
    """What an ``ssl:`` endpoint listens through: for its port, the
    inherited socket, each connection's bytes through TLS with the
    endpoint's context."""

    reactor: Any
    fd: int
    family: socket.AddressFamily

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,  # noqa: N803
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        tls = TLSMemoryBIOFactory(contextFactory, False, factory)
        os.set_blocking(self.fd, False)
        adopted: IListeningPort = self.reactor.adoptStreamPort(self.fd, self.family, tls)
        os.close(self.fd)  # the port holds a copy of its own (as AdoptedStreamServerEndpoint does)
        return adopted


@implementer(IListeningPort)
class _Unbound:
    def __init__(self, listen: str) -> None:
        self._listen = listen

    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        return None

    def getHost(self) -> Any:
        raise NotImplementedError(f"{self._listen} is not listened on in this process")


@implementer(IStreamServerEndpoint)
@dataclass(frozen=True, slots=True)
class _UnboundEndpoint:
    described: str

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:  # noqa: N803
        return defer.succeed(_Unbound(self.described))


def unbound(listen: str) -> IStreamServerEndpoint:
    """An endpoint that listens on nothing: for a process whose role serves no miners."""
    return _UnboundEndpoint(listen)
