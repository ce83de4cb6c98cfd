"""Jobs: a template made ready for miners, and the registry of live jobs."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass

from nomp.chain.coinbase import Coinbase, CoinbaseLayout, PayoutPlan, build_coinbase
from nomp.chain.encoding import varint
from nomp.chain.merkle import coinbase_branch, root_from_branch
from nomp.chain.template import BlockTemplate
from nomp.hashing import Algorithm, JobHasher, sha256d

MWEB_PRESENT = b"\x01"  # the OptionalPtr flag before the MWEB extension block


@dataclass(frozen=True, slots=True, eq=False)
class Job:
    """One unit of work: a template with its coinbase and merkle branch."""

    job_id: str
    template: BlockTemplate
    coinbase: Coinbase
    merkle_branch: tuple[bytes, ...]
    hasher: JobHasher
    created_at: float
    clean: bool  # first job on a new previous block: miners drop older work

    def header(self, extranonce: bytes, version: int, ntime: int, nonce: int) -> bytes:
        """The 80-byte header a share describes (in Python, for block
        building and cross-checks; the hot path is the C share check)."""
        root = root_from_branch(sha256d(self.coinbase.serialize(extranonce)), self.merkle_branch)
        return (
            version.to_bytes(4, "little")
            + self.template.prevhash_internal
            + root
            + ntime.to_bytes(4, "little")
            + self.template.bits.to_bytes(4, "little")
            + nonce.to_bytes(4, "little")
        )

    def notify_params(self, clean: bool) -> list[object]:
        """The params of ``mining.notify``, in the order miners (and NOMP) use."""
        template = self.template
        internal = template.prevhash_internal
        # Stratum sends the previous hash as eight 32-bit words, each byte-swapped.
        prevhash = b"".join(internal[i : i + 4][::-1] for i in range(0, 32, 4))
        return [
            self.job_id,
            prevhash.hex(),
            self.coinbase.coinb1.hex(),
            self.coinbase.coinb2.hex(),
            [step.hex() for step in self.merkle_branch],
            f"{template.version:08x}",
            f"{template.bits:08x}",
            f"{template.curtime:08x}",
            clean,
        ]

    def block(self, extranonce: bytes, header: bytes) -> bytes:
        """The serialised block for a header found with ``extranonce``.

        Template transactions keep their order, so an MWEB HogEx stays last;
        an MWEB template adds the extension block after the transactions.
        """
        transactions = [self.coinbase.serialize_for_block(extranonce)]
        transactions += [tx.data for tx in self.template.transactions]
        block = header + varint(len(transactions)) + b"".join(transactions)
        if self.template.mweb is not None:
            block += MWEB_PRESENT + self.template.mweb
        return block


class JobRegistry:
    """The jobs miners may submit shares for.

    All jobs on the current previous block stay valid (up to ``max_jobs``,
    oldest dropped first); a new previous block drops them all. Job ids
    count up in hex from ``first_id``.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        plan: PayoutPlan,
        layout: CoinbaseLayout,
        max_jobs: int = 16,
        first_id: int = 1,
    ) -> None:
        self.algorithm = algorithm
        self.plan = plan
        self.layout = layout
        self._max_jobs = max_jobs
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._ids = itertools.count(first_id)
        self.current: Job | None = None

    def get(self, job_id: str) -> Job | None:
        """A live job by id."""
        return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)

    def live_ids(self) -> list[str]:
        """The ids of the jobs shares may be submitted for."""
        return list(self._jobs)

    def is_new_block(self, template: BlockTemplate) -> bool:
        """Whether the template builds on a different previous block than
        the current job (and is not behind it)."""
        current = self.current
        if current is None:
            return True
        return (
            template.previous_block_hash != current.template.previous_block_hash
            and template.height >= current.template.height
        )

    def add(self, template: BlockTemplate, now: float, force: bool = False) -> Job | None:
        """A job for ``template`` if it is new work, else None.

        New work is a new previous block (a clean job), or any template on
        the current block when ``force`` is set (the rebroadcast timer,
        picking up new transactions). A template behind the current height
        is ignored.
        """
        clean = self.is_new_block(template)
        current = self.current
        if not clean:
            if current is None or not force:
                return None
            if template.previous_block_hash != current.template.previous_block_hash:
                return None  # behind the current height
        coinbase = build_coinbase(template, self.plan, self.layout)
        branch = coinbase_branch([tx.txid for tx in template.transactions])
        job = Job(
            job_id=format(next(self._ids), "x"),
            template=template,
            coinbase=coinbase,
            merkle_branch=branch,
            hasher=JobHasher(
                self.algorithm,
                coinbase.coinb1,
                coinbase.coinb2,
                branch,
                template.prevhash_internal,
                template.bits,
            ),
            created_at=now,
            clean=clean,
        )
        if clean:
            self._jobs.clear()
        self._jobs[job.job_id] = job
        while len(self._jobs) > self._max_jobs:
            self._jobs.popitem(last=False)
        self.current = job
        return job
