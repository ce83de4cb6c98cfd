"""ProfitSwitchingService: every interval, the prices read, each switch's pools
ranked and the switch moved to the best one when nomp.switching.profit says so.

The service keeps, per switch, the last ranking, decision and what came of
it, for the web API, the site and the metrics (``snapshot``), and a line on
each switch for the control port's ``status`` (``status_lines``). A price
source that is down is an outage (nomp.outage): one warning, one line when
it is back, and no decision meanwhile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from nomp.config.model import ProfitSwitchingConfig
from nomp.outage import Outage
from nomp.pool.service import TemplateRead
from nomp.switching import ShowsStatus, Switches, SwitchRefused
from nomp.switching.prices import PricePath, PriceSource, PriceSourceError
from nomp.switching.profit import (
    Decision,
    PoolFacts,
    Ranking,
    Rules,
    Skipped,
    TemplateFacts,
    decide,
    rank,
    revenues,
)

# A coin file's ``decimals`` when it gives none: satoshis, 10^8 to a coin.
BITCOIN_FAMILY_DECIMALS = 8
SWITCH_RESULTS = ("done", "refused", "failed")


class TemplateSource(Protocol):
    """A pool as profit switching reads it (a PoolService)."""

    @property
    def latest_template(self) -> TemplateRead | None: ...


@dataclass(frozen=True, slots=True)
class ProfitPool:
    """A pool a switch may move to: its coin's symbol, where its templates are, and
    its coin's ``decimals`` (a whole coin is 10^decimals of the template's reward
    units), which the coin file gives."""

    symbol: str
    templates: TemplateSource
    decimals: int = BITCOIN_FAMILY_DECIMALS


@dataclass(frozen=True, slots=True)
class ProfitState:
    """What profit switching last did with one switch."""

    switch: str
    algorithm: str
    current: str  # the pool it is on after the round
    since: float  # reactor seconds its current pool has been current (as far as this process saw)
    ranking: Ranking
    decision: Decision
    outcome: str | None  # the switch's answer, or why it refused; None when it stayed
    result: str | None  # one of SWITCH_RESULTS for a switch asked for; None when it stayed


@dataclass(frozen=True, slots=True)
class ProfitSnapshot:
    """Everything the API, the site and the metrics show of profit switching."""

    unit: str  # what prices are in
    source: str  # where they come from: scheme, host, port and path, no secret (not for the public)
    source_kind: str  # http or file
    interval: float
    prices_error: str | None  # why the last read of the prices failed; None: it worked (or none yet)
    prices_read_at: float | None  # reactor seconds of the last good read
    switches: tuple[ProfitState, ...]
    switches_made: Mapping[tuple[str, str], int]  # (switch, one of SWITCH_RESULTS) -> count


def status_line(switch: str, current: str, state: ProfitState | None, prices: str, now: float) -> str:
    """One switch's line in ``status``: the pool it is on, the last decision
    and what came of it, and ``prices`` (whether the prices are up). The
    switch's answer or refusal is left to the log and the API: it can list
    every worker's answer, too long for one line of several."""
    if state is None:
        return f"profit switching {switch}: on {current}, no decision yet, {prices}"
    decision = state.decision
    ago = f"{max(now - decision.decided_at, 0.0):.0f} s ago"
    if state.result is None:
        did = f"stayed {ago}"
    else:
        moved = f"{decision.current} -> {decision.target}"
        did = f"moved {moved} {ago}" if state.result == "done" else f"move {moved} {state.result} {ago}"
    return f"profit switching {switch}: on {current}, {did} ({decision.reason}), {prices}"


@dataclass
class _Tracked:
    """One switch's state between rankings."""

    current: str | None = None
    since: float = 0.0
    last: ProfitState | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # pool -> the reason logged last


