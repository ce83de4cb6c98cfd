"""The dev chain's JSON-RPC port, answering the methods an Ethereum-family
pool calls as geth and core-geth 1.x do over HTTP.

Replies are ``{"jsonrpc": "2.0", "id": ..., "result": ...}`` with HTTP 200,
errors too (``"error": {"code", "message"}``); quantities are minimal hex
(``"0x0"``), data is 0x-prefixed hex; arguments are read as strictly as geth
reads them (a quantity with a leading zero or a hash of the wrong length is
error -32602), so a pool that gets an answer here would get it from geth.
The pending block has no hash, nonce, miner or total difficulty, as geth
says of it.

Transactions come signed (eth_sendRawTransaction; the node holds no keys, so
there is no eth_sendTransaction) and are refused with geth's -32000 messages
(see ``DevChain.send``). Transaction and receipt objects are geth's: a pooled
transaction has null block fields and no receipt; a mined EIP-1559 one's
gasPrice is the price it paid; receipts carry effectiveGasPrice, and
``status`` from Byzantium on but the state ``root`` before it (the dev
chain's Homestead), as geth marshals them. Balances at "pending" are the
tip's; transaction counts at "pending" count the pool's gapless ones, as
geth's do. For fault tests, the methods in ``unavailable`` answer -32000
"service unavailable", and a request calling any method in ``disconnect``
gets no reply: the node drops the connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, cast

import rlp  # type: ignore[import-untyped]
from eth._utils.address import generate_contract_address
from eth.abc import (
    BlockAPI,
    BlockHeaderAPI,
    LegacyTransactionFieldsAPI,
    ReceiptAPI,
    SignedTransactionAPI,
)
from eth.constants import CREATE_CONTRACT_ADDRESS
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorTCP, ITCPTransport
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from .engine import DevChain, TransactionRefused, effective_gas_price

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_ERROR = -32000  # geth's code for "header not found" and the like
EXECUTION_REVERTED = 3  # geth's code for a call that reverted

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


def parse_bytes(value: Any, position: int) -> bytes:
    """0x-prefixed hex of any length, as geth's hexutil.Bytes."""
    if not isinstance(value, str) or not _DATA.fullmatch(value):
        raise RPCError(INVALID_PARAMS, f"invalid argument {position}: not 0x-prefixed hex: {value!r}")
    return bytes.fromhex(value[2:])


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


def transaction_fields(
    transaction: SignedTransactionAPI,
    block: BlockAPI | None = None,
    index: int | None = None,
    pending_block: bool = False,
) -> dict[str, Any]:
    """geth's RPCTransaction of a transaction in ``block`` at ``index``, or in the
    pool (``block`` None): then its block fields are null and its gasPrice is its
    fee cap. A transaction of the pending block has no block hash either."""
    to = bytes(transaction.to)
    type_id = transaction.type_id or 0
    price = transaction.max_fee_per_gas if block is None else effective_gas_price(transaction, block.header)
    fields: dict[str, Any] = {
        "blockHash": None if block is None or pending_block else data(block.hash),
        "blockNumber": None if block is None else quantity(block.number),
        "from": data(transaction.sender),
        "gas": quantity(transaction.gas),
        "gasPrice": quantity(price),
    }
    if type_id == 2:
        fields["maxFeePerGas"] = quantity(transaction.max_fee_per_gas)
        fields["maxPriorityFeePerGas"] = quantity(transaction.max_priority_fee_per_gas)
    fields.update(
        {
            "hash": data(transaction.hash),
            "input": data(transaction.data),
            "nonce": quantity(transaction.nonce),
            "to": None if to == CREATE_CONTRACT_ADDRESS else data(to),
            "transactionIndex": None if index is None else quantity(index),
            "value": quantity(transaction.value),
            "type": quantity(type_id),
        }
    )
    if type_id:
        fields["accessList"] = [
            {"address": data(address), "storageKeys": [data(key.to_bytes(32, "big")) for key in keys]}
            for address, keys in transaction.access_list
        ]
    if transaction.chain_id is not None:
        fields["chainId"] = quantity(transaction.chain_id)
    if type_id:
        fields["v"] = quantity(transaction.y_parity)
        fields["yParity"] = quantity(transaction.y_parity)
    else:
        fields["v"] = quantity(cast(LegacyTransactionFieldsAPI, transaction).v)
    fields["r"] = quantity(transaction.r)
    fields["s"] = quantity(transaction.s)
    return fields


