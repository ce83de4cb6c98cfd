"""InstanceLeaseService against a real redis-server: leasing, renewing,
losing and giving back the process's extranonce1 instance byte.

The service's timers run on a task.Clock; Redis is reached on the real
reactor, and each test has a key namespace of its own."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import reactor, task
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp.config import load_config
from nomp.store.client import RedisClient
from nomp.store.instance import INSTANCES, InstanceLeaseService
from nomp.store.redis import RedisService
from nomp.store.schema import InstanceKeys
from nomp.stratum.stratumpool import StratumPool
from nomp.tap import build_service
from test.fakes import StratumHarness, mainnet_template, pool_config
from test.redisservice import connected_redis_service
from test.servers import RedisServer, shared_redis
from test.test_config_paths import SHIPPED_CONF
from test.test_stratum_protocol import NOW, PORTS, WORKER
from test.waiting import until

DB = 11  # of the shared redis-server; each test also has a namespace of its own
TTL = 30.0
RENEW = 5.0


class LeaseTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = shared_redis()
        self.keys = InstanceKeys(f"T{os.urandom(4).hex()}")
        self.clock = task.Clock()
        self.clock.advance(NOW)

    async def connect(self, server: RedisServer | None = None) -> RedisService:
        """nomp's RedisService, started and connected."""
        return await connected_redis_service(self, (server or self.server).port, DB)

    def lease_service(
        self,
        redis: Callable[[], RedisClient | None],
        seed: int = 1,
        configured: int | None = None,
        token: str | None = None,
    ) -> tuple[InstanceLeaseService, list[int | None]]:
        """A service and the list of what its listener was told."""
        service = InstanceLeaseService(
            redis,
            self.clock,
            configured=configured,
            keys=self.keys,
            ttl=TTL,
            renew_interval=RENEW,
            rng=random.Random(seed),
            token=token,
        )
        told: list[int | None] = []
        service.add_listener(told.append)
        return service, told

    def redis(self, *args: str | int | float) -> Any:
        return self.server.command(*args, db=DB)

    def holder(self, instance: int) -> str | None:
        value: str | None = self.redis("GET", self.keys.lease(instance))
        return value


