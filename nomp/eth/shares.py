"""Checking an Ethereum-family share: everything before and after the hash. Pure.

Two ways in: ``eth_submitWork [nonce, seal hash, mix digest]`` (HTTP
getwork and eth-proxy, the miner computed the mix digest) and NiceHash's
``mining.submit [worker, job id, nonce part]`` (the pool computes it). The
error codes and texts are OEP's where it has them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from nomp.eth.work import EthWork, WorkBook
from nomp.hashing.ethash import EthashResult
from nomp.stratum.errors import DUPLICATE_SHARE, JOB_NOT_FOUND, LOW_DIFFICULTY, OTHER, StratumError
from nomp.stratum.session import MinerSession
from nomp.stratum.shares import DIFFICULTY_TOLERANCE, Verdict

# OEP's codes: -1 for what cannot be read, -3 for an unknown method, 0 for
# no work yet; 21-25 as in Stratum.
INVALID = -1
METHOD_NOT_FOUND = -3
WORK_NOT_READY = 0

_HEX = re.compile(r"0x[0-9a-fA-F]+")


def _invalid_params() -> StratumError:
    return StratumError(INVALID, "Invalid params")


def _malformed() -> StratumError:
    return StratumError(INVALID, "Malformed PoW result")


class EthShare(NamedTuple):
    """A submit that passed every check a hash is not needed for."""

    worker: str  # "<login>.<worker>"
    work: EthWork
    nonce: int
    mix_digest: bytes | None  # None: the pool computes it (NiceHash)
    difficulties: tuple[float, float]  # (lowest, highest) it may be judged by


class SubmittedWork(NamedTuple):
    """``eth_submitWork``'s params, read."""

    nonce: int
    header_hash: bytes
    mix_digest: bytes


def _fixed_hex(value: str, digits: int) -> bytes:
    if len(value) != digits + 2 or not _HEX.fullmatch(value):
        raise _malformed()
    return bytes.fromhex(value[2:])


def read_submit_work(params: Sequence[object]) -> SubmittedWork:
    """``[0x + 16 hex nonce, 0x + 64 hex seal hash, 0x + 64 hex mix digest]``,
    in either letter case (the same share in another case is the same share)."""
    if len(params) != 3:
        raise _invalid_params()
    nonce_hex, header_hex, mix_hex = params
    if type(nonce_hex) is not str or type(header_hex) is not str or type(mix_hex) is not str:
        raise _invalid_params()
    nonce = int.from_bytes(_fixed_hex(nonce_hex, 16), "big")
    return SubmittedWork(nonce, _fixed_hex(header_hex, 64), _fixed_hex(mix_hex, 64))


def read_nicehash_nonce(value: object, extranonce: bytes) -> int:
    """The full nonce of a NiceHash submit: the connection's extranonce, then
    the miner's part (hex, ``0x`` optional), 8 bytes together."""
    digits = 16 - 2 * len(extranonce)
    if type(value) is not str:
        raise _invalid_params()
    part = value[2:] if value[:2] in ("0x", "0X") else value
    if len(part) != digits or not _HEX.fullmatch("0x" + part):
        raise StratumError(INVALID, f"the nonce must be {digits} hex digits after the extranonce")
    return int.from_bytes(extranonce + bytes.fromhex(part), "big")


def find_work(book: WorkBook, header_hash: bytes) -> EthWork:
    """The live work of a seal hash; a stale or unknown one is refused."""
    work = book.by_header(header_hash)
    if work is not None:
        return work
    if book.expired(header_hash):
        raise StratumError(JOB_NOT_FOUND, "Stale share")
    raise StratumError(JOB_NOT_FOUND, "Unknown work")


def find_job(book: WorkBook, job_id: object) -> EthWork:
    """The live work of a NiceHash job id."""
    work = book.by_job(job_id) if type(job_id) is str else None
    if work is None:
        raise StratumError(JOB_NOT_FOUND, "Job not found")
    return work


class NonceLedger:
    """Shares already submitted, per height: a share counts once.

    A share is its seal hash and nonce as numbers (its mix digest follows
    from them), so the same share in other letter case is a duplicate. Kept
    in memory per height, so the check works at any height (OEP's Redis
    check wiped itself below height 8) and costs no round trip.
    """

    def __init__(self) -> None:
        self._seen: dict[int, set[tuple[bytes, int]]] = {}

    def add(self, height: int, header_hash: bytes, nonce: int) -> bool:
        """Record a share; False if it was seen before."""
        seen = self._seen.setdefault(height, set())
        key = (header_hash, nonce)
        if key in seen:
            return False
        seen.add(key)
        return True

    def keep_only(self, heights: Iterable[int]) -> None:
        live = set(heights)
        for height in [h for h in self._seen if h not in live]:
            del self._seen[height]

    def __len__(self) -> int:
        return sum(len(s) for s in self._seen.values())


def duplicate() -> StratumError:
    return StratumError(DUPLICATE_SHARE, "Duplicate share")


def check_submit_work(
    params: Sequence[object], worker: str, session: MinerSession, book: WorkBook, ledger: NonceLedger
) -> EthShare:
    """An ``eth_submitWork`` (getwork, eth-proxy) as a share to hash; StratumError
    for the first problem: params, live work, a share seen before."""
    submitted = read_submit_work(params)
    work = find_work(book, submitted.header_hash)
    if not ledger.add(work.height, work.header_hash, submitted.nonce):
        raise duplicate()
    return EthShare(
        worker, work, submitted.nonce, submitted.mix_digest, session.difficulties_for(work.job_id)
    )


def judge(share: EthShare, result: EthashResult) -> Verdict:
    """Accept or refuse a hashed share.

    Credited with the highest difficulty it was allowed to be judged by and
    meets (difficulties in hashes: a share of difficulty d has a final hash
    at or below 2^256 / d). A final hash that meets the network's boundary
    is a block and is accepted whatever the miner's difficulty.
    """
    if share.mix_digest is not None and share.mix_digest != result.mix_digest:
        error = StratumError(OTHER, "Invalid share: wrong mix digest")
        return Verdict(False, share.difficulties[0], 0.0, False, error)
    value = max(result.value, 1)
    reached = 2**256 / value
    low, high = share.difficulties
    block = value <= share.work.target
    if reached >= high * DIFFICULTY_TOLERANCE:
        return Verdict(True, high, reached, block)
    if reached >= low * DIFFICULTY_TOLERANCE or block:
        return Verdict(True, low, reached, block)
    return Verdict(False, low, reached, False, StratumError(LOW_DIFFICULTY, "Invalid share: low difficulty"))
