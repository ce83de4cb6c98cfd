"""Banning and connection limits, pure: every call with an explicit ``now``."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from twisted.trial.unittest import SynchronousTestCase

from nomp.stratum.banning import (
    ACCEPTED,
    Admission,
    Ban,
    BanBook,
    BanPolicy,
    Gatekeeper,
    InvalidShareLimit,
    Limit,
    RecentEvents,
    Refusal,
    ShareTally,
    normalise_ip,
)

T0 = 1_000.0  # a start time away from zero, so no edge hides behind it
LOCALHOST = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def shares(gate: Gatekeeper, ip: str, valid: bool, count: int, now: float) -> list[Ban | None]:
    """``count`` shares from ``ip``, all at ``now``: what each returned."""
    return [gate.share(ip, valid, now) for _ in range(count)]


def nth_ip(n: int) -> str:
    """The n-th of a run of distinct addresses, IPv4 and IPv6 alternately."""
    if n % 2:
        return str(ipaddress.IPv6Address((0x2001_0DB8 << 96) + n))
    return str(ipaddress.IPv4Address(0x0A00_0000 + n))


class NormaliseTests(SynchronousTestCase):
    """One spelling per address."""

    def test_ipv4(self) -> None:
        """IPv4 is kept as it is."""
        self.assertEqual(normalise_ip("192.0.2.7"), "192.0.2.7")

    def test_ipv6_spellings(self) -> None:
        """Upper case, leading zeros and uncompressed zeros all give the compressed lower-case form."""
        for spelling in ("2001:DB8::1", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8:0::0:1"):
            self.assertEqual(normalise_ip(spelling), "2001:db8::1")

    def test_ipv4_mapped(self) -> None:
        """An IPv4-mapped IPv6 address, in either notation, is the IPv4 address."""
        for spelling in ("::ffff:192.0.2.7", "::FFFF:c000:0207", "0:0:0:0:0:ffff:192.0.2.7"):
            self.assertEqual(normalise_ip(spelling), "192.0.2.7")

    def test_zone_dropped(self) -> None:
        """A link-local zone names no other host: it is dropped."""
        self.assertEqual(normalise_ip("fe80::1%eth0"), "fe80::1")

    def test_not_an_ip(self) -> None:
        """Anything that is not an IP address is a ValueError."""
        for text in ("", "pool.example.com", "1.2.3", "1.2.3.4:3333", "::g"):
            self.assertRaises(ValueError, normalise_ip, text)


class PolicyTests(SynchronousTestCase):
    """Settings are checked when made."""

    def test_defaults(self) -> None:
        """By default nothing bans or limits; an operator's ban lasts 600 s."""
        policy = BanPolicy()
        self.assertEqual(policy.ban_duration, 600.0)
        self.assertEqual(
            (policy.invalid_shares, policy.malformed, policy.failed_auth, policy.connect_rate),
            (None, None, None, None),
        )
        self.assertEqual((policy.connections_per_ip, policy.connections_total), (None, None))

    def test_rejects_nonsense(self) -> None:
        """Non-positive durations and windows, negative limits and out-of-range percentages are refused."""
        self.assertRaises(ValueError, Limit, -1, 10.0)
        self.assertRaises(ValueError, Limit, 1, 0.0)
        self.assertRaises(ValueError, Limit, 1, float("nan"))
        self.assertRaises(ValueError, InvalidShareLimit, 0.0, 10, 60.0)
        self.assertRaises(ValueError, InvalidShareLimit, 100.5, 10, 60.0)
        self.assertRaises(ValueError, InvalidShareLimit, 50.0, 0, 60.0)
        self.assertRaises(ValueError, InvalidShareLimit, 50.0, 10, -1.0)
        self.assertRaises(ValueError, InvalidShareLimit, 50.0, 10, 60.0, 0)
        self.assertRaises(ValueError, BanPolicy, ban_duration=0.0)
        self.assertRaises(ValueError, BanPolicy, connections_per_ip=-1)
        self.assertRaises(ValueError, BanPolicy, connections_total=-1)
        self.assertRaises(ValueError, BanPolicy, max_tracked_ips=0)
        self.assertRaises(ValueError, BanPolicy, max_bans=0)

    def test_frozen(self) -> None:
        """A policy can't be changed after it is made."""
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, BanPolicy(), "ban_duration", 1.0)

    def test_trusts(self) -> None:
        """Whitelisted networks match both families; an IPv4 address never matches an IPv6 network."""
        policy = BanPolicy(whitelist=LOCALHOST)
        trusts = [policy.trusts(ipaddress.ip_address(ip)) for ip in ("127.9.9.9", "::1", "10.0.0.1", "::2")]
        self.assertEqual(trusts, [True, True, False, False])


