"""open-ethereum-pool's API documents from its Redis members. Pure.

OEP's own front end reads these shapes (``/api/stats``, ``/api/miners``,
``/api/blocks``, ``/api/payments``, ``/api/accounts/<login>``); the maths
is OEP's: a miner's hashrate is the difficulty of its accepted shares in
the window over min(window, max(600 s, time since the first share seen)).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HASHRATE_FLOOR = 600.0  # seconds: OEP's floor on the hashrate's time span, damping start-up spikes


@dataclass(frozen=True, slots=True)
class Share:
    """One member of ``<coin>:hashrate`` (or of a login's set, without the login)."""

    difficulty: int
    login: str
    worker: str
    time: float  # its score, unix seconds


def parse_share(member: str, score: float, login: str | None = None) -> Share | None:
    """``diff:login:worker:ms`` (or ``diff:worker:ms`` with ``login`` given); None if not one."""
    parts = member.split(":")
    try:
        if login is None and len(parts) == 4:
            return Share(int(parts[0]), parts[1], parts[2], score)
        if login is not None and len(parts) == 3:
            return Share(int(parts[0]), login, parts[1], score)
    except ValueError:
        return None
    return None


def span(shares: Iterable[Share], now: float, window: float) -> float:
    """OEP's divisor: the window, or the time since the first share if shorter, but at least 600 s."""
    return span_since(min((share.time for share in shares), default=None), now, window)


def span_since(earliest: float | None, now: float, window: float) -> float:
    """``span`` of shares whose earliest is at ``earliest`` (None: no share)."""
    return min(window, max(HASHRATE_FLOOR, now - (now if earliest is None else earliest)))


def hashrates(shares: Sequence[Share], now: float, window: float, key: str = "login") -> dict[str, float]:
    """Hashes per second by login (or by worker), from the shares within the window."""
    recent = [share for share in shares if share.time >= now - window]
    divisor = span(recent, now, window)
    totals: defaultdict[str, int] = defaultdict(int)
    for share in recent:
        totals[getattr(share, key)] += share.difficulty
    return {name: total / divisor for name, total in totals.items()}


def last_beats(shares: Iterable[Share], key: str = "login") -> dict[str, float]:
    beats: dict[str, float] = {}
    for share in shares:
        name = getattr(share, key)
        beats[name] = max(beats.get(name, 0.0), share.time)
    return beats


def miners_document(shares: Sequence[Share], now: float, window: float) -> dict[str, Any]:
    rates = hashrates(shares, now, window)
    beats = last_beats(shares)
    miners = {
        login: {"lastBeat": int(beats[login]), "hr": rate, "offline": beats[login] < now - window / 2}
        for login, rate in rates.items()
    }
    return {
        "now": int(now * 1000),
        "miners": miners,
        "hashrate": sum(rates.values()),
        "minersTotal": len(miners),
    }


def block_document(member: str, height: int, candidate: bool) -> dict[str, Any] | None:
    """A block of ``blocks:candidates`` (``nonce:hash:mix:time:difficulty:shares``) or of
    ``blocks:immature``/``matured`` (``uncleHeight:orphan:nonce:hash:time:difficulty:shares:reward``)."""
    parts = member.split(":")
    try:
        if candidate and len(parts) == 6:
            return {
                "height": height,
                "timestamp": int(parts[3]),
                "difficulty": int(parts[4]),
                "shares": int(parts[5]),
                "uncle": False,
                "uncleHeight": 0,
                "orphan": False,
                "hash": "",
                "reward": "",
            }
        if not candidate and len(parts) == 8:
            uncle_height = int(parts[0])
            return {
                "height": height,
                "timestamp": int(parts[4]),
                "difficulty": int(parts[5]),
                "shares": int(parts[6]),
                "uncle": uncle_height > 0,
                "uncleHeight": uncle_height,
                "orphan": parts[1] == "1",
                "hash": parts[3],
                "reward": parts[7],
            }
    except ValueError:
        return None
    return None


def payment_document(member: str, score: float, login: str | None = None) -> dict[str, Any] | None:
    """``txHash:login:amount`` of ``payments:all`` (or ``txHash:amount`` of a login's)."""
    parts = member.split(":")
    try:
        if login is None and len(parts) == 3:
            return {"timestamp": int(score), "tx": parts[0], "address": parts[1], "amount": int(parts[2])}
        if login is not None and len(parts) == 2:
            return {"timestamp": int(score), "tx": parts[0], "amount": int(parts[1])}
    except ValueError:
        return None
    return None


def numeric(fields: Mapping[str, str]) -> dict[str, Any]:
    """A hash's fields as OEP's API shows them: integers where they are integers."""
    converted: dict[str, Any] = {}
    for name, value in fields.items():
        try:
            converted[name] = int(value)
        except ValueError:
            converted[name] = value
    return converted


def workers_document(
    shares: Sequence[Share], now: float, window: float, large_window: float
) -> dict[str, Any]:
    """An account's workers: ``hr`` over the window, ``hr2`` over the large one."""
    short = hashrates(shares, now, window, key="worker")
    large = hashrates(shares, now, large_window, key="worker")
    beats = last_beats(shares, key="worker")
    workers = {
        name: {
            "lastBeat": int(beats[name]),
            "hr": short.get(name, 0.0),
            "hr2": large.get(name, 0.0),
            "offline": beats[name] < now - window / 2,
        }
        for name in large
    }
    online = sum(1 for w in workers.values() if not w["offline"])
    return {
        "workers": workers,
        "workersTotal": len(workers),
        "workersOnline": online,
        "workersOffline": len(workers) - online,
        "currentHashrate": sum(short.values()),
        "hashrate": sum(large.values()),
    }
