"""Pool stats as NOMP's website computed them, from the raw Redis data of one read.

Bitcoin-family pools are read from NOMP's keys; Ethereum-family ones from
open-ethereum-pool's (nomp.store.oepschema), turned into the same records:
a login is the miner's address, ``<login>.<worker>`` its worker's name,
amounts are wei where the Bitcoin family's are satoshis (``PoolStats.unit``),
and the hashrate is OEP's (nomp.web.oepstats).

Pure: the caller reads Redis and passes the time; nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from nomp.config import EthPoolConfig, PoolConfig
from nomp.eth.logins import check_address
from nomp.payments.ethledger import NO_HASH, parse_block_member, parse_score
from nomp.payments.ethunlock import parse_candidate_member
from nomp.payments.split import payout_address
from nomp.store.oepschema import BALANCE, PAID, WEI_PER_SHANNON, dust_field, wei_of
from nomp.store.schema import NO_TXID, decode_pending_member, parse_hashrate_member
from nomp.web.oepstats import payment_document, span_since

AnyPoolConfig: TypeAlias = PoolConfig | EthPoolConfig

# A share of difficulty 1 takes 2**32 hashes on average, divided by the
# algorithm's multiplier (see nomp.hashing.Algorithm): hashrate is
# sum(difficulty) * HASHES_PER_DIFFICULTY / multiplier / window.
HASHES_PER_DIFFICULTY = 2**32
_HASHRATE_UNITS = ("KH", "MH", "GH", "TH", "PH")
# An Ethereum-family node's heartbeat in <coin>:nodes is written every
# state_update_interval (seconds); one this old means the pool process that
# wrote it is gone, and its height and difficulty are no longer current.
NODE_STALE_AFTER = 120.0
IMMATURE = "immature"  # the unlocker's field of miners:<login> (beside OEP's BALANCE and PAID)
# A member of <coin>:hashrate as OEP writes it, diff:login:worker:ms (the
# collector's Lua matches the same, with Lua's %d, which is ASCII too).
_ETH_SHARE = re.compile(r"(\d+):([^:]+):([^:]+):\d+", re.ASCII)


@dataclass(frozen=True, slots=True)
class Unit:
    """The smallest unit a pool counts its amounts in."""

    name: str
    decimals: int  # how many places of it a coin has: a coin is 10**decimals of it


SATOSHI = Unit("satoshi", 8)
WEI = Unit("wei", 18)


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """One block the pool found, as the API shows it."""

    # None: not known (an Ethereum-family candidate the unlocker has not
    # looked for yet, or one it found nowhere in the chain).
    hash: str | None
    height: int  # where it was found (an uncle: its own height)
    txid: str  # its coinbase transaction; NO_TXID if unknown, or the chain has none (Ethereum)
    worker: str | None  # None: the records do not say (OEP's block records name no finder)
    time: float  # unix seconds it was found
    status: str  # pending, confirmed or orphaned
    reward: int | None  # in the pool's unit (None for a block recorded without it)
    effort: float | None  # the round's shares over the network difficulty; 1.0 is 100 %
    solo: bool
    nephew_height: int | None = None  # an uncle: the height of the block that includes it

    @property
    def miner(self) -> str | None:
        return None if self.worker is None else payout_address(self.worker)

    @property
    def uncle(self) -> bool:
        return self.nephew_height is not None


@dataclass(frozen=True, slots=True)
class PaymentInfo:
    """One payout transaction."""

    id: str
    txid: str
    time: float
    amounts: Mapping[str, int]  # address -> the pool's unit
    total: int
    fee: int | None  # None: not recorded (OEP's payment log has no fee)


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """What one of the pool's daemons said of the network at the last collection."""

    # "daemon <n>", in configured order: URLs are not shown to the public; an
    # Ethereum-family pool's node is named as in <coin>:nodes (its node_name).
    name: str
    ok: bool
    height: int | None = None
    difficulty: float | None = None  # as the daemon states it
    hashrate: float | None = None  # H/s, the daemon's estimate (Ethereum: difficulty / block time)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Balances:
    """The pool's unit per address, from the payment keys."""

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
    earliest_share: float | None = None  # Ethereum: the oldest share's time, for OEP's hashrate span


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

    pool: AnyPoolConfig
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

    @property
    def ethereum(self) -> bool:
        """An Ethereum-family pool (OEP's keys, amounts in wei), else a Bitcoin-family one."""
        return isinstance(self.pool, EthPoolConfig)

    @property
    def family(self) -> str:
        return "ethereum" if self.ethereum else "bitcoin"

    @property
    def algorithm(self) -> str:
        coin = self.pool.coin
        return coin.algorithm if isinstance(coin.algorithm, str) else coin.algorithm.name

    @property
    def unit(self) -> Unit:
        return WEI if self.ethereum else SATOSHI


def miner_address(stats: PoolStats, address: str) -> str:
    """The address as the pool's records hold it: an Ethereum-family login is
    lower case (a checksummed address is checked first: LoginError, a
    ValueError, if its checksum is wrong); a Bitcoin-family address as given."""
    if not stats.ethereum:
        return address
    if address[:2] in ("0x", "0X"):
        return check_address("0x" + address[2:])
    return address.lower()


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


def pool_stats(pool: AnyPoolConfig, raw: RawPoolData, now: float) -> PoolStats:
    """The stats of ``pool`` from its shares of the last ``hashrate_window`` seconds before ``now``.

    An Ethereum-family share's difficulty is its hashes; the divisor is OEP's
    (nomp.web.oepstats.span), so the site and /oep/ show one hashrate."""
    window = pool.hashrate_window
    if isinstance(pool, EthPoolConfig):
        hashes_per_difficulty = 1.0
        divisor = span_since(raw.earliest_share, now, window)
    else:
        hashes_per_difficulty = HASHES_PER_DIFFICULTY / pool.coin.algorithm.multiplier
        divisor = window

    def rate(difficulty: float) -> float:
        return difficulty * hashes_per_difficulty / divisor

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
        algorithm = stats.algorithm
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


