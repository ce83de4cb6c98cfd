"""EthPayLedger: every write of the Ethereum family's payer to Redis, each one atomic Lua script.

The keys are open-ethereum-pool's (``miners:<login>``'s balance, pending
and paid, ``payments:pending``, ``payments:all``, ``payments:<login>``,
``finances``; nomp.store.oepschema names them) and the payer's own under
``<coin>:payouts:``, which OEP never reads:

- the journal (``payouts_journal``, login -> ``JournalEntry`` JSON): a
  payout between its debit and its record. It is written in the script that
  moves the amount from balance to pending, before anything is signed or
  sent, and removed in the script that records it paid (or gives it back);
- the unconfirmed payouts (``payouts_unconfirmed``, transaction hash ->
  ``Unconfirmed`` JSON): recorded paid, not mined yet. They keep their raw
  transaction, to be sent again if a node forgets it, and are dropped once
  mined, or given back if the chain ran them and they failed;
- logins set aside (``payouts_aside``, login -> why), never paid again
  until the operator deletes the field;
- the nonces in use (``EthPayLedger.nonces``, ``<coin>:payouts:nonces``): an
  index of the journal's and the unconfirmed payouts' nonces, kept by the
  scripts that add and remove their entries, so that a new payout's nonce
  is checked above every one in use in one lookup. A nonce given back, or
  whose payout was mined, leaves it and may be used again (a new payout
  key starts at nonce 0 once the old key's payouts are mined); where it is
  missing (a deployment from before it) the first script that needs it
  builds it from the two hashes.

Amounts are OEP's whole Shannon with their wei below a Shannon in the
``dust_field`` beside them: Lua's numbers are doubles, and wei pass 2^53
long before any balance is large, so the scripts add Shannon and dust
apart and carry between them.

The run holds a lock whose value is a fencing token (a number that only
grows, shared with the unlocker's runs); a script that decides something
(reserve, sign, give back) first checks the lock still holds its token, so
a run that stalled past the timeout can no longer write. A script that
records what the chain did (paid, mined, failed) checks only that the
journal or unconfirmed entry is the one it names: that happens once
whoever does it.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from txredisapi import ResponseError

from nomp.payments.ethsigner import DynamicPricing, LegacyPricing, Pricing
from nomp.store.client import JournalWrites, NotReplicated, RedisClient
from nomp.store.fencing import ACQUIRE, FencedLock, still_held
from nomp.store.oepschema import (
    BALANCE,
    LOGIN_PAYMENT_MEMBER,
    LOGIN_PAYMENTS,
    MINER,
    PAID,
    PAYMENT_MEMBER,
    PENDING,
    PENDING_PAYMENT_MEMBER,
    OepKeys,
    dust_field,
    shannon,
    split_wei,
    wei_of,
)
from nomp.store.schema import lua_key_function, lua_string

SCAN_COUNT = 500  # keys a payee scan step looks at

# -- Lua ------------------------------------------------------------------------------

_PRELUDE = "\n".join(
    [
        lua_key_function("miner_key", MINER),
        lua_key_function("login_payments_key", LOGIN_PAYMENTS),
        lua_key_function("pending_member", PENDING_PAYMENT_MEMBER),
        lua_key_function("payment_member", PAYMENT_MEMBER),
        lua_key_function("login_payment_member", LOGIN_PAYMENT_MEMBER),
        f"local BALANCE, PENDING, PAID = {lua_string(BALANCE)}, {lua_string(PENDING)}, {lua_string(PAID)}",
        f"local function dust(name) return name .. {lua_string(dust_field(''))} end",
        r"""
local SHANNON = 1000000000
-- an amount as {shannon, dust}, from the two decimal strings Python sends
local function amount(shannon_text, dust_text) return {tonumber(shannon_text), tonumber(dust_text)} end
local function held(key, name)
  local v = redis.call('HMGET', key, name, dust(name))
  return {tonumber(v[1] or '0') or 0, tonumber(v[2] or '0') or 0}
end
local function at_least(have, want)
  return have[1] > want[1] or (have[1] == want[1] and have[2] >= want[2])
end
-- add (sign 1) or take (sign -1) an amount to a field and its dust, carrying between them
local function move(key, name, a, sign)
  local d = held(key, name)[2] + sign * a[2]
  local carry = math.floor(d / SHANNON)
  d = d - carry * SHANNON
  redis.call('HINCRBY', key, name, string.format('%d', sign * a[1] + carry))
  redis.call('HSET', key, dust(name), string.format('%d', d))
end
local function transfer(key, from, to, a)
  move(key, from, a, -1)
  move(key, to, a, 1)
