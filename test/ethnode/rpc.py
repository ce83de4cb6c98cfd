"""The dev chain's JSON-RPC port, answering the methods an Ethereum-family
pool calls as geth and core-geth 1.x do over HTTP.

Replies are ``{"jsonrpc": "2.0", "id": ..., "result": ...}`` with HTTP 200,
errors too (``"error": {"code", "message"}``); quantities are minimal hex
(``"0x0"``), data is 0x-prefixed hex; arguments are read as strictly as geth
reads them (a quantity with a leading zero or a hash of the wrong length is
error -32602), so a pool that gets an answer here would get it from geth.
The pending block has no hash, nonce, miner or total difficulty, as geth
says of it. The node never includes transactions: every block's list is
empty, and there is no eth_sendTransaction yet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import rlp  # type: ignore[import-untyped]
from eth.abc import BlockAPI, BlockHeaderAPI
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from .engine import DevChain

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_ERROR = -32000  # geth's code for "header not found" and the like

CLIENT_VERSION = "nomp-devnode/py-evm"
_QUANTITY = re.compile(r"0[xX](0|[1-9a-fA-F][0-9a-fA-F]*)")
_DATA = re.compile(r"0[xX]([0-9a-fA-F]{2})*")

Method = Callable[[list[Any]], Any]


class RPCError(Exception):
    """A JSON-RPC error reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def quantity(value: int) -> str:
    return hex(value)