class RecentEventsTests(SynchronousTestCase):
    """An exact sliding window of event times, bounded by the limit."""

    def test_limit(self) -> None:
        """``count`` events within the window are allowed; the next breaks the limit."""
        events = RecentEvents(Limit(3, 10.0))
        self.assertEqual([events.note(T0 + t) for t in (0, 1, 2, 3)], [False, False, False, True])

    def test_window_is_exact(self) -> None:
        """An event is remembered until exactly ``window`` seconds have passed."""
        events = RecentEvents(Limit(1, 10.0))
        events.note(T0)
        self.assertEqual(events.count(T0 + 9.999), 1)
        self.assertEqual(events.count(T0 + 10.0), 0)

    def test_memory_bounded(self) -> None:
        """Only the last ``count`` times are kept, whatever the event rate."""
        events = RecentEvents(Limit(3, 1e9))
        for t in range(1000):
            events.note(T0 + t)
        self.assertEqual(events.count(T0 + 1000), 3)

    def test_zero(self) -> None:
        """A limit of 0 is broken by the first event."""
        self.assertTrue(RecentEvents(Limit(0, 10.0)).note(T0))


class ShareTallyTests(SynchronousTestCase):
    """Valid and invalid shares in a bucketed window."""

    def test_counts(self) -> None:
        """Valid and invalid shares are counted apart."""
        tally = ShareTally(10.0, 10)
        for valid in (True, False, True):
            tally.add(valid, T0)
        self.assertEqual((tally.valid, tally.invalid, tally.total), (2, 1, 3))

    def test_expiry_bounds(self) -> None:
        """A share is forgotten at most ``window`` after it was sent, and kept at least one slice less."""
        tally = ShareTally(10.0, 10)  # 1 s slices
        tally.add(False, T0 + 0.5)
        tally.expire(T0 + 9.999)  # 9.499 s later: kept
        self.assertEqual(tally.invalid, 1)
        tally.expire(T0 + 10.0)  # 9.5 s later: its slice has left the window
        self.assertEqual(tally.invalid, 0)
        tally.add(True, T0 + 20.0)
        tally.expire(T0 + 29.999)
        self.assertEqual(tally.valid, 1)
        tally.expire(T0 + 30.0)  # exactly the window
        self.assertEqual(tally.valid, 0)

    def test_sliding(self) -> None:
        """Old slices leave one by one while newer ones stay."""
        tally = ShareTally(10.0, 10)
        for t in range(10):
            tally.add(False, T0 + t)
        tally.expire(T0 + 13.0)
        self.assertEqual(tally.invalid, 6)

    def test_memory_bounded(self) -> None:
        """Memory is one entry per slice: a million shares in a second take one."""
        tally = ShareTally(10.0, 10)
        for _ in range(10_000):
            tally.add(True, T0)
        self.assertEqual(len(tally._slices), 1)

    def test_clock_stepping_back(self) -> None:
        """A share from an earlier time than the newest slice is counted in that slice."""
        tally = ShareTally(10.0, 10)
        tally.add(True, T0 + 5)
        tally.add(False, T0 + 2)
        self.assertEqual((tally.total, len(tally._slices)), (2, 1))


