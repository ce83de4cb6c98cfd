"""The Bitcoin family's share rules: sha256d/scrypt headers checked in C,
judged against the job's targets, blocks serialised for ``submitblock``."""

from __future__ import annotations

from nomp.candidate import BlockCandidate
from nomp.chain.encoding import block_hash, txid
from nomp.chain.jobs import Job
from nomp.hashing import JobHasher, ShareHash, ShareWork
from nomp.stratum.extranonce import with_earlier_extranonce1
from nomp.stratum.session import MinerSession
from nomp.stratum.shares import Submission, Verdict, judge


class BitcoinShareRules:
    """ShareRules for Submission and ShareHash (see nomp.stratum.pipeline)."""

    def task(self, share: Submission) -> tuple[JobHasher, ShareWork]:
        return share.job.hasher, share.work

    def judge(self, share: Submission, hashed: ShareHash) -> Verdict:
        return judge(share, hashed, share.job.hasher.algorithm)

    def check_again(self, share: Submission, session: MinerSession) -> Submission | None:
        return with_earlier_extranonce1(share, session)

    def candidate(self, share: Submission, hashed: ShareHash, solo: bool, now: float) -> BlockCandidate:
        return block_candidate(share.job, share.extranonce, hashed.header, share.worker, solo, now)


def block_candidate(
    job: Job, extranonce: bytes, header: bytes, worker: str, solo: bool, now: float
) -> BlockCandidate:
    """The candidate a header meeting ``job``'s network target makes (``now``: unix seconds)."""
    template = job.template
    return BlockCandidate(
        block_hash=block_hash(header),
        coinbase_txid=txid(job.coinbase.serialize(extranonce)),
        height=template.height,
        worker=worker,
        reward=template.coinbase_value,
        solo=solo,
        network_difficulty=job.hasher.algorithm.difficulty_of(template.target),
        found_at=now,
        payload=job.block(extranonce, header),
    )
