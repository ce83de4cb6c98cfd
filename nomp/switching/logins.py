"""A switching port's logins: one name, a payout address on every coin. Pure.

A miner on a switching port logs in as ``<address>.<rig>`` with an address
of any of the switch's coins, or as ``<hash160>.<rig>`` with 40 hex digits
(NOMP's "public key hash"). Its shares on each coin are recorded under
that coin's address for the same key or script: the same key hash or
script hash with the coin's version byte, the same witness program with
the coin's bech32 prefix. A v0 key hash goes to a coin without bech32
addresses as that coin's P2PKH address of the same key hash. A login some
coin of the switch cannot pay is refused: its shares there would be paid
to no one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from nomp.chain.address import Address, AddressError, address_of, decode_address
from nomp.config import NetworkConfig

_HASH160 = re.compile(r"[0-9a-fA-F]{40}")


class LoginRefused(ValueError):
    """A login no coin of the switch can decode, or one some coin cannot pay."""


def _script(text: str, networks: Mapping[str, NetworkConfig]) -> bytes:
    """What the login's address pays, read on the first coin that knows it."""
    if _HASH160.fullmatch(text):
        return b"\x76\xa9\x14" + bytes.fromhex(text) + b"\x88\xac"
    problems = []
    for coin, network in networks.items():
        try:
            decoded: Address = decode_address(text, network)
        except AddressError as e:
            problems.append(f"{coin}: {e}")
            continue
        return decoded.script
    raise LoginRefused(
        f"{text} is no address of {', '.join(networks)} nor a 40-hex key hash ({'; '.join(problems)})"
    )


def _paid_on(text: str, script: bytes, coin: str, network: NetworkConfig) -> str:
    try:
        return address_of(script, network)
    except AddressError as e:
        if script[:2] == b"\x00\x14":  # a v0 key hash: the same key's P2PKH address
            return address_of(b"\x76\xa9\x14" + script[2:] + b"\x88\xac", network)
        raise LoginRefused(f"{text} cannot be paid on {coin}: {e}") from None


def payout_workers(login: str, coins: Sequence[tuple[str, NetworkConfig]]) -> dict[str, str]:
    """The worker name each coin records ``login``'s shares under, by coin
    (the keys of ``coins``, in order); LoginRefused with the reason.

    ``login`` is ``<address or hash160>`` with an optional ``.<rig>``, which
    every coin's name keeps.
    """
    address, dot, rig = login.partition(".")
    networks = dict(coins)
    script = _script(address, networks)
    return {coin: _paid_on(address, script, coin, network) + dot + rig for coin, network in coins}
