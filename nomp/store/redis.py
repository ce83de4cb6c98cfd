"""RedisService: the process's Redis connection (txredisapi is used only here)."""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.application.service import Service
from twisted.internet import defer

from nomp.config import RedisConfig
from nomp.store.recorder import ScriptRunner


class RedisService(Service):
    """Owns a small txredisapi connection pool, which reconnects by itself."""

    name = "redis"

    def __init__(self, config: RedisConfig, pool_size: int = 2) -> None:
        self.config = config
        self._pool_size = pool_size
        self._handler: Any = None

    def startService(self) -> None:
        super().startService()
        config = self.config
        self._handler = txredisapi.lazyConnectionPool(
            host=config.host,
            port=config.port,
            dbid=config.db,
            poolsize=self._pool_size,
            password=config.password,
            connectTimeout=5,
            replyTimeout=10,
        )

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        handler, self._handler = self._handler, None
        if handler is None:
            return None
        stopping: defer.Deferred[None] = handler.disconnect()
        return stopping

    def client(self) -> ScriptRunner | None:
        """The client while at least one connection is up, else None.

        Commands sent with no connection would queue inside txredisapi until
        Redis returns; callers rather keep their own bounded buffer.
        """
        handler = self._handler
        if handler is None or handler._factory.size == 0:
            return None
        runner: ScriptRunner = handler
        return runner
