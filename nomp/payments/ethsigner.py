"""Signing the pool's Ethereum-family payouts with a key the pool holds itself.

OEP paid with ``eth_sendTransaction`` from an account left unlocked on the
node: anyone who reached the node's RPC could spend the pool's coins. Here
the pool reads its payout key from a file only its own user can read, signs
each transfer locally and the payer sends the raw bytes with
``eth_sendRawTransaction``; the node never holds the key.

This module is the signing layer only: no Twisted, no network, no clock. Its
one I/O is reading the key file (``load_key``). The encoding and signing
(secp256k1, EIP-155 replay protection, EIP-1559 type-2 envelopes, RLP) are
nomp.payments.ethtx's, with libsecp256k1 through coincurve (a transfer in
about a tenth of eth-account's time, byte for byte the same), or
eth-account's where coincurve is not installed; either way the signature is
recovered again and must give the key's own public key. What is here is what
the pool decides: which key files it trusts, what it will pay for gas
(``GasPolicy``), which transfers it will sign (``sign_transfer``) and who
carries the fee (``deduct_fee``).

All amounts are integers in wei. Floats and Decimals are refused, not
rounded: a payout amount that is not already an exact integer is a bug
upstream, and signing it would make the bug permanent on chain.

The private key never appears in a repr, a str or an exception message, and
a ``PayoutKey`` refuses to be pickled or copied, so it cannot ride along
into a log record, a queue or a crash dump by accident.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NoReturn, SupportsIndex, cast, final

from nomp.hashing.ethash import keccak_256 as keccak
from nomp.payments.ethtx import dynamic_transfer, legacy_transfer
from nomp.secretfile import SecretFileError, read_secret_file

if TYPE_CHECKING:
    import coincurve
    from eth_account import Account
    from eth_account.types import TransactionDictType
    from eth_keys.constants import SECPK1_N
    from eth_keys.datatypes import PrivateKey
    from eth_typing import ChecksumAddress

# eth-account, eth-keys and coincurve take about 0.75 s of CPU to import, which every pool
# process would pay at start-up, Ethereum payouts or not (nomp.tap imports this module for
# KeyFileError). They are imported by _load_signing_libraries instead, when the first
# PayoutKey is built, and are this module's globals from then on; __getattr__ loads them
# for a reader from outside that comes first (ethsigner.coincurve).
_SIGNING_LIBRARIES = frozenset({"Account", "PrivateKey", "SECPK1_N", "coincurve"})


@functools.cache
def _load_signing_libraries() -> None:
    """Import the signing libraries into this module's globals, once."""
    global Account, PrivateKey, SECPK1_N, coincurve  # noqa: PLW0603 - the one place they are set
    from eth_account import Account  # noqa: PLC0415 - see _SIGNING_LIBRARIES
    from eth_keys.constants import SECPK1_N  # noqa: PLC0415
    from eth_keys.datatypes import PrivateKey  # noqa: PLC0415

    try:
        import coincurve  # noqa: PLC0415
    except ImportError:  # eth-account signs, about ten times slower
        coincurve = None  # type: ignore[assignment]


def __getattr__(name: str) -> object:
    if name in _SIGNING_LIBRARIES:
        _load_signing_libraries()
        # Not there once loaded only if deleted since (unittest.mock's patch does, then
        # puts back what it found when the name is missing).
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The gas a plain value transfer to an account without code uses, on every
# chain of the family (the yellow paper's G_transaction).
TRANSFER_GAS = 21_000

_MAX_UINT256 = 2**256 - 1
# EIP-2681: a nonce is below 2**64 - 1.
_MAX_NONCE = 2**64 - 2
_MAX_CHAIN_ID = 2**64 - 1

# A key file holds 64 hex digits, maybe 0x and whitespace: anything much
# longer is not a key file, and is not read whole.

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}\Z")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}\Z")


class SignerError(Exception):
    """Something the payer should report and not retry blindly."""


class KeyFileError(SignerError):
    """The payout key file is missing, unsafe, or holds no valid key."""


class GasPriceError(SignerError):
    """The gas the chain asks for cannot be paid under the policy."""


