"""BatchRecorder: records queued in memory, written to Redis by numbered batches, exactly once.

The machinery every share recorder shares, whatever Redis schema its
script writes (NOMP's for the Bitcoin family, open-ethereum-pool's for the
Ethereum family):

- records are strings (a line each: tab-separated fields, the kind first,
  see nomp.store.schema), queued in memory and taken from the queue in
  batches of at most ``max_batch``; one batch is one script call, applied
  atomically by Redis;
- batches go out one at a time and in order, numbered per recorder; the
  script keeps the last number applied (``keys.recorder(id)``) and skips a
  batch it has applied already, so a batch whose reply was lost (Redis
  restarted, the link broke) is sent again without counting twice;
- while Redis is away records wait in a bounded buffer (``RecorderFull``
  past ``max_buffered``) and one warning says so;
- a batch Redis refuses for what it holds (a script error, a key of the
  wrong type) would be refused again: it is set aside in
  ``keys.recorder_set_aside`` and the queue moves on;
- a block candidate's Deferred fires once its batch is in Redis.

A subclass encodes the records and gives the script that writes a batch
(``_use_script``) and its arguments of its own (``_batch_args``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from nomp.background import background
from nomp.outage import Outage
from nomp.store.client import REDIS_DOWN, RedisClient, RedisUnavailable
from nomp.store.redis import refusal, unavailable_reply
from nomp.store.schema import BLOCK_RECORDS, RecorderKeys, encode_set_aside, record_kind

WRITE_TIMEOUT = 10.0
# Records per script call, by default. Making a batch's call (its records
# joined, then encoded for Redis) is one turn of the reactor thread that
# grows with the batch, a little faster than the batch does: a thousand keep
# that turn under the millisecond a periodic task may hold the reactor, and a
# backlog drains one batch per Redis round trip, each its own turn.
MAX_BATCH = 1000
CANDIDATE_TIMEOUT = 1.0  # seconds block_found waits, by default, for its candidate to be in Redis
RECORDER_TTL = 7 * 24 * 3600  # a stopped recorder's batch number is forgotten after a week
ZADD_CHUNK = 500  # score/member pairs per ZADD in a batch script (Lua's unpack has a stack limit)

# Every batch script starts so: it skips a batch applied already and reads
# the records (``parse_records``, see nomp.store.schema.lua_record_parser,
# comes before). Every script takes KEYS[1] this recorder's batch number
# (keys.recorder(id)); ARGV[1] the batch's number, ARGV[2] the coin, ARGV[4]
# how long Redis keeps the number (RECORDER_TTL), ARGV[5] the records;
# ARGV[3] and the ARGV after the fifth are the schema's own. Once its checks
# have passed, the script sets the number: SET KEYS[1] ARGV[1] EX ARGV[4].
LUA_BATCH_START = """
local applied = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= applied then return 0 end
local records, malformed = parse_records(ARGV[5])
if not records then return redis.error_reply(malformed) end
local coin = ARGV[2]
"""

# KEYS: the set-aside list. ARGV: one entry. A single command: whatever made
# Redis refuse the batch's script does not stop the batch being kept.
_PUSH_SET_ASIDE = "return redis.call('RPUSH', KEYS[1], ARGV[1])"

_WAITING = "{waiting} share records waiting"


class ShareLogKeys(Protocol):
    """Where a pool keeps its PPLNS share log (NOMP's PoolKeys, OEP's OepKeys)."""

    @property
    def share_log(self) -> str: ...

    @property
    def share_log_total(self) -> str: ...


class RoundClosing(Protocol):
    """How a block candidate closes its round: the payment scheme's choice
    (nomp.payments.rounds), spliced into a recorder's script."""

    @property
    def scheme(self) -> str:
        """prop, pplns or solo."""
        ...

    @property
    def fragment(self) -> str:
        """The Lua defining the script's round closing (see nomp.payments.rounds)."""
        ...

    @property
    def args(self) -> tuple[str, ...]:
        """Appended to the script's ARGV."""
        ...

    def keys(self, keys: ShareLogKeys) -> tuple[str, ...]:
        """Appended to the script's KEYS."""
        ...


class RecorderFull(Exception):
    """The buffer is full: Redis has been away too long."""


K = TypeVar("K", bound=RecorderKeys)


@dataclass(frozen=True, slots=True)
class Batch:
    """Records taken from the queue, sent in one script call."""

    number: int
    records: str  # the records, a line each
    count: int
    end: int  # the position in the record stream after its last record


@dataclass(eq=False, slots=True)
class _CandidateWaiter:
    """block_found's Deferred, fired once its record's batch is applied (or the wait is over)."""

    position: int  # the candidate's record in the record stream
    durable: defer.Deferred[bool]
    timer: IDelayedCall | None = None

    def fire(self, durable: bool) -> None:
        if self.durable.called:
            return
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.durable.callback(durable)


