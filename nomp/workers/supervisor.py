"""The main process's workers: started, restarted when they die, stopped with it.

``WorkerSupervisor`` starts ``count`` worker processes (``twistd -n nomp
--worker N``, made by ``WorkerSpawner``), each serving every Stratum port on
the sockets the main process holds (nomp.workers.sockets). A worker that
exits while the main process runs is started again after a delay that
doubles with each quick failure in a row. At the main process's stop every
worker is sent SIGTERM, drains its miners as a lone process does, writes
its shares and exits; the stop waits for them (and kills those that take
longer than ``stop_timeout``).

Each worker has a control channel (nomp.workers.channel): ``ask_all``
sends one control line to every running worker and gathers their answers.

Each worker writes to the log file itself: at the main process's reopen
(SIGUSR1), ``reopen_logs`` sends every worker SIGUSR1 once it answers on
its channel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from nomp.background import background
from nomp.workers.channel import ANSWERS_FD, COMMANDS_FD, FIRST_SOCKET_FD
from nomp.workers.sockets import SOCKETS_VARIABLE, HeldSockets, describe

RESTART_DELAY = 1.0  # seconds before a dead worker is started again
RESTART_DELAY_MAX = 30.0  # the longest, after many quick deaths in a row
STABLE_SECONDS = 60.0  # a worker that ran this long died of something new: the delay starts over
ANSWER_TIMEOUT = 110.0  # seconds a worker has to answer a control line (nomp-cli waits 120)
MAX_ANSWER = 1 << 20  # bytes of one answer line
# What systemd gives the main process alone.
NOT_INHERITED = ("LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", "NOTIFY_SOCKET")
TWISTD = "from twisted.scripts.twistd import run; run()"

log = Logger()


class WorkerGone(Exception):
    """The worker ended before it answered."""


class WorkerProcess(ProcessProtocol):
    """One worker process, and its control channel seen from the main process."""

    def __init__(self, index: int, clock: IReactorTime, ended: Callable[[WorkerProcess, int], None]) -> None:
        self.index = index
        self.pid: int | None = None
        self.started_at = clock.seconds()
        self.exit_status: int | None = None  # once ended: the status, or minus the signal
        self.exited: defer.Deferred[int] = defer.Deferred()  # fires with exit_status
        self.retiring = False  # stopped on purpose, to be replaced at once
        self._clock = clock
        self._ended = ended
        self._buffer = bytearray()
        self._waiting: deque[defer.Deferred[str]] = deque()

    @property
    def name(self) -> str:
        return f"worker {self.index}" + ("" if self.pid is None else f" (pid {self.pid})")

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid

    def ask(self, line: str) -> defer.Deferred[str]:
        """Send one control line; fires with the answer line."""
        if self.transport is None or self.exit_status is not None:
            return defer.fail(WorkerGone(f"{self.name} is not running"))
        try:
            self.transport.writeToChild(COMMANDS_FD, line.encode("utf-8") + b"\n")
        except KeyError:  # its end of the pipe closed: it is ending
            return defer.fail(WorkerGone(f"{self.name} is ending"))
        answer: defer.Deferred[str] = defer.Deferred()
        self._waiting.append(answer)
        # A late answer still comes in its turn: it is read, and dropped then.
        answer.addTimeout(ANSWER_TIMEOUT, self._clock)
        return answer

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N803 - Twisted names it
        if childFD != ANSWERS_FD:
            return
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = self._buffer[:end].decode("utf-8", errors="replace")
            del self._buffer[: end + 1]
            self._answered(line)
        if len(self._buffer) > MAX_ANSWER:
            log.error("{worker}: an answer over {limit} bytes: dropped", worker=self.name, limit=MAX_ANSWER)
            self._buffer.clear()
            self._answered("error the answer was too long")

    def _answered(self, line: str) -> None:
        if not self._waiting:
            log.warn("{worker} answered what was not asked: {line}", worker=self.name, line=line[:200])
            return
        waiter = self._waiting.popleft()
        if not waiter.called:  # else it timed out
            waiter.callback(line)

    def signal(self, signal_id: str | int) -> None:
        """Twisted knows TERM, INT and KILL by name, other signals by number."""
        if self.transport is not None and self.exit_status is None:
            with contextlib.suppress(error.ProcessExitedAlready):  # its end is on its way
                self.transport.signalProcess(signal_id)

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, error.ProcessTerminated) and value.signal is not None:
            self.exit_status = -int(value.signal)
        else:
            self.exit_status = int(getattr(value, "exitCode", 0) or 0)
        waiting, self._waiting = self._waiting, deque()
        for waiter in waiting:
            if not waiter.called:
                waiter.errback(WorkerGone(f"{self.name} ended before it answered"))
        self._ended(self, self.exit_status)
        self.exited.callback(self.exit_status)


class WorkerSupervisor(Service):
    """Keeps ``count`` workers running while it runs (see the module)."""

    def __init__(
        self,
        count: int,
        spawn: Callable[[WorkerProcess], object],
        clock: IReactorTime,
        stop_timeout: float,
    ) -> None:
        """``spawn`` starts a worker's process with the WorkerProcess as its
        process protocol (WorkerSpawner); ``stop_timeout``: seconds the
        workers have to exit at a stop before they are killed."""
        self.setName("workers")
        self.count = count
        self._spawn = spawn
        self._clock = clock
        self._stop_timeout = stop_timeout
        self.workers: dict[int, WorkerProcess] = {}  # the running ones, by index
        self._restarts: dict[int, IDelayedCall] = {}  # index -> its pending start
        self._quick_deaths: dict[int, int] = {}  # index -> deaths in a row before STABLE_SECONDS
        self._all_ended: defer.Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        for index in range(1, self.count + 1):
            self._start(index)

    def _start(self, index: int) -> None:
        self._restarts.pop(index, None)
        worker = WorkerProcess(index, self._clock, self._ended)
        try:
            self._spawn(worker)
        except Exception:
            log.failure("worker {index} could not be started", index=index)
            self._restart_later(index)
            return
        self.workers[index] = worker
        log.info("{worker} started", worker=worker.name)

    def _ended(self, worker: WorkerProcess, status: int) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        ran = self._clock.seconds() - worker.started_at
        if not self.running:
            log.info("{worker} exited with status {status}", worker=worker.name, status=status)
            if not self.workers and self._all_ended is not None and not self._all_ended.called:
                self._all_ended.callback(None)
            return
        if worker.retiring:
            log.info("{worker} exited with status {status}: replaced", worker=worker.name, status=status)
            self._start(worker.index)
            return
        if ran >= STABLE_SECONDS:
            self._quick_deaths[worker.index] = 0
        delay = self._restart_later(worker.index)
        log.error(
            "{worker} exited with status {status} after {ran:.1f} s: started again in {delay:g} s; "
            "its miners reconnect to the other workers",
            worker=worker.name,
            status=status,
            ran=ran,
            delay=delay,
        )

    def _restart_later(self, index: int) -> float:
        deaths = self._quick_deaths.get(index, 0)
        self._quick_deaths[index] = deaths + 1
        delay = min(RESTART_DELAY * 2.0**deaths, RESTART_DELAY_MAX)
        self._restarts[index] = self._clock.callLater(delay, self._start, index)
        return delay

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        for pending in self._restarts.values():
            pending.cancel()
        self._restarts.clear()
        return defer.Deferred.fromCoroutine(self._stop_workers())

    async def _stop_workers(self) -> None:
        if not self.workers:
            return
        self._all_ended = defer.Deferred()
        log.info("stopping {count} workers", count=len(self.workers))
        for worker in list(self.workers.values()):
            worker.signal("TERM")  # each drains its miners and writes its shares
        kill = self._clock.callLater(self._stop_timeout, self._kill_the_rest)
        await self._all_ended
        if kill.active():
            kill.cancel()

    def _kill_the_rest(self) -> None:
        for worker in list(self.workers.values()):
            log.error(
                "{worker} did not exit within {timeout:g} s of SIGTERM: killed",
                worker=worker.name,
                timeout=self._stop_timeout,
            )
            worker.signal("KILL")

    async def replace_all(self) -> None:
        """Each worker in turn drained (SIGTERM) and started again, so that every
        one serves the sockets held now: its miners reconnect to the others
        meanwhile. The next waits until the new one answers on its channel."""
        for index in range(1, self.count + 1):
            worker = self.workers.get(index)
            if worker is None or not self.running:
                continue  # one not running gets every socket when it starts again
            worker.retiring = True
            worker.signal("TERM")
            await worker.exited
            replacement = self.workers.get(index)
            if replacement is None or not self.running:
                continue
            try:
                await replacement.ask("pools")
            except (WorkerGone, defer.TimeoutError) as e:
                log.error(
                    "{worker} did not answer after its start: {error}", worker=replacement.name, error=e
                )

    def reopen_logs(self) -> None:
        """Have every running worker open its log file again (SIGUSR1)."""
        for worker in list(self.workers.values()):
            background(f"{worker.name}: reopen its log file", self._reopen_log(worker))

    async def _reopen_log(self, worker: WorkerProcess) -> None:
        # A worker's SIGUSR1 handler is in place once it answers on its
        # channel (nomp.service); a worker still starting would be ended by
        # the signal. A worker started after the log file moved opens the
        # new one anyway, but one that opened the old one may still be starting.
        try:
            await worker.ask("pools")
        except (WorkerGone, defer.TimeoutError) as e:
            # One that ended is started again, and opens the file at its path.
            log.error("{worker}: its log file is not opened again: {error}", worker=worker.name, error=e)
            return
        worker.signal(signal.SIGUSR1)

    async def ask_all(self, line: str) -> list[tuple[str, str]]:
        """Send ``line`` to every worker; each one's name and answer line, in
        index order (an error answer for one that is not running)."""
        return [
            (name, f"error {answer}" if isinstance(answer, WorkerGone) else answer)
            for name, answer in await self._ask_every(line)
        ]

    async def ask_each(self, line: str) -> list[tuple[str, str | None]]:
        """Send ``line`` to every worker; each one's name and answer line, in
        index order. None for a worker that is not running or ended before it
        answered: it did none of it, and starts afresh."""
        return [
            (name, None if isinstance(answer, WorkerGone) else answer)
            for name, answer in await self._ask_every(line)
        ]

    async def _ask_every(self, line: str) -> list[tuple[str, str | WorkerGone]]:
        answers: list[tuple[str, str | WorkerGone]] = []
        asked = []
        for index in range(1, self.count + 1):
            worker = self.workers.get(index)
            if worker is None:
                answers.append((f"worker {index}", WorkerGone("not running: it is started again shortly")))
                continue
            asked.append((worker, worker.ask(line)))
        for worker, answer in asked:
            try:
                answers.append((worker.name, await answer))
            except defer.TimeoutError:
                answers.append((worker.name, f"error no answer within {ANSWER_TIMEOUT:g} s"))
            except WorkerGone as e:
                answers.append((worker.name, e))
        answers.sort(key=lambda named: int(named[0].split()[1]))
        return answers


class WorkerSpawner:
    """Starts a worker as ``twistd -n nomp -c CONF --worker N`` (the same
    Python), with the held Stratum sockets from descriptor FIRST_SOCKET_FD
    on and its control channel's pipes; its output goes where the main
    process's goes."""

    def __init__(self, reactor: Any, conf: str, held: HeldSockets) -> None:
        self._reactor = reactor
        self._conf = os.path.abspath(conf)
        self._held = held

    def __call__(self, worker: WorkerProcess) -> None:
        sockets = self._held.sockets()
        environment = {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}
        environment[SOCKETS_VARIABLE] = describe(sockets, FIRST_SOCKET_FD)
        child_fds: dict[int, int | str] = {0: "w", 1: 1, 2: 2, COMMANDS_FD: "w", ANSWERS_FD: "r"}
        for i, held in enumerate(sockets):
            child_fds[FIRST_SOCKET_FD + i] = held.fileno
        command = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "nomp", "-c", self._conf]
        self._reactor.spawnProcess(
            worker,
            sys.executable,
            [*command, "--worker", str(worker.index)],
            env=environment,
            childFDs=child_fds,
        )
