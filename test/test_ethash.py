"""Ethash and etchash in C: known answers, agreement with chfast's ethash
(PyPI ``ethash``), the dataset path, real Ethereum Classic blocks on both
sides of ECIP-1099."""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import random
import threading
from pathlib import Path
from typing import Any

import ethash as reference
from twisted.trial.unittest import SynchronousTestCase

from nomp.hashing._native import lib
from nomp.hashing.ethash import (
    CLASSIC_ECIP1099_BLOCK,
    MAX_EPOCH,
    MORDOR_ECIP1099_BLOCK,
    EpochCaches,
    EthashCache,
    EthashDataset,
    EthashResult,
    boundary,
    cache_size,
    caches,
    claimed_final_hash,
    dataset_size,
    epochs_for,
    ethash_hash,
    implementation,
    keccak_256,
    keccak_512,
    seed_hash,
    verify,
)

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


def load(name: str) -> Any:
    with open(VECTORS / name) as f:
        return json.load(f)


@functools.lru_cache(maxsize=4)
def built(seed_epoch: int, size_epoch: int) -> EthashCache:
    """Caches shared by the tests of this module: each takes up to seconds to build."""
    return EthashCache.build(seed_epoch, size_epoch)


# --- a minimal RLP, enough for block headers (a flat list of byte strings) ---


