"""The Ethereum family's unlocker, its pure part: what became of a block candidate, what it earned.

The I/O layer reads a candidate from ``<coin>:blocks:candidates``
(``parse_candidate_member``), asks the node for the main-chain blocks at
``heights_to_read`` and the headers of the uncles they list, and passes
them here as plain data (``ChainView``). ``classify`` says what the
candidate is:

- ``Block``: the main chain's block at its height is ours, and earns its
  ``Revenue``;
- ``Uncle``: a main-chain block (its nephew) includes it as an uncle;
- ``Orphan``: neither, and it can no longer become either;
- ``Wait``: not known yet, because the chain is too short to tell, or the
  node left something unanswered. Missing data never makes an orphan: an
  orphan's round is dropped, its miners' work lost.

``stage`` says when a candidate is due for a look (OEP's candidate,
immature and matured stages) and ``split_revenue`` shares a reward among
a round's logins. Nothing here reads a clock, Redis or a node. Amounts
are integers in wei.

Why the candidate's height is searched at that height only, where OEP
searched 16 heights either side: OEP read the height from a separate
``eth_getBlockByNumber("pending")`` call, which may describe other work
than the ``eth_getWork`` answer it mined (go-ethereum#2333). The pool takes
the height from the same ``eth_getWork`` answer as the seal hash (its 4th
element) and checks the seed hash against that height's epoch
(nomp.eth.work), so the height is the one the work was for.

A candidate is known by what it sealed: the seal hash (Keccak-256 of the
header without nonce and mix digest), the nonce and the mix digest. The
chain's block hash covers the nonce and mix too, so the pool cannot know it
in advance. A block matches when its nonce and mix are the candidate's and,
where the I/O layer computed the block's seal hash, that as well. Without
the seal hash, nonce and mix still identify the work: the mix is derived
from the seal hash and the nonce.

The rules (Ethereum's yellow paper, section 11.3, "Reward Application",
and go-ethereum's consensus/ethash; ECIP-1017 for Ethereum Classic):

- an uncle at height u can be included by a nephew at height h only when
  1 <= h - u <= 6 (go-ethereum's verifyUncles: the uncle's parent is one of
  the nephew's 7 ancestors, other than its own parent);
- a block earns R(h) (``EthRewards.block_reward``) plus R(h) / 32 for each
  uncle it includes (``EthRewards.nephew_reward``), plus its transactions'
  fees less the burnt base fee (EIP-1559):
  ``sum(receipt.gasUsed * receipt.effectiveGasPrice) - block.gasUsed * block.baseFeePerGas``,
  which is each transaction's priority fee, gasUsed * (effectiveGasPrice -
  baseFee), summed (the block's gasUsed is its receipts' gasUsed summed);
- an uncle earns (u + 8 - h) * R(h) / 8, and under ECIP-1017 from era 1 on
  R(h) / 32 (``EthRewards.uncle_reward``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Protocol, TypeAlias

from nomp.config.model import (
    DEFAULT_DEPTH,
    DEFAULT_IMMATURE_DEPTH,
    DEFAULT_ORPHAN_SAFETY,
    UNCLE_WINDOW,
    EthCoinConfig,
    EthRewards,
    maturity_problems,
)
from nomp.payments.split import RewardSplit, split_reward

MAX_UNCLES = 2  # a block includes at most two uncles (the yellow paper's ||B_U|| <= 2)
WEI_PER_SHANNON = 10**9  # OEP keeps balances and credits in Shannon (gwei)

_NONCE = re.compile(r"0x[0-9a-f]{16}")
_HASH = re.compile(r"0x[0-9a-f]{64}")
_INTEGER = re.compile(r"[0-9]+")


# -- what the unlocker knows of a candidate ---------------------------------------


@dataclass(frozen=True, slots=True)
class EthCandidate:
    """A block candidate as ``<coin>:blocks:candidates`` holds it (scored by ``height``)."""

    height: int
    nonce: int
    seal_hash: bytes  # the header hash the work was for (eth_getWork's first element)
    mix: bytes
    found_at: int  # unix s
    network_difficulty: int
    round_total: int  # the round's summed share difficulty when it closed
    member: str  # the zset member it was read from, to remove or move it by

    @property
    def nonce_hex(self) -> str:
        """The nonce as OEP writes it, also in the round's key ``<coin>:shares:round<height>:<nonce>``."""
        return f"0x{self.nonce:016x}"