class LeaseTests(LeaseTestCase):
    async def test_two_processes_get_different_bytes(self) -> None:
        """Two processes starting from the same random byte lease two different ones."""
        redis = await self.connect()
        first, told_first = self.lease_service(redis.client, seed=5, token="first")
        second, told_second = self.lease_service(redis.client, seed=5, token="second")
        await first.step()
        await second.step()
        assert first.held is not None and second.held is not None
        self.assertNotEqual(first.held, second.held)
        self.assertEqual(second.held, (first.held + 1) % INSTANCES)  # the next one free
        self.assertEqual((told_first, told_second), ([first.held], [second.held]))
        self.assertEqual(self.holder(first.held), "first")
        self.assertEqual(self.holder(second.held), "second")
        self.assertTrue(0 < self.redis("PTTL", self.keys.lease(first.held)) <= TTL * 1000)

    async def test_every_byte_held(self) -> None:
        """With all 256 held, none is leased (the pools wait) until one is free."""
        redis = await self.connect()
        for n in range(INSTANCES):
            self.redis("SET", self.keys.lease(n), "someone", "PX", 60000)
        service, told = self.lease_service(redis.client)
        await service.step()
        self.assertEqual((service.held, service.instance, told), (None, None, []))
        self.redis("DEL", self.keys.lease(200))
        await service.step()
        self.assertEqual((service.held, told), (200, [200]))

    async def test_renewal(self) -> None:
        """Each renewal puts the key's time to live back to the TTL and moves the deadline on."""
        redis = await self.connect()
        service, told = self.lease_service(redis.client, token="ours")
        await service.step()
        held = service.held
        assert held is not None
        self.redis("PEXPIRE", self.keys.lease(held), 2000)
        self.clock.advance(TTL - 1)
        await service.step()
        self.assertGreater(self.redis("PTTL", self.keys.lease(held)), 2000)
        self.clock.advance(TTL - 1)  # past the first deadline, not the renewed one
        self.assertEqual((service.instance, told), (held, [held]))
        # The key expired in Redis and nobody leased it: the renewal takes it again.
        self.redis("DEL", self.keys.lease(held))
        await service.step()
        self.assertEqual((service.held, self.holder(held), told), (held, "ours", [held]))

    async def test_unrenewed_lease_lapses(self) -> None:
        """Redis unreachable for the TTL: the pools are told there is no byte (new miners wait);
        when Redis answers and the key is still ours, the same byte is back."""
        redis = await self.connect()
        reachable = True
        service, told = self.lease_service(lambda: redis.client() if reachable else None)
        await service.step()
        held = service.held
        reachable = False
        await service.step()  # fails: nothing changes before the TTL
        self.clock.advance(TTL - 0.5)
        self.assertEqual(told, [held])
        self.clock.advance(0.5)
        self.assertEqual((service.instance, told), (None, [held, None]))
        reachable = True
        await service.step()
        self.assertEqual((service.instance, told), (held, [held, None, held]))

    async def test_lost_lease_repartitions(self) -> None:
        """Another process holds our byte now: a new one is leased and the pool's miners moved to
        it (set_extranonce for the extranonce-subscribed, reconnect and close for the others)."""
        redis = await self.connect()
        service, told = self.lease_service(redis.client, seed=9, token="ours")
        await service.step()
        held = service.held
        assert held is not None
        stratum = StratumHarness(pool_config(ports=PORTS), self.clock)
        stratum.new_job(mainnet_template())
        stratum.server.set_instance(held)
        service.add_listener(stratum.server.set_instance)
        movable = stratum.miner(WORKER)
        movable.request("mining.extranonce.subscribe")
        plain = stratum.miner(WORKER)
        old = movable.session.extranonce1
        assert old is not None
        self.assertEqual(old[0], held)
        # Redis lost the key (a restart without persistence) and another process leased the byte.
        self.redis("SET", self.keys.lease(held), "another", "PX", 60000)
        await service.step()
        new_byte = service.held
        assert new_byte is not None
        self.assertNotEqual(new_byte, held)
        self.assertEqual(told, [held, None, new_byte])
        self.assertEqual((self.holder(held), self.holder(new_byte)), ("another", "ours"))
        set_extranonce, notify = movable.read()
        new = movable.session.extranonce1
        assert new is not None
        self.assertEqual(new[0], new_byte)
        self.assertEqual(set_extranonce["params"], [new.hex(), 4])
        self.assertEqual(notify["params"][8], True)
        self.assertEqual(plain.read(), [{"id": None, "method": "client.reconnect", "params": []}])
        self.assertTrue(plain.closing)

    async def test_configured_byte_is_claimed(self) -> None:
        """A configured byte is held from the start without Redis, and taken from a process that
        leased it, which moves to another."""
        redis = await self.connect()
        leaser, leaser_told = self.lease_service(redis.client, seed=3, token="leaser")
        await leaser.step()
        byte = leaser.held
        assert byte is not None
        configured, configured_told = self.lease_service(redis.client, configured=byte, token="configured")
        self.assertEqual(configured.instance, byte)  # before any step
        await configured.step()
        self.assertEqual(self.holder(byte), "configured")
        await leaser.step()
        self.assertNotEqual(leaser.held, byte)
        self.assertEqual(leaser_told, [byte, None, leaser.held])
        await configured.step()  # nobody else holds it now
        self.assertEqual((configured.instance, configured_told), (byte, []))

    async def test_released_at_stop(self) -> None:
        """Started, the service leases on its timer; stopped, it deletes its key (only its own)."""
        redis = await self.connect()
        service, _ = self.lease_service(redis.client, token="ours")
        service.startService()
        self.clock.advance(0)
        await until(lambda: service.held is not None)
        held = service.held
        assert held is not None
        self.assertEqual(self.holder(held), "ours")
        await service.stopService()
        self.assertIsNone(self.holder(held))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Someone else's key is left alone.
        other, _ = self.lease_service(redis.client, token="other")
        await other.step()
        other_held = other.held
        assert other_held is not None
        self.redis("SET", self.keys.lease(other_held), "third", "PX", 60000)
        other.startService()
        await other.stopService()
        self.assertEqual(self.holder(other_held), "third")


