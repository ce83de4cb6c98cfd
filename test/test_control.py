"""The control port and nomp-cli."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, LogLevelFilterPredicate, PredicateResult
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp import cli
from nomp.config import load_config
from nomp.control.operations import ProcessOperations, ShareRates
from nomp.control.service import ControlProtocol, control_service
from nomp.control.token import TokenFileError, load_token, token_matches
from nomp.pool.service import PoolService
from nomp.stratum.targets import MinerTarget, TargetError, parse_target
from test.fakes import (
    Connection,
    FakeBlockRecords,
    RecordingTransport,
    StratumHarness,
    mainnet_template,
    pool_config,
)
from test.servers import free_port
from test.test_config_paths import SHIPPED_CONF
from test.test_stratum_protocol import NOW, PORTS


class RecordingPool(PoolService):
    """A PoolService that only records blocknotify calls (never started)."""

    def __init__(self, name: str = "litecoin") -> None:
        config = dataclasses.replace(load_config(SHIPPED_CONF).pools[0], name=name)
        super().__init__(config, reactor, lambda message: None, FakeBlockRecords())
        self.notified: list[str | None] = []

    def block_notify(self, block_hash: str | None = None) -> defer.Deferred[None]:
        self.notified.append(block_hash)
        return defer.succeed(None)


async def run_nomp_cli(*argv: str) -> tuple[int, str]:
    """nomp-cli in a thread (it blocks on its socket), with its output captured."""
    output = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            return cli.main(list(argv))

    status: Any = await deferToThread(call)
    return int(status), output.getvalue()


class ControlProtocolTests(SynchronousTestCase):
    """Commands, one line each, one reply line each."""

    def setUp(self) -> None:
        self.pool = RecordingPool()
        self.protocol = ControlProtocol({"litecoin": self.pool})
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, line: bytes) -> str:
        self.transport.clear()
        self.protocol.dataReceived(line + b"\n")
        written: bytes = self.transport.value()
        return written.decode()

    def test_help(self) -> None:
        """help lists every command with its arguments, on one line."""
        answer = self.send(b"help")
        self.assertTrue(answer.startswith("ok commands: help | pools | blocknotify <pool> [<blockhash>] | "))
        for usage in (
            "miners <pool> <target>",
            "reconnect <pool> <target> [<host> <port> [<wait seconds>]]",
            "message <pool> <target> <text...>",
            "bans <pool>",
            "ban <pool> <ip> [<seconds>] [<reason...>]",
            "unban <pool> <ip>",
            "<target> is all|worker <name>|ip <ip>[:<port>]",
        ):
            self.assertIn(usage, answer)
        self.assertEqual(answer.count("\n"), 1)

    def test_pools(self) -> None:
        """pools names each pool, its coin and whether it is ready."""
        self.assertEqual(self.send(b"pools"), "ok litecoin (litecoin-regtest, starting)\n")

    def test_blocknotify(self) -> None:
        """blocknotify by pool name or coin name, with or without a hash, reaches the pool."""
        block_hash = "ab" * 32
        self.assertEqual(self.send(f"blocknotify litecoin {block_hash}".encode()), "ok litecoin notified\n")
        self.assertEqual(self.send(b"BLOCKNOTIFY Litecoin-Regtest"), "ok litecoin notified\n")
        self.assertEqual(self.pool.notified, [block_hash, None])

    def test_refusals(self) -> None:
        """Bad commands get a clear error line and change nothing."""
        cases = {
            b"blocknotify": "error usage: blocknotify <pool> [<blockhash>]",
            b"blocknotify nosuch": "error no pool 'nosuch'",
            b"blocknotify litecoin xyz": "error a block hash is 64 hex digits",
            b"blocknotify a b c": "error usage: blocknotify <pool> [<blockhash>]",
            b"launch rockets": "error unknown command 'launch'",
            b"\xff\xfe": "error not UTF-8 text",
        }
        for line, answer in cases.items():
            self.assertTrue(self.send(line).startswith(answer), line)
        self.assertEqual(self.pool.notified, [])
        self.assertFalse(self.transport.disconnecting)

    def test_quit_and_long_lines(self) -> None:
        """quit closes the connection, and so does a line over the limit (after an error)."""
        self.assertEqual(self.send(b"quit"), "ok bye\n")
        self.assertTrue(self.transport.disconnecting)
        other = StringTransport()
        protocol = ControlProtocol({})
        protocol.makeConnection(other)
        protocol.dataReceived(b"x" * 5000)
        self.assertEqual(other.value(), b"error line too long\n")
        self.assertTrue(other.disconnecting)

    def test_empty_line(self) -> None:
        """An empty line gets no answer."""
        self.assertEqual(self.send(b""), "")

    def test_switches(self) -> None:
        """switches answers each switch of the process as JSON on one line
        (what a main process sums its workers' miners from); refused with
        arguments, and where the process has no such figures."""
        documents = [{"name": "scrypt", "current": "litecoin", "miners": 3}]
        protocol = ControlProtocol({}, switch_documents=lambda: documents)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"switches\n")
        self.assertEqual(transport.value(), b'ok [{"name":"scrypt","current":"litecoin","miners":3}]\n')
        transport.clear()
        protocol.dataReceived(b"switches scrypt\n")
        self.assertEqual(transport.value(), b"error usage: switches\n")
        self.assertEqual(self.send(b"switches"), "error switches is not available on this control port\n")

    def test_metrics(self) -> None:
        """metrics answers the process's miner-side Prometheus text as one JSON
        string (what a main process shows its workers' figures from); refused
        with arguments, and where the process has no such figures."""
        protocol = ControlProtocol({}, miner_metrics=lambda: "nomp_hashing_threads 2.0\n")
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"metrics\n")
        self.assertEqual(transport.value(), b'ok "nomp_hashing_threads 2.0\\n"\n')
        transport.clear()
        protocol.dataReceived(b"metrics all\n")
        self.assertEqual(transport.value(), b"error usage: metrics\n")
        self.assertEqual(self.send(b"metrics"), "error metrics is not available on this control port\n")


class NompCliTests(TestCase):
    """nomp-cli against a real control port."""

    def setUp(self) -> None:
        self.pool = RecordingPool()
        self.port = free_port()
        self.service = control_service(
            f"tcp:{self.port}:interface=127.0.0.1", {"litecoin": self.pool}, reactor
        )
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)

    async def run_cli(self, *argv: str) -> tuple[int, str]:
        return await run_nomp_cli(*argv)

    async def test_blocknotify(self) -> None:
        """The daemon's blocknotify line reaches the pool; the exit status says ok."""
        block_hash = "cd" * 32
        status, output = await self.run_cli(
            "--control", f"127.0.0.1:{self.port}", "blocknotify", "litecoin", block_hash
        )
        self.assertEqual((status, output), (0, "ok litecoin notified\n"))
        self.assertEqual(self.pool.notified, [block_hash])

    async def test_error_status(self) -> None:
        """An error answer exits 1."""
        status, output = await self.run_cli("--control", f"127.0.0.1:{self.port}", "blocknotify", "nosuch")
        self.assertEqual((status, output), (1, "error no pool 'nosuch'\n"))

    async def test_unreachable(self) -> None:
        """No control port: exit 2 and a clear message."""
        status, output = await self.run_cli("--control", f"127.0.0.1:{free_port()}", "help")
        self.assertEqual(status, 2)
        self.assertIn("cannot reach the control port", output)

    async def test_port_from_conf(self) -> None:
        """Without --control, the port comes from the conf folder's config.yaml."""
        conf = Path(self.mktemp())
        conf.mkdir()
        settings = yaml.safe_load((SHIPPED_CONF / "config.yaml").read_text())
        settings["control"]["listen"] = f"tcp:{self.port}:interface=127.0.0.1"
        settings["web"] = {"enabled": False}
        (conf / "config.yaml").write_text(yaml.safe_dump(settings))
        status, output = await self.run_cli("-c", str(conf), "pools")
        self.assertEqual((status, output), (0, "ok litecoin (litecoin-regtest, starting)\n"))

    def test_control_address(self) -> None:
        """Endpoint strings map to the address to connect to."""
        self.assertEqual(cli.control_address("/nonexistent"), cli.DEFAULT_CONTROL)
        self.assertEqual(cli.control_address(str(SHIPPED_CONF)), ("127.0.0.1", 17117))


class MinerPool:
    """A StratumPool (pool "litecoin", any usernames) with miners from known
    addresses: alice's two rigs on 10.0.0.1, bob on 10.0.0.2, carol on IPv6."""

    def __init__(self, **changes: Any) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.harness = StratumHarness(pool_config(ports=PORTS, usernames="any", **changes), self.clock)
        self.server = self.harness.server
        self.harness.new_job(mainnet_template())
        self.alice1 = self.connect("10.0.0.1", 4001, "alice.rig1")
        self.alice2 = self.connect("10.0.0.1", 4002, "alice.rig2")
        self.bob = self.connect("10.0.0.2", 4001, "bob")
        self.carol = self.connect("2001:db8::1", 4003, "carol")
        self.miners = (self.alice1, self.alice2, self.bob, self.carol)

    def connect(self, ip: str, port: int, worker: str) -> Connection:
        """A miner from ``ip``:``port`` that subscribed and authorized ``worker`` (messages read)."""
        address = (IPv6Address if ":" in ip else IPv4Address)("TCP", ip, port)
        protocol = self.server.factory(PORTS[0]).buildProtocol(address)
        assert protocol is not None
        transport = RecordingTransport(peerAddress=address)
        protocol.makeConnection(transport)
        connection = Connection(protocol, transport)
        connection.subscribe()
        connection.authorize(worker)
        return connection

    def received(self) -> dict[str, list[dict[str, Any]]]:
        """What each miner was sent since the last look, by worker."""
        return {",".join(m.session.workers): m.read() for m in self.miners}


class ControlCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = MinerPool()
        self.server = self.pool.server
        self.protocol = ControlProtocol({}, {"litecoin": self.server})
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, line: str) -> str:
        self.transport.clear()
        self.protocol.dataReceived(line.encode() + b"\n")
        written: bytes = self.transport.value()
        answer = written.decode()
        self.assertEqual(answer.count("\n"), 1, answer)
        return answer.rstrip("\n")


class TargetTests(SynchronousTestCase):
    """Target words, as the control commands read them."""

    def test_targets(self) -> None:
        """all, worker NAME, ip IP, ip IP:PORT and ip [IPv6]:PORT; the words after are given back."""
        cases = {
            ("all", "x"): (MinerTarget(), ["x"]),
            ("ALL",): (MinerTarget(), []),
            ("worker", "alice.rig1", "a", "b"): (MinerTarget(worker="alice.rig1"), ["a", "b"]),
            ("ip", "10.0.0.1"): (MinerTarget(ip="10.0.0.1"), []),
            ("ip", "10.0.0.1:4001"): (MinerTarget(ip="10.0.0.1", port=4001), []),
            ("ip", "2001:DB8::1"): (MinerTarget(ip="2001:db8::1"), []),
            ("ip", "[2001:db8::1]:4003"): (MinerTarget(ip="2001:db8::1", port=4003), []),
            ("ip", "::ffff:10.0.0.1"): (MinerTarget(ip="10.0.0.1"), []),
        }
        for words, expected in cases.items():
            self.assertEqual(parse_target(words), expected, words)

    def test_bad_targets(self) -> None:
        """Words that name no target say why."""
        cases = {
            (): "missing target",
            ("everyone",): "unknown target 'everyone'",
            ("worker",): "missing worker",
            ("ip", "10.0.0.300"): "'10.0.0.300' is not an IP address or IP:port",
            ("ip", "10.0.0.1:0"): "'0' is not a port number",
            ("ip", "10.0.0.1:99999"): "'99999' is not a port number",
            ("ip", "10.0.0.1:port"): "'port' is not a port number",
            ("ip", "host.example:3333"): "is not an IP address or IP:port",
        }
        for words, problem in cases.items():
            with self.assertRaises(TargetError) as caught:
                parse_target(words)
            self.assertIn(problem, str(caught.exception), words)

    def test_worker_matches_its_rigs(self) -> None:
        """A worker name reaches that worker and NAME.<rig>, not names that only start alike."""
        target = MinerTarget(worker="alice")
        self.assertTrue(target.matches(["alice"], None, None))
        self.assertTrue(target.matches(["bob", "alice.rig1"], None, None))
        self.assertFalse(target.matches(["alicea", "alice_2"], None, None))
        self.assertFalse(MinerTarget(worker="alice.rig1").matches(["alice"], None, None))


class MinerCommandTests(ControlCase):
    """miners, reconnect and message: the miners a target picks, and what they are sent."""

    def test_miners(self) -> None:
        """miners lists the connections a target picks: address, workers, agent, extranonce1."""
        alice1 = self.pool.alice1.session.extranonce1
        assert alice1 is not None
        self.assertEqual(
            self.send("miners litecoin ip 10.0.0.1:4001"),
            f"ok litecoin: 1 miner (connection 10.0.0.1:4001): 10.0.0.1:4001 (alice.rig1; "
            f"test-miner/1.0; extranonce1 {alice1.hex()})",
        )
        answer = self.send("miners LITECOIN-REGTEST all")
        self.assertTrue(answer.startswith("ok litecoin: 4 miners (all miners): "), answer)
        self.assertIn("[2001:db8::1]:4003 (carol;", answer)
        self.assertTrue(self.send("miners litecoin worker alice").startswith("ok litecoin: 2 miners"))
        self.assertTrue(self.send("miners litecoin ip 10.0.0.1").startswith("ok litecoin: 2 miners"))
        self.assertEqual(self.send("miners litecoin worker dave"), "ok litecoin: no miners (worker dave)")

    def test_reconnect_a_worker(self) -> None:
        """reconnect with host, port and wait reaches the worker's connections only (the port as a
        string, as cgminer reads it); they stay open."""
        self.assertEqual(
            self.send("reconnect litecoin worker alice stratum.example.com 3333 5"),
            "ok litecoin: client.reconnect sent to 2 miners (worker alice)",
        )
        message = {"id": None, "method": "client.reconnect", "params": ["stratum.example.com", "3333", 5]}
        self.assertEqual(
            self.pool.received(),
            {"alice.rig1": [message], "alice.rig2": [message], "bob": [], "carol": []},
        )
        self.assertFalse(any(m.closing for m in self.pool.miners))

    def test_reconnect_one_connection_in_place(self) -> None:
        """Without host and port the params are empty: the miner reconnects to where it is."""
        self.assertEqual(
            self.send("reconnect litecoin ip [2001:db8::1]:4003"),
            "ok litecoin: client.reconnect sent to 1 miner (connection [2001:db8::1]:4003)",
        )
        received = self.pool.received()
        self.assertEqual(received.pop("carol"), [{"id": None, "method": "client.reconnect", "params": []}])
        self.assertEqual(list(received.values()), [[], [], []])
        self.send("reconnect litecoin ip 10.0.0.2 pool.example.com 3334")
        self.assertEqual(self.pool.bob.read()[0]["params"], ["pool.example.com", "3334"])

    def test_message_to_all(self) -> None:
        """message sends its words as one text to every miner of the pool."""
        self.assertEqual(
            self.send("message litecoin all Maintenance at 12:00 UTC,  back at 12:10"),
            "ok litecoin: client.show_message sent to 4 miners (all miners)",
        )
        expected = {
            "id": None,
            "method": "client.show_message",
            "params": ["Maintenance at 12:00 UTC, back at 12:10"],
        }
        self.assertEqual(list(self.pool.received().values()), [[expected]] * 4)

    def test_closing_connections_are_skipped(self) -> None:
        """A connection being closed is not a target."""
        self.pool.bob.protocol.close()
        self.assertEqual(
            self.send("message litecoin ip 10.0.0.2 hello"), "error litecoin: no miner matches ip 10.0.0.2"
        )

    def test_refusals(self) -> None:
        """Bad commands get a clear error line and send nothing."""
        cases = {
            "miners": "error usage: miners <pool> <target>",
            "miners nosuch all": "error no pool 'nosuch'",
            "miners litecoin all extra": "error usage: miners <pool> <target>",
            "reconnect litecoin everyone": "error unknown target 'everyone'",
            "reconnect litecoin all host.example": "error usage: reconnect <pool> <target> [<host> <port>",
            "reconnect litecoin all host.example 0": "error port must be a whole number 1-65535, not '0'",
            "reconnect litecoin all host.example 3333 -1": "error wait must be a whole number 0-86400",
            "reconnect litecoin all host.example 3333 1 2": "error usage: reconnect",
            "reconnect litecoin ip 10.0.0.9": "error litecoin: no miner matches ip 10.0.0.9",
            "message litecoin all": "error usage: message <pool> <target> <text...>",
            "message litecoin worker": "error missing worker",
            f"message litecoin all {'x' * 600}": "error a message is at most 512 characters",
            "message litecoin worker dave hi": "error litecoin: no miner matches worker dave",
        }
        for line, answer in cases.items():
            self.assertTrue(self.send(line).startswith(answer), (line, self.send(line)))
        self.assertEqual(list(self.pool.received().values()), [[], [], [], []])

    def test_no_stratum_servers(self) -> None:
        """A control port given no Stratum servers knows no pool for these commands."""
        protocol = ControlProtocol({})
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"bans litecoin\n")
        self.assertEqual(transport.value(), b"error no pool 'litecoin'\n")

    def test_user_agent_cannot_break_the_line(self) -> None:
        """A user agent with a newline in it is listed on the reply's one line."""
        self.pool.alice1.request("mining.subscribe", ["evil\nok fake"])
        answer = self.send("miners litecoin ip 10.0.0.1:4001")
        self.assertIn("evil ok fake", answer)


