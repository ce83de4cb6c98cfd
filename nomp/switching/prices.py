"""Coin prices for profit switching: where they come from and how they are read.

A source gives a JSON document: an HTTP endpoint read with treq, or a local
file read again at every ranking. Each coin's price is found in it by a path
of keys with ``{symbol}`` in one of them (``{symbol}`` for a flat
``{"LTC": "71.5"}``, ``data.{symbol}.price`` for ``{"data": {"LTC":
{"price": 71.5}}}``). A price is a JSON string or number, read exactly
(never as a float) and kept as a Fraction.

Two kinds of failure. The source as a whole (unreachable, an HTTP error,
too big, not JSON, not the shape the path says up to the symbol's key) is a
PriceSourceError: an outage, and no coin of any switch is valued. One coin's
price (its key missing, not a number, not above zero) is that coin's reason
to be skipped, and the other coins are still valued.
"""

from __future__ import annotations

import json
from base64 import b64encode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from nomp.background import cancellable
from nomp.config.model import PricesConfig
from nomp.config.schema import address_for_logs
from nomp.daemon.rpc import BoundedBody

SYMBOL = "{symbol}"


class PriceSourceError(Exception):
    """The price source gave nothing usable; the message says what it gave."""


@dataclass(frozen=True, slots=True)
class PricePath:
    """Where a coin's price is in the document: keys from the top, ``{symbol}``
    in one of them (the key of the coin in the source: its symbol unless
    ``names`` gives another)."""

    keys: tuple[str, ...]
    names: Mapping[str, str]  # coin symbol -> its key in the source

    @classmethod
    def parse(cls, text: str, names: Mapping[str, str]) -> PricePath:
        """A dotted path (``data.{symbol}.price``); ValueError for one that cannot work."""
        keys = tuple(text.split("."))
        if any(not key for key in keys):
            raise ValueError(f"{text!r}: an empty key between dots")
        holding = [key for key in keys if SYMBOL in key]
        if len(holding) != 1 or holding[0].count(SYMBOL) != 1:
            raise ValueError(f"{text!r}: {SYMBOL} must appear exactly once")
        return cls(keys, dict(names))

    @property
    def _symbol_at(self) -> int:
        return next(i for i, key in enumerate(self.keys) if SYMBOL in key)

    def prices(self, document: Any, symbols: Sequence[str]) -> dict[str, Fraction | str]:
        """Each symbol's price, or the reason it has none; PriceSourceError
        when the document does not have the shape the path gives above the
        symbol's key."""
        at = self._symbol_at
        table = document
        for depth, key in enumerate(self.keys[:at]):
            if not isinstance(table, dict):
                raise PriceSourceError(f"{_where(self.keys[:depth])} is {_kind(table)}, not an object")
            if key not in table:
                raise PriceSourceError(f"{_where(self.keys[: depth + 1])} is missing")
            table = table[key]
        if not isinstance(table, dict):
            raise PriceSourceError(f"{_where(self.keys[:at])} is {_kind(table)}, not an object")
        return {symbol: self._price(table, symbol) for symbol in symbols}

    def _price(self, table: dict[str, Any], symbol: str) -> Fraction | str:
        at = self._symbol_at
        keys = (self.keys[at].replace(SYMBOL, self.names.get(symbol, symbol)), *self.keys[at + 1 :])
        value: Any = table
        for depth, key in enumerate(keys):
            if not isinstance(value, dict) or key not in value:
                return f"no price for {symbol}: {_where(self.keys[:at] + keys[: depth + 1])} is missing"
            value = value[key]
        return parse_price(value, symbol)


def parse_price(value: Any, symbol: str) -> Fraction | str:
    """A price as a Fraction, or why it is not one: it must be a JSON number or a
    string of a decimal number, finite and above zero."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        return f"price of {symbol} is {_kind(value)}, not a number"
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        return f"price of {symbol} {value!r} is not a number"
    if not number.is_finite() or number <= 0:
        return f"price of {symbol} {value!r} is not a positive number"
    return Fraction(number)


def parse_document(raw: bytes) -> Any:
    """JSON with its numbers exact (Decimal, int); NaN and Infinity refused."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a number")

    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=refuse)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise PriceSourceError(f"not JSON: {e}") from None


class PriceSource(Protocol):
    """Where the prices come from."""

    @property
    def description(self) -> str:
        """The source in a log line."""
        ...

    async def fetch(self) -> Any:
        """The document, parsed; PriceSourceError when there is none."""
        ...


class HTTPGetter(Protocol):
    """What HTTPPriceSource needs of treq: its ``get`` (an ``HTTPClient`` or ``StubTreq``)."""

    def get(self, url: str, /, *, headers: Headers, unbuffered: bool) -> defer.Deferred[Any]: ...