def receipt_fields(
    block: BlockAPI, receipts: tuple[ReceiptAPI, ...], pending_block: bool = False
) -> list[dict[str, Any]]:
    """geth's receipts of every transaction of ``block``, in order."""
    block_hash = None if pending_block else data(block.hash)
    number = quantity(block.number)
    marshalled = []
    used = 0
    log_index = 0
    for index, (transaction, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
        to = bytes(transaction.to)
        sender = transaction.sender
        logs = []
        for log in receipt.logs:
            logs.append(
                {
                    "address": data(log.address),
                    "topics": [data(topic.to_bytes(32, "big")) for topic in log.topics],
                    "data": data(log.data),
                    "blockNumber": number,
                    "transactionHash": data(transaction.hash),
                    "transactionIndex": quantity(index),
                    "blockHash": block_hash,
                    "logIndex": quantity(log_index),
                    "removed": False,
                }
            )
            log_index += 1
        fields: dict[str, Any] = {
            "blockHash": block_hash,
            "blockNumber": number,
            "transactionHash": data(transaction.hash),
            "transactionIndex": quantity(index),
            "from": data(sender),
            "to": None if to == CREATE_CONTRACT_ADDRESS else data(to),
            "gasUsed": quantity(receipt.gas_used - used),
            "cumulativeGasUsed": quantity(receipt.gas_used),
            "contractAddress": (
                data(generate_contract_address(sender, transaction.nonce))
                if to == CREATE_CONTRACT_ADDRESS
                else None
            ),
            "logs": logs,
            "logsBloom": data(receipt.bloom.to_bytes(256, "big")),
            "type": quantity(transaction.type_id or 0),
            "effectiveGasPrice": quantity(effective_gas_price(transaction, block.header)),
        }
        # before Byzantium a receipt holds the state root after its transaction (32 bytes)
        if len(receipt.state_root) == 32:
            fields["root"] = data(receipt.state_root)
        else:
            fields["status"] = quantity(int.from_bytes(receipt.state_root, "big"))
        used = receipt.gas_used
        marshalled.append(fields)
    return marshalled


class DevNodeRPC(Resource):
    """The JSON-RPC resource of one dev chain. ``calls`` lists the methods
    called, in order; ``hashrates`` the last rate each miner id reported.
    A method in ``unavailable`` answers -32000 "service unavailable"; a request
    calling a method in ``disconnect`` is answered by dropping the connection."""

    isLeaf = True

    def __init__(self, chain: DevChain) -> None:
        super().__init__()
        self.chain = chain
        self.calls: list[str] = []
        self.hashrates: dict[str, int] = {}
        self.unavailable: set[str] = set()
        self.disconnect: set[str] = set()
        self._methods: dict[str, Method] = {
            "eth_getWork": self.eth_getWork,
            "eth_submitWork": self.eth_submitWork,
            "eth_submitHashrate": self.eth_submitHashrate,
            "eth_blockNumber": self.eth_blockNumber,
            "eth_getBlockByNumber": self.eth_getBlockByNumber,
            "eth_getBlockByHash": self.eth_getBlockByHash,
            "eth_getUncleByBlockNumberAndIndex": self.eth_getUncleByBlockNumberAndIndex,
            "eth_getBalance": self.eth_getBalance,
            "eth_sendRawTransaction": self.eth_sendRawTransaction,
            "eth_getTransactionCount": self.eth_getTransactionCount,
            "eth_getTransactionByHash": self.eth_getTransactionByHash,
            "eth_getTransactionReceipt": self.eth_getTransactionReceipt,
            "eth_getBlockReceipts": self.eth_getBlockReceipts,
            "eth_gasPrice": self.eth_gasPrice,
            "eth_maxPriorityFeePerGas": self.eth_maxPriorityFeePerGas,
            "eth_estimateGas": self.eth_estimateGas,
            "eth_chainId": lambda params: quantity(self.chain.chain_id),
            "net_version": lambda params: str(self.chain.chain_id),
            "eth_syncing": lambda params: False,
            "net_peerCount": lambda params: "0x1",
            "web3_clientVersion": lambda params: CLIENT_VERSION,
        }

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        try:
            message = json.loads(request.content.read())
        except ValueError:
            reply: Any = _error(None, PARSE_ERROR, "parse error")
        else:
            messages = message if isinstance(message, list) else [message]
            called = [
                m["method"] for m in messages if isinstance(m, dict) and isinstance(m.get("method"), str)
            ]
            if self.disconnect.intersection(called):
                self.calls.extend(called)
                cast(ITCPTransport, request.channel.transport).abortConnection()
                return NOT_DONE_YET
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
        if method in self.unavailable:
            return _error(request_id, SERVER_ERROR, "service unavailable")
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
            return self._block(self.chain.pending, full, pending=True)
        block = self.chain.block_at(self._number(tag))
        return None if block is None else self._block(block, full)

    def eth_getBlockByHash(self, params: list[Any]) -> dict[str, Any] | None:
        block_hash, full = arguments(params, 2)
        self._full(full)
        block = self.chain.block_by_hash(parse_data(block_hash, 0, 32))
        return None if block is None else self._block(block, full)

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
        # at "pending" the tip's: the pending block's reward and transactions are not counted
        number = self.chain.height if tag == "pending" else self._number(tag)
        block = self.chain.block_at(number)
        if block is None:
            raise RPCError(SERVER_ERROR, "header not found")
        return quantity(self.chain.balance(account, block.header))

    def eth_sendRawTransaction(self, params: list[Any]) -> str:
        (raw,) = arguments(params, 1)
        try:
            return data(self.chain.send(parse_bytes(raw, 0)))
        except TransactionRefused as e:
            raise RPCError(SERVER_ERROR, e.reason) from e

    def eth_getTransactionCount(self, params: list[Any]) -> str:
        address, tag = arguments(params, 2)
        account = parse_data(address, 0, 20)
        if tag == "pending":
            return quantity(self.chain.pending_nonce(account))
        block = self.chain.block_at(self._number(tag, 1))
        if block is None:
            raise RPCError(SERVER_ERROR, "header not found")
        return quantity(self.chain.nonce(account, block.header))

    def eth_getTransactionByHash(self, params: list[Any]) -> dict[str, Any] | None:
        (transaction_hash,) = arguments(params, 1)
        wanted = parse_data(transaction_hash, 0, 32)
        found = self.chain.find_transaction(wanted)
        if found is not None:
            block, index = found
            return transaction_fields(block.transactions[index], block, index)
        pooled = self.chain.pool_transaction(wanted)
        return None if pooled is None else transaction_fields(pooled)

    def eth_getTransactionReceipt(self, params: list[Any]) -> dict[str, Any] | None:
        (transaction_hash,) = arguments(params, 1)
        found = self.chain.find_transaction(parse_data(transaction_hash, 0, 32))
        if found is None:
            return None
        block, index = found
        return receipt_fields(block, self.chain.receipts(block))[index]

    def eth_getBlockReceipts(self, params: list[Any]) -> list[dict[str, Any]] | None:
        (tag,) = arguments(params, 1)
        if tag == "pending":
            pending = self.chain.pending
            return receipt_fields(pending, self.chain.receipts(pending), pending_block=True)
        if isinstance(tag, str) and len(tag) == 66:
            block = self.chain.block_by_hash(parse_data(tag, 0, 32))
        else:
            block = self.chain.block_at(self._number(tag))
        return None if block is None else receipt_fields(block, self.chain.receipts(block))

    def eth_gasPrice(self, params: list[Any]) -> str:
        """geth's suggestion: the tip, plus the tip's base fee on London."""
        arguments(params, 0)
        base_fee: int = getattr(self.chain.head.header, "base_fee_per_gas", None) or 0
        return quantity(self.chain.suggested_tip + base_fee)

    def eth_maxPriorityFeePerGas(self, params: list[Any]) -> str:
        arguments(params, 0)
        return quantity(self.chain.suggested_tip)

    def eth_estimateGas(self, params: list[Any]) -> str:
        call, tag = arguments(params, 1, 1)
        if not isinstance(call, dict):
            raise RPCError(INVALID_PARAMS, "invalid argument 0: not a transaction call object")
        sender = parse_data(call["from"], 0, 20) if call.get("from") is not None else bytes(20)
        to = parse_data(call["to"], 0, 20) if call.get("to") is not None else CREATE_CONTRACT_ADDRESS
        value = parse_quantity(call["value"], 0) if call.get("value") is not None else 0
        payload = call.get("input", call.get("data"))
        code = parse_bytes(payload, 0) if payload is not None else b""
        at = None
        if tag not in (None, "latest", "pending"):
            block = self.chain.block_at(self._number(tag, 1))
            if block is None:
                raise RPCError(SERVER_ERROR, "header not found")
            at = block.header
        try:
            gas = self.chain.estimate_gas(sender, to, value, code, at=at)
        except TransactionRefused as e:
            code_of = EXECUTION_REVERTED if e.reason == "execution reverted" else SERVER_ERROR
            raise RPCError(code_of, e.reason) from e
        if call.get("gas") is not None:
            allowance = parse_quantity(call["gas"], 0)
            if gas > allowance:
                raise RPCError(SERVER_ERROR, f"gas required exceeds allowance ({allowance})")
        return quantity(gas)

    # --- inside ---

    def _number(self, tag: Any, position: int = 0) -> int:
        if tag == "latest":
            return self.chain.height
        if tag == "earliest":
            return 0
        return parse_quantity(tag, position)

    @staticmethod
    def _full(full: Any) -> None:
        if not isinstance(full, bool):
            raise RPCError(INVALID_PARAMS, "invalid argument 1: not a boolean")

    def _total_difficulty(self, block_hash: bytes) -> str | None:
        if self.chain.block_by_hash(block_hash) is None:
            return None
        return quantity(self.chain.total_difficulty(block_hash))

    def _block(self, block: BlockAPI, full: bool, pending: bool = False) -> dict[str, Any]:
        fields = header_fields(block.header)
        fields["size"] = quantity(len(rlp.encode(block)))
        fields["totalDifficulty"] = None if pending else self._total_difficulty(block.hash)
        fields["uncles"] = [data(uncle.hash) for uncle in block.uncles]
        fields["transactions"] = [
            transaction_fields(transaction, block, index, pending_block=pending)
            if full
            else data(transaction.hash)
            for index, transaction in enumerate(block.transactions)
        ]
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
