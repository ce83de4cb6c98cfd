"""nomp-notify, the daemon's -blocknotify program, against real control ports.

The program is compiled from nomp/notify/nomp_notify.c once per test run
(warnings are errors here), so these tests check the source as it is, not
whatever setup.sh last installed.
"""

from __future__ import annotations

import atexit
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.internet import reactor, utils
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp.control.service import control_service
from nomp.notify.build import build
from test.servers import Node, free_port
from test.test_control import RecordingPool

ROOT = Path(__file__).resolve().parent.parent
BLOCK_HASH = "0f" * 32
SEEN_SECONDS = 30.0  # how long the litecoind test waits for a block's notification

_built: list[Path] = []


def notifier() -> Path:
    """The program, compiled on first use into a folder removed when the tests end."""
    if not _built:
        folder = Path(tempfile.mkdtemp(prefix="nomp-notify-"))
        atexit.register(shutil.rmtree, folder, True)
        build(folder / "nomp-notify", warnings_are_errors=True)
        _built.append(folder / "nomp-notify")
    return _built[0]


async def run_notifier(*argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of one run, in an empty environment."""
    out, err, status = await utils.getProcessOutputAndValue(str(notifier()), argv, env={})
    return status, out.decode(), err.decode()


class ScriptedAnswer(Protocol):
    """A control port's stand-in: once a whole line is in, sends its control's
    ``answer`` and, if ``close``, closes the connection."""

    def __init__(self, control: ScriptedControlPort) -> None:
        self.control = control

    def dataReceived(self, data: bytes) -> None:
        before = self.control.received
        self.control.received += data
        if b"\n" in before or b"\n" not in self.control.received:
            return
        assert self.transport is not None
        if self.control.answer:
            self.transport.write(self.control.answer)
        if self.control.close:
            self.transport.loseConnection()


class ScriptedControlPort(ServerFactory):
    def __init__(self, answer: bytes, close: bool) -> None:
        self.answer = answer
        self.close = close
        self.received = b""

    def buildProtocol(self, addr: IAddress | None) -> ScriptedAnswer:
        return ScriptedAnswer(self)


class NotifyTests(TestCase):
    """nomp-notify against the pool's real control service."""

    def setUp(self) -> None:
        self.pool = RecordingPool()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.start_control(f"tcp:{self.port}:interface=127.0.0.1")

    def start_control(self, listen: str) -> None:
        service = control_service(listen, {"litecoin": self.pool}, reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)

    async def test_blocknotify(self) -> None:
        """The block hash reaches the pool, by its name or its coin's; "ok" exits 0, silently."""
        self.assertEqual(await run_notifier(self.address, "litecoin", BLOCK_HASH), (0, "", ""))
        upper = "AB" * 32
        self.assertEqual(await run_notifier("-t", "5", self.address, "Litecoin-Regtest", upper), (0, "", ""))
        self.assertEqual(self.pool.notified, [BLOCK_HASH, upper])

    async def test_ipv6(self) -> None:
        """[IPV6]:PORT reaches a control port listening on ::1."""
        port = free_port()
        self.start_control(f"tcp6:{port}:interface=\\:\\:1")
        self.assertEqual(await run_notifier(f"[::1]:{port}", "litecoin", BLOCK_HASH), (0, "", ""))
        self.assertEqual(self.pool.notified, [BLOCK_HASH])

    async def test_unix_socket(self) -> None:
        """An absolute path reaches a control port listening on that unix socket."""
        path = Path(self.mktemp()).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.start_control(f"unix:{path}")
        self.assertEqual(await run_notifier(str(path), "litecoin", BLOCK_HASH), (0, "", ""))
        self.assertEqual(self.pool.notified, [BLOCK_HASH])

    async def test_unknown_pool(self) -> None:
        """The pool's error answer exits 1 and is shown on stderr."""
        status, out, err = await run_notifier(self.address, "nosuch", BLOCK_HASH)
        self.assertEqual(
            (status, out, err),
            (1, "", f"nomp-notify: the pool at {self.address} answered: error no pool 'nosuch'\n"),
        )
        self.assertEqual(self.pool.notified, [])

    async def test_pool_down(self) -> None:
        """Nothing listening (TCP or unix socket): exit 3 with the system's reason."""
        down = f"127.0.0.1:{free_port()}"
        self.assertEqual(
            await run_notifier(down, "litecoin", BLOCK_HASH),
            (3, "", f"nomp-notify: cannot reach the control port at {down}: Connection refused\n"),
        )
        missing = str(Path(self.mktemp()).resolve())
        self.assertEqual(
            await run_notifier(missing, "litecoin", BLOCK_HASH),
            (3, "", f"nomp-notify: cannot reach the control port at {missing}: No such file or directory\n"),
        )

    async def test_bad_arguments(self) -> None:
        """A bad argument exits 2 with a clear error, and nothing reaches the pool."""
        address_error = (
            "nomp-notify: the control port's address is IP:PORT, [IPV6]:PORT or /path/of/unix/socket, not"
        )
        hash_error = "nomp-notify: a block hash is 64 hex digits, not"
        name_error = (
            "nomp-notify: a pool name is one word of 1 to 100 bytes, without spaces or control characters"
        )
        timeout_error = "nomp-notify: -t takes a number of seconds above 0 and at most 60, not"
        usage = "usage: nomp-notify [-t SECONDS] [-k TOKEN_FILE] ADDRESS POOL BLOCKHASH\n"
        cases: dict[tuple[str, ...], str] = {
            (self.address, "litecoin", "0f" * 31): f"{hash_error} '{'0f' * 31}'\n",
            (self.address, "litecoin", "0f" * 32 + "0"): hash_error,
            (self.address, "litecoin", "0g" * 32): hash_error,
            (self.address, "litecoin", ""): f"{hash_error} ''\n",
            (self.address, "litecoin", f"{BLOCK_HASH} x"): hash_error,
            (self.address, "litecoin", "ab" * 100): f"{hash_error} '{'ab' * 40}...'\n",
            (self.address, "", BLOCK_HASH): f"{name_error}, not ''\n",
            (self.address, "lite coin", BLOCK_HASH): name_error,
            (self.address, "litecoin\nquit", BLOCK_HASH): f"{name_error}, not 'litecoin?quit'\n",
            (self.address, "x" * 101, BLOCK_HASH): name_error,
            ("127.0.0.1", "litecoin", BLOCK_HASH): f"{address_error} '127.0.0.1'\n",
            ("127.0.0.1:", "litecoin", BLOCK_HASH): address_error,
            (f":{self.port}", "litecoin", BLOCK_HASH): address_error,
            ("127.0.0.1:0", "litecoin", BLOCK_HASH): address_error,
            ("127.0.0.1:65536", "litecoin", BLOCK_HASH): address_error,
            ("127.0.0.1:123456", "litecoin", BLOCK_HASH): address_error,
            ("127.0.0.1:80x", "litecoin", BLOCK_HASH): address_error,
            (f"localhost:{self.port}", "litecoin", BLOCK_HASH): address_error,
            ("tcp:17117:interface=127.0.0.1", "litecoin", BLOCK_HASH): address_error,
            (f"[::1:{self.port}", "litecoin", BLOCK_HASH): address_error,
            (
                "/" + "s" * 120,
                "litecoin",
                BLOCK_HASH,
            ): "nomp-notify: a unix socket's path is at most 107 bytes",
            ("-t", "0", self.address, "litecoin", BLOCK_HASH): f"{timeout_error} '0'\n",
            ("-t", "-1", self.address, "litecoin", BLOCK_HASH): timeout_error,
            ("-t", "61", self.address, "litecoin", BLOCK_HASH): timeout_error,
            ("-t", "nan", self.address, "litecoin", BLOCK_HASH): timeout_error,
            ("-t", "2s", self.address, "litecoin", BLOCK_HASH): timeout_error,
            ("-t", "", self.address, "litecoin", BLOCK_HASH): timeout_error,
            ("-t",): "nomp-notify: -t needs a number of seconds\n",
            ("-x", self.address, "litecoin", BLOCK_HASH): "nomp-notify: unknown option, not '-x'\n" + usage,
            (self.address, "litecoin"): usage,
            (self.address, "litecoin", BLOCK_HASH, "extra"): usage,
            (): usage,
        }
        for argv, error in cases.items():
            status, out, err = await run_notifier(*argv)
            self.assertEqual((status, out), (2, ""), argv)
            if error.endswith("\n") and not error.endswith(usage):
                self.assertEqual(err, error, argv)
            else:
                self.assertTrue(err.startswith(error), (argv, err))
        self.assertEqual(self.pool.notified, [])

    async def test_pool_name_after_double_dash(self) -> None:
        """``--`` ends the options: a pool name may start with a dash (this pool knows none such)."""
        status, _, err = await run_notifier("--", self.address, "-litecoin", BLOCK_HASH)
        self.assertEqual(
            (status, err),
            (1, f"nomp-notify: the pool at {self.address} answered: error no pool '-litecoin'\n"),
        )

    async def test_help(self) -> None:
        """-h prints the usage, with the litecoin.conf line, and exits 0."""
        status, out, err = await run_notifier("-h")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("blocknotify=/path/to/nomp-notify 127.0.0.1:17117 litecoin %s", out)


class TokenTests(TestCase):
    """nomp-notify with ``-k``, against a real control port that has a token."""

    TOKEN = "4f" * 16

    def setUp(self) -> None:
        self.pool = RecordingPool()
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        service = control_service(
            f"tcp:{port}:interface=127.0.0.1", {"litecoin": self.pool}, reactor, token=lambda: self.TOKEN
        )
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)

    def token_file(self, text: str, mode: int = 0o600) -> str:
        path = Path(self.mktemp())
        path.write_text(text)
        path.chmod(mode)
        return str(path)

    async def test_token_sent_first(self) -> None:
        """The token file's first line (blanks around it dropped) is sent as ``auth``, then the
        block; a port with a token refuses the block without one."""
        path = self.token_file(f"  {self.TOKEN} \nsecond line\n")
        self.assertEqual(await run_notifier("-k", path, self.address, "litecoin", BLOCK_HASH), (0, "", ""))
        self.assertEqual(self.pool.notified, [BLOCK_HASH])
        status, _, err = await run_notifier(self.address, "litecoin", BLOCK_HASH)
        self.assertEqual(status, 1)
        self.assertIn("answered: error authentication required", err)
        self.assertEqual(self.pool.notified, [BLOCK_HASH])

    async def test_wrong_token(self) -> None:
        """A wrong token exits 1 with the pool's answer, and the block is not sent."""
        path = self.token_file("5e" * 16 + "\n")
        self.assertEqual(
            await run_notifier("-k", path, self.address, "litecoin", BLOCK_HASH),
            (1, "", f"nomp-notify: the pool at {self.address} refused the token: error wrong token\n"),
        )
        self.assertEqual(self.pool.notified, [])

    async def test_unusable_token_files(self) -> None:
        """A token file others can read, missing, not a file, or without a usable token exits 2
        with the reason, and nothing is sent."""
        folder = Path(self.mktemp())
        folder.mkdir()
        missing = str(folder / "missing")
        cases = [
            (self.token_file(self.TOKEN, 0o644), "must have mode 0600 or 0400"),
            (self.token_file(self.TOKEN, 0o640), "must have mode 0600 or 0400"),
            (missing, f"cannot open the token file {missing}: No such file or directory"),
            (str(folder), "is not a regular file"),
            (self.token_file("short\n"), "must hold one token of at least 16 characters"),
            (self.token_file(""), "must hold one token of at least 16 characters"),
            (self.token_file("a" * 10 + " " + "b" * 10), "must hold one token of at least 16 characters"),
            (self.token_file("x" * 5000), "is too long to hold one token"),
        ]
        for path, reason in cases:
            status, out, err = await run_notifier("-k", path, self.address, "litecoin", BLOCK_HASH)
            self.assertEqual((status, out), (2, ""), path)
            self.assertIn(reason, err)
        status, _, err = await run_notifier(self.address, "litecoin", BLOCK_HASH, "-k")
        self.assertEqual(status, 2)
        self.assertEqual(self.pool.notified, [])


