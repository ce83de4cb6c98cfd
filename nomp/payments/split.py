"""Reward maths: a block's reward split between miners, in whole satoshis.

Pure functions only. Round weights come from Redis as decimal strings
(summed share difficulties); they are read as exact fractions, so the same
round always gives the same split, and the parts always add up to the
reward: what rounding leaves over goes to the pool, never to nobody.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

SATOSHIS_PER_COIN = 100_000_000


@dataclass(frozen=True, slots=True)
class RewardSplit:
    """One block's reward: ``miners`` (address -> satoshis) plus ``pool``.

    ``pool`` is the pool fee plus the rounding remainder; ``fee`` is the fee
    part alone. ``sum(miners.values()) + pool == reward`` always.
    """

    reward: int
    miners: dict[str, int]
    pool: int
    fee: int


def payout_address(worker: str) -> str:
    """The address a worker's shares earn for: the name up to its first dot."""
    return worker.split(".", 1)[0]


def round_weights(shares: Mapping[str, str]) -> dict[str, Fraction]:
    """A round hash (worker -> summed difficulty) as exact weights per address.

    Zero, negative and unreadable entries weigh nothing: a round hash is
    written only by our own recorder, but a hand-edited one must not make
    anyone owe money.
    """
    weights: dict[str, Fraction] = {}
    for worker, value in shares.items():
        try:
            weight = Fraction(Decimal(value))
        except (ArithmeticError, ValueError):
            continue
        if weight > 0:
            address = payout_address(worker)
            weights[address] = weights.get(address, Fraction(0)) + weight
    return weights


def split_reward(reward: int, weights: Mapping[str, Fraction], fee_percent: Decimal) -> RewardSplit:
    """Split ``reward`` satoshis: the fee first, the rest by weight, floors to the pool.

    With no weights (a round nobody's shares reached) the pool keeps it all.
    """
    if reward < 0:
        raise ValueError(f"negative reward {reward}")
    fee = int(reward * Fraction(fee_percent) / 100)
    to_miners = reward - fee
    total = sum(weights.values(), Fraction(0))
    miners: dict[str, int] = {}
    if total > 0:
        for address in sorted(weights):
            amount = int(to_miners * weights[address] / total)  # floor: both are >= 0
            if amount > 0:
                miners[address] = amount
    pool = reward - sum(miners.values())
    return RewardSplit(reward, miners, pool, fee)


def coins(satoshis: int) -> str:
    """Satoshis as the daemon's decimal coin amount, built without floats."""
    sign = "-" if satoshis < 0 else ""
    whole, fraction = divmod(abs(satoshis), SATOSHIS_PER_COIN)
    return f"{sign}{whole}.{fraction:08d}"


def satoshis(amount: Decimal) -> int:
    """A daemon's coin amount (parsed as Decimal) in satoshis; refuses sub-satoshi values."""
    value = amount * SATOSHIS_PER_COIN
    if value != value.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of satoshis")
    return int(value)