class BanBookTests(SynchronousTestCase):
    """Bans by IP, in seconds, that end on time."""

    def setUp(self) -> None:
        self.book = BanBook(BanPolicy(ban_duration=600.0, whitelist=LOCALHOST))

    def test_ban(self) -> None:
        """A ban uses the policy's duration unless given one, and keeps its reason."""
        ban = self.book.ban("192.0.2.1", T0, reason="by hand")
        self.assertEqual(ban, Ban("192.0.2.1", T0 + 600.0, "by hand"))
        other = self.book.ban("192.0.2.2", T0, duration=30.0, reason="short")
        self.assertEqual(other, Ban("192.0.2.2", T0 + 30.0, "short"))
        self.assertTrue(self.book.is_banned("192.0.2.1", T0))
        self.assertFalse(self.book.is_banned("192.0.2.3", T0))

    def test_expires_exactly_on_time(self) -> None:
        """A ban is in force until its expiry, in seconds, and ends exactly then (NOMP ended it early)."""
        self.book.ban("192.0.2.1", T0, duration=600.0, reason="x")
        self.assertTrue(self.book.is_banned("192.0.2.1", T0 + 599.999))
        self.assertFalse(self.book.is_banned("192.0.2.1", T0 + 600.0))
        self.assertEqual(self.book.list(T0 + 600.0), ())

    def test_remaining(self) -> None:
        """A ban tells how long it has left, never less than nothing."""
        ban = Ban("192.0.2.1", T0 + 600.0, "x")
        self.assertEqual((ban.remaining(T0 + 100), ban.remaining(T0 + 700)), (500.0, 0.0))

    def test_bad_duration(self) -> None:
        """A ban of no time, negative time or NaN is a ValueError."""
        for duration in (0.0, -1.0, float("nan")):
            self.assertRaises(ValueError, self.book.ban, "192.0.2.1", T0, duration=duration, reason="x")

    def test_rebanning_replaces(self) -> None:
        """A new ban on a banned IP replaces the old one, even a shorter one."""
        self.book.ban("192.0.2.1", T0, reason="first")
        ban = self.book.ban("192.0.2.1", T0 + 10, duration=5.0, reason="second")
        self.assertEqual(self.book.list(T0 + 10), (ban,))

    def test_spelling_cannot_dodge(self) -> None:
        """A ban holds whatever spelling the IP comes back with."""
        self.book.ban("::ffff:192.0.2.1", T0, reason="x")
        self.book.ban("2001:DB8::1", T0, reason="x")
        self.assertTrue(self.book.is_banned("192.0.2.1", T0))
        self.assertTrue(self.book.is_banned("2001:db8:0:0::1", T0))
        self.assertEqual([ban.ip for ban in self.book.list(T0)], ["192.0.2.1", "2001:db8::1"])

    def test_whitelisted_never_banned(self) -> None:
        """Banning a whitelisted IP does nothing and says so with None."""
        self.assertIsNone(self.book.ban("127.0.0.1", T0, reason="x"))
        self.assertIsNone(self.book.ban("::ffff:127.0.0.1", T0, reason="x"))
        self.assertFalse(self.book.is_banned("127.0.0.1", T0))

    def test_lift(self) -> None:
        """Lifting ends a ban at once, by any spelling; lifting an unbanned IP says False."""
        self.book.ban("192.0.2.1", T0, reason="x")
        self.assertTrue(self.book.lift("::ffff:192.0.2.1"))
        self.assertFalse(self.book.is_banned("192.0.2.1", T0))
        self.assertFalse(self.book.lift("192.0.2.1"))

    def test_list(self) -> None:
        """list gives the bans in force with expiry and reason, soonest to end first."""
        self.book.ban("192.0.2.1", T0, duration=300.0, reason="long")
        self.book.ban("192.0.2.2", T0, duration=100.0, reason="short")
        self.book.ban("192.0.2.3", T0, duration=10.0, reason="gone")
        self.assertEqual(
            self.book.list(T0 + 50),
            (Ban("192.0.2.2", T0 + 100, "short"), Ban("192.0.2.1", T0 + 300, "long")),
        )

    def test_load(self) -> None:
        """Stored bans are restored; ended, whitelisted and unparseable ones are skipped."""
        restored = self.book.load(
            {
                "192.0.2.1": T0 + 100,
                "::FFFF:192.0.2.2": T0 + 200,
                "192.0.2.3": T0,  # ends exactly now
                "192.0.2.4": T0 - 1,
                "192.0.2.5": float("nan"),
                "127.0.0.1": T0 + 100,
                "not an ip": T0 + 100,
            },
            T0,
        )
        self.assertEqual(restored, 2)
        self.assertEqual(
            self.book.list(T0),
            (Ban("192.0.2.1", T0 + 100, "restored"), Ban("192.0.2.2", T0 + 200, "restored")),
        )

    def test_load_keeps_longer_ban(self) -> None:
        """Loading does not shorten a ban already held, but does lengthen it."""
        self.book.ban("192.0.2.1", T0, duration=500.0, reason="held")
        self.book.ban("192.0.2.2", T0, duration=5.0, reason="held")
        restored = self.book.load({"192.0.2.1": T0 + 100, "192.0.2.2": T0 + 100}, T0, reason="stored")
        self.assertEqual(restored, 1)
        self.assertEqual(
            self.book.list(T0),
            (Ban("192.0.2.2", T0 + 100, "stored"), Ban("192.0.2.1", T0 + 500, "held")),
        )

    def test_purge(self) -> None:
        """purge drops the bans that have ended and says how many."""
        self.book.ban("192.0.2.1", T0, duration=10.0, reason="x")
        self.book.ban("192.0.2.2", T0, duration=20.0, reason="x")
        self.assertEqual(self.book.purge(T0 + 10), 1)
        self.assertEqual(self.book.purge(T0 + 10), 0)
        self.assertEqual(len(self.book._bans), 1)

    def test_max_bans(self) -> None:
        """At max_bans the oldest ban makes room for the new one."""
        book = BanBook(BanPolicy(max_bans=2))
        for n in range(1, 4):
            book.ban(f"192.0.2.{n}", T0 + n, reason="x")
        self.assertEqual([ban.ip for ban in book.list(T0 + 3)], ["192.0.2.2", "192.0.2.3"])


