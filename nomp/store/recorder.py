"""ShareRecorder: shares and blocks into Redis, in NOMP's keys, batched, in order, exactly once.

Records are queued in memory and written by ``flush`` in batches: one Lua
script call per batch, applied atomically, numbered so that a batch sent
again after a lost reply is not counted twice, set aside if Redis refuses
it; nomp.store.batches does all that for every schema. This module adds
NOMP's: its records, and the script that writes them.

A block candidate is a record among the shares: the script closes its
round right there (the round policy of nomp.payments.rounds says what the
round is) and keeps the candidate in blocksCandidates until a settlement
record, once the daemon has answered, makes it a block (accepted) or
reopens its round (refused). Nothing waits for the daemon: the shares
behind a candidate go to the next round at once.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from nomp.candidate import BlockCandidate
from nomp.store.batches import (
    CANDIDATE_TIMEOUT,
    LUA_BATCH_START,
    MAX_BATCH,
    ZADD_CHUNK,
    BatchRecorder,
    RecorderFull,
    RoundClosing,
)
from nomp.store.client import RedisClient, RedisUnavailable
from nomp.store.schema import (
    LUA_PRELUDE,
    PoolKeys,
    StoredCandidate,
    candidate_record,
    decode_candidate,
    hashrate_member,
    invalid_record,
    settlement_record,
    share_record,
)

__all__ = ["RecorderFull", "RecordsShares", "RoundClosing", "ShareRecorder"]

# KEYS: this recorder's batch number, roundCurrent, stats, hashrate, blocksPending, blocksFound,
#       blocksCandidates, then the round policy's keys
# ARGV: batch number, coin, hashrate window start, recorder ttl, records (see
#       nomp.store.schema), then the round policy's args
# The round policy's Lua goes between the two halves (see nomp.payments.rounds).
_HEAD = (
    LUA_BATCH_START
    + """
local round_current, stats, hashrate = KEYS[2], KEYS[3], KEYS[4]
local pending, found, candidates = KEYS[5], KEYS[6], KEYS[7]
local policy_keys, policy_args = {}, {}
for i = 8, #KEYS do policy_keys[#policy_keys + 1] = KEYS[i] end
for i = 6, #ARGV do policy_args[#policy_args + 1] = ARGV[i] end
local function round_add(key, worker, amount) redis.call('HINCRBYFLOAT', key, worker, amount) end
"""
)

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

_HGETALL = "return redis.call('HGETALL', KEYS[1])"


class RecordsShares(Protocol):
    """What the Stratum side needs of a recorder (ShareRecorder, or a test's fake)."""

    def valid_share(self, worker: str, difficulty: float, solo: bool = False) -> None: ...

    def invalid_share(self, worker: str, difficulty: float) -> None: ...


class ShareRecorder(BatchRecorder[PoolKeys]):
    """Queues share and block records of one pool and writes them to Redis, in NOMP's keys."""

    def __init__(
        self,
        keys: PoolKeys,
        redis: Callable[[], RedisClient | None],
        clock: IReactorTime,
        round_policy: RoundClosing,
        hashrate_window: float = 300.0,
        max_batch: int = MAX_BATCH,
        max_buffered: int = 500_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(keys, redis, clock, max_batch, max_buffered, wall_clock)
        self._window = hashrate_window
        self.round_policy = round_policy
        self._member_ids = itertools.count(1)
        self._use_script(
            LUA_PRELUDE + _HEAD + round_policy.fragment + _BODY,
            [
                keys.round_current,
                keys.stats,
                keys.hashrate,
                keys.blocks_pending,
                keys.blocks_found,
                keys.blocks_candidates,
                *round_policy.keys(keys),
            ],
        )

    def _batch_args(self) -> tuple[str, tuple[str, ...]]:
        return repr(self._wall_clock() - self._window), self.round_policy.args

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
        self._add(share_record(worker, difficulty, now, member, solo))

    def invalid_share(self, worker: str, difficulty: float) -> None:
        """Record a refused share (dropped, not raised, when the buffer is full)."""
        if not self._has_room:
            return
        now = self._wall_clock()
        member = self._member(-difficulty, worker, int(now * 1000))
        self._add(invalid_record(now, member))

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
        return self._add_candidate(candidate_record(candidate, self._instance), timeout)

    def block_settled(self, block_hash: str, accepted: bool) -> None:
        """The daemon answered for a candidate: make it a block (accepted) or reopen its round.

        Written at once. A candidate settled before (or unknown) is left as
        it is, so a settlement sent twice changes nothing.
        """
        self._add_now(settlement_record(block_hash, accepted))

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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