class GasPriceTooHigh(GasPriceError):
    """The chain asks more per gas than the policy's ceiling allows."""

    def __init__(self, price: int, ceiling: int) -> None:
        super().__init__(f"gas price {price} wei is above the ceiling of {ceiling} wei; not paying now")
        self.price = price
        self.ceiling = ceiling


class FeeNotCovered(SignerError):
    """A payout too small to carry the fee deducted from it."""

    def __init__(self, amount: int, fee: int) -> None:
        super().__init__(f"payout of {amount} wei does not cover the fee of up to {fee} wei")
        self.amount = amount
        self.fee = fee


class SigningError(SignerError):
    """The signing library failed or produced a transaction from another sender."""


def _require_int(name: str, value: object, minimum: int, maximum: int) -> int:
    # bool is an int subclass, and True wei is a bug, not one wei.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, not {value}")
    return value


# --- the key ---------------------------------------------------------------


@final
class PayoutKey:
    """The pool's payout private key, and the address it pays from.

    The key stays inside: ``address`` is all that shows, in ``repr`` and
    ``str`` alike. Pickling and copying are refused, so that a key never
    travels by accident (a queue, a cache, a log handler that pickles).
    """

    __slots__ = ("_address", "_public", "_secret", "_signer")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise KeyFileError("a payout key is 32 bytes")
        number = int.from_bytes(secret, "big")
        if number == 0:
            raise KeyFileError("the payout key is zero, which is not a valid secp256k1 key")
        _load_signing_libraries()
        if number >= SECPK1_N:
            raise KeyFileError("the payout key is not below the secp256k1 curve order")
        self._secret = secret
        self._address: ChecksumAddress = PrivateKey(secret).public_key.to_checksum_address()
        # libsecp256k1's copy of the key, and the public key a signature must recover to;
        # None without coincurve: eth-account signs then.
        self._signer: coincurve.PrivateKey | None = None
        self._public: bytes | None = None
        if coincurve is not None:
            self._signer = coincurve.PrivateKey(secret)
            self._public = self._signer.public_key.format(compressed=False)

    @property
    def address(self) -> ChecksumAddress:
        """The EIP-55 checksummed address this key pays from."""
        return self._address

    def __repr__(self) -> str:
        return f"PayoutKey(address={self._address})"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("a PayoutKey cannot be pickled or copied")

    def _sign(self, transaction: TransactionDictType) -> tuple[bytes, str]:
        """Sign checked fields: the raw transaction and its 0x hash."""
        try:
            signed = Account.sign_transaction(transaction, self._secret)
            sender = Account.recover_transaction(signed.raw_transaction)
        except Exception as e:
            # Only the exception's type: a library's message could quote its
            # arguments, and one of them is the key. The chain is dropped too.
            raise SigningError(f"signing failed ({type(e).__name__})") from None
        if sender != self._address:
            raise SigningError(f"the signed transaction recovers to {sender}, not {self._address}")
        return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()

    def _sign_transfer(
        self, chain_id: int, nonce: int, to: bytes, value: int, pricing: Pricing
    ) -> tuple[bytes, str] | None:
        """Sign checked fields with libsecp256k1 (nomp.payments.ethtx): the raw transaction
        and its 0x hash; None without coincurve."""
        if self._signer is None:
            return None
        try:
            if isinstance(pricing, LegacyPricing):
                signed = legacy_transfer(
                    self._signer, chain_id, nonce, pricing.gas_price, pricing.gas_limit, to, value
                )
            else:
                signed = dynamic_transfer(
                    self._signer,
                    chain_id,
                    nonce,
                    pricing.max_priority_fee_per_gas,
                    pricing.max_fee_per_gas,
                    pricing.gas_limit,
                    to,
                    value,
                )
            sender = coincurve.PublicKey.from_signature_and_message(
                signed.signature, signed.digest, hasher=None
            )
            public = sender.format(compressed=False)
        except Exception as e:
            # As in _sign: the type only, no message, no chain.
            raise SigningError(f"signing failed ({type(e).__name__})") from None
        if public != self._public:
            raise SigningError(
                f"the signed transaction recovers to {_address_of(public)}, not {self._address}"
            )
        return signed.raw, "0x" + signed.tx_hash.hex()