class InvalidShareTests(SynchronousTestCase):
    """Banning for a high ratio of invalid shares within a window."""

    def setUp(self) -> None:
        self.policy = BanPolicy(
            ban_duration=300.0, invalid_shares=InvalidShareLimit(percent=50.0, min_shares=10, window=60.0)
        )
        self.gate = Gatekeeper(self.policy)

    def test_not_judged_before_min_shares(self) -> None:
        """Nine invalid shares of nine are not judged; the tenth is."""
        self.assertEqual(shares(self.gate, "192.0.2.1", False, 9, T0), [None] * 9)
        ban = self.gate.share("192.0.2.1", False, T0)
        self.assertEqual(ban, Ban("192.0.2.1", T0 + 300.0, "10 of the last 10 shares were invalid"))
        self.assertTrue(self.gate.bans.is_banned("192.0.2.1", T0))

    def test_exactly_at_threshold_bans(self) -> None:
        """A ratio exactly at the threshold bans (>=, as NOMP)."""
        shares(self.gate, "192.0.2.1", True, 5, T0)
        self.assertEqual(shares(self.gate, "192.0.2.1", False, 4, T0), [None] * 4)
        ban = self.gate.share("192.0.2.1", False, T0)  # 5 of 10: 50 %
        self.assertIsNotNone(ban)

    def test_below_threshold(self) -> None:
        """A ratio just below the threshold does not ban, however many shares."""
        gate = Gatekeeper(dataclasses.replace(self.policy, invalid_shares=InvalidShareLimit(33.4, 3, 60.0)))
        results = []
        for _ in range(100):  # 1 in 3 is 33.3 %
            results += shares(gate, "192.0.2.1", True, 2, T0)
            results += shares(gate, "192.0.2.1", False, 1, T0)
        self.assertEqual(results, [None] * 300)

    def test_valid_share_can_complete_judgement(self) -> None:
        """The share that reaches min_shares is judged even if valid."""
        shares(self.gate, "192.0.2.1", False, 9, T0)
        self.assertIsNotNone(self.gate.share("192.0.2.1", True, T0))  # 9 of 10

    def test_old_sins_expire(self) -> None:
        """Shares older than the window no longer count, so a miner that improved is not banned.

        NOMP's counters never reset: 10 invalid of 19 would have banned here.
        """
        shares(self.gate, "192.0.2.1", False, 9, T0)
        later = T0 + 60.0
        results = shares(self.gate, "192.0.2.1", True, 9, later) + shares(
            self.gate, "192.0.2.1", False, 1, later
        )
        self.assertEqual(results, [None] * 10)

    def test_old_sins_within_window_count(self) -> None:
        """The same shares within the window do ban: the window is what forgave them."""
        shares(self.gate, "192.0.2.1", False, 9, T0)
        self.assertIsNotNone(self.gate.share("192.0.2.1", True, T0 + 40.0))  # 9 of 10 invalid

    def test_per_ip(self) -> None:
        """Counts are per IP (across its connections, by any spelling), not shared between IPs."""
        shares(self.gate, "192.0.2.1", False, 5, T0)
        shares(self.gate, "192.0.2.2", False, 9, T0)
        self.assertEqual(shares(self.gate, "::ffff:192.0.2.1", False, 4, T0), [None] * 4)
        self.assertIsNotNone(self.gate.share("192.0.2.1", False, T0))

    def test_clean_slate_after_ban(self) -> None:
        """A ban wipes the IP's evidence: after it ends, one invalid share is not judged."""
        shares(self.gate, "192.0.2.1", False, 10, T0)
        self.assertEqual(self.gate.tracked_ips, 0)
        self.assertIsNone(self.gate.share("192.0.2.1", False, T0 + 300.0))

    def test_banned_ip_ignored(self) -> None:
        """Shares from an IP already banned are not counted and earn no new ban."""
        shares(self.gate, "192.0.2.1", False, 10, T0)
        self.assertEqual(shares(self.gate, "192.0.2.1", False, 20, T0 + 1), [None] * 20)
        self.assertEqual(self.gate.bans.list(T0 + 1)[0].expires_at, T0 + 300.0)

    def test_whitelisted(self) -> None:
        """A whitelisted IP is never banned for invalid shares."""
        gate = Gatekeeper(dataclasses.replace(self.policy, whitelist=LOCALHOST))
        self.assertEqual(shares(gate, "::1", False, 100, T0), [None] * 100)
        self.assertEqual(gate.tracked_ips, 0)

    def test_disabled(self) -> None:
        """With no invalid-share rule, nothing is counted or banned."""
        gate = Gatekeeper(BanPolicy())
        self.assertEqual(shares(gate, "192.0.2.1", False, 1000, T0), [None] * 1000)
        self.assertEqual(gate.tracked_ips, 0)


class CountedBanTests(SynchronousTestCase):
    """Banning for malformed messages and failed authorizations."""

    def setUp(self) -> None:
        self.gate = Gatekeeper(
            BanPolicy(
                ban_duration=60.0, malformed=Limit(2, 10.0), failed_auth=Limit(3, 30.0), whitelist=LOCALHOST
            )
        )

    def test_malformed(self) -> None:
        """Two malformed messages within the window are tolerated; the third bans."""
        self.assertEqual([self.gate.malformed("192.0.2.1", T0 + t) for t in (0, 1)], [None, None])
        ban = self.gate.malformed("192.0.2.1", T0 + 9.9)
        self.assertEqual(ban, Ban("192.0.2.1", T0 + 69.9, "more than 2 malformed messages in 10 s"))

    def test_malformed_spread_out(self) -> None:
        """Malformed messages further apart than the window never add up to a ban."""
        self.assertEqual([self.gate.malformed("192.0.2.1", T0 + 5 * t) for t in range(100)], [None] * 100)

    def test_auth_failed(self) -> None:
        """Three failed authorizations within the window are tolerated; the fourth bans."""
        results = [self.gate.auth_failed("2001:db8::1", T0 + t) for t in (0, 10, 20, 29)]
        self.assertEqual(results[:3], [None] * 3)
        self.assertEqual(results[3], Ban("2001:db8::1", T0 + 89, "more than 3 failed authorizations in 30 s"))

    def test_auth_failed_expires(self) -> None:
        """A failure exactly one window old no longer counts."""
        results = [self.gate.auth_failed("192.0.2.1", T0 + t) for t in (0, 10, 20, 30)]
        self.assertEqual(results, [None] * 4)

    def test_rules_count_apart(self) -> None:
        """Malformed messages and failed authorizations are counted separately."""
        results = [self.gate.malformed("192.0.2.1", T0), self.gate.malformed("192.0.2.1", T0)]
        results += [self.gate.auth_failed("192.0.2.1", T0) for _ in range(3)]
        self.assertEqual(results, [None] * 5)

    def test_zero_tolerance(self) -> None:
        """A limit of 0 bans on the first event."""
        gate = Gatekeeper(BanPolicy(malformed=Limit(0, 10.0)))
        self.assertIsNotNone(gate.malformed("192.0.2.1", T0))

    def test_whitelisted(self) -> None:
        """A whitelisted IP is never banned for either."""
        results = [self.gate.malformed("127.0.0.1", T0) for _ in range(10)]
        results += [self.gate.auth_failed("127.0.0.1", T0) for _ in range(10)]
        self.assertEqual(results, [None] * 20)

    def test_disabled(self) -> None:
        """With the rules off, nothing bans."""
        gate = Gatekeeper(BanPolicy())
        results = [gate.malformed("192.0.2.1", T0) for _ in range(10)]
        results += [gate.auth_failed("192.0.2.1", T0) for _ in range(10)]
        self.assertEqual(results, [None] * 20)


