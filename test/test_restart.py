"""Restarts that keep the miners: pool processes on listening sockets that
outlive them (systemd's socket activation, played by test.socketactivation),
real nomp-miners mining through them, litecoind regtest and redis-server.

At SIGTERM the old process stops accepting, sends its miners
``client.reconnect``, waits for them to leave, writes every share and
exits; the miners' new connections wait in the socket's backlog until a
process accepts them. Two orders: the new process started first and the
old one stopped then (a handover), and the old one stopped first and the
new one started once it is gone (``systemctl restart``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import reactor, threads
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, TestCase

from nomp.cli import send
from nomp.hashing import ALGORITHMS
from nomp.miner import Miner, connect
from test.poolconf import write_conf
from test.rediscli import redis, redis_hash
from test.servers import RPC_PASSWORD, RPC_USER, RedisServer, shared_regtest
from test.socketactivation import TWISTD, InheritedSockets, PoolProcess
from test.waiting import until

SCRYPT = ALGORITHMS["scrypt"]
COIN = "litecoin-regtest"
DIFFICULTY = 0.0625
MINERS = 4
START_TIMEOUT = 120.0  # seconds a pool process may take to have work (a loaded machine, a cold start)
BACK_TIMEOUT = 60.0  # seconds the miners may take to mine on the new process (the figures are far less)
CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "systemd"

log = Logger()


class RestartHarness:
    """One conf folder, its inherited sockets, its Redis, its miners, its processes."""

    def __init__(self, test: TestCase, drain_seconds: float = 10.0, **pool: Any) -> None:
        self.test = test
        self.pair = shared_regtest("restart")
        self.redis = RedisServer().start()
        test.addCleanup(self.redis.stop)
        # Two processes run side by side in a handover: every port is one they share.
        self.sockets = InheritedSockets(["stratum", "control", "web"])
        test.addCleanup(self.sockets.close)
        self.address = self.pair.new_address()
        pool.setdefault("ports", [{"listen": InheritedSockets.endpoint("stratum"), "diff": DIFFICULTY}])
        self.conf, _ = write_conf(
            Path(test.mktemp()).resolve(),
            self.pair.miner.url,
            RPC_USER,
            RPC_PASSWORD,
            self.address,
            self.redis.port,
            **pool,
        )
        settings_file = self.conf / "config.yaml"
        settings = yaml.safe_load(settings_file.read_text())
        settings["drain_seconds"] = drain_seconds
        settings["control"]["listen"] = InheritedSockets.endpoint("control")
        settings["web"]["listen"] = InheritedSockets.endpoint("web")
        settings["logging"]["level"] = "info"  # the drain's lines, in the output of a failed test
        settings_file.write_text(yaml.safe_dump(settings))
        self.processes: list[PoolProcess] = []
        self.miners: list[Miner] = []

    def process(self) -> PoolProcess:
        started = PoolProcess(f"pool{len(self.processes) + 1}", self.conf, self.sockets).start()
        self.processes.append(started)
        self.test.addCleanup(started.kill_if_running)
        return started

    async def ready(self, process: PoolProcess) -> None:
        """Once ``process`` said READY=1 (every pool has work); fails if it exits first."""
        await until(lambda: process.ready.called or not process.running, timeout=START_TIMEOUT)
        if not process.ready.called:
            self.test.fail(f"{process.name} exited before it was ready:\n{process.log()}")

    async def start_miners(self) -> None:
        for rig in range(MINERS):
            miner = Miner(reactor, SCRYPT, f"{self.address}.rig{rig}")
            self.miners.append(miner)
            await connect(miner, "127.0.0.1", self.sockets.port("stratum"))
            self.test.assertTrue(await miner.authorized)
            miner.start()
        await until(lambda: all(m.stats.accepted >= 3 for m in self.miners), timeout=BACK_TIMEOUT)

    def all_back(self, restarts: int) -> bool:
        """Every miner followed ``restarts`` client.reconnects and has a share
        accepted on its new connection (or one failed: the test says which)."""
        return all(
            len(m.reconnections) == restarts
            and (m.reconnections[-1].accepted is not None or m.reconnections[-1].failed is not None)
            for m in self.miners
        )

    def back_after(self, signalled: float) -> list[tuple[float, float]]:
        """Seconds from the SIGTERM to each miner's first job from the new
        process, and to its first share the new process accepted."""
        back = []
        for miner in self.miners:
            moved = miner.reconnections[-1]
            self.test.assertIsNone(moved.failed, miner.user)
            assert moved.job is not None and moved.accepted is not None
            back.append((round(moved.job - signalled, 3), round(moved.accepted - signalled, 3)))
        return back

    async def mine_on(self, shares: int = 2) -> None:
        await until(lambda: all(m.accepted_here >= shares for m in self.miners), timeout=BACK_TIMEOUT)

    async def stop(self, last: PoolProcess) -> None:
        for miner in self.miners:
            await miner.stop()
        last.terminate()
        self.test.assertEqual(await last.ended, -15, last.log())

    def check_every_share_once(self) -> None:
        """Redis holds each share a miner was told was accepted once, and each refused one once."""
        accepted = sum(m.stats.accepted for m in self.miners)
        refused = 0
        for miner in self.miners:
            assert miner.stats.rejected is not None
            self.test.assertEqual(set(miner.stats.rejected) - {"21 job not found"}, set(), miner.user)
            refused += miner.stats.rejected_total
            self.test.assertEqual(miner.connect_failures, 0, miner.user)  # no connection refused
        counters = redis_hash(self.redis.port, 0, f"{COIN}:stats")
        self.test.assertEqual(int(counters["validShares"]), accepted)
        self.test.assertEqual(int(counters.get("invalidShares", 0)), refused)
        rounds = [
            f"{COIN}:shares:roundCurrent",
            *redis(self.redis.port, 0, "KEYS", f"{COIN}:shares:round[0-9]*"),
        ]
        for miner in self.miners:
            credited = sum(float(redis_hash(self.redis.port, 0, key).get(miner.user, 0)) for key in rounds)
            self.test.assertAlmostEqual(credited, DIFFICULTY * miner.stats.accepted, places=6)


class RestartTests(TestCase):
    """A restart under load refuses no connection and loses or doubles no share."""

    timeout = 600

    async def test_handover(self) -> None:
        """The new process is started on the same sockets, then the old one gets
        SIGTERM: its miners reconnect to the new one and mine there."""
        harness = RestartHarness(self)
        old = harness.process()
        await harness.ready(old)
        await harness.start_miners()
        new = harness.process()
        await harness.ready(new)

        signalled = reactor.seconds()
        old.terminate()
        await until(lambda: harness.all_back(1), timeout=BACK_TIMEOUT)
        back = harness.back_after(signalled)
        self.assertEqual(await old.ended, -15, old.log())
        self.assertEqual(old.told[-2:], ["STOPPING=1", "STATUS=stopping: the miners are asked to reconnect"])
        self.assertIn("drained in", old.log())
        self.assertIn(f"{MINERS} miners asked to reconnect, 0 left to close", old.log())
        log.info("handover: (first job, first share accepted) after {back} s", back=sorted(back))

        await harness.mine_on()
        await harness.stop(new)
        for miner in harness.miners:
            self.assertEqual(miner.connections, 2, miner.user)
        harness.check_every_share_once()

    async def test_stop_then_start(self) -> None:
        """The old process gets SIGTERM and exits, then the new one starts (as
        ``systemctl restart`` does): the miners' connections wait in the
        socket's backlog meanwhile, and are mining on the new one once it runs."""
        harness = RestartHarness(self)
        old = harness.process()
        await harness.ready(old)
        await harness.start_miners()

        signalled = reactor.seconds()
        old.terminate()
        self.assertEqual(await old.ended, -15, old.log())
        self.assertIn(f"{MINERS} miners asked to reconnect, 0 left to close", old.log())
        new = harness.process()
        await until(lambda: harness.all_back(1), timeout=BACK_TIMEOUT)
        back = harness.back_after(signalled)
        log.info("stop then start: (first job, first share accepted) after {back} s", back=sorted(back))

        await harness.mine_on()
        await harness.stop(new)
        harness.check_every_share_once()


