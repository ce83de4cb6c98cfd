"""One coin daemon over HTTP JSON-RPC."""

from __future__ import annotations

import base64
import itertools
import json
import re
from decimal import Decimal
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from nomp.background import cancellable
from nomp.daemon.errors import (
    DaemonError,
    DaemonHTTPError,
    DaemonResponseError,
    DaemonUnreachable,
    RPCError,
)

# A full block template is hex inside JSON: a 4 MB block is about 8 MB.
DEFAULT_MAX_RESPONSE = 64 * 1024 * 1024


class CallObserver(Protocol):
    """Told of every finished call: its daemon, method, seconds taken and
    failure (None for a result). Calls cancelled by their caller are not told."""

    def __call__(self, url: str, method: str, seconds: float, error: DaemonError | None) -> None: ...


class HTTPPoster(Protocol):
    """What DaemonRPC needs of treq: its ``post`` (an ``HTTPClient`` or ``StubTreq``)."""

    def post(
        self, url: str, /, *, data: bytes, headers: Headers, unbuffered: bool
    ) -> defer.Deferred[Any]: ...


class BoundedBody(TwistedProtocol):
    """Collects a response body, aborting once it passes ``limit`` bytes."""

    def __init__(self, limit: int, done: defer.Deferred[bytes]) -> None:
        self._limit = limit
        self._done = done
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._done.errback(ValueError(f"response larger than {self._limit} bytes"))
            assert self.transport is not None
            self.transport.stopProducing()  # type: ignore[attr-defined]
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = ResponseDone()) -> None:  # type: ignore[assignment]  # noqa: B008
        if self._done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._parts))
        else:
            self._done.errback(reason)


class DaemonRPC:
    """JSON-RPC calls to one daemon: 1.0 (the Bitcoin family, whose replies
    carry both ``result`` and ``error``) or 2.0 (the Ethereum family, whose
    replies carry one of them).

    Amounts in replies are parsed as ``Decimal``, never float. Every call has
    a deadline covering the whole exchange, body included.
    """

    def __init__(
        self,
        http: HTTPPoster,
        url: str,
        user: str,
        password: str,
        clock: IReactorTime,
        timeout: float = 30.0,
        max_response: int = DEFAULT_MAX_RESPONSE,
        observer: CallObserver | None = None,
        version: str = "1.0",
    ) -> None:
        self.url = url
        self._version = version
        self._observer = observer
        self._http = http
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._headers = Headers(
            {
                "Authorization": [f"Basic {token}"],
                "Content-Type": ["application/json"],
            }
        )
        self._clock = clock
        self._timeout = timeout
        self._max_response = max_response
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"DaemonRPC({self.url!r})"

    async def call(self, method: str, *params: Any) -> Any:
        """The ``result`` of ``method(*params)``; raises a DaemonError subclass."""
        started = self._clock.seconds()
        attempt = defer.Deferred.fromCoroutine(self._exchange(method, list(params)))
        attempt.addTimeout(self._timeout, self._clock)
        try:
            result = await cancellable(attempt)
        except defer.TimeoutError:
            timeout = DaemonUnreachable(self.url, method, f"no answer in {self._timeout:g}s")
            self._observe(method, started, timeout)
            raise timeout from None
        except DaemonError as e:
            self._observe(method, started, e)
            raise
        self._observe(method, started, None)
        return result

    def _observe(self, method: str, started: float, error: DaemonError | None) -> None:
        if self._observer is not None:
            self._observer(self.url, method, self._clock.seconds() - started, error)

    async def _exchange(self, method: str, params: list[Any]) -> Any:
        request_id = next(self._ids)
        body = json.dumps(
            {"jsonrpc": self._version, "id": request_id, "method": method, "params": params},
            default=_encode_decimal,
        ).encode()
        try:
            # A timed-out request is cancelled, and a cancelled Agent request fails
            # with ResponseNeverReceived: cancellable() makes that a CancelledError.
            response: IResponse = await cancellable(
                self._http.post(self.url, data=body, headers=self._headers, unbuffered=True)
            )
            done: defer.Deferred[bytes] = defer.Deferred()
            response.deliverBody(BoundedBody(self._max_response, done))
            raw = await done
        except defer.CancelledError:
            raise
        except ValueError as e:
            raise DaemonResponseError(self.url, method, str(e)) from None
        except Exception as e:  # connection refused, reset, DNS, TLS...
            raise DaemonUnreachable(self.url, method, _describe(e)) from None
        return self._result(method, request_id, response.code, raw)

    def _result(self, method: str, request_id: int, status: int, raw: bytes) -> Any:
        try:
            reply = json.loads(raw, parse_float=Decimal)
        except ValueError:
            reply = None
        if isinstance(reply, dict) and self._version == "2.0" and ("result" in reply) != ("error" in reply):
            reply.setdefault("error", None)
            reply.setdefault("result", None)
        if not isinstance(reply, dict) or "result" not in reply or "error" not in reply:
            if status != 200:
                detail = _HTTP_HINTS.get(status) or _plain_text(raw)
                raise DaemonHTTPError(self.url, method, status, detail)
            raise DaemonResponseError(self.url, method, f"not a JSON-RPC reply: {raw[:200]!r}")
        if reply.get("id") != request_id:
            raise DaemonResponseError(self.url, method, f"reply id {reply.get('id')!r} != {request_id}")
        error = reply["error"]
        if error is not None:
            if isinstance(error, dict):
                code, message = error.get("code"), error.get("message")
                if isinstance(code, int) and isinstance(message, str):
                    raise RPCError(self.url, method, code, message)
            raise DaemonResponseError(self.url, method, f"malformed error {error!r}")
        return reply["result"]


_HTTP_HINTS = {
    401: "Unauthorized: check the daemon's rpcuser/rpcpassword",
    403: "Forbidden: check the daemon's rpcallowip",
    404: "Not Found: check the URL (a wallet path?)",
}


def _plain_text(raw: bytes, limit: int = 120) -> str:
    """An error page as one short line: tags dropped, whitespace collapsed."""
    text = re.sub(r"<[^>]*>", " ", raw[:4096].decode("utf-8", "replace"))
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _encode_decimal(value: object) -> object:
    if isinstance(value, Decimal):
        # Only whole base units may go out as JSON numbers without float loss.
        if value == value.to_integral_value():
            return int(value)
        raise TypeError("fractional Decimal parameters must be sent as coin amounts")
    raise TypeError(f"cannot encode {type(value).__name__}")


def _describe(error: Exception) -> str:
    reasons = getattr(error, "reasons", None)  # ResponseNeverReceived and friends
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return f"{type(error).__name__}: {error}"
