"""What a block notification costs, from the daemon's exec to the line at the pool's control port.

Run: python bench/notify.py [--runs 200] [--notifier PATH] [--python PATH]

Each row starts a program with posix_spawn, as a daemon's -blocknotify
does (through its shell), and times from just before the spawn to the
moment the whole line has arrived at the listening side ("to line"), and to
the program's exit ("to exit"). The rows, run in turn in every round so
that the machine's load falls on all of them alike:

- ``/bin/true``: the cost of a spawn and exit, under every other row;
- ``python -S -I -c pass``: a bare interpreter start and exit, under any
  Python notifier;
- ``python -S -I, _socket sketch``: the least a Python notifier could do
  (connect, send the line, read the answer; no checks), at a bare socket;
- ``nomp-notify``: at a bare socket (the program's own floor), then at the
  pool's real control port, then there through ``/bin/sh -c`` as litecoind
  runs its -blocknotify command;
- ``nomp-cli blocknotify``: at the pool's real control port.

The bare socket is a plain blocking accept loop in a process of its own.
The pool's control port is the real ControlService on Twisted's reactor,
in a process of its own, whose pool records the moment its block_notify is
called: the arrival of the line at the pool. Both answer "ok".

nomp-notify is compiled afresh from nomp/notify/nomp_notify.c unless
--notifier names a program. Times are CLOCK_MONOTONIC, which every process
on the machine shares.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from twisted.internet import defer, reactor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nomp.control.service import control_service  # noqa: E402
from nomp.notify.build import build  # noqa: E402
from test.servers import free_port  # noqa: E402
from test.test_control import RecordingPool  # noqa: E402

BLOCK_HASH = "0f" * 32
POOL = "litecoin"
WARM_UP = 10  # rounds run first and not counted: page cache, CPU clock

# A Python notifier at its leanest: _socket rather than socket, whose own
# imports (enum, selectors...) cost more than the rest of the program.
PYTHON_SKETCH = """\
import _socket, sys
host, port = sys.argv[1].rsplit(":", 1)
c = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
c.settimeout(2.0)
c.connect((host, int(port)))
c.sendall(("blocknotify %s %s\\n" % (sys.argv[2], sys.argv[3])).encode())
answer = b""
while not answer.endswith(b"\\n"):
    chunk = c.recv(4096)
    if not chunk:
        sys.exit(3)
    answer += chunk
sys.exit(0 if answer.startswith(b"ok") else 1)
"""


def serve_bare(port: int) -> None:
    """A listening socket that answers every line "ok", printing when each arrived."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    print("ready", flush=True)
    while True:
        connection, _ = listener.accept()
        with connection:
            received = b""
            while not received.endswith(b"\n"):
                chunk = connection.recv(4096)
                if not chunk:
                    break
                received += chunk
            arrived = time.monotonic_ns()
            connection.sendall(b"ok bench notified\n")
        print(arrived, flush=True)


class TimedPool(RecordingPool):
    """A pool that prints when each blocknotify reached it."""

    def block_notify(self, block_hash: str | None = None) -> defer.Deferred[None]:
        arrived = time.monotonic_ns()
        print(arrived, flush=True)
        return defer.succeed(None)


def serve_control(port: int) -> None:
    """The pool's control service, on Twisted's reactor, for a TimedPool."""
    service = control_service(f"tcp:{port}:interface=127.0.0.1", {POOL: TimedPool()}, reactor)
    service.privilegedStartService()
    service.startService()
    print("ready", flush=True)
    reactor.run()


@dataclass
class Server:
    """A serving process of this file, and the stream of arrival times it prints."""

    process: subprocess.Popen[str]
    port: int

    @classmethod
    def start(cls, mode: str) -> Server:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, __file__, mode, str(port)], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        server = cls(process, port)
        if server.read_line() != "ready":
            raise RuntimeError(f"the {mode} server did not start")
        return server

    def read_line(self) -> str:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the server on port {self.port} exited ({self.process.wait()})")
        return line.strip()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


