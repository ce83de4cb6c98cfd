"""ShareRecorder and RecorderService against a real redis-server.

NOMP's keys as its stats and payment code read them, one script call per
batch, blocks closing their rounds only once settled, exactly-once writes
when a reply is lost, and Redis going away and coming back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

import nomp.store.recorder
import nomp.store.service
from nomp.config import RedisConfig
from nomp.services import OrderedMultiService
from nomp.store.keys import PoolKeys
from nomp.store.recorder import RecorderFull, ScriptRunner, ShareRecorder
from nomp.store.redis import RedisService
from nomp.store.service import RecorderService
from test.servers import RedisServer, shared_redis
from test.waiting import until

DB = 7  # of the shared redis-server; each test also has a coin of its own
NOW = 1_700_000_000.25  # exact as a double and as Redis's decimal score
MS = str(int(NOW * 1000))
CLOCK = cast(IReactorTime, reactor)
HASH_A = "aa" * 32
HASH_B = "bb" * 32
TXID_A = "a1" * 32
TXID_B = "b1" * 32
REWARD = 1_250_000_000


def logged(events: Sequence[LogEvent], level: LogLevel) -> list[str]:
    """The formatted messages of ``level`` among captured events."""
    return [formatEvent(event) for event in events if event.get("log_level") == level]


class CountingRunner:
    """A Redis client that counts its script calls and keeps their arguments."""

    def __init__(self, client: ScriptRunner | None) -> None:
        assert client is not None
        self.client = client
        self.calls: list[list[Any]] = []
        self.keys: list[list[str]] = []

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        self.calls.append(list(args))
        self.keys.append(list(keys))
        return self.client.eval(script, keys, args)

    def record_kinds(self) -> list[str]:
        """The kind of each record sent, call after call (records are the fifth argument)."""
        return [line.split("\t")[0] for call in self.calls for line in str(call[4]).split("\n")]


class LostReplyRunner(CountingRunner):
    """Runs each script for real, but reports the first ``lose`` calls as
    failed, as if Redis's reply had been lost on the way back."""

    def __init__(self, client: ScriptRunner | None, lose: int = 1) -> None:
        super().__init__(client)
        self.lose = lose

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        running = super().eval(script, keys, args)
        if not self.lose:
            return running
        self.lose -= 1

        async def lost() -> Any:
            await running
            raise ConnectionError("the reply was lost")

        return defer.Deferred.fromCoroutine(lost())


class RecorderTestCase(TestCase):
    """Set-up shared by the recorder tests: a coin of the test's own, a
    fake wall clock, and Redis read through a plain connection."""

    timeout = 60

    def setUp(self) -> None:
        self.server = shared_redis()
        self.keys = PoolKeys.for_coin(f"T{os.urandom(4).hex()}-{self._testMethodName}")
        self.now = NOW

    def wall_clock(self) -> float:
        return self.now

    def recorder(self, redis: Callable[[], ScriptRunner | None], **options: Any) -> ShareRecorder:
        return ShareRecorder(self.keys, redis, CLOCK, wall_clock=self.wall_clock, **options)

    async def connect(self, server: RedisServer | None = None) -> RedisService:
        """nomp's RedisService, started and connected."""
        service = RedisService(RedisConfig(port=(server or self.server).port, db=DB))
        service.startService()
        self.addCleanup(service.stopService)
        await until(lambda: service.client() is not None)
        return service

    def redis(self, *args: str | int | float) -> Any:
        return self.server.command(*args, db=DB)

    def hash(self, key: str) -> dict[str, str]:
        flat = self.redis("HGETALL", key)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def stats(self) -> dict[str, str]:
        return self.hash(self.keys.stats)

    def exists(self, key: str) -> bool:
        return bool(self.redis("EXISTS", key))

    def hashrate(self) -> list[tuple[str, float]]:
        """The hashrate members with their scores, oldest first."""
        flat = self.redis("ZRANGE", self.keys.hashrate, 0, -1, "WITHSCORES")
        return [(member, float(score)) for member, score in zip(flat[::2], flat[1::2], strict=True)]

    def hashrate_fields(self) -> list[tuple[float, str]]:
        """(difficulty, worker) of each hashrate member, read the way NOMP's stats read them."""
        return sorted((float(member.split(":")[0]), member.split(":")[1]) for member, _ in self.hashrate())


