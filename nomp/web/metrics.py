"""Prometheus metrics of the process, served by the web app at GET /metrics.

Two kinds. What the pool keeps anyway (open connections, shares and refused
connections by reason, records waiting for Redis, the hashing queue, the
stats snapshot) is read by a collector when Prometheus scrapes, so the
Stratum hot path pays nothing beyond the dict increments it already makes.
Events that leave no state behind (daemon calls, Redis round trips, the
reactor's lateness) are observed as they happen.

Every metric lives in the registry of one ``Metrics`` object, never in
prometheus_client's global one: tests build many pools in one process.

With worker processes (nomp.workers) the miners are the workers': the main
process's ``WorkerMetricsService`` asks each worker for its miner-side
families (MINER_FAMILIES, as Prometheus text: ``miner_exposition``) at
intervals, and the main process's /metrics shows each worker's samples
with a ``worker`` label next to its own (which read 0, bar the job
failures of the templates it polls too). Prometheus scrapes one port; a
scrape answers from the last figures and never waits on a worker.
"""

from __future__ import annotations

import json
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nomp.config import PortConfig
from nomp.config.load import listen_address
from nomp.daemon.errors import DaemonError, DaemonHTTPError, DaemonResponseError, DaemonUnreachable, RPCError
from nomp.daemon.rpc import CallObserver
from nomp.payments.ethpayer import Outstanding, PayoutListener, PayoutReport, StopKind
from nomp.payments.ethunlocker import UnlockListener, UnlockReport
from nomp.pool.blocks import BLOCK_RESULTS
from nomp.store.client import RedisClient
from nomp.stratum.banning import Refusal
from nomp.stratum.connection import Connection
from nomp.stratum.pipeline import SHARE_RESULTS
from nomp.switching.profitservice import SWITCH_RESULTS, ProfitSnapshot
from nomp.switching.relay import AskWorkers
from nomp.web.collector import Snapshot

# Daemon calls run from milliseconds (getblocktemplate on a small mempool)
# up to the 30 s default deadline.
DAEMON_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A Redis round trip on loopback is well under a millisecond.
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REACTOR_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The text format every Prometheus reads. Newer prometheus_client versions
# announce 1.0.0, which differs only for names outside [a-zA-Z_:][a-zA-Z0-9_:]*,
# and none of ours are.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The cheapest command a RedisClient can send: one round trip, no key touched.
_PING = "return redis.call('PING')"

# Refusal reasons as label values: the enum's values are sentences for the log.
_REFUSAL_LABELS = {refusal.value: refusal.name.lower() for refusal in Refusal}

# The ``<coin>:pay:totals`` fields, exported even before the first payment run.
PAYMENT_TOTALS = ("immature", "credited", "kept", "paid", "txfees")

# How an Ethereum-family unlocker or payer run ended: ok, error (it stopped early or
# raised) or locked_out (another run held the pool's lock, and it did nothing).
RUN_OUTCOMES = ("ok", "error", "locked_out")
# An unlocker run's blocks, by what became of them, as ``last_run_blocks`` kinds.
UNLOCKER_BLOCK_KINDS = ("candidates", "immature", "uncles", "matured", "orphaned", "waiting")
# A payer run's errors: a StopKind, or failed (the run raised).
PAYER_ERROR_KINDS = (*(kind.value for kind in StopKind), "failed")
WEI_PER_ETHER = 10**18

# The families of a process's miners, which a worker serves (_StateCollector's
# _stratum and _hashing): a worker's snapshot may hold these only.
MINER_FAMILIES = frozenset(
    {
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
    }
)
WORKER_METRICS_INTERVAL = 5.0  # seconds between asks of the workers for their miner-side families


class BufferedRecords(Protocol):
    """A pool's ShareRecorder as the metrics see it."""

    @property
    def waiting(self) -> int:
        """Records not yet written to Redis."""
        ...

    @property
    def set_aside(self) -> int:
        """Records of batches Redis refused, set aside in <coin>:recorder:setAside."""
        ...


class _Ports(Protocol):
    @property
    def ports(self) -> tuple[PortConfig, ...]: ...


class _Refusals(Protocol):
    @property
    def refused(self) -> Tally[str]: ...