class AdmissionTests(SynchronousTestCase):
    """Connection admission: bans, per-IP limit, total limit, rate."""

    def test_accepted(self) -> None:
        """With no limits every connection is accepted and counted."""
        gate = Gatekeeper(BanPolicy())
        self.assertEqual([gate.admit("192.0.2.1", T0) for _ in range(3)], [ACCEPTED] * 3)
        self.assertTrue(ACCEPTED.accepted)
        self.assertEqual((gate.connections("192.0.2.1"), gate.open_connections), (3, 3))

    def test_banned(self) -> None:
        """A banned IP is refused with its ban until the ban ends, then admitted."""
        gate = Gatekeeper(BanPolicy())
        ban = gate.bans.ban("192.0.2.1", T0, duration=10.0, reason="x")
        admission = gate.admit("::ffff:192.0.2.1", T0 + 9.999)
        self.assertEqual(admission, Admission(Refusal.BANNED, ban))
        self.assertFalse(admission.accepted)
        self.assertEqual(gate.admit("192.0.2.1", T0 + 10.0), ACCEPTED)

    def test_per_ip_limit(self) -> None:
        """An IP may hold connections_per_ip connections; others are not affected."""
        gate = Gatekeeper(BanPolicy(connections_per_ip=2))
        results = [gate.admit("192.0.2.1", T0).refusal for _ in range(3)]
        self.assertEqual(results, [None, None, Refusal.TOO_MANY_FROM_IP])
        self.assertEqual(gate.admit("192.0.2.2", T0), ACCEPTED)
        self.assertEqual(gate.connections("192.0.2.1"), 2)

    def test_per_ip_limit_by_any_spelling(self) -> None:
        """Spelling the address differently does not give more connections."""
        gate = Gatekeeper(BanPolicy(connections_per_ip=1))
        gate.admit("2001:db8::1", T0)
        self.assertEqual(gate.admit("2001:DB8:0::1", T0).refusal, Refusal.TOO_MANY_FROM_IP)
        gate.admit("192.0.2.1", T0)
        self.assertEqual(gate.admit("::ffff:192.0.2.1", T0).refusal, Refusal.TOO_MANY_FROM_IP)

    def test_total_limit(self) -> None:
        """At most connections_total connections are open in all."""
        gate = Gatekeeper(BanPolicy(connections_total=3))
        results = [gate.admit(f"192.0.2.{n}", T0).refusal for n in range(5)]
        self.assertEqual(results, [None, None, None, Refusal.TOO_MANY_TOTAL, Refusal.TOO_MANY_TOTAL])
        self.assertEqual(gate.open_connections, 3)

    def test_per_ip_checked_before_total(self) -> None:
        """When both limits are reached the more specific reason is given."""
        gate = Gatekeeper(BanPolicy(connections_per_ip=1, connections_total=1))
        gate.admit("192.0.2.1", T0)
        self.assertEqual(gate.admit("192.0.2.1", T0).refusal, Refusal.TOO_MANY_FROM_IP)
        self.assertEqual(gate.admit("192.0.2.2", T0).refusal, Refusal.TOO_MANY_TOTAL)

    def test_closing_frees_slots(self) -> None:
        """A closed connection frees its slot in both limits."""
        gate = Gatekeeper(BanPolicy(connections_per_ip=1, connections_total=2))
        gate.admit("192.0.2.1", T0)
        gate.admit("192.0.2.2", T0)
        gate.connection_closed("::ffff:192.0.2.1")
        self.assertEqual((gate.connections("192.0.2.1"), gate.open_connections), (0, 1))
        self.assertEqual(gate.admit("192.0.2.1", T0), ACCEPTED)
        self.assertEqual(gate.admit("192.0.2.3", T0).refusal, Refusal.TOO_MANY_TOTAL)

    def test_closing_unknown_ignored(self) -> None:
        """Closing a connection that wasn't open never makes counts negative."""
        gate = Gatekeeper(BanPolicy(connections_per_ip=1))
        gate.connection_closed("192.0.2.1")
        gate.admit("192.0.2.1", T0)
        gate.connection_closed("192.0.2.1")
        gate.connection_closed("192.0.2.1")
        self.assertEqual((gate.connections("192.0.2.1"), gate.open_connections), (0, 0))
        self.assertEqual(gate._connections, {})

    def test_rate(self) -> None:
        """connect_rate connection attempts within its window are accepted; the next is refused."""
        gate = Gatekeeper(BanPolicy(connect_rate=Limit(3, 1.0)))
        results = [gate.admit("192.0.2.1", T0 + t).refusal for t in (0.0, 0.1, 0.2, 0.3)]
        self.assertEqual(results, [None, None, None, Refusal.TOO_FAST])
        self.assertEqual(gate.admit("192.0.2.2", T0 + 0.3), ACCEPTED)

    def test_refused_attempts_count_towards_rate(self) -> None:
        """A client that keeps hammering stays refused; once it slows down it is admitted."""
        gate = Gatekeeper(BanPolicy(connect_rate=Limit(2, 1.0)))
        results = [gate.admit("192.0.2.1", T0 + t).refusal for t in (0.0, 0.5, 0.9, 1.4, 1.8)]
        self.assertEqual(results, [None, None, Refusal.TOO_FAST, Refusal.TOO_FAST, Refusal.TOO_FAST])
        self.assertEqual(gate.admit("192.0.2.1", T0 + 2.8), ACCEPTED)  # 1.8 has just left the window

    def test_rate_window_exact(self) -> None:
        """An attempt leaves the rate window exactly ``window`` seconds after it was made."""
        gate = Gatekeeper(BanPolicy(connect_rate=Limit(1, 2.0)))
        gate.admit("192.0.2.1", T0)
        self.assertEqual(gate.admit("192.0.2.1", T0 + 1.999).refusal, Refusal.TOO_FAST)
        gate = Gatekeeper(BanPolicy(connect_rate=Limit(1, 2.0)))
        gate.admit("192.0.2.1", T0)
        self.assertEqual(gate.admit("192.0.2.1", T0 + 2.0), ACCEPTED)

    def test_zero_limits(self) -> None:
        """Limits of 0 admit only whitelisted IPs."""
        for policy in (BanPolicy(connections_per_ip=0), BanPolicy(connections_total=0)):
            gate = Gatekeeper(dataclasses.replace(policy, whitelist=LOCALHOST))
            self.assertFalse(gate.admit("192.0.2.1", T0).accepted)
            self.assertTrue(gate.admit("127.0.0.1", T0).accepted)

    def test_ban_keeps_rate(self) -> None:
        """A ban wipes misbehaviour but not connection attempts: lifting it early doesn't reset the rate."""
        gate = Gatekeeper(BanPolicy(malformed=Limit(1, 10.0), connect_rate=Limit(1, 10.0)))
        gate.admit("192.0.2.1", T0)
        gate.malformed("192.0.2.1", T0)
        self.assertIsNotNone(gate.malformed("192.0.2.1", T0))
        gate.bans.lift("192.0.2.1")
        self.assertEqual(gate.admit("192.0.2.1", T0 + 1).refusal, Refusal.TOO_FAST)
        self.assertIsNone(gate.malformed("192.0.2.1", T0 + 1))  # the two before the ban were forgiven

    def test_whitelist(self) -> None:
        """Whitelisted IPs are never limited, banned or counted."""
        gate = Gatekeeper(
            BanPolicy(
                connections_per_ip=1, connections_total=1, connect_rate=Limit(1, 10.0), whitelist=LOCALHOST
            )
        )
        self.assertEqual(gate.admit("192.0.2.1", T0), ACCEPTED)
        results = [gate.admit(ip, T0) for ip in ("127.0.0.1", "::ffff:127.0.0.2", "::1") * 3]
        self.assertEqual(results, [ACCEPTED] * 9)
        self.assertEqual((gate.connections("127.0.0.1"), gate.open_connections), (0, 1))
        gate.connection_closed("127.0.0.1")
        self.assertEqual(gate.open_connections, 1)

    def test_ban_then_reconnect(self) -> None:
        """An IP banned by an event is refused on reconnection; the caller closes its connections."""
        gate = Gatekeeper(BanPolicy(ban_duration=60.0, malformed=Limit(0, 10.0), connections_per_ip=1))
        gate.admit("192.0.2.1", T0)
        ban = gate.malformed("192.0.2.1", T0)
        gate.connection_closed("192.0.2.1")
        self.assertEqual(gate.admit("192.0.2.1", T0 + 1), Admission(Refusal.BANNED, ban))
        self.assertEqual(gate.admit("192.0.2.1", T0 + 60), ACCEPTED)


