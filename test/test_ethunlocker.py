"""The Ethereum-family unlocker against the dev node and a real redis-server.

Candidates are written by the pool's own recorder (EthShareRecorder) from
seals found on the node's work, or mined through the pool's stratum port;
then the chain moves (more blocks, a reorganisation, an uncle) and the
unlocker credits in OEP's keys what the chain paid, to the wei: the
credits of a block add up to its reward, which is what the pool's address
holds on the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import ethash
from eth_keys.datatypes import PrivateKey
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IListeningPort
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site

from nomp.candidate import BlockCandidate
from nomp.config import DaemonConfig, EthPaymentsConfig, EthPoolConfig, RedisConfig
from nomp.daemon.clients import DaemonClients
from nomp.daemon.errors import RPCError
from nomp.payments.ethledger import NO_HASH, BlockRecord, EthLedger, parse_block_member
from nomp.payments.ethunlock import EthCandidate, parse_candidate_member
from nomp.payments.ethunlocker import EthUnlocker, EthUnlockerService, NodeRPC, UnlockReport
from nomp.payments.rounds import round_policy
from nomp.store.oep import EthShareRecorder
from nomp.store.oepschema import OepKeys
from nomp.store.redis import RedisService
from test.ethnode import DevNode, search_nonce, sign_transaction, start_dev_node
from test.ethnode.sealing import boundary, epoch_of
from test.ethpool import ETHERBASE, POOL_ADDRESS, EthPool, connect, eth_pool_config, stratum_port
from test.servers import shared_redis
from test.waiting import until

DB = 13
COIN = "ethash-dev"
NETWORK_DIFF = 16
ETHER = 10**18
GWEI = 10**9
REWARD = 5 * ETHER  # the dev chain's Homestead block reward, as coins/ethash-dev.yaml has it
NOW = 1_700_000_000.0
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
IMMATURE_DEPTH = 16
DEPTH = 32
PAYER = PrivateKey(b"\x07" * 32)  # a funded account whose transfer pays fees to the pool's block
PAYER_ADDRESS = PAYER.public_key.to_canonical_address()
METHOD_NOT_FOUND = -32601


def wei_of(fields: Mapping[str, str], name: str) -> int:
    """An amount of OEP's (whole Shannon) and the dust beside it, in wei."""
    return int(fields.get(name, "0")) * GWEI + int(fields.get(name + "Dust", "0"))


class FaultyNode:
    """The node's RPC, with calls that fail as a node's do: ``errors`` maps (method, first
    parameter or None for any) to a JSON-RPC error code."""

    def __init__(self, rpc: NodeRPC) -> None:
        self.rpc = rpc
        self.errors: dict[tuple[str, Any], int] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def call(self, method: str, *params: Any) -> Any:
        self.calls.append((method, params))
        for (failing, first), code in self.errors.items():
            if failing == method and (first is None or params[:1] == (first,)):
                raise RPCError("http://dev", method, code, "service unavailable")
        return await self.rpc.call(method, *params)


class StopsAt:
    """The node's RPC, stopping the node just before a given call is sent on."""

    def __init__(self, node: DevNode, rpc: NodeRPC, method: str, first: Any) -> None:
        self.node, self.rpc, self.method, self.first = node, rpc, method, first
        self.calls_before_stop: int | None = None
        self.calls = 0

    async def call(self, method: str, *params: Any) -> Any:
        if self.calls_before_stop is None and (method, params[:1]) == (self.method, (self.first,)):
            self.calls_before_stop = self.calls
            await self.node.stop()
        self.calls += 1
        return await self.rpc.call(method, *params)


