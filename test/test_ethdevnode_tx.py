"""Transactions on the Ethereum-family dev node (test/ethnode), over its
JSON-RPC port on loopback: signed with py-evm's own tooling, refused with
geth's messages, pooled by sender and nonce, mined into the block a seal
found with PyPI ethash imports, and paid for to the wei.
"""

from __future__ import annotations

import json
from typing import Any

import ethash
import rlp  # type: ignore[import-untyped]
import treq
from eth.constants import SECPK1_N
from eth_keys.datatypes import PrivateKey
from eth_typing import Address
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web._newclient import ResponseNeverReceived
from twisted.web.client import HTTPConnectionPool

from test.ethnode import (
    ETHER,
    GWEI,
    DevChain,
    DevNode,
    Fork,
    TransactionRefused,
    sign_transaction,
    start_dev_node,
)
from test.ethnode.engine import DevHomesteadVM
from test.test_ethdevnode import seal_hash, solve

ETHERBASE = bytes.fromhex("5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c")
DIFFICULTY = 16
CHAIN_ID = 1337
ALICE = PrivateKey(b"\x01" * 32)
BOB = PrivateKey(b"\x02" * 32)
ALICE_HEX = ALICE.public_key.to_checksum_address().lower()
BOB_HEX = BOB.public_key.to_checksum_address().lower()
CAROL = bytes.fromhex("ca" * 20)  # an account without code nobody signs for
CAROL_HEX = "0x" + CAROL.hex()
FUNDS = 10 * ETHER
TRANSFER_GAS = 21_000
HOMESTEAD_REWARD = 5 * ETHER
LONDON_REWARD = 2 * ETHER


def q(value: str) -> int:
    """A hex quantity of a reply."""
    return int(value, 16)


class TransactionTestCase(TestCase):
    """A dev node with Alice and Bob funded in genesis, and a JSON-RPC client over real HTTP."""

    timeout = 60
    fork: Fork = "homestead"

    def setUp(self) -> None:
        alloc = {ALICE.public_key.to_canonical_address(): FUNDS, BOB.public_key.to_canonical_address(): FUNDS}
        self.node: DevNode = start_dev_node(
            self, ETHERBASE, fork=self.fork, difficulty=DIFFICULTY, alloc=alloc
        )
        self.http = HTTPConnectionPool(reactor)
        self.addCleanup(self.http.closeCachedConnections)

    async def reply(self, method: str, *params: Any) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}
        response = await treq.post(self.node.url, json.dumps(body).encode(), pool=self.http)
        self.assertEqual(response.code, 200)
        reply: dict[str, Any] = json.loads(await response.content())
        self.assertEqual((reply["jsonrpc"], reply["id"]), ("2.0", 7))
        return reply

    async def call(self, method: str, *params: Any) -> Any:
        reply = await self.reply(method, *params)
        self.assertNotIn("error", reply)
        return reply["result"]

    async def error(self, method: str, *params: Any) -> tuple[int, str]:
        reply = await self.reply(method, *params)
        self.assertNotIn("result", reply)
        return reply["error"]["code"], reply["error"]["message"]

    async def balance(self, address: str, tag: str = "latest") -> int:
        return q(await self.call("eth_getBalance", address, tag))

    async def count(self, address: str, tag: str) -> int:
        return q(await self.call("eth_getTransactionCount", address, tag))

    def sign(self, key: PrivateKey, nonce: int, value: int = ETHER, **fields: Any) -> str:
        """A transfer to Carol, legacy at 2 gwei unless fees are given."""
        if "max_fee_per_gas" not in fields:
            fields.setdefault("gas_price", 2 * GWEI)
        fields.setdefault("to", CAROL)
        fields.setdefault("chain_id", CHAIN_ID)
        raw = sign_transaction(self.fork, key, nonce=nonce, value=value, **fields)
        return "0x" + raw.hex()

    async def send(self, raw: str) -> str:
        transaction_hash: str = await self.call("eth_sendRawTransaction", raw)
        self.assertEqual(transaction_hash, "0x" + ethash.keccak_256(bytes.fromhex(raw[2:])).hex())
        return transaction_hash

    async def mine_through_work(self) -> dict[str, Any]:
        """The pending block, sealed with PyPI ethash through eth_getWork and
        eth_submitWork; returns it as the node reports it at its height."""
        work = await self.call("eth_getWork")
        pending = await self.call("eth_getBlockByNumber", "pending", False)
        self.assertIs(await self.call("eth_submitWork", *solve(work)), True)
        block: dict[str, Any] = await self.call("eth_getBlockByNumber", work[3], True)
        self.assertEqual(seal_hash(block), work[0], "the block sealed is the work's, transactions and all")
        self.assertEqual(block["transactionsRoot"], pending["transactionsRoot"])
        return block


