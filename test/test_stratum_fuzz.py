"""The Stratum server against hostile input, property-based.

An attacker connection is fed mutated JSON-RPC requests (wrong types,
missing and extra fields, huge and odd numbers, odd strings, duplicate
keys), byte garbage, bytes that are not UTF-8, other encodings, deep
nesting and lines over the limit, cut at random points into many
``dataReceived`` calls or packed many lines to one. Beside it sit
well-behaved miners that subscribed and authorized before the attack.

The properties, checked after every attack:

* nothing raises out of ``dataReceived``, nothing is logged as a failure
  or an error, and no reply is the server's "internal error";
* every non-blank line gets exactly one reply, in order, or the
  connection is closed on a line over the limit (with one error reply,
  and no reply to anything after it);
* every message written is one strict-JSON object on its own line; a
  reply has exactly the keys ``id``, ``result`` and ``error``, its id is
  the request's (null when the request had no usable id);
* while the attacker's connection is open, the protocol never buffers
  more than the line limit of its data;
* the other miners are untouched: same session (extranonce1, workers,
  difficulty, counters), nothing written to them, and a share, an
  authorize and an extranonce.subscribe on them still work after the
  attack; their extranonce1 is still reserved once the attacker is gone.

The generators take a ``random.Random``: hypothesis drives them either
through a seed (the bulk streams, 200,000+ lines) or through its own
Random (short streams it can shrink). ``bench/fuzz_stratum.py`` runs the
same streams without hypothesis.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from nomp.chain.jobs import Job
from nomp.chain.template import BlockTemplate
from nomp.config import PoolConfig, PortConfig, VardiffConfig
from nomp.stratum.extranonce import Extranonce1Allocator
from nomp.stratum.protocol import MALFORMED_RATE, MAX_LINE
from test.fakes import (
    REGTEST_ADDRESS,
    SCRYPT,
    Connection,
    StratumHarness,
    find_nonce,
    mainnet_template,
    pool_config,
    submit_params,
)
from test.test_chain import template_reply

T = TypeVar("T")
CURTIME: int = template_reply()["curtime"]
NOW = CURTIME + 30
PLAIN_PORT = PortConfig(listen="tcp:3333:interface=127.0.0.1", diff=0.0001)
VARDIFF = VardiffConfig(min_diff=0.0001, max_diff=1000, target_time=15, retarget_time=90, variance_percent=30)
VARDIFF_PORT = PortConfig(listen="tcp:3334:interface=127.0.0.1", diff=0.0001, vardiff=VARDIFF)
PORTS = (PLAIN_PORT, VARDIFF_PORT)
WORKER = REGTEST_ADDRESS + ".rig1"
VARDIFF_WORKER = REGTEST_ADDRESS + ".rig2"
OTHER_ADDRESS = "mpQG9GRvXTwQJ7coC7STH5gL936CkcAb6Y"  # regtest P2PKH
EXTRANONCE2 = bytes.fromhex("0badf00d")
LINE_TOO_LONG = [20, f"line longer than {MAX_LINE} bytes", None]
ERROR_CODES = frozenset(range(20, 26))
NOTIFICATIONS = frozenset({"mining.set_difficulty", "mining.notify"})
MAX_CLOCK_ADVANCE = 300.0  # seconds per attack: below the idle timeout of the bystanders
STREAM_LINES = 410  # lines per bulk stream (the last may be one over the limit)

# ---------------------------------------------------------------------------
# What goes on the wire.


class Raw:
    """A token written into the line as is: bytes json.dumps would never make."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Pairs:
    """A JSON object written from (key, value) pairs: keys may repeat."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[Any, Any]]) -> None:
        self.items = items


HUGE = 10**4000  # 4001 digits: under Python's int-to-text limit
# Numbers of thousands of digits: each costs the parser (and the line limit)
# thousands of bytes, so they are drawn less often than the others.
HUGE_NUMBERS: tuple[Any, ...] = (
    HUGE,
    -HUGE,
    Raw(b"1" * 4400),  # over Python's 4300-digit limit: json.loads raises ValueError
    Raw(b"-" + b"9" * 4300),
    Raw(b"1" + b"0" * 4000 + b".5"),
    Raw(b"0." + b"0" * 4000 + b"1e-400"),
)
NASTY_INTS: tuple[int, ...] = (
    0,
    1,
    -1,
    7,
    2**31 - 1,
    2**31,
    -(2**31),
    2**32,
    2**53 + 1,
    2**63,
    2**64,
    -(2**63),
    10**100,
)
NASTY_FLOATS: tuple[float, ...] = (
    0.0,
    -0.0,
    0.5,
    1.5,
    -2.5,
    1e308,
    -1e308,
    5e-324,
    1e-7,
    math.nan,
    math.inf,
    -math.inf,
)
RAW_NUMBERS: tuple[bytes, ...] = (
    b"1e400",
    b"-1e400",
    b"1E+2",
    b"-0",
    b"0e0",
    b"01",
    b".5",
    b"1.",
    b"+1",
    b"0x10",
    b"1e",
    b"--1",
    b"NaN",
    b"-NaN",
    b"Infinity",
    b"-Infinity",
    b"infinity",
    b"nan",
    b"undefined",
    b"True",
    b"None",
)
RAW_STRINGS: tuple[bytes, ...] = (
    b'"\\x41"',
    b'"\\u12"',
    b'"\\u12g4"',
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'"\\ud83d\\ude00"',
    b'"\\u0000"',
    b'"a\tb"',  # a raw control character: not strict JSON
    b'"a\x00b"',
    b'"\xff\xfe"',
    b'"\xc3\x28"',
    b'"\xed\xa0\x80"',  # a surrogate in UTF-8
    b'"\xf4\x90\x80\x80"',  # past U+10FFFF
    b'"\xc0\x80"',  # overlong NUL
    b'"\xe2\x82"',  # truncated sequence
    b'"unterminated',
    b"'single'",
    b'"\\"',
    b'"\\\\"',
    b'"\\/\\b\\f\\n\\r\\t"',
    b'"\\U0001F600"',
)
UNICODE_BITS: tuple[str, ...] = (
    "\u00fc",
    "\u20ac",
    "\U0001d11e",
    "\U0001f600",
    "\u202e",
    "\u200b",
    "\ufeff",
    "\uffff",
    "\ud800",
    "\udfff",
    "e\u0301",
    "\u0000",
    "\x1f",
    "\x7f",
    "\n",
    "\r\n",
    "\u2028",
    "\u2029",
    "\u01c5",
    "\u0130",
    "\ufb00",
    "\u0661\u0662",
    "\uff10",
    "\\",
    '"',
    "'",
    "\u0a0a",  # its UTF-16 encoding holds two newline bytes
)
ODD_TEXTS: tuple[str, ...] = (
    "",
    " ",
    "null",
    "true",
    "0",
    "[]",
    "{}",
    "\\n",
    "\\u0000",
    "%00",
    "${jndi:ldap://x/a}",
    "'; DROP TABLE shares; --",
    "../../etc/passwd",
    "\x00" * 10,
    "mining.submit",
    "x" * 129,
    "a:b",
    "worker:1",
)
PIECES: tuple[str, ...] = ("a", "0", "ab", "\u00fc", "\U0001f600", "\\", '"', "\x00", "ff", " ", "\ud800")
# Both drawn small more often than large (see ``skewed``).
LONG_LENGTHS: tuple[int, ...] = (16, 64, 128, 129, 256, 512, 1000, 4000, 8100)
DEPTHS: tuple[int, ...] = (2, 10, 50, 100, 500, 900, 1000, 1500, 2000, 4000)
INTERESTING_BYTES: tuple[bytes, ...] = (
    b"\x00",
    b"\xff",
    b"\x80",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xef\xbb\xbf",
    b"\\",
    b'"',
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\r",
    b"\x0b",
    b"\x0c",
    b"\t",
    b" ",
    b"\n",  # splits the line in two
    b"\r\n",
)
ENCODINGS: tuple[str, ...] = (
    "utf-16",
    "utf-16-le",
    "utf-16-be",
    "utf-32",
    "utf-32-le",
    "utf-32-be",
    "utf-8-sig",
)
SEPARATORS: tuple[tuple[str, str], ...] = (
    (",", ":"),
    (",", ":"),
    (", ", ": "),
    (" , ", " : "),
    (",\t", ":\r"),
    ("\r,", "\t:\t"),
)
USER_AGENTS: tuple[str, ...] = ("cgminer/4.10.0", "bmminer/2.0.0", "NiceHash/1.0.0", "cpuminer/2.5.1", "")
METHODS: tuple[str, ...] = (
    "mining.subscribe",
    "mining.authorize",
    "mining.submit",
    "mining.configure",
    "mining.extranonce.subscribe",
    "mining.get_transactions",
    "mining.suggest_difficulty",
    "mining.suggest_target",
    "mining.multi_version",
    "client.get_version",
    "mining.set_difficulty",
    "mining.notify",
    "__class__",
    "_methods",
)


@dataclass(frozen=True)
class Target:
    """What a well-formed request to the attacked pool carries."""

    workers: tuple[str, ...]
    job_id: str
    ntime: int


_MARK = "\ue000raw{}\ue001"  # stands for a Raw token or Pairs in json.dumps's output


def encode(value: Any, rng: random.Random) -> bytes:
    """``value`` as one line of JSON (or near-JSON: Raw tokens, repeated keys)."""
    item_sep, key_sep = pick(rng, SEPARATORS)
    ascii_only = rng.random() < 0.7
    tokens: list[bytes] = []

    def dump(item: Any) -> str:
        return json.dumps(item, ensure_ascii=ascii_only, separators=(item_sep, key_sep), default=default)

    def default(item: Any) -> str:
        if isinstance(item, Raw):
            tokens.append(item.data)
        elif isinstance(item, Pairs):
            pairs = item_sep.join(dump(k) + key_sep + dump(v) for k, v in item.items)
            tokens.append(("{" + pairs + "}").encode("utf-8", "surrogatepass"))
        else:
            raise TypeError(f"{item!r} is not for the wire")
        return _MARK.format(len(tokens) - 1)

    line = dump(value).encode("utf-8", "surrogatepass")
    for i in reversed(range(len(tokens))):  # Pairs hold the marks of tokens made before them
        mark = json.dumps(_MARK.format(i), ensure_ascii=ascii_only).encode()
        line = line.replace(mark, tokens[i])
    return line


# ---------------------------------------------------------------------------
# Generators and mutators: each takes a Random (plain or hypothesis's).


# random.Random's randint and choice run in Python; these are quicker, and
# hypothesis's Random (whose ``random`` it draws and shrinks to 0) drives them too.
def pick(rng: random.Random, values: Sequence[T]) -> T:
    """One of ``values``."""
    return values[int(rng.random() * len(values))]


def between(rng: random.Random, low: int, high: int) -> int:
    """An integer in [low, high]."""
    return low + int(rng.random() * (high - low + 1))


def request_id(rng: random.Random) -> Any:
    roll = between(rng, 0, 9)
    if roll < 7:
        return between(rng, 0, 100_000)
    if roll == 7:
        return pick(rng, ("a", "id-1", "", "\u00fc"))
    if roll == 8:
        return None
    return pick(rng, HUGE_NUMBERS[:2]) if rng.random() < 0.05 else pick(rng, NASTY_INTS)


def hex8(rng: random.Random) -> str:
    return f"{rng.getrandbits(32):08x}"


def valid_request(rng: random.Random, target: Target) -> dict[str, Any]:
    """A request a miner could send: a template the mutators start from."""
    kind = between(rng, 0, 11)
    worker = pick(rng, target.workers)
    method: str
    params: list[Any]
    if kind == 0:
        method, params = "mining.subscribe", [pick(rng, USER_AGENTS)]
        if rng.random() < 0.3:
            params.append(hex8(rng))  # a session to resume
    elif kind <= 2:
        method, params = "mining.authorize", [worker, pick(rng, ("x", "", "d=1024", "p" * 300))]
    elif kind <= 6:
        # Not every one hashed: a share check costs as much as a hundred lines.
        ntime = target.ntime + pick(rng, (0, 1, -1, 7200, 8000, -(2**20), 2**31))
        job_id = pick(rng, (target.job_id, target.job_id, "0", "ffffffff"))
        method = "mining.submit"
        params = [worker, job_id, hex8(rng), f"{ntime % 2**32:08x}", hex8(rng)]
        if rng.random() < 0.2:
            params.append("1fffe000")  # version bits (ASICBoost)
    elif kind == 7:
        method = "mining.configure"
        params = [
            ["version-rolling", "minimum-difficulty", "subscribe-extranonce"],
            {
                "version-rolling.mask": "1fffe000",
                "version-rolling.min-bit-count": 2,
                "minimum-difficulty.value": 2048,
            },
        ]
    elif kind == 8:
        method, params = "mining.extranonce.subscribe", []
    elif kind == 9:
        method, params = "mining.get_transactions", [target.job_id]
    elif kind == 10:
        method, params = "mining.suggest_difficulty", [pick(rng, (0.5, 1024, 0))]
    else:
        method, params = pick(rng, METHODS), []
    return {"id": request_id(rng), "method": method, "params": params}


def skewed(rng: random.Random, values: tuple[int, ...]) -> int:
    """One of ``values``, the first ones likelier."""
    return pick(rng, values[: between(rng, 1, len(values))])


def long_text(rng: random.Random) -> str:
    piece = pick(rng, PIECES)
    return piece * max(1, skewed(rng, LONG_LENGTHS) // len(piece))


def mutate_text(rng: random.Random, text: str) -> str:
    """A near miss of ``text`` (a worker name, a job id, hex)."""
    for _ in range(between(rng, 1, 2)):
        op = between(rng, 0, 9)
        at = between(rng, 0, len(text))
        if op == 0:
            text = text.swapcase()
        elif op == 1:
            text = text[:at] + pick(rng, UNICODE_BITS) + text[at:]
        elif op == 2:
            text = text[:at] + text[at + 1 :]
        elif op == 3:
            text = text[:at] + pick(rng, "gG0 .:-_@+\t\x00z") + text[at + 1 :]
        elif op == 4:
            text = text + text
        elif op == 5:
            text = pick(rng, (" ", "\t", "0x", "\x00", "\ufeff")) + text
        elif op == 6:
            text = text + pick(rng, (" ", "\n", "0", "\x00", "."))
        elif op == 7:
            text = text[:at]
        elif op == 8:
            text = text[::-1]
        else:
            text = text.upper() if rng.random() < 0.5 else text.lower()
    return text


def nasty_text(rng: random.Random, target: Target) -> str:
    kind = between(rng, 0, 6)
    if kind == 0:
        return "".join(pick(rng, UNICODE_BITS) for _ in range(between(rng, 1, 4)))
    if kind == 1:
        return long_text(rng)
    if kind == 2:
        return "".join(chr(between(rng, 0, 0x10FFFF)) for _ in range(between(rng, 1, 6)))
    if kind == 3:
        return "".join(chr(between(rng, 0, 0x20)) for _ in range(between(rng, 1, 6)))
    if kind == 4:
        return pick(rng, ODD_TEXTS)
    if kind == 5:
        return mutate_text(rng, pick(rng, (*target.workers, target.job_id, hex8(rng), "1fffe000")))
    return pick(rng, METHODS)


def nasty_value(rng: random.Random, target: Target, depth: int = 0) -> Any:
    """A value of any JSON type (and some that are not JSON)."""
    kind = between(rng, 0, 12 if depth < 2 else 9)
    if kind == 0:
        return pick(rng, HUGE_NUMBERS) if rng.random() < 0.05 else pick(rng, NASTY_INTS)
    if kind == 1:
        return rng.randint(-(2**70), 2**70)
    if kind == 2:
        return pick(rng, NASTY_FLOATS)
    if kind == 3:
        return Raw(pick(rng, RAW_NUMBERS))
    if kind == 4:
        return pick(rng, (True, False, None))
    if kind <= 6:
        return nasty_text(rng, target)
    if kind == 7:
        return Raw(pick(rng, RAW_STRINGS))
    if kind == 8:
        return rng.uniform(-1e6, 1e6)
    if kind == 9:
        return nested(rng)
    if kind == 10:
        return [nasty_value(rng, target, depth + 1) for _ in range(between(rng, 0, 4))]
    if kind == 11:
        return {nasty_key(rng): nasty_value(rng, target, depth + 1) for _ in range(between(rng, 0, 3))}
    return valid_request(rng, target)  # a request where a value belongs


def nasty_key(rng: random.Random) -> str:
    return pick(
        rng,
        (
            "jsonrpc",
            "id",
            "method",
            "params",
            "error",
            "result",
            "__proto__",
            "",
            "\u00fc",
            "\x00",
            "k" * 300,
        ),
    )


def nested(rng: random.Random) -> Raw:
    """Deep nesting, balanced or not."""
    depth = skewed(rng, DEPTHS)
    kind = between(rng, 0, 3)
    if kind == 0:
        return Raw(b"[" * depth + b"]" * depth)
    if kind == 1:
        return Raw(b'{"a":' * depth + b"1" + b"}" * depth)
    if kind == 2:
        return Raw(b"[" * depth)
    return Raw(b'[{"a":' * (depth // 2) + b"null" + b"}]" * (depth // 2))


def mutate_request(rng: random.Random, message: dict[str, Any], target: Target) -> Any:
    """One to three structural mutations of a request."""
    value: Any = message
    for _ in range(between(rng, 1, 3)):
        if not isinstance(value, dict):
            break
        params = value.get("params")
        op = between(rng, 0, 14)
        if op == 0:
            value["id"] = nasty_value(rng, target)
        elif op == 1:
            value.pop(pick(rng, ("id", "method", "params")), None)
        elif op == 2:
            method = value.get("method")
            value["method"] = (
                mutate_text(rng, method)
                if isinstance(method, str) and rng.random() < 0.6
                else nasty_value(rng, target)
            )
        elif op == 3:
            value["params"] = nasty_value(rng, target)
        elif op in (4, 5) and isinstance(params, list) and params:
            params[between(rng, 0, len(params) - 1)] = nasty_value(rng, target)
        elif op == 6 and isinstance(params, list) and params:
            i = between(rng, 0, len(params) - 1)
            if isinstance(params[i], str):
                params[i] = mutate_text(rng, params[i])
            else:
                params[i] = nasty_value(rng, target)
        elif op == 7 and isinstance(params, list):
            del params[between(rng, 0, len(params)) :]
        elif op == 8 and isinstance(params, list):
            params.extend(nasty_value(rng, target) for _ in range(between(rng, 1, 3)))
        elif op == 9:
            for _ in range(between(rng, 1, 3)):
                value[nasty_key(rng)] = nasty_value(rng, target)
        elif op == 10:
            key = pick(rng, ("id", "method", "params"))
            return Pairs([*value.items(), (key, nasty_value(rng, target))])
        elif op == 11:
            return pick(rng, ([value], {"params": value}, [value, value], {"request": [value]}))
        elif op == 12:
            return nasty_value(rng, target)
        elif op == 13 and isinstance(params, list) and params and isinstance(params[-1], dict):
            inner = params[-1]
            inner[pick(rng, (*inner, "x"))] = nasty_value(rng, target)
        else:
            value["params"] = [nasty_value(rng, target) for _ in range(between(rng, 0, 6))]
    return value


def mutate_bytes(rng: random.Random, line: bytes) -> bytes:
    """One to three byte-level mutations."""
    for _ in range(between(rng, 1, 3)):
        op = between(rng, 0, 7)
        at = between(rng, 0, len(line))
        if op == 0 and line:
            at = min(at, len(line) - 1)
            line = line[:at] + bytes([line[at] ^ (1 << between(rng, 0, 7))]) + line[at + 1 :]
        elif op == 1:
            line = line[:at] + pick(rng, INTERESTING_BYTES) + line[at:]
        elif op == 2:
            line = line[:at] + line[at + between(rng, 1, 16) :]
        elif op == 3:
            line = line[:at]
        elif op == 4:
            end = between(rng, at, len(line))
            line = line[:end] + line[at:end] + line[end:]
        elif op == 5:
            line = pick(rng, (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")) + line
        elif op == 6:
            line = line[:at] + rng.randbytes(between(rng, 1, 8)) + line[at:]
        else:
            line = pick(rng, (b" ", b"\t", b"\x00", b"\x0b")) * between(rng, 1, 4) + line
    return line


def garbage(rng: random.Random) -> bytes:
    """Bytes that are no request at all."""
    kind = between(rng, 0, 4)
    if kind == 0:
        return rng.randbytes(between(rng, 1, 200))
    if kind == 1:
        return bytes(between(rng, 0x80, 0xFF) for _ in range(between(rng, 1, 16)))  # never UTF-8
    if kind == 2:
        return pick(rng, INTERESTING_BYTES) * between(rng, 1, 64)
    if kind == 3:
        return pick(
            rng, (b"GET / HTTP/1.1", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"PING", b"\x00" * 40)
        )
    return pick(rng, INTERESTING_BYTES) + rng.randbytes(between(rng, 0, 40))


def attack_line(rng: random.Random, target: Target) -> bytes:
    """One line of an attack, without its terminator; at most MAX_LINE bytes
    unless a mutation splits it (a mutation may insert a newline)."""
    roll = rng.random()
    if roll < 0.15:
        line = encode(valid_request(rng, target), rng)
    elif roll < 0.80:
        line = encode(mutate_request(rng, valid_request(rng, target), target), rng)
        if rng.random() < 0.25:
            line = mutate_bytes(rng, line)
    elif roll < 0.86:
        line = garbage(rng)
    elif roll < 0.88:
        line = nested(rng).data
    elif roll < 0.91:
        line = pick(rng, (b"", b" ", b"\t", b"\r", b" \x0b\x0c ", b"\r\r"))
    elif roll < 0.94:
        parts = [encode(valid_request(rng, target), rng) for _ in range(between(rng, 2, 3))]
        line = pick(rng, (b"", b" ", b",", b"\r", b"\x00")).join(parts)
    elif roll < 0.995:
        text = json.dumps(valid_request(rng, target), ensure_ascii=rng.random() < 0.5)
        line = text.encode(pick(rng, ENCODINGS), "surrogatepass")
    else:
        # A request padded to the limit or just under it.
        request = encode(valid_request(rng, target), rng)
        pad = MAX_LINE - len(request) - pick(rng, (0, 0, 1, 2, 100))
        line = request[:-1] + b" " * max(0, pad) + request[-1:]
    if len(line) > MAX_LINE:
        line = line[: between(rng, 0, MAX_LINE)]
    return line


def overlong_line(rng: random.Random, target: Target) -> bytes:
    """A line over the limit."""
    kind = between(rng, 0, 6)
    if kind == 0:
        return b"[" * 100_000
    if kind == 1:
        return b"x" * (MAX_LINE + 1)
    if kind == 2:
        request = encode(valid_request(rng, target), rng)
        return request[:-1] + b" " * (MAX_LINE - len(request) + between(rng, 1, 1000)) + request[-1:]
    if kind == 3:
        return b"{" * between(rng, MAX_LINE + 1, 70_000)
    if kind == 4:
        return rng.randbytes(between(rng, MAX_LINE + 1, 3 * MAX_LINE)).replace(b"\n", b"")
    if kind == 5:
        return encode({"id": 1, "method": "mining.authorize", "params": ["a" * 10_000, "x"]}, rng)
    return b'{"id": 1, "method": "mining.subscribe", "params": ["' + "\u00fc".encode() * 5000 + b'"]}'


def attack_stream(rng: random.Random, target: Target, lines: int) -> bytes:
    """``lines`` lines of attack as the attacker's TCP stream delivers them.

    Most streams start by subscribing and authorizing so that mutated
    submits reach the deeper checks. Some end on a line over the limit,
    perhaps followed by more lines (which must get no reply), and some end
    without a line terminator.
    """
    out: list[bytes] = []
    if rng.random() < 0.7:
        worker = pick(rng, target.workers)
        out.append(b'{"id": 1, "method": "mining.subscribe", "params": ["fuzz/1.0"]}\n')
        out.append(
            json.dumps({"id": 2, "method": "mining.authorize", "params": [worker, "x"]}).encode() + b"\n"
        )
    body = lines - len(out)
    ending = between(rng, 0, 9)
    if ending <= 2:
        body -= 1
    for _ in range(max(0, body)):
        line = attack_line(rng, target)
        # \r\n too, unless the \r would take the line over the limit.
        out.append(line + (b"\r\n" if rng.random() < 0.25 and len(line) < MAX_LINE else b"\n"))
    if ending <= 2:
        out.append(overlong_line(rng, target) + b"\n")
        for _ in range(between(rng, 0, 3)):
            out.append(encode(valid_request(rng, target), rng) + b"\n")
    elif ending == 3:
        out[-1:] = [out[-1].rstrip(b"\r\n")]  # the last line never ends
    return b"".join(out)


def cut(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` as the ``dataReceived`` calls that deliver it."""
    mode = between(rng, 0, 6)
    if mode == 0 or not data:
        return [data]  # everything at once
    if mode == 1:
        return data.splitlines(keepends=True)  # a line at a time (\r and \n both end one here)
    if mode == 2:
        points = sorted({between(rng, 1, len(data)) for _ in range(between(rng, 1, 64))})
        return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if a < b]
    if mode == 3:
        chunks, at = [], 0
        while at < len(data):
            size = pick(rng, (1, 3, 16, 100, 1000, 4096))
            chunks.append(data[at : at + size])
            at += size
        return chunks
    if mode == 4:
        lines = data.split(b"\n")
        chunks, group = [], []
        for i, line in enumerate(lines):
            group.append(line + (b"\n" if i < len(lines) - 1 else b""))
            if rng.random() < 0.1:
                chunks.append(b"".join(group))
                group = []
        chunks.append(b"".join(group))
        return [c for c in chunks if c]
    if mode == 5:
        size = pick(rng, (8, 1500, 4096, 65536))  # one size, like TCP segments or reads
        return [data[i : i + size] for i in range(0, len(data), size)]
    # A byte at a time for a while, then in reads of 64 KiB.
    head = between(rng, 1, 500)
    return [data[i : i + 1] for i in range(min(head, len(data)))] + [
        data[i : i + 65536] for i in range(head, len(data), 65536)
    ]


