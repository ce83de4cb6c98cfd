"""Bans and connection limits on a running Stratum server: enforced at
connect, earned by misbehaviour, shared and kept through a real Redis, and
applied to the real client address behind a PROXY protocol proxy."""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable
from ipaddress import ip_network
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.protocol import connectionDone
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from nomp.config import BanningConfig, PortConfig, RateLimitConfig, RedisConfig
from nomp.store.bans import BanStore
from nomp.store.redis import RedisService
from nomp.store.schema import PoolKeys
from nomp.stratum.banning import Ban
from nomp.stratum.errors import OTHER
from nomp.stratum.proxyproto import ProxyProtocolFactory
from nomp.stratum.service import StratumService
from test.fakes import REGTEST_ADDRESS, StratumHarness, mainnet_template, pool_config, submit_params
from test.servers import shared_redis
from test.waiting import until

DB = 6  # of the shared redis-server; each test also has a coin of its own
MINER = "198.51.100.7"
OTHER_MINER = "198.51.100.8"


def banning(**changes: Any) -> BanningConfig:
    """The shipped pool's banning section with some keys changed."""
    return dataclasses.replace(pool_config().banning, **changes)


def harness(clock: task.Clock | None = None, **changes: Any) -> StratumHarness:
    """A harness whose pool has these banning settings."""
    return StratumHarness(pool_config(banning=banning(**changes)), clock or task.Clock())


def refused(harness: StratumHarness, ip: str) -> bool:
    try:
        harness.connect(ip=ip)
    except ConnectionRefusedError:
        return True
    return False


class ConnectionLimitTests(TestCase):
    def test_per_ip_limit_and_slot_freed_on_close(self) -> None:
        """At connections_per_ip one more from that IP is refused, others are not; a close frees a slot."""
        pool = harness(connections_per_ip=2)
        first = pool.connect(ip=MINER)
        pool.connect(ip=MINER)
        self.assertTrue(refused(pool, MINER))
        self.assertFalse(refused(pool, OTHER_MINER))
        first.lose()
        self.assertFalse(refused(pool, MINER))
        self.assertEqual(pool.server.bans.refused["too many connections from this address"], 1)

    def test_total_limit(self) -> None:
        """connections_total caps the pool's connections from all IPs."""
        pool = harness(connections_total=3)
        for i in range(3):
            pool.connect(ip=f"198.51.100.{i + 1}")
        self.assertTrue(refused(pool, "198.51.100.50"))

    def test_connect_rate(self) -> None:
        """More than connect_rate.count attempts within the window are refused until it passes."""
        clock = task.Clock()
        pool = harness(clock, connect_rate=RateLimitConfig(count=3, window=10.0))
        for _ in range(3):
            pool.connect(ip=MINER).lose()
        self.assertTrue(refused(pool, MINER))
        self.assertFalse(refused(pool, OTHER_MINER))
        clock.advance(10.5)
        self.assertFalse(refused(pool, MINER))

    def test_limits_hold_with_bans_disabled(self) -> None:
        """enabled: false turns bans off, not the connection limits."""
        pool = harness(enabled=False, connections_per_ip=1)
        connection = pool.connect(ip=MINER)
        self.assertTrue(refused(pool, MINER))
        for _ in range(100):
            connection.send(b"not json\n")
        self.assertEqual((pool.server.bans.list(), connection.closing), ((), False))

    def test_whitelist(self) -> None:
        """A whitelisted network is neither limited nor banned."""
        pool = harness(connections_per_ip=1, whitelist=(ip_network("198.51.100.0/24"),))
        connection = pool.connect(ip=MINER)
        pool.connect(ip=MINER)
        for _ in range(100):
            connection.send(b"not json\n")
        self.assertEqual(pool.server.bans.list(), ())
        self.assertEqual(pool.server.bans.ban(MINER, None, "by hand"), None)


