"""The composition root: ``twistd nomp`` options and the service tree.

``build_service`` makes the tree; its PoolAssembly builds each pool's part
of it, at start and when a reload adds a pool, and applies a reload's
changes to a running pool part by part (nomp.reload coordinates them).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger, LogLevel, LogLevelFilterPredicate
from twisted.python import usage

from nomp.background import background
from nomp.config import Config, ConfigErrors, EthPoolConfig, GlobalConfig, PoolConfig, load_config
from nomp.config.diff import AnyPool, PoolChange, match_ports
from nomp.config.model import MAX_WORKERS, ProfitSwitchingConfig
from nomp.control.operations import ProcessOperations, ShareRates
from nomp.control.service import ControlProtocol, control_service
from nomp.control.token import TokenFileError, load_token
from nomp.daemon import DaemonGroup
from nomp.daemon.clients import DaemonClients
from nomp.eth.hasher import EpochHashers
from nomp.eth.pool import EthStratumPool
from nomp.eth.service import EthPoolService, NodeStates
from nomp.hashing.pool import HashPoolService
from nomp.logs import make_observer
from nomp.p2p.service import p2p_notifier
from nomp.payments.cli import audit_summary, eth_summary, run_summary
from nomp.payments.ethaudit import eth_audit
from nomp.payments.ethpayer import EthPayerService, payer_daemon, payout_key
from nomp.payments.ethsigner import KeyFileError
from nomp.payments.ethunlocker import EthUnlockerService
from nomp.payments.rounds import round_policy
from nomp.payments.service import PaymentService
from nomp.pool.service import PoolService
from nomp.reload import Outcome, Reloader
from nomp.service import NompService
from nomp.store.bans import BanStore
from nomp.store.client import RedisClient, RedisUnavailable
from nomp.store.instance import InstanceLeaseService
from nomp.store.oep import EthShareRecorder, write_node_state
from nomp.store.oepschema import OepKeys
from nomp.store.recorder import ShareRecorder
from nomp.store.redis import RedisService
from nomp.store.schema import PoolKeys
from nomp.store.service import RecorderService
from nomp.stratum.service import StratumService
from nomp.stratum.stratumpool import StratumPool
from nomp.switching import Switches
from nomp.switching.ports import SwitchedPool, SwitchPorts
from nomp.switching.prices import price_source
from nomp.switching.profitservice import ProfitPool, ProfitSwitchingService
from nomp.switching.relay import RelayedSwitches
from nomp.switching.service import SwitchingService
from nomp.systemd import ServiceNotifier
from nomp.web.metrics import Metrics, MetricsService, WorkerMetricsService
from nomp.web.service import WebService
from nomp.workers.channel import MainChannelService
from nomp.workers.reload import MainReloader
from nomp.workers.sockets import HeldSockets, InheritedSockets, unbound
from nomp.workers.supervisor import WorkerSpawner, WorkerSupervisor


class Options(usage.Options):
    """``twistd nomp`` command line."""

    synopsis = "[-c CONFIG_FOLDER]"
    longdesc = (
        "Run the nomp mining pool. CONFIG_FOLDER holds config.yaml and pools/*.yaml; "
        "coin files are found through config.yaml's 'coins' key. SIGHUP reloads it."
    )
    optParameters = [
        ["config", "c", "conf", "The configuration folder."],
        [
            "role",
            None,
            "all",
            "What this process runs: stratum (the pools' ports), payments, web, "
            "several of them separated by commas, or all.",
        ],
        ["worker", None, None, "Set by the main process in the worker processes it starts: their number."],
    ]

    def postOptions(self) -> None:
        if not os.path.isdir(self["config"]):
            raise usage.UsageError(f"configuration folder {self['config']!r} does not exist")
        process_roles(self)  # UsageError


ROLES = ("stratum", "payments", "web")


def process_roles(options: Options | dict[str, Any]) -> tuple[frozenset[str], int | None]:
    """The roles ``--role`` gives and the worker number ``--worker`` gives
    (None: not a worker); UsageError for values that are neither."""
    words = [word.strip() for word in str(options.get("role") or "all").split(",")]
    roles = frozenset(ROLES) if words == ["all"] else frozenset(words)
    unknown = sorted(roles - set(ROLES))
    if unknown:
        raise usage.UsageError(f"--role: {', '.join(map(repr, unknown))}: expected all or {', '.join(ROLES)}")
    worker = options.get("worker")
    if worker is None:
        return roles, None
    if not str(worker).isdigit() or not 1 <= int(worker) <= MAX_WORKERS:
        raise usage.UsageError(f"--worker: {worker!r}: expected a number 1-{MAX_WORKERS}")
    if roles != frozenset(ROLES) and roles != {"stratum"}:
        raise usage.UsageError("--worker: a worker serves the Stratum ports only: no other --role")
    return frozenset({"stratum"}), int(worker)


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> IService:
    """Read the configuration and build the service tree.

    A configuration error stops the process here, before anything binds:
    every error is printed, and the exit status is 1.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor  # noqa: PLC0415 - only as the default

        reactor = global_reactor
    try:
        roles, worker = process_roles(options)
    except usage.UsageError as e:
        raise SystemExit(f"nomp: {e}") from None
    try:
        config = load_config(options["config"])
    except ConfigErrors as e:
        raise SystemExit(f"nomp: {e}") from None
    return build_service(
        config,
        reactor,
        roles=roles,
        worker=worker,
        tune_runtime=True,
        reload_on_hangup=True,
        # A worker's main process is the one systemd hears from.
        notifier=ServiceNotifier(None) if worker is not None else ServiceNotifier.from_environment(),
    )


