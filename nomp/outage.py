"""Outage: warn once when something the pool depends on goes away, note when it is back.

Every part that talks to Redis or a daemon on a timer has the same duty:
an hour without Redis is one warning and one "back" line, not thousands;
while the process is still starting (nothing has answered yet) the wait
is an info line, not a warning; and an error that is not the dependency
being away (a bug, a refused script) is logged as a failure with its
traceback instead of being taken for an outage.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure


class Outage:
    """The state of one dependency as one component sees it.

    ``subject`` names it in the log lines ("pool ltc: Redis"); ``transient``
    are the exception types that mean "away just now".
    """

    def __init__(
        self,
        log: Logger,
        subject: str,
        clock: IReactorTime,
        transient: tuple[type[BaseException], ...],
    ) -> None:
        self._log = log
        self.subject = subject
        self._clock = clock
        self._transient = transient
        self.down_since: float | None = None  # reactor seconds of the first failure of this outage
        self.answered = False  # it has answered at least once
        self.outages = 0  # outages seen (a counter for tests and metrics)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, self._transient)

    def failed(self, error: BaseException, detail: str = "", **fields: Any) -> bool:
        """Note a failed call; whether it was the dependency being away.

        A transient error is logged once per outage (``detail`` and
        ``fields`` add what the component wants said, e.g. how much waits).
        Any other error is logged as a failure every time and does not
        start an outage: the caller decides what to do with the work.
        """
        if not self.is_transient(error):
            self._log.failure(
                "{subject}: unexpected error" + (f"; {detail}" if detail else ""),
                Failure(error),
                subject=self.subject,
                **fields,
            )
            return False
        if self.down_since is not None:
            return True
        self.down_since = self._clock.seconds()
        self.outages += 1
        reason = _describe(error)
        if not self.answered:
            self._log.info(
                "{subject}: waiting for it ({reason})" + (f"; {detail}" if detail else ""),
                subject=self.subject,
                reason=reason,
                **fields,
            )
        else:
            self._log.warn(
                "{subject} unavailable ({reason})" + (f"; {detail}" if detail else ""),
                subject=self.subject,
                reason=reason,
                **fields,
            )
        return True

    def succeeded(self, detail: str = "", **fields: Any) -> None:
        """Note a call that worked: the end of an outage, if one was on."""
        was_down, self.down_since = self.down_since, None
        answered_before, self.answered = self.answered, True
        if was_down is None:
            return
        seconds = self._clock.seconds() - was_down
        if answered_before:
            message = "{subject} is back after {seconds:.0f} s"
        else:
            message = "{subject} answered after {seconds:.0f} s"
        self._log.info(
            message + (f"; {detail}" if detail else ""), subject=self.subject, seconds=seconds, **fields
        )


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
