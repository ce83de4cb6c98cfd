"""ShareRecorder: shares and blocks into Redis, batched, in order, exactly once.

Records are queued in memory and written by ``flush`` in batches: one Lua
script call per batch (one round trip), applied atomically. Batches go out
one at a time and in order, numbered per recorder; Redis keeps the last
number applied for each recorder, so a batch whose reply was lost (Redis
restarted, the link broke) can be sent again without counting twice. While
Redis is away, records wait in a bounded buffer and the miner keeps mining.

A block candidate is a record among the shares: the script closes its
round right there (the round policy of nomp.payments.rounds says what the
round is) and keeps the candidate in blocksCandidates until a settlement
record, once the daemon has answered, makes it a block (accepted) or
reopens its round (refused). Nothing waits for the daemon: the shares
behind a candidate go to the next round at once.

A batch Redis refuses for what it holds (a script error, a key of the
wrong type) would be refused again: it is set aside in
``<coin>:recorder:setAside`` and the queue moves on.
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
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from nomp.background import background
from nomp.candidate import BlockCandidate
from nomp.outage import Outage
from nomp.store.client import REDIS_DOWN, RedisClient, RedisUnavailable
from nomp.store.redis import refusal, unavailable_reply
from nomp.store.schema import (
    BLOCK_RECORDS,
    LUA_PRELUDE,
    PoolKeys,
    StoredCandidate,
    candidate_record,
    decode_candidate,
    encode_set_aside,
    hashrate_member,
    invalid_record,
    record_kind,
    settlement_record,
    share_record,
)

WRITE_TIMEOUT = 10.0
CANDIDATE_TIMEOUT = 1.0  # seconds block_found waits, by default, for its candidate to be in Redis
RECORDER_TTL = 7 * 24 * 3600  # a stopped recorder's batch number is forgotten after a week
ZADD_CHUNK = 500  # score/member pairs per ZADD (Lua's unpack has a stack limit)

# KEYS: this recorder's batch number, roundCurrent, stats, hashrate, blocksPending, blocksFound,
#       blocksCandidates, then the round policy's keys
# ARGV: batch number, coin, hashrate window start, recorder ttl, records (see
#       nomp.store.schema), then the round policy's args
# The round policy's Lua goes between the two halves (see nomp.payments.rounds).
_HEAD = """
local applied = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= applied then return 0 end
local records, malformed = parse_records(ARGV[5])
if not records then return redis.error_reply(malformed) end
local coin = ARGV[2]
local round_current, stats, hashrate = KEYS[2], KEYS[3], KEYS[4]
local pending, found, candidates = KEYS[5], KEYS[6], KEYS[7]
local policy_keys, policy_args = {}, {}
for i = 8, #KEYS do policy_keys[#policy_keys + 1] = KEYS[i] end
for i = 6, #ARGV do policy_args[#policy_args + 1] = ARGV[i] end
"""

# Everything is checked before anything is written (the records above, the
# keys' types here): Redis does not undo the commands of a script that fails
# half way, and a refused batch is set aside whole.
_BODY = """
local problem = wrong_type(round_current, 'hash') or wrong_type(stats, 'hash')
  or wrong_type(hashrate, 'zset') or wrong_type(pending, 'set') or wrong_type(found, 'set')
  or wrong_type(candidates, 'hash') or policy_check()
for _, r in ipairs(records) do
  if problem then break end
  if r[1] == 'a' then problem = wrong_type(block_key(coin, r[2]), 'hash') end
