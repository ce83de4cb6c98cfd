"""Subscriptions: the extranonce1 each miner mines with, and changing it.

Every extranonce1 starts with the process's instance byte (see
``InstanceLeaseService``). Until a byte is known, subscribes wait; when the
byte changes, live connections move: an extranonce-subscribed miner gets
``mining.set_extranonce`` and a clean job, the others ``client.reconnect``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from nomp.stratum.broadcast import Broadcaster, NotifiableJob
from nomp.stratum.connection import Connection
from nomp.stratum.errors import OTHER, StratumError
from nomp.stratum.extranonce import Extranonce1Allocator, change_extranonce1
from nomp.stratum.protocol import encode_notification
from nomp.stratum.registry import ConnectionRegistry
from nomp.stratum.shares import EXTRANONCE2_SIZE


class Subscriptions:
    """One pool's extranonce1s."""

    log = Logger()

    def __init__(
        self,
        pool_name: str,
        connections: ConnectionRegistry,
        broadcaster: Broadcaster,
        current_job: Callable[[], NotifiableJob | None],
        instance: int | None = 0,
    ) -> None:
        """``instance``: the byte every extranonce1 starts with (0 for a lone
        process); None until ``set_instance`` gives one."""
        self._pool_name = pool_name
        self._connections = connections
        self._broadcaster = broadcaster
        self._current_job = current_job
        self.extranonces = Extranonce1Allocator(instance=instance)
        # Subscribes answered once the instance byte is known: connection -> (id, answer).
        self._waiting: dict[Connection, tuple[Any, Callable[[], None]]] = {}

    def take(self, connection: Connection, request_id: Any, answer: Callable[[], None]) -> bool:
        """Give the connection an extranonce1; False if none can be given
        yet: ``answer`` is then called once the instance byte is known."""
        if connection.session.extranonce1 is not None:
            return True
        if self.extranonces.instance is None:
            # Being leased from Redis: the connection timeout still applies.
            if connection in self._waiting:
                raise StratumError(OTHER, "a subscribe is already waiting for the pool to start")
            if not self._waiting:
                self.log.info(
                    "pool {pool}: subscribes wait for the extranonce1 instance byte", pool=self._pool_name
                )
            self._waiting[connection] = (request_id, answer)
            return False
        connection.session.extranonce1 = self.extranonces.take()
        self._connections.mining(connection)
        return True

    def released(self, connection: Connection) -> None:
        """A connection closed: its extranonce1 may be handed out again."""
        if connection.session.extranonce1 is not None:
            self.extranonces.release(connection.session.extranonce1)
        self._connections.not_mining(connection)
        self._waiting.pop(connection, None)

    def set_extranonce(self, connection: Connection) -> bool:
        """Give a connection a new extranonce1: ``mining.set_extranonce``, then
        the current job, clean, so its next work uses the new value.

        False, and nothing sent, for a connection not subscribed, or not
        extranonce-subscribed, or while no instance byte is held. Shares of
        jobs sent before are checked against the old value (the share
        rules' ``check_again``).
        """
        session = connection.session
        if session.extranonce1 is None or not session.extranonce_subscribed:
            return False
        if self.extranonces.instance is None:
            return False
        new = self.extranonces.take()
        old = change_extranonce1(session, new)
        if old is not None:
            self.extranonces.release(old)  # after the take: the new value is never the old one
        connection.send_line(encode_notification("mining.set_extranonce", [new.hex(), EXTRANONCE2_SIZE]))
        job = self._current_job()
        if job is not None:
            self._broadcaster.send_job(connection, job, True)
        return True

    def set_instance(self, instance: int | None) -> None:
        """The process's instance byte is now ``instance`` (see InstanceLeaseService).

        None: no byte is held just now; new subscribes wait, and live
        connections keep their extranonce1. A byte other than the one live
        extranonce1s start with re-partitions them: each extranonce-subscribed
        connection gets a new one, the others are asked to reconnect and
        closed. Waiting subscribes are then answered.
        """
        if instance is None:
            self.extranonces.suspend()
            return
        if self.extranonces.use(instance):
            self._repartition(instance)
        waiting, self._waiting = self._waiting, {}
        for connection, (request_id, answer) in waiting.items():
            try:
                answer()
            except Exception:
                self.log.failure("pool {pool}: a waiting subscribe failed", pool=self._pool_name)
                connection.reply_error(request_id, StratumError(OTHER, "internal error"))

    def _repartition(self, instance: int) -> None:
        moved = closed = 0
        reconnect = encode_notification("client.reconnect", [])
        for connection in self._connections.snapshot():
            session = connection.session
            if session.extranonce1 is None:
                continue
            if self.set_extranonce(connection):
                moved += 1
            else:
                # Its extranonce1 may now be another process's: it must not mine on with it.
                session.extranonce1 = None
                self._connections.not_mining(connection)
                connection.send_line(reconnect)
                connection.close()
                closed += 1
        self.log.warn(
            "pool {pool}: extranonce1 instance byte now {instance}: {moved} miners given a new "
            "extranonce1, {closed} asked to reconnect",
            pool=self._pool_name,
            instance=instance,
            moved=moved,
            closed=closed,
        )