class RedisRestartTests(LeaseTestCase):
    async def test_restart_keeps_the_byte(self) -> None:
        """A redis-server restarted without its data: the next renewal takes the same byte again,
        and the miners notice nothing."""
        server = RedisServer().start()
        self.addCleanup(server.stop)
        redis = await self.connect(server)
        service, told = self.lease_service(redis.client, token="ours")
        await service.step()
        held = service.held
        assert held is not None
        server.restart()
        key = self.keys.lease(held)
        self.assertIsNone(server.command("GET", key, db=DB))

        async def renewed() -> bool:
            await service.step()
            return bool(server.command("GET", key, db=DB) == "ours")

        for _ in range(200):
            if await renewed():
                break
            await task.deferLater(reactor, 0.1)
        self.assertEqual(server.command("GET", key, db=DB), "ours")
        self.assertEqual((service.held, told), (held, [held]))


class StartTests(LeaseTestCase):
    async def test_waiting_for_redis_at_start_is_not_a_warning(self) -> None:
        """Before Redis first answers (the pool starting) the failing steps are one info line;
        after it has answered, a failure is a warning."""
        redis = await self.connect()
        connected = [False]
        service, told = self.lease_service(lambda: redis.client() if connected[0] else None)
        with capturedLogs() as logged:
            await service.step()
            await service.step()
            connected[0] = True
            await service.step()
            connected[0] = False
            await service.step()
            await service.step()
        held = service.held
        assert held is not None
        away = "RedisUnavailable: Redis is not connected"
        self.assertEqual(
            [(e["log_level"].name, formatEvent(e)) for e in logged],
            [
                ("info", f"instance byte: Redis: waiting for it ({away})"),
                ("info", f"instance byte {held} leased (key {self.keys.lease(held)})"),
                ("info", "instance byte: Redis answered after 0 s"),
                ("warn", f"instance byte: Redis unavailable ({away})"),
            ],
        )
        self.assertEqual(told, [held])

    async def test_a_bug_is_not_an_outage(self) -> None:
        """An error in a step that is not Redis being away (here a TypeError from the client)
        is logged as a failure every time, never as an outage."""

        class Buggy:
            def eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
                raise TypeError("a bug in the client")

        service, told = self.lease_service(Buggy)
        with capturedLogs() as logged:
            await service.step()
            await service.step()
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 2)
        self.assertEqual([e["log_level"].name for e in logged], ["critical", "critical"])
        self.assertFalse(service.outage.down)
        self.assertEqual((service.held, told), (None, []))