class _Shares(Protocol):
    @property
    def shares(self) -> Tally[str]: ...

    @property
    def in_flight(self) -> int: ...


class MinerServer(Protocol):
    """A pool's miner side as the metrics see it (StratumPool, EthStratumPool)."""

    @property
    def config(self) -> _Ports: ...

    @property
    def connections(self) -> Iterable[Connection]: ...

    @property
    def bans(self) -> _Refusals: ...

    @property
    def pipeline(self) -> _Shares: ...


class PoolCounters(Protocol):
    """A PoolService as the metrics see it."""

    blocks: Tally[str]  # block candidates, by one of BLOCK_RESULTS
    job_failures: Tally[str]  # refreshes that made no job, by kind


JOB_FAILURE_KINDS = ("daemon", "template", "job")


class HashingLoad(Protocol):
    """The HashPoolService as the metrics see it."""

    threads: int

    @property
    def queued(self) -> int: ...

    @property
    def busy(self) -> int: ...


def error_kind(error: DaemonError) -> str:
    """A daemon call's failure as a label value."""
    if isinstance(error, DaemonUnreachable):
        return "unreachable"  # timeouts included
    if isinstance(error, DaemonHTTPError):
        return "http"
    if isinstance(error, RPCError):
        return "rpc"
    if isinstance(error, DaemonResponseError):
        return "response"
    return "other"


def port_label(port: PortConfig) -> str:
    """A Stratum port as a label value: its port number, or its endpoint for one without."""
    address = listen_address(port.listen)
    return str(address[1]) if address is not None else port.listen


def ether(wei: int) -> float:
    """Wei as ether, for Prometheus, whose values are floats: amounts become floats here only."""
    return wei / WEI_PER_ETHER


@dataclass(slots=True)
class _UnlockerRuns:
    """What an Ethereum-family pool's unlocker runs did, kept as integers until a scrape."""

    pool: str
    outcomes: Tally[str] = dataclass_field(default_factory=Tally)
    last_success: float = 0.0  # unix seconds; 0 before the first
    last_blocks: dict[str, int] = dataclass_field(
        default_factory=lambda: dict.fromkeys(UNLOCKER_BLOCK_KINDS, 0)
    )
    credited_wei: int = 0

    def observe(self, report: UnlockReport | None, now: float) -> None:
        if report is None:
            self.outcomes["error"] += 1
            return
        if report.locked_out:
            self.outcomes["locked_out"] += 1
            return
        self.last_blocks = {
            "candidates": report.candidates,
            "immature": len(report.immature),
            "uncles": len(report.uncles),
            "matured": len(report.matured),
            "orphaned": len(report.orphaned),
            "waiting": len(report.waiting),
        }
        self.credited_wei += report.credited
        if report.error is not None:
            self.outcomes["error"] += 1
            return
        self.outcomes["ok"] += 1
        self.last_success = now


@dataclass(slots=True)
class _PayerRuns:
    """What an Ethereum-family pool's payer runs did, kept as integers until a scrape."""

    pool: str
    outcomes: Tally[str] = dataclass_field(default_factory=Tally)
    errors: Tally[str] = dataclass_field(default_factory=Tally)
    last_success: float = 0.0  # unix seconds; 0 before the first
    payouts: int = 0
    paid_wei: int = 0
    outstanding: Outstanding = dataclass_field(default_factory=lambda: Outstanding(0, 0))
    halted: bool = False

    def observe(self, report: PayoutReport | None, outstanding: Outstanding | None, now: float) -> None:
        if outstanding is not None:
            self.outstanding = outstanding
        if report is None:
            self.outcomes["error"] += 1
            self.errors["failed"] += 1
            return
        if report.locked_out:
            self.outcomes["locked_out"] += 1
            return
        # Whatever the run's end, what it recorded paid is paid.
        self.payouts += len(report.paid)
        self.paid_wei += sum(report.amounts.values())
        self.halted = report.stop is StopKind.HALTED
        if report.error is not None:
            self.outcomes["error"] += 1
            self.errors[report.stop.value if report.stop is not None else "unknown"] += 1
            return
        self.outcomes["ok"] += 1
        self.last_success = now


