"""A scripted coin daemon: JSON-RPC over HTTP, answering the way litecoind does.

Only for what a real node cannot be made to do on demand (no peers, initial
block download, another chain, a wrong password, garbage, silence); blocks
and templates are tested against a real litecoind (test/servers.py).

Replies follow litecoind 0.21 (``src/httprpc.cpp``): HTTP 200 with
``{"result": ..., "error": null, "id": ...}``; an RPC error as
``{"result": null, "error": {"code": ..., "message": ...}, "id": ...}`` with
HTTP 404 for an unknown method, 400 for an invalid request, 500 otherwise;
a wrong password as HTTP 401 with an empty body.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

# A handler gets the call's params and returns its result, or raises FakeRPCError.
Handler = Callable[[list[Any]], Any]

RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_PARSE_ERROR = -32700

# litecoind's JSONErrorReply: these codes have their own HTTP status, all others 500.
_HTTP_STATUS_OF_CODE = {RPC_INVALID_REQUEST: 400, RPC_METHOD_NOT_FOUND: 404}


class FakeRPCError(Exception):
    """Raised by a handler: the daemon answers with this JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ReceivedCall:
    """One JSON-RPC request as the fake daemon received it."""

    method: str
    params: list[Any]
    request_id: Any
    authorization: str | None  # the Authorization header, as sent
    content_type: str | None

    def basic_credentials(self) -> str | None:
        """``user:password`` from a Basic Authorization header."""
        if self.authorization is None or not self.authorization.startswith("Basic "):
            return None
        return base64.b64decode(self.authorization.removeprefix("Basic ")).decode()


class FakeDaemon(Resource):
    """A coin daemon's RPC port, scripted by tests.

    ``handlers`` maps method names to handlers; calls are recorded in
    ``calls``. ``never_answer()`` and ``answer_raw()`` switch to a daemon
    that keeps every request open, or to one that sends a fixed HTTP reply
    whatever is asked; ``answer_normally()`` switches back.
    """

    isLeaf = True

    def __init__(
        self,
        handlers: Mapping[str, Handler] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.credentials = credentials  # None: any Authorization is accepted
        self.calls: list[ReceivedCall] = []
        self.unanswered: list[Request] = []  # requests kept open by never_answer()
        self._silent = False
        self._raw: tuple[int, bytes] | None = None

    def never_answer(self) -> None:
        """From now on, accept requests and never reply to them."""
        self._silent, self._raw = True, None

    def answer_raw(self, status: int, body: bytes) -> None:
        """From now on, reply to every request with this HTTP status and body."""
        self._silent, self._raw = False, (status, body)

    def answer_normally(self) -> None:
        """From now on, answer with the handlers again."""
        self._silent, self._raw = False, None

    def methods(self) -> list[str]:
        """The methods called so far, in order."""
        return [call.method for call in self.calls]

    def render_POST(self, request: Request) -> bytes | int:
        """Answer one JSON-RPC request."""
        assert request.content is not None
        body = request.content.read()
        authorization = request.getHeader("authorization")
        if self.credentials is not None:
            expected = base64.b64encode(":".join(self.credentials).encode()).decode()
            if authorization != f"Basic {expected}":
                request.setResponseCode(401)
                request.setHeader("WWW-Authenticate", 'Basic realm="jsonrpc"')
                return b""
        try:
            call = json.loads(body, parse_float=Decimal)
        except ValueError:
            return self._error(request, None, RPC_PARSE_ERROR, "Parse error")
        if not isinstance(call, dict) or not isinstance(call.get("method"), str):
            return self._error(request, None, RPC_INVALID_REQUEST, "Invalid Request object")
        params = call.get("params", [])
        self.calls.append(
            ReceivedCall(
                call["method"],
                params,
                call.get("id"),
                authorization,
                request.getHeader("content-type"),
            )
        )
        if self._silent:
            self.unanswered.append(request)
            return NOT_DONE_YET
        if self._raw is not None:
            status, raw = self._raw
            request.setResponseCode(status)
            return raw
        handler = self.handlers.get(call["method"])
        if handler is None:
            return self._error(request, call.get("id"), RPC_METHOD_NOT_FOUND, "Method not found")
        try:
            result = handler(params)
        except FakeRPCError as e:
            return self._error(request, call.get("id"), e.code, e.message)
        return self._reply(request, 200, {"result": result, "error": None, "id": call.get("id")})

    def _error(self, request: Request, request_id: Any, code: int, message: str) -> bytes:
        status = _HTTP_STATUS_OF_CODE.get(code, 500)
        reply = {"result": None, "error": {"code": code, "message": message}, "id": request_id}
        return self._reply(request, status, reply)

    def _reply(self, request: Request, status: int, reply: dict[str, Any]) -> bytes:
        request.setResponseCode(status)
        request.setHeader("Content-Type", "application/json")
        return (to_json(reply) + "\n").encode()


def to_json(value: Any) -> str:
    """JSON text with Decimal amounts written as exact numbers, as a daemon writes them."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))}:{to_json(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)
