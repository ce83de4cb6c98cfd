"""nomp.switching.profit: revenue per hash, the ranking and the decision, every branch."""

from __future__ import annotations

from fractions import Fraction

from twisted.trial.unittest import TestCase

from nomp.chain.encoding import bits_to_target
from nomp.switching.profit import (
    HASH_SPACE,
    Estimate,
    PoolFacts,
    Ranking,
    Rules,
    Skipped,
    TemplateFacts,
    decide,
    estimate,
    percent,
    rank,
    revenue_per_hash,
    revenue_text,
)

DIFF1 = 0xFFFF * 2**208  # the difficulty-1 target of sha256d and scrypt
COIN = 10**8
RULES = Rules(hysteresis=Fraction(1, 20), minimum_stay=600.0)


def template(reward: int = 50 * COIN, target: int = DIFF1, fetched_at: float = 1000.0) -> TemplateFacts:
    return TemplateFacts(reward=reward, target=target, height=100, fetched_at=fetched_at)


def facts(
    pool: str, price: Fraction | str = Fraction(1), reward: int = 50 * COIN, target: int = DIFF1
) -> PoolFacts:
    return PoolFacts(pool, pool.upper(), 8, template(reward, target), price)


def valued(pool: str, revenue: Fraction) -> Estimate:
    return Estimate(pool, pool.upper(), revenue, Fraction(1), 1, DIFF1, 1)


