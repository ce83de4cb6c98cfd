"""The dev chain: py-evm's proof-of-work engine in memory, its seals checked
by chfast's ethash, at a difficulty a Python miner meets in a fraction of a
second.

py-evm imports, executes and persists the blocks, pays block, uncle and
nephew rewards, checks uncles and picks the heaviest chain. Three things are
changed in VM subclasses, and only these:

- the seal check calls PyPI ``ethash`` (``sealing.seal_is_valid``) instead of
  py-evm's pure-Python hashimoto, so a block imports only when chfast's
  implementation agrees;
- the difficulty rule keeps its fork's formula but with a minimum of 1
  instead of 131,072 and without the difficulty bomb (Classic defused it,
  and a test chain is too short to reach it anyway). Below 2,048 a step of
  the rule (difficulty // 2,048) is 0, so a chain stays at its genesis
  difficulty;
- that difficulty is checked on every header and uncle: py-evm itself
  recomputes it for a block it imports but never for an uncle.

Two forks: ``"homestead"`` (5 ether a block, the rules of Ethereum before
Byzantium and of Classic's era 0: every height a test chain reaches) and
``"london"`` (2 ether a block, EIP-100's difficulty rule that counts uncles,
a base fee: Ethereum's last proof-of-work rules, as ETHW kept them).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from eth.abc import (
    AtomicDatabaseAPI,
    BlockAPI,
    BlockHeaderAPI,
    ConsensusAPI,
    ConsensusContextAPI,
    VirtualMachineAPI,
)
from eth.chains.base import Chain
from eth.constants import EMPTY_UNCLE_HASH, MAX_UNCLE_DEPTH
from eth.db.atomic import AtomicDB
from eth.typing import AccountDetails, AccountState
from eth.vm.forks.byzantium.headers import configure_header, create_header_from_parent
from eth.vm.forks.homestead import HomesteadVM
from eth.vm.forks.london import LondonVM
from eth.vm.forks.london.headers import create_london_header_from_parent
from eth_typing import Address, BlockNumber, Hash32
from eth_utils.exceptions import ValidationError

from .sealing import boundary, seal_is_valid, search_nonce, seed_hash

ETHER = 10**18
MINIMUM_DIFFICULTY = 1  # py-evm's (Ethereum's) is 131,072: weeks of Python hashing
DIFFICULTY_STEP_DIVISOR = 2048
STALE_THRESHOLD = 7  # geth keeps work for blocks this many heights back
MAX_UNCLES = 2
# Local blocks go here unless a test names a coinbase, so the pool's own
# address only ever earns what the pool mined (as the Litecoin demo mines
# its maturing blocks to a wallet that is not the pool's).
OUTSIDE = Address(bytes.fromhex("00000000000000000000000000000000000000ee"))

Fork = Literal["homestead", "london"]

# py-evm warns on standard error of every block it refuses; refusing blocks
# is this chain's everyday work in the tests.
logging.getLogger("eth").setLevel(logging.ERROR)


def homestead_difficulty(parent: BlockHeaderAPI, timestamp: int) -> int:
    """EIP-2's rule: up a step when the block came within 10 s, down a step per
    10 s beyond (99 at most)."""
    elapsed = _elapsed(parent, timestamp)
    factor = max(1 - elapsed // 10, -99)
    return max(parent.difficulty + parent.difficulty // DIFFICULTY_STEP_DIVISOR * factor, MINIMUM_DIFFICULTY)


def byzantium_difficulty(parent: BlockHeaderAPI, timestamp: int) -> int:
    """EIP-100's rule (Byzantium to Gray Glacier, and Classic since Atlantis):
    EIP-2's with 9 s periods and one more step after a parent with uncles."""
    elapsed = _elapsed(parent, timestamp)
    base = 2 if parent.uncles_hash != EMPTY_UNCLE_HASH else 1
    factor = max(base - elapsed // 9, -99)
    return max(parent.difficulty + parent.difficulty // DIFFICULTY_STEP_DIVISOR * factor, MINIMUM_DIFFICULTY)


def _elapsed(parent: BlockHeaderAPI, timestamp: int) -> int:
    if timestamp <= parent.timestamp:
        raise ValidationError(f"timestamp {timestamp} is not after its parent's {parent.timestamp}")
    return timestamp - parent.timestamp


def _check_difficulty(
    vm_class: type[VirtualMachineAPI], header: BlockHeaderAPI, parent: BlockHeaderAPI
) -> None:
    expected = vm_class.compute_difficulty(parent, header.timestamp)
    if header.difficulty != expected:
        raise ValidationError(
            f"block #{header.block_number} has difficulty {header.difficulty}, not {expected}"
        )


class ChfastEthash(ConsensusAPI):
    """Proof of work as chfast's ethash judges it."""

    def __init__(self, context: ConsensusContextAPI) -> None:
        pass

    def validate_seal(self, header: BlockHeaderAPI) -> None:
        nonce = int.from_bytes(header.nonce, "big")
        if not seal_is_valid(
            header.block_number, header.mining_hash, nonce, header.mix_hash, header.difficulty
        ):
            raise ValidationError(f"block #{header.block_number}: ethash does not accept its seal")

    def validate_seal_extension(self, header: BlockHeaderAPI, parents: Any) -> None:
        pass

    @classmethod
    def get_fee_recipient(cls, header: BlockHeaderAPI) -> Address:
        return header.coinbase


class _DifficultyChecked:
    """py-evm checks neither a header's nor an uncle's difficulty: these VMs do
    (mixed in before a py-evm VM, whose checks run first)."""

    @classmethod
    def validate_header(cls, header: BlockHeaderAPI, parent_header: BlockHeaderAPI) -> None:
        super().validate_header(header, parent_header)  # type: ignore[misc]
        _check_difficulty(cast(type[VirtualMachineAPI], cls), header, parent_header)

    @classmethod
    def validate_uncle(cls, block: BlockAPI, uncle: BlockHeaderAPI, uncle_parent: BlockHeaderAPI) -> None:
        super().validate_uncle(block, uncle, uncle_parent)  # type: ignore[misc]
        _check_difficulty(cast(type[VirtualMachineAPI], cls), uncle, uncle_parent)


class DevHomesteadVM(_DifficultyChecked, HomesteadVM):
    """Homestead (5 ether, uncles paid (8 + uncle - block) / 8 of it, nephews 1/32)."""

    fork = "dev-homestead"
    support_dao_fork = False
    consensus_class = ChfastEthash
    compute_difficulty = staticmethod(homestead_difficulty)  # type: ignore[assignment]
    create_header_from_parent = staticmethod(create_header_from_parent(homestead_difficulty))
    configure_header = configure_header(difficulty_fn=homestead_difficulty)


class DevLondonVM(_DifficultyChecked, LondonVM):
    """London (2 ether, the same uncle and nephew shares, a base fee)."""

    fork = "dev-london"
    consensus_class = ChfastEthash
    compute_difficulty = staticmethod(byzantium_difficulty)
    create_header_from_parent = staticmethod(create_london_header_from_parent(byzantium_difficulty))
    configure_header = configure_header(difficulty_fn=byzantium_difficulty)


VMS: dict[Fork, type[VirtualMachineAPI]] = {"homestead": DevHomesteadVM, "london": DevLondonVM}


@dataclass(frozen=True, slots=True)
class Work:
    """What eth_getWork hands a miner for one unsealed block."""

    header_hash: bytes  # the seal hash: Keccak-256 of the header without nonce and mix digest
    seed_hash: bytes
    difficulty: int
    number: int

    @property
    def boundary(self) -> int:
        return boundary(self.difficulty)

    def as_rpc(self) -> list[str]:
        """geth's reply: seal hash, seed hash, boundary (32 bytes), block number."""
        return [
            "0x" + self.header_hash.hex(),
            "0x" + self.seed_hash.hex(),
            "0x" + self.boundary.to_bytes(32, "big").hex(),
            hex(self.number),
        ]


class DevChain:
    """A proof-of-work chain in memory, with a pending block for ``etherbase``.

    Work handed out stays valid for blocks up to ``STALE_THRESHOLD`` heights
    back, as in geth; a solution counts (``submit`` is true) only when its
    block imports and becomes the tip. A valid solution for a block that is
    no longer on top (its parent was overtaken) is imported as a side block
    and becomes an uncle candidate, as geth does, but ``submit`` is false.
    Side blocks, and blocks a reorganisation leaves behind, are offered as
    uncles (two at most, six generations at most) to every block built on
    the tip afterwards: the pending block and ``mine``'s alike.
    """

    def __init__(
        self,
        etherbase: bytes,
        *,
        fork: Fork = "homestead",
        difficulty: int = 16,
        chain_id: int = 1337,
        alloc: Mapping[bytes, int] | None = None,
        gas_limit: int = 8_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(etherbase) != 20:
            raise ValueError("etherbase must be a 20-byte address")
        if difficulty < MINIMUM_DIFFICULTY:
            raise ValueError(f"difficulty must be at least {MINIMUM_DIFFICULTY}")
        self.etherbase = Address(bytes(etherbase))
        self.fork = fork
        self.chain_id = chain_id
        self._clock = clock
        self._serial = itertools.count()
        chain_class = Chain.configure(
            __name__="DevChain", vm_configuration=((0, VMS[fork]),), chain_id=chain_id
        )
        genesis_state: AccountState = {
            Address(bytes(address)): AccountDetails(balance=balance, nonce=0, code=b"", storage={})
            for address, balance in (alloc or {}).items()
        }
        genesis_params: dict[str, Any] = {
            "difficulty": difficulty,
            "gas_limit": gas_limit,
            "timestamp": int(clock()),
            "extra_data": b"nomp dev chain",
        }
        db: AtomicDatabaseAPI = AtomicDB()
        self._chain: Chain = chain_class.from_genesis(db, genesis_params, genesis_state)  # type: ignore[assignment]
        self._works: dict[bytes, BlockAPI] = {}
        self._uncle_candidates: dict[bytes, BlockHeaderAPI] = {}
        self._renewals = 0
        self._pending_key: tuple[Any, ...] | None = None
        self._pending: BlockAPI | None = None

    # --- reading the chain ---

    @property
    def head(self) -> BlockAPI:
        """The tip of the canonical chain."""
        return self._chain.get_block_by_header(self._chain.get_canonical_head())

    @property
    def height(self) -> int:
        return int(self._chain.get_canonical_head().block_number)

    def block_at(self, number: int) -> BlockAPI | None:
        """The canonical block at ``number``, if the chain is that long."""
        if not 0 <= number <= self.height:
            return None
        return self._chain.get_canonical_block_by_number(BlockNumber(number))

    def block_by_hash(self, block_hash: bytes) -> BlockAPI | None:
        """Any block the chain imported, canonical or not."""
        if not self._chain.chaindb.header_exists(Hash32(block_hash)):
            return None
        return self._chain.get_block_by_hash(Hash32(block_hash))

    def is_canonical(self, header: BlockHeaderAPI) -> bool:
        block = self.block_at(header.block_number)
        return block is not None and block.hash == header.hash

    def total_difficulty(self, block_hash: bytes) -> int:
        return self._chain.get_score(Hash32(block_hash))

    def balance(self, address: bytes, at: BlockHeaderAPI | None = None) -> int:
        """Wei held by ``address`` after block ``at`` (default: the tip)."""
        header = at if at is not None else self._chain.get_canonical_head()
        return int(self._chain.get_vm(header).state.get_balance(Address(bytes(address))))

    @property
    def uncle_candidates(self) -> tuple[BlockHeaderAPI, ...]:
        """The side blocks the next block on the tip may include as uncles."""
        return self._eligible_uncles(self._chain.get_canonical_head(), limit=None)

    def block_reward(self) -> int:
        """The fork's reward of a block, without nephew rewards."""
        return int(VMS[self.fork].get_block_reward())

    # --- mining through work ---

    @property
    def pending(self) -> BlockAPI:
        """The unsealed block on the tip for ``etherbase``: rebuilt when the tip
        or the uncles to include change, or on ``renew_work``."""
        head = self._chain.get_canonical_head()
        uncles = self._eligible_uncles(head)
        key = (head.hash, tuple(uncle.hash for uncle in uncles), self._renewals)
        if self._pending is None or key != self._pending_key:
            self._pending = self._build(head, self.etherbase, uncles)
            self._pending_key = key
            self._works[self._pending.header.mining_hash] = self._pending
        return self._pending

    def work(self) -> Work:
        """The work of the pending block."""
        return self.work_of(self.pending)

    @staticmethod
    def work_of(block: BlockAPI) -> Work:
        header = block.header
        return Work(
            header.mining_hash, seed_hash(header.block_number), header.difficulty, header.block_number
        )

    def renew_work(self) -> Work:
        """A new pending block at the same height (new extra data, so a new seal
        hash), as a node's periodic recommit makes; the old work stays valid."""
        self._renewals += 1
        return self.work()

    def submit(self, nonce: int, header_hash: bytes, mix_digest: bytes) -> bool:
        """eth_submitWork: true when the sealed block imported and is the new tip."""
        block = self._works.get(bytes(header_hash))
        if block is None or not 0 <= nonce < 2**64 or len(mix_digest) != 32:
            return False
        sealed = self._seal(block, nonce, bytes(mix_digest))
        if self._chain.chaindb.header_exists(sealed.hash):
            return False  # the same solution again: the tip does not move
        return self._import(sealed)

    # --- moving the chain without the pool ---

    def mine(self, coinbase: bytes = OUTSIDE) -> BlockAPI:
        """Build, seal (a Python nonce search with PyPI ethash) and import a block
        on the tip, with the uncles the tip offers; it becomes the tip."""
        head = self._chain.get_canonical_head()
        block = self._seal_by_search(self._build(head, Address(bytes(coinbase)), self._eligible_uncles(head)))
        if not self._import(block):
            raise RuntimeError(f"the chain refused its own block #{block.number}")
        return block

    def mine_blocks(self, count: int, coinbase: bytes = OUTSIDE) -> list[BlockAPI]:
        return [self.mine(coinbase) for _ in range(count)]

    def mine_sibling(self, coinbase: bytes = OUTSIDE) -> BlockAPI:
        """A sealed block at the tip's height on the tip's parent, imported as a
        side block (its total difficulty only equals the tip's): an uncle
        candidate for the next block."""
        head = self._chain.get_canonical_head()
        if head.block_number == 0:
            raise ValueError("the genesis block has no sibling")
        parent = self._chain.get_block_header_by_hash(head.parent_hash)
        sibling = self._seal_by_search(self._build(parent, Address(bytes(coinbase)), ()))
        if self._import(sibling):
            raise RuntimeError("the sibling overtook the tip: the difficulty is not constant")
        return sibling

    def reorg(self, depth: int, coinbase: bytes = OUTSIDE) -> list[BlockAPI]:
        """Replace the top ``depth`` blocks: a branch of ``depth + 1`` blocks from
        the block below them, which overtakes the tip. The blocks left behind
        become uncle candidates. Returns the branch, oldest first."""
        if not 1 <= depth <= self.height:
            raise ValueError(f"cannot replace {depth} blocks of a chain {self.height} high")
        parent = self._chain.get_canonical_block_header_by_number(BlockNumber(self.height - depth))
        branch: list[BlockAPI] = []
        for _ in range(depth + 1):
            block = self._seal_by_search(self._build(parent, Address(bytes(coinbase)), ()))
            self._import(block)
            branch.append(block)
            parent = block.header
        if self._chain.get_canonical_head().hash != branch[-1].hash:
            raise RuntimeError("the branch did not overtake the tip")
        return branch

    # --- inside ---

    def _build(self, parent: BlockHeaderAPI, coinbase: Address, uncles: Sequence[BlockHeaderAPI]) -> BlockAPI:
        """An unsealed block on ``parent``, executed and finalised (rewards paid,
        state root set): only the nonce and mix digest are missing."""
        timestamp = max(int(self._clock()), parent.timestamp + 1)
        # A serial number in the extra data keeps every built block distinct,
        # even two for one coinbase on one parent in the same second.
        extra = b"nomp dev %d" % next(self._serial)
        header = self._chain.create_header_from_parent(
            parent, coinbase=coinbase, timestamp=timestamp, extra_data=extra
        )
        vm = self._chain.get_vm(header)
        return vm.mine_block(vm.get_block(), uncles=list(uncles)).block

    @staticmethod
    def _seal(block: BlockAPI, nonce: int, mix_digest: bytes) -> BlockAPI:
        header = block.header.copy(nonce=nonce.to_bytes(8, "big"), mix_hash=Hash32(mix_digest))
        return block.copy(header=header)

    def _seal_by_search(self, block: BlockAPI) -> BlockAPI:
        header = block.header
        nonce, mix_digest = search_nonce(header.block_number, header.mining_hash, header.difficulty)
        return self._seal(block, nonce, mix_digest)

    def _import(self, block: BlockAPI) -> bool:
        """Import a sealed block; true when it is the tip afterwards."""
        try:
            result = self._chain.import_block(block)
        except ValidationError:
            return False
        head = self._chain.get_canonical_head()
        for header in [b.header for b in result.old_canonical_blocks]:
            self._uncle_candidates[header.hash] = header
        if head.hash != block.hash:
            self._uncle_candidates[block.hash] = block.header
        self._forget_old(head)
        return head.hash == block.hash

    def _forget_old(self, head: BlockHeaderAPI) -> None:
        """Drop work past geth's stale threshold and candidates too old to be uncles."""
        self._works = {h: b for h, b in self._works.items() if b.number + STALE_THRESHOLD > head.block_number}
        self._uncle_candidates = {
            h: u
            for h, u in self._uncle_candidates.items()
            if u.block_number + MAX_UNCLE_DEPTH > head.block_number
        }

    def _ancestors(self, header: BlockHeaderAPI, count: int) -> Iterator[BlockHeaderAPI]:
        for _ in range(count):
            yield header
            if header.block_number == 0:
                return
            header = self._chain.get_block_header_by_hash(header.parent_hash)

    def _eligible_uncles(
        self, parent: BlockHeaderAPI, limit: int | None = MAX_UNCLES
    ) -> tuple[BlockHeaderAPI, ...]:
        """The candidates a block on ``parent`` may include, by py-evm's rules:
        the uncle's parent is one of the block's 7 nearest ancestors but not its
        parent, and no such ancestor is or already includes the uncle."""
        ancestors = list(self._ancestors(parent, MAX_UNCLE_DEPTH + 1))
        ancestor_hashes = {a.hash for a in ancestors}
        included = {u.hash for a in ancestors for u in self._chain.chaindb.get_block_uncles(a.uncles_hash)}
        eligible = tuple(
            uncle
            for uncle in self._uncle_candidates.values()
            if uncle.parent_hash in ancestor_hashes
            and uncle.parent_hash != parent.hash
            and uncle.hash not in ancestor_hashes
            and uncle.hash not in included
            and not self.is_canonical(uncle)
        )
        return eligible if limit is None else eligible[:limit]
