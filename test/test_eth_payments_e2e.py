"""Ethereum-family payments end to end, on the dev chain, for PROP, PPLNS and SOLO.

The whole service tree (nomp.tap, from a conf folder) runs against the dev
node (test/ethnode) and a real redis-server. Two miners, Alice and Bob,
send shares over TCP through the pool's eth-proxy port and find three
blocks: one that another miner's branch replaces and a later block of the
pool's includes as an uncle (its nephew, which also carries a transaction
whose fee it earns), and one that a reorganisation past the uncle window
leaves nowhere. The chain is mined past maturity, the tree's unlocker and
payer run, the payouts are mined deep enough for the payer to let them go,
and each miner's address must have received, on the chain, exactly the wei
this module computes on its own: the dev coin's rewards (the block reward,
the uncle's (u + 8 - h) / 8 of it, the nephew's 1/32, the transaction's
fee), less the pool fee, split the scheme's way among the shares the test
sent. The arithmetic here is written from the rules, with Fractions; it
calls none of the pool's split or reward functions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import ethash
import yaml
from eth_keys.datatypes import PrivateKey
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from nomp.config import DaemonConfig, EthPoolConfig, load_config
from nomp.daemon.clients import DaemonClients
from nomp.eth.service import EthPoolService
from nomp.payments.ethaudit import eth_audit
from nomp.payments.ethledger import NO_HASH, BlockRecord, parse_block_member
from nomp.payments.ethpayer import CONFIRMATIONS, EthPayerService, PayoutReport
from nomp.payments.ethsigner import PayoutKey
from nomp.payments.ethunlocker import EthUnlockerService, UnlockReport
from nomp.service import NompService
from nomp.store.client import RedisClient
from nomp.store.oep import EthShareRecorder
from nomp.store.oepschema import OepKeys
from nomp.store.redis import RedisService
from nomp.store.service import RecorderService
from nomp.tap import build_service
from test.ethnode import ETHER, GWEI, DevNode, boundary, search_nonce, sign_transaction, start_dev_node
from test.ethpool import LineClient, connect
from test.servers import free_port, shared_redis
from test.test_config_paths import SHIPPED_COINS

Scheme = Literal["prop", "pplns", "solo"]

DB = 3  # of the shared redis-server: this module's own, emptied before each test
COIN = "ethash-dev"
POOL_NAME = "dev"
NETWORK_DIFF = 8  # the dev chain's; each block another miner adds costs the test about 8 hashes
SHARE_DIFF = 2  # the port's: a share is worth 2 hashes, and one in four is also a block
PPLNS_WINDOW = 13  # hashes: six and a half shares, so a window's oldest share counts in part
FEE_PERCENT = Decimal("1.5")
MINIMUM_PAYMENT = Decimal("0.01")
IMMATURE_DEPTH = 16
DEPTH = 32
UNCLE_WINDOW = 6  # an uncle is 1 to 6 blocks below its nephew (the yellow paper's rule)
TRANSFER_GAS = 21_000  # a plain transfer's gas, the yellow paper's G_transaction
EPOCH = 0  # every height the test reaches is in ethash's epoch 0

SECRET = bytes.fromhex("3b9e1f5d2a7c4e8b6d0f1a3c5e7b9d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3d")
KEY = PayoutKey(SECRET)
POOL_LOGIN = KEY.address.lower()  # the pool's address is the payout key's account, as OEP's was
POOL_ACCOUNT = bytes.fromhex(POOL_LOGIN[2:])
POOL_FUNDS = ETHER  # in the genesis block, so the payer never waits for rewards to cover gas
SENDER = PrivateKey(b"\x0b" * 32)  # a funded account whose transfer pays a fee to the pool's nephew
RECIPIENT = bytes.fromhex("c3" * 20)
FEE_GAS_PRICE = 3 * GWEI + 7
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20


# -- the chain's rules, from the dev coin's file ---------------------------------------


@dataclass(frozen=True, slots=True)
class CoinRewards:
    """The dev coin's reward schedule as its coin file writes it."""

    schedule: tuple[tuple[int, int], ...]  # (from_block, wei), ascending
    uncle_rule: str

    @classmethod
    def read(cls, path: Path) -> CoinRewards:
        rewards = yaml.safe_load(path.read_text())["rewards"]
        # The test's arithmetic has no ECIP-1017 eras; the dev coin has none.
        assert "era_length" not in rewards, "the dev coin gained eras: the test's arithmetic needs them"
        steps = tuple((int(step["from_block"]), int(step["wei"])) for step in rewards["schedule"])
        return cls(steps, rewards.get("uncle_rule", "ethereum"))

    def block(self, height: int) -> int:
        return [wei for start, wei in self.schedule if start <= height][-1]

    def uncle(self, nephew_height: int, uncle_height: int) -> int:
        """(u + 8 - h) * R(h) / 8, floored: Ethereum's rule, and ECIP-1017's without eras."""
        assert self.uncle_rule in ("ethereum", "ecip1017"), self.uncle_rule
        return (uncle_height + 8 - nephew_height) * self.block(nephew_height) // 8

    def nephew(self, height: int) -> int:
        """What a block earns for each uncle it includes: R(h) / 32."""
        return self.block(height) // 32


