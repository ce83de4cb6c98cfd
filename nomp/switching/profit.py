"""Profit switching's pure core: each coin's expected revenue, the ranking of one
switch's coins, and the decision to stay or to move.

A hash meets a network target ``T`` with probability (T + 1) / 2^256, for
sha256d and scrypt alike (the target is what the proof-of-work hash is
compared with), so a hash is expected to earn

    reward / 10^decimals * price * (T + 1) / 2^256

in the price's unit: reward * price / (difficulty * 2^32) with difficulty
taken against the network's own difficulty-1 target. Only coins of one
switch (one algorithm) are compared, so the unit of hash is the same.

Everything is exact (int and Fraction): two coins whose revenues differ by
less than a float's rounding still rank the right way, and a switch is
never decided by rounding. No clock and no I/O: the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from fractions import Fraction
from typing import Literal

HASH_SPACE = 2**256  # the number of proof-of-work hash values


@dataclass(frozen=True, slots=True)
class TemplateFacts:
    """What the revenue of a pool's coin needs of its latest block template."""

    reward: int  # coinbasevalue, in base units (satoshis)
    target: int  # the network target the template's bits give
    height: int
    fetched_at: float  # reactor seconds the template was read


@dataclass(frozen=True, slots=True)
class Estimate:
    """A pool whose coin could be valued: its expected revenue per hash."""

    pool: str
    symbol: str
    revenue: Fraction  # price units per hash
    price: Fraction  # price units per whole coin
    reward: int  # base units
    target: int
    height: int


@dataclass(frozen=True, slots=True)
class Skipped:
    """A pool that could not be valued, and why: it takes no part in the ranking."""

    pool: str
    symbol: str
    reason: str


@dataclass(frozen=True, slots=True)
class Ranking:
    """One switch's pools: the valued ones best first, and the skipped ones."""

    estimates: tuple[Estimate, ...]
    skipped: tuple[Skipped, ...]

    def estimate(self, pool: str) -> Estimate | None:
        return next((e for e in self.estimates if e.pool == pool), None)


@dataclass(frozen=True, slots=True)
class PoolFacts:
    """Everything known of one pool at a ranking: ``template`` None when the pool has
    none yet; ``price`` a Fraction, or the reason there is none for its coin."""

    pool: str
    symbol: str
    decimals: int  # a whole coin is 10^decimals base units
    template: TemplateFacts | None
    price: Fraction | str


def revenue_per_hash(reward: int, decimals: int, price: Fraction, target: int) -> Fraction:
    """The price units a hash is expected to earn (see the module's docstring)."""
    return Fraction(reward * (target + 1), 10**decimals * HASH_SPACE) * price


def estimate(facts: PoolFacts, now: float, max_template_age: float) -> Estimate | Skipped:
    """``facts`` valued, or skipped with the reason: no template, a template older
    than ``max_template_age`` seconds, or no usable price."""
    template = facts.template
    if template is None:
        return Skipped(facts.pool, facts.symbol, "no block template yet")
    age = now - template.fetched_at
    if age > max_template_age:
        return Skipped(
            facts.pool,
            facts.symbol,
            f"block template is {age:.0f} s old (at most {max_template_age:g} s)",
        )
    if isinstance(facts.price, str):
        return Skipped(facts.pool, facts.symbol, facts.price)
    if facts.price <= 0:  # the price source refuses these; a value built by hand may not
        return Skipped(facts.pool, facts.symbol, f"price {facts.price} is not a positive number")
    return Estimate(
        pool=facts.pool,
        symbol=facts.symbol,
        revenue=revenue_per_hash(template.reward, facts.decimals, facts.price, template.target),
        price=facts.price,
        reward=template.reward,
        target=template.target,
        height=template.height,
    )


