"""The profit-switching document of GET /api/switching/profit, from the
ProfitSwitchingService's snapshot.

Prices and revenues are decimal strings: exact where they are (a price read
from the source), 12 significant digits where the exact value has no end
(a revenue, a quotient). The price source's address is not shown: an
endpoint's URL may hold a key of the operator's.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

from nomp.switching.profit import Decision, Estimate, Skipped, revenue_text
from nomp.switching.profitservice import SWITCH_RESULTS, ProfitSnapshot, ProfitState

HASHES_PER_GIGAHASH_DAY = 10**9 * 86_400  # a hashrate of 1 GH/s for a day
ProfitView = Callable[[], ProfitSnapshot]  # the service's snapshot, as it is now


def decimal_text(value: Fraction) -> str:
    """``value`` as a decimal string, exact when 28 digits hold it."""
    text = revenue_text(value, digits=28)
    return text.rstrip("0").rstrip(".") if "." in text and "E" not in text else text


def _estimate(estimate: Estimate) -> dict[str, Any]:
    return {
        "pool": estimate.pool,
        "symbol": estimate.symbol,
        "price": decimal_text(estimate.price),
        "reward": estimate.reward,
        "height": estimate.height,
        "target": f"{estimate.target:064x}",
        "revenuePerHash": revenue_text(estimate.revenue),
        "revenuePerGigahashDay": revenue_text(estimate.revenue * HASHES_PER_GIGAHASH_DAY),
    }


def _skipped(skipped: Skipped) -> dict[str, Any]:
    return {"pool": skipped.pool, "symbol": skipped.symbol or None, "reason": skipped.reason}


def _decision(decision: Decision) -> dict[str, Any]:
    return {
        "action": decision.action,
        "from": decision.current,
        "to": decision.target,
        "best": decision.best,
        "reason": decision.reason,
        "time": decision.decided_at,
    }


def _switch(state: ProfitState, snapshot: ProfitSnapshot) -> dict[str, Any]:
    return {
        "name": state.switch,
        "algorithm": state.algorithm,
        "current": state.current,
        "since": state.since,
        "decision": _decision(state.decision),
        "outcome": state.outcome,
        "ranking": [_estimate(e) for e in state.ranking.estimates],
        "skipped": [_skipped(s) for s in state.ranking.skipped],
        "switches": {
            result: snapshot.switches_made.get((state.switch, result), 0) for result in SWITCH_RESULTS
        },
    }


def profit_document(snapshot: ProfitSnapshot | None) -> dict[str, Any]:
    """The document; ``enabled`` false (and nothing else) without profit switching."""
    if snapshot is None:
        return {
            "enabled": False,
            "unit": None,
            "source": None,
            "interval": None,
            "prices": None,
            "switches": [],
        }
    return {
        "enabled": True,
        "unit": snapshot.unit,
        "source": snapshot.source_kind,
        "interval": snapshot.interval,
        "prices": {
            "ok": snapshot.prices_error is None and snapshot.prices_read_at is not None,
            "error": snapshot.prices_error,
            "readAt": snapshot.prices_read_at,
        },
        "switches": [_switch(state, snapshot) for state in snapshot.switches],
    }