class MemoryTests(SynchronousTestCase):
    """State is forgotten when it no longer matters, and capped meanwhile."""

    def test_purge_100k(self) -> None:
        """100,000 distinct IPs that came and went are all forgotten once their windows pass."""
        policy = BanPolicy(
            ban_duration=30.0,
            connect_rate=Limit(5, 10.0),
            invalid_shares=InvalidShareLimit(50.0, 100, 60.0),
            malformed=Limit(3, 20.0),
        )
        gate = Gatekeeper(policy)
        for n in range(100_000):
            ip = nth_ip(n)
            self.assertTrue(gate.admit(ip, T0).accepted)
            gate.share(ip, n % 3 == 0, T0)
            if n % 10 == 0:
                gate.malformed(ip, T0)
            if n % 1000 == 0:
                gate.bans.ban(ip, T0, reason="x")
            gate.connection_closed(ip)
        self.assertEqual((gate.tracked_ips, gate.open_connections, len(gate._connections)), (100_000, 0, 0))
        self.assertEqual(gate.purge(T0 + 20.0), 0)  # shares still within their window
        self.assertEqual(gate.purge(T0 + 60.0), 100_100)
        self.assertEqual((gate.tracked_ips, len(gate.bans._bans)), (0, 0))

    def test_purge_keeps_live_evidence(self) -> None:
        """purge keeps what can still decide something: evidence within its window, bans in force."""
        gate = Gatekeeper(BanPolicy(ban_duration=30.0, malformed=Limit(1, 10.0)))
        gate.malformed("192.0.2.1", T0)
        gate.malformed("192.0.2.2", T0 + 5)
        gate.bans.ban("192.0.2.3", T0, reason="x")
        self.assertEqual(gate.purge(T0 + 10.0), 1)
        self.assertEqual(gate.tracked_ips, 1)
        self.assertIsNotNone(gate.malformed("192.0.2.2", T0 + 14.9))  # its earlier message still counted
        self.assertEqual(gate.purge(T0 + 30.0), 1)  # the ban on .3; .2's ban still holds
        self.assertEqual([ban.ip for ban in gate.bans.list(T0 + 30.0)], ["192.0.2.2"])

    def test_max_tracked_ips(self) -> None:
        """Under many IPs at once, evidence is capped; the least recently active IP is forgotten."""
        gate = Gatekeeper(BanPolicy(malformed=Limit(1, 1e9), max_tracked_ips=1000))
        gate.malformed("192.0.2.1", T0)
        for n in range(5000):
            gate.malformed(nth_ip(n), T0)
            self.assertLessEqual(gate.tracked_ips, 1000)
        self.assertIsNone(gate.malformed("192.0.2.1", T0))  # its first message was forgotten

    def test_recent_activity_keeps_evidence(self) -> None:
        """An IP that keeps acting is not the one forgotten at the cap."""
        gate = Gatekeeper(BanPolicy(malformed=Limit(1, 1e9), connect_rate=Limit(100, 1e9), max_tracked_ips=3))
        gate.malformed("192.0.2.1", T0)
        for n in range(10):
            gate.malformed(f"198.51.100.{n}", T0)
            gate.admit("192.0.2.1", T0)  # keeps 192.0.2.1 recently active
            gate.connection_closed("192.0.2.1")
        self.assertEqual(gate.tracked_ips, 3)
        self.assertIsNotNone(gate.malformed("192.0.2.1", T0))  # its first message still counted

    def test_cap_fails_open(self) -> None:
        """An IP whose evidence was forgotten for room gets a fresh rate window (documented)."""
        gate = Gatekeeper(BanPolicy(connect_rate=Limit(1, 10.0), max_tracked_ips=1))
        gate.admit("192.0.2.1", T0)
        self.assertEqual(gate.admit("192.0.2.1", T0).refusal, Refusal.TOO_FAST)
        gate.admit("192.0.2.2", T0)  # takes the only place
        self.assertEqual(gate.admit("192.0.2.1", T0), ACCEPTED)

    def test_connection_counts_survive_eviction(self) -> None:
        """Forgetting an IP's evidence never loses its open connections."""
        gate = Gatekeeper(BanPolicy(connect_rate=Limit(10, 1.0), connections_per_ip=1, max_tracked_ips=2))
        gate.admit("192.0.2.1", T0)
        gate.admit("192.0.2.2", T0)
        gate.admit("192.0.2.3", T0)
        self.assertEqual(gate.tracked_ips, 2)
        self.assertEqual(gate.admit("192.0.2.1", T0).refusal, Refusal.TOO_MANY_FROM_IP)