@dataclass(frozen=True, slots=True)
class _WatchedPool:
    name: str
    server: MinerServer
    recorder: BufferedRecords
    pool: PoolCounters


class Metrics:
    """The process's metrics in a registry of their own; ``render`` is what GET /metrics serves.

    Pools, the hashing pool and the stats snapshot are registered as the
    service tree is built, and read at every scrape.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._pools: list[_WatchedPool] = []
        self._hashing: HashingLoad | None = None
        self._snapshot: Callable[[], Snapshot] | None = None
        self._profit: Callable[[], ProfitSnapshot] | None = None
        self._unlockers: list[_UnlockerRuns] = []
        self._payers: list[_PayerRuns] = []
        self._workers: Callable[[], Mapping[str, Sequence[Metric]]] = dict
        self._miner_registry = CollectorRegistry(auto_describe=False)
        self._miner_registry.register(_MinerCollector(self))
        self.daemon_call_seconds = Histogram(
            "nomp_daemon_rpc_duration_seconds",
            "Time taken by JSON-RPC calls to coin daemons, failed ones included.",
            ["pool", "daemon", "method"],
            buckets=DAEMON_BUCKETS,
            registry=self.registry,
        )
        self.daemon_call_errors = Counter(
            "nomp_daemon_rpc_errors",
            "Failed JSON-RPC calls to coin daemons, by kind: unreachable (timeouts included), "
            "http, response (not JSON-RPC) or rpc (the daemon's own error).",
            ["pool", "daemon", "method", "kind"],
            registry=self.registry,
        )
        self.redis_ping_seconds = Histogram(
            "nomp_redis_ping_duration_seconds",
            "Round trip of a PING to Redis, sent at intervals.",
            buckets=REDIS_BUCKETS,
            registry=self.registry,
        )
        self.redis_up = Gauge(
            "nomp_redis_up", "1 if the last PING to Redis was answered, else 0.", registry=self.registry
        )
        self.redis_ping_errors = Counter(
            "nomp_redis_ping_errors",
            "PINGs to Redis that failed: disconnected (no connection up) or error.",
            ["reason"],
            registry=self.registry,
        )
        for reason in ("disconnected", "error"):
            self.redis_ping_errors.labels(reason)  # present at 0 from the start
        self.reactor_lag = Histogram(
            "nomp_reactor_lag_seconds",
            "How late a timer of the reactor fired: time the reactor thread was busy or blocked.",
            buckets=REACTOR_LAG_BUCKETS,
            registry=self.registry,
        )
        self.coin_switches = Counter(
            "nomp_coin_switches",
            "Moves of a switching port's miners to another of its pools, by switch and the pool moved to.",
            ["switch", "pool"],
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self.registry.register(_StateCollector(self))

    def switched(self, switch: str, before: str, pool: str) -> None:
        """A switch's miners moved from pool ``before`` to ``pool`` (a SwitchingService listener)."""
        self.coin_switches.labels(switch, pool).inc()

    def watch_pool(
        self, name: str, server: MinerServer, recorder: BufferedRecords, pool: PoolCounters
    ) -> None:
        """Export the connections, shares, blocks, job failures and records of the pool called ``name``."""
        self._pools.append(_WatchedPool(name, server, recorder, pool))

    def forget_pool(self, name: str) -> None:
        """Stop exporting the pool called ``name`` (a reload removed it)."""
        self._pools = [p for p in self._pools if p.name != name]
        self._unlockers = [u for u in self._unlockers if u.pool != name]
        self._payers = [p for p in self._payers if p.pool != name]
        # Its daemons' series too: else they would stay on every scrape until a restart.
        for family, names in (
            (self.daemon_call_seconds, ("pool", "daemon", "method")),
            (self.daemon_call_errors, ("pool", "daemon", "method", "kind")),
        ):
            series = {
                tuple(sample.labels[label] for label in names)
                for metric in family.collect()
                for sample in metric.samples
                if sample.labels.get("pool") == name
            }
            for values in series:
                family.remove(*values)

    def watch_hashing(self, hashing: HashingLoad) -> None:
        self._hashing = hashing

    def watch_workers(self, families: Callable[[], Mapping[str, Sequence[Metric]]]) -> None:
        """Export each worker's miner-side families (by its ``worker`` label value)."""
        self._workers = families

    def watch_snapshot(self, snapshot: Callable[[], Snapshot]) -> None:
        """Export the stats of the collector's current snapshot."""
        self._snapshot = snapshot

    def watch_profit(self, snapshot: Callable[[], ProfitSnapshot]) -> None:
        """Export profit switching's revenue estimates and switches."""
        self._profit = snapshot

    def daemon_observer(self, pool: str) -> CallObserver:
        """The observer for the DaemonRPCs of the pool called ``pool``."""

        def observe(url: str, method: str, seconds: float, error: DaemonError | None) -> None:
            self.daemon_call_seconds.labels(pool, url, method).observe(seconds)
            if error is not None:
                self.daemon_call_errors.labels(pool, url, method, error_kind(error)).inc()

        return observe

    def unlocker_observer(self, pool: str) -> UnlockListener:
        """The run listener of the EthUnlockerService of the pool called ``pool``."""
        runs = _UnlockerRuns(pool)
        self._unlockers.append(runs)
        return runs.observe

    def payer_observer(self, pool: str) -> PayoutListener:
        """The run listener of the EthPayerService of the pool called ``pool``."""
        runs = _PayerRuns(pool)
        self._payers.append(runs)
        return runs.observe

    def render(self) -> tuple[bytes, str]:
        """Every metric in Prometheus's text format, and that format's content type."""
        return generate_latest(self.registry), CONTENT_TYPE

    def miner_exposition(self) -> str:
        """The MINER_FAMILIES alone in Prometheus's text format: what a worker
        answers its main process's ``metrics``."""
        return generate_latest(self._miner_registry).decode("utf-8")

    # Read by _StateCollector.
    @property
    def pools(self) -> tuple[_WatchedPool, ...]:
        return tuple(self._pools)

    @property
    def hashing(self) -> HashingLoad | None:
        return self._hashing

    @property
    def unlockers(self) -> tuple[_UnlockerRuns, ...]:
        return tuple(self._unlockers)

    @property
    def payers(self) -> tuple[_PayerRuns, ...]:
        return tuple(self._payers)

    def worker_families(self) -> Mapping[str, Sequence[Metric]]:
        return self._workers()

    def current_snapshot(self) -> Snapshot | None:
        return self._snapshot() if self._snapshot is not None else None

    def profit_snapshot(self) -> ProfitSnapshot | None:
        return self._profit() if self._profit is not None else None


