"""SharePipeline: from a parsed submit to a verdict, the books and, for a block, a candidate.

The same for every protocol family. A family brings its ``ShareRules``
(what the hashing threads check, how a hash is judged, what a block
candidate is made of) and its own framing; the pipeline does the rest:
the share checked off the reactor thread, the reply, the record, the
counters, vardiff's sample, the ban evidence, and a block handed to the
pool's ``BlockSink`` (the pool records it and submits it, not the Stratum
side).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from nomp.candidate import BlockCandidate
from nomp.store.recorder import RecorderFull
from nomp.stratum import difficulty
from nomp.stratum.connection import Connection
from nomp.stratum.errors import (
    DUPLICATE_SHARE,
    JOB_NOT_FOUND,
    LOW_DIFFICULTY,
    NOT_SUBSCRIBED,
    OTHER,
    UNAUTHORIZED,
    StratumError,
)
from nomp.stratum.session import MinerSession
from nomp.stratum.shares import Verdict

# What became of each submitted share, as counted in SharePipeline.shares:
# accepted, refused by Stratum error code, refused because it could not be
# recorded, or lost to a failed check.
SHARE_REFUSALS = {
    JOB_NOT_FOUND: "stale",
    DUPLICATE_SHARE: "duplicate",
    LOW_DIFFICULTY: "low_difficulty",
    UNAUTHORIZED: "unauthorized",
    NOT_SUBSCRIBED: "not_subscribed",
    OTHER: "invalid",
}
SHARE_RESULTS = ("accepted", *SHARE_REFUSALS.values(), "unrecorded", "error")


class Share(Protocol):
    """A submit that passed every check a hash is not needed for."""

    @property
    def worker(self) -> str: ...


S = TypeVar("S", bound=Share)
H = TypeVar("H")
H_contra = TypeVar("H_contra", contravariant=True)


class ShareRules(Protocol[S, H_contra]):
    """A protocol family's proof of work, as the pipeline uses it."""

    def task(self, share: S) -> tuple[Any, Any]:
        """(hasher, work): what the hashing threads check for this share."""
        ...

    def judge(self, share: S, hashed: H_contra) -> Verdict: ...

    def check_again(self, share: S, session: MinerSession) -> S | None:
        """The share once more, as made from work sent before a change of
        the connection's extranonce (None: nothing to try again)."""
        ...

    def candidate(self, share: S, hashed: H_contra, solo: bool, now: float) -> BlockCandidate:
        """The block a share that met the network target makes (``now``: unix seconds)."""
        ...


class ShareChecker(Protocol):
    """The hashing threads (HashPoolService): ``done`` is called on the reactor thread."""

    def submit(self, hasher: Any, work: Any, done: Callable[[Any], None]) -> None: ...


class ShareRecords(Protocol):
    """Where shares are recorded (the pool's ShareRecorder)."""

    def valid_share(self, worker: str, difficulty: float, solo: bool = False) -> None:
        """Raises RecorderFull when the share cannot be recorded now."""
        ...

    def invalid_share(self, worker: str, difficulty: float) -> None: ...


class BlockSink(Protocol):
    """Where block candidates go: the pool, which records and submits them."""

    def found_block(self, candidate: BlockCandidate) -> None: ...


class Evidence(Protocol):
    """Who judges a miner by its shares (the pool's BanEnforcer)."""

    def share(self, connection: Connection, valid: bool, now: float) -> None: ...