class UnlockerTestCase(TestCase):
    """A dev node, Redis (db 13, emptied), the pool's recorder writing OEP's keys, an unlocker."""

    timeout = 180

    fee_percent = Decimal(0)

    async def asyncSetUp(self) -> None:
        self.server = shared_redis()
        self.server.command("FLUSHDB", db=DB)
        self.node: DevNode = start_dev_node(
            self, ETHERBASE, difficulty=NETWORK_DIFF, alloc={PAYER_ADDRESS: 100 * ETHER}
        )
        self.chain = self.node.chain
        self.redis_service = RedisService(RedisConfig(port=self.server.port, db=DB))
        self.redis_service.startService()
        self.addCleanup(self.redis_service.stopService)
        await until(lambda: self.redis_service.client() is not None)
        self.keys = OepKeys.for_coin(COIN)
        self.recorder = EthShareRecorder(
            self.keys,
            self.redis_service.client,
            reactor,
            round_policy(self.pool_config().payments),
            wall_clock=lambda: NOW,
        )
        self.config = self.pool_config()
        clients = DaemonClients(reactor, persistent=False)
        self.addCleanup(clients.close)
        self.rpc = clients.rpc(DaemonConfig(url=self.node.url, timeout=5.0), version="2.0")
        self.faulty = FaultyNode(self.rpc)
        self.unlocker = self.make_unlocker()

    def setUp(self) -> defer.Deferred[None]:  # type: ignore[override]  # trial waits for it
        return defer.Deferred.fromCoroutine(self.asyncSetUp())

    def pool_config(self, **payments: Any) -> EthPoolConfig:
        options: dict[str, Any] = {
            "enabled": True,
            "immature_depth": IMMATURE_DEPTH,
            "depth": DEPTH,
            "fee_percent": self.fee_percent,
            **payments,
        }
        return eth_pool_config(self.node.url, [stratum_port(4)], payments=EthPaymentsConfig(**options))

    def make_unlocker(self, failpoint: Callable[[str], None] | None = None) -> EthUnlocker:
        client = self.redis_service.client()
        assert client is not None
        return EthUnlocker(
            self.config,
            EthLedger(client, self.keys),
            self.faulty,
            wall_clock=lambda: NOW,
            failpoint=failpoint,
        )

    # -- moving the chain --------------------------------------------------------

    async def find_block(self, shares: Mapping[str, int], finder: str = ALICE, solo: bool = False) -> str:
        """Record ``shares`` (login -> difficulty) then a candidate sealing the node's
        pending block (the pool's), submit it, settle it accepted; its nonce as OEP writes it."""
        for login, difficulty in shares.items():
            self.recorder.valid_share(f"{login}.rig", difficulty, solo=solo)
        work = self.chain.work()
        # From a start of its own per height: a miner's nonces are its own, and two of our
        # candidates with one nonce would be one key of the run's report.
        nonce, mix = search_nonce(work.number, work.header_hash, work.difficulty, start=work.number << 32)
        candidate = BlockCandidate(
            block_hash="0x" + work.header_hash.hex(),
            coinbase_txid="",
            height=work.number,
            worker=f"{finder}.rig",
            reward=REWARD,
            solo=solo,
            network_difficulty=float(work.difficulty),
            found_at=NOW,
            payload=nonce.to_bytes(8, "big") + work.header_hash + mix,
        )
        self.assertTrue(await self.recorder.block_found(candidate, 5.0))
        self.assertTrue(self.chain.submit(nonce, work.header_hash, mix), "the node took the pool's block")
        self.recorder.block_settled(candidate.block_hash, True)
        await self.recorder.flush()
        return f"0x{nonce:016x}"

    def canonical_and_uncles(self) -> set[bytes]:
        """The hash of every main-chain block and of every uncle they include."""
        found: set[bytes] = set()
        for number in range(self.chain.height + 1):
            block = self.chain.block_at(number)
            assert block is not None
            found.add(block.hash)
            found.update(uncle.hash for uncle in block.uncles)
        return found

    def mine_to(self, height: int) -> None:
        """Other miners' blocks until the chain is ``height`` high."""
        self.chain.mine_blocks(height - self.chain.height)

    async def unlock(self, unlocker: EthUnlocker | None = None) -> UnlockReport:
        return await (unlocker or self.unlocker).run()

    # -- reading Redis -------------------------------------------------------------

    def redis(self, *args: str | int | float) -> Any:
        return self.server.command(*args, db=DB)

    def hash(self, key: str) -> dict[str, str]:
        flat = self.redis("HGETALL", key)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def zset(self, key: str) -> dict[str, int]:
        flat = self.redis("ZRANGE", key, 0, -1, "WITHSCORES")
        return {member: int(score) for member, score in zip(flat[::2], flat[1::2], strict=True)}

    def miner(self, login: str) -> dict[str, str]:
        return self.hash(self.keys.miner(login))

    def records(self, key: str) -> list[BlockRecord]:
        return [parse_block_member(member, height) for member, height in self.zset(key).items()]

    def candidates(self) -> list[EthCandidate]:
        return [parse_candidate_member(m, h) for m, h in self.zset(self.keys.blocks_candidates).items()]

    def dump(self) -> dict[str, Any]:
        """Every key of the coin but the lock's and its fence's, with its value."""
        state: dict[str, Any] = {}
        for key in sorted(self.redis("KEYS", f"{COIN}:*")):
            if key in (self.keys.unlocker_lock, self.keys.unlocker_fence):
                continue
            kind = self.redis("TYPE", key)
            if kind == "hash":
                state[key] = self.hash(key)
            elif kind == "zset":
                state[key] = self.zset(key)
            elif kind == "set":
                state[key] = sorted(self.redis("SMEMBERS", key))
            else:
                state[key] = self.redis("GET", key)
        return state

    def balances(self, *logins: str) -> dict[str, int]:
        """Each login's exact balance in wei."""
        return {login: wei_of(self.miner(login), "balance") for login in logins}

    def check_oep_fields(self, login: str) -> None:
        """OEP's Shannon fields are whole Shannon, their dust below a Shannon."""
        fields = self.miner(login)
        for name in ("immature", "balance"):
            if name + "Dust" in fields:
                self.assertLess(int(fields[name + "Dust"]), GWEI)
                self.assertGreaterEqual(int(fields[name + "Dust"]), 0)

    def assert_immature_cleared(self, *logins: str) -> None:
        for login in logins:
            self.assertEqual(wei_of(self.miner(login), "immature"), 0, login)
        self.assertEqual(wei_of(self.hash(self.keys.finances), "immature"), 0)


