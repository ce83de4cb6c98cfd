"""The Redis schema: key names and encodings, the same from Python and from the
Lua prelude (run in a real redis-server), the round policies a pool's payment
scheme picks, and what Redis's error replies are taken for."""

from __future__ import annotations

import txredisapi
from twisted.internet import error
from twisted.trial.unittest import SynchronousTestCase

from nomp.config import PaymentsConfig
from nomp.payments.ledger import PendingBlock
from nomp.payments.rounds import PROP, SOLO, pplns, round_policy
from nomp.store.redis import refusal, unavailable_reply
from nomp.store.schema import (
    LUA_PRELUDE,
    PendingMember,
    PoolKeys,
    decode_pending_member,
    decode_segment,
    decode_set_aside,
    encode_segment,
    encode_set_aside,
    hashrate_member,
    parse_hashrate_member,
    pending_member,
    pending_member_hash,
)
from nomp.web.stats import parse_block
from test.servers import RedisReplyError, shared_redis

DB = 7
KEYS = PoolKeys.for_coin("Litecoin")


def lua(body: str, *args: str | int | float) -> object:
    """``body`` run after the prelude in the shared redis-server, ``args`` as ARGV."""
    return shared_redis().command("EVAL", LUA_PRELUDE + body, 0, *args, db=DB)


class KeyTests(SynchronousTestCase):
    """Key names, built the same way in Python and in Lua."""

    def test_names(self) -> None:
        """The pool's keys are NOMP's, under the coin's name in lower case."""
        self.assertEqual(KEYS.coin, "litecoin")
        self.assertEqual(KEYS.round(12), "litecoin:shares:round12")
        self.assertEqual(KEYS.round_taken(12, "ab"), "litecoin:shares:round12:ab")
        self.assertEqual(KEYS.block("ab"), "litecoin:block:ab")
        self.assertEqual(KEYS.blocks_candidates, "litecoin:blocksCandidates")
        self.assertEqual(KEYS.recorder_set_aside, "litecoin:recorder:setAside")

    def test_lua_keys_match(self) -> None:
        """The prelude's key functions name exactly what PoolKeys names."""
        names = lua(
            "return {round_key(ARGV[1], ARGV[2]), round_key_taken(round_key(ARGV[1], ARGV[2]), ARGV[3]),"
            " block_key(ARGV[1], ARGV[3])}",
            KEYS.coin,
            12,
            "ab",
        )
        self.assertEqual(names, [KEYS.round(12), KEYS.round_taken(12, "ab"), KEYS.block("ab")])


class MemberTests(SynchronousTestCase):
    """Set and sorted-set members: encoded once, read the same everywhere."""

    def test_hashrate_member(self) -> None:
        """A hashrate member reads back as (difficulty, worker), a worker with colons too; anything
        else is None."""
        member = hashrate_member(-0.125, "addr:rig", 1700000000250, "x1")
        self.assertEqual(member, "-0.125:addr:rig:1700000000250:x1")
        self.assertEqual(parse_hashrate_member(member), (-0.125, "addr:rig"))
        for junk in ("", "1:2", "x:w:1:2", "1::1:2"):
            self.assertIsNone(parse_hashrate_member(junk), junk)
        read = lua("local d, worker = hashrate_fields(ARGV[1]) return {number(d), worker}", member)
        self.assertEqual(read, ["-0.125", "addr:rig"])

    def test_pending_member(self) -> None:
        """A blocksPending member round-trips, "-" standing for an unknown txid, a worker with
        colons kept whole; the payment ledger and the stats read it so."""
        member = pending_member("ab", None, 7, "addr:rig", 1234)
        self.assertEqual(member, "ab:-:7:addr:rig:1234")
        self.assertEqual(decode_pending_member(member), PendingMember("ab", None, 7, "addr:rig", 1234))
        self.assertEqual(decode_pending_member(member).encode(), member)
        self.assertEqual(pending_member_hash(member), "ab")
        self.assertEqual(lua("return pending_member_hash(ARGV[1])", member), "ab")
        block = PendingBlock.parse(member, {"round": KEYS.round(7)})
        self.assertEqual((block.hash, block.txid, block.height, block.worker), ("ab", None, 7, "addr:rig"))
        info = parse_block("ab:cd:7:addr:rig:1234", "pending", {})
        assert info is not None
        self.assertEqual((info.txid, info.worker, info.time), ("cd", "addr:rig", 1.234))

    def test_bad_pending_members(self) -> None:
        """What is not a blocksPending member raises ValueError (the stats skip it)."""
        for junk in ("", "ab:cd:7:w", "ab:cd:x:w:1", "ab:cd:7:w:x", ":cd:7:w:1"):
            self.assertRaises(ValueError, decode_pending_member, junk)
            self.assertIsNone(parse_block(junk, "pending", {}), junk)


