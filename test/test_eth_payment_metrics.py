"""Prometheus metrics of the Ethereum family's unlocker and payer: real runs of their
services against the dev node (test/ethnode) and a real redis-server, through the
harnesses of test_ethunlocker and test_ethpayer, scraped as Prometheus text.

The services run on a task.Clock (their timers wait for the test) and talk to the
node over real HTTP; their wall clock is the test's, so run times are exact."""

from __future__ import annotations

from pathlib import Path

import yaml
from eth_keys.datatypes import PrivateKey
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase
from txredisapi import ResponseError

from nomp.config import load_config
from nomp.daemon.clients import DaemonClients
from nomp.payments.ethledger import EthLedger
from nomp.payments.ethpayer import LOCK_RETRY, EthPayerService, Outstanding, PayoutReport, StopKind
from nomp.payments.ethunlocker import EthUnlockerService, UnlockReport
from nomp.tap import build_service
from nomp.web.metrics import Metrics, MetricsService
from nomp.web.service import WebService
from test.ethnode import ETHER, GWEI, OUTSIDE, sign_transaction
from test.ethpool import ETHERBASE
from test.test_config_paths import SHIPPED_COINS, SHIPPED_CONF
from test.test_ethpayer import ALICE, BOB, CAROL, MINIMUM_WEI, SECRET, Killed, PayerTestCase, kill_at
from test.test_ethunlocker import DEPTH, IMMATURE_DEPTH, NOW, REWARD, UnlockerTestCase
from test.test_metrics import scrape, value
from test.waiting import until

POOL = "dev"  # the name of test.ethpool's pool
BLOCK_KINDS = ("candidates", "immature", "uncles", "matured", "orphaned", "waiting")
ERROR_KINDS = ("halted", "stopped", "node", "redis", "failed")