class BanCommandTests(ControlCase):
    """bans, ban and unban."""

    def test_ban_list_unban(self) -> None:
        """ban with a time and reason closes the IP's connections; bans lists time left and reason;
        unban lifts it."""
        self.assertEqual(
            self.send("ban litecoin 10.0.0.1 120 sent junk all night"),
            "ok litecoin: 10.0.0.1 banned for 120 s: sent junk all night",
        )
        self.assertTrue(self.pool.alice1.closing and self.pool.alice2.closing)
        self.assertFalse(self.pool.bob.closing)
        self.pool.clock.advance(30)
        self.assertEqual(
            self.send("bans litecoin"), "ok litecoin: 1 ban: 10.0.0.1 (90 s left: sent junk all night)"
        )
        self.assertEqual(
            self.send("ban litecoin 2001:DB8::0:5"),
            "ok litecoin: 2001:db8::5 banned for 600 s: banned by the operator",
        )
        self.assertEqual(
            self.send("bans litecoin"),
            "ok litecoin: 2 bans: 10.0.0.1 (90 s left: sent junk all night); "
            "2001:db8::5 (600 s left: banned by the operator)",
        )
        self.assertEqual(self.send("unban litecoin 10.0.0.1"), "ok litecoin: 10.0.0.1 unbanned")
        self.assertEqual(self.send("unban litecoin 10.0.0.1"), "ok litecoin: 10.0.0.1 was not banned")
        self.assertEqual([b.ip for b in self.server.bans.list()], ["2001:db8::5"])
        self.assertEqual(
            self.send("ban litecoin 10.0.0.2 scraping"), "ok litecoin: 10.0.0.2 banned for 600 s: scraping"
        )

    def test_no_bans(self) -> None:
        self.assertEqual(self.send("bans litecoin"), "ok litecoin: no bans")

    def test_refusals(self) -> None:
        """A string that is not an IP, a time that is not > 0, a whitelisted IP: clear errors, no ban."""
        cases = {
            "ban litecoin": "error usage: ban <pool> <ip> [<seconds>] [<reason...>]",
            "ban litecoin 10.0.0.300": "error '10.0.0.300' is not an IP address",
            "ban litecoin miner.example.com 60": "error 'miner.example.com' is not an IP address",
            "ban litecoin 10.0.0.1 0": "error a ban time is a number of seconds > 0",
            "ban litecoin 10.0.0.1 -5 reason": "error a ban time is a number of seconds > 0",
            "ban litecoin 10.0.0.1 inf": "error a ban time is a number of seconds > 0",
            "ban nosuch 10.0.0.1": "error no pool 'nosuch'",
            "bans": "error usage: bans <pool>",
            "unban litecoin": "error usage: unban <pool> <ip>",
            "unban litecoin 10.0.0.1 extra": "error usage: unban <pool> <ip>",
            "unban litecoin nobody": "error 'nobody' is not an IP address",
        }
        for line, answer in cases.items():
            self.assertEqual(self.send(line), answer, line)
        self.assertEqual(self.server.bans.list(), ())
        self.assertFalse(any(m.closing for m in self.pool.miners))

    def test_whitelisted(self) -> None:
        """A whitelisted IP is not banned, and the answer says so."""
        banning = dataclasses.replace(pool_config().banning, whitelist=(ip_network("10.0.0.0/24"),))
        self.protocol = ControlProtocol({}, {"litecoin": MinerPool(banning=banning).server})
        self.protocol.makeConnection(self.transport)
        self.assertEqual(
            self.send("ban litecoin 10.0.0.1"), "error litecoin: 10.0.0.1 is whitelisted: not banned"
        )