class BanTests(TestCase):
    def test_malformed_messages(self) -> None:
        """One malformed message over the limit bans the IP: its connections close, others go on."""
        pool = harness(malformed=RateLimitConfig(count=3, window=60.0))
        bad, also_bad = pool.connect(ip=MINER), pool.connect(ip=MINER)
        good = pool.miner(ip=OTHER_MINER)
        for _ in range(3):
            bad.send(b"{oops\n")
        self.assertFalse(bad.closing)
        bad.send(b"[1, 2]\n")
        self.assertTrue(bad.closing and also_bad.closing)
        self.assertFalse(good.closing)
        self.assertTrue(refused(pool, MINER))
        (ban,) = pool.server.bans.list()
        self.assertEqual((ban.ip, ban.reason), (MINER, "more than 3 malformed messages in 60 s"))

    def test_failed_authorizations(self) -> None:
        """Repeated failed mining.authorize bans."""
        pool = harness(failed_auth=RateLimitConfig(count=2, window=60.0))
        connection = pool.connect(ip=MINER)
        connection.subscribe()
        for _ in range(2):
            self.assertFalse(connection.authorize("not-an-address")["result"])
        self.assertFalse(connection.closing)
        connection.authorize("still-not-an-address")
        self.assertTrue(connection.closing)
        self.assertTrue(refused(pool, MINER))

    def test_invalid_share_ratio_and_expiry(self) -> None:
        """Past check_threshold shares, invalid_percent invalid bans for exactly `time` seconds."""
        clock = task.Clock()
        clock.advance(1_000)
        pool = harness(clock, check_threshold=10, invalid_percent=50.0, time=120.0)
        pool.new_job(mainnet_template())
        miner = pool.miner(ip=MINER)
        job = pool.registry.current
        assert job is not None
        for nonce in range(9):  # stale: job not found
            miner.submit(
                [REGTEST_ADDRESS, "nosuchjob", "00000000", f"{job.template.curtime:08x}", f"{nonce:08x}"]
            )
        self.assertFalse(miner.closing)
        # The tenth share, also invalid (bad ntime), reaches the threshold at 100 % invalid.
        miner.submit(submit_params(REGTEST_ADDRESS, job, b"\0\0\0\1", nonce=0, ntime=1))
        self.assertTrue(miner.closing)
        clock.advance(119.9)
        self.assertTrue(refused(pool, MINER))
        clock.advance(0.1)
        self.assertFalse(refused(pool, MINER))

    def test_good_miner_with_some_stale_shares_is_not_banned(self) -> None:
        """Invalid shares below the ratio do not ban; the window expires old evidence."""
        clock = task.Clock()
        pool = harness(clock, check_threshold=4, invalid_percent=50.0, invalid_window=60.0)
        pool.new_job(mainnet_template())
        miner = pool.miner(ip=MINER)
        job = pool.registry.current
        assert job is not None
        for nonce in range(3):
            miner.submit(
                [REGTEST_ADDRESS, "nosuchjob", "00000000", f"{job.template.curtime:08x}", f"{nonce:08x}"]
            )
        clock.advance(61)  # those three fall out of the window
        for nonce in range(3, 6):
            miner.submit(
                [REGTEST_ADDRESS, "nosuchjob", "00000000", f"{job.template.curtime:08x}", f"{nonce:08x}"]
            )
        self.assertEqual((miner.closing, pool.server.bans.list()), (False, ()))

    def test_ban_lift_by_hand(self) -> None:
        """ban_ip closes the IP's connections; lift_ban lets it back; bad input is a ValueError."""
        pool = harness()
        connection = pool.connect(ip=MINER)
        ban = pool.server.bans.ban("::ffff:" + MINER, 30.0, "by hand")
        assert ban is not None
        self.assertEqual((ban.ip, ban.reason, connection.closing), (MINER, "by hand", True))
        self.assertTrue(refused(pool, MINER))
        self.assertTrue(pool.server.bans.lift(MINER))
        self.assertFalse(pool.server.bans.lift(MINER))
        self.assertFalse(refused(pool, MINER))
        self.assertRaises(ValueError, pool.server.bans.ban, "not-an-ip", None, "x")
        self.assertRaises(ValueError, pool.server.bans.lift, "300.1.2.3")
        self.assertRaises(ValueError, pool.server.bans.ban, MINER, 0.0, "x")

    def test_unaddressed_connections_pass(self) -> None:
        """A connection without an IP (a UNIX socket) is neither limited nor judged."""
        pool = harness(connections_per_ip=0, malformed=RateLimitConfig(count=0, window=60.0))
        connection = pool.connect()
        connection.send(b"junk\n")
        self.assertEqual((connection.closing, pool.server.bans.list()), (False, ()))


