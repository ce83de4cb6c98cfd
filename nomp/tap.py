"""The composition root: ``twistd nomp`` options and the service tree."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService
from twisted.internet import defer
from twisted.python import usage

from nomp.config import Config, ConfigErrors, load_config
from nomp.control.service import control_service
from nomp.daemon import DaemonGroup
from nomp.eth.hasher import EpochHashers
from nomp.eth.pool import EthStratumPool
from nomp.eth.service import EthPoolService, NodeStates
from nomp.hashing.pool import HashPoolService
from nomp.logs import make_observer
from nomp.p2p.service import p2p_notifier
from nomp.payments.ethpayer import EthPayerService
from nomp.payments.ethsigner import KeyFileError
from nomp.payments.ethunlocker import EthUnlockerService
from nomp.payments.rounds import round_policy
from nomp.payments.service import PaymentService
from nomp.pool.service import PoolService
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
from nomp.web.metrics import Metrics, MetricsService
from nomp.web.service import WebService


class Options(usage.Options):
    """``twistd nomp`` command line."""

    synopsis = "[-c CONFIG_FOLDER]"
    longdesc = (
        "Run the nomp mining pool. CONFIG_FOLDER holds config.yaml and pools/*.yaml; "
        "coin files are found through config.yaml's 'coins' key."
    )
    optParameters = [["config", "c", "conf", "The configuration folder."]]

    def postOptions(self) -> None:
        if not os.path.isdir(self["config"]):
            raise usage.UsageError(f"configuration folder {self['config']!r} does not exist")


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> IService:
    """Read the configuration and build the service tree.

    A configuration error stops the process here, before anything binds:
    every error is printed, and the exit status is 1.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor  # noqa: PLC0415 - only as the default

        reactor = global_reactor
    try:
        config = load_config(options["config"])
    except ConfigErrors as e:
        raise SystemExit(f"nomp: {e}") from None
    return build_service(config, reactor, tune_runtime=True)


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


def build_service(config: Config, reactor: Any, **root_options: Any) -> NompService:
    """The service tree for a loaded configuration.

    Services stop in the reverse order of this one: each pool closes its
    miners' connections, waits for the shares being checked and writes them
    to Redis before the hashing threads and the Redis connection go.
    ``root_options`` go to NompService (tests replace its exit and shutdown).
    """
    root = NompService(config, reactor, make_observer(config.settings.logging), **root_options)
    redis = RedisService(config.settings.redis)
    redis.setServiceParent(root)
    # After Redis and before the pools: the byte is given back once their miners are gone.
    instance_lease = InstanceLeaseService(
        redis.client, reactor, configured=config.settings.instance, state_file=config.settings.instance_state
    )
    instance_lease.setServiceParent(root)
    hashing = HashPoolService(reactor, config.settings.threads or os.cpu_count() or 1)
    hashing.setServiceParent(root)
    pools: dict[str, PoolService] = {}
    servers: dict[str, StratumPool] = {}
    control_service(config.settings.control.listen, pools, reactor, servers).setServiceParent(root)
    metrics = Metrics()
    metrics.watch_hashing(hashing)
    for pool_config in config.pools:
        observer = metrics.daemon_observer(pool_config.name)
        recorder = ShareRecorder(
            PoolKeys.for_coin(pool_config.coin.name),
            redis.client,
            reactor,
            hashrate_window=pool_config.hashrate_window,
            round_policy=round_policy(pool_config.payments),
        )
        pool = PoolService(pool_config, reactor, root.fatal, recorder, rpc_observer=observer)
        RecorderService(recorder, reactor).setServiceParent(pool)
        stratum = StratumPool(
            pool_config,
            pool,
            pool,
            hashing,
            recorder,
            reactor,
            BanStore(recorder.keys, redis.client),
            instance=config.settings.instance,  # None: subscribes wait for the lease
        )
        instance_lease.add_listener(stratum.set_instance)
        servers[pool_config.name] = stratum
        metrics.watch_pool(pool_config.name, stratum, recorder, pool)
        pool.add_job_listener(stratum.new_job)
        StratumService(stratum, pool_config.ports, reactor).setServiceParent(pool)
        notifier = p2p_notifier(pool_config, pool, reactor)  # None without an enabled p2p section
        if notifier is not None:
            notifier.setServiceParent(pool)
        if pool_config.payments.enabled:
            PaymentService(
                pool_config, redis.client, _ready_daemons(pool), reactor, rpc_observer=observer
            ).setServiceParent(pool)
        pool.setServiceParent(root)
        pools[pool_config.name] = pool
    for eth_config in config.eth_pools:
        keys = OepKeys.for_coin(eth_config.coin.name)
        eth_recorder = EthShareRecorder(
            keys,
            redis.client,
            reactor,
            round_policy(eth_config.payments),
            hashrate_expiration=eth_config.hashrate_expiration,
        )
        hashers = EpochHashers(eth_config.name, hashing.run, dataset=eth_config.dataset)
        eth_pool = EthPoolService(
            eth_config,
            reactor,
            root.fatal,
            eth_recorder,
            hashers,
            _node_states(redis.client, keys),
            rpc_observer=metrics.daemon_observer(eth_config.name),
        )
        RecorderService(eth_recorder, reactor).setServiceParent(eth_pool)
        miners = EthStratumPool(
            eth_config,
            eth_pool,
            eth_pool,
            hashing,
            hashers,
            eth_recorder,
            reactor,
            # nomp's own bans, in its key for them (OEP has none).
            BanStore(PoolKeys.for_coin(eth_config.coin.name), redis.client),
            instance=config.settings.instance,
        )
        instance_lease.add_listener(miners.set_instance)
        metrics.watch_pool(eth_config.name, miners, eth_recorder, eth_pool)
        eth_pool.add_work_listener(miners.new_work)
        StratumService(miners, eth_config.ports, reactor).setServiceParent(eth_pool)
        if eth_config.payments.enabled:
            eth_observer = metrics.daemon_observer(eth_config.name)
            EthUnlockerService(
                eth_config,
                redis.client,
                reactor,
                rpc_observer=eth_observer,
                run_listener=metrics.unlocker_observer(eth_config.name),
            ).setServiceParent(eth_pool)
            try:  # the payout key is read now: a missing or unsafe file stops the start
                payer = EthPayerService(
                    eth_config,
                    redis.client,
                    reactor,
                    rpc_observer=eth_observer,
                    run_listener=metrics.payer_observer(eth_config.name),
                )
            except KeyFileError as e:
                raise SystemExit(f"nomp: {eth_config.file}: {e}") from None
            payer.setServiceParent(eth_pool)
        eth_pool.setServiceParent(root)
    web = config.settings.web
    if web.enabled:
        web_service = WebService(
            web,
            config.pools,
            redis.client,
            reactor,
            metrics=metrics.render,
            daemons=lambda name: _ready_daemons(pools[name])(),
            eth_pools=config.eth_pools,
        )
        metrics.watch_snapshot(lambda: web_service.collector.snapshot)
        # Under the web service: its timers feed only /metrics, which the web port serves.
        MetricsService(metrics, redis.client, reactor).setServiceParent(web_service)
        web_service.setServiceParent(root)
    return root
