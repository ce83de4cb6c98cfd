"""ShareRecorder: shares and blocks into Redis, batched, in order, exactly once.

Records are queued in memory and written by ``flush`` in batches: one Lua
script call per batch (one round trip), applied atomically. Batches go out
one at a time and in order, numbered per recorder; Redis keeps the last
number applied for each recorder, so a batch whose reply was lost (Redis
restarted, the link broke) can be sent again without counting twice. While
Redis is away, records wait in a bounded buffer and the miner keeps mining.

A block is queued when its share is accepted, before the daemon has
answered: records behind it wait until the block is settled, so the round
the block closes holds exactly the shares before it.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nomp.store.keys import PoolKeys

WRITE_TIMEOUT = 10.0

# KEYS: recorders, roundCurrent, stats, hashrate, blocksPending, blocksFound
# ARGV: recorder id, batch number, key prefix, hashrate window start, then records:
#   "s" worker difficulty score member   a valid share
#   "i" score member                     an invalid share
#   "b" hash txid height worker ms reward   a block the daemon accepted
#   "x"                                  a block the daemon refused
_SCRIPT = """
local applied = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) <= applied then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local prefix = ARGV[3]
local valid, invalid = 0, 0
local i = 5
while i <= #ARGV do
  local kind = ARGV[i]
  if kind == 's' then
    redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i + 1], ARGV[i + 2])
    redis.call('ZADD', KEYS[4], ARGV[i + 3], ARGV[i + 4])
    valid = valid + 1
    i = i + 5
  elseif kind == 'i' then
    redis.call('ZADD', KEYS[4], ARGV[i + 1], ARGV[i + 2])
    invalid = invalid + 1
    i = i + 3
  elseif kind == 'b' then
    local hash, txid, height = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local worker, ms, reward = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
    if redis.call('SADD', KEYS[6], hash) == 1 then
      local round = prefix .. ':shares:round' .. height
      if redis.call('EXISTS', round) == 1 then round = round .. ':' .. hash end
      if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], round) end
      redis.call('SADD', KEYS[5], hash .. ':' .. txid .. ':' .. height .. ':' .. worker .. ':' .. ms)
      redis.call('HSET', prefix .. ':block:' .. hash, 'height', height, 'txid', txid,
                 'worker', worker, 'time', ms, 'reward', reward, 'round', round)
      redis.call('HINCRBY', KEYS[3], 'validBlocks', 1)
    end
    i = i + 7
  elseif kind == 'x' then
    redis.call('HINCRBY', KEYS[3], 'invalidBlocks', 1)
    i = i + 1
  else
    return redis.error_reply('unknown record ' .. tostring(kind))
  end
end
if valid > 0 then redis.call('HINCRBY', KEYS[3], 'validShares', valid) end
if invalid > 0 then redis.call('HINCRBY', KEYS[3], 'invalidShares', invalid) end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[4])
return 1
"""


class ScriptRunner(Protocol):
    """What the recorder needs of a Redis client: EVAL (txredisapi's handler)."""

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]: ...


@dataclass(eq=False, slots=True)
class BlockRecord:
    """A block waiting for the daemon's answer; records behind it wait too."""

    worker: str
    at: float
    height: int
    reward: int
    settled: bool = False
    args: list[Any] = field(default_factory=list)


class RecorderFull(Exception):
    """The buffer is full: Redis has been away too long."""


class RecordsShares(Protocol):
    """What the Stratum side needs of a recorder (ShareRecorder, or a test's fake)."""

    def valid_share(self, worker: str, difficulty: float) -> None: ...

    def invalid_share(self, worker: str, difficulty: float) -> None: ...

    def block_found(self, worker: str, height: int, reward: int) -> BlockRecord: ...

    def block_settled(
        self, record: BlockRecord, accepted: bool, block_hash: str, txid: str | None
    ) -> None: ...