def parse_candidate_member(member: str, height: int) -> EthCandidate:
    """The candidate of a ``<coin>:blocks:candidates`` member scored ``height``:
    ``<nonce>:<seal hash>:<mix>:<unix s>:<network difficulty>:<round total>``,
    hex as 0x and lower-case digits (as OEP's proxy and nomp's recorder write
    them), numbers as decimal digits. ValueError for anything else."""
    if height < 1:
        raise ValueError(f"candidate {member!r}: height {height} is not a block a pool can find")
    parts = member.split(":")
    if len(parts) != 6:
        raise ValueError(
            f"candidate {member!r}: expected <nonce>:<seal hash>:<mix>:<unix s>:<difficulty>:<round total>, "
            f"got {len(parts)} fields"
        )
    nonce, seal_hash, mix, found_at, difficulty, total = parts
    if not _NONCE.fullmatch(nonce):
        raise ValueError(f"candidate {member!r}: the nonce must be 0x and 16 lower-case hex digits")
    for name, value in (("seal hash", seal_hash), ("mix digest", mix)):
        if not _HASH.fullmatch(value):
            raise ValueError(f"candidate {member!r}: the {name} must be 0x and 64 lower-case hex digits")
    for name, value in (("time", found_at), ("network difficulty", difficulty), ("round total", total)):
        if not _INTEGER.fullmatch(value):
            raise ValueError(f"candidate {member!r}: the {name} must be a decimal integer")
    return EthCandidate(
        height=height,
        nonce=int(nonce, 16),
        seal_hash=bytes.fromhex(seal_hash[2:]),
        mix=bytes.fromhex(mix[2:]),
        found_at=int(found_at),
        network_difficulty=int(difficulty),
        round_total=int(total),
        member=member,
    )


# -- what the chain says ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainBlock:
    """A main-chain block, from ``eth_getBlockByNumber`` (and its receipts, for ``fees``)."""

    number: int
    hash: bytes
    parent_hash: bytes  # to tell that the blocks read make one chain
    nonce: int
    mix: bytes  # mixHash
    miner: str  # the coinbase, 0x and 40 hex digits
    uncles: tuple[bytes, ...]  # the uncle hashes it lists
    gas_used: int
    base_fee: int | None  # baseFeePerGas; None on a chain (or before a block) without EIP-1559
    # sum(gasUsed * effectiveGasPrice) over its receipts (before EIP-1559 the
    # transaction's gasPrice is the effective one); None: not read. Only the
    # block that matches a candidate needs it.
    fees: int | None
    seal_hash: bytes | None = None  # None: the I/O layer could not compute it


@dataclass(frozen=True, slots=True)
class ChainUncle:
    """An uncle's header, from ``eth_getUncleByBlockNumberAndIndex(included_in, i)``."""

    number: int
    hash: bytes
    nonce: int
    mix: bytes
    miner: str
    included_in: int  # the nephew's height
    seal_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class ChainView:
    """What the I/O layer read for a candidate at height h, tip t:

    ``blocks``, the main-chain block at each of ``heights_to_read(h, t)``
    (by height; a height left out was not answered), and ``uncles``, the
    headers of the uncles those blocks above h list (one left out was not
    answered). Blocks at other heights are not looked at.
    """

    blocks: Mapping[int, ChainBlock]
    uncles: Sequence[ChainUncle] = ()


def heights_to_read(candidate_height: int, tip: int) -> range:
    """The heights whose main-chain blocks ``classify`` needs: the candidate's and those of
    its possible nephews, up to the tip."""
    return range(candidate_height, min(candidate_height + UNCLE_WINDOW, tip) + 1)


class _Sealed(Protocol):
    @property
    def nonce(self) -> int: ...
    @property
    def mix(self) -> bytes: ...
    @property
    def seal_hash(self) -> bytes | None: ...


def matches(candidate: EthCandidate, sealed: _Sealed) -> bool:
    """Whether a block or uncle is the candidate: the same nonce and mix digest, and the same
    seal hash where the chain's is known."""
    if sealed.nonce != candidate.nonce or sealed.mix != candidate.mix:
        return False
    return sealed.seal_hash is None or sealed.seal_hash == candidate.seal_hash


# -- rewards ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revenue:
    """What a main-chain block earned its coinbase, in wei, by source."""

    base: int  # the block reward at its height
    nephews: int  # the rewards for the uncles it includes
    fees: int  # its transactions' priority fees (what they paid less the burnt base fee)

    @property
    def total(self) -> int:
        return self.base + self.nephews + self.fees


