"""Bans and connection limits at work: the configured policy, and the bans
kept in step with the pool's other processes through Redis.

The decisions themselves are the pure core's (`nomp.stratum.banning`);
the StratumServer enforces them on connections.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger

from nomp.background import background
from nomp.config import BanningConfig, RateLimitConfig
from nomp.outage import Outage
from nomp.store.bans import BanStore
from nomp.store.client import REDIS_DOWN
from nomp.stratum.banning import Ban, BanPolicy, Gatekeeper, InvalidShareLimit, Limit, normalise_ip


def ip_of(address: IAddress | None) -> str | None:
    """The normalised IP of a peer's address; None for a peer without one (a UNIX socket)."""
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return None
    try:
        return normalise_ip(host)
    except ValueError:
        return None


def _limit(config: RateLimitConfig | None) -> Limit | None:
    return None if config is None else Limit(config.count, config.window)


def ban_policy(config: BanningConfig) -> BanPolicy:
    """The pool's banning section as the core's policy.

    ``enabled: false`` turns the bans off; the connection limits stay.
    """
    on = config.enabled
    return BanPolicy(
        ban_duration=config.time,
        invalid_shares=(
            InvalidShareLimit(config.invalid_percent, config.check_threshold, config.invalid_window)
            if on
            else None
        ),
        malformed=_limit(config.malformed) if on else None,
        failed_auth=_limit(config.failed_auth) if on else None,
        connections_per_ip=config.connections_per_ip,
        connections_total=config.connections_total,
        connect_rate=_limit(config.connect_rate),
        whitelist=config.whitelist,
    )


class SharedBans:
    """Keeps a Gatekeeper's bans and the pool's ban list in Redis in step.

    Each process bans on what it sees and writes the ban to Redis at once.
    Every sync it reads the list back: bans made by other processes are
    taken (and enforced through ``enforce``), bans lifted elsewhere are let
    go. A change Redis did not take (it was away) is written again at the
    next sync, and until then the read is skipped so the change is not
    undone; a change made while a read is under way wins over that read.
    Redis being away is logged once an outage (saves and reads alike); any
    other error is logged as a failure every time it happens.
    """

    log = Logger()

    def __init__(
        self, gatekeeper: Gatekeeper, store: BanStore, clock: IReactorTime, enforce: Callable[[Ban], None]
    ) -> None:
        self.gatekeeper = gatekeeper
        self.store = store
        self.clock = clock
        self.enforce = enforce
        self._unsaved: dict[str, Ban | None] = {}  # IP -> ban to write, or None: a lift to write
        self._generation = 0
        self._changed: dict[str, int] = {}  # IP -> generation of its last local change
        self._flushing = False
        self._flush_waiters: list[defer.Deferred[None]] = []
        self._syncing = False
        self.outage = Outage(self.log, f"bans of {store.keys.coin}: Redis", clock, REDIS_DOWN)

    @property
    def unsaved(self) -> int:
        """Local changes Redis has not taken yet."""
        return len(self._unsaved)

    def banned(self, ban: Ban) -> None:
        """A ban made here: share it."""
        self._changed_here(ban.ip, ban)

    def lifted(self, ip: str) -> None:
        """A ban lifted here: share it."""
        self._changed_here(ip, None)

    def _changed_here(self, ip: str, ban: Ban | None) -> None:
        self._generation += 1
        self._changed[ip] = self._generation
        self._unsaved[ip] = ban
        background("save bans", self.flush())

    async def flush(self) -> None:
        """Write the changes Redis has not taken, oldest first (or wait for the write under way)."""
        if self._flushing:
            waiter: defer.Deferred[None] = defer.Deferred()
            self._flush_waiters.append(waiter)
            await waiter
            return
        self._flushing = True
        try:
            while self._unsaved:
                ip, ban = next(iter(self._unsaved.items()))
                try:
                    if ban is None:
                        await self.store.lift(ip)
                    else:
                        await self.store.save(ban)
                except Exception as e:
                    # Written again at the next sync, whatever the error: one
                    # that is not Redis being away is logged as a failure each time.
                    self.outage.failed(e, "{count} ban changes wait to be saved", count=len(self._unsaved))
                    return
                self.outage.succeeded()
                if self._unsaved.get(ip, 0) is ban:  # not changed again meanwhile
                    del self._unsaved[ip]
        finally:
            self._flushing = False
            waiters, self._flush_waiters = self._flush_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    async def sync(self) -> None:
        """Write our changes, then take the shared list."""
        if self._syncing:
            return
        self._syncing = True
        try:
            await self.flush()
            if self._unsaved:
                return
            started = self._generation
            try:
                shared = await self.store.load(self.clock.seconds())
            except Exception as e:
                self.outage.failed(e, "the shared bans are read again every sync")
                return
            self.outage.succeeded()
            self._apply([Ban(*stored) for stored in shared], started)
        finally:
            self._syncing = False

    def _apply(self, shared: list[Ban], started: int) -> None:
        now = self.clock.seconds()
        book = self.gatekeeper.bans
        changed = self._changed
        in_redis: set[str] = set()
        for ban in shared:
            in_redis.add(ban.ip)
            if changed.get(ban.ip, 0) > started:
                continue  # changed here while the list was read
            if book.restore(ban, now):
                self.enforce(ban)
        for ban in book.list(now):
            if ban.ip not in in_redis and changed.get(ban.ip, 0) <= started and ban.ip not in self._unsaved:
                book.lift(ban.ip)
                self.log.info("ban on {ip} lifted by another process", ip=ban.ip)
        self._changed = {ip: g for ip, g in changed.items() if g > started}
