"""Where log events go: built from the ``logging`` section of config.yaml."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterable
from typing import IO, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import implementer

from nomp.config import LoggingConfig

# Libraries whose info lines repeat, every few seconds, what the pool says
# once: ClientService (under txredisapi's Redis connections) logs each
# reconnection attempt while Redis is away, where each part that needs Redis
# logs the outage once and its end once. Their warnings and errors still show.
QUIET_NAMESPACES = frozenset({"twisted.application._client_service.ClientService"})
_CHATTER = frozenset({LogLevel.debug, LogLevel.info})


@implementer(ILogFilterPredicate)
class QuietLibraries:
    """Drops the debug and info events of QUIET_NAMESPACES."""

    def __call__(self, event: LogEvent) -> object:  # a PredicateResult (untyped constants)
        if event.get("log_namespace") in QUIET_NAMESPACES and event.get("log_level") in _CHATTER:
            return PredicateResult.no
        return PredicateResult.maybe


@implementer(ILogObserver)
class WorkerLabel:
    """Names a worker process in each of its events: a ``worker`` field (its
    number, in JSON lines) and ``worker N`` before a text line's system, so
    that the lines of the main process and its workers, which go to the same
    place, tell who wrote them."""

    def __init__(self, observer: ILogObserver, worker: int) -> None:
        self._observer = observer
        self._worker = worker

    def __call__(self, event: LogEvent) -> None:
        labelled = dict(event)
        labelled["worker"] = self._worker
        system = event.get("log_system")
        if system is None:  # what the text line shows without one
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
        labelled["log_system"] = f"worker {self._worker} {system}"
        self._observer(labelled)


class LogFile:
    """The configured log file, which can be opened again at its path.

    logrotate moves the file away and a new one takes its path; until the
    process opens that path again (``reopen``, on SIGUSR1: NompService) its
    lines go on into the moved file. Each line is written and flushed in one
    step under a lock, as log events come from the hashing threads too: a
    reopen never swaps the file between a line and its flush, so the file
    closed has nothing left in its buffer.
    """

    def __init__(self, path: str, stream: IO[str]) -> None:
        self.path = path
        self._stream = stream
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str) -> LogFile:
        """The file at ``path``, opened for appending."""
        return cls(path, _append(path))

    def write(self, text: str) -> int:
        with self._lock:
            written = self._stream.write(text)
            self._stream.flush()
            return written

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()

    def reopen(self) -> None:
        """Write from now on to the file at the path, opened again (created
        if it is not there). OSError if it cannot be opened: the lines then
        go on into the file open until now."""
        stream = _append(self.path)
        with self._lock:
            old, self._stream = self._stream, stream
        # Its every line was flushed as written: a failing close loses none.
        with contextlib.suppress(OSError):
            old.close()

    def close(self) -> None:
        with self._lock:
            self._stream.close()


def _append(path: str) -> IO[str]:
    return open(path, "a", encoding="utf-8")


class PoolLogObserver(FilteringLogObserver):
    """The pool's observer (make_observer), with the file it writes to, if any."""

    def __init__(
        self, sink: ILogObserver, predicates: Iterable[ILogFilterPredicate], log_file: LogFile | None
    ) -> None:
        super().__init__(sink, predicates)
        self.log_file = log_file


def make_observer(
    settings: LoggingConfig,
    stream: IO[str] | None = None,
    levels: LogLevelFilterPredicate | None = None,
    worker: int | None = None,
) -> PoolLogObserver:
    """A level-filtered text or JSON-lines observer, without the libraries' chatter.

    ``stream`` defaults to the configured file (a LogFile, opened for
    appending: the observer's ``log_file``) or standard output. ``levels``:
    the level filter to use, kept by the caller to change the level while
    the process runs (by default one at the configured level); ``worker``:
    the worker process's number, if it is one (WorkerLabel).
    """
    log_file = None
    if stream is None:
        if settings.file:
            log_file = LogFile.open(settings.file)  # lives as long as the process
            # Twisted's file observers only write and flush.
            stream = cast(IO[str], log_file)
        else:
            stream = sys.stdout
    sink: ILogObserver = (
        jsonFileLogObserver(stream) if settings.format == "json" else textFileLogObserver(stream)
    )
    if worker is not None:
        sink = WorkerLabel(sink, worker)
    if levels is None:
        levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(settings.level))
    return PoolLogObserver(sink, [levels, QuietLibraries()], log_file)
