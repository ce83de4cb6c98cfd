"""Miner logins of the Ethereum family: an address, and a worker name. Pure."""

from __future__ import annotations

import re

from nomp.hashing.ethash import keccak_256

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_WORKER = re.compile(r"[0-9A-Za-z_\-]{1,64}")
DEFAULT_WORKER = "0"  # OEP's name for a miner that gives none
ZERO_ADDRESS = "0x" + "0" * 40


class LoginError(ValueError):
    """A login that is not an address the pool can pay."""


def check_address(address: str) -> str:
    """``address`` in lower case; LoginError unless it is ``0x`` and 40 hex
    digits, not all zero, and (in mixed case) with a valid EIP-55 checksum."""
    if not _ADDRESS.fullmatch(address):
        raise LoginError("Invalid login")
    digits = address[2:]
    lower = digits.lower()
    if digits not in (lower, digits.upper()):
        checksum = keccak_256(lower.encode()).hex()
        expected = "".join(c.upper() if int(checksum[i], 16) >= 8 else c for i, c in enumerate(lower))
        if digits != expected:
            raise LoginError("Invalid login: wrong address checksum")
    if lower == ZERO_ADDRESS[2:]:
        raise LoginError("Invalid login")
    return "0x" + lower


def worker_name(value: object) -> str:
    """A worker name as given, or ``0`` for none or one that cannot be a name."""
    if type(value) is str and _WORKER.fullmatch(value):
        return value
    return DEFAULT_WORKER


def split_user(user: str, addresses_only: bool) -> tuple[str, str]:
    """(login, worker) of a ``login.worker`` user name; LoginError if the
    login is not an address (unless ``addresses_only`` is false, then it
    only has to be a name)."""
    login, _, worker = user.partition(".")
    if addresses_only:
        login = check_address(login)
    elif _WORKER.fullmatch(login):
        login = login.lower()  # as getwork's path and OEP take it: one name whatever the case
    else:
        raise LoginError("Invalid login")
    return login, worker_name(worker) if worker else DEFAULT_WORKER
