"""Service-tree helpers."""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet import defer


class OrderedMultiService(MultiService):
    """A MultiService whose children stop one after another, in reverse order.

    MultiService stops all its children at once. Here a child may rely on
    the ones added before it until it has stopped: a pool drains its shares
    into Redis before the Redis connection closes.
    """

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            await defer.maybeDeferred(child.stopService)
