"""EthShareRecorder: the Ethereum family's shares and blocks, in open-ethereum-pool's keys.

What OEP's proxy writes (its WriteShare, WriteBlock and WriteNodeState,
nomp.store.oepschema names the keys), written the way ShareRecorder
writes NOMP's: queued, one Lua script call per batch, numbered so that a
batch sent again is not counted twice, set aside whole if Redis refuses it
(nomp.store.batches). Where OEP's WriteBlock added its candidate outside
its transaction, here the candidate and the round it closes are one script.

The round a candidate closes is the pool's payment scheme's (the round
policies of nomp.payments.rounds, the Bitcoin recorder's too): ``prop``
OEP's (the shares since the last block), ``pplns`` the last window of share
difficulty from the share log, ``solo`` the finder alone.

Where OEP has no answer, this recorder's choices:

- A hashrate member ("<diff>:<login>:<worker>:<ms>") has no room for an
  id, and two shares of one worker in one millisecond would be one member
  (one share's hashrate lost): the recorder makes the millisecond unique
  per login and worker by moving it on by one where it was taken already.
  OEP's readers use the score, never the millisecond. Two processes
  recording the same login and worker name in the same millisecond could
  still collide.
- A solo share (a solo port's) counts in the hashrate and lastShare, not in
  the round. A solo candidate leaves the shared round open: its round holds
  the finder alone, credited 1 (OEP has no solo mining).
- A candidate found while the round is empty (its shares dropped at a
  shutdown, or never recorded; under PPLNS an empty share log) gets a round
  of its finder alone, credited 1, so the unlocker has a round with shares
  to split the reward by.
- The node refusing a candidate undoes it: its member leaves
  blocks:candidates, its round is reopened as the scheme does it (PROP: the
  shares go back into roundCurrent and roundShares; PPLNS: they are still in
  the share log), finders and blocksFound go down by one, and lastBlockFound
  is put back if no block came since. A round of the finder alone is
  deleted. OEP never undid a block.
- A candidate is known by its block hash (the header hash): a second
  solution of the same work is the same candidate and is not counted again
  (settlements name candidates by that hash, which could not tell them
  apart).
- Both hashrate sets are trimmed to the hashrate expiration at each write,
  so they stay bounded with no OEP API running (OEP's API trims them to
  windows no longer than that).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from nomp.candidate import BlockCandidate
from nomp.store.batches import CANDIDATE_TIMEOUT, LUA_BATCH_START, ZADD_CHUNK, BatchRecorder, RoundClosing
from nomp.store.client import RedisClient
from nomp.store.oepschema import (
    OEP_LUA_PRELUDE,
    OepKeys,
    candidate_record,
    invalid_record,
    share_record,
    split_worker,
)
from nomp.store.schema import settlement_record

# KEYS: this recorder's batch number, roundCurrent, stats, hashrate, finders,
#       blocks:candidates, recorder:candidates, recorder:found, then the round policy's keys
# ARGV: batch number, coin, hashrate trim start (unix s), recorder ttl,
#       records (see nomp.store.oepschema), hashrate expiration (s), then the round policy's args
# The round policy's Lua goes between the two halves (see nomp.payments.rounds).
_HEAD = """
local trim, expiration = ARGV[3], ARGV[6]
local round_current, stats, hashrate, finders = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local candidates, recorded, found = KEYS[6], KEYS[7], KEYS[8]
local policy_keys, policy_args = {}, {}
for i = 9, #KEYS do policy_keys[#policy_keys + 1] = KEYS[i] end
for i = 7, #ARGV do policy_args[#policy_args + 1] = ARGV[i] end
-- OEP's rounds hold integer difficulty, exact past 2^53
local function round_add(key, login, amount) redis.call('HINCRBY', key, login, amount) end
"""

_BODY = """

-- what undoes a recorded candidate (nil if there is none), or nil and why it cannot be read
local function recorded_candidate(hash)
  local stored = redis.call('HGET', recorded, hash)
  if not stored then return nil end
  local ok, c = pcall(cjson.decode, stored)
  if ok and type(c) == 'table' then
    for _, name in ipairs(recorded_fields) do
      if type(c[name]) ~= 'string' then ok = false end
    end
  end
  if not ok or type(c) ~= 'table' then return nil, 'unreadable ' .. recorded .. ' entry: ' .. hash end
  return c