end
if problem then return redis.error_reply(problem) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
local valid, invalid = 0, 0
local credit, workers, scores = {}, {}, {}
local function write_shares()
  for _, worker in ipairs(workers) do
    redis.call('HINCRBYFLOAT', round_current, worker, number(credit[worker]))
  end
  credit, workers = {}, {}
  policy_flush()
  for first = 1, #scores, 2 * ZADD_CHUNK do
    redis.call('ZADD', hashrate, unpack(scores, first, math.min(first + 2 * ZADD_CHUNK - 1, #scores)))
  end
  scores = {}
end
local function close_round(hash, c)
  -- the round's work, for the block's effort: every share since the last block
  local work = 0
  for _, v in ipairs(redis.call('HVALS', round_current)) do work = work + tonumber(v) end
  local round = round_key(coin, c.height)
  if redis.call('EXISTS', round) == 1 then round = round_key_taken(round, hash) end
  if c.solo == '1' then finder_close(round, c.worker) else policy_close(round, c.worker) end
  c.round, c.shares = round, number(work)
  redis.call('HSET', candidates, hash, cjson.encode(c))
end
local function settle(hash, accepted)
  local stored = redis.call('HGET', candidates, hash)
  if not stored then return end  -- settled before (or never a candidate here)
  local c = cjson.decode(stored)
  if accepted then
    redis.call('SADD', pending, c.pending)
    local block = {}
    for _, name in ipairs(block_fields) do
      block[#block + 1] = name
      block[#block + 1] = c[name]
    end
    redis.call('HSET', block_key(coin, hash), unpack(block))
    redis.call('HINCRBY', stats, 'validBlocks', 1)
  else
    if c.solo == '1' then finder_reopen(c.round) else policy_reopen(c.round) end
    redis.call('HINCRBY', stats, 'invalidBlocks', 1)
  end
  redis.call('HDEL', candidates, hash)
end
for _, r in ipairs(records) do
  local kind = r[1]
  if kind == 's' then
    if credit[r[2]] == nil then credit[r[2]] = 0; workers[#workers + 1] = r[2] end
    credit[r[2]] = credit[r[2]] + tonumber(r[3])
    policy_share(r[2], r[3])
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
  elseif kind == 'c' then
    write_shares()  -- the shares before the candidate belong to its round
    if redis.call('SADD', found, r[2]) == 1 then close_round(r[2], r[3]) end
  elseif kind == 'a' then
    settle(r[2], true)
  elseif kind == 'r' then
    settle(r[2], false)
  end
end
write_shares()
if valid > 0 then redis.call('HINCRBY', stats, 'validShares', valid) end
if invalid > 0 then redis.call('HINCRBY', stats, 'invalidShares', invalid) end
redis.call('ZREMRANGEBYSCORE', hashrate, '-inf', '(' .. ARGV[3])
return 1
""".replace("ZADD_CHUNK", str(ZADD_CHUNK))

# KEYS: the set-aside list. ARGV: one entry. A single command: whatever made
# Redis refuse the batch's script does not stop the batch being kept.
_PUSH_SET_ASIDE = "return redis.call('RPUSH', KEYS[1], ARGV[1])"

_HGETALL = "return redis.call('HGETALL', KEYS[1])"

_WAITING = "{waiting} share records waiting"


class RecorderFull(Exception):
    """The buffer is full: Redis has been away too long."""


class RecordsShares(Protocol):
    """What the Stratum side needs of a recorder (ShareRecorder, or a test's fake)."""

    def valid_share(self, worker: str, difficulty: float, solo: bool = False) -> None: ...

    def invalid_share(self, worker: str, difficulty: float) -> None: ...


@dataclass(frozen=True, slots=True)
class _Batch:
    number: int
    records: str  # the records, a line each
    count: int
    end: int  # the position in the record stream after its last record


@dataclass(eq=False, slots=True)
class _CandidateWaiter:
    """block_found's Deferred, fired once its record's batch is applied (or the wait is over)."""

    position: int  # the candidate's record in the record stream
    durable: defer.Deferred[bool]
    timer: IDelayedCall | None = None

    def fire(self, durable: bool) -> None:
        if self.durable.called:
            return
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.durable.callback(durable)


@dataclass(eq=False, slots=True)
class _SetAside:
    """A refused batch's list entry, until Redis has taken it."""

    entry: str
    count: int
    failures: int = 0


class RoundClosing(Protocol):
    """How a block candidate closes its round: the payment scheme's choice
    (nomp.payments.rounds), spliced into the recorder's script."""

    @property
    def fragment(self) -> str:
        """The Lua defining the script's round closing (see nomp.payments.rounds)."""
        ...

    @property
    def args(self) -> tuple[str, ...]:
        """Appended to the script's ARGV."""
        ...

    def keys(self, keys: PoolKeys) -> tuple[str, ...]:
        """Appended to the script's KEYS."""
        ...


class ShareRecorder:
    """Queues share and block records of one pool and writes them to Redis."""

    log = Logger()

    def __init__(
        self,
        keys: PoolKeys,
        redis: Callable[[], RedisClient | None],
        clock: IReactorTime,
        round_policy: RoundClosing,
        hashrate_window: float = 300.0,
        max_batch: int = 5000,
        max_buffered: int = 500_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self._redis = redis
        self._clock = clock
        self._window = hashrate_window
        self.round_policy = round_policy
        self._max_batch = max_batch
        self._max_buffered = max_buffered
        self._wall_clock = wall_clock
        self._queue: deque[str] = deque()
        self._taken = 0  # records taken from the queue into batches, ever: the queue's first position
        self._batch: _Batch | None = None
        self._waiters: deque[_CandidateWaiter] = deque()  # by position
        self._held: deque[_SetAside] = deque()  # set aside, not yet in Redis
        self._held_records = 0
        self._instance = os.urandom(6).hex()  # this recorder's id in Redis
        self._batch_ids = itertools.count(1)
        self._member_ids = itertools.count(1)
        self._writing = False
        self._flushed: list[defer.Deferred[None]] = []  # flush() callers waiting for the running flush
        self._outage = Outage(self.log, f"pool {keys.coin}: Redis", clock, REDIS_DOWN)
        self._script = LUA_PRELUDE + _HEAD + round_policy.fragment + _BODY
        self._script_keys = [
            keys.recorder(self._instance),
            keys.round_current,
            keys.stats,
            keys.hashrate,
            keys.blocks_pending,
            keys.blocks_found,
            keys.blocks_candidates,
            *round_policy.keys(keys),
        ]
        self.written = 0  # records written, for tests and stats
        self.set_aside = 0  # records of batches Redis refused, set aside (for /metrics)

    @property
    def waiting(self) -> int:
        """Records not yet in Redis (set-aside ones waiting for their list included)."""
        return len(self._queue) + (self._batch.count if self._batch else 0) + self._held_records

    def _check_room(self) -> None:
        if self.waiting >= self._max_buffered:
            raise RecorderFull(f"{self.waiting} share records are waiting for Redis")

    def _member(self, difficulty: float, worker: str, ms: int) -> str:
        return hashrate_member(difficulty, worker, ms, f"{self._instance}{next(self._member_ids)}")

    def valid_share(self, worker: str, difficulty: float, solo: bool = False) -> None:
        """Record an accepted share; RecorderFull when the buffer is full.

        A solo share counts for the hashrate and the counters but in no
        shared round: its miner mines for himself.
        """
        self._check_room()
        now = self._wall_clock()
        member = self._member(difficulty, worker, int(now * 1000))
        self._queue.append(share_record(worker, difficulty, now, member, solo))

    def invalid_share(self, worker: str, difficulty: float) -> None:
        """Record a refused share (dropped, not raised, when the buffer is full)."""
        if self.waiting >= self._max_buffered:
            return
        now = self._wall_clock()
        member = self._member(-difficulty, worker, int(now * 1000))
        self._queue.append(invalid_record(now, member))

    def block_found(
        self, candidate: BlockCandidate, timeout: float = CANDIDATE_TIMEOUT
    ) -> defer.Deferred[bool]:
        """Queue a block candidate at this place among the shares and write it now.

        Its round closes there: the shares queued after it belong to the
        next round. The Deferred fires True once the candidate is in Redis
        (in blocksCandidates, until ``block_settled``), or False if it is not
        after ``timeout`` seconds (it stays queued and is written later) or
        its batch was set aside; it never fails. A candidate is queued even
        when the buffer is full.
        """
        waiter = _CandidateWaiter(self._taken + len(self._queue), defer.Deferred())
        self._queue.append(candidate_record(candidate, self._instance))
        self._waiters.append(waiter)
        waiter.timer = self._clock.callLater(timeout, waiter.fire, False)
        self._flush_now()
        return waiter.durable

    def block_settled(self, block_hash: str, accepted: bool) -> None:
        """The daemon answered for a candidate: make it a block (accepted) or reopen its round.

        Written at once. A candidate settled before (or unknown) is left as
        it is, so a settlement sent twice changes nothing.
        """
        self._queue.append(settlement_record(block_hash, accepted))
        self._flush_now()

    async def unsettled_candidates(self) -> list[StoredCandidate]:
        """The candidates in Redis no settlement reached (the process stopped before
        the daemon's answer was written), lowest height first; raises on Redis errors.

        Another process of the pool sharing this Redis may still be waiting
        for its daemon's answer for a recent one.
        """
        client = self._redis()
        if client is None:
            raise RedisUnavailable("Redis is not connected")
        flat = await client.eval(_HGETALL, [self.keys.blocks_candidates], []) or []
        candidates = []
        for block_hash, value in zip(flat[::2], flat[1::2], strict=True):
            try:
                candidates.append(decode_candidate(_text(block_hash), _text(value)))
            except (ValueError, KeyError, TypeError):
                self.log.failure(
                    "pool {coin}: block candidate {block_hash} in {key} cannot be read; left there",
                    coin=self.keys.coin,
                    block_hash=_text(block_hash),
                    key=self.keys.blocks_candidates,
                )
        return sorted(candidates, key=lambda c: (c.height, c.found_at, c.block_hash))

    def keep_blocks_only(self) -> int:
        """Drop the queued share records, keeping the candidates and settlements; how many
        were dropped. For a shutdown that cannot write everything: the blocks matter most."""
        start = self._taken
        kept: deque[str] = deque()
        moved: dict[int, int] = {}
        for index, record in enumerate(self._queue):
            if record_kind(record) in BLOCK_RECORDS:
                moved[start + index] = start + len(kept)
                kept.append(record)
        for waiter in self._waiters:
            if waiter.position >= start:
                waiter.position = moved[waiter.position]
        dropped = len(self._queue) - len(kept)
        self._queue = kept
        return dropped

    @property
    def blocks_waiting(self) -> int:
        """Candidates and settlements queued, not yet sent."""
        return sum(1 for record in self._queue if record_kind(record) in BLOCK_RECORDS)

    def _flush_now(self) -> None:
        if not self._writing:
            background(f"pool {self.keys.coin}: share records", self._flush())

    def _next_batch(self) -> _Batch | None:
        count = min(len(self._queue), self._max_batch)
        if not count:
            return None
        queue = self._queue
        records = "\n".join([queue.popleft() for _ in range(count)])
        self._taken += count
        return _Batch(next(self._batch_ids), records, count, self._taken)

    def flush(self) -> defer.Deferred[None]:
        """Write what is queued (one batch at a time) until nothing is, or Redis fails.

        One flush runs at a time: called during one (block_found starts
        its own), this waits for it, and it writes what was queued meanwhile.
        """
        done: defer.Deferred[None] = defer.Deferred()
        self._flushed.append(done)
        self._flush_now()
        return done

    async def _flush(self) -> None:
        self._writing = True
        failure: Failure | None = None
        try:
            await self._write_set_aside()
            while True:
                if self._batch is None:
                    self._batch = self._next_batch()
                batch = self._batch
                if batch is None:
                    return
                if not await self._write(batch):
                    return
                self._batch = None
                await self._write_set_aside()
        except BaseException:
            failure = Failure()
            raise
        finally:
            self._writing = False
            done, self._flushed = self._flushed, []
            for waiter in done:
                if failure is None:
                    waiter.callback(None)
                else:
                    waiter.errback(failure)

    def _settle_waiters(self, end: int, durable: bool) -> None:
        while self._waiters and self._waiters[0].position < end:
            self._waiters.popleft().fire(durable)

    async def _write(self, batch: _Batch) -> bool:
        """Send one batch; whether the queue may move on (it was applied, or set aside)."""
        client = self._redis()
        if client is None:
            self._outage.failed(RedisUnavailable("Redis is not connected"), _WAITING, waiting=self.waiting)
            return False
        attempt = client.eval(
            self._script,
            self._script_keys,
            [
                batch.number,
                self.keys.coin,
                repr(self._wall_clock() - self._window),
                RECORDER_TTL,
                batch.records,
                *self.round_policy.args,
            ],
        )
        attempt.addTimeout(WRITE_TIMEOUT, self._clock)
        try:
            await attempt
        except Exception as e:
            reason = refusal(e)
            if reason is not None:
                self._outage.succeeded(_WAITING, waiting=self.waiting)  # it answered
                self._set_aside(batch, reason)
                return True
            # Otherwise the batch may or may not have been applied: it is
            # sent again with the same number, which Redis then knows and skips.
            self._outage.failed(_as_outage(e), _WAITING, waiting=self.waiting)
            return False
        self._outage.succeeded("writing {waiting} waiting records", waiting=self.waiting)
        self.written += batch.count
        self._settle_waiters(batch.end, True)
        return True

    def _set_aside(self, batch: _Batch, reason: str) -> None:
        entry = encode_set_aside(
            reason, self._wall_clock(), self._instance, batch.number, batch.records.split("\n")
        )
        self._held.append(_SetAside(entry, batch.count))
        self._held_records += batch.count
        self.set_aside += batch.count
        self._settle_waiters(batch.end, False)
        self.log.error(
            "pool {coin}: Redis refused a batch of {count} share records ({reason}); "
            "set aside in {key}, the records behind it go on",
            coin=self.keys.coin,
            count=batch.count,
            reason=reason,
            key=self.keys.recorder_set_aside,
        )

    async def _write_set_aside(self) -> None:
        """Put the set-aside batches in their list, oldest first, until one fails."""
        while self._held:
            held = self._held[0]
            client = self._redis()
            if client is None:
                return  # the batches' own writes say Redis is away
            attempt = client.eval(_PUSH_SET_ASIDE, [self.keys.recorder_set_aside], [held.entry])
            attempt.addTimeout(WRITE_TIMEOUT, self._clock)
            try:
                await attempt
            except Exception as e:
                error = _as_outage(e)
                if self._outage.is_transient(error):
                    self._outage.failed(error, _WAITING, waiting=self.waiting)
                else:
                    held.failures += 1
                    if held.failures == 1:  # then tried again at every flush, quietly
                        self.log.failure(
                            "pool {coin}: {count} set-aside share records not written to {key}; "
                            "kept in memory and tried again",
                            Failure(e),
                            coin=self.keys.coin,
                            count=held.count,
                            key=self.keys.recorder_set_aside,
                        )
                return
            self._held.popleft()
            self._held_records -= held.count
            if held.failures:
                self.log.info(
                    "pool {coin}: {count} set-aside share records written to {key} after {failures} failures",
                    coin=self.keys.coin,
                    count=held.count,
                    key=self.keys.recorder_set_aside,
                    failures=held.failures,
                )


def _as_outage(error: Exception) -> Exception:
    """``error``, or a RedisUnavailable for an answer that means Redis cannot take writes just now."""
    if unavailable_reply(error):
        return RedisUnavailable(f"Redis answered: {error}")
    return error


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
