"""EthPoolReader: one Ethereum-family pool's stats, read from open-ethereum-pool's keys.

The StatsCollector reads each Ethereum-family pool with one of these, in
the same collection as the Bitcoin-family pools, into the same PoolStats
(nomp.web.stats turns OEP's members into its records). Like the Bitcoin
reads, nothing here waits on Redis for long:

- the hashrate window is summed per worker in Lua, in chunks, so only a
  line per worker crosses the wire;
- ``blocks:matured`` and ``payments:all`` only grow (a payout the chain
  reverted is the one thing ever taken out of ``payments:all``): they are
  sent whole only when their size says something changed;
- the miners' balances are one hash per login (``miners:<login>``), which
  only a SCAN finds; they are scanned again, a step at a time, only when
  ``finances`` changed, since every script that moves a miner's amount
  (the unlocker's, the payer's, OEP's own) moves the pool's total with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nomp.config import EthPoolConfig
from nomp.store.client import RedisClient
from nomp.store.oepschema import BALANCE, PAID, OepKeys, dust_field
from nomp.web.replies import pairs, scored, text
from nomp.web.stats import (
    IMMATURE,
    Balances,
    BlockInfo,
    PaymentInfo,
    PoolStats,
    RawPoolData,
    WorkerShares,
    eth_balances,
    eth_block,
    eth_candidate,
    eth_nodes,
    eth_payment,
    pool_stats,
)

SCAN_COUNT = 500  # keys one step of the balance scan looks at
_BALANCE_FIELDS = [name for amount in (IMMATURE, BALANCE, PAID) for name in (amount, dust_field(amount))]

# KEYS: hashrate, stats, nodes, blocks:candidates, blocks:immature, blocks:matured,
#       payments:all, finances
# ARGV: the hashrate window's start and end (unix s), the score of the newest
#       payment already read ('-inf' for none), how many matured blocks are
#       held (-1 for none read)
# The members of the hashrate window are OEP's diff:login:worker:ms; the sums
# per worker go back as text (Redis would truncate Lua numbers to integers).
_READ_POOL = """
local sums, names, earliest = {}, {}, false
local offset = 0
while true do
  local rows = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES', 'LIMIT', offset, 5000)
  for i = 1, #rows, 2 do
    local difficulty, login, worker = string.match(rows[i], '^(%d+):([^:]+):([^:]+):%d+$')
    if difficulty then
      local score, diff = tonumber(rows[i + 1]), tonumber(difficulty)
      if not earliest or score < earliest then earliest = score end
      local name = login .. '.' .. worker
      local s = sums[name]
      if not s then s = {0, -1, 0}; sums[name] = s; names[#names + 1] = name end
      s[1] = s[1] + diff
      if score >= s[2] then s[2] = score; s[3] = diff end
    end
  end
  if #rows < 10000 then break end
  offset = offset + 5000
end
local shares = {}
for _, name in ipairs(names) do
  local s = sums[name]
  shares[#shares + 1] = name
  shares[#shares + 1] = string.format('%.17g %.17g %.17g', s[1], s[2], s[3])
end
local matured = redis.call('ZCARD', KEYS[6])
local matured_members = false
if tostring(matured) ~= ARGV[4] then matured_members = redis.call('ZRANGE', KEYS[6], 0, -1, 'WITHSCORES') end
return {
  shares,
  earliest and string.format('%.17g', earliest) or '',
  redis.call('HGETALL', KEYS[2]),
  redis.call('HGETALL', KEYS[3]),
  redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES'),
  redis.call('ZRANGE', KEYS[5], 0, -1, 'WITHSCORES'),
  matured,
  matured_members,
  redis.call('ZCARD', KEYS[7]),
  redis.call('ZRANGEBYSCORE', KEYS[7], ARGV[3], '+inf', 'WITHSCORES'),
  redis.call('HGETALL', KEYS[8]),
}
"""

# KEYS: payments:all. Read whole when a payout was taken out of it.
_READ_PAYMENTS = "return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')"

# ARGV: the cursor, the SCAN pattern of miners:<login> keys, the step's COUNT,
#       the length of the keys' prefix, the fields to read.
# (SCAN finds keys no caller can name beforehand, as OEP's payer finds them.)
_SCAN_MINERS = """
local step = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local found = {}
for _, key in ipairs(step[2]) do
  if redis.call('TYPE', key)['ok'] == 'hash' then
    found[#found + 1] = string.sub(key, tonumber(ARGV[4]) + 1)
    found[#found + 1] = redis.call('HMGET', key, unpack(ARGV, 5))
  end
end
return {step[1], found}
"""


def glob_escaped(prefix: str) -> str:
    """``prefix`` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in prefix)


class EthPoolReader:
    """Reads one Ethereum-family pool, keeping between reads what only grows."""

    def __init__(self, pool: EthPoolConfig) -> None:
        self.pool = pool
        self.keys = OepKeys.for_coin(pool.coin.name)
        self._solo = pool.payments.scheme == "solo"
        self._matured: dict[tuple[str, str], BlockInfo | None] = {}  # (member, score) -> block
        self._matured_count = -1  # blocks:matured's size when it was last read (-1: never)
        self._payments: dict[str, PaymentInfo | None] = {}  # member -> payment (None: not one)
        self._newest_payment = "-inf"
        self._finances: dict[str, str] | None = None  # finances as of the balances read
        self._balances = Balances()  # of the miners' hashes as last scanned

    async def read(self, client: RedisClient, now: float) -> PoolStats:
        keys = self.keys
        reply = await client.eval(
            _READ_POOL,
            [
                keys.hashrate,
                keys.stats,
                keys.nodes,
                keys.blocks_candidates,
                keys.blocks_immature,
                keys.blocks_matured,
                keys.payments_all,
                keys.finances,
            ],
            [
                repr(now - self.pool.hashrate_window),
                repr(now),
                self._newest_payment,
                self._matured_count,
            ],
        )
        (
            flat_shares,
            earliest,
            counters,
            nodes,
            candidates,
            immature,
            matured_count,
            matured,
            payment_count,
            new_payments,
            finances,
        ) = reply
        shares = {
            worker: WorkerShares(float(valid), 0.0, float(last), float(difficulty))
            for worker, sums in pairs(flat_shares).items()
            for valid, last, difficulty in [sums.split()]
        }
        if matured is not None:
            present = set(scored(matured))
            self._matured = {
                entry: self._matured[entry]
                if entry in self._matured
                else eth_block(entry[0], entry[1], matured=True, solo=self._solo)
                for entry in present
            }
            self._matured_count = int(matured_count)
        await self._read_payments(client, scored(new_payments), int(payment_count))
        fields = pairs(finances)
        if fields != self._finances:
            self._balances = eth_balances(await self._scan_miners(client))
            self._finances = fields
        found = [
            *(eth_candidate(m, s, self._solo) for m, s in scored(candidates)),
            *(eth_block(m, s, matured=False, solo=self._solo) for m, s in scored(immature)),
            *self._matured.values(),
        ]
        blocks = sorted((b for b in found if b is not None), key=lambda b: (-b.height, -b.time, b.hash or ""))
        raw = RawPoolData(
            shares,
            pairs(counters),
            pending=sum(1 for b in blocks if b.status == "pending"),
            confirmed=sum(1 for b in blocks if b.status == "confirmed"),
            orphaned=sum(1 for b in blocks if b.status == "orphaned"),
            found=tuple(blocks),
            payments=tuple(
                sorted((p for p in self._payments.values() if p is not None), key=lambda p: (-p.time, p.id))
            ),
            balances=self._balances,
            network=eth_nodes(pairs(nodes), now, self.pool.coin.block_time),
            earliest_share=float(text(earliest)) if text(earliest) else None,
        )
        return pool_stats(self.pool, raw, now)

    async def _read_payments(self, client: RedisClient, new: Sequence[tuple[str, str]], count: int) -> None:
        """Add the payments scored from the newest one read on; all of them again if that
        does not make the number Redis holds (one was taken out, or came in out of order)."""
        for member, score in new:
            self._newest_payment = score
            if member not in self._payments:
                self._payments[member] = eth_payment(member, score)
        if len(self._payments) == count:
            return
        every = scored(await client.eval(_READ_PAYMENTS, [self.keys.payments_all], []))
        self._payments = {
            m: self._payments[m] if m in self._payments else eth_payment(m, s) for m, s in every
        }
        self._newest_payment = every[-1][1] if every else "-inf"

    async def _scan_miners(self, client: RedisClient) -> dict[str, dict[str, str | None]]:
        prefix = self.keys.miner("")
        pattern = glob_escaped(prefix) + "*"
        found: dict[str, dict[str, str | None]] = {}
        cursor = "0"
        while True:
            step: list[Any] = await client.eval(
                _SCAN_MINERS, [], [cursor, pattern, SCAN_COUNT, len(prefix.encode()), *_BALANCE_FIELDS]
            )
            cursor = text(step[0])
            entries = step[1] or []
            for i in range(0, len(entries) - 1, 2):
                values = [None if v is None else text(v) for v in entries[i + 1]]
                found[text(entries[i])] = dict(zip(_BALANCE_FIELDS, values, strict=True))
            if cursor == "0":
                return found