class ProvisionalByteTests(LeaseTestCase):
    """Without a configured byte, one is used from the start, before Redis answers; a real
    redis-server decides then whether it stays."""

    def setUp(self) -> None:
        super().setUp()
        self.state = Path(self.mktemp())
        self.connected = False

    def started(
        self, redis: RedisService | None, remembered: int | None = None, **options: Any
    ) -> tuple[InstanceLeaseService, list[int | None]]:
        """A started service whose Redis is reachable once ``self.connected``, with the state file
        holding ``remembered`` (or absent); what its listener was told."""
        if remembered is not None:
            self.state.write_text(f"{remembered}\n")
        service = InstanceLeaseService(
            lambda: redis.client() if redis is not None and self.connected else None,
            self.clock,
            state_file=str(self.state),
            keys=self.keys,
            ttl=TTL,
            renew_interval=RENEW,
            rng=random.Random(1),
            token="ours",
            **options,
        )
        told: list[int | None] = []
        service.add_listener(told.append)
        service.startService()
        self.addCleanup(service.stopService)
        return service, told

    async def step_at(self, service: InstanceLeaseService, seconds: float) -> None:
        """Let the service's timer run its next step, and wait for it."""
        self.clock.advance(seconds)
        if service._step is not None:
            await service._step

    async def test_byte_at_once_while_redis_is_down(self) -> None:
        """Redis unreachable at start: the listeners have the byte held last at once, and keep
        it through failing steps (an info line, once, saying which byte is used)."""
        with capturedLogs() as logged:
            service, told = self.started(None, remembered=42)
            self.assertEqual((service.instance, service.held, told), (42, None, [42]))
            for _ in range(5):
                await self.step_at(service, 1.0)
        self.assertEqual(told, [42])
        self.assertEqual(
            [(e["log_level"].name, formatEvent(e)) for e in logged],
            [
                ("info", "instance byte 42 used until Redis answers (the byte this host held last)"),
                (
                    "info",
                    "instance byte: Redis: waiting for it (RedisUnavailable: Redis is not connected); "
                    "byte 42 is used meanwhile",
                ),
            ],
        )

    async def test_the_same_byte_leased_when_free(self) -> None:
        """Redis answers and the byte used is free: it is leased, and nothing new is published."""
        redis = await self.connect()
        service, told = self.started(redis, remembered=42)
        await self.step_at(service, 0)
        self.connected = True
        await self.step_at(service, 1.0)
        self.assertEqual((service.held, service.instance, told), (42, 42, [42]))
        self.assertEqual(self.holder(42), "ours")
        self.assertEqual(self.state.read_text(), "42\n")

    async def test_a_byte_held_by_another_is_left(self) -> None:
        """Redis answers and another process holds the byte used: the next free one is leased,
        published, and kept for the next start; a miner that subscribed meanwhile is moved."""
        redis = await self.connect()
        self.redis("SET", self.keys.lease(42), "another", "PX", 60000)
        stratum = StratumHarness(pool_config(ports=PORTS), self.clock)
        stratum.new_job(mainnet_template())
        stratum.server.set_instance(None)  # as the tree builds it: subscribes wait for a byte
        service, told = self.started(redis, remembered=42)
        service.add_listener(stratum.server.set_instance)
        stratum.server.set_instance(service.instance)
        miner = stratum.miner(WORKER)  # served before Redis answers
        miner.request("mining.extranonce.subscribe")
        first = miner.session.extranonce1
        assert first is not None
        self.assertEqual(first[0], 42)
        self.connected = True
        await self.step_at(service, 0)
        self.assertEqual((service.held, told), (43, [42, 43]))
        self.assertEqual((self.holder(42), self.holder(43)), ("another", "ours"))
        self.assertEqual(self.state.read_text(), "43\n")
        set_extranonce, _ = miner.read()
        moved = miner.session.extranonce1
        assert moved is not None
        self.assertEqual((set_extranonce["method"], moved[0]), ("mining.set_extranonce", 43))

    async def test_random_byte_without_state(self) -> None:
        """With no state file yet (or one holding no byte), a byte chosen at random is used, and
        the byte leased is written to the file."""
        redis = await self.connect()
        self.state.write_text("not a byte")
        with capturedLogs() as logged:
            service, told = self.started(redis)
        (byte,) = told
        assert byte is not None
        self.assertEqual(byte, random.Random(1).randrange(INSTANCES))
        self.assertIn("holds no byte", formatEvent(logged[0]))
        self.connected = True
        await self.step_at(service, 0)
        self.assertEqual((service.held, told), (byte, [byte]))
        self.assertEqual(self.state.read_text(), f"{byte}\n")

    async def test_configured_byte_needs_no_state(self) -> None:
        """A configured byte is used as it is: the state file is neither read nor written."""
        redis = await self.connect()
        self.connected = True
        service, told = self.started(redis, remembered=42, configured=7)
        await self.step_at(service, 0)
        self.assertEqual((service.instance, told), (7, []))
        self.assertEqual(self.state.read_text(), "42\n")


class WiringTests(SynchronousTestCase):
    """build_service: the lease service sits between Redis and the pools, and
    every pool's StratumPool hears from it and is known to the control port."""

    def tree(self, instance: int | None) -> tuple[InstanceLeaseService, StratumPool]:
        config = load_config(SHIPPED_CONF)
        config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, instance=instance))
        root = build_service(config, reactor, exit_with=lambda status: None, shutdown=lambda: None)
        self.assertEqual(
            [service.name for service in root],
            ["redis", "instance", "hashing", "control", "pool:litecoin", "web"],
        )
        lease = root.getServiceNamed("instance")
        control = next(iter(root.getServiceNamed("control")))  # the control port's listener
        assert isinstance(lease, InstanceLeaseService) and isinstance(control, StreamServerEndpointService)
        stratum = control.factory.servers["litecoin"]
        self.assertEqual(len(lease._listeners), 1)  # the pools' assembly, which tells every pool
        return lease, stratum

    def test_leased(self) -> None:
        """Without instance in config.yaml, the pools have no byte until the lease service
        starts, and one as soon as it does, Redis or not."""
        lease, stratum = self.tree(None)
        self.assertIsNone(lease.instance)
        self.assertIsNone(stratum.subscriptions.extranonces.instance)
        lease.startService()
        stopped = lease.stopService()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertIsNotNone(lease.instance)
        self.assertEqual(stratum.subscriptions.extranonces.instance, lease.instance)

    def test_configured(self) -> None:
        """With instance in config.yaml, the pools use it from the start."""
        lease, stratum = self.tree(9)
        self.assertEqual((lease.instance, stratum.subscriptions.extranonces.instance), (9, 9))