end

-- Everything is checked before anything is written: Redis does not undo
-- the commands of a script that fails half way, and a refused batch is set
-- aside whole.
local checked = {}
local function check(key, expected)
  if checked[key] then return nil end
  checked[key] = true
  return wrong_type(key, expected)
end
local function candidate_problem(c)
  for _, name in ipairs(candidate_fields) do
    if type(c[name]) ~= 'string' then return 'malformed candidate: no ' .. name end
  end
  if not (integer_text(c.height) and integer_text(c.time) and integer_text(c.difficulty)
      and hex_text(c.nonce, 16) and hex_text(c.header, 64) and hex_text(c.mix, 64)) then
    return 'malformed candidate: ' .. cjson.encode(c)
  end
  return check(miner_key(coin, c.login), 'hash') or check(round_key(coin, c.height, c.nonce), 'hash')
end
local problem = check(round_current, 'hash') or check(stats, 'hash') or check(hashrate, 'zset')
  or check(finders, 'zset') or check(candidates, 'zset') or check(recorded, 'hash') or check(found, 'set')
  or policy_check()
for _, r in ipairs(records) do
  if problem then break end
  local kind = r[1]
  if kind == 's' or kind == 'o' then
    if integer_text(r[4]) and integer_text(r[5]) and integer_text(r[6]) then
      problem = check(miner_key(coin, r[2]), 'hash') or check(login_hashrate_key(coin, r[2]), 'zset')
    else
      problem = 'malformed share: ' .. table.concat(r, ' ')
    end
  elseif kind == 'c' then
    problem = candidate_problem(r[3])
  elseif kind == 'r' then
    local c, unreadable = recorded_candidate(r[2])
    problem = unreadable or (c and (check(miner_key(coin, c.login), 'hash') or check(c.round, 'hash')))
  end
end
if problem then return redis.error_reply(problem) end

redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
local valid, invalid = 0, 0
local credit, logins, round_total = {}, {}, new_sum()  -- the shared round's, since the last write
local pool_scores, miners, miner_logins = {}, {}, {}  -- the hashrate members, per login
local function write_round()
  if #logins > 0 then
    for _, login in ipairs(logins) do redis.call('HINCRBY', round_current, login, sum_text(credit[login])) end
    redis.call('HINCRBY', stats, 'roundShares', sum_text(round_total))
    credit, logins, round_total = {}, {}, new_sum()
  end
  policy_flush()
