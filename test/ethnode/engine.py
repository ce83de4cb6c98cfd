"""The dev chain: py-evm's proof-of-work engine in memory, its seals checked
by chfast's ethash, at a difficulty a Python miner meets in a fraction of a
second.

py-evm imports, executes and persists the blocks and their transactions,
pays block, uncle and nephew rewards, checks uncles and picks the heaviest
chain. Four things are changed in VM subclasses, and only these:

- the seal check calls PyPI ``ethash`` (``sealing.seal_is_valid``) instead of
  py-evm's pure-Python hashimoto, so a block imports only when chfast's
  implementation agrees;
- the difficulty rule keeps its fork's formula but with a minimum of 1
  instead of 131,072 and without the difficulty bomb (Classic defused it,
  and a test chain is too short to reach it anyway). Below 2,048 a step of
  the rule (difficulty // 2,048) is 0, so a chain stays at its genesis
  difficulty;
- that difficulty is checked on every header and uncle: py-evm itself
  recomputes it for a block it imports but never for an uncle;
- Homestead blocks carry Spurious Dragon's transactions, which may be signed
  for a chain id (EIP-155), as Classic's have been since Die Hard: geth and
  core-geth take no others over RPC.

Two forks: ``"homestead"`` (5 ether a block, the rules of Ethereum before
Byzantium and of Classic's era 0: every height a test chain reaches) and
``"london"`` (2 ether a block, EIP-100's difficulty rule that counts uncles,
a base fee: Ethereum's last proof-of-work rules, as ETHW kept them).

Signed transactions wait in a pool (``send``), checked as geth's pool checks
them, and go into the next block built on the tip: the pending block the
work is of, and ``mine``'s. A transaction whose nonce is ahead of its
sender's waits, queued, until the gap is filled, as in geth. A
reorganisation returns the transactions of the blocks it leaves behind to
the pool, as geth re-injects them; branches built by ``reorg`` and
``mine_sibling`` carry none.
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
    ReceiptAPI,
    SignedTransactionAPI,
    VirtualMachineAPI,
)
from eth.chains.base import Chain
from eth.constants import EMPTY_UNCLE_HASH, MAX_UNCLE_DEPTH, SECPK1_N
from eth.db.atomic import AtomicDB
from eth.estimators.gas import binary_gas_search_exact
from eth.exceptions import Revert, TransactionNotFound, VMError
from eth.rlp.headers import BlockHeader
from eth.typing import AccountDetails, AccountState
from eth.vm.forks.byzantium.headers import configure_header, create_header_from_parent
from eth.vm.forks.homestead import HomesteadVM
from eth.vm.forks.homestead.blocks import HomesteadBlock
from eth.vm.forks.london import LondonVM
from eth.vm.forks.london.headers import create_london_header_from_parent
from eth.vm.forks.london.transactions import LondonTransactionBuilder
from eth.vm.forks.spurious_dragon.transactions import SpuriousDragonTransaction
from eth.vm.spoof import SpoofTransaction
from eth_keys.datatypes import PrivateKey
from eth_keys.exceptions import BadSignature
from eth_typing import Address, BlockNumber, Hash32
from eth_utils.exceptions import ValidationError
from rlp.sedes import CountableList  # type: ignore[import-untyped]

from .sealing import boundary, seal_is_valid, search_nonce, seed_hash

ETHER = 10**18
GWEI = 10**9
MINIMUM_DIFFICULTY = 1  # py-evm's (Ethereum's) is 131,072: weeks of Python hashing
DIFFICULTY_STEP_DIVISOR = 2048
STALE_THRESHOLD = 7  # geth keeps work for blocks this many heights back
MAX_UNCLES = 2
TX_MAX_SIZE = 4 * 32 * 1024  # geth's txMaxSize: four 32 KiB slots
PRICE_BUMP = 10  # geth's txpool.pricebump: a replacement pays 10 % more, tip and fee cap alike
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


class DevHomesteadBlock(HomesteadBlock):
    """Homestead's block with Spurious Dragon's transactions: signed for a
    chain id (EIP-155) or, as before it, for none."""

    transaction_builder = SpuriousDragonTransaction
    fields = [
        ("header", BlockHeader),
        ("transactions", CountableList(SpuriousDragonTransaction)),
        ("uncles", CountableList(BlockHeader)),
    ]


class DevHomesteadVM(_DifficultyChecked, HomesteadVM):
    """Homestead (5 ether, uncles paid (8 + uncle - block) / 8 of it, nephews 1/32)."""

    fork = "dev-homestead"
    block_class = DevHomesteadBlock
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


def sign_transaction(
    fork: Fork,
    private_key: PrivateKey | bytes,
    *,
    chain_id: int,
    nonce: int,
    to: bytes,
    value: int,
    gas: int = 21_000,
    gas_price: int | None = None,
    max_fee_per_gas: int | None = None,
    max_priority_fee_per_gas: int | None = None,
    data: bytes = b"",
) -> bytes:
    """A transaction signed with py-evm's own tooling, encoded as
    eth_sendRawTransaction takes it: with ``gas_price``, a legacy transaction
    signed for ``chain_id`` (EIP-155; 0 signs it for no chain); with the two
    fees instead, on London, an EIP-1559 transaction. An empty ``to`` creates
    a contract."""
    key = private_key if isinstance(private_key, PrivateKey) else PrivateKey(private_key)
    vm = VMS[fork]
    if max_fee_per_gas is None and max_priority_fee_per_gas is None:
        if gas_price is None:
            raise ValueError("a gas price, or EIP-1559's two fees")
        unsigned = vm.create_unsigned_transaction(
            nonce=nonce, gas_price=gas_price, gas=gas, to=Address(bytes(to)), value=value, data=data
        )
        return unsigned.as_signed_transaction(key, chain_id=chain_id).encode()
    if (
        fork != "london"
        or max_fee_per_gas is None
        or max_priority_fee_per_gas is None
        or gas_price is not None
    ):
        raise ValueError("EIP-1559 transactions take both fees and no gas price, on London")
    builder = cast(type[LondonTransactionBuilder], vm.get_transaction_builder())
    dynamic = builder.new_unsigned_dynamic_fee_transaction(
        chain_id, nonce, max_priority_fee_per_gas, max_fee_per_gas, gas, Address(bytes(to)), value, data, []
    )
    return dynamic.as_signed_transaction(key).encode()


class TransactionRefused(ValueError):
    """A transaction the node does not take; the reason is geth's message for it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Pooled:
    transaction: SignedTransactionAPI
    sender: Address
    arrival: int  # breaks ties between equal tips: first come, first mined