class NompCliMinerTests(TestCase):
    """nomp-cli sends the miner and ban commands through a real control port."""

    def setUp(self) -> None:
        self.pool = MinerPool()
        self.port = free_port()
        self.service = control_service(
            f"tcp:{self.port}:interface=127.0.0.1", {}, reactor, {"litecoin": self.pool.server}
        )
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)

    async def test_message_and_ban(self) -> None:
        """A message with spaces and a line break in it arrives as one line of text; ban answers ok."""
        control = f"127.0.0.1:{self.port}"
        status, output = await run_nomp_cli(
            "--control", control, "message", "litecoin", "worker", "bob", "Back in\nfive"
        )
        self.assertEqual(
            (status, output), (0, "ok litecoin: client.show_message sent to 1 miner (worker bob)\n")
        )
        self.assertEqual(self.pool.bob.read()[0]["params"], ["Back in five"])
        status, output = await run_nomp_cli(
            "--control", control, "ban", "litecoin", "10.0.0.2", "60", "flooding"
        )
        self.assertEqual((status, output), (0, "ok litecoin: 10.0.0.2 banned for 60 s: flooding\n"))
        self.assertTrue(self.pool.bob.closing)


class FakeOperations:
    """Operations that record what they were asked; reload and payments answer when told."""

    def __init__(self) -> None:
        self.level = "info"
        self.shutdowns = 0
        self.asked: list[tuple[str, str | None]] = []
        self.pending: list[defer.Deferred[str]] = []

    def status(self) -> str:
        return "up 5s; litecoin (litecoin-regtest): ready, 4 miners, 1.50 shares/s; Redis up"

    def set_log_level(self, level: str) -> str:
        before, self.level = self.level, level
        return before

    def payments(self, pool: str, action: str) -> defer.Deferred[str]:
        self.asked.append((f"payments {action}", pool))
        answer: defer.Deferred[str] = defer.Deferred()
        self.pending.append(answer)
        return answer

    def reload(self, pool: str | None) -> defer.Deferred[str]:
        self.asked.append(("reload", pool))
        answer: defer.Deferred[str] = defer.Deferred()
        self.pending.append(answer)
        return answer

    def shutdown(self) -> None:
        self.shutdowns += 1