class InheritedSocketTests(TestCase):
    """What a pool process does with the sockets it is given, and without them."""

    timeout = 180

    async def test_proxy_protocol(self) -> None:
        """A PROXY-protocol port on an inherited socket reads the proxy's header:
        the connection is the miner's address, as the control port lists it."""
        listen = InheritedSockets.endpoint("stratum")
        harness = RestartHarness(
            self, ports=[{"listen": listen, "diff": DIFFICULTY, "proxy_protocol": ["127.0.0.1"]}]
        )
        process = harness.process()
        await harness.ready(process)
        stratum = harness.sockets.port("stratum")
        header = f"PROXY TCP4 203.0.113.7 127.0.0.1 4444 {stratum}\r\n".encode()
        subscribe = b'{"id": 1, "method": "mining.subscribe", "params": []}\n'
        connection = socket.create_connection(("127.0.0.1", stratum), timeout=30)
        self.addCleanup(connection.close)
        reply = await threads.deferToThread(exchange, connection, header + subscribe)
        self.assertEqual(json.loads(reply)["id"], 1)
        control = ("127.0.0.1", harness.sockets.port("control"))
        listed = await threads.deferToThread(send, control, "miners litecoin all", 30)
        self.assertIn("1 miner (all miners): 203.0.113.7:4444 (", listed)
        connection.close()  # it would not heed client.reconnect: the stop would wait for it
        process.terminate()
        self.assertEqual(await process.ended, -15, process.log())

    async def test_socket_not_passed(self) -> None:
        """A port on a socket the process was not given stops its start, status 1,
        with the socket's name."""
        harness = RestartHarness(self)
        harness.sockets = InheritedSockets(["control", "web"])  # no "stratum"
        self.addCleanup(harness.sockets.close)
        process = harness.process()
        self.assertEqual(await process.ended, 1, process.log())
        self.assertIn("systemd passed no socket named 'stratum'", process.log())
        self.assertFalse(process.ready.called)


