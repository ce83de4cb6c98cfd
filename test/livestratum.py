"""A real StratumPool listening on a loopback port of the real reactor,
on the in-memory fakes of test.fakes (no daemon, no Redis): for tests of
what real sockets do to the pool (TLS, miners that stop reading, peers
that trickle bytes). The reactor is the server's clock, so idle timeouts
run in real time, and jobs are stamped with the real time."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort

from nomp.chain.jobs import Job
from nomp.chain.template import BlockTemplate
from nomp.config import PoolConfig, PortConfig
from nomp.hashing.pool import HashPoolService
from nomp.stratum.protocol import StratumProtocol
from nomp.stratum.stratumpool import StratumPool
from test.fakes import FakePool, FakeRecorder, InlineHashing, registry_for
from test.test_chain import template_reply

MAINNET_BITS = "1b00ffff"  # no share at a Stratum difficulty is a block


def now_template(sequence: int, transactions: int = 2) -> BlockTemplate:
    """A template stamped with the reactor's time, a mainnet-like target, on
    previous block number ``sequence``; ``transactions`` sets the length of
    the merkle branch, so of every mining.notify line."""
    now = int(reactor.seconds())
    reply = template_reply(
        bits=MAINNET_BITS,
        curtime=now,
        mintime=now - 600,
        previousblockhash=f"{sequence:064x}",
        height=1000 + sequence,
    )
    del reply["target"]  # the target then comes from bits
    if transactions != len(reply["transactions"]):
        reply["transactions"] = [
            {
                "data": "02000000" + f"{n:060x}",
                "txid": f"{n + 1:064x}",
                "hash": f"{n + 1:064x}",
                "depends": [],
                "fee": 100,
            }
            for n in range(transactions)
        ]
    return BlockTemplate.from_rpc(reply)


class LiveStratum:
    """A StratumPool with its fakes at hand, listening once ``listen`` returned."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.registry = registry_for(config)
        self.pool = FakePool(self.registry)
        self.recorder = FakeRecorder()
        self.hashing = InlineHashing()
        self.server = StratumPool(
            config, self.pool, self.pool, cast(HashPoolService, self.hashing), self.recorder, reactor
        )
        self._listening: list[IListeningPort] = []

    async def listen(
        self, endpoint: str = "tcp:0:interface=127.0.0.1", port: PortConfig | None = None
    ) -> int:
        """Listen on ``endpoint`` (a Twisted server endpoint string) for the
        pool's port ``port`` (its first by default); the port number."""
        factory = self.server.factory(port if port is not None else self.config.ports[0])
        listening: Any = await serverFromString(reactor, endpoint).listen(factory)
        self._listening.append(listening)
        return int(listening.getHost().port)

    def new_job(self, template: BlockTemplate, force: bool = False) -> Job:
        """The pool makes a job of ``template`` and the server sends it out."""
        job = self.registry.add(template, reactor.seconds(), force=force)
        if job is None:
            raise AssertionError("the registry made no job of the template")
        self.server.new_job(job)
        return job

    def protocols(self) -> list[StratumProtocol]:
        """The open connections, as the protocol objects they are."""
        return [cast(StratumProtocol, c) for c in self.server.connections]

    async def stop(self) -> None:
        """Stop listening and drop every connection still open."""
        for listening in self._listening:
            stopped = listening.stopListening()
            if stopped is not None:
                await stopped
        for protocol in self.protocols():
            protocol._tcp.abortConnection()