end
-- a script checks every amount it moves before its first write: Redis does not
-- undo the writes of a script that fails half way
local function amount_problem(key, name)
  local v = redis.call('HMGET', key, name, dust(name))
  if v[1] and not string.match(v[1], '^%-?%d+$') then
    return key .. ' ' .. name .. ' is not an integer: ' .. v[1]
  end
  if v[2] and not (string.match(v[2], '^%d+$') and #v[2] <= 9) then
    return key .. ' ' .. dust(name) .. ' is not below a Shannon: ' .. v[2]
  end
  return nil
end
local function amounts_why(checks)
  for _, c in ipairs(checks) do
    local problem = amount_problem(c[1], c[2])
    if problem then return 'BADAMOUNT ' .. problem end
  end
  return nil
end
local function amounts_problem(checks)
  local why = amounts_why(checks)
  if why then return redis.error_reply(why) end
  return nil
end
-- The batch scripts' way, in fewer calls: two fields of a hash and their dust read at
-- once and checked, {{shannon, dust}, {shannon, dust}}; or nil and why not.
local function two_held(key, a_name, b_name)
  local names = {a_name, dust(a_name), b_name, dust(b_name)}
  local v = redis.call('HMGET', key, unpack(names))
  for i = 1, 4, 2 do
    if v[i] and not string.match(v[i], '^%-?%d+$') then
      return nil, 'BADAMOUNT ' .. key .. ' ' .. names[i] .. ' is not an integer: ' .. v[i]
    end
    local d = v[i + 1]
    if d and not (string.match(d, '^%d+$') and #d <= 9) then
      return nil, 'BADAMOUNT ' .. key .. ' ' .. names[i + 1] .. ' is not below a Shannon: ' .. d
    end
  end
  return {{tonumber(v[1] or '0'), tonumber(v[2] or '0')}, {tonumber(v[3] or '0'), tonumber(v[4] or '0')}}
end
-- An amount moved from one field of a hash to another, which hold ``have`` (as two_held
-- read them), carrying between Shannon and dust; what they hold after it. Lua's doubles
-- add integers exactly below 2^53: with every Shannon figure below 2^52 the new ones are
-- written in one HSET, else Redis adds them (HINCRBY, int64).
local EXACT = 2 ^ 52
local function shift(key, from, to, have, a)
  local d_from, d_to = have[1][2] - a[2], have[2][2] + a[2]
  local c_from, c_to = math.floor(d_from / SHANNON), math.floor(d_to / SHANNON)
  d_from, d_to = d_from - c_from * SHANNON, d_to - c_to * SHANNON
  local s_from, s_to = c_from - a[1], a[1] + c_to
  local f, t = have[1][1], have[2][1]
  if math.abs(f) < EXACT and math.abs(t) < EXACT and math.abs(s_from) < EXACT and s_to < EXACT then
    redis.call(
      'HSET', key,
      from, string.format('%d', f + s_from), dust(from), string.format('%d', d_from),
      to, string.format('%d', t + s_to), dust(to), string.format('%d', d_to)
    )
  else
    redis.call('HINCRBY', key, from, string.format('%d', s_from))
    redis.call('HINCRBY', key, to, string.format('%d', s_to))
    redis.call('HSET', key, dust(from), string.format('%d', d_from), dust(to), string.format('%d', d_to))
  end
  return {{f + s_from, d_from}, {t + s_to, d_to}}
end
-- The amounts a batch moves in a hash every payout of it moves in too (finances), summed
-- as they come and moved at once: one write of that hash a batch, not one a payout. A sum
-- stays exact: one that would pass 2^52 Shannon is moved first (add_to false) and the sum
-- starts again from the amount, which an empty sum always takes (shift moves one past
-- 2^52 as before); the dust of a batch sums far below 2^52.
local function batch_sum() return {0, 0} end
local function add_to(sum, a)
  if sum[1] ~= 0 and sum[1] + a[1] >= EXACT then return false end
  sum[1], sum[2] = sum[1] + a[1], sum[2] + a[2]
  return true
end
-- The nonces in use: a sorted set beside the journal and the unconfirmed payouts,
-- kept by the scripts that add and remove their entries, so that the check of a new
-- nonce is one lookup, not a decode of every entry (the unconfirmed payouts grow by
-- one a payout). Every score is 0 and the members sort as text: '<nonce, 20
-- digits>:j:<login>' for a journal entry, '<nonce>:u:<tx hash>' for an unconfirmed
-- payout, and BUILT, below every digit, once the index holds every entry.
local BUILT = '-built'
local function nonce_member(nonce, kind, id)
  return string.format('%020.0f', nonce) .. ':' .. kind .. ':' .. id
end
local function entry_nonce(text)
  local ok, e = pcall(cjson.decode, text)
  if ok and type(e) == 'table' then return tonumber(e.nonce) end
  return nil
end
-- A deployment from before the index (or an index deleted): built once from the hashes.
local function index_nonces(index, journal, unconfirmed)
  if redis.call('EXISTS', index) == 1 then return end
  for _, hash in ipairs({{journal, 'j'}, {unconfirmed, 'u'}}) do
    local flat = redis.call('HGETALL', hash[1])
    for i = 1, #flat, 2 do
      local nonce = entry_nonce(flat[i + 1])
      if nonce then redis.call('ZADD', index, 0, nonce_member(nonce, hash[2], flat[i])) end
    end
  end
  redis.call('ZADD', index, 0, BUILT)
end
-- The highest nonce of an entry still there, -1 if none. A member whose entry is gone
-- (an operator's HDEL of a payout settled by hand) no longer holds its nonce: dropped.
local function highest_nonce(index, journal, unconfirmed)
  while true do
    local top = redis.call('ZREVRANGEBYLEX', index, '+', '[0', 'LIMIT', 0, 1)[1]
    if not top then return -1 end
    local digits, kind, id = string.match(top, '^(%d+):([ju]):(.*)$')
    local text = digits and redis.call('HGET', kind == 'j' and journal or unconfirmed, id)
    if text and entry_nonce(text) == tonumber(digits) then return tonumber(digits) end
    redis.call('ZREM', index, top)
  end
end
""",
    ]
)

# ARGV[1] the run's token, ARGV[2] the lock's new timeout in ms (0: left as it is). The
# scripts that check the lock start its timeout again, so that a run writing batch after
# batch keeps its lock without a round trip of its own.
_LOCKED = (
    still_held("payout")
    + """
if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
"""
)


# Replies that would be long arrays of strings come as one JSON text: txredisapi reads
# each string of an array in a reactor turn of its own, tens of thousands of turns for a
# pool's ten thousand logins.
_JSON_ARRAY = "local function json_array(t) if #t == 0 then return '[]' end return cjson.encode(t) end\n"

# ARGV: cursor, coin, count. One SCAN step over miners:*: the next cursor and, flat in
# a JSON array, each hash's login, balance and balance dust.
_SCAN = (
    _PRELUDE
    + _JSON_ARRAY
    + """
local prefix = miner_key(ARGV[2], '')
local step = redis.call('SCAN', ARGV[1], 'MATCH', prefix .. '*', 'COUNT', ARGV[3])
local found = {}
for _, key in ipairs(step[2]) do
  if redis.call('TYPE', key)['ok'] == 'hash' then
    local v = redis.call('HMGET', key, BALANCE, dust(BALANCE))
    found[#found + 1] = string.sub(key, #prefix + 1)
    found[#found + 1] = v[1] or '0'
    found[#found + 1] = v[2] or '0'
  end
end
return {step[1], json_array(found)}
"""
)

# KEYS: a hash. Its fields and values, flat in a JSON array.
_HGETALL = _JSON_ARRAY + "return json_array(redis.call('HGETALL', KEYS[1]))"

# Each script takes a batch of payouts as one JSON array, each payout an array of strings
# (numbers too: cjson would read them as doubles), after the keys shared by the batch; the
# keys of each payout's login are built in the script from the coin and the login
# (nomp.store.oepschema's templates made Lua), as _SCAN builds them. One argument for the
# batch, not several a payout: txredisapi spends more on each argument it sends than the
# script on it, and redis-server parses each one. For the same reason what a script says of
# each payout comes as one string, a letter a payout: y done, n not (letters: a client that
# reads numbers would turn digits into an integer).

# KEYS: lock, journal, unconfirmed, finances, payments:pending, aside, nonces. ARGV: token,
# lock ms, the payouts: [login, entry JSON, amount's Shannon, its dust, nonce, now] each, the
# coin (each payout's miners:<login> is built here from it). The payouts are reserved in
# order, each checked before its writes (each payout's writes whole), up to the first that
# cannot be: {reserved} when all were, else {reserved, why}. The nonce is checked against the
# index for the first; each next must be above the one before it.
_RESERVE = (
    _LOCKED
    + _PRELUDE
    + """
index_nonces(KEYS[7], KEYS[2], KEYS[3])
local finances, why = two_held(KEYS[4], BALANCE, PENDING)
if not finances then return {0, why} end
local reserved, above = 0, highest_nonce(KEYS[7], KEYS[2], KEYS[3])
local moved = batch_sum()
local function move_finances()
  if moved[1] ~= 0 or moved[2] ~= 0 then
    finances, moved = shift(KEYS[4], BALANCE, PENDING, finances, moved), batch_sum()
  end
end
for _, payout in ipairs(cjson.decode(ARGV[3])) do
  local login, entry, whole, part, nonce_text, now = unpack(payout)
  local miner = miner_key(ARGV[4], login)
  local nonce = tonumber(nonce_text)
  local a = amount(whole, part)
  local have
  if redis.call('HEXISTS', KEYS[2], login) == 1 then
    why = 'JOURNALOPEN a payout to ' .. login .. ' is open already'
  elseif redis.call('HEXISTS', KEYS[6], login) == 1 then
    why = 'ASIDE payouts to ' .. login .. ' are set aside'
  elseif above >= nonce then
    why = 'NONCE nonce ' .. nonce_text .. ' is not above every payout known'
  else
    have, why = two_held(miner, BALANCE, PENDING)
    if have and not at_least(have[1], a) then
      why = 'NOFUNDS the balance of ' .. login .. ' is below its payout'
    end
  end
  if why then
    move_finances()
    return {reserved, why}
  end
  shift(miner, BALANCE, PENDING, have, a)
  if not add_to(moved, a) then
    move_finances()
    add_to(moved, a)
  end
  redis.call('ZADD', KEYS[5], now, pending_member(login, whole))
  redis.call('HSET', KEYS[2], login, entry)
  redis.call('ZADD', KEYS[7], 0, nonce_member(nonce, 'j', login))
  reserved, above = reserved + 1, nonce
end
move_finances()
return {reserved}
"""
)

# KEYS: lock, journal. ARGV: token, lock ms, the payouts: [login, nonce, the signed entry
# JSON] each. Per payout y when recorded, n when its entry is no longer the reserved one.
_SIGNED = (
    _LOCKED
    + """
local recorded = {}
for n, payout in ipairs(cjson.decode(ARGV[3])) do
  local login, nonce, signed = unpack(payout)
  local open = redis.call('HGET', KEYS[2], login)
  recorded[n] = 'n'
  if open then
    local entry = cjson.decode(open)
    local unsigned = entry.tx_hash == nil or entry.tx_hash == cjson.null
    if tostring(entry.nonce) == nonce and unsigned then
      redis.call('HSET', KEYS[2], login, signed)
      recorded[n] = 'y'
    end
  end
end
return table.concat(recorded)
"""
)

# KEYS: journal, finances, payments:pending, payments:all, unconfirmed, nonces, lock. ARGV:
# now, the payouts: [login, tx hash, amount's Shannon, its dust, unconfirmed JSON] each, a
# token, the lock's new timeout in ms (0: left as it is), the coin (each payout's
# miners:<login> and payments:<login> are built here from it). Per payout y when recorded, n
# when its entry is not open with that transaction (recorded already). Every amount is
# checked before the first write. The record does not need the lock (it records what the node
# took, whoever does it), but keeps it while the token holds it: with the next batch reserved
# ahead, it is the one script of a run's between a batch's signed record and the next's.
_PAID = (
    _PRELUDE
    + """
if ARGV[4] ~= '0' and redis.call('GET', KEYS[7]) == ARGV[3] then redis.call('PEXPIRE', KEYS[7], ARGV[4]) end
local finances, why = two_held(KEYS[2], PENDING, PAID)
if not finances then return redis.error_reply(why) end
local payouts = cjson.decode(ARGV[2])
local open, held_by = {}, {}
for n, payout in ipairs(payouts) do
  local text = redis.call('HGET', KEYS[1], payout[1])
  local entry = text and cjson.decode(text)
  if entry and entry.tx_hash == payout[2] then
    local have
    have, why = two_held(miner_key(ARGV[5], payout[1]), PENDING, PAID)
    if not have then return redis.error_reply(why) end
    open[n], held_by[n] = entry, have
  end
end
index_nonces(KEYS[6], KEYS[1], KEYS[5])
local recorded, done = {}, {}
local moved = batch_sum()
local function move_finances()
  if moved[1] ~= 0 or moved[2] ~= 0 then
    finances, moved = shift(KEYS[2], PENDING, PAID, finances, moved), batch_sum()
  end
end
for n, payout in ipairs(payouts) do
  local login, tx_hash, whole, part, watched = unpack(payout)
  local entry = open[n]
  -- a login twice in one batch (never sent so) is recorded once
  if entry and not done[login] then
    local a = amount(whole, part)
    shift(miner_key(ARGV[5], login), PENDING, PAID, held_by[n], a)
    if not add_to(moved, a) then
      move_finances()
      add_to(moved, a)
    end
    redis.call('ZREM', KEYS[3], pending_member(login, whole))
    redis.call('ZADD', KEYS[4], ARGV[1], payment_member(tx_hash, login, whole))
    redis.call('ZADD', login_payments_key(ARGV[5], login), ARGV[1], login_payment_member(tx_hash, whole))
    redis.call('HSET', KEYS[5], tx_hash, watched)
    redis.call('HDEL', KEYS[1], login)
    local nonce = tonumber(entry.nonce)
    redis.call('ZREM', KEYS[6], nonce_member(nonce, 'j', login))
    redis.call('ZADD', KEYS[6], 0, nonce_member(nonce, 'u', tx_hash))
    recorded[n], done[login] = 'y', true
  else
    recorded[n] = 'n'
  end
end
move_finances()
return table.concat(recorded)
"""
)

# KEYS: lock, journal, finances, payments:pending, unconfirmed, nonces. ARGV: token, lock ms,
# the payouts: [login, nonce, amount's Shannon, its dust] each, the coin (each payout's
# miners:<login> is built here from it). Per payout y when given back, n when its entry is
# not open at that nonce. Every amount is checked before the first write.
_GIVE_BACK = (
    _LOCKED
    + _PRELUDE
    + """
local finances, why = two_held(KEYS[3], PENDING, BALANCE)
if not finances then return redis.error_reply(why) end
local payouts = cjson.decode(ARGV[3])
local open = {}
for n, payout in ipairs(payouts) do
  local text = redis.call('HGET', KEYS[2], payout[1])
  if text and tostring(cjson.decode(text).nonce) == payout[2] then
    local have
    have, why = two_held(miner_key(ARGV[4], payout[1]), PENDING, BALANCE)
    if not have then return redis.error_reply(why) end
    open[n] = have
  end
end
index_nonces(KEYS[6], KEYS[2], KEYS[5])
local given, done = {}, {}
for n, payout in ipairs(payouts) do
  local login, nonce, whole, part = unpack(payout)
  if open[n] and not done[login] then
    local a = amount(whole, part)
    shift(miner_key(ARGV[4], login), PENDING, BALANCE, open[n], a)
    finances = shift(KEYS[3], PENDING, BALANCE, finances, a)
    redis.call('ZREM', KEYS[4], pending_member(login, whole))
    redis.call('HDEL', KEYS[2], login)
    redis.call('ZREM', KEYS[6], nonce_member(tonumber(nonce), 'j', login))
    given[n], done[login] = 'y', true
  else
    given[n] = 'n'
  end
end
return table.concat(given)
"""
)

# KEYS: unconfirmed, journal, nonces. ARGV: the tx hashes, a JSON array. Per payout y when
# it was watched, else n.
_MINED = (
    _PRELUDE
    + """
index_nonces(KEYS[3], KEYS[2], KEYS[1])
local dropped = {}
for i, tx_hash in ipairs(cjson.decode(ARGV[1])) do
  local payout = redis.call('HGET', KEYS[1], tx_hash)
  dropped[i] = 'n'
  if payout then
    redis.call('HDEL', KEYS[1], tx_hash)
    local nonce = entry_nonce(payout)
    if nonce then redis.call('ZREM', KEYS[3], nonce_member(nonce, 'u', tx_hash)) end
    dropped[i] = 'y'
  end
end
return table.concat(dropped)
"""
)

# KEYS: unconfirmed, miner, finances, payments:all, payments:<login>, aside, journal, nonces.
# ARGV: tx hash, login, amount's Shannon (as recorded), the amount's Shannon, its dust, why.
_FAILED = (
    _PRELUDE
    + """
local payout = redis.call('HGET', KEYS[1], ARGV[1])
if not payout then return 0 end
local bad = amounts_problem({{KEYS[2], PAID}, {KEYS[2], BALANCE}, {KEYS[3], PAID}, {KEYS[3], BALANCE}})
if bad then return bad end
index_nonces(KEYS[8], KEYS[7], KEYS[1])
redis.call('HDEL', KEYS[1], ARGV[1])
local nonce = entry_nonce(payout)
if nonce then redis.call('ZREM', KEYS[8], nonce_member(nonce, 'u', ARGV[1])) end
local a = amount(ARGV[4], ARGV[5])
transfer(KEYS[2], PAID, BALANCE, a)
transfer(KEYS[3], PAID, BALANCE, a)
redis.call('ZREM', KEYS[4], payment_member(ARGV[1], ARGV[2], ARGV[3]))
redis.call('ZREM', KEYS[5], login_payment_member(ARGV[1], ARGV[3]))
redis.call('HSET', KEYS[6], ARGV[2], ARGV[6])
return 1
"""
)


# -- records ----------------------------------------------------------------------------

# The records' JSON, keys sorted: one encoder made once (json.dumps makes one a call when
# given any option). The three records a payout writes are written out by hand, each
# field as this encoder writes it (the tests hold them to it): building a dict a record
# for the encoder to sort and walk costs more than the rest of the record's way.
_RECORD_JSON = json.JSONEncoder(sort_keys=True)
_string = json.encoder.encode_basestring_ascii  # a str as the encoder writes it (ensure_ascii)


def _text(value: str | None) -> str:
    return "null" if value is None else _string(value)


def _number(value: float) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return float.__repr__(value)
    return _RECORD_JSON.encode(value)


@functools.lru_cache(maxsize=64)  # one pricing a run, for all its payouts
def _pricing_text(pricing: Pricing) -> str:
    return _RECORD_JSON.encode(pricing_to_json(pricing))


def pricing_to_json(pricing: Pricing) -> dict[str, str]:
    # Integers as strings: Lua's cjson would read them as doubles.
    if isinstance(pricing, LegacyPricing):
        return {"type": "legacy", "gas_price": str(pricing.gas_price), "gas": str(pricing.gas_limit)}
    return {
        "type": "dynamic",
        "max_fee": str(pricing.max_fee_per_gas),
        "tip": str(pricing.max_priority_fee_per_gas),
        "gas": str(pricing.gas_limit),
    }


def pricing_from_json(data: Mapping[str, Any]) -> Pricing:
    if data["type"] == "legacy":
        return LegacyPricing(int(data["gas_price"]), int(data["gas"]))
    if data["type"] == "dynamic":
        return DynamicPricing(int(data["max_fee"]), int(data["tip"]), int(data["gas"]))
    raise ValueError(f"unknown pricing {data['type']!r}")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A payout between its debit and its record.

    ``amount`` is what left the login's balance, ``value`` what the transfer
    carries (``amount`` less the fee's ceiling when the miners pay it). The
    pricing is fixed when the entry is written, so signing it again (after a
    crash before its hash was recorded) gives the same transaction.
    ``state``: "reserved" (no transaction yet) or "signed" (``tx_hash`` and
    ``raw`` recorded: it may have been sent).
    """

    login: str
    amount: int
    value: int
    nonce: int
    pricing: Pricing
    created: float  # unix s
    state: Literal["reserved", "signed"] = "reserved"
    tx_hash: str | None = None
    raw: str | None = None  # 0x hex, as eth_sendRawTransaction takes it

    @property
    def max_cost(self) -> int:
        """The most its gas can cost, in wei."""
        return self.pricing.gas_limit * self.pricing.max_price

    def signed(self, tx_hash: str, raw: str) -> JournalEntry:
        return JournalEntry(
            self.login,
            self.amount,
            self.value,
            self.nonce,
            self.pricing,
            self.created,
            "signed",
            tx_hash,
            raw,
        )

    def to_json(self) -> str:
        # Keys sorted: amount, created, login, nonce, pricing, raw, state, tx_hash, value.
        return (
            f'{{"amount": "{self.amount:d}", "created": {_number(self.created)}, '
            f'"login": {_string(self.login)}, "nonce": {self.nonce:d}, '
            f'"pricing": {_pricing_text(self.pricing)}, "raw": {_text(self.raw)}, '
            f'"state": {_string(self.state)}, "tx_hash": {_text(self.tx_hash)}, "value": "{self.value:d}"}}'
        )

    @classmethod
    def from_json(cls, text: str) -> JournalEntry:
        data = json.loads(text)
        state = data["state"]
        if state not in ("reserved", "signed"):
            raise ValueError(f"unknown journal state {state!r}")
        return cls(
            login=str(data["login"]),
            amount=int(data["amount"]),
            value=int(data["value"]),
            nonce=int(data["nonce"]),
            pricing=pricing_from_json(data["pricing"]),
            created=float(data["created"]),
            state=state,
            tx_hash=data.get("tx_hash") or None,
            raw=data.get("raw") or None,
        )


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """A payout recorded paid whose transaction is not mined deep enough yet."""

    tx_hash: str
    login: str
    amount: int
    value: int
    nonce: int
    max_cost: int  # the most its gas can cost
    raw: str
    recorded: float  # unix s

    @classmethod
    def of(cls, entry: JournalEntry, recorded: float) -> Unconfirmed:
        assert entry.tx_hash is not None and entry.raw is not None
        return cls(
            entry.tx_hash,
            entry.login,
            entry.amount,
            entry.value,
            entry.nonce,
            entry.max_cost,
            entry.raw,
            recorded,
        )

    def to_json(self) -> str:
        # Keys sorted: amount, login, max_cost, nonce, raw, recorded, value.
        return (
            f'{{"amount": "{self.amount:d}", "login": {_string(self.login)}, '
            f'"max_cost": "{self.max_cost:d}", "nonce": {self.nonce:d}, "raw": {_string(self.raw)}, '
            f'"recorded": {_number(self.recorded)}, "value": "{self.value:d}"}}'
        )

    @classmethod
    def from_json(cls, tx_hash: str, text: str) -> Unconfirmed:
        data = json.loads(text)
        return cls(
            tx_hash,
            str(data["login"]),
            int(data["amount"]),
            int(data["value"]),
            int(data["nonce"]),
            int(data["max_cost"]),
            str(data["raw"]),
            float(data["recorded"]),
        )


def _parts(wei: int) -> list[str]:
    whole, dust = split_wei(wei)
    return [str(whole), str(dust)]


def _flags(letters: str) -> list[bool]:
    """A batch script's word on each payout, "y" done or "n" not, as booleans."""
    return [c == "y" for c in letters]


def _millis(timeout: float | None) -> int:
    """A lock timeout as the scripts take it: milliseconds, 0 to leave the lock's as it is."""
    return 0 if timeout is None else max(1, int(timeout * 1000))


@dataclass(frozen=True, slots=True)
class Reserved:
    """What ``reserve_batch`` did: the first ``count`` entries reserved, and why the next
    one was not (None when every one was)."""

    count: int
    refusal: str | None


def _hash(flat: list[Any] | None) -> dict[str, str]:
    flat = flat or []
    return dict(zip(flat[::2], flat[1::2], strict=True))


class EthPayLedger:
    """The payout keys of one Ethereum-family pool and their scripts.

    The run lock is the unlocker's (``unlocker_lock``, its tokens from
    ``unlocker_fence``, taken and given back as nomp.payments.ethledger
    does): a payout run and an unlocker run of a pool never overlap, so a
    run pays balances as the last unlocker run left them.
    """

    def __init__(self, redis: RedisClient, keys: OepKeys, journal_replicas: int | None = None) -> None:
        self._redis = redis
        self.keys = keys
        self.lock = keys.unlocker_lock  # the unlocker's: the two never run at once
        self._lock = FencedLock(redis, keys.unlocker_lock, keys.unlocker_fence)
        # How many Redis replicas must have the lock and each signed journal entry
        # before the run goes on (see acquire and record_signed); None: as
        # config.yaml's redis.journal_replicas says, through RedisService's client.
        self._journal_writes = JournalWrites(redis, journal_replicas)
        # The index of the nonces the journal and the unconfirmed payouts hold (the
        # scripts' nonce_member), beside them under the payer's own prefix.
        self.nonces = f"{keys.coin}:payouts:nonces"

    async def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return await self._redis.eval(script, keys, args)

    # -- the lock --

    async def acquire(self, timeout: float) -> int | None:
        """The lock's new fencing token, or None while another run holds it.

        With journal replicas, only once they have the lock, and so every
        journal entry written before it: a run sends again the entries it finds
        open, and a failover that lost one after that would leave its balance to
        be paid again. NotReplicated otherwise, the lock given back.
        """
        if not self._journal_writes.replicas:
            return await self._lock.acquire(timeout)
        keys = [self._lock.lock, self._lock.fence]
        try:
            token = await self._journal_writes.eval(
                ACQUIRE, keys, [int(timeout * 1000)], what="the payout run's lock (and the journal before it)"
            )
        except NotReplicated as e:
            if not e.result:
                return None  # another run holds it: nothing was written
            await self._lock.release(int(e.result))
            raise
        return int(token) or None

    async def extend(self, token: int, timeout: float) -> bool:
        """Whether the lock is still ours (its timeout started again)."""
        return await self._lock.extend(token, timeout)

    async def release(self, token: int) -> None:
        await self._lock.release(token)

    # -- reading --

    async def hash(self, key: str) -> dict[str, str]:
        return _hash(json.loads(await self._eval(_HGETALL, [key], [])))

    async def balances(self) -> dict[str, int]:
        """Every login's balance in wei (SCAN over ``miners:*``, as OEP's payer reads them)."""
        found: dict[str, int] = {}
        cursor = "0"
        while True:
            cursor, text = await self._eval(_SCAN, [], [cursor, self.keys.coin, SCAN_COUNT])
            flat = json.loads(text)
            for i in range(0, len(flat), 3):
                try:
                    found[flat[i]] = wei_of(flat[i + 1], flat[i + 2])
                except ValueError:
                    continue  # not OEP's numbers: not a balance the payer can pay
            if str(cursor) == "0":
                return found

    async def miner(self, login: str) -> dict[str, str]:
        return await self.hash(self.keys.miner(login))

    async def journal(self) -> list[JournalEntry]:
        """The open payouts, lowest nonce first."""
        entries = [JournalEntry.from_json(v) for v in (await self.hash(self.keys.payouts_journal)).values()]
        return sorted(entries, key=lambda e: e.nonce)

    async def unconfirmed(self) -> list[Unconfirmed]:
        """The payouts recorded and not seen mined, lowest nonce first."""
        stored = await self.hash(self.keys.payouts_unconfirmed)
        return sorted((Unconfirmed.from_json(h, v) for h, v in stored.items()), key=lambda u: u.nonce)

    async def aside(self) -> dict[str, str]:
        return await self.hash(self.keys.payouts_aside)

    async def oep_lock(self) -> str | None:
        """OEP's own payer's lock, if one holds it."""
        value = await self._eval("return redis.call('GET', KEYS[1])", [self.keys.payments_lock], [])
        return str(value) if value else None

    async def pending_members(self) -> list[str]:
        return list(
            await self._eval("return redis.call('ZRANGE', KEYS[1], 0, -1)", [self.keys.payments_pending], [])
            or []
        )

    # -- writing --

    async def reserve_batch(
        self, token: int, entries: Sequence[JournalEntry], lock_timeout: float | None = None
    ) -> Reserved:
        """For each entry in order, in one script: its amount moved from balance to pending
        and the entry opened in the journal, at once; up to the first that cannot be, whose
        refusal says why (JOURNALOPEN, ASIDE, NONCE, NOFUNDS or BADAMOUNT), nothing of it
        written. ``lock_timeout``: the lock's timeout started again.

        Raises txredisapi's ResponseError (NOLOCK) when the lock is no longer the run's:
        nothing is written then.
        """
        if not entries:
            return Reserved(0, None)
        for entry in entries:
            # The scripts add an amount's Shannon as a Lua double: exact below 2^53.
            if shannon(entry.amount) >= 2**53:
                raise ValueError(
                    f"the payout of {entry.amount} wei to {entry.login} is 2^53 Shannon or more, "
                    "past what the payout scripts add exactly"
                )
        keys = self.keys
        payouts = [[e.login, e.to_json(), *_parts(e.amount), str(e.nonce), repr(e.created)] for e in entries]
        args = [token, _millis(lock_timeout), json.dumps(payouts), keys.coin]
        reply = await self._eval(
            _RESERVE,
            [
                self.lock,
                keys.payouts_journal,
                keys.payouts_unconfirmed,
                keys.finances,
                keys.payments_pending,
                keys.payouts_aside,
                self.nonces,
            ],
            args,
        )
        return Reserved(int(reply[0]), str(reply[1]) if len(reply) > 1 else None)

    async def reserve(self, token: int, entry: JournalEntry) -> None:
        """``reserve_batch`` of one entry, its refusal raised as a ResponseError."""
        reserved = await self.reserve_batch(token, [entry])
        if reserved.refusal is not None:
            raise ResponseError(reserved.refusal)

    async def record_signed_batch(
        self, token: int, entries: Sequence[JournalEntry], lock_timeout: float | None = None
    ) -> list[bool]:
        """Keep each entry's transaction (hash and raw) before it is sent, in one script;
        False for an entry no longer the reserved one. With journal replicas, only once they
        have them (and the reservations before them); NotReplicated otherwise: the run stops
        before sending."""
        if not entries:
            return []
        assert all(e.state == "signed" for e in entries)
        payouts = [[e.login, str(e.nonce), e.to_json()] for e in entries]
        args = [token, _millis(lock_timeout), json.dumps(payouts)]
        what = f"the signed journal entry of the payout to {entries[0].login}"
        if len(entries) > 1:
            what = f"the signed journal entries of {len(entries)} payouts, from {entries[0].login}"
        done = await self._journal_writes.eval(
            _SIGNED, [self.lock, self.keys.payouts_journal], args, what=what
        )
        return _flags(done)

    async def record_signed(self, token: int, entry: JournalEntry) -> bool:
        [done] = await self.record_signed_batch(token, [entry])
        return done

    async def record_paid_batch(
        self,
        entries: Sequence[JournalEntry],
        now: float,
        token: int | None = None,
        lock_timeout: float | None = None,
    ) -> list[bool]:
        """OEP's WritePayment of each entry, in one script: pending to paid, the payment in
        payments:all and payments:<login>, the entry closed and watched until mined; False
        for one recorded already. With ``token`` and ``lock_timeout``, the lock's timeout
        starts again if the token still holds it (the record is made either way)."""
        if not entries:
            return []
        keys = self.keys
        payouts: list[list[str]] = []
        for entry in entries:
            assert entry.tx_hash is not None
            watched = Unconfirmed.of(entry, now).to_json()
            payouts.append([entry.login, entry.tx_hash, *_parts(entry.amount), watched])
        keep = 0 if token is None else _millis(lock_timeout)
        args = [repr(now), json.dumps(payouts), "" if token is None else token, keep, keys.coin]
        done = await self._eval(
            _PAID,
            [
                keys.payouts_journal,
                keys.finances,
                keys.payments_pending,
                keys.payments_all,
                keys.payouts_unconfirmed,
                self.nonces,
                self.lock,
            ],
            args,
        )
        return _flags(done)

    async def record_paid(self, entry: JournalEntry, now: float) -> bool:
        [done] = await self.record_paid_batch([entry], now)
        return done

    async def give_back_batch(
        self, token: int, entries: Sequence[JournalEntry], lock_timeout: float | None = None
    ) -> list[bool]:
        """OEP's RollbackBalance of each entry, in one script: pending back to balance, the
        entry closed; False for one not open at its nonce. Only for payouts known never to
        have reached any node."""
        if not entries:
            return []
        keys = self.keys
        payouts = [[e.login, str(e.nonce), *_parts(e.amount)] for e in entries]
        args = [token, _millis(lock_timeout), json.dumps(payouts), keys.coin]
        done = await self._eval(
            _GIVE_BACK,
            [
                self.lock,
                keys.payouts_journal,
                keys.finances,
                keys.payments_pending,
                keys.payouts_unconfirmed,
                self.nonces,
            ],
            args,
        )
        return _flags(done)

    async def give_back(self, token: int, entry: JournalEntry) -> bool:
        [done] = await self.give_back_batch(token, [entry])
        return done

    async def mined_batch(self, payouts: Sequence[Unconfirmed]) -> list[bool]:
        """Each payout mined deep enough no longer watched, in one script; False for one
        that was not watched."""
        if not payouts:
            return []
        keys = [self.keys.payouts_unconfirmed, self.keys.payouts_journal, self.nonces]
        hashes = json.dumps([p.tx_hash for p in payouts])
        return _flags(await self._eval(_MINED, keys, [hashes]))

    async def mined(self, payout: Unconfirmed) -> bool:
        [done] = await self.mined_batch([payout])
        return done

    async def failed(self, payout: Unconfirmed, why: str) -> bool:
        """A payout the chain ran and reverted: its amount back to the balance, its payment
        records removed, the login set aside (a transfer to it fails).

        The whole amount goes back, the fee's ceiling too when the miners pay it: the
        login's paid must stay the sum of its recorded payouts, and the reverted transfer's
        gas is the pool's."""
        keys = self.keys
        done = await self._eval(
            _FAILED,
            [
                keys.payouts_unconfirmed,
                keys.miner(payout.login),
                keys.finances,
                keys.payments_all,
                keys.payments_of(payout.login),
                keys.payouts_aside,
                keys.payouts_journal,
                self.nonces,
            ],
            [payout.tx_hash, payout.login, shannon(payout.amount), *_parts(payout.amount), why],
        )
        return bool(done)
