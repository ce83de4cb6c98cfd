"""A worker's end of its control channel: two pipes to the main process.

The main process writes control commands, one a line, to the worker's
descriptor COMMANDS_FD and reads the answers, one a line and in order, from
ANSWERS_FD: the control port's own protocol (nomp.control.service) runs on
them, without a token, since only the main process holds the other ends.
When the main process goes (its ends close), the worker stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service

# The POSIX one by name: the module's alias is typed as Windows's.
from twisted.internet._posixstdio import StandardIO
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

COMMANDS_FD = 3  # the worker reads its commands here
ANSWERS_FD = 4  # and writes its answers here
FIRST_SOCKET_FD = 5  # its Stratum listening sockets from here on (nomp.workers.sockets)


class _Channel(Protocol):
    """The control protocol on the pipes, and a word when they close."""

    def __init__(self, control: Protocol, lost: Callable[[], None]) -> None:
        self._control = control
        self._lost = lost

    def makeConnection(self, transport: ITransport) -> None:
        super().makeConnection(transport)
        self._control.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self._control.dataReceived(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self._control.connectionLost(reason)
        self._lost()


class MainChannelService(Service):
    """Runs ``control`` on the pipes from the main process; ``main_gone`` is
    called once they close while this runs (the worker then stops)."""

    log = Logger()

    def __init__(
        self,
        control: Protocol,
        reactor: Any,
        main_gone: Callable[[], object],
        commands_fd: int = COMMANDS_FD,
        answers_fd: int = ANSWERS_FD,
    ) -> None:
        self.setName("main channel")
        self._control = control
        self._reactor = reactor
        self._main_gone = main_gone
        self._fds = (commands_fd, answers_fd)
        self._io: StandardIO | None = None

    def startService(self) -> None:
        super().startService()
        commands, answers = self._fds
        self._io = StandardIO(
            _Channel(self._control, self._lost), stdin=commands, stdout=answers, reactor=self._reactor
        )

    def _lost(self) -> None:
        self._io = None
        if self.running:
            self.log.warn("the main process has gone (its control channel closed): stopping")
            self._main_gone()
