"""Two pool processes behind a real HAProxy, as an operator who outgrew one
pool process runs them: ``twistd -n nomp`` twice on one Redis and one
litecoind regtest, HAProxy (the Debian package) in front sending the PROXY
protocol v2, miners connecting to HAProxy only.

Each miner connects from an address of its own on loopback (127.0.0.11 and
up; HAProxy itself reaches the pools from 127.0.0.1), so a pool that names
the miner's address and port has read them from the PROXY header.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from nomp.hashing import ALGORITHMS
from nomp.miner import Miner, StratumClient
from test.haproxy import HAProxy, haproxy_program
from test.poolconf import write_conf
from test.servers import RPC_PASSWORD, RPC_USER, RedisServer, free_port, shared_regtest

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
COIN = "litecoin-regtest"
POOL = "litecoin"  # the pool file's name, as the control port knows it
SCRYPT = ALGORITHMS["scrypt"]
# About 8,000 scrypt hashes a share: a few shares a second from four test
# miners. On regtest every share is a block as well.
PORT_DIFFICULTY = 0.125
MINERS = 4
MINER_ADDRESSES = [f"127.0.0.{11 + i}" for i in range(MINERS)]
BANNED_ADDRESS = "127.0.0.2"
FAILED_AUTH_LIMIT = 3  # more refused mining.authorize than this in the window bans the IP
RECONNECT_DELAY = 0.2  # seconds a miner waits before connecting again
MOVE_TIMEOUT = 20.0  # seconds the killed pool's miners get to mine on the other one

# ``IP:PORT (workers; user agent; extranonce1 HEX)`` of the control port's ``miners``.
_LISTED = re.compile(
    r"(\d+\.\d+\.\d+\.\d+):(\d+) \(([^;()]*); [^;()]*; extranonce1 ([0-9a-f]+|not subscribed)\)"
)


@dataclass(frozen=True, slots=True)
class Listed:
    """A connection as a pool's control port lists it."""

    ip: str
    port: int
    workers: str
    extranonce1: str


def listed_connections(reply: str) -> list[Listed]:
    return [Listed(m[1], int(m[2]), m[3], m[4]) for m in _LISTED.finditer(reply)]


class PoolProcess:
    """One pool as its own process, ``twistd -n nomp -c FOLDER``: its
    control port, its PROXY-protocol Stratum port, its log."""

    def __init__(self, name: str, folder: Path, stratum_port: int) -> None:
        self.name = name
        self.folder = folder.resolve()
        self.stratum_port = stratum_port
        settings = yaml.safe_load((folder / "config.yaml").read_text())
        self.control_port = int(settings["control"]["listen"].split(":")[1])
        self.log_path = folder / "pool.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "nomp", "-c", str(self.folder)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def control(self, command: str) -> str:
        """One command on the control port, its one-line answer (blocking)."""
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=10) as s:
            s.sendall(command.encode() + b"\n")
            with s.makefile("rb") as answer:
                return answer.readline().decode().rstrip("\r\n")

    async def ask(self, command: str) -> str:
        """``control`` off the reactor thread, so the test's miners go on meanwhile."""
        answer: str = await deferToThread(self.control, command)
        return answer

    async def ready(self) -> bool:
        if not self.running:
            raise AssertionError(f"pool {self.name} exited:\n{self.log()}")
        try:
            return "ready" in await self.ask("pools")
        except OSError:
            return False

    async def miners(self, target: str = "all") -> list[Listed]:
        return listed_connections(await self.ask(f"miners {POOL} {target}"))

    async def bans(self) -> str:
        return await self.ask(f"bans {POOL}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        """SIGTERM, as systemd stops it: the pool drains its records to Redis first."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def kill_if_running(self) -> None:
        if self.running:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 60.0) -> None:
    """Until ``check()`` holds (it may be a coroutine function); fails naming
    ``what`` after ``timeout`` seconds."""
    waited = 0.0
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if waited > timeout:
            raise AssertionError(f"timed out waiting until {what}")
        await task.deferLater(reactor, 0.1)
        waited += 0.1


