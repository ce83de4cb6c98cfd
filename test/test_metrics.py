"""Prometheus metrics: counted where things happen, read at scrape time,
served at GET /metrics by a real web service over a real Redis."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from nomp.config import PortConfig, RedisConfig, WebConfig, load_config
from nomp.daemon import DaemonRPC
from nomp.daemon.errors import DaemonError
from nomp.hashing import ALGORITHMS, ShareWork
from nomp.hashing.pool import HashPoolService
from nomp.payments.rounds import PROP
from nomp.payments.service import wallet_rpc
from nomp.pool.service import PoolService
from nomp.store.client import RedisClient
from nomp.store.recorder import ShareRecorder
from nomp.store.redis import RedisService
from nomp.store.schema import PoolKeys, WebKeys
from nomp.tap import build_service
from nomp.web.collector import build_snapshot, empty_stats
from nomp.web.metrics import (
    MINER_FAMILIES,
    WORKER_METRICS_INTERVAL,
    Metrics,
    MetricsService,
    WorkerMetricsService,
    worker_families,
)
from nomp.web.service import WebService
from test.ethpool import eth_pool_config, stratum_port
from test.fakedaemon import FakeDaemon, FakeRPCError
from test.fakes import (
    REGTEST_ADDRESS,
    Connection,
    FakeBlockRecords,
    FakePool,
    InlineHashing,
    StratumHarness,
    build_server,
    find_nonce,
    mainnet_template,
    pool_config,
    registry_for,
    submit_params,
)
from test.servers import shared_redis
from test.test_config_paths import SHIPPED_CONF
from test.test_daemon import as_reactor, stub_treq
from test.test_stratum_protocol import NOW
from test.waiting import until
from test.webclient import serve

DB = 14  # of the shared redis-server; each test also has a coin of its own
DIFF = 0.0001  # about one hash in seven is a share: quick to grind
PLAIN_PORT = PortConfig(listen="tcp:3333:interface=127.0.0.1", diff=DIFF)
HIGH_PORT = PortConfig(listen="tcp:3335:interface=127.0.0.1", diff=1.0)
WORKER = REGTEST_ADDRESS + ".rig1"
EXTRANONCE2 = bytes.fromhex("abcdef12")
SCRYPT_MULTIPLIER = 2**16
URL = "http://127.0.0.1:19443/"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(body: bytes) -> Samples:
    """Every sample of a Prometheus text body, by name and labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(metrics: Metrics) -> Samples:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain"), content_type
    return parse(body)


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise AssertionError(f"no sample {name}{labels}")
    return samples[key]


def pow_test(difficulty: float, meets: bool) -> Callable[[int], bool]:
    """A PoW test: the value is (or is not) a share of ``difficulty``."""
    target = ALGORITHMS["scrypt"].share_target(difficulty)
    return (lambda v: v <= target) if meets else (lambda v: v > target)


class Miner:
    """One subscribed, authorized connection and the shares it grinds."""

    def __init__(self, connection: Connection, pool: FakePool) -> None:
        self.connection = connection
        self.pool = pool
        self._next_nonce = 0

    def params(self, meets: bool = True, difficulty: float = DIFF) -> list[Any]:
        """Submit params of a new share, meeting ``difficulty`` or not."""
        registry = self.pool.registry
        assert registry is not None and registry.current is not None
        job = registry.current
        extranonce1 = self.connection.session.extranonce1
        assert extranonce1 is not None
        nonce = find_nonce(
            job, extranonce1 + EXTRANONCE2, pow_test(difficulty, meets), start=self._next_nonce
        )
        self._next_nonce = nonce + 1
        return submit_params(WORKER, job, EXTRANONCE2, nonce)

    def submit(self, params: list[Any]) -> dict[str, Any]:
        (reply,) = self.connection.submit(params)
        return reply


def shares_by_result(samples: Samples, pool: str) -> dict[str, float]:
    return {
        dict(labels)["result"]: sample
        for (name, labels), sample in samples.items()
        if name == "nomp_stratum_shares_total" and dict(labels)["pool"] == pool
    }


