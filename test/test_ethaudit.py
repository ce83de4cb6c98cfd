"""The Ethereum family's payment audit (nomp.payments.ethaudit) and ``nomp-payments`` for
Ethereum-family pools, against the dev node (test/ethnode) and a real redis-server.

Credits are made as the pool makes them: a round's shares and a candidate
sealing the node's pending block, written as the pool's recorder leaves
them in OEP's keys; the chain moves on and a real unlocker run credits the
block, a real payer run pays it from the pool's key (the pool's address,
funded in the genesis block). The audit is then clean, and each kind of
tampering shows in the check it belongs to.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from nomp.config import DaemonConfig, EthPaymentsConfig, EthPoolConfig, RedisConfig
from nomp.daemon.clients import DaemonClients
from nomp.payments import cli
from nomp.payments.audit import Audit
from nomp.payments.ethaudit import eth_audit
from nomp.payments.ethledger import EthLedger
from nomp.payments.ethpayer import EthPayer, PayoutReport
from nomp.payments.ethpayledger import EthPayLedger
from nomp.payments.ethsigner import LegacyPricing, PayoutKey, sign_transfer
from nomp.payments.ethunlocker import EthUnlocker, UnlockReport
from nomp.store.oepschema import OepKeys, candidate_member, dust_field, payment_member, shannon
from nomp.store.redis import RedisService
from test.ethnode import ETHER, GWEI, DevChain, DevNode, search_nonce, start_dev_node
from test.ethpool import eth_pool_config, stratum_port
from test.servers import RedisServer, free_port, shared_redis
from test.test_config_paths import SHIPPED_COINS
from test.waiting import until

DB = 4  # of the shared redis-server: this module's own, emptied before each test
COIN = "ethash-dev"
SECRET = bytes.fromhex("8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f")
KEY = PayoutKey(SECRET)
POOL = KEY.address.lower()  # the pool's address is the payout key's account, as OEP's was
POOL_ACCOUNT = bytes.fromhex(POOL[2:])
FUNDS = 10 * ETHER
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
IMMATURE_DEPTH = 16
DEPTH = 32
FEE_PERCENT = Decimal(1)
MINIMUM = Decimal("0.1")
NOW = 1_700_000_000


class Killed(Exception):
    """A run stopped at a failpoint, as a process killed there would be."""


def kill_at(step: str) -> Callable[[str], None]:
    def reached(name: str) -> None:
        if name == step:
            raise Killed(step)

    return reached


def write_key(folder: Path, mode: int = 0o600) -> Path:
    """The payout key's file, with ``mode``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "payout.key"
    path.write_text(SECRET.hex() + "\n")
    path.chmod(mode)
    return path


