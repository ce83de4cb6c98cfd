"""Fire-and-forget work that never drops its failure."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()


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