class ProcessCommandTests(ControlCase):
    """status, loglevel, payments, reload, reloadpool, shutdown and kick."""

    def setUp(self) -> None:
        super().setUp()
        self.operations = FakeOperations()
        self.clock = task.Clock()
        self.protocol = ControlProtocol({}, {"litecoin": self.server}, self.operations, clock=self.clock)
        self.protocol.makeConnection(self.transport)

    def test_status(self) -> None:
        """status answers the process's state on one line."""
        self.assertEqual(
            self.send("status"),
            "ok up 5s; litecoin (litecoin-regtest): ready, 4 miners, 1.50 shares/s; Redis up",
        )

    def test_loglevel(self) -> None:
        """loglevel sets the level (warning is warn) and says the one before."""
        self.assertEqual(self.send("loglevel DEBUG"), "ok log level debug (was info)")
        self.assertEqual(self.send("loglevel warning"), "ok log level warn (was debug)")
        self.assertEqual(self.operations.level, "warn")

    def test_answers_that_take_time(self) -> None:
        """payments and reload answer when done; lines sent meanwhile are answered after, in order."""
        self.transport.clear()
        self.protocol.dataReceived(b"payments litecoin run\nstatus\nreloadpool LITECOIN\nloglevel error\n")
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.operations.asked, [("payments run", "litecoin")])
        self.operations.pending[0].callback("ok pool litecoin: immature 0, confirmed 1")
        self.assertEqual(self.operations.asked, [("payments run", "litecoin"), ("reload", "LITECOIN")])
        self.assertEqual(
            self.transport.value().decode().splitlines(),
            ["ok pool litecoin: immature 0, confirmed 1", self.operations.status().join(["ok ", ""])],
        )
        self.operations.pending[1].callback("ok reloaded: nothing changed live")
        self.assertEqual(
            self.transport.value().decode().splitlines()[2:],
            ["ok reloaded: nothing changed live", "ok log level error (was info)"],
        )
        self.transport.clear()
        self.protocol.dataReceived(b"reload\n")
        self.assertEqual((self.transport.value(), self.operations.asked[-1]), (b"", ("reload", None)))

    def test_failed_answer(self) -> None:
        """A command whose work fails answers an internal error, and the connection goes on."""
        self.transport.clear()
        self.protocol.dataReceived(b"reload\n")
        self.operations.pending[0].errback(RuntimeError("bug"))
        self.assertEqual(self.transport.value(), b"error internal error\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(self.send("status").startswith("ok up"))

    def test_shutdown(self) -> None:
        """shutdown answers first, then stops the process on the reactor's next turn."""
        self.assertEqual(self.send("shutdown"), "ok shutting down")
        self.assertEqual(self.operations.shutdowns, 0)
        self.clock.advance(0)
        self.assertEqual(self.operations.shutdowns, 1)

    def test_kick(self) -> None:
        """kick closes the connections a target picks, and no others."""
        self.assertEqual(
            self.send("kick litecoin worker alice"), "ok litecoin: 2 miners kicked (worker alice)"
        )
        self.assertTrue(self.pool.alice1.closing and self.pool.alice2.closing)
        self.assertFalse(self.pool.bob.closing or self.pool.carol.closing)
        self.assertEqual(self.send("kick litecoin ip 10.0.0.2"), "ok litecoin: 1 miner kicked (ip 10.0.0.2)")

    def test_refusals(self) -> None:
        """Each bad process command gets its own error and does nothing."""
        cases = {
            "status now": "error usage: status",
            "loglevel": "error usage: loglevel debug|info|warn|error|critical",
            "loglevel loud": "error unknown log level 'loud'; usage: loglevel debug|info|warn|error|critical",
            "loglevel info debug": "error usage: loglevel",
            "payments": "error usage: payments <pool> run|audit",
            "payments litecoin": "error usage: payments <pool> run|audit",
            "payments litecoin pay": "error unknown payments action 'pay'; usage: payments <pool> run|audit",
            "reload litecoin": "error usage: reload",
            "reloadpool": "error usage: reloadpool <pool>",
            "reloadpool a b": "error usage: reloadpool <pool>",
            "shutdown now": "error usage: shutdown",
            "kick litecoin": "error usage: kick <pool> <target>",
            "kick nosuch all": "error no pool 'nosuch'",
            "kick litecoin all extra": "error usage: kick <pool> <target>",
            "kick litecoin worker dave": "error litecoin: no miner matches worker dave",
            "auth sometoken": "error this control port has no token to check (control.token_file is not set)",
        }
        for line, answer in cases.items():
            self.assertTrue(self.send(line).startswith(answer), (line, self.send(line)))
        self.assertEqual(
            (self.operations.asked, self.operations.shutdowns, self.operations.level), ([], 0, "info")
        )
        self.assertFalse(any(m.closing for m in self.pool.miners))

    def test_without_operations(self) -> None:
        """A control port given no operations says so for the process commands."""
        protocol = ControlProtocol({}, {"litecoin": self.server})
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"status\nreload\nshutdown\n")
        self.assertEqual(
            transport.value().decode().splitlines(),
            [
                "error status is not available on this control port",
                "error reload is not available on this control port",
                "error shutdown is not available on this control port",
            ],
        )

    def test_help(self) -> None:
        """help names the new commands and the token."""
        answer = self.send("help")
        for usage in ("kick <pool> <target>", "status", "loglevel debug|info|warn|error|critical"):
            self.assertIn(usage, answer)
        for usage in ("payments <pool> run|audit", "reload", "reloadpool <pool>", "shutdown", "auth <token>"):
            self.assertIn(usage, answer)


