"""StatsCollector: every pool's stats read from Redis at intervals, kept as an immutable snapshot.

Requests are served from the snapshot, so a busy API costs Redis nothing.
The Bitcoin-family pools are read here, the Ethereum-family ones by their
nomp.web.ethcollector.EthPoolReader, in the same collection.
The pools are the ones the process runs, read at each collection and when a
reload tells the collector they changed (``pools_changed``): a pool a reload
adds is listed at once and read at once, a pool it removes goes.
Each collection also appends a reduced entry to the ``statHistory`` zset,
which a restarted process reads back, as NOMP's website did.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from nomp.config import EthPoolConfig
from nomp.daemon import DaemonGroup
from nomp.daemon.errors import DaemonError
from nomp.outage import Outage
from nomp.store.client import REDIS_DOWN, RedisClient, RedisUnavailable
from nomp.store.schema import LUA_PRELUDE, PoolKeys, WebKeys, pending_member_hash
from nomp.web import replies
from nomp.web.ethcollector import EthPoolReader
from nomp.web.stats import (
    AnyPoolConfig,
    Balances,
    BlockInfo,
    DaemonInfo,
    PaymentInfo,
    PoolStats,
    RawPoolData,
    WorkerShares,
    history_entry,
    parse_block,
    parse_payment,
    pool_stats,
    stats_document,
)

# The miner charts keep this many points over the retention at most.
MINER_HISTORY_POINTS = 288
# Seconds between attempts until the first snapshot: Redis is usually still
# connecting when the first collection runs, and the site should not stay
# empty for a whole interval.
STARTUP_RETRY = 1.0
BLOCK_STATUSES = ("pending", "confirmed", "orphaned")
# The pools the process runs, as they run (after the reloads so far), in the order listed.
RunningPools = Callable[[], Sequence[AnyPoolConfig]]

# KEYS: hashrate, stats, blocksPending, blocksConfirmed, blocksOrphaned,
#       immature, balances, paid, payment totals, payments
# ARGV: the hashrate window's start and end (unix seconds), the score of the
#       newest payment already read ('-inf' for none)
# The recorder trims the hashrate zset; this only reads, in one round trip.
# The shares are summed per worker here, as nomp.web.stats.sum_shares does,
# so a window of a million shares sends a line per worker, not the shares,
# and the pool's reactor does not parse them. They are read in chunks so
# Lua never holds the whole window at once.
_READ_POOL = (
    LUA_PRELUDE
    + """