def priority_fees(paid: int, gas_used: int, base_fee: int | None) -> int:
    """A block's fees to its coinbase: what its transactions paid, ``sum(gasUsed *
    effectiveGasPrice)``, less the base fee EIP-1559 burns, ``gas_used * base_fee``.
    ValueError if they paid less than the burn (receipts of another block)."""
    if paid < 0 or gas_used < 0 or (base_fee is not None and base_fee < 0):
        raise ValueError(f"negative fee data: paid {paid}, gas used {gas_used}, base fee {base_fee}")
    burnt = 0 if base_fee is None else gas_used * base_fee
    if paid < burnt:
        raise ValueError(f"the transactions paid {paid} wei, less than the {burnt} wei base fee burnt")
    return paid - burnt


def block_revenue(rewards: EthRewards, block: ChainBlock) -> Revenue:
    """A main-chain block's revenue; ValueError if its fees were not read or do not add up."""
    if block.fees is None:
        raise ValueError(f"the fees of block {block.number} were not read")
    if len(block.uncles) > MAX_UNCLES:
        raise ValueError(f"block {block.number} lists {len(block.uncles)} uncles, more than {MAX_UNCLES}")
    return Revenue(
        base=rewards.block_reward(block.number),
        nephews=len(block.uncles) * rewards.nephew_reward(block.number),
        fees=priority_fees(block.fees, block.gas_used, block.base_fee),
    )


def uncle_reward(rewards: EthRewards, nephew_height: int, uncle_height: int) -> int:
    """The reward of an uncle at ``uncle_height`` included at ``nephew_height``; ValueError
    outside the uncle window, which EthRewards alone stretches to 7."""
    depth = nephew_height - uncle_height
    if not 1 <= depth <= UNCLE_WINDOW:
        raise ValueError(f"an uncle is 1 to {UNCLE_WINDOW} blocks below its nephew, not {depth}")
    return rewards.uncle_reward(nephew_height, uncle_height)


# -- verdicts ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Block:
    """The candidate is the main chain's block at ``height``."""

    height: int
    hash: bytes  # the chain's block hash
    revenue: Revenue

    @property
    def reward(self) -> int:
        return self.revenue.total


@dataclass(frozen=True, slots=True)
class Uncle:
    """The candidate is an uncle at ``height``, included by the block at ``nephew_height``."""

    height: int
    hash: bytes  # the uncle's block hash
    nephew_height: int
    reward: int