class UnansweredTests(TestCase):
    """Control ports that take too long, hang up, or answer something else."""

    def listen(self, answer: bytes, close: bool) -> tuple[str, ScriptedControlPort]:
        factory = ScriptedControlPort(answer, close)
        port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        host = port.getHost()
        assert isinstance(host, IPv4Address)
        return f"127.0.0.1:{host.port}", factory

    async def test_the_line_sent(self) -> None:
        """The line sent is the control port's command; an answer in CRLF is read too."""
        address, control = self.listen(b"ok litecoin notified\r\n", close=False)
        self.assertEqual(await run_notifier(address, "litecoin", BLOCK_HASH), (0, "", ""))
        self.assertEqual(control.received, f"blocknotify litecoin {BLOCK_HASH}\n".encode())

    async def test_no_answer(self) -> None:
        """A listening socket that never answers: exit 3 after the default timeout, and after -t's."""
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        error = f"nomp-notify: no answer from the control port at {address} in time\n"
        self.assertEqual(await run_notifier(address, "litecoin", BLOCK_HASH), (3, "", error))
        self.assertEqual(await run_notifier("-t", "0.2", address, "litecoin", BLOCK_HASH), (3, "", error))

    async def test_connection_not_taken(self) -> None:
        """A listening socket whose queue is full never completes the connection: exit 3 in time."""
        full = socket.socket()
        self.addCleanup(full.close)
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        waiting = socket.create_connection(full.getsockname(), timeout=5)  # fills the queue of one
        self.addCleanup(waiting.close)
        address = f"127.0.0.1:{full.getsockname()[1]}"
        self.assertEqual(
            await run_notifier("-t", "0.3", address, "litecoin", BLOCK_HASH),
            (3, "", f"nomp-notify: the control port at {address} did not take the connection in time\n"),
        )

    async def test_hang_ups(self) -> None:
        """Closed with no answer, or in the middle of one: exit 3."""
        address, _ = self.listen(b"", close=True)
        self.assertEqual(
            await run_notifier(address, "litecoin", BLOCK_HASH),
            (3, "", f"nomp-notify: the control port at {address} closed the connection without answering\n"),
        )
        address, _ = self.listen(b"ok litecoin", close=True)
        self.assertEqual(
            await run_notifier(address, "litecoin", BLOCK_HASH),
            (
                3,
                "",
                f"nomp-notify: the control port at {address} closed the connection"
                " in the middle of its answer\n",
            ),
        )

    async def test_answers_that_are_not_ok(self) -> None:
        """Anything but "ok" or "ok ...", a NUL after "ok" included, exits 1 and is shown on one line."""
        cases = {
            b"okay\n": "okay",
            b"ok\x00 litecoin notified\n": "ok? litecoin notified",
            b"error no\x1bpool\n": "error no?pool",
            b"\n": "",
        }
        for answer, shown in cases.items():
            address, _ = self.listen(answer, close=False)
            self.assertEqual(
                await run_notifier(address, "litecoin", BLOCK_HASH),
                (1, "", f"nomp-notify: the pool at {address} answered: {shown}\n"),
                answer,
            )
        address, _ = self.listen(b"x" * 5000, close=False)
        self.assertEqual(
            await run_notifier(address, "litecoin", BLOCK_HASH),
            (1, "", f"nomp-notify: the control port at {address} answered a line over 4096 bytes\n"),
        )

    async def test_bare_ok(self) -> None:
        """A bare "ok" line is an ok answer."""
        address, _ = self.listen(b"ok\n", close=True)
        self.assertEqual(await run_notifier(address, "litecoin", BLOCK_HASH), (0, "", ""))


