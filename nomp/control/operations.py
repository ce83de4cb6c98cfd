"""What the control port does to the whole process: status, log level,
payments, reload, shutdown (the ``Operations`` of nomp.control.service).

The composition root (nomp.tap) gives it the running pools as
``RunningPool``s, which it reads anew at each command: a reload may have
added or removed some.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel, LogLevelFilterPredicate

RATE_WINDOW = 60.0  # seconds of shares the shares/s of ``status`` is taken over
RATE_STEP = 5.0  # seconds between samples of the share counts


class RunningPool(Protocol):
    """One running pool, as the control port's process commands see it."""

    @property
    def name(self) -> str: ...

    @property
    def coin(self) -> str: ...

    @property
    def ready(self) -> bool: ...

    @property
    def miners(self) -> int:
        """Open miner connections."""
        ...

    @property
    def accepted_shares(self) -> int:
        """Shares accepted since the pool started."""
        ...

    def payments(self, action: str) -> defer.Deferred[str]:
        """``run`` (one run now) or ``audit``: the answer line."""
        ...


class ShareRates:
    """Each pool's accepted shares per second over the last RATE_WINDOW seconds,
    from samples of its counts taken by ``timer``."""

    def __init__(
        self, totals: Callable[[], Mapping[str, int]], clock: IReactorTime, window: float = RATE_WINDOW
    ) -> None:
        self._totals = totals
        self._clock = clock
        self._window = window
        self._samples: deque[tuple[float, Mapping[str, int]]] = deque()

    def timer(self, step: float = RATE_STEP) -> TimerService:
        """The service that samples (the control port owns it)."""
        timer = TimerService(step, self.sample)
        timer.clock = self._clock
        return timer

    def sample(self) -> None:
        now = self._clock.seconds()
        self._samples.append((now, dict(self._totals())))
        while len(self._samples) > 1 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()

    def rate(self, name: str, total: int) -> float | None:
        """Shares per second of the pool ``name`` whose count is ``total`` now;
        None until a sample of it is at least a second old."""
        now = self._clock.seconds()
        for when, totals in self._samples:
            if name in totals and now - when >= 1.0:
                return max(0, total - totals[name]) / (now - when)
        return None


class ProcessOperations:
    """The control port's commands about the whole process."""

    def __init__(
        self,
        pools: Callable[[], Sequence[RunningPool]],
        redis_up: Callable[[], bool],
        levels: LogLevelFilterPredicate,
        rates: ShareRates,
        clock: IReactorTime,
        started: Callable[[], float | None],
        reload: Callable[[str | None], defer.Deferred[Any]],
        shutdown: Callable[[], object],
        switches: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        """``started``: when the process started (reactor seconds); ``reload``
        fires with a nomp.reload.ReloadAnswer; ``shutdown`` stops the process;
        ``switches``: a line on each switching port's switch, for ``status``."""
        self._switches = switches
        self._pools = pools
        self._redis_up = redis_up
        self._levels = levels
        self._rates = rates
        self._clock = clock
        self._started = started
        self._reload = reload
        self._shutdown = shutdown

    def status(self) -> str:
        started = self._started()
        uptime = "not started" if started is None else f"up {_duration(self._clock.seconds() - started)}"
        listed = []
        for pool in self._pools():
            rate = self._rates.rate(pool.name, pool.accepted_shares)
            shown = "shares/s not known yet" if rate is None else f"{rate:.2f} shares/s"
            miners = f"{pool.miners} miner" + ("" if pool.miners == 1 else "s")
            state = "ready" if pool.ready else "starting"
            listed.append(f"{pool.name} ({pool.coin}): {state}, {miners}, {shown}")
        redis = "Redis up" if self._redis_up() else "Redis down"
        return "; ".join([uptime, *(listed or ["no pools"]), *self._switches(), redis])

    def set_log_level(self, level: str) -> str:
        before = self._levels.logLevelForNamespace("")
        self._levels.setLogLevelForNamespace("", LogLevel.levelWithName(level))
        return str(before.name)

    def payments(self, pool: str, action: str) -> defer.Deferred[str]:
        found = self._find(pool)
        if found is None:
            return defer.succeed(f"error no pool {pool[:64]!r}")
        return found.payments(action)

    def reload(self, pool: str | None) -> defer.Deferred[str]:
        return self._reload(pool).addCallback(lambda answer: answer.line())

    def shutdown(self) -> None:
        self._shutdown()

    def _find(self, name: str) -> RunningPool | None:
        wanted = name.lower()
        for pool in self._pools():
            if wanted in (pool.name.lower(), pool.coin.lower()):
                return pool
        return None


# A pool's part of ``status`` as ProcessOperations.status writes it.
_POOL_STATUS = re.compile(
    r"(?:^|; )([^;()]+) \([^)]*\): (?:ready|starting), (\d+) miners?, "
    r"(?:([\d.]+) shares/s|shares/s not known yet)"
)


def status_totals(answers: Sequence[tuple[str, str]]) -> str:
    """Each pool's miners and shares/s added up over worker processes'
    ``status`` answers (name, answer line), as `` | all workers: ...``; empty
    when none gave a pool's figures."""
    miners: dict[str, int] = {}
    rates: dict[str, float] = {}
    for _, answer in answers:
        if not answer.startswith("ok "):
            continue
        for name, count, rate in _POOL_STATUS.findall(answer[3:]):
            miners[name] = miners.get(name, 0) + int(count)
            rates[name] = rates.get(name, 0.0) + (float(rate) if rate else 0.0)
    listed = [
        f"{name}: {count} miner{'' if count == 1 else 's'}, {rates[name]:.2f} shares/s"
        for name, count in miners.items()
    ]
    return " | all workers: " + "; ".join(listed) if listed else ""


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    shown = [f"{days}d"] if days else []
    if days or hours:
        shown.append(f"{hours}h")
    if days or hours or minutes:
        shown.append(f"{minutes}m")
    shown.append(f"{secs}s")
    return " ".join(shown)