def exchange(connection: socket.socket, data: bytes) -> bytes:
    """Send ``data`` and read one line back (blocking: run in a thread); the connection stays open."""
    connection.sendall(data)
    with connection.makefile("rb") as lines:
        return lines.readline()


class UnitFileTests(TestCase):
    """The systemd units in contrib/systemd are ones systemd loads."""

    def test_systemd_analyze_verify(self) -> None:
        """systemd-analyze verify finds no error in the service and socket units
        (ExecStart pointed at this twistd: verify wants the program to exist)."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed: the units are not checked here")
        folder = Path(self.mktemp())
        folder.mkdir()
        for unit in CONTRIB.iterdir():
            text = unit.read_text()
            if unit.name == "nomp.service":
                self.assertIn("ExecStart=/opt/nomp/venv/bin/twistd ", text)
                text = text.replace("/opt/nomp/venv/bin/twistd", TWISTD)
            (folder / unit.name).write_text(text)
        # A template is verified through an instance of it.
        (folder / "nomp-stratum@3333.socket").symlink_to("nomp-stratum@.socket")
        units = ["nomp.service", "nomp-control.socket", "nomp-web.socket", "nomp-stratum@3333.socket"]
        checked = subprocess.run(
            [analyze, "verify", "--man=no", *units],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,  # its status is what the test looks at
        )
        self.assertEqual((checked.returncode, checked.stdout + checked.stderr), (0, ""))

    def test_hardening(self) -> None:
        """The service unit keeps the hardening options the README promises."""
        service = (CONTRIB / "nomp.service").read_text().splitlines()
        for option in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "ProtectHome=yes",
            "LimitNOFILE=1048576",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "Type=notify",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ):
            self.assertIn(option, service)
