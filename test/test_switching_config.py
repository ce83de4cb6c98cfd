"""config.yaml's ``switching`` section: switches, their pools and their ports."""

from __future__ import annotations

import copy
import os
from typing import Any

from nomp.config import BanningConfig, SwitchConfig
from nomp.config.diff import describe, diff_configs
from nomp.config.load import load_config
from test.test_config import ETH_ADDRESS, ConfTestCase, classic, litecoin

SWITCH_KEYS = "algorithm, banning, connection_timeout, pools, ports"


class SwitchingConfTestCase(ConfTestCase):
    """The baseline with a second scrypt pool (copycoin), a sha256d pool
    (other), an Ethereum-family pool (etc) and a switch over ltc and copy."""

    def setUp(self) -> None:
        super().setUp()
        self.other_pool()
        copycoin = {**litecoin(), "name": "copycoin", "symbol": "CPY"}
        self.files["coins/copycoin.yaml"] = copycoin
        self.files["pools/copy.yaml"] = {
            **copy.deepcopy(self.pool),
            "coin": "copycoin",
            "ports": [{"listen": "tcp:3335:interface=127.0.0.1", "diff": 8}],
        }
        self.files["coins/ethereum-classic.yaml"] = classic()
        self.files["pools/etc.yaml"] = {
            "coin": "ethereum-classic",
            "address": ETH_ADDRESS,
            "daemons": [{"url": "http://127.0.0.1:8545"}],
            "ports": [{"listen": "tcp:8008:interface=127.0.0.1", "diff": 4_000_000_000}],
        }
        self.settings["switching"] = {
            "scrypt": {
                "algorithm": "scrypt",
                "pools": ["ltc", "copy"],
                "ports": [
                    {"listen": "tcp:3400:interface=127.0.0.1", "diff": 16},
                    {
                        "listen": "tcp:3401:interface=127.0.0.1",
                        "diff": 64,
                        "vardiff": {
                            "min_diff": 16,
                            "max_diff": 1024,
                            "target_time": 15,
                            "retarget_time": 90,
                            "variance_percent": 30,
                        },
                        "proxy_protocol": ["10.0.0.1"],
                    },
                ],
            }
        }

    @property
    def switch(self) -> Any:
        return self.settings["switching"]["scrypt"]


class ValidSwitchingTests(SwitchingConfTestCase):
    def test_baseline(self) -> None:
        """A switch is read with its pools in order and its ports as a pool's ports."""
        config = self.load()
        (name,) = config.settings.switching
        switch = config.settings.switching[name]
        self.assertIsInstance(switch, SwitchConfig)
        self.assertEqual((name, switch.algorithm, switch.pools), ("scrypt", "scrypt", ("ltc", "copy")))
        self.assertEqual([port.diff for port in switch.ports], [16, 64])
        vardiff = switch.ports[1].vardiff
        assert vardiff is not None
        self.assertEqual(vardiff.max_diff, 1024)
        self.assertEqual([str(n) for n in switch.ports[1].proxy_protocol], ["10.0.0.1/32"])
        self.assertIsNone(switch.banning)
        self.assertIsNone(switch.connection_timeout)

    def test_no_section(self) -> None:
        """Without a switching section there is no switch."""
        del self.settings["switching"]
        self.assertEqual(self.load().settings.switching, {})

    def test_own_banning(self) -> None:
        """A switch may have its own bans and limits and connection timeout."""
        self.switch["banning"] = {"connections_per_ip": 3}
        self.switch["connection_timeout"] = 30
        switch = self.load().settings.switching["scrypt"]
        self.assertEqual(switch.banning, BanningConfig(connections_per_ip=3))
        self.assertEqual(switch.connection_timeout, 30)