def _address_of(public: bytes) -> ChecksumAddress:
    """The address of an uncompressed public key (0x04, x, y)."""
    return _eip55(keccak(public[1:])[-20:].hex())


# A run checks each payee's address twice (when it is chosen and when it is signed for),
# and the next run the same addresses again: kept for as many as a large pool pays.
@functools.lru_cache(maxsize=1 << 16)
def _eip55(digits: str) -> ChecksumAddress:
    """EIP-55: the 40 lower-case hex digits of an address, each letter upper-cased where
    the Keccak-256 of the digits has a nibble of 8 or more at its place."""
    # In whole-string operations rather than a step a digit (a pool's first run checks
    # every payee's address on the reactor's thread): the hash's hex digits made 0x20
    # where 8 or more, the address's digits 0xff where a letter, and the two masks'
    # AND (0x20 where a letter is upper-cased) taken from the digits' ASCII.
    text = digits.encode("ascii")
    high = keccak(text).hex().encode("ascii")[: len(text)].translate(_NIBBLE_HIGH)
    upper = int.from_bytes(high, "big") & int.from_bytes(text.translate(_HEX_LETTER), "big")
    mixed = (int.from_bytes(text, "big") - upper).to_bytes(len(text), "big").decode("ascii")
    # A cast rather than eth-typing's NewTypes called, which are the str itself at run
    # time: eth-typing is left unimported with the signing libraries.
    return cast("ChecksumAddress", "0x" + mixed)


_NIBBLE_HIGH = bytes.maketrans(b"0123456789abcdef", b"\0" * 8 + b"\x20" * 8)
_HEX_LETTER = bytes.maketrans(b"0123456789abcdef", b"\0" * 10 + b"\xff" * 6)


def parse_key(text: str) -> PayoutKey:
    """A key from its hex text: 64 hex digits, maybe after 0x, maybe padded."""
    digits = text.strip()
    if digits[:2] in ("0x", "0X"):
        digits = digits[2:]
    if len(digits) != 64:
        raise KeyFileError(f"a payout key is 64 hex digits; this one has {len(digits)} characters")
    if not _HEX_KEY.match(digits):
        raise KeyFileError("the payout key is not hexadecimal")
    return PayoutKey(bytes.fromhex(digits))


def load_key(path: str) -> PayoutKey:
    """Read the payout key from ``path``, refusing a file others could read (the rules of
    nomp.secretfile)."""
    try:
        data = read_secret_file(path, "the payout key file")
    except SecretFileError as e:
        raise KeyFileError(str(e)) from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"the payout key file {path} is not hexadecimal text") from None
    try:
        return parse_key(text)
    except KeyFileError as e:
        raise KeyFileError(f"the payout key file {path}: {e}") from None


# --- gas -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegacyPricing:
    """A legacy (EIP-155) transaction's price: one gas price, paid in full."""

    gas_price: int
    gas_limit: int = TRANSFER_GAS

    def __post_init__(self) -> None:
        _require_int("gas_price", self.gas_price, 0, _MAX_UINT256)
        _require_int("gas_limit", self.gas_limit, TRANSFER_GAS, _MAX_NONCE)

    @property
    def max_price(self) -> int:
        """The most one gas can cost."""
        return self.gas_price


@dataclass(frozen=True, slots=True)
class DynamicPricing:
    """An EIP-1559 transaction's price: at most ``max_fee_per_gas`` per gas.

    The chain charges base fee plus tip (at most ``max_priority_fee_per_gas``)
    and never more than ``max_fee_per_gas``; the rest is not spent.
    """

    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    gas_limit: int = TRANSFER_GAS

    def __post_init__(self) -> None:
        _require_int("max_fee_per_gas", self.max_fee_per_gas, 0, _MAX_UINT256)
        _require_int("max_priority_fee_per_gas", self.max_priority_fee_per_gas, 0, self.max_fee_per_gas)
        _require_int("gas_limit", self.gas_limit, TRANSFER_GAS, _MAX_NONCE)

    @property
    def max_price(self) -> int:
        """The most one gas can cost."""
        return self.max_fee_per_gas