class HTTPPriceSource:
    """A JSON document from an HTTP GET: within ``timeout`` seconds for the whole
    exchange, at most ``max_bytes``, with status 200.

    The URL may carry a secret (an API key in its query string, a user and
    password before the host): log lines and errors name the source by
    ``address_for_logs`` only, and the text of an error from treq or Twisted
    has the URL's secret parts taken out before it goes anywhere. A user and
    password are sent as HTTP basic authentication, not as part of the host.
    """

    def __init__(
        self, http: HTTPGetter, url: str, clock: IReactorTime, timeout: float, max_bytes: int
    ) -> None:
        self.url = url  # as configured, secrets and all: never for a log line
        self._http = http
        self._clock = clock
        self._timeout = timeout
        self._max_bytes = max_bytes
        parts = urlsplit(url)
        self._description = address_for_logs(url)
        self._request_url = urlunsplit(parts._replace(netloc=_host_and_port(parts), fragment=""))
        headers = {"Accept": ["application/json"]}
        if parts.username is not None or parts.password is not None:
            credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            headers["Authorization"] = ["Basic " + b64encode(credentials.encode()).decode("ascii")]
        self._headers = Headers(headers)
        self._secrets = _secret_parts(parts)

    @property
    def description(self) -> str:
        return self._description

    async def fetch(self) -> Any:
        try:
            return await self._fetch()
        except PriceSourceError as e:
            # The one way out for an error's text: whatever quoted the URL, it
            # leaves without the URL's secrets.
            raise PriceSourceError(self._without_secrets(str(e))) from None

    async def _fetch(self) -> Any:
        attempt = defer.Deferred.fromCoroutine(self._exchange())
        attempt.addTimeout(self._timeout, self._clock)
        try:
            raw = await cancellable(attempt)
        except defer.TimeoutError:
            raise PriceSourceError(f"no answer in {self._timeout:g} s") from None
        return parse_document(raw)

    async def _exchange(self) -> bytes:
        try:
            response: IResponse = await cancellable(
                self._http.get(self._request_url, headers=self._headers, unbuffered=True)
            )
            done: defer.Deferred[bytes] = defer.Deferred()
            response.deliverBody(BoundedBody(self._max_bytes, done))
            raw = await done
        except defer.CancelledError:
            raise
        except ValueError as e:  # the body's limit
            raise PriceSourceError(str(e)) from None
        except Exception as e:  # connection refused, reset, DNS, TLS...
            raise PriceSourceError(_describe(e)) from None
        if response.code != 200:
            raise PriceSourceError(f"HTTP status {response.code}")
        return raw

    def _without_secrets(self, text: str) -> str:
        """``text`` with the URL named by its address for logs and any secret part left
        in it (quoted as given, or percent-decoded) replaced."""
        for url in (self.url, self._request_url):
            text = text.replace(url, self._description)
        for secret in self._secrets:
            text = text.replace(secret, "[hidden]")
        return text


def _host_and_port(parts: SplitResult) -> str:
    """The URL's network location without its user-info."""
    return parts.netloc.rpartition("@")[2]


def _secret_parts(parts: SplitResult) -> tuple[str, ...]:
    """The parts of a URL that may hold a secret, as written and percent-decoded,
    longest first (so a part inside another does not break the longer one up)."""
    user_info = parts.netloc.rpartition("@")[0]
    found = {
        text
        for part in (user_info, parts.username, parts.password, parts.query, parts.fragment)
        if part
        for text in (part, unquote(part), unquote(part.replace("+", " ")))
    }
    return tuple(sorted(found, key=len, reverse=True))


def price_source(prices: PricesConfig, reactor: Any) -> PriceSource:
    """The source ``prices`` configures. An HTTP one opens a connection per read and
    keeps none (a read every interval): nothing is left open between reads, and a
    read under way is cancelled by its service's stop."""
    if prices.http is None:
        assert prices.file is not None  # the configuration gives one of them
        return FilePriceSource(prices.file, prices.max_bytes)
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    return HTTPPriceSource(HTTPClient(agent), prices.http.url, reactor, prices.http.timeout, prices.max_bytes)


class FilePriceSource:
    """A JSON document in a local file, read again at every fetch (at most ``max_bytes``)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = Path(path)
        self._max_bytes = max_bytes

    @property
    def description(self) -> str:
        return str(self.path)

    async def fetch(self) -> Any:
        try:
            with self.path.open("rb") as file:
                raw = file.read(self._max_bytes + 1)
        except OSError as e:
            raise PriceSourceError(f"cannot read {self.path}: {e.strerror}") from None
        if len(raw) > self._max_bytes:
            raise PriceSourceError(f"larger than {self._max_bytes} bytes")
        return parse_document(raw)


def _where(keys: Sequence[str]) -> str:
    return "the document" if not keys else repr(".".join(keys))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _describe(error: Exception) -> str:
    reasons = getattr(error, "reasons", None)  # ResponseNeverReceived and friends
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return f"{type(error).__name__}: {error}"
