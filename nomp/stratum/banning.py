"""Who may connect and who gets banned: the Stratum server's pure core.

No clock and no I/O. Every call takes ``now`` in seconds, and the caller acts
on what comes back: it persists and enforces a returned `Ban` (closing every
connection from that IP) and honours an `Admission`. This fixes NOMP's
banning (nomp.md §10, §16 item 5):

* Evidence is counted per IP within a time window and really expires, so an
  IP is judged on what it did lately. NOMP's counters never reset, so one
  bad spell was held against a miner forever.
* Ban expiry is compared in seconds, so a ban lasts its full duration.
  NOMP's purge compared milliseconds with seconds and dropped every ban at
  the next purge tick.
* Memory is bounded: at most ``policy.max_bans`` bans and
  ``policy.max_tracked_ips`` IPs with evidence. Per-IP connection counts
  are only kept while connections are open. `Gatekeeper.purge` forgets
  what no longer matters.

IPs are strings, normalised by `normalise_ip`, so a ban can't be dodged by
spelling an address differently.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# Parsing costs microseconds and every event needs it; a pool sees the same miners over and over.
@functools.lru_cache(maxsize=16384)
def _identify(ip: str) -> tuple[str, Address]:
    """The normalised spelling of ``ip``, and the address it spells."""
    address = ipaddress.ip_address(ip.partition("%")[0])  # a zone (fe80::1%eth0) names no other host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
        address = address.ipv4_mapped
    return str(address), address


def normalise_ip(ip: str) -> str:
    """Give each address one spelling: compressed lower-case IPv6, and IPv4 for ``::ffff:a.b.c.d``.

    Raises ValueError if ``ip`` is not an IP address.
    """
    return _identify(ip)[0]


# Settings.


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` events from one IP within ``window`` seconds. One more breaks the limit."""

    count: int
    window: float

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0, not {self.count}")
        if not self.window > 0:
            raise ValueError(f"window must be > 0 seconds, not {self.window}")


@dataclass(frozen=True, slots=True)
class InvalidShareLimit:
    """Ban an IP once at least ``percent`` % of its shares within ``window`` seconds were invalid.

    An IP is only judged once it has sent ``min_shares`` shares within the
    window. The test is ``invalid >= percent % of total``: a ratio exactly at
    the threshold bans, as in NOMP, which only forgave a ratio below it.
    The window is kept in ``buckets`` slices (see `ShareTally`).
    """

    percent: float
    min_shares: int
    window: float
    buckets: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.percent <= 100:
            raise ValueError(f"percent must be in (0, 100], not {self.percent}")
        if self.min_shares < 1:
            raise ValueError(f"min_shares must be >= 1, not {self.min_shares}")
        if not self.window > 0:
            raise ValueError(f"window must be > 0 seconds, not {self.window}")
        if self.buckets < 1:
            raise ValueError(f"buckets must be >= 1, not {self.buckets}")


