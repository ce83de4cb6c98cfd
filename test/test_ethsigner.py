"""The payout signer: which key files it trusts, that the key never shows,
known-answer signatures (EIP-155's own example), EIP-1559 transactions read
back by eth-account and rlp, the gas ceiling and who pays the fee."""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import random
from dataclasses import FrozenInstanceError
from decimal import Decimal
from typing import Any
from unittest import mock

import coincurve
import rlp  # type: ignore[import-untyped]
from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_keys.constants import SECPK1_N
from eth_keys.datatypes import Signature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from twisted.trial.unittest import SynchronousTestCase

from nomp.payments import ethsigner, ethtx
from nomp.payments.ethsigner import (
    TRANSFER_GAS,
    DynamicPricing,
    FeeNotCovered,
    GasPolicy,
    GasPriceError,
    GasPriceTooHigh,
    KeyFileError,
    LegacyPricing,
    PayoutKey,
    SignedTransfer,
    SigningError,
    checked_address,
    deduct_fee,
    load_key,
    parse_key,
    sign_transfer,
)

GWEI = 10**9

# EIP-155's example (the EIP's "Example" section): the transaction, its
# signing data and hash, the v, r, s and the signed transaction it gives.
EIP155_KEY = bytes.fromhex("46" * 32)
EIP155_TO = "0x" + "35" * 20
EIP155_SIGNING_DATA = bytes.fromhex(
    "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080"
)
EIP155_SIGNING_HASH = bytes.fromhex("daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53")
EIP155_V = 37
EIP155_R = 18515461264373351373200002665853028612451056578545711640558177340181847433846
EIP155_S = 46948507304638947509940763649030358759909902576025900602547168820602576006531
EIP155_SIGNED = bytes.fromhex(
    "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a7640000"
    "8025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f"
    "761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
)
# The address of the key 0x4646...46.
EIP155_SENDER = "0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F"

# A key whose hex and bytes are easy to look for in any text.
SECRET = keccak(b"nomp payout signer test key")
SECRET_HEX = SECRET.hex()
MINER = to_checksum_address("0x" + keccak(b"a miner")[:20].hex())


def signing_with(library: str) -> contextlib.AbstractContextManager[object]:
    """The keys made within sign with ``library``: "coincurve" (nomp.payments.ethtx) or
    "eth-account" (as where coincurve is not installed)."""
    if library == "eth-account":
        return mock.patch.object(ethsigner, "coincurve", None)
    assert library == "coincurve"
    return contextlib.nullcontext()


def anything(value: object) -> Any:
    """``value`` past the type checker: the tests hand in what callers must not."""
    return value


def secret_forms() -> list[str]:
    """Every way the test key could show up in a text."""
    return [SECRET_HEX, SECRET_HEX.upper(), repr(SECRET)[2:-1], str(int.from_bytes(SECRET, "big"))]


class KeyFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.mkdir(self.dir)

    def key_file(self, text: str | bytes, mode: int = 0o600, name: str = "payout.key") -> str:
        path = os.path.join(self.dir, name)
        if os.path.lexists(path):
            os.unlink(path)  # the last one's mode may forbid writing it again
        with open(path, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        os.chmod(path, mode)
        return path

    def refused(self, path: str, *words: str) -> KeyFileError:
        e: KeyFileError = self.assertRaises(KeyFileError, load_key, path)
        for word in words:
            self.assertIn(word, str(e))
        for form in secret_forms():
            self.assertNotIn(form, str(e))
            self.assertNotIn(form, repr(e))
        return e

    def test_mode_0600(self) -> None:
        key = load_key(self.key_file(SECRET_HEX))
        self.assertEqual(key.address, Account.from_key(SECRET).address)

    def test_mode_0400(self) -> None:
        key = load_key(self.key_file(SECRET_HEX, 0o400))
        self.assertEqual(key.address, Account.from_key(SECRET).address)

    def test_prefix_and_whitespace(self) -> None:
        """0x or 0X, upper or lower case, and the newline an editor adds."""
        for text in ("0x" + SECRET_HEX + "\n", "  0X" + SECRET_HEX.upper() + " \r\n", "\t" + SECRET_HEX):
            with self.subTest(text=text):
                self.assertEqual(load_key(self.key_file(text)).address, parse_key(SECRET_HEX).address)

    def test_eip55_address(self) -> None:
        key = load_key(self.key_file("0x" + EIP155_KEY.hex()))
        self.assertEqual(key.address, EIP155_SENDER)

    def test_mode_0644_refused(self) -> None:
        self.refused(self.key_file(SECRET_HEX, 0o644), "0644", "group or others", "0600")

    def test_mode_0640_refused(self) -> None:
        self.refused(self.key_file(SECRET_HEX, 0o640), "0640", "group or others")

    def test_other_bits_refused(self) -> None:
        """Writable or executable by others is as bad; the owner's own
        exec or write-only bits are not a key file's modes either."""
        for mode in (0o602, 0o660, 0o601, 0o700, 0o200, 0o000, 0o4600):
            with self.subTest(mode=oct(mode)):
                self.refused(self.key_file(SECRET_HEX, mode), f"{mode:04o}")

    def test_symlink_to_world_readable_refused(self) -> None:
        target = self.key_file(SECRET_HEX, 0o644, "real.key")
        link = os.path.join(self.dir, "link.key")
        os.symlink(os.path.basename(target), link)
        self.refused(link, "0644")

    def test_symlink_to_private_file(self) -> None:
        """What the link points to is what is checked (a secret mounted
        through links, as container runtimes do)."""
        target = self.key_file(SECRET_HEX, 0o600, "real.key")
        link = os.path.join(self.dir, "link.key")
        os.symlink(os.path.basename(target), link)
        self.assertEqual(load_key(link).address, Account.from_key(SECRET).address)

    def test_dangling_symlink_refused(self) -> None:
        link = os.path.join(self.dir, "link.key")
        os.symlink(os.path.join(self.dir, "gone.key"), link)
        self.refused(link, link)

    def test_missing_refused(self) -> None:
        path = os.path.join(self.dir, "missing.key")
        self.refused(path, path, "No such file")

    def test_directory_refused(self) -> None:
        os.chmod(self.dir, 0o700)
        self.refused(self.dir, "not a regular file")

    def test_fifo_refused_without_blocking(self) -> None:
        path = os.path.join(self.dir, "fifo.key")
        os.mkfifo(path, 0o600)
        self.refused(path, "not a regular file")

    def test_other_owner_refused(self) -> None:
        if os.geteuid() != 0:
            raise self.skipTest("only root can give a file to another user")
        path = self.key_file(SECRET_HEX)
        os.chown(path, 65534, -1)
        self.refused(path, "owned by uid 65534", "uid 0")

    def test_unreadable_refused(self) -> None:
        path = self.key_file(SECRET_HEX, 0o200)
        # Root reads any file, and then the mode refuses it.
        self.refused(path, "0200" if os.geteuid() == 0 else "Permission denied")

    def test_bad_hex_refused(self) -> None:
        text = "zz" + SECRET_HEX[2:]
        e = self.refused(self.key_file(text), "not hexadecimal")
        self.assertNotIn(text, str(e))

    def test_not_text_refused(self) -> None:
        self.refused(self.key_file(b"\xff" * 64), "not hexadecimal")

    def test_wrong_length_refused(self) -> None:
        for text in (SECRET_HEX[:-1], SECRET_HEX + "0", SECRET_HEX + SECRET_HEX, "", "0x"):
            with self.subTest(length=len(text)):
                e = self.refused(self.key_file(text), "64 hex digits")
                if text:
                    self.assertNotIn(text, str(e))

    def test_two_keys_in_one_file_refused(self) -> None:
        self.refused(self.key_file(SECRET_HEX + "\n" + SECRET_HEX + "\n"), "64 hex digits")

    def test_huge_file_refused(self) -> None:
        self.refused(self.key_file("0" * 100_000), "too long")

    def test_zero_key_refused(self) -> None:
        self.refused(self.key_file("00" * 32), "zero")

    def test_key_at_or_above_order_refused(self) -> None:
        for number in (SECPK1_N, SECPK1_N + 1, 2**256 - 1):
            with self.subTest(number=hex(number)):
                self.refused(self.key_file(f"{number:064x}"), "curve order")

    def test_key_just_below_order(self) -> None:
        key = load_key(self.key_file(f"{SECPK1_N - 1:064x}"))
        self.assertEqual(key.address, Account.from_key((SECPK1_N - 1).to_bytes(32, "big")).address)
        self.assertEqual(
            load_key(self.key_file("00" * 31 + "01")).address,
            Account.from_key((1).to_bytes(32, "big")).address,
        )


class SecrecyTests(SynchronousTestCase):
    def test_repr_and_str(self) -> None:
        key = PayoutKey(SECRET)
        texts = [repr(key), str(key), f"{key}", f"{key!r}", repr([key]), repr({"key": key})]
        for text in texts:
            self.assertIn(key.address, text)
            for form in secret_forms():
                self.assertNotIn(form, text)

    def test_not_picklable(self) -> None:
        key = PayoutKey(SECRET)
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            self.assertRaises(TypeError, pickle.dumps, key, protocol)
        self.assertRaises(TypeError, pickle.dumps, {"nested": [key]})
        self.assertRaises(TypeError, copy.copy, key)
        self.assertRaises(TypeError, copy.deepcopy, key)

    def test_no_instance_dict(self) -> None:
        """Nothing that dumps an object's __dict__ (vars, some log formatters) finds the key."""
        key = PayoutKey(SECRET)
        self.assertRaises(TypeError, vars, key)

    def test_signing_failure_hides_library_message(self) -> None:
        """A library error that quoted the key does not reach the payer's log: coincurve's,
        or eth-account's where coincurve is missing."""

        def leaky(*args: object, **kwargs: object) -> None:
            raise ValueError(f"bad key {SECRET_HEX}")

        for library, failing in (
            ("coincurve", mock.patch.object(coincurve.PrivateKey, "sign_recoverable", leaky)),
            ("eth-account", mock.patch.object(Account, "sign_transaction", leaky)),
        ):
            with self.subTest(library), signing_with(library), failing:
                key = PayoutKey(SECRET)
                e = self.assertRaises(SigningError, sign_transfer, key, 1, 0, MINER, 1, LegacyPricing(GWEI))
            self.assertIn("ValueError", str(e))
            self.assertNotIn(SECRET_HEX, str(e))
            self.assertIsNone(e.__cause__)
            self.assertTrue(e.__suppress_context__)

    def test_signer_checks_the_sender(self) -> None:
        """A signature that recovers to another address is not handed out: coincurve's
        signature recovered to another public key, or eth-account's transaction to another
        sender where coincurve is missing."""
        other = coincurve.PrivateKey(EIP155_KEY).public_key
        for library, recovering in (
            (
                "coincurve",
                mock.patch.object(coincurve.PublicKey, "from_signature_and_message", lambda *a, **k: other),
            ),
            ("eth-account", mock.patch.object(Account, "recover_transaction", lambda *a: EIP155_SENDER)),
        ):
            with self.subTest(library), signing_with(library), recovering:
                key = PayoutKey(SECRET)
                e = self.assertRaises(SigningError, sign_transfer, key, 1, 0, MINER, 1, LegacyPricing(GWEI))
            self.assertIn(EIP155_SENDER, str(e))

    def test_no_key_in_the_signer(self) -> None:
        """libsecp256k1's copy of the key, behind the PayoutKey, does not show it either."""
        signer = PayoutKey(SECRET)._signer
        assert signer is not None
        for text in (repr(signer), str(signer)):
            for form in secret_forms():
                self.assertNotIn(form, text)

    def test_bad_keys_from_bytes(self) -> None:
        for secret in (b"", SECRET[:31], SECRET + b"\0", bytes(32), SECPK1_N.to_bytes(32, "big")):
            with self.subTest(length=len(secret)):
                e = self.assertRaises(KeyFileError, PayoutKey, secret)
                self.assertNotIn(secret.hex() or "-", str(e))
        self.assertRaises(KeyFileError, PayoutKey, anything(SECRET_HEX))


class Eip155Tests(SynchronousTestCase):
    def sign(self, chain_id: int = 1) -> SignedTransfer:
        return sign_transfer(
            PayoutKey(EIP155_KEY), chain_id, 9, EIP155_TO, 10**18, LegacyPricing(20 * GWEI, 21000)
        )

    def test_signing_data_is_the_eips(self) -> None:
        """The EIP's signing data and hash, from its fields: what the vector signs."""
        fields = [9, 20 * GWEI, 21000, bytes.fromhex("35" * 20), 10**18, b"", 1, 0, 0]
        self.assertEqual(rlp.encode(fields), EIP155_SIGNING_DATA)
        self.assertEqual(keccak(EIP155_SIGNING_DATA), EIP155_SIGNING_HASH)

    def test_eips_signature_recovers_the_sender(self) -> None:
        """The EIP's v, r, s sign its hash with the key 0x4646...46."""
        signature = Signature(vrs=(EIP155_V - 35 - 2 * 1, EIP155_R, EIP155_S))
        public = signature.recover_public_key_from_msg_hash(EIP155_SIGNING_HASH)
        self.assertEqual(public.to_checksum_address(), EIP155_SENDER)
        self.assertEqual(Account.recover_transaction(EIP155_SIGNED), EIP155_SENDER)

    def test_known_answer(self) -> None:
        signed = self.sign()
        self.assertEqual(signed.raw, EIP155_SIGNED)
        self.assertEqual(signed.raw_hex, "0x" + EIP155_SIGNED.hex())
        self.assertEqual(signed.tx_hash, "0x" + keccak(EIP155_SIGNED).hex())
        self.assertEqual(signed.nonce, 9)
        self.assertEqual(signed.to, EIP155_TO)
        self.assertEqual(signed.value, 10**18)
        self.assertEqual(signed.max_cost, 21000 * 20 * GWEI)
        self.assertEqual(signed.max_debit, 10**18 + 21000 * 20 * GWEI)

    def test_decoded_fields(self) -> None:
        fields = rlp.decode(self.sign().raw)
        nonce, gas_price, gas, to, value, data, v, r, s = fields
        self.assertEqual(
            [rlp.sedes.big_endian_int.deserialize(x) for x in (nonce, gas_price, gas, value, v, r, s)],
            [9, 20 * GWEI, 21000, 10**18, EIP155_V, EIP155_R, EIP155_S],
        )
        self.assertEqual(to, bytes.fromhex("35" * 20))
        self.assertEqual(data, b"")

    def test_chain_id_matters(self) -> None:
        """The same transaction on Ethereum Classic (chain 61) is another
        transaction: another v, signature and hash, which chain 1 refuses."""
        mainnet, classic = self.sign(1), self.sign(61)
        self.assertNotEqual(mainnet.raw, classic.raw)
        self.assertNotEqual(mainnet.tx_hash, classic.tx_hash)
        v = rlp.sedes.big_endian_int.deserialize(rlp.decode(classic.raw)[6])
        self.assertIn(v, (61 * 2 + 35, 61 * 2 + 36))
        self.assertEqual(Account.recover_transaction(classic.raw), EIP155_SENDER)

    def test_deterministic(self) -> None:
        """RFC 6979 nonces: signing again gives the same bytes and hash."""
        self.assertEqual(self.sign(), self.sign())


class Eip1559Tests(SynchronousTestCase):
    def setUp(self) -> None:
        self.key = PayoutKey(SECRET)
        self.pricing = DynamicPricing(62 * GWEI, 2 * GWEI)

    def sign(self, chain_id: int = 1, nonce: int = 7) -> SignedTransfer:
        return sign_transfer(self.key, chain_id, nonce, MINER.lower(), 123_456_789 * GWEI, self.pricing)

    def test_recovers_the_sender(self) -> None:
        signed = self.sign()
        self.assertEqual(Account.recover_transaction(signed.raw), self.key.address)
        self.assertEqual(signed.tx_hash, "0x" + keccak(signed.raw).hex())
        self.assertEqual(signed.max_cost, 21000 * 62 * GWEI)

    def test_eth_account_decodes_the_fields(self) -> None:
        signed = self.sign()
        decoded = TypedTransaction.from_bytes(HexBytes(signed.raw))
        self.assertEqual(decoded.transaction_type, 2)
        fields = decoded.as_dict()
        self.assertEqual(fields["chainId"], 1)
        self.assertEqual(fields["nonce"], 7)
        self.assertEqual(fields["maxFeePerGas"], 62 * GWEI)
        self.assertEqual(fields["maxPriorityFeePerGas"], 2 * GWEI)
        self.assertEqual(fields["gas"], TRANSFER_GAS)
        self.assertEqual(to_checksum_address(fields["to"]), MINER)
        self.assertEqual(fields["value"], 123_456_789 * GWEI)
        self.assertEqual(bytes(fields["data"]), b"")
        self.assertEqual(list(fields["accessList"]), [])
        self.assertEqual(decoded.hash(), keccak(b"\x02" + rlp.encode(rlp.decode(signed.raw[1:])[:9])))

    def test_rlp_decodes_the_envelope(self) -> None:
        """EIP-1559's payload: 0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas,
        max_fee_per_gas, gas_limit, destination, amount, data, access_list,
        signature_y_parity, signature_r, signature_s])."""
        signed = self.sign()
        self.assertEqual(signed.raw[0], 2)
        fields = rlp.decode(signed.raw[1:])
        self.assertEqual(len(fields), 12)
        number = rlp.sedes.big_endian_int.deserialize
        self.assertEqual(
            [number(fields[i]) for i in (0, 1, 2, 3, 4, 6)],
            [1, 7, 2 * GWEI, 62 * GWEI, 21000, 123_456_789 * GWEI],
        )
        self.assertEqual(fields[5], bytes.fromhex(MINER[2:]))
        self.assertEqual(fields[7], b"")
        self.assertEqual(fields[8], [])
        self.assertIn(number(fields[9]), (0, 1))
        self.assertEqual(signed.to, MINER)

    def test_chain_id_matters(self) -> None:
        mainnet, other = self.sign(1), self.sign(5)
        self.assertNotEqual(mainnet.tx_hash, other.tx_hash)
        self.assertEqual(rlp.sedes.big_endian_int.deserialize(rlp.decode(other.raw[1:])[0]), 5)
        self.assertEqual(Account.recover_transaction(other.raw), self.key.address)

    def test_nonce_matters(self) -> None:
        self.assertNotEqual(self.sign(nonce=7).tx_hash, self.sign(nonce=8).tx_hash)


class TransferInputTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.key = PayoutKey(SECRET)
        self.pricing = LegacyPricing(GWEI)

    def sign(self, **changes: object) -> SignedTransfer:
        args: dict[str, Any] = {"chain_id": 1, "nonce": 0, "to": MINER, "value_wei": 10**15}
        args.update(changes)
        return sign_transfer(self.key, pricing=self.pricing, **args)

    def test_integers_only(self) -> None:
        for name in ("chain_id", "nonce", "value_wei"):
            for bad in (1.0, Decimal(1), True, "1", None):
                with self.subTest(name=name, bad=bad):
                    self.assertRaises(TypeError, self.sign, **{name: bad})

    def test_ranges(self) -> None:
        for name, bad in (
            ("value_wei", 0),
            ("value_wei", -1),
            ("value_wei", 2**256),
            ("nonce", -1),
            ("nonce", 2**64 - 1),
            ("chain_id", 0),
            ("chain_id", 2**64),
        ):
            with self.subTest(name=name, bad=bad):
                self.assertRaises(ValueError, self.sign, **{name: bad})

    def test_address_checksum(self) -> None:
        self.assertEqual(self.sign(to=MINER.lower()).to, MINER)
        self.assertEqual(self.sign(to="0x" + MINER[2:].upper()).to, MINER)
        self.assertEqual(self.sign(to=MINER).to, MINER)
        letter = next(i for i, c in enumerate(MINER) if i > 1 and c.isalpha())
        typo = MINER[:letter] + MINER[letter].swapcase() + MINER[letter + 1 :]
        e = self.assertRaises(ValueError, self.sign, to=typo)
        self.assertIn("EIP-55", str(e))

    def test_bad_addresses(self) -> None:
        for bad in (
            MINER[:-1],
            MINER + "0",
            MINER[2:],
            "0X" + MINER[2:],
            " " + MINER,
            MINER + "\n",
            "0x" + "g" * 40,
        ):
            with self.subTest(bad=bad):
                self.assertRaises(ValueError, self.sign, to=bad)
        self.assertRaises(ValueError, self.sign, to="0x" + "0" * 40)
        self.assertRaises(TypeError, self.sign, to=bytes.fromhex(MINER[2:]))
        self.assertRaises(TypeError, checked_address, None)

    def test_bad_key_and_pricing(self) -> None:
        self.assertRaises(TypeError, sign_transfer, anything(SECRET), 1, 0, MINER, 1, self.pricing)
        self.assertRaises(TypeError, sign_transfer, self.key, 1, 0, MINER, 1, anything(GWEI))


class GasPolicyTests(SynchronousTestCase):
    def test_legacy_pays_the_node_price(self) -> None:
        policy = GasPolicy("legacy", max_fee_per_gas=50 * GWEI, priority_fee=0)
        self.assertEqual(policy.price(20 * GWEI, None), LegacyPricing(20 * GWEI, TRANSFER_GAS))
        self.assertEqual(policy.price(50 * GWEI, None), LegacyPricing(50 * GWEI))
        self.assertEqual(policy.price(0, None), LegacyPricing(0))
        self.assertEqual(policy.price(20 * GWEI, 15 * GWEI), LegacyPricing(20 * GWEI))

    def test_legacy_ceiling(self) -> None:
        policy = GasPolicy("legacy", max_fee_per_gas=50 * GWEI, priority_fee=0)
        e = self.assertRaises(GasPriceTooHigh, policy.price, 50 * GWEI + 1, None)
        self.assertEqual((e.price, e.ceiling), (50 * GWEI + 1, 50 * GWEI))
        self.assertIn(str(50 * GWEI + 1), str(e))
        self.assertIn(str(50 * GWEI), str(e))

    def test_legacy_below_base_fee_refused(self) -> None:
        policy = GasPolicy("legacy", max_fee_per_gas=50 * GWEI, priority_fee=0)
        e = self.assertRaises(GasPriceError, policy.price, 10 * GWEI, 11 * GWEI)
        self.assertNotIsInstance(e, GasPriceTooHigh)

    def test_dynamic_offer(self) -> None:
        policy = GasPolicy("dynamic", max_fee_per_gas=100 * GWEI, priority_fee=2 * GWEI)
        self.assertEqual(policy.price(0, 30 * GWEI), DynamicPricing(62 * GWEI, 2 * GWEI, TRANSFER_GAS))
        self.assertEqual(policy.price(999 * GWEI, 30 * GWEI), DynamicPricing(62 * GWEI, 2 * GWEI))
        self.assertEqual(policy.price(0, 0), DynamicPricing(2 * GWEI, 2 * GWEI))

    def test_dynamic_headroom_capped_at_ceiling(self) -> None:
        """Headroom above base fee plus tip is trimmed to the ceiling; the
        offer still covers what the chain asks now."""
        policy = GasPolicy("dynamic", max_fee_per_gas=100 * GWEI, priority_fee=2 * GWEI)
        self.assertEqual(policy.price(0, 60 * GWEI), DynamicPricing(100 * GWEI, 2 * GWEI))
        self.assertEqual(policy.price(0, 98 * GWEI), DynamicPricing(100 * GWEI, 2 * GWEI))

    def test_dynamic_ceiling(self) -> None:
        policy = GasPolicy("dynamic", max_fee_per_gas=100 * GWEI, priority_fee=2 * GWEI)
        e = self.assertRaises(GasPriceTooHigh, policy.price, 0, 98 * GWEI + 1)
        self.assertEqual((e.price, e.ceiling), (100 * GWEI + 1, 100 * GWEI))

    def test_dynamic_needs_a_base_fee(self) -> None:
        policy = GasPolicy("dynamic", max_fee_per_gas=100 * GWEI, priority_fee=2 * GWEI)
        e = self.assertRaises(GasPriceError, policy.price, 20 * GWEI, None)
        self.assertIn("legacy", str(e))

    def test_fee(self) -> None:
        self.assertEqual(GasPolicy.fee(LegacyPricing(20 * GWEI)), 21000 * 20 * GWEI)
        self.assertEqual(GasPolicy.fee(DynamicPricing(62 * GWEI, 2 * GWEI)), 21000 * 62 * GWEI)
        self.assertEqual(GasPolicy.fee(DynamicPricing(62 * GWEI, 2 * GWEI, 30_000)), 30_000 * 62 * GWEI)
        policy = GasPolicy("legacy", max_fee_per_gas=50 * GWEI, priority_fee=0, gas_limit=25_000)
        self.assertEqual(policy.fee(policy.price(20 * GWEI, None)), 25_000 * 20 * GWEI)

    def test_policy_checked(self) -> None:
        self.assertRaises(ValueError, GasPolicy, anything("eip1559"), 100 * GWEI, 0)
        self.assertRaises(ValueError, GasPolicy, "dynamic", 100 * GWEI, 100 * GWEI + 1)
        self.assertRaises(ValueError, GasPolicy, "dynamic", 0, 0)
        self.assertRaises(ValueError, GasPolicy, "legacy", 100 * GWEI, 0, 20_999)
        self.assertRaises(TypeError, GasPolicy, "legacy", anything(100e9), 0)
        self.assertRaises(TypeError, GasPolicy, "legacy", anything(Decimal(100 * GWEI)), 0)
        policy = GasPolicy("legacy", 100 * GWEI, 0)
        self.assertRaises(TypeError, policy.price, anything(20e9), None)
        self.assertRaises(TypeError, policy.price, 20 * GWEI, anything(1.5))
        self.assertRaises(ValueError, policy.price, -1, None)
        self.assertRaises(FrozenInstanceError, setattr, policy, "max_fee_per_gas", 10**30)

    def test_pricing_checked(self) -> None:
        self.assertRaises(ValueError, DynamicPricing, 1 * GWEI, 2 * GWEI)
        self.assertRaises(ValueError, LegacyPricing, GWEI, 20_000)
        self.assertRaises(TypeError, LegacyPricing, anything(1.0))


class DeductFeeTests(SynchronousTestCase):
    def test_pool_pays(self) -> None:
        self.assertEqual(deduct_fee(10**18, 21000 * 20 * GWEI, "pool"), 10**18)
        self.assertEqual(deduct_fee(1, 21000 * 20 * GWEI, "pool"), 1)

    def test_miner_pays(self) -> None:
        fee = 21000 * 20 * GWEI
        self.assertEqual(deduct_fee(10**18, fee, "miner"), 10**18 - fee)
        self.assertEqual(deduct_fee(fee + 1, fee, "miner"), 1)
        self.assertEqual(deduct_fee(5, 0, "miner"), 5)

    def test_amount_must_cover_the_fee(self) -> None:
        fee = 21000 * 20 * GWEI
        for amount in (fee, fee - 1, 1):
            with self.subTest(amount=amount):
                e = self.assertRaises(FeeNotCovered, deduct_fee, amount, fee, "miner")
                self.assertEqual((e.amount, e.fee), (amount, fee))

    def test_checked(self) -> None:
        self.assertRaises(ValueError, deduct_fee, 0, 0, "pool")
        self.assertRaises(ValueError, deduct_fee, 10, -1, "miner")
        self.assertRaises(ValueError, deduct_fee, 10, 1, anything("nobody"))
        self.assertRaises(TypeError, deduct_fee, anything(10.0), 1, "miner")
        self.assertRaises(TypeError, deduct_fee, 10, anything(Decimal(1)), "miner")

    def test_with_a_signed_transfer(self) -> None:
        """The payer's sum: what the miner receives plus the fee ceiling is the debit."""
        pricing = GasPolicy("dynamic", 100 * GWEI, 2 * GWEI).price(0, 30 * GWEI)
        amount = 10**17
        value = deduct_fee(amount, GasPolicy.fee(pricing), "miner")
        signed = sign_transfer(PayoutKey(SECRET), 1, 3, MINER, value, pricing)
        self.assertEqual(signed.max_debit, amount)


# The curve order's half: a signature's s must not be above it (EIP-2).
HALF_ORDER = SECPK1_N // 2


def random_quantity(rng: random.Random, bits: int) -> int:
    """Small, word-sized or the field's full width, and RLP's edges (0, 127, 128)."""
    top = 1 << bits
    choices = [0, 1, 127, 128, 255, 256, rng.randrange(256), rng.randrange(1 << 64), rng.randrange(top)]
    return rng.choice(choices) % top


class FastSignerTests(SynchronousTestCase):
    """nomp.payments.ethtx against eth-account, the reference: the same bytes and hash for
    every random transfer of both kinds."""

    def test_rlp_as_the_rlp_package(self) -> None:
        """Byte strings of every length class (one byte below 0x80, short, long, long past
        255 bytes), and lists of them, short and long."""
        rng = random.Random(1)
        strings = [b"", b"\x00", b"\x7f", b"\x80", b"\xff"]
        strings += [rng.randbytes(n) for n in (2, 54, 55, 56, 57, 255, 256, 1024, 70_000)]
        for item in strings:
            self.assertEqual(ethtx.rlp_bytes(item), rlp.encode(item), len(item))
        for count in range(0, 40):
            items = [rng.choice(strings[:12]) for _ in range(count)]
            encoded = b"".join(ethtx.rlp_bytes(i) for i in items)
            self.assertEqual(ethtx.rlp_list(encoded), rlp.encode(items), count)
        self.assertEqual(ethtx.rlp_list(b""), rlp.encode([]))
        for value in (0, 1, 127, 128, 255, 256, 2**64 - 1, 2**256 - 1):
            self.assertEqual(ethtx.rlp_bytes(ethtx.quantity(value)), rlp.encode(value), value)

    def test_transfers_as_eth_account(self) -> None:
        """Hundreds of random legacy and type-2 transfers (keys, chain ids, nonces, values,
        gas prices and limits, recipients): sign_transfer's bytes and hash are
        eth-account's; every s is low and both recovery ids come up."""
        rng = random.Random(14)
        recovery_ids: set[int] = set()
        for n in range(600):
            secret = rng.randrange(1, SECPK1_N).to_bytes(32, "big")
            chain_id = rng.choice([1, 61, 63, 1337, rng.randrange(1, 2**32), rng.randrange(1, 2**64)])
            nonce = random_quantity(rng, 64) % (2**64 - 1)
            value = random_quantity(rng, 256) or 1
            gas = TRANSFER_GAS + random_quantity(rng, 32)
            to = rng.choice(["0x" + "00" * 19 + "01", "0x" + rng.randbytes(20).hex()])
            pricing: LegacyPricing | DynamicPricing
            transaction: dict[str, Any] = {
                "chainId": chain_id,
                "nonce": nonce,
                "gas": gas,
                "to": to_checksum_address(to),
                "value": value,
                "data": b"",
            }
            if n % 2:
                pricing = LegacyPricing(random_quantity(rng, 256), gas)
                transaction["gasPrice"] = pricing.gas_price
            else:
                max_fee = random_quantity(rng, 256)
                pricing = DynamicPricing(max_fee, rng.randrange(max_fee + 1), gas)
                transaction |= {
                    "type": 2,
                    "maxFeePerGas": pricing.max_fee_per_gas,
                    "maxPriorityFeePerGas": pricing.max_priority_fee_per_gas,
                    "accessList": [],
                }
            reference = Account.sign_transaction(transaction, secret)
            signed = sign_transfer(PayoutKey(secret), chain_id, nonce, to, value, pricing)
            self.assertEqual(signed.raw, bytes(reference.raw_transaction), transaction)
            self.assertEqual(signed.tx_hash, "0x" + bytes(reference.hash).hex())
            self.assertLessEqual(reference.s, HALF_ORDER)
            recovery_ids.add(reference.v - 35 - 2 * chain_id if n % 2 else reference.v)
        self.assertEqual(recovery_ids, {0, 1})

    def test_fallback_signs_the_same(self) -> None:
        """Without coincurve, eth-account signs: the same transfer, the same bytes."""
        for pricing in (LegacyPricing(GWEI), DynamicPricing(30 * GWEI, 2 * GWEI)):
            fast = sign_transfer(PayoutKey(SECRET), 61, 7, MINER, 10**18, pricing)
            with signing_with("eth-account"):
                key = PayoutKey(SECRET)
                self.assertIsNone(key._signer)
                self.assertEqual(sign_transfer(key, 61, 7, MINER, 10**18, pricing), fast)

    def test_eip55_as_eth_utils(self) -> None:
        """checked_address's checksum is eth-utils' over random addresses; a mixed-case one
        with any letter's case turned is refused."""
        rng = random.Random(55)
        for _ in range(300):
            lower = "0x" + rng.randbytes(20).hex()
            if int(lower, 16) == 0:
                continue
            expected = to_checksum_address(lower)
            self.assertEqual(checked_address(lower), expected)
            self.assertEqual(checked_address(lower.upper().replace("0X", "0x")), expected)
            self.assertEqual(checked_address(expected), expected)
            letters = [i for i, c in enumerate(expected) if c.isalpha() and i > 1]
            if letters and expected[2:] not in (expected[2:].lower(), expected[2:].upper()):
                i = rng.choice(letters)
                turned = expected[:i] + expected[i].swapcase() + expected[i + 1 :]
                if turned[2:] not in (turned[2:].lower(), turned[2:].upper()):
                    self.assertRaises(ValueError, checked_address, turned)
