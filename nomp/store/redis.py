"""RedisService: the process's Redis connection, and what Redis's error replies mean.

txredisapi is used only here and in nomp.store.client.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.application.service import Service
from twisted.internet import defer

from nomp.config import RedisConfig
from nomp.store.client import RedisClient

# Error replies Redis gives while it is busy (a long script), loading its
# data, failing over, short of memory or disk, or refusing our credentials:
# the same command may well succeed later, so they mean "Redis cannot take
# it just now", not "the command is wrong".
_UNAVAILABLE_REPLIES = frozenset(
    {
        "BUSY",
        "LOADING",
        "READONLY",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "NOREPLICAS",
        "MISCONF",
        "OOM",
        "NOAUTH",
        "WRONGPASS",
        "NOPERM",
    }
)


def unavailable_reply(error: BaseException) -> bool:
    """Whether ``error`` is an error reply meaning Redis cannot take the command just now."""
    if not isinstance(error, txredisapi.ResponseError):
        return False
    return str(error).split(" ", 1)[0] in _UNAVAILABLE_REPLIES


def refusal(error: BaseException) -> str | None:
    """Why Redis refused the command itself (a script error, a key of the wrong type),
    or None if ``error`` is not such a refusal: sending the same again would fail again."""
    if not isinstance(error, txredisapi.ResponseError) or unavailable_reply(error):
        return None
    return str(error) or type(error).__name__


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

    def client(self) -> RedisClient | None:
        """The client while at least one connection is up, else None.

        Commands sent with no connection would queue inside txredisapi until
        Redis returns; callers rather keep their own bounded buffer.
        """
        handler = self._handler
        if handler is None or handler._factory.size == 0:
            return None
        runner: RedisClient = handler
        return runner