class ShareRecordTests(RecorderTestCase):
    """Valid and invalid shares land in NOMP's keys."""

    async def test_valid_shares(self) -> None:
        """Valid shares sum per worker in roundCurrent, count in validShares, each add a hashrate member."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice.rig1", 8.0)
        recorder.valid_share("alice.rig1", 8.0)  # the same worker in the same millisecond
        recorder.valid_share("bob", 0.5)
        recorder.valid_share("alice.rig1", 16.25)
        self.assertEqual(recorder.waiting, 4)
        self.assertFalse(self.exists(self.keys.stats))

        await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written), (0, 4))
        self.assertEqual(self.hash(self.keys.round_current), {"alice.rig1": "32.25", "bob": "0.5"})
        self.assertEqual(self.stats(), {"validShares": "4"})
        members = self.hashrate()
        self.assertEqual(len({member for member, _ in members}), 4)
        for member, score in members:
            self.assertEqual(score, NOW)
            fields = member.split(":")
            self.assertEqual(len(fields), 4)
            self.assertEqual(fields[2], MS)
        self.assertEqual(
            self.hashrate_fields(),
            [(0.5, "bob"), (8.0, "alice.rig1"), (8.0, "alice.rig1"), (16.25, "alice.rig1")],
        )

    async def test_invalid_shares(self) -> None:
        """Invalid shares count in invalidShares and add negative hashrate members, nothing to the round."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.invalid_share("carol", 4.0)
        recorder.invalid_share("carol", 4.0)
        recorder.invalid_share("dave", 0.125)

        await recorder.flush()

        self.assertEqual(recorder.written, 3)
        self.assertEqual(self.stats(), {"invalidShares": "3"})
        self.assertFalse(self.exists(self.keys.round_current))
        self.assertEqual(self.hashrate_fields(), [(-4.0, "carol"), (-4.0, "carol"), (-0.125, "dave")])
        for member, score in self.hashrate():
            self.assertEqual(score, NOW)
            self.assertEqual(member.split(":")[2], MS)

    async def test_flush_with_nothing_queued(self) -> None:
        """A flush with nothing queued calls no script and writes nothing."""
        service = await self.connect()
        runner = CountingRunner(service.client())
        recorder = self.recorder(lambda: runner)
        await recorder.flush()
        self.assertEqual(runner.calls, [])
        self.assertFalse(self.exists(self.keys.stats))


class BatchTests(RecorderTestCase):
    """Records go out in batches: one script call each, in order."""

    async def test_one_flush_one_script_call(self) -> None:
        """One flush writes everything queued in a single script call, and a flush during it adds none."""
        service = await self.connect()
        runner = CountingRunner(service.client())
        recorder = self.recorder(lambda: runner)
        for _ in range(50):
            recorder.valid_share("alice", 1.0)
        recorder.invalid_share("bob", 1.0)

        first = recorder.flush()
        second = recorder.flush()  # while the first one writes
        await second
        await first

        self.assertEqual(len(runner.calls), 1)
        self.assertEqual(recorder.written, 51)
        self.assertEqual(self.stats(), {"validShares": "50", "invalidShares": "1"})

    async def test_batches_in_order(self) -> None:
        """With a small max_batch, several numbered batches go out in queue order, and the round a
        block closes holds exactly the shares queued before it."""
        service = await self.connect()
        runner = CountingRunner(service.client())
        recorder = self.recorder(lambda: runner, max_batch=3)
        for _ in range(4):
            recorder.valid_share("alice", 1.0)
        block = recorder.block_found("alice", 100, REWARD)
        recorder.block_settled(block, True, HASH_A, TXID_A)
        for _ in range(3):
            recorder.valid_share("alice", 2.0)
        recorder.invalid_share("alice", 1.0)

        await recorder.flush()

        self.assertEqual(len(runner.calls), 3)
        numbered = {keys[0] for keys in runner.keys}
        self.assertEqual(len(numbered), 1)
        self.assertEqual([call[0] for call in runner.calls], [1, 2, 3])
        self.assertEqual(runner.record_kinds(), ["s", "s", "s", "s", "b", "s", "s", "s", "i"])
        self.assertEqual(self.redis("GET", numbered.pop()), "3")
        self.assertEqual(self.hash(self.keys.round(100)), {"alice": "4"})
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "6"})
        self.assertEqual(self.stats(), {"validShares": "7", "invalidShares": "1", "validBlocks": "1"})
        self.assertEqual((recorder.waiting, recorder.written), (0, 9))


