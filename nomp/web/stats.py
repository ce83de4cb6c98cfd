"""Pool stats as NOMP's website computed them, from the raw Redis data of one read.

Pure: the caller reads Redis and passes the time; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nomp.config import PoolConfig
from nomp.hashing import ALGORITHMS

# A share of difficulty 1 takes 2**32 hashes on average, divided by the
# algorithm's multiplier (see nomp.hashing.Algorithm): hashrate is
# sum(difficulty) * HASHES_PER_DIFFICULTY / multiplier / window.
HASHES_PER_DIFFICULTY = 2**32
_HASHRATE_UNITS = ("KH", "MH", "GH", "TH", "PH")


@dataclass(frozen=True, slots=True)
class RawPoolData:
    """One pool's keys as read from Redis at one moment."""

    hashrate: tuple[tuple[str, float], ...]  # (member, score) of the <coin>:hashrate zset
    counters: Mapping[str, str]  # the <coin>:stats hash
    pending: int  # cardinality of blocksPending
    confirmed: int
    orphaned: int


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker name's shares within the hashrate window."""

    name: str
    shares: float  # summed difficulty of valid shares
    invalid_shares: float  # summed difficulty of invalid shares
    hashrate: float  # H/s


@dataclass(frozen=True, slots=True)
class MinerStats:
    """One address (worker names up to their first '.') within the hashrate window."""

    address: str
    workers: int
    shares: float
    invalid_shares: float
    hashrate: float


@dataclass(frozen=True, slots=True)
class BlockCounts:
    pending: int
    confirmed: int
    orphaned: int


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One pool's stats at ``time``."""

    pool: PoolConfig
    hashrate: float  # H/s
    workers: tuple[WorkerStats, ...]  # sorted by name
    miners: tuple[MinerStats, ...]  # highest hashrate first, then by address
    counters: Mapping[str, str]  # as Redis holds them: NOMP's API served them as strings
    blocks: BlockCounts

    @property
    def coin(self) -> str:
        """The key NOMP's API gives the pool under: its coin's name, lower case as its Redis keys."""
        return self.pool.coin.name.lower()


def hashrate_string(hashrate: float) -> str:
    """NOMP's display form: thousands until at most 1000, from KH up, two decimals."""
    value = hashrate / 1000
    unit = 0
    while value > 1000 and unit < len(_HASHRATE_UNITS) - 1:
        value /= 1000
        unit += 1
    return f"{value:.2f} {_HASHRATE_UNITS[unit]}"


def parse_member(member: str) -> tuple[float, str] | None:
    """(difficulty, worker) of a hashrate member "<difficulty>:<worker>:<ms>:<id>",
    or None if it is not one. The worker is taken between the first and the
    last two colons, so a worker name holding a colon still parses."""
    difficulty, _, rest = member.partition(":")
    parts = rest.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        return None
    try:
        return float(difficulty), parts[0]
    except ValueError:
        return None


def pool_stats(pool: PoolConfig, raw: RawPoolData, now: float) -> PoolStats:
    """The stats of ``pool`` from its shares of the last ``hashrate_window`` seconds before ``now``."""
    window = pool.hashrate_window
    multiplier = ALGORITHMS[pool.coin.algorithm].multiplier
    start = now - window
    valid: dict[str, float] = {}
    invalid: dict[str, float] = {}
    for member, score in raw.hashrate:
        parsed = parse_member(member)
        if parsed is None or score < start or score > now:
            continue
        difficulty, worker = parsed
        valid.setdefault(worker, 0.0)
        invalid.setdefault(worker, 0.0)
        if difficulty >= 0:
            valid[worker] += difficulty
        else:
            invalid[worker] -= difficulty

    def rate(difficulty: float) -> float:
        return difficulty * HASHES_PER_DIFFICULTY / multiplier / window

    workers = tuple(WorkerStats(w, valid[w], invalid[w], rate(valid[w])) for w in sorted(valid))
    return PoolStats(
        pool=pool,
        hashrate=rate(sum(valid.values())),
        workers=workers,
        miners=_miners(workers),
        counters=dict(raw.counters),
        blocks=BlockCounts(raw.pending, raw.confirmed, raw.orphaned),
    )


def _miners(workers: Iterable[WorkerStats]) -> tuple[MinerStats, ...]:
    by_address: dict[str, list[WorkerStats]] = {}
    for worker in workers:
        by_address.setdefault(worker.name.split(".", 1)[0], []).append(worker)
    miners = [
        MinerStats(
            address,
            len(group),
            sum(w.shares for w in group),
            sum(w.invalid_shares for w in group),
            sum(w.hashrate for w in group),
        )
        for address, group in by_address.items()
    ]
    return tuple(sorted(miners, key=lambda m: (-m.hashrate, m.address)))


def stats_document(pools: Iterable[PoolStats], now: float) -> dict[str, object]:
    """The body of /api/stats, in NOMP's shape.

    Unlike NOMP, ``global.hashrate`` is summed (NOMP always served 0).
    """
    algo_workers: dict[str, int] = {}
    algo_hashrates: dict[str, float] = {}
    by_coin: dict[str, object] = {}
    for stats in pools:
        algorithm = stats.pool.coin.algorithm
        algo_workers[algorithm] = algo_workers.get(algorithm, 0) + len(stats.workers)
        algo_hashrates[algorithm] = algo_hashrates.get(algorithm, 0.0) + stats.hashrate
        by_coin[stats.coin] = {
            "name": stats.pool.coin.name,
            "symbol": stats.pool.coin.symbol,
            "algorithm": algorithm,
            "poolStats": dict(stats.counters),
            "blocks": block_counts(stats.blocks),
            "workers": {
                w.name: {
                    "shares": w.shares,
                    "invalidshares": w.invalid_shares,
                    "hashrate": w.hashrate,
                    "hashrateString": hashrate_string(w.hashrate),
                }
                for w in stats.workers
            },
            "hashrate": stats.hashrate,
            "workerCount": len(stats.workers),
            "hashrateString": hashrate_string(stats.hashrate),
        }
    algos = {
        name: {"workers": algo_workers[name], "hashrate": rate, "hashrateString": hashrate_string(rate)}
        for name, rate in algo_hashrates.items()
    }
    return {
        "time": int(now),
        "global": {"workers": sum(algo_workers.values()), "hashrate": sum(algo_hashrates.values())},
        "algos": algos,
        "pools": by_coin,
    }


def history_entry(pools: Iterable[PoolStats], now: float) -> dict[str, object]:
    """The reduced entry /api/pool_stats keeps per collection, as NOMP's."""
    return {
        "time": int(now),
        "pools": {
            stats.coin: {
                "hashrate": stats.hashrate,
                "workerCount": len(stats.workers),
                "blocks": block_counts(stats.blocks),
            }
            for stats in pools
        },
    }


def block_counts(blocks: BlockCounts) -> dict[str, int]:
    return {"pending": blocks.pending, "confirmed": blocks.confirmed, "orphaned": blocks.orphaned}
