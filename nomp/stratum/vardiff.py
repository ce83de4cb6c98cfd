"""Variable difficulty: keep each miner near one share per ``target_time``.

Pure: no clock of its own, every call takes ``now``. One VarDiff per port,
one VarDiffState per connection.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from nomp.config import VardiffConfig


def tidy(difficulty: float) -> float:
    """Six significant digits: readable on the wire, and tiny difficulties survive."""
    return float(f"{difficulty:.6g}")


@dataclass
class VarDiffState:
    """What vardiff remembers of one miner."""

    since: float  # connection time: the start of the first interval
    last_retarget: float  # the last change (or the connection time)
    last_share: float | None = None
    intervals: deque[float] = field(default_factory=deque)

    def restart(self, now: float) -> None:
        """The difficulty was set from outside (the miner asked): intervals
        timed at the old one say nothing of the new, and the next retarget
        is a whole retarget time away."""
        self.last_retarget = now
        self.intervals.clear()


class VarDiff:
    """NOMP's vardiff, plus lowering a miner that goes quiet.

    On each share the time since the previous one is recorded; once
    ``retarget_time`` has passed since the last change, the mean interval
    is compared with ``target_time`` +- ``variance_percent`` and the
    difficulty scaled by target/mean (or doubled/halved in x2 mode), within
    [min_diff, max_diff]. A miner with no share for longer than both the
    retarget time and the upper variance bound is lowered as if its next
    share were due now: NOMP leaves such a miner stuck.
    """

    def __init__(self, config: VardiffConfig) -> None:
        self.config = config
        variance = config.target_time * config.variance_percent / 100
        self._low = config.target_time - variance
        self._high = config.target_time + variance
        # As NOMP: enough samples for four per retarget period.
        self._samples = max(4, int(config.retarget_time / config.target_time * 4))

    def start(self, now: float) -> VarDiffState:
        """State for a miner connecting at ``now``."""
        return VarDiffState(since=now, last_retarget=now)

    def on_share(self, state: VarDiffState, now: float, difficulty: float) -> float | None:
        """Record a share; the new difficulty if it should change."""
        if state.last_share is not None:
            state.intervals.append(max(0.0, now - state.last_share))
            while len(state.intervals) > self._samples:
                state.intervals.popleft()
        state.last_share = now
        if not state.intervals or now - state.last_retarget < self.config.retarget_time:
            return None
        return self._retarget(state, now, sum(state.intervals) / len(state.intervals), difficulty)

    def on_quiet(self, state: VarDiffState, now: float, difficulty: float) -> float | None:
        """Called from time to time: lower a miner whose shares stopped coming."""
        silent = now - (state.last_share if state.last_share is not None else state.since)
        if silent <= max(self._high, self.config.retarget_time):
            return None
        if now - state.last_retarget < self.config.retarget_time:
            return None
        # The next share is at least `silent` away: count it as one interval.
        mean = max(silent, sum(state.intervals, silent) / (len(state.intervals) + 1))
        return self._retarget(state, now, mean, difficulty)

    def _retarget(self, state: VarDiffState, now: float, mean: float, difficulty: float) -> float | None:
        config = self.config
        new = None
        if mean > self._high and difficulty > config.min_diff:
            factor = 0.5 if config.x2_mode else config.target_time / mean
            new = max(config.min_diff, difficulty * factor)
        elif mean < self._low and difficulty < config.max_diff:
            factor = 2.0 if config.x2_mode else config.target_time / max(mean, 1e-3)
            new = min(config.max_diff, difficulty * factor)
        state.last_retarget = now
        state.intervals.clear()
        if new is None:
            return None
        new = tidy(new)
        return new if new != difficulty else None
