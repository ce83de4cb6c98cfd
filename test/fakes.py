"""In-memory fakes of the Stratum side's collaborators, and a harness that
drives a real StratumPool over StringTransports on a task.Clock: no
sockets, no threads, no Redis, no daemon.

The fakes are honest: InlineHashing runs the real C share check (only not
in a thread), FakeRecorder behaves as ShareRecorder does towards its caller
(RecorderFull from ``valid_share`` when full, invalid shares dropped
silently), and FakePool hands out jobs from a real JobRegistry and takes
the block candidates the share pipeline makes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from nomp.candidate import BlockCandidate
from nomp.chain.address import decode_address
from nomp.chain.coinbase import CoinbaseLayout, PayoutPlan
from nomp.chain.jobs import Job, JobRegistry
from nomp.chain.template import BlockTemplate
from nomp.config import PoolConfig, PortConfig, load_config
from nomp.hashing import ALGORITHMS, JobHasher, ShareHash, ShareWork
from nomp.hashing.pool import HashPoolService
from nomp.store.bans import BanStore
from nomp.store.recorder import RecorderFull
from nomp.stratum.pipeline import ShareRecords
from nomp.stratum.protocol import StratumFactory, StratumProtocol
from nomp.stratum.session import MinerSession
from nomp.stratum.stratumpool import StratumPool
from test.test_chain import template_reply
from test.test_config_paths import SHIPPED_CONF

SCRYPT = ALGORITHMS["scrypt"]
# A valid regtest bech32 address (the demo pool's own).
REGTEST_ADDRESS = "rltc1qey3dpjf7avevcavv6uk33juxyyyyndgfuc2s2l"
MAINNET_BITS = "1b00ffff"  # block target 0xffff << 192: a random share is never a block


@functools.cache
def shipped_pool() -> PoolConfig:
    """The repository's demo pool (Litecoin regtest), as ``conf/`` ships it."""
    return load_config(SHIPPED_CONF).pools[0]


def pool_config(**changes: Any) -> PoolConfig:
    """The shipped pool with some fields replaced (``usernames``, ``ports``...)."""
    return dataclasses.replace(shipped_pool(), **changes)


def mainnet_template(**changes: Any) -> BlockTemplate:
    """The realistic template of test_chain at a mainnet-like difficulty, so
    shares that meet a Stratum difficulty are not blocks."""
    reply = template_reply(bits=MAINNET_BITS, **changes)
    del reply["target"]  # the target then comes from bits
    return BlockTemplate.from_rpc(reply)


def regtest_template(**changes: Any) -> BlockTemplate:
    """The template of test_chain as is: regtest bits, about every second hash is a block."""
    return BlockTemplate.from_rpc(template_reply(**changes))


class InlineHashing:
    """HashPoolService's face, computed at once on the calling thread with
    the real C share check."""

    def __init__(self) -> None:
        self.checked: list[ShareWork] = []
        self.error: Exception | None = None  # set to make every check fail

    def submit(self, hasher: JobHasher, work: ShareWork, done: Callable[[ShareHash | Failure], None]) -> None:
        self.checked.append(work)
        done(Failure(self.error) if self.error is not None else hasher.check([work])[0])


class FakeRecorder:
    """The share records in lists. ``full = True`` makes ``valid_share`` raise
    RecorderFull and drops invalid shares, as ShareRecorder does when its
    buffer is full."""

    def __init__(self, clock: task.Clock | None = None) -> None:
        self._clock = clock
        self.full = False
        self.valid: list[tuple[str, float]] = []  # (worker, difficulty)
        self.invalid: list[tuple[str, float]] = []

    def valid_share(self, worker: str, difficulty: float, solo: bool = False) -> None:
        if self.full:
            raise RecorderFull("the fake recorder is full")
        self.valid.append((worker, difficulty))

    def invalid_share(self, worker: str, difficulty: float) -> None:
        if not self.full:
            self.invalid.append((worker, difficulty))


class FakePool:
    """The pool as the Stratum side sees it: jobs from a real JobRegistry,
    and the block candidates the share pipeline hands on (in ``found``)."""

    def __init__(self, registry: JobRegistry | None) -> None:
        self.registry = registry
        self.found: list[BlockCandidate] = []

    def found_block(self, candidate: BlockCandidate) -> None:
        self.found.append(candidate)


