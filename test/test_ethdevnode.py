"""The Ethereum-family dev node (test/ethnode): py-evm's proof-of-work chain,
seals judged by chfast's ethash, through its JSON-RPC port on loopback as a
pool talks to it, and the helpers the pool's tests move the chain with.

Every block is mined for real with PyPI ``ethash`` at difficulty 16 (about
16 hashes, a tenth of a second); the first hash of the run builds ethash's
epoch-0 cache once for the whole process.
"""

from __future__ import annotations

import json
from typing import Any

import ethash
import rlp  # type: ignore[import-untyped]
import treq
from eth.abc import VirtualMachineAPI
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from nomp.hashing.ethash import ethash_hash
from test.ethnode import ETHER, OUTSIDE, DevChain, DevNode, Fork, search_nonce, start_dev_node
from test.ethnode.engine import DevHomesteadVM, DevLondonVM

ETHERBASE = bytes.fromhex("5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c")
ETHERBASE_HEX = "0x" + ETHERBASE.hex()
DIFFICULTY = 16
HOMESTEAD_REWARD = 5 * ETHER
LONDON_REWARD = 2 * ETHER


def uncle_reward(reward: int, uncle_number: int, number: int) -> int:
    """Ethereum's (and Classic's era 0) uncle reward, written out independently of py-evm."""
    return reward * (uncle_number + 8 - number) // 8


def failing_nonce(work: list[str]) -> int:
    """A nonce whose final hash misses the work's boundary, by PyPI ethash."""
    header, target = bytes.fromhex(work[0][2:]), int(work[2], 16)
    nonce = 0
    while int.from_bytes(ethash.hash(0, header, nonce)[0], "big") <= target:
        nonce += 1
    return nonce


def solve(work: list[str]) -> list[str]:
    """eth_submitWork's params for ``work``, found with PyPI ethash."""
    header = bytes.fromhex(work[0][2:])
    difficulty = 2**256 // int(work[2], 16)
    nonce, mix = search_nonce(int(work[3], 16), header, difficulty)
    return ["0x" + nonce.to_bytes(8, "big").hex(), work[0], "0x" + mix.hex()]


def seal_hash(block: dict[str, Any]) -> str:
    """Keccak-256 of the RLP of the header without nonce and mix digest (13
    fields, 14 with London's base fee), from the block as the node reports it."""

    def number(field: str) -> bytes:
        value = int(block[field], 16)
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    def raw(field: str) -> bytes:
        return bytes.fromhex(block[field][2:])

    fields = [raw("parentHash"), raw("sha3Uncles"), raw("miner"), raw("stateRoot")]
    fields += [raw("transactionsRoot"), raw("receiptsRoot"), raw("logsBloom")]
    fields += [number(f) for f in ("difficulty", "number", "gasLimit", "gasUsed", "timestamp")]
    fields.append(raw("extraData"))
    if "baseFeePerGas" in block:
        fields.append(number("baseFeePerGas"))
    return "0x" + ethash.keccak_256(rlp.encode(fields)).hex()


class RPCTestCase(TestCase):
    """A dev node for each test and a JSON-RPC client over real HTTP."""

    timeout = 60
    fork: Fork = "homestead"

    def setUp(self) -> None:
        self.node: DevNode = start_dev_node(self, ETHERBASE, fork=self.fork, difficulty=DIFFICULTY)
        self.http = HTTPConnectionPool(reactor)
        self.addCleanup(self.http.closeCachedConnections)

    async def reply(self, method: str, *params: Any) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}
        response = await treq.post(self.node.url, json.dumps(body).encode(), pool=self.http)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        reply: dict[str, Any] = json.loads(await response.content())
        self.assertEqual((reply["jsonrpc"], reply["id"]), ("2.0", 7))
        return reply

    async def call(self, method: str, *params: Any) -> Any:
        reply = await self.reply(method, *params)
        self.assertNotIn("error", reply)
        return reply["result"]

    async def balance(self, address: str, tag: str = "latest") -> int:
        return int(await self.call("eth_getBalance", address, tag), 16)