class ProfitSwitchingService(Service):
    """Ranks every switch's pools each ``config.interval`` seconds and switches them."""

    log = Logger()

    def __init__(
        self,
        config: ProfitSwitchingConfig,
        switches: Switches,
        pools: Callable[[str], ProfitPool | None],
        source: PriceSource,
        clock: IReactorTime,
    ) -> None:
        """``pools`` gives the running pool of a name (None for one this process does
        not run): looked up at every round, so a pool a reload made again is found."""
        self.setName("profit-switching")
        self.config = config
        self._switches = switches
        self._pools = pools
        self._source = source
        self._clock = clock
        self._path = PricePath.parse(config.prices.path, config.prices.names)
        self._rules = Rules(Fraction(config.hysteresis), config.minimum_stay)
        self._outage = Outage(
            self.log, f"profit switching: prices from {source.description}", clock, (PriceSourceError,)
        )
        self._loop: task.LoopingCall | None = None
        self._running_round: defer.Deferred[None] | None = None
        self._fetching: defer.Deferred[Any] | None = None
        self._tracked: dict[str, _Tracked] = {}
        self._started_at = 0.0
        self._prices_error: str | None = None
        self._prices_read_at: float | None = None
        self.results: Counter[tuple[str, str]] = Counter()
        if isinstance(switches, ShowsStatus):
            # Its lines reach the control port through the switches' own, from now on.
            switches.add_status(self.status_lines)

    def startService(self) -> None:
        super().startService()
        self._started_at = self._clock.seconds()
        self._loop = task.LoopingCall(self.run_once)
        self._loop.clock = self._clock
        # The first ranking after one interval: the pools have templates by then.
        self._loop.start(self.config.interval, now=False)

    def stopService(self) -> defer.Deferred[None] | None:
        """Stops the timer; a read of the prices under way is cancelled, a switch
        under way is waited for (its miners are moving)."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._fetching is not None:
            self._fetching.cancel()
        running = self._running_round
        if running is None:
            return None
        waited: defer.Deferred[None] = defer.Deferred()
        running.addBoth(lambda _: waited.callback(None))
        return waited

    def run_once(self) -> defer.Deferred[None]:
        """One round: prices, then every switch ranked and decided. Never fails:
        what goes wrong is logged, and the next round runs as usual."""
        self._running_round = defer.Deferred.fromCoroutine(self._round())

        def finished(result: object) -> None:
            self._running_round = None
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                self.log.failure("profit switching: the round failed", result)

        self._running_round.addBoth(finished)
        return self._running_round

    async def _round(self) -> None:
        running = [
            self._pools(name)
            for switch in self._switches.switch_names()
            for name in self._switches.pools(switch)
        ]
        symbols = sorted({pool.symbol for pool in running if pool is not None})
        self._fetching = defer.Deferred.fromCoroutine(self._source.fetch())
        try:
            document = await self._fetching
            prices = self._path.prices(document, symbols)
        except PriceSourceError as e:
            self._prices_error = str(e)
            self._outage.failed(e, "no switch is made while it is away")
            return
        finally:
            self._fetching = None
        self._outage.succeeded()
        self._prices_error = None
        now = self._clock.seconds()
        self._prices_read_at = now
        for switch in self._switches.switch_names():
            await self._decide(switch, prices, now)

    async def _decide(self, switch: str, prices: Mapping[str, Fraction | str], now: float) -> None:
        tracked = self._tracked.setdefault(switch, _Tracked())
        current = self._switches.current(switch)
        if tracked.current != current:
            # First seen, or moved by someone else (the control port): its stay
            # counts from now, or from the start for the pool it started on.
            tracked.since = self._started_at if tracked.current is None else now
            tracked.current = current
        pool_names = self._switches.pools(switch)
        ranking = rank([self._facts(name, prices) for name in pool_names], now, self.config.max_template_age)
        self._log_skipped(switch, tracked, ranking)
        decision = decide(switch, current, tracked.since, now, ranking, self._rules)
        outcome = result = None
        target = decision.target
        if target is not None:
            result, outcome = await self._switch(switch, target, decision, ranking)
            if self._switches.current(switch) == target:
                tracked.current, tracked.since = target, self._clock.seconds()
        else:
            self._log_stay(tracked, decision, ranking)
        tracked.last = ProfitState(
            switch,
            self._switches.algorithm(switch),
            self._switches.current(switch),
            tracked.since,
            ranking,
            decision,
            outcome,
            result,
        )

    def _facts(self, name: str, prices: Mapping[str, Fraction | str]) -> PoolFacts | Skipped:
        pool = self._pools(name)
        if pool is None:
            return Skipped(name, "", "not a pool of this process")
        read = pool.templates.latest_template
        template = (
            None
            if read is None
            else TemplateFacts(
                reward=read.template.coinbase_value,
                target=read.template.target,
                height=read.template.height,
                fetched_at=read.read_at,
            )
        )
        price = prices.get(pool.symbol, f"no price for {pool.symbol}")
        return PoolFacts(name, pool.symbol, pool.decimals, template, price)

    def _log_skipped(self, switch: str, tracked: _Tracked, ranking: Ranking) -> None:
        """A pool's reason to be skipped, once each time it changes (not at every round)."""
        now_skipped = {s.pool: s.reason for s in ranking.skipped}
        for pool, reason in now_skipped.items():
            if tracked.skipped.get(pool) != reason:
                self.log.info(
                    "profit switching {switch}: {pool} not ranked: {reason}",
                    switch=switch,
                    pool=pool,
                    reason=reason,
                )
        for pool in tracked.skipped.keys() - now_skipped.keys():
            self.log.info("profit switching {switch}: {pool} ranked again", switch=switch, pool=pool)
        tracked.skipped = now_skipped

    def _log_stay(self, tracked: _Tracked, decision: Decision, ranking: Ranking) -> None:
        """A stay at info when its reason is new, at debug when it is the last one's."""
        last = tracked.last
        level = (
            self.log.debug if last is not None and last.decision.reason == decision.reason else self.log.info
        )
        level(
            "profit switching {switch}: stays on {from_pool}: {reason}",
            switch=decision.switch,
            from_pool=decision.current,
            to_pool=None,
            best=decision.best,
            reason=decision.reason,
            revenues=revenues(ranking),
        )

    async def _switch(
        self, switch: str, target: str, decision: Decision, ranking: Ranking
    ) -> tuple[str, str]:
        """The switch asked for: its result (one of SWITCH_RESULTS) and the answer or why not."""
        fields: dict[str, Any] = {
            "switch": switch,
            "from_pool": decision.current,
            "to_pool": target,
            "reason": decision.reason,
            "revenues": revenues(ranking),
        }
        self.log.info("profit switching {switch}: {from_pool} -> {to_pool}: {reason}", **fields)
        try:
            answer = await self._switches.switch(switch, target, f"profit: {decision.reason}")
        except SwitchRefused as e:
            self.results[(switch, "refused")] += 1
            self.log.warn(
                "profit switching {switch}: switch to {to_pool} refused: {refusal}",
                refusal=e.message,
                **fields,
            )
            return "refused", f"refused: {e.message}"
        except Exception as e:
            self.results[(switch, "failed")] += 1
            self.log.failure("profit switching {switch}: switch to {to_pool} failed", **fields)
            return "failed", f"failed: {type(e).__name__}: {e}"
        self.results[(switch, "done")] += 1
        return "done", answer

    def status_lines(self) -> list[str]:
        """A line on each switch for ``status`` (see ``status_line``)."""
        if self._prices_error is not None:
            prices = "prices down"
        elif self._prices_read_at is None:
            prices = "prices not read yet"
        else:
            prices = "prices up"
        now = self._clock.seconds()
        lines = []
        for name in self._switches.switch_names():
            tracked = self._tracked.get(name)
            last = None if tracked is None else tracked.last
            lines.append(status_line(name, self._switches.current(name), last, prices, now))
        return lines

    def snapshot(self) -> ProfitSnapshot:
        """The state now, for the API, the site and the metrics."""
        return ProfitSnapshot(
            unit=self.config.prices.unit,
            source=self._source.description,
            source_kind="http" if self.config.prices.http is not None else "file",
            interval=self.config.interval,
            prices_error=self._prices_error,
            prices_read_at=self._prices_read_at,
            switches=tuple(t.last for t in self._tracked.values() if t.last is not None),
            switches_made=dict(self.results),
        )