class QuietableMiner(Miner):
    """nomp's miner, which can also stop submitting while its connection stays open."""

    async def quiet(self) -> None:
        """Stop grinding and wait for the answer to every share sent."""
        self._running = False
        await defer.DeferredList(self._grinders)
        await defer.DeferredList(self._replies)


@dataclass
class Link:
    """One connection of a miner: what the pool gave it and what it mined there."""

    miner: QuietableMiner
    client: StratumClient
    local: tuple[str, int]  # the miner's own address and port: what the PROXY header names
    dropped: bool = False  # closed by the pool side (not by the miner's own stop)

    @property
    def extranonce1(self) -> str:
        return self.miner.extranonce1.hex()


async def connect_from(miner: Miner, source: str, host: str, port: int) -> StratumClient:
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=10, bindAddress=(source, 0))
    client = await endpoint.connect(Factory.forProtocol(lambda: StratumClient(miner)))
    assert isinstance(client, StratumClient)
    return client


class ReconnectingMiner:
    """A miner as real ones behave: when its connection drops it connects
    again (to the same address: HAProxy's) after a short wait, and mines on."""

    def __init__(self, user: str, source: str, host: str, port: int) -> None:
        self.user = user
        self.source = source
        self.host = host
        self.port = port
        self.links: list[Link] = []
        self.failed_attempts = 0
        self._stopping = False
        self._connected: defer.Deferred[None] = defer.Deferred()
        self._running: defer.Deferred[None] | None = None
        self._stopped = False

    def start(self) -> defer.Deferred[None]:
        """Fires once the first connection is authorized and mining."""
        self._running = defer.Deferred.fromCoroutine(self._run())
        return self._connected

    @property
    def current(self) -> Link:
        return self.links[-1]

    @property
    def connected(self) -> bool:
        return bool(self.links) and not self.current.client.closed.called

    def accepted(self, links: list[Link] | None = None) -> int:
        return sum(link.miner.stats.accepted for link in self.links if links is None or link in links)

    def rejected(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for link in self.links:
            assert link.miner.stats.rejected is not None
            total.update(link.miner.stats.rejected)
        return total

    async def _run(self) -> None:
        while not self._stopping:
            miner = QuietableMiner(reactor, SCRYPT, self.user)
            client: StratumClient | None = None
            try:
                client = await connect_from(miner, self.source, self.host, self.port)
                authorized = await miner.authorized
            except Exception:
                # HAProxy took the connection but had no pool for it, or the pool closed it.
                if client is not None and client.transport is not None:
                    client.transport.loseConnection()
                self.failed_attempts += 1
                await task.deferLater(reactor, RECONNECT_DELAY)
                continue
            if not authorized:
                raise AssertionError(f"{self.user} was not authorized")
            if self.stopping():  # stopped while this connection was being made
                assert client.transport is not None
                client.transport.loseConnection()
                return
            assert client.transport is not None
            host = cast(IPv4Address, client.transport.getHost())
            link = Link(miner, client, (host.host, host.port))
            self.links.append(link)
            miner.start()
            if not self._connected.called:
                self._connected.callback(None)
            await client.closed
            if not self._stopping:
                link.dropped = True
                await miner.stop()  # the grinding threads; the connection is gone already
                await task.deferLater(reactor, RECONNECT_DELAY)

    def stopping(self) -> bool:
        return self._stopping

    async def stop(self) -> None:
        """Stop mining, wait for the answers to the shares sent, disconnect (once)."""
        if self._stopped:
            return
        self._stopping = True
        if self.links:
            await self.current.miner.stop()
        if self._running is not None:
            await self._running
        self._stopped = True


class LineProbe(LineOnlyReceiver):
    """A bare Stratum client: sends lines, keeps every line it gets."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.closed: defer.Deferred[None] = defer.Deferred()

    def send(self, request_id: int, method: str, params: list[Any]) -> None:
        self.sendLine(json.dumps({"id": request_id, "method": method, "params": params}).encode())

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(json.loads(line))

    @property
    def replies(self) -> dict[int, dict[str, Any]]:
        """The answers to our requests by id (the notifications left out)."""
        return {line["id"]: line for line in self.lines if line.get("id") is not None}

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)


async def probe_from(source: str, host: str, port: int) -> LineProbe:
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=10, bindAddress=(source, 0))
    probe = await endpoint.connect(Factory.forProtocol(LineProbe))
    assert isinstance(probe, LineProbe)
    return probe


def hashrate_members(redis: RedisServer) -> list[tuple[float, str, str]]:
    """(difficulty, worker, unique id) of every ``<coin>:hashrate`` member;
    the difficulty is negative for an invalid share."""
    members = []
    for member in redis.command("ZRANGE", f"{COIN}:hashrate", 0, -1):
        difficulty, rest = member.split(":", 1)
        worker, _ms, unique = rest.rsplit(":", 2)
        members.append((float(difficulty), worker, unique))
    return members


def recorded_shares(redis: RedisServer, worker: str) -> tuple[int, int]:
    """(valid, invalid) shares of ``worker`` in ``<coin>:hashrate``."""
    shares = [d for d, w, _ in hashrate_members(redis) if w == worker]
    return sum(1 for d in shares if d > 0), sum(1 for d in shares if d < 0)


def assert_every_answer_recorded(test: TestCase, redis: RedisServer, miners: list[ReconnectingMiner]) -> int:
    """Redis holds each share every miner was told was accepted or refused, once, and
    the pool's counters agree; a refusal other than a stale job fails ``test``.
    The number of shares accepted."""
    for miner in miners:
        rejected = miner.rejected()
        test.assertEqual(set(rejected) - {"21 job not found"}, set(), miner.user)  # stale at a new block
        test.assertEqual(recorded_shares(redis, miner.user), (miner.accepted(), sum(rejected.values())))
    accepted = sum(m.accepted() for m in miners)
    rejected_total = sum(sum(m.rejected().values()) for m in miners)
    flat = redis.command("HGETALL", f"{COIN}:stats")
    stats = dict(zip(flat[::2], flat[1::2], strict=True))
    test.assertEqual(int(stats["validShares"]), accepted)
    test.assertEqual(int(stats.get("invalidShares", 0)), rejected_total)
    return accepted


async def stop_miners(miners: list[ReconnectingMiner]) -> None:
    for miner in miners:
        await miner.stop()


class HAProxyInFrontOfTwoPoolsTests(TestCase):
    """Miners spread over both pools, a ban made by one holds on the other,
    a killed pool's miners mine on the other, and Redis counts every share
    the miners were told was accepted, once."""

    timeout = 300

    def setUp(self) -> None:
        if haproxy_program() is None:
            raise SkipTest("haproxy is not installed (scripts/setup.sh installs it with NOMP_TEST_TOOLS=1)")

    def start_pool(self, name: str, pair_url: str, address: str, redis_port: int) -> PoolProcess:
        stratum_port = free_port()
        folder, _ = write_conf(
            Path(self.mktemp()),
            pair_url,
            RPC_USER,
            RPC_PASSWORD,
            address,
            redis_port,
            web={"enabled": False},
            ports=[
                {
                    "listen": f"tcp:{stratum_port}:interface=127.0.0.1",
                    "diff": PORT_DIFFICULTY,
                    "proxy_protocol": ["127.0.0.1"],  # HAProxy's address, and no other
                }
            ],
            banning={"failed_auth": {"count": FAILED_AUTH_LIMIT, "window": 60}, "sync_interval": 1},
            payments={"enabled": False},
            hashrate_window=3600,  # every share of the test stays in <coin>:hashrate
        )
        pool = PoolProcess(name, folder, stratum_port)
        pool.start()
        self.addCleanup(pool.kill_if_running)
        return pool

    def instance_bytes(self, redis: RedisServer) -> dict[int, str]:
        """Process id -> the extranonce1 instance byte it leased (two hex digits)."""
        held = {}
        for key in redis.command("KEYS", "nomp:instance:*"):
            holder = redis.command("GET", key)  # host:pid:random
            held[int(holder.split(":")[1])] = f"{int(key.rsplit(':', 1)[1]):02x}"
        return held

    async def test_two_pools_behind_haproxy(self) -> None:
        """Spread, the real addresses, a shared ban, failover at a SIGKILL, exact counters."""
        pair = shared_regtest("haproxy")
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        address = pair.new_address()
        pools = [self.start_pool(f"pool{i + 1}", pair.miner.url, address, redis.port) for i in range(2)]
        for pool in pools:
            await eventually(pool.ready, f"{pool.name} is ready")
        balancer = HAProxy({pool.name: pool.stratum_port for pool in pools}).start()
        self.addCleanup(balancer.stop)
        await eventually(
            lambda: all(s.status == "UP" for s in balancer.server_states().values()),
            "HAProxy's health checks find both pools up",
            timeout=30,
        )

        # Each process leased its own instance byte, the first byte of every
        # extranonce1 it hands out.
        await eventually(lambda: len(self.instance_bytes(redis)) == 2, "both pools hold an instance byte")
        instance = self.instance_bytes(redis)
        self.assertEqual(set(instance), {pool.pid for pool in pools})
        self.assertEqual(len(set(instance.values())), 2)

        # Miners spread over both pools, which see each miner's own address and port.
        miners = [
            ReconnectingMiner(f"{address}.rig{i}", source, "127.0.0.1", balancer.port)
            for i, source in enumerate(MINER_ADDRESSES)
        ]
        for miner in miners:
            await miner.start()  # one after the other: least connections alternates
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(stop_miners(miners)))
        by_local = {miner.current.local: miner for miner in miners}
        self.assertEqual({local[0] for local in by_local}, set(MINER_ADDRESSES))
        served: dict[str, list[ReconnectingMiner]] = {}
        for pool in pools:
            listed = [c for c in await pool.miners() if c.workers != "not authorized"]
            served[pool.name] = [by_local[(c.ip, c.port)] for c in listed]
            for connection in listed:
                miner = by_local[(connection.ip, connection.port)]
                self.assertEqual(connection.workers, miner.user)
                self.assertEqual(connection.extranonce1, miner.current.extranonce1)
                self.assertEqual(connection.extranonce1[:2], instance[pool.pid])
        self.assertEqual(sorted(len(on_pool) for on_pool in served.values()), [2, 2])
        self.assertEqual({m.user for on_pool in served.values() for m in on_pool}, {m.user for m in miners})
        await eventually(lambda: all(m.accepted() >= 2 for m in miners), "every miner has shares accepted")

        # A ban made by the pool one client reached refuses that IP on the other too.
        banner = await probe_from(BANNED_ADDRESS, "127.0.0.1", balancer.port)
        banner.send(1, "mining.subscribe", ["banned/1.0"])
        await eventually(lambda: 1 in banner.replies, "the banned client is subscribed")
        reached = [pool for pool in pools if await pool.miners(f"ip {BANNED_ADDRESS}")]
        self.assertEqual(len(reached), 1)
        (banning,) = reached
        (other,) = [pool for pool in pools if pool is not banning]
        for request_id in range(2, FAILED_AUTH_LIMIT + 3):
            banner.send(request_id, "mining.authorize", ["not-an-address", "x"])
        await eventually(lambda: banner.closed.called, "the banned client is closed")
        refusals = [reply["error"][0] for request_id, reply in banner.replies.items() if request_id != 1]
        self.assertEqual(refusals, [24] * (FAILED_AUTH_LIMIT + 1))  # the last one bans
        self.assertIn(BANNED_ADDRESS, await banning.bans())
        await eventually(
            lambda: self.lists_ban(other), f"{other.name} holds the ban {banning.name} made", timeout=15
        )
        before = balancer.server_states()
        attempts = 4
        for _ in range(attempts):
            refused = await probe_from(BANNED_ADDRESS, "127.0.0.1", balancer.port)
            refused.send(1, "mining.subscribe", ["banned/1.0"])
            await eventually(lambda: refused.closed.called, "a banned connection is closed")  # noqa: B023
            self.assertEqual(refused.lines, [])
        after = balancer.server_states()
        reached_by_banned = {name: after[name].total_sessions - before[name].total_sessions for name in after}
        self.assertEqual(sum(reached_by_banned.values()), attempts)
        self.assertTrue(all(count > 0 for count in reached_by_banned.values()), reached_by_banned)

        # A pool killed with SIGKILL: its miners connect again and HAProxy
        # gives them the other pool. A pool answers a share before writing it
        # (in a batch every 200 ms), so a SIGKILL loses what it answered in
        # the last moments: its miners are quiet first, until Redis holds
        # every share they were answered for, so that the counts below are
        # exact. The other pool's miners mine on throughout.
        victim, survivor = pools
        moving = served[victim.name]
        staying = served[survivor.name]
        for miner in moving:
            await miner.current.miner.quiet()
        for miner in moving:
            answered = (miner.accepted(), sum(miner.rejected().values()))
            await eventually(
                self.recording(redis, miner.user, answered),
                f"Redis holds every share {miner.user} was answered for",
            )
        links_before_kill = {miner.user: miner.current for miner in miners}
        victim.kill()
        await eventually(
            lambda: all(m.connected and m.current is not links_before_kill[m.user] for m in moving),
            f"the miners of the killed {victim.name} are connected again",
            timeout=MOVE_TIMEOUT,
        )
        on_survivor = {(c.ip, c.port): c for c in await survivor.miners() if c.workers != "not authorized"}
        for miner in miners:
            self.assertIn(miner.current.local, on_survivor)
            self.assertEqual(on_survivor[miner.current.local].extranonce1[:2], instance[survivor.pid])
        for miner in moving:
            self.assertTrue(links_before_kill[miner.user].dropped)
        for miner in staying:
            self.assertIs(miner.current, links_before_kill[miner.user])  # never disconnected
        await eventually(
            lambda: balancer.server_states()[victim.name].status == "DOWN",
            f"HAProxy's health checks take {victim.name} out",
            timeout=MOVE_TIMEOUT,
        )
        await eventually(
            lambda: all(m.current.miner.stats.accepted >= 2 for m in moving),
            f"the moved miners have shares accepted by {survivor.name}",
            timeout=MOVE_TIMEOUT * 3,
        )

        # Stop mining, stop the survivor as systemd would (it drains its
        # records), and count: Redis holds every share each miner was told
        # was accepted (and refused), once.
        await stop_miners(miners)
        self.assertEqual(survivor.stop(), -signal.SIGTERM)
        accepted = assert_every_answer_recorded(self, redis, miners)
        credited = 0.0
        for key in [f"{COIN}:shares:roundCurrent", *redis.command("KEYS", f"{COIN}:shares:round[0-9]*")]:
            for worker in {m.user for m in miners}:
                credited += float(redis.command("HGET", key, worker) or 0)
        self.assertAlmostEqual(credited, PORT_DIFFICULTY * accepted, places=6)

        # Each process recorded exactly the shares it answered: the members'
        # ids start with their recorder's id, one recorder per process.
        recorders = [key.rsplit(":", 1)[1] for key in redis.command("KEYS", f"{COIN}:recorder:*")]
        recorders = [r for r in recorders if r != "setAside"]
        self.assertEqual(len(recorders), 2)
        per_recorder = sorted(
            (
                sum(1 for d, _, u in hashrate_members(redis) if u.startswith(r) and d > 0),
                sum(1 for d, _, u in hashrate_members(redis) if u.startswith(r) and d < 0),
            )
            for r in recorders
        )
        instance_of = {instance[pool.pid]: pool.name for pool in pools}
        per_pool: dict[str, list[int]] = {pool.name: [0, 0] for pool in pools}
        for miner in miners:
            for link in miner.links:
                counts = per_pool[instance_of[link.extranonce1[:2]]]
                counts[0] += link.miner.stats.accepted
                counts[1] += link.miner.stats.rejected_total
        self.assertEqual(per_recorder, sorted(tuple(c) for c in per_pool.values()))
        self.assertTrue(all(valid > 0 for valid, _ in per_recorder), per_recorder)

    def recording(self, redis: RedisServer, worker: str, answered: tuple[int, int]) -> Callable[[], bool]:
        """Whether Redis holds ``answered``, (valid, invalid), shares of ``worker``."""
        return lambda: recorded_shares(redis, worker) == answered

    async def lists_ban(self, pool: PoolProcess) -> bool:
        return BANNED_ADDRESS in await pool.bans()
