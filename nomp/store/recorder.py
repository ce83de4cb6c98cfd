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
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nomp.store.keys import PoolKeys

WRITE_TIMEOUT = 10.0
RECORDER_TTL = 7 * 24 * 3600  # a stopped recorder's batch number is forgotten after a week
ZADD_CHUNK = 500  # score/member pairs per ZADD (Lua's unpack has a stack limit)

# KEYS: this recorder's batch number, roundCurrent, stats, hashrate, blocksPending, blocksFound,
#       the PPLNS share log, its total
# ARGV: batch number, key prefix, hashrate window start, recorder ttl, records,
#       scheme (prop, pplns or solo), PPLNS window.
# The records are one string, a line each, fields split by tabs (worker
# names cannot hold either), so the client encodes one argument, not five
# per share:
#   s <worker> <difficulty> <score> <member>      a valid share
#   o <worker> <difficulty> <score> <member>      a valid share mined solo
#   i <score> <member>                            an invalid share
#   b <hash> <txid> <height> <worker> <ms> <reward> <solo> <network difficulty>
#                                                 a block the daemon accepted
#   x                                             a block the daemon refused
# Everything is checked before anything is written: Redis does not undo the
# commands of a script that fails half way.
#
# The round a block closes is the hash its payment is split by:
#   prop   the shares since the last block (roundCurrent, renamed);
#   pplns  the last <window> difficulty of shares before the block, read
#          back from the share log (newest segment first), the oldest share
#          counted in part so the window is exact; the log keeps only what a
#          later window can still reach;
#   solo   the finder alone.
_SCRIPT = """
local applied = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= applied then return 0 end
local fields_of = {s = 5, o = 5, i = 3, b = 9, x = 1}
local records = {}
for line in string.gmatch(ARGV[5], '[^\\n]+') do
  local fields = {}
  for field in string.gmatch(line, '[^\\t]+') do fields[#fields + 1] = field end
  if fields_of[fields[1]] ~= #fields then
    return redis.error_reply('malformed record: ' .. line)
  end
  records[#records + 1] = fields
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
local prefix = ARGV[2]
local pplns = ARGV[6] == 'pplns'
local window = tonumber(ARGV[7])
local valid, invalid = 0, 0
local credit, workers, scores = {}, {}, {}
local log_lines, log_sum = {}, 0
local function number(x) return string.format('%.17g', x) end
local function segment_sum(segment) return tonumber(string.match(segment, '^[^\\n]+')) end
local function append_log()
  redis.call('LPUSH', KEYS[7], number(log_sum) .. '\\n' .. table.concat(log_lines, '\\n'))
  local total = tonumber(redis.call('INCRBYFLOAT', KEYS[8], number(log_sum)))
  while true do
    local oldest = redis.call('LINDEX', KEYS[7], -1)
    if not oldest or total - segment_sum(oldest) < window then break end
    redis.call('RPOP', KEYS[7])
    total = total - segment_sum(oldest)
  end
  redis.call('SET', KEYS[8], number(total))
  log_lines, log_sum = {}, 0
end
local function pplns_round(round)
  local need, index, kept, done = window, 0, 0, false
  local weights, names = {}, {}
  while not done do
    local chunk = redis.call('LRANGE', KEYS[7], index, index + 99)
    if #chunk == 0 then break end
    for _, segment in ipairs(chunk) do
      index = index + 1
      kept = kept + segment_sum(segment)
      local lines = {}
      for line in string.gmatch(segment, '[^\\n]+') do lines[#lines + 1] = line end
      for i = #lines, 2, -1 do
        local tab = string.find(lines[i], '\\t', 1, true)
        local worker = string.sub(lines[i], 1, tab - 1)
        local take = math.min(tonumber(string.sub(lines[i], tab + 1)), need)
        if weights[worker] == nil then weights[worker] = 0; names[#names + 1] = worker end
        weights[worker] = weights[worker] + take
        need = need - take
        if need <= 0 then done = true; break end
      end
      if done then break end
    end
  end
  if index > 0 then redis.call('LTRIM', KEYS[7], 0, index - 1) end
  redis.call('SET', KEYS[8], number(kept))
  for _, worker in ipairs(names) do
    redis.call('HINCRBYFLOAT', round, worker, number(weights[worker]))
  end
end
local function write_shares()
  for _, worker in ipairs(workers) do
    redis.call('HINCRBYFLOAT', KEYS[2], worker, number(credit[worker]))
  end
  credit, workers = {}, {}
  if #log_lines > 0 then append_log() end
  for first = 1, #scores, 2 * ZADD_CHUNK do
    redis.call('ZADD', KEYS[4], unpack(scores, first, math.min(first + 2 * ZADD_CHUNK - 1, #scores)))
  end
  scores = {}
end
for _, r in ipairs(records) do
  local kind = r[1]
  if kind == 's' then
    if credit[r[2]] == nil then credit[r[2]] = 0; workers[#workers + 1] = r[2] end
    credit[r[2]] = credit[r[2]] + tonumber(r[3])
    if pplns then
      log_lines[#log_lines + 1] = r[2] .. '\\t' .. r[3]
      log_sum = log_sum + tonumber(r[3])
    end
    scores[#scores + 1] = r[4]
    scores[#scores + 1] = r[5]
    valid = valid + 1
  elseif kind == 'o' then
    scores[#scores + 1] = r[4]
    scores[#scores + 1] = r[5]
    valid = valid + 1
  elseif kind == 'i' then
    scores[#scores + 1] = r[2]
    scores[#scores + 1] = r[3]
    invalid = invalid + 1
  elseif kind == 'b' then
    write_shares()  -- the shares before the block belong to its round
    local hash, txid, height, worker, ms, reward = r[2], r[3], r[4], r[5], r[6], r[7]
    if redis.call('SADD', KEYS[6], hash) == 1 then
      local round = prefix .. ':shares:round' .. height
      -- the round's work, for the block's effort: every share since the last block
      local work = 0
      for _, v in ipairs(redis.call('HVALS', KEYS[2])) do work = work + tonumber(v) end
      if redis.call('EXISTS', round) == 1 then round = round .. ':' .. hash end
      if r[8] == '1' then
        redis.call('HSET', round, worker, '1')
      elseif pplns then
        pplns_round(round)
        redis.call('DEL', KEYS[2])
      elseif redis.call('EXISTS', KEYS[2]) == 1 then
        redis.call('RENAME', KEYS[2], round)
      end
      redis.call('SADD', KEYS[5], hash .. ':' .. txid .. ':' .. height .. ':' .. worker .. ':' .. ms)
      redis.call('HSET', prefix .. ':block:' .. hash, 'height', height, 'txid', txid,
                 'worker', worker, 'time', ms, 'reward', reward, 'round', round,
                 'solo', r[8], 'shares', number(work), 'difficulty', r[9])
      redis.call('HINCRBY', KEYS[3], 'validBlocks', 1)
    end
  elseif kind == 'x' then
    redis.call('HINCRBY', KEYS[3], 'invalidBlocks', 1)
  end
end
write_shares()
if valid > 0 then redis.call('HINCRBY', KEYS[3], 'validShares', valid) end
if invalid > 0 then redis.call('HINCRBY', KEYS[3], 'invalidShares', invalid) end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[3])
return 1
""".replace("ZADD_CHUNK", str(ZADD_CHUNK))


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
    solo: bool = False
    network_difficulty: float = 0.0  # in share difficulty units; 0 when unknown
    settled: bool = False
    line: str = ""


