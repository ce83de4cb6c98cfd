"""SwitchingService: the switches, their ports, and which pool each is on.

The service named "switching" in the tree, after the pools (so its ports
close before them at a stop). Each switch's ports are a StratumService
over its SwitchPorts. The pool a switch is on is kept in Redis
(``SwitchKeys.current``) and read back at start, so a restart resumes on
it; until Redis has answered the switch is on its default pool, and its
miners are moved once the stored pool is read. A pool Redis names that the
switch does not have (the section changed since) is logged, and the
default stays. A switch Redis could not record is written again by the
same timer once Redis is back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService
from twisted.internet import defer
from twisted.logger import Logger

from nomp.outage import Outage
from nomp.services import OrderedMultiService
from nomp.store.client import REDIS_DOWN, RedisClient, RedisUnavailable
from nomp.store.schema import SwitchKeys
from nomp.stratum.service import StratumService
from nomp.switching import SwitchRefused, already_on, request_refusal
from nomp.switching.ports import SwitchPorts

STATE_INTERVAL = 1.0  # seconds between looks at what Redis still has to be told or asked

GET_SCRIPT = "return redis.call('GET', KEYS[1])"
_SET = "redis.call('SET', KEYS[1], ARGV[1]) return 1"

SwitchListener = Callable[[str, str, str], None]  # (switch, from pool, to pool)


def add_ports_and_state_timer(
    parent: MultiService, ports: Mapping[str, IService], keep_state: Callable[[], object], reactor: Any
) -> None:
    """Each switch's port service under ``parent`` (SwitchingService or
    RelayedSwitches), named for the switch, and the timer that runs
    ``keep_state`` (what Redis has yet to be told or asked) every STATE_INTERVAL."""
    for name, service in ports.items():
        service.setName(f"ports:{name}")  # each a StratumService, which names itself "stratum"
        service.setServiceParent(parent)
    timer = TimerService(STATE_INTERVAL, keep_state)
    timer.clock = reactor
    timer.setServiceParent(parent)


@dataclass(frozen=True, slots=True)
class SwitchState:
    """One switch as ``status`` and the web API show it."""

    name: str
    algorithm: str
    pools: tuple[str, ...]
    current: str
    miners: int
    switches: int  # moves since the process started
    last_reason: str | None  # why the last move was made (None: none yet)

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "algorithm": self.algorithm,
            "pools": list(self.pools),
            "current": self.current,
            "miners": self.miners,
            "switches": self.switches,
            "last_reason": self.last_reason,
        }

    def line(self) -> str:
        miners = f"{self.miners} miner{'' if self.miners == 1 else 's'}"
        return (
            f"switch {self.name} ({self.algorithm}): on {self.current} of {', '.join(self.pools)}, {miners}"
        )


class SwitchesService(OrderedMultiService):
    """What SwitchingService and RelayedSwitches share: the service named
    "switching", each switch's algorithm, its ports and the state timer, the
    moves counted with their reasons, the listeners told of each move, and
    what ``status`` and the web show of each switch, read from the same
    states (with workers, their miners summed). A subclass moves the miners
    (``_switch``), says each switch's state (``states``) and keeps Redis told
    and asked (``_keep_state``)."""

    log = Logger()

    def __init__(self, algorithms: Mapping[str, str], ports: Mapping[str, IService], reactor: Any) -> None:
        super().__init__()
        self.setName("switching")
        self._algorithms = dict(algorithms)
        self._listeners: list[SwitchListener] = []
        self.switch_counts: Counter[str] = Counter()
        self._reasons: dict[str, str] = {}
        self._more_status: list[Callable[[], Sequence[str]]] = []  # profit switching's lines
        self.outage = Outage(self.log, "switching: Redis", reactor, REDIS_DOWN)
        add_ports_and_state_timer(self, ports, self._keep_state, reactor)

    def add_listener(self, listener: SwitchListener) -> None:
        """Call ``listener(switch, from_pool, to_pool)`` after every move."""
        self._listeners.append(listener)

    def algorithm(self, switch: str) -> str:
        return self._algorithms[switch]

    def switch(self, switch: str, pool: str, reason: str) -> defer.Deferred[str]:
        return defer.Deferred.fromCoroutine(self._switch(switch, pool, reason))

    async def _switch(self, switch: str, pool: str, reason: str) -> str:
        raise NotImplementedError

    def _moved(self, switch: str, before: str, pool: str, reason: str) -> None:
        """Count a move made, keep its reason and tell the listeners."""
        self.switch_counts[switch] += 1
        self._reasons[switch] = reason
        for listener in self._listeners:
            listener(switch, before, pool)

    def states(self) -> list[SwitchState]:
        raise NotImplementedError

    def add_status(self, lines: Callable[[], Sequence[str]]) -> None:
        """Have ``status_lines`` end with ``lines()`` (nomp.switching.ShowsStatus)."""
        self._more_status.append(lines)

    def status_lines(self) -> list[str]:
        """A line on each switch, then the added ones, for the control port's ``status``."""
        return [state.line() for state in self.states()] + [
            line for lines in self._more_status for line in lines()
        ]

    def documents(self) -> list[dict[str, Any]]:
        return [state.document() for state in self.states()]

    def _keep_state(self) -> defer.Deferred[None] | None:
        raise NotImplementedError


