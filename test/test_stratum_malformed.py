"""What a malformed line costs, kept to the behaviour json.dumps and
json.loads define: the error reply written without an encoder, the
parse that skips json.loads's guess of the encoding, the replies to bad
lines queued in Twisted (on real sockets: still in order with the
replies around them), and the ban book's lookup by a normalised IP.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp.stratum.banning import BanBook, BanPolicy
from nomp.stratum.errors import OTHER, StratumError, error_reply
from nomp.stratum.protocol import MAX_LINE, _parse
from test.fakes import StratumHarness, pool_config
from test.livestratum import LiveStratum, now_template
from test.test_stratum_protocol import NOW
from test.test_stratum_slow_peers import EASY_PORT, close_peer, open_peer
from test.waiting import until

ODD_IDS: tuple[Any, ...] = (
    None,
    0,
    -1,
    7,
    2**64,
    -(10**4000),
    "",
    "a",
    "\u00fc",
    "\ud800",
    '"\\',
    1.5,
    -0.0,
    math.inf,
    True,
    False,
    [1, [2, {"a": None}]],
    {"k": "v", "n": [1.5]},
)
MESSAGES: tuple[str, ...] = (
    "invalid JSON",
    "unknown method 'mining.\\u0000\"x'",
    "\u00fc\U0001f600\ud800\n\t\x00",
    "",
)
json_ids = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


def dumped(request_id: Any, code: int, message: str) -> bytes:
    """The reply as json.dumps writes it (what every reply was before)."""
    reply = {"id": request_id, "result": None, "error": [code, message, None]}
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


class ErrorReplyTests(SynchronousTestCase):
    """error_reply writes exactly what json.dumps would."""

    def test_odd_ids_and_messages(self) -> None:
        for request_id in ODD_IDS:
            for message in MESSAGES:
                with self.subTest(request_id=request_id, message=message):
                    self.assertEqual(
                        error_reply(request_id, OTHER, message), dumped(request_id, OTHER, message)
                    )

    @given(json_ids, st.integers(min_value=20, max_value=25), st.text())
    def test_any_id_and_message(self, request_id: Any, code: int, message: str) -> None:
        self.assertEqual(error_reply(request_id, code, message), dumped(request_id, code, message))

    def test_stratum_error_reply(self) -> None:
        error = StratumError(23, "low difficulty share of 0.001")
        self.assertEqual(error.reply(12), dumped(12, 23, "low difficulty share of 0.001"))

    def test_an_id_json_cannot_write(self) -> None:
        """An int past Python's int-to-text limit fails as json.dumps fails."""
        with self.assertRaises(ValueError):
            dumped(10**5000, OTHER, "x")
        with self.assertRaises(ValueError):
            error_reply(10**5000, OTHER, "x")


def loaded(line: bytes) -> tuple[str, Any]:
    """What json.loads makes of ``line``: ("ok", the value as JSON text) or the error's kind."""
    try:
        value = json.loads(line)
    except RecursionError:
        return "deep", None
    except ValueError:  # UnicodeDecodeError too
        return "error", None
    return "ok", json.dumps(value)  # comparable even with NaN inside


def parsed(line: bytes) -> tuple[str, Any]:
    try:
        value = _parse(line)
    except RecursionError:
        return "deep", None
    except ValueError:
        return "error", None
    return "ok", json.dumps(value)


class ParseTests(SynchronousTestCase):
    """_parse reads every line as json.loads does, or fails where it fails."""

    LINES: tuple[bytes, ...] = (
        b"",
        b"{}",
        b'{"id":1,"method":"mining.subscribe","params":[]}',
        b"[1]",
        b"1",
        b"-1",
        b'"a"',
        b"null",
        b"NaN",
        b"Infinity",
        b"1e400",
        b" {}",
        b"\t{}",
        b"{} ",
        b"{}\r",
        b"{}\r\n",
        b"{} \x0b",
        b"{} x",
        b"{}{}",
        b"{",
        b"}",
        b"x",
        b"GET / HTTP/1.1",
        b"\xef\xbb\xbf{}",
        b"\xff\xfe{\x00}\x00",
        b"\xfe\xff\x00{\x00}",
        b"{\x00}\x00",
        b"\x00{\x00}",
        b"1\x00",
        b"\x00\x00\x00{",
        b'{"a":"\xed\xa0\x80"}',
        b'{"a":"\xff"}',
        b'"\xc3\x28"',
        # As deep as a line the protocol passes on can be (MAX_LINE): deeper
        # lines never reach _parse, and json's C scanner would overflow the C
        # stack where a library raised the recursion limit (py-evm, imported
        # by the dev node's tests, sets 100,000).
        b"[" * MAX_LINE,
        b"[" * 4000 + b"]" * 4000,
        b"1" * 4400,
        b'{"a":1,"a":2}',
    )

    def test_lines(self) -> None:
        for line in self.LINES:
            with self.subTest(line=line[:40]):
                self.assertEqual(parsed(line), loaded(line))

    def test_other_encodings(self) -> None:
        text = json.dumps({"id": 1, "method": "mining.subscribe", "params": ["\u00fc"]}, ensure_ascii=False)
        for encoding in ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"):
            line = text.encode(encoding)
            with self.subTest(encoding=encoding):
                self.assertEqual(parsed(line), loaded(line))

    @given(st.binary(max_size=64))
    def test_any_bytes(self, line: bytes) -> None:
        self.assertEqual(parsed(line), loaded(line))

    @given(st.text(alphabet=st.sampled_from('{}[]":,01e.-+ \t\r\n\x00\\uaxtrfnl\u00fc'), max_size=40))
    def test_json_like_text(self, text: str) -> None:
        line = text.encode("utf-8", "surrogatepass")
        self.assertEqual(parsed(line), loaded(line))


