"""The shipped example of an Ethereum Classic pool loads as it is."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nomp.config import load_config
from nomp.tap import build_service
from test.test_config_paths import SHIPPED_COINS, SHIPPED_CONF

EXAMPLE = SHIPPED_CONF / "examples" / "ethereum-classic.yaml"


class ExampleTests(TestCase):
    def test_example_loads(self) -> None:
        conf = Path(self.mktemp())
        (conf / "pools").mkdir(parents=True)
        (conf / "config.yaml").write_text(f"coins: {SHIPPED_COINS}\n")
        shutil.copy(EXAMPLE, conf / "pools" / "etc.yaml")
        config = load_config(conf)
        (pool,) = config.eth_pools
        self.assertEqual(config.pools, ())
        self.assertEqual(
            (pool.coin.algorithm, pool.coin.chain_id, pool.coin.ecip1099_block), ("etchash", 61, 11_700_000)
        )
        self.assertEqual([p.protocol for p in pool.ports], ["stratum", "getwork"])
        self.assertEqual(len(pool.daemons), 2)


class PaymentsWiringTests(TestCase):
    """An Ethereum pool with payments on runs its unlocker and payer under its
    pool service; an unsafe key file stops the start with the pool file named."""

    def conf(self, key_mode: int) -> Path:
        conf = Path(self.mktemp())
        (conf / "pools").mkdir(parents=True)
        key = conf / "payout.key"
        key.write_text("0x" + "46" * 32 + "\n")
        key.chmod(key_mode)
        (conf / "config.yaml").write_text(f"coins: {SHIPPED_COINS}\nweb: {{enabled: false}}\n")
        pool = yaml.safe_load(EXAMPLE.read_text())
        pool["payments"] = {"enabled": True, "key_file": str(key), "immature_depth": 16, "depth": 32}
        (conf / "pools" / "etc.yaml").write_text(yaml.safe_dump(pool))
        return conf

    def build(self, key_mode: int) -> Any:
        return build_service(
            load_config(self.conf(key_mode)), reactor, exit_with=lambda status: None, shutdown=lambda: None
        )

    def test_services(self) -> None:
        root = build_service(
            load_config(self.conf(0o600)), reactor, exit_with=lambda s: None, shutdown=lambda: None
        )
        pool = root.getServiceNamed("pool:etc")
        names = [service.name for service in pool]
        self.assertEqual(names[-2:], ["unlocker:etc", names[-1]])
        self.assertIn("pay", names[-1])

    def test_unsafe_key_file(self) -> None:
        with self.assertRaises(SystemExit) as stopped:
            build_service(
                load_config(self.conf(0o644)), reactor, exit_with=lambda s: None, shutdown=lambda: None
            )
        self.assertIn("pools/etc.yaml", str(stopped.exception))
        self.assertIn("644", str(stopped.exception))
