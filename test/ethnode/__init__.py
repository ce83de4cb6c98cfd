"""A proof-of-work dev node for the Ethereum family's tests: py-evm's chain
engine, seals checked by chfast's ethash (PyPI ``ethash``, never nomp's own),
behind a JSON-RPC port that answers as geth does. See ``engine`` and ``rpc``."""

from .engine import ETHER, OUTSIDE, DevChain, Fork, Work
from .rpc import DevNode, DevNodeRPC, start_dev_node
from .sealing import boundary, seal_is_valid, search_nonce, seed_hash

__all__ = [
    "ETHER",
    "OUTSIDE",
    "DevChain",
    "DevNode",
    "DevNodeRPC",
    "Fork",
    "Work",
    "boundary",
    "seal_is_valid",
    "search_nonce",
    "seed_hash",
    "start_dev_node",
]