class WorkTests(RPCTestCase):
    """eth_getWork and eth_submitWork: only a seal chfast's ethash accepts moves the tip."""

    async def test_work_is_the_pending_blocks(self) -> None:
        """getWork gives the pending block's seal hash, the epoch-0 seed, the
        boundary 2^256/difficulty in 32 bytes and the pending height; the pending
        block has geth's null hash, nonce and miner."""
        work = await self.call("eth_getWork")
        self.assertEqual(len(work), 4)
        self.assertEqual(work[1], "0x" + "00" * 32)
        self.assertEqual(work[2], "0x" + (2**256 // DIFFICULTY).to_bytes(32, "big").hex())
        self.assertEqual(work[3], "0x1")
        pending = await self.call("eth_getBlockByNumber", "pending", False)
        self.assertEqual((pending["number"], pending["difficulty"]), ("0x1", hex(DIFFICULTY)))
        self.assertEqual((pending["hash"], pending["nonce"], pending["miner"]), (None, None, None))
        self.assertEqual(await self.call("eth_getWork"), work, "the same work until something changes")
        self.assertEqual(work[0], "0x" + self.node.chain.work().header_hash.hex())

    async def test_solution_imports_and_pays_the_etherbase(self) -> None:
        """A nonce found with PyPI ethash for the work imports the block: the tip
        moves one up, the block is sealed with that nonce and mix digest, its
        miner is the etherbase and the etherbase holds the block reward in wei."""
        genesis = await self.call("eth_getBlockByNumber", "0x0", False)
        self.assertEqual(await self.balance(ETHERBASE_HEX), 0)
        work = await self.call("eth_getWork")
        solution = solve(work)
        self.assertIs(await self.call("eth_submitWork", *solution), True)
        self.assertEqual(await self.call("eth_blockNumber"), "0x1")
        block = await self.call("eth_getBlockByNumber", "latest", False)
        self.assertEqual((block["number"], block["miner"]), ("0x1", ETHERBASE_HEX))
        self.assertEqual((block["nonce"], block["mixHash"]), (solution[0], solution[2]))
        self.assertEqual(block["parentHash"], genesis["hash"])
        self.assertEqual(seal_hash(block), work[0])
        self.assertEqual(block["totalDifficulty"], hex(2 * DIFFICULTY))
        self.assertEqual((block["uncles"], block["transactions"]), ([], []))
        self.assertNotIn("baseFeePerGas", block)
        self.assertEqual(await self.call("eth_getBlockByHash", block["hash"], True), block)
        self.assertEqual(await self.balance(ETHERBASE_HEX), HOMESTEAD_REWARD)
        self.assertEqual(await self.balance(ETHERBASE_HEX, "0x0"), 0)
        self.assertEqual(await self.balance(ETHERBASE_HEX, "pending"), HOMESTEAD_REWARD)
        self.assertIs(await self.call("eth_submitWork", *solution), False, "the same block twice")
        next_work = await self.call("eth_getWork")
        self.assertEqual(next_work[3], "0x2")

    async def test_pool_ethash_agrees_with_the_judge(self) -> None:
        """The mix digest of a seal the node accepted is the one nomp's own ethash computes."""
        work = await self.call("eth_getWork")
        nonce, header, mix = solve(work)
        self.assertIs(await self.call("eth_submitWork", nonce, header, mix), True)
        ours = ethash_hash(0, 0, bytes.fromhex(header[2:]), int(nonce, 16))
        self.assertEqual("0x" + ours.mix_digest.hex(), mix)
        self.assertLessEqual(ours.value, int(work[2], 16))

    async def test_wrong_nonce_is_refused(self) -> None:
        """A nonce whose hash misses the boundary is refused and the tip stays."""
        work = await self.call("eth_getWork")
        nonce = failing_nonce(work)
        mix = ethash.hash(0, bytes.fromhex(work[0][2:]), nonce)[1]
        submitted = ["0x" + nonce.to_bytes(8, "big").hex(), work[0], "0x" + mix.hex()]
        self.assertIs(await self.call("eth_submitWork", *submitted), False)
        self.assertEqual(await self.call("eth_blockNumber"), "0x0")
        self.assertEqual(await self.balance(ETHERBASE_HEX), 0)

    async def test_wrong_mix_digest_is_refused(self) -> None:
        """A good nonce with a mix digest not its own is refused; with its own it imports."""
        work = await self.call("eth_getWork")
        nonce, header, mix = solve(work)
        wrong = "0x" + (int(mix, 16) ^ 1).to_bytes(32, "big").hex()
        self.assertIs(await self.call("eth_submitWork", nonce, header, wrong), False)
        self.assertEqual(await self.call("eth_blockNumber"), "0x0")
        self.assertIs(await self.call("eth_submitWork", nonce, header, mix), True)

    async def test_unknown_work_is_refused(self) -> None:
        """A seal hash the node never handed out is refused."""
        work = await self.call("eth_getWork")
        nonce, _, mix = solve(work)
        self.assertIs(await self.call("eth_submitWork", nonce, "0x" + "ab" * 32, mix), False)
        self.assertEqual(await self.call("eth_blockNumber"), "0x0")

    async def test_stale_work_is_refused_and_becomes_an_uncle(self) -> None:
        """Work for a pending block the tip has left behind is refused and the tip
        stays; the block, imported beside the tip, is an uncle of the next
        block, which pays its miner (8 + uncle - block) / 8 of the reward and the
        nephew 1/32 more."""
        stale = await self.call("eth_getWork")
        local = self.node.chain.mine()  # to OUTSIDE
        self.assertEqual(await self.call("eth_blockNumber"), "0x1")
        fresh = await self.call("eth_getWork")
        self.assertNotEqual(fresh[0], stale[0])
        self.assertEqual(fresh[3], "0x2")
        self.assertIs(await self.call("eth_submitWork", *solve(stale)), False)
        latest = await self.call("eth_getBlockByNumber", "latest", False)
        self.assertEqual((latest["number"], latest["hash"]), ("0x1", "0x" + local.hash.hex()))
        self.assertEqual(await self.balance(ETHERBASE_HEX), 0)

        work = await self.call("eth_getWork")
        self.assertNotEqual(work[0], fresh[0], "the pending block now includes the uncle")
        pending = await self.call("eth_getBlockByNumber", "pending", False)
        self.assertEqual(len(pending["uncles"]), 1)
        self.assertIs(await self.call("eth_submitWork", *solve(work)), True)
        block = await self.call("eth_getBlockByNumber", "0x2", True)
        self.assertEqual(block["uncles"], pending["uncles"])
        uncle = await self.call("eth_getUncleByBlockNumberAndIndex", "0x2", "0x0")
        self.assertEqual(uncle["hash"], block["uncles"][0])
        self.assertEqual((uncle["number"], uncle["miner"]), ("0x1", ETHERBASE_HEX))
        self.assertEqual(uncle["parentHash"], latest["parentHash"])
        self.assertEqual(seal_hash(uncle), stale[0])
        self.assertIsNone(await self.call("eth_getUncleByBlockNumberAndIndex", "0x2", "0x1"))
        self.assertIsNone(await self.call("eth_getBlockByNumber", "0x3", False))
        nephew = HOMESTEAD_REWARD // 32
        expected = HOMESTEAD_REWARD + nephew + uncle_reward(HOMESTEAD_REWARD, 1, 2)
        self.assertEqual(await self.balance(ETHERBASE_HEX), expected)
        self.assertEqual(await self.balance("0x" + OUTSIDE.hex()), HOMESTEAD_REWARD)

    async def test_renewed_work_stays_valid(self) -> None:
        """Work replaced at the same height (a recommit) still imports, as geth's does."""
        old = await self.call("eth_getWork")
        self.node.chain.renew_work()
        new = await self.call("eth_getWork")
        self.assertNotEqual(new[0], old[0])
        self.assertEqual(new[3], old[3])
        self.assertIs(await self.call("eth_submitWork", *solve(old)), True)
        self.assertEqual(await self.call("eth_blockNumber"), "0x1")


class NodeMethodTests(RPCTestCase):
    """The other methods a pool calls, and geth's errors."""

    async def test_chain_facts(self) -> None:
        """Chain id, network version, sync state, peers, hashrate reports, client version."""
        self.assertEqual(await self.call("eth_chainId"), "0x539")
        self.assertEqual(await self.call("net_version"), "1337")
        self.assertIs(await self.call("eth_syncing"), False)
        self.assertEqual(await self.call("net_peerCount"), "0x1")
        miner_id = "0x" + "01" * 32
        self.assertIs(await self.call("eth_submitHashrate", "0x1f4", miner_id), True)
        self.assertEqual(self.node.rpc.hashrates, {miner_id: 500})
        self.assertTrue((await self.call("web3_clientVersion")).startswith("nomp-devnode"))

    async def test_errors(self) -> None:
        """An unknown method is -32601; arguments geth would not read are -32602;
        a balance at a height the chain has not reached is geth's -32000."""
        unknown = await self.reply("eth_mining")
        self.assertEqual(unknown["error"]["code"], -32601)
        work = await self.call("eth_getWork")
        nonce, header, mix = solve(work)
        for params in (
            [nonce[:-2], header, mix],
            [nonce, header[:-2], mix],
            [nonce, header, mix[2:]],
            [nonce, header],
        ):
            self.assertEqual((await self.reply("eth_submitWork", *params))["error"]["code"], -32602)
        self.assertEqual((await self.reply("eth_getBlockByNumber", "0x01", False))["error"]["code"], -32602)
        self.assertEqual((await self.reply("eth_getBlockByNumber", "0x1"))["error"]["code"], -32602)
        self.assertEqual((await self.reply("eth_getBalance", "0x12", "latest"))["error"]["code"], -32602)
        missing = await self.reply("eth_getBalance", ETHERBASE_HEX, "0x5")
        self.assertEqual(missing["error"]["code"], -32000)
        self.assertEqual(await self.call("eth_blockNumber"), "0x0")

    async def test_parse_error_and_batches(self) -> None:
        """Bad JSON is -32700; a batch gets one reply per call, in order."""
        response = await treq.post(self.node.url, b"{nope", pool=self.http)
        self.assertEqual(json.loads(await response.content())["error"]["code"], -32700)
        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "nope", "params": []},
        ]
        response = await treq.post(self.node.url, json.dumps(batch).encode(), pool=self.http)
        replies = json.loads(await response.content())
        self.assertEqual([r["id"] for r in replies], [1, 2])
        self.assertEqual((replies[0]["result"], replies[1]["error"]["code"]), ("0x0", -32601))