class PoolCounts:
    """A PoolService's counters, as the metrics read them."""

    def __init__(self) -> None:
        self.blocks: Counter[str] = Counter()
        self.job_failures: Counter[str] = Counter()


class NothingBuffered:
    """The recorder of a pool whose records are all written."""

    waiting = 0
    set_aside = 0


class StratumMetricsTests(SynchronousTestCase):
    """Shares, connections and blocks, counted by a real StratumPool on fakes."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.harness = StratumHarness(pool_config(name="ltc", ports=(PLAIN_PORT, HIGH_PORT)), self.clock)
        self.harness.new_job(mainnet_template())
        self.metrics = Metrics()
        self.counters = PoolCounts()
        self.metrics.watch_pool("ltc", self.harness.server, NothingBuffered(), self.counters)

    def miner(self, port: PortConfig = PLAIN_PORT, ip: str | None = None) -> Miner:
        return Miner(self.harness.miner(WORKER, port, ip), self.harness.pool)

    def test_shares_by_result(self) -> None:
        """Each share counts once, under the refusal the miner was sent."""
        miner = self.miner()
        first = miner.params()
        self.assertIs(miner.submit(first)["result"], True)
        for _ in range(2):
            self.assertIs(miner.submit(miner.params())["result"], True)
        for _ in range(2):
            self.assertEqual(miner.submit(first)["error"][0], 22)  # duplicate
        self.assertEqual(miner.submit(miner.params(meets=False))["error"][0], 23)  # low difficulty
        stale = miner.params()
        stale[1] = "ffff"
        self.assertEqual(miner.submit(stale)["error"][0], 21)  # job not found
        bad_nonce = miner.params()
        bad_nonce[4] = "xyz"
        self.assertEqual(miner.submit(bad_nonce)["error"][0], 20)
        stranger = self.harness.connect()
        stranger.subscribe()
        self.assertEqual(stranger.submit(miner.params())[0]["error"][0], 24)  # unauthorized

        self.assertEqual(
            shares_by_result(scrape(self.metrics), "ltc"),
            {
                "accepted": 3.0,
                "duplicate": 2.0,
                "low_difficulty": 1.0,
                "stale": 1.0,
                "invalid": 1.0,
                "unauthorized": 1.0,
                "not_subscribed": 0.0,
                "unrecorded": 0.0,
                "error": 0.0,
            },
        )

    def test_unrecorded_and_failed_checks(self) -> None:
        """A share the recorder cannot take, and one whose check failed, each have their result."""
        miner = self.miner()
        self.harness.recorder.full = True
        self.assertEqual(miner.submit(miner.params())["error"][0], 20)
        self.harness.recorder.full = False
        self.harness.hashing.error = RuntimeError("the C check failed")
        self.assertEqual(miner.submit(miner.params())["error"][0], 20)
        self.flushLoggedErrors(RuntimeError)
        results = shares_by_result(scrape(self.metrics), "ltc")
        self.assertEqual((results["unrecorded"], results["error"], results["accepted"]), (1.0, 1.0, 0.0))

    def test_connections_by_port_and_refusals(self) -> None:
        """Open connections per port, closed ones gone; refused connections by reason."""
        plain = [self.harness.connect(PLAIN_PORT) for _ in range(3)]
        self.harness.connect(HIGH_PORT)
        plain[0].lose()
        self.harness.server.bans.ban("192.0.2.7", 600, "test")
        with self.assertRaises(ConnectionRefusedError):
            self.harness.connect(PLAIN_PORT, ip="192.0.2.7")
        samples = scrape(self.metrics)
        self.assertEqual(value(samples, "nomp_stratum_connections", pool="ltc", port="3333"), 2)
        self.assertEqual(value(samples, "nomp_stratum_connections", pool="ltc", port="3335"), 1)
        refused = "nomp_stratum_connections_refused_total"
        self.assertEqual(value(samples, refused, pool="ltc", reason="banned"), 1)
        self.assertEqual(value(samples, refused, pool="ltc", reason="too_many_from_ip"), 0)

    def test_blocks_and_job_failures(self) -> None:
        """Block candidates by what the daemons made of them, and refreshes that made no job,
        as the pool counts them."""
        self.counters.blocks.update({"accepted": 2, "error": 1})
        self.counters.job_failures["job"] += 3
        samples = scrape(self.metrics)
        found = "nomp_blocks_found_total"
        self.assertEqual(
            [value(samples, found, pool="ltc", result=r) for r in ("accepted", "rejected", "error")],
            [2, 0, 1],
        )
        self.assertEqual(value(samples, "nomp_share_records_set_aside_total", pool="ltc"), 0)
        failures = "nomp_pool_job_failures_total"
        self.assertEqual(
            [value(samples, failures, pool="ltc", kind=k) for k in ("daemon", "template", "job")],
            [0, 0, 3],
        )


class SlowLink:
    """Requests reach the daemon ``delay`` seconds after they are sent."""

    def __init__(self, http: Any, clock: task.Clock) -> None:
        self.http = http
        self.clock = clock
        self.delay = 0.0

    def post(self, url: str, **kwargs: Any) -> defer.Deferred[Any]:
        arrived = task.deferLater(self.clock, self.delay, lambda: None)
        return arrived.addCallback(lambda _: self.http.post(url, **kwargs))


class SnapshotMetricsTests(SynchronousTestCase):
    """The pool figures read from the stats snapshot at scrape time."""

    def test_payment_totals_in_satoshis_only(self) -> None:
        """An Ethereum-family pool has blocks and payouts like any pool, but no satoshi totals:
        its amounts are wei, and the nomp_eth_* metrics carry them."""
        bitcoin = pool_config(name="ltc")
        ethereum = eth_pool_config("http://127.0.0.1:1", [stratum_port(4)])
        metrics = Metrics()
        snapshot = build_snapshot([empty_stats(bitcoin), empty_stats(ethereum)], [], 0.0)
        metrics.watch_snapshot(lambda: snapshot)
        samples = scrape(metrics)
        totals = {labels for name, labels in samples if name == "nomp_pool_payment_totals_satoshis"}
        self.assertEqual({dict(labels)["pool"] for labels in totals}, {"ltc"})
        self.assertEqual(value(samples, "nomp_pool_payments", pool=ethereum.name), 0)


class DaemonMetricsTests(SynchronousTestCase):
    """The DaemonRPC observer: every call's time, failures by kind."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.daemon = FakeDaemon()
        self.stub = stub_treq(self.daemon)
        self.link = SlowLink(self.stub, self.clock)
        self.metrics = Metrics()
        self.rpc = DaemonRPC(
            self.link,
            URL,
            "user",
            "password",
            as_reactor(self.clock),
            timeout=30,
            observer=self.metrics.daemon_observer("ltc"),
        )

    def call_after(self, seconds: float, method: str) -> defer.Deferred[Any]:
        """Call ``method``; the daemon's answer arrives ``seconds`` later."""
        self.link.delay = seconds
        running = defer.Deferred.fromCoroutine(self.rpc.call(method))
        self.clock.advance(seconds)
        self.stub.flush()
        return running

    def test_latency(self) -> None:
        """The time from the call to the answer, on the pool's clock."""
        self.daemon.handlers["getblockcount"] = lambda params: 7
        self.assertEqual(self.successResultOf(self.call_after(0.25, "getblockcount")), 7)
        self.assertEqual(self.successResultOf(self.call_after(2.0, "getblockcount")), 7)
        samples = scrape(self.metrics)
        labels = {"pool": "ltc", "daemon": URL, "method": "getblockcount"}
        histogram = "nomp_daemon_rpc_duration_seconds"
        self.assertEqual(value(samples, histogram + "_count", **labels), 2)
        self.assertEqual(value(samples, histogram + "_sum", **labels), 2.25)
        self.assertEqual(value(samples, histogram + "_bucket", le="0.1", **labels), 0)
        self.assertEqual(value(samples, histogram + "_bucket", le="0.25", **labels), 1)
        self.assertEqual(value(samples, histogram + "_bucket", le="2.5", **labels), 2)
        self.assertNotIn("nomp_daemon_rpc_errors_total", {name for name, _ in samples})

    def test_errors_by_kind(self) -> None:
        """An RPC error, an HTTP error, garbage and silence each count as their kind."""

        def refuse(params: list[Any]) -> Any:
            raise FakeRPCError(-8, "bad")

        self.daemon.handlers["getblock"] = refuse
        self.failureResultOf(self.call_after(0.1, "getblock"), DaemonError)
        self.daemon.answer_raw(401, b"")
        self.failureResultOf(self.call_after(0.1, "getblock"), DaemonError)
        self.daemon.answer_raw(200, b"<html>")
        self.failureResultOf(self.call_after(0.1, "getblock"), DaemonError)
        self.daemon.never_answer()
        self.failureResultOf(self.call_after(30, "getblock"), DaemonError)
        samples = scrape(self.metrics)
        labels = {"pool": "ltc", "daemon": URL, "method": "getblock"}
        errors = "nomp_daemon_rpc_errors_total"
        for kind in ("rpc", "http", "response", "unreachable"):
            self.assertEqual(value(samples, errors, kind=kind, **labels), 1, kind)
        self.assertEqual(value(samples, "nomp_daemon_rpc_duration_seconds_count", **labels), 4)
        self.assertAlmostEqual(value(samples, "nomp_daemon_rpc_duration_seconds_sum", **labels), 30.3)

    def test_pool_service_passes_the_observer(self) -> None:
        """A PoolService's daemons report to the observer it was given."""
        calls: list[tuple[str, str, DaemonError | None]] = []

        def observe(url: str, method: str, seconds: float, error: DaemonError | None) -> None:
            calls.append((url, method, error))

        fatal: list[str] = []
        service = PoolService(
            pool_config(), self.clock, fatal.append, FakeBlockRecords(), http=self.stub, rpc_observer=observe
        )
        service.startService()
        self.stub.flush()
        service.stopService()
        self.assertTrue(calls)
        url, _, error = calls[0]
        self.assertEqual(url, pool_config().daemons[0].url)
        self.assertIsNotNone(error)  # the fake daemon knows no method here

    def test_wallet_calls_observed(self) -> None:
        """The payment wallet's calls are timed like the pool's daemons'."""
        self.daemon.handlers["getbalance"] = lambda params: 12.5
        wallet = wallet_rpc(
            pool_config(), self.link, as_reactor(self.clock), self.metrics.daemon_observer("ltc")
        )
        self.link.delay = 0.5
        running = defer.Deferred.fromCoroutine(wallet.call("getbalance"))
        self.clock.advance(0.5)
        self.stub.flush()
        self.assertEqual(self.successResultOf(running), 12.5)
        labels = {"pool": "ltc", "daemon": pool_config().daemons[0].url, "method": "getbalance"}
        samples = scrape(self.metrics)
        self.assertEqual(value(samples, "nomp_daemon_rpc_duration_seconds_sum", **labels), 0.5)