class SwitchingErrorTests(SwitchingConfTestCase):
    def test_unknown_pool(self) -> None:
        """A pool with no pool file is named, with the switch's path."""
        self.switch["pools"] = ["ltc", "nowhere"]
        self.assertErrors(
            "config.yaml: switching.scrypt.pools[1]: unknown pool 'nowhere': no pools/nowhere.yaml"
        )

    def test_disabled_pool(self) -> None:
        """A pool whose file says enabled: false cannot be switched to."""
        self.files["pools/copy.yaml"]["enabled"] = False
        self.assertErrors(
            "config.yaml: switching.scrypt.pools[1]: pool copy is not enabled (pools/copy.yaml)"
        )

    def test_pool_of_another_algorithm(self) -> None:
        """A pool of another algorithm than the switch's is refused."""
        self.switch["pools"] = ["ltc", "other"]
        self.assertErrors(
            "config.yaml: switching.scrypt.pools[1]: pool other mines sha256d, the switch scrypt"
        )

    def test_ethereum_pool(self) -> None:
        """An Ethereum-family pool cannot be in a switch."""
        self.switch["pools"] = ["etc", "ltc"]
        self.assertErrors(
            "config.yaml: switching.scrypt.pools[0]: pool etc is an Ethereum-family pool: "
            "only Bitcoin-family pools switch"
        )

    def test_ethereum_algorithm(self) -> None:
        """An Ethereum-family algorithm is refused for the switch itself."""
        self.switch["algorithm"] = "etchash"
        self.assertErrors(
            "config.yaml: switching.scrypt.algorithm: etchash is an Ethereum-family algorithm: "
            "only Bitcoin-family pools switch"
        )

    def test_unknown_algorithm(self) -> None:
        """An algorithm nomp does not know is refused."""
        self.switch["algorithm"] = "x11"
        self.assertErrors(
            "config.yaml: switching.scrypt.algorithm: unknown algorithm 'x11' (known: scrypt, sha256d)"
        )

    def test_fewer_than_two_pools(self) -> None:
        """A switch of one pool is no switch."""
        self.switch["pools"] = ["ltc"]
        self.assertErrors("config.yaml: switching.scrypt.pools: must name at least two pools")

    def test_pool_twice(self) -> None:
        """A pool named twice is refused."""
        self.switch["pools"] = ["ltc", "copy", "ltc"]
        self.assertErrors("config.yaml: switching.scrypt.pools[2]: 'ltc' is named twice")

    def test_port_of_a_pool(self) -> None:
        """A switch's port may not be a pool's too."""
        self.switch["ports"][0]["listen"] = "tcp:3333:interface=127.0.0.1"
        self.assertErrors(
            "pools/ltc.yaml: ports[0].listen: port 3333 is also used by config.yaml: "
            "switching.scrypt.ports[0].listen"
        )

    def test_port_of_another_switch(self) -> None:
        """Two switches may not share a port, and a pool may be in both."""
        second = copy.deepcopy(self.switch)
        second["ports"] = [{"listen": "tcp:3400:interface=0.0.0.0", "diff": 1}]
        self.settings["switching"]["second"] = second
        self.assertErrors(
            "config.yaml: switching.second.ports[0].listen: port 3400 is also used by config.yaml: "
            "switching.scrypt.ports[0].listen"
        )

    def test_port_of_the_control_port(self) -> None:
        """A switch's port may not be the control port."""
        self.switch["ports"][0]["listen"] = "tcp:17117"
        self.assertErrors(
            "config.yaml: switching.scrypt.ports[0].listen: port 17117 is also used by "
            "config.yaml: control.listen"
        )

    def test_unknown_key(self) -> None:
        """A switch rejects keys it does not know, naming the ones it does."""
        self.switch["coins"] = ["ltc"]
        self.assertErrors(
            f"config.yaml: switching.scrypt.coins: unknown key (expected one of: {SWITCH_KEYS})"
        )

    def test_getwork_port(self) -> None:
        """A switch's ports are Stratum ports."""
        self.switch["ports"][0]["protocol"] = "getwork"
        self.assertErrors(
            "config.yaml: switching.scrypt.ports[0].protocol: getwork is for Ethereum-family pools"
        )

    def test_with_worker_processes(self) -> None:
        """With workers > 1 every worker serves the switch's ports."""
        self.settings["workers"] = 2
        self.assertEqual(self.load().settings.workers, 2)

    def test_every_error_at_once(self) -> None:
        """Every problem of every switch is reported, each with its path."""
        self.switch["pools"] = ["nowhere", "other", "etc"]
        self.switch["ports"][1]["diff"] = 0
        self.assertErrors(
            "config.yaml: switching.scrypt.ports[1].diff: must be > 0",
        )
        self.switch["ports"][1]["diff"] = 1
        self.assertErrors(
            "config.yaml: switching.scrypt.pools[0]: unknown pool 'nowhere': no pools/nowhere.yaml",
            "config.yaml: switching.scrypt.pools[1]: pool other mines sha256d, the switch scrypt",
            "config.yaml: switching.scrypt.pools[2]: pool etc is an Ethereum-family pool: "
            "only Bitcoin-family pools switch",
        )


class SwitchingReloadTests(SwitchingConfTestCase):
    def test_changed_section_needs_a_restart(self) -> None:
        """A reload reports a changed switching section as needing a restart and keeps it as it runs."""
        running = self.load()
        self.switch["pools"] = ["copy", "ltc"]
        read = load_config(self.write())
        plan = diff_configs(running, read)
        self.assertEqual(plan.settings_restart, ("switching: " + _shown_change(running, read),))
        self.assertEqual(plan.running.settings.switching, running.settings.switching)

    def test_pool_of_a_switch_is_not_removed(self) -> None:
        """A pool a running switch switches to stays until a restart, whatever the new files say."""
        running = self.load()
        del self.files["pools/copy.yaml"]
        del self.settings["switching"]
        os.remove(f"{self.conf}/pools/copy.yaml")
        read = load_config(self.write())
        plan = diff_configs(running, read)
        self.assertEqual(plan.removed, ())
        self.assertIn("copy", [pool.name for pool in plan.running.pools])
        self.assertIn("pools/copy.yaml: removed, but switch scrypt switches to it", plan.restart)


def _shown_change(running: Any, read: Any) -> str:
    return describe("switching", running.settings.switching, read.settings.switching).split(": ", 1)[1]