class MalformedRepliesQueuedTests(SynchronousTestCase):
    """On a harness transport: the bad lines of one read answered in order with the good one."""

    def test_in_order(self) -> None:
        clock = task.Clock()
        clock.advance(NOW)
        harness = StratumHarness(pool_config(), clock)
        miner = harness.connect()
        miner.send(b'garbage\n{"id":5,"method":"mining.subscribe","params":[]}\n[]\n')
        replies = miner.read()
        self.assertEqual(replies[0], {"id": None, "result": None, "error": [20, "invalid JSON", None]})
        self.assertEqual(replies[1]["id"], 5)
        self.assertIsNone(replies[1]["error"])
        self.assertEqual(
            replies[-1], {"id": None, "result": None, "error": [20, "a request must be a JSON object", None]}
        )
        self.assertFalse(miner.closing)


class MalformedOnSocketsTests(TestCase):
    """On real loopback sockets, where good replies go straight to the socket
    and bad ones through Twisted's buffer: every reply in the order of the lines."""

    timeout = 120

    async def test_replies_in_order(self) -> None:
        config = pool_config(ports=(EASY_PORT,))
        # More bad lines than the default limit allows: no ban, the replies are the point.
        live = LiveStratum(
            dataclasses.replace(config, banning=dataclasses.replace(config.banning, malformed=None))
        )
        self.addCleanup(live.stop)
        port = await live.listen()
        live.new_job(now_template(1))
        peer = await open_peer(port)
        self.addCleanup(close_peer, peer)
        lines = []
        for n in range(200):
            lines.append(b"not json %d" % n)
            if n % 7 == 0:
                lines.append(b'{"id":%d,"method":"mining.extranonce.subscribe","params":[]}' % n)
            if n % 11 == 0:
                lines.append(b'{"id":%d,"method":"no.such.method","params":[]}' % n)
        peer.send(b"\n".join(lines) + b"\n")
        await until(lambda: peer.received.count(b"\n") >= len(lines))
        replies = [json.loads(line) for line in peer.received.splitlines()]
        expected: list[tuple[Any, Any]] = []
        for line in lines:
            if line.startswith(b"not json"):
                expected.append((None, [20, "invalid JSON", None]))
            elif b"extranonce" in line:
                expected.append((json.loads(line)["id"], None))
            else:
                request_id = json.loads(line)["id"]
                expected.append((request_id, [20, "unknown method 'no.such.method'", None]))
        self.assertEqual([(r["id"], r["error"]) for r in replies], expected)
        self.assertFalse(peer.closed)


class BanBookHeldTests(SynchronousTestCase):
    """``held`` is ``get`` for an IP already normalised; ``trusts`` with and without a whitelist."""

    def test_held(self) -> None:
        book = BanBook(BanPolicy())
        book.ban("::ffff:10.0.0.1", 100.0, reason="test")
        self.assertIs(book.held("10.0.0.1", 100.0), book.get("::ffff:10.0.0.1", 100.0))
        self.assertIsNotNone(book.held("10.0.0.1", 699.0))
        self.assertIsNone(book.held("10.0.0.1", 700.0))  # ended, and dropped
        self.assertIsNone(book.get("10.0.0.1", 100.0))

    def test_trusts(self) -> None:
        address = ipaddress.ip_address("10.0.0.1")
        self.assertFalse(BanPolicy().trusts(address))
        self.assertTrue(BanPolicy(whitelist=(ipaddress.ip_network("10.0.0.0/8"),)).trusts(address))
        self.assertFalse(BanPolicy(whitelist=(ipaddress.ip_network("10.1.0.0/16"),)).trusts(address))
