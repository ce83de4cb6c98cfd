"""The drain before a stop, in one process: the tree nomp.tap builds on the
real reactor, litecoind regtest, redis-server, nomp-miners and bare Stratum
clients; and what the process tells systemd.

What a drain does with miners that come back to a socket the next process
holds is test_restart's; here, the ports are the process's own (``tcp:``):
once it stops accepting, a miner that reconnects is refused.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from nomp.cli import control_address, send
from nomp.config import Config, GlobalConfig, load_config
from nomp.hashing import ALGORITHMS
from nomp.miner import Miner, connect, reconnect_address
from nomp.service import NompService
from nomp.systemd import ServiceNotifier
from nomp.tap import build_service
from test.poolconf import write_conf
from test.rediscli import redis_hash
from test.servers import RPC_PASSWORD, RPC_USER, RedisServer, free_port, shared_regtest
from test.test_config import ConfTestCase
from test.waiting import until

SCRYPT = ALGORITHMS["scrypt"]
COIN = "litecoin-regtest"


class BareClient(LineOnlyReceiver):
    """A Stratum client that subscribes and then ignores what it is told."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.sendLine(json.dumps({"id": 1, "method": "mining.subscribe", "params": []}).encode())

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(json.loads(line))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)

    def told(self, method: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("method") == method]


async def bare_client(port: int) -> BareClient:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
    client = await endpoint.connect(Factory.forProtocol(BareClient))
    assert isinstance(client, BareClient)
    await until(lambda: any(line.get("id") == 1 for line in client.lines))
    return client


def messages(events: Sequence[LogEvent]) -> str:
    return "\n".join(formatEvent(event) for event in events)


class RunningTree(TestCase):
    """The tree twistd runs, on the real reactor, with its own Redis."""

    timeout = 180

    async def start(self, drain_seconds: float, **pool: Any) -> tuple[NompService, int, str, int]:
        """A running tree; (root, Stratum port, payout address, Redis port)."""
        pair = shared_regtest("drain")
        redis_server = RedisServer().start()
        self.addCleanup(redis_server.stop)
        address = pair.new_address()
        conf, stratum_port = write_conf(
            Path(self.mktemp()), pair.miner.url, RPC_USER, RPC_PASSWORD, address, redis_server.port, **pool
        )
        self.conf = conf
        settings = yaml.safe_load((conf / "config.yaml").read_text())
        settings["drain_seconds"] = drain_seconds
        (conf / "config.yaml").write_text(yaml.safe_dump(settings))
        root = build_service(load_config(conf), reactor, exit_with=lambda status: None, shutdown=lambda: None)
        root.startService()
        self.addCleanup(lambda: root.running and root.stopService())
        await until(lambda: all(getattr(child, "ready", True) for child in root))
        return root, stratum_port, address, redis_server.port


class DrainTests(RunningTree):
    """At a stop the miners are asked to reconnect and given drain_seconds to leave."""

    async def test_miners_leave_and_the_others_are_closed(self) -> None:
        """A miner that honours client.reconnect leaves with every answer read (its
        shares are in Redis as it counted them) and, the port closed, is refused
        when it connects again; a client that ignores it is closed at the end."""
        root, stratum_port, address, redis_port = await self.start(drain_seconds=1.0)
        miner = Miner(reactor, SCRYPT, f"{address}.rig1")
        await connect(miner, "127.0.0.1", stratum_port)
        self.assertTrue(await miner.authorized)
        miner.start()
        await until(lambda: miner.stats.accepted >= 5)
        ignoring = await bare_client(stratum_port)

        with capturedLogs() as events:
            await root.stopService()
        await miner.stop()
        await ignoring.closed

        self.assertEqual(
            ignoring.told("client.reconnect"), [{"id": None, "method": "client.reconnect", "params": []}]
        )
        self.assertEqual(len(miner.reconnections), 1)
        moved = miner.reconnections[0]
        self.assertIsNotNone(moved.left)
        self.assertEqual((moved.host, moved.port), ("127.0.0.1", stratum_port))
        self.assertIn("ConnectionRefusedError", str(moved.failed))
        self.assertEqual(miner.connect_failures, 1)
        self.assertTrue(miner.gone)
        log = messages(events)
        self.assertIn("pool litecoin: 1 of 2 miners asked to reconnect left, 1 to close", log)
        self.assertIn("2 miners asked to reconnect, 1 left to close", log)
        # It left once every share had its answer: Redis holds exactly the accepted ones.
        counters = redis_hash(redis_port, 0, f"{COIN}:stats")
        self.assertEqual(int(counters["validShares"]), miner.stats.accepted)

    async def test_no_drain(self) -> None:
        """With drain_seconds 0 nobody is asked: every connection is closed at once."""
        root, stratum_port, _, _ = await self.start(drain_seconds=0)
        ignoring = await bare_client(stratum_port)
        with capturedLogs() as events:
            await root.stopService()
        await ignoring.closed
        self.assertEqual(ignoring.told("client.reconnect"), [])
        self.assertIn("0 miners asked to reconnect, 1 left to close", messages(events))


