"""Where log events go: built from the ``logging`` section of config.yaml."""

from __future__ import annotations

import sys
from typing import IO

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


def make_observer(
    settings: LoggingConfig,
    stream: IO[str] | None = None,
    levels: LogLevelFilterPredicate | None = None,
    worker: int | None = None,
) -> ILogObserver:
    """A level-filtered text or JSON-lines observer, without the libraries' chatter.

    ``stream`` defaults to the configured file (opened for appending) or
    standard output. ``levels``: the level filter to use, kept by the
    caller to change the level while the process runs (by default one at
    the configured level); ``worker``: the worker process's number, if it is
    one (WorkerLabel).
    """
    if stream is None:
        stream = open(settings.file, "a", encoding="utf-8") if settings.file else sys.stdout  # noqa: SIM115 - lives as long as the process
    sink: ILogObserver = (
        jsonFileLogObserver(stream) if settings.format == "json" else textFileLogObserver(stream)
    )
    if worker is not None:
        sink = WorkerLabel(sink, worker)
    if levels is None:
        levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(settings.level))
    return FilteringLogObserver(sink, [levels, QuietLibraries()])