Pricing = LegacyPricing | DynamicPricing


@dataclass(frozen=True, slots=True)
class GasPolicy:
    """What the pool will pay for a payout's gas.

    ``mode``: ``legacy`` pays the node's gas price (``eth_gasPrice``) in an
    EIP-155 transaction, for chains without EIP-1559 (Ethereum Classic) or
    nodes that do not report a base fee; ``dynamic`` sends EIP-1559 type-2
    transactions.

    ``max_fee_per_gas`` is the ceiling: the pool never offers more per gas.
    When the chain asks more, ``price`` refuses (``GasPriceTooHigh``) and
    the payer waits: a transaction priced below what the chain asks would
    sit unmined with the nonce taken, and block every payout after it.

    ``priority_fee`` is the tip per gas offered to the block's miner in
    ``dynamic`` mode (the legacy gas price already includes one).
    """

    mode: Literal["legacy", "dynamic"]
    max_fee_per_gas: int
    priority_fee: int
    gas_limit: int = TRANSFER_GAS

    def __post_init__(self) -> None:
        if self.mode not in ("legacy", "dynamic"):
            raise ValueError(f"gas pricing mode must be 'legacy' or 'dynamic', not {self.mode!r}")
        _require_int("max_fee_per_gas", self.max_fee_per_gas, 1, _MAX_UINT256)
        _require_int("priority_fee", self.priority_fee, 0, self.max_fee_per_gas)
        _require_int("gas_limit", self.gas_limit, TRANSFER_GAS, _MAX_NONCE)

    def price(self, node_gas_price: int, base_fee: int | None) -> Pricing:
        """The price of the next transfer, from what the node reports now.

        ``node_gas_price`` is the node's ``eth_gasPrice``; ``base_fee`` the
        latest block's ``baseFeePerGas``, or None where the chain has none.

        In ``dynamic`` mode the offer is twice the base fee plus the tip,
        which stays includable through six full blocks of base fee rises
        (each at most 12.5%), but not above the ceiling: a lower cap is
        still includable while it covers the base fee and the tip, and the
        unspent part of the cap is never charged anyway. The node's gas
        price is not used there: the tip is the policy's, so a payout's
        price does not follow a node's guess.
        """
        _require_int("node_gas_price", node_gas_price, 0, _MAX_UINT256)
        if base_fee is not None:
            _require_int("base_fee", base_fee, 0, _MAX_UINT256)
        ceiling = self.max_fee_per_gas
        if self.mode == "legacy":
            if node_gas_price > ceiling:
                raise GasPriceTooHigh(node_gas_price, ceiling)
            if base_fee is not None and node_gas_price < base_fee:
                raise GasPriceError(
                    f"the node's gas price {node_gas_price} wei is below the base fee {base_fee} wei; "
                    "a transaction at that price cannot be mined"
                )
            return LegacyPricing(node_gas_price, self.gas_limit)
        if base_fee is None:
            raise GasPriceError(
                "the node reports no base fee (no EIP-1559 on this chain); use legacy pricing"
            )
        needed = base_fee + self.priority_fee
        if needed > ceiling:
            raise GasPriceTooHigh(needed, ceiling)
        offer = min(2 * base_fee + self.priority_fee, ceiling)
        return DynamicPricing(offer, self.priority_fee, self.gas_limit)

    @staticmethod
    def fee(pricing: Pricing) -> int:
        """The most the transfer's gas can cost, in wei: gas limit x max price."""
        return pricing.gas_limit * pricing.max_price


# --- transfers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedTransfer:
    """A signed payout, ready for ``eth_sendRawTransaction``.

    ``max_cost`` is the most its gas can cost (``GasPolicy.fee``); the
    sender's balance goes down by ``value`` plus at most that.
    """

    raw: bytes
    tx_hash: str
    nonce: int
    to: ChecksumAddress
    value: int
    max_cost: int

    @property
    def raw_hex(self) -> str:
        """``raw`` as the 0x hex string ``eth_sendRawTransaction`` takes."""
        return "0x" + self.raw.hex()

    @property
    def max_debit(self) -> int:
        """The most the transfer takes from the sender: value plus the fee ceiling."""
        return self.value + self.max_cost


