"""A real HAProxy (the Debian package) for the tests: TCP mode, one frontend
on a free loopback port, the PROXY protocol to its servers, fast health
checks, and the admin socket to read what it sees.

Synchronous, like the helpers in ``servers.py``: it runs in test set-up and
in reads that HAProxy answers at once.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from test.servers import START_TIMEOUT, free_port

# Debian puts haproxy in /usr/sbin, which is not on a plain user's PATH.
_SBIN = Path("/usr/sbin/haproxy")


def haproxy_program() -> str | None:
    """The haproxy binary, or None when the package is not installed."""
    found = shutil.which("haproxy")
    if found is not None:
        return found
    return str(_SBIN) if os.access(_SBIN, os.X_OK) else None


@dataclass(frozen=True, slots=True)
class ServerState:
    """One backend server as HAProxy's ``show stat`` reports it."""

    status: str  # UP, DOWN, "UP 1/2" (going down), "DOWN 1/2" (coming up), MAINT...
    current_sessions: int  # scur
    total_sessions: int  # stot: every connection HAProxy gave this server (health checks not counted)


class HAProxy:
    """haproxy in the foreground (``-db``) in front of ``servers`` (name ->
    loopback port), balancing by least connections, each server sent the
    PROXY protocol v2 and checked every ``check_ms`` milliseconds: ``fall``
    failed checks take it out, ``rise`` good ones put it back.

    The configuration is the README's example, with short timeouts for a
    test; the file and HAProxy's log (its stdout) are in ``root``.
    """

    BACKEND = "pools"

    def __init__(self, servers: dict[str, int], check_ms: int = 200, fall: int = 2, rise: int = 2) -> None:
        program = haproxy_program()
        if program is None:
            raise RuntimeError("haproxy is not installed: run the tests through the README's test command")
        self.program = program
        self.servers = dict(servers)
        self.check_ms = check_ms
        self.fall = fall
        self.rise = rise
        # A folder of its own under /tmp: a UNIX socket's path must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="nomp-haproxy-"))
        self.config_path = self.root / "haproxy.cfg"
        self.admin_socket = self.root / "admin.sock"
        self.log_path = self.root / "haproxy.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        lines = [
            "global",
            "    maxconn 4096",
            f"    stats socket {self.admin_socket} mode 600 level admin",
            "    log stdout format raw local0 info",
            "",
            "defaults",
            "    mode tcp",
            "    log global",
            "    option tcplog",
            "    timeout connect 2s",
            # Stratum connections live for hours and may be quiet for
            # minutes: longer than the pool's connection_timeout (600 s).
            "    timeout client 11m",
            "    timeout server 11m",
            "    timeout check 1s",
            # A connection to a server that just died (not yet marked down)
            # is tried again, on another server from the first retry on.
            "    retries 3",
            "    option redispatch 1",
            "",
            "frontend stratum",
            f"    bind 127.0.0.1:{self.port}",
            f"    default_backend {self.BACKEND}",
            "",
            f"backend {self.BACKEND}",
            "    balance leastconn",
            # Health checks send the PROXY header too (v2 LOCAL), as the
            # traffic does: the pool reads one before anything else.
            f"    default-server send-proxy-v2 check inter {self.check_ms}ms"
            f" fall {self.fall} rise {self.rise}",
            *(f"    server {name} 127.0.0.1:{port}" for name, port in self.servers.items()),
            "",
        ]
        return "\n".join(lines)

    def start(self) -> HAProxy:
        self.config_path.write_text(self.config())
        checked = subprocess.run(
            [self.program, "-c", "-q", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy refuses its configuration: {checked.stdout}{checked.stderr}")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.program, "-db", "-f", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited at start:\n{self.log()}")
            try:
                # Answered once every listener is bound. Not a connection to
                # the frontend: that would reach a server, as a miner would.
                self.server_states()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{self.log()}")
            time.sleep(0.05)

    def admin(self, command: str) -> str:
        """One command on the admin socket; its whole answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.admin_socket))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, ServerState]:
        """The backend's servers by name, from ``show stat``."""
        text = self.admin("show stat").lstrip("# ")
        states = {}
        for row in csv.DictReader(text.splitlines()):
            if row["pxname"] == self.BACKEND and row["svname"] in self.servers:
                states[row["svname"]] = ServerState(row["status"], int(row["scur"]), int(row["stot"]))
        return states

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # a hard stop: every connection closed now
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not os.environ.get("NOMP_KEEP_TEST_DATA"):
            shutil.rmtree(self.root, ignore_errors=True)