def _ready_daemons(pool: PoolService) -> Callable[[], DaemonGroup | None]:
    return lambda: pool.daemons if pool.ready else None


def _node_states(redis: Callable[[], RedisClient | None], keys: OepKeys) -> NodeStates:
    """OEP's node heartbeat, written while Redis is there."""

    def write(name: str, height: int, difficulty: int, now: float) -> defer.Deferred[Any]:
        client = redis()
        if client is None:
            return defer.fail(RedisUnavailable("Redis is not connected"))
        return write_node_state(client, keys, name, height, difficulty, now)

    return write


def _has_work(root: NompService, pool: str, work: object) -> None:
    """A pool's job listener: its first job may make the process ready."""
    root.has_work(pool)


def _control_token(settings: GlobalConfig) -> str | None:
    path = settings.control.token_file
    return None if path is None else load_token(path)


def _port_endpoints(
    reactor: Any, roles: frozenset[str], worker: int | None, held: HeldSockets | None
) -> Callable[[str], IStreamServerEndpoint] | None:
    """How this process's StratumServices listen (None: on what each port's
    ``listen`` says)."""
    if worker is not None:
        try:
            return InheritedSockets.from_environment(reactor).endpoint
        except ValueError as e:
            raise SystemExit(f"nomp: worker {worker}: {e}") from None
    if held is not None:
        return held.endpoint
    return None if "stratum" in roles else unbound


