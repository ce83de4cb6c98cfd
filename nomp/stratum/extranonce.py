"""extranonce1 values: handing them out, and changing a connection's. Pure.

An extranonce1 is 4 bytes. Its first byte is the process's instance byte
(``instance`` in config.yaml, or one leased from Redis), so pool
processes sharing one Redis, each with its own byte, never hand out the
same value; the other three bytes tell the process's connections apart.

A connection's extranonce1 may change while it mines
(``mining.set_extranonce``). The miner applies the new value from the
next job it is sent, so a share of a job sent before the change was made
with the old value: the connection remembers which value each such job
went out with (one change back), and a share refused under the new value
is checked once more under the old one.
"""

from __future__ import annotations

import random

from nomp.stratum.session import MinerSession
from nomp.stratum.shares import Submission

EXTRANONCE1_SIZE = 4
_SUFFIX_BITS = 8 * (EXTRANONCE1_SIZE - 1)
_SUFFIXES = 1 << _SUFFIX_BITS  # values one instance byte has room for


class NoInstanceByte(RuntimeError):
    """No instance byte is held just now: no extranonce1 may be handed out."""


class Extranonce1Allocator:
    """Hands out extranonce1 values no two live connections share, all
    starting with the instance byte.

    ``instance`` is the byte handed out now (None: none is held, ``take``
    refuses). ``partition`` is the byte the values in use start with: it
    stays while the instance byte is briefly unknown, and a different byte
    from ``use`` starts a new partition, whose values the live connections
    must be moved to.
    """

    def __init__(self, rng: random.Random | None = None, instance: int | None = 0) -> None:
        self._rng = rng or random.SystemRandom()
        self.instance: int | None = None
        self.partition: int | None = None
        self._used: set[int] = set()  # whole values (instance byte included)
        self._next = 0
        if instance is not None:
            self.use(instance)

    def use(self, instance: int) -> bool:
        """Hand out values starting with ``instance`` from now on.

        True when values in use start with another byte: they came from
        another partition and must be replaced.
        """
        if not 0 <= instance <= 255:
            raise ValueError(f"an instance byte is 0-255, not {instance}")
        self.instance = instance
        if instance == self.partition:
            return False
        moved = self.partition is not None
        self.partition = instance
        self._used.clear()  # values of the old partition are released by nobody
        self._next = (instance << _SUFFIX_BITS) | self._rng.getrandbits(_SUFFIX_BITS)
        return moved

    def suspend(self) -> None:
        """The instance byte is not held just now: ``take`` refuses until ``use``."""
        self.instance = None

    def take(self) -> bytes:
        instance = self.instance
        if instance is None:
            raise NoInstanceByte("no instance byte is held: no extranonce1 can be handed out")
        if len(self._used) >= _SUFFIXES:
            raise RuntimeError("extranonce1 space exhausted")
        base = instance << _SUFFIX_BITS
        value = self._next
        while value in self._used:
            value = base | ((value + 1) % _SUFFIXES)
        self._used.add(value)
        self._next = base | ((value + 1) % _SUFFIXES)
        return value.to_bytes(EXTRANONCE1_SIZE, "big")

    def claim(self, extranonce1: bytes) -> bool:
        """Hold a value handed out elsewhere in this process (a miner a
        switching port moves in from another pool) if it is of the byte
        handed out now and free here; whether it is now held."""
        value = int.from_bytes(extranonce1, "big")
        if self.instance is None or value >> _SUFFIX_BITS != self.instance or value in self._used:
            return False
        self._used.add(value)
        return True

    def release(self, extranonce1: bytes) -> None:
        # A value of an earlier partition is not in the set: nothing happens.
        self._used.discard(int.from_bytes(extranonce1, "big"))


def change_extranonce1(session: MinerSession, new: bytes) -> bytes | None:
    """Give the session ``new`` as its extranonce1; the one it had.

    The jobs it was sent so far are remembered with the old value (only
    the last change is remembered: a job from before two changes is
    checked against the value of the first).
    """
    old = session.extranonce1
    if old is not None:
        session.earlier_extranonce1 = dict.fromkeys(session.sent, old)
    session.extranonce1 = new
    return old


def with_earlier_extranonce1(submission: Submission, session: MinerSession) -> Submission | None:
    """The same share as made with the extranonce1 its job was sent with
    before the connection's extranonce1 changed; None when there is no such
    value, or the share was already made with it.

    The duplicate check needs nothing more: it already counted these
    params (extranonce2, ntime, nonce) for this job.
    """
    earlier = session.earlier_extranonce1.get(submission.job.job_id)
    if earlier is None or submission.extranonce.startswith(earlier):
        return None
    extranonce = earlier + submission.extranonce[len(earlier) :]
    return submission._replace(extranonce=extranonce, work=submission.work._replace(extranonce=extranonce))