local sums, names = {}, {}
local offset = 0
while true do
  local rows = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES', 'LIMIT', offset, 5000)
  for i = 1, #rows, 2 do
    local difficulty, worker = hashrate_fields(rows[i])
    if difficulty and worker then
      local s = sums[worker]
      if not s then s = {0, 0, -1, 0}; sums[worker] = s; names[#names + 1] = worker end
      if difficulty >= 0 then s[1] = s[1] + difficulty else s[2] = s[2] - difficulty end
      local score = tonumber(rows[i + 1])
      if score >= s[3] then s[3] = score; s[4] = math.abs(difficulty) end
    end
  end
  if #rows < 10000 then break end
  offset = offset + 5000
end
local shares = {}
for _, worker in ipairs(names) do
  local s = sums[worker]
  -- as strings: Redis would truncate Lua numbers to integers
  shares[#shares + 1] = worker
  shares[#shares + 1] = string.format('%.17g %.17g %.17g %.17g', s[1], s[2], s[3], s[4])
end
return {
  shares,
  redis.call('HGETALL', KEYS[2]),
  redis.call('SMEMBERS', KEYS[3]),
  redis.call('SMEMBERS', KEYS[4]),
  redis.call('SMEMBERS', KEYS[5]),
  redis.call('HGETALL', KEYS[6]),
  redis.call('HGETALL', KEYS[7]),
  redis.call('HGETALL', KEYS[8]),
  redis.call('HGETALL', KEYS[9]),
  redis.call('ZRANGEBYSCORE', KEYS[10], ARGV[3], '+inf', 'WITHSCORES')
}
"""
)

# KEYS: <coin>:block:<hash> of blocks not read before. Their fields change
# only when the block changes set, so each is read once per set.
_READ_BLOCKS = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out
"""

# KEYS: a history zset (statHistory, <coin>:minerHistory). ARGV: time, entry JSON, oldest time kept.
_APPEND_HISTORY = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
return 1
"""

# KEYS: a history zset. ARGV: oldest time kept.
_READ_HISTORY = """
return redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
"""


def _miner_sample(text: str) -> tuple[float, dict[str, float]] | None:
    """(time, address -> hashrate) of a minerHistory member, or None if it is not one of ours."""
    try:
        document = json.loads(text)
        at = float(document["time"])
        miners = {str(address): float(rate) for address, rate in document["miners"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return at, miners


def _encode(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _satoshis(flat: Sequence[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in replies.pairs(flat).items():
        try:
            out[key] = int(value)
        except ValueError:
            continue  # not written by the ledger
    return out


class _PoolMemory:
    """What the collector keeps of one pool between reads: blocks and payments
    (read once each, since they only grow) and its miners' hashrate samples."""

    def __init__(self) -> None:
        self.blocks: dict[tuple[str, str], BlockInfo] = {}  # (member, status) -> block
        self.payments: dict[str, PaymentInfo] = {}  # member -> payment
        self.newest_payment = "-inf"  # score of the newest payment read
        # address -> its points: times and hashrates in arrays of C doubles (a
        # fraction of the memory of tuples of floats), appended in place, the
        # live ones from ``first`` on. A view records where each miner's
        # points end, so what it shows never changes; points before ``first``
        # are cut off only by replacing the arrays, never in place.
        self.miner_history: dict[str, _Points] = {}
        self.last_sample = float("-inf")
        self._view: MinerHistory | None = None  # the same until the next sample

    def sample(self, stats: PoolStats, now: float, step: float, retention: float) -> dict[str, float] | None:
        """Add each miner's hashrate at ``now`` if ``step`` seconds passed since
        the last sample and someone mines; the sample taken (address ->
        hashrate), else None. (A pool just started has no miners yet: a sample
        then would leave the first miners' charts empty for a whole step.)"""
        if now - self.last_sample < step or not stats.miners:
            return None
        taken = {miner.address: miner.hashrate for miner in stats.miners}
        self.add(now, taken, retention)
        return taken

    def add(self, at: float, sample: Mapping[str, float], retention: float) -> None:
        """Add one sample taken at ``at``, and forget what is older than ``retention``."""
        self.last_sample = at
        self._view = None
        history = self.miner_history
        for address, hashrate in sample.items():
            points = history.get(address)
            if points is None:
                points = history[address] = _Points(array("d"), array("d"))
            points.times.append(at)
            points.rates.append(hashrate)
        oldest = at - retention
        for address, points in list(history.items()):
            times = points.times
            if times[points.first] >= oldest:
                continue
            points.first = bisect.bisect_left(times, oldest, points.first)
            if points.first == len(times):
                del history[address]
            elif points.first * 2 > len(times):
                # New arrays: views made before still hold the old ones.
                history[address] = _Points(times[points.first :], points.rates[points.first :])

    def view(self) -> MinerHistory:
        """Every miner's points as snapshots hold them."""
        if self._view is None:
            self._view = MinerHistory(
                {a: (p.times, p.rates, p.first, len(p.times)) for a, p in self.miner_history.items()}
            )
        return self._view


@dataclass(slots=True)
class _Points:
    """One miner's hashrate samples; the live ones are from ``first`` on."""

    times: array[float]
    rates: array[float]
    first: int = 0


class MinerHistory(Mapping[str, tuple[tuple[float, float], ...]]):
    """address -> its (time, hashrate) points, oldest first, made on lookup:
    a request asks for one miner, so the others are never turned into tuples."""

    __slots__ = ("_points",)

    def __init__(self, points: dict[str, tuple[array[float], array[float], int, int]]) -> None:
        self._points = points  # address -> (times, rates, first, end)

    def __getitem__(self, address: str) -> tuple[tuple[float, float], ...]:
        times, rates, first, end = self._points[address]
        return tuple(zip(times[first:end], rates[first:end], strict=True))

    def __iter__(self) -> Iterator[str]:
        return iter(self._points)

    def __len__(self) -> int:
        return len(self._points)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every pool's stats at ``time``, with the bodies served as they are pre-encoded."""

    time: float
    pools: tuple[PoolStats, ...]
    stats_json: bytes  # /api/stats
    history_json: bytes  # /api/pool_stats

    def pool(self, name: str) -> PoolStats | None:
        """The stats of the pool called ``name`` (its file's stem), if there is one."""
        return next((p for p in self.pools if p.pool.name == name), None)


def build_snapshot(pools: Sequence[PoolStats], history: Sequence[bytes], now: float) -> Snapshot:
    """A snapshot of ``pools``; ``history`` holds the encoded entries of /api/pool_stats, oldest first."""
    return Snapshot(
        time=now,
        pools=tuple(pools),
        stats_json=_encode(stats_document(pools, now)),
        history_json=b"[" + b",".join(history) + b"]",
    )


def empty_stats(pool: AnyPoolConfig) -> PoolStats:
    """A pool's stats before anything was read: nothing mined."""
    return pool_stats(pool, RawPoolData({}, {}, 0, 0, 0), 0.0)


class StatsCollector(Service):
    """Reads every pool's stats each ``interval`` seconds into ``snapshot``."""

    log = Logger()

    def __init__(
        self,
        pools: RunningPools,
        redis: Callable[[], RedisClient | None],
        clock: IReactorTime,
        interval: float,
        retention: float,
        daemons: Callable[[str], DaemonGroup | None] = lambda name: None,
    ) -> None:
        self._running = pools
        self._pools: tuple[AnyPoolConfig, ...] = ()  # as they ran when last followed
        self._daemons = daemons  # Bitcoin-family pool name -> its daemons, once the pool is up
        self._eth_readers: dict[str, EthPoolReader] = {}
        self._memory: dict[str, _PoolMemory] = {}
        self._unread: set[str] = set()  # pools whose miner history is still to be read from Redis
        self._listeners: list[Callable[[Snapshot], None]] = []
        self._miner_step = max(interval, retention / MINER_HISTORY_POINTS)
        self._redis = redis
        self._clock = clock
        self._interval = interval
        self._retention = retention
        self._keys = WebKeys()
        self._history: deque[tuple[float, bytes]] = deque()  # (time, entry JSON), oldest first
        self._history_loaded = False
        self._loop: task.LoopingCall | None = None
        self._outage = Outage(self.log, "Stats: Redis", clock, REDIS_DOWN)
        self._collected = False  # a snapshot was read from Redis at least once
        self._collecting: defer.Deferred[None] | None = None  # the collection under way
        self._retry: IDelayedCall | None = None  # the next attempt before the first snapshot
        self.snapshot = build_snapshot((), [], clock.seconds())
        self._follow()
        self.snapshot = self._arranged({}, self.snapshot.time)  # every pool, nothing read yet

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.collect)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        # A collection under way, the timer's or one a reload started, ends first:
        # nothing of this service is left reading Redis once it has stopped.
        return None if self._collecting is None else self.collect()

    @property
    def collected(self) -> bool:
        """Whether a snapshot was read from Redis at least once."""
        return self._collected

    def add_listener(self, listener: Callable[[Snapshot], None]) -> None:
        """Call ``listener`` with each new snapshot."""
        self._listeners.append(listener)

    def pools_changed(self) -> None:
        """The running pools changed (a reload): the snapshot lists them as they run
        now, a pool added with nothing read yet, and a collection reads them at once
        rather than at the next interval."""
        if not self._follow():
            return
        self._publish(self._arranged({}, self.snapshot.time))
        under_way = self._collecting
        if under_way is None:
            self._collect_soon()
        else:

            def again(result: object) -> object:
                self._collect_soon()  # the one under way read the pools as they were
                return result

            under_way.addBoth(again)

    def _collect_soon(self) -> None:
        if self.running:
            self.collect().addErrback(lambda failure: self.log.failure("Stats: collection failed", failure))

    def _follow(self) -> bool:
        """Take the running pools as they are now; whether they changed.

        A pool kept keeps what was read of it (its blocks, payments and miner
        history); a pool added starts empty, its miner history read from Redis
        with the next collection; a pool removed is forgotten, so that one added
        again later reads it all back.
        """
        pools = tuple(self._running())
        if pools == self._pools:
            return False
        names = {pool.name for pool in pools}
        for gone in self._memory.keys() - names:
            del self._memory[gone]
            self._unread.discard(gone)
        readers: dict[str, EthPoolReader] = {}
        for pool in pools:
            if pool.name not in self._memory:
                self._memory[pool.name] = _PoolMemory()
                self._unread.add(pool.name)
            if isinstance(pool, EthPoolConfig):
                reader = readers[pool.name] = self._eth_readers.get(pool.name) or EthPoolReader(pool)
                reader.pool = pool  # its settings as a reload changed them (its coin needs a restart)
        self._eth_readers = readers
        self._pools = pools
        return True

    def _arranged(self, read: Mapping[str, PoolStats], time: float) -> Snapshot:
        """A snapshot of the running pools: the stats just ``read`` of each, else the
        last ones (with the pool's configuration as it runs now), else none yet."""
        last = {stats.pool.name: stats for stats in self.snapshot.pools}
        listed = []
        for pool in self._pools:
            stats = read.get(pool.name) or last.get(pool.name)
            if stats is None:
                stats = empty_stats(pool)
            elif stats.pool is not pool:
                stats = dataclasses.replace(stats, pool=pool)
            listed.append(stats)
        return build_snapshot(listed, [e for _, e in self._history], time)

    def _publish(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        for listener in list(self._listeners):
            try:
                listener(snapshot)
            except Exception:
                self.log.failure("Stats: a snapshot listener failed")

    def collect(self) -> defer.Deferred[None]:
        """Read Redis once and replace the snapshot; if Redis is away, keep the last one.

        A call while a collection is under way waits for that one instead
        of starting a second beside it.
        """
        if self._collecting is not None:
            waiter: defer.Deferred[None] = defer.Deferred()

            def relay(result: object) -> object:
                waiter.callback(None)
                return result  # the first caller still gets what it would have

            self._collecting.addBoth(relay)
            return waiter
        self._collecting = defer.ensureDeferred(self._collect())

        def done(result: object) -> object:
            self._collecting = None
            return result

        return self._collecting.addBoth(done)

    def _retry_soon(self) -> None:
        if self.running and (self._retry is None or not self._retry.active()):
            self._retry = self._clock.callLater(STARTUP_RETRY, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.collect().addErrback(lambda failure: self.log.failure("Stats: collection failed", failure))

    async def _collect(self) -> None:
        client = self._redis()
        if client is None:
            self._away(RedisUnavailable("not connected"))
            return
        now = self._clock.seconds()
        self._follow()
        # As they are now: a reload that changes them meanwhile leaves this collection be.
        reading = [(pool, self._memory[pool.name], self._eth_readers.get(pool.name)) for pool in self._pools]
        network = defer.gatherResults(
            [defer.Deferred.fromCoroutine(self._read_network(pool)) for pool, _, _ in reading]
        )
        try:
            if not self._history_loaded or self._unread:
                await self._load_history(client, now)
            pools = [
                await (reader.read(client, now) if reader else self._read_pool(client, pool, memory, now))
                for pool, memory, reader in reading
            ]
            entry = _encode(history_entry(pools, now))
            oldest = repr(now - self._retention)
            await client.eval(_APPEND_HISTORY, [self._keys.stat_history], [repr(now), entry.decode(), oldest])
            for stats, (_, memory, _) in zip(pools, reading, strict=True):
                sample = memory.sample(stats, now, self._miner_step, self._retention)
                if sample is not None:
                    member = _encode({"time": now, "miners": sample}).decode()
                    key = PoolKeys.for_coin(stats.pool.coin.name).miner_history
                    await client.eval(_APPEND_HISTORY, [key], [repr(now), member, oldest])
        except Exception as e:  # Redis away, or a bug: either way the last snapshot stays served
            self._away(e)
            await network  # its errors are caught per daemon
            return
        daemons = await network
        read = {
            stats.pool.name: dataclasses.replace(
                stats, network=stats.network if info is None else info, miner_history=memory.view()
            )
            for stats, info, (_, memory, _) in zip(pools, daemons, reading, strict=True)
        }
        self._outage.succeeded()
        self._collected = True
        if self._retry is not None and self._retry.active():
            # A retry left from a failed start would sample the miners again
            # out of step with the timer.
            self._retry.cancel()
            self._retry = None
        self._history.append((now, entry))
        while self._history and self._history[0][0] < now - self._retention:
            self._history.popleft()
        self._publish(self._arranged(read, now))

    async def _read_network(self, pool: AnyPoolConfig) -> tuple[DaemonInfo, ...] | None:
        """Each daemon's view of the network (getmininginfo); an error is shown, not raised.
        None for an Ethereum-family pool: its nodes are read from Redis with its stats."""
        if isinstance(pool, EthPoolConfig):
            return None
        group = self._daemons(pool.name)
        if group is None:
            return ()
        try:
            answers = await group.call_each("getmininginfo")
        except Exception as e:  # call_each answers per daemon; this is a bug, not a daemon's error
            self.log.failure("Stats: reading the network of pool {pool}", pool=pool.name)
            return (DaemonInfo("daemon 1", False, error=type(e).__name__),)
        return tuple(_daemon_info(f"daemon {n}", answer) for n, answer in enumerate(answers, 1))

    def _away(self, error: BaseException) -> None:
        """A collection that could not read Redis (logged once an outage) or failed on a
        bug (logged every time); until the first snapshot, Redis is tried again soon."""
        if self._collected:
            age = self._clock.seconds() - self.snapshot.time
            away = self._outage.failed(error, "serving the stats collected {age:.0f} s ago", age=age)
        else:
            away = self._outage.failed(error)
        if away and not self._collected:
            self._retry_soon()

    async def _load_history(self, client: RedisClient, now: float) -> None:
        """The stats history, once, and the miner history of each pool not read yet
        (every pool at the first collection, then a pool a reload added)."""
        # Everything is read before anything is kept: a read that fails half
        # way is tried again whole at the next collection, with nothing doubled.
        oldest = repr(now - self._retention)
        first = not self._history_loaded
        members = await client.eval(_READ_HISTORY, [self._keys.stat_history], [oldest]) if first else None
        samples = {}
        for pool in self._pools:
            if pool.name in self._unread:
                memory = self._memory[pool.name]  # before the read: a reload may remove the pool meanwhile
                key = PoolKeys.for_coin(pool.coin.name).miner_history
                samples[pool.name] = (memory, await client.eval(_READ_HISTORY, [key], [oldest]))
        for name, (memory, found) in samples.items():
            for member in found or []:
                sample = _miner_sample(replies.text(member))
                if sample is not None:
                    memory.add(sample[0], sample[1], self._retention)
            if self._memory.get(name) is memory:
                self._unread.discard(name)
        if not first:
            return
        for member in members or []:
            text = replies.text(member)
            try:
                at = float(json.loads(text)["time"])
            except (ValueError, KeyError, TypeError):
                continue  # not an entry of ours
            self._history.append((at, text.encode()))
        self._history_loaded = True
        self.log.info("Stats: loaded {entries} history entries from Redis", entries=len(self._history))

    async def _read_pool(
        self, client: RedisClient, pool: AnyPoolConfig, memory: _PoolMemory, now: float
    ) -> PoolStats:
        keys = PoolKeys.for_coin(pool.coin.name)
        reply = await client.eval(
            _READ_POOL,
            [
                keys.hashrate,
                keys.stats,
                keys.blocks_pending,
                keys.blocks_confirmed,
                keys.blocks_orphaned,
                keys.immature,
                keys.balances,
                keys.paid,
                keys.payment_totals,
                keys.payments,
            ],
            [repr(now - pool.hashrate_window), repr(now), memory.newest_payment],
        )
        flat_shares, flat_counters, *members, immature, balances, paid, totals, new_payments = reply
        shares = {
            worker: WorkerShares(*(float(x) for x in sums.split()))
            for worker, sums in replies.pairs(flat_shares).items()
        }
        by_status = {
            status: [replies.text(m) for m in found]
            for status, found in zip(BLOCK_STATUSES, members, strict=True)
        }
        await self._read_blocks(client, keys, memory, by_status)
        for i in range(0, len(new_payments) - 1, 2):
            member, score = replies.text(new_payments[i]), replies.text(new_payments[i + 1])
            memory.newest_payment = score
            payment = parse_payment(member, float(score))
            if payment is not None:
                memory.payments[member] = payment
        raw = RawPoolData(
            shares,
            replies.pairs(flat_counters),
            pending=len(by_status["pending"]),
            confirmed=len(by_status["confirmed"]),
            orphaned=len(by_status["orphaned"]),
            found=tuple(sorted(memory.blocks.values(), key=lambda b: (-b.height, -b.time, b.hash))),
            payments=tuple(sorted(memory.payments.values(), key=lambda p: (-p.time, p.id))),
            balances=Balances(_satoshis(immature), _satoshis(balances), _satoshis(paid)),
            payment_totals=_satoshis(totals),
        )
        return pool_stats(pool, raw, now)

    async def _read_blocks(
        self, client: RedisClient, keys: PoolKeys, memory: _PoolMemory, by_status: dict[str, list[str]]
    ) -> None:
        """Bring ``memory.blocks`` in line with the block sets, reading the blocks not seen in their set."""
        present = {(member, status) for status, found in by_status.items() for member in found}
        for gone in memory.blocks.keys() - present:
            del memory.blocks[gone]
        new = sorted(present - memory.blocks.keys())
        for first in range(0, len(new), 500):
            chunk = new[first : first + 500]
            read = await client.eval(
                _READ_BLOCKS, [keys.block(pending_member_hash(member)) for member, _ in chunk], []
            )
            for (member, status), flat in zip(chunk, read, strict=True):
                block = parse_block(member, status, replies.pairs(flat))
                if block is not None:
                    memory.blocks[(member, status)] = block


def _daemon_info(name: str, answer: Any) -> DaemonInfo:
    if isinstance(answer, DaemonError):
        # Its detail only: the message names the daemon's URL, which is not for the public.
        return DaemonInfo(name, False, error=answer.detail)
    if isinstance(answer, Exception):
        return DaemonInfo(name, False, error=type(answer).__name__)
    try:
        return DaemonInfo(
            name,
            True,
            height=int(answer["blocks"]),
            difficulty=float(answer["difficulty"]),
            hashrate=float(answer["networkhashps"]),
        )
    except (KeyError, TypeError, ValueError):
        return DaemonInfo(name, False, error="getmininginfo: no blocks, difficulty or networkhashps")