def build_service(
    config: Config,
    reactor: Any,
    roles: frozenset[str] = frozenset(ROLES),
    worker: int | None = None,
    **root_options: Any,
) -> NompService:
    """The service tree for a loaded configuration.

    ``roles`` picks the subtrees (ROLES): ``stratum`` the pools' ports and
    what serves them (the instance byte, the hashing threads, P2P),
    ``payments`` the payment timers, ``web`` the web site and its
    collector; every process has the pools' daemons and templates and a
    control port. With ``workers`` above 1 in config.yaml, a process with
    the stratum role holds the ports' sockets for that many worker
    processes it supervises (nomp.workers) instead of serving them; a
    ``worker`` (its number) serves them, on the sockets it was given, and
    takes its control commands from the main process.

    Services stop in the reverse order of this one, after the drain (the
    miners asked to reconnect, see NompService.drain): each pool closes its
    miners' connections, waits for the shares being checked and writes them
    to Redis before the hashing threads and the Redis connection go.
    ``root_options`` go to NompService (tests replace its exit and shutdown).
    """
    levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(config.settings.logging.level))
    observer = make_observer(config.settings.logging, levels=levels, worker=worker)
    root = NompService(config, reactor, observer, **root_options)
    if worker is not None:
        roles = frozenset({"stratum"})
    held = (
        HeldSockets(reactor)
        if worker is None and "stratum" in roles and config.settings.workers > 1
        else None
    )
    serving = "stratum" in roles and held is None  # this process accepts miners
    redis = RedisService(config.settings.redis)
    redis.setServiceParent(root)
    instance_lease = None
    if serving:
        state_file = config.settings.instance_state
        if state_file is not None and worker is not None:
            state_file = f"{state_file}.{worker}"  # one file per process
        # After Redis and before the pools: the byte is given back once their miners are gone.
        instance_lease = InstanceLeaseService(
            redis.client, reactor, configured=config.settings.instance, state_file=state_file
        )
        instance_lease.setServiceParent(root)
    # A process that serves no miners hashes no shares.
    hashing = HashPoolService(reactor, (config.settings.threads or os.cpu_count() or 1) if serving else 1)
    hashing.setServiceParent(root)
    metrics = Metrics()
    metrics.watch_hashing(hashing)
    try:  # read now: a missing or unsafe token file stops the start
        token = _control_token(config.settings)
    except TokenFileError as e:
        raise SystemExit(f"nomp: config.yaml: control.token_file: {e}") from None
    assembly = PoolAssembly(
        root,
        reactor,
        redis,
        hashing,
        metrics,
        instance_lease,
        levels,
        token,
        endpoint=_port_endpoints(reactor, roles, worker, held),
        serving=serving,
        payments="payments" in roles,
    )
    rates = ShareRates(assembly.accepted_shares, reactor)
    switching: SwitchingService | None = None  # built after the pools it switches between
    relayed: RelayedSwitches | None = None  # instead, in the main process of workers

    def switch_lines() -> list[str]:
        switches = switching or relayed
        return [] if switches is None else switches.status_lines()

    operations = ProcessOperations(
        lambda: list(assembly.parts.values()),
        lambda: redis.client() is not None,
        levels,
        rates,
        reactor,
        lambda: root.started_at,
        lambda pool: defer.Deferred.fromCoroutine(root.reloader.reload(pool)),
        root.shutdown,
        switch_lines,
    )
    supervisor = None
    if held is not None:
        supervisor = WorkerSupervisor(
            config.settings.workers,
            WorkerSpawner(reactor, str(config.directory), held),
            reactor,
            # Each drains its miners, then writes its shares (15 s at most, see nomp.store.service).
            stop_timeout=config.settings.drain_seconds + 30,
        )
    if worker is not None:
        MainChannelService(
            ControlProtocol(
                assembly.pools,
                assembly.servers,
                operations,
                None,
                reactor,
                switches=lambda: switching,
                # The main process sums its workers' miners from these (nomp.switching.relay).
                switch_documents=lambda: [] if switching is None else switching.documents(),
                # It shows these on its /metrics, labelled worker (nomp.web.metrics).
                miner_metrics=metrics.miner_exposition,
            ),
            reactor,
            root.shutdown,
        ).setServiceParent(root)
        rates.timer().setServiceParent(root)
    else:
        control_service(
            config.settings.control.listen,
            assembly.pools,
            reactor,
            assembly.servers,
            operations,
            lambda: assembly.token,
            (rates.timer(),),
            forward=None if supervisor is None else _forwarder(supervisor),
            switches=lambda: switching or relayed,
        ).setServiceParent(root)
    root.await_work([pool.name for pool in config.pools] + [pool.name for pool in config.eth_pools])
    for pool_config in config.pools:
        bitcoin = assembly.build_pool(pool_config, root.fatal)
        bitcoin.service.add_job_listener(partial(_has_work, root, pool_config.name))
        bitcoin.service.setServiceParent(root)
    for eth_config in config.eth_pools:
        try:  # the payout key is read now: a missing or unsafe file stops the start
            parts = assembly.build_eth_pool(eth_config, root.fatal)
        except KeyFileError as e:
            raise SystemExit(f"nomp: {eth_config.file}: {e}") from None
        parts.service.add_work_listener(partial(_has_work, root, eth_config.name))
        parts.service.setServiceParent(root)
    if serving and config.settings.switching:
        # After the pools: its ports close before theirs at a stop.
        switching = _switching(config, assembly, redis, reactor)
        switching.add_listener(metrics.switched)
        switching.setServiceParent(root)
    elif supervisor is not None and config.settings.switching:
        relayed = _relayed_switching(config, assembly, redis, supervisor, reactor)
        relayed.add_listener(metrics.switched)
        relayed.setServiceParent(root)
    profit = None
    # With workers, the main process decides for all of them.
    moves: Switches | None = None if worker is not None else (relayed or switching)
    if moves is not None and config.settings.profit_switching is not None:
        profit = _profit_switching(config.settings.profit_switching, moves, assembly, reactor)
        metrics.watch_profit(profit.snapshot)
        profit.setServiceParent(root)
    # At a stop, every pool's miners at once (a pool a reload added too), and
    # the switching ports' listeners (their miners are the pools').
    root.drainers = lambda: (
        [parts.stratum for parts in assembly.parts.values()]
        + ([] if switching is None else switching.stratum_services)
    )
    web = config.settings.web
    shown = switching or relayed  # with workers, the main process's: their miners summed
    replace_config = root.replace_config
    if web.enabled and "web" in roles:
        web_service = WebService(
            web,
            # What runs, as the reloads leave it: the one list of the pools, which they replace.
            lambda: (*root.config.pools, *root.config.eth_pools),
            redis.client,
            reactor,
            metrics=metrics.render,
            daemons=lambda name: _ready_daemons(assembly.pools[name])() if name in assembly.pools else None,
            switching=None if shown is None else shown.documents,
            profit=None if profit is None else profit.snapshot,
        )
        metrics.watch_snapshot(lambda: web_service.collector.snapshot)
        # Under the web service: its timers feed only /metrics, which the web port serves.
        MetricsService(metrics, redis.client, reactor).setServiceParent(web_service)
        if supervisor is not None:
            worker_metrics = WorkerMetricsService(supervisor.ask_each, reactor)
            metrics.watch_workers(worker_metrics.families)
            worker_metrics.setServiceParent(web_service)
        web_service.setServiceParent(root)
        replace_config = partial(_replace_config, root, web_service)
    if supervisor is not None:
        # Last: at a stop, the workers drain and exit before the rest stops.
        supervisor.setServiceParent(root)
    if supervisor is not None and held is not None:
        root.reloader = MainReloader(assembly, lambda: root.config, replace_config, supervisor, held)
    else:
        root.reloader = Reloader(assembly, lambda: root.config, replace_config)
    return root