class ServiceTimerTests(SynchronousTestCase):
    """MetricsService's timers on a simulated clock."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.metrics = Metrics()
        self.client: RedisClient | None = None
        self.service = MetricsService(
            self.metrics, lambda: self.client, self.clock, redis_interval=5.0, lag_interval=1.0
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def test_reactor_lag(self) -> None:
        """A timer firing late by L observes L; later ones go by the schedule again."""
        self.clock.advance(1.0)  # on time
        self.clock.advance(2.5)  # the timer due at 1002 fires at 1003.5
        self.clock.advance(0.5)  # the next is due at 1004
        self.clock.advance(0.75)  # and the next, at 1005, has not fired yet
        samples = scrape(self.metrics)
        self.assertEqual(value(samples, "nomp_reactor_lag_seconds_count"), 3)
        self.assertEqual(value(samples, "nomp_reactor_lag_seconds_sum"), 1.5)
        self.assertEqual(value(samples, "nomp_reactor_lag_seconds_bucket", le="1.0"), 2)

    def test_redis_away(self) -> None:
        """Without a connection, or with a failing one, Redis is down and the PINGs count as errors."""
        self.clock.advance(5)
        samples = scrape(self.metrics)
        self.assertEqual(value(samples, "nomp_redis_up"), 0)
        self.assertEqual(value(samples, "nomp_redis_ping_errors_total", reason="disconnected"), 1)

        class Failing:
            def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
                return defer.fail(ConnectionError("lost"))

        self.client = Failing()
        self.clock.advance(5)
        samples = scrape(self.metrics)
        self.assertEqual(value(samples, "nomp_redis_ping_errors_total", reason="error"), 1)
        self.assertEqual(value(samples, "nomp_redis_ping_duration_seconds_count"), 0)

    def test_stopped(self) -> None:
        """Stopping leaves no timer behind."""
        self.service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HashingMetricsTests(SynchronousTestCase):
    def test_queue_depth(self) -> None:
        """Shares waiting for a thread are read from the hashing pool at scrape time."""
        clock = task.Clock()
        hashing = HashPoolService(clock, 3)
        job = registry_for(pool_config()).add(mainnet_template(), 0.0)
        assert job is not None
        waiting = [hashing.check(job.hasher, ShareWork(b"\0" * 8, 1, 2, n)) for n in range(5)]
        metrics = Metrics()
        metrics.watch_hashing(hashing)
        samples = scrape(metrics)
        self.assertEqual(value(samples, "nomp_hashing_queued_shares"), 5)
        self.assertEqual(value(samples, "nomp_hashing_busy_batches"), 0)
        self.assertEqual(value(samples, "nomp_hashing_threads"), 3)
        clock.advance(0.01)  # not started: the waiting shares fail
        for share in waiting:
            self.failureResultOf(share, RuntimeError)
        self.assertEqual(value(scrape(metrics), "nomp_hashing_queued_shares"), 0)

    def test_registries_are_separate(self) -> None:
        """Two Metrics in one process each count their own."""
        first, second = Metrics(), Metrics()
        first.reactor_lag.observe(1.0)
        self.assertEqual(value(scrape(first), "nomp_reactor_lag_seconds_count"), 1)
        self.assertEqual(value(scrape(second), "nomp_reactor_lag_seconds_count"), 0)


class WiringTests(SynchronousTestCase):
    def test_tree(self) -> None:
        """build_service: the metrics timers sit under the web service, and /metrics
        reads every pool's Stratum server, recorder and stats, and the hashing pool."""
        config = load_config(SHIPPED_CONF)
        root = build_service(config, reactor, exit_with=lambda status: None, shutdown=lambda: None)
        web = root.getServiceNamed("web")
        assert isinstance(web, WebService)
        timers = web.getServiceNamed("metrics")
        assert isinstance(timers, MetricsService)
        samples = scrape(timers.metrics)
        (pool,) = config.pools
        self.assertEqual(value(samples, "nomp_stratum_connections", pool=pool.name, port="3333"), 0)
        self.assertEqual(value(samples, "nomp_stratum_shares_total", pool=pool.name, result="accepted"), 0)
        self.assertEqual(value(samples, "nomp_share_records_buffered", pool=pool.name), 0)
        self.assertEqual(value(samples, "nomp_pool_workers", pool=pool.name), 0)
        self.assertEqual(value(samples, "nomp_hashing_threads"), config.settings.threads or os.cpu_count())


