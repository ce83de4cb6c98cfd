"""Payments end to end: miners mine through the pool on litecoind regtest,
the blocks mature (the test mines the confirmations), and each miner's own
address receives, on the node, what the pool's scheme gives, to the satoshi.

The expected amounts are computed here from the chain (each block's
coinbase value to the pool) and the rounds Redis holds, with arithmetic of
the test's own."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nomp.chain.address import decode_address
from nomp.config import load_config
from nomp.hashing import ALGORITHMS
from nomp.miner import Miner, connect
from nomp.minerkit import MinerStats
from nomp.payments.service import PaymentService
from nomp.payments.split import satoshis
from nomp.pool.service import PoolService
from nomp.service import NompService
from nomp.store.service import RecorderService
from test.chainhelpers import coinbase_outputs, main_chain_and_side_branches
from test.poolconf import write_conf
from test.rediscli import redis, redis_hash
from test.servers import RPC_PASSWORD, RPC_USER, NodeRPCError, RegtestPair, shared_redis, shared_regtest
from test.test_stratum_e2e import pool_ready, start_pool
from test.waiting import until

SCRYPT = ALGORITHMS["scrypt"]
COIN = "litecoin-regtest"
MINERS_WALLET = "miners"
FEE_PERCENT = Decimal("1.5")
MATURITY = 101  # blocks on top of a coinbase before the wallet calls it "generate"


def payments_pair() -> RegtestPair:
    """The regtest pair of the payment tests, past MWEB's activation, with a
    second wallet for the miners (so what they receive is seen apart)."""
    pair = shared_regtest("payments")
    if pair.height() < 440:
        pair.generate_to(440)
    try:
        pair.miner.rpc("createwallet", MINERS_WALLET)
    except NodeRPCError as e:
        if "already exists" not in e.args[0] and "already loaded" not in str(e):
            raise
    return pair


def received(pair: RegtestPair, address: str) -> int:
    return satoshis(Decimal(pair.miner.rpc("getreceivedbyaddress", address, 0, wallet=MINERS_WALLET)))


def descendants(root: NompService) -> list[Any]:
    found: list[Any] = []
    for child in root:
        found.append(child)
        if isinstance(child, MultiService):
            found += list(child)
    return found


def payment_service(root: NompService) -> PaymentService:
    services = [s for s in descendants(root) if isinstance(s, PaymentService)]
    assert len(services) == 1
    return services[0]


def recorders_idle(root: NompService) -> bool:
    """Every block found is settled and every record written."""
    services = list(descendants(root))
    return all(s.submitting == 0 for s in services if isinstance(s, PoolService)) and all(
        s.recorder.waiting == 0 for s in services if isinstance(s, RecorderService)
    )


def expected_split(reward: int, shares: dict[str, str]) -> dict[str, int]:
    """The scheme's split of one block, computed independently: fee first,
    the rest by weight rounded down; the pool keeps what is left."""
    fee = reward * FEE_PERCENT.as_integer_ratio()[0] // (100 * FEE_PERCENT.as_integer_ratio()[1])
    weights: dict[str, Fraction] = {}
    for worker, value in shares.items():
        address = worker.split(".")[0]
        weights[address] = weights.get(address, Fraction(0)) + Fraction(value)
    total = sum(weights.values())
    return {
        a: (reward - fee) * w.numerator * total.denominator // (w.denominator * total.numerator)
        for a, w in weights.items()
    }


async def start_paying_pool(
    test: TestCase,
    pair: RegtestPair,
    redis_port: int,
    db: int,
    scheme: str,
    pool_address: str | None = None,
    pool_options: dict[str, Any] | None = None,
    web: dict[str, Any] | None = None,
    **payments: Any,
) -> tuple[NompService, Path, int, list[str]]:
    """A running pool paying from the pair's wallet; (root, conf, stratum port, two miner
    addresses). ``pool_options`` override keys of the pool file, ``payments`` of its payments."""
    pool_address = pool_address or pair.new_address()
    miners = [str(pair.miner.rpc("getnewaddress", "", "bech32", wallet=MINERS_WALLET)) for _ in range(2)]
    settings = {
        "enabled": True,
        "interval": 3600,  # the test runs the payments itself
        "scheme": scheme,
        "fee_percent": str(FEE_PERCENT),
        "minimum_payment": "0.001",
        "orphan_depth": 2,
        "daemon": {
            "url": f"{pair.miner.url}/wallet/{pair.wallet}",
            "user": RPC_USER,
            "password": RPC_PASSWORD,
        },
        **payments,
    }
    conf, stratum_port = write_conf(
        Path(test.mktemp()),
        pair.miner.url,
        RPC_USER,
        RPC_PASSWORD,
        pool_address,
        redis_port,
        db,
        payments=settings,
        web=web,
        **(pool_options or {}),
    )
    root = start_pool(test, conf)
    await until(lambda: pool_ready(root))
    test.assertEqual(root.fatal_errors, [])
    return root, conf, stratum_port, miners


async def mine_blocks(
    test: TestCase, address: str, stratum_port: int, pair: RegtestPair, blocks: int
) -> MinerStats:
    """nomp-miner mines for ``address`` until the chain is ``blocks`` higher;
    what the pool said of its shares."""
    start = pair.height()
    miner = Miner(reactor, SCRYPT, f"{address}.rig", threads=1)
    await connect(miner, "127.0.0.1", stratum_port)
    test.assertTrue(await miner.authorized)
    miner.start()
    await until(lambda: pair.height() >= start + blocks, timeout=120)
    await miner.stop()
    return miner.stats


class PaymentsOnRegtestTests(TestCase):
    """PROP, PPLNS and SOLO paid through a real wallet."""

    timeout = 600

    async def start(
        self,
        pair: RegtestPair,
        redis_port: int,
        db: int,
        scheme: str,
        pool_address: str | None = None,
        **payments: Any,
    ) -> tuple[NompService, Path, int, list[str]]:
        return await start_paying_pool(self, pair, redis_port, db, scheme, pool_address, **payments)

    async def mine(self, address: str, stratum_port: int, pair: RegtestPair, blocks: int) -> None:
        await mine_blocks(self, address, stratum_port, pair, blocks)

    async def mine_and_pay(self, scheme: str, db: int, **payments: Any) -> tuple[RegtestPair, dict[str, int]]:
        pair = payments_pair()
        redis_port = shared_redis().port
        redis(redis_port, db, "FLUSHDB")
        root, conf, stratum_port, miners = await self.start(pair, redis_port, db, scheme, **payments)
        pool_address = load_config(conf).pools[0].address
        # Two miners, one after the other, three blocks or more each.
        for address in miners:
            await self.mine(address, stratum_port, pair, blocks=3)
        service = payment_service(root)
        await until(lambda: recorders_idle(root))

        pending = redis(redis_port, db, "SMEMBERS", f"{COIN}:blocksPending")  # before a run orphans any
        first = await service.run_once()
        assert first is not None
        # A block beaten at its height waits on its side branch (then is orphaned), never paid.
        main, side = main_chain_and_side_branches(pair, [m.split(":")[0] for m in pending])
        self.assertEqual(sorted([*first.immature, *first.waiting, *first.orphaned]), sorted(main + side))
        self.assertLessEqual(set(side), {*first.waiting, *first.orphaned})
        self.assertEqual(first.paid, {})
        immature = {a: int(v) for a, v in redis_hash(redis_port, db, f"{COIN}:pay:immature").items()}
        self.assertEqual(set(immature), set(miners))

        pair.generate(MATURITY)
        second = await service.run_once()
        assert second is not None
        self.assertEqual(sorted(second.confirmed), sorted(main))
        self.assertIsNone(second.error)

        # What the scheme gives, from the chain and the rounds.
        pool_script = decode_address(pool_address, load_config(conf).pools[0].coin.network).script.hex()
        expected = {a: 0 for a in miners}
        for block_hash in second.confirmed:
            reward = sum(v for script, v in coinbase_outputs(pair, block_hash) if script == pool_script)
            detail = redis_hash(redis_port, db, f"{COIN}:block:{block_hash}")
            shares = redis_hash(redis_port, db, detail["round"])
            for address, amount in expected_split(reward, shares).items():
                expected[address] += amount
        self.assertEqual(second.paid, expected)
        got = {a: received(pair, a) for a in miners}
        if payments.get("transaction_fee") == "miners":
            # The wallet takes the fee out of the payouts (split between them).
            (record,) = redis(redis_port, db, "ZRANGE", f"{COIN}:payments", "0", "-1")
            fee = int(json.loads(record)["fee"])
            self.assertGreater(fee, 0)
            self.assertEqual(sum(got.values()), sum(expected.values()) - fee)
            self.assertTrue(all(expected[a] - fee <= got[a] < expected[a] for a in miners))
        else:
            self.assertEqual(got, expected)
        self.assertEqual(redis_hash(redis_port, db, f"{COIN}:pay:immature"), {})
        self.assertEqual(redis_hash(redis_port, db, f"{COIN}:pay:balance"), {})
        paid = {a: int(v) for a, v in redis_hash(redis_port, db, f"{COIN}:pay:paid").items()}
        self.assertEqual(paid, expected)

        # A third run finds nothing more to pay.
        third = await service.run_once()
        assert third is not None
        self.assertEqual((third.confirmed, third.paid), ([], {}))
        self.assertEqual({a: received(pair, a) for a in miners}, got)
        return pair, expected

    async def test_prop(self) -> None:
        """PROP: each block's reward by the shares of its round."""
        await self.mine_and_pay("prop", 5)

    async def test_pplns(self) -> None:
        """PPLNS: each block's window is the last shares before it, across rounds;
        the window here holds about four shares, so blocks pay both miners."""
        await self.mine_and_pay("pplns", 6, pplns_window=0.25)
        rounds = [k for k in redis(shared_redis().port, 6, "KEYS", f"{COIN}:shares:round*")]
        full = [sum(Fraction(v) for v in redis_hash(shared_redis().port, 6, k).values()) for k in rounds]
        self.assertIn(Fraction(1, 4), full)
        self.assertTrue(all(total <= Fraction(1, 4) for total in full))

    async def test_orphaned_blocks_never_paid(self) -> None:
        """Blocks reorganised away (invalidateblock) lose their immature credit, their
        shares go back to the current round, and nobody is paid for them."""
        pair = payments_pair()
        port, db = shared_redis().port, 8
        redis(port, db, "FLUSHDB")
        root, _, stratum_port, miners = await self.start(pair, port, db, "prop")
        start = pair.height()
        await self.mine(miners[0], stratum_port, pair, blocks=3)
        await until(lambda: recorders_idle(root))
        service = payment_service(root)
        first = await service.run_once()
        assert first is not None
        self.assertGreaterEqual(len(first.immature), 3)
        pair.miner.rpc("invalidateblock", pair.miner.rpc("getblockhash", start + 1))
        pair.generate(pair.height() - start + 10)  # a longer chain, so the peer follows
        second = await service.run_once()
        assert second is not None
        # And any block of the miner's another beat at its height (it waited on its side branch).
        self.assertEqual(sorted(second.orphaned), sorted([*first.immature, *first.waiting]))
        self.assertEqual(redis_hash(port, db, f"{COIN}:pay:immature"), {})
        self.assertEqual(redis(port, db, "SMEMBERS", f"{COIN}:blocksPending"), [])
        folded = redis_hash(port, db, f"{COIN}:shares:roundCurrent")
        self.assertGreaterEqual(Fraction(folded[f"{miners[0]}.rig"]), Fraction(3, 16))
        pair.generate(MATURITY)
        third = await service.run_once()
        assert third is not None
        self.assertEqual((third.confirmed, third.paid), ([], {}))
        self.assertEqual(received(pair, miners[0]), 0)

    async def test_wallet_refusals(self) -> None:
        """A real wallet with no funds, then locked: no payout, nothing withheld,
        balances untouched; once funded and unlocked, paid in full."""
        pair = payments_pair()
        port, db = shared_redis().port, 10
        redis(port, db, "FLUSHDB")
        wallet = f"dry{os.urandom(3).hex()}"
        pair.miner.rpc("createwallet", wallet)
        pool_address = str(pair.miner.rpc("getnewaddress", "", "bech32", wallet=wallet))
        daemon = {"url": f"{pair.miner.url}/wallet/{wallet}", "user": RPC_USER, "password": RPC_PASSWORD}
        root, _, stratum_port, miners = await self.start(
            pair, port, db, "prop", pool_address=pool_address, daemon=daemon
        )
        await self.mine(miners[0], stratum_port, pair, blocks=2)
        await until(lambda: recorders_idle(root))
        pair.generate(MATURITY)
        service = payment_service(root)

        # Everything the wallet holds leaves it: sendmany must fail for real.
        funds = pair.miner.rpc("getbalance", wallet=wallet)
        pair.miner.rpc("sendtoaddress", pair.new_address(), funds, "", "", True, wallet=wallet)
        pair.generate(1)
        dry = await service.run_once()
        assert dry is not None and dry.error is not None
        self.assertIn("not enough funds", dry.error)
        owed = {a: int(v) for a, v in redis_hash(port, db, f"{COIN}:pay:balance").items()}
        self.assertEqual(set(owed), {miners[0]})
        self.assertEqual(redis(port, db, "GET", f"{COIN}:pay:journal"), [])

        pair.wallet_rpc("sendtoaddress", pool_address, "100")
        pair.generate(1)
        pair.miner.rpc("encryptwallet", "passphrase", wallet=wallet)
        locked = await service.run_once()
        assert locked is not None and locked.error is not None
        self.assertIn("locked", locked.error)
        self.assertEqual({a: int(v) for a, v in redis_hash(port, db, f"{COIN}:pay:balance").items()}, owed)

        pair.miner.rpc("walletpassphrase", "passphrase", 60, wallet=wallet)
        paid = await service.run_once()
        assert paid is not None
        self.assertIsNone(paid.error)
        self.assertEqual(paid.paid, owed)
        self.assertEqual(received(pair, miners[0]), owed[miners[0]])

    async def test_solo(self) -> None:
        """SOLO: the finder takes his block (less the pool fee); here the miners pay
        the transaction fee."""
        _, expected = await self.mine_and_pay("solo", 7, transaction_fee="miners")
        self.assertTrue(all(amount > 0 for amount in expected.values()))