TOKEN = "0123456789abcdef0123456789abcdef"


class TokenTests(ControlCase):
    """With a token, a connection's first line must give it."""

    def setUp(self) -> None:
        super().setUp()
        self.token: str | None = TOKEN
        self.operations = FakeOperations()
        self.protocol = ControlProtocol({}, {"litecoin": self.server}, self.operations, lambda: self.token)
        self.protocol.makeConnection(self.transport)

    def test_right_token(self) -> None:
        """auth with the token opens the connection to every command."""
        self.assertEqual(self.send(f"auth {TOKEN}"), "ok authenticated")
        self.assertTrue(self.send("status").startswith("ok up"))
        self.assertEqual(self.send(f"auth {TOKEN}"), "error already authenticated")
        self.assertFalse(self.transport.disconnecting)

    def test_no_auth_first(self) -> None:
        """Any other first line is refused and the connection closed; nothing is done."""
        self.assertEqual(
            self.send("shutdown"), "error authentication required: the first line must be auth <token>"
        )
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.operations.shutdowns, 0)

    def test_refusals(self) -> None:
        """A wrong token, a token of another length, auth without one or with two: refused, closed."""
        for line in (f"auth {TOKEN[:-1]}x", f"auth {TOKEN}0", "auth", f"auth {TOKEN} {TOKEN}"):
            transport = StringTransport()
            protocol = ControlProtocol({}, {}, self.operations, lambda: TOKEN)
            protocol.makeConnection(transport)
            protocol.dataReceived(line.encode() + b"\nshutdown\n")
            answer = transport.value().decode()
            self.assertEqual(answer.count("\n"), 1, line)
            self.assertTrue(answer.startswith(("error wrong token", "error authentication required")), line)
            self.assertTrue(transport.disconnecting, line)
        self.assertEqual(self.operations.shutdowns, 0)

    def test_token_changed(self) -> None:
        """A connection made after the token changed needs the new one."""
        self.token = "f" * 32
        self.assertEqual(self.send(f"auth {TOKEN}"), "error wrong token")


