"""The threads share checks run in, so the reactor thread never hashes."""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from nomp.hashing import JobHasher, ShareCheckThreads


class Hasher(Protocol):
    """What checks a batch of shares of one job (JobHasher, the Ethereum
    family's EpochHasher): hashable, one per job, so batches group by it."""

    def check_packed(self, records: bytes, count: int) -> Sequence[Any]: ...


class Work(Protocol):
    """One share's part of a batch (ShareWork, EthTask)."""

    def pack(self) -> bytes: ...


# Two 16-lane scrypt runs: large enough to fill the SIMD lanes under load,
# small enough that one batch stays well under a millisecond.
MAX_BATCH = 32
# A batch this large goes at once; a smaller one waits for more shares of
# its job: up to LINGER on the C threads, which wait on their own, and up to
# BATCH_WAIT on a reactor timer for the Python threads (the epoll reactor
# rounds a timer up to the millisecond). One scrypt share alone costs nearly
# what four hashed together do. While a batch is hashed the next one gathers
# anyway, so the wait only has to gather the first: a longer wait saves
# little CPU under load and costs reply latency (bench/stalls.py).
FULL_BATCH = 16
BATCH_WAIT = 0.0005
LINGER = 0.0005
# Nice steps the hashing threads run below the reactor thread. When every
# core is busy (a busy coin daemon or Redis on the same machine, more
# shares than the threads keep up with), the reactor thread, which reads
# and answers every miner, then goes first: a hash waits a little rather
# than every connection's replies and reads. A few steps suffice; far
# below, the threads would starve under a busy reactor.
NICENESS = 5

# Told the result of one share check: what its hasher made of it, or the Failure of its batch.
ShareDone = Callable[[Any], None]
_Waiting = list[tuple[bytes, ShareDone]]
# What a worker thread is given: a call, its arguments, and what to call on
# the reactor thread with its result (or its Failure). None: stop.
_Task = tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any], None]] | None


@implementer(IReadDescriptor)
class _FinishedShares:
    """The read end of the pipe the C share checking threads write to when batches finish."""

    def __init__(self, fd: int, take: Callable[[], None]) -> None:
        self._fd = fd
        self.doRead = take

    def fileno(self) -> int:
        return self._fd

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "hashing"