# ---------------------------------------------------------------------------
# The arena: a pool, its well-behaved miners, and the attacker.


class FuzzFailure(AssertionError):
    """A property broke; the message holds the input and what went wrong."""

    def __init__(self, message: str, crash: bool = False) -> None:
        super().__init__(message)
        self.crash = crash


@dataclass
class Tally:
    """What a run of attacks did."""

    streams: int = 0
    lines: int = 0  # lines delivered to the attacker's connection
    data_received: int = 0  # dataReceived calls
    bytes: int = 0
    replies: int = 0
    errors: int = 0  # replies with an error
    closes: int = 0  # attacks on which the server closed the connection
    crashes: int = 0
    violations: int = 0

    def add(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@functools.cache
def _config(usernames: str) -> PoolConfig:
    return pool_config(ports=PORTS, usernames=usernames)


@functools.cache
def _template() -> BlockTemplate:
    return mainnet_template()


_NONCES: dict[tuple[str, bytes], int] = {}


def _share_nonce(job: Job, extranonce: bytes) -> int:
    """A nonce that meets the plain port's difficulty (every arena has the
    same job and bystander extranonce1, so this is ground once)."""
    key = (json.dumps(job.notify_params(True)), extranonce)
    if key not in _NONCES:
        target = SCRYPT.share_target(PLAIN_PORT.diff)
        _NONCES[key] = find_nonce(job, extranonce, lambda value: value <= target)
    return _NONCES[key]


def _shown(data: bytes, limit: int = 400) -> str:
    if len(data) <= limit:
        return repr(data)
    return f"{data[: limit // 2]!r} ... {data[-limit // 4 :]!r} ({len(data)} bytes)"


def _strict_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_STRICT = json.JSONDecoder(parse_constant=_strict_constant)  # no NaN, no Infinity


_UNREADABLE = object()  # the oracle could not read the line either


@dataclass(frozen=True)
class Expected:
    """The reply a line must get."""

    line: bytes
    overlong: bool = False
    request_id: Any = None
    readable: bool = True  # JSON the oracle could parse
    deep: bool = False  # nested deep enough that the server may run out of recursion


def expected_replies(delivered: bytes) -> tuple[list[Expected], bool, int]:
    """What the server must answer to ``delivered``: the replies, whether
    it closes the connection, and the number of lines delivered."""
    lines = delivered.split(b"\n")
    tail = lines.pop()
    count = len(lines) + (1 if tail else 0)
    out: list[Expected] = []
    for line in lines:
        if len(line) > MAX_LINE:
            out.append(Expected(line, overlong=True))
            return out, True, count
        request = line.strip()
        if request:
            out.append(_expect(request))
    if len(tail) > MAX_LINE:
        out.append(Expected(tail, overlong=True))
        return out, True, count
    return out, False, count


def _expect(line: bytes) -> Expected:
    try:
        message = json.loads(line)
    except RecursionError:
        return Expected(line, readable=False, deep=True)
    except ValueError:
        return Expected(line, readable=False)
    deep = line.count(b"[") + line.count(b"{") > 200  # perhaps: brackets in strings count too
    if not isinstance(message, dict):
        return Expected(line, deep=deep)
    request_id = message.get("id")
    if not isinstance(request_id, int | str) or isinstance(request_id, bool):
        request_id = None
    elif isinstance(request_id, str):
        # Echoed as JSON writes it: surrogates that came as (invalid) UTF-8
        # bytes go back as \u escapes, and a pair of them reads as one character.
        request_id = json.loads(json.dumps(request_id))
    return Expected(line, request_id=request_id, deep=deep)


def _reply_problem(reply: dict[str, Any], want: Expected) -> str | None:
    """What is wrong with ``reply`` to a line, if anything."""
    if set(reply) != {"id", "result", "error"}:
        return "not the keys id, result, error"
    error = reply["error"]
    if error is not None:
        if not (
            isinstance(error, list)
            and len(error) == 3
            and error[0] in ERROR_CODES
            and isinstance(error[1], str)
            and error[2] is None
        ):
            return "not an error member [code, message, null]"
        if reply["result"] not in (None, False):
            return "a result with an error"
        if error[1] == "internal error":
            return "internal error"
    if want.overlong:
        if reply != {"id": None, "result": None, "error": LINE_TOO_LONG}:
            return "not the line-too-long error"
        return None
    # Lines nested about as deep as the recursion limit: the server (or
    # this oracle) may give up on them, at another stack depth.
    if error is not None and error[1] == "invalid JSON":
        if want.readable and not want.deep:
            return "invalid JSON to a JSON line"
        if reply["id"] is not None:
            return "an id to a line that is not JSON"
        return None
    if not want.readable:
        return None if want.deep else "read a line that is not JSON"
    if reply["id"] != want.request_id:
        return f"not the request's id {want.request_id!r}"
    return None


@implementer(ILogObserver)
class FailureCatcher:
    """Log events of failures and errors, as text."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        failure = event.get("log_failure")
        if failure is not None:
            self.events.append(failure.getTraceback())
        elif event.get("log_level") in (LogLevel.error, LogLevel.critical):
            self.events.append(f"logged at {event['log_level'].name}: {event!r}")


@dataclass(frozen=True)
class Snapshot:
    """A bystander's state."""

    extranonce1: bytes | None
    workers: dict[str, str]
    difficulty: float
    sent: dict[str, float]
    valid_shares: int
    invalid_shares: int
    malformed: int
    user_agent: str
    vardiff: str

    @classmethod
    def of(cls, connection: Connection) -> Snapshot:
        s = connection.session
        return cls(
            s.extranonce1,
            dict(s.workers),
            s.difficulty,
            dict(s.sent),
            s.valid_shares,
            s.invalid_shares,
            s.malformed,
            s.user_agent,
            repr(s.vardiff),
        )


class Arena:
    """A fresh pool with a job, three well-behaved connections and an attacker.

    ``miner`` (plain port) and ``vardiff_miner`` subscribed and authorized;
    ``idle`` connected and said nothing. The attacker connects to the plain
    or the vardiff port, with usernames checked as addresses or not.
    """

    def __init__(self, usernames: str = "address", attacker_port: PortConfig = PLAIN_PORT) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.harness = StratumHarness(_config(usernames), self.clock)
        self.server = self.harness.server
        # A known first extranonce1, so the bystander's share is ground once.
        self.server.subscriptions.extranonces = Extranonce1Allocator(random.Random(7))
        self.job = self.harness.new_job(_template())
        self.miner = self.harness.miner(WORKER)
        self.vardiff_miner = self.harness.miner(VARDIFF_WORKER, port=VARDIFF_PORT)
        self.idle = self.harness.connect()
        self.bystanders = (self.miner, self.vardiff_miner, self.idle)
        self.attacker = self.harness.connect(attacker_port)
        self.target = Target(
            workers=(WORKER, REGTEST_ADDRESS, OTHER_ADDRESS, "rig.1", OTHER_ADDRESS + ".x"),
            job_id=self.job.job_id,
            ntime=self.job.template.curtime,
        )
        self.logged = FailureCatcher()

    def attack(self, chunks: list[bytes], rng: random.Random | None = None) -> Tally:
        """Feed ``chunks`` to the attacker, then check every property;
        FuzzFailure if one breaks. ``rng`` advances the clock between chunks."""
        globalLogPublisher.addObserver(self.logged)
        try:
            return self._attack(chunks, rng)
        finally:
            globalLogPublisher.removeObserver(self.logged)

    def _attack(self, chunks: list[bytes], rng: random.Random | None) -> Tally:
        before = {id(c): Snapshot.of(c) for c in self.bystanders}
        protocol = self.attacker.protocol
        delivered: list[bytes] = []
        tally = Tally(streams=1)
        advanced = 0.0
        for chunk in chunks:
            # A connection throttled for malformed lines has its reads paused:
            # the peer's next bytes wait in the kernel until they resume.
            self._wait_while_paused()
            if self.attacker.closing:
                # Plain TCP reads no more from a connection being closed. (TLS
                # does: it delays the close while a producer is registered, which
                # the protocol's own is. Not modelled here.)
                break
            delivered.append(chunk)
            tally.data_received += 1
            try:
                protocol.dataReceived(chunk)
            except Exception:
                raise FuzzFailure(
                    f"dataReceived raised on chunk {_shown(chunk)}\n"
                    f"after {_shown(b''.join(delivered[:-1]))}\n{traceback.format_exc()}",
                    crash=True,
                ) from None
            if self.logged.events:
                logged = "\n".join(self.logged.events)
                raise FuzzFailure(
                    f"logged on chunk {_shown(chunk)}\nafter {_shown(b''.join(delivered[:-1]))}:\n{logged}",
                    crash=True,
                )
            # Throttled, its reads paused: what waits is at most what this read brought.
            paused = self.attacker.transport.producerState == "paused"
            bound = len(chunk) + MAX_LINE if paused else MAX_LINE
            if not self.attacker.closing and len(protocol._buffer) > bound:
                raise FuzzFailure(f"{len(protocol._buffer)} bytes buffered after chunk {_shown(chunk)}")
            if rng is not None and advanced < MAX_CLOCK_ADVANCE and rng.random() < 0.2:
                step = rng.random() * 5
                advanced += step
                self.clock.advance(step)
        self._wait_while_paused()  # every line read and answered
        data = b"".join(delivered)
        tally.bytes = len(data)
        expected, closes, tally.lines = expected_replies(data)
        replies = self._replies(data)
        self._check_replies(replies, expected)
        if bool(self.attacker.closing) != closes:
            raise FuzzFailure(
                f"connection closing is {self.attacker.closing}, expected {closes}: {_shown(data)}"
            )
        if self.attacker.transport.aborted:
            raise FuzzFailure(f"connection aborted (not closed) on {_shown(data)}")
        if self.server.pipeline.in_flight:
            raise FuzzFailure(f"{self.server.pipeline.in_flight} shares still in flight after {_shown(data)}")
        tally.replies = len(replies)
        tally.errors = sum(1 for r in replies if r["error"] is not None)
        tally.closes = int(closes)
        self._check_bystanders(before, data)
        return tally

    def _wait_while_paused(self) -> None:
        transport = self.attacker.transport
        while transport.producerState == "paused" and not self.attacker.closing:
            self.clock.advance(1 / MALFORMED_RATE)

    def _replies(self, data: bytes) -> list[dict[str, Any]]:
        """The attacker's replies; every message checked for shape."""
        written: bytes = self.attacker.transport.value()
        if written and not written.endswith(b"\n"):
            raise FuzzFailure(f"unterminated message {_shown(written[-200:])} after {_shown(data)}")
        lines = written.split(b"\n")[:-1]
        try:  # all at once (the quick way), then line by line to say what is wrong
            messages = _STRICT.decode("[" + b",".join(lines).decode() + "]") if lines else []
        except ValueError:
            messages = []
        if len(messages) != len(lines) or not all(isinstance(m, dict) for m in messages):
            messages = []
            for raw in lines:
                try:
                    messages.append(_STRICT.decode(raw.decode()))
                except ValueError as e:
                    raise FuzzFailure(
                        f"wrote {_shown(raw)}, not strict JSON ({e}), fed {_shown(data)}"
                    ) from None
                if not isinstance(messages[-1], dict) or raw.strip() != raw:
                    raise FuzzFailure(f"wrote {_shown(raw)}, not one object, fed {_shown(data)}")
        replies = []
        for raw, message in zip(lines, messages, strict=True):
            if "method" in message:
                if (
                    set(message) != {"id", "method", "params"}
                    or message["id"] is not None
                    or message["method"] not in NOTIFICATIONS
                    or not isinstance(message["params"], list)
                ):
                    raise FuzzFailure(f"odd notification {_shown(raw)}, fed {_shown(data)}")
                continue
            replies.append(message)
        return replies

    def _check_replies(self, replies: list[dict[str, Any]], expected: list[Expected]) -> None:
        for i, (reply, want) in enumerate(zip(replies, expected, strict=False)):
            problem = _reply_problem(reply, want)
            if problem is not None:
                raise FuzzFailure(
                    f"{problem}: reply {reply!r} to line {i} {_shown(want.line)}",
                    crash=problem == "internal error",
                )
        if len(replies) != len(expected):
            missing = expected[len(replies)].line if len(expected) > len(replies) else b""
            raise FuzzFailure(
                f"{len(replies)} replies to {len(expected)} lines; first unanswered {_shown(missing)}; "
                f"extra {replies[len(expected) :]!r}"
            )

    def _check_bystanders(self, before: dict[int, Snapshot], data: bytes) -> None:
        for connection in self.bystanders:
            if connection.closing or connection.transport.value():
                raise FuzzFailure(
                    f"bystander closed or written to ({connection.transport.value()!r}) by {_shown(data)}"
                )
            if Snapshot.of(connection) != before[id(connection)]:
                after = Snapshot.of(connection)
                raise FuzzFailure(f"bystander changed by {_shown(data)}: {before[id(connection)]} -> {after}")
            if connection.protocol not in self.server.connections:
                raise FuzzFailure(f"bystander dropped from the server by {_shown(data)}")
        attacker_extranonce = self.attacker.session.extranonce1
        self.attacker.lose()
        used = self.server.subscriptions.extranonces._used
        for connection in self.bystanders:
            extranonce1 = connection.session.extranonce1
            if extranonce1 is not None and int.from_bytes(extranonce1, "big") not in used:
                raise FuzzFailure(f"bystander's extranonce1 released by {_shown(data)}")
        if attacker_extranonce is not None and int.from_bytes(attacker_extranonce, "big") in used:
            raise FuzzFailure(f"the attacker's extranonce1 kept after it left, fed {_shown(data)}")
        try:
            self._exchange(data)
        except FuzzFailure:
            raise
        except Exception:  # a reply the helpers could not even read
            raise FuzzFailure(
                f"bystander's exchange after {_shown(data)}:\n{traceback.format_exc()}"
            ) from None

    def _exchange(self, data: bytes) -> None:
        """The bystanders still get their work done."""
        miner = self.miner
        assert miner.session.extranonce1 is not None
        nonce = _share_nonce(self.job, miner.session.extranonce1 + EXTRANONCE2)
        steps: list[tuple[Connection, Callable[[], list[dict[str, Any]]], Any]] = [
            (miner, lambda: miner.request("mining.extranonce.subscribe"), True),
            (miner, lambda: miner.submit(submit_params(WORKER, self.job, EXTRANONCE2, nonce)), True),
            (miner, lambda: miner.request("mining.authorize", [WORKER, "x"]), True),
            (
                self.vardiff_miner,
                lambda: self.vardiff_miner.request("mining.authorize", [VARDIFF_WORKER]),
                True,
            ),
        ]
        for connection, step, result in steps:
            messages = step()
            if not messages or messages[-1] != {
                "id": messages[-1].get("id"),
                "result": result,
                "error": None,
            }:
                raise FuzzFailure(f"bystander's exchange after {_shown(data)} got {messages!r}")
            if connection.closing:
                raise FuzzFailure(f"bystander closed after {_shown(data)}")
        replies = self.idle.request("mining.subscribe", ["late/1.0"])
        extranonce1 = bytes.fromhex(replies[0]["result"][1])
        if extranonce1 in (self.miner.session.extranonce1, self.vardiff_miner.session.extranonce1):
            raise FuzzFailure(f"extranonce1 {extranonce1.hex()} handed out twice after {_shown(data)}")


def arena_for(rng: random.Random) -> Arena:
    return Arena(rng.choice(("address", "any")), rng.choice(PORTS))


@dataclass
class Stream:
    """One bulk attack, all of it made from a seed, ready to run."""

    arena: Arena
    chunks: list[bytes]
    rng: random.Random  # what is left of it advances the clock

    @classmethod
    def of(cls, seed: int, lines: int = STREAM_LINES) -> Stream:
        rng = random.Random(seed)
        arena = arena_for(rng)
        return cls(arena, cut(rng, attack_stream(rng, arena.target, lines)), rng)

    def run(self) -> Tally:
        return self.arena.attack(self.chunks, self.rng)


def run_stream(seed: int, lines: int = STREAM_LINES) -> Tally:
    """One bulk attack from ``seed``; FuzzFailure if a property breaks."""
    return Stream.of(seed, lines).run()


def iter_seeds(seed: int) -> Iterator[int]:
    """The stream seeds of a bench run."""
    master = random.Random(seed)
    while True:
        yield master.getrandbits(64)


# ---------------------------------------------------------------------------
# The tests.

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(NASTY_INTS + NASTY_FLOATS)
    | st.sampled_from(ODD_TEXTS + UNICODE_BITS)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=10,
)