def effective_gas_price(transaction: SignedTransactionAPI, header: BlockHeaderAPI) -> int:
    """What the sender pays a unit of gas in a block of ``header``: the gas
    price, or under EIP-1559 the base fee and the tip the fee cap leaves room for."""
    base_fee: int | None = getattr(header, "base_fee_per_gas", None)
    if base_fee is None:
        return int(transaction.max_fee_per_gas)  # a legacy transaction's gas price
    return int(min(transaction.max_fee_per_gas, base_fee + transaction.max_priority_fee_per_gas))


def _replaces(old: SignedTransactionAPI, new: SignedTransactionAPI) -> bool:
    """geth's rule for a transaction at a nonce already pooled: both the fee cap
    and the tip (a legacy one's gas price twice) go up by PRICE_BUMP percent."""
    if (
        new.max_fee_per_gas <= old.max_fee_per_gas
        or new.max_priority_fee_per_gas <= old.max_priority_fee_per_gas
    ):
        return False
    fee_cap = old.max_fee_per_gas * (100 + PRICE_BUMP) // 100
    tip = old.max_priority_fee_per_gas * (100 + PRICE_BUMP) // 100
    return bool(new.max_fee_per_gas >= fee_cap and new.max_priority_fee_per_gas >= tip)


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

    Transactions sent (``send``) wait in a pool keyed by sender and nonce and
    the next block built on the tip includes them, highest tip first (then
    first come), each sender's in nonce order: a new transaction rebuilds the
    pending block (new work at the same height; the old stays valid). One
    that cannot go in yet (a nonce gap, a fee cap under the base fee, funds
    spent by an earlier one) waits with its sender's later ones. The pool
    forgets a transaction when the tip's state has passed its nonce.
    ``min_gas_price`` is the least gas price (or tip) taken, applied to every
    transaction as geth applies its price limit to remote ones; ``tx_fee_cap``
    is geth's RPC fee cap (0: none); ``suggested_tip`` what eth_gasPrice and
    eth_maxPriorityFeePerGas suggest. While ``refuse`` holds a message, every
    transaction sent is refused with it.
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
        min_gas_price: int = 1,
        tx_fee_cap: int = ETHER,
        suggested_tip: int = GWEI,
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
        self.min_gas_price = min_gas_price
        self.tx_fee_cap = tx_fee_cap
        self.suggested_tip = suggested_tip
        self.refuse: str | None = None
        self._pool: dict[tuple[Address, int], _Pooled] = {}
        self._arrivals = itertools.count()
        self._pool_changes = 0

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

    def nonce(self, address: bytes, at: BlockHeaderAPI | None = None) -> int:
        """Transactions sent by ``address`` up to block ``at`` (default: the tip)."""
        header = at if at is not None else self._chain.get_canonical_head()
        return int(self._chain.get_vm(header).state.get_nonce(Address(bytes(address))))

    def find_transaction(self, transaction_hash: bytes) -> tuple[BlockAPI, int] | None:
        """The canonical block holding a transaction, and its index there."""
        try:
            number, index = self._chain.get_canonical_transaction_index(Hash32(bytes(transaction_hash)))
        except TransactionNotFound:
            return None
        # py-evm keeps the lookup of a transaction whose block a reorganisation
        # left behind, so the canonical block must still hold it there
        block = self.block_at(number)
        if block is None or index >= len(block.transactions):
            return None
        if block.transactions[index].hash != transaction_hash:
            return None
        return block, index

    def receipts(self, block: BlockAPI) -> tuple[ReceiptAPI, ...]:
        """The receipts of a block the chain built or imported (the pending one too);
        their gas used is cumulative, as in the receipts trie."""
        return tuple(block.get_receipts(self._chain.chaindb))

    def estimate_gas(
        self, sender: bytes, to: bytes, value: int = 0, data: bytes = b"", at: BlockHeaderAPI | None = None
    ) -> int:
        """The least gas (found by py-evm's exact binary search) with which a
        transaction from ``sender`` runs without error on the state after block
        ``at`` (default: the tip), gas being free: 21,000 for a transfer to an
        account without code. Raises TransactionRefused with geth's message when
        no gas is enough."""
        head = at if at is not None else self._chain.get_canonical_head()
        vm = self._chain.get_vm(head)
        sender = Address(bytes(sender))
        if vm.state.get_balance(sender) < value:
            raise TransactionRefused("insufficient funds for transfer")
        unsigned = vm.create_unsigned_transaction(
            nonce=vm.state.get_nonce(sender),
            gas_price=0,
            gas=head.gas_limit,
            to=Address(bytes(to)),
            value=value,
            data=data,
        )
        transaction = cast(SignedTransactionAPI, SpoofTransaction(unsigned, from_=sender))
        try:
            with vm.in_costless_state() as state:
                return int(binary_gas_search_exact(state, transaction))
        except ValidationError as e:
            raise TransactionRefused(str(e)) from e
        except Revert as e:
            raise TransactionRefused("execution reverted") from e
        except VMError as e:
            raise TransactionRefused(f"gas required exceeds allowance ({head.gas_limit})") from e

    @property
    def uncle_candidates(self) -> tuple[BlockHeaderAPI, ...]:
        """The side blocks the next block on the tip may include as uncles."""
        return self._eligible_uncles(self._chain.get_canonical_head(), limit=None)

    def block_reward(self) -> int:
        """The fork's reward of a block, without nephew rewards."""
        return int(VMS[self.fork].get_block_reward())

    # --- transactions ---

    def send(self, raw: bytes) -> bytes:
        """eth_sendRawTransaction: the transaction's hash once the pool holds it.
        Raises TransactionRefused with geth's message, checked in geth's order:
        the RPC's fee cap and replay protection, then the pool's rules."""
        if self.refuse is not None:
            raise TransactionRefused(self.refuse)
        transaction = self._decode(bytes(raw))
        fee = transaction.gas * transaction.max_fee_per_gas
        if self.tx_fee_cap and fee > self.tx_fee_cap:
            raise TransactionRefused(
                f"tx fee ({fee / ETHER:.2f} ether) exceeds the configured cap"
                f" ({self.tx_fee_cap / ETHER:.2f} ether)"
            )
        if transaction.type_id is None and transaction.chain_id is None:
            raise TransactionRefused("only replay-protected (EIP-155) transactions allowed over RPC")
        transaction_hash = bytes(transaction.hash)
        if self.pool_transaction(transaction_hash) is not None:
            raise TransactionRefused("already known")
        sender = self._validate(transaction, len(raw))
        key = (sender, int(transaction.nonce))
        old = self._pool.get(key)
        if old is not None and not _replaces(old.transaction, transaction):
            raise TransactionRefused("replacement transaction underpriced")
        self._pool[key] = _Pooled(transaction, sender, next(self._arrivals))
        self._pool_changes += 1
        return transaction_hash

    def pending_nonce(self, address: bytes) -> int:
        """The nonce of ``address``'s next transaction: the tip's, past the ones
        pooled without a gap (eth_getTransactionCount at "pending")."""
        sender = Address(bytes(address))
        nonce = self.nonce(sender)
        while (sender, nonce) in self._pool:
            nonce += 1
        return nonce

    @property
    def pending_transactions(self) -> tuple[SignedTransactionAPI, ...]:
        """The pooled transactions whose nonces follow their sender's without a
        gap (geth's pending ones), by sender and nonce."""
        return tuple(entry.transaction for entry in self._pooled(executable=True))

    @property
    def queued_transactions(self) -> tuple[SignedTransactionAPI, ...]:
        """The pooled transactions waiting behind a nonce gap (geth's queued ones)."""
        return tuple(entry.transaction for entry in self._pooled(executable=False))

    def pool_transaction(self, transaction_hash: bytes) -> SignedTransactionAPI | None:
        """A transaction the pool holds, pending or queued."""
        for entry in self._pool.values():
            if entry.transaction.hash == transaction_hash:
                return entry.transaction
        return None

    def drop_pending(self, transaction_hash: bytes | None = None) -> tuple[SignedTransactionAPI, ...]:
        """Forget one pooled transaction (or all of them), as a node that lost
        it would: it is never mined unless sent again, and its sender's later
        ones wait behind the gap. Returns what was dropped."""
        dropped = [
            key
            for key, entry in self._pool.items()
            if transaction_hash is None or entry.transaction.hash == transaction_hash
        ]
        transactions = tuple(self._pool.pop(key).transaction for key in dropped)
        if transactions:
            self._pool_changes += 1
        return transactions

    # --- mining through work ---

    @property
    def pending(self) -> BlockAPI:
        """The unsealed block on the tip for ``etherbase``: rebuilt when the tip,
        the uncles to include or the pool change, or on ``renew_work``."""
        head = self._chain.get_canonical_head()
        uncles = self._eligible_uncles(head)
        key = (head.hash, tuple(uncle.hash for uncle in uncles), self._renewals, self._pool_changes)
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
        on the tip, with the uncles the tip offers and the pool's transactions;
        it becomes the tip."""
        head = self._chain.get_canonical_head()
        block = self._seal_by_search(self._build(head, Address(bytes(coinbase)), self._eligible_uncles(head)))
        if not self._import(block):
            raise RuntimeError(f"the chain refused its own block #{block.number}")
        return block

    def mine_blocks(self, count: int, coinbase: bytes = OUTSIDE) -> list[BlockAPI]:
        return [self.mine(coinbase) for _ in range(count)]

    def mine_sibling(self, coinbase: bytes = OUTSIDE) -> BlockAPI:
        """A sealed block at the tip's height on the tip's parent, imported as a
        side block (its total difficulty only equals the tip's), without
        transactions: an uncle candidate for the next block."""
        head = self._chain.get_canonical_head()
        if head.block_number == 0:
            raise ValueError("the genesis block has no sibling")
        parent = self._chain.get_block_header_by_hash(head.parent_hash)
        sibling = self._seal_by_search(self._build(parent, Address(bytes(coinbase)), (), transactions=False))
        if self._import(sibling):
            raise RuntimeError("the sibling overtook the tip: the difficulty is not constant")
        return sibling

    def reorg(self, depth: int, coinbase: bytes = OUTSIDE) -> list[BlockAPI]:
        """Replace the top ``depth`` blocks: a branch of ``depth + 1`` blocks from
        the block below them, which overtakes the tip, without transactions. The
        blocks left behind become uncle candidates and their transactions return
        to the pool. Returns the branch, oldest first."""
        if not 1 <= depth <= self.height:
            raise ValueError(f"cannot replace {depth} blocks of a chain {self.height} high")
        parent = self._chain.get_canonical_block_header_by_number(BlockNumber(self.height - depth))
        branch: list[BlockAPI] = []
        for _ in range(depth + 1):
            block = self._seal_by_search(
                self._build(parent, Address(bytes(coinbase)), (), transactions=False)
            )
            self._import(block)
            branch.append(block)
            parent = block.header
        if self._chain.get_canonical_head().hash != branch[-1].hash:
            raise RuntimeError("the branch did not overtake the tip")
        return branch

    # --- inside ---

    def _decode(self, raw: bytes) -> SignedTransactionAPI:
        if not raw:
            raise TransactionRefused("typed transaction too short")
        typed = raw[0] <= 0x7F
        if typed and (self.fork != "london" or raw[0] not in (1, 2)):
            raise TransactionRefused("transaction type not supported")
        try:
            return VMS[self.fork].get_transaction_builder().decode(raw)
        except Exception as e:  # py-evm's decoders raise many kinds; geth says rlp for all
            raise TransactionRefused(f"rlp: {e}") from e

    def _validate(self, transaction: SignedTransactionAPI, size: int) -> Address:
        """geth's pool checks (validateTx), in its order; the sender when they pass."""
        head = self._chain.get_canonical_head()
        if size > TX_MAX_SIZE:
            raise TransactionRefused("oversized data")
        if transaction.gas > head.gas_limit:
            raise TransactionRefused("exceeds block gas limit")
        if transaction.max_priority_fee_per_gas > transaction.max_fee_per_gas:
            raise TransactionRefused("max priority fee per gas higher than max fee per gas")
        sender = self._sender(transaction)
        if transaction.max_priority_fee_per_gas < self.min_gas_price:
            raise TransactionRefused("transaction underpriced")
        state = self._chain.get_vm(head).state
        if transaction.nonce < state.get_nonce(sender):
            raise TransactionRefused("nonce too low")
        cost = transaction.value + transaction.gas * transaction.max_fee_per_gas
        if state.get_balance(sender) < cost:
            raise TransactionRefused("insufficient funds for gas * price + value")
        if transaction.gas < transaction.intrinsic_gas:
            raise TransactionRefused("intrinsic gas too low")
        return sender

    def _sender(self, transaction: SignedTransactionAPI) -> Address:
        """The signer, if the signature is for this chain and canonical (s in the
        lower half, EIP-2): geth's "invalid sender" otherwise."""
        if transaction.chain_id != self.chain_id or not (
            0 < transaction.r < SECPK1_N and 0 < transaction.s <= SECPK1_N // 2
        ):
            raise TransactionRefused("invalid sender")
        try:
            transaction.check_signature_validity()
            return Address(transaction.sender)
        except (ValidationError, BadSignature) as e:
            raise TransactionRefused("invalid sender") from e

    def _pooled(self, executable: bool) -> list[_Pooled]:
        """The pool's gapless (executable) or gapped entries, by sender and nonce."""
        head = self._chain.get_canonical_head()
        state = self._chain.get_vm(head).state
        nonces = {sender: state.get_nonce(sender) for sender, _ in self._pool}
        chosen = []
        for sender, nonce in sorted(self._pool):
            if nonce == nonces[sender]:
                nonces[sender] += 1
                if executable:
                    chosen.append(self._pool[sender, nonce])
            elif not executable:
                chosen.append(self._pool[sender, nonce])
        return chosen

    def _runs(self, nonces: Callable[[Address], int]) -> dict[Address, list[_Pooled]]:
        """Each sender's pooled transactions from its nonce on, up to the first gap."""
        runs: dict[Address, list[_Pooled]] = {}
        for sender in {sender for sender, _ in self._pool}:
            nonce = nonces(sender)
            run = []
            while (sender, nonce) in self._pool:
                run.append(self._pool[sender, nonce])
                nonce += 1
            if run:
                runs[sender] = run
        return runs

    def _fill(self, vm: VirtualMachineAPI, block: BlockAPI) -> BlockAPI:
        """``block`` with the pooled transactions it can take, as geth's miner
        picks them: the best tip first (the earlier arrival of two equal), each
        sender's in nonce order; a sender whose next transaction cannot go in
        (gas left, its fee cap, its funds) adds nothing more."""
        header = block.header
        base_fee: int = getattr(header, "base_fee_per_gas", None) or 0
        runs = self._runs(lambda sender: int(vm.state.get_nonce(sender)))

        def rank(sender: Address) -> tuple[int, int]:
            first = runs[sender][0]
            transaction = first.transaction
            tip = min(transaction.max_priority_fee_per_gas, transaction.max_fee_per_gas - base_fee)
            return -tip, first.arrival

        transactions: list[SignedTransactionAPI] = []
        receipts: list[ReceiptAPI] = []
        while runs:
            sender = min(runs, key=rank)
            transaction = runs[sender][0].transaction
            try:
                if transaction.max_fee_per_gas < base_fee:
                    raise ValidationError("fee cap under the base fee")
                vm.validate_transaction_against_header(header, transaction)
                transaction.validate()
                vm.state.validate_transaction(transaction)
            except ValidationError:
                del runs[sender]
                continue
            receipt, _ = vm.apply_transaction(header, transaction)
            header = vm.add_receipt_to_header(header, receipt)
            transactions.append(transaction)
            receipts.append(receipt)
            runs[sender].pop(0)
            if not runs[sender]:
                del runs[sender]
        if not transactions:
            return block
        return vm.set_block_transactions_and_withdrawals(block, header, transactions, receipts)

    def _reset_pool(self, left_behind: Sequence[BlockAPI]) -> None:
        """After the tip moved: the transactions of blocks that left the canonical
        chain return to the pool (unless it holds another at their nonce), and
        the pool forgets every transaction the tip's state has passed."""
        for block in left_behind:
            for transaction in block.transactions:
                sender = Address(transaction.sender)
                key = (sender, int(transaction.nonce))
                if key not in self._pool:
                    self._pool[key] = _Pooled(transaction, sender, next(self._arrivals))
        state = self._chain.get_vm(self._chain.get_canonical_head()).state
        nonces: dict[Address, int] = {}
        for sender, nonce in list(self._pool):
            if sender not in nonces:
                nonces[sender] = state.get_nonce(sender)
            if nonce < nonces[sender]:
                del self._pool[sender, nonce]

    def _build(
        self,
        parent: BlockHeaderAPI,
        coinbase: Address,
        uncles: Sequence[BlockHeaderAPI],
        transactions: bool = True,
    ) -> BlockAPI:
        """An unsealed block on ``parent``, with the pool's transactions it can
        take (or none), executed and finalised (rewards paid, state root set):
        only the nonce and mix digest are missing."""
        timestamp = max(int(self._clock()), parent.timestamp + 1)
        # A serial number in the extra data keeps every built block distinct,
        # even two for one coinbase on one parent in the same second.
        extra = b"nomp dev %d" % next(self._serial)
        header = self._chain.create_header_from_parent(
            parent, coinbase=coinbase, timestamp=timestamp, extra_data=extra
        )
        vm = self._chain.get_vm(header)
        block = self._fill(vm, vm.get_block()) if transactions else vm.get_block()
        return vm.mine_block(block, uncles=list(uncles)).block

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
        self._reset_pool(result.old_canonical_blocks)
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