class SharedBansTests(TestCase):
    """Bans through a real redis-server: kept over a restart, shared by processes."""

    timeout = 60

    def setUp(self) -> None:
        self.redis_server = shared_redis()
        self.keys = PoolKeys.for_coin(f"B{os.urandom(4).hex()}")
        self.config = pool_config(banning=banning(time=600.0))

    async def redis(self) -> RedisService:
        service = RedisService(RedisConfig(port=self.redis_server.port, db=DB))
        service.startService()
        self.addCleanup(service.stopService)
        await until(lambda: service.client() is not None)
        return service

    def process(self, redis: Callable[[], Any], clock: task.Clock) -> StratumHarness:
        """One pool process: a harness whose server shares bans through Redis."""
        return StratumHarness(self.config, clock, ban_store=BanStore(self.keys, redis))

    async def test_ban_survives_restart(self) -> None:
        """A ban written by one process is in force in the next one, until it ends."""
        redis = await self.redis()
        clock = task.Clock()
        clock.advance(1_700_000_000)
        first = self.process(redis.client, clock)
        first.server.bans.ban(MINER, 300.0, "by hand")
        assert first.server.bans.shared is not None
        await first.server.bans.shared.flush()
        self.assertEqual(self.redis_server.command("ZSCORE", self.keys.bans, MINER, db=DB), "1700000300")

        restarted = self.process(redis.client, clock)
        self.assertFalse(refused(restarted, MINER))  # before the first read
        early = restarted.connect(ip=MINER)
        assert restarted.server.bans.shared is not None
        await restarted.server.bans.shared.sync()
        self.assertTrue(early.closing)  # a banned miner that got in first is closed
        self.assertTrue(refused(restarted, MINER))
        self.assertEqual(restarted.server.bans.list(), (Ban(MINER, 1_700_000_300.0, "by hand"),))
        clock.advance(300)
        self.assertFalse(refused(restarted, MINER))
        await restarted.server.bans.shared.sync()  # ended bans leave Redis too
        self.assertEqual(self.redis_server.command("ZCARD", self.keys.bans, db=DB), 0)
        self.assertEqual(self.redis_server.command("HLEN", self.keys.ban_reasons, db=DB), 0)

    async def test_two_processes(self) -> None:
        """A ban earned in one process closes the miner's connection in the other; a lift spreads too."""
        redis = await self.redis()
        clock = task.Clock()
        one, two = self.process(redis.client, clock), self.process(redis.client, clock)
        elsewhere = two.connect(ip=MINER)
        bad = one.connect(ip=MINER)
        for _ in range(self.config.banning.malformed.count + 1):  # type: ignore[union-attr]
            bad.send(b"junk\n")
        self.assertTrue(bad.closing)
        assert one.server.bans.shared is not None and two.server.bans.shared is not None
        await one.server.bans.shared.flush()
        self.assertFalse(elsewhere.closing)
        await two.server.bans.shared.sync()
        self.assertTrue(elsewhere.closing)
        self.assertTrue(refused(two, MINER))
        (ban,) = two.server.bans.list()
        self.assertEqual(ban.reason, "more than 20 malformed messages in 60 s")

        self.assertTrue(two.server.bans.lift(MINER))
        await two.server.bans.shared.flush()
        await one.server.bans.shared.sync()
        self.assertEqual((one.server.bans.list(), refused(one, MINER)), ((), False))

    async def test_redis_away(self) -> None:
        """A ban made with Redis away holds, survives a sync, and is written when Redis returns."""
        redis = await self.redis()
        clock = task.Clock()
        connected = [True]
        pool = self.process(lambda: redis.client() if connected[0] else None, clock)
        shared = pool.server.bans.shared
        assert shared is not None
        connected[0] = False
        pool.server.bans.ban(MINER, 60.0, "by hand")
        await shared.sync()
        self.assertEqual((shared.unsaved, refused(pool, MINER)), (1, True))
        connected[0] = True
        await shared.sync()
        self.assertEqual((shared.unsaved, refused(pool, MINER)), (0, True))
        self.assertEqual(self.redis_server.command("ZCARD", self.keys.bans, db=DB), 1)

    async def test_outage_logged_once(self) -> None:
        """Reads failing at start are one info line, and one when Redis answers; an outage
        after that is one warning however many syncs and saves fail, and one line when
        Redis is back."""
        redis = await self.redis()
        connected = [False]
        clock = task.Clock()
        pool = self.process(lambda: redis.client() if connected[0] else None, clock)
        shared = pool.server.bans.shared
        assert shared is not None
        with capturedLogs() as logged:
            for _ in range(3):
                await shared.sync()
                clock.advance(5)
            connected[0] = True
            await shared.sync()
            connected[0] = False
            pool.server.bans.ban(MINER, 60.0, "by hand")  # its save fails too
            for _ in range(3):
                await shared.sync()
                clock.advance(10)
            connected[0] = True
            await shared.sync()
        subject = f"bans of {self.keys.coin}: Redis"
        away = "BanStoreUnavailable: Redis is not connected"
        self.assertEqual(
            [(e["log_level"].name, formatEvent(e)) for e in logged if e.get("subject") == subject],
            [
                ("info", f"{subject}: waiting for it ({away}); the shared bans are read again every sync"),
                ("info", f"{subject} answered after 15 s"),
                ("warn", f"{subject} unavailable ({away}); 1 ban changes wait to be saved"),
                ("info", f"{subject} is back after 30 s"),
            ],
        )
        self.assertEqual((shared.unsaved, self.redis_server.command("ZCARD", self.keys.bans, db=DB)), (0, 1))

    async def test_a_bug_is_not_an_outage(self) -> None:
        """An error that is not Redis being away (here a TypeError in the client) is logged as
        a failure at every save and read it breaks, never as an outage; the change waits and
        is saved once the bug is gone."""
        redis = await self.redis()
        broken = [True]

        class Buggy:
            """The real client, whose eval has a bug while ``broken``."""

            def __init__(self, client: Any) -> None:
                self.client = client

            def eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
                if broken[0]:
                    raise TypeError("a bug in the client")
                return self.client.eval(script, keys, args)

        pool = self.process(lambda: Buggy(redis.client()), task.Clock())
        shared = pool.server.bans.shared
        assert shared is not None
        with capturedLogs() as logged:
            await shared.sync()  # a read
            pool.server.bans.ban(MINER, 60.0, "by hand")  # a save
            await shared.sync()  # the save again; the read waits for it
        self.assertEqual(
            len(self.flushLoggedErrors(TypeError)), 3
        )  # the read, the save at the ban and at the sync
        about_redis = [e for e in logged if e.get("subject") == shared.outage.subject]
        self.assertEqual([e["log_level"].name for e in about_redis], ["critical"] * 3)
        self.assertFalse(shared.outage.down)
        self.assertEqual((shared.unsaved, refused(pool, MINER)), (1, True))
        broken[0] = False
        await shared.sync()
        self.assertEqual((shared.unsaved, self.redis_server.command("ZCARD", self.keys.bans, db=DB)), (0, 1))