class FuzzTests(SynchronousTestCase):
    """Hostile input on one connection: answered or closed, never a crash,
    and no harm to the other miners."""

    def attack(self, arena: Arena, chunks: list[bytes], rng: random.Random | None = None) -> None:
        arena.attack(chunks, rng)
        self.assertEqual(self.flushLoggedErrors(), [])

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(min_value=0, max_value=2**64 - 1))
    def test_bulk_streams(self, seed: int) -> None:
        """500 streams of 410 lines or more (over 200,000 lines): mutated requests,
        garbage, deep nesting, other encodings; cut anyhow; some end on a line
        over the limit."""
        tally = run_stream(seed)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertGreaterEqual(tally.lines, STREAM_LINES - 1)

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.randoms(use_true_random=False), st.integers(min_value=1, max_value=8))
    def test_short_streams(self, rng: random.Random, lines: int) -> None:
        """The same generators driven by hypothesis (which shrinks what fails)."""
        arena = arena_for(rng)
        self.attack(arena, cut(rng, attack_stream(rng, arena.target, lines)), rng)

    @settings(max_examples=300, deadline=None)
    @given(
        st.integers(min_value=0, max_value=2**32),
        st.sampled_from(("id", "method", "params", "param", "extra", "whole", "configure")),
        st.integers(min_value=0, max_value=6),
        json_values,
        st.booleans(),
    )
    def test_any_value_anywhere(
        self, seed: int, where: str, index: int, value: Any, ascii_only: bool
    ) -> None:
        """Any JSON value in any field of a valid request, after a valid subscribe and authorize."""
        arena = Arena()
        message = valid_request(random.Random(seed), arena.target)
        if where == "configure":
            message["method"] = "mining.configure"
            message["params"] = [["version-rolling"], {"version-rolling.mask": value}]
        elif where == "param":
            params = message["params"]
            if index < len(params):
                params[index] = value
            else:
                params.append(value)
        elif where == "extra":
            message[f"x{index}"] = value
        elif where == "whole":
            message = value
        else:
            message[where] = value
        line = json.dumps(message, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        prelude = (
            b'{"id": 1, "method": "mining.subscribe", "params": []}\n'
            b'{"id": 2, "method": "mining.authorize", "params": ["' + WORKER.encode() + b'", "x"]}\n'
        )
        self.attack(arena, [prelude + line + b"\n"])

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.binary(max_size=300), min_size=1, max_size=20),
        st.lists(st.integers(0, 6000), max_size=20),
    )
    def test_byte_garbage(self, lines: list[bytes], cuts: list[int]) -> None:
        """Any bytes, in lines, cut anywhere."""
        data = b"\n".join(lines) + b"\n"
        points = sorted({c % len(data) for c in cuts} | {0, len(data)})
        self.attack(Arena(), [data[a:b] for a, b in itertools.pairwise(points)])

    def test_edge_cases(self) -> None:
        """Each named input, at once, a byte at a time (if short) and in 1000-byte pieces."""
        head = b'{"id": 1, "method": "mining.extranonce.subscribe", "params": []'
        cases = (
            b"[" * 100_000 + b"\n",
            b"[" * 100_000,
            b"x" * (MAX_LINE + 1) + b'\n{"id": 1, "method": "mining.extranonce.subscribe"}\n',
            head + b" " * (MAX_LINE - len(head) - 1) + b"}\n",
            head + b" " * (MAX_LINE - len(head)) + b"}\n",
            b"[" * 4000 + b"]" * 4000 + b"\n",
            b'{"id": 1, "params": ' + b"[" * 3000 + b"]" * 3000 + b', "method": "mining.subscribe"}\n',
            b'{"id": ' + str(HUGE).encode() + b', "method": "mining.subscribe"}\n',
            b'{"id": -' + str(HUGE).encode() + b', "method": "mining.extranonce.subscribe"}\n',
            b'{"id": ' + b"9" * 4400 + b', "method": "mining.subscribe"}\n',
            b'{"id": NaN, "method": "mining.subscribe", "params": [NaN, Infinity, -Infinity]}\n',
            b'{"id": 1e400, "method": "mining.authorize", "params": [1e400, -1e400]}\n',
            b'{"id": 3, "method": "mining.submit", "params": ["'
            + WORKER.encode()
            + b'", "1", "00000000", "00000000", '
            + str(HUGE).encode()
            + b"]}\n",
            b'{"id": "\\ud800", "method": "mining.\\u0000", "params": ["\\udfff"]}\n',
            b'{"id": "\xed\xa0\x80", "method": "mining.subscribe\xed\xa0\x80"}\n',
            b'{"id": 1, "method": "mining.subscribe"}\x00\n',
            b"\x00" * 100 + b"\n",
            b"\xff\xfe{\x00}\x00\n",
            '{"id": 4, "method": "mining.extranonce.subscribe"}'.encode("utf-16-le") + b"\n",
            '{"id": 5, "method": "mining.extranonce.subscribe"}'.encode("utf-32") + b"\n",
            b'{"id": 6, "id": [], "method": "mining.subscribe", "method": 1}\n',
            b'{"id": 7, "method": "mining.authorize", "params": ["' + b"a" * 8000 + b'"]}\n',
            b"\r\n\r\n \t \x0b\x0c\n",
            b'{"id": 8, "method": "mining.subscribe"}{"id": 9}\n',
        )
        for data in cases:
            pieces = [[data], [data[i : i + 1000] for i in range(0, len(data), 1000)]]
            if len(data) < 400:
                pieces.append([data[i : i + 1] for i in range(len(data))])
            for chunks in pieces:
                self.attack(Arena(), chunks)
