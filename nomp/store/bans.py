"""BanStore: a pool's bans in Redis, shared by its processes and kept over restarts.

A ban is a member of the ``<coin>:bans`` sorted set scored with the unix
time it ends, and its reason is in ``<coin>:bans:reasons``. Ended bans are
removed by the next read, so the keys hold no more than the bans in force.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from nomp.store.client import RedisClient, RedisUnavailable
from nomp.store.schema import PoolKeys


class StoredBan(NamedTuple):
    """A ban as Redis holds it (the Stratum side makes its own Ban of it)."""

    ip: str
    expires_at: float  # unix seconds
    reason: str


class BanLike(Protocol):
    """What a ban to save must tell."""

    @property
    def ip(self) -> str: ...

    @property
    def expires_at(self) -> float: ...

    @property
    def reason(self) -> str: ...


# KEYS: bans, reasons. ARGV: ip, expires_at, reason. The latest decision
# wins, so an admin can shorten a ban as well as lengthen it.
_SAVE = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""

# KEYS: bans, reasons. ARGV: ip.
_LIFT = """
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

# KEYS: bans, reasons. ARGV: now. Drops ended bans, returns {ip, expires_at, reason} flat.
_LOAD = """
local ended = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #ended > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
  redis.call('HDEL', KEYS[2], unpack(ended))
end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = live[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], live[i]) or ''
end
return out
"""


class BanStoreUnavailable(RedisUnavailable):
    """No connection to Redis just now (one of REDIS_DOWN)."""


class BanStore:
    """Reads and writes one pool's bans."""

    def __init__(self, keys: PoolKeys, redis: Callable[[], RedisClient | None]) -> None:
        self.keys = keys
        self._redis = redis

    async def _eval(self, script: str, args: list[Any]) -> Any:
        client = self._redis()
        if client is None:
            raise BanStoreUnavailable("Redis is not connected")
        return await client.eval(script, [self.keys.bans, self.keys.ban_reasons], args)

    async def save(self, ban: BanLike) -> None:
        await self._eval(_SAVE, [ban.ip, repr(ban.expires_at), ban.reason])

    async def lift(self, ip: str) -> None:
        await self._eval(_LIFT, [ip])

    async def load(self, now: float) -> list[StoredBan]:
        """The bans in force at ``now`` (ended ones are deleted on the way)."""
        flat = await self._eval(_LOAD, [repr(now)]) or []
        return [
            StoredBan(_text(flat[i]), float(_text(flat[i + 1])), _text(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