class HashPoolService(Service):
    """Owns the share checking threads; shares are checked in batches per job.

    Shares of one job are checked together in one C call, which fills the
    SIMD lanes: a batch goes to a free thread once it is full or its first
    share has waited for company (see FULL_BATCH); while every thread is
    busy, shares queue and the next free thread takes them at once.

    A JobHasher's shares go one by one to threads of the C extension, which
    never take the GIL and make the batches themselves (ShareCheckThreads):
    a share costs the reactor one C call, the wait for company is the
    threads' (no reactor timer), and the results of every batch finished
    since the reactor last looked come back for one read of a pipe, with no
    GIL to hand back and forth. Other hashers (the Ethereum family's) and
    ``run`` go to Python threads, batched here.
    """

    name = "hashing"
    log = Logger()

    def __init__(self, reactor: Any, threads: int) -> None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self._reactor = reactor
        self.threads = threads
        # Its own threads on one queue, not Twisted's ThreadPool: a batch is
        # handed over several hundred times a second, and the pool's
        # coordinator, locks and context passing cost more than the hand-off
        # itself (bench/hashing.py measures both).
        self._tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._waiting: dict[Hasher, _Waiting] = {}
        self._busy = 0
        self._timer: Any = None
        self._checks: ShareCheckThreads | None = None
        self._checking: dict[int, ShareDone] = {}  # by tag: the shares the C threads have
        self._tags = itertools.count(1)
        self._pipe: tuple[int, int] | None = None
        self._finished_reader: _FinishedShares | None = None
        self._python_batches = 0  # share batches handed to the Python threads, ever
        self._c_batches = 0  # those the C threads made, as of their last stop

    @property
    def queued(self) -> int:
        """Shares waiting for a thread."""
        in_c = self._checks.counts()[0] if self._checks is not None else 0
        return in_c + sum(len(items) for items in self._waiting.values())

    @property
    def busy(self) -> int:
        """Batches being checked (at most ``threads`` on the C threads and as many on the Python ones)."""
        return self._busy + (self._checks.counts()[1] if self._checks is not None else 0)

    @property
    def batches(self) -> int:
        """Share batches checked or being checked, ever."""
        in_c = self._checks.counts()[2] if self._checks is not None else 0
        return self._python_batches + self._c_batches + in_c

    def startService(self) -> None:
        self._workers = [
            threading.Thread(target=self._work, name=f"nomp-hashing-{n}", daemon=True)
            for n in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)  # a full pipe holds a wake-up already: the writer need not wait
        self._pipe = (read, write)
        self._checks = ShareCheckThreads(self.threads, write, FULL_BATCH, LINGER, NICENESS)
        self._finished_reader = _FinishedShares(read, self._take_finished)
        self._reactor.addReader(self._finished_reader)
        super().startService()

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._dispatch(everything=True)
        workers, self._workers = self._workers, []
        # Queued work finishes first: each worker stops at its None, behind it.
        for _ in workers:
            self._tasks.put(None)
        for worker in workers:
            worker.join()
        checks, self._checks = self._checks, None
        if checks is not None:
            # The C threads check what they were given, then stop: its results are told now.
            finished = checks.stop()
            self._c_batches += checks.counts()[2]
            self._deliver(finished)
        if self._finished_reader is not None:
            self._reactor.removeReader(self._finished_reader)
            self._finished_reader = None
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        return None

    def _work(self) -> None:
        """A worker thread: run tasks until told to stop; results go back to the reactor thread."""
        _lower_priority(NICENESS)
        while True:
            task = self._tasks.get()
            if task is None:
                return
            function, args, done = task
            try:
                result = function(*args)
            except BaseException:
                result = Failure()
            self._reactor.callFromThread(done, result)

    def check(self, job: Hasher, work: Work) -> defer.Deferred[Any]:
        """What ``job`` makes of one share (a JobHasher: its header and PoW
        hash), computed off the reactor thread."""
        done: defer.Deferred[Any] = defer.Deferred()
        self.submit(job, work, partial(_fire, done))
        return done

    def run(self, function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """``function(*args)`` in a hashing thread, for slow work the share
        checks depend on (an ethash cache, a dataset chunk): it takes a
        thread as a batch does, and share batches go to the others."""
        done: defer.Deferred[Any] = defer.Deferred()
        if not self._workers:
            return defer.fail(RuntimeError("the hashing pool is not running"))
        self._busy += 1
        self._tasks.put((function, args, partial(self._ran, done=done)))
        return done

    def _ran(self, result: Any, done: defer.Deferred[Any]) -> None:
        self._busy -= 1
        _fire(done, result)
        self._dispatch()

    def submit(self, job: Hasher, work: Work, done: ShareDone) -> None:
        """``check`` for the Stratum server's hot path: ``done`` is called on
        the reactor thread with the result, with no Deferred made per share."""
        record = work.pack()
        checks = self._checks
        if checks is not None and ShareCheckThreads.can_check(job):
            assert isinstance(job, JobHasher)
            tag = next(self._tags)
            try:
                checks.submit(job, record, tag)
            except Exception:
                self._tell(done, Failure())
            else:
                self._checking[tag] = done
            return
        waiting = self._waiting.setdefault(job, [])
        waiting.append((record, done))
        if len(waiting) >= FULL_BATCH:
            self._dispatch()
        elif self._timer is None:
            self._timer = self._reactor.callLater(BATCH_WAIT, self._waited)

    def _waited(self) -> None:
        # What a busy pool cannot take now, the next thread to finish takes.
        self._timer = None
        self._dispatch()

    def _dispatch(self, everything: bool = False) -> None:
        """Hand waiting batches to free threads (or all of them to the pool's queue)."""
        while self._waiting and (everything or self._busy < self.threads):
            if not self._workers:
                self._fail_waiting(RuntimeError("the hashing pool is not running"))
                return
            job = next(iter(self._waiting))
            items = self._waiting.pop(job)
            batch, rest = items[:MAX_BATCH], items[MAX_BATCH:]
            if rest:
                self._waiting[job] = rest  # behind the other jobs: fair turns
            self._busy += 1
            self._python_batches += 1
            records = b"".join(record for record, _ in batch)
            self._tasks.put((job.check_packed, (records, len(batch)), partial(self._finished, batch=batch)))

    def _take_finished(self) -> None:
        """The C threads wrote to the pipe: take the results of every batch they have finished."""
        assert self._pipe is not None
        # The pipe is read before the results are taken: a batch finished in
        # between writes again, so none is left unseen. It holds a byte or
        # two: one read takes them (anything left wakes the reactor again).
        with contextlib.suppress(BlockingIOError):
            os.read(self._pipe[0], 4096)
        if self._checks is not None:
            self._deliver(self._checks.finished())

    def _deliver(self, finished: list[tuple[int, Any]]) -> None:
        checking = self._checking
        for tag, result in finished:
            self._tell(checking.pop(tag), Failure(result) if isinstance(result, Exception) else result)

    def _finished(self, result: Sequence[Any] | Failure, batch: _Waiting) -> None:
        self._busy -= 1
        if isinstance(result, Failure):
            for _, done in batch:
                self._tell(done, result)
        else:
            for (_, done), hashed in zip(batch, result, strict=True):
                self._tell(done, hashed)
        self._dispatch()

    def _fail_waiting(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for items in waiting.values():
            for _, done in items:
                self._tell(done, Failure(error))

    def _tell(self, done: ShareDone, result: Any) -> None:
        # One share's caller failing must not cost the rest of its batch their answers.
        try:
            done(result)
        except Exception:
            self.log.failure("a share check's result was not taken")


def _lower_priority(niceness: int) -> None:
    """Run this thread ``niceness`` steps below its maker (a Linux thread has a nice value of its own)."""
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    # Lowering one's own priority needs no privilege; past the bottom the kernel keeps it at 19.
    os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + niceness)


def _fire(done: defer.Deferred[Any], result: Any) -> None:
    if isinstance(result, Failure):
        done.errback(result)
    else:
        done.callback(result)