# -- what the test mined, and what it should earn ---------------------------------------


Fate = Literal["uncle", "block", "orphan"]


@dataclass(slots=True)
class Found:
    """A block the pool found, as the test mined it."""

    finder: str
    position: int  # the index of its block's share in the test's share log
    height: int
    nonce: str  # 0x and 16 hex digits
    block_hash: bytes
    fate: Fate = "block"
    revenue: int = 0  # what the chain pays the pool for it, as the test reckons it
    record_height: int = 0  # where the unlocker files it: an uncle's nephew's height


def scheme_weights(
    scheme: Scheme, log: Sequence[str], found: Found, previous: Found | None
) -> dict[str, Fraction]:
    """The weight of each login in ``found``'s round, from every share the test sent (``log``,
    oldest first, each worth SHARE_DIFF hashes):

    - prop: the shares since the pool's previous block (whatever became of it);
    - pplns: the last PPLNS_WINDOW hashes of shares up to the block's own, newest first,
      the oldest share counted in part;
    - solo: the finder alone.
    """
    if scheme == "solo":
        return {found.finder: Fraction(1)}
    weights: dict[str, Fraction] = {}
    if scheme == "prop":
        start = 0 if previous is None else previous.position + 1
        for login in log[start : found.position + 1]:
            weights[login] = weights.get(login, Fraction(0)) + SHARE_DIFF
        return weights
    need = Fraction(PPLNS_WINDOW)
    for login in reversed(log[: found.position + 1]):
        take = min(Fraction(SHARE_DIFF), need)
        weights[login] = weights.get(login, Fraction(0)) + take
        need -= take
        if need == 0:
            break
    return weights


def split(reward: int, weights: Mapping[str, Fraction]) -> dict[str, int]:
    """A reward in wei: the pool fee first (floored), the rest by weight, each miner's part
    floored; what is left, the fee and the floors, is the pool's address's."""
    fee = reward * Fraction(FEE_PERCENT) / 100
    fee_wei = fee.numerator // fee.denominator
    to_miners = reward - fee_wei
    total = sum(weights.values(), Fraction(0))
    parts: dict[str, int] = {}
    for login, weight in weights.items():
        share = to_miners * weight / total
        parts[login] = share.numerator // share.denominator
    parts[POOL_LOGIN] = reward - sum(parts.values())
    return parts


