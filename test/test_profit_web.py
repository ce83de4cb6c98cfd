"""Profit switching in the web API, on the site and in the metrics: a real
WebService on a loopback port showing a ProfitSwitchingService's state."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import treq
from playwright.sync_api import expect
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nomp.config import WebConfig
from nomp.switching.profitservice import ProfitSwitchingService
from nomp.web.metrics import Metrics
from nomp.web.profitapi import decimal_text, profit_document
from nomp.web.service import WebService
from test.browser import Session, browse, screenshot
from test.fakes import pool_config
from test.test_profit_service import COIN, FakeSwitches, ProfitTestCase
from test.webclient import ApiClient, serve

PATH = "/api/switching/profit"


class ProfitApiTests(ProfitTestCase):
    """GET /api/switching/profit (checked against the OpenAPI document), the page and the metrics."""

    def switched(self) -> ProfitSwitchingService:
        """The service after one round that switched ltc to doge."""
        service = self.service()
        self.templates(ltc=625 * COIN // 100, doge=10_000 * COIN)
        self.clock.advance(240.0)
        self.tick()
        return service

    async def web(self, service: ProfitSwitchingService | None) -> ApiClient:
        config = WebConfig(listen="tcp:0:interface=127.0.0.1", stats_interval=3600.0)
        web = WebService(
            config,
            lambda: [pool_config(name="ltc")],
            lambda: None,
            reactor,
            profit=None if service is None else service.snapshot,
        )
        return ApiClient(self, await serve(self, web))

    async def test_document(self) -> None:
        """The switch's decision, its ranking best first and the counts, as the API gives them."""
        api = await self.web(self.switched())
        body = await api.get(PATH, schema_path=PATH)
        self.assertEqual(
            {k: body[k] for k in ("enabled", "unit", "source", "interval")},
            {"enabled": True, "unit": "USD", "source": "http", "interval": 60.0},
        )
        self.assertEqual(body["prices"], {"ok": True, "error": None, "readAt": 10_300.0})
        (switch,) = body["switches"]
        self.assertEqual(
            (switch["name"], switch["algorithm"], switch["current"]), ("scrypt", "scrypt", "doge")
        )
        self.assertEqual(
            switch["decision"],
            {
                "action": "switch",
                "from": "ltc",
                "to": "doge",
                "best": "doge",
                "reason": "doge earns 128.57 % more than ltc",
                "time": 10_300.0,
            },
        )
        self.assertEqual(switch["outcome"], "ok scrypt: now on doge")
        self.assertEqual([e["pool"] for e in switch["ranking"]], ["doge", "ltc"])
        doge = switch["ranking"][0]
        self.assertEqual((doge["symbol"], doge["price"], doge["reward"]), ("DOGE", "0.1", 10_000 * COIN))
        self.assertEqual(doge["target"], f"{0xFFFF * 2**208:064x}")
        self.assertEqual(switch["skipped"], [])
        self.assertEqual(switch["switches"], {"done": 1, "refused": 0, "failed": 0})

    async def test_source_down(self) -> None:
        """The price source's error is shown, and no switch."""
        self.exchange.status = 503
        service = self.service()
        self.tick()
        body = await (await self.web(service)).get(PATH, schema_path=PATH)
        self.assertEqual(body["prices"], {"ok": False, "error": "HTTP status 503", "readAt": None})
        self.assertEqual(body["switches"], [])

    async def test_skipped_shown(self) -> None:
        """A pool without a price is listed with its reason."""
        self.exchange.set({"LTC": "70"})
        service = self.service()
        self.templates(ltc=COIN, doge=COIN)
        self.tick()
        body = await (await self.web(service)).get(PATH, schema_path=PATH)
        self.assertEqual(
            body["switches"][0]["skipped"],
            [{"pool": "doge", "symbol": "DOGE", "reason": "no price for DOGE: 'DOGE' is missing"}],
        )

    async def test_not_configured(self) -> None:
        """Without profit switching the document says so, in the same shape."""
        body = await (await self.web(None)).get(PATH, schema_path=PATH)
        self.assertEqual(body, profit_document(None))
        self.assertFalse(body["enabled"])

    async def test_page(self) -> None:
        """The site links and serves the profit page when profit switching runs, and answers
        404 when it does not."""
        api = await self.web(self.switched())
        response = await treq.get(api.base + "/switching/profit", pool=api.http)
        self.assertEqual(response.code, 200)
        page = (await response.text()).replace("\n", " ")
        self.assertIn("<h1>Profit switching</h1>", page)
        self.assertIn("/static/profit.js?v=", page)
        home = await (await treq.get(api.base + "/", pool=api.http)).text()
        self.assertIn('<a href="/switching/profit">Profit switching</a>', home)
        script = await treq.get(api.base + "/static/profit.js", pool=api.http)
        self.assertEqual(script.code, 200)
        await script.content()
        off = await self.web(None)
        response = await treq.get(off.base + "/switching/profit", pool=off.http)
        self.assertEqual(response.code, 404)
        self.assertNotIn("/switching/profit", await (await treq.get(off.base + "/", pool=off.http)).text())
        await response.content()

    async def test_page_in_a_browser(self) -> None:
        """The page draws each switch: where it is, the decision, the ranking best first and
        the pools not ranked, with no script error."""
        self.exchange.set({"LTC": "70", "DOGE": "0.1"})
        self.switches = FakeSwitches(["ltc", "doge", "elsewhere"])
        api = await self.web(self.switched())

        def steps(session: Session) -> dict[str, Any]:
            page = session.page
            page.goto("/switching/profit")
            section = page.locator("section[data-switch=scrypt]")
            expect(section.locator("tbody tr")).to_have_count(2)
            found = {
                "heading": section.locator("h2").inner_text(),
                "decision": section.locator(".decision").inner_text(),
                "rows": [row.all_inner_texts() for row in section.locator("tbody tr").all()],
                "skipped": section.locator(".skipped li").all_inner_texts(),
                "summary": page.inner_text("#profit-summary"),
                "where": section.locator("p").first.inner_text(),
                "errors": session.watch.script_errors + session.watch.console_errors,
            }
            screenshot(page, "profit")
            return found

        found = await browse(api.base, steps)
        self.assertEqual(found["errors"], [])
        self.assertEqual(found["heading"], "scrypt scrypt")
        self.assertEqual(
            found["decision"],
            "Switched ltc → doge: doge earns 128.57 % more than ltc (ok scrypt: now on doge)",
        )
        doge, ltc = (row[0].split("\t") if len(row) == 1 else row for row in found["rows"])
        self.assertEqual(doge[:4], ["doge DOGE current", "0.1", "10,000.00000000 DOGE", "200"])
        self.assertEqual(ltc[:4], ["ltc LTC", "70", "6.25000000 LTC", "200"])
        self.assertEqual(found["skipped"], ["elsewhere: not a pool of this process"])
        self.assertRegex(found["where"], r"^On doge since .* ago · 1 switch made, 0 refused or failed$")
        self.assertIn("Prices in USD from an HTTP endpoint, ranked every 60 s", found["summary"])

    def test_metrics(self) -> None:
        """Each valued pool's revenue estimate, the switches by result, and whether the
        prices were read."""
        service = self.switched()
        metrics = Metrics()
        metrics.watch_profit(service.snapshot)
        text = metrics.render()[0].decode()
        doge = service.snapshot().switches[0].ranking.estimates[0].revenue
        self.assertIn(f'nomp_profit_revenue_per_hash{{pool="doge",switch="scrypt"}} {float(doge)!r}', text)
        self.assertIn('nomp_profit_switches_total{result="done",switch="scrypt"} 1.0', text)
        self.assertIn('nomp_profit_switches_total{result="refused",switch="scrypt"} 0.0', text)
        self.assertIn("nomp_profit_prices_up 1.0", text)
        self.assertNotIn("nomp_profit", Metrics().render()[0].decode())


class DecimalTextTests(TestCase):
    """Prices shown exactly."""

    def test_exact(self) -> None:
        """A price read from a decimal is shown as that decimal."""
        self.assertEqual(decimal_text(Fraction("70")), "70")
        self.assertEqual(decimal_text(Fraction("0.1")), "0.1")
        self.assertEqual(decimal_text(Fraction("123.456")), "123.456")
        self.assertEqual(decimal_text(Fraction("0.00000001")), "1E-8")