class UnlockerMetricsTests(UnlockerTestCase):
    """EthUnlockerService's runs, as nomp_eth_unlocker_* report them."""

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.metrics = Metrics()
        self.now = NOW
        clients = DaemonClients(reactor, persistent=False)
        self.addCleanup(clients.close)
        self.service = EthUnlockerService(
            self.config,
            self.redis_service.client,
            task.Clock(),
            http=clients.http,
            wall_clock=lambda: self.now,
            run_listener=self.metrics.unlocker_observer(POOL),
        )
        self.addCleanup(lambda: self.service.stopService() if self.service.running else None)

    def sample(self, name: str, **labels: str) -> float:
        return value(scrape(self.metrics), name, pool=POOL, **labels)

    def runs(self) -> dict[str, float]:
        return {
            outcome: self.sample("nomp_eth_unlocker_runs_total", outcome=outcome)
            for outcome in ("ok", "error", "locked_out")
        }

    def blocks(self) -> dict[str, float]:
        return {kind: self.sample("nomp_eth_unlocker_last_run_blocks", kind=kind) for kind in BLOCK_KINDS}

    async def start(self) -> None:
        """The service started: its first run, at once, done."""
        self.service.startService()
        await until(lambda: sum(self.runs().values()) == 1)

    async def test_blocks_uncles_and_credit(self) -> None:
        """A block and an uncle credited as immature, then matured: the counts of each run,
        and the wei the matured ones made balances, to the wei."""
        self.assertEqual(self.runs(), {"ok": 0, "error": 0, "locked_out": 0})
        self.assertEqual(self.blocks(), dict.fromkeys(BLOCK_KINDS, 0))
        self.assertEqual(self.sample("nomp_eth_unlocker_credited_ether_total"), 0)
        self.assertEqual(self.sample("nomp_eth_unlocker_last_success_timestamp_seconds"), 0)

        self.mine_to(3)
        uncle = await self.find_block({ALICE: 3, BOB: 1})
        height = self.chain.height
        self.chain.reorg(1)  # two other blocks from its parent overtake it
        self.chain.mine()  # and the next includes it as an uncle, two below
        block = await self.find_block({ALICE: 1, BOB: 2})
        self.assertEqual(self.chain.height, height + 3)
        self.mine_to(height + 3 + IMMATURE_DEPTH)
        self.now = NOW + 10
        await self.start()
        self.assertEqual(self.runs(), {"ok": 1, "error": 0, "locked_out": 0})
        self.assertEqual(
            self.blocks(),
            {"candidates": 2, "immature": 2, "uncles": 1, "matured": 0, "orphaned": 0, "waiting": 0},
        )
        self.assertEqual(self.sample("nomp_eth_unlocker_credited_ether_total"), 0, "immature is no balance")
        self.assertEqual(self.sample("nomp_eth_unlocker_last_success_timestamp_seconds"), NOW + 10)

        self.mine_to(height + 3 + DEPTH)
        self.now = NOW + 20
        report = await self.service.run_once()
        assert report is not None
        self.assertEqual(sorted(report.matured), sorted([uncle, block]))
        self.assertEqual(self.runs(), {"ok": 2, "error": 0, "locked_out": 0})
        self.assertEqual(
            self.blocks(),
            {"candidates": 0, "immature": 0, "uncles": 0, "matured": 2, "orphaned": 0, "waiting": 0},
        )
        uncle_reward = REWARD * 6 // 8
        self.assertEqual(report.credited, uncle_reward + REWARD)
        self.assertEqual(self.chain.balance(ETHERBASE), uncle_reward + REWARD, "what the chain paid")
        self.assertEqual(self.sample("nomp_eth_unlocker_credited_ether_total"), 8.75)
        self.assertEqual(self.sample("nomp_eth_unlocker_last_success_timestamp_seconds"), NOW + 20)

    async def test_orphaned(self) -> None:
        """An immature block a reorganisation replaced: orphaned, nothing credited."""
        nonce = await self.find_block({ALICE: 1})
        height = self.chain.height
        self.mine_to(height + IMMATURE_DEPTH)
        await self.start()
        self.assertEqual(self.sample("nomp_eth_unlocker_last_run_blocks", kind="immature"), 1)
        self.chain.reorg(IMMATURE_DEPTH + 1)
        self.mine_to(height + DEPTH)
        report = await self.service.run_once()
        assert report is not None
        self.assertEqual(report.orphaned, [nonce])
        self.assertEqual(
            self.blocks(),
            {"candidates": 0, "immature": 0, "uncles": 0, "matured": 0, "orphaned": 1, "waiting": 0},
        )
        self.assertEqual(self.sample("nomp_eth_unlocker_credited_ether_total"), 0)

    async def test_locked_out_and_error_runs(self) -> None:
        """A run locked out, one that raised (Redis refused the lock's fence) and one the node
        did not answer: each counted by outcome; the last success stays the first run's."""
        await self.start()
        client = self.redis_service.client()
        assert client is not None
        ledger = EthLedger(client, self.keys)
        token = await ledger.acquire(60)
        assert token is not None
        self.now = NOW + 10
        report = await self.service.run_once()
        assert report is not None
        self.assertTrue(report.locked_out)
        await ledger.release(token)
        self.assertEqual(self.runs(), {"ok": 1, "error": 0, "locked_out": 1})

        self.redis("SET", self.keys.unlocker_fence, "not a counter")
        self.assertIsNone(await self.service.run_once())
        self.assertEqual(len(self.flushLoggedErrors(ResponseError)), 1)
        self.redis("DEL", self.keys.unlocker_fence)
        self.assertEqual(self.runs(), {"ok": 1, "error": 1, "locked_out": 1})

        await self.node.stop()
        report = await self.service.run_once()
        assert report is not None and report.error is not None
        self.assertIn("the node's height is unknown", report.error)
        self.assertEqual(self.runs(), {"ok": 1, "error": 2, "locked_out": 1})
        self.assertEqual(self.sample("nomp_eth_unlocker_last_success_timestamp_seconds"), NOW)
        self.assertEqual(self.blocks(), dict.fromkeys(BLOCK_KINDS, 0))


