"""EthLedger: the Ethereum-family unlocker's Redis writes, in open-ethereum-pool's keys.

Each step of a block is one Lua script, so Redis applies it whole or not
at all, and each first checks that the step is still to be done (its
source member is still where the step takes it from): a script sent again
after a crash, or by a run that read before another run wrote, changes
nothing. Each also checks the unlocker's lock still holds the run's fencing
token, so a run that stalled past its lock's timeout can no longer write.

The steps (oepschema.OepKeys names the keys):

- ``write_immature``: a candidate the chain holds (a block or an uncle)
  leaves ``blocks:candidates`` for ``blocks:immature``; each login's credit
  goes to ``miners:<login>`` immature and to the block's credit logs, the
  total to ``finances`` immature. An uncle's round is renamed to its
  nephew's height, where OEP keeps it.
- ``write_candidate_orphan``: a candidate the chain holds nowhere goes to
  ``blocks:immature`` flagged orphan (OEP's WritePendingOrphans); its round
  is deleted.
- ``write_matured``: a block still in the chain at ``depth``: the immature
  credits become balances, the block moves to ``blocks:matured`` and
  ``credits:all``, ``finances`` counts it, its round is deleted.
- ``write_orphan``: an immature block no longer in the chain (or one flagged
  orphan reaching ``depth``): its immature credits are taken back, its logs
  and round deleted, and it goes to ``blocks:matured`` flagged orphan.

Units. OEP's fields keep OEP's unit, whole Shannon (10^9 wei), so its API,
its payouts and the tools around them read the right numbers: ``immature``
and ``balance`` of ``miners:<login>``; ``immature``, ``balance`` and
``totalMined`` of ``finances``; the values of ``credits:immature:*`` and
``credits:*``. Nothing is truncated: each of those amount fields has a
field of ours beside it, ``<field>Dust``, holding the wei below a whole
Shannon (0 to 10^9 - 1), and the exact amount is ``<field> * 10^9 +
<field>Dust``; a credit carries into the Shannon field when the dust
passes 10^9. Kept this way rather than as a separate full wei total so
that anything that moves OEP's Shannon field (OEP's payouts debit
``balance``) moves the exact amount with it: the two can never disagree.
The exact credit of each login per block is in ``unlocker:credits:*`` (wei);
the credit logs OEP reads hold its floor in Shannon.

Every credit of a block adds up to its reward in wei: the miners' parts and
the pool's (its fee and what the split's floors leave), which goes to the
pool's own address as a miner balance, as OEP's ``poolFeeAddress``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from nomp.payments.ethunlock import EthCandidate
from nomp.store.client import RedisClient
from nomp.store.fencing import FencedLock, still_held
from nomp.store.oepschema import OEP_LUA_PRELUDE, OepKeys

# OEP's blocks:immature and blocks:matured member, and its credits:all member.
BLOCK_MEMBER = "{uncle_height}:{orphan}:{nonce}:{hash}:{timestamp}:{difficulty}:{shares}:{reward}"
CREDIT_MEMBER = "{hash}:{timestamp}:{reward}"
NO_HASH = "0x0"  # OEP's hash of a candidate found nowhere

_NONCE = re.compile(r"0x[0-9a-f]{16}")
_HASH = re.compile(r"0x[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """A member of ``blocks:immature`` or ``blocks:matured``, with its score."""

    height: int  # the score: the block's height; an uncle's nephew's, as OEP keeps it
    uncle_height: int  # an uncle's own height; 0 for a block
    orphan: bool
    nonce: str  # 0x and 16 hex digits, as in the round's key
    hash: str  # the chain's block (or uncle) hash; NO_HASH for a candidate found nowhere
    found_at: int  # unix s
    difficulty: int  # the network's when found
    round_total: int  # the round's summed share difficulty
    reward: int  # wei; 0 for an orphan
    member: str = ""  # as read (or written) in Redis; filled in when empty

    def __post_init__(self) -> None:
        if not self.member:
            member = BLOCK_MEMBER.format(
                uncle_height=self.uncle_height,
                orphan=1 if self.orphan else 0,
                nonce=self.nonce,
                hash=self.hash,
                timestamp=self.found_at,
                difficulty=self.difficulty,
                shares=self.round_total,
                reward=self.reward,
            )
            object.__setattr__(self, "member", member)

    @property
    def uncle(self) -> bool:
        return self.uncle_height > 0

    def orphaned(self) -> BlockRecord:
        """The record as a matured orphan: flagged, earning nothing."""
        return replace(self, orphan=True, reward=0, member="")


def parse_block_member(member: str, height: int) -> BlockRecord:
    """A ``blocks:immature`` or ``blocks:matured`` member scored ``height``; ValueError for
    anything else."""
    parts = member.split(":")
    if len(parts) != 8:
        raise ValueError(f"block record {member!r}: expected 8 fields, got {len(parts)}")
    uncle_height, orphan, nonce, block_hash, found_at, difficulty, total, reward = parts
    if orphan not in ("0", "1"):
        raise ValueError(f"block record {member!r}: the orphan flag must be 0 or 1")
    if not _NONCE.fullmatch(nonce):
        raise ValueError(f"block record {member!r}: the nonce must be 0x and 16 lower-case hex digits")
    if not (_HASH.fullmatch(block_hash.lower()) or (block_hash == NO_HASH and orphan == "1")):
        raise ValueError(f"block record {member!r}: the hash must be 0x and 64 hex digits")
    for name, value in (
        ("uncle height", uncle_height),
        ("time", found_at),
        ("difficulty", difficulty),
        ("round total", total),
        ("reward", reward),
    ):
        if not _DIGITS.fullmatch(value):
            raise ValueError(f"block record {member!r}: the {name} must be a decimal integer")
    if height < 1:
        raise ValueError(f"block record {member!r}: height {height}")
    return BlockRecord(
        height=height,
        uncle_height=int(uncle_height),
        orphan=orphan == "1",
        nonce=nonce,
        hash=block_hash,
        found_at=int(found_at),
        difficulty=int(difficulty),
        round_total=int(total),
        reward=int(reward),
        member=member,
    )


def parse_score(score: Any) -> int:
    """A zset score as Redis sends it (a decimal string) as a height; ValueError if it is not one."""
    try:
        value = Decimal(str(score))
    except InvalidOperation:
        raise ValueError(f"score {score!r} is not a number") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise ValueError(f"score {score!r} is not a whole height")
    return int(value)


def credit_member(block_hash: str, timestamp: int, reward: int) -> str:
    return CREDIT_MEMBER.format(hash=block_hash, timestamp=timestamp, reward=reward)


# -- the scripts ------------------------------------------------------------------

# Amounts: OEP's Shannon field and our <field>Dust beside it (see the module
# docstring). Shannon counts go through HINCRBY, exact in Redis whatever
# their size; only dust (below 2 * 10^9) is Lua arithmetic.
_AMOUNTS = r"""
local GWEI = 1000000000
local function wei_text(x)
  return type(x) == 'string' and (x == '0' or string.match(x, '^[1-9]%d*$') ~= nil)
