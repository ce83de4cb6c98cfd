"""The configuration loader: ``load_config`` over whole conf folders.

Every test builds a conf folder in a temporary directory from a valid
baseline (``ConfTestCase`` below), changes one thing, and checks either the
typed result or the exact error lines, each ``file: path: message``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import yaml
from twisted.trial.unittest import TestCase

from nomp.config import (
    Config,
    ConfigErrors,
    EthCoinConfig,
    EthPoolConfig,
    EthRewards,
    RewardStep,
    WebConfig,
    load_config,
)
from nomp.config.diff import diff_configs, match_ports
from nomp.config.model import P2PConfig, SentinelAddress
from nomp.hashing import ALGORITHMS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KNOWN_ALGORITHMS = ", ".join(sorted({*ALGORITHMS, "ethash", "etchash"}))
POOL_KEYS = (
    "address, banning, block_refresh_interval, connection_timeout, daemons, enabled, "
    "hashrate_window, job_rebroadcast_timeout, p2p, payments, pool_signature, ports, reward_recipients, "
    "usernames, version_mask"
)
GLOBAL_KEYS = (
    "coins, control, drain_seconds, instance, instance_state, logging, pool_defaults, profit_switching, "
    "redis, switching, threads, web, workers"
)
DEFAULT_KEYS = "banning, block_refresh_interval, connection_timeout, job_rebroadcast_timeout, pool_signature"


ETH_ADDRESS = "0x" + "ab" * 20
ETH_POOL_KEYS = (
    "address, banning, block_refresh_interval, connection_timeout, daemons, dataset, enabled, "
    "hashrate_expiration, hashrate_window, node_name, payments, ports, stale_heights, state_update_interval, "
    "upstream_check_interval, usernames"
)
ETC_WEI = 10**18  # wei in one ETC (or ether)


def coin_algorithm(name: str) -> str:
    """The algorithm of the shipped coin file coins/<name>.yaml."""
    return str(yaml.safe_load(Path(REPO, "coins", f"{name}.yaml").read_text(encoding="utf-8"))["algorithm"])


def classic() -> dict[str, Any]:
    """A valid Ethereum-family coin file: Ethereum Classic, as the shipped one."""
    return {
        "name": "ethereum-classic",
        "symbol": "ETC",
        "algorithm": "etchash",
        "ecip1099_block": 11_700_000,
        "chain_id": 61,
        "block_time": 13,
        "rewards": {
            "schedule": [{"from_block": 0, "wei": 5 * ETC_WEI}],
            "era_length": 5_000_000,
            "uncle_rule": "ecip1017",
        },
    }


def litecoin() -> dict[str, Any]:
    """A valid coin file: Litecoin mainnet, as the shipped one."""
    return {
        "name": "litecoin",
        "symbol": "LTC",
        "algorithm": "scrypt",
        "network": {
            "chain": "main",
            "pubkey_address_prefix": 48,
            "script_address_prefixes": [50, 5],
            "bech32_hrp": "ltc",
            "mweb_hrp": "ltcmweb",
        },
        "gbt_rules": ["mweb", "segwit"],
        "transactions": {"version": 2},
        "block_time": 150,
        "coinbase_maturity": 100,
    }


def bitcoin() -> dict[str, Any]:
    """A second valid coin file, for a second pool."""
    return {
        "name": "bitcoin",
        "symbol": "BTC",
        "algorithm": "sha256d",
        "network": {
            "chain": "main",
            "pubkey_address_prefix": 0,
            "script_address_prefixes": [5],
            "bech32_hrp": "bc",
        },
    }


class ConfTestCase(TestCase):
    """A valid conf folder to change one thing in, then load.

    ``self.files`` maps each file, named as error lines name it
    (``config.yaml``, ``pools/ltc.yaml``, ``coins/litecoin.yaml``), to its
    content: data to dump as YAML, or ``str``/``bytes`` written as they are.
    Conf files go to ``<root>/conf``, coin files to ``<root>/coins``, and
    config.yaml names that coins folder by its absolute path.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.conf = os.path.join(self.root, "conf")
        self.coins = os.path.join(self.root, "coins")
        self.files: dict[str, Any] = {
            "config.yaml": {
                "coins": self.coins,
                "threads": 2,
                "redis": {"host": "127.0.0.1", "port": 6379, "password": None, "db": 0},
                "logging": {"level": "info", "format": "text", "file": None},
                "control": {"listen": "tcp:17117:interface=127.0.0.1"},
                "pool_defaults": {
                    "block_refresh_interval": 1,
                    "job_rebroadcast_timeout": 55,
                    "connection_timeout": 600,
                    "pool_signature": "/nomp/",
                    "banning": {
                        "enabled": True,
                        "time": 600,
                        "invalid_percent": 50,
                        "check_threshold": 500,
                        "purge_interval": 300,
                    },
                },
            },
            "pools/ltc.yaml": {
                "coin": "litecoin",
                "address": "ltc1qpoolrewardaddress",
                "reward_recipients": [{"address": "LfeeRecipientAddress", "percent": 1.5}],
                "daemons": [
                    {
                        "url": "http://127.0.0.1:9332",
                        "user": "nomp",
                        "password": "secret",
                        "timeout": 30,
                    }
                ],
                "ports": [
                    {"listen": "tcp:3333:interface=127.0.0.1", "diff": 8},
                    {
                        "listen": "tcp:3334:interface=127.0.0.1",
                        "diff": 32,
                        "vardiff": {
                            "min_diff": 8,
                            "max_diff": 512,
                            "target_time": 15,
                            "retarget_time": 90,
                            "variance_percent": 30,
                        },
                    },
                ],
            },
            "coins/litecoin.yaml": litecoin(),
        }

    @property
    def settings(self) -> Any:
        """config.yaml's data."""
        return self.files["config.yaml"]

    @property
    def pool(self) -> Any:
        """pools/ltc.yaml's data."""
        return self.files["pools/ltc.yaml"]

    @property
    def coin(self) -> Any:
        """coins/litecoin.yaml's data."""
        return self.files["coins/litecoin.yaml"]

    def other_pool(self, listen: str = "tcp:4444:interface=127.0.0.1", coin: str = "bitcoin") -> Any:
        """Add pools/other.yaml, a valid second pool with coins/bitcoin.yaml; its data."""
        self.files.setdefault("coins/bitcoin.yaml", bitcoin())
        self.files["pools/other.yaml"] = {
            "coin": coin,
            "address": "bc1qotherpooladdress",
            "daemons": [{"url": "https://127.0.0.1:8332"}],
            "ports": [{"listen": listen, "diff": 1}],
        }
        return self.files["pools/other.yaml"]

    def write(self) -> str:
        """Write ``self.files`` out; the conf folder's path."""
        os.makedirs(self.conf, exist_ok=True)
        os.makedirs(self.coins, exist_ok=True)
        for name, content in self.files.items():
            folder = self.root if name.startswith("coins/") else self.conf
            path = Path(folder, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            elif isinstance(content, str):
                path.write_text(content, encoding="utf-8")
            else:
                path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
        return self.conf

    def load(self) -> Config:
        """Write the files and load them, which must succeed."""
        return load_config(self.write())

    def failure(self, conf: str | Path | None = None) -> ConfigErrors:
        """Write the files and load them (or load ``conf``), which must fail; the ConfigErrors."""
        try:
            load_config(self.write() if conf is None else conf)
        except ConfigErrors as e:
            return e
        self.fail("the configuration loaded without errors")

    def errors(self) -> list[str]:
        """Write the files and load them, which must fail; the error lines."""
        return self.failure().errors

    def assertErrors(self, *expected: str) -> None:
        """Loading fails with exactly these error lines (in any order: fields are read
        in declaration order, which is not part of the contract)."""
        self.assertEqual(sorted(self.errors()), sorted(expected))


class ValidConfigTests(ConfTestCase):
    """Valid configurations load into typed, frozen objects."""

    def test_baseline(self) -> None:
        """The baseline conf folder loads with every value typed as its field says."""
        config = self.load()
        self.assertEqual(config.directory, Path(self.conf))
        self.assertEqual(config.settings.coins, self.coins)
        self.assertEqual(config.settings.threads, 2)
        self.assertEqual(config.settings.redis.port, 6379)
        self.assertIsNone(config.settings.redis.password)
        self.assertEqual(config.settings.control.listen, "tcp:17117:interface=127.0.0.1")
        self.assertEqual(config.settings.web, WebConfig(True, "tcp:8080:interface=127.0.0.1", 15.0, 86400.0))
        (pool,) = config.pools
        self.assertEqual((pool.name, pool.file), ("ltc", "pools/ltc.yaml"))
        self.assertEqual(pool.coin.name, "litecoin")
        self.assertIs(pool.coin.algorithm, ALGORITHMS["scrypt"])
        self.assertEqual(pool.version_mask, 0x1FFFE000)
        self.assertEqual((pool.banning.whitelist, pool.ports[0].proxy_protocol), ((), ()))
        self.assertEqual(pool.coin.network.script_address_prefixes, (50, 5))
        self.assertEqual(pool.coin.gbt_rules, ("mweb", "segwit"))
        self.assertEqual(pool.daemons[0].url, "http://127.0.0.1:9332")
        self.assertEqual(pool.daemons[0].timeout, 30.0)
        self.assertEqual([p.diff for p in pool.ports], [8.0, 32.0])
        self.assertEqual(type(pool.ports[0].diff), float)
        self.assertIsNone(pool.ports[0].vardiff)
        vardiff = pool.ports[1].vardiff
        assert vardiff is not None
        self.assertEqual((vardiff.min_diff, vardiff.max_diff, vardiff.x2_mode), (8.0, 512.0, False))
        self.assertEqual(pool.reward_recipients[0].percent, Decimal("1.5"))

    def test_empty_config_yaml(self) -> None:
        """An empty config.yaml gives every global setting its default."""
        self.files["config.yaml"] = ""
        config = self.load()
        self.assertEqual(config.settings.coins, "../coins")
        self.assertIsNone(config.settings.threads)
        self.assertEqual(config.settings.redis.port, 6379)
        self.assertEqual(config.settings.logging.level, "info")
        self.assertEqual(config.settings.pool_defaults.connection_timeout, 600.0)
        self.assertEqual(config.pools[0].coin.name, "litecoin")

    def test_relative_coins_folder(self) -> None:
        """A relative ``coins`` folder is found from the conf folder."""
        self.settings["coins"] = "../coins"
        self.assertEqual(self.load().pools[0].coin.symbol, "LTC")

    def test_coin_named_with_suffix(self) -> None:
        """``coin: litecoin.yaml`` names the same coin file as ``coin: litecoin``."""
        self.pool["coin"] = "litecoin.yaml"
        self.assertEqual(self.load().pools[0].coin.name, "litecoin")

    def test_nulls_for_optional_values(self) -> None:
        """An optional value given as null is None."""
        self.settings["threads"] = None
        self.pool["ports"][1]["vardiff"] = None
        self.coin["network"]["bech32_hrp"] = None
        config = self.load()
        self.assertIsNone(config.settings.threads)
        self.assertIsNone(config.pools[0].ports[1].vardiff)
        self.assertIsNone(config.pools[0].coin.network.bech32_hrp)

    def test_decimal_percent_is_exact(self) -> None:
        """A percentage keeps its exact decimal value: 0.1 is Decimal('0.1'), not the float."""
        self.pool["reward_recipients"] = [
            {"address": "A", "percent": 0.1},
            {"address": "B", "percent": "0.25"},
            {"address": "C", "percent": 2},
        ]
        percents = [r.percent for r in self.load().pools[0].reward_recipients]
        self.assertEqual(percents, [Decimal("0.1"), Decimal("0.25"), Decimal("2")])
        self.assertEqual([str(p) for p in percents], ["0.1", "0.25", "2"])
        self.assertEqual({type(p) for p in percents}, {Decimal})

    def test_yaml_merge_keys(self) -> None:
        """YAML anchors and ``<<`` merge keys work, and the mapping's own keys win."""
        self.files["pools/ltc.yaml"] = (
            "coin: litecoin\n"
            "address: ltc1qpoolrewardaddress\n"
            "daemons: [{url: 'http://127.0.0.1:9332'}]\n"
            "ports:\n"
            "  - listen: 'tcp:3333:interface=127.0.0.1'\n"
            "    diff: 8\n"
            "    vardiff: &vardiff\n"
            "      {min_diff: 1, max_diff: 512, target_time: 15, retarget_time: 90,"
            " variance_percent: 30}\n"
            "  - listen: 'tcp:3334:interface=127.0.0.1'\n"
            "    diff: 64\n"
            "    vardiff:\n"
            "      <<: *vardiff\n"
            "      min_diff: 64\n"
        )
        vardiff = self.load().pools[0].ports[1].vardiff
        assert vardiff is not None
        self.assertEqual((vardiff.min_diff, vardiff.max_diff, vardiff.target_time), (64, 512, 15))

    def test_shipped_conf(self) -> None:
        """The repository's own conf/ folder loads without errors."""
        config = load_config(os.path.join(REPO, "conf"))
        self.assertEqual([p.name for p in config.pools], ["litecoin"])
        self.assertEqual(config.pools[0].coin.name, "litecoin-regtest")
        self.assertEqual(config.pools[0].reward_recipients[0].percent, Decimal("1.0"))

    def test_shipped_coins(self) -> None:
        """Every coin file shipped in coins/ is valid, each with a pool of its own."""
        self.settings["coins"] = os.path.join(REPO, "coins")
        del self.files["pools/ltc.yaml"]
        names = sorted(p.stem for p in Path(REPO, "coins").glob("*.yaml"))
        eth = {n for n in names if coin_algorithm(n) in ("ethash", "etchash")}
        for i, name in enumerate(names):
            self.files[f"pools/{name}.yaml"] = {
                "coin": name,
                "address": ETH_ADDRESS if name in eth else "x",
                "daemons": [{"url": "http://127.0.0.1:1"}],
                "ports": [{"listen": f"tcp:{5000 + i}:interface=127.0.0.1", "diff": 1}],
            }
        config = self.load()
        self.assertEqual(sorted(p.coin.name for p in config.pools), sorted(set(names) - eth))
        self.assertEqual(sorted(p.coin.name for p in config.eth_pools), sorted(eth))
        self.assertEqual(sorted(eth), ["ethash-dev", "ethereum-classic", "ethereumpow", "mordor"])


class UnknownKeyTests(ConfTestCase):
    """Keys no field expects are errors, wherever they are."""

    def test_top_level(self) -> None:
        """An unknown key in config.yaml is named, with the keys that are expected."""
        self.settings["colour"] = "blue"
        self.assertErrors(f"config.yaml: colour: unknown key (expected one of: {GLOBAL_KEYS})")

    def test_nested(self) -> None:
        """An unknown key in a nested section is reported with its dotted path."""
        self.settings["redis"]["hostname"] = "localhost"
        self.assertErrors(
            "config.yaml: redis.hostname: unknown key (expected one of: db, host, journal_replicas, "
            "journal_timeout, master_name, password, port, sentinel_password, sentinels)"
        )

    def test_in_list(self) -> None:
        """An unknown key in a list item is reported with the item's index."""
        self.pool["ports"][1]["vardif"] = {}
        self.assertErrors(
            "pools/ltc.yaml: ports[1].vardif: unknown key (expected one of: diff, listen, max_body, "
            "protocol, proxy_protocol, solo, vardiff)"
        )

    def test_deeper_in_list(self) -> None:
        """An unknown key inside a list item's section has the full path."""
        self.pool["ports"][1]["vardiff"]["x3_mode"] = True
        self.assertErrors(
            "pools/ltc.yaml: ports[1].vardiff.x3_mode: unknown key (expected one of: max_diff,"
            " min_diff, retarget_time, target_time, variance_percent, x2_mode)"
        )

    def test_pool_file(self) -> None:
        """An unknown key in a pool file lists the pool's keys."""
        self.pool["adress"] = "typo"
        self.assertErrors(f"pools/ltc.yaml: adress: unknown key (expected one of: {POOL_KEYS})")

    def test_pool_may_not_set_fixed_fields(self) -> None:
        """A pool file may not set the fields the loader fills in (name, file)."""
        self.pool["name"] = "mine"
        self.assertErrors(f"pools/ltc.yaml: name: unknown key (expected one of: {POOL_KEYS})")

    def test_coin_file(self) -> None:
        """An unknown key in a coin file is reported against the coin file."""
        self.coin["network"]["magic"] = "fbc0b6db"
        self.assertErrors(
            "coins/litecoin.yaml: network.magic: unknown key (expected one of: bech32_hrp, chain,"
            " mweb_hrp, p2p_magic, pubkey_address_prefix, script_address_prefixes)"
        )

    def test_pool_defaults_only_take_default_keys(self) -> None:
        """pool_defaults accepts only the keys a pool may default, not e.g. ``address``."""
        self.settings["pool_defaults"]["address"] = "x"
        self.assertErrors(
            f"config.yaml: pool_defaults.address: unknown key (expected one of: {DEFAULT_KEYS})"
        )

    def test_non_string_key(self) -> None:
        """A key that is not a string is unknown, shown as its text."""
        self.settings[5] = "five"
        self.assertErrors(f"config.yaml: 5: unknown key (expected one of: {GLOBAL_KEYS})")


class TypeTests(ConfTestCase):
    """Each kind of field accepts its own type only."""

    def test_int_given_string(self) -> None:
        """An integer field rejects a string, even one of digits."""
        self.settings["redis"]["port"] = "6379"
        self.assertErrors("config.yaml: redis.port: expected an integer, got a string ('6379')")

    def test_instance_state(self) -> None:
        """instance_state is a file path (none by default); an empty one is refused."""
        self.assertIsNone(self.load().settings.instance_state)
        self.settings["instance_state"] = "/var/lib/nomp/instance"
        self.assertEqual(self.load().settings.instance_state, "/var/lib/nomp/instance")
        self.settings["instance_state"] = ""
        self.assertErrors("config.yaml: instance_state: must be a file path")
        self.settings["instance_state"] = 5
        self.assertErrors("config.yaml: instance_state: expected a string, got a number (5)")

    def test_int_given_float(self) -> None:
        """An integer field rejects a float."""
        self.settings["threads"] = 2.5
        self.assertErrors("config.yaml: threads: expected an integer, got a number (2.5)")

    def test_int_given_bool(self) -> None:
        """An integer field rejects a boolean, although bool is an int in Python."""
        self.settings["redis"]["db"] = True
        self.assertErrors("config.yaml: redis.db: expected an integer, got a boolean (true)")

    def test_float_given_string(self) -> None:
        """A number field rejects a string."""
        self.pool["ports"][0]["diff"] = "high"
        self.assertErrors("pools/ltc.yaml: ports[0].diff: expected a number, got a string ('high')")

    def test_float_given_bool(self) -> None:
        """A number field rejects a boolean."""
        self.pool["daemons"][0]["timeout"] = False
        self.assertErrors("pools/ltc.yaml: daemons[0].timeout: expected a number, got a boolean (false)")

    def test_float_accepts_int(self) -> None:
        """A number field takes an integer and holds it as a float."""
        self.pool["connection_timeout"] = 30
        timeout = self.load().pools[0].connection_timeout
        self.assertEqual((timeout, type(timeout)), (30.0, float))

    def test_str_given_number(self) -> None:
        """A string field rejects a number."""
        self.pool["address"] = 12345
        self.assertErrors("pools/ltc.yaml: address: expected a string, got a number (12345)")

    def test_str_given_null(self) -> None:
        """A required string field rejects null."""
        self.pool["address"] = None
        self.assertErrors("pools/ltc.yaml: address: expected a string, got nothing")

    def test_bool_given_string(self) -> None:
        """A boolean field rejects a string."""
        self.settings["pool_defaults"]["banning"]["enabled"] = "yes"
        self.assertErrors(
            "config.yaml: pool_defaults.banning.enabled: expected true or false, got a string ('yes')"
        )

    def test_bool_given_number(self) -> None:
        """A boolean field rejects a number."""
        self.pool["ports"][1]["vardiff"]["x2_mode"] = 1
        self.assertErrors(
            "pools/ltc.yaml: ports[1].vardiff.x2_mode: expected true or false, got a number (1)"
        )

    def test_decimal_given_word(self) -> None:
        """A decimal field rejects a string that is not a number."""
        self.pool["reward_recipients"][0]["percent"] = "lots"
        self.assertErrors(
            "pools/ltc.yaml: reward_recipients[0].percent: expected a decimal number, got a string ('lots')"
        )

    def test_decimal_given_bool(self) -> None:
        """A decimal field rejects a boolean."""
        self.pool["reward_recipients"][0]["percent"] = True
        self.assertErrors(
            "pools/ltc.yaml: reward_recipients[0].percent: expected a decimal number, got a boolean (true)"
        )

    def test_decimal_given_nan(self) -> None:
        """A decimal field rejects a value that is not finite."""
        self.pool["reward_recipients"][0]["percent"] = float("nan")
        self.assertErrors(
            "pools/ltc.yaml: reward_recipients[0].percent: expected a decimal number, got a number (nan)"
        )

    def test_literal(self) -> None:
        """A choice field rejects a value outside its choices and lists them."""
        self.settings["logging"]["level"] = "loud"
        self.assertErrors(
            "config.yaml: logging.level: must be one of 'debug', 'info', 'warn', 'error',"
            " 'critical', got 'loud'"
        )

    def test_literal_given_number(self) -> None:
        """A choice field rejects a value of another type."""
        self.settings["logging"]["format"] = 1
        self.assertErrors("config.yaml: logging.format: must be one of 'text', 'json', got 1")

    def test_list_given_mapping(self) -> None:
        """A list field rejects a mapping."""
        self.pool["daemons"] = self.pool["daemons"][0]
        self.assertErrors("pools/ltc.yaml: daemons: expected a list, got a mapping")

    def test_list_given_string(self) -> None:
        """A list field rejects a single string."""
        self.coin["gbt_rules"] = "segwit"
        self.assertErrors("coins/litecoin.yaml: gbt_rules: expected a list, got a string ('segwit')")

    def test_list_item(self) -> None:
        """A list item of the wrong type is reported with its index."""
        self.coin["network"]["script_address_prefixes"] = [50, "five"]
        self.assertErrors(
            "coins/litecoin.yaml: network.script_address_prefixes[1]: expected an integer,"
            " got a string ('five')"
        )

    def test_list_item_not_mapping(self) -> None:
        """A list item that should be a section but is not is reported with its index."""
        self.pool["ports"].append("tcp:3335")
        self.assertErrors("pools/ltc.yaml: ports[2]: expected a mapping, got a string ('tcp:3335')")

    def test_mapping_given_list(self) -> None:
        """A section given as a list is rejected."""
        self.settings["redis"] = ["127.0.0.1", 6379]
        self.assertErrors("config.yaml: redis: expected a mapping, got a list")

    def test_mapping_given_null(self) -> None:
        """A required section given as null is rejected."""
        self.settings["pool_defaults"] = None
        self.assertErrors("config.yaml: pool_defaults: expected a mapping, got nothing")

    def test_nested_dataclass_given_number(self) -> None:
        """An optional nested section given as a scalar is rejected."""
        self.pool["ports"][1]["vardiff"] = 5
        self.assertErrors("pools/ltc.yaml: ports[1].vardiff: expected a mapping, got a number (5)")

    def test_several_wrong_types_in_one_section(self) -> None:
        """Every wrong field of one section is reported, not only the first."""
        self.settings["redis"] = {"host": 1, "port": "x", "password": 2, "db": None}
        self.assertErrors(
            "config.yaml: redis.host: expected a string, got a number (1)",
            "config.yaml: redis.port: expected an integer, got a string ('x')",
            "config.yaml: redis.password: expected a string, got a number (2)",
            "config.yaml: redis.db: expected an integer, got nothing",
        )


class MissingFieldTests(ConfTestCase):
    """Fields without a default must be given."""

    def test_pool_fields(self) -> None:
        """A pool without address, daemons and ports gets one line for each."""
        for key in ("address", "daemons", "ports"):
            del self.pool[key]
        self.assertErrors(
            "pools/ltc.yaml: address: missing",
            "pools/ltc.yaml: daemons: missing",
            "pools/ltc.yaml: ports: missing",
        )

    def test_empty_pool_file(self) -> None:
        """An empty pool file misses its coin and every required field."""
        self.files["pools/ltc.yaml"] = ""
        self.assertErrors(
            "pools/ltc.yaml: coin: missing",
            "pools/ltc.yaml: address: missing",
            "pools/ltc.yaml: daemons: missing",
            "pools/ltc.yaml: ports: missing",
        )

    def test_port_diff(self) -> None:
        """A port without a starting difficulty is reported with its index."""
        del self.pool["ports"][1]["diff"]
        self.assertErrors("pools/ltc.yaml: ports[1].diff: missing")

    def test_vardiff_fields(self) -> None:
        """A vardiff section misses each field it lacks."""
        self.pool["ports"][1]["vardiff"] = {"min_diff": 1, "max_diff": 2}
        self.assertErrors(
            "pools/ltc.yaml: ports[1].vardiff.target_time: missing",
            "pools/ltc.yaml: ports[1].vardiff.retarget_time: missing",
            "pools/ltc.yaml: ports[1].vardiff.variance_percent: missing",
        )

    def test_daemon_url(self) -> None:
        """A daemon without a URL is reported."""
        del self.pool["daemons"][0]["url"]
        self.assertErrors("pools/ltc.yaml: daemons[0].url: missing")

    def test_recipient_percent(self) -> None:
        """A reward recipient without a percentage is reported."""
        del self.pool["reward_recipients"][0]["percent"]
        self.assertErrors("pools/ltc.yaml: reward_recipients[0].percent: missing")

    def test_coin_file_fields(self) -> None:
        """An empty coin file misses name, symbol, algorithm and network."""
        self.files["coins/litecoin.yaml"] = ""
        self.assertErrors(
            "coins/litecoin.yaml: name: missing",
            "coins/litecoin.yaml: symbol: missing",
            "coins/litecoin.yaml: algorithm: missing",
            "coins/litecoin.yaml: network: missing",
        )

    def test_coin_network_fields(self) -> None:
        """A coin's network section misses each required field."""
        self.coin["network"] = {"bech32_hrp": "ltc"}
        self.assertErrors(
            "coins/litecoin.yaml: network.chain: missing",
            "coins/litecoin.yaml: network.pubkey_address_prefix: missing",
            "coins/litecoin.yaml: network.script_address_prefixes: missing",
        )


class ValueCheckTests(ConfTestCase):
    """Rules on values: positive, ranges, endpoints, URLs, sizes, sums."""

    def test_diff_positive(self) -> None:
        """A port's difficulty must be above zero."""
        self.pool["ports"][1]["diff"] = 0
        self.assertErrors("pools/ltc.yaml: ports[1].diff: must be > 0")

    def test_negative(self) -> None:
        """Negative durations and counts are rejected where they must be positive."""
        self.pool["daemons"][0]["timeout"] = -1
        self.pool["ports"][1]["vardiff"]["target_time"] = -15
        self.coin["block_time"] = 0
        self.coin["coinbase_maturity"] = 0
        self.settings["threads"] = 0
        self.assertErrors(
            "config.yaml: threads: must be > 0",
            "coins/litecoin.yaml: block_time: must be > 0",
            "coins/litecoin.yaml: coinbase_maturity: must be > 0",
            "pools/ltc.yaml: daemons[0].timeout: must be > 0",
            "pools/ltc.yaml: ports[1].vardiff.target_time: must be > 0",
        )

    def test_non_negative(self) -> None:
        """Zero is allowed where a value must be >= 0, a negative is not."""
        self.settings["redis"]["db"] = -1
        self.settings["pool_defaults"]["job_rebroadcast_timeout"] = -1
        self.assertErrors(
            "config.yaml: redis.db: must be >= 0",
            "config.yaml: pool_defaults.job_rebroadcast_timeout: must be >= 0",
        )

    def test_pool_durations(self) -> None:
        """A pool file's own durations are checked as pool_defaults' are."""
        self.pool["block_refresh_interval"] = 0
        self.pool["job_rebroadcast_timeout"] = -5
        self.pool["connection_timeout"] = -1
        self.assertErrors(
            "pools/ltc.yaml: block_refresh_interval: must be > 0",
            "pools/ltc.yaml: job_rebroadcast_timeout: must be >= 0",
            "pools/ltc.yaml: connection_timeout: must be > 0",
        )

    def test_pool_rebroadcast_zero(self) -> None:
        """A pool's job_rebroadcast_timeout may be 0 (never)."""
        self.pool["job_rebroadcast_timeout"] = 0
        self.assertEqual(self.load().pools[0].job_rebroadcast_timeout, 0.0)

    def test_banning_positive(self) -> None:
        """Banning durations and threshold must be above zero."""
        self.pool["banning"] = {"time": 0, "check_threshold": 0, "purge_interval": -1}
        self.assertErrors(
            "pools/ltc.yaml: banning.time: must be > 0",
            "pools/ltc.yaml: banning.check_threshold: must be > 0",
            "pools/ltc.yaml: banning.purge_interval: must be > 0",
        )

    def test_payments(self) -> None:
        """Payment settings: amounts in whole satoshis, a fee below 100 %, known schemes."""
        self.pool["payments"] = {
            "enabled": True,
            "scheme": "pps",
            "minimum_payment": "0.000000001",
            "fee_percent": 100,
            "pplns_window": 0,
            "transaction_fee": "nobody",
            "daemon": {"url": "localhost:9332"},
            "interval": "often",
        }
        self.assertErrors(
            "pools/ltc.yaml: payments.interval: expected a number, got a string ('often')",
            "pools/ltc.yaml: payments.scheme: must be one of 'prop', 'pplns', 'solo', got 'pps'",
            "pools/ltc.yaml: payments.pplns_window: must be > 0",
            "pools/ltc.yaml: payments.fee_percent: must be >= 0 and < 100",
            "pools/ltc.yaml: payments.minimum_payment: must have at most 8 decimals",
            "pools/ltc.yaml: payments.transaction_fee: must be one of 'pool', 'miners', got 'nobody'",
            "pools/ltc.yaml: payments.daemon.url: must start with http:// or https://",
        )

    def test_payments_read(self) -> None:
        """Valid payment settings are read as typed values."""
        self.pool["payments"] = {
            "enabled": True,
            "scheme": "pplns",
            "minimum_payment": 0.05,
            "fee_percent": 1.5,
        }
        self.pool["ports"][0]["solo"] = True
        pool = self.load().pools[0]
        self.assertEqual(pool.payments.scheme, "pplns")
        self.assertEqual(pool.payments.minimum_payment, Decimal("0.05"))
        self.assertEqual(pool.payments.fee_percent, Decimal("1.5"))
        self.assertTrue(pool.ports[0].solo)

    def test_port_number(self) -> None:
        """The Redis port must be a TCP port number."""
        self.settings["redis"]["port"] = 70000
        self.assertErrors("config.yaml: redis.port: must be a port number (1-65535)")

    def test_not_empty(self) -> None:
        """An empty address, daemon list or port list is rejected."""
        self.pool["address"] = ""
        self.pool["daemons"] = []
        self.pool["ports"] = []
        self.assertErrors(
            "pools/ltc.yaml: address: must not be empty",
            "pools/ltc.yaml: daemons: must not be empty",
            "pools/ltc.yaml: ports: must not be empty",
        )

    def test_percent_between(self) -> None:
        """A reward percentage must be strictly between 0 and 100."""
        self.pool["reward_recipients"] = [
            {"address": "A", "percent": 0},
            {"address": "B", "percent": 100},
            {"address": "C", "percent": -0.5},
        ]
        self.assertErrors(
            "pools/ltc.yaml: reward_recipients[0].percent: must be between 0 and 100",
            "pools/ltc.yaml: reward_recipients[1].percent: must be between 0 and 100",
            "pools/ltc.yaml: reward_recipients[2].percent: must be between 0 and 100",
        )

    def test_variance_percent_between(self) -> None:
        """vardiff's variance_percent must be strictly between 0 and 100."""
        self.pool["ports"][1]["vardiff"]["variance_percent"] = 100
        self.assertErrors("pools/ltc.yaml: ports[1].vardiff.variance_percent: must be between 0 and 100")

    def test_invalid_percent_between(self) -> None:
        """Banning's invalid_percent must be strictly between 0 and 100, in pools and defaults."""
        self.pool["banning"] = {"invalid_percent": 0}
        self.settings["pool_defaults"]["banning"]["invalid_percent"] = 150
        self.assertErrors(
            "config.yaml: pool_defaults.banning.invalid_percent: must be between 0 and 100",
            "pools/ltc.yaml: banning.invalid_percent: must be between 0 and 100",
        )

    def test_vardiff_max_below_min(self) -> None:
        """vardiff's max_diff may not be below its min_diff."""
        self.pool["ports"][1]["vardiff"]["max_diff"] = 4
        self.assertErrors("pools/ltc.yaml: ports[1].vardiff.max_diff: must be >= min_diff")

    def test_vardiff_max_equal_min(self) -> None:
        """vardiff's max_diff may equal its min_diff."""
        self.pool["ports"][1]["vardiff"]["max_diff"] = 8
        vardiff = self.load().pools[0].ports[1].vardiff
        assert vardiff is not None
        self.assertEqual(vardiff.max_diff, 8.0)

    def test_vardiff_rule_waits_for_valid_fields(self) -> None:
        """With a field already wrong, the max/min rule adds no second error."""
        self.pool["ports"][1]["vardiff"]["max_diff"] = 4
        self.pool["ports"][1]["vardiff"]["target_time"] = 0
        self.assertErrors("pools/ltc.yaml: ports[1].vardiff.target_time: must be > 0")

    def test_invalid_endpoint(self) -> None:
        """A port's listen string must be a Twisted endpoint that parses."""
        self.pool["ports"][0]["listen"] = "tcp:notaport"
        self.pool["ports"][1]["listen"] = "bogus:3334"
        self.assertErrors(
            "pools/ltc.yaml: ports[0].listen: invalid endpoint 'tcp:notaport':"
            " invalid literal for int() with base 10: 'notaport'",
            "pools/ltc.yaml: ports[1].listen: invalid endpoint 'bogus:3334': Unknown endpoint type: 'bogus'",
        )

    def test_invalid_control_endpoint(self) -> None:
        """control.listen must be a Twisted endpoint that parses."""
        self.settings["control"]["listen"] = "tcp:17117:colour=red"
        self.assertErrors(
            "config.yaml: control.listen: invalid endpoint 'tcp:17117:colour=red':"
            " _parseTCP() got an unexpected keyword argument 'colour'"
        )

    def test_invalid_web_endpoint(self) -> None:
        """web.listen must be a Twisted endpoint that parses."""
        self.settings["web"] = {"listen": "tcp:8080:colour=red"}
        self.assertErrors(
            "config.yaml: web.listen: invalid endpoint 'tcp:8080:colour=red':"
            " _parseTCP() got an unexpected keyword argument 'colour'"
        )

    def test_version_mask(self) -> None:
        """version_mask is read from eight hex digits, in either case, into its 32-bit value."""
        for text, value in [("00ffe000", 0x00FFE000), ("1FFFE000", 0x1FFFE000), ("00000000", 0)]:
            self.pool["version_mask"] = text
            self.assertEqual(self.load().pools[0].version_mask, value, text)

    def test_version_mask_not_eight_hex_digits(self) -> None:
        """A version_mask that is not eight hex digits is refused."""
        for text in ["1fffe00", "01fffe000", "1fffe00g", "0x1fffe0", ""]:
            self.pool["version_mask"] = text
            self.assertErrors("pools/ltc.yaml: version_mask: must be eight hex digits, e.g. 1fffe000")

    def test_version_mask_not_a_string(self) -> None:
        """An unquoted version_mask YAML reads as a number is a type error, not a mask."""
        self.files["pools/ltc.yaml"] = yaml.safe_dump(self.pool) + "version_mask: 10000000\n"
        self.assertErrors("pools/ltc.yaml: version_mask: expected a string, got a number (10000000)")

    def test_networks(self) -> None:
        """banning.whitelist and ports[].proxy_protocol hold IP networks; an address is a
        network of one, and host bits of a network are dropped."""
        self.pool["banning"] = {"whitelist": ["10.1.2.3/8", "2001:db8::/32", "192.0.2.7"]}
        self.pool["ports"][0]["proxy_protocol"] = ["::1", "127.0.0.0/24"]
        pool = self.load().pools[0]
        self.assertEqual(
            pool.banning.whitelist,
            (ip_network("10.0.0.0/8"), ip_network("2001:db8::/32"), ip_network("192.0.2.7/32")),
        )
        self.assertEqual(pool.ports[0].proxy_protocol, (ip_network("::1/128"), ip_network("127.0.0.0/24")))
        self.assertEqual(pool.ports[1].proxy_protocol, ())

    def test_whitelist_in_pool_defaults(self) -> None:
        """A whitelist in pool_defaults reaches the pools as networks."""
        self.settings["pool_defaults"]["banning"]["whitelist"] = ["10.0.0.0/8"]
        self.assertEqual(self.load().pools[0].banning.whitelist, (ip_network("10.0.0.0/8"),))

    def test_networks_invalid(self) -> None:
        """Anything in banning.whitelist or ports[].proxy_protocol that is not an IP
        address or network is reported with the field's path."""
        self.pool["banning"] = {"whitelist": ["10.0.0.0/8", "10.0.0.0/33"]}
        self.pool["ports"][1]["proxy_protocol"] = ["proxy.example"]
        self.settings["pool_defaults"]["banning"]["whitelist"] = ["300.0.0.1"]
        self.assertErrors(
            "pools/ltc.yaml: banning.whitelist: '10.0.0.0/33' is not an IP address or network",
            "pools/ltc.yaml: ports[1].proxy_protocol: 'proxy.example' is not an IP address or network",
            "config.yaml: pool_defaults.banning.whitelist: '300.0.0.1' is not an IP address or network",
        )

    def test_networks_not_strings(self) -> None:
        """A whitelist that is not a list of strings is a type error."""
        self.pool["banning"] = {"whitelist": "10.0.0.0/8"}
        self.pool["ports"][0]["proxy_protocol"] = [127]
        self.assertErrors(
            "pools/ltc.yaml: banning.whitelist: expected a list, got a string ('10.0.0.0/8')",
            "pools/ltc.yaml: ports[0].proxy_protocol[0]: expected a string, got a number (127)",
        )

    def test_endpoint_checked_without_a_reactor(self) -> None:
        """Checking an endpoint string neither imports Twisted's test helpers nor installs a reactor."""
        code = (
            "import sys\n"
            "from nomp.config.schema import endpoint\n"
            "assert endpoint('tcp:3333:interface=127.0.0.1') is None\n"
            "assert endpoint('unix:/tmp/nomp.sock:mode=600') is None\n"
            "assert endpoint('tcp:x').startswith(\"invalid endpoint 'tcp:x': \")\n"
            "watched = ('twisted.internet.testing', 'twisted.internet.reactor')\n"
            "print(sorted(m for m in watched if m in sys.modules))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
        )
        self.assertEqual(result.stdout, "[]\n", result.stderr)

    def test_web_durations(self) -> None:
        """web.stats_interval and web.history_retention are positive seconds; no other key is known."""
        self.settings["web"] = {"stats_interval": 0, "history_retention": -1, "port": 80}
        self.assertErrors(
            "config.yaml: web.history_retention: must be > 0",
            "config.yaml: web.port: unknown key"
            " (expected one of: enabled, history_retention, listen, max_live_clients, stats_interval)",
            "config.yaml: web.stats_interval: must be > 0",
        )

    def test_daemon_url_scheme(self) -> None:
        """A daemon URL must be http:// or https://."""
        self.pool["daemons"][0]["url"] = "ftp://127.0.0.1:9332"
        self.pool["daemons"].append({"url": "127.0.0.1:9332"})
        self.assertErrors(
            "pools/ltc.yaml: daemons[0].url: must start with http:// or https://",
            "pools/ltc.yaml: daemons[1].url: must start with http:// or https://",
        )

    def test_pool_signature_bytes(self) -> None:
        """pool_signature is limited to 64 bytes of UTF-8, not 64 characters."""
        self.pool["pool_signature"] = "\N{EURO SIGN}" * 22  # 22 characters, 66 bytes
        self.settings["pool_defaults"]["pool_signature"] = "x" * 65
        self.assertErrors(
            "config.yaml: pool_defaults.pool_signature: must be at most 64 bytes",
            "pools/ltc.yaml: pool_signature: must be at most 64 bytes",
        )

    def test_pool_signature_64_bytes(self) -> None:
        """A pool_signature of exactly 64 bytes is accepted."""
        self.pool["pool_signature"] = "x" * 64
        self.assertEqual(len(self.load().pools[0].pool_signature), 64)

    def test_reward_sum(self) -> None:
        """Reward percentages adding up to 100 are rejected."""
        self.pool["reward_recipients"] = [
            {"address": "A", "percent": 60},
            {"address": "B", "percent": 40},
        ]
        self.assertErrors("pools/ltc.yaml: reward_recipients: percentages add up to 100, must be below 100")

    def test_reward_sum_is_exact(self) -> None:
        """The sum is taken in decimal: 99.7 + 3 x 0.1 is exactly 100.0 (in floats it is less)."""
        self.pool["reward_recipients"] = [
            {"address": "A", "percent": 99.7},
            {"address": "B", "percent": 0.1},
            {"address": "C", "percent": 0.1},
            {"address": "D", "percent": 0.1},
        ]
        self.assertErrors("pools/ltc.yaml: reward_recipients: percentages add up to 100.0, must be below 100")

    def test_reward_sum_below_100(self) -> None:
        """Reward percentages adding up to just under 100 are accepted."""
        self.pool["reward_recipients"] = [
            {"address": "A", "percent": 99.8},
            {"address": "B", "percent": 0.1},
        ]
        recipients = self.load().pools[0].reward_recipients
        self.assertEqual(sum(r.percent for r in recipients), Decimal("99.9"))

    def test_coin_network_ranges(self) -> None:
        """Address prefixes must be bytes and the transaction version in range."""
        self.coin["network"]["pubkey_address_prefix"] = 256
        self.coin["network"]["script_address_prefixes"] = []
        self.coin["transactions"]["version"] = 0
        self.coin["name"] = ""
        self.assertErrors(
            "coins/litecoin.yaml: name: must not be empty",
            "coins/litecoin.yaml: network.pubkey_address_prefix: must be 0-255",
            "coins/litecoin.yaml: network.script_address_prefixes: must be a non-empty list of 0-255",
            "coins/litecoin.yaml: transactions.version: must be 1-2147483647",
        )

    def test_coins_folder_with_nul(self) -> None:
        """A coins folder with a NUL character is an error line, not a crash."""
        self.settings["coins"] = "coins\0"
        self.assertErrors("config.yaml: coins: must not contain a NUL character")


class CoinFileTests(ConfTestCase):
    """A pool's ``coin`` names a file in the coins folder."""

    def test_missing_coin_file(self) -> None:
        """A coin with no file is reported against the pool, naming the file looked for."""
        self.pool["coin"] = "dogecoin"
        self.assertErrors("pools/ltc.yaml: coin: no coin file coins/dogecoin.yaml")

    def test_coin_name_with_slash(self) -> None:
        """A coin name with a slash is refused without looking for it."""
        self.pool["coin"] = "../coins/litecoin"
        self.other_pool(coin="sub/bitcoin")
        self.assertErrors(
            "pools/ltc.yaml: coin: '../coins/litecoin' is not a coin file name",
            "pools/other.yaml: coin: 'sub/bitcoin' is not a coin file name",
        )

    def test_coin_name_with_backslash_or_dot(self) -> None:
        """A coin name with a backslash or a leading dot is refused."""
        self.pool["coin"] = "sub\\litecoin"
        self.other_pool(coin=".bitcoin")
        self.assertErrors(
            "pools/ltc.yaml: coin: 'sub\\\\litecoin' is not a coin file name",
            "pools/other.yaml: coin: '.bitcoin' is not a coin file name",
        )

    def test_coin_not_a_name(self) -> None:
        """A coin given as a number or an empty string is rejected."""
        self.pool["coin"] = 5
        self.other_pool(coin="")
        self.assertErrors(
            "pools/ltc.yaml: coin: expected a coin file name",
            "pools/other.yaml: coin: expected a coin file name",
        )

    def test_unknown_algorithm(self) -> None:
        """An unknown algorithm is reported against the coin file, listing the known ones."""
        self.coin["algorithm"] = "x11"
        errors = self.errors()
        self.assertEqual(
            errors,
            [f"coins/litecoin.yaml: algorithm: unknown algorithm 'x11' (known: {KNOWN_ALGORITHMS})"],
        )
        self.assertIn("scrypt, sha256d", errors[0])

    def test_empty_algorithm(self) -> None:
        """An empty algorithm name is reported as empty, not as an unknown algorithm."""
        self.coin["algorithm"] = ""
        self.assertErrors("coins/litecoin.yaml: algorithm: must not be empty")

    def test_algorithm_not_a_string(self) -> None:
        """An algorithm given as a number is a type error."""
        self.coin["algorithm"] = 7
        self.assertErrors("coins/litecoin.yaml: algorithm: expected a string, got a number (7)")

    def test_unknown_algorithm_beside_other_errors(self) -> None:
        """An unknown algorithm is reported together with the coin file's other errors."""
        self.coin["algorithm"] = "x11"
        self.coin["symbol"] = 7
        self.assertErrors(
            f"coins/litecoin.yaml: algorithm: unknown algorithm 'x11' (known: {KNOWN_ALGORITHMS})",
            "coins/litecoin.yaml: symbol: expected a string, got a number (7)",
        )

    def test_coin_errors_reported_once(self) -> None:
        """A bad coin file shared by two pools is reported once, and not as a coin conflict."""
        self.coin["symbol"] = 7
        self.other_pool(coin="litecoin")
        self.assertErrors("coins/litecoin.yaml: symbol: expected a string, got a number (7)")

    def test_pool_errors_reported_with_bad_coin(self) -> None:
        """A pool whose coin file is missing still has its own errors reported."""
        self.pool["coin"] = "dogecoin"
        self.pool["ports"][1]["diff"] = -1
        self.assertErrors(
            "pools/ltc.yaml: coin: no coin file coins/dogecoin.yaml",
            "pools/ltc.yaml: ports[1].diff: must be > 0",
        )

    def test_coins_folder_missing(self) -> None:
        """A coins folder that does not exist makes each coin missing."""
        self.settings["coins"] = os.path.join(self.root, "nowhere")
        self.assertErrors("pools/ltc.yaml: coin: no coin file nowhere/litecoin.yaml")


class CoinDecimalsTests(ConfTestCase):
    """A Bitcoin-family coin file's ``decimals``: how many base units make a coin."""

    def test_default(self) -> None:
        """A coin file without the key has 8 (satoshis)."""
        self.assertEqual(self.load().pools[0].coin.decimals, 8)

    def test_accepted(self) -> None:
        """Any integer from 0 to 18."""
        for decimals in (0, 6, 8, 18):
            self.coin["decimals"] = decimals
            self.assertEqual(self.load().pools[0].coin.decimals, decimals)

    def test_out_of_range(self) -> None:
        """Below 0 or above 18 is refused, against the coin file."""
        for decimals in (-1, 19):
            self.coin["decimals"] = decimals
            self.assertErrors("coins/litecoin.yaml: decimals: must be 0-18")

    def test_not_an_integer(self) -> None:
        """A string, a fraction or a boolean is a type error."""
        cases = [
            ("8", "expected an integer, got a string ('8')"),
            (6.5, "expected an integer, got a number (6.5)"),
            (True, "expected an integer, got a boolean (true)"),
        ]
        for value, message in cases:
            self.coin["decimals"] = value
            self.assertErrors(f"coins/litecoin.yaml: decimals: {message}")

    def test_reported_with_other_errors(self) -> None:
        """A bad ``decimals`` is one of the coin file's errors, each with its path."""
        self.coin["decimals"] = 30
        self.coin["block_time"] = 0
        self.assertErrors(
            "coins/litecoin.yaml: block_time: must be > 0",
            "coins/litecoin.yaml: decimals: must be 0-18",
        )


class YamlTests(ConfTestCase):
    """Files that are not valid YAML, or not the right shape of it."""

    def test_invalid_yaml(self) -> None:
        """Invalid YAML is reported with its line and column."""
        self.files["pools/ltc.yaml"] = "coin: litecoin\naddress: a: b\n"
        self.assertErrors(
            "pools/ltc.yaml: invalid YAML: line 2 column 11: mapping values are not allowed here"
        )

    def test_unclosed_list(self) -> None:
        """An unclosed flow list is reported where the parser noticed it."""
        self.files["config.yaml"] = "threads: [1, 2\n"
        self.assertErrors(
            "config.yaml: invalid YAML: line 2 column 1: expected ',' or ']', but got '<stream end>'"
        )

    def test_duplicate_key(self) -> None:
        """A key given twice is an error at the second one, not silently the last value."""
        self.files["config.yaml"] = "redis:\n  port: 6379\n  db: 0\n  port: 6380\n"
        self.assertErrors("config.yaml: invalid YAML: line 4 column 3: key 'port' given twice")

    def test_duplicate_key_beside_merge(self) -> None:
        """A key given twice is caught in a mapping that also has a merge key."""
        self.files["config.yaml"] = (
            "redis: &r {host: 127.0.0.1}\n"
            "control:\n"
            "  <<: {listen: 'tcp:17117'}\n"
            "  listen: 'tcp:17118'\n"
            "  listen: 'tcp:17119'\n"
        )
        self.assertErrors("config.yaml: invalid YAML: line 5 column 3: key 'listen' given twice")

    def test_unhashable_key(self) -> None:
        """A list used as a key is an error line, not a crash."""
        self.files["pools/ltc.yaml"] = "coin: litecoin\n? [a, b]\n: 1\n"
        self.assertErrors("pools/ltc.yaml: invalid YAML: line 2 column 3: found unhashable key")

    def test_control_character(self) -> None:
        """A control character is reported on one line with its line and column."""
        self.files["pools/ltc.yaml"] = "coin: litecoin\naddress: a\x01b\n"
        self.assertErrors(
            "pools/ltc.yaml: invalid YAML: line 2 column 11: unacceptable character #x0001:"
            " special characters are not allowed"
        )

    def test_unknown_tag(self) -> None:
        """A tag the safe loader does not build is reported, not obeyed."""
        self.files["config.yaml"] = "threads: !!python/object:os.system ls\n"
        self.assertErrors(
            "config.yaml: invalid YAML: line 1 column 10: could not determine a constructor"
            " for the tag 'tag:yaml.org,2002:python/object:os.system'"
        )

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is reported."""
        self.files["coins/litecoin.yaml"] = b"name: lite\xffcoin\n"
        self.assertErrors("coins/litecoin.yaml: not UTF-8 text")

    def test_config_top_level_not_mapping(self) -> None:
        """A config.yaml that is a list is reported."""
        self.files["config.yaml"] = ["threads", 2]
        self.assertErrors("config.yaml: expected a mapping, got a list")

    def test_pool_top_level_not_mapping(self) -> None:
        """A pool file that is a plain string is reported."""
        self.files["pools/ltc.yaml"] = "just some text\n"
        self.assertErrors("pools/ltc.yaml: expected a mapping at the top")

    def test_coin_top_level_not_mapping(self) -> None:
        """A coin file that is a list is reported against the coin file."""
        self.files["coins/litecoin.yaml"] = ["litecoin"]
        self.assertErrors("coins/litecoin.yaml: expected a mapping, got a list")


class FolderTests(ConfTestCase):
    """The conf folder's own shape."""

    def test_missing_config_yaml(self) -> None:
        """A conf folder without config.yaml is reported, and pools are still read."""
        del self.files["config.yaml"]
        self.pool["ports"][0]["diff"] = 0
        self.assertErrors(
            "config.yaml: missing",
            "pools/ltc.yaml: ports[0].diff: must be > 0",
        )

    def test_config_yaml_unreadable(self) -> None:
        """A config.yaml that is a folder is reported as unreadable."""
        os.makedirs(os.path.join(self.conf, "config.yaml"))
        del self.files["config.yaml"]
        self.assertErrors("config.yaml: cannot read: Is a directory")

    def test_no_pools_folder(self) -> None:
        """A conf folder without pools/ is reported."""
        del self.files["pools/ltc.yaml"]
        self.assertErrors("pools/: no pool files (pools/*.yaml)")

    def test_no_pool_files(self) -> None:
        """A pools/ folder without .yaml files is reported; other names are ignored."""
        self.files["pools/ltc.yml"] = self.files.pop("pools/ltc.yaml")
        self.files["pools/README"] = "pools go here\n"
        self.assertErrors("pools/: no pool files (pools/*.yaml)")

    def test_conf_is_a_file(self) -> None:
        """A conf path that is a file is reported and nothing else is read."""
        path = self.mktemp()
        Path(path).write_text("threads: 2\n", encoding="utf-8")
        self.assertEqual(self.failure(path).errors, [f"{path}: not a folder"])

    def test_conf_does_not_exist(self) -> None:
        """A conf path that does not exist is reported."""
        path = os.path.join(self.root, "nowhere")
        self.assertEqual(self.failure(Path(path)).errors, [f"{path}: not a folder"])


class ConflictTests(ConfTestCase):
    """Pools may not share a port or a coin."""

    def test_same_port(self) -> None:
        """Two pools on one interface and port: the later file is reported."""
        self.other_pool(listen="tcp:3333:interface=127.0.0.1")
        self.assertErrors(
            "pools/other.yaml: ports[0].listen: port 3333 is also used by pools/ltc.yaml: ports[0].listen"
        )

    def test_wildcard_and_specific_interface(self) -> None:
        """A pool on all interfaces conflicts with another on one interface of the same port."""
        self.other_pool(listen="tcp:3334")
        self.assertErrors(
            "pools/other.yaml: ports[0].listen: port 3334 is also used by pools/ltc.yaml: ports[1].listen"
        )

    def test_specific_and_wildcard_interface(self) -> None:
        """A pool on one interface conflicts with an earlier one on 0.0.0.0 or :: on its port."""
        self.pool["ports"][0]["listen"] = "tcp:5555:interface=0.0.0.0"
        self.pool["ports"][1]["listen"] = "tcp6:6666:interface=\\:\\:"
        self.other_pool(listen="tcp:port=5555:interface=10.0.0.1")
        self.files["pools/other.yaml"]["ports"].append({"listen": "tcp:6666:interface=127.0.0.1", "diff": 1})
        self.assertErrors(
            "pools/other.yaml: ports[0].listen: port 5555 is also used by pools/ltc.yaml: ports[0].listen",
            "pools/other.yaml: ports[1].listen: port 6666 is also used by pools/ltc.yaml: ports[1].listen",
        )

    def test_different_interfaces(self) -> None:
        """Two pools on one port of different specific interfaces do not conflict."""
        self.other_pool(listen="tcp:3333:interface=127.0.0.2")
        self.assertEqual([p.name for p in self.load().pools], ["ltc", "other"])

    def test_same_port_in_one_pool(self) -> None:
        """Two ports of one pool on the same port conflict."""
        self.pool["ports"][1]["listen"] = "tcp:3333"
        self.assertErrors(
            "pools/ltc.yaml: ports[1].listen: port 3333 is also used by pools/ltc.yaml: ports[0].listen"
        )

    def test_control_port(self) -> None:
        """A pool port on the control port conflicts with config.yaml's control.listen."""
        self.pool["ports"][0]["listen"] = "tcp:17117"
        self.assertErrors(
            "pools/ltc.yaml: ports[0].listen: port 17117 is also used by config.yaml: control.listen"
        )

    def test_web_port(self) -> None:
        """A pool port on the web API's port conflicts with web.listen, unless the API is off."""
        self.pool["ports"][0]["listen"] = "tcp:8080"
        self.assertErrors(
            "pools/ltc.yaml: ports[0].listen: port 8080 is also used by config.yaml: web.listen"
        )
        self.settings["web"] = {"enabled": False}
        self.assertEqual(self.load().pools[0].ports[0].listen, "tcp:8080")

    def test_web_and_control_port(self) -> None:
        """web.listen may not take the control port."""
        self.settings["web"] = {"listen": "tcp:17117"}
        self.assertErrors("config.yaml: web.listen: port 17117 is also used by config.yaml: control.listen")

    def test_same_coin(self) -> None:
        """Two pools for one coin: the later file is reported."""
        self.other_pool(coin="litecoin")
        self.assertErrors("pools/other.yaml: coin: litecoin already has a pool in pools/ltc.yaml")

    def test_same_coin_name_other_case(self) -> None:
        """Coin names that differ only in case are the same coin (their Redis keys)."""
        self.files["coins/litecoin-alt.yaml"] = {**litecoin(), "name": "LiteCoin"}
        self.other_pool(coin="litecoin-alt")
        self.assertErrors("pools/other.yaml: coin: LiteCoin already has a pool in pools/ltc.yaml")

    def test_conflict_in_a_file_with_errors(self) -> None:
        """A port conflict is reported even when the pool file has other errors."""
        other = self.other_pool(listen="tcp:3333")
        del other["address"]
        self.assertErrors(
            "pools/other.yaml: address: missing",
            "pools/other.yaml: ports[0].listen: port 3333 is also used by pools/ltc.yaml: ports[0].listen",
        )

    def test_disabled_pool_claims_nothing(self) -> None:
        """A disabled pool may share a port and a coin, and is left out of Config.pools."""
        other = self.other_pool(listen="tcp:3333:interface=127.0.0.1", coin="litecoin")
        other["enabled"] = False
        other["ports"].append({"listen": "tcp:17117", "diff": 1})
        config = self.load()
        self.assertEqual([p.name for p in config.pools], ["ltc"])

    def test_disabled_pool_is_validated(self) -> None:
        """A disabled pool's errors are still reported."""
        other = self.other_pool(listen="tcp:3333", coin="litecoin")
        other["enabled"] = False
        other["ports"][0]["diff"] = 0
        other["reward_recipients"] = [{"address": "A", "percent": 100}]
        self.assertErrors(
            "pools/other.yaml: reward_recipients[0].percent: must be between 0 and 100",
            "pools/other.yaml: ports[0].diff: must be > 0",
        )

    def test_disabled_pool_alone(self) -> None:
        """A conf whose only pool is disabled loads with no pools."""
        self.pool["enabled"] = False
        self.assertEqual(self.load().pools, ())


class PoolDefaultsTests(ConfTestCase):
    """config.yaml's pool_defaults fill the keys a pool file leaves out."""

    def setUp(self) -> None:
        super().setUp()
        self.settings["pool_defaults"] = {
            "block_refresh_interval": 0.5,
            "job_rebroadcast_timeout": 0,
            "connection_timeout": 120,
            "pool_signature": "/defaults/",
            "banning": {"enabled": False, "time": 60},
        }
        self.other_pool()

    def test_applied(self) -> None:
        """A pool without a key gets pool_defaults' value."""
        pool = self.load().pools[0]
        self.assertEqual(pool.block_refresh_interval, 0.5)
        self.assertEqual(pool.job_rebroadcast_timeout, 0.0)
        self.assertEqual(pool.connection_timeout, 120.0)
        self.assertEqual(pool.pool_signature, "/defaults/")
        self.assertEqual((pool.banning.enabled, pool.banning.time), (False, 60.0))
        self.assertEqual(pool.banning.check_threshold, 500)

    def test_pool_value_wins(self) -> None:
        """A pool's own value wins over pool_defaults, for that pool only."""
        self.pool["connection_timeout"] = 30
        self.pool["pool_signature"] = "/ltc/"
        config = self.load()
        self.assertEqual(
            [(p.connection_timeout, p.pool_signature) for p in config.pools],
            [(30.0, "/ltc/"), (120.0, "/defaults/")],
        )

    def test_pool_section_replaces_default_section(self) -> None:
        """A pool's own banning section replaces pool_defaults' section whole, not key by key."""
        self.pool["banning"] = {"time": 5}
        pool = self.load().pools[0]
        self.assertEqual((pool.banning.enabled, pool.banning.time), (True, 5.0))

    def test_unset_defaults(self) -> None:
        """Without pool_defaults, pools get the built-in defaults."""
        del self.settings["pool_defaults"]
        pool = self.load().pools[0]
        self.assertEqual(
            (pool.block_refresh_interval, pool.job_rebroadcast_timeout, pool.connection_timeout),
            (1.0, 55.0, 600.0),
        )
        self.assertEqual((pool.pool_signature, pool.banning.enabled), ("/nomp/", True))

    def test_error_reported_against_config_yaml(self) -> None:
        """An error inside pool_defaults is reported once, against config.yaml, not per pool."""
        self.settings["pool_defaults"]["banning"]["time"] = 0
        self.settings["pool_defaults"]["connection_timeout"] = "long"
        self.assertErrors(
            "config.yaml: pool_defaults.connection_timeout: expected a number, got a string ('long')",
            "config.yaml: pool_defaults.banning.time: must be > 0",
        )


class SettingsWithErrorsTests(ConfTestCase):
    """A config.yaml with errors still points the pools at its coins folder and control port."""

    def test_coins_folder_kept(self) -> None:
        """An error elsewhere in config.yaml does not make every coin file missing."""
        self.settings["logging"]["level"] = "loud"
        self.pool["ports"][1]["diff"] = 0
        self.assertErrors(
            "config.yaml: logging.level: must be one of 'debug', 'info', 'warn', 'error',"
            " 'critical', got 'loud'",
            "pools/ltc.yaml: ports[1].diff: must be > 0",
        )

    def test_control_port_kept(self) -> None:
        """An error elsewhere in config.yaml does not hide a pool port on its control port."""
        self.settings["threads"] = -1
        self.settings["control"]["listen"] = "tcp:3333:interface=127.0.0.1"
        self.assertErrors(
            "config.yaml: threads: must be > 0",
            "pools/ltc.yaml: ports[0].listen: port 3333 is also used by config.yaml: control.listen",
        )


class ManyErrorsTests(ConfTestCase):
    """All problems are reported at once."""

    def break_several_files(self) -> list[str]:
        """Put errors in config.yaml, two pool files and a coin file; the lines expected."""
        self.settings["redis"]["port"] = "6379x"
        self.settings["logging"]["level"] = "loud"
        self.pool["daemons"][0]["url"] = "ftp://127.0.0.1:9332"
        self.pool["ports"][1]["diff"] = 0
        other = self.other_pool(listen="tcp:3333")
        other["colour"] = "blue"
        self.files["coins/bitcoin.yaml"]["algorithm"] = "x11"
        return [
            "config.yaml: redis.port: expected an integer, got a string ('6379x')",
            "config.yaml: logging.level: must be one of 'debug', 'info', 'warn', 'error',"
            " 'critical', got 'loud'",
            "pools/ltc.yaml: daemons[0].url: must start with http:// or https://",
            "pools/ltc.yaml: ports[1].diff: must be > 0",
            f"coins/bitcoin.yaml: algorithm: unknown algorithm 'x11' (known: {KNOWN_ALGORITHMS})",
            f"pools/other.yaml: colour: unknown key (expected one of: {POOL_KEYS})",
            "pools/other.yaml: ports[0].listen: port 3333 is also used by pools/ltc.yaml: ports[0].listen",
        ]

    def test_all_reported_together(self) -> None:
        """Errors from config.yaml, two pool files and a coin file come in one ConfigErrors."""
        expected = self.break_several_files()
        failure = self.failure()
        self.assertEqual(sorted(failure.errors), sorted(expected))
        # files in reading order: config.yaml, then pools by name, each coin file
        # when a pool first names it, and the conflicts between pools last
        self.assertEqual(
            [e.split(":")[0] for e in failure.errors],
            ["config.yaml"] * 2 + ["pools/ltc.yaml"] * 2 + ["coins/bitcoin.yaml"] + ["pools/other.yaml"] * 2,
        )
        self.assertIn("is also used by", failure.errors[-1])
        lines = str(failure).splitlines()
        self.assertEqual(lines[0], "7 configuration errors:")
        self.assertEqual(lines[1:], [f"  {e}" for e in failure.errors])

    def test_one_error_heading(self) -> None:
        """A single error has a singular heading."""
        self.pool["ports"][1]["diff"] = 0
        self.assertEqual(
            str(self.failure()),
            "1 configuration error:\n  pools/ltc.yaml: ports[1].diff: must be > 0",
        )

    def test_twistd_refuses_to_start(self) -> None:
        """``twistd -n nomp -c`` on a bad conf exits 1, prints every error and starts nothing."""
        expected = self.break_several_files()
        conf = self.write()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        result = subprocess.run(
            [twistd, "-n", "nomp", "-c", conf],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=workdir,
            check=False,
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("nomp: 7 configuration errors:\n", result.stderr)
        for line in expected:
            self.assertIn(f"  {line}\n", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertNotIn("starting up", result.stdout + result.stderr)
        self.assertNotIn("twistd.pid", os.listdir(workdir))


class EthConfTestCase(ConfTestCase):
    """The baseline with an Ethereum Classic pool beside the Litecoin one."""

    def setUp(self) -> None:
        super().setUp()
        self.files["coins/ethereum-classic.yaml"] = classic()
        self.files["pools/etc.yaml"] = {
            "coin": "ethereum-classic",
            "address": ETH_ADDRESS,
            "daemons": [
                {"url": "http://127.0.0.1:8545", "timeout": 10},
                {"url": "http://127.0.0.2:8545"},
            ],
            "ports": [
                {"listen": "tcp:8008:interface=127.0.0.1", "diff": 4_000_000_000},
                {
                    "listen": "tcp:8888:interface=127.0.0.1",
                    "diff": 2_000_000_000,
                    "protocol": "getwork",
                    "max_body": 256,
                },
            ],
        }

    @property
    def eth_pool(self) -> Any:
        """pools/etc.yaml's data."""
        return self.files["pools/etc.yaml"]

    @property
    def eth_coin(self) -> Any:
        """coins/ethereum-classic.yaml's data."""
        return self.files["coins/ethereum-classic.yaml"]


class EthConfigTests(EthConfTestCase):
    """Ethereum-family pools load into EthPoolConfig, apart from the Bitcoin-family ones."""

    def test_baseline(self) -> None:
        """The Ethereum pool loads with every value typed, and the defaults where unset."""
        config = self.load()
        self.assertEqual([p.name for p in config.pools], ["ltc"])
        (pool,) = config.eth_pools
        self.assertIsInstance(pool, EthPoolConfig)
        self.assertEqual((pool.name, pool.file, pool.address), ("etc", "pools/etc.yaml", ETH_ADDRESS))
        coin = pool.coin
        self.assertIsInstance(coin, EthCoinConfig)
        self.assertEqual((coin.name, coin.symbol, coin.algorithm), ("ethereum-classic", "ETC", "etchash"))
        self.assertEqual((coin.ecip1099_block, coin.chain_id, coin.block_time), (11_700_000, 61, 13.0))
        self.assertEqual(
            coin.rewards,
            EthRewards((RewardStep(0, 5 * ETC_WEI),), era_length=5_000_000, uncle_rule="ecip1017"),
        )
        self.assertEqual([d.url for d in pool.daemons], ["http://127.0.0.1:8545", "http://127.0.0.2:8545"])
        self.assertEqual([d.timeout for d in pool.daemons], [10.0, 30.0])
        stratum, getwork = pool.ports
        self.assertEqual((stratum.protocol, stratum.diff, stratum.max_body), ("stratum", 4e9, 1024))
        self.assertEqual((getwork.protocol, getwork.diff, getwork.max_body), ("getwork", 2e9, 256))
        self.assertEqual(
            (
                pool.enabled,
                pool.block_refresh_interval,
                pool.upstream_check_interval,
                pool.state_update_interval,
                pool.stale_heights,
                pool.connection_timeout,
            ),
            (True, 0.5, 5.0, 3.0, 3, 600.0),
        )
        self.assertEqual(
            (pool.usernames, pool.hashrate_window, pool.hashrate_expiration, pool.node_name, pool.dataset),
            ("address", 300.0, 10800.0, "main", False),
        )
        self.assertEqual(pool.banning.check_threshold, 500)

    def test_every_key(self) -> None:
        """Every key of an Ethereum pool file is read."""
        self.eth_pool.update(
            {
                "enabled": True,
                "block_refresh_interval": 0.12,
                "upstream_check_interval": 2,
                "state_update_interval": 1,
                "stale_heights": 1,
                "connection_timeout": 120,
                "banning": {"enabled": False},
                "usernames": "any",
                "hashrate_window": 1800,
                "hashrate_expiration": 3600,
                "node_name": "proxy-2",
                "dataset": True,
            }
        )
        (pool,) = self.load().eth_pools
        self.assertEqual(
            (pool.block_refresh_interval, pool.upstream_check_interval, pool.state_update_interval),
            (0.12, 2.0, 1.0),
        )
        self.assertEqual(
            (pool.stale_heights, pool.connection_timeout, pool.banning.enabled), (1, 120.0, False)
        )
        self.assertEqual(
            (pool.usernames, pool.hashrate_window, pool.hashrate_expiration, pool.node_name, pool.dataset),
            ("any", 1800.0, 3600.0, "proxy-2", True),
        )

    def test_ethash_coin(self) -> None:
        """An ethash coin has no ECIP-1099 block and may have no eras."""
        self.eth_coin.update({"algorithm": "ethash", "chain_id": 1})
        del self.eth_coin["ecip1099_block"]
        del self.eth_coin["rewards"]["era_length"]
        del self.eth_coin["rewards"]["uncle_rule"]
        del self.eth_coin["block_time"]
        coin = self.load().eth_pools[0].coin
        self.assertEqual((coin.algorithm, coin.ecip1099_block, coin.block_time), ("ethash", None, 13.0))
        self.assertEqual((coin.rewards.era_length, coin.rewards.uncle_rule), (None, "ethereum"))

    def test_mixed_case_address(self) -> None:
        """An address with upper-case hex digits (EIP-55) is taken as given."""
        self.eth_pool["address"] = "0x" + "AbCdEf0123" * 4
        self.assertEqual(self.load().eth_pools[0].address, "0x" + "AbCdEf0123" * 4)

    def test_disabled(self) -> None:
        """A disabled Ethereum pool is validated but left out of Config.eth_pools."""
        self.eth_pool["enabled"] = False
        self.assertEqual(self.load().eth_pools, ())
        self.eth_pool["stale_heights"] = 0
        self.assertErrors("pools/etc.yaml: stale_heights: must be >= 1")

    def test_shipped_coins(self) -> None:
        """The shipped Ethereum coin files: their chain ids, ECIP-1099 blocks and rewards."""
        self.settings["coins"] = os.path.join(REPO, "coins")
        for name in list(self.files):
            if name.startswith("pools/"):
                del self.files[name]
        names = ["ethash-dev", "ethereum-classic", "ethereumpow", "mordor"]
        for i, name in enumerate(names):
            self.files[f"pools/{name}.yaml"] = {
                "coin": name,
                "address": ETH_ADDRESS,
                "daemons": [{"url": "http://127.0.0.1:8545"}],
                "ports": [{"listen": f"tcp:{5000 + i}", "diff": 4_000_000_000}],
            }
        coins = {p.name: p.coin for p in self.load().eth_pools}
        self.assertEqual(
            [(c.algorithm, c.chain_id, c.ecip1099_block, c.rewards.uncle_rule) for c in coins.values()],
            [
                ("ethash", 1337, None, "ethereum"),
                ("etchash", 61, 11_700_000, "ecip1017"),
                ("ethash", 10001, None, "ethereum"),
                ("etchash", 63, 2_520_000, "ecip1017"),
            ],
        )
        rewards = [
            ("ethash-dev", 1, 5 * ETC_WEI),
            ("ethash-dev", 10_000_000, 5 * ETC_WEI),
            ("ethereum-classic", 5_000_000, 5 * ETC_WEI),
            ("ethereum-classic", 5_000_001, 4 * ETC_WEI),
            ("ethereum-classic", 10_000_001, 3_200_000_000_000_000_000),
            ("ethereumpow", 4_369_999, 5 * ETC_WEI),
            ("ethereumpow", 4_370_000, 3 * ETC_WEI),
            ("ethereumpow", 15_537_394, 2 * ETC_WEI),  # ETHW's first block of its own
            ("mordor", 2_000_001, 4 * ETC_WEI),
            ("mordor", 4_000_001, 3_200_000_000_000_000_000),
        ]
        for name, height, wei in rewards:
            self.assertEqual(coins[name].rewards.block_reward(height), wei, (name, height))

    def test_only_eth_pools(self) -> None:
        """A conf folder may have Ethereum pools only."""
        del self.files["pools/ltc.yaml"]
        config = self.load()
        self.assertEqual((config.pools, [p.name for p in config.eth_pools]), ((), ["etc"]))


class EthErrorTests(EthConfTestCase):
    """Every Ethereum-specific key is checked, each error with its path."""

    def test_bad_address(self) -> None:
        """The pool's address must be 0x and 40 hex digits."""
        for address in ["ab" * 20, "0x" + "ab" * 19, "0x" + "ab" * 21, "0x" + "g" * 40, "0X" + "ab" * 20]:
            self.eth_pool["address"] = address
            self.assertErrors("pools/etc.yaml: address: must be an address: 0x and 40 hex digits")

    def test_address_not_a_string(self) -> None:
        """An address YAML reads as a number is a type error."""
        self.eth_pool["address"] = 0x1234
        self.assertErrors("pools/etc.yaml: address: expected a string, got a number (4660)")

    def test_etchash_without_ecip1099_block(self) -> None:
        """An etchash coin must say where ECIP-1099 starts."""
        del self.eth_coin["ecip1099_block"]
        self.assertErrors(
            "coins/ethereum-classic.yaml: ecip1099_block: missing: etchash needs its activation block"
        )

    def test_ethash_with_ecip1099_block(self) -> None:
        """An ethash coin may not have an ECIP-1099 block."""
        self.eth_coin["algorithm"] = "ethash"
        self.assertErrors("coins/ethereum-classic.yaml: ecip1099_block: is for etchash coins only")

    def test_getwork_on_bitcoin_pool(self) -> None:
        """A Bitcoin-family pool has no getwork ports."""
        self.pool["ports"][1]["protocol"] = "getwork"
        self.assertErrors("pools/ltc.yaml: ports[1].protocol: getwork is for Ethereum-family pools")

    def test_unknown_protocol(self) -> None:
        """A port's protocol is stratum or getwork."""
        self.eth_pool["ports"][0]["protocol"] = "http"
        self.assertErrors(
            "pools/etc.yaml: ports[0].protocol: must be one of 'stratum', 'getwork', got 'http'"
        )

    def test_proxy_protocol_on_getwork(self) -> None:
        """The PROXY protocol is for stratum ports."""
        self.eth_pool["ports"][1]["proxy_protocol"] = ["10.0.0.1"]
        self.eth_pool["ports"][0]["proxy_protocol"] = ["10.0.0.1"]
        self.assertErrors("pools/etc.yaml: ports[1].proxy_protocol: is for stratum ports, not getwork ones")

    def test_max_body(self) -> None:
        """max_body is a positive number of bytes."""
        self.eth_pool["ports"][1]["max_body"] = 0
        self.assertErrors("pools/etc.yaml: ports[1].max_body: must be > 0")

    def test_stale_heights(self) -> None:
        """stale_heights is at least 1: the current height."""
        self.eth_pool["stale_heights"] = 0
        self.assertErrors("pools/etc.yaml: stale_heights: must be >= 1")

    def test_intervals_positive(self) -> None:
        """The Ethereum pool's durations must be positive."""
        for key in [
            "block_refresh_interval",
            "upstream_check_interval",
            "state_update_interval",
            "hashrate_expiration",
        ]:
            self.eth_pool[key] = 0
        self.assertErrors(
            "pools/etc.yaml: block_refresh_interval: must be > 0",
            "pools/etc.yaml: upstream_check_interval: must be > 0",
            "pools/etc.yaml: state_update_interval: must be > 0",
            "pools/etc.yaml: hashrate_expiration: must be > 0",
        )

    def test_empty_lists_and_names(self) -> None:
        """Daemons and ports must not be empty, nor the node's name."""
        self.eth_pool.update({"daemons": [], "ports": [], "node_name": ""})
        self.assertErrors(
            "pools/etc.yaml: daemons: must not be empty",
            "pools/etc.yaml: ports: must not be empty",
            "pools/etc.yaml: node_name: must not be empty",
        )

    def test_unknown_key(self) -> None:
        """An Ethereum pool file lists its own keys; Bitcoin-only ones are unknown."""
        self.eth_pool["reward_recipients"] = []
        self.eth_pool["pool_signature"] = "/x/"
        self.eth_pool["payments"] = {"orphan_depth": 1, "immature_depth": 16}
        self.assertErrors(
            f"pools/etc.yaml: pool_signature: unknown key (expected one of: {ETH_POOL_KEYS})",
            f"pools/etc.yaml: reward_recipients: unknown key (expected one of: {ETH_POOL_KEYS})",
            "pools/etc.yaml: payments.orphan_depth: unknown key (expected one of: daemon, depth, enabled, "
            "fee_percent, gas_pricing, immature_depth, interval, keep_tx_fees, key_file, lock_timeout, "
            "max_gas_price_gwei, minimum_payment, orphan_safety, pplns_window, priority_fee_gwei, "
            "require_peers, scheme, transaction_fee)",
        )

    def test_pplns_window(self) -> None:
        """PPLNS needs its window, in hashes, no larger than the recorder's Lua sums exactly."""
        self.eth_pool["payments"] = {"scheme": "pplns"}
        self.assertErrors(
            "pools/etc.yaml: payments.pplns_window: missing: scheme pplns needs a window in hashes"
        )
        self.eth_pool["payments"] = {"scheme": "pplns", "pplns_window": 2**53 + 1}
        self.assertErrors(
            "pools/etc.yaml: payments.pplns_window: must be > 0 and at most 9007199254740992 hashes"
        )
        self.eth_pool["payments"] = {"scheme": "pplns", "pplns_window": 2 * 10**15}
        (pool,) = self.load().eth_pools
        self.assertEqual((pool.payments.scheme, pool.payments.pplns_window), ("pplns", 2 * 10**15))

    def test_payment_depths(self) -> None:
        """The unlocker's depths: OEP's minimums, and a candidate's first look always decides."""
        self.eth_pool["payments"] = {"immature_depth": 15, "depth": 15, "orphan_safety": 10}
        self.assertErrors(
            "pools/etc.yaml: payments.immature_depth: must be >= 16",
            "pools/etc.yaml: payments.depth: must be >= 32",
            "pools/etc.yaml: payments.depth: must be above immature_depth (15)",
            "pools/etc.yaml: payments.orphan_safety: must be at most immature_depth - 6 (9)",
        )

    def test_unknown_coin_key(self) -> None:
        """An Ethereum coin file lists its own keys; Bitcoin-only ones are unknown."""
        self.eth_coin["network"] = {}
        self.eth_coin["decimals"] = 18
        self.eth_coin["rewards"]["uncle"] = 1
        self.assertErrors(
            "coins/ethereum-classic.yaml: network: unknown key (expected one of: algorithm, block_time,"
            " chain_id, ecip1099_block, name, rewards, symbol)",
            "coins/ethereum-classic.yaml: decimals: unknown key (expected one of: algorithm, block_time,"
            " chain_id, ecip1099_block, name, rewards, symbol)",
            "coins/ethereum-classic.yaml: rewards.uncle: unknown key (expected one of: era_length,"
            " schedule, uncle_rule)",
        )

    def test_coin_values(self) -> None:
        """chain_id is positive, the algorithm one of the two, the rewards' values in range."""
        self.eth_coin.update({"chain_id": 0, "symbol": ""})
        self.eth_coin["rewards"].update({"era_length": 0, "uncle_rule": "ubiq"})
        self.eth_coin["rewards"]["schedule"] = [{"from_block": -1, "wei": 0}]
        self.assertErrors(
            "coins/ethereum-classic.yaml: chain_id: must be > 0",
            "coins/ethereum-classic.yaml: symbol: must not be empty",
            "coins/ethereum-classic.yaml: rewards.era_length: must be > 0",
            "coins/ethereum-classic.yaml: rewards.uncle_rule:"
            " must be one of 'ethereum', 'ecip1017', got 'ubiq'",
            "coins/ethereum-classic.yaml: rewards.schedule[0].from_block: must be >= 0",
            "coins/ethereum-classic.yaml: rewards.schedule[0].wei: must be > 0",
        )

    def test_schedule_empty(self) -> None:
        """A reward schedule has at least one step."""
        self.eth_coin["rewards"]["schedule"] = []
        self.assertErrors("coins/ethereum-classic.yaml: rewards.schedule: must not be empty")

    def test_schedule_not_from_genesis(self) -> None:
        """A reward schedule starts at block 0."""
        self.eth_coin["rewards"]["schedule"][0]["from_block"] = 1
        self.assertErrors(
            "coins/ethereum-classic.yaml: rewards.schedule[0].from_block:"
            " must be 0: the first step covers every block from genesis"
        )

    def test_schedule_not_increasing(self) -> None:
        """Each step of a reward schedule starts above the one before."""
        self.eth_coin["rewards"]["schedule"] = [
            {"from_block": 0, "wei": 5 * ETC_WEI},
            {"from_block": 100, "wei": 3 * ETC_WEI},
            {"from_block": 100, "wei": 2 * ETC_WEI},
            {"from_block": 50, "wei": ETC_WEI},
        ]
        self.assertErrors(
            "coins/ethereum-classic.yaml: rewards.schedule[2].from_block: must be above schedule[1]'s (100)",
            "coins/ethereum-classic.yaml: rewards.schedule[3].from_block: must be above schedule[2]'s (100)",
        )

    def test_bad_coin_keeps_the_family(self) -> None:
        """A pool of an Ethereum coin file with errors is still checked as an Ethereum pool."""
        self.eth_coin["chain_id"] = "61"
        self.eth_pool["stale_heights"] = 0
        self.assertErrors(
            "coins/ethereum-classic.yaml: chain_id: expected an integer, got a string ('61')",
            "pools/etc.yaml: stale_heights: must be >= 1",
        )

    def test_missing_coin_file_reports_pool_errors(self) -> None:
        """A pool without a coin file still has its own errors reported."""
        self.eth_pool["coin"] = "ethereum"
        self.eth_pool["ports"][0]["diff"] = 0
        self.assertErrors(
            "pools/etc.yaml: coin: no coin file coins/ethereum.yaml",
            "pools/etc.yaml: ports[0].diff: must be > 0",
        )

    def test_algorithm_picks_the_family(self) -> None:
        """ethash and etchash coin files are Ethereum ones; an unknown algorithm lists them."""
        self.eth_coin["algorithm"] = "ethhash"
        errors = self.errors()
        self.assertIn(
            "coins/ethereum-classic.yaml: algorithm:"
            f" unknown algorithm 'ethhash' (known: {KNOWN_ALGORITHMS})",
            errors,
        )
        self.assertIn("etchash, ethash, scrypt, sha256d", KNOWN_ALGORITHMS)

    def test_algorithm_unhashable(self) -> None:
        """An algorithm given as a list is a type error, not a crash."""
        self.eth_coin["algorithm"] = ["etchash"]
        errors = self.errors()
        self.assertIn("coins/ethereum-classic.yaml: algorithm: expected a string, got a list", errors)


class EthPayerConfigTests(EthConfTestCase):
    """The payer's keys in an Ethereum pool's payments section: amounts in whole wei."""

    def test_defaults(self) -> None:
        """Without payer keys: 0.5 ether, legacy pricing up to 100 gwei, the pool pays the fee."""
        (pool,) = self.load().eth_pools
        payments = pool.payments
        self.assertEqual(
            (payments.key_file, payments.gas_pricing, payments.transaction_fee, payments.require_peers),
            (None, "legacy", "pool", 1),
        )
        self.assertEqual(payments.minimum_payment_wei, 5 * 10**17)
        self.assertEqual(payments.max_gas_price_wei, 100 * 10**9)
        self.assertEqual(payments.priority_fee_wei, 10**9)

    def test_amounts_in_wei(self) -> None:
        """Ether and gwei amounts turn into exact wei, down to the last one."""
        self.eth_pool["payments"] = {
            "enabled": True,
            "key_file": "/etc/nomp/payout.key",
            "minimum_payment": "0.000000000000000001",
            "gas_pricing": "dynamic",
            "max_gas_price_gwei": "250.000000001",
            "priority_fee_gwei": 0,
            "transaction_fee": "miners",
            "require_peers": 0,
        }
        (pool,) = self.load().eth_pools
        payments = pool.payments
        self.assertEqual(payments.key_file, "/etc/nomp/payout.key")
        self.assertEqual(payments.minimum_payment_wei, 1)
        self.assertEqual(payments.max_gas_price_wei, 250_000_000_001)
        self.assertEqual(payments.priority_fee_wei, 0)
        self.assertEqual((payments.gas_pricing, payments.transaction_fee), ("dynamic", "miners"))
        self.assertEqual(payments.require_peers, 0)

    def test_large_amounts_exact(self) -> None:
        """Amounts past Decimal's 28 digits are still exact wei."""
        self.eth_pool["payments"] = {"minimum_payment": "123456789012.123456789012345678"}
        (pool,) = self.load().eth_pools
        self.assertEqual(pool.payments.minimum_payment_wei, 123456789012123456789012345678)
        self.eth_pool["payments"] = {"minimum_payment": "123456789012.1234567890123456789"}
        self.assertErrors(
            "pools/etc.yaml: payments.minimum_payment: must have at most 18 decimals (whole wei)"
        )

    def test_yaml_float(self) -> None:
        """A YAML float is read as written: 0.1 ether is 10^17 wei."""
        self.eth_pool["payments"] = {"minimum_payment": 0.1}
        (pool,) = self.load().eth_pools
        self.assertEqual(pool.payments.minimum_payment_wei, 10**17)

    def test_key_file_required_when_enabled(self) -> None:
        """Enabled payments need the payout key's file."""
        self.eth_pool["payments"] = {"enabled": True}
        self.assertErrors(
            "pools/etc.yaml: payments.key_file: missing: the payer signs with the pool's payout key"
        )

    def test_bad_amounts(self) -> None:
        """Amounts below a wei, zero or negative are refused, each with its key."""
        self.eth_pool["payments"] = {
            "minimum_payment": "0.0000000000000000001",
            "max_gas_price_gwei": "0.0000000001",
            "priority_fee_gwei": -1,
        }
        self.assertErrors(
            "pools/etc.yaml: payments.minimum_payment: must have at most 18 decimals (whole wei)",
            "pools/etc.yaml: payments.max_gas_price_gwei: must have at most 9 decimals (whole wei)",
            "pools/etc.yaml: payments.priority_fee_gwei: must be >= 0",
        )
        self.eth_pool["payments"] = {"minimum_payment": 0, "max_gas_price_gwei": -5, "require_peers": -1}
        self.assertErrors(
            "pools/etc.yaml: payments.minimum_payment: must be > 0",
            "pools/etc.yaml: payments.max_gas_price_gwei: must be > 0",
            "pools/etc.yaml: payments.require_peers: must be >= 0",
        )

    def test_tip_above_ceiling(self) -> None:
        """The tip cannot be above the gas price ceiling."""
        self.eth_pool["payments"] = {"max_gas_price_gwei": 2, "priority_fee_gwei": 3}
        self.assertErrors(
            "pools/etc.yaml: payments.priority_fee_gwei: must be at most max_gas_price_gwei (2)"
        )

    def test_choices(self) -> None:
        """gas_pricing and transaction_fee take their listed values, key_file a path."""
        self.eth_pool["payments"] = {"gas_pricing": "eip1559", "transaction_fee": "miner", "key_file": ""}
        self.assertErrors(
            "pools/etc.yaml: payments.gas_pricing: must be one of 'legacy', 'dynamic', got 'eip1559'",
            "pools/etc.yaml: payments.transaction_fee: must be one of 'pool', 'miners', got 'miner'",
            "pools/etc.yaml: payments.key_file: must be a file path",
        )


class EthPoolDefaultsTests(EthConfTestCase):
    """Of config.yaml's pool_defaults, connection_timeout and banning apply to Ethereum pools."""

    def setUp(self) -> None:
        super().setUp()
        self.settings["pool_defaults"] = {
            "block_refresh_interval": 2,
            "job_rebroadcast_timeout": 0,
            "connection_timeout": 120,
            "pool_signature": "/defaults/",
            "banning": {"enabled": False, "time": 60},
        }

    def test_applied(self) -> None:
        """connection_timeout and banning come from pool_defaults; block_refresh_interval does not."""
        config = self.load()
        (pool,) = config.eth_pools
        self.assertEqual(pool.connection_timeout, 120.0)
        self.assertEqual((pool.banning.enabled, pool.banning.time), (False, 60.0))
        self.assertEqual(pool.block_refresh_interval, 0.5)
        self.assertEqual(config.pools[0].block_refresh_interval, 2.0)

    def test_pool_value_wins(self) -> None:
        """An Ethereum pool's own values win over pool_defaults."""
        self.eth_pool.update({"connection_timeout": 30, "banning": {"time": 5}})
        (pool,) = self.load().eth_pools
        self.assertEqual(
            (pool.connection_timeout, pool.banning.enabled, pool.banning.time), (30.0, True, 5.0)
        )


class EthConflictTests(EthConfTestCase):
    """Ports and coin names are claimed across both families."""

    def test_port_taken_by_bitcoin_pool(self) -> None:
        """An Ethereum pool's port on a Litecoin pool's is a conflict (reported on the later file)."""
        self.eth_pool["ports"][1]["listen"] = "tcp:3334"
        self.assertErrors(
            "pools/ltc.yaml: ports[1].listen: port 3334 is also used by pools/etc.yaml: ports[1].listen"
        )

    def test_port_taken_by_eth_pool(self) -> None:
        """A Bitcoin pool's port on an Ethereum pool's is a conflict (reported on the later file)."""
        self.other_pool(listen="tcp:8888")
        self.assertErrors(
            "pools/other.yaml: ports[0].listen: port 8888 is also used by pools/etc.yaml: ports[1].listen"
        )

    def test_control_port(self) -> None:
        """An Ethereum pool's getwork port on the control port is a conflict."""
        self.eth_pool["ports"][1]["listen"] = "tcp:17117"
        self.assertErrors(
            "pools/etc.yaml: ports[1].listen: port 17117 is also used by config.yaml: control.listen"
        )

    def test_same_coin_name(self) -> None:
        """An Ethereum coin named as a Bitcoin one shares its Redis keys: a conflict."""
        self.eth_coin["name"] = "Litecoin"
        self.assertErrors("pools/ltc.yaml: coin: litecoin already has a pool in pools/etc.yaml")

    def test_two_pools_one_eth_coin(self) -> None:
        """Two pools of one Ethereum coin conflict."""
        self.files["pools/etc2.yaml"] = {**self.eth_pool, "ports": [{"listen": "tcp:9999", "diff": 1}]}
        self.assertErrors("pools/etc2.yaml: coin: ethereum-classic already has a pool in pools/etc.yaml")


class EthRewardsTests(TestCase):
    """EthRewards.block_reward and friends, against ECIP-1017's and Ethereum's figures."""

    classic = EthRewards((RewardStep(0, 5 * ETC_WEI),), era_length=5_000_000, uncle_rule="ecip1017")
    mordor = EthRewards((RewardStep(0, 5 * ETC_WEI),), era_length=2_000_000, uncle_rule="ecip1017")
    ethereum = EthRewards(
        (RewardStep(0, 5 * ETC_WEI), RewardStep(4_370_000, 3 * ETC_WEI), RewardStep(7_280_000, 2 * ETC_WEI))
    )

    def test_classic_eras(self) -> None:
        """5 ETC in era 0 (blocks 1 to 5,000,000), 4 ETC in era 1, 3.2 ETC in era 2."""
        reward = self.classic.block_reward
        self.assertEqual([reward(h) for h in (0, 1, 5_000_000)], [5 * ETC_WEI] * 3)
        self.assertEqual([reward(h) for h in (5_000_001, 10_000_000)], [4 * ETC_WEI] * 2)
        self.assertEqual(reward(10_000_001), 3_200_000_000_000_000_000)
        self.assertEqual(reward(15_000_001), 2_560_000_000_000_000_000)
        self.assertEqual([self.classic.era(h) for h in (0, 1, 5_000_000, 5_000_001)], [0, 0, 0, 1])

    def test_exact_integer_maths(self) -> None:
        """Far eras are exact integers: base * 4^era // 5^era, with no float rounding."""
        height = 50 * 5_000_000 + 1  # era 50
        self.assertEqual(self.classic.block_reward(height), 5 * ETC_WEI * 4**50 // 5**50)
        self.assertIsInstance(self.classic.block_reward(height), int)

    def test_mordor_eras(self) -> None:
        """Mordor's eras are 2,000,000 blocks."""
        self.assertEqual(self.mordor.block_reward(2_000_000), 5 * ETC_WEI)
        self.assertEqual(self.mordor.block_reward(2_000_001), 4 * ETC_WEI)

    def test_ethereum_schedule(self) -> None:
        """Ethereum's steps: 5 ether, 3 from Byzantium, 2 from Constantinople; no eras."""
        reward = self.ethereum.block_reward
        self.assertEqual(
            [reward(h) for h in (1, 4_369_999, 4_370_000, 7_279_999, 7_280_000, 20_000_000)],
            [r * ETC_WEI for r in (5, 5, 3, 3, 2, 2)],
        )
        self.assertEqual(self.ethereum.era(20_000_000), 0)

    def test_uncle_rewards(self) -> None:
        """Uncles get (8 - depth) / 8 of the reward; ECIP-1017 pays 1/32 from era 1."""
        self.assertEqual(
            [self.ethereum.uncle_reward(100, 100 - k) for k in range(1, 8)],
            [(8 - k) * 625 * 10**15 for k in range(1, 8)],  # 4.375 ... 0.625 ether
        )
        self.assertEqual(self.ethereum.uncle_reward(4_370_001, 4_370_000), 2_625 * 10**15)
        self.assertEqual(self.classic.uncle_reward(5_000_000, 4_999_998), 3_750 * 10**15)
        self.assertEqual(self.classic.uncle_reward(5_000_001, 4_999_999), 4 * ETC_WEI // 32)
        self.assertRaises(ValueError, self.ethereum.uncle_reward, 100, 100)
        self.assertRaises(ValueError, self.ethereum.uncle_reward, 100, 92)

    def test_nephew_rewards(self) -> None:
        """A block earns 1/32 of its reward for each uncle it includes."""
        self.assertEqual(self.ethereum.nephew_reward(1), 156_250_000_000_000_000)
        self.assertEqual(self.ethereum.nephew_reward(7_280_000), 62_500_000_000_000_000)
        self.assertEqual(self.classic.nephew_reward(5_000_001), 125_000_000_000_000_000)

    def test_negative_height(self) -> None:
        """There is no block below genesis."""
        self.assertRaises(ValueError, self.classic.block_reward, -1)


class SentinelConfigTests(ConfTestCase):
    """The redis section naming Sentinels instead of one server, and each way it can be wrong."""

    def sentinels(self, **section: Any) -> dict[str, Any]:
        """config.yaml's redis section, naming two Sentinels; ``section`` over it."""
        redis: dict[str, Any] = {
            "sentinels": [{"host": "10.0.0.1", "port": 26379}, {"host": "10.0.0.2"}],
            "master_name": "nomp",
            "password": "data",
            "sentinel_password": "watch",
            "db": 2,
        }
        redis.update(section)
        self.settings["redis"] = redis
        return redis

    def test_parsed(self) -> None:
        """Sentinels, their master name and password are read; a Sentinel's port defaults to
        26379; a payout journal entry waits for one replica by default."""
        self.sentinels()
        redis = self.load().settings.redis
        self.assertEqual(
            redis.sentinels, (SentinelAddress("10.0.0.1", 26379), SentinelAddress("10.0.0.2", 26379))
        )
        self.assertEqual((redis.master_name, redis.sentinel_password), ("nomp", "watch"))
        self.assertEqual((redis.password, redis.db), ("data", 2))
        self.assertEqual((redis.journal_replicas_required, redis.journal_timeout), (1, 5.0))

    def test_journal_replicas(self) -> None:
        """journal_replicas says how many replicas a journal entry waits for: 0 is no wait;
        without Sentinels the default is no wait, and a number can still be given."""
        self.sentinels(journal_replicas=0, journal_timeout=0.5)
        redis = self.load().settings.redis
        self.assertEqual((redis.journal_replicas_required, redis.journal_timeout), (0, 0.5))
        self.settings["redis"] = {"host": "10.0.0.9"}
        self.assertEqual(self.load().settings.redis.journal_replicas_required, 0)
        self.settings["redis"] = {"host": "10.0.0.9", "journal_replicas": 2}
        self.assertEqual(self.load().settings.redis.journal_replicas_required, 2)

    def test_no_sentinels(self) -> None:
        """An empty list of Sentinels names no primary."""
        self.sentinels(sentinels=[])
        self.assertErrors("config.yaml: redis.sentinels: must not be empty")

    def test_bad_port(self) -> None:
        """Each Sentinel's port is checked, with its place in the list."""
        self.sentinels(sentinels=[{"host": "10.0.0.1"}, {"host": "10.0.0.2", "port": 70000}])
        self.assertErrors("config.yaml: redis.sentinels[1].port: must be a port number (1-65535)")

    def test_bad_host(self) -> None:
        """A Sentinel needs a host."""
        self.sentinels(sentinels=[{"port": 26379}, {"host": ""}])
        self.assertErrors(
            "config.yaml: redis.sentinels[0].host: missing",
            "config.yaml: redis.sentinels[1].host: must not be empty",
        )

    def test_host_and_sentinels(self) -> None:
        """host or port beside the Sentinels is refused, even with their default values."""
        self.sentinels(host="127.0.0.1", port=6379)
        self.assertErrors(
            "config.yaml: redis.host: not with sentinels: the Sentinels name the primary",
            "config.yaml: redis.port: not with sentinels: the Sentinels name the primary",
        )

    def test_unknown_key(self) -> None:
        """An unknown key in a Sentinel is named with its path and the keys expected."""
        self.sentinels(sentinels=[{"host": "10.0.0.1", "prot": 26379}])
        self.assertErrors("config.yaml: redis.sentinels[0].prot: unknown key (expected one of: host, port)")

    def test_master_name_missing(self) -> None:
        """Sentinels without the name they watch the primary under."""
        redis = self.sentinels()
        del redis["master_name"]
        self.assertErrors(
            "config.yaml: redis.master_name: missing: the name the Sentinels watch the primary under"
        )

    def test_sentinel_keys_without_sentinels(self) -> None:
        """master_name and sentinel_password mean nothing without Sentinels."""
        self.settings["redis"] = {"host": "10.0.0.9", "master_name": "nomp", "sentinel_password": "x"}
        self.assertErrors(
            "config.yaml: redis.master_name: only with sentinels",
            "config.yaml: redis.sentinel_password: only with sentinels",
        )

    def test_same_sentinel_twice(self) -> None:
        """A Sentinel listed twice is named at its second place."""
        self.sentinels(
            sentinels=[{"host": "10.0.0.1"}, {"host": "10.0.0.2"}, {"host": "10.0.0.1", "port": 26379}]
        )
        self.assertErrors("config.yaml: redis.sentinels[2]: the same Sentinel as sentinels[0]")

    def test_every_error_at_once(self) -> None:
        """Every problem of the section is reported in one go, each with its path."""
        self.sentinels(
            sentinels=[{"host": "10.0.0.1", "port": 0}, {"hots": "10.0.0.2"}],
            journal_replicas=-1,
            journal_timeout=0,
            host="10.0.0.3",
        )
        self.assertErrors(
            "config.yaml: redis.host: not with sentinels: the Sentinels name the primary",
            "config.yaml: redis.sentinels[0].port: must be a port number (1-65535)",
            "config.yaml: redis.sentinels[1].hots: unknown key (expected one of: host, port)",
            "config.yaml: redis.sentinels[1].host: missing",
            "config.yaml: redis.journal_replicas: must be >= 0",
            "config.yaml: redis.journal_timeout: must be > 0",
        )


class P2PConfigTests(ConfTestCase):
    """The pool's p2p section and the coin file's network magic."""

    def setUp(self) -> None:
        super().setUp()
        self.coin["network"]["p2p_magic"] = "fbc0b6db"

    def test_section(self) -> None:
        """A port is enough: the host defaults to loopback, the magic to the coin file's,
        transactions are not announced."""
        self.pool["p2p"] = {"port": 9333}
        (pool,) = self.load().pools
        self.assertEqual(pool.p2p, P2PConfig(port=9333))
        assert pool.p2p is not None
        self.assertEqual(
            (pool.p2p.enabled, pool.p2p.host, pool.p2p.magic, pool.p2p.disable_transactions),
            (True, "127.0.0.1", None, True),
        )
        self.assertEqual(pool.p2p_magic, bytes.fromhex("fbc0b6db"))
        self.assertEqual(pool.coin.network.p2p_magic, bytes.fromhex("fbc0b6db"))

    def test_every_key(self) -> None:
        """The pool's own magic wins over the coin file's; upper-case hex is hex."""
        self.pool["p2p"] = {
            "enabled": True,
            "host": "node.example",
            "port": 19335,
            "magic": "FDD2C8F1",
            "disable_transactions": False,
        }
        (pool,) = self.load().pools
        self.assertEqual(pool.p2p, P2PConfig(19335, True, "node.example", bytes.fromhex("fdd2c8f1"), False))
        self.assertEqual(pool.p2p_magic, bytes.fromhex("fdd2c8f1"))

    def test_absent_or_null(self) -> None:
        """No section, or null: no P2P listener."""
        self.assertIsNone(self.load().pools[0].p2p)
        self.pool["p2p"] = None
        self.assertIsNone(self.load().pools[0].p2p)

    def test_no_magic_anywhere(self) -> None:
        """An enabled listener needs a magic, from the pool or the coin file."""
        del self.coin["network"]["p2p_magic"]
        self.pool["p2p"] = {"port": 9333}
        self.assertErrors(
            "pools/ltc.yaml: p2p.magic: missing: coin litecoin has no network.p2p_magic to listen with"
        )
        self.pool["p2p"]["enabled"] = False
        self.assertIsNone(self.load().pools[0].p2p_magic)
        self.pool["p2p"] = {"port": 9333, "magic": "fbc0b6db"}
        self.assertEqual(self.load().pools[0].p2p_magic, bytes.fromhex("fbc0b6db"))

    def test_bad_values(self) -> None:
        """Each bad value with its path, all at once."""
        self.pool["p2p"] = {
            "port": 0,
            "host": "",
            "magic": "fbc0b6",
            "enabled": "yes",
            "disable_transactions": 1,
        }
        self.assertErrors(
            "pools/ltc.yaml: p2p.port: must be a port number (1-65535)",
            "pools/ltc.yaml: p2p.host: must not be empty",
            "pools/ltc.yaml: p2p.magic: must be eight hex digits, the message-start bytes in wire order, "
            "e.g. fbc0b6db",
            "pools/ltc.yaml: p2p.enabled: expected true or false, got a string ('yes')",
            "pools/ltc.yaml: p2p.disable_transactions: expected true or false, got a number (1)",
        )

    def test_magic_not_hex(self) -> None:
        """Eight hex digits as a string, nothing else."""
        hex_digits = (
            "pools/ltc.yaml: p2p.magic: must be eight hex digits, the message-start bytes in wire order, "
            "e.g. fbc0b6db"
        )
        for magic, error in [
            ("fbc0b6dz", hex_digits),
            ("fbc0b6db00", hex_digits),
            (12345678, "pools/ltc.yaml: p2p.magic: expected a string, got a number (12345678)"),
        ]:
            self.pool["p2p"] = {"port": 9333, "magic": magic}
            self.assertErrors(error)

    def test_port_missing(self) -> None:
        self.pool["p2p"] = {"host": "127.0.0.1"}
        self.assertErrors("pools/ltc.yaml: p2p.port: missing")

    def test_unknown_key(self) -> None:
        """NOMP's camel-case key is not ours."""
        self.pool["p2p"] = {"port": 9333, "disableTransactions": True}
        self.assertErrors(
            "pools/ltc.yaml: p2p.disableTransactions: unknown key "
            "(expected one of: disable_transactions, enabled, host, magic, port)"
        )

    def test_not_a_mapping(self) -> None:
        self.pool["p2p"] = True
        self.assertErrors("pools/ltc.yaml: p2p: expected a mapping, got a boolean (true)")

    def test_coin_magic_refused(self) -> None:
        self.coin["network"]["p2p_magic"] = "litecoin"
        self.assertErrors(
            "coins/litecoin.yaml: network.p2p_magic: must be eight hex digits, the message-start bytes "
            "in wire order, e.g. fbc0b6db"
        )

    def test_shipped_coins(self) -> None:
        """Each shipped Bitcoin-family coin file carries its network's magic (its chainparams'
        pchMessageStart)."""
        expected = {
            "bitcoin": "f9beb4d9",
            "bitcoin-testnet": "0b110907",
            "bitcoin-testnet4": "1c163f28",
            "bitcoin-regtest": "fabfb5da",
            "litecoin": "fbc0b6db",
            "litecoin-testnet": "fdd2c8f1",
            "litecoin-regtest": "fabfb5da",
        }
        for name, magic in expected.items():
            self.files["coins/litecoin.yaml"] = yaml.safe_load(
                Path(REPO, "coins", f"{name}.yaml").read_text(encoding="utf-8")
            )
            self.pool["p2p"] = {"port": 9333}
            self.assertEqual(self.load().pools[0].p2p_magic, bytes.fromhex(magic), name)


class ReloadDiffTests(EthConfTestCase):
    """nomp.config.diff: a reload's plan from the running configuration and the one read."""

    def reread(self) -> Config:
        """The conf folder loaded again after a change to ``self.files``."""
        return self.load()

    def test_nothing_changed(self) -> None:
        """The same folder read twice plans nothing."""
        running = self.load()
        plan = diff_configs(running, self.reread())
        self.assertTrue(plan.empty)
        self.assertEqual(plan.running, running)

    def test_live_changes(self) -> None:
        """A port's difficulty and vardiff, the banning section and payments settings change live,
        each named with its path, its old and its new value."""
        running = self.load()
        self.pool["ports"][0]["diff"] = 16
        self.pool["ports"][1]["vardiff"]["max_diff"] = 1024
        self.pool["banning"] = {"time": 60, "connections_per_ip": 4}
        self.pool["payments"] = {"interval": 30}
        read = self.reread()
        plan = diff_configs(running, read)
        (change,) = plan.changed
        self.assertEqual(change.name, "ltc")
        self.assertEqual(
            sorted(change.live),
            [
                "banning.connections_per_ip: none -> 4",
                "banning.time: 600 -> 60",
                "payments.interval: 120 -> 30",
                "ports[0].diff: 8 -> 16",
                "ports[1].vardiff.max_diff: 512 -> 1024",
            ],
        )
        self.assertEqual(change.restart, ())
        self.assertEqual(plan.restart, ())
        self.assertEqual(plan.running.pools, read.pools)
        self.assertEqual((plan.added, plan.removed), ((), ()))

    def test_restart_keeps_the_running_values(self) -> None:
        """What needs a restart is listed and keeps its running value beside the live changes."""
        running = self.load()
        self.settings["redis"]["port"] = 6380
        self.settings["threads"] = 4
        self.settings["logging"]["format"] = "json"
        self.settings["logging"]["level"] = "debug"
        self.pool["payments"] = {"scheme": "pplns", "interval": 30}
        self.pool["usernames"] = "any"
        self.pool["ports"][0]["proxy_protocol"] = ["10.0.0.0/8"]
        self.pool["ports"][0]["diff"] = 16
        self.coin["block_time"] = 300
        plan = diff_configs(running, self.reread())
        self.assertEqual(
            sorted(plan.restart),
            [
                "config.yaml: logging.format: text -> json",
                "config.yaml: redis.port: 6379 -> 6380",
                "config.yaml: threads: 2 -> 4",
                "pools/ltc.yaml: coin.block_time: 150 -> 300",
                "pools/ltc.yaml: payments.scheme: prop -> pplns",
                "pools/ltc.yaml: ports[0].proxy_protocol: [] -> [10.0.0.0/8]",
                "pools/ltc.yaml: usernames: address -> any",
            ],
        )
        self.assertEqual(plan.settings_live, ("logging.level: info -> debug",))
        settings = plan.running.settings
        self.assertEqual(
            (settings.redis, settings.threads), (running.settings.redis, running.settings.threads)
        )
        self.assertEqual(settings.logging.format, "text")
        self.assertEqual(settings.logging.level, "debug")
        (pool,) = plan.running.pools
        self.assertEqual((pool.coin, pool.usernames), (running.pools[0].coin, "address"))
        self.assertEqual((pool.payments.scheme, pool.payments.interval), ("prop", 30))
        self.assertEqual((pool.ports[0].proxy_protocol, pool.ports[0].diff), ((), 16))
        # Read again, the same folder reports the same restarts: they are still pending.
        again = diff_configs(plan.running, self.reread())
        self.assertEqual(sorted(again.restart), sorted(plan.restart))
        self.assertEqual(again.changed[0].live, ())

    def test_ports_added_and_removed(self) -> None:
        """A port is known by its listen: a new one opens, a gone one closes, another listen is both."""
        running = self.load()
        self.pool["ports"][0]["listen"] = "tcp:3335:interface=127.0.0.1"
        self.pool["ports"].append({"listen": "tcp:3336:interface=127.0.0.1", "diff": 64})
        plan = diff_configs(running, self.reread())
        (change,) = plan.changed
        self.assertEqual(
            change.live,
            (
                "port tcp:3333:interface=127.0.0.1 closed",
                "ports[0] tcp:3335:interface=127.0.0.1 opened",
                "ports[2] tcp:3336:interface=127.0.0.1 opened",
            ),
        )
        self.assertEqual([p.listen for p in change.running.ports], [p["listen"] for p in self.pool["ports"]])
        match = match_ports(running.pools[0].ports, change.running.ports)
        self.assertEqual([p.listen for p in match.removed], ["tcp:3333:interface=127.0.0.1"])
        self.assertEqual(
            [p.listen for p in match.added], ["tcp:3335:interface=127.0.0.1", "tcp:3336:interface=127.0.0.1"]
        )
        self.assertEqual(match.changed, ())

    def test_pools_added_and_removed(self) -> None:
        """A pool file added starts a pool, one removed (or disabled) stops one."""
        running = self.load()
        self.other_pool()
        self.eth_pool["enabled"] = False
        plan = diff_configs(running, self.reread())
        self.assertEqual([p.name for p in plan.added], ["other"])
        self.assertEqual([p.name for p in plan.removed], ["etc"])
        self.assertEqual([p.name for p in plan.running.pools], ["ltc", "other"])
        self.assertEqual(plan.running.eth_pools, ())

    def test_one_pool(self) -> None:
        """``only``: that pool's changes alone, config.yaml's settings as they run."""
        running = self.load()
        self.other_pool()
        self.settings["logging"]["level"] = "debug"
        self.pool["ports"][0]["diff"] = 16
        plan = diff_configs(running, self.reread(), only="ltc")
        self.assertEqual((plan.added, plan.settings_live), ((), ()))
        self.assertEqual(plan.changed[0].live, ("ports[0].diff: 8 -> 16",))
        self.assertEqual(plan.running.settings, running.settings)
        self.assertEqual([p.name for p in plan.running.pools], ["ltc"])
        added = diff_configs(running, self.reread(), only="other")
        self.assertEqual(([p.name for p in added.added], added.changed), (["other"], ()))

    def test_secrets_not_shown(self) -> None:
        """A daemon's password is said to change, never shown."""
        running = self.load()
        self.pool["daemons"][0]["password"] = "hunter2"
        plan = diff_configs(running, self.reread())
        self.assertEqual(plan.changed[0].live, ("daemons[0].password changed",))
        self.pool["daemons"].append({"url": "http://127.0.0.2:9332", "password": "hunter3"})
        listed = diff_configs(running, self.reread()).changed[0].live
        self.assertEqual(len(listed), 1)
        self.assertNotIn("hunter", listed[0])
        self.assertIn("http://127.0.0.2:9332", listed[0])

    def test_url_secrets_not_shown(self) -> None:
        """A URL's user-info, query and fragment are left out of a change, alone or in a daemon."""
        running = self.load()
        self.pool["daemons"][0]["url"] = "http://rpc:hunter2@127.0.0.3:9332/wallet?key=hunter3#hunter4"
        plan = diff_configs(running, self.reread())
        self.assertEqual(len(plan.changed[0].live + plan.changed[0].restart), 1)
        (line,) = plan.changed[0].live + plan.changed[0].restart
        self.assertNotIn("hunter", line)
        self.assertIn("http://127.0.0.3:9332/wallet", line)
        self.pool["daemons"].append({"url": "http://rpc:hunter5@127.0.0.4:9332?key=hunter6"})
        listed = " ".join(diff_configs(running, self.reread()).changed[0].live)
        self.assertNotIn("hunter", listed)
        self.assertIn("http://127.0.0.4:9332", listed)

    def test_pool_defaults(self) -> None:
        """A change of pool_defaults is a change of each pool it reaches, not of config.yaml."""
        running = self.load()
        self.settings["pool_defaults"]["banning"]["time"] = 60
        plan = diff_configs(running, self.reread())
        self.assertEqual(plan.settings_live + plan.settings_restart, ())
        self.assertEqual(
            {change.name: change.live for change in plan.changed},
            {"ltc": ("banning.time: 600 -> 60",), "etc": ("banning.time: 600 -> 60",)},
        )

    def test_eth_pool(self) -> None:
        """An Ethereum-family pool: its stratum port changes live, its getwork port and what its
        getwork port reads need a restart."""
        running = self.load()
        self.eth_pool["ports"][0]["diff"] = 8_000_000_000
        self.eth_pool["ports"][1]["diff"] = 1_000_000_000
        self.eth_pool["connection_timeout"] = 60
        self.eth_pool["stale_heights"] = 5
        self.eth_pool["node_name"] = "second"
        plan = diff_configs(running, self.reread())
        (change,) = plan.changed
        self.assertEqual(sorted(change.live), ["node_name: main -> second", "ports[0].diff: 4e+09 -> 8e+09"])
        self.assertEqual(
            sorted(change.restart),
            ["connection_timeout: 600 -> 60", "ports[1].diff: 2e+09 -> 1e+09", "stale_heights: 3 -> 5"],
        )
        (pool,) = plan.running.eth_pools
        self.assertEqual([p.diff for p in pool.ports], [8_000_000_000, 2_000_000_000])
        self.assertEqual((pool.connection_timeout, pool.stale_heights, pool.node_name), (600, 3, "second"))

    def test_coin_of_another_family(self) -> None:
        """A pool whose coin file turns into another family's keeps running as it is."""
        running = self.load()
        self.files["coins/litecoin.yaml"] = {**classic(), "name": "litecoin"}
        self.pool["address"] = ETH_ADDRESS
        del self.pool["reward_recipients"]
        plan = diff_configs(running, self.reread())
        (change,) = plan.changed
        self.assertEqual(change.live, ())
        self.assertEqual(change.restart, ("coin: litecoin -> litecoin, of another family",))
        self.assertEqual(plan.running.pools, running.pools)

    def test_control_token_file(self) -> None:
        """control.token_file is read as a path; an empty one is an error; a change is live."""
        running = self.load()
        self.assertIsNone(running.settings.control.token_file)
        self.settings["control"]["token_file"] = "/etc/nomp/control.token"
        read = self.reread()
        self.assertEqual(read.settings.control.token_file, "/etc/nomp/control.token")
        plan = diff_configs(running, read)
        self.assertEqual(plan.settings_live, ("control.token_file: none -> /etc/nomp/control.token",))
        self.settings["control"]["token_file"] = ""
        self.assertErrors("config.yaml: control.token_file: must be a file path")
