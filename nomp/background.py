"""Fire-and-forget work that never drops its failure."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()
T = TypeVar("T")


def background(description: str, work: Coroutine[Any, Any, Any]) -> defer.Deferred[Any]:
    """Run ``work`` without awaiting it; a failure is logged, never lost.

    The Deferred is returned so an owner may keep it (to cancel it or wait
    for it at shutdown).
    """
    running = defer.Deferred.fromCoroutine(work)

    def failed(failure: Failure) -> None:
        if not failure.check(defer.CancelledError):
            _log.failure("background task {task} failed", failure, task=description)

    running.addErrback(failed)
    return running


async def cancellable(operation: defer.Deferred[T]) -> T:
    """Await ``operation`` so that cancelling the awaiting coroutine raises
    CancelledError in it.

    A coroutine is cancelled by cancelling the Deferred it awaits, and that
    Deferred may fail with its own error instead (a cancelled HTTP connect
    fails with ConnectingCancelledError): the coroutine would take it for an
    ordinary failure and carry on.
    """
    cancelled = False

    def cancel(_: defer.Deferred[T]) -> None:
        nonlocal cancelled
        cancelled = True
        operation.cancel()

    guard: defer.Deferred[T] = defer.Deferred(cancel)
    operation.chainDeferred(guard)
    try:
        return await guard
    except Exception:
        if cancelled:
            raise defer.CancelledError() from None
        raise


class KeyedWork:
    """Background work keyed by what it is about (a block's hash): at most one
    under way per key, and a wait for all of it (at shutdown)."""

    def __init__(self) -> None:
        self._running: dict[str, defer.Deferred[Any]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._running

    def __len__(self) -> int:
        return len(self._running)

    def start(self, key: str, description: str, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` as ``background`` does, known under ``key`` until it ends
        (the caller checks ``key in`` first: one at a time per key)."""
        running = background(description, work)
        if running.called:
            return  # done at once (no I/O waited on)
        self._running[key] = running

        def done(_: object) -> None:
            del self._running[key]

        running.addBoth(done)

    def idle(self) -> defer.Deferred[None]:
        """Fires once all the work under way now has ended."""
        waited: defer.Deferred[Any] = defer.DeferredList(list(self._running.values()), consumeErrors=True)
        return waited.addCallback(lambda _: None)