@dataclass(frozen=True, slots=True)
class Orphan:
    """The candidate is in the main chain neither as a block nor as an uncle, and cannot be."""

    reason: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Not decided yet: look again later."""

    reason: str


Verdict: TypeAlias = Block | Uncle | Orphan | Wait


def _unlinked(view: ChainView, heights: range) -> str | None:
    """Why the blocks read do not make one chain, if they do not."""
    for height in heights:
        block = view.blocks.get(height)
        if block is None:
            continue
        if block.number != height:
            return f"the block read for height {height} is number {block.number}"
        below = view.blocks.get(height - 1)
        if height > heights.start and below is not None and block.parent_hash != below.hash:
            return (
                f"the chain changed while it was read: block {height} "
                f"does not follow the block {height - 1} read"
            )
    return None


def _not_ours(miner: str, pool_coinbase: str | None) -> bool:
    return pool_coinbase is not None and miner.lower() != pool_coinbase.lower()


def classify(
    candidate: EthCandidate,
    view: ChainView,
    tip_height: int,
    coin: EthCoinConfig,
    pool_coinbase: str | None = None,
    *,
    safety: int = DEFAULT_ORPHAN_SAFETY,
) -> Verdict:
    """What the candidate is, given the chain read up to ``tip_height`` (the node's latest
    block, not its pending one).

    A block or uncle is recognised at any depth (``stage`` says when to
    look). An orphan needs every block up to the last possible nephew read,
    and ``safety`` blocks on top of that nephew. With ``pool_coinbase``, a
    block or uncle paying another address waits (with why): it is not the
    pool's money to credit, and dropping its round would lose the work.
    """
    if safety < 1:
        raise ValueError(f"safety must be >= 1, not {safety}")
    height = candidate.height
    if tip_height < height:
        return Wait(f"the node is at block {tip_height}, below the candidate's {height}")
    heights = heights_to_read(height, tip_height)
    problem = _unlinked(view, heights)
    if problem is not None:
        return Wait(problem)

    block = view.blocks.get(height)
    if block is not None and matches(candidate, block):
        if _not_ours(block.miner, pool_coinbase):
            return Wait(f"block {height} is ours but pays {block.miner}, not the pool's {pool_coinbase}")
        try:
            revenue = block_revenue(coin.rewards, block)
        except ValueError as e:
            return Wait(str(e))
        return Block(height, block.hash, revenue)

    unread = [] if block is not None else [f"block {height}"]
    uncles = {(u.included_in, u.hash): u for u in view.uncles}
    for nephew_height in heights[1:]:
        nephew = view.blocks.get(nephew_height)
        if nephew is None:
            unread.append(f"block {nephew_height}")
            continue
        for index, uncle_hash in enumerate(nephew.uncles):
            uncle = uncles.get((nephew_height, uncle_hash))
            if uncle is None:
                unread.append(f"uncle {index} of block {nephew_height}")
            elif uncle.number == height and matches(candidate, uncle):
                if _not_ours(uncle.miner, pool_coinbase):
                    return Wait(
                        f"uncle {height} in block {nephew_height} is ours but pays {uncle.miner}, "
                        f"not the pool's {pool_coinbase}"
                    )
                reward = uncle_reward(coin.rewards, nephew_height, height)
                return Uncle(height, uncle.hash, nephew_height, reward)
    if unread:
        return Wait("the node did not give " + ", ".join(unread))
    decided_at = height + UNCLE_WINDOW + safety
    if tip_height < decided_at:
        return Wait(f"in the chain neither as block nor as uncle yet; decided at block {decided_at}")
    assert block is not None  # else it is unread
    return Orphan(
        f"block {height} is 0x{block.hash.hex()} by {block.miner}, and no block from {height + 1} "
        f"to {height + UNCLE_WINDOW} includes the candidate as an uncle"
    )


# -- maturity ---------------------------------------------------------------------


class Stage(StrEnum):
    """Where a candidate is, by its confirmations (the tip's height less its own)."""

    CANDIDATE = "candidate"  # below immature_depth: not looked at yet
    IMMATURE = "immature"  # credited as immature once classified a block or uncle
    MATURED = "matured"  # credited to balances once classified again


def stage(candidate_height: int, tip: int, immature_depth: int, depth: int) -> Stage:
    """The stage of a block at ``candidate_height`` with the node at ``tip``: immature from
    ``immature_depth`` confirmations, matured from ``depth``."""
    if not 0 <= immature_depth < depth:
        raise ValueError(f"need 0 <= immature_depth < depth, not {immature_depth} and {depth}")
    confirmations = tip - candidate_height
    if confirmations >= depth:
        return Stage.MATURED
    if confirmations >= immature_depth:
        return Stage.IMMATURE
    return Stage.CANDIDATE


@dataclass(frozen=True, slots=True)
class Maturity:
    """The unlocker's depths; ValueError on building one ``maturity_problems`` finds fault with."""

    immature_depth: int = DEFAULT_IMMATURE_DEPTH
    depth: int = DEFAULT_DEPTH
    orphan_safety: int = DEFAULT_ORPHAN_SAFETY

    def __post_init__(self) -> None:
        found = maturity_problems(self.immature_depth, self.depth, self.orphan_safety)
        if found:
            raise ValueError("; ".join(f"{name}: {message}" for name, message in found))

    def stage(self, candidate_height: int, tip: int) -> Stage:
        return stage(candidate_height, tip, self.immature_depth, self.depth)


# -- the split --------------------------------------------------------------------


def split_revenue(
    revenue: Revenue, weights: Mapping[str, Fraction], fee_percent: Decimal, keep_tx_fees: bool = False
) -> RewardSplit:
    """A block's or uncle's revenue split among the round's logins (PROP): the pool fee
    first, the rest by weight, in wei (nomp.payments.split, whose maths is unit-free).

    With ``keep_tx_fees`` (OEP's keepTxFees) the transaction fees go to the
    pool whole, and count in its ``fee``; the rest is split. An uncle's
    revenue is ``Revenue(reward, 0, 0)``.
    """
    if not keep_tx_fees:
        return split_reward(revenue.total, weights, fee_percent)
    split = split_reward(revenue.base + revenue.nephews, weights, fee_percent)
    return RewardSplit(revenue.total, split.miners, split.pool + revenue.fees, split.fee + revenue.fees)


def whole_shannon(split: RewardSplit) -> RewardSplit:
    """The split with every miner's part floored to whole Shannon (what OEP's balances hold),
    the wei left over going to the pool: the parts still add up to the reward."""
    miners = {login: wei - wei % WEI_PER_SHANNON for login, wei in split.miners.items()}
    miners = {login: wei for login, wei in miners.items() if wei > 0}
    return RewardSplit(split.reward, miners, split.reward - sum(miners.values()), split.fee)
