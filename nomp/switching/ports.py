"""SwitchPorts: one switch's Stratum ports, their miners attached to the
switch's current pool, and the move of every miner to another pool.

A connection of a switching port is, to the pool it is attached to, one
of its own: it is in the pool's ConnectionRegistry (so the pool's new
jobs, sweeps and drain reach it), takes its extranonce1 from the pool's
Subscriptions, and its shares go through the pool's StratumMethods and
SharePipeline (checked against the pool's jobs, recorded in its keys, a
block to its daemons). The switch keeps what is its own: the ports'
connections, their bans and limits, the logins (one name, a worker name
per pool, see nomp.switching.logins), and for each connection the ids of
the jobs the pools it left sent it, so a late share of one still counts
for the pool whose job it is, solo or not as that pool is. Job ids of
different pools do not meet (each pool's start at random).

``move_to`` moves every miner without a reconnect: detached from the old
pool (which keeps its extranonce1 out of other miners' hands until it
disconnects, for its late shares), attached to the new one with its extranonce1 if the new pool does
not hand that value out already (else a new one with
``mining.set_extranonce`` to a miner that takes it, and a
``client.reconnect`` to one that does not), its difficulty as it was, and
the new pool's current job with clean_jobs set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nomp.config import BanningConfig, PortConfig
from nomp.stratum import difficulty
from nomp.stratum.configure import password_options
from nomp.stratum.connection import Connection, PortSettings
from nomp.stratum.enforcement import BanEnforcer
from nomp.stratum.errors import OTHER, UNAUTHORIZED, StratumError
from nomp.stratum.extranonce import change_extranonce1
from nomp.stratum.methods import MAX_WORKERS, JobSource, current_job
from nomp.stratum.protocol import StratumFactory, encode_notification
from nomp.stratum.registry import ConnectionRegistry
from nomp.stratum.session import MAX_WORKER_NAME
from nomp.stratum.shares import EXTRANONCE2_SIZE
from nomp.stratum.stratumpool import StratumPool
from nomp.switching.logins import LoginRefused, payout_workers

_LOGIN = re.compile(r"[A-Za-z0-9._\-@+]+")  # as a pool's worker names: no ':' (Redis fields)


@dataclass(frozen=True, slots=True, eq=False)
class SwitchedPool:
    """One pool of a switch: its miner side and its jobs."""

    name: str
    stratum: StratumPool
    jobs: JobSource

    def job(self, job_id: str) -> bool:
        """Whether ``job_id`` is one of the pool's live jobs."""
        registry = self.jobs.registry
        return registry is not None and registry.get(job_id) is not None


@dataclass(frozen=True, slots=True)
class SwitchSide:
    """What the StratumService of the switch's ports reads of its configuration."""

    name: str
    banning: BanningConfig


@dataclass(frozen=True, slots=True)
class Moved:
    """What one move did to the switch's miners."""

    miners: int  # connections moved
    kept: int  # of them subscribed and kept their extranonce1
    renewed: int  # given a new one with mining.set_extranonce
    reconnected: int  # asked to reconnect: a new one was needed and they do not take mining.set_extranonce

    def line(self) -> str:
        return (
            f"{self.miners} miner{'' if self.miners == 1 else 's'} moved "
            f"({self.kept} kept their extranonce1, {self.renewed} sent mining.set_extranonce, "
            f"{self.reconnected} asked to reconnect)"
        )


@dataclass(eq=False)
class _Attached:
    """A switching connection's state beside its session."""

    pool: SwitchedPool
    logins: dict[str, dict[str, str]] = field(default_factory=dict)  # login -> pool -> worker name
    earlier: dict[str, str] = field(default_factory=dict)  # job id -> the pool it left that sent it
    # The extranonce1 it mined with in each pool it left, still held in that
    # pool's allocator: a late share of that pool's job is made with it, and
    # no miner of that pool may be given it meanwhile. Given back at the close.
    held: list[tuple[str, bytes]] = field(default_factory=list)  # (pool, extranonce1)