end
local function zadd(key, scores)
  for first = 1, #scores, 2 * ZADD_CHUNK do
    redis.call('ZADD', key, unpack(scores, first, math.min(first + 2 * ZADD_CHUNK - 1, #scores)))
  end
end
-- adds the hash from into the hash to, deletes from; the sum moved
local function merge(from, to)
  local moved = new_sum()
  local shares = redis.call('HGETALL', from)
  for i = 1, #shares, 2 do
    redis.call('HINCRBY', to, shares[i], shares[i + 1])
    sum_add(moved, shares[i + 1])
  end
  redis.call('DEL', from)
  return moved
end
local function close_round(hash, c)
  local round = round_key(coin, c.height, c.nonce)
  local alone = c.solo == '1' or policy_empty()
  local entry = {height = c.height, nonce = c.nonce, login = c.login, round = round, time = c.time,
    alone = alone and '1' or '0', last_found = redis.call('HGET', stats, 'lastBlockFound') or ''}
  redis.call('HSET', stats, 'lastBlockFound', c.time)
  redis.call('ZINCRBY', finders, 1, c.login)
  redis.call('HINCRBY', miner_key(coin, c.login), 'blocksFound', 1)
  if alone then
    redis.call('HINCRBY', round, c.login, 1)
  elseif redis.call('EXISTS', round) == 0 then
    policy_close(round, c.login)
  else
    -- another candidate with this height and nonce: one round
    local closing = round .. ':closing'
    policy_close(closing, c.login)
    merge(closing, round)
  end
  if c.solo ~= '1' then
    -- the shared round starts again (its work is the next block's effort)
    redis.call('DEL', round_current)
    redis.call('HDEL', stats, 'roundShares')
  end
  local total = new_sum()
  for _, v in ipairs(redis.call('HVALS', round)) do sum_add(total, v) end
  entry.member = candidate_member(c.nonce, c.header, c.mix, c.time, c.difficulty, sum_text(total))
  redis.call('ZADD', candidates, c.height, entry.member)
  redis.call('HSET', recorded, hash, cjson.encode(entry))
end
local function settle(hash, accepted)
  local c = recorded_candidate(hash)
  if not c then return end  -- settled before (or never a candidate here)
  redis.call('HDEL', recorded, hash)
  if accepted then return end  -- the unlocker takes it from blocks:candidates
  redis.call('ZREM', candidates, c.member)
  if c.alone == '1' then
    redis.call('DEL', c.round)
  else
    policy_reopen(c.round)
    local open = new_sum()
    for _, v in ipairs(redis.call('HVALS', round_current)) do sum_add(open, v) end
    if sum_text(open) == '0' then
      redis.call('HDEL', stats, 'roundShares')
    else
      redis.call('HSET', stats, 'roundShares', sum_text(open))
    end
  end
  if redis.call('HGET', stats, 'lastBlockFound') == c.time then
    if c.last_found == '' then
      redis.call('HDEL', stats, 'lastBlockFound')
    else
      redis.call('HSET', stats, 'lastBlockFound', c.last_found)
    end
  end
  if tonumber(redis.call('ZINCRBY', finders, -1, c.login)) <= 0 then redis.call('ZREM', finders, c.login) end
  local miner = miner_key(coin, c.login)
  if redis.call('HINCRBY', miner, 'blocksFound', -1) <= 0 then redis.call('HDEL', miner, 'blocksFound') end
end

for _, r in ipairs(records) do
  local kind = r[1]
  if kind == 's' or kind == 'o' then
    local login, worker, diff, seconds, ms = r[2], r[3], r[4], r[5], r[6]
    if kind == 's' then
      if credit[login] == nil then credit[login] = new_sum(); logins[#logins + 1] = login end
      sum_add(credit[login], diff)
      sum_add(round_total, diff)
      policy_share(login, diff)
    end
    pool_scores[#pool_scores + 1] = seconds
    pool_scores[#pool_scores + 1] = hashrate_member(diff, login, worker, ms)
    local miner = miners[login]
    if miner == nil then
      miner = {scores = {}}
      miners[login] = miner
      miner_logins[#miner_logins + 1] = login
    end
    miner.scores[#miner.scores + 1] = seconds
    miner.scores[#miner.scores + 1] = login_hashrate_member(diff, worker, ms)
    miner.last = seconds
    valid = valid + 1
  elseif kind == 'i' then
    invalid = invalid + 1
  elseif kind == 'c' then
    write_round()  -- the shares before the candidate belong to its round
    if redis.call('SADD', found, r[2]) == 1 then close_round(r[2], r[3]) end
  else
    settle(r[2], kind == 'a')  -- 'a' accepted, 'r' refused (parse_records knows no other kind)
  end
end
write_round()
for _, counter in ipairs({{'validShares', valid}, {'invalidShares', invalid}}) do
  if counter[2] > 0 then redis.call('HINCRBY', stats, counter[1], counter[2]) end
end
zadd(hashrate, pool_scores)
redis.call('ZREMRANGEBYSCORE', hashrate, '-inf', '(' .. trim)
for _, login in ipairs(miner_logins) do
  local key, miner = login_hashrate_key(coin, login), miners[login]
  zadd(key, miner.scores)
  redis.call('EXPIRE', key, expiration)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. trim)
  redis.call('HSET', miner_key(coin, login), 'lastShare', miner.last)
end
return 1
""".replace("ZADD_CHUNK", str(ZADD_CHUNK))

# KEYS: nodes. ARGV: field, value, ...
_WRITE_NODE_STATE = "return redis.call('HSET', KEYS[1], unpack(ARGV))"


class EthShareRecorder(BatchRecorder[OepKeys]):
    """Queues the shares and blocks of one Ethereum-family pool and writes them in OEP's keys."""

    def __init__(
        self,
        keys: OepKeys,
        redis: Callable[[], RedisClient | None],
        clock: IReactorTime,
        round_policy: RoundClosing,
        hashrate_expiration: float = 10800.0,
        max_batch: int = 5000,
        max_buffered: int = 500_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(keys, redis, clock, max_batch, max_buffered, wall_clock)
        self._expiration = hashrate_expiration
        self.round_policy = round_policy
        self._use_script(
            OEP_LUA_PRELUDE + LUA_BATCH_START + _HEAD + round_policy.fragment + _BODY,
            [
                keys.round_current,
                keys.stats,
                keys.hashrate,
                keys.finders,
                keys.blocks_candidates,
                keys.recorder_candidates,
                keys.recorder_found,
                *round_policy.keys(keys),
            ],
        )
        self._last_ms: dict[str, int] = {}  # "<login>:<worker>" -> the millisecond its last share took
        self._ms_second = 0

    def _batch_args(self) -> tuple[int, list[int | str]]:
        return int(self._wall_clock() - self._expiration), [
            max(1, round(self._expiration)),
            *self.round_policy.args,
        ]

    def _unique_ms(self, login: str, worker: str, ms: int) -> int:
        """``ms``, or the first millisecond after the one this worker's last share took."""
        if ms // 1000 != self._ms_second:
            # Once a second: a worker whose last share is older cannot collide any more.
            self._ms_second = ms // 1000
            self._last_ms = {name: last for name, last in self._last_ms.items() if last >= ms}
        name = f"{login}:{worker}"
        last = self._last_ms.get(name)
        if last is not None and ms <= last:
            ms = last + 1
        self._last_ms[name] = ms
        return ms

    def valid_share(self, worker: str, difficulty: float, solo: bool = False) -> None:
        """Record an accepted share of ``worker`` ("<login>.<worker>") as OEP's WriteShare does,
        its difficulty rounded to an integer; RecorderFull when the buffer is full.

        A solo share counts in the hashrate sets and lastShare, in no round.
        """
        self._check_room()
        now = self._wall_clock()
        login, name = split_worker(worker)
        ms = self._unique_ms(login, name, int(now * 1000))
        self._add(share_record(login, name, round(difficulty), int(now), ms, solo))

    def invalid_share(self, worker: str, difficulty: float) -> None:
        """Count a refused share in stats' invalidShares (OEP records nothing of them);
        dropped, not raised, when the buffer is full."""
        if self._has_room:
            self._add(invalid_record(worker))

    def block_found(
        self, candidate: BlockCandidate, timeout: float = CANDIDATE_TIMEOUT
    ) -> defer.Deferred[bool]:
        """Queue a candidate (its payload the 72-byte seal) and write it now: it closes the round
        at its place among the shares, as OEP's WriteBlock does, and joins blocks:candidates.

        The Deferred fires True once it is in Redis, or False after ``timeout``
        seconds (it stays queued) or if its batch was set aside. ValueError
        for a payload that is not a seal.
        """
        return self._add_candidate(candidate_record(candidate), timeout)

    def block_settled(self, block_hash: str, accepted: bool) -> None:
        """The node answered for a candidate. Accepted, it stays in blocks:candidates for the
        unlocker; refused, it is undone. Written at once; a settlement sent twice, or for a
        candidate unknown here, changes nothing."""
        self._add_now(settlement_record(block_hash, accepted))


def write_node_state(
    client: RedisClient, keys: OepKeys, name: str, height: int, difficulty: int, now: float
) -> defer.Deferred[Any]:
    """OEP's WriteNodeState: a node's height and difficulty in ``<coin>:nodes``, in one call."""
    fields = [
        f"{name}:name",
        name,
        f"{name}:height",
        str(height),
        f"{name}:difficulty",
        str(difficulty),
        f"{name}:lastBeat",
        str(int(now)),
    ]
    return client.eval(_WRITE_NODE_STATE, [keys.nodes], fields)