# -- the Ethereum family, from open-ethereum-pool's keys --------------------------------


def sum_eth_shares(
    members: Iterable[tuple[str, float]], start: float, now: float
) -> tuple[dict[str, WorkerShares], float | None]:
    """Each worker's (``<login>.<worker>``) shares among ``<coin>:hashrate`` members scored
    within [start, now], and the earliest one's time. The collector's Lua script does the
    same in Redis; this is its reference. OEP records no invalid share there."""
    sums: dict[str, list[float]] = {}  # worker -> [valid, last time, last difficulty]
    earliest: float | None = None
    for member, score in members:
        match = _ETH_SHARE.fullmatch(member)
        if match is None or score < start or score > now:
            continue
        difficulty, login, worker = int(match[1]), match[2], match[3]
        earliest = score if earliest is None else min(earliest, score)
        entry = sums.setdefault(f"{login}.{worker}", [0.0, -1.0, 0.0])
        entry[0] += difficulty
        if score >= entry[1]:
            entry[1], entry[2] = score, difficulty
    return {w: WorkerShares(e[0], 0.0, e[1], e[2]) for w, e in sums.items()}, earliest


def eth_candidate(member: str, score: str, solo: bool) -> BlockInfo | None:
    """A ``blocks:candidates`` member as a pending block (its hash and reward not known
    until the unlocker finds it in the chain), or None if it is not one."""
    try:
        candidate = parse_candidate_member(member, parse_score(score))
    except ValueError:
        return None
    return BlockInfo(
        hash=None,
        height=candidate.height,
        txid=NO_TXID,
        worker=None,
        time=float(candidate.found_at),
        status="pending",
        reward=None,
        effort=_effort(candidate.round_total, candidate.network_difficulty, solo),
        solo=solo,
    )


def eth_block(member: str, score: str, matured: bool, solo: bool) -> BlockInfo | None:
    """A ``blocks:immature`` or ``blocks:matured`` member (the unlocker's record), or None.

    Immature, it is pending; matured, confirmed; flagged orphan, orphaned
    wherever it is. An uncle is shown at its own height, its nephew's beside it."""
    try:
        record = parse_block_member(member, parse_score(score))
    except ValueError:
        return None
    status = "orphaned" if record.orphan else "confirmed" if matured else "pending"
    return BlockInfo(
        hash=None if record.hash == NO_HASH else record.hash,
        height=record.uncle_height if record.uncle else record.height,
        txid=NO_TXID,
        worker=None,
        time=float(record.found_at),
        status=status,
        reward=record.reward,
        effort=_effort(record.round_total, record.difficulty, solo),
        solo=solo,
        nephew_height=record.height if record.uncle else None,
    )


def eth_payment(member: str, score: str) -> PaymentInfo | None:
    """A ``payments:all`` member (``txHash:login:amount``), or None.

    OEP's log holds the amount in whole Shannon (10^9 wei), so that is what
    is known of it in wei; the exact paid total is the miner's ``paid`` and
    its dust. The transfer's fee is not recorded."""
    try:
        document = payment_document(member, float(score))
    except ValueError:
        return None
    if document is None:
        return None
    amount = int(document["amount"]) * WEI_PER_SHANNON
    tx = str(document["tx"])
    return PaymentInfo(
        id=tx, txid=tx, time=float(score), amounts={str(document["address"]): amount}, total=amount, fee=None
    )


def eth_balances(miners: Mapping[str, Mapping[str, str | None]]) -> Balances:
    """Each login's immature, balance and paid in exact wei, from its ``miners:<login>``
    fields (OEP's Shannon and the dust beside each); an amount that is not an integer
    (not written by the unlocker or payer) is left out."""
    found: dict[str, dict[str, int]] = {IMMATURE: {}, BALANCE: {}, PAID: {}}
    for login, fields in miners.items():
        for name, held in found.items():
            whole, dust = fields.get(name), fields.get(dust_field(name))
            if whole is None and dust is None:
                continue
            try:
                held[login] = wei_of(whole, dust)
            except ValueError:
                continue
    return Balances(immature=found[IMMATURE], balance=found[BALANCE], paid=found[PAID])


def eth_nodes(fields: Mapping[str, str], now: float, block_time: float) -> tuple[DaemonInfo, ...]:
    """The nodes of ``<coin>:nodes`` (``<name>:height``, ``:difficulty``, ``:lastBeat``), by
    name; one not heard from for NODE_STALE_AFTER seconds, or unreadable, is not ok. The
    network's hashrate is estimated as OEP's site does: difficulty over the block time."""
    names = sorted({name.rsplit(":", 1)[0] for name in fields if ":" in name})
    nodes = []
    for name in names:
        try:
            height = int(fields[f"{name}:height"])
            difficulty = float(int(fields[f"{name}:difficulty"]))
            beat = int(fields[f"{name}:lastBeat"])
        except (KeyError, ValueError):
            nodes.append(DaemonInfo(name, False, error="no height, difficulty or lastBeat"))
            continue
        hashrate = difficulty / block_time
        if beat < now - NODE_STALE_AFTER:
            error = f"no heartbeat for {now - beat:.0f} s"
            nodes.append(DaemonInfo(name, False, height, difficulty, hashrate, error))
        else:
            nodes.append(DaemonInfo(name, True, height, difficulty, hashrate))
    return tuple(nodes)


def _effort(round_total: int, difficulty: int, solo: bool) -> float | None:
    return round_total / difficulty if difficulty and not solo else None
