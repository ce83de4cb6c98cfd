"""systemd's part in a socket-activated start, played by the test process.

systemd opens a service's listening sockets itself (its socket units) and
keeps them open whatever the service does; each process it starts gets
them as descriptors 3, 4, ... with ``LISTEN_FDS`` (how many),
``LISTEN_FDNAMES`` (their ``FileDescriptorName``s, ``:``-separated) and
``LISTEN_PID`` (the pid they are for) in its environment, and, for
``Type=notify``, the address of a datagram socket in ``NOTIFY_SOCKET``
where it says ``READY=1`` and ``STOPPING=1``. Here ``InheritedSockets``
holds the listening sockets and ``PoolProcess`` starts ``twistd -n nomp``
the same way, any number of times on the same sockets, old and new
processes side by side if the test wants.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, protocol, reactor
from twisted.python.failure import Failure

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
FIRST_FD = 3  # sd_listen_fds(3)'s SD_LISTEN_FDS_START
# The pid systemd puts in LISTEN_PID is the service's, known only once it is
# forked: the shell the process starts as writes its own, then becomes twistd.
_WITH_OWN_PID = 'export LISTEN_PID=$$; exec "$@"'


class InheritedSockets:
    """Listening TCP sockets on loopback, by name, held here as systemd's
    socket units hold theirs: open before any pool process and after all."""

    def __init__(self, names: Sequence[str], backlog: int = 128) -> None:
        self.names = tuple(names)
        self._sockets: dict[str, socket.socket] = {}
        for name in self.names:
            listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listening.bind(("127.0.0.1", 0))
            listening.listen(backlog)
            self._sockets[name] = listening

    def port(self, name: str) -> int:
        port: int = self._sockets[name].getsockname()[1]
        return port

    @staticmethod
    def endpoint(name: str) -> str:
        """The pool's ``listen`` for the socket of that name."""
        return f"systemd:domain=INET:name={name}"

    def child_fds(self) -> dict[int, int]:
        """Twisted's ``childFDs``: each socket at its place from descriptor 3 on."""
        return {FIRST_FD + i: self._sockets[name].fileno() for i, name in enumerate(self.names)}

    def environment(self) -> dict[str, str]:
        return {"LISTEN_FDS": str(len(self.names)), "LISTEN_FDNAMES": ":".join(self.names)}

    def close(self) -> None:
        for listening in self._sockets.values():
            listening.close()


class _NotifyReader(protocol.DatagramProtocol):
    """The notification socket of one process: what it told "systemd"."""

    def __init__(self) -> None:
        self.assignments: list[str] = []
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.stopping: defer.Deferred[None] = defer.Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        for assignment in datagram.decode().split("\n"):
            self.assignments.append(assignment)
            if assignment == "READY=1" and not self.ready.called:
                self.ready.callback(None)
            elif assignment == "STOPPING=1" and not self.stopping.called:
                self.stopping.callback(None)


class PoolProcess(protocol.ProcessProtocol):
    """``twistd -n nomp -c CONF`` started as systemd starts a socket-activated
    ``Type=notify`` service: the sockets as descriptors 3..., LISTEN_* and
    NOTIFY_SOCKET set. ``ready`` fires at its READY=1; ``ended`` gives a
    Deferred of its exit status (a negative number: the signal that ended it),
    as often as asked."""

    def __init__(self, name: str, conf: Path, sockets: InheritedSockets) -> None:
        self.name = name
        self.conf = conf
        self.sockets = sockets
        self.output = bytearray()
        self.status: int | None = None  # once it has ended
        self._waiting: list[defer.Deferred[int]] = []
        # A short path: a Unix socket's address has room for about 100 bytes.
        self._folder = Path(tempfile.mkdtemp(prefix="nomp-notify-"))
        self._notify = _NotifyReader()
        self._listening: Any = None
        self.transport: Any = None

    @property
    def ready(self) -> defer.Deferred[None]:
        return self._notify.ready

    @property
    def stopping(self) -> defer.Deferred[None]:
        return self._notify.stopping

    @property
    def told(self) -> list[str]:
        """Every assignment it sent the notification socket, in order."""
        return list(self._notify.assignments)

    def start(self) -> PoolProcess:
        address = str(self._folder / "notify")
        self._listening = reactor.listenUNIXDatagram(address, self._notify)  # type: ignore[attr-defined]
        environment = {**os.environ, **self.sockets.environment(), "NOTIFY_SOCKET": address}
        command = [TWISTD, "-n", "--pidfile=", "nomp", "-c", str(self.conf)]
        reactor.spawnProcess(
            self,
            "/bin/sh",
            ["sh", "-c", _WITH_OWN_PID, "sh", *command],
            env=environment,
            path=str(self.conf),
            childFDs={0: "w", 1: "r", 2: "r", **self.sockets.child_fds()},
        )
        return self

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N803 - Twisted names it
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        if self._listening is not None:
            self._listening.stopListening()
        shutil.rmtree(self._folder, ignore_errors=True)
        value = reason.value
        if isinstance(value, error.ProcessTerminated) and value.signal is not None:
            status = -int(value.signal)
        else:
            status = int(getattr(value, "exitCode", 0) or 0)
        self.status = status
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(status)

    @property
    def ended(self) -> defer.Deferred[int]:
        """Fires with the exit status once the process has ended."""
        if self.status is not None:
            return defer.succeed(self.status)
        waiter: defer.Deferred[int] = defer.Deferred()
        self._waiting.append(waiter)
        return waiter

    @property
    def running(self) -> bool:
        return self.status is None

    @property
    def pid(self) -> int:
        pid: int = self.transport.pid
        return pid

    def terminate(self) -> None:
        """SIGTERM, as ``systemctl stop`` and ``restart`` send it."""
        if self.running:
            self.transport.signalProcess("TERM")

    def kill_if_running(self) -> defer.Deferred[int] | None:
        if not self.running:
            return None
        self.transport.signalProcess("KILL")
        return self.ended

    def log(self, tail: int = 8000) -> str:
        return self.output[-tail:].decode(errors="replace")
