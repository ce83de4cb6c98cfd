"""Checking a ``mining.submit``: everything before and after the hash. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from nomp.chain.jobs import Job, JobRegistry
from nomp.hashing import Algorithm, ShareHash, ShareWork
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

EXTRANONCE2_SIZE = 4
MAX_FUTURE_NTIME = 7200  # consensus: a block at most two hours ahead
DIFFICULTY_TOLERANCE = 0.99  # miners compute targets in floating point
_BAD_PARAMS = "invalid params: expected worker, job id, extranonce2, ntime, nonce"


def _hex4(text: str) -> bytes | None:
    """Exactly eight hex digits as 4 bytes, else None.

    bytes.fromhex skips whitespace between byte pairs: eight characters
    that decode to four bytes hold no whitespace.
    """
    if len(text) != 8:
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError:
        return None
    return value if len(value) == 4 else None


# Tuples, not frozen dataclasses: one of each is made per share.
class Submission(NamedTuple):
    """A submit that passed every check a hash is not needed for."""

    worker: str
    job: Job
    extranonce: bytes  # extranonce1 + extranonce2
    work: ShareWork
    difficulties: tuple[float, float]  # (lowest, highest) it may be judged by


class Verdict(NamedTuple):
    """A hashed share, judged."""

    accepted: bool
    difficulty: float  # what the share is credited with (or was judged by)
    share_difficulty: float  # what its hash actually reaches
    block: bool  # it meets the network target
    error: StratumError | None = None


class ShareLedger:
    """Shares already submitted, per job: a share counts once.

    A share is identified by extranonce1, extranonce2, header version, ntime
    and nonce as numbers, so ``ABCD`` and ``abcd`` are the same share (NOMP
    compared the hex strings and counted both), and two shares that differ
    only in rolled version bits are two shares.
    """

    def __init__(self) -> None:
        self._seen: dict[str, set[int]] = {}

    def add(self, job_id: str, key: int) -> bool:
        """Record a share; False if it was seen before."""
        seen = self._seen.setdefault(job_id, set())
        if key in seen:
            return False
        seen.add(key)
        return True

    def keep_only(self, job_ids: Iterable[str]) -> None:
        """Forget the shares of jobs no longer live."""
        live = set(job_ids)
        for job_id in [j for j in self._seen if j not in live]:
            del self._seen[job_id]

    def __len__(self) -> int:
        return sum(len(s) for s in self._seen.values())


def check_submit(
    params: Sequence[object],
    session: MinerSession,
    registry: JobRegistry,
    ledger: ShareLedger,
    now: float,
) -> Submission:
    """Check a submit's params ([worker, job_id, extranonce2, ntime, nonce,
    version_bits?]) in NOMP's order; StratumError for the first problem found.

    ``version_bits`` (BIP310) are the values of the bits the miner rolled:
    every bit outside the mask it agreed to must be 0, and the header
    version is the job's with the masked bits replaced. ``00000000`` (or
    null) from a miner that negotiated nothing is the job's version as is:
    some firmware always sends the sixth param.
    """
    if len(params) < 5:
        raise StratumError(OTHER, _BAD_PARAMS)
    worker, job_id, extranonce2_hex, ntime_hex, nonce_hex = params[:5]
    if not (
        type(worker) is str
        and type(job_id) is str
        and type(extranonce2_hex) is str
        and type(ntime_hex) is str
        and type(nonce_hex) is str
    ):
        raise StratumError(OTHER, _BAD_PARAMS)
    if worker not in session.workers:
        raise StratumError(UNAUTHORIZED, "unauthorized worker")
    if session.extranonce1 is None:
        raise StratumError(NOT_SUBSCRIBED, "not subscribed")
    extranonce2 = _hex4(extranonce2_hex)
    if extranonce2 is None:
        raise StratumError(OTHER, "incorrect size of extranonce2")
    job = registry.get(job_id)
    if job is None:
        raise StratumError(JOB_NOT_FOUND, "job not found")
    ntime_bytes = _hex4(ntime_hex)
    if ntime_bytes is None:
        raise StratumError(OTHER, "incorrect size of ntime")
    ntime = int.from_bytes(ntime_bytes, "big")
    if not job.template.mintime <= ntime <= now + MAX_FUTURE_NTIME:
        raise StratumError(OTHER, "ntime out of range")
    nonce_bytes = _hex4(nonce_hex)
    if nonce_bytes is None:
        raise StratumError(OTHER, "incorrect size of nonce")
    nonce = int.from_bytes(nonce_bytes, "big")
    version = job.template.version
    if len(params) > 5 and params[5] is not None:
        version = _rolled_version(params[5], version, session.version_mask)
    extranonce = session.extranonce1 + extranonce2
    key = (int.from_bytes(extranonce, "big") << 96) | (version << 64) | (ntime << 32) | nonce
    if not ledger.add(job_id, key):
        raise StratumError(DUPLICATE_SHARE, "duplicate share")
    return Submission(
        worker=worker,
        job=job,
        extranonce=extranonce,
        work=ShareWork(extranonce, version, ntime, nonce),
        difficulties=session.difficulties_for(job_id),
    )


def _rolled_version(version_bits: object, version: int, mask: int) -> int:
    """The header version of a share with ``version_bits`` rolled under ``mask``."""
    raw = _hex4(version_bits) if type(version_bits) is str else None
    if raw is None:
        raise StratumError(OTHER, "incorrect size of version bits")
    bits = int.from_bytes(raw, "big")
    if bits & ~mask:
        if not mask:
            raise StratumError(OTHER, "version rolling was not negotiated (mining.configure)")
        raise StratumError(OTHER, f"version bits outside the mask {mask:08x}")
    return (version & ~mask) | bits


def judge(submission: Submission, hashed: ShareHash, algorithm: Algorithm) -> Verdict:
    """Accept or refuse a hashed share.

    A share is credited with the highest difficulty it was allowed to be
    judged by and meets. A hash that meets the network target is a block
    and is accepted whatever the miner's difficulty.
    """
    value = hashed.pow_value
    reached = algorithm.difficulty_of(value)
    low, high = submission.difficulties
    block = value <= submission.job.template.target
    if reached >= high * DIFFICULTY_TOLERANCE:
        return Verdict(True, high, reached, block)
    if reached >= low * DIFFICULTY_TOLERANCE or block:
        return Verdict(True, low, reached, block)
    error = StratumError(LOW_DIFFICULTY, f"low difficulty share of {reached:.8g}")
    return Verdict(False, low, reached, False, error)
