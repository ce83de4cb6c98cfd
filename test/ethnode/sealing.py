"""Seals checked and found with chfast's ethash (PyPI ``ethash``), never with
nomp's own: the dev chain's verdict must not come from the code under test.

PyPI ``ethash`` keeps one light cache per epoch for the whole process, so
the first call at an epoch builds it (about 1.5 s at epoch 0) and every
dev chain of a test run shares it afterwards.
"""

from __future__ import annotations

import ethash

EPOCH_LENGTH = 30_000  # ethash's; the dev chain never reaches ECIP-1099's 60,000-block epochs
TWO_256 = 2**256


def epoch_of(number: int) -> int:
    """The ethash epoch of block ``number``."""
    return number // EPOCH_LENGTH


def seed_hash(number: int) -> bytes:
    """The seed hash of block ``number``'s epoch: Keccak-256 applied once per
    epoch to 32 zero bytes, as geth's getWork reports it."""
    seed = bytes(32)
    for _ in range(epoch_of(number)):
        seed = ethash.keccak_256(seed)
    return seed


def boundary(difficulty: int) -> int:
    """The largest final hash that meets ``difficulty``: 2^256 // difficulty,
    clipped to 256 bits (difficulty 1 accepts every hash)."""
    return min(TWO_256 // difficulty, TWO_256 - 1)


def seal_is_valid(number: int, header_hash: bytes, nonce: int, mix_digest: bytes, difficulty: int) -> bool:
    """Whether ``nonce`` and ``mix_digest`` seal the header of seal hash
    ``header_hash`` at ``difficulty``: chfast's hashimoto must give this mix
    digest and a final hash under the boundary."""
    if len(header_hash) != 32 or len(mix_digest) != 32 or difficulty < 1:
        return False
    target = boundary(difficulty).to_bytes(32, "big")
    return bool(ethash.verify(epoch_of(number), header_hash, mix_digest, nonce, target))


def search_nonce(number: int, header_hash: bytes, difficulty: int, start: int = 0) -> tuple[int, bytes]:
    """The first nonce from ``start`` on that seals the header, and its mix
    digest: a Python miner, about 6 ms per hash, so ``difficulty`` hashes on
    average."""
    epoch = epoch_of(number)
    target = boundary(difficulty)
    nonce = start
    while True:
        final_hash, mix_digest = ethash.hash(epoch, header_hash, nonce)
        if int.from_bytes(final_hash, "big") <= target:
            return nonce, mix_digest
        nonce = (nonce + 1) % 2**64
