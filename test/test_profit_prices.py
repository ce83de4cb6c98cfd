"""nomp.switching.prices: reading prices from a real local HTTP server and from
files, and finding each coin's price in the document."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

from treq.client import HTTPClient
from twisted.internet import defer, reactor, task
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from nomp.config.model import HTTPPricesConfig, PricesConfig
from nomp.config.schema import address_for_logs
from nomp.switching.prices import (
    FilePriceSource,
    HTTPPriceSource,
    PricePath,
    PriceSourceError,
    parse_document,
    parse_price,
    price_source,
)

FLAT = PricePath.parse("{symbol}", {})


class PriceEndpoint(Resource):
    """An exchange's price endpoint: answers each GET with ``status`` and ``body``
    (or never, with ``hang``)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.body = b"{}"
        self.hang = False
        self.requests = 0
        self.uri: bytes | None = None  # the last request's
        self.authorization: bytes | None = None

    def render_GET(self, request: IRequest) -> bytes | int:
        self.requests += 1
        self.uri = request.uri
        self.authorization = request.getHeader(b"Authorization")
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        request.setHeader(b"Content-Type", b"application/json")
        return self.body


class HTTPPriceSourceTests(TestCase):
    """An HTTP source against a real twisted.web server on loopback."""

    def setUp(self) -> None:
        self.endpoint = PriceEndpoint()
        site: Any = Site(self.endpoint)
        site.noisy = False
        self.port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        url = f"http://127.0.0.1:{self.port.getHost().port}/prices"  # type: ignore[attr-defined]
        self.source = HTTPPriceSource(self.http, url, reactor, timeout=5.0, max_bytes=1024)

    async def test_good_prices(self) -> None:
        """A flat object of strings and numbers: every price exact."""
        self.endpoint.body = b'{"LTC": "71.25", "DOGE": 0.1, "BTC": 60000}'
        document = await self.source.fetch()
        self.assertEqual(
            FLAT.prices(document, ["LTC", "DOGE", "BTC"]),
            {"LTC": Fraction("71.25"), "DOGE": Fraction(1, 10), "BTC": Fraction(60000)},
        )
        self.assertEqual(self.source.description, self.source.url)
        self.assertIsNone(self.endpoint.authorization)

    async def test_server_error(self) -> None:
        """A 500: the source is down."""
        self.endpoint.status = 500
        self.endpoint.body = b'{"error": "down"}'
        with self.assertRaisesRegex(PriceSourceError, "HTTP status 500"):
            await self.source.fetch()

    async def test_not_json(self) -> None:
        """An HTML page where JSON was expected: the source is down."""
        self.endpoint.body = b"<html>maintenance</html>"
        with self.assertRaisesRegex(PriceSourceError, "not JSON"):
            await self.source.fetch()

    async def test_oversized(self) -> None:
        """A body past max_bytes is not read to its end."""
        self.endpoint.body = b'{"LTC": "1", "pad": "' + b"x" * 100_000 + b'"}'
        with self.assertRaisesRegex(PriceSourceError, "larger than 1024 bytes"):
            await self.source.fetch()

    async def test_unreachable(self) -> None:
        """Nothing listening: the source is down."""
        await defer.maybeDeferred(self.port.stopListening)
        with self.assertRaises(PriceSourceError):
            await self.source.fetch()

    async def test_timeout(self) -> None:
        """An endpoint that never answers: down after the timeout (on a test clock)."""
        clock = task.Clock()
        self.endpoint.hang = True
        source = HTTPPriceSource(self.http, self.source.url, clock, timeout=3.0, max_bytes=1024)
        fetching = defer.Deferred.fromCoroutine(source.fetch())
        while self.endpoint.requests == 0:  # the request reaches the server
            await task.deferLater(reactor, 0.01, lambda: None)
        clock.advance(3.0)
        with self.assertRaisesRegex(PriceSourceError, "no answer in 3 s"):
            await fetching

    async def test_configured(self) -> None:
        """price_source builds the configured HTTP source: prices read over a connection of
        its own each time, the document's size limit the configuration's."""
        url = self.source.url
        source = price_source(
            PricesConfig(http=HTTPPricesConfig(url=url, timeout=5.0), max_bytes=64), reactor
        )
        assert isinstance(source, HTTPPriceSource)
        self.endpoint.body = b'{"LTC": "70"}'
        for _ in range(2):
            self.assertEqual(FLAT.prices(await source.fetch(), ["LTC"]), {"LTC": Fraction(70)})
        self.endpoint.body = b'{"LTC": "70", "pad": "' + b"x" * 64 + b'"}'
        with self.assertRaisesRegex(PriceSourceError, "larger than 64 bytes"):
            await source.fetch()
        self.assertEqual(self.endpoint.requests, 3)

    async def test_missing_symbol(self) -> None:
        """A coin the document does not have is that coin's reason, the others are read."""
        self.endpoint.body = b'{"LTC": "70"}'
        prices = FLAT.prices(await self.source.fetch(), ["LTC", "DOGE"])
        self.assertEqual(prices, {"LTC": Fraction(70), "DOGE": "no price for DOGE: 'DOGE' is missing"})

    async def test_negative_price(self) -> None:
        """A negative price is that coin's reason, never a ranking."""
        self.endpoint.body = b'{"LTC": "-70", "DOGE": 0}'
        prices = FLAT.prices(await self.source.fetch(), ["LTC", "DOGE"])
        self.assertEqual(
            prices,
            {
                "LTC": "price of LTC '-70' is not a positive number",
                "DOGE": "price of DOGE 0 is not a positive number",
            },
        )

    async def test_wrong_shape(self) -> None:
        """A list where an object of prices was expected: the source is down."""
        self.endpoint.body = b'[{"LTC": "70"}]'
        with self.assertRaisesRegex(PriceSourceError, "the document is a list, not an object"):
            FLAT.prices(await self.source.fetch(), ["LTC"])