def _replace_config(root: NompService, web: WebService, config: Config) -> None:
    """A reload's new configuration, and the web told: its pools are read from it."""
    root.replace_config(config)
    web.pools_changed()


def _switch_ports(
    config: Config, assembly: PoolAssembly, reactor: Any
) -> dict[str, tuple[SwitchPorts, StratumService]]:
    """Each switch's ports over the pools built, and the StratumService listening on them."""
    defaults = config.settings.pool_defaults
    switches = {}
    for name, switch in config.settings.switching.items():
        pools = [SwitchedPool(pool, assembly.servers[pool], assembly.pools[pool]) for pool in switch.pools]
        ports = SwitchPorts(
            name,
            pools,
            switch.banning or defaults.banning,
            switch.connection_timeout or defaults.connection_timeout,
            reactor,
        )
        switches[name] = (ports, StratumService(ports, switch.ports, reactor, assembly.endpoint))
    return switches


def _switching(config: Config, assembly: PoolAssembly, redis: RedisService, reactor: Any) -> SwitchingService:
    """The switching ports of config.yaml's ``switching``, over the pools built."""
    switches = _switch_ports(config, assembly, reactor)
    algorithms = {name: switch.algorithm for name, switch in config.settings.switching.items()}
    return SwitchingService(switches, algorithms, lambda: list(assembly.parts), redis.client, reactor)


def _relayed_switching(
    config: Config, assembly: PoolAssembly, redis: RedisService, supervisor: WorkerSupervisor, reactor: Any
) -> RelayedSwitches:
    """The main process's switches: moved by its workers, their ports' sockets held for them."""
    switching = config.settings.switching
    return RelayedSwitches(
        {name: switch.pools for name, switch in switching.items()},
        {name: switch.algorithm for name, switch in switching.items()},
        supervisor.ask_each,
        lambda: list(assembly.parts),
        redis.client,
        reactor,
        ports={name: service for name, (_, service) in _switch_ports(config, assembly, reactor).items()},
    )