class BlockTests(RecorderTestCase):
    """Blocks close their round once the daemon has answered."""

    async def test_accepted_block(self) -> None:
        """An accepted block renames the round of the shares before it and is recorded in NOMP's
        keys; the shares behind it wait for its answer and go to the next round."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 8.0)
        recorder.valid_share("bob", 4.0)
        block = recorder.block_found("bob", 1234, REWARD, network_difficulty=48.0)
        self.now += 1.5  # the daemon answers later; the block keeps the time it was found
        recorder.valid_share("alice", 2.0)
        recorder.invalid_share("carol", 1.0)

        await recorder.flush()

        self.assertEqual(recorder.waiting, 3)
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "8", "bob": "4"})
        self.assertEqual(self.stats(), {"validShares": "2"})
        self.assertFalse(self.exists(self.keys.blocks_pending))

        recorder.block_settled(block, True, HASH_A, TXID_A)
        await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written), (0, 5))
        round_key = self.keys.round(1234)
        self.assertEqual(round_key, f"{self.keys.coin}:shares:round1234")
        self.assertEqual(self.hash(round_key), {"alice": "8", "bob": "4"})
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "2"})
        self.assertEqual(
            self.redis("SMEMBERS", self.keys.blocks_pending), [f"{HASH_A}:{TXID_A}:1234:bob:{MS}"]
        )
        self.assertEqual(
            self.hash(self.keys.block(HASH_A)),
            {
                "height": "1234",
                "txid": TXID_A,
                "worker": "bob",
                "time": MS,
                "reward": str(REWARD),
                "round": round_key,
                "solo": "0",
                "shares": "12",  # the round's work: its effort is 12 / 48
                "difficulty": "48.0",
            },
        )
        self.assertEqual(self.stats(), {"validShares": "3", "invalidShares": "1", "validBlocks": "1"})
        self.assertEqual(self.redis("SMEMBERS", self.keys.blocks_found), [HASH_A])

    async def test_second_block_at_same_height(self) -> None:
        """A second block at a height already recorded gets a round key with its hash instead of
        overwriting the first block's round."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 1.0)
        first = recorder.block_found("alice", 500, REWARD)
        recorder.block_settled(first, True, HASH_A, TXID_A)
        recorder.valid_share("bob", 3.0)
        second = recorder.block_found("bob", 500, REWARD)
        recorder.block_settled(second, True, HASH_B, TXID_B)
        recorder.valid_share("carol", 1.0)

        await recorder.flush()

        second_round = f"{self.keys.round(500)}:{HASH_B}"
        self.assertEqual(self.hash(self.keys.round(500)), {"alice": "1"})
        self.assertEqual(self.hash(second_round), {"bob": "3"})
        self.assertEqual(self.hash(self.keys.round_current), {"carol": "1"})
        self.assertEqual(self.hash(self.keys.block(HASH_A))["round"], self.keys.round(500))
        self.assertEqual(self.hash(self.keys.block(HASH_B))["round"], second_round)
        self.assertEqual(
            sorted(self.redis("SMEMBERS", self.keys.blocks_pending)),
            [f"{HASH_A}:{TXID_A}:500:alice:{MS}", f"{HASH_B}:{TXID_B}:500:bob:{MS}"],
        )
        self.assertEqual(self.stats()["validBlocks"], "2")

    async def test_same_block_twice(self) -> None:
        """A block hash recorded a second time (in a later batch) is recorded once and closes no
        second round."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 1.0)
        first = recorder.block_found("alice", 600, REWARD)
        recorder.block_settled(first, True, HASH_A, TXID_A)
        recorder.valid_share("bob", 2.0)
        await recorder.flush()

        again = recorder.block_found("bob", 600, REWARD)
        recorder.block_settled(again, True, HASH_A, TXID_A)
        recorder.valid_share("carol", 1.0)
        await recorder.flush()

        self.assertEqual(recorder.waiting, 0)
        self.assertEqual(self.stats(), {"validShares": "3", "validBlocks": "1"})
        self.assertEqual(
            self.redis("SMEMBERS", self.keys.blocks_pending), [f"{HASH_A}:{TXID_A}:600:alice:{MS}"]
        )
        self.assertEqual(self.hash(self.keys.round(600)), {"alice": "1"})
        self.assertFalse(self.exists(f"{self.keys.round(600)}:{HASH_A}"))
        self.assertEqual(self.hash(self.keys.round_current), {"bob": "2", "carol": "1"})
        self.assertEqual(self.hash(self.keys.block(HASH_A))["worker"], "alice")

    async def test_refused_block(self) -> None:
        """A block the daemon refused only counts in invalidBlocks; its round goes on, with the
        shares held behind it."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 1.0)
        block = recorder.block_found("alice", 700, REWARD)
        recorder.valid_share("bob", 2.0)
        await recorder.flush()
        self.assertEqual(recorder.waiting, 2)

        recorder.block_settled(block, False, "", None)
        await recorder.flush()

        self.assertEqual(recorder.waiting, 0)
        self.assertEqual(self.stats(), {"validShares": "2", "invalidBlocks": "1"})
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "1", "bob": "2"})
        for key in (self.keys.round(700), self.keys.blocks_pending, self.keys.blocks_found):
            self.assertFalse(self.exists(key), key)