class TokenFileTests(SynchronousTestCase):
    """load_token holds the file to the payout key file's rules."""

    def token_file(self, content: str, mode: int = 0o600) -> str:
        path = str(self.mktemp())
        Path(path).write_text(content)
        os.chmod(path, mode)
        return path

    def test_read(self) -> None:
        """The first line, without blanks around it, is the token; 0400 is fine too."""
        self.assertEqual(load_token(self.token_file(f"  {TOKEN}\nignored\n")), TOKEN)
        self.assertEqual(load_token(self.token_file(TOKEN, 0o400)), TOKEN)

    def test_refused(self) -> None:
        """A file others may read, a short token, blanks inside, no file, a folder: each said."""
        folder = self.mktemp()
        os.mkdir(folder)
        cases = {
            self.token_file(TOKEN, 0o644): "has mode 0644, open to group or others",
            self.token_file(TOKEN, 0o700): "has mode 0700; it must be 0600 or 0400",
            self.token_file("short\n"): "at least 16 characters",
            self.token_file(f"{TOKEN} {TOKEN}\n"): "without blanks",
            self.token_file(""): "at least 16 characters",
            folder: "is not a regular file",
            folder + "/none": "cannot open the control token file",
        }
        for path, problem in cases.items():
            with self.assertRaises(TokenFileError) as caught:
                load_token(path)
            self.assertIn(problem, str(caught.exception), path)

    def test_constant_time_comparison(self) -> None:
        """token_matches compares whole tokens."""
        self.assertTrue(token_matches(TOKEN, TOKEN))
        self.assertFalse(token_matches(TOKEN[:-1], TOKEN))
        self.assertFalse(token_matches("", TOKEN))