class _StateCollector(Collector):
    """State the pool keeps anyway, read at every scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return ()  # no fixed names to check against the registry's others

    def collect(self) -> Iterable[Metric]:
        yield from _with_workers(self._miners(), self._metrics.worker_families())
        yield from self._stats()
        yield from self._unlockers()
        yield from self._payers()
        yield from self._profit()

    def _miners(self) -> list[Metric]:
        return [*self._stratum(), *self._hashing()]

    def _stratum(self) -> Iterable[Metric]:
        connections = GaugeMetricFamily(
            "nomp_stratum_connections", "Open Stratum connections.", labels=["pool", "port"]
        )
        refused = CounterMetricFamily(
            "nomp_stratum_connections_refused",
            "Stratum connections refused before a byte was read, by reason.",
            labels=["pool", "reason"],
        )
        shares = CounterMetricFamily(
            "nomp_stratum_shares",
            "Submitted shares by result: accepted, stale (job not found), duplicate, low_difficulty, "
            "unauthorized, not_subscribed, invalid (malformed, ntime...), unrecorded (Redis buffer full) "
            "or error (the check failed).",
            labels=["pool", "result"],
        )
        in_flight = GaugeMetricFamily(
            "nomp_stratum_shares_in_flight", "Shares being checked.", labels=["pool"]
        )
        blocks = CounterMetricFamily(
            "nomp_blocks_found",
            "Block candidates found, by the daemons' answer: accepted (in the main chain), "
            "rejected, or error (no answer).",
            labels=["pool", "result"],
        )
        job_failures = CounterMetricFamily(
            "nomp_pool_job_failures",
            "Template refreshes that made no job, by kind: daemon (getblocktemplate failed), "
            "template (an unusable reply) or job (a template that could not become a job); "
            "miners keep the last good job meanwhile.",
            labels=["pool", "kind"],
        )
        set_aside = CounterMetricFamily(
            "nomp_share_records_set_aside",
            "Share and block records of batches Redis refused (not an outage: a script or type "
            "error), kept in <coin>:recorder:setAside instead of being retried for ever.",
            labels=["pool"],
        )
        buffered = GaugeMetricFamily(
            "nomp_share_records_buffered",
            "Share and block records waiting to be written to Redis.",
            labels=["pool"],
        )
        for pool in self._metrics.pools:
            server = pool.server
            # The ports as they run now: a reload opens and closes some.
            labels = {port: port_label(port) for port in server.config.ports}
            open_by_port = Tally({label: 0 for label in labels.values()})
            for port, count in Tally(c.settings.port for c in server.connections).items():
                open_by_port[labels.get(port) or port_label(port)] += count
            for label, count in open_by_port.items():
                connections.add_metric([pool.name, label], count)
            by_reason = Tally({label: 0 for label in _REFUSAL_LABELS.values()})
            for reason, count in server.bans.refused.items():
                by_reason[_REFUSAL_LABELS.get(reason, reason)] += count
            for reason, count in by_reason.items():
                refused.add_metric([pool.name, reason], count)
            counted = server.pipeline.shares
            for result in _with_known(SHARE_RESULTS, counted):
                shares.add_metric([pool.name, result], counted[result])
            for result in _with_known(BLOCK_RESULTS, pool.pool.blocks):
                blocks.add_metric([pool.name, result], pool.pool.blocks[result])
            for kind in _with_known(JOB_FAILURE_KINDS, pool.pool.job_failures):
                job_failures.add_metric([pool.name, kind], pool.pool.job_failures[kind])
            in_flight.add_metric([pool.name], server.pipeline.in_flight)
            buffered.add_metric([pool.name], pool.recorder.waiting)
            set_aside.add_metric([pool.name], pool.recorder.set_aside)
        yield from (connections, refused, shares, in_flight, blocks, job_failures, buffered, set_aside)

    def _hashing(self) -> Iterable[Metric]:
        hashing = self._metrics.hashing
        if hashing is None:
            return
        yield GaugeMetricFamily("nomp_hashing_threads", "Share checking threads.", value=hashing.threads)
        yield GaugeMetricFamily(
            "nomp_hashing_queued_shares", "Shares waiting for a share checking thread.", value=hashing.queued
        )
        yield GaugeMetricFamily(
            "nomp_hashing_busy_batches",
            "Batches of shares handed to the share checking threads and not finished.",
            value=hashing.busy,
        )

    def _stats(self) -> Iterable[Metric]:
        snapshot = self._metrics.current_snapshot()
        if snapshot is None:
            return
        yield GaugeMetricFamily(
            "nomp_stats_collected_timestamp_seconds",
            "When the pool stats below were read from Redis (unix seconds).",
            value=snapshot.time,
        )
        hashrate = GaugeMetricFamily(
            "nomp_pool_hashrate_hashes_per_second",
            "Pool hashrate from the shares of its hashrate window.",
            labels=["pool"],
        )
        workers = GaugeMetricFamily(
            "nomp_pool_workers", "Workers with shares in the hashrate window.", labels=["pool"]
        )
        miners = GaugeMetricFamily(
            "nomp_pool_miners", "Addresses with shares in the hashrate window.", labels=["pool"]
        )
        blocks = GaugeMetricFamily(
            "nomp_pool_blocks", "The pool's blocks by status.", labels=["pool", "status"]
        )
        totals = GaugeMetricFamily(
            "nomp_pool_payment_totals_satoshis",
            "The pool's payment totals: immature, credited, kept, paid, txfees.",
            labels=["pool", "kind"],
        )
        payments = GaugeMetricFamily("nomp_pool_payments", "Payout transactions sent.", labels=["pool"])
        for stats in snapshot.pools:
            name = stats.pool.name
            hashrate.add_metric([name], stats.hashrate)
            workers.add_metric([name], len(stats.workers))
            miners.add_metric([name], len(stats.miners))
            counts = stats.blocks
            for status, count in (
                ("pending", counts.pending),
                ("confirmed", counts.confirmed),
                ("orphaned", counts.orphaned),
            ):
                blocks.add_metric([name, status], count)
            payments.add_metric([name], stats.payment_count)
            if stats.ethereum:
                continue  # its amounts are wei: the nomp_eth_* metrics have them
            for kind in _with_known(PAYMENT_TOTALS, stats.payment_totals):
                totals.add_metric([name, kind], stats.payment_totals.get(kind, 0))
        yield from (hashrate, workers, miners, blocks, totals, payments)

    def _profit(self) -> Iterable[Metric]:
        snapshot = self._metrics.profit_snapshot()
        if snapshot is None:
            return
        revenue = GaugeMetricFamily(
            "nomp_profit_revenue_per_hash",
            "Profit switching's estimate of what a hash earns on each pool it could value at its last "
            "ranking, in the price unit: block reward * price * (target + 1) / 2^256.",
            labels=["switch", "pool"],
        )
        switches = CounterMetricFamily(
            "nomp_profit_switches",
            "Switches profit switching asked for, by result: done, refused (by the switch) or failed.",
            labels=["switch", "result"],
        )
        for state in snapshot.switches:
            for estimate in state.ranking.estimates:
                revenue.add_metric([state.switch, estimate.pool], float(estimate.revenue))
            for result in SWITCH_RESULTS:
                switches.add_metric(
                    [state.switch, result], snapshot.switches_made.get((state.switch, result), 0)
                )
        up = snapshot.prices_error is None and snapshot.prices_read_at is not None
        yield GaugeMetricFamily(
            "nomp_profit_prices_up", "1 if the last read of the prices worked, else 0.", value=1 if up else 0
        )
        yield from (revenue, switches)

    def _unlockers(self) -> Iterable[Metric]:
        runs = CounterMetricFamily(
            "nomp_eth_unlocker_runs",
            "Ethereum-family unlocker runs by outcome: ok, error (the node's height unknown, or the "
            "run raised) or locked_out (another run held the pool's lock).",
            labels=["pool", "outcome"],
        )
        last_success = GaugeMetricFamily(
            "nomp_eth_unlocker_last_success_timestamp_seconds",
            "When the last unlocker run that ended ok ended (unix seconds; 0 before the first).",
            labels=["pool"],
        )
        blocks = GaugeMetricFamily(
            "nomp_eth_unlocker_last_run_blocks",
            "Blocks of the last unlocker run (a run locked out or raised leaves them), by kind: "
            "candidates (deep enough to be looked for), immature (credited as immature), uncles (of "
            "those, uncles), matured (credited to balances), orphaned, waiting (left for a later run).",
            labels=["pool", "kind"],
        )
        credited = CounterMetricFamily(
            "nomp_eth_unlocker_credited_ether",
            "Ether (10^18 wei) credited to balances by the blocks and uncles the unlocker matured, "
            "the pool's fee included.",
            labels=["pool"],
        )
        for unlocker in self._metrics.unlockers:
            name = unlocker.pool
            for outcome in _with_known(RUN_OUTCOMES, unlocker.outcomes):
                runs.add_metric([name, outcome], unlocker.outcomes[outcome])
            last_success.add_metric([name], unlocker.last_success)
            for kind, count in unlocker.last_blocks.items():
                blocks.add_metric([name, kind], count)
            credited.add_metric([name], ether(unlocker.credited_wei))
        yield from (runs, last_success, blocks, credited)

    def _payers(self) -> Iterable[Metric]:
        runs = CounterMetricFamily(
            "nomp_eth_payer_runs",
            "Ethereum-family payer runs by outcome: ok, error (see nomp_eth_payer_errors) or "
            "locked_out (the unlocker or another payer held the pool's lock).",
            labels=["pool", "outcome"],
        )
        errors = CounterMetricFamily(
            "nomp_eth_payer_errors",
            "Payer runs that ended in an error, by kind: halted (a payout only the operator can "
            "settle), stopped (a check or condition the log names; the next run tries again), node "
            "(the node failed), redis (Redis refused a write) or failed (the run raised).",
            labels=["pool", "kind"],
        )
        last_success = GaugeMetricFamily(
            "nomp_eth_payer_last_success_timestamp_seconds",
            "When the last payer run that ended ok ended (unix seconds; 0 before the first).",
            labels=["pool"],
        )
        payouts = CounterMetricFamily(
            "nomp_eth_payer_payouts", "Payout transactions sent and recorded paid.", labels=["pool"]
        )
        paid = CounterMetricFamily(
            "nomp_eth_payer_paid_ether",
            "Ether (10^18 wei) debited from miners' balances by the payouts recorded paid: each "
            "transfer's value, and its fee's ceiling where miners pay the fee.",
            labels=["pool"],
        )
        outstanding = GaugeMetricFamily(
            "nomp_eth_payer_outstanding_payouts",
            "Payouts not done with after the last payer run, by state: open (in the journal, "
            "reserved and not recorded paid) or unconfirmed (recorded paid, not mined deep enough); "
            "a run locked out or raised leaves them.",
            labels=["pool", "state"],
        )
        halted = GaugeMetricFamily(
            "nomp_eth_payer_halted",
            "1 while the last payer run stopped on a payout only the operator can settle (its nonce "
            "taken by a transaction the journal does not know), else 0; a run locked out or raised "
            "leaves it.",
            labels=["pool"],
        )
        for payer in self._metrics.payers:
            name = payer.pool
            for outcome in _with_known(RUN_OUTCOMES, payer.outcomes):
                runs.add_metric([name, outcome], payer.outcomes[outcome])
            for kind in _with_known(PAYER_ERROR_KINDS, payer.errors):
                errors.add_metric([name, kind], payer.errors[kind])
            last_success.add_metric([name], payer.last_success)
            payouts.add_metric([name], payer.payouts)
            paid.add_metric([name], ether(payer.paid_wei))
            outstanding.add_metric([name, "open"], payer.outstanding.open)
            outstanding.add_metric([name, "unconfirmed"], payer.outstanding.unconfirmed)
            halted.add_metric([name], 1 if payer.halted else 0)
        yield from (runs, errors, last_success, payouts, paid, outstanding, halted)


class _MinerCollector(_StateCollector):
    """The MINER_FAMILIES of this process alone."""

    def collect(self) -> Iterable[Metric]:
        return self._miners()


def _with_workers(own: Sequence[Metric], workers: Mapping[str, Sequence[Metric]]) -> list[Metric]:
    """``own`` families with each worker's samples of the same name added,
    labelled ``worker``; a family only workers have is added whole."""
    merged = {family.name: family for family in own}
    for worker, families in workers.items():
        for family in families:
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(family.name, family.documentation, family.type)
            target.samples.extend(
                Sample(sample.name, {**sample.labels, "worker": worker}, sample.value)
                for sample in family.samples
            )
    return list(merged.values())


def worker_families(answer: str) -> list[Metric]:
    """The families of a worker's answer to ``metrics`` (``ok`` and its
    Prometheus text as a JSON string); ValueError for any other answer, or
    a family that is not one of MINER_FAMILIES or carries a ``worker`` label."""
    if not answer.startswith("ok "):
        raise ValueError("not an ok answer")
    text = json.loads(answer[3:])  # a JSONDecodeError is a ValueError
    if not isinstance(text, str):
        raise ValueError("not the text of the metrics")
    families = list(text_string_to_metric_families(text))  # ValueError for text it cannot read
    for family in families:
        if family.name not in MINER_FAMILIES:
            raise ValueError(f"family {family.name[:80]!r} is not one a worker serves")
        if any("worker" in sample.labels for sample in family.samples):
            raise ValueError(f"family {family.name} has a worker label already")
    return families


class WorkerMetricsService(Service):
    """Every ``interval`` seconds, asks every worker for its MINER_FAMILIES
    (the control command ``metrics``); ``families`` holds the last answers,
    by worker index. A worker not running, or whose answer cannot be read
    (logged), has none: its miners' figures are not known."""

    name = "worker metrics"
    log = Logger()

    def __init__(
        self, ask: AskWorkers, clock: IReactorTime, interval: float = WORKER_METRICS_INTERVAL
    ) -> None:
        self._ask = ask
        self._families: dict[str, list[Metric]] = {}
        self._timer = TimerService(interval, lambda: defer.Deferred.fromCoroutine(self._refresh()))
        self._timer.clock = clock

    def families(self) -> Mapping[str, Sequence[Metric]]:
        return self._families

    def startService(self) -> None:
        super().startService()
        self._timer.startService()

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        # An ask under way is not waited for: it only updates metrics.
        self._timer.stopService()
        return None

    async def _refresh(self) -> None:
        try:
            answers = await self._ask("metrics")
        except Exception:  # logged; the timer asks again, the last figures stand meanwhile
            self.log.failure("asking the workers for their metrics failed")
            return
        families: dict[str, list[Metric]] = {}
        for worker, answer in answers:
            if answer is None:
                continue
            index = worker.split()[1]  # "worker N" or "worker N (pid P)"
            try:
                families[index] = worker_families(answer)
            except ValueError as e:
                self.log.error(
                    "{worker}: metrics answered what cannot be read: {error}", worker=worker, error=str(e)
                )
        self._families = families


