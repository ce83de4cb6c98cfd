"""The C hashing module: known answers, agreement with hashlib, the share check."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import select
import threading
from functools import partial
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from nomp.chain.merkle import root_from_branch
from nomp.hashing import (
    ALGORITHMS,
    DIFF1_TARGET,
    JobHasher,
    ShareCheckThreads,
    ShareHash,
    ShareWork,
    scrypt,
    sha256d,
)
from nomp.hashing._native import ffi, lib
from nomp.hashing.pool import NICENESS, HashPoolService

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "pow_headers_btc_ltc.json"


def load_vectors() -> list[dict[str, Any]]:
    """The vectors, with ``algo`` reduced to the pool's algorithm names."""
    with open(VECTORS) as f:
        vectors: list[dict[str, Any]] = json.load(f)
    for vector in vectors:
        if vector["algo"].startswith("scrypt(N=1024,r=1,p=1,"):
            vector["algo"] = "scrypt"
    return vectors


def reference_scrypt(header: bytes) -> bytes:
    return hashlib.scrypt(header, salt=header, n=1024, r=1, p=1, dklen=32)


def reference_sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def with_each_sha256(test: SynchronousTestCase, check: Any) -> None:
    """Run ``check()`` under the portable SHA-256 and under the CPU's own."""
    test.addCleanup(lib.nomp_sha256_force_portable, 0)
    for portable in (1, 0):
        lib.nomp_sha256_force_portable(portable)
        check()


SCRYPT_ISAS = (b"portable", b"sse2", b"avx2", b"avx512f", b"avx512vl")


def with_each_scrypt_kernel(test: SynchronousTestCase, check: Any) -> list[int]:
    """Run ``check()`` pinned to every scrypt kernel this CPU has, then by
    batch size, with the kernels of each instruction set it runs; the lane
    counts it ran."""
    test.addCleanup(lib.nomp_scrypt_use_kernels, ffi.NULL)
    test.addCleanup(lib.nomp_scrypt_set_lanes, 0)
    ran = set()
    for isa in SCRYPT_ISAS:
        if lib.nomp_scrypt_use_kernels(isa) != 0:
            continue
        for lanes in (1, 4, 8, 16, 0):
            if lib.nomp_scrypt_set_lanes(lanes) == 0:
                check()
                ran.add(lanes)
        lib.nomp_scrypt_set_lanes(0)
    lib.nomp_scrypt_use_kernels(ffi.NULL)
    return sorted(ran)


class KnownAnswerTests(SynchronousTestCase):
    """Real mainnet headers hash to their published values."""

    def test_vectors(self) -> None:
        """Every Bitcoin and Litecoin vector header gives its block id and PoW hash."""
        vectors = load_vectors()
        self.assertEqual({v["algo"] for v in vectors}, {"sha256d", "scrypt"})

        def check() -> None:
            for vector in vectors:
                header = bytes.fromhex(vector["header_hex"])
                self.assertEqual(sha256d(header)[::-1].hex(), vector["blockhash"], vector["label"])
                algorithm = ALGORITHMS[vector["algo"]]
                pow_hash = sha256d(header) if algorithm.name == "sha256d" else scrypt([header])[0]
                self.assertEqual(pow_hash[::-1].hex(), vector["powhash"], vector["label"])
                meets = int.from_bytes(pow_hash, "little") <= int(vector["target"], 16)
                self.assertEqual(meets, vector["pow_le_target"], vector["label"])

        with_each_sha256(self, check)
        self.assertIn(1, with_each_scrypt_kernel(self, check))


class AgreementTests(SynchronousTestCase):
    """The C code agrees with hashlib on random inputs."""

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def test_sha256d(self, data: bytes) -> None:
        """sha256d of any input equals hashlib's, with either compression function."""
        with_each_sha256(self, lambda: self.assertEqual(sha256d(data), reference_sha256d(data)))

    def test_sha256d_block_boundaries(self) -> None:
        """Lengths around every padding boundary hash correctly."""
        rng = random.Random(1)
        for length in [*range(0, 200), 1000, 4096, 65537]:
            data = rng.randbytes(length)
            with_each_sha256(self, lambda d=data: self.assertEqual(sha256d(d), reference_sha256d(d)))

    def test_scrypt_batches(self) -> None:
        """Batches of every size from 1 to 40 agree with hashlib, on every kernel."""
        rng = random.Random(2)
        headers = [rng.randbytes(80) for _ in range(40)]
        expected = [reference_scrypt(h) for h in headers]

        def check() -> None:
            for size in (1, 2, 3, 7, 8, 9, 15, 16, 17, 33, 40):
                self.assertEqual(scrypt(headers[:size]), expected[:size], size)

        ran = with_each_scrypt_kernel(self, check)
        self.assertIn(0, ran)

    def test_scrypt_kernel_choices(self) -> None:
        """Every lane count has a kernel under the CPU's best instructions and
        the portable ones; an instruction set the CPU lacks, or no such name,
        is refused and leaves the kernels as they were."""
        self.addCleanup(lib.nomp_scrypt_use_kernels, ffi.NULL)
        best = ffi.string(lib.nomp_scrypt_kernels()).decode()
        self.assertEqual([part.split(":")[0] for part in best.split()], ["1", "4", "8", "16"])
        self.assertEqual(lib.nomp_scrypt_use_kernels(b"portable"), 0)
        portable = "1:portable 4:portable 8:portable 16:none"
        self.assertEqual(ffi.string(lib.nomp_scrypt_kernels()).decode(), portable)
        self.assertEqual(lib.nomp_scrypt_set_lanes(16), -errno.ENOTSUP)
        self.assertEqual(lib.nomp_scrypt_use_kernels(b"avx1024"), -errno.ENOTSUP)
        self.assertEqual(ffi.string(lib.nomp_scrypt_kernels()).decode(), portable)
        self.assertEqual(lib.nomp_scrypt_use_kernels(ffi.NULL), 0)
        self.assertEqual(ffi.string(lib.nomp_scrypt_kernels()).decode(), best)

    def test_pinned_lanes_without_their_kernel(self) -> None:
        """A pinned lane count the chosen instructions have no kernel for goes back to by batch size."""
        self.addCleanup(lib.nomp_scrypt_use_kernels, ffi.NULL)
        self.addCleanup(lib.nomp_scrypt_set_lanes, 0)
        if lib.nomp_scrypt_set_lanes(16) != 0:
            raise SkipTest("this CPU has no 16-lane scrypt kernel")
        lib.nomp_scrypt_use_kernels(b"portable")
        header = random.Random(4).randbytes(80)
        self.assertEqual(scrypt([header]), [reference_scrypt(header)])
        self.assertEqual(lib.nomp_scrypt_set_lanes(0), 0)

    def test_scrypt_rejects_wrong_length(self) -> None:
        """A header that is not 80 bytes is refused before reaching C."""
        self.assertRaises(ValueError, scrypt, [b"\x00" * 79])


class ShareCheckTests(SynchronousTestCase):
    """The share check builds the header a miner hashed, in one C call."""

    def random_job(
        self, rng: random.Random, algorithm: str, branch_length: int
    ) -> tuple[JobHasher, bytes, bytes, list[bytes], bytes, int]:
        coinb1 = rng.randbytes(rng.randrange(40, 200))
        coinb2 = rng.randbytes(rng.randrange(40, 300))
        branch = [rng.randbytes(32) for _ in range(branch_length)]
        prevhash = rng.randbytes(32)
        nbits = rng.getrandbits(32)
        job = JobHasher(ALGORITHMS[algorithm], coinb1, coinb2, branch, prevhash, nbits)
        return job, coinb1, coinb2, branch, prevhash, nbits

    def test_matches_python(self) -> None:
        """Header and PoW hash equal a from-scratch Python computation, for batches of shares."""
        rng = random.Random(3)
        for algorithm in ("sha256d", "scrypt"):
            for branch_length in (0, 1, 5, 12):
                job, coinb1, coinb2, branch, prevhash, nbits = self.random_job(rng, algorithm, branch_length)
                works = [
                    ShareWork(
                        rng.randbytes(rng.choice((4, 8, 12, 16))),
                        rng.getrandbits(32),
                        rng.getrandbits(32),
                        rng.getrandbits(32),
                    )
                    for _ in range(rng.choice((1, 5, 17)))
                ]
                for work, result in zip(works, job.check(works), strict=True):
                    root = root_from_branch(reference_sha256d(coinb1 + work.extranonce + coinb2), branch)
                    header = (
                        work.version.to_bytes(4, "little")
                        + prevhash
                        + root
                        + work.ntime.to_bytes(4, "little")
                        + nbits.to_bytes(4, "little")
                        + work.nonce.to_bytes(4, "little")
                    )
                    self.assertEqual(result.header, header)
                    reference = (
                        reference_sha256d(header) if algorithm == "sha256d" else reference_scrypt(header)
                    )
                    self.assertEqual(result.pow_hash, reference)

    def test_long_coinbase_midstate(self) -> None:
        """A coinb1 longer than one SHA-256 block (cached midstate) still hashes right."""
        rng = random.Random(4)
        for length in (63, 64, 65, 127, 128, 129, 1000):
            coinb1, coinb2 = rng.randbytes(length), rng.randbytes(50)
            job = JobHasher(ALGORITHMS["sha256d"], coinb1, coinb2, [], bytes(32), 0)
            result = job.check([ShareWork(b"\xaa" * 8, 1, 2, 3)])[0]
            self.assertEqual(result.header[36:68], reference_sha256d(coinb1 + b"\xaa" * 8 + coinb2))

    def test_bad_extranonce(self) -> None:
        """An empty or over-long extranonce is refused."""
        job = JobHasher(ALGORITHMS["scrypt"], b"a", b"b", [], bytes(32), 0)
        self.assertRaises(ValueError, job.check, [ShareWork(b"", 1, 2, 3)])
        self.assertRaises(ValueError, job.check, [ShareWork(b"x" * 17, 1, 2, 3)])
        record = bytearray(ShareWork(b"x", 1, 2, 3).pack())
        record[17] = 1  # reserved bytes must be zero
        self.assertRaises(ValueError, job.check_packed, bytes(record), 1)

    def test_bad_job(self) -> None:
        """A prevhash or branch step that is not 32 bytes is refused."""
        algorithm = ALGORITHMS["sha256d"]
        self.assertRaises(ValueError, JobHasher, algorithm, b"", b"", [], bytes(31), 0)
        self.assertRaises(ValueError, JobHasher, algorithm, b"", b"", [bytes(33)], bytes(32), 0)


class DifficultyTests(SynchronousTestCase):
    """Share targets follow the conventions miners use."""

    def test_sha256d_diff1(self) -> None:
        """Difficulty 1 on sha256d is the classic 0x00000000ffff... target."""
        self.assertEqual(ALGORITHMS["sha256d"].share_target(1), DIFF1_TARGET)

    def test_scrypt_multiplier(self) -> None:
        """scrypt difficulty d means 0x0000ffff... / d, as cpuminer computes it."""
        self.assertEqual(ALGORITHMS["scrypt"].share_target(1), 0xFFFF << 224)
        self.assertEqual(ALGORITHMS["scrypt"].share_target(65536), DIFF1_TARGET)

    def test_round_trip(self) -> None:
        """difficulty_of(share_target(d)) is d."""
        for name in ALGORITHMS:
            algorithm = ALGORITHMS[name]
            for difficulty in (0.001, 1, 1024, 1e9):
                self.assertAlmostEqual(
                    algorithm.difficulty_of(algorithm.share_target(difficulty)) / difficulty,
                    1,
                    places=9,
                )

    def test_tiny_difficulty_is_capped(self) -> None:
        """A difficulty so low that the target overflows 256 bits accepts every hash."""
        self.assertEqual(ALGORITHMS["scrypt"].share_target(1e-9), 2**256 - 1)
        self.assertRaises(ValueError, ALGORITHMS["scrypt"].share_target, 0)


class HashPoolServiceTests(TestCase):
    """Share checks run in the service's threads and are batched per job."""

    def setUp(self) -> None:
        self.service = HashPoolService(reactor, threads=2)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    async def test_results_in_order(self) -> None:
        """Many shares of two jobs submitted at once each get their own result."""
        rng = random.Random(5)
        jobs = [
            JobHasher(ALGORITHMS["scrypt"], rng.randbytes(60), rng.randbytes(60), [], rng.randbytes(32), 7)
            for _ in range(2)
        ]
        works = [ShareWork(os.urandom(8), 1, 2, n) for n in range(70)]
        pending = [self.service.check(jobs[n % 2], work) for n, work in enumerate(works)]
        self.assertGreater(self.service.queued, 0)
        results = await defer.gatherResults(pending)
        for n, (work, result) in enumerate(zip(works, results, strict=True)):
            self.assertEqual(result, jobs[n % 2].check([work])[0])
        self.assertEqual(self.service.queued, 0)

    async def test_threads_below_the_reactor(self) -> None:
        """Every hashing thread, C or Python, runs NICENESS steps below the reactor thread."""
        if not os.path.isdir("/proc/self/task"):
            raise SkipTest("thread nice values are read from Linux's /proc")
        expected = min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + NICENESS)
        ran_on = lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # noqa: E731
        python_threads = await defer.gatherResults([self.service.run(ran_on) for _ in range(4)])
        self.assertEqual(python_threads, [expected] * 4)
        job = JobHasher(ALGORITHMS["scrypt"], b"a" * 50, b"b" * 50, [], bytes(32), 3)
        await self.service.check(job, ShareWork(os.urandom(8), 1, 2, 3))

        def c_threads() -> dict[str, int]:
            found = {}
            for entry in Path("/proc/self/task").iterdir():
                stat = (entry / "stat").read_text()
                if stat[stat.index("(") + 1 : stat.rindex(")")].startswith("nomp-hash-"):
                    found[entry.name] = int(stat[stat.rindex(")") + 2 :].split()[16])  # the nice field
            return found

        # Each C thread lowers its own priority as it starts, which may come just after this test looks.
        for _ in range(500):
            seen = c_threads()
            if len(seen) == 2 and set(seen.values()) == {expected}:
                break
            await task.deferLater(reactor, 0.01)
        self.assertEqual(sorted(c_threads().values()), [expected, expected])

    async def test_not_on_the_reactor_thread(self) -> None:
        """The C call runs in a pool thread, not the reactor's."""
        seen: list[str] = []

        class Watched(JobHasher):
            __slots__ = ()

            def check_packed(self, records: bytes, count: int) -> list[ShareHash]:
                seen.append(threading.current_thread().name)
                return super().check_packed(records, count)

        job = Watched(ALGORITHMS["sha256d"], b"a", b"b", [], bytes(32), 0)
        await self.service.check(job, ShareWork(b"x", 1, 2, 3))
        self.assertEqual(len(seen), 1)
        self.assertTrue(seen[0].startswith("nomp-hashing-"), seen)

    async def test_failure_reaches_every_share(self) -> None:
        """A failing batch fails each of its shares, and the pool keeps working."""

        class FailingOnce(JobHasher):
            __slots__ = ("failed",)

            def check_packed(self, records: bytes, count: int) -> list[ShareHash]:
                if not getattr(self, "failed", False):
                    self.failed = True
                    raise ValueError("share check failed (-22)")
                return super().check_packed(records, count)

        job = FailingOnce(ALGORITHMS["sha256d"], b"a", b"b", [], bytes(32), 0)
        first = [self.service.check(job, ShareWork(b"x", 1, 2, n)) for n in range(3)]
        for pending in first:
            with self.assertRaises(ValueError):
                await pending
        good = await self.service.check(job, ShareWork(b"x", 1, 2, 3))
        self.assertEqual(len(good.header), 80)

    async def test_a_caller_failing_leaves_its_batch_answered(self) -> None:
        """A result callback that raises is logged; the other shares of its batch still get theirs."""
        job = JobHasher(ALGORITHMS["sha256d"], b"a", b"b", [], bytes(32), 0)

        def broken(result: object) -> None:
            raise RuntimeError("a caller's bug")

        self.service.submit(job, ShareWork(b"x", 1, 2, 0), broken)
        answered = self.service.check(job, ShareWork(b"x", 1, 2, 1))
        self.assertEqual(await answered, job.check([ShareWork(b"x", 1, 2, 1)])[0])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_job_batches_on_the_c_threads(self) -> None:
        """A JobHasher's batches are checked by the C extension's threads, not Python's."""
        job = JobHasher(ALGORITHMS["scrypt"], b"a" * 70, b"b" * 40, [bytes(32)] * 3, bytes(32), 5)
        works = [ShareWork(os.urandom(8), 1, 2, n) for n in range(5)]
        python_threads = {thread.native_id for thread in threading.enumerate()}
        checked = await defer.gatherResults([self.service.check(job, work) for work in works])
        self.assertEqual(checked, job.check(works))
        names = {task.name: (task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()}
        c_threads = {int(tid) for tid, name in names.items() if name.startswith("nomp-hash-")}
        self.assertEqual(len(c_threads), 2)
        self.assertFalse(c_threads & python_threads)

    async def test_malformed_record_fails(self) -> None:
        """A record the C check refuses fails its share on the C threads too; the next share is checked."""

        class Malformed:
            def pack(self) -> bytes:
                return bytes(32)  # an extranonce of length 0

        job = JobHasher(ALGORITHMS["sha256d"], b"a", b"b", [], bytes(32), 0)
        with self.assertRaises(ValueError):
            await self.service.check(job, Malformed())
        self.assertEqual(len((await self.service.check(job, ShareWork(b"x", 1, 2, 1))).header), 80)

    def test_stop_answers_what_was_queued(self) -> None:
        """Shares waiting or being checked when the service stops still get their results."""
        job = JobHasher(ALGORITHMS["scrypt"], b"a", b"b", [], bytes(32), 0)
        works = [ShareWork(b"x", 1, 2, n) for n in range(40)]
        results: dict[int, object] = {}
        for n, work in enumerate(works):
            self.service.submit(job, work, partial(results.__setitem__, n))
        self.service.stopService()
        self.assertEqual([results[n] for n in range(40)], job.check(works))
        self.assertEqual((self.service.queued, self.service.busy), (0, 0))


class ShareCheckThreadsTests(SynchronousTestCase):
    """The C threads batch queued shares by job themselves."""

    def threads(self, full: int, linger: float) -> tuple[ShareCheckThreads, int]:
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        checks = ShareCheckThreads(1, write, full, linger)
        self.addCleanup(checks.stop)
        return checks, read

    def collect(self, checks: ShareCheckThreads, read: int, count: int) -> dict[int, Any]:
        results: dict[int, Any] = {}
        while len(results) < count:
            select.select([read], [], [], 10)
            os.read(read, 4096)
            results.update(checks.finished())
        return results

    def test_a_full_batch_goes_without_its_wait(self) -> None:
        """``full`` shares of a job are checked at once, in one batch, however long the linger."""
        checks, read = self.threads(full=5, linger=3600)
        job = JobHasher(ALGORITHMS["scrypt"], b"a" * 50, b"b" * 50, [bytes(32)], bytes(32), 3)
        works = [ShareWork(os.urandom(8), 1, 2, n) for n in range(5)]
        for tag, work in enumerate(works):
            checks.submit(job, work.pack(), tag)
        results = self.collect(checks, read, 5)
        self.assertEqual([results[tag] for tag in range(5)], job.check(works))
        self.assertEqual(checks.counts(), (0, 0, 1))

    def test_jobs_keep_their_own_batches(self) -> None:
        """Shares of two jobs queued in turn are checked per job, each with its own job's data."""
        checks, read = self.threads(full=4, linger=3600)
        jobs = [JobHasher(ALGORITHMS["sha256d"], bytes([n]) * 9, b"b", [], bytes(32), n) for n in range(2)]
        works = [ShareWork(os.urandom(4), 1, 2, n) for n in range(8)]
        for tag, work in enumerate(works):
            checks.submit(jobs[tag % 2], work.pack(), tag)
        results = self.collect(checks, read, 8)
        for tag, work in enumerate(works):
            self.assertEqual(results[tag], jobs[tag % 2].check([work])[0])
        self.assertEqual(checks.counts()[2], 2)

    def test_stop_checks_what_is_queued(self) -> None:
        """Stopping does not wait out the linger, and hands back every queued share's result."""
        checks, _ = self.threads(full=32, linger=3600)
        job = JobHasher(ALGORITHMS["sha256d"], b"a", b"b", [], bytes(32), 0)
        works = [ShareWork(b"x", 1, 2, n) for n in range(3)]
        for tag, work in enumerate(works):
            checks.submit(job, work.pack(), tag)
        results = dict(checks.stop())
        self.assertEqual([results[tag] for tag in range(3)], job.check(works))
        self.assertRaises(RuntimeError, checks.submit, job, works[0].pack(), 9)
