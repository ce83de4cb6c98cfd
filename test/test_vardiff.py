"""VarDiff, pure: every call with an explicit ``now``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from twisted.trial.unittest import SynchronousTestCase

from nomp.config import VardiffConfig
from nomp.stratum.vardiff import VarDiff, VarDiffState, tidy

# target 15 s +- 30%: shares 10.5 to 19.5 s apart leave the difficulty alone.
CONFIG = VardiffConfig(min_diff=0.01, max_diff=100, target_time=15, retarget_time=90, variance_percent=30)


def shares(
    vardiff: VarDiff, state: VarDiffState, times: Iterable[float], difficulty: float
) -> list[float | None]:
    """on_share at each time (the difficulty follows each change); what each returned."""
    results = []
    for now in times:
        new = vardiff.on_share(state, now, difficulty)
        results.append(new)
        if new is not None:
            difficulty = new
    return results


class VarDiffTests(SynchronousTestCase):
    """NOMP's retargeting on shares, within [min_diff, max_diff]."""

    def setUp(self) -> None:
        self.vardiff = VarDiff(CONFIG)
        self.state = self.vardiff.start(0.0)

    def test_start(self) -> None:
        """A new miner's state starts its first interval and retarget period at connection time."""
        state = self.vardiff.start(123.5)
        self.assertEqual((state.since, state.last_retarget, state.last_share), (123.5, 123.5, None))
        self.assertEqual(list(state.intervals), [])

    def test_no_change_before_retarget_time(self) -> None:
        """Fast shares change nothing until retarget_time has passed since the connection."""
        results = shares(self.vardiff, self.state, [float(t) for t in range(1, 90)], 1.0)
        self.assertEqual(results, [None] * 89)
        self.assertEqual(self.vardiff.on_share(self.state, 90.0, 1.0), 15.0)

    def test_first_share_is_no_interval(self) -> None:
        """A first share after the retarget time has no interval to judge by: no change."""
        self.assertIsNone(self.vardiff.on_share(self.state, 500.0, 1.0))
        self.assertEqual(list(self.state.intervals), [])

    def test_raise(self) -> None:
        """Shares faster than target - variance scale the difficulty by target/mean."""
        self.assertEqual(shares(self.vardiff, self.state, [85.0, 90.0], 2.0), [None, 6.0])  # 2 * 15/5

    def test_raise_capped(self) -> None:
        """A raise stops at max_diff, and a miner at max_diff is not raised."""
        self.assertEqual(shares(self.vardiff, self.state, [89.0, 90.0], 10.0), [None, 100.0])
        state = self.vardiff.start(0.0)
        self.assertEqual(shares(self.vardiff, state, [89.0, 90.0], 100.0), [None, None])

    def test_lower(self) -> None:
        """Shares slower than target + variance scale the difficulty down by target/mean."""
        self.assertEqual(shares(self.vardiff, self.state, [60.0, 120.0], 1.0), [None, 0.25])

    def test_lower_capped(self) -> None:
        """A cut stops at min_diff, and a miner at min_diff is not lowered."""
        self.assertEqual(shares(self.vardiff, self.state, [60.0, 120.0], 0.02), [None, 0.01])
        state = self.vardiff.start(0.0)
        self.assertEqual(shares(self.vardiff, state, [60.0, 120.0], 0.01), [None, None])

    def test_x2_mode(self) -> None:
        """In x2 mode the difficulty is doubled or halved, within the bounds."""
        vardiff = VarDiff(dataclasses.replace(CONFIG, x2_mode=True))
        self.assertEqual(shares(vardiff, vardiff.start(0.0), [89.0, 90.0], 1.0), [None, 2.0])
        self.assertEqual(shares(vardiff, vardiff.start(0.0), [60.0, 120.0], 1.0), [None, 0.5])
        self.assertEqual(shares(vardiff, vardiff.start(0.0), [89.0, 90.0], 60.0), [None, 100.0])
        self.assertEqual(shares(vardiff, vardiff.start(0.0), [60.0, 120.0], 0.015), [None, 0.01])

    def test_inside_band(self) -> None:
        """A mean inside target +- variance (bounds included) changes nothing."""
        for interval in (10.5, 15.0, 19.5):
            state = self.vardiff.start(0.0)
            times = [interval * k for k in range(1, 12)]
            self.assertEqual(set(shares(self.vardiff, state, times, 1.0)), {None}, interval)
        state = self.vardiff.start(0.0)
        self.assertEqual(shares(self.vardiff, state, [10.25 * k for k in range(1, 10)], 1.0)[-1], 1.46341)

    def test_retarget_period_restarts(self) -> None:
        """After a retarget the next waits another retarget_time, on fresh intervals."""
        self.assertEqual(shares(self.vardiff, self.state, [89.0, 90.0], 1.0), [None, 15.0])
        self.assertEqual(list(self.state.intervals), [])
        self.assertEqual(self.state.last_retarget, 90.0)
        times = [90.0 + t for t in range(1, 90)]
        self.assertEqual(set(shares(self.vardiff, self.state, times, 15.0)), {None})
        self.assertEqual(self.vardiff.on_share(self.state, 180.0, 15.0), 100.0)

    def test_in_band_retarget_also_restarts(self) -> None:
        """A retarget that changes nothing still restarts the period and the intervals."""
        self.assertEqual(shares(self.vardiff, self.state, [75.0, 90.0], 1.0), [None, None])
        self.assertEqual((self.state.last_retarget, list(self.state.intervals)), (90.0, []))

    def test_only_recent_intervals_count(self) -> None:
        """The mean is over the last retarget_time / target_time * 4 intervals (24 here)."""
        times = [0.0, 30.0, 60.0] + [60.0 + 1.25 * k for k in range(1, 25)]
        self.assertEqual(times[-1], 90.0)
        results = shares(self.vardiff, self.state, times, 1.0)
        self.assertEqual(results[-1], 12.0)  # 15 / 1.25: the two 30 s intervals fell out
        self.assertEqual(results[:-1], [None] * (len(times) - 1))

    def test_simultaneous_shares(self) -> None:
        """Shares at the same instant raise to max_diff without dividing by zero."""
        self.assertEqual(shares(self.vardiff, self.state, [90.0, 90.0], 1.0), [None, 100.0])

    def test_clock_going_back(self) -> None:
        """A share timed before the previous one counts as a zero interval."""
        self.assertEqual(shares(self.vardiff, self.state, [95.0, 94.0], 1.0), [None, 100.0])

    def test_result_is_tidy(self) -> None:
        """A new difficulty has at most six significant digits."""
        self.assertEqual(shares(self.vardiff, self.state, [89.0, 90.0 + 1 / 3], 0.01), [None, 0.112500])
        state = self.vardiff.start(0.0)
        self.assertEqual(shares(self.vardiff, state, [80.0, 87.0, 94.0], 1.0), [None, None, 2.14286])