class SchemeRoundTests(RecorderTestCase):
    """What a block's round holds under SOLO and PPLNS."""

    async def test_solo_block(self) -> None:
        """A solo miner's shares stay out of the shared round; his block's round is him alone."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 8.0)
        recorder.valid_share("sam", 4.0, solo=True)
        block = recorder.block_found("sam", 1234, REWARD, solo=True)
        recorder.block_settled(block, True, HASH_A, TXID_A)
        await recorder.flush()

        self.assertEqual(self.hash(self.keys.round(1234)), {"sam": "1"})
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "8"})
        self.assertEqual(self.hash(self.keys.block(HASH_A))["solo"], "1")
        self.assertEqual(self.stats(), {"validShares": "2", "validBlocks": "1"})

    async def test_pplns_window_crosses_rounds(self) -> None:
        """A PPLNS round is exactly the last <window> difficulty of shares before the block,
        reaching back past the previous block, the oldest share counted in part."""
        service = await self.connect()
        recorder = self.recorder(service.client, scheme="pplns", pplns_window=10.0)
        for worker, difficulty in [("old", 4.0), ("alice", 4.0), ("bob", 2.0)]:
            recorder.valid_share(worker, difficulty)
        first = recorder.block_found("bob", 100, REWARD)
        recorder.block_settled(first, True, HASH_A, TXID_A)
        await recorder.flush()  # one flush per segment, so the window spans several
        recorder.valid_share("carol", 1.0)
        await recorder.flush()
        recorder.valid_share("alice", 2.0)
        second = recorder.block_found("alice", 101, REWARD)
        recorder.block_settled(second, True, HASH_B, TXID_B)
        await recorder.flush()

        # The first block: everything so far (10 of 10).
        self.assertEqual(self.hash(self.keys.round(100)), {"bob": "2", "alice": "4", "old": "4"})
        # The second: alice 2, carol 1, bob 2, alice 4, and 1 of old's 4.
        expected = {"alice": "6", "carol": "1", "bob": "2", "old": "1"}
        self.assertEqual(self.hash(self.keys.round(101)), expected)
        self.assertFalse(self.exists(self.keys.round_current))
        # The log keeps only what a later window can reach: 10 back from the newest share.
        segments = self.redis("LRANGE", self.keys.share_log, 0, -1)
        self.assertEqual([s.split("\n")[0] for s in segments], ["2", "1", "10"])
        self.assertEqual(self.redis("GET", self.keys.share_log_total), "13")

    async def test_pplns_log_trimmed_without_blocks(self) -> None:
        """With no block for long, the share log still stays near one window."""
        service = await self.connect()
        recorder = self.recorder(service.client, scheme="pplns", pplns_window=5.0)
        for _ in range(20):
            recorder.valid_share("alice", 1.0)
            await recorder.flush()
        self.assertEqual(self.redis("LLEN", self.keys.share_log), 5)
        self.assertEqual(self.redis("GET", self.keys.share_log_total), "5")


class HashrateWindowTests(RecorderTestCase):
    """The hashrate set keeps only the window the stats read."""

    async def test_old_members_trimmed(self) -> None:
        """Members older than hashrate_window are removed at the next write; one exactly at the
        window's start stays."""
        service = await self.connect()
        recorder = self.recorder(service.client, hashrate_window=300.0)
        recorder.valid_share("alice", 1.0)
        recorder.invalid_share("alice", 1.0)
        await recorder.flush()

        self.now = NOW + 300.0
        recorder.valid_share("bob", 1.0)
        await recorder.flush()
        self.assertEqual(len(self.hashrate()), 3)

        self.now = NOW + 300.5
        recorder.valid_share("carol", 1.0)
        await recorder.flush()

        self.assertEqual([score for _, score in self.hashrate()], [NOW + 300.0, NOW + 300.5])
        self.assertEqual(self.hashrate_fields(), [(1.0, "bob"), (1.0, "carol")])
        # the counters and the round are not trimmed
        self.assertEqual(self.stats(), {"validShares": "3", "invalidShares": "1"})