class PayerMetricsTests(PayerTestCase):
    """EthPayerService's runs, as nomp_eth_payer_* report them."""

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.metrics = Metrics()
        self.clock = task.Clock()
        self.now = NOW
        clients = DaemonClients(reactor, persistent=False)
        self.addCleanup(clients.close)
        self.service = EthPayerService(
            self.config,
            self.redis_service.client,
            self.clock,
            http=clients.http,
            wall_clock=lambda: self.now,
            run_listener=self.metrics.payer_observer(POOL),
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        for timer in self.clock.getDelayedCalls():  # its first run: the test starts each run itself
            timer.cancel()

    def sample(self, name: str, **labels: str) -> float:
        return value(scrape(self.metrics), name, pool=POOL, **labels)

    def runs(self) -> dict[str, float]:
        return {
            outcome: self.sample("nomp_eth_payer_runs_total", outcome=outcome)
            for outcome in ("ok", "error", "locked_out")
        }

    def errors(self) -> dict[str, float]:
        return {kind: self.sample("nomp_eth_payer_errors_total", kind=kind) for kind in ERROR_KINDS}

    def outstanding(self) -> dict[str, float]:
        return {
            state: self.sample("nomp_eth_payer_outstanding_payouts", state=state)
            for state in ("open", "unconfirmed")
        }

    async def service_run(self) -> PayoutReport:
        report = await self.service.run_once()
        assert report is not None
        return report

    async def test_payouts_counted(self) -> None:
        """Payouts sent and the wei they debited, summed as wei: 0.1 and 0.2 ether paid in two
        runs are 0.3 ether (as floats they would add up to 0.30000000000000004); the payouts
        watched until mined deep enough."""
        self.assertEqual(self.runs(), {"ok": 0, "error": 0, "locked_out": 0})
        self.assertEqual(self.errors(), dict.fromkeys(ERROR_KINDS, 0))
        self.assertEqual(self.outstanding(), {"open": 0, "unconfirmed": 0})
        self.assertEqual(self.sample("nomp_eth_payer_payouts_total"), 0)
        self.assertEqual(self.sample("nomp_eth_payer_paid_ether_total"), 0)
        self.assertEqual(self.sample("nomp_eth_payer_halted"), 0)
        self.assertEqual(self.sample("nomp_eth_payer_last_success_timestamp_seconds"), 0)

        self.credit({ALICE: ETHER // 10, CAROL: MINIMUM_WEI - 1})
        self.now = NOW + 10
        report = await self.service_run()
        self.assertEqual(report.amounts, {ALICE: ETHER // 10})
        first = report.paid[ALICE]
        self.assertEqual(self.sample("nomp_eth_payer_payouts_total"), 1)
        self.assertEqual(self.sample("nomp_eth_payer_paid_ether_total"), 0.1)
        self.assertEqual(self.outstanding(), {"open": 0, "unconfirmed": 1})
        self.assertEqual(self.sample("nomp_eth_payer_last_success_timestamp_seconds"), NOW + 10)

        self.chain.mine()
        self.credit({BOB: ETHER // 5})
        self.now = NOW + 20
        report = await self.service_run()
        self.assertEqual(report.amounts, {BOB: ETHER // 5})
        self.assertEqual(report.waiting, [first])
        self.assertEqual(self.sample("nomp_eth_payer_payouts_total"), 2)
        self.assertNotEqual(0.1 + 0.2, 0.3)
        self.assertEqual(self.sample("nomp_eth_payer_paid_ether_total"), 0.3)
        self.assertEqual(self.outstanding(), {"open": 0, "unconfirmed": 2}, "one block deep, and pooled")

        self.chain.mine()
        self.chain.mine_blocks(11)  # twelve on top of the first payout's block, and of the second's
        report = await self.service_run()
        self.assertEqual(len(report.confirmed), 2)
        self.assertEqual(self.outstanding(), {"open": 0, "unconfirmed": 0})
        self.assertEqual(self.runs(), {"ok": 3, "error": 0, "locked_out": 0})
        self.assertEqual(self.sample("nomp_eth_payer_payouts_total"), 2)
        self.assertEqual(self.errors(), dict.fromkeys(ERROR_KINDS, 0))

    async def test_locked_out_each_try_counted(self) -> None:
        """While the unlocker holds the pool's lock each try is counted locked out; the run
        after it pays."""
        self.credit({ALICE: ETHER})
        self.redis("SET", self.keys.unlocker_lock, "7", "PX", 60_000)
        running = defer.Deferred.fromCoroutine(self.service.run_once())
        await until(lambda: self.runs()["locked_out"] == 1)
        self.assertFalse(running.called, "the next try waits for the clock")
        self.redis("DEL", self.keys.unlocker_lock)
        self.clock.advance(LOCK_RETRY)
        report = await running
        assert report is not None
        self.assertEqual(set(report.paid), {ALICE})
        self.assertEqual(self.runs(), {"ok": 1, "error": 0, "locked_out": 1})
        self.assertEqual(self.sample("nomp_eth_payer_payouts_total"), 1)
        self.assertEqual(self.sample("nomp_eth_payer_paid_ether_total"), 1)

    async def test_errors_by_kind(self) -> None:
        """A run stopped by a check (OEP's payer at work), one Redis refused (its journal of
        the wrong type), one that raised (the lock's fence not a counter) and one the node did
        not answer: each error counted by its kind, nothing paid."""
        self.credit({ALICE: ETHER})
        self.redis("SET", self.keys.payments_lock, f"{ALICE}:1000000000")
        self.assertEqual((await self.service_run()).stop, StopKind.STOPPED)
        self.redis("DEL", self.keys.payments_lock)

        # The journal not a hash: the run's check refused, then the read of what is outstanding.
        self.redis("SET", self.keys.payouts_journal, "not a hash")
        self.assertEqual((await self.service_run()).stop, StopKind.REDIS)
        self.assertEqual(len(self.flushLoggedErrors(ResponseError)), 1, "the outstanding payouts unread")
        self.assertEqual(self.outstanding(), {"open": 0, "unconfirmed": 0}, "as the last read left them")
        self.redis("DEL", self.keys.payouts_journal)

        self.redis("SET", self.keys.unlocker_fence, "not a counter")
        self.assertIsNone(await self.service.run_once())
        self.assertEqual(len(self.flushLoggedErrors(ResponseError)), 1)
        self.redis("DEL", self.keys.unlocker_fence)

        await self.node.stop()
        self.assertEqual((await self.service_run()).stop, StopKind.NODE)

        self.assertEqual(self.runs(), {"ok": 0, "error": 4, "locked_out": 0})
        self.assertEqual(self.errors(), {"halted": 0, "stopped": 1, "node": 1, "redis": 1, "failed": 1})
        self.assertEqual(self.sample("nomp_eth_payer_halted"), 0)
        self.assertEqual(self.sample("nomp_eth_payer_payouts_total"), 0)
        self.assertEqual(self.sample("nomp_eth_payer_last_success_timestamp_seconds"), 0)
        self.assertEqual(self.amount(self.keys.miner(ALICE), "balance"), ETHER)

    async def test_halted_until_the_operator_settles(self) -> None:
        """A payout whose nonce another transaction of the key took: every run halts on it
        (the gauge stays 1, the payout open in the journal) until the operator settles it."""
        self.credit({ALICE: ETHER, BOB: ETHER})
        with self.assertRaises(Killed):
            await self.run_payer(kill_at("after_signing"))
        (open_entry,) = await self.ledger().journal()
        self.chain.send(
            sign_transaction(
                self.fork,
                PrivateKey(SECRET),
                chain_id=1337,
                nonce=open_entry.nonce,
                to=OUTSIDE,
                value=1,
                gas_price=GWEI,
            )
        )
        self.chain.mine()
        for tries in (1, 2):
            report = await self.service_run()
            self.assertEqual(report.stop, StopKind.HALTED)
            self.assertEqual(self.sample("nomp_eth_payer_halted"), 1)
            self.assertEqual(self.sample("nomp_eth_payer_errors_total", kind="halted"), tries)
            self.assertEqual(self.outstanding(), {"open": 1, "unconfirmed": 0})

        # The operator pays the miner by hand and closes the entry.
        self.redis("HDEL", self.keys.payouts_journal, open_entry.login)
        self.redis("DEL", self.keys.payments_pending)
        report = await self.service_run()
        self.assertIsNone(report.error)
        self.assertEqual(set(report.paid), {BOB})
        self.assertEqual(self.sample("nomp_eth_payer_halted"), 0)
        self.assertEqual(self.outstanding(), {"open": 0, "unconfirmed": 1})
        self.assertEqual(self.runs(), {"ok": 1, "error": 2, "locked_out": 0})


class ObserverTests(SynchronousTestCase):
    def test_error_without_a_kind(self) -> None:
        """A payer report with an error and no kind of stop is counted, as unknown."""
        metrics = Metrics()
        observe = metrics.payer_observer(POOL)
        observe(PayoutReport(error="why"), Outstanding(0, 0), 1.0)
        samples = scrape(metrics)
        self.assertEqual(value(samples, "nomp_eth_payer_runs_total", pool=POOL, outcome="error"), 1)
        self.assertEqual(value(samples, "nomp_eth_payer_errors_total", pool=POOL, kind="unknown"), 1)
        for kind in ERROR_KINDS:
            self.assertEqual(value(samples, "nomp_eth_payer_errors_total", pool=POOL, kind=kind), 0)


class WiringTests(SynchronousTestCase):
    """build_service: an Ethereum pool with payments on has its unlocker and payer tell
    the metrics /metrics serves."""

    def test_listeners(self) -> None:
        conf = Path(self.mktemp())
        (conf / "pools").mkdir(parents=True)
        key = conf / "payout.key"
        key.write_text("0x" + "46" * 32 + "\n")
        key.chmod(0o600)
        (conf / "config.yaml").write_text(f"coins: {SHIPPED_COINS}\n")
        pool = yaml.safe_load((SHIPPED_CONF / "examples" / "ethereum-classic.yaml").read_text())
        pool["payments"] = {"enabled": True, "key_file": str(key), "immature_depth": 16, "depth": 32}
        (conf / "pools" / "etc.yaml").write_text(yaml.safe_dump(pool))
        root = build_service(load_config(conf), reactor, exit_with=lambda s: None, shutdown=lambda: None)
        web = root.getServiceNamed("web")
        assert isinstance(web, WebService)
        timers = web.getServiceNamed("metrics")
        assert isinstance(timers, MetricsService)
        eth_pool = root.getServiceNamed("pool:etc")
        unlocker = eth_pool.getServiceNamed("unlocker:etc")
        payer = eth_pool.getServiceNamed("payer:etc")
        assert isinstance(unlocker, EthUnlockerService) and isinstance(payer, EthPayerService)
        assert unlocker._run_listener is not None and payer._run_listener is not None
        unlocker._run_listener(UnlockReport(credited=3 * ETHER), 1.0)
        payer._run_listener(
            PayoutReport(paid={ALICE: "0x01"}, amounts={ALICE: ETHER}), Outstanding(0, 1), 2.0
        )
        samples = scrape(timers.metrics)
        self.assertEqual(value(samples, "nomp_eth_unlocker_credited_ether_total", pool="etc"), 3)
        self.assertEqual(value(samples, "nomp_eth_unlocker_last_success_timestamp_seconds", pool="etc"), 1)
        self.assertEqual(value(samples, "nomp_eth_payer_payouts_total", pool="etc"), 1)
        self.assertEqual(value(samples, "nomp_eth_payer_last_success_timestamp_seconds", pool="etc"), 2)
        self.assertEqual(
            value(samples, "nomp_eth_payer_outstanding_payouts", pool="etc", state="unconfirmed"), 1
        )
