"""Pool stats as NOMP's website computed them, from the raw Redis data of one read.

Pure: the caller reads Redis and passes the time; nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nomp.config import PoolConfig
from nomp.payments.split import payout_address
from nomp.store.schema import NO_TXID, decode_pending_member, parse_hashrate_member

# A share of difficulty 1 takes 2**32 hashes on average, divided by the
# algorithm's multiplier (see nomp.hashing.Algorithm): hashrate is
# sum(difficulty) * HASHES_PER_DIFFICULTY / multiplier / window.
HASHES_PER_DIFFICULTY = 2**32
_HASHRATE_UNITS = ("KH", "MH", "GH", "TH", "PH")


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """One block the pool found, as the API shows it."""

    hash: str
    height: int
    txid: str
    worker: str
    time: float  # unix seconds it was found
    status: str  # pending, confirmed or orphaned
    reward: int | None  # satoshis (None for a block recorded without it)
    effort: float | None  # the round's shares over the network difficulty; 1.0 is 100 %
    solo: bool

    @property
    def miner(self) -> str:
        return payout_address(self.worker)


@dataclass(frozen=True, slots=True)
class PaymentInfo:
    """One payout transaction."""

    id: str
    txid: str
    time: float
    amounts: Mapping[str, int]  # address -> satoshis
    total: int
    fee: int


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """What one of the pool's daemons said of the network at the last collection."""

    name: str  # "daemon <n>", in configured order: URLs are not shown to the public
    ok: bool
    height: int | None = None
    difficulty: float | None = None  # as the daemon states it
    hashrate: float | None = None  # H/s, the daemon's estimate
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Balances:
    """Satoshis per address, from the payment keys."""

    immature: Mapping[str, int] = field(default_factory=dict)
    balance: Mapping[str, int] = field(default_factory=dict)
    paid: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerShares:
    """One worker's shares in the hashrate window, summed (in Redis, by the collector's script)."""

    valid: float  # summed difficulty of valid shares
    invalid: float  # summed difficulty of invalid shares
    last_share: float  # unix seconds of its newest share
    last_difficulty: float  # that share's difficulty


@dataclass(frozen=True, slots=True)
class RawPoolData:
    """One pool's keys as read from Redis at one moment."""

    shares: Mapping[str, WorkerShares]  # worker -> its shares within the window
    counters: Mapping[str, str]  # the <coin>:stats hash
    pending: int  # cardinality of blocksPending
    confirmed: int
    orphaned: int
    found: tuple[BlockInfo, ...] = ()  # newest first
    payments: tuple[PaymentInfo, ...] = ()  # newest first
    balances: Balances = Balances()
    payment_totals: Mapping[str, int] = field(default_factory=dict)
    network: tuple[DaemonInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker name's shares within the hashrate window."""

    name: str
    shares: float  # summed difficulty of valid shares
    invalid_shares: float  # summed difficulty of invalid shares
    hashrate: float  # H/s
    last_share: float | None = None  # unix seconds of its newest share in the window
    difficulty: float | None = None  # the difficulty of that share: the one it mines at


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
    found: tuple[BlockInfo, ...] = ()  # newest first
    payments: tuple[PaymentInfo, ...] = ()  # newest first
    balances: Balances = Balances()
    payment_totals: Mapping[str, int] = field(default_factory=dict)
    network: tuple[DaemonInfo, ...] = ()
    # address -> ((unix seconds, H/s), ...), oldest first: the miner's hashrate over the retention
    miner_history: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)

    @property
    def payment_count(self) -> int:
        return len(self.payments)

    @property
    def last_block(self) -> BlockInfo | None:
        return self.found[0] if self.found else None

    @property
    def network_info(self) -> DaemonInfo | None:
        """The first daemon that answered."""
        return next((d for d in self.network if d.ok), None)

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


def sum_shares(members: Iterable[tuple[str, float]], start: float, now: float) -> dict[str, WorkerShares]:
    """Each worker's shares among hashrate members (member, score) scored within
    [start, now]. The collector's Lua script does the same in Redis, so only the
    sums cross the wire; this is its reference, and what the tests build data with."""
    sums: dict[str, list[float]] = {}  # worker -> [valid, invalid, last time, last difficulty]
    for member, score in members:
        parsed = parse_hashrate_member(member)
        if parsed is None or score < start or score > now:
            continue
        difficulty, worker = parsed
        entry = sums.setdefault(worker, [0.0, 0.0, -1.0, 0.0])
        if difficulty >= 0:
            entry[0] += difficulty
        else:
            entry[1] -= difficulty
        if score >= entry[2]:
            entry[2], entry[3] = score, abs(difficulty)
    return {worker: WorkerShares(*entry) for worker, entry in sums.items()}


def pool_stats(pool: PoolConfig, raw: RawPoolData, now: float) -> PoolStats:
    """The stats of ``pool`` from its shares of the last ``hashrate_window`` seconds before ``now``."""
    window = pool.hashrate_window
    multiplier = pool.coin.algorithm.multiplier

    def rate(difficulty: float) -> float:
        return difficulty * HASHES_PER_DIFFICULTY / multiplier / window

    workers = tuple(
        WorkerStats(name, s.valid, s.invalid, rate(s.valid), s.last_share, s.last_difficulty)
        for name, s in sorted(raw.shares.items())
    )
    return PoolStats(
        pool=pool,
        hashrate=rate(sum(w.shares for w in workers)),
        workers=workers,
        miners=_miners(workers),
        counters=dict(raw.counters),
        blocks=BlockCounts(raw.pending, raw.confirmed, raw.orphaned),
        found=raw.found,
        payments=raw.payments,
        balances=raw.balances,
        payment_totals=dict(raw.payment_totals),
        network=raw.network,
    )


def _miners(workers: Iterable[WorkerStats]) -> tuple[MinerStats, ...]:
    by_address: dict[str, list[WorkerStats]] = {}
    for worker in workers:
        by_address.setdefault(payout_address(worker.name), []).append(worker)
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
        algorithm = stats.pool.coin.algorithm.name
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


def parse_block(member: str, status: str, fields: Mapping[str, str]) -> BlockInfo | None:
    """A block from its blocksPending-style member "<hash>:<txid>:<height>:<worker>:<ms>" and
    its ``<coin>:block:<hash>`` hash (empty for a block recorded by NOMP), or None if the
    member is not one."""
    try:
        block = decode_pending_member(member)
    except ValueError:
        return None
    reward = _integer(fields.get("reward"))
    shares, difficulty = _number(fields.get("shares")), _number(fields.get("difficulty"))
    solo = fields.get("solo") == "1"
    effort = shares / difficulty if shares is not None and difficulty and not solo else None
    txid = block.txid or NO_TXID
    return BlockInfo(
        block.block_hash, block.height, txid, block.worker, block.ms / 1000, status, reward, effort, solo
    )


def parse_payment(member: str, score: float) -> PaymentInfo | None:
    """A payout from its ``<coin>:payments`` member (the ledger's JSON record), or None."""
    try:
        record = json.loads(member)
        amounts = {str(a): int(v) for a, v in record["amounts"].items()}
        return PaymentInfo(
            id=str(record["id"]),
            txid=str(record["txid"]),
            time=float(record.get("time", score)),
            amounts=amounts,
            total=int(record.get("total", sum(amounts.values()))),
            fee=int(record.get("fee", 0)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _integer(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None