# PROXY protocol sessions over real sockets.


class LineClient(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.made: defer.Deferred[None] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


def v1_header(source: str, port: int) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 3333\r\n".encode()


def v2_header(source: str, port: int) -> bytes:
    addresses = bytes(map(int, source.split("."))) + bytes([127, 0, 0, 1]) + struct.pack("!HH", port, 3333)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


class ProxyProtocolSessionTests(TestCase):
    """Miners behind a PROXY-speaking proxy on 127.0.0.1: bans hit their own addresses."""

    timeout = 30

    async def listen(self) -> tuple[StratumHarness, int]:
        """A StratumService whose one port is configured for the PROXY protocol from 127.0.0.1."""
        port_config = PortConfig(
            listen="tcp:0:interface=127.0.0.1", diff=1.0, proxy_protocol=(ip_network("127.0.0.1"),)
        )
        pool = StratumHarness(
            pool_config(
                ports=(port_config,), banning=banning(malformed=RateLimitConfig(count=2, window=60.0))
            ),
            task.Clock(),
        )
        service = StratumService(pool.server, pool.config.ports, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        (listening,) = [s for s in service if isinstance(s, StreamServerEndpointService)]
        self.assertIsInstance(listening.factory, ProxyProtocolFactory)
        waiting = listening._waitingForPort
        assert waiting is not None  # set by startService
        port = await waiting
        return pool, port.getHost().port

    async def open(self, port: int, header: bytes) -> LineClient:
        client = LineClient()
        reactor.connectTCP("127.0.0.1", port, protocol.ClientFactory.forProtocol(lambda: client))  # type: ignore[arg-type]
        await client.made
        self.addCleanup(lambda: client.transport.abortConnection() if not client.lost.called else None)  # type: ignore[union-attr]
        client.send(header)
        return client

    async def session(self, make_header: Callable[[str, int], bytes]) -> None:
        pool, port = await self.listen()
        junk = await self.open(port, make_header(MINER, 50000))
        honest = await self.open(port, make_header(OTHER_MINER, 50001))
        honest.send(b'{"id":1,"method":"mining.subscribe","params":[]}\n')
        await until(lambda: b'"id":1' in honest.received)
        for _ in range(3):
            junk.send(b"\x00garbage\n")
        await junk.lost
        self.assertEqual([ban.ip for ban in pool.server.bans.list()], [MINER])  # not the proxy's 127.0.0.1
        self.assertIn(f'"error":[{OTHER},"invalid JSON"'.encode(), junk.received)
        again = await self.open(port, make_header(MINER, 50002))
        await again.lost  # refused once the header names it
        self.assertEqual(again.received, b"")
        honest.send(b'{"id":2,"method":"mining.subscribe","params":[]}\n')
        await until(lambda: b'"id":2' in honest.received)
        self.assertFalse(honest.lost.called)
        self.assertEqual(sorted(p.ip for p in pool.server.connections), [OTHER_MINER])

    async def test_v1(self) -> None:
        await self.session(v1_header)

    async def test_v2(self) -> None:
        await self.session(v2_header)
