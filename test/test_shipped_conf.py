"""The shipped demo: ``conf/`` and the settings scripts/demo.sh and
scripts/mature.sh run the demo's nodes with (scripts/demo-env.sh)."""

from __future__ import annotations

import subprocess
from decimal import Decimal
from urllib.parse import urlsplit

from twisted.trial.unittest import TestCase

from nomp.chain.address import decode_address
from nomp.config import PoolConfig, load_config
from nomp.config.load import listen_address
from test.test_config_paths import REPOSITORY, SHIPPED_CONF

DEMO_ENV = REPOSITORY / "scripts" / "demo-env.sh"
NAMES = [
    "DEMO_RPC",
    "DEMO_PEER_RPC",
    "DEMO_REDIS_PORT",
    "DEMO_STRATUM_URL",
    "DEMO_WEB_URL",
    "DEMO_CONTROL",
    "DEMO_MINER_ADDRESS",
    "DEMO_OUTSIDE_WALLET",
]


def demo_env() -> dict[str, list[str]]:
    """Each variable of demo-env.sh, as bash has it once the file is sourced: its words."""
    script = f'source "{DEMO_ENV}"\n' + "".join(
        f'printf "{name}"; printf " %s" "${{{name}[@]}}"; echo\n' for name in NAMES
    )
    output = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    words = [line.split(" ") for line in output.splitlines()]
    return {line[0]: line[1:] for line in words}


def options(words: list[str]) -> dict[str, str]:
    """``-name=value`` command-line options as a mapping."""
    return dict(word.lstrip("-").split("=", 1) for word in words)


class ShippedPoolTests(TestCase):
    """The shipped pool runs payments with settings that suit regtest."""

    def setUp(self) -> None:
        self.pool: PoolConfig = load_config(SHIPPED_CONF).pools[0]

    def test_payments_enabled(self) -> None:
        """Payments are on, every 20 s, with a small minimum, from the first daemon's wallet."""
        payments = self.pool.payments
        self.assertTrue(payments.enabled)
        self.assertEqual(payments.interval, 20.0)
        self.assertEqual(payments.minimum_payment, Decimal("0.001"))
        self.assertEqual((payments.scheme, payments.fee_percent), ("prop", Decimal("1.0")))
        self.assertIsNone(payments.daemon)
        self.assertEqual(self.pool.coin.coinbase_maturity, 100)  # what scripts/mature.sh mines by default

    def test_parsed_values(self) -> None:
        """The coin's algorithm and the version mask are read into their typed values."""
        self.assertEqual(self.pool.coin.algorithm.name, "scrypt")
        self.assertEqual(self.pool.version_mask, 0x1FFFE000)


class DemoScriptsTests(TestCase):
    """The demo scripts' fixed settings are those of conf/."""

    def setUp(self) -> None:
        self.config = load_config(SHIPPED_CONF)
        self.pool = self.config.pools[0]
        self.env = demo_env()

    def test_node_is_the_pools_daemon(self) -> None:
        """The node the scripts start and mine on is the pool's daemon, with its credentials."""
        (daemon,) = self.pool.daemons
        url = urlsplit(daemon.url)
        rpc = options(self.env["DEMO_RPC"])
        self.assertEqual((url.hostname, url.port), ("127.0.0.1", int(rpc["rpcport"])))
        self.assertEqual((rpc["rpcuser"], rpc["rpcpassword"]), (daemon.user, daemon.password))
        peer = options(self.env["DEMO_PEER_RPC"])
        self.assertNotEqual(peer["rpcport"], rpc["rpcport"])
        self.assertEqual((peer["rpcuser"], peer["rpcpassword"]), (daemon.user, daemon.password))

    def test_ports_in_the_banner(self) -> None:
        """Redis, the Stratum URL, the web site and the control port are those conf/ listens on."""
        settings = self.config.settings
        self.assertEqual(self.env["DEMO_REDIS_PORT"], [str(settings.redis.port)])
        interface, port = listen_address(self.pool.ports[0].listen) or ("", 0)
        self.assertEqual(self.env["DEMO_STRATUM_URL"], [f"stratum+tcp://{interface}:{port}"])
        self.assertTrue(settings.web.enabled)
        interface, port = listen_address(settings.web.listen) or ("", 0)
        self.assertEqual(self.env["DEMO_WEB_URL"], [f"http://{interface}:{port}"])
        interface, port = listen_address(settings.control.listen) or ("", 0)
        self.assertEqual(self.env["DEMO_CONTROL"], [f"{interface}:{port}"])

    def test_miner_is_not_the_pool(self) -> None:
        """The demo miner's address is a regtest address of its own: its payouts are not the pool's."""
        (miner,) = self.env["DEMO_MINER_ADDRESS"]
        decode_address(miner, self.pool.coin.network)  # raises for another network's address
        self.assertNotEqual(miner, self.pool.address)
        self.assertNotIn(miner, [r.address for r in self.pool.reward_recipients])
        self.assertNotEqual(self.env["DEMO_OUTSIDE_WALLET"], ["pool"])
