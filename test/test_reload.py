"""Reloads: the conf folder read again and applied to a running pool without
dropping a miner (nomp.reload, nomp.tap's PoolAssembly, the services' apply).

The pure parts (the gatekeeper's new policy, a port's new settings, the
Reloader's sequence and answer) on fakes and a memory reactor; then the
whole tree against a real litecoind regtest pair and redis-server, with a
miner mining through the reload; then SIGHUP to ``twistd nomp``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from ipaddress import ip_network
from pathlib import Path
from typing import Any, cast

import treq
import yaml
from twisted.internet import defer, reactor, task
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from nomp import cli
from nomp.config import Config, ConfigErrors, PoolConfig, PortConfig, VardiffConfig, load_config
from nomp.config.diff import AnyPool, PoolChange
from nomp.config.load import listen_address
from nomp.config.model import GlobalConfig
from nomp.miner import Miner, connect
from nomp.pool.service import PoolService
from nomp.reload import Outcome, Reloader
from nomp.service import NompService
from nomp.stratum import difficulty
from nomp.stratum.banning import BanPolicy, Gatekeeper, InvalidShareLimit, Limit
from nomp.stratum.protocol import StratumFactory
from nomp.stratum.service import StratumService
from nomp.stratum.stratumpool import StratumPool
from nomp.web.service import WebService
from test.fakes import FakeBlockRecords, StratumHarness, mainnet_template, pool_config
from test.poolconf import CoinPool, renamed_coin, write_conf, write_pools_conf
from test.rediscli import redis, redis_hash
from test.servers import RPC_PASSWORD, RPC_USER, free_port, shared_redis, shared_regtest
from test.test_config_paths import SHIPPED_CONF
from test.test_control import run_nomp_cli
from test.test_stratum_e2e import SCRYPT, pool_ready, start_pool
from test.test_stratum_protocol import NOW, PLAIN_PORT, VARDIFF_PORT, WORKER
from test.test_twistd import TWISTD
from test.waiting import until
from test.webclient import ApiClient

COIN = "litecoin-regtest"


class GatekeeperPolicyTests(SynchronousTestCase):
    """Gatekeeper.apply_policy: a reloaded banning section, with the evidence and bans held."""

    def test_limits_trimmed_and_turned_off(self) -> None:
        """Evidence is counted against the new limits at once; a rule turned off forgets it."""
        gatekeeper = Gatekeeper(BanPolicy(malformed=Limit(5, 60), failed_auth=Limit(5, 60)))
        for second in range(4):
            self.assertIsNone(gatekeeper.malformed("10.0.0.1", 100 + second))
            self.assertIsNone(gatekeeper.auth_failed("10.0.0.1", 100 + second))
        gatekeeper.apply_policy(BanPolicy(malformed=Limit(2, 60), failed_auth=None), [])
        self.assertIsNone(gatekeeper.auth_failed("10.0.0.1", 105))
        ban = gatekeeper.malformed("10.0.0.1", 105)
        assert ban is not None
        self.assertEqual(ban.reason, "more than 2 malformed messages in 60 s")

    def test_share_window(self) -> None:
        """Share tallies stay under the same window, and start afresh under another."""
        rule = InvalidShareLimit(percent=50, min_shares=4, window=600)
        gatekeeper = Gatekeeper(BanPolicy(invalid_shares=rule))
        for second in range(3):
            self.assertIsNone(gatekeeper.share("10.0.0.1", False, 100 + second))
        gatekeeper.apply_policy(BanPolicy(ban_duration=60, invalid_shares=rule), [])
        ban = gatekeeper.share("10.0.0.1", False, 103)
        assert ban is not None
        self.assertEqual(ban.expires_at, 163)  # the new ban time
        shorter = dataclasses.replace(rule, window=60)
        gatekeeper.apply_policy(BanPolicy(invalid_shares=shorter), [])
        for second in range(3):
            self.assertIsNone(gatekeeper.share("10.0.0.2", False, 200 + second))
        gatekeeper.apply_policy(BanPolicy(invalid_shares=rule), [])
        self.assertIsNone(gatekeeper.share("10.0.0.2", False, 203))  # counted afresh

    def test_whitelist(self) -> None:
        """A newly whitelisted IP's ban is lifted and its connections stop counting; a ban
        held by another IP keeps its expiry."""
        gatekeeper = Gatekeeper(BanPolicy(connections_total=3))
        for ip in ("10.0.0.5", "10.0.0.5", "10.0.0.6"):
            self.assertTrue(gatekeeper.admit(ip, 100).accepted)
        gatekeeper.bans.ban("10.0.0.5", 100, reason="test")
        held = gatekeeper.bans.ban("10.0.0.7", 100, reason="test")
        open_ips = ["10.0.0.5", "10.0.0.5", "10.0.0.6"]
        trusted = BanPolicy(connections_total=3, whitelist=(ip_network("10.0.0.5/32"),))
        gatekeeper.apply_policy(trusted, open_ips)
        self.assertIsNone(gatekeeper.bans.get("10.0.0.5", 101))
        self.assertEqual(gatekeeper.bans.get("10.0.0.7", 101), held)
        self.assertEqual((gatekeeper.open_connections, gatekeeper.connections("10.0.0.5")), (1, 0))
        gatekeeper.apply_policy(BanPolicy(connections_total=3), open_ips)
        self.assertEqual((gatekeeper.open_connections, gatekeeper.connections("10.0.0.5")), (3, 2))
        self.assertEqual(gatekeeper.admit("10.0.0.8", 102).refusal is not None, True)


class PortRetuneTests(SynchronousTestCase):
    """StratumService.apply and difficulty.port_changed on a memory reactor: the ports'
    connections stay, and get the new difficulty."""

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(NOW)
        self.config = pool_config(ports=(PLAIN_PORT, VARDIFF_PORT))
        self.harness = StratumHarness(self.config, self.clock)
        self.harness.new_job(mainnet_template())
        self.service = StratumService(self.harness.server, self.config.ports, self.clock)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.plain = self.harness.miner(WORKER, port=PLAIN_PORT, ip="10.0.0.1")
        self.vardiff = self.harness.miner(WORKER, port=VARDIFF_PORT, ip="10.0.0.2")

    def apply(self, config: PoolConfig) -> tuple[PoolConfig, list[str], list[str]]:
        return self.successResultOf(defer.Deferred.fromCoroutine(self.service.apply(config)))

    def listening(self) -> dict[int, StratumFactory]:
        """The memory reactor's listening ports (the last by each number), by number."""
        return {port: cast(StratumFactory, factory) for port, factory, _, _ in self.clock.tcpServers}

    def test_new_difficulty_sent(self) -> None:
        """A changed starting diff is sent to the port's miners; a vardiff range that no longer
        holds a miner's difficulty moves it inside; later connections get the new settings."""
        plain = dataclasses.replace(PLAIN_PORT, diff=0.0002)
        narrower = VardiffConfig(
            min_diff=0.01, max_diff=1000, target_time=15, retarget_time=90, variance_percent=30
        )
        vardiff = dataclasses.replace(VARDIFF_PORT, vardiff=narrower)
        self.clock.advance(30)
        banning = dataclasses.replace(self.config.banning, time=60.0, connections_per_ip=4)
        new = dataclasses.replace(
            self.config, ports=(plain, vardiff), banning=banning, connection_timeout=30.0
        )
        running, done, refused = self.apply(new)
        self.assertEqual((running, refused), (new, []))
        self.assertEqual(
            done,
            [
                f"port {PLAIN_PORT.listen}: 1 miner sent the new difficulty",
                f"port {VARDIFF_PORT.listen}: 1 miner sent the new difficulty",
            ],
        )
        set_difficulty = {"id": None, "method": "mining.set_difficulty", "params": [0.0002]}
        self.assertEqual(self.plain.read(), [set_difficulty])
        self.assertEqual(self.vardiff.read(), [{**set_difficulty, "params": [0.01]}])
        self.assertFalse(self.plain.closing or self.vardiff.closing)
        session = self.vardiff.session
        assert session.vardiff is not None
        self.assertEqual((session.difficulty, session.vardiff.since), (0.01, NOW + 30))
        factory = self.listening()[3333]
        self.assertEqual((factory.settings.port, factory.idle_timeout), (plain, 30.0))
        policy = self.harness.server.bans.gatekeeper.policy
        self.assertEqual((policy.ban_duration, policy.connections_per_ip), (60.0, 4))
        self.assertEqual(self.apply(new), (new, [], []))  # the same again: nothing to send

    def test_ports_opened_and_closed(self) -> None:
        """A new port listens; a removed one stops listening and closes its miners, no others."""
        high = PortConfig(listen="tcp:3336:interface=127.0.0.1", diff=1.0)
        new = dataclasses.replace(self.config, ports=(VARDIFF_PORT, high))
        running, done, refused = self.apply(new)
        self.assertEqual((running, refused), (new, []))
        self.assertEqual(done, [f"port {PLAIN_PORT.listen} closed: 1 miner disconnected"])
        self.assertTrue(self.plain.closing)
        self.plain.lose()
        self.assertFalse(self.vardiff.closing)
        self.assertEqual(self.listening()[3336].settings.port, high)
        self.assertEqual(self.service.ports, (VARDIFF_PORT, high))

    def test_floor_and_unsubscribed(self) -> None:
        """The floor a miner set with mining.configure holds; a miner not yet subscribed is sent
        nothing and starts at the new difficulty."""
        self.plain.session.minimum_difficulty = self.plain.session.difficulty = (
            0.5  # as mining.configure left it
        )
        settings = self.harness.server.port_settings(dataclasses.replace(PLAIN_PORT, diff=0.0002))
        self.assertFalse(difficulty.port_changed(cast(Any, self.plain.protocol), settings, NOW))
        self.assertEqual(self.plain.read(), [])
        waiting = self.harness.connect(PLAIN_PORT)
        self.assertFalse(difficulty.port_changed(cast(Any, waiting.protocol), settings, NOW))
        self.assertEqual((waiting.read(), waiting.session.difficulty), ([], 0.0002))


