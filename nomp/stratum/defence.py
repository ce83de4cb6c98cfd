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
from nomp.store.bans import BanStore, BanStoreUnavailable
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
        self._away_logged = False
        self._reads_failing = False  # the last read of the shared list failed
        self._read_once = False  # a read has succeeded since the start

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
                    if not self._away_logged:
                        self.log.warn(
                            "bans not saved to Redis ({reason}): {count} waiting",
                            reason=e if isinstance(e, BanStoreUnavailable) else repr(e),
                            count=len(self._unsaved),
                        )
                        self._away_logged = True
                    return
                if self._unsaved.get(ip, 0) is ban:  # not changed again meanwhile
                    del self._unsaved[ip]
            if self._away_logged:
                self.log.info("bans saved to Redis again")
                self._away_logged = False
        finally:
            self._flushing = False
            waiters, self._flush_waiters = self._flush_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _read_failed(self, reason: Exception) -> None:
        # One line an outage, not one a sync; at start, while Redis is still
        # connecting, not worth a warning.
        if self._reads_failing:
            return
        self._reads_failing = True
        if self._read_once:
            self.log.warn("bans not read from Redis ({reason}); tried again every sync", reason=reason)
        else:
            self.log.info("bans: waiting for Redis ({reason})", reason=reason)

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
                self._read_failed(e)
                return
            if self._reads_failing and self._read_once:
                self.log.info("bans read from Redis again")
            self._reads_failing = False
            self._read_once = True
            self._apply(shared, started)
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