def secret_free(test: TestCase, error: str, events: Sequence[LogEvent]) -> None:
    """Neither ``error`` nor any event (its text and every field) has the URL's
    API key or password."""
    for text in (error, *(formatEvent(e) for e in events), *(repr(e) for e in events)):
        test.assertNotIn("SECRET", text)
        test.assertNotIn("pass", text)


class QuotingGetter:
    """An HTTP client whose every request fails with an error quoting the URL it
    was asked for, as some of Twisted's and hyperlink's errors do."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def get(self, url: str, /, *, headers: Headers, unbuffered: bool) -> defer.Deferred[Any]:
        self.urls.append(url)
        return defer.fail(ConnectionRefusedError(f"connecting to {url}"))


class SecretURLTests(TestCase):
    """A price URL with an API key in its query string and a user and password
    before its host: the source is named by scheme, host, port and path, and no
    error or log line has the key or the password, whatever the failure."""

    def setUp(self) -> None:
        self.endpoint = PriceEndpoint()
        site: Any = Site(self.endpoint)
        site.noisy = False
        # The exchange's own access log quotes the query: it is the exchange's, not the pool's.
        site.log = lambda request: None
        self.port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        where = f"127.0.0.1:{self.port.getHost().port}"  # type: ignore[attr-defined]
        self.address = f"http://{where}/v1/prices"
        self.url = f"http://user:pass@{where}/v1/prices?apikey=SECRET&x=1#SECRET"

    def source(self, clock: Any = reactor) -> HTTPPriceSource:
        return HTTPPriceSource(self.http, self.url, clock, timeout=3.0, max_bytes=1024)

    async def failed(self, fetching: defer.Deferred[Any]) -> str:
        """The error ``fetching`` fails with, checked free of secrets with the events
        logged until then."""
        with capturedLogs() as events, self.assertRaises(PriceSourceError) as caught:
            await fetching
        error = str(caught.exception)
        secret_free(self, error, events)
        return error

    def test_address_for_logs(self) -> None:
        """Scheme, host, port and path; no user-info, query or fragment."""
        self.assertEqual(
            address_for_logs("https://key:pass@api.example.com/v1/prices?apikey=SECRET#top"),
            "https://api.example.com/v1/prices",
        )
        self.assertEqual(address_for_logs("http://[::1]:8080/p?k=SECRET"), "http://[::1]:8080/p")
        self.assertEqual(address_for_logs("https://api.example.com"), "https://api.example.com")
        self.assertEqual(self.source().description, self.address)

    async def test_read(self) -> None:
        """The query string is sent, the user and password as basic authentication
        (not as part of the host), the fragment not at all."""
        self.endpoint.body = b'{"LTC": "70"}'
        with capturedLogs() as events:
            document = await self.source().fetch()
        self.assertEqual(FLAT.prices(document, ["LTC"]), {"LTC": Fraction(70)})
        self.assertEqual(self.endpoint.uri, b"/v1/prices?apikey=SECRET&x=1")
        self.assertEqual(self.endpoint.authorization, b"Basic dXNlcjpwYXNz")  # user:pass
        secret_free(self, "", events)

    async def test_refused(self) -> None:
        """Nothing listening."""
        await defer.maybeDeferred(self.port.stopListening)
        error = await self.failed(defer.Deferred.fromCoroutine(self.source().fetch()))
        self.assertIn("refused", error)

    async def test_server_error(self) -> None:
        """An HTTP 500."""
        self.endpoint.status = 500
        error = await self.failed(defer.Deferred.fromCoroutine(self.source().fetch()))
        self.assertEqual(error, "HTTP status 500")

    async def test_not_json(self) -> None:
        """A page that is not JSON."""
        self.endpoint.body = b"<html>bad key SECRET</html>"
        error = await self.failed(defer.Deferred.fromCoroutine(self.source().fetch()))
        self.assertIn("not JSON", error)

    async def test_timeout(self) -> None:
        """No answer within the timeout (on a test clock)."""
        clock = task.Clock()
        self.endpoint.hang = True
        fetching = defer.Deferred.fromCoroutine(self.source(clock).fetch())
        while self.endpoint.requests == 0:  # the request reaches the server
            await task.deferLater(reactor, 0.01, lambda: None)
        clock.advance(3.0)
        self.assertEqual(await self.failed(fetching), "no answer in 3 s")

    async def test_error_quoting_the_url(self) -> None:
        """An error whose text quotes the URL asked for names the source by its
        address instead."""
        http = QuotingGetter()
        source = HTTPPriceSource(http, self.url, reactor, timeout=3.0, max_bytes=1024)
        error = await self.failed(defer.Deferred.fromCoroutine(source.fetch()))
        self.assertEqual(
            error,
            f"ConnectionRefusedError: Connection was refused by other side: connecting to {self.address}.",
        )
        self.assertEqual(http.urls, [f"{self.address}?apikey=SECRET&x=1"])


class PricePathTests(TestCase):
    """Finding prices in a document."""

    def test_nested(self) -> None:
        """A path through objects, the symbol's key renamed where the source names it otherwise."""
        path = PricePath.parse("data.{symbol}.price", {"LTC": "litecoin"})
        document = parse_document(b'{"data": {"litecoin": {"price": "70.5"}, "DOGE": {"price": 0.25}}}')
        self.assertEqual(
            path.prices(document, ["LTC", "DOGE"]), {"LTC": Fraction("70.5"), "DOGE": Fraction(1, 4)}
        )

    def test_symbol_inside_a_key(self) -> None:
        """``{symbol}`` may be part of a key (a market's name)."""
        path = PricePath.parse("{symbol}USDT", {})
        self.assertEqual(path.prices({"LTCUSDT": "70"}, ["LTC"]), {"LTC": Fraction(70)})

    def test_missing_above_the_symbol(self) -> None:
        """A key above the symbol's missing, or not an object: the document's shape is wrong."""
        path = PricePath.parse("data.{symbol}", {})
        with self.assertRaisesRegex(PriceSourceError, "'data' is missing"):
            path.prices({"result": {}}, ["LTC"])
        with self.assertRaisesRegex(PriceSourceError, "'data' is a string, not an object"):
            path.prices({"data": "none"}, ["LTC"])

    def test_missing_below_the_symbol(self) -> None:
        """A key below the symbol's missing, or the coin's entry not an object: that coin's reason."""
        path = PricePath.parse("{symbol}.usd", {})
        self.assertEqual(
            path.prices({"LTC": {"eur": 60}, "DOGE": 5}, ["LTC", "DOGE"]),
            {
                "LTC": "no price for LTC: 'LTC.usd' is missing",
                "DOGE": "no price for DOGE: 'DOGE.usd' is missing",
            },
        )

    def test_parse_refuses(self) -> None:
        """A path without the symbol, with it twice, or with an empty key is refused."""
        for text in ("price", "{symbol}.{symbol}", "a..{symbol}", "{symbol}{symbol}"):
            with self.assertRaises(ValueError):
                PricePath.parse(text, {})


