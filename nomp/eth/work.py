"""Work from an Ethereum-family node, and the book of recent work. Pure.

``eth_getWork`` answers [seal hash, seed hash, boundary, block number?]: a
miner searches a nonce whose ethash of the seal hash meets the boundary.
The pool keeps the work of the last few heights (a share that was being
found while the next block arrived still counts, as OEP allows), each with
a short job id for the NiceHash dialect, whose notify names work by id.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

from nomp.hashing.ethash import MAX_EPOCH, epochs_for, seed_hash

MAX_TARGET = 2**256 - 1
# Headers of work dropped from the book still recognised, so a share for
# one is told "stale" rather than "unknown work".
REMEMBERED_EXPIRED = 64


class WorkError(ValueError):
    """A getWork answer that cannot be work."""


@lru_cache(maxsize=64)
def _seed(seed_epoch: int) -> bytes:
    return seed_hash(seed_epoch)


# Digits only: bytes.fromhex and int(_, 16) take spaces, signs and underscores.
_HASH = re.compile(r"0[xX][0-9a-fA-F]{64}")
_QUANTITY = re.compile(r"0[xX][0-9a-fA-F]{1,64}")


def parse_hash(value: object, what: str) -> bytes:
    """``0x`` and 64 hex digits (either case) as 32 bytes."""
    if type(value) is not str or not _HASH.fullmatch(value):
        raise WorkError(f"{what} must be 0x and 64 hex digits, got {str(value)[:80]!r}")
    return bytes.fromhex(value[2:])


def parse_quantity(value: object, what: str) -> int:
    """A JSON-RPC quantity (``0x`` hex) or a plain integer, >= 0."""
    if type(value) is int and value >= 0:
        return value
    if type(value) is str and _QUANTITY.fullmatch(value):
        return int(value[2:], 16)
    raise WorkError(f"{what} must be a hex quantity, got {str(value)[:80]!r}")


@dataclass(frozen=True, slots=True)
class EthWork:
    """One piece of work: what a miner hashes, and the block it would be."""

    header_hash: bytes  # the seal hash: Keccak-256 of the header without nonce and mix digest
    seed: bytes
    target: int  # the network's boundary: a final hash at or below it is a block
    height: int
    seed_epoch: int
    size_epoch: int
    job_id: str
    header_hex: str = field(init=False)
    seed_hex: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header_hex", "0x" + self.header_hash.hex())
        object.__setattr__(self, "seed_hex", "0x" + self.seed.hex())

    @property
    def network_difficulty(self) -> int:
        """The block's difficulty: 2^256 / boundary."""
        return 2**256 // max(self.target, 1)


def work_from_rpc(
    reply: Any, pending_height: int | None, activation: int | None, job_id: str = ""
) -> EthWork:
    """The work an ``eth_getWork`` answer describes; WorkError if it is not
    one the pool can hand out.

    The height is the answer's 4th element when the node gives it (geth,
    core-geth, besu do), else ``pending_height`` (from the pending block).
    The seed must be the one the height's epoch has: a node whose seed and
    height disagree would have every share checked against the wrong cache.
    """
    if not isinstance(reply, list) or len(reply) < 3:
        raise WorkError(f"eth_getWork must answer a list of 3 or 4 values, got {str(reply)[:120]}")
    header_hash = parse_hash(reply[0], "the seal hash")
    seed = parse_hash(reply[1], "the seed hash")
    target = int.from_bytes(parse_hash(reply[2], "the boundary"), "big")
    if target == 0:
        raise WorkError("the boundary is zero: no hash meets it")
    if header_hash == bytes(32):
        raise WorkError("the seal hash is empty: the node has no work yet")
    if len(reply) > 3 and reply[3] is not None:
        height = parse_quantity(reply[3], "the block number")
    elif pending_height is not None:
        height = pending_height
    else:
        raise WorkError("no block number: neither eth_getWork nor the pending block gave one")
    seed_epoch, size_epoch = epochs_for(height, activation)
    if seed_epoch > MAX_EPOCH:
        raise WorkError(f"block {height} is past the epochs the pool can hash")
    if _seed(seed_epoch) != seed:
        raise WorkError(
            f"the seed hash 0x{seed.hex()} is not epoch {seed_epoch}'s, which block {height} is in"
        )
    return EthWork(header_hash, seed, target, height, seed_epoch, size_epoch, job_id)


@lru_cache(maxsize=1024)
def share_target(difficulty: float) -> int:
    """The boundary of a share of ``difficulty`` (hashes per share on average), exactly."""
    if not difficulty > 0:
        raise ValueError("difficulty must be > 0")
    if math.isinf(difficulty):
        return 1
    return max(1, min(int(Fraction(2**256) / Fraction(difficulty)), MAX_TARGET))


def target_hex(target: int) -> str:
    """A boundary as miners take it: ``0x`` and 64 hex digits."""
    return f"0x{target:064x}"


class WorkBook:
    """The work of the last ``stale_heights`` heights, newest last.

    A new seal hash is new work; a seal hash seen before is not. A height
    lower than the newest (the node went back a block, another upstream
    lagged) still becomes current: the node's word is the chain.
    """

    def __init__(self, stale_heights: int, activation: int | None) -> None:
        if stale_heights < 1:
            raise ValueError("stale_heights must be >= 1")
        self._stale_heights = stale_heights
        self.activation = activation
        self._by_header: OrderedDict[bytes, EthWork] = OrderedDict()
        self._by_job: dict[str, EthWork] = {}
        self._expired: OrderedDict[bytes, None] = OrderedDict()
        self._ids = itertools.count(1)
        self.current: EthWork | None = None

    def add(self, reply: Any, pending_height: int | None = None) -> EthWork | None:
        """The new work an ``eth_getWork`` answer holds, or None if it is the
        current one; WorkError if it is not work (see :func:`work_from_rpc`)."""
        current = self.current
        if isinstance(reply, list) and reply and current is not None and reply[0] == current.header_hex:
            return None  # the usual answer: nothing new
        work = work_from_rpc(reply, pending_height, self.activation, f"{next(self._ids) & 0xFFFFFFFF:08x}")
        known = self._by_header.get(work.header_hash)
        if known is not None:
            if known is self.current:
                return None
            self._by_header.move_to_end(work.header_hash)
            self.current = known
            return known
        self._by_header[work.header_hash] = work
        self._by_job[work.job_id] = work
        self.current = work
        self._drop_old(work.height)
        return work

    def _drop_old(self, newest: int) -> None:
        lowest = newest - self._stale_heights + 1
        for header_hash in [h for h, w in self._by_header.items() if w.height < lowest]:
            work = self._by_header.pop(header_hash)
            del self._by_job[work.job_id]
            self._expired[header_hash] = None
            if len(self._expired) > REMEMBERED_EXPIRED:
                self._expired.popitem(last=False)

    def by_header(self, header_hash: bytes) -> EthWork | None:
        return self._by_header.get(header_hash)

    def by_job(self, job_id: str) -> EthWork | None:
        return self._by_job.get(job_id)

    def expired(self, header_hash: bytes) -> bool:
        """Whether the header was work once and is too old now."""
        return header_hash in self._expired

    def live(self) -> Sequence[EthWork]:
        """The work still accepted, oldest first."""
        return list(self._by_header.values())

    def live_heights(self) -> Iterable[int]:
        return {work.height for work in self._by_header.values()}