class ExactlyOnceTests(RecorderTestCase):
    """A batch sent again is not counted again."""

    async def test_lost_reply(self) -> None:
        """A batch applied by Redis whose reply was lost is sent again, skipped, and every count
        stays exact."""
        service = await self.connect()
        runner = LostReplyRunner(service.client())
        recorder = self.recorder(lambda: runner)
        for _ in range(3):
            recorder.valid_share("alice", 2.0)
        block = recorder.block_found("alice", 800, REWARD)
        recorder.block_settled(block, True, HASH_A, TXID_A)
        recorder.valid_share("bob", 1.0)
        recorder.valid_share("bob", 1.0)
        recorder.invalid_share("carol", 1.0)

        with capturedLogs() as events:
            await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written), (7, 0))
        (warning,) = logged(events, LogLevel.warn)
        self.assertIn("the reply was lost", warning)
        self.assertIn("7 share records waiting", warning)
        self.assertEqual(self.stats()["validShares"], "5")  # it did run

        await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written), (0, 7))
        self.assertEqual(len(runner.calls), 2)
        self.assertEqual(runner.calls[0], runner.calls[1])
        self.assertEqual(self.stats(), {"validShares": "5", "invalidShares": "1", "validBlocks": "1"})
        self.assertEqual(self.hash(self.keys.round(800)), {"alice": "6"})
        self.assertEqual(self.hash(self.keys.round_current), {"bob": "2"})
        self.assertEqual(len(self.hashrate()), 6)
        self.assertEqual(len(self.redis("SMEMBERS", self.keys.blocks_pending)), 1)

        recorder.valid_share("bob", 1.0)
        await recorder.flush()
        self.assertEqual(self.hash(self.keys.round_current), {"bob": "3"})
        self.assertEqual([call[0] for call in runner.calls], [1, 1, 2])

    async def test_write_times_out(self) -> None:
        """A write Redis holds past WRITE_TIMEOUT is given up and sent again; Redis, resumed, runs
        both and counts the batch once."""
        self.patch(nomp.store.recorder, "WRITE_TIMEOUT", 0.3)
        server = RedisServer().start()
        self.addCleanup(server.stop)
        self.addCleanup(server.resume)
        self.server = server
        service = await self.connect(server)
        runner = CountingRunner(service.client())
        recorder = self.recorder(lambda: runner)
        for _ in range(4):
            recorder.valid_share("alice", 1.0)

        server.pause()
        with capturedLogs() as events:
            await recorder.flush()
            await recorder.flush()
        self.assertEqual((recorder.waiting, recorder.written), (4, 0))
        (warning,) = logged(events, LogLevel.warn)
        self.assertIn("TimeoutError", warning)
        self.assertEqual(len(runner.calls), 2)

        server.resume()
        await until(lambda: self.redis("EXISTS", self.keys.stats))
        recorder.valid_share("bob", 1.0)  # queued behind the resent batch
        await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written), (0, 5))
        self.assertEqual([call[0] for call in runner.calls], [1, 1, 1, 2])
        self.assertEqual(self.stats(), {"validShares": "5"})
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "4", "bob": "1"})
        self.assertEqual(len(self.hashrate()), 5)

    async def test_recorders_numbered_apart(self) -> None:
        """Two recorders of one coin number their batches apart: neither's batch is taken for the other's."""
        service = await self.connect()
        first = self.recorder(service.client)
        second = self.recorder(service.client)
        first.valid_share("alice", 1.0)
        second.valid_share("bob", 1.0)
        await first.flush()
        await second.flush()
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "1", "bob": "1"})
        numbers = self.redis("KEYS", self.keys.recorder("*"))
        self.assertEqual(len(numbers), 2)
        self.assertEqual([self.redis("GET", key) for key in numbers], ["1", "1"])
        self.assertGreater(self.redis("TTL", numbers[0]), 0)


