"""Waiting on the real reactor, for tests against real servers."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import reactor, task


async def until(condition: Callable[[], object], timeout: float = 60.0, step: float = 0.05) -> None:
    """Return once ``condition()`` holds; AssertionError after ``timeout`` seconds."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("timed out waiting")
        await task.deferLater(reactor, step)
        waited += step
