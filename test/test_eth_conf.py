"""The shipped example of an Ethereum Classic pool loads as it is."""

from __future__ import annotations

import shutil
from pathlib import Path

from twisted.trial.unittest import TestCase

from nomp.config import load_config
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