class HomesteadTransactionTests(TransactionTestCase):
    """Legacy transactions signed for the chain id (EIP-155) on the Homestead dev chain."""

    async def test_transfer_mined_through_work(self) -> None:
        """A transfer waits in the pool, is in the pending block the work is of,
        and the block sealed for that work carries it: value to Carol, gas at its
        price from Alice to the miner, a receipt with a state root (pre-Byzantium)."""
        raw = self.sign(ALICE, 0)
        transaction_hash = await self.send(raw)
        pooled = await self.call("eth_getTransactionByHash", transaction_hash)
        self.assertEqual(
            (pooled["blockHash"], pooled["blockNumber"], pooled["transactionIndex"]), (None, None, None)
        )
        self.assertEqual((pooled["from"], pooled["to"], pooled["nonce"]), (ALICE_HEX, CAROL_HEX, "0x0"))
        self.assertEqual((pooled["value"], pooled["gas"]), (hex(ETHER), hex(TRANSFER_GAS)))
        self.assertEqual(
            (pooled["gasPrice"], pooled["type"], pooled["chainId"]), (hex(2 * GWEI), "0x0", "0x539")
        )
        self.assertIn(q(pooled["v"]), (2 * CHAIN_ID + 35, 2 * CHAIN_ID + 36))
        self.assertIsNone(await self.call("eth_getTransactionReceipt", transaction_hash))
        self.assertEqual(
            (await self.count(ALICE_HEX, "latest"), await self.count(ALICE_HEX, "pending")), (0, 1)
        )

        pending = await self.call("eth_getBlockByNumber", "pending", True)
        self.assertEqual([t["hash"] for t in pending["transactions"]], [transaction_hash])
        self.assertEqual(pending["transactions"][0]["blockHash"], None)
        block = await self.mine_through_work()
        self.assertEqual(block["miner"], "0x" + ETHERBASE.hex())
        self.assertEqual(q(block["gasUsed"]), TRANSFER_GAS)
        mined = block["transactions"][0]
        self.assertEqual((mined["blockHash"], mined["blockNumber"]), (block["hash"], "0x1"))
        self.assertEqual(mined["transactionIndex"], "0x0")
        self.assertEqual(mined, await self.call("eth_getTransactionByHash", transaction_hash))
        hashes = await self.call("eth_getBlockByHash", block["hash"], False)
        self.assertEqual(hashes["transactions"], [transaction_hash])

        receipt = await self.call("eth_getTransactionReceipt", transaction_hash)
        self.assertEqual((receipt["blockHash"], receipt["blockNumber"]), (block["hash"], "0x1"))
        self.assertEqual((receipt["transactionHash"], receipt["transactionIndex"]), (transaction_hash, "0x0"))
        self.assertEqual(
            (receipt["from"], receipt["to"], receipt["contractAddress"]), (ALICE_HEX, CAROL_HEX, None)
        )
        self.assertEqual(
            (q(receipt["gasUsed"]), q(receipt["cumulativeGasUsed"])), (TRANSFER_GAS, TRANSFER_GAS)
        )
        self.assertEqual(
            (receipt["effectiveGasPrice"], receipt["logs"], receipt["type"]), (hex(2 * GWEI), [], "0x0")
        )
        self.assertNotIn("status", receipt, "before Byzantium geth gives the state root instead")
        self.assertEqual(len(receipt["root"]), 66)
        self.assertEqual(await self.call("eth_getBlockReceipts", "0x1"), [receipt])
        self.assertEqual(await self.call("eth_getBlockReceipts", block["hash"]), [receipt])

        fee = TRANSFER_GAS * 2 * GWEI
        self.assertEqual(await self.balance(ALICE_HEX), FUNDS - ETHER - fee)
        self.assertEqual(await self.balance(CAROL_HEX), ETHER)
        self.assertEqual(await self.balance("0x" + ETHERBASE.hex()), HOMESTEAD_REWARD + fee)
        self.assertEqual(await self.balance(ALICE_HEX, "0x0"), FUNDS)
        self.assertEqual(
            (await self.count(ALICE_HEX, "latest"), await self.count(ALICE_HEX, "pending")), (1, 1)
        )
        self.assertEqual(await self.count(ALICE_HEX, "0x0"), 0)
        self.assertEqual(self.node.chain.pending_transactions, ())
        self.assertEqual((await self.call("eth_getBlockByNumber", "pending", False))["transactions"], [])

    async def test_refused_transactions(self) -> None:
        """geth's -32000 refusals, and none of the refused reaches the pool."""
        self.node.chain.mine()  # at nothing but height 1
        first = await self.send(self.sign(ALICE, 0))
        self.node.chain.mine()
        self.assertEqual(await self.count(ALICE_HEX, "latest"), 1)

        async def refused(raw: str) -> str:
            code, message = await self.error("eth_sendRawTransaction", raw)
            self.assertEqual(code, -32000)
            return message

        pending = self.sign(ALICE, 1)
        replaced = await self.send(pending)
        self.assertEqual(await refused(pending), "already known")
        self.assertEqual(await refused(self.sign(ALICE, 0, value=2)), "nonce too low")
        self.assertEqual(
            await refused(self.sign(ALICE, 1, gas_price=2 * GWEI * 105 // 100)),
            "replacement transaction underpriced",
        )
        self.assertEqual(
            await refused(self.sign(BOB, 0, value=FUNDS)), "insufficient funds for gas * price + value"
        )
        self.assertEqual(await refused(self.sign(BOB, 0, gas_price=0)), "transaction underpriced")
        self.assertEqual(await refused(self.sign(BOB, 0, gas=TRANSFER_GAS - 1)), "intrinsic gas too low")
        self.assertEqual(await refused(self.sign(BOB, 0, gas=9_000_000)), "exceeds block gas limit")
        self.assertEqual(
            await refused(self.sign(BOB, 0, gas_price=10**14)),
            "tx fee (2.10 ether) exceeds the configured cap (1.00 ether)",
        )
        self.assertEqual(await refused(self.sign(BOB, 0, chain_id=61)), "invalid sender")
        self.assertEqual(
            await refused(self.sign(BOB, 0, chain_id=0)),
            "only replay-protected (EIP-155) transactions allowed over RPC",
        )
        # the same signature with s mirrored into the upper half (EIP-2 malleability)
        fields = rlp.decode(bytes.fromhex(self.sign(BOB, 0)[2:]))
        fields[8] = (SECPK1_N - int.from_bytes(fields[8], "big")).to_bytes(32, "big")
        self.assertEqual(await refused("0x" + rlp.encode(fields).hex()), "invalid sender")
        self.assertTrue((await refused("0x" + rlp.encode([b"\x01", b"\x02"]).hex())).startswith("rlp:"))
        dynamic = sign_transaction(
            "london",
            BOB,
            chain_id=CHAIN_ID,
            nonce=0,
            to=CAROL,
            value=1,
            max_fee_per_gas=GWEI,
            max_priority_fee_per_gas=GWEI,
        )
        self.assertEqual(await refused("0x" + dynamic.hex()), "transaction type not supported")
        self.assertEqual((await self.error("eth_sendRawTransaction", "0xabc"))[0], -32602)
        self.assertEqual((await self.error("eth_sendRawTransaction"))[0], -32602)

        replacement = await self.send(self.sign(ALICE, 1, gas_price=2 * GWEI * 110 // 100))
        self.assertEqual([t.hash.hex() for t in self.node.chain.pending_transactions], [replacement[2:]])
        self.assertIsNone(await self.call("eth_getTransactionByHash", replaced))
        self.assertEqual(await self.count(BOB_HEX, "pending"), 0)
        self.assertEqual((await self.call("eth_getTransactionReceipt", first))["blockNumber"], "0x2")

    async def test_queued_transaction_waits_for_the_gap(self) -> None:
        """A nonce ahead of the account's is taken and waits (geth's queued
        transactions): the pending count and block leave it out until the
        missing nonce arrives; then both go into one block, in nonce order."""
        ahead = await self.send(self.sign(ALICE, 1))
        self.assertEqual(await self.count(ALICE_HEX, "pending"), 0)
        self.assertIsNone((await self.call("eth_getTransactionByHash", ahead))["blockHash"])
        self.assertEqual([t.hash.hex() for t in self.node.chain.queued_transactions], [ahead[2:]])
        empty = await self.mine_through_work()
        self.assertEqual(empty["transactions"], [])
        self.assertEqual(await self.count(ALICE_HEX, "latest"), 0)

        gap = await self.send(self.sign(ALICE, 0))
        self.assertEqual(await self.count(ALICE_HEX, "pending"), 2)
        self.assertEqual(self.node.chain.queued_transactions, ())
        block = await self.mine_through_work()
        self.assertEqual([t["hash"] for t in block["transactions"]], [gap, ahead])
        receipts = await self.call("eth_getBlockReceipts", block["number"])
        self.assertEqual([r["transactionIndex"] for r in receipts], ["0x0", "0x1"])
        self.assertEqual([q(r["gasUsed"]) for r in receipts], [TRANSFER_GAS, TRANSFER_GAS])
        self.assertEqual([q(r["cumulativeGasUsed"]) for r in receipts], [TRANSFER_GAS, 2 * TRANSFER_GAS])
        self.assertEqual(await self.balance(CAROL_HEX), 2 * ETHER)
        self.assertEqual(await self.count(ALICE_HEX, "latest"), 2)

    async def test_several_senders_in_one_block(self) -> None:
        """Bob's better-paid transaction goes first, then Alice's two in nonce
        order; the miner's fees are what the block's receipts add up to."""
        alice = [await self.send(self.sign(ALICE, n, value=ETHER + n)) for n in (0, 1)]
        bob = await self.send(self.sign(BOB, 0, value=3, gas_price=3 * GWEI))
        block = await self.mine_through_work()
        self.assertEqual([t["hash"] for t in block["transactions"]], [bob, *alice])
        self.assertEqual([t["from"] for t in block["transactions"]], [BOB_HEX, ALICE_HEX, ALICE_HEX])
        receipts = await self.call("eth_getBlockReceipts", "latest")
        fees = sum(q(r["gasUsed"]) * q(r["effectiveGasPrice"]) for r in receipts)
        self.assertEqual(fees, TRANSFER_GAS * (3 + 2 + 2) * GWEI)
        self.assertEqual(await self.balance("0x" + ETHERBASE.hex()), HOMESTEAD_REWARD + fees)
        self.assertEqual(await self.balance(ALICE_HEX), FUNDS - 2 * ETHER - 1 - 2 * TRANSFER_GAS * 2 * GWEI)
        self.assertEqual(await self.balance(BOB_HEX), FUNDS - 3 - TRANSFER_GAS * 3 * GWEI)
        self.assertEqual(await self.balance(CAROL_HEX), 2 * ETHER + 4)

    async def test_reorged_transaction_returns_to_the_pool(self) -> None:
        """A block with a transaction is replaced by a heavier branch without it:
        the transaction has no receipt, is pending again (geth re-injects it),
        its sender's balance and count are back, and the next block carries it."""
        transaction_hash = await self.send(self.sign(ALICE, 0))
        block = await self.mine_through_work()
        self.assertEqual([t["hash"] for t in block["transactions"]], [transaction_hash])
        branch = self.node.chain.reorg(1)
        self.assertEqual([len(b.transactions) for b in branch], [0, 0])
        self.assertIsNone(await self.call("eth_getTransactionReceipt", transaction_hash))
        again = await self.call("eth_getTransactionByHash", transaction_hash)
        self.assertEqual((again["blockHash"], again["blockNumber"]), (None, None))
        self.assertEqual(await self.balance(ALICE_HEX), FUNDS)
        self.assertEqual(
            (await self.count(ALICE_HEX, "latest"), await self.count(ALICE_HEX, "pending")), (0, 1)
        )
        self.assertEqual(
            (await self.call("eth_getBlockByHash", block["hash"], False))["transactions"], [transaction_hash]
        )
        remined = await self.mine_through_work()
        self.assertEqual(remined["number"], "0x3")
        receipt = await self.call("eth_getTransactionReceipt", transaction_hash)
        self.assertEqual((receipt["blockNumber"], receipt["blockHash"]), ("0x3", remined["hash"]))
        self.assertEqual(await self.balance(ALICE_HEX), FUNDS - ETHER - TRANSFER_GAS * 2 * GWEI)

    async def test_dropped_and_refused(self) -> None:
        """A dropped transaction is gone (never mined, no longer known), and its
        sender's later one waits behind the gap; while ``refuse`` is set, every
        transaction is refused with its message."""
        chain = self.node.chain
        first = await self.send(self.sign(ALICE, 0))
        second = await self.send(self.sign(ALICE, 1))
        self.assertEqual([t.hash.hex() for t in chain.drop_pending(bytes.fromhex(first[2:]))], [first[2:]])
        self.assertIsNone(await self.call("eth_getTransactionByHash", first))
        self.assertEqual([t.hash.hex() for t in chain.queued_transactions], [second[2:]])
        self.assertEqual(await self.count(ALICE_HEX, "pending"), 0)
        self.assertEqual((await self.mine_through_work())["transactions"], [])
        chain.refuse = "txpool is full"
        self.assertEqual(
            await self.error("eth_sendRawTransaction", self.sign(ALICE, 0)), (-32000, "txpool is full")
        )
        chain.refuse = None
        await self.send(self.sign(ALICE, 0))
        self.assertEqual(len(chain.drop_pending()), 2)
        self.assertEqual((chain.pending_transactions, chain.queued_transactions), ((), ()))

    async def test_unavailable_and_disconnected_methods(self) -> None:
        """A method made unavailable answers -32000; one set to disconnect gets
        its connection dropped without a reply; the others answer as before."""
        rpc = self.node.rpc
        rpc.unavailable.add("eth_sendRawTransaction")
        self.assertEqual(
            await self.error("eth_sendRawTransaction", self.sign(ALICE, 0)), (-32000, "service unavailable")
        )
        self.assertEqual(self.node.chain.pending_transactions, ())
        rpc.disconnect.add("eth_getTransactionReceipt")
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getTransactionReceipt",
            "params": ["0x" + "00" * 32],
        }
        with self.assertRaises(ResponseNeverReceived):
            await treq.post(self.node.url, json.dumps(body).encode(), pool=self.http)
        self.assertEqual(rpc.calls[-2:], ["eth_sendRawTransaction", "eth_getTransactionReceipt"])
        self.assertEqual(await self.call("eth_blockNumber"), "0x0")
        rpc.unavailable.clear()
        await self.send(self.sign(ALICE, 0))

    async def test_gas_price_and_estimates(self) -> None:
        """eth_gasPrice and eth_maxPriorityFeePerGas suggest the node's tip (1 gwei);
        eth_estimateGas runs py-evm: 21,000 for a transfer, data priced by
        Homestead's 68 a non-zero byte and 4 a zero one, 53,000 to create an
        empty contract, geth's -32000 when the value is more than the funds."""
        self.assertEqual(await self.call("eth_gasPrice"), hex(GWEI))
        self.assertEqual(await self.call("eth_maxPriorityFeePerGas"), hex(GWEI))
        transfer = {"from": ALICE_HEX, "to": CAROL_HEX, "value": hex(ETHER)}
        self.assertEqual(q(await self.call("eth_estimateGas", transfer)), TRANSFER_GAS)
        self.assertEqual(q(await self.call("eth_estimateGas", transfer, "latest")), TRANSFER_GAS)
        with_data = dict(transfer, data="0x0100")
        self.assertEqual(q(await self.call("eth_estimateGas", with_data)), TRANSFER_GAS + 68 + 4)
        self.assertEqual(q(await self.call("eth_estimateGas", {"from": ALICE_HEX})), 53_000)
        too_much = dict(transfer, value=hex(FUNDS + 1))
        self.assertEqual(
            await self.error("eth_estimateGas", too_much), (-32000, "insufficient funds for transfer")
        )
        self.assertEqual(
            await self.error("eth_estimateGas", dict(transfer, gas="0x5000")),
            (-32000, "gas required exceeds allowance (20480)"),
        )


class LondonTransactionTests(TransactionTestCase):
    """EIP-1559 transactions on the London dev chain: the base fee burned, the tip to the miner."""

    fork: Fork = "london"

    async def test_dynamic_fee_transfer(self) -> None:
        """An EIP-1559 transfer pays the block's base fee plus its tip a unit of
        gas: the base fee is burned, only the tip reaches the miner."""
        raw = self.sign(ALICE, 0, max_fee_per_gas=2 * GWEI, max_priority_fee_per_gas=GWEI)
        transaction_hash = await self.send(raw)
        pooled = await self.call("eth_getTransactionByHash", transaction_hash)
        self.assertEqual((pooled["type"], pooled["chainId"], pooled["accessList"]), ("0x2", "0x539", []))
        self.assertEqual((pooled["maxFeePerGas"], pooled["maxPriorityFeePerGas"]), (hex(2 * GWEI), hex(GWEI)))
        self.assertEqual(pooled["gasPrice"], hex(2 * GWEI), "a pooled one's gas price is its fee cap")
        self.assertEqual(pooled["v"], pooled["yParity"])
        block = await self.mine_through_work()
        base_fee = q(block["baseFeePerGas"])
        self.assertLess(base_fee, GWEI)
        price = base_fee + GWEI
        receipt = await self.call("eth_getTransactionReceipt", transaction_hash)
        self.assertEqual((receipt["status"], receipt["type"]), ("0x1", "0x2"))
        self.assertNotIn("root", receipt)
        self.assertEqual(q(receipt["effectiveGasPrice"]), price)
        self.assertEqual(
            q((await self.call("eth_getTransactionByHash", transaction_hash))["gasPrice"]), price
        )
        self.assertEqual(await self.balance(ALICE_HEX), FUNDS - ETHER - TRANSFER_GAS * price)
        self.assertEqual(await self.balance("0x" + ETHERBASE.hex()), LONDON_REWARD + TRANSFER_GAS * GWEI)
        self.assertEqual(await self.balance(CAROL_HEX), ETHER)
        held = sum([await self.balance(a) for a in (ALICE_HEX, BOB_HEX, CAROL_HEX, "0x" + ETHERBASE.hex())])
        self.assertEqual(held, 2 * FUNDS + LONDON_REWARD - TRANSFER_GAS * base_fee, "the base fee is burned")

    async def test_legacy_transaction_on_london(self) -> None:
        """A legacy transaction pays its whole gas price; the miner gets what is over the base fee."""
        transaction_hash = await self.send(self.sign(ALICE, 0, gas_price=2 * GWEI))
        block = await self.mine_through_work()
        base_fee = q(block["baseFeePerGas"])
        receipt = await self.call("eth_getTransactionReceipt", transaction_hash)
        self.assertEqual((receipt["type"], receipt["effectiveGasPrice"]), ("0x0", hex(2 * GWEI)))
        mined = await self.call("eth_getTransactionByHash", transaction_hash)
        self.assertEqual(
            (mined["type"], mined["gasPrice"], mined["chainId"]), ("0x0", hex(2 * GWEI), "0x539")
        )
        self.assertNotIn("maxFeePerGas", mined)
        self.assertEqual(
            await self.balance("0x" + ETHERBASE.hex()), LONDON_REWARD + TRANSFER_GAS * (2 * GWEI - base_fee)
        )
        self.assertEqual(await self.balance(ALICE_HEX), FUNDS - ETHER - TRANSFER_GAS * 2 * GWEI)

    async def test_fee_cap_under_the_base_fee_waits(self) -> None:
        """A fee cap under the next block's base fee is taken but waits, as in geth,
        until the base fee (down an eighth a block without transactions) is under
        it; then it pays its whole fee cap, the tip being what the cap leaves."""
        pending = await self.call("eth_getBlockByNumber", "pending", False)
        self.assertEqual(q(pending["baseFeePerGas"]), GWEI * 7 // 8)
        fee_cap = GWEI * 8 // 10
        transaction_hash = await self.send(
            self.sign(ALICE, 0, max_fee_per_gas=fee_cap, max_priority_fee_per_gas=GWEI // 10)
        )
        self.assertEqual((await self.mine_through_work())["transactions"], [])
        block = await self.mine_through_work()
        base_fee = q(block["baseFeePerGas"])
        self.assertLess(base_fee, fee_cap)
        self.assertEqual([t["hash"] for t in block["transactions"]], [transaction_hash])
        receipt = await self.call("eth_getTransactionReceipt", transaction_hash)
        self.assertEqual(q(receipt["effectiveGasPrice"]), fee_cap)
        self.assertEqual(
            await self.balance("0x" + ETHERBASE.hex()),
            2 * LONDON_REWARD + TRANSFER_GAS * (fee_cap - base_fee),
        )

    async def test_dynamic_fee_refusals(self) -> None:
        """A tip over the fee cap, a replacement that raises only one of the two
        fees, another chain's id: geth's -32000 refusals."""
        await self.send(self.sign(ALICE, 0, max_fee_per_gas=2 * GWEI, max_priority_fee_per_gas=GWEI))
        fee_cap, tip = "max_fee_per_gas", "max_priority_fee_per_gas"
        cases = [
            ({fee_cap: GWEI, tip: 2 * GWEI}, 1, "max priority fee per gas higher than max fee per gas"),
            ({fee_cap: 3 * GWEI, tip: GWEI}, 0, "replacement transaction underpriced"),
            ({fee_cap: 2 * GWEI, tip: 2 * GWEI}, 0, "replacement transaction underpriced"),
            ({fee_cap: 2 * GWEI, tip: GWEI, "chain_id": 1}, 1, "invalid sender"),
        ]
        for fields, nonce, message in cases:
            self.assertEqual(
                await self.error("eth_sendRawTransaction", self.sign(ALICE, nonce, **fields)),
                (-32000, message),
            )
        bumped = await self.send(
            self.sign(ALICE, 0, max_fee_per_gas=2 * GWEI * 11 // 10, max_priority_fee_per_gas=GWEI * 11 // 10)
        )
        self.assertEqual([t.hash.hex() for t in self.node.chain.pending_transactions], [bumped[2:]])

    async def test_gas_price_adds_the_base_fee(self) -> None:
        """eth_gasPrice is the suggested tip plus the tip block's base fee (genesis: 1 gwei)."""
        self.assertEqual(await self.call("eth_gasPrice"), hex(2 * GWEI))
        self.assertEqual(await self.call("eth_maxPriorityFeePerGas"), hex(GWEI))


class SigningTests(SynchronousTestCase):
    """How a test signs a transaction, and the pool without RPC."""

    def test_py_evm_signing_is_sign_transaction(self) -> None:
        """sign_transaction is py-evm's own signing: an unsigned transaction of the
        fork's VM, signed for the chain id (signatures are deterministic)."""
        unsigned = DevHomesteadVM.create_unsigned_transaction(
            nonce=0, gas_price=GWEI, gas=TRANSFER_GAS, to=Address(CAROL), value=5, data=b""
        )
        raw = unsigned.as_signed_transaction(ALICE, chain_id=CHAIN_ID).encode()
        self.assertEqual(
            sign_transaction(
                "homestead", ALICE, chain_id=CHAIN_ID, nonce=0, to=CAROL, value=5, gas_price=GWEI
            ),
            raw,
        )

    def test_send_and_mine(self) -> None:
        """send() pools a transaction, or raises TransactionRefused with geth's
        reason; mine() includes the pending ones."""
        chain = DevChain(
            ETHERBASE, difficulty=DIFFICULTY, alloc={ALICE.public_key.to_canonical_address(): FUNDS}
        )
        raw = sign_transaction(
            "homestead", ALICE, chain_id=CHAIN_ID, nonce=0, to=CAROL, value=5, gas_price=GWEI
        )
        transaction_hash = chain.send(raw)
        with self.assertRaises(TransactionRefused) as refused:
            chain.send(raw)
        self.assertEqual(refused.exception.reason, "already known")
        self.assertEqual([t.hash for t in chain.pending_transactions], [transaction_hash])
        block = chain.mine()
        self.assertEqual([t.hash for t in block.transactions], [transaction_hash])
        found = chain.find_transaction(transaction_hash)
        assert found is not None
        self.assertEqual((found[0].hash, found[1]), (block.hash, 0))
        self.assertEqual(chain.balance(CAROL), 5)
        self.assertEqual(
            (chain.nonce(ALICE.public_key.to_canonical_address()), chain.pending_transactions), (1, ())
        )
