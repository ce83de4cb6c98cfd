"""Ethash and etchash: the typed face of their C code in ``_native``.

Ethash hashes a 32-byte header hash and a 64-bit nonce over a dataset that
depends on the epoch; a verifier recomputes the few dataset items a hash
reads from a light cache (tens of MiB, seconds to build) instead of holding
the whole dataset (GiBs). Etchash (Ethereum Classic's ECIP-1099) is the same
algorithm with 60,000-block epochs from its activation block, where epoch E
takes its seed from the 30,000-block epoch 2E and its cache and dataset
sizes from epoch E. So everything here takes two epochs: the *seed epoch*
and the *size epoch* (equal under plain ethash); :func:`epochs_for` gives
them for a block.

Everything is synchronous. Building a cache takes seconds, generating a
dataset minutes, a light hash a millisecond or two: call them from the
hashing threads, never the reactor thread (the C calls release the GIL).
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from nomp.hashing import _native

if TYPE_CHECKING:
    from nomp.hashing._native import EthashLib

ffi = _native.ffi
lib: EthashLib = _native.lib

__all__ = [
    "CLASSIC_ECIP1099_BLOCK",
    "EPOCH_LENGTH",
    "ETCHASH_EPOCH_LENGTH",
    "MAX_EPOCH",
    "MORDOR_ECIP1099_BLOCK",
    "EpochCaches",
    "EthashCache",
    "EthashDataset",
    "EthashResult",
    "boundary",
    "cache_size",
    "caches",
    "claimed_final_hash",
    "dataset_size",
    "epochs_for",
    "ethash_hash",
    "implementation",
    "keccak_256",
    "keccak_512",
    "seed_hash",
    "verify",
]

EPOCH_LENGTH: Final = 30_000
ETCHASH_EPOCH_LENGTH: Final = 60_000
CLASSIC_ECIP1099_BLOCK: Final = 11_700_000
MORDOR_ECIP1099_BLOCK: Final = 2_520_000
# The C code indexes dataset items with 32-bit words, as the specification
# does; the dataset outgrows that just past epoch 32,000. (Ethereum Classic
# reaches seed epoch 16,383 near block 490 million.)
MAX_EPOCH: Final = 16_383

_RECORD: Final = struct.Struct("<32sQ")
_RESULT_SIZE: Final = int(lib.NOMP_ETHASH_RESULT_SIZE)
_ITEM_SIZE: Final = 64
assert _RECORD.size == lib.NOMP_ETHASH_RECORD_SIZE


def keccak_256(data: bytes) -> bytes:
    """Keccak-256 with the original padding (Ethereum's "sha3"), not SHA3-256."""
    out = ffi.new("unsigned char[32]")
    lib.nomp_keccak256(ffi.from_buffer(data), len(data), out)
    return bytes(out)


def keccak_512(data: bytes) -> bytes:
    """Keccak-512 with the original padding, not SHA3-512."""
    out = ffi.new("unsigned char[64]")
    lib.nomp_keccak512(ffi.from_buffer(data), len(data), out)
    return bytes(out)


def implementation() -> str:
    """Which compiled copy of the ethash loops runs ("avx512f", "avx2" or
    "portable"), for logs and benchmarks."""
    return bytes(ffi.string(lib.nomp_ethash_kernels())).decode()


def _check_epoch(epoch: int) -> None:
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"epoch must be 0 to {MAX_EPOCH}")


def epochs_for(block_number: int, activation: int | None) -> tuple[int, int]:
    """(seed epoch, size epoch) of a block.

    ``activation`` is the ECIP-1099 block of an etchash chain
    (:data:`CLASSIC_ECIP1099_BLOCK`, :data:`MORDOR_ECIP1099_BLOCK`), or None
    for plain ethash. Before it both epochs are ``block_number // 30000``;
    from it the size epoch is ``block_number // 60000`` and the seed epoch
    twice that.
    """
    if block_number < 0:
        raise ValueError("block_number must be >= 0")
    if activation is not None and block_number >= activation:
        epoch = block_number // ETCHASH_EPOCH_LENGTH
        return 2 * epoch, epoch
    epoch = block_number // EPOCH_LENGTH
    return epoch, epoch