class PortInUseTests(TestCase):
    """A port a reload adds that cannot be bound is refused alone, on the real reactor."""

    async def test_port_in_use(self) -> None:
        """The other changes are made; the answer names the port and why; the port is not run."""
        port = dataclasses.replace(PLAIN_PORT, listen=f"tcp:{free_port()}:interface=127.0.0.1")
        harness = StratumHarness(pool_config(ports=(port,)), cast(task.Clock, reactor))
        config = harness.config
        service = StratumService(harness.server, config.ports, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        self.addCleanup(taken.close)
        busy = PortConfig(listen=f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1", diff=1.0)
        banning = dataclasses.replace(config.banning, time=60.0)
        running, done, refused = await service.apply(
            dataclasses.replace(config, ports=(*config.ports, busy), banning=banning)
        )
        self.assertEqual(running.ports, config.ports)
        self.assertEqual(done, [])
        (problem,) = refused
        self.assertIn(f"port {busy.listen} not opened:", problem)
        self.assertIn("Address already in use", problem)
        self.assertEqual(harness.server.bans.gatekeeper.policy.ban_duration, 60.0)
        self.flushLoggedErrors()


class StartingPoolTests(SynchronousTestCase):
    """A pool still waiting for its daemon takes nothing of a reload, and says so."""

    def test_still_starting(self) -> None:
        """PoolService.apply before the pool is ready: the running configuration, and why."""
        config = pool_config()
        pool = PoolService(config, reactor, lambda message: None, FakeBlockRecords())
        changed = dataclasses.replace(config, connection_timeout=5.0)
        running, notes = self.successResultOf(defer.Deferred.fromCoroutine(pool.apply(changed)))
        self.assertIs(running, config)
        self.assertEqual(notes, ["litecoin is still starting: not reloaded, reload it once it is ready"])
        self.assertIs(pool.config, config)


class RecordingAssembly:
    """A PoolAssembly that records the reloader's calls in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.waiting: defer.Deferred[None] | None = None

    async def add_pool(self, pool: AnyPool) -> tuple[AnyPool | None, Outcome]:
        self.calls.append(f"add {pool.name}")
        return dataclasses.replace(pool, ports=pool.ports[:1]), Outcome(refused=["port tcp:9 not opened: no"])

    async def remove_pool(self, name: str) -> Outcome:
        self.calls.append(f"remove {name}")
        return Outcome(done=[f"pool {name}: 2 miners disconnected"])

    async def change_pool(self, change: PoolChange) -> tuple[AnyPool, Outcome]:
        self.calls.append(f"change {change.name}")
        if self.waiting is not None:
            await self.waiting
        return change.running, Outcome(done=["port tcp:3333: 1 miner sent the new difficulty"])

    def change_settings(self, old: GlobalConfig, new: GlobalConfig) -> tuple[GlobalConfig, Outcome]:
        self.calls.append("settings")
        return new, Outcome()


class ReloaderTests(TestCase):
    """Reloader: refusals, the order of the parts, the answer, the configuration that runs then."""

    def setUp(self) -> None:
        shipped = load_config(SHIPPED_CONF)
        self.running: Config = dataclasses.replace(shipped, directory=Path("/conf"))
        self.read: Config | ConfigErrors = self.running
        self.assembly = RecordingAssembly()
        self.reloader = Reloader(self.assembly, lambda: self.running, self.replace, self.load)

    def replace(self, config: Config) -> None:
        self.running = config

    def load(self, directory: str | os.PathLike[str]) -> Config:
        self.assertEqual(directory, Path("/conf"))
        if isinstance(self.read, ConfigErrors):
            raise self.read
        return self.read

    def reload(self, pool: str | None = None) -> tuple[bool, str]:
        answer = self.successResultOf(defer.Deferred.fromCoroutine(self.reloader.reload(pool)))
        return answer.ok, answer.line()

    def test_refused(self) -> None:
        """A configuration with errors is refused with every error; nothing is applied."""
        before = self.running
        self.read = ConfigErrors(
            ["pools/litecoin.yaml: ports[0].diff: must be > 0", "pools/litecoin.yaml: colour: unknown key"]
        )
        self.assertEqual(
            self.reload(),
            (
                False,
                "error configuration refused, the running one stays: 2 errors: "
                "pools/litecoin.yaml: ports[0].diff: must be > 0; pools/litecoin.yaml: colour: unknown key",
            ),
        )
        self.assertEqual((self.assembly.calls, self.running), ([], before))

    def test_nothing_and_no_such_pool(self) -> None:
        """The same configuration changes nothing; a pool neither running nor read is an error."""
        self.assertEqual(self.reload(), (True, "ok nothing changed"))
        self.assertEqual(self.reload("Litecoin-Regtest"), (True, "ok nothing changed for litecoin"))
        self.assertEqual(self.reload("dogecoin"), (False, "error no pool 'dogecoin' runs or is in /conf"))
        self.assertEqual(self.assembly.calls, [])

    def test_order_and_answer(self) -> None:
        """Removed pools go first, then changed ones, then added ones; the answer lists what was done,
        what was not and what needs a restart; the configuration that runs is what each part runs."""
        (litecoin,) = self.running.pools
        gone = dataclasses.replace(litecoin, name="gone", file="pools/gone.yaml")
        self.running = dataclasses.replace(self.running, pools=(gone, litecoin))
        port = dataclasses.replace(litecoin.ports[0], diff=0.125)
        extra = PortConfig(listen="tcp:9:interface=127.0.0.1", diff=1.0)
        changed = dataclasses.replace(litecoin, ports=(port,), usernames="any")
        added = dataclasses.replace(litecoin, name="new", file="pools/new.yaml", ports=(port, extra))
        settings = self.running.settings
        self.read = dataclasses.replace(
            self.running,
            pools=(changed, added),
            settings=dataclasses.replace(
                settings, threads=3, logging=dataclasses.replace(settings.logging, level="debug")
            ),
        )
        ok, line = self.reload()
        self.assertEqual(self.assembly.calls, ["settings", "remove gone", "change litecoin", "add new"])
        self.assertFalse(ok)
        self.assertEqual(
            line,
            "error reloaded in part: not done: port tcp:9 not opened: no | done: config.yaml: "
            "logging.level: info -> debug; pools/gone.yaml: pool gone removed; pool gone: 2 miners "
            "disconnected; pools/litecoin.yaml: ports[0].diff: 0.0625 -> 0.125; port tcp:3333: 1 miner "
            "sent the new difficulty; pools/new.yaml: pool new added | needs a restart, left as it runs: "
            "config.yaml: threads: none -> 3; pools/litecoin.yaml: usernames: address -> any",
        )
        self.assertEqual([p.name for p in self.running.pools], ["litecoin", "new"])
        self.assertEqual(self.running.pools[0].usernames, "address")
        self.assertEqual(self.running.pools[1].ports, (port,))
        self.assertEqual(
            (self.running.settings.threads, self.running.settings.logging.level), (None, "debug")
        )

    def test_one_at_a_time(self) -> None:
        """A reload asked while one is under way is refused; the first goes on."""
        (litecoin,) = self.running.pools
        self.read = dataclasses.replace(
            self.running, pools=(dataclasses.replace(litecoin, connection_timeout=30.0),)
        )
        self.assembly.waiting = defer.Deferred()
        first = defer.Deferred.fromCoroutine(self.reloader.reload())
        self.assertNoResult(first)
        self.assertEqual(
            self.reload(), (False, "error a reload is under way: ask again once it has answered")
        )
        self.assembly.waiting.callback(None)
        self.assertTrue(self.successResultOf(first).ok)
        self.assertEqual(self.running.pools[0].connection_timeout, 30.0)


class MiningPool:
    """A pool of the whole tree on a real litecoind regtest pair and redis-server, its conf
    folder at hand to edit, and miners mining through it."""

    def __init__(self, test: TestCase, db: int) -> None:
        self.test = test
        self.pair = shared_regtest("reload")
        self.redis_port = shared_redis().port
        self.db = db
        redis(self.redis_port, db, "FLUSHDB")
        self.address = self.pair.new_address()
        self.conf, self.stratum_port = write_conf(
            Path(test.mktemp()),
            self.pair.miner.url,
            RPC_USER,
            RPC_PASSWORD,
            self.address,
            self.redis_port,
            db,
        )
        self.root: NompService | None = None
        host, port = cli.control_address(str(self.conf))  # read now: a test may break config.yaml
        self.control_port = f"{host}:{port}"

    async def start(self) -> NompService:
        root = self.root = start_pool(self.test, self.conf)
        await until(lambda: pool_ready(root))
        self.test.assertEqual(root.fatal_errors, [])
        return root

    @property
    def pool_file(self) -> Path:
        return self.conf / "pools" / "litecoin.yaml"

    def edit(self, **changes: Any) -> dict[str, Any]:
        """Change keys of the pool file; its data."""
        data: dict[str, Any] = yaml.safe_load(self.pool_file.read_text())
        data.update(changes)
        self.pool_file.write_text(yaml.safe_dump(data))
        return data

    async def control(self, *words: str) -> tuple[int, str]:
        """nomp-cli to the conf folder's control port: (exit status, answer)."""
        return await run_nomp_cli("--control", self.control_port, *words)

    async def miner(self, port: int | None = None, rig: str = "rig1") -> Miner:
        miner = Miner(reactor, SCRYPT, f"{self.address}.{rig}", threads=1)
        await connect(miner, "127.0.0.1", self.stratum_port if port is None else port)
        self.test.assertTrue(await miner.authorized)
        miner.start()
        self.test.addCleanup(miner.stop)
        return miner

    def server(self) -> StratumPool:
        assert self.root is not None
        stratum = self.root.getServiceNamed("pool:litecoin").getServiceNamed("stratum")
        return cast(StratumPool, stratum.server)

    def credited(self) -> float:
        """The difficulty credited to the pool's miners in every round."""
        keys = [
            f"{COIN}:shares:roundCurrent",
            *redis(self.redis_port, self.db, "KEYS", f"{COIN}:shares:round[0-9]*"),
        ]
        return sum(float(v) for key in keys for v in redis_hash(self.redis_port, self.db, key).values())


class ReloadWhileMiningTests(TestCase):
    """reloadpool and reload on the whole tree while a miner mines: its connection stays."""

    timeout = 300

    async def test_difficulty_and_banning(self) -> None:
        """reloadpool changes the port's difficulty and the banning settings: the miner is not
        disconnected, is sent the new difficulty, and its shares at it are accepted and credited."""
        pool = MiningPool(self, db=6)
        root = await pool.start()
        miner = await pool.miner()
        await until(lambda: miner.stats.accepted >= 5, timeout=120)
        client = miner.client
        (connection,) = pool.server().connections
        pool.edit(
            ports=[{"listen": f"tcp:{pool.stratum_port}:interface=127.0.0.1", "diff": 0.125}],
            banning={"time": 60, "connections_per_ip": 4},
        )
        status, answer = await pool.control("reloadpool", "litecoin")
        self.assertEqual(status, 0, answer)
        self.assertTrue(answer.startswith("ok reloaded: "), answer)
        for change in (
            "pools/litecoin.yaml: banning.connections_per_ip: none -> 4",
            "pools/litecoin.yaml: banning.time: 600 -> 60",
            "pools/litecoin.yaml: ports[0].diff: 0.0625 -> 0.125",
            f"port tcp:{pool.stratum_port}:interface=127.0.0.1: 1 miner sent the new difficulty",
        ):
            self.assertIn(change, answer)
        await until(lambda: miner.difficulty == 0.125)
        switched = miner.stats.accepted
        await until(lambda: miner.stats.accepted >= switched + 5, timeout=120)
        self.assertIs(miner.client, client)
        assert client is not None
        self.assertFalse(client.closed.called)
        self.assertEqual(list(pool.server().connections), [connection])
        await miner.stop()
        policy = pool.server().bans.gatekeeper.policy
        self.assertEqual((policy.ban_duration, policy.connections_per_ip), (60.0, 4))
        self.assertEqual(root.config.pools[0].ports[0].diff, 0.125)
        await root.stopService()
        stats = miner.stats
        assert stats.rejected is not None
        self.assertEqual(set(stats.rejected) - {"21 job not found"}, set())
        recorded = int(redis_hash(pool.redis_port, pool.db, f"{COIN}:stats")["validShares"])
        self.assertEqual(recorded, stats.accepted)
        # Each share is credited 0.0625 or, under the new difficulty, 0.125.
        at_new = (pool.credited() - 0.0625 * recorded) / 0.0625
        self.assertAlmostEqual(at_new, round(at_new), places=6)
        self.assertGreaterEqual(round(at_new), 5)
        self.assertLessEqual(round(at_new), recorded)

    async def test_bad_reload_refused(self) -> None:
        """A configuration with errors is refused with every error listed; what runs is unchanged
        and the miner mines on at its difficulty."""
        pool = MiningPool(self, db=7)
        root = await pool.start()
        running = root.config
        miner = await pool.miner()
        await until(lambda: miner.stats.accepted >= 2, timeout=120)
        pool.edit(
            ports=[{"listen": f"tcp:{pool.stratum_port}:interface=127.0.0.1", "diff": -1}], colour="red"
        )
        status, answer = await pool.control("reloadpool", "litecoin")
        self.assertEqual(status, 1)
        self.assertTrue(
            answer.startswith("error configuration refused, the running one stays: 2 errors: "), answer
        )
        self.assertIn("pools/litecoin.yaml: ports[0].diff: must be > 0", answer)
        self.assertIn("pools/litecoin.yaml: colour: unknown key", answer)
        (pool.conf / "config.yaml").write_text("redis: [unclosed\n")
        status, answer = await pool.control("reload")
        self.assertEqual(status, 1)
        self.assertIn("config.yaml: invalid YAML", answer)
        self.assertIs(root.config, running)
        before = miner.stats.accepted
        await until(lambda: miner.stats.accepted >= before + 2, timeout=120)
        self.assertEqual(miner.difficulty, 0.0625)
        self.assertEqual(len(pool.server().connections), 1)

    async def test_ports_and_pool_come_and_go(self) -> None:
        """A port added listens and a miner mines on it; the old port removed closes its miner and
        no other; the pool disabled stops with its miners, enabled again it starts and serves."""
        pool = MiningPool(self, db=8)
        root = await pool.start()
        first = await pool.miner()
        second_port = free_port()
        ports = [
            {"listen": f"tcp:{pool.stratum_port}:interface=127.0.0.1", "diff": 0.0625},
            {"listen": f"tcp:{second_port}:interface=127.0.0.1", "diff": 0.125},
        ]
        pool.edit(ports=ports)
        status, answer = await pool.control("reload")
        self.assertEqual(status, 0, answer)
        self.assertIn(f"ports[1] tcp:{second_port}:interface=127.0.0.1 opened", answer)
        second = await pool.miner(second_port, "rig2")
        await until(lambda: second.stats.accepted >= 2 and first.stats.accepted >= 2, timeout=120)
        self.assertEqual(second.difficulty, 0.125)
        pool.edit(ports=ports[1:])
        status, answer = await pool.control("reload")
        self.assertEqual(status, 0, answer)
        self.assertIn(
            f"port tcp:{pool.stratum_port}:interface=127.0.0.1 closed: 1 miner disconnected", answer
        )
        assert first.client is not None and second.client is not None
        await until(lambda: first.client is not None and first.client.closed.called)
        before = second.stats.accepted
        await until(lambda: second.stats.accepted >= before + 2, timeout=120)
        self.assertFalse(second.client.closed.called)

        pool.edit(enabled=False)
        status, answer = await pool.control("reload")
        self.assertEqual(status, 0, answer)
        self.assertIn(
            "pools/litecoin.yaml: pool litecoin removed; pool litecoin: 1 miner disconnected", answer
        )
        await until(lambda: second.client is not None and second.client.closed.called)
        self.assertEqual((root.config.pools, [s.name for s in root if s.name == "pool:litecoin"]), ((), []))
        pool.edit(enabled=True)
        status, answer = await pool.control("reloadpool", "litecoin")
        self.assertEqual(status, 0, answer)
        self.assertIn("pools/litecoin.yaml: pool litecoin added", answer)
        await until(lambda: pool_ready(root))
        third = await pool.miner(second_port, "rig3")
        await until(lambda: third.stats.accepted >= 2, timeout=120)
        self.assertEqual([p.name for p in root.config.pools], ["litecoin"])


class RefusedPartsTests(TestCase):
    """What a reload cannot do is refused alone, said, and left as it runs."""

    timeout = 300

    async def test_daemon_and_address_refused(self) -> None:
        """Daemons that do not answer and an address the daemon refuses are not taken; the banning
        change beside them is; the answer is an error naming both."""
        pool = MiningPool(self, db=10)
        root = await pool.start()
        running = root.config.pools[0]
        dead = f"http://127.0.0.1:{free_port()}"
        pool.edit(
            daemons=[{"url": dead, "user": RPC_USER, "password": RPC_PASSWORD, "timeout": 2}],
            address="rltc1qnotanaddressatall",
            banning={"time": 120},
        )
        status, answer = await pool.control("reloadpool", "litecoin")
        self.assertEqual(status, 1, answer)
        self.assertTrue(
            answer.startswith("error reloaded in part: not done: pools/litecoin.yaml: daemons not changed: "),
            answer,
        )
        self.assertIn(
            "pools/litecoin.yaml: payout not changed: address: rltc1qnotanaddressatall is not a valid",
            answer,
        )
        self.assertIn("pools/litecoin.yaml: banning.time: 600 -> 120", answer)
        now = root.config.pools[0]
        self.assertEqual(
            (now.daemons, now.address, now.banning.time), (running.daemons, running.address, 120.0)
        )
        self.assertEqual(pool.server().bans.gatekeeper.policy.ban_duration, 120.0)
        miner = await pool.miner()  # the pool still makes jobs from its daemon
        await until(lambda: miner.stats.accepted >= 2, timeout=120)

    async def test_token_and_log_level(self) -> None:
        """A token file others may read is refused, the port stays open; a safe one is taken, and
        from then on a connection must give it; the log level follows config.yaml."""
        pool = MiningPool(self, db=11)
        root = await pool.start()
        token = Path(self.mktemp())
        token.write_text("0123456789abcdef0123456789abcdef\n")
        token.chmod(0o644)
        settings = yaml.safe_load((pool.conf / "config.yaml").read_text())
        settings["control"]["token_file"] = str(token)
        settings["logging"]["level"] = "debug"
        (pool.conf / "config.yaml").write_text(yaml.safe_dump(settings))
        status, answer = await pool.control("reload")
        self.assertEqual(status, 1, answer)
        self.assertIn(
            f"config.yaml: control.token_file not changed: the control token file {token} has mode 0644",
            answer,
        )
        self.assertIn("config.yaml: logging.level: warn -> debug", answer)
        self.assertIsNone(root.config.settings.control.token_file)
        token.chmod(0o600)
        status, answer = await pool.control("reload")
        self.assertEqual(status, 0, answer)
        self.assertIn(f"config.yaml: control.token_file: none -> {token}", answer)
        status, answer = await pool.control("status")
        self.assertEqual(
            (status, answer), (1, "error authentication required: the first line must be auth <token>\n")
        )
        status, answer = await run_nomp_cli("-c", str(pool.conf), "loglevel", "info")
        self.assertEqual((status, answer), (0, "ok log level info (was debug)\n"))


class ControlOnTheTreeTests(TestCase):
    """The control port's process commands on the whole tree."""

    timeout = 300

    async def test_status_kick_payments(self) -> None:
        """status names the pool, its miner and Redis; kick disconnects the miner; payments run and
        audit answer their summary; payments disabled by a reload say so."""
        pool = MiningPool(self, db=12)
        await pool.start()
        miner = await pool.miner()
        await until(lambda: miner.stats.accepted >= 3, timeout=120)
        status, answer = await pool.control("status")
        self.assertEqual(status, 0, answer)
        self.assertRegex(
            answer, r"^ok up (\d+m )?\d+s; litecoin \(litecoin-regtest\): ready, 1 miner, .*; Redis up\n$"
        )
        status, answer = await pool.control("payments", "litecoin", "run")
        self.assertEqual(status, 0, answer)
        self.assertRegex(
            answer, r"^ok pool litecoin: immature \d+, confirmed \d+, orphaned \d+, waiting \d+, paid "
        )
        status, answer = await pool.control("payments", "Litecoin-Regtest", "audit")
        self.assertRegex(
            answer, r"^(ok pool litecoin: clean: every difference is zero|error pool litecoin: NOT CLEAN)"
        )
        status, answer = await pool.control("kick", "litecoin", "all")
        self.assertEqual((status, answer), (0, "ok litecoin: 1 miner kicked (all miners)\n"))
        await until(lambda: miner.client is not None and miner.client.closed.called)
        payments = yaml.safe_load(pool.pool_file.read_text())["payments"]
        pool.edit(payments={**payments, "enabled": False})
        status, answer = await pool.control("reloadpool", "litecoin")
        self.assertEqual(status, 0, answer)
        status, answer = await pool.control("payments", "litecoin", "run")
        self.assertEqual(
            (status, answer), (1, "error litecoin: payments are not enabled in pools/litecoin.yaml\n")
        )
        status, answer = await pool.control("payments", "dogecoin", "run")
        self.assertEqual((status, answer), (1, "error no pool 'dogecoin'\n"))


class WebPools:
    """The whole tree on a real litecoind regtest pair and redis-server, with the files of pools
    of two coins at hand (litecoin-regtest and copycoin-regtest, a renamed copy of it), its web
    site on a port of its own and its stats collected once an hour: what the site shows of a pool
    after a reload comes from the reload, not from the collector's timer."""

    def __init__(self, test: TestCase, db: int, *names: str) -> None:
        self.test = test
        pair = shared_regtest("reload")
        self.redis_port = shared_redis().port
        self.db = db
        redis(self.redis_port, db, "FLUSHDB")
        address = pair.new_address()
        self.pools = {
            name: CoinPool(name, f"{name}-regtest", pair.miner.url, address, RPC_USER, RPC_PASSWORD)
            for name in ("litecoin", "copycoin")
        }
        self.conf, self.ports = write_pools_conf(
            Path(test.mktemp()),
            [self.pools[name] for name in names],
            self.redis_port,
            db,
            coins={"copycoin-regtest": renamed_coin("litecoin-regtest", "copycoin-regtest", "rCPY")},
            web={"stats_interval": 3600},
        )
        host, port = cli.control_address(str(self.conf))
        self.control_port = f"{host}:{port}"
        self.base = ""
        self.http = HTTPConnectionPool(reactor)
        test.addCleanup(self.http.closeCachedConnections)

    async def start(self) -> WebService:
        """The tree started and serving; its web service, once it has collected."""
        root = start_pool(self.test, self.conf)
        await until(lambda: pool_ready(root))
        self.test.assertEqual(root.fatal_errors, [])
        web = cast(WebService, root.getServiceNamed("web"))
        await until(lambda: web.collector.collected)
        address = listen_address(root.config.settings.web.listen)
        assert address is not None
        self.base = f"http://127.0.0.1:{address[1]}"
        return web

    def write(self, name: str) -> None:
        """The pool file of ``name``, as write_pools_conf writes it, on a Stratum port of its own."""
        pool = self.pools[name]
        data = yaml.safe_load((SHIPPED_CONF / "pools" / "litecoin.yaml").read_text())
        self.ports[name] = free_port()
        data.update(
            coin=pool.coin,
            address=pool.address,
            daemons=[
                {"url": pool.daemon_url, "user": pool.rpc_user, "password": pool.rpc_password, "timeout": 10}
            ],
            ports=[{"listen": f"tcp:{self.ports[name]}:interface=127.0.0.1", "diff": 0.0625}],
        )
        (self.conf / "pools" / f"{name}.yaml").write_text(yaml.safe_dump(data))

    async def reload(self) -> str:
        status, answer = await run_nomp_cli("--control", self.control_port, "reload")
        self.test.assertEqual(status, 0, answer)
        return answer

    async def get(self, path: str, code: int = 200, schema_path: str | None = None) -> Any:
        """The JSON of an API path, checked against the OpenAPI document."""
        return await ApiClient(self.test, self.base).get(path, code, schema_path)

    async def text(self, path: str) -> tuple[int, str]:
        """A page's (or /metrics') status and text."""
        response = await treq.get(self.base + path, pool=self.http)
        return response.code, await response.text()

    def shown(self, web: WebService) -> list[str]:
        """The pools of the web's snapshot, by name."""
        return [stats.pool.name for stats in web.collector.snapshot.pools]


class ReloadOnTheWebTests(TestCase):
    """A pool a reload adds is on the web site, the API and /metrics at once, and one it removes
    is off them, without a restart."""

    timeout = 300

    async def test_pool_added(self) -> None:
        """A pool file added and reloaded: /api/pools, the pool's API entry and page, /api/stats
        (with what Redis holds of its coin, read at once) and /metrics list it, no restart said."""
        pools = WebPools(self, 13, "litecoin")
        web = await pools.start()
        listed = await pools.get("/api/pools", schema_path="/api/pools")
        self.assertEqual([pool["name"] for pool in listed], ["litecoin"])
        await pools.get("/api/pools/copycoin", 404)
        self.assertEqual((await pools.text("/pools/copycoin"))[0], 404)
        redis(pools.redis_port, pools.db, "HSET", "copycoin-regtest:stats", "validShares", "7")
        pools.write("copycoin")
        answer = await pools.reload()
        self.assertIn("pools/copycoin.yaml: pool copycoin added", answer)
        self.assertNotIn("restart", answer)
        self.assertEqual(pools.shown(web), ["copycoin", "litecoin"])  # listed with the answer

        listed = await pools.get("/api/pools", schema_path="/api/pools")
        self.assertEqual([pool["name"] for pool in listed], ["copycoin", "litecoin"])
        one = await pools.get("/api/pools/copycoin", schema_path="/api/pools/{pool}")
        self.assertEqual((one["coin"], one["symbol"]), ("copycoin-regtest", "rCPY"))
        self.assertEqual([port["port"] for port in one["ports"]], [pools.ports["copycoin"]])
        code, page = await pools.text("/pools/copycoin")
        self.assertEqual(code, 200)
        self.assertIn('<span id="pool-name">copycoin</span>', page)

        # Read by the collection the reload started, an hour before the timer's next.
        def read() -> object:
            stats = web.collector.snapshot.pool("copycoin")
            return stats is not None and stats.counters.get("validShares") == "7"

        await until(read)
        stats = await pools.get("/api/stats", schema_path="/api/stats")
        self.assertEqual(sorted(stats["pools"]), ["copycoin-regtest", "litecoin-regtest"])
        self.assertEqual(stats["pools"]["copycoin-regtest"]["poolStats"]["validShares"], "7")
        miners = await pools.get("/api/pools/copycoin/miners", schema_path="/api/pools/{pool}/miners")
        self.assertEqual(miners["total"], 0)
        _, metrics = await pools.text("/metrics")
        port = pools.ports["copycoin"]
        for line in (
            'nomp_pool_hashrate_hashes_per_second{pool="copycoin"} 0.0',
            f'nomp_stratum_connections{{pool="copycoin",port="{port}"}} 0.0',
        ):
            self.assertIn(line, metrics)

    async def test_pool_removed(self) -> None:
        """A pool file removed and reloaded: the pool is off /api/pools, /api/stats, its API
        entry and page answer 404, and /metrics has no line of it; the other pool stays."""
        pools = WebPools(self, 14, "litecoin", "copycoin")
        web = await pools.start()
        self.assertEqual(pools.shown(web), ["copycoin", "litecoin"])
        self.assertEqual((await pools.text("/pools/copycoin"))[0], 200)
        _, metrics = await pools.text("/metrics")
        self.assertIn('method="getblocktemplate",pool="copycoin"}', metrics)  # its daemon's calls
        (pools.conf / "pools" / "copycoin.yaml").unlink()
        answer = await pools.reload()
        self.assertIn("pools/copycoin.yaml: pool copycoin removed", answer)
        self.assertEqual(pools.shown(web), ["litecoin"])

        listed = await pools.get("/api/pools", schema_path="/api/pools")
        self.assertEqual([pool["name"] for pool in listed], ["litecoin"])
        error = await pools.get("/api/pools/copycoin", 404, schema_path="/api/pools/{pool}")
        self.assertIn("copycoin", error["error"])
        self.assertEqual((await pools.text("/pools/copycoin"))[0], 404)
        self.assertEqual((await pools.text("/pools/litecoin"))[0], 200)
        stats = await pools.get("/api/stats", schema_path="/api/stats")
        self.assertEqual(list(stats["pools"]), ["litecoin-regtest"])
        await web.collector.collect()  # and the next collection does not bring it back
        self.assertEqual(pools.shown(web), ["litecoin"])
        _, metrics = await pools.text("/metrics")
        self.assertNotIn('pool="copycoin"', metrics)
        self.assertIn('nomp_pool_hashrate_hashes_per_second{pool="litecoin"}', metrics)


class HangupTests(TestCase):
    """SIGHUP to ``twistd nomp``: the same reload, in a pool run as its own process."""

    timeout = 300

    def twistd(self, conf: Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "nomp", "-c", str(conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def kill() -> None:
            if process.poll() is None:
                process.kill()
                process.wait()

        self.addCleanup(kill)
        return process

    async def output_until(self, process: subprocess.Popen[str], text: str, limit: float = 120) -> str:
        """The process's output up to a line holding ``text``, read in a thread so that
        the reactor goes on (the miner runs on it)."""

        def read() -> str:
            assert process.stdout is not None
            seen = []
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line:
                    break
                seen.append(line)
                if text in line:
                    return "".join(seen)
            raise AssertionError(f"no {text!r} in the output:\n{''.join(seen)}")

        output: str = await deferToThread(read)
        return output

    async def test_hangup(self) -> None:
        """SIGHUP applies a new difficulty to a mining miner without disconnecting it, and a
        configuration with errors is refused, logged with its errors."""
        pool = MiningPool(self, db=9)
        settings = yaml.safe_load((pool.conf / "config.yaml").read_text())
        settings["logging"]["level"] = "info"
        (pool.conf / "config.yaml").write_text(yaml.safe_dump(settings))
        process = self.twistd(pool.conf)
        await self.output_until(process, "new block")
        miner = await pool.miner()
        await until(lambda: miner.stats.accepted >= 2, timeout=120)

        listen = f"tcp:{pool.stratum_port}:interface=127.0.0.1"
        pool.edit(ports=[{"listen": listen, "diff": 0.125}])
        process.send_signal(signal.SIGHUP)
        output = await self.output_until(process, "reload: ")
        self.assertIn("SIGHUP: reloading the configuration", output)
        self.assertIn("pools/litecoin.yaml: ports[0].diff: 0.0625 -> 0.125", output)
        self.assertIn(f"port {listen}: 1 miner sent the new difficulty", output)
        await until(lambda: miner.difficulty == 0.125)
        before = miner.stats.accepted
        await until(lambda: miner.stats.accepted >= before + 2, timeout=120)
        assert miner.client is not None
        self.assertFalse(miner.client.closed.called)

        pool.edit(ports=[{"listen": listen, "diff": 0}])
        process.send_signal(signal.SIGHUP)
        output = await self.output_until(process, "reload: ")
        self.assertIn(
            "configuration refused, the running one stays: 1 error: pools/litecoin.yaml: ports[0].diff",
            output,
        )
        self.assertFalse(miner.client.closed.called)
        await miner.stop()
        status, answer = await pool.control("shutdown")
        self.assertEqual((status, answer), (0, "ok shutting down\n"))
        self.assertEqual(await deferToThread(process.wait, 30), 0)  # a clean stop