class FakeBlockRecords:
    """The pool's block records in lists (PoolService's BlockRecords).

    A candidate is durable at once unless ``durable`` is False (Redis away);
    ``unsettled`` is what ``unsettled_candidates`` answers.
    """

    def __init__(self) -> None:
        self.durable = True
        self.found: list[BlockCandidate] = []
        self.settled: list[tuple[str, bool]] = []
        self.unsettled: list[BlockCandidate] = []
        self.flushes = 0

    def block_found(self, candidate: BlockCandidate, timeout: float = 1.0) -> defer.Deferred[bool]:
        self.found.append(candidate)
        return defer.succeed(self.durable)

    def block_settled(self, block_hash: str, accepted: bool) -> None:
        self.settled.append((block_hash, accepted))

    async def unsettled_candidates(self) -> list[BlockCandidate]:
        return list(self.unsettled)

    def flush(self) -> defer.Deferred[None]:
        self.flushes += 1
        return defer.succeed(None)


def registry_for(config: PoolConfig) -> JobRegistry:
    """A JobRegistry paying to the pool's address, as PoolService builds it."""
    script = decode_address(config.address, config.coin.network).script
    layout = CoinbaseLayout(
        tx_version=config.coin.transactions.version, signature=config.pool_signature.encode()
    )
    return JobRegistry(config.coin.algorithm, PayoutPlan(script), layout)


class RecordingTransport(StringTransport):
    """A StringTransport that tells abortConnection from loseConnection, and
    takes TCP_NODELAY as a TCP connection does."""

    aborted = False
    no_delay = False
    writes = 0  # write() calls: one per send the pool makes

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def read_lines(transport: StringTransport) -> list[dict[str, Any]]:
    """The JSON messages written to ``transport`` so far (the transport is cleared).

    Every message must be one JSON object on its own ``\\n``-terminated line.
    """
    data: bytes = transport.value()
    transport.clear()
    if not data:
        return []
    if not data.endswith(b"\n"):
        raise AssertionError(f"unterminated line written: {data!r}")
    messages = []
    for line in data.split(b"\n")[:-1]:
        message = json.loads(line)
        if not isinstance(message, dict):
            raise AssertionError(f"not a JSON object: {line!r}")
        messages.append(message)
    return messages


