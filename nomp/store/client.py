"""What the pool needs of a Redis client, and the errors that mean Redis is away.

A leaf: every module that talks to Redis types its client with
``RedisClient`` and tells an outage from a bug with ``REDIS_DOWN``.
"""

from __future__ import annotations

import builtins
from typing import Any, Protocol, runtime_checkable

import txredisapi
from twisted.internet import defer, error


class RedisClient(Protocol):
    """EVAL, the one command the pool sends everything through (txredisapi's handler)."""

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]: ...


@runtime_checkable
class ReplicatedWrites(Protocol):
    """A client that can tell how many replicas took a write (RedisService's), and how
    many a payout journal entry must reach (config.yaml's ``redis.journal_replicas``)."""

    journal_replicas: int
    journal_timeout: float  # seconds WAIT waits for them

    def eval_replicated(
        self, script: str, keys: list[str], args: list[Any], replicas: int, timeout: float
    ) -> defer.Deferred[tuple[Any, int]]:
        """EVAL, then WAIT ``replicas`` ``timeout`` on the same connection: the script's
        result and how many replicas have its writes."""
        ...


class RedisUnavailable(Exception):
    """No connection to Redis just now."""


class NotReplicated(txredisapi.ResponseError):  # type: ignore[misc]  # txredisapi is untyped
    """A write the primary took but too few replicas acknowledged within the wait
    (Redis's WAIT answered less than required): a failover now could lose it.

    A ResponseError whose message starts ``NOREPLICAS``, as Redis's own refusal for
    too few replicas does: Redis cannot make the write safe just now.
    """

    def __init__(self, what: str, reached: int, required: int, timeout: float, result: Any = None) -> None:
        super().__init__(
            f"NOREPLICAS {what} reached {reached} of the {required} Redis replicas required "
            f"within {timeout:g} s; nothing is sent until they have it: a failover could lose it "
            "once the money is gone, and the payout would be made again"
        )
        self.reached = reached
        self.required = required
        self.result = result  # the script's, applied on the primary


class JournalWrites:
    """The writes a payment ledger makes before money leaves (its payout journal
    entries): each is on ``replicas`` replicas before it returns, else NotReplicated.

    ``replicas`` None: as many as the client's ``journal_replicas`` (config.yaml's
    ``redis.journal_replicas``), 0 for a client that has none; 0: plain EVAL.
    """

    def __init__(self, redis: RedisClient, replicas: int | None = None, timeout: float | None = None) -> None:
        self._redis = redis
        replicated = redis if isinstance(redis, ReplicatedWrites) else None
        if replicas is None:
            replicas = replicated.journal_replicas if replicated is not None else 0
        if timeout is None:
            timeout = replicated.journal_timeout if replicated is not None else 0.0
        if replicas and replicated is None:
            raise TypeError(f"{type(redis).__name__} cannot wait for replicas (it has no eval_replicated)")
        if replicas and timeout <= 0:
            raise ValueError("a wait for replicas needs a timeout > 0 (WAIT 0 would wait for ever)")
        self.replicas = replicas
        self.timeout = timeout

    async def eval(self, script: str, keys: list[str], args: list[Any], what: str) -> Any:
        """The script's result, once ``replicas`` replicas have its writes; ``what`` names
        the write in NotReplicated's message."""
        if not self.replicas:
            return await self._redis.eval(script, keys, args)
        assert isinstance(self._redis, ReplicatedWrites)
        result, reached = await self._redis.eval_replicated(script, keys, args, self.replicas, self.timeout)
        if reached < self.replicas:
            raise NotReplicated(what, reached, self.replicas, self.timeout, result)
        return result


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