@dataclass(eq=False, slots=True)
class _SetAside:
    """A refused batch's list entry, until Redis has taken it."""

    entry: str
    count: int
    failures: int = 0


class BatchRecorder(Generic[K]):
    """Queues one pool's records and writes them to Redis by batches.

    ``waiting``, ``written``, ``set_aside``, ``blocks_waiting``, ``flush``
    and ``keep_blocks_only`` are what RecorderService and /metrics use.
    """

    log = Logger()

    # The record kinds that are about blocks (candidates, settlements): kept
    # by keep_blocks_only, counted by blocks_waiting.
    block_kinds: frozenset[str] = BLOCK_RECORDS

    def __init__(
        self,
        keys: K,
        redis: Callable[[], RedisClient | None],
        clock: IReactorTime,
        max_batch: int = MAX_BATCH,
        max_buffered: int = 500_000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self._redis = redis
        self._clock = clock
        self._max_batch = max_batch
        self._max_buffered = max_buffered
        self._wall_clock = wall_clock
        self._queue: deque[str] = deque()
        self._taken = 0  # records taken from the queue into batches, ever: the queue's first position
        self._batch: Batch | None = None
        self._waiters: deque[_CandidateWaiter] = deque()  # by position
        self._held: deque[_SetAside] = deque()  # set aside, not yet in Redis
        self._held_records = 0
        self._instance = os.urandom(6).hex()  # this recorder's id in Redis
        self._batch_ids = itertools.count(1)
        self._writing = False
        self._flushed: list[defer.Deferred[None]] = []  # flush() callers waiting for the running flush
        self._outage = Outage(self.log, f"pool {keys.coin}: Redis", clock, REDIS_DOWN)
        self.written = 0  # records written, for tests and stats
        self.set_aside = 0  # records of batches Redis refused, set aside (for /metrics)
        self._script = ""  # the subclass's, see _use_script
        self._script_keys: list[str] = []

    def _use_script(self, script: str, keys: Sequence[str]) -> None:
        """The script writing each batch (starting with LUA_BATCH_START), and its KEYS after
        KEYS[1]. It must check everything before it writes anything: a batch Redis refuses
        is set aside whole."""
        self._script = script
        self._script_keys = [self.keys.recorder(self._instance), *keys]

    def _batch_args(self) -> tuple[str | int, Sequence[Any]]:
        """The script's ARGV[3] and ARGV[6...], as they are at the time of a write."""
        raise NotImplementedError

    def _script_args(self, batch: Batch) -> list[Any]:
        third, rest = self._batch_args()
        return [batch.number, self.keys.coin, third, RECORDER_TTL, batch.records, *rest]

    # -- queueing, for the subclasses' record methods

    @property
    def waiting(self) -> int:
        """Records not yet in Redis (set-aside ones waiting for their list included)."""
        return len(self._queue) + (self._batch.count if self._batch else 0) + self._held_records

    @property
    def _has_room(self) -> bool:
        return self.waiting < self._max_buffered

    def _check_room(self) -> None:
        """RecorderFull if the buffer is full; a share's caller checks before encoding it."""
        if not self._has_room:
            raise RecorderFull(f"{self.waiting} share records are waiting for Redis")

    def _add(self, record: str) -> None:
        self._queue.append(record)

    def _add_candidate(self, record: str, timeout: float) -> defer.Deferred[bool]:
        """Queue a candidate's record (even when the buffer is full) and write it now.

        The Deferred fires True once its batch is in Redis, or False if it
        is not after ``timeout`` seconds (it stays queued and is written
        later) or its batch was set aside; it never fails.
        """
        waiter = _CandidateWaiter(self._taken + len(self._queue), defer.Deferred())
        self._queue.append(record)
        self._waiters.append(waiter)
        waiter.timer = self._clock.callLater(timeout, waiter.fire, False)
        self._flush_now()
        return waiter.durable

    def _add_now(self, record: str) -> None:
        """Queue a record (a settlement) and write it at once."""
        self._queue.append(record)
        self._flush_now()

    def keep_blocks_only(self) -> int:
        """Drop the queued share records, keeping the candidates and settlements; how many
        were dropped. For a shutdown that cannot write everything: the blocks matter most."""
        start = self._taken
        kept: deque[str] = deque()
        moved: dict[int, int] = {}
        for index, record in enumerate(self._queue):
            if record_kind(record) in self.block_kinds:
                moved[start + index] = start + len(kept)
                kept.append(record)
        for waiter in self._waiters:
            if waiter.position >= start:
                waiter.position = moved[waiter.position]
        dropped = len(self._queue) - len(kept)
        self._queue = kept
        return dropped

    @property
    def blocks_waiting(self) -> int:
        """Candidates and settlements queued, not yet sent."""
        return sum(1 for record in self._queue if record_kind(record) in self.block_kinds)

    # -- writing

    def _flush_now(self) -> None:
        if not self._writing:
            background(f"pool {self.keys.coin}: share records", self._flush())

    def _next_batch(self) -> Batch | None:
        count = min(len(self._queue), self._max_batch)
        if not count:
            return None
        queue = self._queue
        records = "\n".join([queue.popleft() for _ in range(count)])
        self._taken += count
        return Batch(next(self._batch_ids), records, count, self._taken)

    def flush(self) -> defer.Deferred[None]:
        """Write what is queued (one batch at a time) until nothing is, or Redis fails.

        One flush runs at a time: called during one (block_found starts
        its own), this waits for it, and it writes what was queued meanwhile.
        """
        done: defer.Deferred[None] = defer.Deferred()
        self._flushed.append(done)
        self._flush_now()
        return done

    async def _flush(self) -> None:
        self._writing = True
        failure: Failure | None = None
        try:
            await self._write_set_aside()
            while True:
                if self._batch is None:
                    self._batch = self._next_batch()
                batch = self._batch
                if batch is None:
                    return
                if not await self._write(batch):
                    return
                self._batch = None
                await self._write_set_aside()
        except BaseException:
            failure = Failure()
            raise
        finally:
            self._writing = False
            done, self._flushed = self._flushed, []
            for waiter in done:
                if failure is None:
                    waiter.callback(None)
                else:
                    waiter.errback(failure)

    def _settle_waiters(self, end: int, durable: bool) -> None:
        while self._waiters and self._waiters[0].position < end:
            self._waiters.popleft().fire(durable)

    async def _write(self, batch: Batch) -> bool:
        """Send one batch; whether the queue may move on (it was applied, or set aside)."""
        client = self._redis()
        if client is None:
            self._outage.failed(RedisUnavailable("Redis is not connected"), _WAITING, waiting=self.waiting)
            return False
        attempt = client.eval(self._script, self._script_keys, self._script_args(batch))
        attempt.addTimeout(WRITE_TIMEOUT, self._clock)
        try:
            await attempt
        except Exception as e:
            reason = refusal(e)
            if reason is not None:
                self._outage.succeeded(_WAITING, waiting=self.waiting)  # it answered
                self._set_aside(batch, reason)
                return True
            # Otherwise the batch may or may not have been applied: it is
            # sent again with the same number, which Redis then knows and skips.
            self._outage.failed(_as_outage(e), _WAITING, waiting=self.waiting)
            return False
        self._outage.succeeded("writing {waiting} waiting records", waiting=self.waiting)
        self.written += batch.count
        self._settle_waiters(batch.end, True)
        return True

    def _set_aside(self, batch: Batch, reason: str) -> None:
        entry = encode_set_aside(
            reason, self._wall_clock(), self._instance, batch.number, batch.records.split("\n")
        )
        self._held.append(_SetAside(entry, batch.count))
        self._held_records += batch.count
        self.set_aside += batch.count
        self._settle_waiters(batch.end, False)
        self.log.error(
            "pool {coin}: Redis refused a batch of {count} share records ({reason}); "
            "set aside in {key}, the records behind it go on",
            coin=self.keys.coin,
            count=batch.count,
            reason=reason,
            key=self.keys.recorder_set_aside,
        )

    async def _write_set_aside(self) -> None:
        """Put the set-aside batches in their list, oldest first, until one fails."""
        while self._held:
            held = self._held[0]
            client = self._redis()
            if client is None:
                return  # the batches' own writes say Redis is away
            attempt = client.eval(_PUSH_SET_ASIDE, [self.keys.recorder_set_aside], [held.entry])
            attempt.addTimeout(WRITE_TIMEOUT, self._clock)
            try:
                await attempt
            except Exception as e:
                error = _as_outage(e)
                if self._outage.is_transient(error):
                    self._outage.failed(error, _WAITING, waiting=self.waiting)
                else:
                    held.failures += 1
                    if held.failures == 1:  # then tried again at every flush, quietly
                        self.log.failure(
                            "pool {coin}: {count} set-aside share records not written to {key}; "
                            "kept in memory and tried again",
                            Failure(e),
                            coin=self.keys.coin,
                            count=held.count,
                            key=self.keys.recorder_set_aside,
                        )
                return
            self._held.popleft()
            self._held_records -= held.count
            if held.failures:
                self.log.info(
                    "pool {coin}: {count} set-aside share records written to {key} after {failures} failures",
                    coin=self.keys.coin,
                    count=held.count,
                    key=self.keys.recorder_set_aside,
                    failures=held.failures,
                )


def _as_outage(error: Exception) -> Exception:
    """``error``, or a RedisUnavailable for an answer that means Redis cannot take writes just now."""
    if unavailable_reply(error):
        return RedisUnavailable(f"Redis answered: {error}")
    return error