class MinerReconnectTests(RunningTree):
    """nomp-miner follows client.reconnect where it says, or stays where it is."""

    async def test_to_another_port(self) -> None:
        """client.reconnect with a host, port and wait (the control port's reconnect):
        the miner leaves, waits that long, and mines on that port."""
        first, second = free_port(), free_port()
        ports = [{"listen": f"tcp:{port}:interface=127.0.0.1", "diff": 0.0625} for port in (first, second)]
        root, _, address, redis_port = await self.start(5.0, ports=ports)
        miner = Miner(reactor, SCRYPT, f"{address}.rig1")
        await connect(miner, "127.0.0.1", first)
        self.assertTrue(await miner.authorized)
        miner.start()
        await until(lambda: miner.stats.accepted >= 2)

        command = f"reconnect litecoin all 127.0.0.1 {second} 1"
        answer = await threads.deferToThread(send, control_address(str(self.conf)), command, 30)
        self.assertEqual(answer, "ok litecoin: client.reconnect sent to 1 miner (all miners)")
        await until(lambda: bool(miner.reconnections) and miner.reconnections[0].accepted is not None)
        moved = miner.reconnections[0]
        self.assertEqual((moved.host, moved.port, moved.failed), ("127.0.0.1", second, None))
        assert moved.left is not None and moved.connected is not None
        self.assertGreaterEqual(moved.connected - moved.left, 1.0)  # it waited as told
        assert miner.client is not None and miner.client.transport is not None
        self.assertEqual(getattr(miner.client.transport.getPeer(), "port", None), second)
        await until(lambda: miner.accepted_here >= 2)
        await miner.stop()
        await root.stopService()
        self.assertEqual(miner.connections, 2)
        counters = redis_hash(redis_port, 0, f"{COIN}:stats")
        self.assertEqual(int(counters["validShares"]), miner.stats.accepted)

    def test_address(self) -> None:
        """No params: the same host and port; host, port (a string or a number) and wait
        are taken when given, null ones left as they are."""
        self.assertEqual(reconnect_address([], "pool", 3333), ("pool", 3333, 0.0))
        self.assertEqual(reconnect_address(["other", "4444"], "pool", 3333), ("other", 4444, 0.0))
        self.assertEqual(reconnect_address(["other", 4444, 5], "pool", 3333), ("other", 4444, 5.0))
        self.assertEqual(reconnect_address([None, None, 2], "pool", 3333), ("pool", 3333, 2.0))

    def test_unreadable(self) -> None:
        """A port or wait it cannot use is an error naming the params, not a guess."""
        for params in (
            ["h", "port"],
            ["h", "0"],
            ["h", 70000],
            ["h", 1, "soon"],
            ["h", 1, -1],
            [None, None, 1e9],
        ):
            with self.assertRaises(ValueError) as raised:
                reconnect_address(params, "pool", 3333)
            self.assertIn(repr(params), str(raised.exception))