class Machine(RuleBasedStateMachine):
    """Random events against a Gatekeeper and a model of what the caller knows.

    Four IPs can be tracked and four (plus a whitelisted one) take part, so
    nothing is forgotten for room and the rate limit must hold.
    """

    POLICY = BanPolicy(
        ban_duration=3.0,
        invalid_shares=InvalidShareLimit(50.0, 4, 10.0, buckets=5),
        malformed=Limit(1, 5.0),
        failed_auth=Limit(2, 5.0),
        connections_per_ip=2,
        connections_total=5,
        connect_rate=Limit(3, 1.0),
        whitelist=LOCALHOST,
        max_tracked_ips=4,
        max_bans=3,
    )
    RATE_HOLDS = True
    IPS = (
        "192.0.2.1",
        "::ffff:192.0.2.1",
        "2001:db8::1",
        "2001:DB8:0::1",
        "198.51.100.1",
        "198.51.100.2",
        "127.0.0.1",
    )

    def __init__(self) -> None:
        super().__init__()
        self.gate = Gatekeeper(self.POLICY)
        self.now = T0
        self.open: Counter[str] = Counter()  # accepted and not yet closed, by normalised IP
        self.accepted_at: dict[str, list[float]] = {}
        self.latest_expiry: dict[str, float] = {}  # the latest ban issued on each IP

    def trusted(self, key: str) -> bool:
        return self.POLICY.trusts(ipaddress.ip_address(key))

    @rule(seconds=st.one_of(st.sampled_from([0.0, 0.5, 1.0, 3.0, 5.0, 10.0]), st.floats(0.0, 12.0)))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(ip=st.sampled_from(IPS))
    def admit(self, ip: str) -> None:
        key = normalise_ip(ip)
        admission = self.gate.admit(ip, self.now)
        if admission.refusal is Refusal.BANNED:
            assert admission.ban is not None and admission.ban.in_force(self.now)
        if not admission.accepted:
            return
        if self.trusted(key):
            return
        self.open[key] += 1
        times = self.accepted_at.setdefault(key, [])
        times.append(self.now)
        recent = [t for t in times if t > self.now - 1.0]
        assert len(recent) <= 3 or not self.RATE_HOLDS, recent

    @rule(ip=st.sampled_from(IPS))
    def close(self, ip: str) -> None:
        key = normalise_ip(ip)
        self.gate.connection_closed(ip)
        if self.open[key] > 0 and not self.trusted(key):
            self.open[key] -= 1

    def decided(self, ban: Ban | None) -> None:
        """What the server does with a ban: persist it and close the IP's connections."""
        if ban is None:
            return
        assert not self.trusted(ban.ip)
        assert ban.expires_at == self.now + self.POLICY.ban_duration
        self.latest_expiry[ban.ip] = ban.expires_at
        for _ in range(self.open[ban.ip]):
            self.gate.connection_closed(ban.ip)
        self.open[ban.ip] = 0

    @rule(ip=st.sampled_from(IPS), valid=st.booleans())
    def share(self, ip: str, valid: bool) -> None:
        self.decided(self.gate.share(ip, valid, self.now))

    @rule(ip=st.sampled_from(IPS))
    def malformed(self, ip: str) -> None:
        self.decided(self.gate.malformed(ip, self.now))

    @rule(ip=st.sampled_from(IPS))
    def auth_failed(self, ip: str) -> None:
        self.decided(self.gate.auth_failed(ip, self.now))

    @rule(ip=st.sampled_from(IPS))
    def ban(self, ip: str) -> None:
        self.decided(self.gate.bans.ban(ip, self.now, reason="operator"))

    @rule(ip=st.sampled_from(IPS))
    def lift(self, ip: str) -> None:
        self.gate.bans.lift(ip)

    @rule()
    def purge(self) -> None:
        self.gate.purge(self.now)

    @invariant()
    def connections_within_limits(self) -> None:
        for ip in self.IPS:
            count = self.gate.connections(ip)
            assert 0 <= count <= 2, (ip, count)
            assert count == self.open[normalise_ip(ip)]
        total = sum(self.open.values())
        assert self.gate.open_connections == total <= 5, (self.gate.open_connections, total)

    @invariant()
    def bans_expire(self) -> None:
        for ban in self.gate.bans.list(self.now):
            assert ban.in_force(self.now)
            assert ban.expires_at == self.latest_expiry[ban.ip]  # the last one issued, no longer
            assert not self.trusted(ban.ip)
        for ip in self.IPS:
            key = normalise_ip(ip)
            banned = self.gate.bans.is_banned(ip, self.now)
            if self.now >= self.latest_expiry.get(key, -1.0):
                assert not banned, (ip, self.now)

    @invariant()
    def memory_bounded(self) -> None:
        assert self.gate.tracked_ips <= self.POLICY.max_tracked_ips
        assert len(self.gate.bans._bans) <= self.POLICY.max_bans


class CrowdedMachine(Machine):
    """The same with room for only two IPs' evidence and two bans: forgetting for room fails open.

    The rate limit may then be exceeded (as documented); everything else holds.
    """

    POLICY = dataclasses.replace(Machine.POLICY, max_tracked_ips=2, max_bans=2)
    RATE_HOLDS = False


class StatefulTests(SynchronousTestCase):
    """Invariants hold over random sequences of events."""

    SETTINGS = settings(max_examples=200, stateful_step_count=60, deadline=None)

    def test_invariants(self) -> None:
        """Connection counts stay within [0, limit], the rate holds, and bans end on time."""
        run_state_machine_as_test(Machine, settings=self.SETTINGS)

    def test_invariants_crowded(self) -> None:
        """At the tracking caps, counts and bans still hold and memory stays within the caps."""
        run_state_machine_as_test(CrowdedMachine, settings=self.SETTINGS)