class SwitchPorts:
    """One switch's ports and miners (a ConnectionHandler, and the MinerSide
    of the StratumService that listens on its ports)."""

    log = Logger()

    def __init__(
        self,
        name: str,
        pools: Sequence[SwitchedPool],
        banning: BanningConfig,
        connection_timeout: float,
        clock: IReactorTime,
    ) -> None:
        """``pools``: the switch's, its default first (the current one until ``move_to``)."""
        self.name = name
        self.config = SwitchSide(f"switch:{name}", banning)
        self.pools = {pool.name: pool for pool in pools}
        self.current = pools[0]
        self.clock = clock
        self.connection_timeout = connection_timeout
        self.connections = ConnectionRegistry()
        # Limits, malformed requests and failed logins on the switch's ports;
        # bans for invalid shares are the pool's whose shares they were.
        self.bans = BanEnforcer(self.config.name, banning, self.connections, clock)
        self._coins = [(pool.stratum.config.coin.name, pool.stratum.config.coin.network) for pool in pools]
        self._attached: dict[Connection, _Attached] = {}
        self._settings: dict[tuple[str, str], PortSettings] = {}  # by (port's listen, pool)

    # The StratumService's MinerSide.
    def factory(self, port: PortConfig) -> StratumFactory:
        return StratumFactory(
            self, self.port_settings(port), self._admit, self.clock, self.connection_timeout
        )

    def port_settings(self, port: PortConfig) -> PortSettings:
        return self._settings_for(port, self.current)

    def _settings_for(self, port: PortConfig, pool: SwitchedPool) -> PortSettings:
        """The port's settings under ``pool`` (a solo pool makes it solo)."""
        key = (port.listen, pool.name)
        settings = self._settings.get(key)
        if settings is None:
            settings = self._settings[key] = pool.stratum.port_settings(port)
        return settings

    def apply(self, config: Any) -> None:
        """Never called: a reload keeps the switching section until a restart (nomp.config.diff)."""

    def retarget_quiet(self) -> None:
        """Nothing: the pool each connection is attached to sweeps it with its own."""

    def retarget_quiet_step(self) -> None:
        """Nothing, as ``retarget_quiet``."""

    def close_all(self) -> None:
        for connection in self.connections.snapshot():
            connection.close()

    def idle(self) -> defer.Deferred[None]:
        """Fires once no share of any of the switch's pools is being hashed."""
        waiting = [pool.stratum.idle() for pool in self.pools.values()]
        return defer.gatherResults(waiting).addCallback(lambda _: None)

    def attached_to(self, connection: Connection) -> str | None:
        """The pool ``connection`` mines for (None: not one of the switch's).
        It is in that pool's ConnectionRegistry too, whose drain counts it
        (nomp.stratum.service.AttachesToPools)."""
        attached = self._attached.get(connection)
        return None if attached is None else attached.pool.name

    def _admit(self, ip: str, now: float) -> bool:
        # An IP the current pool banned for its shares is refused here too.
        if self.current.stratum.bans.gatekeeper.bans.is_banned(ip, now):
            return False
        return self.bans.admit(ip, now)

    # ConnectionHandler.
    def connected(self, connection: Connection) -> None:
        self.connections.add(connection)
        pool = self.current
        self._attached[connection] = _Attached(pool)
        connection.settings = self._settings_for(connection.settings.port, pool)
        pool.stratum.connections.add(connection)

    def disconnected(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self.bans.closed(connection)
        attached = self._attached.pop(connection, None)
        if attached is not None:
            attached.pool.stratum.connections.discard(connection)
            attached.pool.stratum.subscriptions.released(connection)
            for name, extranonce1 in attached.held:
                self.pools[name].stratum.subscriptions.extranonces.release(extranonce1)

    def malformed(self, connection: Connection) -> None:
        connection.session.malformed += 1
        self.bans.malformed(connection)

    def request(self, connection: Connection, request_id: Any, method: str, params: list[Any]) -> None:
        attached = self._attached[connection]
        if method == "mining.authorize":
            self._authorize(connection, attached, request_id, params)
        elif method == "mining.submit":
            self._submit(connection, attached, request_id, params)
        else:
            attached.pool.stratum.methods.request(connection, request_id, method, params)

    def _authorize(
        self, connection: Connection, attached: _Attached, request_id: Any, params: list[Any]
    ) -> None:
        if not params or not isinstance(params[0], str):
            raise StratumError(OTHER, "invalid params: expected username, password")
        login = params[0]
        password = params[1] if len(params) > 1 and isinstance(params[1], str) else ""
        problem = None
        if not 0 < len(login) <= MAX_WORKER_NAME or not _LOGIN.fullmatch(login):
            problem = f"invalid worker name: use letters, digits and ._-@+ (at most {MAX_WORKER_NAME})"
        elif login not in attached.logins and len(attached.logins) >= MAX_WORKERS:
            problem = f"at most {MAX_WORKERS} workers per connection"
        else:
            try:
                by_coin = payout_workers(login, self._coins)
            except LoginRefused as e:
                problem = str(e)
        if problem is not None:
            connection.reply_refusal(request_id, StratumError(UNAUTHORIZED, problem))
            self.bans.auth_failed(connection)
            return
        workers = {name: by_coin[pool.stratum.config.coin.name] for name, pool in self.pools.items()}
        attached.logins[login] = workers
        for worker in workers.values():
            connection.session.workers[worker] = password[:256]
        connection.reply(request_id, True)
        self._password_difficulty(connection, password)

    def _password_difficulty(self, connection: Connection, password: str) -> None:
        """``d=N`` in the password pins the difficulty, as on a pool's own ports."""
        options = password_options(password)
        if options.difficulty is not None:
            difficulty.miner_asked(connection, options.difficulty, self.clock.seconds())
            connection.session.vardiff = None

    def _submit(
        self, connection: Connection, attached: _Attached, request_id: Any, params: list[Any]
    ) -> None:
        pool = attached.pool
        solo = None  # as the connection's settings say: those of the pool it is attached to
        if len(params) > 1 and type(params[1]) is str and not pool.job(params[1]):
            # A job of a pool this connection left, if it is one: judged as that pool's.
            left = attached.earlier.get(params[1])
            if left is not None:
                pool = self.pools[left]
                solo = self._settings_for(connection.settings.port, pool).solo
        if params and type(params[0]) is str:
            worker = attached.logins.get(params[0], {}).get(pool.name)
            if worker is None:
                # Only a login names a worker here, not one of its per-pool names.
                error = StratumError(UNAUTHORIZED, "unauthorized worker")
                pool.stratum.pipeline.refused(connection, params[0], error, self.clock.seconds())
                raise error
            params = [worker, *params[1:]]
        pool.stratum.methods.submit(connection, request_id, params, solo)

    # The move.
    def can_move_to(self, name: str) -> str | None:
        """Why the miners cannot be moved to pool ``name`` now, or None."""
        pool = self.pools[name]
        if current_job(pool.jobs) is None:
            return f"pool {name} has no job yet: it is still starting"
        if pool.stratum.subscriptions.extranonces.instance is None:
            return "no extranonce1 instance byte is held yet (it is leased from Redis): try again shortly"
        return None

    def move_to(self, name: str) -> Moved:
        """Attach every miner to pool ``name`` and send it that pool's job; new
        connections go to it too. ``can_move_to`` said yes."""
        new = self.pools[name]
        self.current = new
        job = current_job(new.jobs)
        kept = renewed = reconnected = moved = 0
        for connection in self.connections.snapshot():
            attached = self._attached.get(connection)
            if attached is None or attached.pool is new or connection.closing:
                continue
            moved += 1
            left = attached.pool
            left.stratum.connections.discard(connection)  # its extranonce1 stays held there
            session = connection.session
            if session.extranonce1 is not None:
                attached.held.append((left.name, session.extranonce1))
            earlier = {**attached.earlier, **{j: left.name for j in session.sent if left.job(j)}}
            attached.earlier = {j: p for j, p in earlier.items() if self.pools[p].job(j)}
            attached.pool = new
            connection.settings = self._settings_for(connection.settings.port, new)
            new.stratum.connections.add(connection)
            extranonce1 = session.extranonce1
            if extranonce1 is None:
                continue  # not subscribed yet: it subscribes with the new pool
            extranonces = new.stratum.subscriptions.extranonces
            if (new.name, extranonce1) in attached.held:
                attached.held.remove((new.name, extranonce1))  # back where it holds its value
                kept += 1
            elif extranonces.claim(extranonce1):
                kept += 1
            elif session.extranonce_subscribed:
                fresh = extranonces.take()
                change_extranonce1(session, fresh)
                connection.send_line(
                    encode_notification("mining.set_extranonce", [fresh.hex(), EXTRANONCE2_SIZE])
                )
                renewed += 1
            else:
                # The new pool hands its value out already and it takes no other.
                session.extranonce1 = None
                connection.send_line(encode_notification("client.reconnect", []))
                connection.close()
                reconnected += 1
                continue
            new.stratum.connections.mining(connection)
            if job is not None:
                new.stratum.broadcaster.send_job(connection, job, True)
        return Moved(moved, kept, renewed, reconnected)