def add_up(*credits: Mapping[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for credit in credits:
        for login, wei in credit.items():
            total[login] = total.get(login, 0) + wei
    return total


@dataclass(frozen=True, slots=True)
class Miner:
    """A miner's eth-proxy connection to the pool, logged in as ``login``."""

    login: str
    client: LineClient


# -- the test ---------------------------------------------------------------------------


class PaymentsEndToEndTests(TestCase):
    """One scheme per test; the same miners, shares and chain events in each."""

    timeout = 120

    async def test_prop(self) -> None:
        await self.mine_and_pay("prop")

    async def test_pplns(self) -> None:
        await self.mine_and_pay("pplns")

    async def test_solo(self) -> None:
        await self.mine_and_pay("solo")

    # -- the tree -------------------------------------------------------------------

    def conf(self, scheme: Scheme) -> Path:
        folder = Path(self.mktemp())
        (folder / "pools").mkdir(parents=True)
        key_file = folder / "payout.key"
        key_file.write_text(SECRET.hex() + "\n")
        os.chmod(key_file, 0o600)
        self.stratum = free_port()
        settings = {
            "coins": str(SHIPPED_COINS),
            "instance": 3,
            "redis": {"port": self.redis.port, "db": DB},
            "control": {"listen": f"tcp:{free_port()}:interface=127.0.0.1"},
            "web": {"enabled": False},
            "logging": {"level": "warn"},
        }
        payments: dict[str, Any] = {
            "enabled": True,
            "scheme": scheme,
            "fee_percent": str(FEE_PERCENT),
            "immature_depth": IMMATURE_DEPTH,
            "depth": DEPTH,
            "interval": 3600,  # the test runs them; their own timers would only race it
            "key_file": str(key_file),
            "minimum_payment": str(MINIMUM_PAYMENT),
        }
        if scheme == "pplns":
            payments["pplns_window"] = PPLNS_WINDOW
        pool = {
            "coin": COIN,
            "address": KEY.address,
            "daemons": [{"url": self.node.url, "timeout": 5}],
            "ports": [{"listen": f"tcp:{self.stratum}:interface=127.0.0.1", "diff": SHARE_DIFF}],
            "block_refresh_interval": 0.05,
            "payments": payments,
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(settings))
        (folder / "pools" / f"{POOL_NAME}.yaml").write_text(yaml.safe_dump(pool))
        return folder

    async def start(self, scheme: Scheme) -> None:
        self.redis = shared_redis()
        self.redis.command("FLUSHDB", db=DB)
        self.node: DevNode = start_dev_node(
            self,
            POOL_ACCOUNT,
            difficulty=NETWORK_DIFF,
            alloc={POOL_ACCOUNT: POOL_FUNDS, SENDER.public_key.to_canonical_address(): ETHER},
        )
        self.chain = self.node.chain
        config = load_config(self.conf(scheme))
        [self.pool_config] = config.eth_pools
        root: NompService = build_service(
            config, reactor, exit_with=lambda status: None, shutdown=lambda: None
        )
        root.startService()
        self.addCleanup(lambda: root.stopService() if root.running else None)
        self.root = root
        pool = root.getServiceNamed(f"pool:{POOL_NAME}")
        assert isinstance(pool, EthPoolService)
        self.pool = pool
        [recording] = [s for s in pool if isinstance(s, RecorderService)]
        assert isinstance(recording.recorder, EthShareRecorder)
        self.recorder = recording.recorder
        unlocker = pool.getServiceNamed(f"unlocker:{POOL_NAME}")
        payer = pool.getServiceNamed(f"payer:{POOL_NAME}")
        assert isinstance(unlocker, EthUnlockerService) and isinstance(payer, EthPayerService)
        self.unlocker, self.payer = unlocker, payer
        for _ in range(400):
            if pool.ready and pool.hashers.caches.peek(EPOCH, 0) is not None and self.redis_client():
                break
            await deferLater(reactor, 0.025, lambda: None)
        self.assertTrue(pool.ready, "the pool got work from the dev node")
        clients = DaemonClients(reactor, persistent=False)
        self.addCleanup(clients.close)
        self.node_rpc = clients.rpc(DaemonConfig(url=self.node.url, timeout=5.0), version="2.0")
        self.keys = OepKeys.for_coin(COIN)
        self.next_nonce = 0  # every search starts past the last nonce found: no two alike

    def redis_client(self) -> RedisClient | None:
        service = self.root.getServiceNamed("redis")
        assert isinstance(service, RedisService)
        return service.client()

    # -- mining through the pool --------------------------------------------------------

    async def login(self, login: str) -> Miner:
        client = await connect(self.stratum)
        self.addCleanup(client.close)
        reply = await client.call("eth_submitLogin", [login, "x"], worker="rig")
        self.assertEqual(reply.get("result"), True, reply)
        return Miner(login, client)

    async def fresh_work(self, miner: Miner) -> list[str]:
        """The pool's work once it is the node's current work (the pool polls for it)."""
        for _ in range(400):
            current = "0x" + self.chain.work().header_hash.hex()
            work: list[str] = (await miner.client.call("eth_getWork", [], request_id=2))["result"]
            if work[0] == current:
                return work
            await deferLater(reactor, 0.025, lambda: None)
        raise AssertionError("the pool never handed out the node's current work")

    async def share(self, miner: Miner, work: list[str]) -> None:
        """A share of the port's difficulty that is no block, accepted, and logged."""
        header = bytes.fromhex(work[0][2:])
        while True:
            nonce, mix = search_nonce(self.chain.height + 1, header, SHARE_DIFF, self.next_nonce)
            self.next_nonce = nonce + 1
            final, _ = ethash.hash(EPOCH, header, nonce)
            if int.from_bytes(final, "big") > boundary(NETWORK_DIFF):
                break
        params = ["0x" + nonce.to_bytes(8, "big").hex(), work[0], "0x" + mix.hex()]
        self.assertEqual((await miner.client.call("eth_submitWork", params, request_id=3))["result"], True)
        self.share_log.append(miner.login)

    async def block(self, miner: Miner, work: list[str]) -> Found:
        """A share that seals the block: accepted, recorded, submitted, and the chain's tip."""
        header = bytes.fromhex(work[0][2:])
        height = self.chain.height + 1
        nonce, mix = search_nonce(height, header, NETWORK_DIFF, self.next_nonce)
        self.next_nonce = nonce + 1
        params = ["0x" + nonce.to_bytes(8, "big").hex(), work[0], "0x" + mix.hex()]
        self.assertEqual((await miner.client.call("eth_submitWork", params, request_id=3))["result"], True)
        self.share_log.append(miner.login)
        await self.pool.blocks_in_flight()
        head = self.chain.head
        self.assertEqual(
            (head.number, head.header.nonce), (height, nonce.to_bytes(8, "big")), "the pool's block"
        )
        return Found(miner.login, len(self.share_log) - 1, height, params[0], head.hash)

    async def mine_scenario(self) -> list[Found]:
        """Alice's block that becomes an uncle, Bob's that includes it (with a paying
        transaction), Alice's that becomes an orphan; a share after it that no block closes."""
        self.share_log: list[str] = []  # each share's login, oldest first
        alice, bob = await self.login(ALICE), await self.login(BOB)

        async def round_of(sharing: Sequence[Miner], finder: Miner) -> Found:
            work = await self.fresh_work(finder)
            for miner in sharing:
                await self.share(miner, work)
            return await self.block(finder, work)

        self.chain.mine_blocks(2)  # another miner's first: the uncle's parent is no genesis block
        uncle = await round_of((alice, alice, alice, bob), alice)
        self.chain.reorg(1)  # another miner's two blocks from its parent overtake it
        self.assertNotEqual(self.hash_at(uncle.height), uncle.block_hash)
        fee_paying = sign_transaction(
            "homestead", SENDER, chain_id=1337, nonce=0, to=RECIPIENT, value=1, gas_price=FEE_GAS_PRICE
        )
        self.chain.send(fee_paying)  # into the pool's next block, the nephew
        nephew = await round_of((alice, bob, bob, bob), bob)
        included = self.chain.block_at(nephew.height)
        assert included is not None
        self.assertEqual([u.hash for u in included.uncles], [uncle.block_hash], "the nephew includes it")
        self.assertEqual(len(included.transactions), 1)
        self.assertEqual(nephew.height - uncle.height, 2)
        orphan = await round_of((alice, bob, bob), alice)
        self.chain.mine_blocks(UNCLE_WINDOW)
        self.chain.reorg(UNCLE_WINDOW + 1)  # from the nephew on: the orphan's parent stays
        self.assertEqual(self.hash_at(nephew.height), nephew.block_hash)
        self.assertNotIn(orphan.block_hash, self.canonical_and_uncles(), "the orphan is nowhere")
        await self.share(bob, await self.fresh_work(bob))
        await self.recorder.flush()

        uncle.fate, uncle.record_height = "uncle", nephew.height
        uncle.revenue = self.rewards.uncle(nephew.height, uncle.height)
        nephew.record_height = nephew.height
        nephew.revenue = (
            self.rewards.block(nephew.height)
            + self.rewards.nephew(nephew.height)
            + TRANSFER_GAS * FEE_GAS_PRICE
        )
        orphan.fate, orphan.record_height = "orphan", orphan.height
        return [uncle, nephew, orphan]

    def hash_at(self, height: int) -> bytes:
        block = self.chain.block_at(height)
        assert block is not None
        return bytes(block.hash)

    def canonical_and_uncles(self) -> set[bytes]:
        found: set[bytes] = set()
        for number in range(self.chain.height + 1):
            block = self.chain.block_at(number)
            assert block is not None
            found.add(block.hash)
            found.update(uncle.hash for uncle in block.uncles)
        return found

    # -- the pool's payment services, run now ---------------------------------------------

    async def unlock(self) -> UnlockReport:
        for _ in range(200):
            report = await self.unlocker.run_once()
            assert report is not None
            if not report.locked_out:  # the payer's own first run may hold the lock a moment
                self.assertIsNone(report.error)
                self.assertEqual(report.waiting, {})
                return report
            await deferLater(reactor, 0.05, lambda: None)
        raise AssertionError("the unlocker never got the lock")

    async def pay(self) -> PayoutReport:
        report = await self.payer.run_once()
        assert report is not None
        self.assertIsNone(report.error)
        return report

    def mine_to(self, height: int) -> None:
        self.chain.mine_blocks(height - self.chain.height)

    # -- reading Redis ------------------------------------------------------------------

    def hash(self, key: str) -> dict[str, str]:
        flat = [str(v) for v in self.redis.command("HGETALL", key, db=DB)]
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def records(self, key: str) -> dict[str, BlockRecord]:
        flat = [str(v) for v in self.redis.command("ZRANGE", key, 0, -1, "WITHSCORES", db=DB)]
        records = [parse_block_member(m, int(s)) for m, s in zip(flat[::2], flat[1::2], strict=True)]
        return {record.nonce: record for record in records}

    def amount(self, key: str, name: str) -> int:
        """An amount of OEP's, whole Shannon and the wei below it (its dust field), in wei."""
        fields = self.hash(key)
        dust = int(fields.get(name + "Dust", "0"))
        self.assertTrue(0 <= dust < GWEI, f"{key} {name}Dust is below a Shannon")
        return int(fields.get(name, "0")) * GWEI + dust

    def amounts(self, name: str, logins: Sequence[str]) -> dict[str, int]:
        return {login: self.amount(self.keys.miner(login), name) for login in logins}

    # -- the whole story ------------------------------------------------------------------

    async def mine_and_pay(self, scheme: Scheme) -> None:
        await self.start(scheme)
        self.rewards = CoinRewards.read(SHIPPED_COINS / f"{COIN}.yaml")
        self.assertEqual(
            self.rewards.block(1), self.chain.block_reward(), "the coin file and the chain agree"
        )
        logins = (ALICE, BOB, POOL_LOGIN)
        before = {login: self.chain.balance(bytes.fromhex(login[2:])) for login in logins}

        uncle, nephew, orphan = blocks = await self.mine_scenario()
        self.assertEqual(
            self.chain.balance(POOL_ACCOUNT) - before[POOL_LOGIN],
            uncle.revenue + nephew.revenue,
            "the chain paid the pool's account what the test reckons",
        )
        credits: dict[str, dict[str, int]] = {}
        previous: Found | None = None
        for found in blocks:
            if found.fate != "orphan":
                credits[found.nonce] = split(
                    found.revenue, scheme_weights(scheme, self.share_log, found, previous)
                )
            previous = found
        owed = add_up(*credits.values())
        for login in logins:
            owed.setdefault(login, 0)

        # Immature: the block and the uncle credited, the orphan found nowhere.
        self.mine_to(orphan.height + IMMATURE_DEPTH)
        report = await self.unlock()
        self.assertEqual(sorted(report.immature), sorted([uncle.nonce, nephew.nonce]))
        self.assertEqual(
            (report.uncles, report.orphaned, report.matured), ([uncle.nonce], [orphan.nonce], [])
        )
        self.assertEqual(self.amounts("immature", logins), owed)
        self.check_records(self.keys.blocks_immature, blocks)

        # Matured: balances, to the wei.
        self.mine_to(orphan.height + DEPTH)
        report = await self.unlock()
        self.assertEqual(sorted(report.matured), sorted([uncle.nonce, nephew.nonce]))
        self.assertEqual(report.orphaned, [orphan.nonce])
        self.assertEqual(self.amounts("immature", logins), dict.fromkeys(logins, 0))
        self.assertEqual(self.amounts("balance", logins), owed)
        self.assertEqual(self.records(self.keys.blocks_immature), {})
        self.check_records(self.keys.blocks_matured, blocks)
        for found in blocks:
            if found.fate != "orphan":
                where = self.keys.credits_wei(found.record_height, "0x" + found.block_hash.hex())
                wei = {login: int(v) for login, v in self.hash(where).items()}
                self.assertEqual(
                    {k: v for k, v in wei.items() if v}, {k: v for k, v in credits[found.nonce].items() if v}
                )

        # Paid: each miner's balance in one transfer; the pool's fee stays with its own account.
        for login in (ALICE, BOB):
            self.assertGreaterEqual(owed[login], int(MINIMUM_PAYMENT * ETHER), f"{login} is due a payout")
        paid_from = self.chain.height + 1
        await self.pay()
        payouts = {("0x" + bytes(t.to).hex(), t.value) for t in self.chain.pending_transactions}
        self.assertEqual(payouts, {(ALICE, owed[ALICE]), (BOB, owed[BOB])}, "one transfer each, pending")
        self.chain.mine()
        self.assertEqual(self.chain.pending_transactions, ())
        self.mine_to(self.chain.height + CONFIRMATIONS - 1)
        paid = await self.pay()
        self.assertEqual((paid.paid, paid.waiting, paid.failed), ({}, [], {}))
        # Both mined deep enough (this run confirmed them, or the payer's own timer did).
        self.assertEqual(self.hash(self.keys.payouts_unconfirmed), {}, "both mined deep enough")

        received = {
            login: self.chain.balance(bytes.fromhex(login[2:])) - before[login] for login in (ALICE, BOB)
        }
        self.assertEqual(received, {ALICE: owed[ALICE], BOB: owed[BOB]}, "what each miner's address received")
        self.assertEqual(self.amounts("paid", logins), {ALICE: owed[ALICE], BOB: owed[BOB], POOL_LOGIN: 0})
        self.assertEqual(self.amounts("pending", logins), dict.fromkeys(logins, 0))
        self.assertEqual(self.amounts("balance", logins), {ALICE: 0, BOB: 0, POOL_LOGIN: owed[POOL_LOGIN]})
        gas = self.payout_gas(paid_from)
        self.assertEqual(
            self.chain.balance(POOL_ACCOUNT) - before[POOL_LOGIN],
            uncle.revenue + nephew.revenue - owed[ALICE] - owed[BOB] - gas,
            "the pool's account: the rewards, less the payouts and their gas",
        )
        for key in (self.keys.payouts_journal, self.keys.payouts_unconfirmed, self.keys.payouts_aside):
            self.assertEqual(self.hash(key), {}, key)
        self.assertEqual(self.redis.command("ZCARD", self.keys.payments_pending, db=DB), 0)
        await self.check_audit(self.pool_config)

    def check_records(self, key: str, blocks: Sequence[Found]) -> None:
        """The unlocker's record of each block: the uncle as an uncle at its nephew's height
        with the uncle reward, the block with its revenue, the orphan with nothing."""
        records = self.records(key)
        self.assertEqual(set(records), {found.nonce for found in blocks})
        for found in blocks:
            record = records[found.nonce]
            seen = (record.height, record.uncle_height, record.orphan, record.hash, record.reward)
            if found.fate == "orphan":
                self.assertEqual(seen, (found.height, 0, True, NO_HASH, 0), "the orphan")
            else:
                uncle_height = found.height if found.fate == "uncle" else 0
                expected = (
                    found.record_height,
                    uncle_height,
                    False,
                    "0x" + found.block_hash.hex(),
                    found.revenue,
                )
                self.assertEqual(seen, expected, found.fate)

    def payout_gas(self, start: int) -> int:
        """What the payout transactions mined from block ``start`` on paid for gas, from the
        chain's receipts (their gas used is cumulative within a block)."""
        gas = 0
        for number in range(start, self.chain.height + 1):
            block = self.chain.block_at(number)
            assert block is not None
            used = 0
            for transaction, receipt in zip(block.transactions, self.chain.receipts(block), strict=True):
                if bytes(transaction.sender) == POOL_ACCOUNT:
                    gas += (receipt.gas_used - used) * transaction.gas_price
                used = receipt.gas_used
        return gas

    async def check_audit(self, pool: EthPoolConfig) -> None:
        client = self.redis_client()
        assert client is not None
        audit = await eth_audit(pool, client, self.node_rpc, KEY.address)
        self.assertTrue(audit.checks)
        self.assertTrue(audit.clean, "\n".join(audit.lines()))