def _with_known(known: tuple[str, ...], present: Iterable[str]) -> list[str]:
    """The known keys in their order (present or not), then any other present ones."""
    return [*known, *sorted(set(present) - set(known))]


class MetricsService(Service):
    """The timers behind the Redis round trip and reactor lag metrics.

    Every ``redis_interval`` seconds a PING goes to Redis (never two at once:
    the next waits for the answer); every ``lag_interval`` seconds a timer
    measures how late it fired, which is how long the reactor thread was
    kept from its timers by other work.
    """

    name = "metrics"

    def __init__(
        self,
        metrics: Metrics,
        redis: Callable[[], RedisClient | None],
        clock: IReactorTime,
        redis_interval: float = 5.0,
        lag_interval: float = 1.0,
    ) -> None:
        self.metrics = metrics
        self._redis = redis
        self._clock = clock
        self._redis_interval = redis_interval
        self._lag_interval = lag_interval
        self._lag_loop: task.LoopingCall | None = None
        self._ping_loop: task.LoopingCall | None = None
        self._lag_due = 0.0  # when the lag timer should fire next

    def startService(self) -> None:
        super().startService()
        self._lag_loop = task.LoopingCall(self._lag_tick)
        self._lag_loop.clock = self._clock
        self._lag_loop.start(self._lag_interval, now=False)
        self._lag_due = self._clock.seconds() + self._lag_interval
        # Not at once: at start Redis is still connecting.
        self._ping_loop = task.LoopingCall(self.ping_redis)
        self._ping_loop.clock = self._clock
        self._ping_loop.start(self._redis_interval, now=False)

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        # A PING under way is not waited for: it only updates a metric.
        for loop in (self._lag_loop, self._ping_loop):
            if loop is not None and loop.running:
                loop.stop()
        self._lag_loop = self._ping_loop = None
        return None

    def _lag_tick(self) -> None:
        now = self._clock.seconds()
        self.metrics.reactor_lag.observe(max(0.0, now - self._lag_due))
        # LoopingCall schedules its next call on the next multiple of the
        # interval since its start, skipping those already past (as here).
        interval = self._lag_interval
        assert self._lag_loop is not None and self._lag_loop.starttime is not None
        until_next = interval - (now - self._lag_loop.starttime) % interval
        self._lag_due = now + (until_next if now != now + until_next else interval)

    def ping_redis(self) -> defer.Deferred[None]:
        """One timed PING; fires when it is answered or failed (never with a failure)."""
        return defer.ensureDeferred(self._ping())

    async def _ping(self) -> None:
        metrics = self.metrics
        client = self._redis()
        if client is None:
            metrics.redis_up.set(0)
            metrics.redis_ping_errors.labels("disconnected").inc()
            return
        started = self._clock.seconds()
        try:
            await client.eval(_PING, [], [])
        except Exception:  # any failure: Redis did not answer the PING
            metrics.redis_up.set(0)
            metrics.redis_ping_errors.labels("error").inc()
            return
        metrics.redis_ping_seconds.observe(self._clock.seconds() - started)
        metrics.redis_up.set(1)
