"""What the pool needs of a Redis client, and the errors that mean Redis is away.

A leaf: every module that talks to Redis types its client with
``RedisClient`` and tells an outage from a bug with ``REDIS_DOWN``.
"""

from __future__ import annotations

import builtins
from typing import Any, Protocol

import txredisapi
from twisted.internet import defer, error


class RedisClient(Protocol):
    """EVAL, the one command the pool sends everything through (txredisapi's handler)."""

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]: ...


class RedisUnavailable(Exception):
    """No connection to Redis just now."""


# Errors that mean "Redis is away or slow", not "the command was wrong":
# txredisapi.ResponseError (a script error, a wrong type) is not one of them.
REDIS_DOWN: tuple[type[BaseException], ...] = (
    RedisUnavailable,
    txredisapi.ConnectionError,
    txredisapi.TimeoutError,
    defer.TimeoutError,
    defer.CancelledError,
    error.ConnectionLost,
    error.ConnectionDone,
    error.ConnectError,
    builtins.ConnectionError,
    builtins.TimeoutError,
)
