"""Redis Sentinel, against real processes: a redis-server primary, its replica and three
Sentinels on loopback (test.servers.SentinelSet), the pool's RedisService finding the
primary through them.

FailoverTests take the primary away while a ShareRecorder records shares without
pause (each share of a worker of its own, so the new primary's roundCurrent says how
many times each was written) and read the new primary once the pool has followed:
no share is there twice, and the only ones missing are shares the old primary
acknowledged before it had passed them on to its replica. What was lost and how long
the pool took are logged ("measured: ..." in the trial log).

LookupTests: what the pool does with Sentinels that are down, wrong, or cut off.
JournalTests: a payout journal entry is on the replica before money leaves, and a
run stops before sending when it cannot be.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from twisted.internet import defer, reactor, task, threads
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from nomp.config import PaymentsConfig, RedisConfig
from nomp.config.model import SentinelAddress
from nomp.payments.ethpayledger import EthPayLedger, JournalEntry
from nomp.payments.ethsigner import LegacyPricing
from nomp.payments.ledger import Batch, PaymentLedger
from nomp.payments.processor import PaymentProcessor
from nomp.payments.rounds import PROP
from nomp.store.client import NotReplicated, RedisClient
from nomp.store.oepschema import OepKeys, dust_field
from nomp.store.recorder import ShareRecorder
from nomp.store.redis import PrimaryNotFound, RedisService, connect_once
from nomp.store.schema import PoolKeys
from nomp.store.service import RecorderService
from test.fakes import pool_config
from test.fakewallet import FakeChain, FakeWallet
from test.servers import RedisProcess, SentinelSet, free_port
from test.test_payments import record_block
from test.waiting import until

DB = 3
MASTER = SentinelSet.MASTER_NAME
SHARES_PER_TICK = 20  # shares recorded every TICK seconds: 2,000 a second
TICK = 0.01

log = Logger()

_shared: list[SentinelSet] = []


def shared_sentinels() -> SentinelSet:
    """One SentinelSet for the tests that never fail it over, started on first use."""
    if not _shared:
        _shared.append(SentinelSet().start())
        atexit.register(_shared[0].stop)
    return _shared[0]


def sentinel_config(group: SentinelSet, **options: Any) -> RedisConfig:
    """The redis section naming ``group``'s Sentinels."""
    settings: dict[str, Any] = {
        "password": group.password,
        "db": DB,
        "sentinels": tuple(SentinelAddress("127.0.0.1", s.port) for s in group.sentinels),
        "master_name": MASTER,
        "sentinel_password": group.sentinel_password,
    }
    settings.update(options)
    return RedisConfig(**settings)


@implementer(ILogObserver)
class Events:
    """Log events as they come, each with the reactor's time it came at."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, LogEvent]] = []

    def __call__(self, event: LogEvent) -> None:
        self.seen.append((reactor.seconds(), event))

    def messages(self, level: LogLevel | None = None) -> list[str]:
        return [formatEvent(e) for _, e in self.seen if level is None or e.get("log_level") == level]

    def first(self, text: str) -> float | None:
        """When the first event whose message holds ``text`` came."""
        return next((at for at, e in self.seen if text in formatEvent(e)), None)


@dataclass
class Write:
    """One script call of the recorder: when it was sent, its records, how it ended."""

    sent: float
    workers: list[str]
    acknowledged: bool = False


class ObservedClient:
    """A RedisClient that notes each batch the recorder sends and whether Redis acknowledged it."""

    def __init__(self, client: RedisClient, writes: list[Write]) -> None:
        self._client = client
        self._writes = writes

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        workers = [line.split("\t")[1] for line in str(args[4]).split("\n")] if len(args) > 4 else []
        write = Write(reactor.seconds(), workers)
        self._writes.append(write)

        def acknowledged(result: Any) -> Any:
            write.acknowledged = True
            return result

        return self._client.eval(script, keys, args).addCallback(acknowledged)


class ShareFeed:
    """Records SHARES_PER_TICK shares every TICK seconds: share n is worker ``w<n>``'s, of difficulty 1."""

    def __init__(self, recorder: ShareRecorder) -> None:
        self._recorder = recorder
        self.sent = 0
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = reactor

    def _tick(self) -> None:
        for _ in range(SHARES_PER_TICK):
            self._recorder.valid_share(f"w{self.sent}", 1.0)
            self.sent += 1

    def start(self) -> None:
        self._loop.start(TICK)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()


