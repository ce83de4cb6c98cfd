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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from nomp.background import cancellable
from nomp.config.model import PricesConfig
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
    exchange, at most ``max_bytes``, with status 200."""

    def __init__(
        self, http: HTTPGetter, url: str, clock: IReactorTime, timeout: float, max_bytes: int
    ) -> None:
        self.url = url
        self._http = http
        self._clock = clock
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._headers = Headers({"Accept": ["application/json"]})

    @property
    def description(self) -> str:
        return self.url

    async def fetch(self) -> Any:
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
                self._http.get(self.url, headers=self._headers, unbuffered=True)
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