@dataclass(frozen=True, slots=True)
class BanPolicy:
    """What gets an IP banned or refused. Any rule set to None is off.

    Whitelisted networks are never banned or limited, and their connections
    don't count towards ``connections_total``. They are matched against the
    normalised address, so write IPv4 networks for IPv4 peers, even when they
    arrive over a dual-stack socket.
    """

    ban_duration: float = 600.0
    invalid_shares: InvalidShareLimit | None = None
    malformed: Limit | None = None  # malformed messages: one more than allowed bans
    failed_auth: Limit | None = None  # failed mining.authorize: one more than allowed bans
    connections_per_ip: int | None = None  # open connections from one IP
    connections_total: int | None = None  # open connections from all non-whitelisted IPs
    connect_rate: Limit | None = None  # connection attempts from one IP: one more is refused
    whitelist: tuple[Network, ...] = ()
    max_tracked_ips: int = 100_000  # IPs with evidence; the least recently active is forgotten first
    max_bans: int = 100_000  # bans kept; the oldest is dropped first

    def __post_init__(self) -> None:
        if not self.ban_duration > 0:
            raise ValueError(f"ban_duration must be > 0 seconds, not {self.ban_duration}")
        for name in ("connections_per_ip", "connections_total"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, not {value}")
        for name in ("max_tracked_ips", "max_bans"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")

    def trusts(self, address: Address) -> bool:
        """Whether the address is whitelisted."""
        whitelist = self.whitelist
        return bool(whitelist) and any(address in network for network in whitelist)


# Decisions.


@dataclass(frozen=True, slots=True)
class Ban:
    """An IP (normalised) refused until ``expires_at``, and why."""

    ip: str
    expires_at: float
    reason: str

    def in_force(self, now: float) -> bool:
        """A ban ends exactly at ``expires_at``: from then on the IP is admitted again."""
        return now < self.expires_at

    def remaining(self, now: float) -> float:
        """Seconds until it ends (0 once ended)."""
        return max(0.0, self.expires_at - now)


class Refusal(enum.StrEnum):
    """Why a connection was refused."""

    BANNED = "banned"
    TOO_MANY_FROM_IP = "too many connections from this address"
    TOO_MANY_TOTAL = "too many connections in total"
    TOO_FAST = "connecting too fast"


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to a new connection. A refused one must be closed and not reported closed."""

    refusal: Refusal | None = None
    ban: Ban | None = None  # set when refused as BANNED, for "banned for N more seconds"

    @property
    def accepted(self) -> bool:
        return self.refusal is None


ACCEPTED = Admission()


# Windows.


@dataclass(slots=True)
class RecentEvents:
    """The times of an IP's recent events, enough to tell whether the next one breaks ``limit``.

    An event is remembered for ``limit.window`` seconds exactly. Only the last
    ``limit.count`` times are kept, since older ones can never decide anything,
    so memory stays bounded whatever the event rate. (A list, not a deque:
    limits are small, and an empty deque takes 760 bytes, 13 times a list.)
    """

    limit: Limit
    _times: list[float] = field(default_factory=list, init=False)  # oldest first

    def count(self, now: float) -> int:
        """Events within the window ending at ``now``."""
        horizon = now - self.limit.window
        gone = 0
        while gone < len(self._times) and self._times[gone] <= horizon:
            gone += 1
        del self._times[:gone]
        return len(self._times)

    def note(self, now: float) -> bool:
        """Record an event at ``now``: whether it breaks the limit."""
        broken = self.count(now) >= self.limit.count
        self._times.append(now)
        if len(self._times) > self.limit.count:
            del self._times[0]
        return broken

    def under(self, limit: Limit) -> RecentEvents:
        """These events, counted against another limit (a reloaded policy)."""
        moved = RecentEvents(limit)
        moved._times = self._times[len(self._times) - limit.count :] if limit.count else []
        return moved


@dataclass(slots=True)
class _Slice:
    number: int  # floor(time / slice length)
    valid: int = 0
    invalid: int = 0


@dataclass(slots=True)
class ShareTally:
    """An IP's valid and invalid shares within a window, kept in ``buckets`` slices of it.

    A share counts from when it was sent until its slice leaves the window:
    never longer than ``window`` seconds, and at least ``window - window /
    buckets``. Memory is one entry per slice, whatever the share rate.
    """

    window: float
    buckets: int
    valid: int = field(default=0, init=False)
    invalid: int = field(default=0, init=False)
    _slices: list[_Slice] = field(default_factory=list, init=False)  # oldest first, at most `buckets`

    @property
    def total(self) -> int:
        return self.valid + self.invalid

    def _slice_number(self, now: float) -> int:
        return math.floor(now * self.buckets / self.window)

    def expire(self, now: float) -> None:
        """Forget the slices that have left the window ending at ``now``."""
        first = self._slice_number(now) - self.buckets + 1
        gone = 0
        while gone < len(self._slices) and self._slices[gone].number < first:
            self.valid -= self._slices[gone].valid
            self.invalid -= self._slices[gone].invalid
            gone += 1
        del self._slices[:gone]

    def add(self, valid: bool, now: float) -> None:
        """Count one share sent at ``now``."""
        self.expire(now)
        number = self._slice_number(now)
        # If the clock stepped back, the newest slice takes the share: it is then kept a little longer.
        if not self._slices or self._slices[-1].number < number:
            self._slices.append(_Slice(number))
        newest = self._slices[-1]
        if valid:
            newest.valid += 1
            self.valid += 1
        else:
            newest.invalid += 1
            self.invalid += 1


@dataclass(slots=True)
class _Evidence:
    """What one IP did lately. Each window is created when its first event arrives."""

    connects: RecentEvents | None = None
    shares: ShareTally | None = None
    malformed: RecentEvents | None = None
    failed_auth: RecentEvents | None = None

    def forgive(self) -> bool:
        """Forget the misbehaviour (a ban has settled it), keeping connection attempts: whether any remain."""
        self.shares = self.malformed = self.failed_auth = None
        return self.connects is not None

    def stale(self, now: float) -> bool:
        """Nothing left in any window, so forgetting it changes no decision."""
        for events in (self.connects, self.malformed, self.failed_auth):
            if events is not None and events.count(now):
                return False
        if self.shares is not None:
            self.shares.expire(now)
            return self.shares.total == 0
        return True


# Bans.


class BanBook:
    """The bans in force, by normalised IP.

    At ``policy.max_bans`` the oldest ban is dropped to make room. With one
    ban duration that is the ban closest to its end.
    """

    def __init__(self, policy: BanPolicy) -> None:
        self.policy = policy
        self._bans: dict[str, Ban] = {}  # in the order issued: the first goes first at max_bans

    def get(self, ip: str, now: float) -> Ban | None:
        """The ban in force on ``ip`` at ``now``, if any. An ended ban is dropped."""
        return self.held(normalise_ip(ip), now)

    def held(self, key: str, now: float) -> Ban | None:
        """`get` for an IP already normalised (every miner event asks it)."""
        ban = self._bans.get(key)
        if ban is not None and not ban.in_force(now):
            del self._bans[key]
            return None
        return ban

    def is_banned(self, ip: str, now: float) -> bool:
        """Whether ``ip`` is banned at ``now``; a ban ends exactly at its expiry."""
        return self.get(ip, now) is not None

    def ban(self, ip: str, now: float, *, duration: float | None = None, reason: str) -> Ban | None:
        """Ban ``ip`` for ``duration`` seconds (default: the policy's), replacing any ban it had.

        Returns None for a whitelisted IP, which is never banned.
        """
        key, address = _identify(ip)
        if self.policy.trusts(address):
            return None
        seconds = self.policy.ban_duration if duration is None else duration
        if not seconds > 0:
            raise ValueError(f"a ban lasts > 0 seconds, not {seconds}")
        return self._add(Ban(key, now + seconds, reason))

    def _add(self, ban: Ban) -> Ban:
        self._bans.pop(ban.ip, None)  # re-inserted last: its place in line is renewed
        while len(self._bans) >= self.policy.max_bans:
            del self._bans[next(iter(self._bans))]
        self._bans[ban.ip] = ban
        return ban

    def lift(self, ip: str) -> bool:
        """End the ban on ``ip`` now: whether it had one."""
        return self._bans.pop(normalise_ip(ip), None) is not None

    def list(self, now: float) -> tuple[Ban, ...]:
        """The bans in force at ``now``, soonest to end first."""
        return tuple(sorted((ban for ban in self._bans.values() if ban.in_force(now)), key=_expiry))

    def load(self, expiries: Mapping[str, float], now: float, *, reason: str = "restored") -> int:
        """Restore bans read from storage (IP -> expiry time, in seconds): how many were restored.

        Entries that have ended by ``now``, unparseable IPs and whitelisted IPs
        are skipped. A ban already held that ends later is kept.
        """
        restored = 0
        for ip, expires_at in sorted(expiries.items(), key=lambda item: item[1]):
            try:
                key, address = _identify(ip)
            except ValueError:
                continue
            if not expires_at > now or self.policy.trusts(address):  # `not >` also skips NaN
                continue
            held = self._bans.get(key)
            if held is not None and held.expires_at >= expires_at:
                continue
            self._add(Ban(key, expires_at, reason))
            restored += 1
        return restored

    def restore(self, ban: Ban, now: float) -> bool:
        """Hold a ban read from shared storage, in place of the one held: whether the IP is newly banned.

        Storage is the shared truth, so its expiry and reason replace ours.
        An ended ban and an unparseable or whitelisted IP are skipped.
        """
        try:
            key, address = _identify(ban.ip)
        except ValueError:
            return False
        if not ban.expires_at > now or self.policy.trusts(address):
            return False
        held = self.get(key, now)
        if held is None or held.expires_at != ban.expires_at or held.reason != ban.reason:
            self._add(Ban(key, ban.expires_at, ban.reason))
        return held is None

    def lift_trusted(self) -> int:
        """Lift the bans on IPs the policy now whitelists (after a reload): how many."""
        trusted = [key for key in self._bans if self.policy.trusts(_identify(key)[1])]
        for key in trusted:
            del self._bans[key]
        return len(trusted)

    def purge(self, now: float) -> int:
        """Drop the bans that have ended: how many."""
        ended = [key for key, ban in self._bans.items() if not ban.in_force(now)]
        for key in ended:
            del self._bans[key]
        return len(ended)


def _expiry(ban: Ban) -> float:
    return ban.expires_at


def _relimited(events: RecentEvents | None, limit: Limit | None) -> RecentEvents | None:
    """``events`` counted against ``limit`` from now on: None when the rule is off;
    the latest ``limit.count`` times kept, so a lowered count can be broken at once."""
    if events is None or limit is None:
        return None
    return events if events.limit == limit else events.under(limit)


# The server's side.


class Gatekeeper:
    """Admits connections and turns misbehaviour into bans, per `BanPolicy`.

    The Stratum server calls `admit` for each new connection, `connection_closed`
    when an admitted one ends, and `share`, `malformed` and `auth_failed` as
    miners act. It calls `purge` from a timer. When an event returns a Ban,
    the server persists it and closes every connection from that IP.

    Events from a banned or whitelisted IP are ignored. A ban wipes the IP's
    evidence of misbehaviour, so after it ends the IP starts with a clean
    slate. Its recent connection attempts are kept: if the ban is lifted
    early, the IP still can't reconnect faster than ``connect_rate``.

    At ``policy.max_tracked_ips`` the evidence of the least recently active IP
    is forgotten to make room: its progress towards a ban and its recent
    connection attempts. Its ban and its connection count are kept. So the
    cap fails open, and only under a crowd: with more IPs than the cap active
    within one window, an IP can get past ``connect_rate`` or escape a ban
    it was heading for. The connection limits always hold. A tracked IP costs
    under a kilobyte, so the default cap holds evidence to about 100 MB.
    """

    def __init__(self, policy: BanPolicy) -> None:
        self.policy = policy
        self.bans = BanBook(policy)
        self._evidence: OrderedDict[str, _Evidence] = OrderedDict()  # least recently active first
        self._connections: dict[str, int] = {}  # only IPs with open connections
        self._open = 0

    # Connections.

    def admit(self, ip: str, now: float) -> Admission:
        """Decide on a new connection from ``ip``. An accepted one holds a slot until `connection_closed`.

        The checks run in this order: ban, rate, per-IP limit, total limit.
        Every attempt from an IP that isn't banned counts towards its rate,
        refused ones too, so a client that keeps hammering stays refused.
        """
        key, address = _identify(ip)
        if self.policy.trusts(address):
            return ACCEPTED
        ban = self.bans.held(key, now)
        if ban is not None:
            return Admission(Refusal.BANNED, ban)
        rate = self.policy.connect_rate
        if rate is not None:
            evidence = self._evidence_of(key)
            if evidence.connects is None:
                evidence.connects = RecentEvents(rate)
            if evidence.connects.note(now):
                return Admission(Refusal.TOO_FAST)
        open_from_ip = self._connections.get(key, 0)
        per_ip = self.policy.connections_per_ip
        if per_ip is not None and open_from_ip >= per_ip:
            return Admission(Refusal.TOO_MANY_FROM_IP)
        total = self.policy.connections_total
        if total is not None and self._open >= total:
            return Admission(Refusal.TOO_MANY_TOTAL)
        self._connections[key] = open_from_ip + 1
        self._open += 1
        return ACCEPTED

    def connection_closed(self, ip: str) -> None:
        """Free the slot of an accepted connection from ``ip``.

        Call it only for connections that `admit` accepted. A call for an IP
        with no open connection is ignored, so counts never go negative.
        """
        key, address = _identify(ip)
        if self.policy.trusts(address):
            return
        open_from_ip = self._connections.get(key, 0)
        if open_from_ip == 0:
            return
        if open_from_ip == 1:
            del self._connections[key]
        else:
            self._connections[key] = open_from_ip - 1
        self._open -= 1

    def connections(self, ip: str) -> int:
        """Open connections from ``ip`` (0 for a whitelisted IP: they aren't counted)."""
        return self._connections.get(normalise_ip(ip), 0)

    @property
    def open_connections(self) -> int:
        """Open connections from all non-whitelisted IPs."""
        return self._open

    # Misbehaviour.

    def share(self, ip: str, valid: bool, now: float) -> Ban | None:
        """A share from ``ip`` was judged valid or not: the ban it earns, if any."""
        rule = self.policy.invalid_shares
        if rule is None:
            return None
        key = self._accountable(ip, now)
        if key is None:
            return None
        evidence = self._evidence_of(key)
        if evidence.shares is None:
            evidence.shares = ShareTally(rule.window, rule.buckets)
        tally = evidence.shares
        tally.add(valid, now)
        if tally.total < rule.min_shares or tally.invalid * 100 < rule.percent * tally.total:
            return None
        return self._ban(key, now, f"{tally.invalid} of the last {tally.total} shares were invalid")

    def malformed(self, ip: str, now: float) -> Ban | None:
        """``ip`` sent a message that isn't valid Stratum: the ban it earns, if any."""
        return self._over_limit(ip, now, self.policy.malformed, "malformed", "malformed messages")

    def auth_failed(self, ip: str, now: float) -> Ban | None:
        """``ip`` failed a mining.authorize: the ban it earns, if any."""
        return self._over_limit(ip, now, self.policy.failed_auth, "failed_auth", "failed authorizations")

    def _over_limit(
        self, ip: str, now: float, limit: Limit | None, window: Literal["malformed", "failed_auth"], what: str
    ) -> Ban | None:
        """Count an event in the evidence ``window`` (a RecentEvents field of
        _Evidence): the ban it earns once ``limit`` is passed, if any."""
        if limit is None:
            return None
        key = self._accountable(ip, now)
        if key is None:
            return None
        evidence = self._evidence_of(key)
        events: RecentEvents | None = getattr(evidence, window)
        if events is None:
            events = RecentEvents(limit)
            setattr(evidence, window, events)
        if not events.note(now):
            return None
        return self._ban(key, now, f"more than {limit.count} {what} in {limit.window:g} s")

    # A reload.

    def apply_policy(self, policy: BanPolicy, open_ips: Iterable[str]) -> None:
        """Decide by ``policy`` from now on (a reloaded banning section).

        Bans in force keep their expiry. Evidence gathered under a limit
        still in the policy is kept, trimmed to the new count; evidence of a
        rule turned off is dropped, and so are share tallies whose window
        changed (their slices are timed by the old window). Bans on newly
        whitelisted IPs are lifted. The open connections are counted again
        from ``open_ips`` (their normalised IPs, one per connection) when
        the whitelist changed, since whitelisted connections are not counted.
        """
        old, self.policy = self.policy, policy
        self.bans.policy = policy
        for evidence in self._evidence.values():
            evidence.connects = _relimited(evidence.connects, policy.connect_rate)
            evidence.malformed = _relimited(evidence.malformed, policy.malformed)
            evidence.failed_auth = _relimited(evidence.failed_auth, policy.failed_auth)
            rule = policy.invalid_shares
            shares = evidence.shares
            timing = None if rule is None else (rule.window, rule.buckets)
            if shares is not None and (shares.window, shares.buckets) != timing:
                evidence.shares = None
        if policy.whitelist == old.whitelist:
            return
        self.bans.lift_trusted()
        counts: dict[str, int] = {}
        for ip in open_ips:
            key, address = _identify(ip)
            if not policy.trusts(address):
                counts[key] = counts.get(key, 0) + 1
        self._connections = counts
        self._open = sum(counts.values())

    # Memory.

    def purge(self, now: float) -> int:
        """Forget ended bans and evidence whose windows have all passed: how many entries went."""
        stale = [key for key, evidence in self._evidence.items() if evidence.stale(now)]
        for key in stale:
            del self._evidence[key]
        return len(stale) + self.bans.purge(now)

    @property
    def tracked_ips(self) -> int:
        """IPs with evidence held (at most ``policy.max_tracked_ips``)."""
        return len(self._evidence)

    def _accountable(self, ip: str, now: float) -> str | None:
        """The normalised IP, or None if its events don't count (whitelisted or already banned)."""
        key, address = _identify(ip)
        if self.policy.trusts(address):
            return None
        return None if self.bans.held(key, now) is not None else key

    def _evidence_of(self, key: str) -> _Evidence:
        evidence = self._evidence.get(key)
        if evidence is not None:
            self._evidence.move_to_end(key)
            return evidence
        if len(self._evidence) >= self.policy.max_tracked_ips:
            self._evidence.popitem(last=False)
        evidence = self._evidence[key] = _Evidence()
        return evidence

    def _ban(self, key: str, now: float, reason: str) -> Ban | None:
        evidence = self._evidence.get(key)
        if evidence is not None and not evidence.forgive():
            del self._evidence[key]
        return self.bans.ban(key, now, reason=reason)
