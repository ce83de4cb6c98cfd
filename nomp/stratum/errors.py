"""Stratum error codes and the texts miners know, and the reply lines that carry them."""

from __future__ import annotations

import json

OTHER = 20
JOB_NOT_FOUND = 21
DUPLICATE_SHARE = 22
LOW_DIFFICULTY = 23
UNAUTHORIZED = 24
NOT_SUBSCRIBED = 25

_compact = json.JSONEncoder(separators=(",", ":")).encode


class StratumError(Exception):
    """A request refused with a Stratum error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def wire(self) -> list[object]:
        """The ``error`` member of the reply: [code, message, traceback]."""
        return [self.code, self.message, None]

    def reply(self, request_id: object) -> bytes:
        """The reply line refusing request ``request_id`` with this error (see `error_reply`)."""
        return error_reply(request_id, self.code, self.message)


def error_reply(request_id: object, code: int, message: str) -> bytes:
    """``{"id":...,"result":null,"error":[code,message,null]}`` and a newline.

    The bytes ``json.dumps`` writes with compact separators, with the usual
    ids and the message encoded directly: every malformed line a flood
    sends gets one of these.
    """
    if request_id is None:
        encoded_id = b"null"
    elif type(request_id) is int:
        encoded_id = b"%d" % request_id
    else:
        encoded_id = _compact(request_id).encode()
    return b'{"id":%s,"result":null,"error":[%d,%s,null]}\n' % (
        encoded_id,
        code,
        json.dumps(message).encode(),
    )
