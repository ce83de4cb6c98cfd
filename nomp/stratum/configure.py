"""What a miner may ask of its connection: BIP310 extensions
(``mining.configure``), a difficulty (``mining.suggest_difficulty`` or
``d=`` in the password), and the limits a port puts on difficulties. Pure.

Difficulty limits. On a vardiff port a miner may ask for any difficulty
within the port's [min_diff, max_diff]: the operator already said which
difficulties the port serves. On a fixed-difficulty port the port's
``diff`` is the lowest a miner gets and there is no upper limit: the
operator chose ``diff`` to bound how many shares a miner sends (and the
pool checks and writes), and a miner asking for more difficulty only
sends fewer shares, each credited with its difficulty. A floor the miner
set with ``minimum-difficulty`` raises the lower limit for its connection.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from nomp.config import PortConfig

VERSION_ROLLING = "version-rolling"
MINIMUM_DIFFICULTY = "minimum-difficulty"
SUBSCRIBE_EXTRANONCE = "subscribe-extranonce"
ALL_VERSION_BITS = 0xFFFFFFFF  # the mask of a miner that names none
_MASK = re.compile(r"[0-9a-fA-F]{1,8}")  # re.fullmatch: no 0x, no sign, no blanks
_SHOWN = 64  # characters of a miner's text quoted back to it


class ConfigureError(ValueError):
    """``mining.configure`` params that cannot be read; the text says why."""


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of one ``mining.configure``."""

    result: dict[str, object]  # the reply's result
    version_mask: int | None  # bits the miner may roll (0: none); None: version rolling not asked for
    minimum_difficulty: float | None  # the floor asked for (0: none); None: not asked for
    subscribe_extranonce: bool


def negotiate(params: Sequence[object], pool_mask: int) -> Negotiated:
    """Answer ``mining.configure [[extension, ...], {parameter: value}]``.

    Only the parameters of requested extensions are read; a requested
    extension with a parameter of the wrong type or range is a
    ConfigureError, so the miner learns its request was not understood.
    Extensions the pool does not know are left out of the result, which
    BIP310 miners read as unsupported.

    version-rolling: the agreed mask is the pool's mask AND the miner's
    (all 32 bits when it names none). If it has fewer bits set than
    ``version-rolling.min-bit-count`` asks (missing: 0), or none at all,
    the answer is ``"version-rolling": false`` and the miner must not
    roll: a miner that says it needs N bits cannot do its work with fewer,
    and a mask it cannot use would only get its shares refused.
    """
    if not params or not isinstance(params[0], list):
        raise ConfigureError("invalid params: expected [extensions], {parameters}")
    names = params[0]
    if not all(isinstance(name, str) for name in names):
        raise ConfigureError("invalid params: extension names must be strings")
    settings = params[1] if len(params) > 1 and params[1] is not None else {}
    if not isinstance(settings, dict):
        raise ConfigureError("invalid params: extension parameters must be an object")
    result: dict[str, object] = {}
    version_mask: int | None = None
    minimum: float | None = None
    if VERSION_ROLLING in names:
        miner_mask = _read_mask(settings.get(f"{VERSION_ROLLING}.mask"))
        min_bits = _read_bit_count(settings.get(f"{VERSION_ROLLING}.min-bit-count"))
        agreed = pool_mask & miner_mask
        if agreed and agreed.bit_count() >= min_bits:
            version_mask = agreed
            result[VERSION_ROLLING] = True
            result[f"{VERSION_ROLLING}.mask"] = f"{agreed:08x}"
        else:
            version_mask = 0
            result[VERSION_ROLLING] = False
    if MINIMUM_DIFFICULTY in names:
        minimum = _read_minimum(settings)
        result[MINIMUM_DIFFICULTY] = True
    subscribe_extranonce = SUBSCRIBE_EXTRANONCE in names
    if subscribe_extranonce:
        result[SUBSCRIBE_EXTRANONCE] = True
    return Negotiated(result, version_mask, minimum, subscribe_extranonce)


def _read_mask(value: object) -> int:
    if value is None:
        return ALL_VERSION_BITS
    if not isinstance(value, str) or not _MASK.fullmatch(value):
        raise ConfigureError(f"{VERSION_ROLLING}.mask must be up to eight hex digits, e.g. 1fffe000")
    return int(value, 16)


def _read_bit_count(value: object) -> int:
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise ConfigureError(f"{VERSION_ROLLING}.min-bit-count must be a whole number >= 0")
    return value


def _read_minimum(settings: Mapping[str, object]) -> float:
    value = _finite(settings.get(f"{MINIMUM_DIFFICULTY}.value"))
    if value is None or value < 0:
        raise ConfigureError(f"{MINIMUM_DIFFICULTY}.value must be a number >= 0")
    return value


def _finite(value: object) -> float | None:
    """A JSON number as a finite float, else None."""
    # bool is an int in Python, not a number on the wire.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return number if math.isfinite(number) else None


def read_difficulty(value: object) -> float | None:
    """A difficulty a miner sent: a finite number above 0, else None."""
    difficulty = _finite(value)
    return difficulty if difficulty is not None and difficulty > 0 else None


def suggested_difficulty(params: Sequence[object]) -> float:
    """The difficulty of ``mining.suggest_difficulty [difficulty]``; ValueError if none."""
    difficulty = read_difficulty(params[0]) if params else None
    if difficulty is None:
        raise ValueError("invalid params: expected [difficulty], a number > 0")
    return difficulty


def clamp_difficulty(requested: float, port: PortConfig, floor: float = 0.0) -> float:
    """The difficulty closest to ``requested`` that a connection on ``port``
    with the miner's own ``floor`` may have (see the module's docstring)."""
    if port.vardiff is not None:
        low, high = port.vardiff.min_diff, port.vardiff.max_diff
    else:
        low, high = port.diff, math.inf
    return min(max(requested, low, floor), high)


class PasswordOptions(NamedTuple):
    """What ``mining.authorize``'s password asks for."""

    difficulty: float | None  # d=N: a fixed difficulty for the connection
    unreadable: tuple[str, ...]  # d= options that hold no difficulty, shortened to quote in a log


def password_options(password: str) -> PasswordOptions:
    """Read a comma-separated option list such as ``x``, ``d=4096`` or
    ``x,d=4096,foo=bar``. Only ``d`` is an option the pool knows; anything
    else (``x``, ``foo=bar``) is ignored. With several ``d=`` the last
    readable one counts."""
    difficulty: float | None = None
    unreadable: list[str] = []
    for option in password.split(","):
        key, has_value, value = option.partition("=")
        if not has_value or key.strip().lower() != "d":
            continue
        try:
            read = read_difficulty(float(value))
        except ValueError:
            read = None
        if read is None:
            unreadable.append(option.strip()[:_SHOWN])
        else:
            difficulty = read
    return PasswordOptions(difficulty, tuple(unreadable))