class RevenueTests(TestCase):
    """What a hash is expected to earn."""

    def test_formula(self) -> None:
        """reward (in coins) * price * (target + 1) / 2^256, exactly."""
        self.assertEqual(
            revenue_per_hash(25 * COIN, 8, Fraction(3, 2), DIFF1),
            Fraction(25) * Fraction(3, 2) * Fraction(DIFF1 + 1, HASH_SPACE),
        )

    def test_against_difficulty(self) -> None:
        """At difficulty d (target diff1/d) a hash earns reward * price / (d * 2^32), to
        within the +1 of the target and the 0xffff of difficulty 1."""
        difficulty = 1024
        exact = revenue_per_hash(50 * COIN, 8, Fraction(70), DIFF1 // difficulty)
        approximate = Fraction(50 * 70, difficulty * 2**32)
        self.assertLess(abs(exact / approximate - 1), Fraction(1, 10**4))

    def test_bits(self) -> None:
        """The target from a template's bits ranks a harder network lower."""
        easy = revenue_per_hash(COIN, 8, Fraction(1), bits_to_target(0x1E0FFFF0))
        hard = revenue_per_hash(COIN, 8, Fraction(1), bits_to_target(0x1D00FFFF))
        self.assertGreater(easy, hard)

    def test_decimals(self) -> None:
        """The reward is counted in whole coins of the coin's decimals."""
        self.assertEqual(
            revenue_per_hash(10**18, 18, Fraction(2), DIFF1), revenue_per_hash(COIN, 8, Fraction(2), DIFF1)
        )

    def test_exact_beyond_floats(self) -> None:
        """Two revenues a float could not tell apart still rank right."""
        a = revenue_per_hash(50 * COIN, 8, Fraction("70.000000000000001"), DIFF1)
        b = revenue_per_hash(50 * COIN, 8, Fraction("70"), DIFF1)
        self.assertEqual(float(a), float(b))
        self.assertGreater(a, b)

    def test_text(self) -> None:
        """Revenues shown with 12 significant digits, percentages with two decimals."""
        self.assertEqual(revenue_text(Fraction(1, 3)), "0.333333333333")
        self.assertEqual(revenue_text(Fraction(2, 3 * 10**20)), "6.66666666667E-21")
        self.assertEqual(percent(Fraction(1, 20)), "5 %")
        self.assertEqual(percent(Fraction(1, 3)), "33.33 %")
        self.assertEqual(percent(Fraction(0)), "0 %")


class EstimateTests(TestCase):
    """A pool valued, or skipped with its reason."""

    def test_valued(self) -> None:
        """A fresh template and a price: an estimate of the pool."""
        result = estimate(facts("ltc", Fraction(70)), now=1010.0, max_template_age=60.0)
        assert isinstance(result, Estimate)
        self.assertEqual(result.revenue, revenue_per_hash(50 * COIN, 8, Fraction(70), DIFF1))
        self.assertEqual(
            (result.pool, result.symbol, result.reward, result.height), ("ltc", "LTC", 50 * COIN, 100)
        )

    def test_no_template(self) -> None:
        """No template yet: skipped."""
        result = estimate(PoolFacts("ltc", "LTC", 8, None, Fraction(1)), 1010.0, 60.0)
        self.assertEqual(result, Skipped("ltc", "LTC", "no block template yet"))

    def test_stale_template(self) -> None:
        """A template older than the limit: skipped, the limit itself still fresh."""
        self.assertIsInstance(estimate(facts("ltc"), 1060.0, 60.0), Estimate)
        self.assertEqual(
            estimate(facts("ltc"), 1061.0, 60.0),
            Skipped("ltc", "LTC", "block template is 61 s old (at most 60 s)"),
        )

    def test_price_reason(self) -> None:
        """No usable price: skipped with the price source's reason."""
        self.assertEqual(
            estimate(facts("ltc", "no price for LTC"), 1010.0, 60.0),
            Skipped("ltc", "LTC", "no price for LTC"),
        )

    def test_price_not_positive(self) -> None:
        """A price of zero or below is never ranked (as zero or otherwise)."""
        for price in (Fraction(0), Fraction(-1)):
            result = estimate(facts("ltc", price), 1010.0, 60.0)
            self.assertEqual(result, Skipped("ltc", "LTC", f"price {price} is not a positive number"))

    def test_zero_reward(self) -> None:
        """A template paying nothing is a real zero, valued as such."""
        result = estimate(facts("ltc", reward=0), 1010.0, 60.0)
        assert isinstance(result, Estimate)
        self.assertEqual(result.revenue, 0)


class RankTests(TestCase):
    """One switch's pools, best first."""

    def test_order(self) -> None:
        """Best revenue first; the skipped ones apart, in the switch's order."""
        ranking = rank(
            [
                facts("a", Fraction(1)),
                facts("b", "no price for B"),
                facts("c", Fraction(3)),
                facts("d", Fraction(2)),
                PoolFacts("e", "E", 8, None, Fraction(1)),
            ],
            1010.0,
            60.0,
        )
        self.assertEqual([e.pool for e in ranking.estimates], ["c", "d", "a"])
        self.assertEqual([s.pool for s in ranking.skipped], ["b", "e"])
        self.assertEqual(ranking.estimate("d"), ranking.estimates[1])
        self.assertIsNone(ranking.estimate("b"))

    def test_already_skipped(self) -> None:
        """A pool the caller already skipped stays skipped with its reason."""
        ranking = rank([Skipped("gone", "", "not running"), facts("a")], 1010.0, 60.0)
        self.assertEqual(ranking.skipped, (Skipped("gone", "", "not running"),))
        self.assertEqual([e.pool for e in ranking.estimates], ["a"])

    def test_decimals(self) -> None:
        """A coin of 6 decimals: its reward of 10^6 base units is a whole coin, worth as
        much as 10^8 of a coin of 8 at the same price."""
        six = PoolFacts("six", "SIX", 6, template(reward=3 * 10**6), Fraction(5))
        eight = PoolFacts("eight", "EIGHT", 8, template(reward=2 * 10**8), Fraction(5))
        ranking = rank([eight, six], 1010.0, 60.0)
        self.assertEqual([e.pool for e in ranking.estimates], ["six", "eight"])
        by_pool = {e.pool: e.revenue for e in ranking.estimates}
        self.assertEqual(by_pool["six"], Fraction(3 * 5 * (DIFF1 + 1), HASH_SPACE))
        self.assertEqual(by_pool["eight"], Fraction(2 * 5 * (DIFF1 + 1), HASH_SPACE))
        # Taken for 8 decimals, the same reward would be worth a hundredth of that.
        self.assertEqual(by_pool["six"], 100 * revenue_per_hash(3 * 10**6, 8, Fraction(5), DIFF1))

    def test_ties(self) -> None:
        """Equal revenues keep the switch's order (its default first)."""
        ranking = rank([facts("x"), facts("y"), facts("z")], 1010.0, 60.0)
        self.assertEqual([e.pool for e in ranking.estimates], ["x", "y", "z"])


class DecideTests(TestCase):
    """Stay or switch, every branch."""

    def ranking(self, *revenues: tuple[str, int], skipped: tuple[Skipped, ...] = ()) -> Ranking:
        ordered = sorted(revenues, key=lambda r: -r[1])
        return Ranking(tuple(valued(pool, Fraction(r)) for pool, r in ordered), skipped)

    def test_nothing_valued(self) -> None:
        """No pool valued: stay, no best."""
        decision = decide("scrypt", "ltc", 0.0, 5000.0, Ranking((), ()), RULES)
        self.assertEqual((decision.action, decision.best, decision.target), ("stay", None, None))
        self.assertEqual(decision.reason, "no pool could be valued")
        self.assertEqual(decision.decided_at, 5000.0)

    def test_current_not_valued(self) -> None:
        """The current pool cannot be valued: it is not taken for worthless, and stays."""
        ranking = self.ranking(("doge", 100), skipped=(Skipped("ltc", "LTC", "no price for LTC"),))
        decision = decide("scrypt", "ltc", 0.0, 5000.0, ranking, RULES)
        self.assertEqual((decision.action, decision.best), ("stay", "doge"))
        self.assertEqual(decision.reason, "current pool ltc cannot be valued (no price for LTC)")

    def test_current_not_in_ranking(self) -> None:
        """A current pool the switch did not list: stays, saying so."""
        decision = decide("scrypt", "old", 0.0, 5000.0, self.ranking(("doge", 100)), RULES)
        self.assertEqual(decision.reason, "current pool old cannot be valued (it is not in the ranking)")

    def test_current_is_best(self) -> None:
        """The current pool earns the most: stay."""
        decision = decide("scrypt", "ltc", 0.0, 5000.0, self.ranking(("ltc", 100), ("doge", 90)), RULES)
        self.assertEqual(
            (decision.action, decision.best, decision.reason), ("stay", "ltc", "ltc earns the most")
        )

    def test_within_hysteresis(self) -> None:
        """A gain of at most the hysteresis (5 % here, 5 % exactly included): stay."""
        decision = decide("scrypt", "ltc", 0.0, 5000.0, self.ranking(("ltc", 100), ("doge", 105)), RULES)
        self.assertEqual((decision.action, decision.best), ("stay", "doge"))
        self.assertEqual(decision.reason, "doge earns 5 % more than ltc, within the hysteresis (5 %)")

    def test_equal_to_current(self) -> None:
        """Another pool earning as much ranked first (a tie): stay."""
        ranking = Ranking((valued("doge", Fraction(100)), valued("ltc", Fraction(100))), ())
        decision = decide("scrypt", "ltc", 0.0, 5000.0, ranking, Rules(Fraction(0), 0.0))
        self.assertEqual(decision.action, "stay")
        self.assertEqual(decision.reason, "doge earns as much as ltc, within the hysteresis (0 %)")

    def test_minimum_stay(self) -> None:
        """Better by more than the hysteresis, but too soon after the last switch: stay."""
        decision = decide("scrypt", "ltc", 4500.0, 5000.0, self.ranking(("ltc", 100), ("doge", 120)), RULES)
        self.assertEqual((decision.action, decision.best), ("stay", "doge"))
        self.assertEqual(
            decision.reason,
            "doge earns 20 % more than ltc, but ltc has been current for 500 s of the minimum stay of 600 s",
        )

    def test_switch(self) -> None:
        """Better by more than the hysteresis after the minimum stay (exactly): switch."""
        decision = decide("scrypt", "ltc", 4400.0, 5000.0, self.ranking(("ltc", 100), ("doge", 106)), RULES)
        self.assertEqual((decision.action, decision.target, decision.current), ("switch", "doge", "ltc"))
        self.assertEqual(decision.reason, "doge earns 6 % more than ltc")

    def test_switch_from_nothing(self) -> None:
        """A current pool earning nothing (a zero reward) is left for any that earns."""
        decision = decide("scrypt", "ltc", 0.0, 5000.0, self.ranking(("ltc", 0), ("doge", 1)), RULES)
        self.assertEqual((decision.action, decision.target), ("switch", "doge"))
        self.assertEqual(decision.reason, "doge earns more than ltc, which earns nothing")

    def test_zero_hysteresis(self) -> None:
        """With no hysteresis and no minimum stay any gain switches."""
        ranking = self.ranking(("ltc", 1000), ("doge", 1001))
        decision = decide("scrypt", "ltc", 5000.0, 5000.0, ranking, Rules(Fraction(0), 0.0))
        self.assertEqual(decision.target, "doge")