def data(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def parse_quantity(value: Any, position: int) -> int:
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
        raise RPCError(INVALID_PARAMS, f"invalid argument {position}: not a hex quantity: {value!r}")
    return int(value, 16)


def parse_data(value: Any, position: int, length: int) -> bytes:
    """0x-prefixed hex of exactly ``length`` bytes, as geth's fixed-size types want."""
    if not isinstance(value, str) or not _DATA.fullmatch(value):
        raise RPCError(INVALID_PARAMS, f"invalid argument {position}: not 0x-prefixed hex: {value!r}")
    raw = bytes.fromhex(value[2:])
    if len(raw) != length:
        raise RPCError(
            INVALID_PARAMS,
            f"invalid argument {position}: hex string has length {2 * len(raw)}, want {2 * length}",
        )
    return raw


def arguments(params: list[Any], required: int, optional: int = 0) -> list[Any]:
    """``params`` padded with None up to ``required + optional``, after geth's count checks."""
    if len(params) > required + optional:
        raise RPCError(INVALID_PARAMS, f"too many arguments, want at most {required + optional}")
    if len(params) < required:
        raise RPCError(INVALID_PARAMS, f"missing value for required argument {len(params)}")
    return params + [None] * (required + optional - len(params))


def header_fields(header: BlockHeaderAPI) -> dict[str, Any]:
    """geth's RPCMarshalHeader."""
    fields: dict[str, Any] = {
        "number": quantity(header.block_number),
        "hash": data(header.hash),
        "parentHash": data(header.parent_hash),
        "nonce": data(header.nonce),
        "mixHash": data(header.mix_hash),
        "sha3Uncles": data(header.uncles_hash),
        "logsBloom": data(header.bloom.to_bytes(256, "big")),
        "stateRoot": data(header.state_root),
        "miner": data(header.coinbase),
        "difficulty": quantity(header.difficulty),
        "extraData": data(header.extra_data),
        "gasLimit": quantity(header.gas_limit),
        "gasUsed": quantity(header.gas_used),
        "timestamp": quantity(header.timestamp),
        "transactionsRoot": data(header.transaction_root),
        "receiptsRoot": data(header.receipt_root),
    }
    base_fee = getattr(header, "base_fee_per_gas", None)  # London headers only
    if base_fee is not None:
        fields["baseFeePerGas"] = quantity(base_fee)
    return fields


class DevNodeRPC(Resource):
    """The JSON-RPC resource of one dev chain. ``calls`` lists the methods
    called, in order; ``hashrates`` the last rate each miner id reported."""

    isLeaf = True

    def __init__(self, chain: DevChain) -> None:
        super().__init__()
        self.chain = chain
        self.calls: list[str] = []
        self.hashrates: dict[str, int] = {}
        self._methods: dict[str, Method] = {
            "eth_getWork": self.eth_getWork,
            "eth_submitWork": self.eth_submitWork,
            "eth_submitHashrate": self.eth_submitHashrate,
            "eth_blockNumber": self.eth_blockNumber,
            "eth_getBlockByNumber": self.eth_getBlockByNumber,
            "eth_getBlockByHash": self.eth_getBlockByHash,
            "eth_getUncleByBlockNumberAndIndex": self.eth_getUncleByBlockNumberAndIndex,
            "eth_getBalance": self.eth_getBalance,
            "eth_chainId": lambda params: quantity(self.chain.chain_id),
            "net_version": lambda params: str(self.chain.chain_id),
            "eth_syncing": lambda params: False,
            "net_peerCount": lambda params: "0x1",
            "web3_clientVersion": lambda params: CLIENT_VERSION,
        }

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        try:
            message = json.loads(request.content.read())
        except ValueError:
            reply: Any = _error(None, PARSE_ERROR, "parse error")
        else:
            if isinstance(message, list):
                reply = [self._answer(m) for m in message] or _error(None, INVALID_REQUEST, "empty batch")
            else:
                reply = self._answer(message)
        request.setHeader("Content-Type", "application/json")
        return json.dumps(reply).encode() + b"\n"

    def _answer(self, message: Any) -> dict[str, Any]:
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            return _error(None, INVALID_REQUEST, "invalid request")
        request_id, method = message.get("id"), message["method"]
        self.calls.append(method)
        handler = self._methods.get(method)
        if handler is None:
            return _error(
                request_id, METHOD_NOT_FOUND, f"the method {method} does not exist/is not available"
            )
        params = message.get("params")
        if params is None:
            params = []
        if not isinstance(params, list):
            return _error(request_id, INVALID_PARAMS, "non-array args")
        try:
            result = handler(params)
        except RPCError as e:
            return _error(request_id, e.code, e.message)
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    # --- the methods ---

    def eth_getWork(self, params: list[Any]) -> list[str]:
        arguments(params, 0)
        return self.chain.work().as_rpc()

    def eth_submitWork(self, params: list[Any]) -> bool:
        nonce, header_hash, mix_digest = arguments(params, 3)
        return self.chain.submit(
            int.from_bytes(parse_data(nonce, 0, 8), "big"),
            parse_data(header_hash, 1, 32),
            parse_data(mix_digest, 2, 32),
        )

    def eth_submitHashrate(self, params: list[Any]) -> bool:
        rate, miner_id = arguments(params, 2)
        self.hashrates[data(parse_data(miner_id, 1, 32))] = parse_quantity(rate, 0)
        return True

    def eth_blockNumber(self, params: list[Any]) -> str:
        arguments(params, 0)
        return quantity(self.chain.height)

    def eth_getBlockByNumber(self, params: list[Any]) -> dict[str, Any] | None:
        tag, full = arguments(params, 2)
        self._full(full)
        if tag == "pending":
            return self._block(self.chain.pending, pending=True)
        block = self.chain.block_at(self._number(tag))
        return None if block is None else self._block(block)

    def eth_getBlockByHash(self, params: list[Any]) -> dict[str, Any] | None:
        block_hash, full = arguments(params, 2)
        self._full(full)
        block = self.chain.block_by_hash(parse_data(block_hash, 0, 32))
        return None if block is None else self._block(block)

    def eth_getUncleByBlockNumberAndIndex(self, params: list[Any]) -> dict[str, Any] | None:
        tag, index = arguments(params, 2)
        position = parse_quantity(index, 1)
        block = self.chain.pending if tag == "pending" else self.chain.block_at(self._number(tag))
        if block is None or position >= len(block.uncles):
            return None
        uncle = block.uncles[position]
        # geth marshals an uncle as a block of that header alone
        fields = header_fields(uncle)
        fields["size"] = quantity(len(rlp.encode([uncle, [], []])))
        fields["uncles"] = []
        fields["totalDifficulty"] = self._total_difficulty(uncle.hash)
        return fields

    def eth_getBalance(self, params: list[Any]) -> str:
        address, tag = arguments(params, 2)
        account = parse_data(address, 0, 20)
        # the pending block's state is the tip's until it is sealed: read the tip
        number = self.chain.height if tag == "pending" else self._number(tag)
        block = self.chain.block_at(number)
        if block is None:
            raise RPCError(SERVER_ERROR, "header not found")
        return quantity(self.chain.balance(account, block.header))

    # --- inside ---

    def _number(self, tag: Any) -> int:
        if tag == "latest":
            return self.chain.height
        if tag == "earliest":
            return 0
        return parse_quantity(tag, 0)

    @staticmethod
    def _full(full: Any) -> None:
        if not isinstance(full, bool):
            raise RPCError(INVALID_PARAMS, "invalid argument 1: not a boolean")

    def _total_difficulty(self, block_hash: bytes) -> str | None:
        if self.chain.block_by_hash(block_hash) is None:
            return None
        return quantity(self.chain.total_difficulty(block_hash))

    def _block(self, block: BlockAPI, pending: bool = False) -> dict[str, Any]:
        fields = header_fields(block.header)
        fields["size"] = quantity(len(rlp.encode(block)))
        fields["totalDifficulty"] = None if pending else self._total_difficulty(block.hash)
        fields["uncles"] = [data(uncle.hash) for uncle in block.uncles]
        fields["transactions"] = []
        if pending:
            fields["hash"] = fields["nonce"] = fields["miner"] = None
        return fields


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


class DevNode:
    """A dev chain and its JSON-RPC port on a free loopback port."""

    def __init__(self, chain: DevChain, reactor: IReactorTCP | None = None) -> None:
        self.chain = chain
        self.rpc = DevNodeRPC(chain)
        self._reactor: IReactorTCP = reactor if reactor is not None else global_reactor
        self._port: IListeningPort | None = None

    def listen(self) -> DevNode:
        site: Any = Site(self.rpc)
        self._port = self._reactor.listenTCP(0, site, interface="127.0.0.1")
        return self

    @property
    def port(self) -> int:
        assert self._port is not None, "listen() first"
        return int(self._port.getHost().port)  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> Deferred[None]:
        if self._port is None:
            return succeed(None)
        port, self._port = self._port, None
        stopped = port.stopListening()
        return stopped if stopped is not None else succeed(None)


def start_dev_node(test: TestCase, etherbase: bytes, **chain_options: Any) -> DevNode:
    """A dev node listening for ``test``, stopped at its end; ``chain_options``
    go to ``DevChain`` (fork, difficulty, chain_id, alloc, gas_limit, clock)."""
    node = DevNode(DevChain(etherbase, **chain_options)).listen()
    test.addCleanup(node.stop)
    return node
