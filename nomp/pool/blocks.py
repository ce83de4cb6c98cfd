"""Block candidates: serialise, submit to every daemon, read every answer."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

from nomp.candidate import BlockCandidate
from nomp.daemon import DaemonError, DaemonGroup, RPCError, SubmitResult
from nomp.daemon.errors import RPC_INVALID_ADDRESS_OR_KEY

BLOCK_RESULTS = (
    "accepted",
    "rejected",
    "error",
)  # what became of candidates, as PoolService.blocks counts them


# submitblock's answers (BIP 22) for a block the node may keep though its main chain does not hold it
NODE_HAS_IT = frozenset({"duplicate", "inconclusive", "duplicate-inconclusive"})


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    """What became of a block candidate."""

    block_hash: str
    height: int
    results: tuple[SubmitResult, ...]
    accepted: bool  # a daemon took it and it is in the main chain
    coinbase_txid: str | None

    @property
    def reached_a_node(self) -> bool:
        """A daemon took the block as valid, or has it already (``duplicate``), or keeps it
        off the main chain (``inconclusive``): the node may hold it though it is not
        ``accepted``."""
        return any(r.accepted or (r.error is None and r.result in NODE_HAS_IT) for r in self.results)

    @property
    def reason(self) -> str | None:
        """Why the block is not in the chain (the first daemon's word), or None."""
        if self.accepted:
            return None
        for result in self.results:
            if not result.accepted:
                return result.describe()
        return "not in the main chain"


class BlockSubmitter:
    """Sends found blocks to a pool's daemons and confirms them."""

    log = Logger()

    def __init__(self, daemons: DaemonGroup, pool: str = "-") -> None:
        self._daemons = daemons
        self._pool = pool  # named in every line: one process may run many pools

    async def submit(self, candidate: BlockCandidate) -> BlockOutcome:
        """Submit a block candidate (its payload is the serialised block).

        Every daemon gets it. ``null`` from any daemon is followed by a
        check that the block is in that daemon's main chain; ``duplicate``,
        ``inconclusive`` and each rejection reason are kept and logged with
        the block hash.
        """
        hash_hex = candidate.block_hash
        height = candidate.height
        results = tuple(await self._daemons.submit_block(candidate.payload.hex()))
        accepted = False
        coinbase_txid = None
        if any(r.accepted for r in results):
            accepted, coinbase_txid = await self._confirm(hash_hex)
        outcome = BlockOutcome(hash_hex, height, results, accepted, coinbase_txid)
        answers = ", ".join(f"{r.url}: {r.describe()}" for r in results)
        if accepted:
            self.log.info(
                "pool {pool}: block {block_hash} at height {height} accepted ({answers})",
                pool=self._pool,
                block_hash=hash_hex,
                height=height,
                answers=answers,
            )
        else:
            self.log.warn(
                "pool {pool}: block {block_hash} at height {height} not accepted: {reason} ({answers})",
                pool=self._pool,
                block_hash=hash_hex,
                height=height,
                reason=outcome.reason,
                answers=answers,
            )
        return outcome

    async def known(self, block_hash: str) -> bool:
        """Whether the node has the block (in its main chain or on a side
        branch: it was accepted; the payments orphan a block off the main
        chain). False only when the node answers that it has no such block;
        DaemonError when it cannot say."""
        try:
            block = await self._daemons.call("getblock", block_hash, 1)
        except RPCError as e:
            if e.code == RPC_INVALID_ADDRESS_OR_KEY:
                return False
            raise
        return isinstance(block, dict) and isinstance(block.get("confirmations"), int)

    async def _confirm(self, hash_hex: str) -> tuple[bool, str | None]:
        """Whether the block is in the main chain, and its coinbase txid."""
        try:
            block = await self._daemons.call("getblock", hash_hex)
        except DaemonError as e:
            self.log.warn(
                "pool {pool}: cannot confirm block {block_hash}: {error}",
                pool=self._pool,
                block_hash=hash_hex,
                error=e,
            )
            return False, None
        if not isinstance(block, dict):
            return False, None
        in_main_chain = isinstance(block.get("confirmations"), int) and block["confirmations"] >= 1
        txs = block.get("tx")
        coinbase = txs[0] if isinstance(txs, list) and txs and isinstance(txs[0], str) else None
        return in_main_chain, coinbase