class ServedMetricsTests(TestCase):
    """GET /metrics from a running WebService: shares sent over Stratum, recorded
    in a real Redis by the real ShareRecorder, read back by the stats collector."""

    async def asyncSetUp(self) -> None:
        server = shared_redis()
        self.redis = RedisService(RedisConfig(port=server.port, db=DB))
        self.redis.startService()
        self.addCleanup(self.redis.stopService)
        await until(lambda: self.redis.client() is not None)
        coin = dataclasses.replace(pool_config().coin, name=f"metricstest{id(self)}")
        self.pool = pool_config(name="ltc", coin=coin, ports=(PLAIN_PORT, HIGH_PORT))
        self.keys = PoolKeys.for_coin(coin.name)
        client = self.redis.client()
        assert client is not None
        await client.eval(
            "for _, k in ipairs(KEYS) do redis.call('DEL', k) end return 1",
            [WebKeys().stat_history, self.keys.hashrate, self.keys.stats, self.keys.payment_totals],
            [],
        )
        await client.eval(
            "return redis.call('HSET', KEYS[1], 'paid', '150000000', 'immature', '625000000')",
            [self.keys.payment_totals],
            [],
        )
        self.clock = task.Clock()
        self.clock.advance(time.time())
        self.recorder = ShareRecorder(
            self.keys, self.redis.client, as_reactor_time(reactor), hashrate_window=300.0, round_policy=PROP
        )
        registry = registry_for(self.pool)
        self.fake_pool = FakePool(registry)
        self.stratum, self.connect = build_server(
            self.pool, self.clock, self.fake_pool, self.recorder, InlineHashing()
        )
        job = registry.add(mainnet_template(), self.clock.seconds())
        assert job is not None
        self.stratum.new_job(job)
        self.metrics = Metrics()
        self.metrics.watch_pool("ltc", self.stratum, self.recorder, PoolCounts())
        self.metrics.watch_hashing(HashPoolService(reactor, 2))

    def setUp(self) -> Any:
        return defer.ensureDeferred(self.asyncSetUp())

    async def serve(self) -> str:
        """Start the metrics timers and the web service; the base URL."""
        timers = MetricsService(
            self.metrics, self.redis.client, as_reactor_time(reactor), redis_interval=0.05, lag_interval=0.05
        )
        timers.startService()
        self.addCleanup(timers.stopService)
        config = WebConfig(listen="tcp:0:interface=127.0.0.1", stats_interval=3600.0)
        web = WebService(config, lambda: [self.pool], self.redis.client, reactor, metrics=self.metrics.render)
        self.metrics.watch_snapshot(lambda: web.collector.snapshot)
        base = await serve(self, web)
        http = HTTPConnectionPool(reactor)
        self.addCleanup(http.closeCachedConnections)
        self.http = http
        await until(lambda: web.collector.snapshot.pools[0].workers != ())
        await until(lambda: value(scrape(self.metrics), "nomp_redis_ping_duration_seconds_count") > 0)
        return base

    async def test_metrics_over_http(self) -> None:
        """N accepted and M duplicate shares read N and M; the stats come from Redis."""
        accepted, duplicates = 4, 3
        connection = self.connect(PLAIN_PORT)
        connection.subscribe()
        self.assertIs(connection.authorize(WORKER)["result"], True)
        miner = Miner(connection, self.fake_pool)
        first = miner.params()
        self.assertIs(miner.submit(first)["result"], True)
        for _ in range(accepted - 1):
            self.assertIs(miner.submit(miner.params())["result"], True)
        for _ in range(duplicates):
            self.assertEqual(miner.submit(first)["error"][0], 22)
        await self.recorder.flush()
        base = await self.serve()
        # After the collection: one invalid share waits in the recorder's buffer.
        stale = miner.params()
        stale[1] = "ffff"
        self.assertEqual(miner.submit(stale)["error"][0], 21)

        response = await treq.get(base + "/metrics", pool=self.http)
        body = await response.content()
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["text/plain; version=0.0.4; charset=utf-8"]
        )
        samples = parse(body)

        results = shares_by_result(samples, "ltc")
        self.assertEqual(
            (results["accepted"], results["duplicate"], results["stale"]), (accepted, duplicates, 1)
        )
        self.assertEqual(sum(results.values()), accepted + duplicates + 1)
        self.assertEqual(value(samples, "nomp_stratum_connections", pool="ltc", port="3333"), 1)
        self.assertEqual(value(samples, "nomp_stratum_connections", pool="ltc", port="3335"), 0)
        self.assertEqual(value(samples, "nomp_share_records_buffered", pool="ltc"), 1)
        self.assertEqual(value(samples, "nomp_pool_workers", pool="ltc"), 1)
        self.assertEqual(value(samples, "nomp_pool_miners", pool="ltc"), 1)
        expected_hashrate = accepted * DIFF * 2**32 / SCRYPT_MULTIPLIER / 300
        hashrate = value(samples, "nomp_pool_hashrate_hashes_per_second", pool="ltc")
        self.assertAlmostEqual(hashrate, expected_hashrate, delta=expected_hashrate * 1e-9)
        self.assertEqual(value(samples, "nomp_pool_blocks", pool="ltc", status="pending"), 0)
        totals = "nomp_pool_payment_totals_satoshis"
        self.assertEqual(value(samples, totals, pool="ltc", kind="paid"), 150_000_000)
        self.assertEqual(value(samples, totals, pool="ltc", kind="immature"), 625_000_000)
        self.assertEqual(value(samples, totals, pool="ltc", kind="txfees"), 0)
        self.assertEqual(value(samples, "nomp_pool_payments", pool="ltc"), 0)
        self.assertEqual(value(samples, "nomp_redis_up"), 1)
        self.assertGreaterEqual(value(samples, "nomp_redis_ping_duration_seconds_count"), 1)
        self.assertGreater(value(samples, "nomp_redis_ping_duration_seconds_sum"), 0)
        self.assertGreaterEqual(value(samples, "nomp_reactor_lag_seconds_count"), 1)
        self.assertEqual(value(samples, "nomp_hashing_threads"), 2)
        self.assertIn("process_resident_memory_bytes", {name for name, _ in samples})


