"""StratumService: a pool's listening ports and the timers of its miners."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar, runtime_checkable

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger

from nomp.config import BanningConfig, EthPoolConfig, PoolConfig, PortConfig
from nomp.config.diff import match_ports
from nomp.services import OrderedMultiService
from nomp.stratum import difficulty
from nomp.stratum.connection import Connection, PortSettings
from nomp.stratum.enforcement import BanEnforcer
from nomp.stratum.protocol import StratumFactory
from nomp.stratum.proxyproto import ProxyProtocolFactory
from nomp.stratum.registry import ConnectionRegistry

DRAIN_CHECK_INTERVAL = 0.05  # seconds between counts of the miners still there, in a drain

C = TypeVar("C", PoolConfig, EthPoolConfig)


class _PoolConfig(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def banning(self) -> BanningConfig: ...


class MinerSide(Protocol):
    """One pool's miner side, as its ports need it (StratumPool, EthStratumPool)."""

    @property
    def config(self) -> _PoolConfig: ...

    @property
    def bans(self) -> BanEnforcer: ...

    @property
    def connections(self) -> ConnectionRegistry: ...

    def factory(self, port: PortConfig) -> Any: ...

    def port_settings(self, port: PortConfig) -> PortSettings: ...

    def apply(self, config: Any) -> None:
        """Take a reloaded pool configuration (its banning section above all)."""
        ...

    def retarget_quiet(self) -> None:
        """Look at every miner for quietness now (see nomp.stratum.difficulty.QuietSweep)."""
        ...

    def retarget_quiet_step(self) -> None:
        """One step of the look for quiet miners: a slice of them, all of
        them in QUIET_STEPS steps."""
        ...

    def close_all(self) -> None: ...

    def idle(self) -> defer.Deferred[None]: ...


@runtime_checkable
class AsksToReconnect(Protocol):
    """A miner side whose miners can be asked to come back (StratumPool's
    ``client.reconnect``; eth-proxy has no such message)."""

    def ask_to_reconnect(self) -> int:
        """Ask every miner to reconnect to where it is; how many were asked."""
        ...


@runtime_checkable
class AttachesToPools(Protocol):
    """A miner side whose every connection is one of a pool's too (a switch's
    ports, nomp.switching.ports): that pool's drain asks it to reconnect and
    counts it, so this side's drain only stops its ports, and a stop counts
    each connection once."""

    def attached_to(self, connection: Connection) -> str | None:
        """The name of the pool ``connection`` is one of (None: not this side's)."""
        ...


@dataclass(frozen=True, slots=True)
class Drained:
    """What a drain did: miners asked to reconnect, and connections still open at its end."""

    asked: int
    stayed: int