def _profit_switching(
    config: ProfitSwitchingConfig, switching: Switches, assembly: PoolAssembly, reactor: Any
) -> ProfitSwitchingService:
    """Profit switching over the switches, valuing each pool from its PoolService."""

    def pool(name: str) -> ProfitPool | None:
        service = assembly.pools.get(name)
        return (
            None
            if service is None
            else ProfitPool(service.config.coin.symbol, service, service.config.coin.decimals)
        )

    return ProfitSwitchingService(config, switching, pool, price_source(config.prices, reactor), reactor)


def _forwarder(supervisor: WorkerSupervisor) -> Callable[[str], defer.Deferred[list[tuple[str, str]]]]:
    return lambda line: defer.Deferred.fromCoroutine(supervisor.ask_all(line))


class _RunningFace:
    """What the control port and reload read of a running pool, either family's."""

    config: PoolConfig | EthPoolConfig
    service: PoolService | EthPoolService
    server: StratumPool | EthStratumPool

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def coin(self) -> str:
        return self.config.coin.name

    @property
    def ready(self) -> bool:
        return self.service.ready

    @property
    def miners(self) -> int:
        return len(self.server.connections)

    @property
    def accepted_shares(self) -> int:
        return self.server.pipeline.shares["accepted"]


@dataclass(eq=False)
class BitcoinParts(_RunningFace):
    """A Bitcoin-family pool's services, as the assembly keeps them (a RunningPool of
    nomp.control.operations)."""

    config: PoolConfig
    service: PoolService
    server: StratumPool
    stratum: StratumService
    payer: PaymentService | None = None
    notifier: Service | None = None

    def payments(self, action: str) -> defer.Deferred[str]:
        return defer.Deferred.fromCoroutine(self._payments(action))

    async def _payments(self, action: str) -> str:
        name, payer = self.config.name, self.payer
        if payer is None:
            return f"error {name}: payments are not enabled in {self.config.file}"
        if action == "run":
            report = await payer.run_now()
            if report is None:
                return (
                    f"error {name}: no payment run: Redis or the daemon is not ready, or it failed (see log)"
                )
            failed = report.error or report.locked_out
            return ("error " if failed else "ok ") + run_summary(self.config, report).strip()
        result = await payer.audit()
        if result is None:
            return f"error {name}: no audit: Redis or the wallet is not ready"
        return ("ok " if result.clean else "error ") + audit_summary(name, result).strip()


@dataclass(eq=False)
class EthParts(_RunningFace):
    """An Ethereum-family pool's services, as the assembly keeps them (a RunningPool)."""

    config: EthPoolConfig
    service: EthPoolService
    server: EthStratumPool
    stratum: StratumService
    redis: Callable[[], RedisClient | None]
    reactor: Any
    unlocker: EthUnlockerService | None = None
    payer: EthPayerService | None = None
    run_listeners: tuple[Any, Any] | None = None  # the metrics' (unlocker, payer) observers, made once

    def payments(self, action: str) -> defer.Deferred[str]:
        return defer.Deferred.fromCoroutine(self._payments(action))

    async def _payments(self, action: str) -> str:
        name, unlocker, payer = self.config.name, self.unlocker, self.payer
        if unlocker is None or payer is None:
            return f"error {name}: payments are not enabled in {self.config.file}"
        if action == "run":
            unlocked = await unlocker.run_once()
            paid = await payer.run_once()
            if unlocked is None or paid is None:
                return f"error {name}: no payment run: Redis is not ready, or a run failed (see the log)"
            failed = unlocked.error or paid.error or unlocked.locked_out or paid.locked_out
            return ("error " if failed else "ok ") + eth_summary(self.config, unlocked, paid).strip()
        redis = self.redis()
        if redis is None:
            return f"error {name}: no audit: Redis is not connected"
        clients = DaemonClients(self.reactor, persistent=False)
        try:
            node = clients.rpc(payer_daemon(self.config), version="2.0")
            result = await eth_audit(self.config, redis, node, payer.key.address)
        finally:
            await clients.close()
        return ("ok " if result.clean else "error ") + audit_summary(name, result).strip()


Parts = BitcoinParts | EthParts


