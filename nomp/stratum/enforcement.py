"""BanEnforcer: one pool's bans and limits applied to its connections.

The decisions are the pure core's (``Gatekeeper``); the bans are kept in
step with the pool's other processes by ``SharedBans``. This module acts on
them: refuses connections, closes a banned IP's connections, and takes the
evidence (malformed requests, refused authorizations, shares) the pool's
protocols report.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nomp.config import BanningConfig
from nomp.store.bans import BanStore
from nomp.stratum.banning import Ban, Gatekeeper, normalise_ip
from nomp.stratum.connection import Connection
from nomp.stratum.defence import SharedBans, ban_policy
from nomp.stratum.registry import ConnectionRegistry


class BanEnforcer:
    """Bans and limits at work on one pool's connections."""

    log = Logger()

    def __init__(
        self,
        pool_name: str,
        banning: BanningConfig,
        connections: ConnectionRegistry,
        clock: IReactorTime,
        ban_store: BanStore | None = None,
    ) -> None:
        self._pool_name = pool_name
        self._connections = connections
        self._clock = clock
        self.gatekeeper = Gatekeeper(ban_policy(banning))
        # Without a store (tests of the protocol alone) bans stay in this process.
        self.shared = (
            SharedBans(self.gatekeeper, ban_store, clock, self.enforce) if ban_store is not None else None
        )
        self.refused: Counter[str] = Counter()  # connections refused, by reason

    def admit(self, ip: str, now: float) -> bool:
        """Whether a new connection from ``ip`` may open (it then holds a slot until closed)."""
        admission = self.gatekeeper.admit(ip, now)
        if admission.refusal is None:
            return True
        # Debug only: a flood of refusals must not flood the log too.
        self.refused[admission.refusal.value] += 1
        self.log.debug("connection from {ip} refused: {reason}", ip=ip, reason=admission.refusal.value)
        return False

    def closed(self, connection: Connection) -> None:
        """A connection admitted by ``admit`` closed: its slot is free."""
        if connection.ip is not None:
            self.gatekeeper.connection_closed(connection.ip)

    # Evidence.
    def malformed(self, connection: Connection) -> None:
        if connection.ip is not None:
            self._judged(self.gatekeeper.malformed(connection.ip, self._clock.seconds()))

    def auth_failed(self, connection: Connection) -> None:
        if connection.ip is not None:
            self._judged(self.gatekeeper.auth_failed(connection.ip, self._clock.seconds()))

    def share(self, connection: Connection, valid: bool, now: float) -> None:
        if connection.ip is not None:
            self._judged(self.gatekeeper.share(connection.ip, valid, now))

    def _judged(self, ban: Ban | None) -> None:
        """Act on what the gatekeeper made of a miner's behaviour."""
        if ban is None:
            return
        self.log.warn(
            "pool {pool}: {ip} banned for {seconds:.0f} s: {reason}",
            pool=self._pool_name,
            ip=ban.ip,
            seconds=ban.remaining(self._clock.seconds()),
            reason=ban.reason,
        )
        if self.shared is not None:
            self.shared.banned(ban)
        self.enforce(ban)

    def enforce(self, ban: Ban) -> None:
        """Close every connection from a banned IP."""
        for connection in self._connections.from_ip(ban.ip):
            connection.close()

    # The operator's commands.
    def list(self) -> tuple[Ban, ...]:
        """The bans in force, soonest to end first."""
        return self.gatekeeper.bans.list(self._clock.seconds())

    def ban(self, ip: str, duration: float | None, reason: str) -> Ban | None:
        """Ban ``ip`` (for the pool's ban time if ``duration`` is None): None if it is whitelisted.

        ValueError for a string that is not an IP or a duration that is not > 0.
        """
        ban = self.gatekeeper.bans.ban(ip, self._clock.seconds(), duration=duration, reason=reason)
        self._judged(ban)
        return ban

    def lift(self, ip: str) -> bool:
        """End the ban on ``ip`` now, here and for the pool's other processes: whether it had one."""
        key = normalise_ip(ip)  # ValueError for a string that is not an IP
        lifted = self.gatekeeper.bans.lift(key)
        if self.shared is not None:
            self.shared.lifted(key)
        return lifted