def rlp_length_prefix(length: int, short: int) -> bytes:
    if length < 56:
        return bytes([short + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([short + 55 + len(size)]) + size


def rlp_encode(items: list[bytes]) -> bytes:
    body = b""
    for item in items:
        if len(item) == 1 and item[0] < 0x80:
            body += item
        else:
            body += rlp_length_prefix(len(item), 0x80) + item
    return rlp_length_prefix(len(body), 0xC0) + body


def rlp_decode_list(data: bytes) -> list[bytes]:
    """The byte strings of an RLP list of byte strings."""

    def read_length(position: int, short: int) -> tuple[int, int]:
        first = data[position]
        if first - short < 56:
            return first - short, position + 1
        size = first - short - 55
        return int.from_bytes(data[position + 1 : position + 1 + size], "big"), position + 1 + size

    assert data[0] >= 0xC0
    length, position = read_length(0, 0xC0)
    assert position + length == len(data)
    items = []
    while position < len(data):
        if data[position] < 0x80:
            items.append(data[position : position + 1])
            position += 1
        else:
            assert data[position] < 0xC0, "nested lists are not in headers"
            length, position = read_length(position, 0x80)
            items.append(data[position : position + length])
            position += length
    return items


def rlp_int(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


ETC_SEAL_FIELDS = (
    *("parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot", "receiptsRoot", "logsBloom"),
    *("difficulty", "number", "gasLimit", "gasUsed", "timestamp", "extraData"),
)


def etc_seal_hash(block: dict[str, Any]) -> bytes:
    """Keccak-256 of the RLP of the 13 pre-London fields, integers minimal big-endian."""
    fields = []
    for name in ETC_SEAL_FIELDS:
        value = block[name]
        if name == "number":
            fields.append(rlp_int(value))
        elif name in ("difficulty", "gasLimit", "gasUsed", "timestamp"):
            fields.append(rlp_int(int(value, 16)))
        else:
            fields.append(bytes.fromhex(value[2:]))
    return keccak_256(rlp_encode(fields))


# --- the size formulas, written again in Python from the specification ---


def is_prime(n: int) -> bool:
    if n < 2 or n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, int(n**0.5) + 1, 2))


def spec_size(initial: int, growth: int, unit: int, epoch: int) -> int:
    size = initial + growth * epoch - unit
    while not is_prime(size // unit):
        size -= 2 * unit
    return size


class KeccakTests(SynchronousTestCase):
    """Keccak with Ethereum's (original) padding."""

    def test_known_answers(self) -> None:
        """The empty string and 32 zero bytes give their published digests."""
        self.assertEqual(
            keccak_256(b"").hex(), "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        )
        self.assertEqual(
            keccak_512(b"").hex(),
            "0eab42de4c3ceb9235fc91acffe746b29c29a8c366b7c60e4e67c466f36a4304"
            "c00fa9caf9d87976ba469bcbe06713b435f091ef2769fb160cdab33d3670680e",
        )
        self.assertEqual(
            keccak_256(bytes(32)).hex(), "290decd9548b62a8d60345a988386fc84ba6bc95484008f6362f93160ef3e563"
        )

    def test_not_sha3(self) -> None:
        """The padding is Keccak's, not SHA-3's: the digests differ from hashlib's sha3."""
        self.assertNotEqual(keccak_256(b"nomp"), hashlib.sha3_256(b"nomp").digest())
        self.assertNotEqual(keccak_512(b"nomp"), hashlib.sha3_512(b"nomp").digest())

    def test_agrees_with_reference(self) -> None:
        """Every length around both rates (72 and 136 bytes) and a few long inputs match PyPI ethash."""
        rng = random.Random(11)
        for length in [*range(0, 300), 1000, 4096, 65537]:
            data = rng.randbytes(length)
            self.assertEqual(keccak_256(data), reference.keccak_256(data), length)
            self.assertEqual(keccak_512(data), reference.keccak_512(data), length)


class EpochTests(SynchronousTestCase):
    """Epochs, seeds and sizes."""

    def test_sizes_of_epoch_zero(self) -> None:
        """Epoch 0 has the sizes of Ethereum's PoW test vectors."""
        vector = load("ethash_tests.json")["first"]
        self.assertEqual(cache_size(0), vector["cache_size"])
        self.assertEqual(dataset_size(0), vector["full_size"])

    def test_sizes_follow_the_specification(self) -> None:
        """Sizes equal a Python transcription of the specification's prime search."""
        for epoch in (0, 1, 2, 100, 250, 300, 333, 400, 500, 2047, 4000):
            self.assertEqual(cache_size(epoch), spec_size(2**24, 2**17, 64, epoch), epoch)
            self.assertEqual(dataset_size(epoch), spec_size(2**30, 2**23, 128, epoch), epoch)

    def test_seed_hash(self) -> None:
        """The seed of epoch n is Keccak-256 applied n times to 32 zero bytes."""
        self.assertEqual(seed_hash(0), bytes(32))
        seed = bytes(32)
        for epoch in range(1, 40):
            seed = keccak_256(seed)
            self.assertEqual(seed_hash(epoch), seed)

    def test_epochs_for(self) -> None:
        """Before ECIP-1099 both epochs are block // 30000; from it the seed epoch is twice block // 60000."""
        self.assertEqual(epochs_for(0, None), (0, 0))
        self.assertEqual(epochs_for(29_999, None), (0, 0))
        self.assertEqual(epochs_for(30_000, None), (1, 1))
        self.assertEqual(epochs_for(15_000_000, None), (500, 500))
        self.assertEqual(epochs_for(10_000_000, CLASSIC_ECIP1099_BLOCK), (333, 333))
        self.assertEqual(epochs_for(CLASSIC_ECIP1099_BLOCK - 1, CLASSIC_ECIP1099_BLOCK), (389, 389))
        self.assertEqual(epochs_for(CLASSIC_ECIP1099_BLOCK, CLASSIC_ECIP1099_BLOCK), (390, 195))
        self.assertEqual(epochs_for(15_000_000, CLASSIC_ECIP1099_BLOCK), (500, 250))
        self.assertEqual(epochs_for(MORDOR_ECIP1099_BLOCK - 1, MORDOR_ECIP1099_BLOCK), (83, 83))
        self.assertEqual(epochs_for(MORDOR_ECIP1099_BLOCK, MORDOR_ECIP1099_BLOCK), (84, 42))
        self.assertRaises(ValueError, epochs_for, -1, None)

    def test_epoch_range(self) -> None:
        """Epochs outside 0..MAX_EPOCH are refused before reaching C."""
        for bad in (-1, MAX_EPOCH + 1):
            self.assertRaises(ValueError, seed_hash, bad)
            self.assertRaises(ValueError, cache_size, bad)
            self.assertRaises(ValueError, dataset_size, bad)
            self.assertRaises(ValueError, EthashCache.build, bad, 0)

    def test_boundary(self) -> None:
        """A share of difficulty d must hash at or below 2^256 // d."""
        self.assertEqual(boundary(1), 2**256 - 1)
        self.assertEqual(boundary(2**32), 2**224)
        self.assertRaises(ValueError, boundary, 0)
        result = EthashResult(bytes(32), (2**224).to_bytes(32, "big"))
        self.assertTrue(result.meets(boundary(2**32)))
        self.assertFalse(result.meets(boundary(2**32) - 1))


class VectorTests(SynchronousTestCase):
    """Ethereum's PoWTests/ethash_tests.json, from the header's RLP on."""

    def test_vectors(self) -> None:
        """Cache digest, header hash, mix digest and result of both vectors."""
        vectors = load("ethash_tests.json")
        self.assertEqual(len(vectors), 2)
        cache = built(0, 0)
        for name, vector in vectors.items():
            fields = rlp_decode_list(bytes.fromhex(vector["header"]))
            self.assertEqual(len(fields), 15, name)
            number = int.from_bytes(fields[8], "big")
            self.assertEqual(epochs_for(number, None), (0, 0), name)
            self.assertEqual(fields[13].hex(), vector["mixHash"], name)
            self.assertEqual(fields[14].hex(), vector["nonce"], name)
            header_hash = keccak_256(rlp_encode(fields[:13]))
            self.assertEqual(header_hash.hex(), vector["header_hash"], name)
            self.assertEqual(seed_hash(0).hex(), vector["seed"], name)
            self.assertEqual(cache.cache_size, vector["cache_size"], name)
            self.assertEqual(cache.dataset_size, vector["full_size"], name)
            self.assertEqual(cache.digest().hex(), vector["cache_hash"], name)
            nonce = int(vector["nonce"], 16)
            result = cache.hash(header_hash, nonce)
            self.assertEqual(result.mix_digest.hex(), vector["mixHash"], name)
            self.assertEqual(result.final_hash.hex(), vector["result"], name)
            self.assertEqual(ethash_hash(0, 0, header_hash, nonce), result, name)
            self.assertTrue(cache.verify(header_hash, nonce, result.mix_digest, result.value), name)
            self.assertFalse(cache.verify(header_hash, nonce, result.mix_digest, result.value - 1), name)
            self.assertFalse(cache.verify(header_hash, nonce, bytes(32), 2**256 - 1), name)
            self.assertEqual(claimed_final_hash(header_hash, nonce, result.mix_digest), result.final_hash)
            self.assertNotEqual(claimed_final_hash(header_hash, nonce, bytes(32)), result.final_hash)
            self.assertRaises(ValueError, claimed_final_hash, header_hash, nonce, bytes(31))
            self.assertFalse(cache.verify(header_hash, nonce, bytes(31), 2**256 - 1), name)

    def test_small_hashimoto(self) -> None:
        """go-ethereum's TestHashimoto (a 1024-byte cache from a zero seed, a 32 KiB dataset),
        checked on the digest's and result's leading and trailing bytes as the reference quotes them."""
        cache = EthashCache(bytes(32), 1024, 32 * 1024)
        header = bytes.fromhex("c9149cc0386e689d789a1c2f3d5d169a61a6218ed30e74414dc736e442ef3d1f")
        for result in (cache.hash(header, 0), self.full(cache).hash(header, 0)):
            self.assertTrue(result.mix_digest.hex().startswith("e4073cff"))
            self.assertTrue(result.mix_digest.hex().endswith("9800"))
            self.assertTrue(result.final_hash.hex().startswith("d3539235"))
            self.assertTrue(result.final_hash.hex().endswith("a557"))

    def full(self, cache: EthashCache) -> EthashDataset:
        dataset = EthashDataset(cache)
        self.addCleanup(dataset.close)
        dataset.generate(0, dataset.items)
        return dataset


class ReferenceAgreementTests(SynchronousTestCase):
    """Light hashes agree with chfast's ethash (seed epoch = size epoch)."""

    def test_epochs(self) -> None:
        """Random headers and nonces at epochs 0, 1, 100, 300 and 400, singly and in batches."""
        rng = random.Random(5)
        for epoch in (0, 1, 100, 300, 400):
            cache = built(epoch, epoch)
            self.assertEqual(cache.cache_size, cache_size(epoch))
            work = [(rng.randbytes(32), rng.getrandbits(64)) for _ in range(6)]
            work.append((rng.randbytes(32), 2**64 - 1))
            batch = cache.hash_many(work)
            for (header_hash, nonce), result in zip(work, batch, strict=True):
                final_hash, mix_digest = reference.hash(epoch, header_hash, nonce)
                self.assertEqual(result, (mix_digest, final_hash), (epoch, nonce))
                self.assertEqual(cache.hash(header_hash, nonce), result)
                target = result.value.to_bytes(32, "big")
                self.assertTrue(reference.verify(epoch, header_hash, result.mix_digest, nonce, target))

    def test_batch_sizes(self) -> None:
        """Every batch size from 0 to 19 gives the hashes of one-at-a-time calls (spare lanes discarded)."""
        cache = built(0, 0)
        rng = random.Random(6)
        work = [(rng.randbytes(32), rng.getrandbits(64)) for _ in range(19)]
        singles = [cache.hash(h, n) for h, n in work]
        for size in range(20):
            self.assertEqual(cache.hash_many(work[:size]), singles[:size], size)

    def test_bad_input(self) -> None:
        """Header hashes of the wrong length and nonces outside 64 bits are refused."""
        cache = EthashCache(bytes(32), 1024, 32 * 1024)
        self.assertRaises(ValueError, cache.hash, bytes(31), 0)
        self.assertRaises(ValueError, cache.hash, bytes(32), -1)
        self.assertRaises(ValueError, cache.hash, bytes(32), 2**64)
        self.assertRaises(ValueError, cache.hash_packed, bytes(41), 1)
        self.assertRaises(ValueError, EthashCache, bytes(31), 1024, 32 * 1024)
        self.assertRaises(ValueError, EthashCache, bytes(32), 1000, 32 * 1024)
        self.assertRaises(ValueError, EthashCache, bytes(32), 1024, 1000)
        self.assertRaises(ValueError, cache.items, 0, cache.dataset_items + 1)


class KernelTests(SynchronousTestCase):
    """Every compiled copy of the loops (AVX-512, AVX2, portable) this CPU runs gives the same answers."""

    def test_every_kernel(self) -> None:
        """Light hashes, dataset items and full hashes agree with chfast's ethash and each other."""
        self.addCleanup(lib.nomp_ethash_use_kernels, b"")
        best = implementation()
        rng = random.Random(8)
        cache = built(0, 0)
        work = [(rng.randbytes(32), rng.getrandbits(64)) for _ in range(5)]
        expected = [reference.hash(0, h, n)[::-1] for h, n in work]
        small = EthashCache(rng.randbytes(32), 64 * 1021, 128 * 4099)
        dataset = EthashDataset(small)
        self.addCleanup(dataset.close)
        dataset.generate(0, dataset.items)
        small_items = dataset.read(0, dataset.items)
        small_light = small.hash_many(work)
        ran = []
        for name in ("portable", "avx2", "avx512f"):
            if lib.nomp_ethash_use_kernels(name.encode()) != 0:
                continue
            ran.append(implementation())
            self.assertEqual(cache.hash_many(work), expected, name)
            self.assertEqual(cache.hash(*work[0]), expected[0], name)
            self.assertEqual(small.items(0, small.dataset_items), small_items, name)
            self.assertEqual(dataset.hash_many(work), small_light, name)
        self.assertIn("portable", ran)
        self.assertIn(best, ran)
        self.assertEqual(lib.nomp_ethash_use_kernels(b"sse9"), -errno.ENOTSUP)


class DatasetTests(SynchronousTestCase):
    """The full dataset: generated in chunks, read by hashimoto-full.

    A real dataset is 1 GiB or more (minutes to generate), so the real epoch-0
    dataset is checked on a prefix only, against items computed one by one
    on the light path; hashimoto-full is checked against hashimoto-light on
    complete datasets of small, made-up sizes, which run the same C code."""

    def test_chunks_equal_light_items(self) -> None:
        """Items of the epoch-0 dataset generated in uneven chunks equal the light path's, item by item."""
        cache = built(0, 0)
        dataset = EthashDataset(cache)
        self.addCleanup(dataset.close)
        self.assertEqual(dataset.items, 1073739904 // 64)
        for begin, end in ((0, 1), (1, 17), (17, 40), (100, 1000), (40, 100)):
            dataset.generate(begin, end)
        self.assertEqual(dataset.generated, 1000)
        self.assertFalse(dataset.complete)
        singles = b"".join(cache.items(i, i + 1) for i in range(1000))
        self.assertEqual(dataset.read(0, 1000), singles)
        self.assertEqual(cache.items(0, 1000), singles)
        last = dataset.items - 20
        dataset.generate(last, dataset.items)
        self.assertEqual(dataset.read(last, dataset.items), cache.items(last, dataset.items))
        self.assertEqual(dataset.read(1000, 1001), bytes(64))
        self.assertRaises(ValueError, dataset.hash, bytes(32), 0)

    def test_full_equals_light(self) -> None:
        """Over complete small datasets, hashimoto-full gives hashimoto-light's mix and result."""
        rng = random.Random(7)
        for cache_bytes, dataset_bytes in ((1024, 32 * 1024), (64 * 1021, 128 * 4099), (64 * 7, 128 * 3)):
            cache = EthashCache(rng.randbytes(32), cache_bytes, dataset_bytes)
            dataset = EthashDataset(cache)
            self.addCleanup(dataset.close)
            for begin, end in dataset.chunks(1000):
                dataset.generate(begin, end)
            self.assertTrue(dataset.complete)
            self.assertEqual(dataset.chunks(1000), [])
            work = [(rng.randbytes(32), rng.getrandbits(64)) for _ in range(11)]
            light = cache.hash_many(work)
            self.assertEqual(dataset.hash_many(work), light)
            self.assertEqual(dataset.hash(*work[0]), light[0])
            self.assertTrue(dataset.verify(*work[0], light[0].mix_digest, light[0].value))

    def test_chunks(self) -> None:
        """chunks() lists what is left to generate, cut to size."""
        dataset = EthashDataset(EthashCache(bytes(32), 1024, 128 * 10))
        self.addCleanup(dataset.close)
        self.assertEqual(dataset.chunks(8), [(0, 8), (8, 16), (16, 20)])
        dataset.generate(3, 9)
        self.assertEqual(dataset.chunks(4), [(0, 3), (9, 13), (13, 17), (17, 20)])
        dataset.close()
        self.assertRaises(ValueError, dataset.generate, 0, 1)


class EtchashTests(SynchronousTestCase):
    """Two real Ethereum Classic blocks, before and after ECIP-1099."""

    def check_block(self, block: dict[str, Any]) -> EthashResult:
        seed_epoch, size_epoch = epochs_for(block["number"], CLASSIC_ECIP1099_BLOCK)
        header_hash = etc_seal_hash(block)
        nonce = int(block["nonce"], 16)
        mix_digest = bytes.fromhex(block["mixHash"][2:])
        target = boundary(int(block["difficulty"], 16))
        cache = built(seed_epoch, size_epoch)
        result = cache.hash(header_hash, nonce)
        self.assertEqual(result.mix_digest, mix_digest)
        self.assertTrue(result.meets(target))
        self.assertTrue(verify(seed_epoch, size_epoch, header_hash, nonce, mix_digest, target))
        self.assertFalse(cache.verify(header_hash, nonce ^ 1, mix_digest, target))
        self.assertFalse(cache.verify(header_hash, nonce ^ (1 << 63), mix_digest, target))
        return result

    def test_before_ecip1099(self) -> None:
        """Block 10,000,000 (epoch 333 of 30,000 blocks) seals; chfast's ethash agrees."""
        block = load("etc_headers.json")["blocks"][0]
        self.assertEqual((block["number"], block["ecip1099"]), (10_000_000, False))
        result = self.check_block(block)
        final_hash, mix_digest = reference.hash(333, etc_seal_hash(block), int(block["nonce"], 16))
        self.assertEqual(result, (mix_digest, final_hash))

    def test_after_ecip1099(self) -> None:
        """Block 15,000,000 seals with the seed of epoch 500 and the sizes of 60,000-block epoch 250,
        and with neither epoch alone."""
        block = load("etc_headers.json")["blocks"][1]
        self.assertEqual((block["number"], block["ecip1099"]), (15_000_000, True))
        self.assertEqual(epochs_for(block["number"], CLASSIC_ECIP1099_BLOCK), (500, 250))
        self.check_block(block)
        header_hash = etc_seal_hash(block)
        nonce = int(block["nonce"], 16)
        mix_digest = bytes.fromhex(block["mixHash"][2:])
        self.assertNotEqual(built(250, 250).hash(header_hash, nonce).mix_digest, mix_digest)
        self.assertNotEqual(built(500, 500).hash(header_hash, nonce).mix_digest, mix_digest)


class EpochCachesTests(SynchronousTestCase):
    """The shelf of built caches."""

    def test_least_recently_used_goes(self) -> None:
        """At most `limit` caches stay; the one used least recently is dropped."""
        shelf = EpochCaches(limit=2)
        zero, one = built(0, 0), built(1, 1)
        shelf.put(zero)
        shelf.put(one)
        self.assertIs(shelf.get(0, 0), zero)
        shelf.put(built(100, 100))
        self.assertEqual(shelf.keys(), [(0, 0), (100, 100)])
        self.assertIsNone(shelf.peek(1, 1))
        self.assertIs(shelf.peek(0, 0), zero)
        self.assertRaises(ValueError, shelf.put, EthashCache(bytes(32), 1024, 32 * 1024))
        self.assertRaises(ValueError, EpochCaches, 0)

    def test_one_build_for_concurrent_gets(self) -> None:
        """Threads asking for the same missing cache get the one object built once."""
        shelf = EpochCaches(limit=2)
        got: list[EthashCache] = []
        threads = [threading.Thread(target=lambda: got.append(shelf.get(1, 1))) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(len(got), 3)
        self.assertTrue(got[0] is got[1] is got[2])
        self.assertEqual(shelf.keys(), [(1, 1)])

    def test_module_shelf(self) -> None:
        """ethash_hash keeps at most two caches in the module's shelf."""
        self.assertEqual(caches.limit, 2)

    def test_build_releases_the_gil(self) -> None:
        """While a thread builds a cache in C, another Python thread keeps running."""
        ticks = [0]
        during: list[int] = []
        done = threading.Event()

        def build() -> None:
            before = ticks[0]
            EthashCache.build(2, 2)
            # Had the call kept the GIL, the counting thread could not have
            # run between these two reads.
            during.append(ticks[0] - before)
            done.set()

        worker = threading.Thread(target=build)
        worker.start()
        while not done.is_set():
            ticks[0] += 1
        worker.join()
        self.assertGreater(during[0], 10_000)
