"""Stratum error codes and the texts miners know."""

from __future__ import annotations

OTHER = 20
JOB_NOT_FOUND = 21
DUPLICATE_SHARE = 22
LOW_DIFFICULTY = 23
UNAUTHORIZED = 24
NOT_SUBSCRIBED = 25


class StratumError(Exception):
    """A request refused with a Stratum error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def wire(self) -> list[object]:
        """The ``error`` member of the reply: [code, message, traceback]."""
        return [self.code, self.message, None]