class RedisAwayTests(RecorderTestCase):
    """While Redis is away the miners keep mining, up to the buffer's bound."""

    async def test_records_wait(self) -> None:
        """With no connection records wait, one warning says how many, valid shares raise
        RecorderFull at max_buffered, invalid ones are dropped, and all is written once Redis is back."""
        service = await self.connect()
        connected: list[ScriptRunner] = []
        recorder = self.recorder(lambda: connected[0] if connected else None, max_buffered=5)
        for _ in range(3):
            recorder.valid_share("alice", 1.0)

        with capturedLogs() as events:
            await recorder.flush()
            await recorder.flush()

        self.assertEqual(recorder.waiting, 3)
        (warning,) = logged(events, LogLevel.warn)  # not one per flush
        self.assertIn("Redis is not connected", warning)
        self.assertIn("3 share records waiting", warning)

        recorder.valid_share("alice", 1.0)
        recorder.invalid_share("bob", 1.0)
        self.assertEqual(recorder.waiting, 5)
        self.assertRaises(RecorderFull, recorder.valid_share, "alice", 1.0)
        recorder.invalid_share("bob", 1.0)  # dropped without a word
        self.assertEqual(recorder.waiting, 5)

        client = service.client()
        assert client is not None
        connected.append(client)
        with capturedLogs() as events:
            await recorder.flush()

        self.assertEqual(recorder.waiting, 0)
        (back,) = logged(events, LogLevel.info)
        self.assertIn("Redis is back", back)
        self.assertIn("writing 5 waiting records", back)
        self.assertEqual(self.stats(), {"validShares": "4", "invalidShares": "1"})
        recorder.valid_share("alice", 1.0)  # room again
        self.assertEqual(recorder.waiting, 1)


class RedisRestartTests(RecorderTestCase):
    """A redis-server restart during mining loses no share and counts none twice."""

    async def test_restart(self) -> None:
        """Shares recorded before, during and after a restart of a persistent Redis are all in it once."""
        server = RedisServer(persistent=True).start()
        self.addCleanup(server.stop)
        self.server = server
        service = await self.connect(server)
        recorder = self.recorder(service.client)
        expected = {"alice": 0.0, "bob": 0.0}

        def mine(shares: int) -> None:
            for i in range(shares):
                worker = "alice" if i % 2 else "bob"
                difficulty = 1.5 if i % 2 else 4.0
                recorder.valid_share(worker, difficulty)
                expected[worker] += difficulty

        mine(10)
        await recorder.flush()
        self.assertEqual(recorder.written, 10)

        mine(4)
        with capturedLogs() as events:
            writing = recorder.flush()  # the batch is on its way (in the socket's buffer) as Redis goes
            server.halt()
            await writing
            await until(lambda: service.client() is None)
            mine(6)
            recorder.invalid_share("carol", 2.0)
            await recorder.flush()
        self.assertEqual((recorder.waiting, recorder.written), (11, 10))
        (warning,) = logged(events, LogLevel.warn)
        self.assertIn("4 share records waiting", warning)  # the batch that failed

        server.start()
        await until(lambda: service.client() is not None)
        mine(5)
        while recorder.waiting:
            await recorder.flush()
            if recorder.waiting:
                await task.deferLater(reactor, 0.1)

        self.assertEqual(recorder.written, 26)
        self.assertEqual(self.stats(), {"validShares": "25", "invalidShares": "1"})
        self.assertEqual(
            {worker: float(total) for worker, total in self.hash(self.keys.round_current).items()},
            expected,
        )
        self.assertEqual(len(self.hashrate()), 26)