def seed_hash(seed_epoch: int) -> bytes:
    """The epoch's seed: Keccak-256 applied ``seed_epoch`` times to 32 zero bytes."""
    _check_epoch(seed_epoch)
    out = ffi.new("unsigned char[32]")
    lib.nomp_ethash_seed_hash(seed_epoch, out)
    return bytes(out)


def cache_size(size_epoch: int) -> int:
    """Bytes of the epoch's light cache."""
    _check_epoch(size_epoch)
    return int(lib.nomp_ethash_cache_size(size_epoch))


def dataset_size(size_epoch: int) -> int:
    """Bytes of the epoch's full dataset."""
    _check_epoch(size_epoch)
    return int(lib.nomp_ethash_dataset_size(size_epoch))


def boundary(difficulty: int) -> int:
    """The highest final hash (as a big-endian integer) a share of ``difficulty`` may have."""
    if difficulty <= 0:
        raise ValueError("difficulty must be > 0")
    return min(2**256 // difficulty, 2**256 - 1)


class EthashResult(NamedTuple):
    """One hash: the mix digest a miner submits beside its nonce, and the
    final hash compared with the share's or the block's boundary."""

    mix_digest: bytes
    final_hash: bytes

    @property
    def value(self) -> int:
        """The final hash as the integer compared with boundaries."""
        return int.from_bytes(self.final_hash, "big")

    def meets(self, target: int) -> bool:
        """Whether the final hash is at or below ``target`` (see :func:`boundary`)."""
        return self.value <= target


def _record(header_hash: bytes, nonce: int) -> bytes:
    if len(header_hash) != 32:
        raise ValueError("header hashes must be 32 bytes")
    try:
        return _RECORD.pack(header_hash, nonce)
    except struct.error:
        raise ValueError("nonces must be 64-bit") from None


def _pack(work: Iterable[tuple[bytes, int]]) -> tuple[bytes, int]:
    records = [_record(header_hash, nonce) for header_hash, nonce in work]
    return b"".join(records), len(records)


_per_thread = threading.local()


def _out(count: int) -> Any:
    """A results buffer reused by the calling thread: with a full dataset a
    hash costs a few microseconds, and Python's share of a call is worth
    keeping below that."""
    buffer = getattr(_per_thread, "out", None)
    if buffer is None or len(buffer) < _RESULT_SIZE * count:
        buffer = ffi.new("unsigned char[]", _RESULT_SIZE * max(count, 16))
        _per_thread.out = buffer
    return buffer


_make_result = EthashResult._make


def _results(out: Any, count: int) -> list[EthashResult]:
    raw = ffi.buffer(out, _RESULT_SIZE * count)[:]
    return [_make_result((raw[i : i + 32], raw[i + 32 : i + 64])) for i in range(0, len(raw), _RESULT_SIZE)]


def _one(out: Any) -> EthashResult:
    raw = ffi.buffer(out, _RESULT_SIZE)[:]
    return _make_result((raw[:32], raw[32:]))


def claimed_final_hash(header_hash: bytes, nonce: int, mix_digest: bytes) -> bytes:
    """The final hash a share has if ``mix_digest`` is its true mix digest:
    Keccak-256(Keccak-512(header hash, nonce), mix digest), no dataset
    reads. A share whose claimed final hash misses its boundary is refused
    at this cost (microseconds instead of a millisecond of light hashing);
    one that meets it still needs the hash to prove the digest."""
    if len(mix_digest) != 32:
        raise ValueError("mix digests must be 32 bytes")
    return _claimed(_record(header_hash, nonce), mix_digest)


def _claimed(record: bytes, mix_digest: bytes) -> bytes:
    out = _out(1)
    lib.nomp_ethash_final_hash(record, mix_digest, out)
    return bytes(ffi.buffer(out, 32))


class EthashCache:
    """The light cache of one (seed, sizes) pair, read-only once built: any
    number of threads may hash with it at once."""

    __slots__ = ("_cache", "cache_size", "dataset_size", "seed", "seed_epoch", "size_epoch")

    def __init__(
        self,
        seed: bytes,
        cache_bytes: int,
        dataset_bytes: int,
        seed_epoch: int | None = None,
        size_epoch: int | None = None,
    ) -> None:
        """Build the cache from ``seed`` (slow): :meth:`build` picks the real
        parameters of an epoch; other sizes are for tests."""
        if len(seed) != 32:
            raise ValueError("the seed must be 32 bytes")
        if cache_bytes <= 0 or cache_bytes % 64 or dataset_bytes <= 0 or dataset_bytes % 128:
            raise ValueError("sizes must be positive multiples of 64 (cache) and 128 (dataset)")
        if max(cache_bytes, dataset_bytes) // _ITEM_SIZE > 2**32 - 1:
            raise ValueError("items are indexed with 32-bit words: sizes too large")
        cache = lib.nomp_ethash_cache_new(seed, cache_bytes, dataset_bytes)
        if cache == ffi.NULL:
            raise MemoryError(f"cannot build an ethash cache of {cache_bytes} bytes")
        self._cache = ffi.gc(cache, lib.nomp_ethash_cache_free, size=cache_bytes)
        self.seed = seed
        self.cache_size = cache_bytes
        self.dataset_size = dataset_bytes
        self.seed_epoch = seed_epoch
        self.size_epoch = size_epoch

    @classmethod
    def build(cls, seed_epoch: int, size_epoch: int) -> EthashCache:
        """The cache of an epoch pair (equal epochs for plain ethash). Takes
        seconds, more at higher epochs: run it in a hashing thread."""
        return cls(
            seed_hash(seed_epoch), cache_size(size_epoch), dataset_size(size_epoch), seed_epoch, size_epoch
        )

    @property
    def dataset_items(self) -> int:
        """Number of 64-byte items in the dataset this cache stands for."""
        return self.dataset_size // _ITEM_SIZE

    def digest(self) -> bytes:
        """Keccak-256 of the cache's bytes (the ``cache_hash`` of Ethereum's tests)."""
        out = ffi.new("unsigned char[32]")
        lib.nomp_keccak256(lib.nomp_ethash_cache_bytes(self._cache), self.cache_size, out)
        return bytes(out)

    def hash(self, header_hash: bytes, nonce: int) -> EthashResult:
        """Hashimoto of one header hash and nonce, dataset items computed from the cache."""
        out = _out(1)
        lib.nomp_ethash_light(self._cache, _record(header_hash, nonce), 1, out)
        return _one(out)

    def hash_many(self, work: Sequence[tuple[bytes, int]]) -> list[EthashResult]:
        """Several (header hash, nonce) pairs in one C call, in order. A batch
        is quicker per hash than one at a time: the dataset reads of up to 8
        hashes are made side by side."""
        records, count = _pack(work)
        return self.hash_packed(records, count)

    def hash_packed(self, records: bytes, count: int) -> list[EthashResult]:
        """``count`` packed 40-byte records: header hash, then the nonce as a
        little-endian uint64 (the form ``struct.pack("<32sQ", ...)`` makes)."""
        if len(records) != count * _RECORD.size:
            raise ValueError("records do not hold count hashes")
        out = _out(count)
        lib.nomp_ethash_light(self._cache, records, count, out)
        return _results(out, count)

    def verify(self, header_hash: bytes, nonce: int, mix_digest: bytes, target: int) -> bool:
        """A share check: the submitted mix digest is the one the nonce gives,
        and the final hash is at or below ``target`` (see :func:`boundary`).
        The final hash is checked first, from the claimed digest (see
        :func:`claimed_final_hash`), so a share that misses its target costs
        no hashimoto."""
        record = _record(header_hash, nonce)
        if len(mix_digest) != 32 or int.from_bytes(_claimed(record, mix_digest), "big") > target:
            return False
        out = _out(1)
        lib.nomp_ethash_light(self._cache, record, 1, out)
        return bool(ffi.buffer(out, 32)[:] == mix_digest)

    def items(self, begin: int, end: int) -> bytes:
        """Dataset items [begin, end), 64 bytes each, computed from the cache."""
        if not 0 <= begin <= end <= self.dataset_items:
            raise ValueError("item range out of the dataset")
        out = ffi.new("unsigned char[]", _ITEM_SIZE * max(end - begin, 1))
        if lib.nomp_ethash_dataset_items(self._cache, begin, end, out) != 0:
            raise ValueError("item range out of the dataset")
        return bytes(ffi.buffer(out, _ITEM_SIZE * (end - begin)))


class EthashDataset:
    """A full dataset, generated from its cache in chunks (so the hashing
    threads can build it beside their share checks) and then hashed
    without recomputing items: one page read per access instead of 512
    cache reads.

    Its memory (about 1 GiB plus 8 MiB per epoch) is committed as the items
    are generated and returned by :meth:`close` or when it is collected.
    """

    __slots__ = ("_complete", "_done", "_lock", "_memory", "cache", "size")

    def __init__(self, cache: EthashCache) -> None:
        size = cache.dataset_size
        memory = lib.nomp_ethash_alloc(size)
        if memory == ffi.NULL:
            raise MemoryError(f"cannot reserve {size} bytes for a dataset")
        free = lib.nomp_ethash_free
        self._memory: Any = ffi.gc(memory, lambda pointer: free(pointer, size), size=size)
        self._lock = threading.Lock()
        self._done: list[tuple[int, int]] = []  # generated ranges, sorted and merged
        self._complete = False  # read without the lock on every hash
        self.cache = cache
        self.size = size

    @property
    def items(self) -> int:
        """Number of 64-byte items in the dataset."""
        return self.size // _ITEM_SIZE

    @property
    def generated(self) -> int:
        """Items generated so far."""
        with self._lock:
            return sum(end - begin for begin, end in self._done)

    @property
    def complete(self) -> bool:
        """Whether every item is generated, so hashing may read it."""
        return self._complete

    def _memory_or_closed(self) -> Any:
        if self._memory is None:
            raise ValueError("the dataset is closed")
        return self._memory

    def _ready(self) -> Any:
        if not self._complete:
            raise ValueError("the dataset is not completely generated")
        return self._memory_or_closed()

    def generate(self, begin: int, end: int) -> None:
        """Compute items [begin, end) from the cache (slow: roughly a
        microsecond or two per item, tens of millions of items). Several
        threads may generate disjoint ranges at once."""
        if not 0 <= begin <= end <= self.items:
            raise ValueError("item range out of the dataset")
        memory = self._memory_or_closed()
        if lib.nomp_ethash_dataset_items(self.cache._cache, begin, end, memory + _ITEM_SIZE * begin) != 0:
            raise ValueError("item range out of the dataset")
        with self._lock:
            self._done = _merged([*self._done, (begin, end)])
            self._complete = self._done == [(0, self.items)]

    def chunks(self, items_per_chunk: int) -> list[tuple[int, int]]:
        """The ranges still to generate, cut into chunks of at most ``items_per_chunk``."""
        if items_per_chunk <= 0:
            raise ValueError("items_per_chunk must be > 0")
        with self._lock:
            done = list(self._done)
        ranges = []
        position = 0
        for begin, end in [*done, (self.items, self.items)]:
            for start in range(position, begin, items_per_chunk):
                ranges.append((start, min(start + items_per_chunk, begin)))
            position = end
        return ranges

    def read(self, begin: int, end: int) -> bytes:
        """A copy of items [begin, end) as generated (zeros where not yet)."""
        if not 0 <= begin <= end <= self.items:
            raise ValueError("item range out of the dataset")
        memory = self._memory_or_closed()
        return bytes(ffi.buffer(memory + _ITEM_SIZE * begin, _ITEM_SIZE * (end - begin)))

    def hash(self, header_hash: bytes, nonce: int) -> EthashResult:
        """Hashimoto of one header hash and nonce over the generated dataset."""
        out = _out(1)
        lib.nomp_ethash_full(self._ready(), self.size, _record(header_hash, nonce), 1, out)
        return _one(out)

    def hash_many(self, work: Sequence[tuple[bytes, int]]) -> list[EthashResult]:
        """Several (header hash, nonce) pairs in one C call, in order."""
        records, count = _pack(work)
        return self.hash_packed(records, count)

    def hash_packed(self, records: bytes, count: int) -> list[EthashResult]:
        """``count`` packed 40-byte records, as :meth:`EthashCache.hash_packed` takes."""
        if len(records) != count * _RECORD.size:
            raise ValueError("records do not hold count hashes")
        out = _out(count)
        lib.nomp_ethash_full(self._ready(), self.size, records, count, out)
        return _results(out, count)

    def verify(self, header_hash: bytes, nonce: int, mix_digest: bytes, target: int) -> bool:
        """The share check of :meth:`EthashCache.verify`, over the dataset."""
        record = _record(header_hash, nonce)
        if len(mix_digest) != 32 or int.from_bytes(_claimed(record, mix_digest), "big") > target:
            return False
        out = _out(1)
        lib.nomp_ethash_full(self._ready(), self.size, record, 1, out)
        return bool(ffi.buffer(out, 32)[:] == mix_digest)

    def close(self) -> None:
        """Give the memory back now (only when no thread hashes with it)."""
        memory, self._memory = self._memory, None
        if memory is not None:
            ffi.release(memory)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(r for r in ranges if r[0] < r[1]):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


class EpochCaches:
    """At most ``limit`` built caches, keyed by (seed epoch, size epoch), the
    least recently used dropped first. :meth:`get` builds a missing one in
    the calling thread (other threads asking for the same one wait for that
    build); the pool builds the next epoch's ahead of time and :meth:`put`
    it here."""

    def __init__(self, limit: int = 2) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._lock = threading.Lock()
        self._caches: OrderedDict[tuple[int, int], EthashCache] = OrderedDict()
        self._building: dict[tuple[int, int], threading.Lock] = {}

    def _lookup(self, key: tuple[int, int]) -> EthashCache | None:
        cache = self._caches.get(key)
        if cache is not None:
            self._caches.move_to_end(key)
        return cache

    def peek(self, seed_epoch: int, size_epoch: int) -> EthashCache | None:
        """The cache if it is built, without building it."""
        with self._lock:
            return self._lookup((seed_epoch, size_epoch))

    def keys(self) -> list[tuple[int, int]]:
        """The (seed epoch, size epoch) pairs held, least recently used first."""
        with self._lock:
            return list(self._caches)

    def put(self, cache: EthashCache) -> None:
        """Hold ``cache`` (built by :meth:`EthashCache.build`), dropping the least recently used."""
        if cache.seed_epoch is None or cache.size_epoch is None:
            raise ValueError("only caches of real epochs (EthashCache.build) are shelved")
        with self._lock:
            self._caches[(cache.seed_epoch, cache.size_epoch)] = cache
            self._caches.move_to_end((cache.seed_epoch, cache.size_epoch))
            while len(self._caches) > self.limit:
                self._caches.popitem(last=False)

    def get(self, seed_epoch: int, size_epoch: int) -> EthashCache:
        """The cache, built now if it is not held (slow)."""
        key = (seed_epoch, size_epoch)
        with self._lock:
            cache = self._lookup(key)
            if cache is not None:
                return cache
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                cache = self._lookup(key)
            if cache is None:
                try:
                    cache = EthashCache.build(seed_epoch, size_epoch)
                finally:
                    with self._lock:
                        self._building.pop(key, None)
                self.put(cache)
            return cache


caches: Final = EpochCaches(limit=2)


def ethash_hash(seed_epoch: int, size_epoch: int, header_hash: bytes, nonce: int) -> EthashResult:
    """(mix digest, final hash) in light mode, with the cache from :data:`caches`
    (built first if missing: seconds)."""
    return caches.get(seed_epoch, size_epoch).hash(header_hash, nonce)


def verify(
    seed_epoch: int, size_epoch: int, header_hash: bytes, nonce: int, mix_digest: bytes, target: int
) -> bool:
    """:meth:`EthashCache.verify` with the cache from :data:`caches`."""
    return caches.get(seed_epoch, size_epoch).verify(header_hash, nonce, mix_digest, target)