class NotifyReader:
    """A bound Unix datagram socket, as systemd's notification socket."""

    def __init__(self, path: str) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(path)
        self.socket.setblocking(False)

    def read(self) -> list[str]:
        told = []
        while True:
            try:
                told += self.socket.recv(4096).decode().split("\n")
            except BlockingIOError:
                return told


class ServiceNotifierTests(TestCase):
    """What the process tells systemd (sd_notify)."""

    def reader(self, address: str) -> NotifyReader:
        reader = NotifyReader(address)
        self.addCleanup(reader.socket.close)
        return reader

    def test_path(self) -> None:
        """Assignments go in one datagram to the socket NOTIFY_SOCKET names."""
        path = str(Path(self.mktemp()).resolve())
        reader = self.reader(path)
        notifier = ServiceNotifier.from_environment({"NOTIFY_SOCKET": path})
        self.assertTrue(notifier.send("READY=1", "STATUS=up"))
        self.assertEqual(reader.read(), ["READY=1", "STATUS=up"])

    def test_abstract(self) -> None:
        """An address starting with @ is in the abstract namespace."""
        name = f"nomp-test-{free_port()}"
        reader = self.reader("\0" + name)
        self.assertTrue(ServiceNotifier(f"@{name}").send("STOPPING=1"))
        self.assertEqual(reader.read(), ["STOPPING=1"])

    def test_none(self) -> None:
        """Without NOTIFY_SOCKET nothing is sent."""
        self.assertFalse(ServiceNotifier.from_environment({}).send("READY=1"))

    def test_unreachable(self) -> None:
        """A socket that is not there is an error in the log, and the pool goes on."""
        missing = str(Path(self.mktemp()).resolve())
        with capturedLogs() as events:
            self.assertFalse(ServiceNotifier(missing).send("READY=1"))
        self.assertIn("systemd not told ['READY=1']: [Errno 2] No such file or directory", messages(events))


class ReadinessTests(TestCase):
    """READY=1 once every pool has had work, not before, and once."""

    def test_every_pool(self) -> None:
        """The first pool's job is not enough; the second's is; later jobs say nothing more."""
        path = str(Path(self.mktemp()).resolve())
        reader = NotifyReader(path)
        self.addCleanup(reader.socket.close)
        config = Config(Path(self.mktemp()), GlobalConfig(drain_seconds=0), ())
        root = NompService(config, reactor, notifier=ServiceNotifier(path))
        root.await_work(["a", "b"])
        root.startService()
        self.addCleanup(root.stopService)
        root.has_work("a")
        root.has_work("a")
        self.assertEqual(reader.read(), [])
        root.has_work("b")
        self.assertEqual(reader.read(), ["READY=1", "STATUS=every pool has work"])
        root.has_work("b")
        self.assertEqual(reader.read(), [])


class DrainConfigTests(ConfTestCase):
    """drain_seconds in config.yaml, and a systemd: listen whose socket is not there."""

    def test_drain_seconds(self) -> None:
        """5 seconds by default; 0 turns the drain off; a negative one is refused."""
        self.assertEqual(self.load().settings.drain_seconds, 5.0)
        self.settings["drain_seconds"] = 0
        self.assertEqual(self.load().settings.drain_seconds, 0)
        self.settings["drain_seconds"] = -1
        self.assertErrors("config.yaml: drain_seconds: must be >= 0")

    def test_systemd_socket_not_passed(self) -> None:
        """A port on a systemd socket this process was not given is refused, and the error says so."""
        self.pool["ports"][0]["listen"] = "systemd:domain=INET:name=stratum-3333"
        self.assertErrors(
            "pools/ltc.yaml: ports[0].listen: invalid endpoint 'systemd:domain=INET:name=stratum-3333': "
            "systemd passed no socket named 'stratum-3333': is the process started with the socket "
            "unit whose FileDescriptorName it is?"
        )