def write_eth_conf(
    folder: Path, node_url: str, redis_port: int, redis_db: int, key_file: Path, **payments: Any
) -> Path:
    """A conf folder with one Ethereum-family pool, ``dev``, on the dev node, payments on."""
    (folder / "pools").mkdir(parents=True)
    settings = {
        "coins": str(SHIPPED_COINS),
        "redis": {"port": redis_port, "db": redis_db},
        "logging": {"level": "warn"},
        "control": {"listen": f"tcp:{free_port()}:interface=127.0.0.1"},
        "web": {"enabled": False},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    pool = {
        "coin": COIN,
        "address": POOL,
        "daemons": [{"url": node_url, "timeout": 10}],
        "ports": [{"listen": f"tcp:{free_port()}:interface=127.0.0.1", "diff": 4}],
        "payments": {
            "enabled": True,
            "key_file": str(key_file),
            "immature_depth": IMMATURE_DEPTH,
            "depth": DEPTH,
            "fee_percent": str(FEE_PERCENT),
            "minimum_payment": str(MINIMUM),
            **payments,
        },
    }
    (folder / "pools" / "dev.yaml").write_text(yaml.safe_dump(pool))
    return folder


def find_block(chain: DevChain, redis: RedisServer, db: int, shares: Mapping[str, int]) -> int:
    """The pool finds the node's pending block: ``shares`` (login -> difficulty) as the round
    it closes and its candidate, in OEP's keys as the recorder writes them; its height."""
    keys = OepKeys.for_coin(COIN)
    work = chain.work()
    # From a start of its own per height: two candidates never share a nonce.
    nonce, mix = search_nonce(work.number, work.header_hash, work.difficulty, start=work.number << 32)
    nonce_hex = f"0x{nonce:016x}"
    for login, difficulty in shares.items():
        redis.command("HINCRBY", keys.round(work.number, nonce_hex), login, difficulty, db=db)
    member = candidate_member(
        nonce_hex,
        "0x" + work.header_hash.hex(),
        "0x" + mix.hex(),
        NOW,
        work.difficulty,
        sum(shares.values()),
    )
    redis.command("ZADD", keys.blocks_candidates, work.number, member, db=db)
    if not chain.submit(nonce, work.header_hash, mix):
        raise AssertionError("the node refused the pool's block")
    return work.number


def hash_of(redis: RedisServer, db: int, key: str) -> dict[str, str]:
    flat = redis.command("HGETALL", key, db=db)
    return dict(zip(flat[::2], flat[1::2], strict=True))


def matured_credits(redis: RedisServer, db: int) -> dict[str, int]:
    """Login -> the wei every matured block credited it (the unlocker's exact logs)."""
    keys = OepKeys.for_coin(COIN)
    flat = redis.command("ZRANGE", keys.blocks_matured, 0, -1, "WITHSCORES", db=db)
    total: dict[str, int] = {}
    for member, height in zip(flat[::2], flat[1::2], strict=True):
        block_hash = member.split(":")[3]
        for login, wei in hash_of(redis, db, keys.credits_wei(int(height), block_hash)).items():
            total[login] = total.get(login, 0) + int(wei)
    return total


async def nomp_payments_here(conf: Path, *argv: str) -> tuple[int, str, str]:
    """``nomp-payments -c conf argv`` in this process, on its reactor (the dev node serves
    from it): the status, standard output and standard error."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = await cli.command(reactor, cli.parse_args(["-c", str(conf), *argv]))
    return status, out.getvalue(), err.getvalue()


def differing(audit: Audit) -> dict[str, int]:
    """The checks that are not zero: name -> difference."""
    return {c.name: c.difference for c in audit.checks if c.difference}


class AuditTestCase(TestCase):
    """A dev node with the pool's account funded, Redis (db 4, emptied), the pool's unlocker,
    payer and audit."""

    timeout = 240

    async def asyncSetUp(self) -> None:
        self.server = shared_redis()
        self.server.command("FLUSHDB", db=DB)
        self.node: DevNode = start_dev_node(self, POOL_ACCOUNT, difficulty=1, alloc={POOL_ACCOUNT: FUNDS})
        self.chain = self.node.chain
        self.redis_service = RedisService(RedisConfig(port=self.server.port, db=DB))
        self.redis_service.startService()
        self.addCleanup(self.redis_service.stopService)
        await until(lambda: self.redis_service.client() is not None)
        self.keys = OepKeys.for_coin(COIN)
        self.key_file = write_key(Path(self.mktemp()))
        clients = DaemonClients(reactor, persistent=False)
        self.addCleanup(clients.close)
        self.rpc = clients.rpc(DaemonConfig(url=self.node.url, timeout=5.0), version="2.0")
        self.config = self.pool_config()

    def setUp(self) -> defer.Deferred[None]:  # type: ignore[override]  # trial waits for it
        return defer.Deferred.fromCoroutine(self.asyncSetUp())

    def pool_config(self, **payments: Any) -> EthPoolConfig:
        options: dict[str, Any] = {
            "enabled": True,
            "immature_depth": IMMATURE_DEPTH,
            "depth": DEPTH,
            "fee_percent": FEE_PERCENT,
            "key_file": str(self.key_file),
            "minimum_payment": MINIMUM,
            "lock_timeout": 30.0,
            **payments,
        }
        return eth_pool_config(
            self.node.url, [stratum_port(4)], address=POOL, payments=EthPaymentsConfig(**options)
        )

    def client(self) -> Any:
        client = self.redis_service.client()
        assert client is not None
        return client

    def redis(self, *args: str | int | float) -> Any:
        return self.server.command(*args, db=DB)

    def hash(self, key: str) -> dict[str, str]:
        return hash_of(self.server, DB, key)

    def find_block(self, shares: Mapping[str, int]) -> int:
        return find_block(self.chain, self.server, DB, shares)

    async def unlock(self) -> UnlockReport:
        unlocker = EthUnlocker(self.config, EthLedger(self.client(), self.keys), self.rpc)
        report = await unlocker.run()
        self.assertIsNone(report.error)
        return report

    async def pay(self, failpoint: Callable[[str], None] | None = None) -> PayoutReport:
        ledger = EthPayLedger(self.client(), self.keys)
        report = await EthPayer(self.config, ledger, self.rpc, KEY, failpoint=failpoint).run()
        self.assertIsNone(report.error)
        return report

    async def audit(self) -> Audit:
        return await eth_audit(self.config, self.client(), self.rpc, KEY.address)

    async def credit_and_pay(self) -> PayoutReport:
        """A block and an uncle of the pool matured and paid, the payouts mined in a third
        block of the pool's (their fees its revenue) that is still immature."""
        self.chain.mine_blocks(2)
        self.find_block({ALICE: 1, BOB: 2})
        self.chain.mine()
        uncle_height = self.find_block({ALICE: 3, BOB: 1})
        self.chain.reorg(1)  # two other blocks overtake it; the next includes it as an uncle
        nephew = self.chain.mine()
        self.assertEqual([u.block_number for u in nephew.uncles], [uncle_height])
        self.chain.mine_blocks(DEPTH)
        report = await self.unlock()
        self.assertEqual((len(report.matured), report.waiting), (2, {}))
        paid = await self.pay()
        self.assertEqual(set(paid.paid), {ALICE, BOB})
        self.assertEqual(len(self.chain.pending_transactions), 2)
        self.find_block({BOB: 1})
        self.assertEqual(self.chain.pending_transactions, ())
        self.chain.mine_blocks(IMMATURE_DEPTH)
        report = await self.unlock()
        self.assertEqual(len(report.immature), 1)
        return paid


class AuditTests(AuditTestCase):
    async def test_clean(self) -> None:
        """Blocks, an uncle, fees, payouts mined and an immature block: every difference zero,
        and the numbers are the chain's."""
        paid = await self.credit_and_pay()
        audit = await self.audit()
        self.assertEqual(differing(audit), {}, "\n".join(audit.lines()))
        self.assertTrue(audit.clean)
        checks = {c.name: c for c in audit.checks}
        rewards = checks["block rewards credited vs the chain's"].expected
        uncle_reward = 5 * ETHER * 6 // 8
        fees = rewards - 2 * 5 * ETHER - uncle_reward
        self.assertGreater(fees, 0, "the payouts' gas, in the immature block")
        self.assertLess(fees, ETHER // 1000)
        self.assertEqual(checks[f"paid to {ALICE} vs its transfers on chain"].found, paid.amounts[ALICE])
        self.assertEqual(self.chain.balance(bytes.fromhex(ALICE[2:])), paid.amounts[ALICE])
        self.assertEqual(checks["open payouts in the journal"].found, 0)
        self.assertIn("clean: every difference is zero", audit.lines())

        # The watch done (the payouts mined deep enough): the same, from the chain alone.
        again = await self.pay()
        self.assertEqual(len(again.confirmed), 2)
        self.assertEqual(self.hash(self.keys.payouts_unconfirmed), {})
        audit = await self.audit()
        self.assertEqual(differing(audit), {}, "\n".join(audit.lines()))

    async def test_credit_changed(self) -> None:
        """A block's credit to one login raised by a wei: the split no longer adds up to the
        reward, and the login's balance is not what it was credited."""
        await self.credit_and_pay()
        flat = self.redis("ZRANGE", self.keys.blocks_matured, 0, 0, "WITHSCORES")
        block_hash, height = flat[0].split(":")[3], int(flat[1])
        self.redis("HINCRBY", self.keys.credits_wei(height, block_hash), ALICE, 1)
        audit = await self.audit()
        self.assertEqual(
            differing(audit),
            {
                "credits of the blocks vs their rewards": 1,
                f"balance of {ALICE} = credited - paid - pending": -1,
                "finances totalMined vs the matured blocks' credits": -1,
            },
        )
        self.assertFalse(audit.clean)
        self.assertTrue(any(f"block {height} {block_hash}: its credits add up" in n for n in audit.notes))

    async def test_balance_changed(self) -> None:
        """A login's balance moved by 5 wei (its dust) with nothing credited or paid."""
        await self.credit_and_pay()
        miner = self.keys.miner(BOB)
        dust = int(self.hash(miner).get(dust_field("balance"), "0"))
        self.redis("HSET", miner, dust_field("balance"), dust + 5)
        audit = await self.audit()
        self.assertEqual(
            differing(audit),
            {f"balance of {BOB} = credited - paid - pending": 5, "finances balance vs the logins' sum": -5},
        )
        self.assertIn("NOT CLEAN: see the differences above", audit.lines())

    async def test_payout_record_of_another_transaction(self) -> None:
        """A payout record naming another transfer to the login, of another value: the
        records no longer match the chain, nor the login's paid."""
        paid = await self.credit_and_pay()
        pricing = LegacyPricing(GWEI)
        other = sign_transfer(KEY, 1337, self.chain.nonce(POOL_ACCOUNT), ALICE, ETHER, pricing)
        self.chain.send(other.raw)
        self.chain.mine()
        amount = shannon(paid.amounts[ALICE])
        self.redis("ZREM", self.keys.payments_all, payment_member(paid.paid[ALICE], ALICE, amount))
        self.redis("ZADD", self.keys.payments_all, NOW, payment_member(other.tx_hash, ALICE, amount))
        audit = await self.audit()
        self.assertEqual(
            differing(audit),
            {
                f"payouts recorded (Shannon) vs transfers from {POOL}": ETHER - amount * GWEI,
                f"paid to {ALICE} vs its transfers on chain": paid.amounts[ALICE] - ETHER,
            },
        )

    async def test_payout_record_of_no_transaction(self) -> None:
        """A payout record naming a transaction the node does not know, or one of another
        sender: counted as nothing paid, and said."""
        paid = await self.credit_and_pay()
        amount = shannon(paid.amounts[BOB])
        unknown = "0x" + "ee" * 32
        self.redis("ZREM", self.keys.payments_all, payment_member(paid.paid[BOB], BOB, amount))
        self.redis("ZADD", self.keys.payments_all, NOW, payment_member(unknown, BOB, amount))
        audit = await self.audit()
        self.assertEqual(
            differing(audit),
            {
                f"payouts recorded (Shannon) vs transfers from {POOL}": -amount * GWEI,
                f"paid to {BOB} vs its transfers on chain": paid.amounts[BOB],
            },
        )
        self.assertIn(f"payout {unknown} to {BOB} is not a transaction the node knows", audit.notes)

    async def test_open_journal_entry(self) -> None:
        """A payout run stopped after reserving: the amount is pending and in the journal, so the
        balances still add up, and the open payout is the one difference."""
        await self.credit_and_pay()
        self.chain.mine_blocks(DEPTH - IMMATURE_DEPTH)
        self.assertEqual(len((await self.unlock()).matured), 1)
        with self.assertRaises(Killed):
            await self.pay(kill_at("after_reserving"))
        [entry] = await EthPayLedger(self.client(), self.keys).journal()
        self.assertEqual(entry.login, BOB)
        audit = await self.audit()
        self.assertEqual(differing(audit), {"open payouts in the journal": entry.amount})
        self.assertIn(
            f"payout to {BOB} (nonce {entry.nonce}, {entry.amount} wei) is open, reserved: "
            "the next payout run settles it",
            audit.notes,
        )
        await self.pay()
        self.assertEqual(differing(await self.audit()), {})

    async def test_block_gone_from_the_chain(self) -> None:
        """A reorganisation replaces the immature block (the one holding the payouts) before the
        unlocker looks again: what it credited is no longer what the chain pays. The payouts,
        back in the node's pool, are still the payouts recorded."""
        await self.credit_and_pay()
        [member, height_text] = self.redis("ZRANGE", self.keys.blocks_immature, 0, -1, "WITHSCORES")
        height, reward = int(height_text), int(member.split(":")[-1])
        self.chain.reorg(self.chain.height - height + 1)
        self.assertEqual(len(self.chain.pending_transactions), 2)
        audit = await self.audit()
        self.assertEqual(differing(audit), {"block rewards credited vs the chain's": reward})
        self.assertTrue(
            any(n.startswith(f"block {height} 0x") and "the chain pays 0" in n for n in audit.notes)
        )
        self.assertEqual(sum("is in the node's pool, not mined yet" in n for n in audit.notes), 2)


class CommandTests(AuditTestCase):
    """``nomp-payments`` for an Ethereum-family pool, run in this process on its reactor."""

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.conf = write_eth_conf(
            Path(self.mktemp()), self.node.url, self.server.port, DB, self.key_file, lock_timeout=30
        )

    async def nomp_payments(self, *argv: str) -> tuple[int, str, str]:
        return await nomp_payments_here(self.conf, *argv)

    async def test_run_then_audit(self) -> None:
        """``run dev``: the unlocker credits, the payer pays, one line says so; ``audit dev``
        prints every check, clean."""
        self.find_block({ALICE: 1, BOB: 3})
        self.chain.mine_blocks(DEPTH)
        status, out, err = await self.nomp_payments("run", "dev")
        self.assertEqual((status, err), (0, ""), out)
        credits = matured_credits(self.server, DB)
        paid = credits[ALICE] + credits[BOB]
        self.assertEqual(
            out,
            f"pool dev: immature 1, matured 1, orphaned 0, waiting 0, paid {paid} wei to 2 logins\n",
        )
        self.chain.mine()
        for login in (ALICE, BOB):
            self.assertEqual(self.chain.balance(bytes.fromhex(login[2:])), credits[login])
        status, out, err = await self.nomp_payments("audit", "dev")
        self.assertEqual((status, err), (0, ""), out)
        self.assertTrue(out.startswith("pool dev:\n  block rewards credited vs the chain's  "), out)
        self.assertTrue(out.endswith("  clean: every difference is zero\n"), out)

        status, out, _ = await self.nomp_payments("run")  # every pool: the one here
        self.assertEqual(status, 0)
        self.assertTrue(out.startswith("pool dev: immature 0, matured 0,"), out)

    async def test_audit_not_clean(self) -> None:
        self.find_block({ALICE: 1})
        self.chain.mine_blocks(DEPTH)
        await self.unlock()
        self.redis("HINCRBY", self.keys.miner(ALICE), "balance", 1)
        status, out, _ = await self.nomp_payments("audit", "dev")
        self.assertEqual(status, 1)
        self.assertIn(f"balance of {ALICE} = credited - paid - pending", out)
        self.assertIn(f"difference {GWEI}\n", out)
        self.assertTrue(out.endswith("  NOT CLEAN: see the differences above\n"), out)

    async def test_locked_out(self) -> None:
        """Another run holds the pool's lock: nothing done, exit status 1."""
        self.redis("SET", self.keys.unlocker_lock, "7", "PX", 60_000)
        status, out, _ = await self.nomp_payments("run", "dev")
        self.assertEqual(status, 1)
        self.assertTrue(out.endswith("; another run holds the lock\n"), out)
        self.assertEqual(self.redis("GET", self.keys.unlocker_lock), "7")

    async def test_node_down(self) -> None:
        """The node does not answer: both runs say why, exit status 1."""
        await self.node.stop()
        status, out, _ = await self.nomp_payments("run", "dev")
        self.assertEqual(status, 1)
        self.assertIn("; unlocker: the node's height is unknown", out)
        self.assertIn("; payer: the node failed", out)

    async def test_key_file_unsafe_or_missing(self) -> None:
        """A key file others can read, or none: exit status 2 before anything runs, the
        message naming the pool's file and the key's."""
        self.find_block({ALICE: 1})
        self.chain.mine_blocks(DEPTH)
        before = self.redis("ZCARD", self.keys.blocks_candidates)
        for command in ("run", "audit"):
            os.chmod(self.key_file, 0o644)
            status, out, err = await self.nomp_payments(command, "dev")
            self.assertEqual((status, out), (2, ""), command)
            self.assertIn("pools/dev.yaml", err)
            self.assertIn(f"the payout key file {self.key_file} has mode 0644", err)
            self.assertIn(f"chmod 600 {self.key_file}", err)
            self.assertNotIn(SECRET.hex(), err)
            os.remove(self.key_file)
            status, out, err = await self.nomp_payments(command, "dev")
            self.assertEqual((status, out), (2, ""), command)
            self.assertIn(f"cannot open the payout key file {self.key_file}", err)
            write_key(self.key_file.parent)
        self.assertEqual(self.redis("ZCARD", self.keys.blocks_candidates), before, "nothing credited")

    async def test_no_such_pool(self) -> None:
        status, out, err = await self.nomp_payments("run", "nosuch")
        self.assertEqual((status, out, err), (2, "", "no pool with payments enabled named nosuch\n"))
        status, _, err = await self.nomp_payments("audit", "nosuch")
        self.assertEqual(status, 2)

    async def test_no_minimum_per_login(self) -> None:
        """The payer pays every login from minimum_payment: ``minimum`` refuses the pool."""
        status, out, err = await self.nomp_payments("minimum", "dev", ALICE, "1")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("pool dev is of the Ethereum family", err)
        self.assertEqual(self.hash(self.keys.miner(ALICE)), {})