class ShareRecorder:
    """Queues share and block records of one pool and writes them to Redis."""

    log = Logger()

    def __init__(
        self,
        keys: PoolKeys,
        redis: Callable[[], ScriptRunner | None],
        clock: IReactorTime,
        hashrate_window: float = 300.0,
        max_batch: int = 5000,
        max_buffered: int = 500_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self._redis = redis
        self._clock = clock
        self._window = hashrate_window
        self._max_batch = max_batch
        self._max_buffered = max_buffered
        self._wall_clock = wall_clock
        self._queue: deque[list[Any] | BlockRecord] = deque()
        self._batch: tuple[int, list[Any], int] | None = None  # number, args, records
        self._instance = os.urandom(6).hex()  # this recorder's id in Redis
        self._batch_ids = itertools.count(1)
        self._member_ids = itertools.count(1)
        self._writing = False
        self._failing_since: float | None = None
        self._last_warning = 0.0
        self.written = 0  # records written, for tests and stats

    @property
    def waiting(self) -> int:
        """Records not yet written."""
        return len(self._queue) + (self._batch[2] if self._batch else 0)

    def _check_room(self) -> None:
        if self.waiting >= self._max_buffered:
            raise RecorderFull(f"{self.waiting} share records are waiting for Redis")

    def _member(self, difficulty: float, worker: str, ms: int) -> str:
        # NOMP's "<diff>:<worker>:<ms>" plus an id, so that two shares in one
        # millisecond stay two entries; NOMP's readers use the first two fields.
        return f"{difficulty:.10g}:{worker}:{ms}:{self._instance}{next(self._member_ids)}"

    def valid_share(self, worker: str, difficulty: float) -> None:
        """Record an accepted share; RecorderFull when the buffer is full."""
        self._check_room()
        now = self._wall_clock()
        member = self._member(difficulty, worker, int(now * 1000))
        self._queue.append(["s", worker, repr(difficulty), now, member])

    def invalid_share(self, worker: str, difficulty: float) -> None:
        """Record a refused share (dropped, not raised, when the buffer is full)."""
        if self.waiting >= self._max_buffered:
            return
        now = self._wall_clock()
        member = self._member(-difficulty, worker, int(now * 1000))
        self._queue.append(["i", now, member])

    def block_found(self, worker: str, height: int, reward: int) -> BlockRecord:
        """Queue a block whose daemon answer is pending; settle it with block_settled."""
        record = BlockRecord(worker, self._wall_clock(), height, reward)
        self._queue.append(record)
        return record

    def block_settled(self, record: BlockRecord, accepted: bool, block_hash: str, txid: str | None) -> None:
        """The daemon answered: write the block (accepted) or count it refused."""
        if accepted:
            record.args = [
                "b",
                block_hash,
                txid or "",
                record.height,
                record.worker,
                int(record.at * 1000),
                record.reward,
            ]
        else:
            record.args = ["x"]
        record.settled = True

    def _next_batch(self) -> tuple[int, list[Any], int] | None:
        args: list[Any] = []
        count = 0
        while self._queue and count < self._max_batch:
            head = self._queue[0]
            if isinstance(head, BlockRecord):
                if not head.settled:
                    break
                args += head.args
            else:
                args += head
            self._queue.popleft()
            count += 1
        if not count:
            return None
        return next(self._batch_ids), args, count

    def flush(self) -> defer.Deferred[None]:
        """Write what is ready (one batch at a time) until nothing is, or Redis fails."""
        return defer.Deferred.fromCoroutine(self._flush())

    async def _flush(self) -> None:
        if self._writing:
            return
        self._writing = True
        try:
            while True:
                if self._batch is None:
                    self._batch = self._next_batch()
                if self._batch is None:
                    return
                if not await self._write(*self._batch):
                    return
                self.written += self._batch[2]
                self._batch = None
        finally:
            self._writing = False

    async def _write(self, number: int, args: list[Any], count: int) -> bool:
        redis = self._redis()
        if redis is None:
            self._failed("Redis is not connected")
            return False
        keys = self.keys
        window_start = self._wall_clock() - self._window
        attempt = redis.eval(
            _SCRIPT,
            [
                keys.recorders,
                keys.round_current,
                keys.stats,
                keys.hashrate,
                keys.blocks_pending,
                keys.blocks_found,
            ],
            [self._instance, number, keys.coin, window_start, *args],
        )
        attempt.addTimeout(WRITE_TIMEOUT, self._clock)
        try:
            await attempt
        except Exception as e:
            # The batch may or may not have been applied: it is sent again
            # with the same number, which Redis then knows and skips.
            self._failed(f"{type(e).__name__}: {e}")
            return False
        if self._failing_since is not None:
            self.log.info(
                "pool {coin}: Redis is back after {seconds:.0f}s; writing {waiting} waiting records",
                coin=keys.coin,
                seconds=self._clock.seconds() - self._failing_since,
                waiting=self.waiting,
            )
            self._failing_since = None
        return True

    def _failed(self, reason: str) -> None:
        now = self._clock.seconds()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_warning >= 30 or self._last_warning == 0:
            self._last_warning = now
            self.log.warn(
                "pool {coin}: cannot write to Redis ({reason}); {waiting} share records waiting",
                coin=self.keys.coin,
                reason=reason,
                waiting=self.waiting,
            )
