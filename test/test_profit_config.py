"""config.yaml's ``profit_switching`` section: read into ProfitSwitchingConfig, every
bad value reported with its path."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from nomp.config.diff import diff_configs
from nomp.config.model import HTTPPricesConfig, PricesConfig, ProfitSwitchingConfig
from test.test_switching_config import SwitchingConfTestCase


class ProfitSwitchingConfigTests(SwitchingConfTestCase):
    """The section as the loader reads it (beside the baseline's switch)."""

    def section(self, **keys: Any) -> dict[str, Any]:
        """A valid section with an HTTP source, ``keys`` over it; set in config.yaml."""
        section: dict[str, Any] = {"prices": {"http": {"url": "https://prices.example/v1"}}, **keys}
        self.settings["profit_switching"] = section
        return section

    def test_absent_is_off(self) -> None:
        """Without the section there is no profit switching."""
        self.assertIsNone(self.load().settings.profit_switching)

    def test_defaults(self) -> None:
        """Only a price source given: the defaults for the rest."""
        self.section()
        self.assertEqual(
            self.load().settings.profit_switching,
            ProfitSwitchingConfig(
                prices=PricesConfig(http=HTTPPricesConfig(url="https://prices.example/v1")),
                interval=60.0,
                hysteresis=Decimal("0.05"),
                minimum_stay=600.0,
                max_template_age=120.0,
            ),
        )

    def test_everything_given(self) -> None:
        """Every key read, the hysteresis exact from a string or a YAML number."""
        self.section(
            interval=30,
            hysteresis="0.1",
            minimum_stay=0,
            max_template_age=20,
            prices={
                "file": "/var/lib/nomp/prices.json",
                "path": "data.{symbol}.price",
                "names": {"LTC": "litecoin"},
                "unit": "BTC",
                "max_bytes": 4096,
            },
        )
        profit = self.load().settings.profit_switching
        assert profit is not None
        self.assertEqual(profit.hysteresis, Decimal("0.1"))
        self.assertEqual((profit.interval, profit.minimum_stay, profit.max_template_age), (30.0, 0.0, 20.0))
        self.assertEqual(
            profit.prices,
            PricesConfig(
                file="/var/lib/nomp/prices.json",
                path="data.{symbol}.price",
                names={"LTC": "litecoin"},
                unit="BTC",
                max_bytes=4096,
            ),
        )
        self.settings["profit_switching"]["hysteresis"] = 0.1
        profit = self.load().settings.profit_switching
        assert profit is not None
        self.assertEqual(profit.hysteresis, Decimal("0.1"))

    def test_bad_values(self) -> None:
        """Every bad value is reported at once, each with its path."""
        self.section(
            interval=0,
            hysteresis="-0.01",
            minimum_stay=-1,
            max_template_age="soon",
            prices={
                "http": {"url": "ftp://prices.example", "timeout": 0},
                "path": "data..{symbol}",
                "names": {"LTC": 5},
                "unit": "",
                "max_bytes": 0,
            },
            colour="blue",
        )
        p = "config.yaml: profit_switching"
        self.assertErrors(
            f"{p}.interval: must be > 0",
            f"{p}.hysteresis: must be >= 0",
            f"{p}.minimum_stay: must be >= 0",
            f"{p}.max_template_age: expected a number, got a string ('soon')",
            f"{p}.prices.http.url: must start with http:// or https://",
            f"{p}.prices.http.timeout: must be > 0",
            f"{p}.prices.path: must be keys separated by dots, none empty, e.g. data.{{symbol}}.price",
            f"{p}.prices.names.LTC: expected a string, got a number (5)",
            f"{p}.prices.unit: must not be empty",
            f"{p}.prices.max_bytes: must be > 0",
            f"{p}.colour: unknown key (expected one of: hysteresis, interval, max_template_age, "
            "minimum_stay, prices)",
        )

    def test_hysteresis_not_a_number(self) -> None:
        """A hysteresis that is no decimal number is refused (NaN included)."""
        self.section(hysteresis="NaN")
        self.assertErrors(
            "config.yaml: profit_switching.hysteresis: expected a decimal number, got a string ('NaN')"
        )

    def test_path_without_symbol(self) -> None:
        """The path must say where the symbol goes, once."""
        self.section(prices={"file": "prices.json", "path": "data.price"})
        self.assertErrors(
            "config.yaml: profit_switching.prices.path: must hold {symbol} exactly once, "
            "where each coin's symbol goes"
        )
        self.section(prices={"file": "prices.json", "path": "{symbol}.{symbol}"})
        self.assertErrors(
            "config.yaml: profit_switching.prices.path: must hold {symbol} exactly once, "
            "where each coin's symbol goes"
        )

    def test_one_source(self) -> None:
        """Exactly one of http and file."""
        self.section(prices={"unit": "USD"})
        self.assertErrors(
            "config.yaml: profit_switching.prices.http: missing: give http (an endpoint) or file"
        )
        self.section(prices={"file": "prices.json", "http": {"url": "http://127.0.0.1:1/"}})
        self.assertErrors("config.yaml: profit_switching.prices.file: not with http: give one price source")

    def test_prices_missing(self) -> None:
        """The section needs its price source."""
        self.settings["profit_switching"] = {"interval": 10}
        self.assertErrors("config.yaml: profit_switching.prices: missing")

    def test_needs_switches(self) -> None:
        """Without a switching section there is nothing to switch: refused."""
        self.section()
        del self.settings["switching"]
        self.assertErrors("config.yaml: profit_switching: needs a switching section: the switches it moves")

    def test_reload_needs_restart(self) -> None:
        """A changed section is kept as it runs until a restart."""
        self.section()
        running = self.load()
        self.section(interval=5)
        plan = diff_configs(running, self.load())
        self.assertEqual(plan.settings_restart, ("profit_switching.interval: 60 -> 5",))
        self.assertEqual(plan.running.settings.profit_switching, running.settings.profit_switching)
        self.section(hysteresis="0.1")
        plan = diff_configs(running, self.load())
        self.assertEqual(plan.settings_restart, ("profit_switching.hysteresis: 0.05 -> 0.1",))