class RecorderFull(Exception):
    """The buffer is full: Redis has been away too long."""


class RecordsShares(Protocol):
    """What the Stratum side needs of a recorder (ShareRecorder, or a test's fake)."""

    def valid_share(self, worker: str, difficulty: float, solo: bool = False) -> None: ...

    def invalid_share(self, worker: str, difficulty: float) -> None: ...

    def block_found(
        self, worker: str, height: int, reward: int, solo: bool = False, network_difficulty: float = 0.0
    ) -> BlockRecord: ...

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
        scheme: str = "prop",
        pplns_window: float = 0.0,
        max_batch: int = 5000,
        max_buffered: int = 500_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self._redis = redis
        self._clock = clock
        self._window = hashrate_window
        self._scheme = scheme
        self._pplns_window = pplns_window
        self._max_batch = max_batch
        self._max_buffered = max_buffered
        self._wall_clock = wall_clock
        self._queue: deque[str | BlockRecord] = deque()
        self._batch: tuple[int, str, int] | None = None  # number, records, count
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

    def valid_share(self, worker: str, difficulty: float, solo: bool = False) -> None:
        """Record an accepted share; RecorderFull when the buffer is full.

        A solo share counts for the hashrate and the counters but in no
        shared round: its miner mines for himself.
        """
        self._check_room()
        now = self._wall_clock()
        member = self._member(difficulty, worker, int(now * 1000))
        kind = "o" if solo else "s"
        self._queue.append(f"{kind}\t{worker}\t{difficulty!r}\t{now!r}\t{member}")

    def invalid_share(self, worker: str, difficulty: float) -> None:
        """Record a refused share (dropped, not raised, when the buffer is full)."""
        if self.waiting >= self._max_buffered:
            return
        now = self._wall_clock()
        member = self._member(-difficulty, worker, int(now * 1000))
        self._queue.append(f"i\t{now!r}\t{member}")

    def block_found(
        self, worker: str, height: int, reward: int, solo: bool = False, network_difficulty: float = 0.0
    ) -> BlockRecord:
        """Queue a block whose daemon answer is pending; settle it with block_settled.

        ``network_difficulty`` (in share difficulty units) is kept with the
        block so its effort (the round's shares over it) can be shown.
        """
        record = BlockRecord(worker, self._wall_clock(), height, reward, solo, network_difficulty)
        self._queue.append(record)
        return record

    def block_settled(self, record: BlockRecord, accepted: bool, block_hash: str, txid: str | None) -> None:
        """The daemon answered: write the block (accepted) or count it refused."""
        if accepted:
            ms = int(record.at * 1000)
            record.line = (
                f"b\t{block_hash}\t{txid or '-'}\t{record.height}\t{record.worker}\t{ms}\t{record.reward}"
                f"\t{int(record.solo)}\t{record.network_difficulty!r}"
            )
        else:
            record.line = "x"
        record.settled = True

    def _next_batch(self) -> tuple[int, str, int] | None:
        lines: list[str] = []
        while self._queue and len(lines) < self._max_batch:
            head = self._queue[0]
            if isinstance(head, BlockRecord):
                if not head.settled:
                    break
                lines.append(head.line)
            else:
                lines.append(head)
            self._queue.popleft()
        if not lines:
            return None
        return next(self._batch_ids), "\n".join(lines), len(lines)

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

    async def _write(self, number: int, records: str, count: int) -> bool:
        redis = self._redis()
        if redis is None:
            self._failed("Redis is not connected")
            return False
        keys = self.keys
        window_start = self._wall_clock() - self._window
        attempt = redis.eval(
            _SCRIPT,
            [
                keys.recorder(self._instance),
                keys.round_current,
                keys.stats,
                keys.hashrate,
                keys.blocks_pending,
                keys.blocks_found,
                keys.share_log,
                keys.share_log_total,
            ],
            [
                number,
                keys.coin,
                repr(window_start),
                RECORDER_TTL,
                records,
                self._scheme,
                repr(self._pplns_window),
            ],
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