class ParsePriceTests(TestCase):
    """One price value."""

    def test_accepted(self) -> None:
        """Strings and JSON numbers of decimal numbers above zero, exactly."""
        self.assertEqual(parse_price(" 0.000001 ", "X"), Fraction(1, 10**6))
        self.assertEqual(parse_price(Decimal("1e-8"), "X"), Fraction(1, 10**8))
        self.assertEqual(parse_price(3, "X"), Fraction(3))

    def test_refused(self) -> None:
        """NaN, infinities, zero, negatives, words, booleans, null, lists: reasons."""
        cases: list[tuple[Any, str]] = [
            ("NaN", "price of X 'NaN' is not a positive number"),
            ("Infinity", "price of X 'Infinity' is not a positive number"),
            ("0", "price of X '0' is not a positive number"),
            ("-1", "price of X '-1' is not a positive number"),
            ("cheap", "price of X 'cheap' is not a number"),
            ("", "price of X '' is not a number"),
            (True, "price of X is a boolean, not a number"),
            (None, "price of X is null, not a number"),
            ([1], "price of X is a list, not a number"),
            ({"v": 1}, "price of X is an object, not a number"),
        ]
        for value, reason in cases:
            self.assertEqual(parse_price(value, "X"), reason)

    def test_json_constants_refused(self) -> None:
        """JSON's non-standard NaN and Infinity make the document unusable."""
        for raw in (b'{"LTC": NaN}', b'{"LTC": -Infinity}'):
            with self.assertRaisesRegex(PriceSourceError, "not JSON"):
                parse_document(raw)

    def test_numbers_not_floats(self) -> None:
        """A JSON number is read as a Decimal, not a float."""
        self.assertEqual(parse_document(b'{"v": 0.1}'), {"v": Decimal("0.1")})


