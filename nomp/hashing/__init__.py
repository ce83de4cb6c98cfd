"""Proof-of-work hashing: the typed face of the C extension ``_native``.

The extension also carries the one other loop that is worth C: the same
notification sent on many sockets (``send_each``). Nothing else in nomp
imports ``_native``. Everything here is synchronous and
pure; :mod:`nomp.hashing.pool` decides which thread runs it.
"""

from __future__ import annotations

import errno
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from nomp.hashing._native import ffi, lib

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "JobHasher",
    "ShareCheckThreads",
    "ShareHash",
    "ShareWork",
    "implementation",
    "scrypt",
    "send_each",
    "sha256d",
]

DIFF1_TARGET: Final = 0x00000000FFFF0000000000000000000000000000000000000000000000000000
MAX_EXTRANONCE: Final = 16
_SHARE = struct.Struct("<16sB3xIII")
_RESULT_SIZE: Final = int(lib.NOMP_RESULT_SIZE)
assert _SHARE.size == lib.NOMP_SHARE_SIZE


@dataclass(frozen=True, slots=True)
class Algorithm:
    """A proof-of-work algorithm the pool can check.

    ``multiplier`` scales stratum difficulty: a share of difficulty ``d``
    must hash at or below ``DIFF1_TARGET * multiplier / d`` (scrypt miners
    use 2**16, the convention cpuminer and every scrypt pool follow).
    """

    name: str
    code: int
    multiplier: int

    def share_target(self, difficulty: float) -> int:
        """The highest PoW hash (as an integer) a share of ``difficulty`` may have."""
        if difficulty <= 0:
            raise ValueError("difficulty must be > 0")
        return min(int(DIFF1_TARGET * self.multiplier / difficulty), 2**256 - 1)

    def difficulty_of(self, pow_value: int) -> float:
        """The share difficulty a PoW hash (as an integer) reaches."""
        return DIFF1_TARGET * self.multiplier / max(pow_value, 1)


ALGORITHMS: Final[dict[str, Algorithm]] = {
    "sha256d": Algorithm("sha256d", int(lib.NOMP_ALGO_SHA256D), 1),
    "scrypt": Algorithm("scrypt", int(lib.NOMP_ALGO_SCRYPT), 2**16),
}


def sha256d(data: bytes) -> bytes:
    """SHA-256 twice."""
    out = ffi.new("unsigned char[32]")
    lib.nomp_sha256d(data, len(data), out)
    return bytes(out)


def scrypt(headers: Sequence[bytes]) -> list[bytes]:
    """scrypt(N=1024, r=1, p=1, salt = password) of 80-byte headers."""
    for header in headers:
        if len(header) != 80:
            raise ValueError("scrypt headers must be 80 bytes")
    out = ffi.new("unsigned char[]", 32 * len(headers))
    if lib.nomp_scrypt(b"".join(headers), len(headers), out) != 0:
        raise MemoryError("scrypt scratch space")
    raw = ffi.buffer(out)
    return [raw[i : i + 32] for i in range(0, 32 * len(headers), 32)]


def send_each(fds: Sequence[int], data: bytes) -> list[int]:
    """Send ``data`` on each non-blocking socket of ``fds``, without the GIL.

    Per socket: the number of bytes the kernel took (fewer than
    ``len(data)`` when its buffer was full) or -errno.
    """
    count = len(fds)
    sent = ffi.new("long[]", count)
    lib.nomp_send_each(ffi.new("int[]", fds), count, data, len(data), sent)
    return list(sent)


def implementation() -> dict[str, str]:
    """Which C code paths this CPU runs, for logs and benchmarks."""
    return {
        "sha256": ffi.string(lib.nomp_sha256_implementation()).decode(),
        "scrypt": ffi.string(lib.nomp_scrypt_kernels()).decode(),
    }