class OperationsTests(SynchronousTestCase):
    """ProcessOperations: status and the log level."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.pool = RunningPoolStub()
        self.levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
        self.rates = ShareRates(lambda: {"litecoin": self.pool.accepted_shares}, self.clock)
        self.shutdowns: list[None] = []
        self.operations = ProcessOperations(
            lambda: [self.pool],
            lambda: True,
            self.levels,
            self.rates,
            self.clock,
            lambda: 1000.0 - 3725,
            lambda pool: defer.succeed(None),
            lambda: self.shutdowns.append(None),
        )

    def test_status(self) -> None:
        """Uptime, each pool's state, miners and shares/s over the last minute, Redis."""
        self.assertEqual(
            self.operations.status(),
            "up 1h 2m 5s; litecoin (litecoin-regtest): ready, 1 miner, shares/s not known yet; Redis up",
        )
        timer = self.rates.timer()
        timer.startService()  # samples at once, then every 5 s
        self.addCleanup(timer.stopService)
        for _ in range(12):
            self.pool.accepted_shares += 10
            self.clock.advance(5)
        self.assertIn("2.00 shares/s", self.operations.status())
        self.clock.advance(120)  # no share for two minutes
        self.assertIn("0.00 shares/s", self.operations.status())

    def test_log_level(self) -> None:
        """set_log_level changes what the observer's filter lets through."""
        self.assertEqual(self.operations.set_log_level("debug"), "info")
        event = {"log_level": LogLevel.debug, "log_namespace": "nomp.test"}
        self.assertEqual(self.levels(event), PredicateResult.maybe)
        self.assertEqual(self.operations.set_log_level("error"), "debug")
        self.assertEqual(self.levels(event), PredicateResult.no)

    def test_shutdown_and_unknown_pool(self) -> None:
        """shutdown is passed on; payments for a pool that does not run is an error answer."""
        self.operations.shutdown()
        self.assertEqual(self.shutdowns, [None])
        answer = self.successResultOf(self.operations.payments("dogecoin", "run"))
        self.assertEqual(answer, "error no pool 'dogecoin'")


