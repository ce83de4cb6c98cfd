"""The Ethereum family's share rules for the share pipeline: ethash in the
hashing threads, the final hash judged against the share's and the
network's boundaries, a block made of the three values ``eth_submitWork``
sends."""

from __future__ import annotations

from collections.abc import Callable

from nomp.candidate import BlockCandidate
from nomp.eth.hasher import EpochHasher, EpochHashers, EthTask
from nomp.eth.shares import EthShare, judge
from nomp.hashing.ethash import EthashResult
from nomp.stratum.session import MinerSession
from nomp.stratum.shares import Verdict


def candidate_payload(nonce: int, header_hash: bytes, mix_digest: bytes) -> bytes:
    """What a candidate carries for ``eth_submitWork``: nonce (8 bytes,
    big-endian), seal hash, mix digest."""
    return nonce.to_bytes(8, "big") + header_hash + mix_digest


def submit_work_params(payload: bytes) -> list[str]:
    """``eth_submitWork``'s params from a candidate's payload."""
    if len(payload) != 72:
        raise ValueError("an Ethereum-family candidate's payload is 72 bytes")
    return ["0x" + payload[:8].hex(), "0x" + payload[8:40].hex(), "0x" + payload[40:].hex()]


class EthShareRules:
    """ShareRules for EthShare and EthashResult (see nomp.stratum.pipeline)."""

    def __init__(self, hashers: EpochHashers, block_reward: Callable[[int], int]) -> None:
        self._hashers = hashers
        self._block_reward = block_reward

    def task(self, share: EthShare) -> tuple[EpochHasher, EthTask]:
        work = share.work
        return self._hashers.hasher(work), EthTask(work.header_hash, share.nonce)

    def judge(self, share: EthShare, hashed: EthashResult) -> Verdict:
        return judge(share, hashed)

    def check_again(self, share: EthShare, session: MinerSession) -> EthShare | None:
        return None  # an extranonce is the connection's for its lifetime

    def candidate(self, share: EthShare, hashed: EthashResult, solo: bool, now: float) -> BlockCandidate:
        work = share.work
        return BlockCandidate(
            block_hash=work.header_hex,  # the node names the block only once it is sealed
            coinbase_txid="",
            height=work.height,
            worker=share.worker,
            reward=self._block_reward(work.height),
            solo=solo,
            network_difficulty=float(work.network_difficulty),
            found_at=now,
            payload=candidate_payload(share.nonce, work.header_hash, hashed.mix_digest),
        )