def rank(pools: Sequence[PoolFacts | Skipped], now: float, max_template_age: float) -> Ranking:
    """The pools valued, best first; equal revenues keep the order of ``pools``
    (the switch's, default first). A pool already Skipped stays skipped."""
    estimates: list[Estimate] = []
    skipped: list[Skipped] = []
    for facts in pools:
        valued = facts if isinstance(facts, Skipped) else estimate(facts, now, max_template_age)
        if isinstance(valued, Estimate):
            estimates.append(valued)
        else:
            skipped.append(valued)
    order = {facts.pool: i for i, facts in enumerate(pools)}
    estimates.sort(key=lambda e: (-e.revenue, order[e.pool]))
    return Ranking(tuple(estimates), tuple(skipped))


Action = Literal["stay", "switch"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What profit switching does with one switch at one ranking, and why."""

    switch: str
    action: Action
    current: str  # the pool the switch is on
    best: str | None  # the best valued pool; None when none could be valued
    reason: str
    decided_at: float  # the ``now`` it was decided at

    @property
    def target(self) -> str | None:
        """The pool to switch to, or None to stay."""
        return self.best if self.action == "switch" else None


@dataclass(frozen=True, slots=True)
class Rules:
    """How much better, and after how long, a coin must be to be switched to."""

    hysteresis: Fraction  # the best must earn more than current * (1 + hysteresis)
    minimum_stay: float  # seconds on a pool before the next switch


def percent(ratio: Fraction) -> str:
    """``ratio`` as a percentage with two decimals, rounded half even (exact input)."""
    return f"{Decimal(ratio.numerator * 100) / Decimal(ratio.denominator):.2f}".rstrip("0").rstrip(".") + " %"


def decide(
    switch: str,
    current: str,
    since: float,
    now: float,
    ranking: Ranking,
    rules: Rules,
) -> Decision:
    """Stay on ``current`` (on it since ``since``) or switch to the best pool.

    A switch needs all of: a valued current pool (one that cannot be valued is
    not taken for worthless), a best pool other than it, earning more than
    ``1 + hysteresis`` times as much, and ``minimum_stay`` seconds on the
    current one.
    """

    def stay(reason: str, best: str | None) -> Decision:
        return Decision(switch, "stay", current, best, reason, now)

    if not ranking.estimates:
        return stay("no pool could be valued", None)
    best = ranking.estimates[0]
    here = ranking.estimate(current)
    if here is None:
        why = next((s.reason for s in ranking.skipped if s.pool == current), "it is not in the ranking")
        return stay(f"current pool {current} cannot be valued ({why})", best.pool)
    if best.pool == current:
        return stay(f"{current} earns the most", best.pool)
    gain = _comparison(best, here)
    if best.revenue <= here.revenue * (1 + rules.hysteresis):
        return stay(
            f"{gain}, within the hysteresis ({percent(rules.hysteresis)})",
            best.pool,
        )
    stayed = now - since
    if stayed < rules.minimum_stay:
        return stay(
            f"{gain}, but {current} has been current for {stayed:.0f} s "
            f"of the minimum stay of {rules.minimum_stay:g} s",
            best.pool,
        )
    return Decision(switch, "switch", current, best.pool, gain, now)


def _comparison(best: Estimate, here: Estimate) -> str:
    """``best`` against ``here`` in words."""
    if best.revenue == here.revenue:
        return f"{best.pool} earns as much as {here.pool}"
    if here.revenue == 0:
        return f"{best.pool} earns more than {here.pool}, which earns nothing"
    return f"{best.pool} earns {percent(best.revenue / here.revenue - 1)} more than {here.pool}"


def revenue_text(revenue: Fraction, digits: int = 12) -> str:
    """``revenue`` as a decimal string of ``digits`` significant digits (for display;
    the ranking itself stays exact)."""
    context = Context(prec=digits)
    return str(context.divide(Decimal(revenue.numerator), Decimal(revenue.denominator)))


def revenues(ranking: Ranking) -> Mapping[str, str]:
    """Each valued pool's revenue per hash as text, for log lines."""
    return {e.pool: revenue_text(e.revenue) for e in ranking.estimates}
