"""Block candidates for the tests that record blocks with the real ShareRecorder."""

from __future__ import annotations

from nomp.candidate import BlockCandidate

REWARD = 1_250_000_000


def candidate(
    block_hash: str,
    height: int,
    worker: str,
    found_at: float,
    txid: str = "",
    reward: int = REWARD,
    solo: bool = False,
    network_difficulty: float = 0.0,
) -> BlockCandidate:
    """A candidate as the share pipeline hands it on (the payload is not recorded)."""
    return BlockCandidate(
        block_hash=block_hash,
        coinbase_txid=txid,
        height=height,
        worker=worker,
        reward=reward,
        solo=solo,
        network_difficulty=network_difficulty,
        found_at=found_at,
        payload=b"",
    )
