"""Merkle branches for the coinbase position, as Stratum sends them."""

from __future__ import annotations

from collections.abc import Sequence

from nomp.hashing import sha256d


def coinbase_branch(txids: Sequence[bytes]) -> tuple[bytes, ...]:
    """The hashes a miner combines with the coinbase txid to get the root.

    ``txids`` are the other transactions (internal byte order), in block
    order after the coinbase.
    """
    branch: list[bytes] = []
    level: list[bytes | None] = [None, *txids]
    while len(level) > 1:
        branch.append(_known(level[1]))
        if len(level) % 2:
            level.append(level[-1])
        level = [None] + [sha256d(_known(level[i]) + _known(level[i + 1])) for i in range(2, len(level), 2)]
    return tuple(branch)


def root_from_branch(coinbase_txid: bytes, branch: Sequence[bytes]) -> bytes:
    """The merkle root, given the coinbase txid and its branch."""
    node = coinbase_txid
    for step in branch:
        node = sha256d(node + step)
    return node


def merkle_root(txids: Sequence[bytes]) -> bytes:
    """The merkle root of a full list of txids (internal order)."""
    if not txids:
        raise ValueError("no transactions")
    level = list(txids)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def _known(node: bytes | None) -> bytes:
    assert node is not None, "the coinbase placeholder is never hashed"
    return node