@dataclass
class Connection:
    """One miner's connection: a real StratumProtocol on a RecordingTransport."""

    protocol: StratumProtocol
    transport: RecordingTransport
    _ids: Iterator[int] = field(default_factory=lambda: iter(range(1, 2**31)))

    @property
    def session(self) -> MinerSession:
        return self.protocol.session

    @property
    def closing(self) -> bool:
        """Whether the server closed (or aborted) the connection."""
        return bool(self.transport.disconnecting)

    def send(self, data: bytes) -> None:
        """Bytes as the miner's TCP stream delivers them."""
        self.protocol.dataReceived(data)

    def send_json(self, message: object) -> None:
        """One message, JSON-encoded, on its own line."""
        self.send(json.dumps(message).encode() + b"\n")

    def request(self, method: str, params: object = None, request_id: object = None) -> list[dict[str, Any]]:
        """Send a request (params default to [], the id to the next number) and
        return every message written in answer."""
        message_id = next(self._ids) if request_id is None else request_id
        self.send_json({"id": message_id, "method": method, "params": [] if params is None else params})
        return self.read()

    def read(self) -> list[dict[str, Any]]:
        """The messages written since the last read."""
        return read_lines(self.transport)

    def subscribe(self) -> bytes:
        """mining.subscribe; the extranonce1 given (the messages are read)."""
        replies = self.request("mining.subscribe", ["test-miner/1.0"])
        extranonce1: str = replies[0]["result"][1]
        return bytes.fromhex(extranonce1)

    def authorize(self, name: str, password: str = "x") -> dict[str, Any]:
        """mining.authorize; its reply."""
        (reply,) = self.request("mining.authorize", [name, password])
        return reply

    def submit(self, params: list[Any]) -> list[dict[str, Any]]:
        """mining.submit; every message written in answer."""
        return self.request("mining.submit", params)

    def lose(self) -> None:
        """The TCP connection is gone (StringTransport never says so itself)."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


Connect = Callable[..., Connection]


def build_server(
    config: PoolConfig,
    clock: task.Clock,
    pool: FakePool | None = None,
    recorder: ShareRecords | None = None,
    hashing: InlineHashing | None = None,
    ban_store: BanStore | None = None,
) -> tuple[StratumPool, Connect]:
    """A StratumPool on fakes, and ``connect(port=None)`` that opens a new
    miner connection on one of the pool's ports (the first by default).
    Connections on the same port share its factory, as on a real listener.
    ``recorder`` may be a real ShareRecorder, for shares that reach Redis."""
    pool = pool if pool is not None else FakePool(registry_for(config))
    server = StratumPool(
        config,
        pool,
        pool,
        cast(HashPoolService, hashing if hashing is not None else InlineHashing()),
        recorder if recorder is not None else FakeRecorder(clock),
        clock,
        ban_store,
        wall_clock=clock.seconds,
    )
    factories: dict[PortConfig, StratumFactory] = {}

    def connect(
        port: PortConfig | None = None,
        ip: str | None = None,
        transport: type[RecordingTransport] | None = None,
    ) -> Connection:
        port = port if port is not None else config.ports[0]
        factory = factories.get(port)
        if factory is None:
            factory = factories[port] = server.factory(port)
        # Without an ip the connection has no address: bans and limits pass it by.
        peer = None if ip is None else (IPv6Address if ":" in ip else IPv4Address)("TCP", ip, 40000)
        protocol = factory.buildProtocol(peer)
        if protocol is None:
            raise ConnectionRefusedError(f"the port refused {ip}")
        made = (transport or RecordingTransport)(peerAddress=peer)
        protocol.makeConnection(made)
        return Connection(protocol, made)

    return server, connect


class StratumHarness:
    """A StratumPool with all its fakes at hand."""

    def __init__(
        self,
        config: PoolConfig,
        clock: task.Clock,
        with_registry: bool = True,
        ban_store: BanStore | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.registry = registry_for(config)
        self.pool = FakePool(self.registry if with_registry else None)
        self.recorder = FakeRecorder(clock)
        self.hashing = InlineHashing()
        self.server, self._connect = build_server(
            config, clock, self.pool, self.recorder, self.hashing, ban_store
        )

    def connect(
        self,
        port: PortConfig | None = None,
        ip: str | None = None,
        transport: type[RecordingTransport] | None = None,
    ) -> Connection:
        """A new connection (on ``transport``, a RecordingTransport by default);
        ConnectionRefusedError if the port refuses ``ip``."""
        return self._connect(port, ip, transport)

    def miner(
        self, worker: str = REGTEST_ADDRESS, port: PortConfig | None = None, ip: str | None = None
    ) -> Connection:
        """A connection that subscribed and authorized ``worker``, messages read."""
        connection = self.connect(port, ip)
        connection.subscribe()
        reply = connection.authorize(worker)
        if reply["result"] is not True:
            raise AssertionError(f"authorize refused: {reply}")
        return connection

    def new_job(self, template: BlockTemplate, force: bool = False) -> Job:
        """The pool makes a job of ``template`` and the server sends it out."""
        if self.pool.registry is None:
            self.pool.registry = self.registry
        job = self.registry.add(template, self.clock.seconds(), force=force)
        if job is None:
            raise AssertionError("the registry made no job of the template")
        self.server.new_job(job)
        return job


def find_nonce(
    job: Job,
    extranonce: bytes,
    accept: Callable[[int], bool],
    ntime: int | None = None,
    start: int = 0,
    batch: int = 64,
    limit: int = 1 << 20,
) -> int:
    """The first nonce from ``start`` whose PoW value ``accept`` takes,
    searched with the job's real C share check."""
    ntime = job.template.curtime if ntime is None else ntime
    for first in range(start, start + limit, batch):
        works = [ShareWork(extranonce, job.template.version, ntime, n) for n in range(first, first + batch)]
        for work, hashed in zip(works, job.hasher.check(works), strict=True):
            if accept(hashed.pow_value):
                return work.nonce
    raise AssertionError("no nonce found")


def pow_value(job: Job, extranonce: bytes, ntime: int, nonce: int) -> int:
    """The PoW value of one share."""
    return job.hasher.check([ShareWork(extranonce, job.template.version, ntime, nonce)])[0].pow_value


def submit_params(
    worker: str, job: Job, extranonce2: bytes, nonce: int, ntime: int | None = None
) -> list[Any]:
    """``mining.submit`` params as miners send them."""
    ntime = job.template.curtime if ntime is None else ntime
    return [worker, job.job_id, extranonce2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
