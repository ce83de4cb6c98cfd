"""PaymentLedger: every payment write to Redis, each one atomic Lua script.

The payment run holds a lock whose value is a fencing token (a number
that only grows); each crediting script first checks that the lock still
holds that token, so a run that lost its lock (it stalled past the
timeout and another took over) can no longer write. The payout journal is
its own guard: a batch is recorded or cancelled only by the script that
finds its id in the journal and deletes it, so it happens once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nomp.payments.split import RewardSplit
from nomp.store.client import JournalWrites, RedisClient
from nomp.store.fencing import FencedLock, still_held
from nomp.store.schema import LUA_PRELUDE, PoolKeys, decode_pending_member

_LOCKED = still_held("payment")

# Take ``amount`` from a hash field, dropping the field when it reaches zero;
# and take back a block's immature credit (address/amount pairs, flat) from
# the immature hash and its total.
_DEBIT = """
local function debit(key, name, amount)
  if redis.call('HINCRBY', key, name, -tonumber(amount)) == 0 then redis.call('HDEL', key, name) end
end
local function undo_immature(immature, totals, credit)
  local miners = 0
  for i = 1, #credit, 2 do
    debit(immature, credit[i], credit[i + 1])
    miners = miners + tonumber(credit[i + 1])
  end
  redis.call('HINCRBY', totals, 'immature', -miners)
end
"""


# KEYS: blocksPending. ARGV: coin.
_PENDING = (
    LUA_PRELUDE
    + """
