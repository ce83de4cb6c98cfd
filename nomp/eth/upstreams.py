"""The nodes an Ethereum-family pool takes work from, with failover.

As OEP: a node turns sick after ``SICK_AFTER`` failed calls in a row and
healthy again after ``ALIVE_AFTER`` answered ones; every node is probed
with ``eth_getWork`` each ``upstream_check_interval`` and the first in the
configured order that is healthy and answered the probe is used (OEP
took a node that had just failed, until it was sick, as long as it was
first). A block goes to every node, so it spreads from all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from nomp.daemon import DaemonError
from nomp.daemon.rpc import DaemonRPC

SICK_AFTER = 5
ALIVE_AFTER = 5


class Upstream:
    """One node and its health."""

    def __init__(self, rpc: DaemonRPC) -> None:
        self.rpc = rpc
        self.sick = False
        self.answering = True  # its last call was answered
        self._failures = 0
        self._successes = 0

    @property
    def url(self) -> str:
        return self.rpc.url

    def answered(self) -> None:
        self.answering = True
        self._failures = 0
        self._successes += 1
        if self.sick and self._successes >= ALIVE_AFTER:
            self.sick = False

    def failed(self) -> None:
        self.answering = False
        self._successes = 0
        self._failures += 1
        if self._failures >= SICK_AFTER:
            self.sick = True


class Upstreams:
    """The pool's nodes, in the configured order, and the one in use."""

    log = Logger()

    def __init__(self, pool_name: str, rpcs: Sequence[DaemonRPC]) -> None:
        if not rpcs:
            raise ValueError("at least one node")
        self._pool_name = pool_name
        self.nodes = [Upstream(rpc) for rpc in rpcs]
        self._active = 0

    @property
    def active(self) -> Upstream:
        return self.nodes[self._active]

    def use(self, index: int) -> None:
        """Use node ``index`` from now on."""
        if index != self._active:
            self.log.warn(
                "pool {pool}: switching to node {url} (was {previous})",
                pool=self._pool_name,
                url=self.nodes[index].url,
                previous=self.active.url,
            )
            self._active = index

    async def call(self, method: str, *params: Any) -> Any:
        """``method`` on the node in use; DaemonError as it raised it."""
        node = self.active
        try:
            result = await node.rpc.call(method, *params)
        except DaemonError:
            node.failed()
            raise
        node.answered()
        return result

    async def call_each(self, method: str, *params: Any) -> list[Any]:
        """``method`` on every node at once: each one's result or its DaemonError."""

        async def one(node: Upstream) -> Any:
            try:
                result = await node.rpc.call(method, *params)
            except DaemonError as e:
                node.failed()
                return e
            node.answered()
            return result

        calls = [defer.Deferred.fromCoroutine(one(node)) for node in self.nodes]
        answers: list[tuple[bool, Any]] = await defer.DeferredList(calls, consumeErrors=True)
        return [value if ok else value.value for ok, value in answers]

    async def check(self) -> None:
        """Probe every node and use the first healthy one that answered the probe
        (the one in use stays if none did)."""
        await self.call_each("eth_getWork")
        healthy = [i for i, node in enumerate(self.nodes) if not node.sick and node.answering]
        if healthy:
            self.use(healthy[0])