end
-- a wei amount as its whole Shannon (text) and the wei below (a number)
local function wei_parts(text)
  if #text <= 9 then return '0', tonumber(text) end
  return string.sub(text, 1, -10), tonumber(string.sub(text, -9))
end
-- the sum of wei amounts (texts) as whole Shannon (text) and the wei below
local function wei_sum(amounts)
  local shannon, dust = new_sum(), 0
  for _, text in ipairs(amounts) do
    local s, d = wei_parts(text)
    sum_add(shannon, s)
    dust = dust + d
  end
  local carry = math.floor(dust / GWEI)
  sum_add(shannon, string.format('%d', carry))
  return sum_text(shannon), dust - carry * GWEI
end
-- why key's <field> and <field>Dust cannot take a credit, if they cannot
local function amount_problem(key, field)
  local found = redis.call('HMGET', key, field, field .. 'Dust')
  local shannon, dust = found[1], found[2]
  if shannon and not string.match(shannon, '^%-?%d+$') then
    return key .. ' ' .. field .. ' is not an integer: ' .. shannon
  end
  if dust and not (string.match(dust, '^%d+$') and #dust <= 9) then
    return key .. ' ' .. field .. 'Dust is not below a Shannon: ' .. dust
  end
  return nil
end
-- adds sign * (shannon * 10^9 + dust) wei to key's <field> and <field>Dust
local function add_wei(key, field, shannon, dust, sign)
  local dust_field = field .. 'Dust'
  local left = tonumber(redis.call('HGET', key, dust_field) or '0') + sign * dust
  local carry = 0
  if left >= GWEI then
    carry, left = 1, left - GWEI
  elseif left < 0 then
    carry, left = -1, left + GWEI
  end
  local delta = shannon
  if sign < 0 and shannon ~= '0' then delta = '-' .. shannon end
  redis.call('HINCRBY', key, field, delta)
  if carry ~= 0 then redis.call('HINCRBY', key, field, carry) end
  redis.call('HSET', key, dust_field, string.format('%d', left))
end
-- a block's credits (flat login, wei pairs): its exact log, or, for a block
-- OEP's own unlocker made immature, its Shannon log
local function block_credits(wei_log, shannon_log)
  local flat = redis.call('HGETALL', wei_log)
  if #flat > 0 then return flat end
  flat = redis.call('HGETALL', shannon_log)
  for i = 2, #flat, 2 do
    if flat[i] ~= '0' then flat[i] = flat[i] .. '000000000' end
  end
  return flat
end
local function credits_problem(coin, flat, fields)
  for i = 1, #flat, 2 do
    if not wei_text(flat[i + 1]) then
      return 'credit of ' .. flat[i] .. ' is not wei: ' .. tostring(flat[i + 1])
    end
    local key = miner_key(coin, flat[i])
    local problem = wrong_type(key, 'hash')
    for _, field in ipairs(fields) do problem = problem or amount_problem(key, field) end
    if problem then return problem end
  end
  return nil
end
local function amounts_of(flat)
  local amounts = {}
  for i = 2, #flat, 2 do amounts[#amounts + 1] = flat[i] end
  return amounts
end
"""

_LOCKED = still_held("unlocker")

_PRELUDE = OEP_LUA_PRELUDE + _AMOUNTS


# KEYS: lock, candidates, immature, finances, the candidate's round, the round at the
#       record's height, credits:immature, unlocker credits (wei).
# ARGV: token, coin, candidate member, immature member, its score, then login/wei pairs.
_WRITE_IMMATURE = (
    _PRELUDE
    + _LOCKED
    + """
local coin, candidate, record, height = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not redis.call('ZSCORE', KEYS[2], candidate) then return 0 end
local credits = {}
for i = 6, #ARGV do credits[#credits + 1] = ARGV[i] end
local problem = wrong_type(KEYS[3], 'zset') or wrong_type(KEYS[4], 'hash') or wrong_type(KEYS[5], 'hash')
  or wrong_type(KEYS[6], 'hash') or wrong_type(KEYS[7], 'hash') or wrong_type(KEYS[8], 'hash')
  or amount_problem(KEYS[4], 'immature') or credits_problem(coin, credits, {'immature'})
if problem then return redis.error_reply(problem) end
redis.call('ZREM', KEYS[2], candidate)
redis.call('ZADD', KEYS[3], height, record)
if KEYS[5] ~= KEYS[6] and redis.call('EXISTS', KEYS[5]) == 1 then
  if redis.call('EXISTS', KEYS[6]) == 0 then
    redis.call('RENAME', KEYS[5], KEYS[6])
  else
    local shares = redis.call('HGETALL', KEYS[5])
    for i = 1, #shares, 2 do redis.call('HINCRBY', KEYS[6], shares[i], shares[i + 1]) end
    redis.call('DEL', KEYS[5])
  end
end
for i = 1, #credits, 2 do
  local login, wei = credits[i], credits[i + 1]
  local shannon, dust = wei_parts(wei)
  add_wei(miner_key(coin, login), 'immature', shannon, dust, 1)
  redis.call('HSETNX', KEYS[7], login, shannon)
  redis.call('HSETNX', KEYS[8], login, wei)
end
local shannon, dust = wei_sum(amounts_of(credits))
add_wei(KEYS[4], 'immature', shannon, dust, 1)
return 1
"""
)

# KEYS: lock, candidates, immature, the candidate's round.
# ARGV: token, candidate member, immature member, its score.
_WRITE_CANDIDATE_ORPHAN = (
    _PRELUDE
    + _LOCKED
    + """
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then return 0 end
local problem = wrong_type(KEYS[3], 'zset')
if problem then return redis.error_reply(problem) end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('DEL', KEYS[4])
return 1
"""
)

# KEYS: lock, immature, matured, finances, round, credits:immature, credits (Shannon),
#       unlocker credits (wei), credits:all.
# ARGV: token, coin, record member, its score, block hash, credits:all member.
_WRITE_MATURED = (
    _PRELUDE
    + _LOCKED
    + """
local coin, record, height, hash = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not redis.call('ZSCORE', KEYS[2], record) then return 0 end
local credits = block_credits(KEYS[8], KEYS[6])
local problem = wrong_type(KEYS[3], 'zset') or wrong_type(KEYS[4], 'hash') or wrong_type(KEYS[7], 'hash')
  or wrong_type(KEYS[8], 'hash') or wrong_type(KEYS[9], 'zset')
  or amount_problem(KEYS[4], 'immature') or amount_problem(KEYS[4], 'balance')
  or amount_problem(KEYS[4], 'totalMined') or credits_problem(coin, credits, {'immature', 'balance'})
if problem then return redis.error_reply(problem) end
for i = 1, #credits, 2 do
  local login, wei = credits[i], credits[i + 1]
  local shannon, dust = wei_parts(wei)
  local miner = miner_key(coin, login)
  add_wei(miner, 'immature', shannon, dust, -1)
  add_wei(miner, 'balance', shannon, dust, 1)
  redis.call('HSETNX', KEYS[7], login, shannon)
  redis.call('HSETNX', KEYS[8], login, wei)
end
local shannon, dust = wei_sum(amounts_of(credits))
add_wei(KEYS[4], 'immature', shannon, dust, -1)
add_wei(KEYS[4], 'balance', shannon, dust, 1)
add_wei(KEYS[4], 'totalMined', shannon, dust, 1)
redis.call('HSET', KEYS[4], 'lastCreditHeight', height, 'lastCreditHash', hash)
redis.call('DEL', KEYS[6], KEYS[5])
redis.call('ZREM', KEYS[2], record)
redis.call('ZADD', KEYS[3], height, record)
redis.call('ZADD', KEYS[9], height, ARGV[6])
return 1
"""
)

# KEYS: lock, immature, matured, finances, round, credits:immature, unlocker credits (wei).
# ARGV: token, coin, record member, its score, the matured (orphan) member.
_WRITE_ORPHAN = (
    _PRELUDE
    + _LOCKED
    + """
local coin, record, height = ARGV[2], ARGV[3], ARGV[4]
if not redis.call('ZSCORE', KEYS[2], record) then return 0 end
local credits = block_credits(KEYS[7], KEYS[6])
local problem = wrong_type(KEYS[3], 'zset') or wrong_type(KEYS[4], 'hash')
  or amount_problem(KEYS[4], 'immature') or credits_problem(coin, credits, {'immature'})
if problem then return redis.error_reply(problem) end
for i = 1, #credits, 2 do
  local shannon, dust = wei_parts(credits[i + 1])
  add_wei(miner_key(coin, credits[i]), 'immature', shannon, dust, -1)
end
if #credits > 0 then
  local shannon, dust = wei_sum(amounts_of(credits))
  add_wei(KEYS[4], 'immature', shannon, dust, -1)
end
redis.call('DEL', KEYS[5], KEYS[6], KEYS[7])
redis.call('ZREM', KEYS[2], record)
redis.call('ZADD', KEYS[3], height, ARGV[5])
return 1
"""
)

_ZRANGE_TO = "return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES')"
# One bulk string, not an array: the client spends a reactor turn on each element
# of an array reply, and a round may hold 10,000 logins.
_HGETALL_JSON = """
local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then return '[]' end
return cjson.encode(flat)
"""


def _pairs(flat: list[Any] | None) -> list[tuple[str, str]]:
    flat = flat or []
    return list(zip(flat[::2], flat[1::2], strict=True))


class EthLedger:
    """The unlocker's keys of one Ethereum-family pool and their scripts."""

    def __init__(self, redis: RedisClient, keys: OepKeys) -> None:
        self._redis = redis
        self.keys = keys
        self._lock = FencedLock(redis, keys.unlocker_lock, keys.unlocker_fence)

    async def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return await self._redis.eval(script, keys, args)

    # -- the lock ------------------------------------------------------------

    async def acquire(self, timeout: float) -> int | None:
        """The lock's new fencing token, or None while another run holds it."""
        return await self._lock.acquire(timeout)

    async def extend(self, token: int, timeout: float) -> bool:
        """Whether the lock is still ours (its timeout started again)."""
        return await self._lock.extend(token, timeout)

    async def release(self, token: int) -> None:
        await self._lock.release(token)

    # -- reads ---------------------------------------------------------------

    async def candidates(self, max_height: int) -> list[tuple[str, str]]:
        """(member, score) of the candidates at ``max_height`` and below, lowest first."""
        return _pairs(await self._eval(_ZRANGE_TO, [self.keys.blocks_candidates], [max_height]))

    async def immature(self, max_height: int) -> list[tuple[str, str]]:
        """(member, score) of the immature blocks at ``max_height`` and below, lowest first."""
        return _pairs(await self._eval(_ZRANGE_TO, [self.keys.blocks_immature], [max_height]))

    async def hash(self, key: str) -> dict[str, str]:
        reply = await self._eval(_HGETALL_JSON, [key], [])
        flat = json.loads(reply.decode() if isinstance(reply, bytes) else reply)
        if not isinstance(flat, list) or not all(isinstance(v, str) for v in flat):
            raise ValueError(f"{key}: not a hash of strings")
        return dict(_pairs(flat))

    async def round_shares(self, height: int, nonce: str) -> dict[str, str]:
        """The round a candidate closed: login -> summed share difficulty."""
        return await self.hash(self.keys.round(height, nonce))

    # -- the steps -----------------------------------------------------------

    async def write_immature(
        self, token: int, candidate: EthCandidate, record: BlockRecord, credits: Mapping[str, int]
    ) -> bool:
        """Move a candidate the chain holds to blocks:immature with its credits (login -> wei,
        adding up to ``record.reward``); False if it was moved before."""
        if sum(credits.values()) != record.reward or any(wei <= 0 for wei in credits.values()):
            raise ValueError(f"credits {dict(credits)} do not add up to the reward {record.reward}")
        keys = self.keys
        flat: list[str] = []
        for login in sorted(credits):
            flat += [login, str(credits[login])]
        done = await self._eval(
            _WRITE_IMMATURE,
            [
                keys.unlocker_lock,
                keys.blocks_candidates,
                keys.blocks_immature,
                keys.finances,
                keys.round(candidate.height, candidate.nonce_hex),
                keys.round(record.height, record.nonce),
                keys.credits_immature(record.height, record.hash),
                keys.credits_wei(record.height, record.hash),
            ],
            [token, keys.coin, candidate.member, record.member, record.height, *flat],
        )
        return bool(done)

    async def write_candidate_orphan(self, token: int, candidate: EthCandidate, record: BlockRecord) -> bool:
        """Move a candidate found nowhere to blocks:immature, flagged orphan, and drop its
        round; False if it was moved before."""
        keys = self.keys
        done = await self._eval(
            _WRITE_CANDIDATE_ORPHAN,
            [
                keys.unlocker_lock,
                keys.blocks_candidates,
                keys.blocks_immature,
                keys.round(candidate.height, candidate.nonce_hex),
            ],
            [token, candidate.member, record.member, record.height],
        )
        return bool(done)

    async def write_matured(self, token: int, record: BlockRecord, now: int) -> bool:
        """Make an immature block's credits balances (final); False if it was done before."""
        keys = self.keys
        done = await self._eval(
            _WRITE_MATURED,
            [
                keys.unlocker_lock,
                keys.blocks_immature,
                keys.blocks_matured,
                keys.finances,
                keys.round(record.height, record.nonce),
                keys.credits_immature(record.height, record.hash),
                keys.credits(record.height, record.hash),
                keys.credits_wei(record.height, record.hash),
                keys.credits_all,
            ],
            [
                token,
                keys.coin,
                record.member,
                record.height,
                record.hash,
                credit_member(record.hash, now, record.reward),
            ],
        )
        return bool(done)

    async def write_orphan(self, token: int, record: BlockRecord) -> bool:
        """Take back an immature block's credits and move it to blocks:matured flagged orphan;
        False if it was done before."""
        keys = self.keys
        done = await self._eval(
            _WRITE_ORPHAN,
            [
                keys.unlocker_lock,
                keys.blocks_immature,
                keys.blocks_matured,
                keys.finances,
                keys.round(record.height, record.nonce),
                keys.credits_immature(record.height, record.hash),
                keys.credits_wei(record.height, record.hash),
            ],
            [token, keys.coin, record.member, record.height, record.orphaned().member],
        )
        return bool(done)
