"""nomp's own Redis connection in tests, against a real redis-server."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from nomp.config import RedisConfig
from nomp.store.redis import RedisService
from test.waiting import until


async def connected_redis_service(test: TestCase, port: int, db: int) -> RedisService:
    """A RedisService on the redis-server at ``port``, database ``db``: started,
    connected, and stopped when ``test`` ends."""
    service = RedisService(RedisConfig(port=port, db=db))
    service.startService()
    test.addCleanup(service.stopService)
    await until(lambda: service.client() is not None)
    return service
