"""Where log events go: built from the ``logging`` section of config.yaml."""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

from nomp.config import LoggingConfig


def make_observer(settings: LoggingConfig, stream: IO[str] | None = None) -> ILogObserver:
    """A level-filtered text or JSON-lines observer.

    ``stream`` defaults to the configured file (opened for appending) or
    standard output.
    """
    if stream is None:
        stream = open(settings.file, "a", encoding="utf-8") if settings.file else sys.stdout  # noqa: SIM115 - lives as long as the process
    sink = jsonFileLogObserver(stream) if settings.format == "json" else textFileLogObserver(stream)
    level = LogLevel.levelWithName(settings.level)
    return FilteringLogObserver(sink, [LogLevelFilterPredicate(defaultLogLevel=level)])
