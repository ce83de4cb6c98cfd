"""ProfitSwitchingService on a task.Clock: prices through StubTreq (and a file),
templates from fake pools, decisions carried out by a fake Switches."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from nomp.chain.template import BlockTemplate
from nomp.config.model import HTTPPricesConfig, PricesConfig, ProfitSwitchingConfig
from nomp.pool.service import TemplateRead
from nomp.switching import SwitchRefused
from nomp.switching.prices import FilePriceSource, HTTPGetter, HTTPPriceSource
from nomp.switching.profitservice import ProfitPool, ProfitSwitchingService

URL = "http://prices.test/v1"
DIFF1 = 0xFFFF * 2**208
COIN = 10**8


class Hanging(Resource):
    """An exchange that never answers."""

    isLeaf = True

    def render_GET(self, request: IRequest) -> int:
        return NOT_DONE_YET


class Prices(Resource):
    """The exchange: its current body and status (or no answer, with ``hang``)."""

    isLeaf = True

    def __init__(self, prices: dict[str, Any]) -> None:
        super().__init__()
        self.body = json.dumps(prices).encode()
        self.status = 200
        self.hang = False

    def set(self, prices: dict[str, Any]) -> None:
        self.body = json.dumps(prices).encode()

    def render_GET(self, request: IRequest) -> bytes | int:
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        return self.body


class Refusing:
    """An HTTP client refused at every request, with an error quoting the URL."""

    def get(self, url: str, /, *, headers: Headers, unbuffered: bool) -> defer.Deferred[Any]:
        return defer.fail(ConnectionRefusedError(f"connecting to {url}"))


class FakeSwitches:
    """The coin-switching service as profit switching sees it: one switch,
    moves recorded, refusals on demand. ``hold`` keeps a move's answer back."""

    def __init__(self, pools: Sequence[str], algorithm: str = "scrypt") -> None:
        self._pools = tuple(pools)
        self._algorithm = algorithm
        self.on = self._pools[0]
        self.moves: list[tuple[str, str, str]] = []
        self.refuse: str | None = None
        self.hold: defer.Deferred[str] | None = None
        self.broken: Exception | None = None  # raised by current(): a bug somewhere
        self.failing: Exception | None = None  # switch() fails with it

    def switch_names(self) -> Sequence[str]:
        return ("scrypt",)

    def algorithm(self, switch: str) -> str:
        return self._algorithm

    def pools(self, switch: str) -> Sequence[str]:
        return self._pools

    def current(self, switch: str) -> str:
        if self.broken is not None:
            raise self.broken
        return self.on

    def switch(self, switch: str, pool: str, reason: str) -> defer.Deferred[str]:
        self.moves.append((switch, pool, reason))
        if self.refuse is not None:
            return defer.fail(SwitchRefused(self.refuse))
        if self.failing is not None:
            return defer.fail(self.failing)
        self.on = pool
        answer = f"ok {switch}: now on {pool}"
        if self.hold is not None:
            return self.hold.addCallback(lambda _: answer)
        return defer.succeed(answer)