@dataclass
class Row:
    """One program measured: its argv, and the server it notifies (None: it notifies nothing)."""

    name: str
    argv: list[str]
    server: Server | None
    to_line: list[float] = field(default_factory=list)  # milliseconds
    to_exit: list[float] = field(default_factory=list)

    def run_once(self, record: bool) -> None:
        started = time.monotonic_ns()
        pid = os.posix_spawn(self.argv[0], self.argv, os.environ, file_actions=DEVNULL_STDOUT)
        _, status = os.waitpid(pid, 0)
        exited = time.monotonic_ns()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(
                f"{self.name}: {' '.join(self.argv)} exited {os.waitstatus_to_exitcode(status)}"
            )
        arrived = int(self.server.read_line()) if self.server is not None else None
        if record:
            self.to_exit.append((exited - started) / 1e6)
            if arrived is not None:
                self.to_line.append((arrived - started) / 1e6)


DEVNULL_STDOUT = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]


def figures(samples: list[float]) -> str:
    """Median, 90th percentile and range, in milliseconds; blank for no samples."""
    if not samples:
        return " " * 31
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    spread = f"{ordered[0]:.2f}-{ordered[-1]:.2f}"
    return f"{statistics.median(ordered):7.2f} {p90:7.2f} {spread:>15}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="counted runs of each row (default 200)")
    parser.add_argument("--notifier", type=Path, help="the nomp-notify to measure (default: built afresh)")
    parser.add_argument(
        "--python",
        type=Path,
        default=Path(os.path.realpath(sys.executable)),
        help="the interpreter of the Python rows (default: the one running this, without its venv)",
    )
    options = parser.parse_args()
    if options.runs < 1:
        parser.error("--runs must be at least 1")
    venv_bin = Path(sys.executable).parent
    nomp_cli = venv_bin / "nomp-cli"
    if not nomp_cli.exists():
        parser.error(f"no {nomp_cli}: run this with the virtualenv's python after scripts/setup.sh")

    with tempfile.TemporaryDirectory(prefix="nomp-bench-notify-") as folder:
        notifier = options.notifier
        if notifier is None:
            notifier = Path(folder) / "nomp-notify"
            build(notifier)
        bare = Server.start("serve-bare")
        control = Server.start("serve-control")
        try:
            python = str(options.python)
            rows = [
                Row("/bin/true", ["/bin/true"], None),
                Row("python -S -I -c pass", [python, "-S", "-I", "-c", "pass"], None),
                Row(
                    "python -S -I, _socket sketch, bare",
                    [python, "-S", "-I", "-c", PYTHON_SKETCH, bare.address, POOL, BLOCK_HASH],
                    bare,
                ),
                Row("nomp-notify, bare socket", [str(notifier), bare.address, POOL, BLOCK_HASH], bare),
                Row("nomp-notify, control port", [str(notifier), control.address, POOL, BLOCK_HASH], control),
                Row(
                    "sh -c nomp-notify, control port",
                    ["/bin/sh", "-c", f"{shlex.quote(str(notifier))} {control.address} {POOL} {BLOCK_HASH}"],
                    control,
                ),
                Row(
                    "nomp-cli blocknotify, control port",
                    [str(nomp_cli), "--control", control.address, "blocknotify", POOL, BLOCK_HASH],
                    control,
                ),
            ]
            measure(rows, options.runs)
        finally:
            bare.stop()
            control.stop()

    print(f"python: {options.python} ({sys.version.split()[0]}); {options.runs} runs per row, interleaved")
    print(f"{'':36} {'to line, ms':^31}   {'to exit, ms':^31}")
    columns = f"{'median':>7} {'p90':>7} {'range':>15}"
    print(f"{'':36} {columns}   {columns}")
    for row in rows:
        print(f"{row.name:36} {figures(row.to_line)}   {figures(row.to_exit)}")


def measure(rows: list[Row], runs: int) -> None:
    for round_number in range(WARM_UP + runs):
        for row in rows:
            row.run_once(record=round_number >= WARM_UP)


def serve(mode: str, port: str) -> None:
    servers: dict[str, Callable[[int], Any]] = {"serve-bare": serve_bare, "serve-control": serve_control}
    servers[mode](int(port))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1].startswith("serve-"):
        serve(sys.argv[1], sys.argv[2])
    else:
        main()