class SharePipeline(Generic[S, H]):
    """One pool's shares, from a parsed submit to the books."""

    log = Logger()

    def __init__(
        self,
        pool_name: str,
        rules: ShareRules[S, H],
        checker: ShareChecker,
        recorder: ShareRecords,
        blocks: BlockSink,
        evidence: Evidence,
        clock: IReactorTime,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool_name = pool_name
        self._rules = rules
        self._checker = checker
        self._recorder = recorder
        self._blocks = blocks
        self._evidence = evidence
        self._clock = clock
        self._wall_clock = wall_clock
        self.shares: Counter[str] = Counter()  # submitted shares, by one of SHARE_RESULTS
        self.in_flight = 0  # shares being hashed
        self._idle_waiters: list[defer.Deferred[None]] = []

    def refused(self, connection: Connection, worker: object, error: StratumError, now: float) -> None:
        """A submit refused before any hash (stale, duplicate, malformed...).

        Only an authorized, subscribed miner's refusals count: for its
        invalid shares (as NOMP), its vardiff and its ban evidence.
        """
        session = connection.session
        session.invalid_shares += 1
        self.shares[SHARE_REFUSALS.get(error.code, "invalid")] += 1
        if (
            type(worker) is str
            and worker in session.workers
            and error.code not in (UNAUTHORIZED, NOT_SUBSCRIBED)
        ):
            self._recorder.invalid_share(worker, session.difficulty)
            difficulty.share_seen(connection, now)
            self._evidence.share(connection, False, now)

    def no_work(self) -> StratumError:
        """A submit before the pool has any job: counted, and the error to reply."""
        self.shares[SHARE_REFUSALS[OTHER]] += 1
        return StratumError(OTHER, "the pool has no job yet")

    def submit(
        self, connection: Connection, request_id: Any, share: S, now: float, solo: bool | None = None
    ) -> None:
        """Check ``share`` off the reactor thread; the miner gets its reply when it is judged.

        It is recorded, and its block built, as solo or not as the connection's
        port is now, or as ``solo`` says (a switching port's share of a job of a
        pool it left: that pool's setting).
        """
        difficulty.share_seen(connection, now)
        self._hash(connection, request_id, share, connection.settings.solo if solo is None else solo)

    def _hash(self, connection: Connection, request_id: Any, share: S, solo: bool) -> None:
        self.in_flight += 1
        hasher, work = self._rules.task(share)
        self._checker.submit(
            hasher, work, lambda hashed: self._landed(hashed, connection, request_id, share, solo)
        )

    def _landed(
        self, hashed: H | Failure, connection: Connection, request_id: Any, share: S, solo: bool
    ) -> None:
        # One callback for both outcomes: this runs for every share.
        try:
            if isinstance(hashed, Failure):
                self.shares["error"] += 1
                self.log.failure("share check failed", hashed)
                connection.reply_error(request_id, StratumError(OTHER, "internal error"))
            else:
                self._judge(hashed, connection, request_id, share, solo)
        except Exception:
            self.log.failure("share of {worker} not handled", worker=share.worker)
            connection.reply_error(request_id, StratumError(OTHER, "internal error"))
        finally:
            self._share_done()

    def _judge(self, hashed: H, connection: Connection, request_id: Any, share: S, solo: bool) -> None:
        verdict = self._rules.judge(share, hashed)
        if not verdict.accepted:
            again = self._rules.check_again(share, connection.session)
            if again is not None:
                self._hash(connection, request_id, again, solo)  # judged once more, and only then counted
                return
        session = connection.session
        self._evidence.share(connection, verdict.accepted, self._clock.seconds())
        if not verdict.accepted:
            session.invalid_shares += 1
            self._recorder.invalid_share(share.worker, verdict.difficulty)
            assert verdict.error is not None
            self.shares[SHARE_REFUSALS.get(verdict.error.code, "invalid")] += 1
            connection.reply_error(request_id, verdict.error)
            return
        try:
            self._recorder.valid_share(share.worker, verdict.difficulty, solo)
        except RecorderFull as e:
            self.shares["unrecorded"] += 1
            self.log.error("share of {worker} not recorded: {reason}", worker=share.worker, reason=e)
            connection.reply_error(request_id, StratumError(OTHER, "the pool cannot record shares now"))
        else:
            session.valid_shares += 1
            self.shares["accepted"] += 1
            connection.reply_true(request_id)
        if verdict.block:  # a block is worth submitting even when its share could not be recorded
            self._found(share, hashed, solo)

    def _found(self, share: S, hashed: H, solo: bool) -> None:
        candidate = self._rules.candidate(share, hashed, solo, self._wall_clock())
        self.log.info(
            "pool {pool}: {worker} found a block candidate {block_hash} at height {height}",
            pool=self._pool_name,
            worker=share.worker,
            block_hash=candidate.block_hash,
            height=candidate.height,
        )
        self._blocks.found_block(candidate)

    def _share_done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def idle(self) -> defer.Deferred[None]:
        """Fires once no share is being hashed."""
        if self.in_flight == 0:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter
