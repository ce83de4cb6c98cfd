"""The Ethereum family's pure parts, one rule at a time: work from
``eth_getWork``, the book of recent work, share boundaries, reading
submits, the nonce ledger, judging a hashed share, logins, node failover
and the building of ethash caches ahead of an epoch change."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from fractions import Fraction
from typing import Any, cast

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from nomp.daemon import DaemonError
from nomp.daemon.rpc import DaemonRPC
from nomp.eth.hasher import PREPARE_AHEAD, EpochHashers
from nomp.eth.logins import DEFAULT_WORKER, LoginError, check_address, split_user, worker_name
from nomp.eth.shares import (
    INVALID,
    EthShare,
    NonceLedger,
    duplicate,
    find_job,
    find_work,
    judge,
    read_nicehash_nonce,
    read_submit_work,
)
from nomp.eth.upstreams import ALIVE_AFTER, SICK_AFTER, Upstream, Upstreams
from nomp.eth.work import (
    MAX_TARGET,
    REMEMBERED_EXPIRED,
    EthWork,
    WorkBook,
    WorkError,
    parse_quantity,
    share_target,
    target_hex,
    work_from_rpc,
)
from nomp.hashing.ethash import (
    EPOCH_LENGTH,
    ETCHASH_EPOCH_LENGTH,
    MAX_EPOCH,
    MORDOR_ECIP1099_BLOCK,
    EpochCaches,
    EthashCache,
    EthashResult,
    epochs_for,
    seed_hash,
)
from nomp.stratum.errors import DUPLICATE_SHARE, JOB_NOT_FOUND, LOW_DIFFICULTY, OTHER, StratumError
from nomp.stratum.shares import DIFFICULTY_TOLERANCE

HEADER = bytes.fromhex("ab" * 32)
BOUNDARY = 2**256 // 2**20  # a network difficulty of about a million hashes


def hex32(value: bytes | int) -> str:
    if isinstance(value, int):
        return f"0x{value:064x}"
    return "0x" + value.hex()


def answer(
    header: bytes = HEADER, height: int | None = 1, seed_epoch: int = 0, boundary: int = BOUNDARY
) -> list[Any]:
    """An ``eth_getWork`` answer as geth gives it (the block number last, in hex)."""
    reply: list[Any] = [hex32(header), hex32(seed_hash(seed_epoch)), hex32(boundary)]
    if height is not None:
        reply.append(hex(height))
    return reply


def header_of(n: int) -> bytes:
    return n.to_bytes(32, "big")


class WorkFromRpcTests(SynchronousTestCase):
    def refused(self, reply: Any, pending: int | None = None, activation: int | None = None) -> str:
        with self.assertRaises(WorkError) as raised:
            work_from_rpc(reply, pending, activation)
        return str(raised.exception)

    def test_geth_answer(self) -> None:
        work = work_from_rpc(answer(height=30_001, seed_epoch=1), None, None, "0000002a")
        self.assertEqual(work.header_hash, HEADER)
        self.assertEqual(work.seed, seed_hash(1))  # the answer's seed...
        self.assertEqual((work.seed_epoch, work.size_epoch), (1, 1))  # ...is block 30,001's
        self.assertEqual(work.target, BOUNDARY)
        self.assertEqual(work.height, 30_001)
        self.assertEqual(work.job_id, "0000002a")
        self.assertEqual(work.header_hex, "0x" + "ab" * 32)
        self.assertEqual(work.seed_hex, hex32(seed_hash(1)))
        self.assertEqual(work.network_difficulty, 2**20)

    def answer_at(self, height: int, seed_epoch: int) -> list[Any]:
        return answer(height=height, seed_epoch=seed_epoch)

    def test_fourth_element_hex_or_int(self) -> None:
        reply = [*answer(height=None, seed_epoch=0), 7]
        self.assertEqual(work_from_rpc(reply, None, None).height, 7)
        reply[3] = "0x7"
        self.assertEqual(work_from_rpc(reply, None, None).height, 7)
        reply[3] = "0X07"
        self.assertEqual(work_from_rpc(reply, None, None).height, 7)
        reply[3] = None  # as if absent: the pending block's number counts
        self.assertEqual(work_from_rpc(reply, 9, None).height, 9)

    def test_fourth_element_before_pending_height(self) -> None:
        self.assertEqual(work_from_rpc(answer(height=5), 6, None).height, 5)

    def test_pending_height_without_fourth_element(self) -> None:
        self.assertEqual(work_from_rpc(answer(height=None), 12, None).height, 12)

    def test_fourth_element_not_a_quantity(self) -> None:
        bads: tuple[object, ...] = ("7", "0x", "0xzz", -1, 1.0, True, [], "0x" + "1" * 65)
        for bad in bads:
            reply = [*answer(height=None), bad]
            self.assertIn("the block number must be a hex quantity", self.refused(reply), bad)

    def test_missing_block_number(self) -> None:
        self.assertEqual(
            self.refused(answer(height=None)),
            "no block number: neither eth_getWork nor the pending block gave one",
        )

    def test_short_list_and_not_a_list(self) -> None:
        for reply in ([], answer()[:2], "0x00", {"0": 1}, None, 3):
            self.assertIn("eth_getWork must answer a list of 3 or 4 values", self.refused(reply), reply)

    def test_bad_hex(self) -> None:
        good = answer()
        cases = {
            0: "the seal hash",
            1: "the seed hash",
            2: "the boundary",
        }
        for index, what in cases.items():
            for bad in (
                good[index][2:],  # no 0x
                good[index][:-1],  # 63 digits
                good[index] + "0",  # 65 digits
                "0x" + "zz" * 32,
                "0x" + "ab" * 31 + "g0",
                int(good[index], 16),  # a number, not text
                None,
            ):
                reply = list(good)
                reply[index] = bad
                message = self.refused(reply)
                self.assertTrue(message.startswith(f"{what} must be 0x and 64 hex digits"), (bad, message))

    def test_upper_case_hex_accepted(self) -> None:
        reply = ["0X" + r[2:].upper() for r in answer(height=None)] + ["0x1"]
        work = work_from_rpc(reply, None, None)
        self.assertEqual(work.header_hash, HEADER)
        self.assertEqual(work.header_hex, "0x" + "ab" * 32)  # miners get it in one form

    def test_whitespace_inside_hash_refused(self) -> None:
        # bytes.fromhex skips spaces between byte pairs: 66 characters
        # holding two spaces would be a 31-byte hash.
        taken = {}
        for index, what in enumerate(("the seal hash", "the seed hash", "the boundary")):
            reply = answer()
            reply[index] = reply[index][:-2] + "  "
            try:
                work = work_from_rpc(reply, None, None)
            except WorkError as e:
                if not str(e).startswith(f"{what} must be 0x and 64 hex digits"):
                    taken[what] = str(e)
            else:
                taken[what] = f"taken as {len(work.header_hash)}-byte seal hash, boundary {work.target:#x}"
        self.assertEqual(taken, {})

    def test_zero_boundary(self) -> None:
        self.assertEqual(self.refused(answer(boundary=0)), "the boundary is zero: no hash meets it")

    def test_empty_seal_hash(self) -> None:
        self.assertEqual(
            self.refused(answer(header=bytes(32))), "the seal hash is empty: the node has no work yet"
        )

    def test_seed_not_the_heights_epoch(self) -> None:
        message = self.refused(self.answer_at(30_000, 0))
        self.assertEqual(
            message, f"the seed hash {hex32(seed_hash(0))} is not epoch 1's, which block 30000 is in"
        )
        self.refused(self.answer_at(29_999, 1))
        work_from_rpc(self.answer_at(29_999, 0), None, None)

    def test_etchash_seed(self) -> None:
        activation = MORDOR_ECIP1099_BLOCK
        height = activation + ETCHASH_EPOCH_LENGTH  # size epoch 43, seed epoch 86
        work = work_from_rpc(self.answer_at(height, 86), None, activation)
        self.assertEqual((work.seed_epoch, work.size_epoch), (86, 43))
        self.assertIn("is not epoch 86's", self.refused(self.answer_at(height, 43), activation=activation))
        before = work_from_rpc(self.answer_at(activation - 1, 83), None, activation)
        self.assertEqual((before.seed_epoch, before.size_epoch), (83, 83))

    def test_past_the_epochs_hashed(self) -> None:
        height = (MAX_EPOCH + 1) * EPOCH_LENGTH
        reply = [*answer(height=None), hex(height)]
        self.assertEqual(self.refused(reply), f"block {height} is past the epochs the pool can hash")

    def test_negative_quantity_refused(self) -> None:
        # int(..., 16) takes a sign, underscores and a second 0x: none is a quantity.
        for bad in ("0x-1", "0x+1", "0x1_0", "0x0x10", "0x 1"):
            with self.assertRaises(WorkError, msg=bad):
                parse_quantity(bad, "the block number")

    def test_negative_block_number_is_a_work_error(self) -> None:
        self.assertIn("the block number must be a hex quantity", self.refused([*answer(height=None), "0x-1"]))


class WorkBookTests(SynchronousTestCase):
    def test_stale_heights_at_least_one(self) -> None:
        self.assertRaises(ValueError, WorkBook, 0, None)

    def test_new_then_same(self) -> None:
        book = WorkBook(3, None)
        work = book.add(answer())
        assert work is not None
        self.assertIs(book.current, work)
        self.assertIsNone(book.add(answer()))
        upper = ["0x" + part[2:].upper() for part in answer()]
        self.assertIsNone(book.add(upper), "the same seal hash in upper case")
        self.assertIs(book.current, work)
        self.assertEqual(book.live(), [work])

    def test_error_leaves_book_as_it_was(self) -> None:
        book = WorkBook(3, None)
        work = book.add(answer())
        self.assertRaises(WorkError, book.add, answer(header=header_of(2), boundary=0))
        self.assertIs(book.current, work)
        self.assertEqual(book.live(), [work])

    def test_reissued_older_header_becomes_current(self) -> None:
        book = WorkBook(3, None)
        first = book.add(answer(header_of(1), 1))
        second = book.add(answer(header_of(2), 2))
        assert first is not None and second is not None
        again = book.add(answer(header_of(1), 1))
        self.assertIs(again, first, "the work as it was, job id and all")
        self.assertIs(book.current, first)
        self.assertIsNone(book.add(answer(header_of(1), 1)))
        self.assertEqual(book.live(), [second, first], "oldest first: the current last")
        self.assertIs(book.add(answer(header_of(2), 2)), second)

    def test_lower_height_becomes_current(self) -> None:
        book = WorkBook(3, None)
        book.add(answer(header_of(1), 5))
        lower = book.add(answer(header_of(2), 4))
        self.assertIs(book.current, lower)

    def test_old_heights_dropped_then_expired(self) -> None:
        book = WorkBook(2, None)
        works = [book.add(answer(header_of(h), h)) for h in (1, 2, 3)]
        old, middle, new = works
        assert old is not None and middle is not None and new is not None
        self.assertEqual(book.live(), [middle, new])
        self.assertEqual(set(book.live_heights()), {2, 3})
        self.assertIsNone(book.by_header(old.header_hash))
        self.assertIsNone(book.by_job(old.job_id))
        self.assertTrue(book.expired(old.header_hash))
        self.assertFalse(book.expired(middle.header_hash))
        self.assertFalse(book.expired(header_of(99)))
        self.assertIs(book.by_job(middle.job_id), middle)
        self.assertIs(find_work(book, middle.header_hash), middle)
        self.assert_refused(lambda: find_work(book, old.header_hash), JOB_NOT_FOUND, "Stale share")
        self.assert_refused(lambda: find_work(book, header_of(99)), JOB_NOT_FOUND, "Unknown work")

    def test_several_works_of_one_height(self) -> None:
        book = WorkBook(1, None)
        first = book.add(answer(header_of(1), 7))
        second = book.add(answer(header_of(2), 7))  # new transactions, the same height
        self.assertEqual(book.live(), [first, second])
        book.add(answer(header_of(3), 8))
        self.assertEqual([w.height for w in book.live()], [8])

    def test_expired_remembered_boundedly(self) -> None:
        book = WorkBook(1, None)
        for h in range(1, REMEMBERED_EXPIRED + 3):
            book.add(answer(header_of(h), h))
        self.assertFalse(book.expired(header_of(1)), "the oldest forgotten")
        self.assertTrue(book.expired(header_of(3)))
        self.assertEqual(len(book._expired), REMEMBERED_EXPIRED)
        self.assertEqual(len(book.live()), 1)

    def test_job_ids_unique(self) -> None:
        book = WorkBook(3, None)
        ids = []
        for h in range(1, 40):
            work = book.add(answer(header_of(h), h // 3 + 1))
            assert work is not None
            ids.append(work.job_id)
            book.add(answer(header_of(1), 1))  # re-issued work keeps its id
        self.assertEqual(len(set(ids)), len(ids))
        self.assertTrue(all(len(i) == 8 and int(i, 16) >= 0 for i in ids))

    def test_find_job(self) -> None:
        book = WorkBook(3, None)
        work = book.add(answer())
        assert work is not None
        self.assertIs(find_job(book, work.job_id), work)
        bads: tuple[object, ...] = ("ffffffff", "", None, 1, [work.job_id], work.job_id.upper() + " ")
        for bad in bads:
            self.assert_refused(functools.partial(find_job, book, bad), JOB_NOT_FOUND, "Job not found")

    def assert_refused(self, call: Callable[[], object], code: int, message: str) -> None:
        with self.assertRaises(StratumError) as raised:
            call()
        self.assertEqual((raised.exception.code, raised.exception.message), (code, message))


class ShareTargetTests(SynchronousTestCase):
    def test_exact(self) -> None:
        for difficulty in (3, 3.0, 7, 1.5, 1000.1, 2**40 + 0.5, 123456789.987):
            expected = int(Fraction(2**256) / Fraction(difficulty))
            self.assertEqual(share_target(difficulty), expected, difficulty)
        self.assertEqual(share_target(3), 2**256 // 3)
        self.assertNotEqual(share_target(3), int(2**256 / 3), "float division would round")
        self.assertEqual(share_target(1.5), 2**257 // 3)

    def test_difficulty_one_and_below(self) -> None:
        for difficulty in (1, 1.0, 0.999, 0.5, 1e-9, 5e-324):
            self.assertEqual(share_target(difficulty), MAX_TARGET, difficulty)

    def test_huge(self) -> None:
        self.assertEqual(share_target(2**200), 2**56)
        self.assertEqual(share_target(2.0**255), 2)
        self.assertEqual(share_target(2.0**256), 1)
        self.assertEqual(share_target(1e70), int(Fraction(2**256) / Fraction(1e70)))

    def test_not_positive(self) -> None:
        for difficulty in (0, 0.0, -1, -0.0, float("nan")):
            self.assertRaises(ValueError, share_target, difficulty)

    def test_target_hex(self) -> None:
        self.assertEqual(target_hex(1), "0x" + "0" * 63 + "1")
        self.assertEqual(target_hex(MAX_TARGET), "0x" + "f" * 64)
        self.assertEqual(len(target_hex(share_target(2))), 66)


NONCE = "0x" + "0123456789abcdef"
SEAL = "0x" + "ab" * 32
MIX = "0x" + "cd" * 32


class ReadSubmitWorkTests(SynchronousTestCase):
    def refused(self, params: list[Any]) -> tuple[int, str]:
        with self.assertRaises(StratumError) as raised:
            read_submit_work(params)
        return raised.exception.code, raised.exception.message

    def test_read(self) -> None:
        submitted = read_submit_work([NONCE, SEAL, MIX])
        self.assertEqual(submitted.nonce, 0x0123456789ABCDEF)
        self.assertEqual(submitted.header_hash, bytes.fromhex("ab" * 32))
        self.assertEqual(submitted.mix_digest, bytes.fromhex("cd" * 32))

    def test_upper_case_is_the_same_share(self) -> None:
        upper = read_submit_work(["0x" + p[2:].upper() for p in (NONCE, SEAL, MIX)])
        self.assertEqual(upper, read_submit_work([NONCE, SEAL, MIX]))

    def test_lengths_and_hex(self) -> None:
        malformed = (INVALID, "Malformed PoW result")
        cases = [
            [NONCE[:-1], SEAL, MIX],
            [NONCE + "0", SEAL, MIX],
            [NONCE[2:], SEAL, MIX],
            [NONCE, SEAL[:-2], MIX],
            [NONCE, SEAL + "00", MIX],
            [NONCE, SEAL, MIX[:-1]],
            [NONCE, SEAL, "0x" + "zz" * 32],
            ["0x" + "g" * 16, SEAL, MIX],
            [NONCE, "0x" + "ab" * 31 + "  ", MIX],  # whitespace fromhex would skip
            [NONCE, SEAL, "0x" + "cd" * 31 + "\n0"],
            ["0x", SEAL, MIX],
            ["", SEAL, MIX],
            ["0x" + "\u0661" * 16, SEAL, MIX],  # digits, but not ASCII hex
        ]
        for params in cases:
            self.assertEqual(self.refused(params), malformed, params)

    def test_wrong_types_and_count(self) -> None:
        invalid = (INVALID, "Invalid params")
        cases: list[list[Any]] = [
            [],
            [NONCE, SEAL],
            [NONCE, SEAL, MIX, MIX],
            [0x0123456789ABCDEF, SEAL, MIX],
            [NONCE, None, MIX],
            [NONCE, SEAL, [MIX]],
            [NONCE, SEAL, True],
        ]
        for params in cases:
            self.assertEqual(self.refused(params), invalid, params)


class ReadNiceHashNonceTests(SynchronousTestCase):
    def test_extranonce_lengths(self) -> None:
        for extranonce in (b"\x01", b"\x01\x02", b"\x01\x02\x03"):
            part = "ab" * (8 - len(extranonce))
            expected = int.from_bytes(extranonce + bytes.fromhex(part), "big")
            self.assertEqual(read_nicehash_nonce(part, extranonce), expected)
            self.assertEqual(read_nicehash_nonce("0x" + part, extranonce), expected)
            self.assertEqual(read_nicehash_nonce("0X" + part.upper(), extranonce), expected)

    def test_wrong_length_or_not_hex(self) -> None:
        extranonce = b"\x00\x00\x07"
        for bad in (
            "ab" * 4,
            "ab" * 6,
            "0x" + "ab" * 4,
            "",
            "0x",
            "zz" * 5,
            "ab" * 4 + " a",
            "0x0x" + "a" * 6,
        ):
            with self.assertRaises(StratumError) as raised:
                read_nicehash_nonce(bad, extranonce)
            self.assertEqual(
                (raised.exception.code, raised.exception.message),
                (INVALID, "the nonce must be 10 hex digits after the extranonce"),
                bad,
            )

    def test_not_text(self) -> None:
        for bad in (12345, None, ["ab" * 5], b"ababababab"):
            with self.assertRaises(StratumError) as raised:
                read_nicehash_nonce(bad, b"\x00\x00\x07")
            self.assertEqual((raised.exception.code, raised.exception.message), (INVALID, "Invalid params"))


class NonceLedgerTests(SynchronousTestCase):
    def test_once_per_height(self) -> None:
        ledger = NonceLedger()
        self.assertTrue(ledger.add(1, HEADER, 5))
        self.assertFalse(ledger.add(1, HEADER, 5))
        self.assertTrue(ledger.add(1, HEADER, 6))
        self.assertTrue(ledger.add(1, header_of(1), 5))
        self.assertTrue(ledger.add(2, HEADER, 5))
        self.assertEqual(len(ledger), 4)

    def test_keep_only(self) -> None:
        ledger = NonceLedger()
        for height in (1, 2, 3):
            ledger.add(height, HEADER, height)
        ledger.keep_only({2, 3, 4})
        self.assertEqual(len(ledger), 2)
        self.assertTrue(ledger.add(1, HEADER, 1), "height 1's shares forgotten")
        self.assertFalse(ledger.add(2, HEADER, 2))
        ledger.keep_only(iter(()))
        self.assertEqual(len(ledger), 0)


def work(target: int = BOUNDARY) -> EthWork:
    return EthWork(HEADER, seed_hash(0), target, 1, 0, 0, "00000001")


def share(low: float, high: float, mix: bytes | None = b"\x11" * 32, target: int = BOUNDARY) -> EthShare:
    return EthShare("0xabc.rig", work(target), 7, mix, (low, high))


def hashed(reached: float, mix: bytes = b"\x11" * 32) -> EthashResult:
    """A result whose final hash reaches difficulty ``reached``."""
    return EthashResult(mix, int(2**256 / reached).to_bytes(32, "big"))


class JudgeTests(SynchronousTestCase):
    def test_wrong_mix_digest(self) -> None:
        verdict = judge(share(100, 200), hashed(10**6, mix=b"\x22" * 32))
        self.assertFalse(verdict.accepted)
        self.assertEqual((verdict.difficulty, verdict.share_difficulty, verdict.block), (100, 0.0, False))
        assert verdict.error is not None
        self.assertEqual(
            (verdict.error.code, verdict.error.message), (OTHER, "Invalid share: wrong mix digest")
        )

    def test_no_mix_digest_to_compare(self) -> None:
        self.assertTrue(judge(share(100, 100, mix=None), hashed(150, mix=b"\x22" * 32)).accepted)

    def test_highest_difficulty_it_meets(self) -> None:
        verdict = judge(share(100, 200), hashed(250))
        self.assertEqual((verdict.accepted, verdict.difficulty, verdict.block), (True, 200, False))
        self.assertAlmostEqual(verdict.share_difficulty, 250)

    def test_lowest_when_the_highest_is_missed(self) -> None:
        verdict = judge(share(100, 200), hashed(150))
        self.assertEqual((verdict.accepted, verdict.difficulty), (True, 100))

    def test_low_difficulty(self) -> None:
        verdict = judge(share(100, 200), hashed(50))
        self.assertEqual((verdict.accepted, verdict.difficulty, verdict.block), (False, 100, False))
        assert verdict.error is not None
        self.assertEqual(
            (verdict.error.code, verdict.error.message), (LOW_DIFFICULTY, "Invalid share: low difficulty")
        )

    def test_tolerance(self) -> None:
        just = 100 * DIFFICULTY_TOLERANCE
        self.assertTrue(judge(share(100, 100), hashed(just * 1.0001)).accepted)
        self.assertFalse(judge(share(100, 100), hashed(just * 0.999)).accepted)
        verdict = judge(share(100, 200), hashed(200 * DIFFICULTY_TOLERANCE * 1.0001))
        self.assertEqual(verdict.difficulty, 200)

    def test_block_whatever_the_miners_difficulty(self) -> None:
        # A network easier than the share: a hash that meets only the network is a block.
        target = int(2**256 / 40)
        verdict = judge(
            share(100, 200, target=target), EthashResult(b"\x11" * 32, target.to_bytes(32, "big"))
        )
        self.assertEqual((verdict.accepted, verdict.difficulty, verdict.block), (True, 100, True))
        self.assertIsNone(verdict.error)
        missed = judge(
            share(100, 200, target=target), EthashResult(b"\x11" * 32, (target + 1).to_bytes(32, "big"))
        )
        self.assertFalse(missed.accepted)
        self.assertFalse(missed.block)

    def test_block_credited_with_the_highest(self) -> None:
        verdict = judge(share(100, 200), hashed(2**21))
        self.assertEqual((verdict.accepted, verdict.difficulty, verdict.block), (True, 200, True))

    def test_zero_final_hash(self) -> None:
        verdict = judge(share(100, 200), EthashResult(b"\x11" * 32, bytes(32)))
        self.assertEqual((verdict.accepted, verdict.difficulty, verdict.block), (True, 200, True))

    def test_duplicate_error(self) -> None:
        self.assertEqual((duplicate().code, duplicate().message), (DUPLICATE_SHARE, "Duplicate share"))


# EIP-55's own examples.
CHECKSUMMED = (
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
)


def swap_one(address: str) -> str:
    """The address with the case of its first letter digit swapped: a wrong checksum."""
    for i, c in enumerate(address[2:], start=2):
        if c.isalpha():
            return address[:i] + c.swapcase() + address[i + 1 :]
    raise AssertionError("no letter")


class CheckAddressTests(SynchronousTestCase):
    def test_valid_checksums(self) -> None:
        for address in CHECKSUMMED:
            self.assertEqual(check_address(address), address.lower())

    def test_wrong_checksum(self) -> None:
        for address in CHECKSUMMED:
            with self.assertRaises(LoginError) as raised:
                check_address(swap_one(address))
            self.assertEqual(str(raised.exception), "Invalid login: wrong address checksum")

    def test_one_case_has_no_checksum(self) -> None:
        for address in CHECKSUMMED:
            self.assertEqual(check_address(address.lower()), address.lower())
            self.assertEqual(check_address("0x" + address[2:].upper()), address.lower())
        self.assertEqual(check_address("0x" + "12" * 20), "0x" + "12" * 20)

    def test_refused(self) -> None:
        for bad in (
            "0x" + "0" * 40,  # the zero address: nobody's
            "0x" + "0" * 39,
            "0x" + "ab" * 20 + "a",
            CHECKSUMMED[0][2:],
            "0X" + CHECKSUMMED[0][2:],
            "0x" + "g" * 40,
            "",
            "0x",
            CHECKSUMMED[0] + "\n",
            " " + CHECKSUMMED[0],
            "0x" + "\uff10" * 40,  # fullwidth digits
        ):
            with self.assertRaises(LoginError) as raised:
                check_address(bad)
            self.assertEqual(str(raised.exception), "Invalid login", bad)


class SplitUserTests(SynchronousTestCase):
    def test_address_and_worker(self) -> None:
        self.assertEqual(split_user(CHECKSUMMED[0] + ".rig-1", True), (CHECKSUMMED[0].lower(), "rig-1"))
        self.assertEqual(split_user(CHECKSUMMED[0], True), (CHECKSUMMED[0].lower(), DEFAULT_WORKER))
        self.assertEqual(split_user(CHECKSUMMED[0] + ".", True), (CHECKSUMMED[0].lower(), DEFAULT_WORKER))

    def test_a_worker_that_cannot_be_a_name(self) -> None:
        for worker in ("a.b", "r i g", "x" * 65, "\u00fc", "a/b"):
            self.assertEqual(split_user(f"{CHECKSUMMED[1]}.{worker}", True)[1], DEFAULT_WORKER, worker)
        self.assertEqual(split_user(f"{CHECKSUMMED[1]}.{'x' * 64}", True)[1], "x" * 64)

    def test_bad_address(self) -> None:
        self.assertRaises(LoginError, split_user, "0x1234.rig", True)
        self.assertRaises(LoginError, split_user, swap_one(CHECKSUMMED[0]) + ".rig", True)
        self.assertRaises(LoginError, split_user, ".rig", True)

    def test_any_name(self) -> None:
        self.assertEqual(split_user("alice.rig", False), ("alice", "rig"))
        self.assertEqual(split_user("Alice", False), ("alice", DEFAULT_WORKER))  # one name whatever the case
        for bad in ("", ".rig", "al ice", "a" * 65, "\u00fc"):
            self.assertRaises(LoginError, split_user, bad, False)

    def test_worker_name(self) -> None:
        self.assertEqual(worker_name("rig_1"), "rig_1")
        for bad in (None, 1, "", "a b", ["rig"]):
            self.assertEqual(worker_name(bad), DEFAULT_WORKER)


class FakeRPC:
    """DaemonRPC's face: answers at once, or raises DaemonError while ``down``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.down = False
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def call(self, method: str, *params: Any) -> Any:
        self.calls.append((method, params))
        if self.down:
            raise DaemonError(self.url, method, "connection refused")
        return [self.url, method]


def run(coroutine: Coroutine[Any, Any, Any]) -> defer.Deferred[Any]:
    return defer.Deferred.fromCoroutine(coroutine)


class UpstreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.rpcs = [FakeRPC("http://a:8545"), FakeRPC("http://b:8545"), FakeRPC("http://c:8545")]
        self.upstreams = Upstreams("dev", cast(list[DaemonRPC], self.rpcs))

    def test_sick_after_failures_in_a_row(self) -> None:
        node = Upstream(cast(DaemonRPC, self.rpcs[0]))
        for _ in range(SICK_AFTER - 1):
            node.failed()
        node.answered()  # an answer breaks the row
        for _ in range(SICK_AFTER - 1):
            node.failed()
        self.assertFalse(node.sick)
        node.failed()
        self.assertTrue(node.sick)

    def test_alive_after_answers_in_a_row(self) -> None:
        node = Upstream(cast(DaemonRPC, self.rpcs[0]))
        for _ in range(SICK_AFTER):
            node.failed()
        for _ in range(ALIVE_AFTER - 1):
            node.answered()
        node.failed()  # a failure breaks the row
        for _ in range(ALIVE_AFTER - 1):
            node.answered()
        self.assertTrue(node.sick)
        node.answered()
        self.assertFalse(node.sick)

    def test_no_nodes(self) -> None:
        self.assertRaises(ValueError, Upstreams, "dev", [])

    def test_call_uses_the_active_node(self) -> None:
        result = self.successResultOf(run(self.upstreams.call("eth_getWork")))
        self.assertEqual(result, ["http://a:8545", "eth_getWork"])
        self.assertEqual(self.rpcs[1].calls, [])

    def test_call_raises_the_daemon_error_and_counts_it(self) -> None:
        self.rpcs[0].down = True
        for _ in range(SICK_AFTER):
            failure = self.failureResultOf(run(self.upstreams.call("eth_getWork", 1)), DaemonError)
            self.assertEqual(failure.value.url, "http://a:8545")
        self.assertTrue(self.upstreams.nodes[0].sick)
        self.assertIs(self.upstreams.active, self.upstreams.nodes[0], "the choice is made at a check")

    def test_call_each(self) -> None:
        self.rpcs[1].down = True
        results = self.successResultOf(run(self.upstreams.call_each("eth_submitWork", "x")))
        self.assertEqual(results[0], ["http://a:8545", "eth_submitWork"])
        self.assertIsInstance(results[1], DaemonError)
        self.assertEqual(results[2], ["http://c:8545", "eth_submitWork"])
        self.assertEqual([rpc.calls for rpc in self.rpcs], [[("eth_submitWork", ("x",))]] * 3)

    def check(self) -> None:
        self.successResultOf(run(self.upstreams.check()))

    def active(self) -> str:
        return self.upstreams.active.url

    def test_answering_follows_the_last_call(self) -> None:
        node = Upstream(cast(DaemonRPC, self.rpcs[0]))
        self.assertTrue(node.answering)
        node.failed()
        self.assertEqual((node.answering, node.sick), (False, False))
        node.answered()
        self.assertEqual((node.answering, node.sick), (True, False))

    def test_a_failed_probe_moves_on_at_once(self) -> None:
        self.rpcs[0].down = True
        self.check()
        self.assertEqual(self.active(), "http://b:8545")
        self.rpcs[0].down = False
        self.check()
        self.assertEqual(self.active(), "http://a:8545", "not sick: taken back once it answers")

    def test_a_sick_node_back_after_answers_in_a_row(self) -> None:
        self.rpcs[0].down = True
        for _ in range(SICK_AFTER):
            self.check()
        self.assertTrue(self.upstreams.nodes[0].sick)
        self.assertEqual(self.active(), "http://b:8545")
        self.rpcs[0].down = False
        for _ in range(ALIVE_AFTER - 1):
            self.check()
        self.assertEqual(self.active(), "http://b:8545", "answering, but still sick")
        self.check()
        self.assertEqual(self.active(), "http://a:8545", "the first in order again")

    def test_skips_to_the_first_answering(self) -> None:
        self.rpcs[0].down = self.rpcs[1].down = True
        self.check()
        self.assertEqual(self.active(), "http://c:8545")

    def test_none_answering_keeps_the_one_in_use(self) -> None:
        self.rpcs[0].down = True
        self.check()
        self.assertEqual(self.active(), "http://b:8545")
        for rpc in self.rpcs:
            rpc.down = True
        for _ in range(SICK_AFTER + 1):
            self.check()
        self.assertTrue(all(node.sick for node in self.upstreams.nodes))
        self.assertEqual(self.active(), "http://b:8545")
        self.rpcs[2].down = False
        for _ in range(ALIVE_AFTER - 1):
            self.check()
        self.assertEqual(self.active(), "http://b:8545")
        self.check()
        self.assertEqual(self.active(), "http://c:8545")

    def test_use(self) -> None:
        self.upstreams.use(2)
        self.assertEqual(self.active(), "http://c:8545")
        self.successResultOf(run(self.upstreams.call("eth_getWork")))
        self.assertEqual(self.rpcs[2].calls, [("eth_getWork", ())])


class RecordingRun:
    """A hashing thread's ``run`` that builds nothing: it records what it was
    given and fires when told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []
        self.pending: list[defer.Deferred[Any]] = []

    def __call__(self, function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        self.calls.append((function, args))
        waiting: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(waiting)
        return waiting

    def built(self) -> list[tuple[Any, ...]]:
        return [args for _, args in self.calls]


def work_at(height: int, activation: int | None = None) -> EthWork:
    seed = seed_hash(epochs_for(height, activation)[0])
    return work_from_rpc([hex32(HEADER), hex32(seed), hex32(BOUNDARY), hex(height)], None, activation)


class PrepareTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.runner = RecordingRun()
        self.hashers = EpochHashers("dev", self.runner)

    def prepared(self, height: int, activation: int | None = None) -> list[tuple[Any, ...]]:
        self.runner.calls.clear()
        self.hashers.prepare(work_at(height, activation), activation)
        return self.runner.built()

    def test_current_epoch_built(self) -> None:
        self.assertEqual(self.prepared(1), [(0, 0)])
        self.assertEqual(self.prepared(EPOCH_LENGTH + 1), [(1, 1)])

    def test_builds_with_the_caches_get(self) -> None:
        self.hashers.prepare(work_at(1), None)
        function, args = self.runner.calls[0]
        self.assertEqual(function, self.hashers.caches.get)
        self.assertEqual(args, (0, 0))

    def test_once_while_building(self) -> None:
        self.hashers.prepare(work_at(1), None)
        self.assertEqual(self.prepared(2), [])
        self.runner.pending[0].callback(None)
        self.assertEqual(self.prepared(3), [(0, 0)], "built but not held: asked again")

    def test_held_cache_not_built(self) -> None:
        caches = EpochCaches(limit=2)
        caches.put(EthashCache(seed_hash(0), 64 * 64, 128 * 64, 0, 0))
        self.hashers = EpochHashers("dev", self.runner, caches=caches)
        self.assertEqual(self.prepared(1), [])

    def test_next_epoch_near_the_end(self) -> None:
        self.assertEqual(self.prepared(EPOCH_LENGTH - PREPARE_AHEAD - 1), [(0, 0)])
        self.assertEqual(self.prepared(EPOCH_LENGTH - PREPARE_AHEAD), [(1, 1)], "(0, 0) still building")
        self.hashers = EpochHashers("dev", self.runner)
        self.assertEqual(self.prepared(2 * EPOCH_LENGTH - 1), [(1, 1), (2, 2)])
        self.hashers = EpochHashers("dev", self.runner)
        self.assertEqual(self.prepared(2 * EPOCH_LENGTH), [(2, 2)])

    def test_etchash_epochs(self) -> None:
        activation = MORDOR_ECIP1099_BLOCK  # 42 epochs of 60,000 blocks
        self.assertEqual(self.prepared(activation, activation), [(84, 42)])
        self.hashers = EpochHashers("dev", self.runner)
        # Half-way: where a 30,000-block epoch would end, an etchash one does not.
        self.assertEqual(self.prepared(activation + EPOCH_LENGTH - 1, activation), [(84, 42)])
        self.hashers = EpochHashers("dev", self.runner)
        self.assertEqual(
            self.prepared(activation + ETCHASH_EPOCH_LENGTH - PREPARE_AHEAD - 1, activation), [(84, 42)]
        )
        self.hashers = EpochHashers("dev", self.runner)
        self.assertEqual(
            self.prepared(activation + ETCHASH_EPOCH_LENGTH - PREPARE_AHEAD, activation), [(84, 42), (86, 43)]
        )

    def test_ahead_of_activation(self) -> None:
        activation = MORDOR_ECIP1099_BLOCK
        self.assertEqual(self.prepared(activation - PREPARE_AHEAD - 1, activation), [(83, 83)])
        self.hashers = EpochHashers("dev", self.runner)
        self.assertEqual(self.prepared(activation - PREPARE_AHEAD, activation), [(83, 83), (84, 42)])

    def test_failed_build_logged_and_tried_again(self) -> None:
        self.hashers.prepare(work_at(1), None)
        self.runner.pending[0].errback(MemoryError("no room for a cache"))
        self.assertEqual(len(self.flushLoggedErrors(MemoryError)), 1)
        self.assertEqual(self.prepared(2), [(0, 0)])
