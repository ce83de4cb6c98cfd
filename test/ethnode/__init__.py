"""A proof-of-work dev node for the Ethereum family's tests: py-evm's chain
engine, seals checked by chfast's ethash (PyPI ``ethash``, never nomp's own),
behind a JSON-RPC port that answers as geth does, taking signed transactions
into a pool its blocks include. See ``engine`` and ``rpc``."""

from .engine import (
    ETHER,
    GWEI,
    OUTSIDE,
    DevChain,
    Fork,
    TransactionRefused,
    Work,
    effective_gas_price,
    sign_transaction,
)
from .rpc import DevNode, DevNodeRPC, start_dev_node
from .sealing import boundary, seal_is_valid, search_nonce, seed_hash

__all__ = [
    "ETHER",
    "GWEI",
    "OUTSIDE",
    "DevChain",
    "DevNode",
    "DevNodeRPC",
    "Fork",
    "TransactionRefused",
    "Work",
    "boundary",
    "effective_gas_price",
    "seal_is_valid",
    "search_nonce",
    "seed_hash",
    "sign_transaction",
    "start_dev_node",
]