class LondonTests(RPCTestCase):
    """The London fork: a base fee in every header, 2 ether a block."""

    fork: Fork = "london"

    async def test_london_block(self) -> None:
        """A solved London block carries baseFeePerGas (in its seal hash too) and pays 2 ether."""
        work = await self.call("eth_getWork")
        self.assertIs(await self.call("eth_submitWork", *solve(work)), True)
        block = await self.call("eth_getBlockByNumber", "latest", False)
        self.assertIn("baseFeePerGas", block)
        self.assertEqual(seal_hash(block), work[0])
        self.assertEqual(await self.balance(ETHERBASE_HEX), LONDON_REWARD)


class ChainHelperTests(SynchronousTestCase):
    """The engine's helpers, which move the chain without a pool."""

    def test_mined_blocks_go_outside(self) -> None:
        """mine() seals with PyPI ethash and pays OUTSIDE (or the coinbase asked
        for), never the etherbase unasked."""
        chain = DevChain(ETHERBASE, difficulty=DIFFICULTY)
        chain.mine_blocks(2)
        mined = chain.mine(coinbase=ETHERBASE)
        self.assertEqual(chain.height, 3)
        self.assertEqual(chain.head.hash, mined.hash)
        self.assertEqual(chain.balance(OUTSIDE), 2 * HOMESTEAD_REWARD)
        self.assertEqual(chain.balance(ETHERBASE), HOMESTEAD_REWARD)
        self.assertEqual(chain.total_difficulty(mined.hash), 4 * DIFFICULTY)

    def test_genesis_allocation(self) -> None:
        """Accounts funded in the genesis block hold their wei from block 0 on."""
        payer = bytes.fromhex("00000000000000000000000000000000000000aa")
        chain = DevChain(ETHERBASE, difficulty=DIFFICULTY, alloc={payer: 7 * ETHER + 1})
        self.assertEqual(chain.balance(payer), 7 * ETHER + 1)
        chain.mine()
        self.assertEqual(chain.balance(payer), 7 * ETHER + 1)
        self.assertEqual(chain.balance(ETHERBASE), 0)

    def test_sibling_becomes_a_paid_uncle(self) -> None:
        """A sibling of the tip is imported beside it and the next block includes
        and pays it; it is never included twice."""
        chain = DevChain(ETHERBASE, difficulty=DIFFICULTY)
        chain.mine_blocks(2)
        sibling = chain.mine_sibling(coinbase=ETHERBASE)
        self.assertEqual((sibling.number, chain.height), (2, 2))
        self.assertFalse(chain.is_canonical(sibling.header))
        self.assertEqual([u.hash for u in chain.uncle_candidates], [sibling.hash])
        nephew = chain.mine()
        self.assertEqual([u.hash for u in nephew.uncles], [sibling.hash])
        self.assertEqual(chain.balance(ETHERBASE), uncle_reward(HOMESTEAD_REWARD, 2, 3))
        self.assertEqual(chain.balance(OUTSIDE), 3 * HOMESTEAD_REWARD + HOMESTEAD_REWARD // 32)
        self.assertEqual(chain.mine().uncles, ())
        self.assertEqual(chain.uncle_candidates, ())

    def test_reorg_orphans_blocks_that_become_uncles(self) -> None:
        """reorg(2) replaces the top two blocks with a heavier branch; their rewards
        are gone from the state, and the one whose parent is still canonical is
        an uncle of the next block, paid at depth 3."""
        chain = DevChain(ETHERBASE, difficulty=DIFFICULTY)
        chain.mine()
        first = chain.mine(coinbase=ETHERBASE)
        second = chain.mine(coinbase=ETHERBASE)
        self.assertEqual(chain.balance(ETHERBASE), 2 * HOMESTEAD_REWARD)
        branch = chain.reorg(2)
        self.assertEqual([b.number for b in branch], [2, 3, 4])
        self.assertEqual(chain.head.hash, branch[-1].hash)
        self.assertFalse(chain.is_canonical(first.header))
        self.assertFalse(chain.is_canonical(second.header))
        self.assertEqual(chain.balance(ETHERBASE), 0)
        self.assertEqual(chain.block_by_hash(first.hash), first)
        # the second's parent (the first) left the canonical chain: no longer an uncle
        self.assertEqual([u.hash for u in chain.uncle_candidates], [first.hash])
        nephew = chain.mine()
        self.assertEqual([u.hash for u in nephew.uncles], [first.hash])
        self.assertEqual(chain.balance(ETHERBASE), uncle_reward(HOMESTEAD_REWARD, 2, 5))

    def test_difficulty_and_seals_are_checked(self) -> None:
        """A block with a difficulty other than the rule's, or sealed for another
        header, does not import."""
        chain = DevChain(ETHERBASE, difficulty=DIFFICULTY)
        block = chain.pending
        easier = block.copy(header=block.header.copy(difficulty=1))
        # a seal ethash accepts at difficulty 1: only the difficulty rule refuses it
        easy_nonce, easy_mix = search_nonce(1, easier.header.mining_hash, 1)
        self.assertFalse(chain._import(chain._seal(easier, easy_nonce, easy_mix)))
        self.assertEqual(chain.height, 0)
        work = chain.work()
        nonce, mix = search_nonce(work.number, work.header_hash, work.difficulty)
        other = chain.renew_work()
        self.assertFalse(chain.submit(nonce, other.header_hash, mix))
        self.assertTrue(chain.submit(nonce, work.header_hash, mix))

    def test_forks_keep_the_genesis_difficulty(self) -> None:
        """Below 2048 the rule's step is 0: both forks stay at the genesis difficulty,
        London's also after a block with uncles (EIP-100)."""
        forks: list[tuple[Fork, type[VirtualMachineAPI]]] = [
            ("homestead", DevHomesteadVM),
            ("london", DevLondonVM),
        ]
        for fork, vm in forks:
            chain = DevChain(ETHERBASE, fork=fork, difficulty=DIFFICULTY)
            chain.mine_blocks(2)
            chain.mine_sibling()
            with_uncle = chain.mine()
            self.assertEqual(len(with_uncle.uncles), 1)
            self.assertEqual(chain.mine().header.difficulty, DIFFICULTY)
            after = with_uncle.header
            self.assertEqual(vm.compute_difficulty(after, after.timestamp + 1), DIFFICULTY)
