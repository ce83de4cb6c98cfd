"""Ethash share checks for the hashing threads, and the caches behind them.

One ``EpochHasher`` per epoch pair: the hashing threads batch the shares
of one hasher into one C call. A cache is built in a hashing thread, never
on the reactor thread: ahead of the epoch change (the work's height is
near the end of its epoch) and, should a share come first, by the thread
that checks it. With ``dataset`` on, the full dataset of the current epoch
is generated chunk by chunk in the hashing threads too, between share
checks, and used once complete.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from nomp.background import background
from nomp.eth.work import EthWork
from nomp.hashing.ethash import (
    EPOCH_LENGTH,
    ETCHASH_EPOCH_LENGTH,
    EpochCaches,
    EthashCache,
    EthashDataset,
    EthashResult,
    epochs_for,
)

_RECORD = struct.Struct("<32sQ")
# Blocks before an epoch ends from which the next epoch's cache is built:
# hours of blocks, so it is ready long before the first share needs it.
PREPARE_AHEAD = 500
# Dataset items per chunk a hashing thread generates at a time: a few
# tenths of a second of work, so share checks are never held up long.
DATASET_CHUNK = 1 << 17

Run = Callable[..., defer.Deferred[Any]]  # (function, *args): run in a hashing thread


class EthTask(NamedTuple):
    """What the hashing threads hash for one share."""

    header_hash: bytes
    nonce: int

    def pack(self) -> bytes:
        return _RECORD.pack(self.header_hash, self.nonce)


class EpochHasher:
    """Checks shares of one epoch pair: with the full dataset once it is
    complete, else with the light cache (built first, in the calling
    hashing thread, if it is not held)."""

    __slots__ = ("_caches", "dataset", "seed_epoch", "size_epoch")

    def __init__(self, caches: EpochCaches, seed_epoch: int, size_epoch: int) -> None:
        self._caches = caches
        self.seed_epoch = seed_epoch
        self.size_epoch = size_epoch
        self.dataset: EthashDataset | None = None  # set once complete

    def check_packed(self, records: bytes, count: int) -> list[EthashResult]:
        dataset = self.dataset
        if dataset is not None:
            return dataset.hash_packed(records, count)
        return self._caches.get(self.seed_epoch, self.size_epoch).hash_packed(records, count)


class EpochHashers:
    """One pool's hashers, caches and (optionally) datasets, by epoch pair."""

    log = Logger()

    def __init__(
        self, pool_name: str, run: Run, dataset: bool = False, caches: EpochCaches | None = None
    ) -> None:
        self._pool_name = pool_name
        self._run = run
        self._want_dataset = dataset
        self.caches = caches if caches is not None else EpochCaches(limit=2)
        self._hashers: dict[tuple[int, int], EpochHasher] = {}
        self._preparing: dict[tuple[int, int], defer.Deferred[Any]] = {}
        self._dataset_key: tuple[int, int] | None = None
        self._generating: EthashDataset | None = None

    def hasher(self, work: EthWork) -> EpochHasher:
        key = (work.seed_epoch, work.size_epoch)
        hasher = self._hashers.get(key)
        if hasher is None:
            hasher = self._hashers[key] = EpochHasher(self.caches, *key)
            if len(self._hashers) > 4:  # epochs long gone: their datasets' memory goes too
                del self._hashers[next(iter(self._hashers))]
        return hasher

    def prepare(self, work: EthWork, activation: int | None) -> None:
        """Have the caches of ``work``'s epoch, and of the next when near, built in
        the hashing threads; start the dataset of ``work``'s epoch if wanted."""
        self._build((work.seed_epoch, work.size_epoch))
        etchash = activation is not None and work.height >= activation
        length = ETCHASH_EPOCH_LENGTH if etchash else EPOCH_LENGTH
        ahead = epochs_for(work.height + PREPARE_AHEAD, activation)
        if ahead != (work.seed_epoch, work.size_epoch) or (work.height % length) >= length - PREPARE_AHEAD:
            self._build(ahead)
        if self._want_dataset:
            self._start_dataset(self.hasher(work))

    def _build(self, key: tuple[int, int]) -> defer.Deferred[Any]:
        if key in self._preparing:
            return self._preparing[key]
        if self.caches.peek(*key) is not None:
            return defer.succeed(None)
        self.log.info(
            "pool {pool}: building the ethash cache of epoch {seed_epoch} (sizes of epoch {size_epoch})",
            pool=self._pool_name,
            seed_epoch=key[0],
            size_epoch=key[1],
        )
        building = self._run(self.caches.get, *key)
        self._preparing[key] = building

        def built(result: object) -> None:
            del self._preparing[key]
            if isinstance(result, Failure):
                self.log.failure("pool {pool}: ethash cache not built", result, pool=self._pool_name)

        building.addBoth(built)
        return building

    def _start_dataset(self, hasher: EpochHasher) -> None:
        key = (hasher.seed_epoch, hasher.size_epoch)
        if self._dataset_key == key or hasher.dataset is not None:
            return
        self._dataset_key = key
        self._generating = None

        async def generate() -> None:
            await self._build(key)
            cache: EthashCache = await self._run(self.caches.get, *key)
            dataset = EthashDataset(cache)
            self._generating = dataset
            self.log.info(
                "pool {pool}: generating the ethash dataset of epoch {epoch} ({size} bytes)",
                pool=self._pool_name,
                epoch=key,
                size=dataset.size,
            )
            for begin, end in dataset.chunks(DATASET_CHUNK):
                if self._generating is not dataset:
                    dataset.close()
                    return  # a newer epoch's began
                await self._run(dataset.generate, begin, end)
            hasher.dataset = dataset
            self.log.info(
                "pool {pool}: the ethash dataset of epoch {epoch} is in use", pool=self._pool_name, epoch=key
            )

        background(f"pool {self._pool_name}: ethash dataset", generate())
