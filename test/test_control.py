"""The control port and nomp-cli."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, reactor
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp import cli
from nomp.config import load_config
from nomp.control.service import ControlProtocol, control_service
from nomp.pool.service import PoolService
from test.servers import free_port
from test.test_config_paths import SHIPPED_CONF


class RecordingPool(PoolService):
    """A PoolService that only records blocknotify calls (never started)."""

    def __init__(self, name: str = "litecoin") -> None:
        config = dataclasses.replace(load_config(SHIPPED_CONF).pools[0], name=name)
        super().__init__(config, reactor, lambda message: None)
        self.notified: list[str | None] = []

    def block_notify(self, block_hash: str | None = None) -> defer.Deferred[None]:
        self.notified.append(block_hash)
        return defer.succeed(None)


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
        """help lists the commands."""
        self.assertEqual(
            self.send(b"help"), "ok commands: help | pools | blocknotify <pool> [<blockhash>] | quit\n"
        )

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
        """nomp-cli in a thread (it blocks on its socket), with its output captured."""
        import contextlib
        import io

        from twisted.internet.threads import deferToThread

        output = io.StringIO()

        def call() -> int:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                return cli.main(list(argv))

        status: Any = await deferToThread(call)
        return int(status), output.getvalue()

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
        (conf / "config.yaml").write_text(yaml.safe_dump(settings))
        status, output = await self.run_cli("-c", str(conf), "pools")
        self.assertEqual((status, output), (0, "ok litecoin (litecoin-regtest, starting)\n"))

    def test_control_address(self) -> None:
        """Endpoint strings map to the address to connect to."""
        self.assertEqual(cli.control_address("/nonexistent"), cli.DEFAULT_CONTROL)
        self.assertEqual(cli.control_address(str(SHIPPED_CONF)), ("127.0.0.1", 17117))