class FilePriceSourceTests(TestCase):
    """A file source, read again at every fetch."""

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.source = FilePriceSource(self.path, max_bytes=1024)

    def write(self, content: bytes) -> None:
        with open(self.path, "wb") as file:
            file.write(content)

    async def test_missing(self) -> None:
        """No file: the source is down."""
        with self.assertRaisesRegex(PriceSourceError, "cannot read .*No such file"):
            await self.source.fetch()

    async def test_malformed(self) -> None:
        """A file that is not JSON: the source is down."""
        self.write(b'{"LTC": "70",')
        with self.assertRaisesRegex(PriceSourceError, "not JSON"):
            await self.source.fetch()

    async def test_too_big(self) -> None:
        """A file past max_bytes: the source is down."""
        self.write(json.dumps({"pad": "x" * 2000}).encode())
        with self.assertRaisesRegex(PriceSourceError, "larger than 1024 bytes"):
            await self.source.fetch()

    async def test_configured(self) -> None:
        """price_source builds the configured file source."""
        self.write(b'{"LTC": "70"}')
        source = price_source(PricesConfig(file=self.path), reactor)
        assert isinstance(source, FilePriceSource)
        self.assertEqual(FLAT.prices(await source.fetch(), ["LTC"]), {"LTC": Fraction(70)})

    async def test_updated_between_reads(self) -> None:
        """Each fetch reads the file as it is then."""
        self.write(b'{"LTC": "70"}')
        self.assertEqual(FLAT.prices(await self.source.fetch(), ["LTC"]), {"LTC": Fraction(70)})
        self.write(b'{"LTC": "75.5"}')
        self.assertEqual(FLAT.prices(await self.source.fetch(), ["LTC"]), {"LTC": Fraction("75.5")})
        self.assertEqual(self.source.description, self.path)
