"""An Ethereum-family pool for tests, against the dev node (test/ethnode):
the real EthPoolService, EthStratumPool and hashing threads on loopback
ports, and small line and HTTP clients that speak to them as miners do."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.internet.defer import DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from nomp.config import DaemonConfig, EthCoinConfig, EthPoolConfig, PortConfig, VardiffConfig
from nomp.config.model import EthRewards, RewardStep
from nomp.eth.hasher import EpochHashers
from nomp.eth.pool import EthStratumPool
from nomp.eth.service import EthPoolService
from nomp.hashing.pool import HashPoolService
from test.ethnode import DevNode, seal_is_valid, search_nonce, start_dev_node
from test.fakes import FakeBlockRecords, FakeRecorder

ETHERBASE = bytes.fromhex("5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c")
LOGIN = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
LOGIN_CHECKSUMMED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55's own example
POOL_ADDRESS = "0x" + ETHERBASE.hex()

DEV_COIN = EthCoinConfig(
    algorithm="ethash",
    rewards=EthRewards(schedule=(RewardStep(from_block=0, wei=5 * 10**18),)),
    name="ethash-dev",
    symbol="DEV",
    chain_id=1337,
)


def eth_pool_config(node_url: str, ports: Sequence[PortConfig], **changes: Any) -> EthPoolConfig:
    options: dict[str, Any] = {
        "name": "dev",
        "file": "pools/dev.yaml",
        "coin": DEV_COIN,
        "address": POOL_ADDRESS,
        "daemons": (DaemonConfig(url=node_url, timeout=5.0),),
        "ports": tuple(ports),
        "block_refresh_interval": 0.05,
        "upstream_check_interval": 1.0,
        **changes,
    }
    return EthPoolConfig(**options)


def stratum_port(diff: float, vardiff: VardiffConfig | None = None) -> PortConfig:
    return PortConfig(listen="tcp:0:interface=127.0.0.1", diff=diff, vardiff=vardiff)


def getwork_port(diff: float, max_body: int = 1024) -> PortConfig:
    return PortConfig(listen="tcp:0:interface=127.0.0.1", diff=diff, protocol="getwork", max_body=max_body)


class EthPool:
    """A pool on a dev node; ``ports[i]`` is where config port ``i`` listens."""

    def __init__(
        self,
        test: TestCase,
        node: DevNode,
        config: EthPoolConfig,
        recorder: Any = None,
        blocks: Any = None,
    ) -> None:
        self.test = test
        self.node = node
        self.config = config
        self.recorder = recorder if recorder is not None else FakeRecorder()
        self.blocks = blocks if blocks is not None else FakeBlockRecords()
        self.hashing = HashPoolService(reactor, 2)
        self.hashers = EpochHashers(config.name, self.hashing.run)
        self.service = EthPoolService(config, reactor, test.fail, self.blocks, self.hashers)
        self.side = EthStratumPool(
            config, self.service, self.service, self.hashing, self.hashers, self.recorder, reactor
        )
        self.service.add_work_listener(self.side.new_work)
        self.ports: list[int] = []

    async def start(self) -> EthPool:
        self.hashing.startService()
        self.test.addCleanup(self.hashing.stopService)
        for port in self.config.ports:
            listening = await serverFromString(reactor, port.listen).listen(self.side.factory(port))
            self.test.addCleanup(listening.stopListening)
            self.ports.append(listening.getHost().port)
        self.service.startService()
        self.test.addCleanup(self.service.stopService)
        self.test.addCleanup(self.side.close_all)
        for _ in range(400):
            current = self.service.book.current
            if self.service.ready and current is not None and self.hashers.caches.peek(0, 0) is not None:
                return self
            await deferLater(reactor, 0.025, lambda: None)
        raise AssertionError("the pool got no work from the dev node")

    async def next_work(self, height: int) -> None:
        """Until the pool's current work is at ``height``."""
        for _ in range(400):
            current = self.service.book.current
            if current is not None and current.height >= height:
                return
            await deferLater(reactor, 0.025, lambda: None)
        raise AssertionError(f"no work at height {height}")


async def eth_pool(
    test: TestCase, ports: Sequence[PortConfig], difficulty: int = 256, **changes: Any
) -> EthPool:
    node = start_dev_node(test, ETHERBASE, difficulty=difficulty)
    return await EthPool(test, node, eth_pool_config(node.url, ports, **changes)).start()


class LineClient(LineOnlyReceiver):
    """A miner's connection: JSON lines out, every line read kept in order."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self.lines: DeferredQueue[dict[str, Any]] = DeferredQueue()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.lines.put(json.loads(line))

    def connectionLost(self, reason: Any = None) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    def close(self) -> defer.Deferred[None]:
        if self.transport is not None:
            self.transport.loseConnection()
        return self.closed

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(json.dumps(message).encode() + b"\n")

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        waiting = self.lines.get()
        waiting.addTimeout(timeout, reactor)
        return await waiting

    async def call(self, method: str, params: list[Any], request_id: Any = 1, **extra: Any) -> dict[str, Any]:
        """Send a request (``request_id`` not 0: pushed work has id 0); its reply.
        Notifications read before it are kept in ``pushed``."""
        self.send({"id": request_id, "method": method, "params": params, **extra})
        while True:
            message = await self.next()
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return message
            self.pushed.append(message)

    pushed: list[dict[str, Any]]


async def connect(port: int) -> LineClient:
    client = LineClient()
    client.pushed = []
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client


JSON_HEADERS = Headers({"content-type": ["application/json"]})


class GetworkClient:
    """HTTP getwork, as ethminer's -P http:// speaks it."""

    def __init__(self, test: TestCase, port: int, path: str) -> None:
        self.url = f"http://127.0.0.1:{port}/{path}".encode()
        self.http = HTTPConnectionPool(reactor)
        test.addCleanup(self.http.closeCachedConnections)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        response = await treq.post(self.url, body, pool=self.http, headers=JSON_HEADERS)
        return response.code, await response.content()

    async def call(self, method: str, params: list[Any], request_id: Any = 1) -> dict[str, Any]:
        code, body = await self.post(
            json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()
        )
        assert code == 200, (code, body)
        reply: dict[str, Any] = json.loads(body)
        return reply


def solve(
    work: Sequence[str], height: int, difficulty: float, start: int = 0, below: int | None = None
) -> list[str]:
    """eth_submitWork's params meeting ``difficulty`` for ``work`` [header, seed, target], by PyPI
    ethash; with ``below``, one that does not meet that difficulty (a share that is no block,
    so the chain, and the work, stay where they are)."""
    header = bytes.fromhex(work[0][2:])
    while True:
        nonce, mix = search_nonce(height, header, max(int(difficulty), 1), start)
        if below is None or not seal_is_valid(height, header, nonce, mix, below):
            return ["0x" + nonce.to_bytes(8, "big").hex(), work[0], "0x" + mix.hex()]
        start = nonce + 1