def as_reactor_time(provider: Any) -> IReactorTime:
    """The reactor as the IReactorTime it provides."""
    clock: IReactorTime = provider
    return clock


@dataclasses.dataclass
class HashingFigures:
    """A hashing pool's figures as the metrics read them."""

    threads: int
    queued: int
    busy: int = 0


def metrics_answer(metrics: Metrics) -> str:
    """A worker's answer to ``metrics``, as its control channel sends it."""
    return "ok " + json.dumps(metrics.miner_exposition())


class WorkerMetricsTests(SynchronousTestCase):
    """The main process of workers: each worker's miner-side families, asked
    on a timer, shown on its /metrics with a ``worker`` label. The workers'
    answers are written by hand for the cases real ones cannot give (a bad
    answer, a failed ask); test_switching_workers scrapes real workers."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.asked: list[str] = []
        self.answers: list[tuple[str, str | None]] = []
        self.failing: Exception | None = None

    def ask_each(self, line: str) -> defer.Deferred[list[tuple[str, str | None]]]:
        self.asked.append(line)
        if self.failing is not None:
            return defer.fail(self.failing)
        return defer.succeed(list(self.answers))

    def worker(self, threads: int, queued: int) -> Metrics:
        """A worker's Metrics: a hashing pool of ``threads`` with ``queued`` shares."""
        metrics = Metrics()
        metrics.watch_hashing(HashingFigures(threads, queued))
        return metrics

    def main(self) -> tuple[Metrics, WorkerMetricsService]:
        service = WorkerMetricsService(self.ask_each, self.clock)
        metrics = self.worker(1, 0)
        metrics.watch_workers(service.families)
        service.startService()
        self.addCleanup(service.stopService)
        return metrics, service

    def test_miner_exposition(self) -> None:
        """A worker's snapshot holds its miner-side families only."""
        text = self.worker(4, 2).miner_exposition()
        names = {family.name for family in text_string_to_metric_families(text)}
        self.assertEqual(names, MINER_FAMILIES)
        self.assertNotIn("nomp_reactor_lag_seconds", text)

    def test_workers_labelled(self) -> None:
        """Each worker's samples show with its index as ``worker``, next to the
        main process's own; the figures are the last answers until the next ask."""
        self.answers = [
            ("worker 1 (pid 11)", metrics_answer(self.worker(4, 2))),
            ("worker 2 (pid 12)", metrics_answer(self.worker(3, 5))),
        ]
        metrics, _ = self.main()
        self.assertEqual(self.asked, ["metrics"])  # at the start
        samples = scrape(metrics)
        self.assertEqual(value(samples, "nomp_hashing_threads"), 1)
        self.assertEqual(value(samples, "nomp_hashing_threads", worker="1"), 4)
        self.assertEqual(value(samples, "nomp_hashing_queued_shares", worker="2"), 5)
        self.answers = [("worker 1", None), ("worker 2 (pid 12)", metrics_answer(self.worker(3, 6)))]
        self.assertEqual(value(scrape(metrics), "nomp_hashing_queued_shares", worker="2"), 5)
        self.clock.advance(WORKER_METRICS_INTERVAL)
        samples = scrape(metrics)
        self.assertNotIn(("nomp_hashing_threads", frozenset({("worker", "1")})), samples)  # not running
        self.assertEqual(value(samples, "nomp_hashing_queued_shares", worker="2"), 6)

    def test_bad_answers(self) -> None:
        """A worker's answer that cannot be read is logged and its figures left
        out; the others' show."""
        self.answers = [
            ("worker 1 (pid 11)", "error unknown command 'metrics'"),
            ("worker 2 (pid 12)", metrics_answer(self.worker(3, 5))),
        ]
        with capturedLogs() as events:
            metrics, _ = self.main()
        samples = scrape(metrics)
        self.assertEqual(value(samples, "nomp_hashing_threads", worker="2"), 3)
        self.assertNotIn(("nomp_hashing_threads", frozenset({("worker", "1")})), samples)
        (error,) = [e for e in events if e.get("worker") == "worker 1 (pid 11)"]
        self.assertEqual(error["error"], "not an ok answer")

    def test_answers_checked(self) -> None:
        """Each way a ``metrics`` answer can be wrong, named."""
        cases = [
            ("error no", "not an ok answer"),
            ("ok [", "Expecting value: line 1 column 2 (char 1)"),
            ("ok 3", "not the text of the metrics"),
            (
                "ok " + json.dumps("# TYPE nomp_reactor_lag_seconds gauge\nnomp_reactor_lag_seconds 1\n"),
                "family 'nomp_reactor_lag_seconds' is not one a worker serves",
            ),
            (
                "ok " + json.dumps('nomp_hashing_threads{worker="3"} 1\n'),
                "family nomp_hashing_threads has a worker label already",
            ),
        ]
        for answer, problem in cases:
            with self.assertRaises(ValueError) as caught:
                worker_families(answer)
            self.assertEqual(str(caught.exception), problem, answer)
        with self.assertRaises(ValueError):
            worker_families("ok " + json.dumps("nomp_hashing_threads{ 1\n"))  # the parser's own error
        self.assertEqual(
            [family.name for family in worker_families(metrics_answer(self.worker(1, 0)))],
            [
                "nomp_stratum_connections",
                "nomp_stratum_connections_refused",
                "nomp_stratum_shares",
                "nomp_stratum_shares_in_flight",
                "nomp_blocks_found",
                "nomp_pool_job_failures",
                "nomp_share_records_buffered",
                "nomp_share_records_set_aside",
                "nomp_hashing_threads",
                "nomp_hashing_queued_shares",
                "nomp_hashing_busy_batches",
            ],
        )

    def test_asking_fails(self) -> None:
        """A failed ask is logged with its traceback; the last figures stand and
        the timer asks again."""
        self.answers = [("worker 1 (pid 11)", metrics_answer(self.worker(4, 2)))]
        metrics, service = self.main()
        self.failing = RuntimeError("a broken channel")
        with capturedLogs() as events:
            self.clock.advance(WORKER_METRICS_INTERVAL)
        (failure,) = [e for e in events if "log_failure" in e]
        self.assertIsInstance(failure["log_failure"].value, RuntimeError)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(value(scrape(metrics), "nomp_hashing_threads", worker="1"), 4)
        self.failing = None
        self.clock.advance(WORKER_METRICS_INTERVAL)
        self.assertEqual(len(self.asked), 3)
        service.stopService()
        self.clock.advance(WORKER_METRICS_INTERVAL)
        self.assertEqual(len(self.asked), 3)  # stopped: no more asks