class FakeTemplates:
    """A pool's latest template as a polling pool keeps it: read just now, unless the
    test fixes when (``read_at``) to make it stale."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.template: BlockTemplate | None = None
        self.read_at: float | None = None

    @property
    def latest_template(self) -> TemplateRead | None:
        if self.template is None:
            return None
        return TemplateRead(self.template, self._clock.seconds() if self.read_at is None else self.read_at)


def template(reward: int, target: int = DIFF1, height: int = 200) -> BlockTemplate:
    return BlockTemplate(
        height=height,
        version=0x20000000,
        previous_block_hash="00" * 32,
        bits=0x1D00FFFF,
        target=target,
        curtime=1,
        mintime=1,
        coinbase_value=reward,
        transactions=(),
        witness_commitment=None,
        mweb=None,
        rules=(),
    )


def messages(events: Sequence[LogEvent], level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e["log_level"] == level]


class ProfitTestCase(TestCase):
    """Two scrypt pools, ltc (the default) and doge, ranked every 60 s; the prices
    from an exchange behind StubTreq."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(10_000)
        self.exchange = Prices({"LTC": "70", "DOGE": "0.1"})
        self.http: Any = StubTreq(self.exchange)
        self.switches = FakeSwitches(["ltc", "doge"])
        self.ltc, self.doge = FakeTemplates(self.clock), FakeTemplates(self.clock)
        self.pools = {"ltc": ProfitPool("LTC", self.ltc), "doge": ProfitPool("DOGE", self.doge)}
        self.config = ProfitSwitchingConfig(
            prices=PricesConfig(http=HTTPPricesConfig(url=URL), unit="USD"),
            interval=60.0,
            hysteresis=Decimal("0.05"),
            minimum_stay=300.0,
            max_template_age=120.0,
        )

    def service(
        self, source: Any = None, config: ProfitSwitchingConfig | None = None
    ) -> ProfitSwitchingService:
        if source is None:
            source = HTTPPriceSource(self.http, URL, self.clock, timeout=5.0, max_bytes=4096)
        service = ProfitSwitchingService(
            config or self.config, self.switches, self.pools.get, source, self.clock
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def templates(self, ltc: int, doge: int) -> None:
        """Both pools' templates: rewards in base units, the same target."""
        self.ltc.template = template(ltc)
        self.doge.template = template(doge)

    def tick(self, seconds: float = 60.0) -> None:
        """Let ``seconds`` pass and deliver the exchange's answers."""
        self.clock.advance(seconds)
        self.http.flush()


class ProfitServiceTests(ProfitTestCase):
    """The service's rounds, decisions and switches."""

    def test_no_round_before_the_interval(self) -> None:
        """The first ranking comes one interval after the start."""
        service = self.service()
        self.http.flush()
        self.assertEqual(service.snapshot().switches, ())
        self.tick()
        self.assertEqual(len(service.snapshot().switches), 1)

    def test_switches_to_the_better_coin(self) -> None:
        """doge earning well past the hysteresis after the minimum stay: moved there, and
        the decision logged with its fields."""
        self.templates(ltc=625 * COIN // 100, doge=10_000 * COIN)  # ltc 437.5 USD a block, doge 1000
        service = self.service()
        with capturedLogs() as events:
            self.clock.advance(240.0)
            self.tick()  # 300 s after the start: the minimum stay is over
        self.assertEqual(len(self.switches.moves), 1)
        switch, pool, reason = self.switches.moves[0]
        self.assertEqual((switch, pool), ("scrypt", "doge"))
        self.assertEqual(reason, "profit: doge earns 128.57 % more than ltc")
        (line,) = [e for e in events if e.get("to_pool") == "doge" and e["log_level"] == LogLevel.info]
        self.assertEqual((line["switch"], line["from_pool"]), ("scrypt", "ltc"))
        self.assertEqual(set(line["revenues"]), {"ltc", "doge"})
        state = service.snapshot().switches[0]
        self.assertEqual((state.decision.action, state.decision.target), ("switch", "doge"))
        self.assertEqual(state.outcome, "ok scrypt: now on doge")
        self.assertEqual(state.algorithm, "scrypt")
        self.assertEqual(state.since, self.clock.seconds())
        self.assertEqual([e.pool for e in state.ranking.estimates], ["doge", "ltc"])
        self.assertEqual(service.snapshot().switches_made, {("scrypt", "done"): 1})

    def test_coin_decimals(self) -> None:
        """Each pool's reward is counted in whole coins of its coin's decimals: doge of 6
        decimals earns 100 times what the same reward of 8 would."""
        self.pools["doge"] = ProfitPool("DOGE", self.doge, decimals=6)
        self.templates(ltc=COIN, doge=1000 * 10**6)  # ltc 70 USD a block, doge 1000 * 0.1 = 100 USD
        service = self.service()
        self.clock.advance(240.0)
        self.tick()
        ranking = service.snapshot().switches[0].ranking
        self.assertEqual([e.pool for e in ranking.estimates], ["doge", "ltc"])
        revenue = {e.pool: e.revenue for e in ranking.estimates}
        self.assertEqual(revenue["doge"], Fraction(100) * Fraction(DIFF1 + 1, 2**256))
        self.assertEqual(revenue["ltc"], Fraction(70) * Fraction(DIFF1 + 1, 2**256))
        self.assertEqual(self.switches.on, "doge")

    def test_minimum_stay_then_hysteresis(self) -> None:
        """Right after a switch, a better coin waits for the minimum stay; then a small
        gain within the hysteresis does not move it back."""
        service = self.service()
        self.templates(ltc=625 * COIN // 100, doge=10_000 * COIN)
        self.clock.advance(240.0)
        self.tick()  # 300 s after the start
        self.assertEqual(self.switches.on, "doge")
        # ltc's price soars: ltc earns 10 times as much, but doge became current just now.
        self.exchange.set({"LTC": "7000", "DOGE": "0.1"})
        self.tick()
        self.assertEqual(self.switches.on, "doge")
        self.assertIn("of the minimum stay of 300 s", service.snapshot().switches[0].decision.reason)
        self.tick(180.0)  # 240 s on doge
        self.assertEqual(self.switches.on, "doge")
        self.tick()  # 300 s on doge
        self.assertEqual(self.switches.on, "ltc")
        # Much later, doge 4 % better: within the 5 % hysteresis, stays on ltc.
        self.exchange.set({"LTC": "70", "DOGE": "0.0455"})
        self.tick(600.0)
        self.assertEqual(self.switches.on, "ltc")
        self.assertEqual(
            service.snapshot().switches[0].decision.reason,
            "doge earns 4 % more than ltc, within the hysteresis (5 %)",
        )
        self.assertEqual([pool for _, pool, _ in self.switches.moves], ["doge", "ltc"])

    def test_price_source_down(self) -> None:
        """An exchange answering 500: one warning for the outage, no decision, no move;
        one line when it is back."""
        self.exchange.status = 500
        service = self.service()
        self.templates(ltc=COIN, doge=10**6 * COIN)
        with capturedLogs() as events:
            self.tick()
            self.tick()
            self.tick()
        down = [m for m in messages(events) if "prices from" in m]
        self.assertEqual(len(down), 1)
        self.assertIn("HTTP status 500", down[0])
        self.assertEqual(self.switches.moves, [])
        snapshot = service.snapshot()
        self.assertEqual(snapshot.prices_error, "HTTP status 500")
        self.assertIsNone(snapshot.prices_read_at)
        self.assertEqual(snapshot.switches, ())
        self.exchange.status = 200
        with capturedLogs() as events:
            self.tick()
        self.assertTrue(any("answered after" in m for m in messages(events)))
        self.assertIsNone(service.snapshot().prices_error)

    def test_wrong_shape_is_an_outage(self) -> None:
        """An answer of the wrong shape (a list) is the source being down, not a ranking."""
        self.exchange.body = b'["LTC", 70]'
        service = self.service()
        self.templates(ltc=COIN, doge=10**6 * COIN)
        self.tick()
        self.assertEqual(service.snapshot().prices_error, "the document is a list, not an object")
        self.assertEqual(self.switches.moves, [])

    def test_skipped_coins(self) -> None:
        """A coin without a price, or with a stale template, is skipped with its reason
        (logged once, not every round) and never taken for worthless."""
        self.exchange.set({"LTC": "70"})
        service = self.service()
        self.clock.advance(600.0)
        self.templates(ltc=COIN, doge=10**9 * COIN)
        with capturedLogs() as events:
            self.tick()
            self.tick()
        skips = [m for m in messages(events) if "not ranked" in m]
        self.assertEqual(
            skips, ["profit switching scrypt: doge not ranked: no price for DOGE: 'DOGE' is missing"]
        )
        self.assertEqual(service.snapshot().switches[0].decision.reason, "ltc earns the most")
        # doge has its price again, but ltc's template is stale (its daemon is away): ltc
        # cannot be valued, so it stays even though doge is worth far more.
        self.exchange.set({"LTC": "70", "DOGE": "1"})
        self.ltc.read_at = self.clock.seconds()
        with capturedLogs() as events:
            self.tick(121.0)
        state = service.snapshot().switches[0]
        self.assertEqual(self.switches.moves, [])
        self.assertEqual(state.decision.action, "stay")
        self.assertEqual(
            state.decision.reason,
            "current pool ltc cannot be valued (block template is 121 s old (at most 120 s))",
        )
        self.assertIn("profit switching scrypt: doge ranked again", messages(events))

    def test_negative_price_skipped(self) -> None:
        """A negative price skips its coin."""
        self.exchange.set({"LTC": "70", "DOGE": "-5"})
        service = self.service()
        self.templates(ltc=COIN, doge=COIN)
        self.tick()
        (skipped,) = service.snapshot().switches[0].ranking.skipped
        self.assertEqual(skipped.reason, "price of DOGE '-5' is not a positive number")

    def test_refused_switch(self) -> None:
        """A switch the coin-switching service refuses is logged and counted; the stay
        is not restarted."""
        self.switches.refuse = "switch scrypt: pool doge is not ready"
        service = self.service()
        self.clock.advance(300.0)
        self.templates(ltc=COIN, doge=10**6 * COIN)
        with capturedLogs() as events:
            self.tick()
        self.assertTrue(
            any(
                "refused: switch scrypt: pool doge is not ready" in m for m in messages(events, LogLevel.warn)
            )
        )
        state = service.snapshot().switches[0]
        self.assertEqual(state.outcome, "refused: switch scrypt: pool doge is not ready")
        self.assertEqual(state.since, 10_000.0)
        self.assertEqual(service.snapshot().switches_made, {("scrypt", "refused"): 1})

    def test_switch_by_someone_else(self) -> None:
        """A switch the operator made restarts the minimum stay from when it was seen."""
        service = self.service()
        self.clock.advance(300.0)
        self.templates(ltc=COIN, doge=COIN)
        self.tick()
        self.switches.on = "doge"
        self.exchange.set({"LTC": "700", "DOGE": "0.1"})
        self.templates(ltc=COIN, doge=COIN)
        self.tick()
        state = service.snapshot().switches[0]
        self.assertEqual(state.since, self.clock.seconds())
        self.assertEqual(state.decision.action, "stay")
        self.assertEqual(self.switches.moves, [])

    def test_stop_waits_for_a_switch(self) -> None:
        """A stop during a move waits for the miners to have moved."""
        self.switches.hold = defer.Deferred()
        service = self.service()
        self.clock.advance(300.0)
        self.templates(ltc=COIN, doge=10**6 * COIN)
        self.tick()
        self.assertEqual(len(self.switches.moves), 1)
        stopped = defer.maybeDeferred(service.stopService)
        self.assertNoResult(stopped)
        self.switches.hold.callback("moved")
        self.successResultOf(stopped)

    def test_file_source(self) -> None:
        """Prices from a file, read again each round: a change there moves the switch."""
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as file:
            json.dump({"LTC": "70", "DOGE": "0.001"}, file)
        service = self.service(FilePriceSource(path, 4096))
        self.clock.advance(300.0)
        self.templates(ltc=625 * COIN // 100, doge=10_000 * COIN)
        self.tick()
        self.assertEqual(service.snapshot().switches[0].decision.reason, "ltc earns the most")
        with open(path, "w") as file:
            json.dump({"LTC": "70", "DOGE": "0.1"}, file)
        self.templates(ltc=625 * COIN // 100, doge=10_000 * COIN)
        self.tick()
        self.assertEqual(self.switches.on, "doge")
        os.remove(path)
        self.tick()
        self.assertIn("cannot read", service.snapshot().prices_error or "")

    def test_unknown_pool(self) -> None:
        """A pool of the switch that this process does not run is skipped, saying so."""
        self.switches = FakeSwitches(["ltc", "doge", "elsewhere"])
        service = self.service()
        self.templates(ltc=COIN, doge=COIN)
        self.tick()
        skipped = {s.pool: s.reason for s in service.snapshot().switches[0].ranking.skipped}
        self.assertEqual(skipped, {"elsewhere": "not a pool of this process"})

    def test_switch_fails(self) -> None:
        """A switch that fails unexpectedly is logged with its traceback and counted, and
        the next round runs."""
        service = self.service()
        self.clock.advance(240.0)
        self.templates(ltc=COIN, doge=10**6 * COIN)
        self.switches.failing = RuntimeError("ports gone")
        with capturedLogs() as events:
            self.tick()
        self.assertEqual(service.snapshot().switches_made, {("scrypt", "failed"): 1})
        (failure,) = [e for e in events if e.get("log_failure") is not None]
        self.assertIn("switch to doge failed", formatEvent(failure))
        self.flushLoggedErrors(RuntimeError)

    def test_round_fails(self) -> None:
        """A bug in a round (here the switches' current() raising) is logged, and the
        timer goes on: the next round decides."""
        service = self.service()
        self.templates(ltc=COIN, doge=COIN)
        self.switches.broken = KeyError("scrypt")
        with capturedLogs() as events:
            self.tick()
        self.assertTrue(any("the round failed" in m for m in messages(events, LogLevel.critical)))
        self.flushLoggedErrors(KeyError)
        self.switches.broken = None
        self.tick()
        self.assertEqual(service.snapshot().switches[0].decision.reason, "ltc earns the most")

    def test_stop_cancels_a_read(self) -> None:
        """A stop while the prices are being read cancels the read at once: nothing is
        left waiting, and no round completes."""
        self.http = StubTreq(Hanging())
        service = self.service()
        self.templates(ltc=COIN, doge=COIN)
        self.tick()
        stopped = defer.maybeDeferred(service.stopService)
        self.successResultOf(stopped)
        self.assertEqual(service.snapshot().switches, ())
        self.assertEqual(self.switches.moves, [])

    def test_stays_logged_once_at_info(self) -> None:
        """A stay is logged at info when its reason is new, at debug while it repeats."""
        self.service()
        self.templates(ltc=COIN, doge=COIN)
        with capturedLogs() as events:
            self.tick()
            self.tick()
            self.exchange.set({"LTC": "1", "DOGE": "1.01"})
            self.tick()
        stays = [(e["log_level"], formatEvent(e)) for e in events if "stays on" in e["log_format"]]
        self.assertEqual(
            stays,
            [
                (LogLevel.info, "profit switching scrypt: stays on ltc: ltc earns the most"),
                (LogLevel.debug, "profit switching scrypt: stays on ltc: ltc earns the most"),
                (
                    LogLevel.info,
                    "profit switching scrypt: stays on ltc: doge earns 1 % more than ltc, "
                    "within the hysteresis (5 %)",
                ),
            ],
        )
        (first,) = [e for e in events if "stays on" in e["log_format"]][:1]
        self.assertEqual((first["switch"], first["from_pool"], first["to_pool"]), ("scrypt", "ltc", None))
        self.assertEqual(set(first["revenues"]), {"ltc", "doge"})


class SecretURLTests(ProfitTestCase):
    """A price URL with an API key in its query string and a user and password
    before its host: the pool's log lines and errors name the source by its
    address only, whichever way the source fails."""

    SECRET_URL = "https://user:pass@prices.test/v1?apikey=SECRET"

    def outages(self, source: HTTPPriceSource, fail: Any, recover: Any) -> list[LogEvent]:
        """A round that fails, one that works, one that fails again and one that
        works: everything the pool logged meanwhile."""
        service = self.service(source)
        self.templates(ltc=COIN, doge=COIN)
        with capturedLogs() as events:
            for broken in (True, False, True, False):
                (fail if broken else recover)()
                self.tick()
                self.tick(5.0)  # a read that hangs times out
                error = service.snapshot().prices_error
                if broken:
                    self.assertIsNotNone(error)
                    self.assertNotIn("SECRET", str(error))
                    self.assertNotIn("pass", str(error))
        self.assertEqual(service.snapshot().source, "https://prices.test/v1")
        named = [formatEvent(e) for e in events if "prices from" in formatEvent(e)]
        self.assertEqual(len(named), 4)  # waiting, answered, unavailable, back
        self.assertTrue(all("prices from https://prices.test/v1" in text for text in named))
        for event in events:
            for text in (formatEvent(event), repr(event)):
                self.assertNotIn("SECRET", text)
                self.assertNotIn("pass", text)
        return list(events)

    def source(self, http: Any) -> HTTPPriceSource:
        return HTTPPriceSource(http, self.SECRET_URL, self.clock, timeout=5.0, max_bytes=4096)

    def test_server_error(self) -> None:
        """An HTTP 500."""

        def fail() -> None:
            self.exchange.status = 500

        def recover() -> None:
            self.exchange.status = 200

        self.outages(self.source(self.http), fail, recover)

    def test_not_json(self) -> None:
        """An answer that is not JSON (one quoting the key, at that)."""
        good = self.exchange.body

        def fail() -> None:
            self.exchange.body = b"<html>bad key SECRET</html>"

        def recover() -> None:
            self.exchange.body = good

        self.outages(self.source(self.http), fail, recover)

    def test_timeout(self) -> None:
        """No answer within the timeout."""

        def fail() -> None:
            self.exchange.hang = True

        def recover() -> None:
            self.exchange.hang = False

        self.outages(self.source(self.http), fail, recover)

    def test_refused(self) -> None:
        """A connection refused, with an error quoting the URL asked for."""
        working: HTTPGetter = self.http
        http = working

        class Switchable:
            def get(self, url: str, /, *, headers: Headers, unbuffered: bool) -> defer.Deferred[Any]:
                return http.get(url, headers=headers, unbuffered=unbuffered)

        def fail() -> None:
            nonlocal http
            http = Refusing()

        def recover() -> None:
            nonlocal http
            http = working

        events = self.outages(self.source(Switchable()), fail, recover)
        refused = [formatEvent(e) for e in events if "refused" in formatEvent(e)]
        self.assertTrue(refused)
        self.assertTrue(all("connecting to https://prices.test/v1." in text for text in refused))


class StatusLineTests(ProfitTestCase):
    """The control port's ``status``: a line on each switch, the pool it is on,
    the last decision and what came of it, and whether the prices are up."""

    def line(self, service: ProfitSwitchingService) -> str:
        (line,) = service.status_lines()
        return line

    def test_stays_then_moves(self) -> None:
        """No decision before the first round; a stay with its reason and age;
        a move; the last decision kept while the prices are down."""
        service = self.service()
        self.assertEqual(
            self.line(service), "profit switching scrypt: on ltc, no decision yet, prices not read yet"
        )
        self.templates(ltc=COIN, doge=COIN)
        self.tick()
        self.clock.advance(30.0)
        self.assertEqual(
            self.line(service),
            "profit switching scrypt: on ltc, stayed 30 s ago (ltc earns the most), prices up",
        )
        self.templates(ltc=625 * COIN // 100, doge=10_000 * COIN)
        self.tick(210.0)  # 300 s after the start: the minimum stay is over
        self.assertEqual(
            self.line(service),
            "profit switching scrypt: on doge, moved ltc -> doge 0 s ago "
            "(doge earns 128.57 % more than ltc), prices up",
        )
        self.exchange.status = 500
        self.tick()
        self.assertEqual(
            self.line(service),
            "profit switching scrypt: on doge, moved ltc -> doge 60 s ago "
            "(doge earns 128.57 % more than ltc), prices down",
        )
        self.switches.on = "ltc"  # moved back by the operator: the line says where it is now
        self.assertIn("scrypt: on ltc, moved ltc -> doge", self.line(service))

    def test_refused_and_failed(self) -> None:
        """A move the switches refused or that failed says so (the why is in the log and the API)."""
        self.switches.refuse = "switch scrypt: moved to doge by some workers only: ... | ..."
        service = self.service()
        self.clock.advance(300.0)
        self.templates(ltc=COIN, doge=10**6 * COIN)
        with capturedLogs():
            self.tick()
        self.assertEqual(
            self.line(service),
            "profit switching scrypt: on ltc, move ltc -> doge refused 0 s ago "
            "(doge earns 142757.14 % more than ltc), prices up",
        )
        self.switches.refuse = None
        self.switches.failing = RuntimeError("ports gone")
        self.templates(ltc=COIN, doge=10**6 * COIN)
        with capturedLogs():
            self.tick()
        self.flushLoggedErrors(RuntimeError)
        self.assertIn("scrypt: on ltc, move ltc -> doge failed 0 s ago (", self.line(service))