class RunningPoolStub:
    """One running pool for ProcessOperations."""

    name = "litecoin"
    coin = "litecoin-regtest"
    ready = True
    miners = 1

    def __init__(self) -> None:
        self.accepted_shares = 0

    def payments(self, action: str) -> defer.Deferred[str]:
        return defer.succeed(f"ok {action}")


class NompCliTokenTests(TestCase):
    """nomp-cli sends the token first, from --token-file or config.yaml's control.token_file."""

    def setUp(self) -> None:
        self.port = free_port()
        self.path = Path(self.mktemp())
        self.path.write_text(TOKEN + "\n")
        self.path.chmod(0o600)
        self.service = control_service(
            f"tcp:{self.port}:interface=127.0.0.1",
            {"litecoin": RecordingPool()},
            reactor,
            token=lambda: TOKEN,
        )
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)

    async def test_token_file_option(self) -> None:
        """--token-file: the command is answered; without the token it is refused."""
        control = f"127.0.0.1:{self.port}"
        status, output = await run_nomp_cli("--control", control, "--token-file", str(self.path), "pools")
        self.assertEqual((status, output), (0, "ok litecoin (litecoin-regtest, starting)\n"))
        status, output = await run_nomp_cli("--control", control, "-c", "/nonexistent", "pools")
        self.assertEqual(status, 1)
        self.assertIn("authentication required", output)
        status, output = await run_nomp_cli("--control", control, "--token-file", "/nonexistent", "pools")
        self.assertEqual(status, 2)
        self.assertIn("cannot read the control token", output)

    async def test_token_from_conf(self) -> None:
        """Without --token-file the token file is config.yaml's control.token_file."""
        conf = Path(self.mktemp())
        conf.mkdir()
        settings = {
            "control": {"listen": f"tcp:{self.port}:interface=127.0.0.1", "token_file": str(self.path)}
        }
        (conf / "config.yaml").write_text(yaml.safe_dump(settings))
        status, output = await run_nomp_cli("-c", str(conf), "help")
        self.assertEqual(status, 0)
        self.assertTrue(output.startswith("ok commands:"))