@dataclass(eq=False)
class PoolAssembly:
    """Builds each pool's part of the tree and takes it apart (nomp.reload's PoolAssembly).

    ``pools`` and ``servers`` are the Bitcoin-family pools and their miner
    sides by name, as the control port reads them; ``parts`` every pool's.
    """

    log = Logger()

    root: NompService
    reactor: Any
    redis: RedisService
    hashing: HashPoolService
    metrics: Metrics
    instance_lease: InstanceLeaseService | None  # None in a process that serves no miners
    levels: LogLevelFilterPredicate
    token: str | None
    # How the pools' ports listen (None: as their ``listen`` says; see nomp.workers).
    endpoint: Callable[[str], IStreamServerEndpoint] | None = None
    serving: bool = True  # whether this process's ports accept miners
    payments: bool = True  # whether it runs the pools' payments
    pools: dict[str, PoolService] = field(default_factory=dict)
    servers: dict[str, StratumPool] = field(default_factory=dict)
    parts: dict[str, Parts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.instance_lease is not None:
            self.instance_lease.add_listener(self._set_instance)

    @property
    def instance(self) -> int | None:
        return None if self.instance_lease is None else self.instance_lease.instance

    def _set_instance(self, instance: int | None) -> None:
        for parts in self.parts.values():
            parts.server.set_instance(instance)

    def accepted_shares(self) -> dict[str, int]:
        """Each pool's accepted shares so far (for the shares/s of ``status``)."""
        return {name: parts.accepted_shares for name, parts in self.parts.items()}

    # Building.
    def build_pool(self, pool_config: PoolConfig, on_fatal: Callable[[str], None]) -> BitcoinParts:
        """A Bitcoin-family pool's services, under its PoolService (not yet in the tree)."""
        reactor, redis = self.reactor, self.redis
        observer = self.metrics.daemon_observer(pool_config.name)
        recorder = ShareRecorder(
            PoolKeys.for_coin(pool_config.coin.name),
            redis.client,
            reactor,
            hashrate_window=pool_config.hashrate_window,
            round_policy=round_policy(pool_config.payments),
        )
        pool = PoolService(pool_config, reactor, on_fatal, recorder, rpc_observer=observer)
        RecorderService(recorder, reactor).setServiceParent(pool)
        stratum = StratumPool(
            pool_config,
            pool,
            pool,
            self.hashing,
            recorder,
            reactor,
            BanStore(recorder.keys, redis.client),
            instance=self.instance,  # None: subscribes wait for the lease
        )
        self.metrics.watch_pool(pool_config.name, stratum, recorder, pool)
        pool.add_job_listener(stratum.new_job)
        stratum_service = StratumService(stratum, pool_config.ports, reactor, self.endpoint)
        stratum_service.setServiceParent(pool)
        parts = BitcoinParts(pool_config, pool, stratum, stratum_service)
        # None without an enabled p2p section; a process without miners needs no early templates.
        notifier = p2p_notifier(pool_config, pool, reactor) if self.serving else None
        if notifier is not None:
            notifier.setServiceParent(pool)
            parts.notifier = notifier
        if pool_config.payments.enabled and self.payments:
            parts.payer = self._payment_service(pool_config, pool)
            parts.payer.setServiceParent(pool)
        self.pools[pool_config.name] = pool
        self.servers[pool_config.name] = stratum
        self.parts[pool_config.name] = parts
        return parts

    def _payment_service(self, pool_config: PoolConfig, pool: PoolService) -> PaymentService:
        observer = self.metrics.daemon_observer(pool_config.name)
        return PaymentService(
            pool_config, self.redis.client, _ready_daemons(pool), self.reactor, rpc_observer=observer
        )

    def build_eth_pool(self, eth_config: EthPoolConfig, on_fatal: Callable[[str], None]) -> EthParts:
        """An Ethereum-family pool's services, under its EthPoolService (not yet in
        the tree); KeyFileError when its payout key cannot be used."""
        reactor, redis = self.reactor, self.redis
        keys = OepKeys.for_coin(eth_config.coin.name)
        eth_recorder = EthShareRecorder(
            keys,
            redis.client,
            reactor,
            round_policy(eth_config.payments),
            hashrate_expiration=eth_config.hashrate_expiration,
        )
        hashers = EpochHashers(eth_config.name, self.hashing.run, dataset=eth_config.dataset)
        eth_pool = EthPoolService(
            eth_config,
            reactor,
            on_fatal,
            eth_recorder,
            hashers,
            _node_states(redis.client, keys),
            rpc_observer=self.metrics.daemon_observer(eth_config.name),
        )
        RecorderService(eth_recorder, reactor).setServiceParent(eth_pool)
        miners = EthStratumPool(
            eth_config,
            eth_pool,
            eth_pool,
            self.hashing,
            hashers,
            eth_recorder,
            reactor,
            # nomp's own bans, in its key for them (OEP has none).
            BanStore(PoolKeys.for_coin(eth_config.coin.name), redis.client),
            instance=self.instance,
        )
        stratum_service = StratumService(miners, eth_config.ports, reactor, self.endpoint)
        parts = EthParts(eth_config, eth_pool, miners, stratum_service, redis.client, reactor)
        if eth_config.payments.enabled and self.payments:
            parts.unlocker, parts.payer = self._eth_payments(parts, eth_config)  # KeyFileError first
        self.metrics.watch_pool(eth_config.name, miners, eth_recorder, eth_pool)
        eth_pool.add_work_listener(miners.new_work)
        stratum_service.setServiceParent(eth_pool)
        if parts.unlocker is not None and parts.payer is not None:
            parts.unlocker.setServiceParent(eth_pool)
            parts.payer.setServiceParent(eth_pool)
        self.parts[eth_config.name] = parts
        return parts

    def _eth_payments(
        self, parts: EthParts, eth_config: EthPoolConfig
    ) -> tuple[EthUnlockerService, EthPayerService]:
        payout_key(eth_config)  # KeyFileError before anything is made
        if parts.run_listeners is None:
            parts.run_listeners = (
                self.metrics.unlocker_observer(eth_config.name),
                self.metrics.payer_observer(eth_config.name),
            )
        observer = self.metrics.daemon_observer(eth_config.name)
        payer = EthPayerService(  # reads the payout key: KeyFileError
            eth_config,
            self.redis.client,
            self.reactor,
            rpc_observer=observer,
            run_listener=parts.run_listeners[1],
        )
        unlocker = EthUnlockerService(
            eth_config,
            self.redis.client,
            self.reactor,
            rpc_observer=observer,
            run_listener=parts.run_listeners[0],
        )
        return unlocker, payer

    # A reload (nomp.reload's PoolAssembly).
    async def add_pool(self, pool: AnyPool) -> tuple[AnyPool | None, Outcome]:
        outcome = Outcome()

        def stopped(message: str) -> None:
            # A pool a reload added that cannot start is stopped alone; the
            # process and its other pools go on.
            self.log.error("pool {pool} stopped: {message}", pool=pool.name, message=message)
            self.root.reloader.forget(pool.name)
            background(f"stop pool {pool.name}", self._take_out(pool.name))

        try:
            parts: Parts = (
                self.build_eth_pool(pool, stopped)
                if isinstance(pool, EthPoolConfig)
                else self.build_pool(pool, stopped)
            )
        except KeyFileError as e:
            outcome.refused.append(f"{pool.file}: pool {pool.name} not added: {e}")
            return None, outcome
        parts.stratum.lenient = True
        parts.service.setServiceParent(self.root)
        outcome.refused += [f"{pool.file}: {problem}" for problem in parts.stratum.unopened]
        running = dataclasses.replace(pool, ports=parts.stratum.ports)
        parts.config = parts.service.config = parts.server.config = running
        return running, outcome

    async def remove_pool(self, name: str) -> Outcome:
        miners = self.parts[name].miners
        await self._take_out(name)
        done = [f"pool {name}: {miners} miner{'' if miners == 1 else 's'} disconnected"]
        return Outcome(done=done)

    async def _take_out(self, name: str) -> None:
        parts = self.parts.pop(name, None)
        if parts is None:
            return
        self.pools.pop(name, None)
        self.servers.pop(name, None)
        self.metrics.forget_pool(name)
        if parts.service.parent is not None:
            await defer.maybeDeferred(parts.service.disownServiceParent)

    async def change_pool(self, change: PoolChange) -> tuple[AnyPool, Outcome]:
        parts = self.parts[change.name]
        if isinstance(parts, BitcoinParts) and isinstance(change.running, PoolConfig):
            return await self._change_bitcoin(parts, change.running)
        if isinstance(parts, EthParts) and isinstance(change.running, EthPoolConfig):
            return await self._change_eth(parts, change.running)
        return parts.config, Outcome()  # another family: nomp.config.diff keeps the pool as it runs

    async def _change_bitcoin(self, parts: BitcoinParts, new: PoolConfig) -> tuple[PoolConfig, Outcome]:
        old = parts.config
        running, refused = await parts.service.apply(new)
        outcome = Outcome(refused=refused)
        if running is old:
            return old, outcome  # still starting
        running, done, refused = await parts.stratum.apply(running)
        outcome.done += done
        outcome.refused += refused
        await self._change_payments(parts, running)  # its wallet, address and settings
        if running.p2p != old.p2p:
            if parts.notifier is not None:
                await defer.maybeDeferred(parts.notifier.disownServiceParent)
            parts.notifier = p2p_notifier(running, parts.service, self.reactor) if self.serving else None
            if parts.notifier is not None:
                parts.notifier.setServiceParent(parts.service)
        parts.service.config = parts.config = running
        if _difficulty_changed(old, running):
            # A miner may take a new difficulty only with its next job: one now.
            await parts.service.refresh(force=True)
        return running, outcome

    async def _change_payments(self, parts: BitcoinParts, running: PoolConfig) -> None:
        if not self.payments:
            return
        if running.payments.enabled and parts.payer is None:
            parts.payer = self._payment_service(running, parts.service)
            parts.payer.setServiceParent(parts.service)
        elif not running.payments.enabled and parts.payer is not None:
            payer, parts.payer = parts.payer, None
            await defer.maybeDeferred(payer.disownServiceParent)  # a run under way finishes
        elif parts.payer is not None:
            parts.payer.apply(running)

    async def _change_eth(self, parts: EthParts, new: EthPoolConfig) -> tuple[EthPoolConfig, Outcome]:
        old = parts.config
        running, refused = await parts.service.apply(new)
        outcome = Outcome(refused=refused)
        if running is old:
            return old, outcome
        running, done, refused = await parts.stratum.apply(running)
        outcome.done += done
        outcome.refused += refused
        paying = ("payments", "address", "daemons")
        if self.payments and any(getattr(running, key) != getattr(old, key) for key in paying):
            try:
                running = await self._change_eth_payments(parts, running)
            except KeyFileError as e:
                outcome.refused.append(f"{old.file}: payments not changed: {e}")
                running = dataclasses.replace(running, payments=old.payments, address=old.address)
        parts.service.config = parts.config = running
        return running, outcome

    async def _change_eth_payments(self, parts: EthParts, running: EthPoolConfig) -> EthPoolConfig:
        """The unlocker and payer made again with the new settings (the key read first)."""
        made = self._eth_payments(parts, running) if running.payments.enabled else None
        for service in (parts.payer, parts.unlocker):
            if service is not None:
                await defer.maybeDeferred(service.disownServiceParent)  # a run under way finishes
        parts.unlocker, parts.payer = made if made is not None else (None, None)
        if parts.unlocker is not None and parts.payer is not None:
            parts.unlocker.setServiceParent(parts.service)
            parts.payer.setServiceParent(parts.service)
        return running

    def change_settings(self, old: GlobalConfig, new: GlobalConfig) -> tuple[GlobalConfig, Outcome]:
        outcome = Outcome()
        if new.logging.level != old.logging.level:
            self.levels.setLogLevelForNamespace("", LogLevel.levelWithName(new.logging.level))
        if new.control.token_file != old.control.token_file:
            try:
                self.token = _control_token(new)
            except TokenFileError as e:
                outcome.refused.append(f"config.yaml: control.token_file not changed: {e}")
                new = dataclasses.replace(new, control=old.control)
        return new, outcome


def _difficulty_changed(old: PoolConfig, new: PoolConfig) -> bool:
    return any(
        (before.diff, before.vardiff) != (after.diff, after.vardiff)
        for before, after in match_ports(old.ports, new.ports).kept
    )