class LitecoindTests(TestCase):
    """litecoind's own -blocknotify, set as the README's litecoin.conf line."""

    async def test_mined_blocks_reach_the_pool(self) -> None:
        """Each block the node mines is notified to the pool's control port by its hash."""
        pool = RecordingPool()
        port = free_port()
        service = control_service(f"tcp:{port}:interface=127.0.0.1", {"litecoin": pool}, reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        node = Node(Path(self.mktemp()).resolve(), free_port(), free_port())
        await deferToThread(node.start, f"-blocknotify={notifier()} 127.0.0.1:{port} litecoin %s")
        self.addCleanup(deferToThread, node.stop)
        await deferToThread(node.rpc, "createwallet", "pool")
        address = await deferToThread(node.rpc, "getnewaddress", wallet="pool")
        mined: list[str] = []
        for _ in range(3):
            mined += await deferToThread(node.rpc, "generatetoaddress", 1, address, wallet="pool")
            waited = 0.0
            while mined[-1] not in pool.notified:
                self.assertLess(waited, SEEN_SECONDS, f"block {mined[-1]} was not notified: {pool.notified}")
                await deferLater(reactor, 0.05, lambda: None)
                waited += 0.05
        self.assertEqual(pool.notified, mined)


class BenchTests(SynchronousTestCase):
    """bench/notify.py still runs (two rounds): each row is printed with its figures, never checked."""

    def test_bench_runs(self) -> None:
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "notify.py"), "--runs", "2", "--notifier", str(notifier())],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        figures = r" +[\d.]+ +[\d.]+ +[\d.]+-[\d.]+"
        lines = result.stdout.splitlines()
        self.assertIn("2 runs per row, interleaved", lines[0])
        rows = {
            "/bin/true": False,
            "python -S -I -c pass": False,
            "python -S -I, _socket sketch, bare": True,
            "nomp-notify, bare socket": True,
            "nomp-notify, control port": True,
            "sh -c nomp-notify, control port": True,
            "nomp-cli blocknotify, control port": True,
        }
        self.assertEqual([line[:36].strip() for line in lines[3:]], list(rows))
        for line, to_line in zip(lines[3:], rows.values(), strict=True):
            pattern = (figures if to_line else " +") + figures + "$"
            self.assertTrue(re.fullmatch(r".{36}" + pattern, line), line)