def in_thread(function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    """A blocking helper of test.servers, off the reactor's thread: the pool goes on meanwhile."""
    return threads.deferToThread(function, *args)


class SentinelTestCase(TestCase):
    timeout = 180

    def watch_log(self) -> Events:
        events = Events()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        return events

    async def connect(self, config: RedisConfig, **options: Any) -> RedisService:
        """RedisService, started and connected."""
        service = RedisService(config, reactor=reactor, **options)
        service.startService()
        self.addCleanup(service.stopService)
        await until(lambda: service.client() is not None)
        return service

    def client(self, service: RedisService) -> RedisClient:
        client = service.client()
        assert client is not None
        return client


class FailoverTests(SentinelTestCase):
    """The primary goes away while shares are recorded; the pool follows the Sentinels."""

    async def record_through(
        self, group: SentinelSet, failover: Callable[[], Any], **options: Any
    ) -> tuple[dict[str, float], list[Write], float, Events]:
        """Record shares, call ``failover`` after 2,000 are in Redis, go on until the
        pool has written 2,000 more to the new primary, then write the rest: the
        new primary's count of each share, the recorder's writes, when ``failover``
        was called, and the log."""
        events = self.watch_log()
        service = await self.connect(sentinel_config(group), **options)
        keys = PoolKeys.for_coin(f"S{os.urandom(3).hex()}")
        writes: list[Write] = []
        client = self.client(service)

        def observed() -> RedisClient | None:  # None (the recorder buffers) while not connected
            return ObservedClient(client, writes) if service.client() is not None else None

        recorder = ShareRecorder(keys, observed, reactor, round_policy=PROP)
        recording = RecorderService(recorder, reactor)
        recording.startService()
        self.addCleanup(recording.stopService)
        feed = ShareFeed(recorder)
        feed.start()
        self.addCleanup(feed.stop)
        await until(lambda: recorder.written >= 2000)
        failed_at = reactor.seconds()
        await failover()
        old = group.first_primary.port
        # The pool is told of the new primary, then writes there (the old one may be up, and take writes).
        await until(lambda: events.first("following the failover") is not None, timeout=120, step=0.01)
        named_at = events.first("following the failover")
        assert named_at is not None
        await until(lambda: any(w.acknowledged and w.sent > named_at for w in writes), timeout=60, step=0.01)
        written = recorder.written
        await until(lambda: recorder.written >= written + 2000, timeout=60)
        feed.stop()
        await until(lambda: recorder.waiting == 0, timeout=60)
        self.assertEqual(recorder.written, feed.sent)
        new = await in_thread(group.primary_port, group.sentinels[0])
        self.assertNotEqual(new, old)
        primary = group.server_on(new)
        flat = await in_thread(lambda: primary.command("HGETALL", keys.round_current, db=DB))
        counts = {flat[i]: float(flat[i + 1]) for i in range(0, len(flat), 2)}
        valid = await in_thread(lambda: primary.command("HGET", keys.stats, "validShares", db=DB))
        self.assertEqual(int(valid), len(counts))
        self.assertEqual(len(set().union(*(w.workers for w in writes if w.acknowledged))), feed.sent)
        return counts, writes, failed_at, events

    def check_exactly_once(
        self, counts: dict[str, float], writes: list[Write], lost_before: float
    ) -> list[str]:
        """No share counted twice; every share missing was in a batch acknowledged before
        ``lost_before``: the shares missing."""
        self.assertEqual([worker for worker, count in counts.items() if count != 1.0], [])
        missing = sorted(
            {worker for w in writes if w.acknowledged for worker in w.workers} - set(counts),
            key=lambda worker: int(worker[1:]),
        )
        acknowledged_before = {
            worker for w in writes if w.acknowledged and w.sent < lost_before for worker in w.workers
        }
        self.assertEqual([worker for worker in missing if worker not in acknowledged_before], [])
        return missing

    async def test_primary_killed(self) -> None:
        """SIGKILL the primary while recording: the Sentinels promote the replica, the
        pool follows, the shares buffered meanwhile are written to the new primary and
        none is counted twice; the only loss is what the old primary had acknowledged
        and not yet replicated. A payment lock is taken on the new primary, with the
        fencing token after the one taken before the failover."""
        group = SentinelSet().start()
        self.addCleanup(group.stop)
        keys = PoolKeys.for_coin(f"L{os.urandom(3).hex()}")
        setup = await self.connect(sentinel_config(group))
        ledger = PaymentLedger(self.client(setup), keys)
        before = await ledger.acquire(60)
        assert before is not None
        await ledger.release(before)
        stopping = setup.stopService()
        assert stopping is not None
        await stopping
        await in_thread(group.wait_replicated, group.servers[1])  # the token is on the replica

        async def kill() -> None:
            group.first_primary.kill()

        counts, writes, killed_at, events = await self.record_through(group, kill)
        missing = self.check_exactly_once(counts, writes, killed_at)
        named_at = events.first("following the failover")
        assert named_at is not None
        reconnected_at = min(w.sent for w in writes if w.acknowledged and w.sent > named_at)
        log.info(
            "measured: primary killed: the pool was told of the new primary {named:.2f} s after the kill "
            "and wrote its first batch there {written:.2f} s after it; {missing} shares acknowledged by the "
            "old primary were not on its replica ({batches} batches), none counted twice, of {total}",
            named=named_at - killed_at,
            written=reconnected_at - killed_at,
            missing=len(missing),
            batches=len({id(w) for w in writes if set(w.workers) & set(missing)}),
            total=len(counts) + len(missing),
        )

        after = await self.connect(sentinel_config(group, journal_timeout=0.5))
        ledger = PaymentLedger(self.client(after), keys)
        token = await ledger.acquire(60)
        self.assertEqual(token, before + 1)
        assert token is not None
        self.assertIsNone(await ledger.acquire(60))  # held
        # The new primary has no replica yet: a journal entry cannot be made safe.
        batch = Batch(f"{keys.coin}:{token}:1", {}, 1.0, "pool")
        with self.assertRaises(NotReplicated) as refused:
            await ledger.open_batch(token, batch)
        self.assertIn("reached 0 of the 1 Redis replicas required within 0.5 s", str(refused.exception))
        # The old primary back (empty: no persistence) is made a replica of the new one.
        old = group.first_primary
        await in_thread(old.start)
        await in_thread(group.wait_replicated, old)
        self.assertTrue(await ledger.cancel_batch(batch))
        await ledger.open_batch(token, batch)
        self.assertIsNotNone(await in_thread(lambda: old.command("GET", keys.journal, db=DB)))
        await ledger.release(token)

    async def test_failover_with_the_primary_up(self) -> None:
        """A failover the Sentinels are asked for (the primary stays up, and takes writes
        until they demote it): the pool asks the Sentinels every second and leaves it for
        the new primary; what it wrote to the old one meanwhile is lost, nothing twice."""
        group = SentinelSet().start()
        self.addCleanup(group.stop)

        async def fail_over() -> None:
            await in_thread(group.sentinels[0].command, "SENTINEL", "failover", MASTER)

        counts, writes, asked_at, events = await self.record_through(group, fail_over)
        left_at = events.first("closing the connections to")
        assert left_at is not None
        missing = self.check_exactly_once(counts, writes, left_at)
        log.info(
            "measured: failover asked for: the pool left the old primary {left:.2f} s after it was asked; "
            "{missing} shares written to it meanwhile are not on the new one, none counted twice, of {total}",
            left=left_at - asked_at,
            missing=len(missing),
            total=len(counts) + len(missing),
        )

    async def test_planned_switchover(self) -> None:
        """The primary's writes paused (CLIENT PAUSE WRITE) before the failover is asked
        for: the pool's batches wait on the old primary, are dropped with its connections
        when the pool leaves it, and go to the new one: nothing lost, nothing twice."""
        group = SentinelSet().start()
        self.addCleanup(group.stop)

        async def pause_then_fail_over() -> None:
            await in_thread(group.first_primary.command, "CLIENT", "PAUSE", 20_000, "WRITE")
            await in_thread(group.sentinels[0].command, "SENTINEL", "failover", MASTER)

        counts, writes, asked_at, events = await self.record_through(group, pause_then_fail_over)
        missing = self.check_exactly_once(counts, writes, asked_at)
        self.assertEqual(missing, [])
        left_at = events.first("closing the connections to")
        assert left_at is not None
        log.info(
            "measured: planned switchover: the pool left the paused primary {left:.2f} s after the failover "
            "was asked for; {missing} shares lost, none counted twice, of {total}",
            left=left_at - asked_at,
            missing=len(missing),
            total=len(counts),
        )

    async def test_readonly(self) -> None:
        """A write answered READONLY (the server was made a replica under the pool) closes
        the connections, which are made again through the Sentinels, to the new primary."""
        group = SentinelSet().start()
        self.addCleanup(group.stop)
        events = self.watch_log()
        service = await self.connect(sentinel_config(group), check_interval=None)  # READONLY alone
        client = self.client(service)
        incr = "return redis.call('INCR', KEYS[1])"
        self.assertEqual(await client.eval(incr, ["n"], []), 1)
        old, new = group.servers
        await in_thread(group.sentinels[0].command, "SENTINEL", "failover", MASTER)
        await until(lambda: group.primary_port(group.sentinels[0]) == new.port)
        await in_thread(old.command, "REPLICAOF", "127.0.0.1", new.port)  # what the Sentinels do later
        with self.assertRaises(Exception) as refused:
            await client.eval(incr, ["n"], [])
        self.assertTrue(str(refused.exception).startswith("READONLY"))
        await until(lambda: service.client() is not None and service._peer == ("127.0.0.1", new.port))
        self.assertEqual(await client.eval(incr, ["n"], []), 2)
        self.assertEqual(await in_thread(lambda: new.command("GET", "n", db=DB)), "2")
        self.assertTrue(
            any(f"127.0.0.1:{old.port} answered READONLY" in m for m in events.messages(LogLevel.warn))
        )


class LookupTests(SentinelTestCase):
    """Sentinels that are down, wrong or cut off: the pool says so, and connects when it can."""

    def setUp(self) -> None:
        self.group = shared_sentinels()

    async def test_connects_to_the_primary(self) -> None:
        """The Sentinels name the primary; the pool's writes land there."""
        service = await self.connect(sentinel_config(self.group))
        key = f"k{os.urandom(3).hex()}"
        await self.client(service).eval("return redis.call('SET', KEYS[1], 'x')", [key], [])
        self.assertEqual(self.group.first_primary.command("GET", key, db=DB), "x")

    async def test_one_sentinel_down(self) -> None:
        """A Sentinel that does not answer is passed over, and its outage logged once."""
        events = self.watch_log()
        down = free_port()
        sentinels = sentinel_config(self.group).sentinels
        assert sentinels is not None
        config = sentinel_config(self.group, sentinels=(SentinelAddress("127.0.0.1", down), *sentinels))
        await self.connect(config)
        warned = [m for m in events.messages(LogLevel.warn) if f"Redis Sentinel 127.0.0.1:{down}" in m]
        self.assertEqual(len(warned), 0)  # never answered yet: an info line, not a warning
        waiting = [m for m in events.messages(LogLevel.info) if f"Redis Sentinel 127.0.0.1:{down}" in m]
        self.assertEqual(len(waiting), 1)
        self.assertIn("refused", waiting[0])

    async def test_no_sentinel_answers(self) -> None:
        """No Sentinel up: no connection, the reason logged, each Sentinel's outage with it;
        a command that connects once is told the same."""
        events = self.watch_log()
        nowhere = tuple(SentinelAddress("127.0.0.1", free_port()) for _ in range(2))
        config = sentinel_config(self.group, sentinels=nowhere)
        service = RedisService(config, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        await until(lambda: events.first("no Sentinel named the primary") is not None)
        self.assertIsNone(service.client())
        with self.assertRaises(PrimaryNotFound) as refused:
            await connect_once(config, reactor)
        for sentinel in nowhere:
            self.assertIn(f"127.0.0.1:{sentinel.port}: RedisUnavailable", str(refused.exception))

    async def test_unknown_master_name(self) -> None:
        """Sentinels that watch no primary of that name: each says so."""
        config = sentinel_config(self.group, master_name="elsewhere")
        with self.assertRaises(PrimaryNotFound) as refused:
            await connect_once(config, reactor)
        self.assertEqual(str(refused.exception).count("it watches no primary named 'elsewhere'"), 3)

    async def test_wrong_sentinel_password(self) -> None:
        """A Sentinel refusing the password is not asked anything."""
        with self.assertRaises(PrimaryNotFound) as refused:
            await connect_once(sentinel_config(self.group, sentinel_password="wrong"), reactor)
        self.assertEqual(str(refused.exception).count("could not auth"), 3)

    async def test_wrong_data_password(self) -> None:
        """The primary named refusing the password: no connection, the reason given."""
        with self.assertRaises(PrimaryNotFound) as refused:
            await connect_once(sentinel_config(self.group, password="wrong"), reactor)
        self.assertIn(f"named 127.0.0.1:{self.group.first_primary.port}", str(refused.exception))
        self.assertIn("could not auth", str(refused.exception))

    async def test_stale_sentinel(self) -> None:
        """A Sentinel naming a server that is a replica (cut off from the others, it has
        not seen the failover): the ROLE check refuses it and the next Sentinel is asked."""
        root = self.group.root / f"stale-{os.urandom(3).hex()}"
        password = self.group.password
        replica = RedisProcess(
            root / "replica",
            free_port(),
            ["save ''", f"requirepass {password}", f"replicaof 127.0.0.1 {free_port()}"],
            password,
        )
        replica.start()
        self.addCleanup(replica.stop)
        stale = RedisProcess(
            root / "sentinel",
            free_port(),
            [
                f"sentinel monitor {MASTER} 127.0.0.1 {replica.port} 1",
                f"sentinel auth-pass {MASTER} {password}",
                f"requirepass {self.group.sentinel_password}",
            ],
            self.group.sentinel_password,
            sentinel=True,
        )
        stale.start()
        self.addCleanup(stale.stop)
        events = self.watch_log()
        sentinels = sentinel_config(self.group).sentinels
        assert sentinels is not None
        stale_first = (SentinelAddress("127.0.0.1", stale.port), *sentinels)
        service = await self.connect(sentinel_config(self.group, sentinels=stale_first))
        key = f"k{os.urandom(3).hex()}"
        await self.client(service).eval("return redis.call('SET', KEYS[1], 'x')", [key], [])
        self.assertEqual(self.group.first_primary.command("GET", key, db=DB), "x")
        self.assertEqual(events.first(f"primary of {MASTER} is 127.0.0.1:{replica.port}"), None)
        with self.assertRaises(PrimaryNotFound) as refused:
            await connect_once(sentinel_config(self.group, sentinels=stale_first[:1]), reactor)
        self.assertIn(
            f"named 127.0.0.1:{replica.port}: NotPrimary: it says it is a slave", str(refused.exception)
        )


class JournalTests(SentinelTestCase):
    """Payout journal entries wait for the replica (redis.journal_replicas: 1 with Sentinels)."""

    def setUp(self) -> None:
        self.group = shared_sentinels()
        self.replica = self.group.servers[1]

    def pause_replica(self) -> None:
        """The replica frozen (it takes nothing from the primary) until the test ends."""
        self.replica.pause()
        self.addCleanup(self.replica.resume)

    async def payment_run(self) -> tuple[PaymentProcessor, FakeWallet, PoolKeys, RedisService]:
        service = await self.connect(sentinel_config(self.group, journal_timeout=0.5))
        keys = PoolKeys.for_coin(f"J{os.urandom(3).hex()}")
        settings = PaymentsConfig(
            enabled=True, minimum_payment=Decimal("0.01"), fee_percent=Decimal(1), unknown_send_grace=60
        )
        pool = pool_config(payments=settings)
        chain, wallet = FakeChain(tip=1000), FakeWallet(pool.address)
        await record_block(keys, service, chain, wallet, 1_700_000_000.0, 900, [("ltc1alice", 1.0)])
        processor = PaymentProcessor(pool, PaymentLedger(self.client(service), keys), chain, wallet)
        return processor, wallet, keys, service

    async def test_entry_on_the_replica_before_sending(self) -> None:
        """The batch's journal entry is on the replica when sendmany is called."""
        processor, wallet, keys, _ = await self.payment_run()
        on_replica: list[str | None] = []
        wallet.on_sendmany = lambda _: on_replica.append(self.replica.command("GET", keys.journal, db=DB))
        report = await processor.run()
        self.assertEqual(len(wallet.sends), 1)
        self.assertEqual(report.paid, {"ltc1alice": 50 * 100_000_000 - 50 * 100_000_000 // 100})
        self.assertEqual(len(on_replica), 1)
        assert on_replica[0] is not None
        self.assertEqual(Batch.from_json(on_replica[0]).id, wallet.sends[0][2])

    async def test_no_replica_no_send(self) -> None:
        """The replica not taking the entry: the run stops before sendmany with NOREPLICAS;
        the entry stays open on the primary, and a later run (once past the grace for a
        send that might be running) drops it and pays once."""
        processor, wallet, keys, _ = await self.payment_run()
        self.pause_replica()
        with self.assertRaises(NotReplicated) as refused:
            await processor.run()
        self.assertTrue(str(refused.exception).startswith("NOREPLICAS the journal entry of payout batch"))
        self.assertEqual(wallet.sends, [])
        self.assertIsNotNone(self.group.first_primary.command("GET", keys.journal, db=DB))
        self.replica.resume()
        later = PaymentProcessor(
            processor.pool,
            processor.ledger,
            processor.chain,
            wallet,
            wall_clock=lambda: 1e10,  # long past the entry's grace
        )
        report = await later.run()
        self.assertEqual(len(wallet.sends), 1)
        self.assertEqual(list(report.paid), ["ltc1alice"])
        self.assertIsNone(self.group.first_primary.command("GET", keys.journal, db=DB))

    async def test_ethereum_payout_waits(self) -> None:
        """The Ethereum payer's lock and signed entries wait too: with the replica frozen,
        the lock is refused (and given back), and so is a signed entry."""
        service = await self.connect(sentinel_config(self.group, journal_timeout=0.5))
        keys = OepKeys.for_coin(f"E{os.urandom(3).hex()}")
        ledger = EthPayLedger(self.client(service), keys)
        login = "0x" + "ab" * 20
        other = "0x" + "cd" * 20
        for key in (keys.miner(login), keys.miner(other), keys.finances):
            self.group.first_primary.command("HSET", key, "balance", 10**9, dust_field("balance"), 0, db=DB)
        token = await ledger.acquire(60)
        assert token is not None
        entry = JournalEntry(login, 10**18, 10**18, 0, LegacyPricing(10**9), 1.0)
        await ledger.reserve(token, entry)
        self.assertTrue(await ledger.record_signed(token, entry.signed("0x" + "11" * 32, "0x01")))
        second = JournalEntry(other, 10**17, 10**17, 1, LegacyPricing(10**9), 1.0)
        await ledger.reserve(token, second)
        self.pause_replica()
        with self.assertRaises(NotReplicated) as refused:
            await ledger.record_signed(token, second.signed("0x" + "22" * 32, "0x02"))
        self.assertIn("the signed journal entry of the payout to", str(refused.exception))
        await ledger.release(token)
        with self.assertRaises(NotReplicated):
            await ledger.acquire(60)
        self.assertEqual(self.group.first_primary.command("EXISTS", keys.unlocker_lock, db=DB), 0)