def checked_address(to: object) -> ChecksumAddress:
    """``to`` as an EIP-55 address, if it is one.

    A mixed-case address carries an EIP-55 checksum and must match it (a
    typo in a miner's login is caught here rather than paid to nobody). An
    all-lower or all-upper address has no checksum to check. The zero
    address is refused: nobody holds its key.
    """
    if not isinstance(to, str):
        raise TypeError(f"an address must be a str, not {type(to).__name__}")
    if not _HEX_ADDRESS.match(to):
        raise ValueError(f"not an address (0x and 40 hex digits): {to!r}")
    digits = to[2:]
    checksummed = _eip55(digits.lower())
    if digits not in (digits.lower(), digits.upper()) and to != checksummed:
        raise ValueError(f"address {to} fails its EIP-55 checksum")
    if int(digits, 16) == 0:
        raise ValueError("refusing to pay the zero address")
    return checksummed


def sign_transfer(
    key: PayoutKey, chain_id: int, nonce: int, to: str, value_wei: int, pricing: Pricing
) -> SignedTransfer:
    """Sign a plain transfer of ``value_wei`` to ``to``, from ``key.address``.

    A ``LegacyPricing`` gives a legacy transaction with EIP-155 replay
    protection (the chain id is in the signature), a ``DynamicPricing`` an
    EIP-1559 type-2 transaction. Either is valid on ``chain_id`` only.
    """
    if not isinstance(key, PayoutKey):
        raise TypeError(f"key must be a PayoutKey, not {type(key).__name__}")
    _require_int("chain_id", chain_id, 1, _MAX_CHAIN_ID)
    _require_int("nonce", nonce, 0, _MAX_NONCE)
    _require_int("value_wei", value_wei, 1, _MAX_UINT256)
    address = checked_address(to)
    if not isinstance(pricing, LegacyPricing | DynamicPricing):
        raise TypeError(f"pricing must be LegacyPricing or DynamicPricing, not {type(pricing).__name__}")
    fast = key._sign_transfer(chain_id, nonce, bytes.fromhex(address[2:]), value_wei, pricing)
    if fast is not None:
        return SignedTransfer(*fast, nonce, address, value_wei, GasPolicy.fee(pricing))
    transaction: TransactionDictType
    if isinstance(pricing, LegacyPricing):
        transaction = {
            "chainId": chain_id,
            "nonce": nonce,
            "gasPrice": pricing.gas_price,
            "gas": pricing.gas_limit,
            "to": address,
            "value": value_wei,
            "data": b"",
        }
    else:
        transaction = {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce,
            "maxFeePerGas": pricing.max_fee_per_gas,
            "maxPriorityFeePerGas": pricing.max_priority_fee_per_gas,
            "gas": pricing.gas_limit,
            "to": address,
            "value": value_wei,
            "data": b"",
            "accessList": [],
        }
    raw, tx_hash = key._sign(transaction)
    return SignedTransfer(raw, tx_hash, nonce, address, value_wei, GasPolicy.fee(pricing))


def deduct_fee(amount: int, max_fee: int, who: Literal["pool", "miner"]) -> int:
    """What the miner receives of a payout of ``amount`` wei.

    ``who`` carries the fee: ``pool`` pays it on top (the miner receives
    ``amount``; the wallet needs ``amount + max_fee``), ``miner`` has it
    taken from the payout (the miner receives ``amount - max_fee``). The
    miner is charged the fee's ceiling, not what the chain will charge,
    since that is known only once the transfer is mined.
    """
    _require_int("amount", amount, 1, _MAX_UINT256)
    _require_int("max_fee", max_fee, 0, _MAX_UINT256)
    if who == "pool":
        return amount
    if who == "miner":
        if amount <= max_fee:
            raise FeeNotCovered(amount, max_fee)
        return amount - max_fee
    raise ValueError(f"the fee is paid by 'pool' or 'miner', not {who!r}")