local blocks = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  blocks[#blocks + 1] = {member, redis.call('HGETALL', block_key(ARGV[1], pending_member_hash(member)))}
end
return blocks
"""
)

_HGETALL = "return redis.call('HGETALL', KEYS[1])"

# KEYS: lock, block, immature, totals. ARGV: token, split JSON, then address/amount pairs.
_CREDIT_IMMATURE = (
    _LOCKED
    + """
if redis.call('HEXISTS', KEYS[2], 'state') == 1 then return 0 end
local miners = 0
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  miners = miners + tonumber(ARGV[i + 1])
end
redis.call('HINCRBY', KEYS[4], 'immature', miners)
redis.call('HSET', KEYS[2], 'state', 'immature', 'split', ARGV[2])
return 1
"""
)

# KEYS: lock, block, immature, balances, totals, credited coinbases, pending, confirmed, orphaned.
# ARGV: token, split JSON, txid, pending member, pool's part, then address/amount pairs.
# A coinbase already credited (a side-branch copy of a paid block carries
# the same transaction) is never credited again: the block goes to orphaned.
_CREDIT_MATURE = (
    _LOCKED
    + _DEBIT
    + """
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'confirmed' or state == 'orphaned' then return 0 end
local credit = {}  -- not unpack(): Lua's stack takes a few thousand values at most
for i = 6, #ARGV do credit[#credit + 1] = ARGV[i] end
if state == 'immature' then undo_immature(KEYS[3], KEYS[5], credit) end
if redis.call('SADD', KEYS[6], ARGV[3]) == 0 then
  redis.call('SMOVE', KEYS[7], KEYS[9], ARGV[4])
  redis.call('HSET', KEYS[2], 'state', 'orphaned', 'why', 'its coinbase was already credited')
  return 2
end
local miners = 0
for i = 1, #credit, 2 do
  redis.call('HINCRBY', KEYS[4], credit[i], credit[i + 1])
  miners = miners + tonumber(credit[i + 1])
end
redis.call('HINCRBY', KEYS[5], 'credited', miners)
redis.call('HINCRBY', KEYS[5], 'kept', ARGV[5])
redis.call('SMOVE', KEYS[7], KEYS[8], ARGV[4])
redis.call('HSET', KEYS[2], 'state', 'confirmed', 'split', ARGV[2])
return 1
"""
)

# KEYS: lock, block, immature, totals, pending, orphaned, round, roundCurrent.
# ARGV: token, pending member, fold (1: the round's shares go to the current round), why.
_ORPHAN = (
    _LOCKED
    + _DEBIT
    + """
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'confirmed' or state == 'orphaned' then return 0 end
if state == 'immature' then
  local credit = {}
  for address, amount in pairs(cjson.decode(redis.call('HGET', KEYS[2], 'split')).miners) do
    credit[#credit + 1] = address
    credit[#credit + 1] = amount
  end
  undo_immature(KEYS[3], KEYS[4], credit)
end
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[7]) == 1 then
  local shares = redis.call('HGETALL', KEYS[7])
  for i = 1, #shares, 2 do redis.call('HINCRBYFLOAT', KEYS[8], shares[i], shares[i + 1]) end
  redis.call('DEL', KEYS[7])
end
redis.call('SMOVE', KEYS[5], KEYS[6], ARGV[2])
redis.call('HSET', KEYS[2], 'state', 'orphaned', 'why', ARGV[4])
return 1
"""
)

# KEYS: lock, journal, balances. ARGV: token, batch JSON, then address/amount pairs.
_OPEN_BATCH = (
    _LOCKED
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('BATCHOPEN a payout batch is already open')
end
for i = 3, #ARGV, 2 do
  if tonumber(redis.call('HGET', KEYS[3], ARGV[i]) or '0') < tonumber(ARGV[i + 1]) then
    return redis.error_reply('NOFUNDS balance of ' .. ARGV[i] .. ' below its payout')
  end
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
)

# KEYS: journal, balances, paid, totals, payments.
# ARGV: batch id, payment record JSON, time, transaction fee paid by the pool.
_RECORD_BATCH = (
    _DEBIT
    + """
local open = redis.call('GET', KEYS[1])
if not open then return 0 end
local batch = cjson.decode(open)
if batch.id ~= ARGV[1] then return 0 end
local total = 0
for address, amount in pairs(batch.amounts) do
  debit(KEYS[2], address, amount)
  redis.call('HINCRBY', KEYS[3], address, amount)
  total = total + tonumber(amount)
end
redis.call('HINCRBY', KEYS[4], 'paid', total)
redis.call('HINCRBY', KEYS[4], 'txfees', ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""
)

# KEYS: journal. ARGV: batch id.
_CANCEL_BATCH = """
local open = redis.call('GET', KEYS[1])
if open and cjson.decode(open).id == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""

# KEYS: lock, set aside. ARGV: token, address, why.
_SET_ASIDE = _LOCKED + "return redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])"


@dataclass(frozen=True, slots=True)
class PendingBlock:
    """A block in blocksPending, with what the ledger knows of it."""

    member: str  # the blocksPending member: "<hash>:<txid>:<height>:<worker>:<ms>"
    hash: str
    txid: str | None  # None: the pool did not learn it at submit time
    height: int
    worker: str
    round_key: str
    solo: bool
    state: str | None  # None (not credited yet), "immature"
    split: RewardSplit | None  # the immature credit already made

    @classmethod
    def parse(cls, member: str, fields: Mapping[str, str]) -> PendingBlock:
        """ValueError if ``member`` is not a blocksPending member."""
        pending = decode_pending_member(member)
        split = fields.get("split")
        return cls(
            member=member,
            hash=pending.block_hash,
            txid=pending.txid,
            height=pending.height,
            worker=pending.worker,
            round_key=fields.get("round", ""),
            solo=fields.get("solo") == "1",
            state=fields.get("state"),
            split=split_from_json(split) if split else None,
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """One payout: a sendmany to every address in ``amounts`` (satoshis)."""

    id: str
    amounts: dict[str, int]
    created: float  # unix seconds
    fee_from: str  # "pool" or "miners"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "amounts": {a: str(v) for a, v in self.amounts.items()},
                "created": self.created,
                "fee_from": self.fee_from,
                **self.extra,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Batch:
        data = json.loads(text)
        extra = {k: v for k, v in data.items() if k not in ("id", "amounts", "created", "fee_from")}
        amounts = {a: int(v) for a, v in data["amounts"].items()}
        return cls(data["id"], amounts, float(data["created"]), data["fee_from"], extra)


def split_to_json(split: RewardSplit) -> str:
    # Amounts as strings: Lua's cjson would read big numbers as doubles.
    return json.dumps(
        {
            "reward": str(split.reward),
            "pool": str(split.pool),
            "fee": str(split.fee),
            "miners": {a: str(v) for a, v in split.miners.items()},
        },
        sort_keys=True,
    )


def split_from_json(text: str) -> RewardSplit:
    data = json.loads(text)
    miners = {a: int(v) for a, v in data["miners"].items()}
    return RewardSplit(int(data["reward"]), miners, int(data["pool"]), int(data["fee"]))


def _pairs(amounts: Mapping[str, int]) -> list[str]:
    flat: list[str] = []
    for address in sorted(amounts):
        flat += [address, str(amounts[address])]
    return flat


def _hash(flat: list[Any] | None) -> dict[str, str]:
    flat = flat or []
    return dict(zip(flat[::2], flat[1::2], strict=True))


class PaymentLedger:
    """The payment keys of one pool (see PoolKeys) and their scripts.

    ``journal_replicas``: how many Redis replicas must have a batch's journal
    entry before open_batch returns (see open_batch); None: as config.yaml's
    ``redis.journal_replicas`` says, through the client RedisService gives.
    """

    def __init__(self, redis: RedisClient, keys: PoolKeys, journal_replicas: int | None = None) -> None:
        self._redis = redis
        self.keys = keys
        self._lock = FencedLock(redis, keys.payment_lock, keys.payment_fence)
        self._journal_writes = JournalWrites(redis, journal_replicas)

    async def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return await self._redis.eval(script, keys, args)

    async def acquire(self, timeout: float) -> int | None:
        """The lock's new fencing token, or None while another run holds it."""
        return await self._lock.acquire(timeout)

    async def extend(self, token: int, timeout: float) -> bool:
        """Whether the lock is still ours (its timeout started again)."""
        return await self._lock.extend(token, timeout)

    async def release(self, token: int) -> None:
        await self._lock.release(token)

    async def pending_blocks(self) -> list[PendingBlock]:
        """The blocks waiting for maturity, lowest height first."""
        rows = await self._eval(_PENDING, [self.keys.blocks_pending], [self.keys.coin])
        blocks = [PendingBlock.parse(member, _hash(fields)) for member, fields in rows or []]
        return sorted(blocks, key=lambda b: (b.height, b.member))

    async def redis_call(self, command: str, key: str, *args: str) -> Any:
        """One plain command on one key (for operator tools)."""
        return await self._eval(f"return redis.call('{command}', KEYS[1], unpack(ARGV))", [key], list(args))

    async def hash(self, key: str) -> dict[str, str]:
        return _hash(await self._eval(_HGETALL, [key], []))

    async def set_members(self, key: str) -> list[str]:
        return list(await self._eval("return redis.call('SMEMBERS', KEYS[1])", [key], []) or [])

    async def history(self) -> list[str]:
        """The payment records (JSON), oldest first."""
        return list(
            await self._eval("return redis.call('ZRANGE', KEYS[1], 0, -1)", [self.keys.payments], []) or []
        )

    async def credit_immature(self, token: int, block: PendingBlock, split: RewardSplit) -> bool:
        keys = self.keys
        done = await self._eval(
            _CREDIT_IMMATURE,
            [keys.payment_lock, keys.block(block.hash), keys.immature, keys.payment_totals],
            [token, split_to_json(split), *_pairs(split.miners)],
        )
        return bool(done)

    async def credit_mature(self, token: int, block: PendingBlock, txid: str, split: RewardSplit) -> int:
        """1: credited; 2: its coinbase was credited before (now orphaned); 0: done before."""
        keys = self.keys
        done = await self._eval(
            _CREDIT_MATURE,
            [
                keys.payment_lock,
                keys.block(block.hash),
                keys.immature,
                keys.balances,
                keys.payment_totals,
                keys.credited_coinbases,
                keys.blocks_pending,
                keys.blocks_confirmed,
                keys.blocks_orphaned,
            ],
            [token, split_to_json(split), txid, block.member, split.pool, *_pairs(split.miners)],
        )
        return int(done)

    async def orphan(self, token: int, block: PendingBlock, fold_shares: bool, why: str) -> bool:
        keys = self.keys
        done = await self._eval(
            _ORPHAN,
            [
                keys.payment_lock,
                keys.block(block.hash),
                keys.immature,
                keys.payment_totals,
                keys.blocks_pending,
                keys.blocks_orphaned,
                block.round_key or keys.round(block.height),
                keys.round_current,
            ],
            [token, block.member, "1" if fold_shares else "0", why],
        )
        return bool(done)

    async def balances(self) -> dict[str, int]:
        return {a: int(v) for a, v in (await self.hash(self.keys.balances)).items()}

    async def set_aside(self) -> dict[str, str]:
        return await self.hash(self.keys.set_aside)

    async def put_aside(self, token: int, address: str, why: str) -> None:
        await self._eval(_SET_ASIDE, [self.keys.payment_lock, self.keys.set_aside], [token, address, why])

    async def journal(self) -> Batch | None:
        text = await self._eval("return redis.call('GET', KEYS[1])", [self.keys.journal], [])
        return Batch.from_json(text) if text else None

    async def open_batch(self, token: int, batch: Batch) -> None:
        """Write the batch to the journal, before it is sent.

        With journal replicas, only once they have the entry: a failover that
        lost it after the send would leave the balances to be paid again.
        NotReplicated otherwise (the entry stays open on the primary, and a
        later run settles it): the run stops before sending.
        """
        keys = self.keys
        await self._journal_writes.eval(
            _OPEN_BATCH,
            [keys.payment_lock, keys.journal, keys.balances],
            [token, batch.to_json(), *_pairs(batch.amounts)],
            what=f"the journal entry of payout batch {batch.id}",
        )

    async def record_batch(self, batch: Batch, txid: str, pool_fee: int, miners_fee: int, now: float) -> bool:
        """Debit the batch's balances and keep it in the history; False if it was recorded already."""
        keys = self.keys
        record = json.dumps(
            {
                "id": batch.id,
                "txid": txid,
                "time": now,
                "amounts": {a: str(v) for a, v in batch.amounts.items()},
                "total": str(sum(batch.amounts.values())),
                "fee": str(pool_fee + miners_fee),
                "fee_from": batch.fee_from,
            },
            sort_keys=True,
        )
        done = await self._eval(
            _RECORD_BATCH,
            [keys.journal, keys.balances, keys.paid, keys.payment_totals, keys.payments],
            [batch.id, record, repr(now), pool_fee],
        )
        return bool(done)

    async def cancel_batch(self, batch: Batch) -> bool:
        return bool(await self._eval(_CANCEL_BATCH, [self.keys.journal], [batch.id]))