class StratumService(OrderedMultiService):
    """Listens on a pool's ports; at stop, closes connections and waits for
    the shares still being checked, so the recorder gets all of them.
    ``drain``, before a stop, lets the miners leave first.

    ``apply`` takes a reloaded configuration without closing a connection
    that stays: ports open and close, a kept port's connections get its new
    difficulty settings, and the ban timers their new intervals.
    """

    log = Logger()

    def __init__(
        self,
        server: MinerSide,
        ports: tuple[PortConfig, ...],
        reactor: Any,
        endpoint: Callable[[str], IStreamServerEndpoint] | None = None,
    ) -> None:
        """``endpoint`` makes a port's listening endpoint from its ``listen``
        (default: the endpoint the string describes; nomp.workers gives
        sockets held for worker processes, or inherited from the main one)."""
        super().__init__()
        self.setName("stratum")
        self.server = server
        self._reactor = reactor
        self._endpoint = endpoint or partial(serverFromString, reactor)
        banning = server.config.banning
        self._sync: TimerService | None = None
        shared_bans = server.bans.shared
        if shared_bans is not None:
            # Added before the ports: bans are read at start (and a banned
            # miner that got in before the read is closed by it).
            self._sync = self._timer(
                banning.sync_interval, lambda: defer.Deferred.fromCoroutine(shared_bans.sync())
            )
        self._purge = self._timer(banning.purge_interval, self._purge_bans)
        self._listening: dict[str, StreamServerEndpointService] = {}  # by the port's listen
        self._factories: dict[str, Any] = {}  # the port's own factory (under any PROXY wrapper)
        self._ports: dict[str, PortConfig] = {}
        # Set for a pool a reload adds: a port that cannot be bound is left
        # out (and named in ``unopened``) instead of stopping the start.
        self.lenient = False
        self.unopened: list[str] = []
        for port in ports:
            self._listener(port).setServiceParent(self)
        self._timer(difficulty.QUIET_ROUND / difficulty.QUIET_STEPS, server.retarget_quiet_step)

    def _timer(self, step: float, call: Callable[[], object]) -> TimerService:
        timer = TimerService(step, call)
        timer.clock = self._reactor
        timer.setServiceParent(self)
        return timer

    def _purge_bans(self) -> None:
        self.server.bans.gatekeeper.purge(self._reactor.seconds())

    def _listener(self, port: PortConfig) -> StreamServerEndpointService:
        factory: Any = self.server.factory(port)
        self._factories[port.listen] = factory
        self._ports[port.listen] = port
        if port.proxy_protocol:
            factory = ProxyProtocolFactory(factory, list(port.proxy_protocol), self._reactor)
        listening = StreamServerEndpointService(self._endpoint(port.listen), factory)
        # A port that cannot be bound stops start-up instead of being logged and skipped.
        listening._raiseSynchronously = True
        self._listening[port.listen] = listening
        return listening

    def privilegedStartService(self) -> None:
        if not self.lenient:
            super().privilegedStartService()
            return
        Service.privilegedStartService(self)
        listeners = {id(listening): listen for listen, listening in self._listening.items()}
        for child in list(self):
            try:
                child.privilegedStartService()
            except Exception as e:
                listen = listeners.get(id(child))
                if listen is None:
                    raise
                self.log.error("port {listen} not opened: {error}", listen=listen, error=e)
                self.unopened.append(f"port {listen} not opened: {e}")
                self._forget_port(listen)
                self.removeService(child)  # not started yet: nothing to stop

    def _forget_port(self, listen: str) -> None:
        self._listening.pop(listen, None)
        self._factories.pop(listen, None)
        self._ports.pop(listen, None)

    @property
    def ports(self) -> tuple[PortConfig, ...]:
        """The ports listened on (or to be, before start)."""
        return tuple(self._ports.values())

    def drain(self, seconds: float) -> defer.Deferred[Drained]:
        """Stop accepting, ask the miners to reconnect, and wait up to
        ``seconds`` for them to leave (0: ask nobody).

        A miner that honours ``client.reconnect`` first waits for the
        answers to the shares it sent, so it leaves knowing each was
        accepted or not; the others are closed by ``stopService``.
        """
        return defer.Deferred.fromCoroutine(self._drain(seconds))

    async def _drain(self, seconds: float) -> Drained:
        # Before anyone is asked: a miner that reconnects must not come back here.
        await defer.gatherResults(
            [defer.maybeDeferred(listening.stopService) for listening in self._listening.values()]
        )
        if isinstance(self.server, AttachesToPools):
            return Drained(0, 0)  # its miners are the pools': their drains ask and count them
        connections = self.server.connections
        if seconds <= 0 or not isinstance(self.server, AsksToReconnect) or not len(connections):
            return Drained(0, len(connections))
        asked = self.server.ask_to_reconnect()
        await self._until_gone(seconds)
        stayed = len(connections)
        self.log.info(
            "pool {pool}: {left} of {asked} miners asked to reconnect left, {stayed} to close",
            pool=self.server.config.name,
            left=max(asked - stayed, 0),
            asked=asked,
            stayed=stayed,
        )
        return Drained(asked, stayed)

    def _until_gone(self, seconds: float) -> defer.Deferred[task.LoopingCall]:
        """Fires once every connection is closed, or after ``seconds``."""
        connections = self.server.connections
        deadline = self._reactor.seconds() + seconds

        def look() -> None:
            if not len(connections) or self._reactor.seconds() >= deadline:
                watch.stop()

        watch = task.LoopingCall(look)
        watch.clock = self._reactor
        watching: defer.Deferred[task.LoopingCall] = watch.start(DRAIN_CHECK_INTERVAL, now=True)
        return watching

    def stopService(self) -> defer.Deferred[None]:
        # No new connections (a drain may have closed the ports already: stopping one again is nothing).
        stopping: defer.Deferred[None] = super().stopService()
        stopping.addCallback(lambda _: self.server.close_all())
        stopping.addCallback(lambda _: self.server.idle())
        shared_bans = self.server.bans.shared
        if shared_bans is not None:
            stopping.addCallback(lambda _: defer.Deferred.fromCoroutine(shared_bans.flush()))
        return stopping

    # A reload.
    async def apply(self, config: C) -> tuple[C, list[str], list[str]]:
        """Run by ``config`` from now on (nomp.config.diff decided it may run live).

        Returns the configuration it runs (without a port that could not be
        opened), what it did that the configuration alone does not say
        (miners told a new difficulty, miners disconnected) and what it
        could not do (a port that did not open).
        """
        notes: list[str] = []
        refused: list[str] = []
        banning = self.server.config.banning
        self.server.apply(config)
        if config.banning.sync_interval != banning.sync_interval and self._sync is not None:
            self._sync = await self._retime(self._sync, config.banning.sync_interval)
        if config.banning.purge_interval != banning.purge_interval:
            self._purge = await self._retime(self._purge, config.banning.purge_interval)
        match = match_ports(self._ports.values(), config.ports)
        for port in match.removed:
            notes.append(await self._close_port(port))
        now = self._reactor.seconds()
        for old, new in match.kept:
            notes += self._retune(old, new, config.connection_timeout, now)
        failed: set[str] = set()
        for port in match.added:
            problem = self._open_port(port)
            if problem is not None:
                refused.append(problem)
                failed.add(port.listen)
        ports = tuple(port for port in config.ports if port.listen not in failed)
        return dataclasses.replace(config, ports=ports), notes, refused

    async def _retime(self, timer: TimerService, step: float) -> TimerService:
        call = timer.call[0]
        await defer.maybeDeferred(timer.disownServiceParent)
        return self._timer(step, call)

    async def _close_port(self, port: PortConfig) -> str:
        listening = self._listening[port.listen]
        self._forget_port(port.listen)
        await defer.maybeDeferred(listening.disownServiceParent)
        closing = [c for c in self.server.connections.snapshot() if c.settings.port.listen == port.listen]
        for connection in closing:
            connection.close()
        self.log.info(
            "port {listen} closed: {miners} miners disconnected", listen=port.listen, miners=len(closing)
        )
        return f"port {port.listen} closed: {_miners(len(closing))} disconnected"

    def _open_port(self, port: PortConfig) -> str | None:
        """Listen on a new port: None, or why it could not."""
        listening = self._listener(port)
        try:
            listening.setServiceParent(self)
        except Exception as e:
            self.log.error("port {listen} not opened: {error}", listen=port.listen, error=e)
            self._forget_port(port.listen)
            if listening.parent is not None:
                listening.disownServiceParent()
            return f"port {port.listen} not opened: {e}"
        self.log.info("port {listen} opened", listen=port.listen)
        return None

    def _retune(self, old: PortConfig, new: PortConfig, timeout: float, now: float) -> list[str]:
        """A kept port's new settings, for its factory and its open connections."""
        self._ports[new.listen] = new
        factory = self._factories[new.listen]
        if not isinstance(factory, StratumFactory):
            return []  # a getwork port: nomp.config.diff keeps its settings until a restart
        factory.idle_timeout = timeout  # connections made from now on
        if old == new and factory.settings.port == new:
            return []
        settings = self.server.port_settings(new)
        factory.settings = settings
        told = 0
        on_port = [c for c in self.server.connections.snapshot() if c.settings.port.listen == new.listen]
        for connection in on_port:
            if not connection.closing and difficulty.port_changed(connection, settings, now):
                told += 1
        self.log.info(
            "port {listen} reconfigured: {told} of {miners} miners sent a new difficulty",
            listen=new.listen,
            told=told,
            miners=len(on_port),
        )
        return [f"port {new.listen}: {_miners(told)} sent the new difficulty"]


def _miners(count: int) -> str:
    return f"{count} miner" if count == 1 else f"{count} miners"