class QuietMinerTests(SynchronousTestCase):
    """on_quiet lowers a miner whose shares stopped coming."""

    def setUp(self) -> None:
        self.vardiff = VarDiff(CONFIG)
        self.state = self.vardiff.start(0.0)

    def test_not_before_retarget_time(self) -> None:
        """A miner silent since it connected is left alone up to retarget_time, then lowered."""
        for now in (10.0, 19.6, 60.0, 90.0):
            self.assertIsNone(self.vardiff.on_quiet(self.state, now, 1.0), now)
        self.assertEqual(self.vardiff.on_quiet(self.state, 91.0, 1.0), tidy(15 / 91))
        self.assertEqual(self.state.last_retarget, 91.0)

    def test_recent_share(self) -> None:
        """A miner whose last share is recent is not lowered."""
        self.vardiff.on_share(self.state, 100.0, 1.0)
        self.assertIsNone(self.vardiff.on_quiet(self.state, 150.0, 1.0))
        self.assertIsNone(self.vardiff.on_quiet(self.state, 190.0, 1.0))
        self.assertEqual(self.vardiff.on_quiet(self.state, 200.0, 1.0), 0.15)  # silent 100 s

    def test_not_right_after_a_retarget(self) -> None:
        """After a change the next cut waits retarget_time, however long the silence."""
        self.assertEqual(self.vardiff.on_quiet(self.state, 91.0, 1.0), 0.164835)
        self.assertIsNone(self.vardiff.on_quiet(self.state, 180.0, 0.164835))
        self.assertEqual(self.vardiff.on_quiet(self.state, 181.0, 0.164835), tidy(0.164835 * 15 / 181))

    def test_down_to_min_diff(self) -> None:
        """Repeated cuts of a silent miner stop at min_diff."""
        difficulty = 100.0
        sent = []
        for now in range(91, 2000, 91):
            new = self.vardiff.on_quiet(self.state, float(now), difficulty)
            if new is not None:
                sent.append(new)
                difficulty = new
        self.assertEqual(sent, [16.4835, 1.35853, 0.0746445, 0.01])
        self.assertEqual(difficulty, CONFIG.min_diff)

    def test_bound_is_the_larger_of_retarget_and_variance(self) -> None:
        """With a retarget time shorter than target + variance, silence must exceed the latter."""
        vardiff = VarDiff(dataclasses.replace(CONFIG, retarget_time=5))
        state = vardiff.start(0.0)
        self.assertIsNone(vardiff.on_quiet(state, 19.5, 1.0))
        self.assertEqual(vardiff.on_quiet(state, 20.0, 1.0), 0.75)


class TidyTests(SynchronousTestCase):
    """tidy keeps six significant digits."""

    def test_rounding(self) -> None:
        """Large, small and exact values are rounded to six significant digits."""
        self.assertEqual(tidy(1 / 3), 0.333333)
        self.assertEqual(tidy(2 / 3), 0.666667)
        self.assertEqual(tidy(123456789.0), 123457000.0)
        self.assertEqual(tidy(0.000123456789), 0.000123457)
        self.assertEqual(tidy(1e-10 / 3), 3.33333e-11)
        self.assertEqual(tidy(15.0), 15.0)
        self.assertEqual(tidy(0.0625), 0.0625)
