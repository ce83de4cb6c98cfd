"""What a pool process imports at start-up: not the Ethereum signing libraries
(eth-account, eth-keys, coincurve; about 0.75 s of CPU) unless it builds a payout key.

Each check runs in a fresh interpreter, as this one has long imported them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import TestCase

from test.poolconf import write_conf

SIGNING_LIBRARIES = ("eth_account", "eth_keys", "coincurve")

# Prints, as JSON, which of the signing libraries sys.modules holds after ``body`` runs.
_PROBE = """
import json, sys
{body}
print(json.dumps(sorted(
    name for name in sys.modules if name.partition(".")[0] in {libraries!r}
)))
"""


def loaded_after(body: str) -> list[str]:
    """The signing libraries' modules loaded in a fresh interpreter after ``body``."""
    script = _PROBE.format(body=body, libraries=SIGNING_LIBRARIES)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    if done.returncode != 0:
        raise AssertionError(f"the probe failed:\n{done.stderr}")
    result: list[str] = json.loads(done.stdout.splitlines()[-1])
    return result


class ImportCostTests(TestCase):
    def test_tap_leaves_them_unimported(self) -> None:
        """nomp.tap and the payment modules it imports load none of them."""
        body = (
            "import nomp.tap, nomp.payments.cli, nomp.payments.ethpayer, nomp.payments.ethpayledger\n"
            "import nomp.payments.ethsigner"
        )
        self.assertEqual(loaded_after(body), [])

    def test_bitcoin_pool_leaves_them_unimported(self) -> None:
        """Building the whole service tree of a Bitcoin-family pool (payments included)
        loads none of them either."""
        # Absolute: the interpreter runs from the checkout, not trial's folder.
        conf = Path(self.mktemp()).absolute()
        folder, _ = write_conf(conf, "http://127.0.0.1:1", "user", "password", "mwAddress", redis_port=1)
        body = (
            "from twisted.internet import reactor\n"
            "from nomp.config import load_config\n"
            "from nomp.tap import build_service\n"
            f"build_service(load_config({str(folder)!r}), reactor)"
        )
        self.assertEqual(loaded_after(body), [])

    def test_a_payout_key_imports_them(self) -> None:
        """They are imported once a key is built, and sign then (the signer's own tests
        check what they sign)."""
        body = (
            "from nomp.payments.ethsigner import LegacyPricing, PayoutKey, sign_transfer\n"
            "key = PayoutKey(bytes.fromhex('46' * 32))\n"
            "sign_transfer(key, 1, 0, '0x' + '35' * 20, 1, LegacyPricing(1))"
        )
        loaded = {name.partition(".")[0] for name in loaded_after(body)}
        self.assertEqual(loaded, set(SIGNING_LIBRARIES))

    def test_patched_before_the_first_key(self) -> None:
        """ethsigner.coincurve, read or patched before any key is built (the signer's tests
        sign without coincurve so), imports them, and is put back after the patch."""
        body = (
            "from unittest import mock\n"
            "from nomp.payments import ethsigner\n"
            "with mock.patch.object(ethsigner, 'coincurve', None):\n"
            "    assert ethsigner.PayoutKey(bytes(31) + b'1')._signer is None\n"
            "assert ethsigner.PayoutKey(bytes(31) + b'1')._signer is not None"
        )
        loaded = {name.partition(".")[0] for name in loaded_after(body)}
        self.assertEqual(loaded, set(SIGNING_LIBRARIES))
