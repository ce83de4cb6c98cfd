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


def make_observer(
    settings: LoggingConfig, stream: IO[str] | None = None, levels: LogLevelFilterPredicate | None = None
) -> ILogObserver:
    """A level-filtered text or JSON-lines observer, without the libraries' chatter.

    ``stream`` defaults to the configured file (opened for appending) or
    standard output. ``levels``: the level filter to use, kept by the
    caller to change the level while the process runs (by default one at
    the configured level).
    """
    if stream is None:
        stream = open(settings.file, "a", encoding="utf-8") if settings.file else sys.stdout  # noqa: SIM115 - lives as long as the process
    sink = jsonFileLogObserver(stream) if settings.format == "json" else textFileLogObserver(stream)
    if levels is None:
        levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(settings.level))
    return FilteringLogObserver(sink, [levels, QuietLibraries()])
