"""BlockCandidate: a share that met the network's target, as the pool hands it on.

A leaf, and pure: the share pipeline makes one, the pool records it
(durably, before the node sees it) and submits it, and the recorder closes
the round at its place among the shares.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BlockCandidate:
    """Everything known of a block before any node has answered for it."""

    block_hash: str  # hex, as the node names the block
    coinbase_txid: str  # hex; "" where the chain has no coinbase transaction
    height: int
    worker: str  # the worker name the share was credited to
    reward: int  # base units (satoshis, wei) the pool's payout gets
    solo: bool  # found on a solo port: the finder's alone
    network_difficulty: float  # the network's difficulty in share units (0: unknown)
    found_at: float  # unix seconds (wall clock)
    payload: bytes  # what the coin's submitter sends: the serialised block (Bitcoin family)