class RecorderServiceTests(RecorderTestCase):
    """RecorderService flushes on its timer and drains at stop."""

    def start(self, recorder: ShareRecorder) -> RecorderService:
        service = RecorderService(recorder, CLOCK)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    async def test_flushes_on_timer(self) -> None:
        """Started, the service writes queued records on its timer without anyone calling flush."""
        redis = await self.connect()
        recorder = self.recorder(redis.client)
        self.start(recorder)
        for _ in range(3):
            recorder.valid_share("alice", 1.0)
        await until(lambda: recorder.waiting == 0, timeout=5)
        self.assertEqual(self.stats(), {"validShares": "3"})

        recorder.valid_share("bob", 2.0)
        await until(lambda: recorder.waiting == 0, timeout=5)
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "3", "bob": "2"})

    async def test_stop_drains(self) -> None:
        """stopService writes every waiting record before it returns, waiting for Redis to come back
        and for a block in flight to settle."""
        redis = await self.connect()
        client = redis.client()
        assert client is not None
        connected: list[ScriptRunner] = []
        recorder = self.recorder(lambda: connected[0] if connected else None)
        service = self.start(recorder)
        for _ in range(5):
            recorder.valid_share("alice", 1.0)
        block = recorder.block_found("alice", 900, REWARD)
        recorder.valid_share("bob", 1.0)
        recorder.valid_share("bob", 1.0)
        reactor.callLater(0.5, connected.append, client)
        reactor.callLater(1.0, recorder.block_settled, block, True, HASH_A, TXID_A)

        await service.stopService()

        self.assertEqual(recorder.waiting, 0)
        self.assertEqual(self.stats(), {"validShares": "7", "validBlocks": "1"})
        self.assertEqual(self.hash(self.keys.round(900)), {"alice": "5"})
        self.assertEqual(self.hash(self.keys.round_current), {"bob": "2"})

    async def test_tree_drains_before_redis_goes(self) -> None:
        """In a tree shaped like nomp.tap's (Redis first, then the pool), stopping the root writes
        every record, a block answered during the stop included, before the connection closes."""
        root = OrderedMultiService()
        redis = RedisService(RedisConfig(port=self.server.port, db=DB))
        redis.setServiceParent(root)
        pool = OrderedMultiService()
        pool.setServiceParent(root)
        recorder = self.recorder(redis.client)
        RecorderService(recorder, CLOCK).setServiceParent(pool)
        root.startService()
        self.addCleanup(lambda: root.stopService() if root.running else None)
        await until(lambda: redis.client() is not None)
        for _ in range(5):
            recorder.valid_share("alice", 1.0)
        block = recorder.block_found("alice", 950, REWARD)
        for _ in range(3):
            recorder.valid_share("bob", 1.0)
        reactor.callLater(0.3, recorder.block_settled, block, True, HASH_A, TXID_A)

        with capturedLogs() as events:
            await root.stopService()

        self.assertEqual(recorder.waiting, 0)
        self.assertEqual(logged(events, LogLevel.warn) + logged(events, LogLevel.error), [])
        self.assertEqual(self.stats(), {"validShares": "8", "validBlocks": "1"})
        self.assertEqual(self.hash(self.keys.round(950)), {"alice": "5"})
        self.assertEqual(self.hash(self.keys.round_current), {"bob": "3"})

    async def test_stop_gives_up(self) -> None:
        """With Redis gone, stopService gives up after DRAIN_TIMEOUT and logs an error saying how many
        records are lost."""
        self.patch(nomp.store.service, "DRAIN_TIMEOUT", 0.5)
        recorder = self.recorder(lambda: None)
        service = self.start(recorder)
        for _ in range(3):
            recorder.valid_share("alice", 1.0)

        started = CLOCK.seconds()
        with capturedLogs() as events:
            await service.stopService()

        self.assertLess(CLOCK.seconds() - started, 5)
        self.assertEqual(recorder.waiting, 3)
        (error,) = logged(events, LogLevel.error)
        self.assertIn("3 share records could not be written to Redis before exit", error)
        self.assertIn(self.keys.coin, error)