class SwitchingService(SwitchesService):
    """Every switch of config.yaml's ``switching`` (nomp.switching.Switches)."""

    def __init__(
        self,
        switches: Mapping[str, tuple[SwitchPorts, StratumService]],
        algorithms: Mapping[str, str],
        known_pools: Callable[[], Collection[str]],
        redis: Callable[[], RedisClient | None],
        reactor: Any,
        keys: SwitchKeys | None = None,
    ) -> None:
        """``switches``: each switch's ports and their service, by name;
        ``known_pools``: every pool of the process (for a clear answer)."""
        super().__init__(algorithms, {name: service for name, (_, service) in switches.items()}, reactor)
        self._ports = {name: ports for name, (ports, _) in switches.items()}
        self.stratum_services = [service for _, service in switches.values()]
        self._known_pools = known_pools
        self._redis = redis
        self._keys = keys or SwitchKeys()
        self._restored: set[str] = set()  # switches whose stored pool was read (or that moved since)
        self._unsaved: dict[str, str] = {}  # switch -> pool Redis has yet to be told

    # Switches.
    def switch_names(self) -> Sequence[str]:
        return list(self._ports)

    def pools(self, switch: str) -> Sequence[str]:
        return list(self._ports[switch].pools)

    def current(self, switch: str) -> str:
        return self._ports[switch].current.name

    async def _switch(self, switch: str, pool: str, reason: str) -> str:
        pools = {name: list(ports.pools) for name, ports in self._ports.items()}
        problem = request_refusal(pools, self._known_pools(), switch, pool)
        if problem is not None:
            raise SwitchRefused(problem)
        ports = self._ports[switch]
        if pool == ports.current.name:
            raise SwitchRefused(already_on(switch, pool))
        problem = ports.can_move_to(pool)
        if problem is not None:
            raise SwitchRefused(problem)
        line = self._move(ports, pool, reason)
        self._restored.add(switch)  # a stored pool read later is older than this move
        if await self._save(switch, pool):
            return line
        return f"{line}; not recorded in Redis yet (it is down): written once it is back"

    def _move(self, ports: SwitchPorts, pool: str, reason: str) -> str:
        before = ports.current.name
        moved = ports.move_to(pool)
        self.log.info(
            "switch {switch}: {before} -> {pool} ({reason}): {moved}",
            switch=ports.name,
            before=before,
            pool=pool,
            reason=reason,
            moved=moved.line(),
            miners=moved.miners,
        )
        self._moved(ports.name, before, pool, reason)
        return f"switch {ports.name}: {before} -> {pool}, {moved.line()}"

    # What the control port and the web show.
    def states(self) -> list[SwitchState]:
        return [
            SwitchState(
                name,
                self._algorithms[name],
                tuple(ports.pools),
                ports.current.name,
                len(ports.connections),
                self.switch_counts[name],
                self._reasons.get(name),
            )
            for name, ports in self._ports.items()
        ]

    # Redis.
    async def _save(self, switch: str, pool: str) -> bool:
        self._unsaved[switch] = pool
        try:
            await self._call(_SET, self._keys.current(switch), pool)
        except Exception as e:
            self.outage.failed(e, "the switch is recorded once it is back", switch=switch)
            return False
        self.outage.succeeded()
        if self._unsaved.get(switch) == pool:
            del self._unsaved[switch]
        return True

    def _call(self, script: str, key: str, *args: str) -> defer.Deferred[Any]:
        client = self._redis()
        if client is None:
            return defer.fail(RedisUnavailable("Redis is not connected"))
        return client.eval(script, [key], list(args))

    @property
    def pending(self) -> bool:
        """Whether Redis has yet to be read for a switch's stored pool, or told of a move."""
        return len(self._restored) < len(self._ports) or bool(self._unsaved)

    def _keep_state(self) -> defer.Deferred[None] | None:
        if not self.pending:
            return None
        return defer.Deferred.fromCoroutine(self._state_step())

    async def _state_step(self) -> None:
        for switch, pool in list(self._unsaved.items()):
            if not await self._save(switch, pool):
                return
        for switch, ports in self._ports.items():
            if switch in self._restored:
                continue
            try:
                stored = await self._call(GET_SCRIPT, self._keys.current(switch))
            except Exception as e:
                self.outage.failed(e, "switches stay on their default pools until it answers")
                return
            self.outage.succeeded()
            if switch not in self._restored:  # not moved by a command meanwhile
                self._restored.add(switch)
                self._restore(ports, stored)

    def _restore(self, ports: SwitchPorts, stored: Any) -> None:
        if stored is None or stored == ports.current.name:
            return
        if stored not in ports.pools:
            self.log.warn(
                "switch {switch}: Redis says pool {stored}, which is not one of its pools now: "
                "staying on its default, {pool}",
                switch=ports.name,
                stored=stored,
                pool=ports.current.name,
            )
            return
        problem = ports.can_move_to(stored)
        if problem is not None:
            # Asked again at the next step, once the pool can take its miners.
            self._restored.discard(ports.name)
            return
        self._move(ports, stored, "the pool it was on before the restart")