class ShareWork(NamedTuple):
    """What a miner varies: its extranonce (extranonce1 + extranonce2),
    the block version (rolled or not), ntime and nonce. (A tuple: one is
    made per share.)"""

    extranonce: bytes
    version: int
    ntime: int
    nonce: int

    def pack(self) -> bytes:
        """The 32-byte record the C share check reads."""
        if not 0 < len(self.extranonce) <= MAX_EXTRANONCE:
            raise ValueError("extranonce must be 1 to 16 bytes")
        return _SHARE.pack(self.extranonce, len(self.extranonce), self.version, self.ntime, self.nonce)


class ShareHash(NamedTuple):
    """The result of one share check (a tuple: cheap to make by the thousand)."""

    header: bytes
    pow_hash: bytes  # internal byte order

    @property
    def pow_value(self) -> int:
        """The PoW hash as the integer compared with targets."""
        return int.from_bytes(self.pow_hash, "little")


_per_thread = threading.local()


def _results_buffer(count: int) -> Any:
    """A C buffer for ``count`` results, reused by the calling thread: the
    share check is called many thousand times a second, and allocating it
    each time would cost more than hashing a sha256d share."""
    buffer = getattr(_per_thread, "results", None)
    if buffer is None or len(buffer) < _RESULT_SIZE * count:
        buffer = ffi.new("unsigned char[]", _RESULT_SIZE * max(count, 64))
        _per_thread.results = buffer
    return buffer


class JobHasher:
    """The C side of one job: coinbase halves, merkle branch, prevhash and
    nBits are copied in once, so checking a share passes only its own
    32 bytes."""

    __slots__ = ("_job", "algorithm")

    def __init__(
        self,
        algorithm: Algorithm,
        coinb1: bytes,
        coinb2: bytes,
        merkle_branch: Sequence[bytes],
        prevhash: bytes,
        nbits: int,
    ) -> None:
        if len(prevhash) != 32 or any(len(step) != 32 for step in merkle_branch):
            raise ValueError("prevhash and merkle steps must be 32 bytes")
        job = lib.nomp_job_new(
            algorithm.code,
            coinb1,
            len(coinb1),
            coinb2,
            len(coinb2),
            b"".join(merkle_branch),
            len(merkle_branch),
            prevhash,
            nbits,
        )
        if job == ffi.NULL:
            raise MemoryError("cannot allocate a job")
        self._job = ffi.gc(job, lib.nomp_job_free)
        self.algorithm = algorithm

    def check_packed(self, records: bytes, count: int) -> list[ShareHash]:
        """Check ``count`` packed share records (see :meth:`ShareWork.pack`)."""
        if len(records) != count * _SHARE.size:
            raise ValueError("records do not hold count shares")
        out = _results_buffer(count)
        rc = lib.nomp_job_check(self._job, records, count, out)
        if rc != 0:
            raise ValueError(f"share check failed ({rc})")
        return _share_hashes(out, count)

    def check(self, shares: Sequence[ShareWork]) -> list[ShareHash]:
        """Header and PoW hash of each share, in order."""
        return self.check_packed(b"".join(share.pack() for share in shares), len(shares))


def _share_hashes(results: Any, count: int) -> list[ShareHash]:
    raw = ffi.buffer(results, _RESULT_SIZE * count)[:]
    return [
        ShareHash(raw[i : i + 80], raw[i + 80 : i + _RESULT_SIZE])
        for i in range(0, _RESULT_SIZE * count, _RESULT_SIZE)
    ]


_MAX_BATCH: Final = int(lib.NOMP_WORKERS_MAX_BATCH)
_FINISHED_AT_ONCE: Final = 2 * _MAX_BATCH


class ShareCheckThreads:
    """Threads of the C extension that check JobHasher shares without ever
    taking the GIL, batching them by job themselves (csrc/workers.c).

    ``submit`` queues one share under a tag. The threads check the shares of
    a job together: at once when ``full`` of them are queued, otherwise
    once the oldest, if it came while no batch was being checked, has waited
    ``linger`` seconds for company (shares that come while a batch is being
    checked gather meanwhile and do not wait). Each thread runs ``niceness``
    steps below the priority of the thread that starts them. After a batch a byte is
    written to ``notify_fd`` (once for all the batches that finish before
    ``finished`` takes them), and ``finished`` hands back each share's tag
    with its ShareHash, or the error of its batch. Both are called from one
    thread, the one that watches ``notify_fd``; it must read that file
    before calling ``finished``.
    """

    def __init__(self, threads: int, notify_fd: int, full: int, linger: float, niceness: int = 0) -> None:
        workers = lib.nomp_workers_new(threads, notify_fd, full, int(linger * 1e9), niceness)
        if workers == ffi.NULL:
            raise RuntimeError(f"cannot start {threads} share checking threads")
        self._workers: Any = workers
        self._jobs: dict[int, JobHasher] = {}  # by tag: what each queued share's C side points into
        self._tags = ffi.new("uint64_t[]", _FINISHED_AT_ONCE)
        self._statuses = ffi.new("int[]", _FINISHED_AT_ONCE)
        self._results = ffi.new("unsigned char[]", _FINISHED_AT_ONCE * _RESULT_SIZE)
        self._counts = ffi.new("size_t[2]")
        self._batches = ffi.new("uint64_t *")
        self._batches_when_stopped = 0

    @staticmethod
    def can_check(hasher: object) -> bool:
        """Whether ``hasher`` is a JobHasher whose check these threads can make themselves."""
        return isinstance(hasher, JobHasher) and type(hasher).check_packed is JobHasher.check_packed

    def counts(self) -> tuple[int, int, int]:
        """Shares queued for a thread, batches being checked, and batches taken since the start."""
        if self._workers is None:
            return 0, 0, self._batches_when_stopped
        lib.nomp_workers_counts(self._workers, self._counts, self._counts + 1, self._batches)
        return int(self._counts[0]), int(self._counts[1]), int(self._batches[0])

    def submit(self, job: JobHasher, record: bytes, tag: int) -> None:
        """Queue one packed share record of ``job`` (see ShareWork.pack) under ``tag``."""
        if len(record) != _SHARE.size:
            raise ValueError("a share record is 32 bytes")
        if self._workers is None:
            raise RuntimeError("the share checking threads are stopped")
        rc = lib.nomp_workers_submit(self._workers, job._job, record, tag)
        if rc == -errno.ENOMEM:
            raise MemoryError("cannot queue a share")
        if rc != 0:
            raise RuntimeError(f"the share checking threads refused a share ({rc})")
        self._jobs[tag] = job

    def finished(self) -> list[tuple[int, ShareHash | Exception]]:
        """The shares checked since the last call: each tag with its result or its batch's error."""
        if self._workers is None:
            return []
        done: list[tuple[int, ShareHash | Exception]] = []
        jobs, tags, statuses = self._jobs, self._tags, self._statuses
        while taken := lib.nomp_workers_finished(
            self._workers, tags, statuses, self._results, _FINISHED_AT_ONCE
        ):
            raw = ffi.buffer(self._results, _RESULT_SIZE * taken)[:]
            for i in range(taken):
                tag, status = int(tags[i]), int(statuses[i])
                del jobs[tag]
                if status == 0:
                    at = i * _RESULT_SIZE
                    done.append((tag, ShareHash(raw[at : at + 80], raw[at + 80 : at + _RESULT_SIZE])))
                else:
                    done.append((tag, ValueError(f"share check failed ({status})")))
        return done

    def stop(self) -> list[tuple[int, ShareHash | Exception]]:
        """Check what is queued, stop the threads (waiting for them), and hand back the rest."""
        if self._workers is None:
            return []
        lib.nomp_workers_stop(self._workers)
        done = self.finished()
        self._batches_when_stopped = self.counts()[2]
        lib.nomp_workers_free(self._workers)
        self._workers = None
        return done