class BlockTests(UnlockerTestCase):
    """A block that stays in the chain: immature at immature_depth, balances at depth."""

    async def test_two_miners_block_matures(self) -> None:
        nonce = await self.find_block({ALICE: 1, BOB: 2})
        height = self.chain.height
        block_hash = "0x" + self.chain.head.hash.hex()
        self.mine_to(height + IMMATURE_DEPTH - 1)
        report = await self.unlock()
        self.assertEqual(report.immature, [], "one confirmation short of immature_depth")
        self.assertEqual(len(self.candidates()), 1)

        self.mine_to(height + IMMATURE_DEPTH)
        report = await self.unlock()
        self.assertEqual(report.immature, [nonce])
        self.assertEqual(self.candidates(), [])
        [record] = self.records(self.keys.blocks_immature)
        self.assertEqual(
            (
                record.height,
                record.uncle_height,
                record.orphan,
                record.hash,
                record.reward,
                record.round_total,
            ),
            (height, 0, False, block_hash, REWARD, 3),
        )
        # PROP by the round's shares, 1:2, to the wei: a third of 5 ether is not whole
        # wei, and the wei left over is the pool's.
        alice, bob = REWARD // 3, REWARD * 2 // 3
        pool = REWARD - alice - bob
        self.assertEqual(pool, 1)
        immature = {login: wei_of(self.miner(login), "immature") for login in (ALICE, BOB, POOL_ADDRESS)}
        self.assertEqual(immature, {ALICE: alice, BOB: bob, POOL_ADDRESS: pool})
        self.assertEqual(self.miner(ALICE)["immature"], str(alice // GWEI))  # OEP's Shannon, floored
        self.assertEqual(
            self.hash(self.keys.credits_immature(height, block_hash)),
            {ALICE: str(alice // GWEI), BOB: str(bob // GWEI), POOL_ADDRESS: "0"},
        )
        self.assertEqual(
            self.hash(self.keys.credits_wei(height, block_hash)),
            {ALICE: str(alice), BOB: str(bob), POOL_ADDRESS: str(pool)},
        )
        self.assertEqual(wei_of(self.hash(self.keys.finances), "immature"), REWARD)
        self.assertEqual(self.balances(ALICE, BOB), {ALICE: 0, BOB: 0})
        self.assertTrue(self.redis("EXISTS", self.keys.round(height, nonce)))

        self.mine_to(height + DEPTH - 1)
        self.assertEqual((await self.unlock()).matured, [])
        self.mine_to(height + DEPTH)
        report = await self.unlock()
        self.assertEqual(report.matured, [nonce])
        balances = self.balances(ALICE, BOB, POOL_ADDRESS)
        self.assertEqual(balances, {ALICE: alice, BOB: bob, POOL_ADDRESS: pool})
        self.assertEqual(sum(balances.values()), self.chain.balance(ETHERBASE), "what the chain paid")
        self.assert_immature_cleared(ALICE, BOB, POOL_ADDRESS)
        for login in (ALICE, BOB, POOL_ADDRESS):
            self.check_oep_fields(login)
        self.assertEqual(self.miner(BOB)["balance"], str(bob // GWEI))
        self.assertEqual(self.records(self.keys.blocks_immature), [])
        self.assertEqual(self.records(self.keys.blocks_matured), [record])
        self.assertEqual(self.zset(self.keys.credits_all), {f"{block_hash}:{int(NOW)}:{REWARD}": height})
        self.assertEqual(
            self.hash(self.keys.credits(height, block_hash)),
            {ALICE: str(alice // GWEI), BOB: str(bob // GWEI), POOL_ADDRESS: "0"},
        )
        self.assertFalse(self.redis("EXISTS", self.keys.credits_immature(height, block_hash)))
        self.assertFalse(self.redis("EXISTS", self.keys.round(height, nonce)))
        finances = self.hash(self.keys.finances)
        self.assertEqual((wei_of(finances, "balance"), wei_of(finances, "totalMined")), (REWARD, REWARD))
        self.assertEqual(
            (finances["lastCreditHeight"], finances["lastCreditHash"]), (str(height), block_hash)
        )

        before = self.dump()
        self.mine_to(height + DEPTH + 3)
        report = await self.unlock()
        self.assertEqual((report.immature, report.matured, report.orphaned), ([], [], []))
        self.assertEqual(self.dump(), before, "a run with nothing due changes nothing")

    async def test_transaction_fees(self) -> None:
        """The block's transactions' fees, from their receipts, are the round's too."""
        gas_price = 3 * GWEI + 7
        raw = sign_transaction(
            "homestead", PAYER, chain_id=1337, nonce=0, to=bytes(20), value=1, gas_price=gas_price
        )
        self.chain.send(raw)
        nonce = await self.find_block({ALICE: 5})
        height = self.chain.height
        self.assertEqual(len(self.chain.head.transactions), 1)
        self.mine_to(height + DEPTH)
        report = await self.unlock()  # at depth when first seen: immature and matured in one run
        self.assertEqual((report.immature, report.matured), ([nonce], [nonce]))
        revenue = REWARD + 21_000 * gas_price
        self.assertEqual(self.chain.balance(ETHERBASE), revenue)
        self.assertEqual(self.balances(ALICE), {ALICE: revenue})

    async def test_fees_unknown_the_block_waits(self) -> None:
        """A node that gives no receipts: a block with transactions is never credited as if
        its fees were 0."""
        raw = sign_transaction(
            "homestead", PAYER, chain_id=1337, nonce=0, to=bytes(20), value=1, gas_price=GWEI
        )
        self.chain.send(raw)
        nonce = await self.find_block({ALICE: 5})
        self.mine_to(self.chain.height + IMMATURE_DEPTH)
        self.faulty.errors[("eth_getBlockReceipts", None)] = METHOD_NOT_FOUND
        self.faulty.errors[("eth_getTransactionReceipt", None)] = METHOD_NOT_FOUND
        report = await self.unlock()
        self.assertIn(nonce, report.waiting)
        self.assertEqual(len(self.candidates()), 1)
        self.assertEqual(self.miner(ALICE).get("immature"), None)
        del self.faulty.errors[
            ("eth_getBlockReceipts", None)
        ]  # a node that has only per-transaction receipts
        report = await self.unlock()
        self.assertEqual(report.immature, [nonce])
        self.assertEqual(wei_of(self.miner(ALICE), "immature"), REWARD + 21_000 * GWEI)


class FeeTests(UnlockerTestCase):
    fee_percent = Decimal("1.5")

    async def test_pool_fee_to_the_pool_address(self) -> None:
        nonce = await self.find_block({ALICE: 1, BOB: 2})
        height = self.chain.height
        self.mine_to(height + DEPTH)
        report = await self.unlock()  # at depth when first seen: immature and matured in one run
        self.assertEqual((report.immature, report.matured), ([nonce], [nonce]))
        fee = REWARD * 15 // 1000
        alice, bob = (REWARD - fee) // 3, (REWARD - fee) * 2 // 3
        balances = self.balances(ALICE, BOB, POOL_ADDRESS)
        self.assertEqual(balances, {ALICE: alice, BOB: bob, POOL_ADDRESS: REWARD - alice - bob})
        self.assertEqual(balances[POOL_ADDRESS], fee + 1)
        self.assertEqual(sum(balances.values()), self.chain.balance(ETHERBASE))

    async def test_solo_candidate_to_its_finder(self) -> None:
        """A solo candidate's round is its finder's alone: the shared round's miners get nothing."""
        for _ in range(3):
            self.recorder.valid_share(f"{BOB}.rig", 10)
        nonce = await self.find_block({ALICE: 2}, finder=ALICE, solo=True)
        self.mine_to(self.chain.height + IMMATURE_DEPTH)
        self.assertEqual((await self.unlock()).immature, [nonce])
        fee = REWARD * 15 // 1000
        immature = {login: wei_of(self.miner(login), "immature") for login in (ALICE, BOB, POOL_ADDRESS)}
        self.assertEqual(immature, {ALICE: REWARD - fee, BOB: 0, POOL_ADDRESS: fee})
        self.assertEqual(self.hash(self.keys.round_current), {BOB: "30"}, "the shared round stays open")


class UncleTests(UnlockerTestCase):
    async def test_uncle_paid_the_uncle_reward(self) -> None:
        """The pool's block is replaced by another miner's and a later block includes it as an
        uncle: the round gets (uncle + 8 - nephew) / 8 of the block reward."""
        self.mine_to(3)
        nonce = await self.find_block({ALICE: 3, BOB: 1})
        height = self.chain.height
        uncle_hash = self.chain.head.hash
        self.chain.reorg(1)  # two other blocks from the pool's block's parent overtake it
        nephew = self.chain.mine()
        self.assertEqual((nephew.number, [u.hash for u in nephew.uncles]), (height + 2, [uncle_hash]))
        self.mine_to(height + IMMATURE_DEPTH)
        report = await self.unlock()
        self.assertEqual(report.immature, [nonce])
        reward = REWARD * 6 // 8  # two blocks below its nephew
        [record] = self.records(self.keys.blocks_immature)
        self.assertEqual(
            (record.height, record.uncle_height, record.hash, record.reward),
            (height + 2, height, "0x" + uncle_hash.hex(), reward),
        )
        self.assertTrue(
            self.redis("EXISTS", self.keys.round(height + 2, nonce)), "renamed to the nephew's height"
        )
        self.assertFalse(self.redis("EXISTS", self.keys.round(height, nonce)))

        self.mine_to(height + 2 + DEPTH)
        self.assertEqual((await self.unlock()).matured, [nonce])
        balances = self.balances(ALICE, BOB, POOL_ADDRESS)
        self.assertEqual(balances, {ALICE: reward * 3 // 4, BOB: reward // 4, POOL_ADDRESS: 0})
        self.assertEqual(sum(balances.values()), self.chain.balance(ETHERBASE), "the uncle reward, paid")
        self.assert_immature_cleared(ALICE, BOB)
        self.assertFalse(self.redis("EXISTS", self.keys.round(height + 2, nonce)))


class OrphanTests(UnlockerTestCase):
    async def test_candidate_found_nowhere(self) -> None:
        """Replaced before any block could include it: an orphan, its round dropped, no credit."""
        self.mine_to(2)
        nonce = await self.find_block({ALICE: 3})
        height = self.chain.height
        ours = self.chain.head.hash
        self.mine_to(height + 6)
        self.chain.reorg(7)  # from below the pool's block, past the uncle window
        self.mine_to(height + IMMATURE_DEPTH)
        self.assertNotIn(ours, self.canonical_and_uncles(), "the pool's block is nowhere in the chain")
        report = await self.unlock()
        self.assertEqual(report.orphaned, [nonce])
        self.assertEqual(self.candidates(), [])
        [record] = self.records(self.keys.blocks_immature)
        self.assertEqual(
            (record.height, record.orphan, record.hash, record.reward, record.nonce),
            (height, True, NO_HASH, 0, nonce),
        )
        self.assertFalse(self.redis("EXISTS", self.keys.round(height, nonce)))
        self.assertEqual(self.miner(ALICE).get("immature"), None)

        self.mine_to(height + DEPTH)
        self.assertEqual((await self.unlock()).orphaned, [nonce])
        self.assertEqual(self.records(self.keys.blocks_immature), [])
        [matured] = self.records(self.keys.blocks_matured)
        self.assertEqual((matured.orphan, matured.hash, matured.reward), (True, NO_HASH, 0))
        self.assertEqual(self.balances(ALICE, POOL_ADDRESS), {ALICE: 0, POOL_ADDRESS: 0})
        self.assertEqual(self.chain.balance(ETHERBASE), 0)
        self.assertEqual(self.zset(self.keys.credits_all), {})

    async def test_immature_block_gone_at_maturity(self) -> None:
        """Credited as immature, then a deep reorganisation replaces it: the credit is taken back."""
        nonce = await self.find_block({ALICE: 1, BOB: 1})
        height = self.chain.height
        block_hash = "0x" + self.chain.head.hash.hex()
        self.mine_to(height + IMMATURE_DEPTH)
        self.assertEqual((await self.unlock()).immature, [nonce])
        self.assertEqual(wei_of(self.miner(ALICE), "immature"), REWARD // 2)
        self.chain.reorg(IMMATURE_DEPTH + 1)
        self.mine_to(height + DEPTH)
        self.assertNotIn(bytes.fromhex(block_hash[2:]), self.canonical_and_uncles())
        report = await self.unlock()
        self.assertEqual(report.orphaned, [nonce])
        self.assert_immature_cleared(ALICE, BOB)
        self.assertEqual(self.balances(ALICE, BOB), {ALICE: 0, BOB: 0})
        [matured] = self.records(self.keys.blocks_matured)
        self.assertEqual((matured.orphan, matured.hash, matured.reward), (True, block_hash, 0))
        for key in (
            self.keys.credits_immature(height, block_hash),
            self.keys.credits_wei(height, block_hash),
            self.keys.round(height, nonce),
        ):
            self.assertFalse(self.redis("EXISTS", key), key)
        self.assertEqual(self.chain.balance(ETHERBASE), 0)


class NodeFaultTests(UnlockerTestCase):
    def restart_node(self, port: int) -> None:
        """The node listening again on its old port."""
        site: Any = Site(self.node.rpc)
        listening: IListeningPort = reactor.listenTCP(port, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)

    async def test_node_down_then_back(self) -> None:
        first = await self.find_block({ALICE: 1})
        second = await self.find_block({BOB: 1})
        height = self.chain.height
        self.mine_to(height + IMMATURE_DEPTH)
        port = self.node.port
        await self.node.stop()
        before = self.dump()
        report = await self.unlock()
        self.assertIsNotNone(report.error)
        self.assertEqual(self.dump(), before, "nothing waits orphaned")
        self.restart_node(port)

        # one block the node errs on: it waits (said once), the other is credited
        self.faulty.errors[("eth_getBlockByNumber", hex(height - 1))] = -32000
        with capturedLogs() as events:
            report = await self.unlock()
            self.assertEqual((await self.unlock()).waiting, {first: report.waiting[first]})
        self.assertEqual(len([e for e in events if e.get("nonce") == first]), 1, "logged once")
        self.assertEqual((report.immature, report.orphaned, list(report.waiting)), ([second], [], [first]))
        self.assertIn("service unavailable", report.waiting[first])
        self.assertEqual([c.nonce_hex for c in self.candidates()], [first])
        self.faulty.errors.clear()
        report = await self.unlock()
        self.assertEqual(report.immature, [first])

        # at maturity too: a node error never orphans
        self.mine_to(height + DEPTH)
        self.faulty.errors[("eth_getBlockByNumber", hex(height))] = -32000
        report = await self.unlock()
        self.assertEqual((report.matured, report.orphaned, list(report.waiting)), ([first], [], [second]))
        self.faulty.errors.clear()
        self.assertEqual((await self.unlock()).matured, [second])
        self.assertEqual(self.balances(ALICE, BOB), {ALICE: REWARD, BOB: REWARD})
        self.assertEqual(self.chain.balance(ETHERBASE), 2 * REWARD)

    async def test_unreachable_mid_run(self) -> None:
        """Once the node stops answering, the run asks it nothing more: the rest wait."""
        first = await self.find_block({ALICE: 1})
        second = await self.find_block({BOB: 1})
        third = await self.find_block({BOB: 1})
        self.mine_to(self.chain.height + IMMATURE_DEPTH)
        stops = StopsAt(
            self.node, self.rpc, "eth_getBlockByNumber", hex(self.chain.height - IMMATURE_DEPTH - 1)
        )
        self.faulty.rpc = stops
        report = await self.unlock()
        self.assertEqual((report.immature, sorted(report.waiting)), ([first], sorted([second, third])))
        self.assertIn("stopped answering", report.waiting[third])
        assert stops.calls_before_stop is not None
        self.assertEqual(len(self.faulty.calls), stops.calls_before_stop + 1, "nothing asked once it went")


class RefusalTests(UnlockerTestCase):
    async def test_a_write_redis_refuses_waits(self) -> None:
        """A key of the wrong type under one block's credit: that block waits, untouched, and
        the others are credited."""
        first = await self.find_block({ALICE: 1})
        second = await self.find_block({BOB: 1})
        self.mine_to(self.chain.height + IMMATURE_DEPTH)
        self.redis("DEL", self.keys.miner(ALICE))
        self.redis("SET", self.keys.miner(ALICE), "not a hash")
        report = await self.unlock()
        self.assertEqual(report.immature, [second])
        self.assertIn("WRONGTYPE", report.waiting[first])
        self.assertEqual([c.nonce_hex for c in self.candidates()], [first])
        self.assertEqual([r.nonce for r in self.records(self.keys.blocks_immature)], [second])
        self.assertEqual(wei_of(self.hash(self.keys.finances), "immature"), REWARD, "the second's alone")
        self.redis("DEL", self.keys.miner(ALICE))
        self.assertEqual((await self.unlock()).immature, [first])


class IdempotenceTests(UnlockerTestCase):
    async def test_run_stopped_between_steps(self) -> None:
        """A run that stops after its first write: the next one finishes, nothing twice."""
        first = await self.find_block({ALICE: 1, BOB: 1})
        second = await self.find_block({ALICE: 2})
        self.mine_to(self.chain.height + DEPTH)

        def stop(step: str) -> None:
            if step == "after_immature":
                raise RuntimeError("killed")

        with self.assertRaises(RuntimeError):
            await self.unlock(self.make_unlocker(failpoint=stop))
        self.assertEqual([c.nonce_hex for c in self.candidates()], [second])
        self.assertEqual([r.nonce for r in self.records(self.keys.blocks_immature)], [first])
        report = await self.unlock()
        self.assertEqual((report.immature, report.matured), ([second], [first, second]))
        self.assertEqual(
            self.balances(ALICE, BOB), {ALICE: REWARD // 2 + REWARD, BOB: REWARD // 2}, "each block once"
        )
        self.assertEqual(self.chain.balance(ETHERBASE), 2 * REWARD)

    async def test_each_write_twice(self) -> None:
        """A step's script sent again (its reply lost, or by a run that read before another
        wrote) finds its marker gone and changes nothing."""
        nonce = await self.find_block({ALICE: 1, BOB: 3})
        height = self.chain.height
        self.mine_to(height + DEPTH)
        [candidate] = self.candidates()
        client = self.redis_service.client()
        assert client is not None
        ledger = EthLedger(client, self.keys)
        token = await ledger.acquire(60)
        assert token is not None
        record = BlockRecord(
            height=height,
            uncle_height=0,
            orphan=False,
            nonce=nonce,
            hash="0x" + self.chain.block_at(height).hash.hex(),  # type: ignore[union-attr]
            found_at=candidate.found_at,
            difficulty=candidate.network_difficulty,
            round_total=candidate.round_total,
            reward=REWARD,
        )
        credits = {ALICE: REWARD // 4, BOB: REWARD * 3 // 4}
        self.assertTrue(await ledger.write_immature(token, candidate, record, credits))
        after_first = self.dump()
        self.assertFalse(await ledger.write_immature(token, candidate, record, credits))
        self.assertFalse(await ledger.write_candidate_orphan(token, candidate, record.orphaned()))
        self.assertEqual(self.dump(), after_first)
        self.assertTrue(await ledger.write_matured(token, record, int(NOW)))
        after_matured = self.dump()
        self.assertFalse(await ledger.write_matured(token, record, int(NOW)))
        self.assertFalse(await ledger.write_orphan(token, record))
        self.assertEqual(self.dump(), after_matured)
        await ledger.release(token)
        report = await self.unlock()
        self.assertEqual((report.immature, report.matured, report.orphaned), ([], [], []))
        self.assertEqual(self.dump(), after_matured)
        self.assertEqual(self.balances(ALICE, BOB), credits)

    async def test_block_oeps_unlocker_made_immature(self) -> None:
        """A block OEP's own unlocker credited as immature (Shannon logs, no wei log, no dust)
        matures from its Shannon log."""
        block_hash = "0x" + "cd" * 32
        record = BlockRecord(12, 0, False, "0x00000000000000aa", block_hash, int(NOW), 16, 4, REWARD)
        shannon = {ALICE: REWARD // 4 // GWEI, BOB: REWARD * 3 // 4 // GWEI}
        self.redis("ZADD", self.keys.blocks_immature, 12, record.member)
        for login, amount in shannon.items():
            self.redis("HSET", self.keys.miner(login), "immature", amount)
            self.redis("HSET", self.keys.credits_immature(12, block_hash), login, amount)
        self.redis("HSET", self.keys.finances, "immature", REWARD // GWEI)
        client = self.redis_service.client()
        assert client is not None
        ledger = EthLedger(client, self.keys)
        token = await ledger.acquire(60)
        assert token is not None
        self.assertTrue(await ledger.write_matured(token, record, int(NOW)))
        self.assertEqual(self.balances(ALICE, BOB), {ALICE: REWARD // 4, BOB: REWARD * 3 // 4})
        self.assert_immature_cleared(ALICE, BOB)
        self.assertEqual(
            self.hash(self.keys.credits(12, block_hash)), {k: str(v) for k, v in shannon.items()}
        )
        self.assertEqual(wei_of(self.hash(self.keys.finances), "balance"), REWARD)

    async def test_the_lock(self) -> None:
        """While another run holds the pool's lock a run writes nothing; a stale token writes
        nothing either."""
        await self.find_block({ALICE: 1})
        self.mine_to(self.chain.height + IMMATURE_DEPTH)
        client = self.redis_service.client()
        assert client is not None
        ledger = EthLedger(client, self.keys)
        token = await ledger.acquire(60)
        assert token is not None
        before = self.dump()
        report = await self.unlock()
        self.assertTrue(report.locked_out)
        self.assertEqual(self.dump(), before)
        [candidate] = self.candidates()
        record = BlockRecord(
            height=candidate.height,
            uncle_height=0,
            orphan=True,
            nonce=candidate.nonce_hex,
            hash=NO_HASH,
            found_at=0,
            difficulty=0,
            round_total=0,
            reward=0,
        )
        with self.assertRaises(Exception) as refused:
            await ledger.write_candidate_orphan(token + 1, candidate, record)
        self.assertIn("NOLOCK", str(refused.exception))
        await ledger.release(token)
        self.assertEqual(len((await self.unlock()).immature), 1)


class PoolMinedTests(UnlockerTestCase):
    """Shares and the block mined through the pool's eth-proxy port."""

    async def test_mined_through_the_pool(self) -> None:
        pool = await EthPool(
            self, self.node, self.config, recorder=self.recorder, blocks=self.recorder
        ).start()
        alice, bob = await connect(pool.ports[0]), await connect(pool.ports[0])
        for miner, login in ((alice, ALICE), (bob, BOB)):
            self.addCleanup(miner.close)
            self.assertEqual((await miner.call("eth_submitLogin", [login], worker="rig"))["result"], True)
        work = (await alice.call("eth_getWork", [], request_id=2))["result"]
        header = bytes.fromhex(work[0][2:])
        start = 0
        for miner in (alice, alice, bob):  # shares of the port's difficulty, 4, that are no block
            params, start = share(header, 1, 4, start)
            self.assertEqual((await miner.call("eth_submitWork", params, request_id=3))["result"], True)
        nonce, mix = search_nonce(1, header, NETWORK_DIFF, start)
        block = ["0x" + nonce.to_bytes(8, "big").hex(), work[0], "0x" + mix.hex()]
        self.assertEqual((await alice.call("eth_submitWork", block, request_id=4))["result"], True)
        await pool.service.blocks_in_flight()
        await self.recorder.flush()
        self.assertEqual(self.chain.height, 1)
        self.mine_to(1 + DEPTH)
        report = await self.unlock()
        self.assertEqual((report.immature, report.matured), ([block[0]], [block[0]]))
        # alice: two shares and the block's, bob one: 3 to 1
        self.assertEqual(self.balances(ALICE, BOB), {ALICE: REWARD * 3 // 4, BOB: REWARD // 4})
        self.assertEqual(self.chain.balance(ETHERBASE), REWARD)


def share(header: bytes, height: int, difficulty: int, start: int) -> tuple[list[str], int]:
    """eth_submitWork's params of a share meeting ``difficulty`` but not the network's, and
    the nonce to search on from."""
    while True:
        nonce, mix = search_nonce(height, header, difficulty, start)
        final, _ = ethash.hash(epoch_of(height), header, nonce)
        start = nonce + 1
        if int.from_bytes(final, "big") > boundary(NETWORK_DIFF):
            return ["0x" + nonce.to_bytes(8, "big").hex(), "0x" + header.hex(), "0x" + mix.hex()], start


class ServiceTests(UnlockerTestCase):
    async def test_runs_at_start(self) -> None:
        nonce = await self.find_block({ALICE: 1})
        self.mine_to(self.chain.height + IMMATURE_DEPTH)
        service = EthUnlockerService(self.config, self.redis_service.client, reactor, wall_clock=lambda: NOW)
        self.assertEqual(service.name, "unlocker:dev")
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        await until(lambda: [r.nonce for r in self.records(self.keys.blocks_immature)] == [nonce])
        await service.stopService()
        self.assertFalse(self.redis("EXISTS", self.keys.unlocker_lock), "released")


class RecordTests(SynchronousTestCase):
    def test_member_round_trip(self) -> None:
        record = BlockRecord(
            height=12,
            uncle_height=10,
            orphan=False,
            nonce="0x00000000000000ff",
            hash="0x" + "ab" * 32,
            found_at=1700000000,
            difficulty=16,
            round_total=42,
            reward=3_750_000_000_000_000_000,
        )
        self.assertEqual(
            record.member, f"10:0:0x00000000000000ff:0x{'ab' * 32}:1700000000:16:42:3750000000000000000"
        )
        self.assertEqual(parse_block_member(record.member, 12), record)
        orphan = record.orphaned()
        self.assertEqual(orphan.member.split(":")[1::6], ["1", "0"])
        self.assertTrue(parse_block_member(orphan.member, 12).orphan)

    def test_bad_members(self) -> None:
        for member in (
            "0:0:0x00000000000000ff:0x0:1:1:1:0",  # no hash and not an orphan
            "0:2:0x00000000000000ff:0x" + "ab" * 32 + ":1:1:1:0",
            "0:0:0xff:0x" + "ab" * 32 + ":1:1:1:0",
            "0:0:0x00000000000000ff:0x" + "ab" * 32 + ":1:1:1",
            "0:0:0x00000000000000ff:0x" + "ab" * 32 + ":1:1:1:-5",
        ):
            with self.assertRaises(ValueError, msg=member):
                parse_block_member(member, 5)
