"""StatsCollector: every pool's stats read from Redis at intervals, kept as an immutable snapshot.

Requests are served from the snapshot, so a busy API costs Redis nothing.
Each collection also appends a reduced entry to the ``statHistory`` zset,
which a restarted process reads back, as NOMP's website did.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nomp.config import PoolConfig
from nomp.store.keys import PoolKeys, WebKeys
from nomp.store.recorder import ScriptRunner
from nomp.web.stats import PoolStats, RawPoolData, history_entry, pool_stats, stats_document

# KEYS: hashrate, stats, blocksPending, blocksConfirmed, blocksOrphaned
# ARGV: the hashrate window's start (unix seconds)
# The recorder trims the hashrate zset; this only reads, in one round trip.
_READ_POOL = """
return {
  redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES'),
  redis.call('HGETALL', KEYS[2]),
  redis.call('SCARD', KEYS[3]),
  redis.call('SCARD', KEYS[4]),
  redis.call('SCARD', KEYS[5])
}
"""

# KEYS: statHistory. ARGV: time, entry JSON, oldest time kept.
_APPEND_HISTORY = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
return 1
"""

# KEYS: statHistory. ARGV: oldest time kept.
_READ_HISTORY = """
return redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
"""


def _text(value: Any) -> str:
    """A Redis reply value as text (the client may hand back bytes or numbers it converted)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _encode(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


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


def empty_stats(pool: PoolConfig) -> PoolStats:
    """A pool's stats before anything was read: nothing mined."""
    return pool_stats(pool, RawPoolData((), {}, 0, 0, 0), 0.0)


class StatsCollector(Service):
    """Reads every pool's stats each ``interval`` seconds into ``snapshot``."""

    log = Logger()

    def __init__(
        self,
        pools: Sequence[PoolConfig],
        redis: Callable[[], ScriptRunner | None],
        clock: IReactorTime,
        interval: float,
        retention: float,
    ) -> None:
        self._pools = tuple(pools)
        self._redis = redis
        self._clock = clock
        self._interval = interval
        self._retention = retention
        self._keys = WebKeys()
        self._history: deque[tuple[float, bytes]] = deque()  # (time, entry JSON), oldest first
        self._history_loaded = False
        self._loop: task.LoopingCall | None = None
        self._redis_away = False
        self.snapshot = build_snapshot([empty_stats(p) for p in self._pools], [], clock.seconds())

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.collect)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            stopped = loop.deferred  # fires once a collection under way ends
            loop.stop()
            if stopped is not None:
                return stopped.addCallback(lambda _: None)
        return None

    def collect(self) -> defer.Deferred[None]:
        """Read Redis once and replace the snapshot; if Redis is away, keep the last one."""
        return defer.ensureDeferred(self._collect())

    async def _collect(self) -> None:
        client = self._redis()
        if client is None:
            self._away("not connected")
            return
        now = self._clock.seconds()
        try:
            if not self._history_loaded:
                await self._load_history(client, now)
            pools = [await self._read_pool(client, pool, now) for pool in self._pools]
            entry = _encode(history_entry(pools, now))
            oldest = repr(now - self._retention)
            await client.eval(_APPEND_HISTORY, [self._keys.stat_history], [repr(now), entry.decode(), oldest])
        except Exception as e:  # any Redis failure leaves the last snapshot served
            self._away(str(e) or type(e).__name__)
            return
        if self._redis_away:
            self._redis_away = False
            self.log.info("Stats: Redis is back, collecting again")
        self._history.append((now, entry))
        while self._history and self._history[0][0] < now - self._retention:
            self._history.popleft()
        self.snapshot = build_snapshot(pools, [e for _, e in self._history], now)

    def _away(self, reason: str) -> None:
        if not self._redis_away:
            self._redis_away = True
            self.log.warn(
                "Stats: cannot read Redis ({reason}); serving the stats of {snapshot_time}",
                reason=reason,
                snapshot_time=self.snapshot.time,
            )

    async def _load_history(self, client: ScriptRunner, now: float) -> None:
        members = await client.eval(_READ_HISTORY, [self._keys.stat_history], [repr(now - self._retention)])
        for member in members or []:
            text = _text(member)
            try:
                at = float(json.loads(text)["time"])
            except (ValueError, KeyError, TypeError):
                continue  # not an entry of ours
            self._history.append((at, text.encode()))
        self._history_loaded = True
        self.log.info("Stats: loaded {entries} history entries from Redis", entries=len(self._history))

    async def _read_pool(self, client: ScriptRunner, pool: PoolConfig, now: float) -> PoolStats:
        keys = PoolKeys.for_coin(pool.coin.name)
        reply = await client.eval(
            _READ_POOL,
            [keys.hashrate, keys.stats, keys.blocks_pending, keys.blocks_confirmed, keys.blocks_orphaned],
            [repr(now - pool.hashrate_window)],
        )
        flat_shares, flat_counters, pending, confirmed, orphaned = reply
        shares = tuple(
            (_text(flat_shares[i]), float(_text(flat_shares[i + 1]))) for i in range(0, len(flat_shares), 2)
        )
        pairs = range(0, len(flat_counters), 2)
        counters = {_text(flat_counters[i]): _text(flat_counters[i + 1]) for i in pairs}
        raw = RawPoolData(shares, counters, int(pending), int(confirmed), int(orphaned))
        return pool_stats(pool, raw, now)
