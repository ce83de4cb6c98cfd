"""The fenced lock a pool's payment runs hold across every process sharing
Redis, as Lua: a token from a counter that only grows, set with an
expiry, so a run that lost its lock (it stalled past the expiry and another
took it) is refused by every write script that checks ``still_held``."""

from __future__ import annotations

from nomp.store.client import RedisClient

# KEYS: lock, fence. ARGV: milliseconds. The new token, or 0 if the lock is held.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""

# KEYS: lock. ARGV: token. Whether it was ours to give back.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""

# KEYS: lock. ARGV: token, milliseconds. Whether it is still ours.
EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""


def still_held(what: str) -> str:
    """The Lua a write script starts with: KEYS[1] the lock, ARGV[1] the token;
    an error reply starting ``NOLOCK`` when the lock is no longer the caller's."""
    return f"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOLOCK the {what} lock is no longer ours')
end
"""


class FencedLock:
    """One pool's fenced lock in Redis: ``lock`` holds the token of the run
    that has it, ``fence`` the counter tokens come from."""

    def __init__(self, redis: RedisClient, lock: str, fence: str) -> None:
        self._redis = redis
        self.lock = lock
        self.fence = fence

    async def acquire(self, timeout: float) -> int | None:
        """The lock's new fencing token, or None while another run holds it."""
        token = await self._redis.eval(ACQUIRE, [self.lock, self.fence], [int(timeout * 1000)])
        return int(token) or None

    async def extend(self, token: int, timeout: float) -> bool:
        """Whether the lock is still ours (its timeout started again)."""
        return bool(await self._redis.eval(EXTEND, [self.lock], [token, int(timeout * 1000)]))

    async def release(self, token: int) -> None:
        await self._redis.eval(RELEASE, [self.lock], [token])