class SegmentTests(SynchronousTestCase):
    """The PPLNS share log's segments."""

    def test_round_trip(self) -> None:
        """A segment holds its sum and its shares in order."""
        entries = [("alice", 1.5), ("bob", 0.25), ("alice", 8.0)]
        segment = encode_segment(entries)
        self.assertEqual(segment, "9.75\nalice\t1.5\nbob\t0.25\nalice\t8.0")
        self.assertEqual(decode_segment(segment), (9.75, entries))

    def test_lua_reads_and_writes_the_same(self) -> None:
        """The prelude's segment functions read a Python segment and write one Python reads."""
        segment = encode_segment([("alice", 1.5), ("bob", 0.25)])
        read = lua(
            "local out = {number(segment_sum(ARGV[1]))}"
            " for _, e in ipairs(segment_entries(ARGV[1])) do"
            "   out[#out + 1] = e[1]; out[#out + 1] = number(e[2])"
            " end"
            " return out",
            segment,
        )
        self.assertEqual(read, ["1.75", "alice", "1.5", "bob", "0.25"])
        written = lua(
            "return segment_encode(1.75, {segment_line('alice', '1.5'), segment_line('bob', '0.25')})"
        )
        self.assertEqual(decode_segment(str(written)), (1.75, [("alice", 1.5), ("bob", 0.25)]))


class SetAsideEntryTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """A set-aside entry keeps the reason, time, recorder, batch number and records."""
        text = encode_set_aside("WRONGTYPE x", 1.5, "r1", 3, ["s\ta", "i\tb"])
        entry = decode_set_aside(text)
        self.assertEqual(
            (entry.reason, entry.time, entry.recorder, entry.batch, entry.records),
            ("WRONGTYPE x", 1.5, "r1", 3, ("s\ta", "i\tb")),
        )


class LuaPreludeTests(SynchronousTestCase):
    def test_wrong_type(self) -> None:
        """wrong_type passes a missing key or one of the expected type and names any other."""
        redis = shared_redis()
        key = "schema-test:wrong-type"
        redis.command("SET", key, "x", db=DB)
        self.addCleanup(redis.command, "DEL", key, db=DB)
        self.assertEqual(lua("return {wrong_type(ARGV[1], 'string') or 'ok'}", key), ["ok"])
        self.assertEqual(lua("return {wrong_type(ARGV[1] .. 'none', 'hash') or 'ok'}", key), ["ok"])
        self.assertEqual(
            lua("return wrong_type(ARGV[1], 'hash')", key), f"WRONGTYPE {key} holds a string, not a hash"
        )

    def test_parse_records(self) -> None:
        """Records with the wrong number of fields, or a candidate that is not JSON, are refused."""
        self.assertEqual(lua("local r = parse_records(ARGV[1]) return #r", "s\ta\t1\t2\tm\ni\t2\tm"), 2)
        for junk in ("s\ta\t1", "c\tab\tnot json", "z\tx", "a\tab\textra"):
            why = str(lua("local r, why = parse_records(ARGV[1]) return why", junk))
            self.assertEqual(
                why.split(":", 1)[0], "malformed candidate" if junk[0] == "c" else "malformed record"
            )
        self.assertRaises(RedisReplyError, lua, "return no_such_function()")


class RoundPolicyTests(SynchronousTestCase):
    """A pool's payment scheme picks its round policy."""

    def test_by_scheme(self) -> None:
        self.assertIs(round_policy(PaymentsConfig()), PROP)
        self.assertIs(round_policy(PaymentsConfig(scheme="solo")), SOLO)
        policy = round_policy(PaymentsConfig(scheme="pplns", pplns_window=250.0))
        self.assertEqual((policy.scheme, policy.args), ("pplns", ("250.0",)))
        self.assertEqual(policy.keys(KEYS), (KEYS.share_log, KEYS.share_log_total))
        self.assertEqual(PROP.keys(KEYS), ())

    def test_pplns_window_checked(self) -> None:
        """A PPLNS window must be above zero."""
        self.assertRaises(ValueError, pplns, 0.0)
        self.assertRaises(ValueError, pplns, -1.0)

    def test_fragments_define_the_contract(self) -> None:
        """Every policy's Lua defines what the recorder's script calls."""
        for policy in (PROP, SOLO, pplns(1.0)):
            for name in ("policy_check", "policy_share", "policy_flush", "policy_close", "policy_reopen"):
                self.assertIn(name, policy.fragment, (policy.scheme, name))
            self.assertIn("local function finder_close", policy.fragment)


class ErrorReplyTests(SynchronousTestCase):
    """Which errors mean "Redis refused this" and which "Redis cannot take it just now"."""

    def test_refusals(self) -> None:
        """Script errors and wrong types are refusals, with their reason."""
        for reply in ("WRONGTYPE Operation against a key", "Error running script", "malformed record: x"):
            self.assertEqual(refusal(txredisapi.ResponseError(reply)), reply)
            self.assertFalse(unavailable_reply(txredisapi.ResponseError(reply)))

    def test_unavailable(self) -> None:
        """Busy, loading, read-only, out of memory or disk, credentials: not refusals."""
        for reply in ("BUSY Redis is busy", "LOADING", "READONLY You can't write", "OOM command not allowed"):
            self.assertIsNone(refusal(txredisapi.ResponseError(reply)))
            self.assertTrue(unavailable_reply(txredisapi.ResponseError(reply)))

    def test_not_replies(self) -> None:
        """Errors that are not Redis replies are neither."""
        for exception in (txredisapi.ConnectionError("x"), error.ConnectionLost(), TypeError("bug")):
            self.assertIsNone(refusal(exception))
            self.assertFalse(unavailable_reply(exception))
