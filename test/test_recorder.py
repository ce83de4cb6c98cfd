"""ShareRecorder and RecorderService against a real redis-server.

NOMP's keys as its stats and payment code read them, one script call per
batch, block candidates closing their rounds where they stand among the
shares and settled later, exactly-once writes when a reply is lost, batches
Redis refuses set aside, and Redis going away and coming back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet import defer, reactor, task, threads
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

import nomp.store.batches
import nomp.store.service
from nomp.candidate import BlockCandidate
from nomp.config import RedisConfig
from nomp.payments.rounds import PROP, SOLO, pplns
from nomp.services import OrderedMultiService
from nomp.store.client import RedisClient, RedisUnavailable
from nomp.store.recorder import RecorderFull, ShareRecorder
from nomp.store.redis import RedisService
from nomp.store.schema import PoolKeys, StoredCandidate, decode_candidate, decode_set_aside
from nomp.store.service import RecorderService
from test.candidates import REWARD, candidate
from test.redisservice import connected_redis_service
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
HASH_C = "cc" * 32


def logged(events: Sequence[LogEvent], level: LogLevel) -> list[str]:
    """The formatted messages of ``level`` among captured events."""
    return [formatEvent(event) for event in events if event.get("log_level") == level]


class CountingRunner:
    """A Redis client that counts its script calls and keeps their arguments."""

    def __init__(self, client: RedisClient | None) -> None:
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

    def batch_numbers(self) -> list[int]:
        """The batch number of each call of the recorder's script (not the set-aside pushes)."""
        return [int(call[0]) for call in self.calls if len(call) > 1]


class LostReplyRunner(CountingRunner):
    """Runs each script for real, but reports the first ``lose`` calls as
    failed, as if Redis's reply had been lost on the way back."""

    def __init__(self, client: RedisClient | None, lose: int = 1) -> None:
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

    def recorder(self, redis: Callable[[], RedisClient | None], **options: Any) -> ShareRecorder:
        options.setdefault("round_policy", PROP)
        return ShareRecorder(self.keys, redis, CLOCK, wall_clock=self.wall_clock, **options)

    def candidate(self, block_hash: str, height: int, worker: str, **fields: Any) -> BlockCandidate:
        """A candidate found now (the test's wall clock)."""
        return candidate(block_hash, height, worker, self.now, **fields)

    def candidates(self) -> dict[str, StoredCandidate]:
        """blocksCandidates, decoded."""
        return {h: decode_candidate(h, v) for h, v in self.hash(self.keys.blocks_candidates).items()}

    async def connect(self, server: RedisServer | None = None) -> RedisService:
        """nomp's RedisService, started and connected."""
        return await connected_redis_service(self, (server or self.server).port, DB)

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
        recorder.block_found(self.candidate(HASH_A, 100, "alice", txid=TXID_A))  # starts a flush
        recorder.block_settled(HASH_A, True)
        for _ in range(3):
            recorder.valid_share("alice", 2.0)
        recorder.invalid_share("alice", 1.0)

        await recorder.flush()  # waits for the running one, which writes all of it

        numbered = {keys[0] for keys in runner.keys}
        self.assertEqual(len(numbered), 1)
        self.assertEqual(runner.batch_numbers(), [1, 2, 3, 4])
        self.assertEqual(runner.record_kinds(), ["s", "s", "s", "s", "c", "a", "s", "s", "s", "i"])
        self.assertEqual(self.redis("GET", numbered.pop()), "4")
        self.assertEqual(self.hash(self.keys.round(100)), {"alice": "4"})
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "6"})
        self.assertEqual(self.stats(), {"validShares": "7", "invalidShares": "1", "validBlocks": "1"})
        self.assertEqual((recorder.waiting, recorder.written), (0, 10))


class BlockTests(RecorderTestCase):
    """Block candidates close their round where they stand; the daemon's answer settles them."""

    async def test_candidate_closes_round(self) -> None:
        """A candidate renames the round of the shares before it and waits in blocksCandidates;
        the shares behind it go to the next round, with no settlement yet."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 8.0)
        recorder.valid_share("bob", 4.0)
        durable = recorder.block_found(
            self.candidate(HASH_A, 1234, "bob", txid=TXID_A, network_difficulty=48.0)
        )
        self.now += 1.5  # the daemon answers later; the block keeps the time it was found
        recorder.valid_share("alice", 2.0)
        recorder.invalid_share("carol", 1.0)

        await recorder.flush()

        self.assertTrue(await durable)
        self.assertEqual((recorder.waiting, recorder.written), (0, 5))
        round_key = self.keys.round(1234)
        self.assertEqual(round_key, f"{self.keys.coin}:shares:round1234")
        self.assertEqual(self.hash(round_key), {"alice": "8", "bob": "4"})
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "2"})
        self.assertEqual(self.stats(), {"validShares": "3", "invalidShares": "1"})
        self.assertFalse(self.exists(self.keys.blocks_pending))
        self.assertFalse(self.exists(self.keys.block(HASH_A)))
        self.assertEqual(self.redis("SMEMBERS", self.keys.blocks_found), [HASH_A])
        (stored,) = self.candidates().values()
        self.assertEqual(
            stored,
            StoredCandidate(
                block_hash=HASH_A,
                coinbase_txid=TXID_A,
                height=1234,
                worker="bob",
                reward=REWARD,
                solo=False,
                network_difficulty=48.0,
                found_at=int(NOW * 1000) / 1000,
                round_key=round_key,
                round_shares=12.0,
                pending_member=f"{HASH_A}:{TXID_A}:1234:bob:{MS}",
                recorder=stored.recorder,
            ),
        )

    async def test_accepted_block(self) -> None:
        """Accepted, a candidate becomes a block in NOMP's keys: blocksPending, its block hash,
        validBlocks; it leaves blocksCandidates."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 8.0)
        recorder.valid_share("bob", 4.0)
        recorder.block_found(self.candidate(HASH_A, 1234, "bob", txid=TXID_A, network_difficulty=48.0))
        recorder.valid_share("alice", 2.0)
        await recorder.flush()

        self.now += 1.5
        recorder.block_settled(HASH_A, True)
        await recorder.flush()

        round_key = self.keys.round(1234)
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
        self.assertEqual(self.stats(), {"validShares": "3", "validBlocks": "1"})
        self.assertEqual(self.candidates(), {})

    async def test_unknown_txid(self) -> None:
        """A candidate without a coinbase txid is recorded with NOMP's "-" in its members."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 1.0)
        recorder.block_found(self.candidate(HASH_A, 10, "alice"))
        recorder.block_settled(HASH_A, True)
        await recorder.flush()
        self.assertEqual(self.redis("SMEMBERS", self.keys.blocks_pending), [f"{HASH_A}:-:10:alice:{MS}"])
        self.assertEqual(self.hash(self.keys.block(HASH_A))["txid"], "-")

    async def test_slow_settlement_does_not_hold_shares(self) -> None:
        """While the daemon has not answered, the shares behind a candidate are written at every
        flush: nothing waits for the answer."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 1.0)
        recorder.block_found(self.candidate(HASH_A, 300, "alice"))
        for batch in range(3):
            recorder.valid_share("bob", 1.0)
            await recorder.flush()
            self.assertEqual(recorder.waiting, 0)
            self.assertEqual(self.hash(self.keys.round_current), {"bob": str(batch + 1)})
        self.assertEqual(self.stats(), {"validShares": "4"})
        self.assertEqual(list(self.candidates()), [HASH_A])

    async def test_candidate_written_at_once(self) -> None:
        """block_found sends its record at once, without waiting for a flush, and its Deferred
        fires True only once the candidate is in blocksCandidates."""
        service = await self.connect()
        runner = CountingRunner(service.client())
        recorder = self.recorder(lambda: runner)
        recorder.valid_share("alice", 1.0)
        seen: list[tuple[bool, int]] = []
        durable = recorder.block_found(self.candidate(HASH_A, 400, "alice"), timeout=5.0)
        durable.addCallback(
            lambda ok: seen.append((ok, self.redis("HEXISTS", self.keys.blocks_candidates, HASH_A)))
        )
        self.assertEqual(runner.record_kinds(), ["s", "c"])  # sent before anyone flushed
        await until(lambda: bool(seen))
        self.assertEqual(seen, [(True, 1)])

    async def test_candidate_while_redis_away(self) -> None:
        """With Redis away, block_found's Deferred fires False after its timeout; the candidate
        stays queued and lands, closing its round at its place, once Redis is back."""
        service = await self.connect()
        connected: list[RedisClient] = []
        recorder = self.recorder(lambda: connected[0] if connected else None)
        recorder.valid_share("alice", 1.0)
        started = CLOCK.seconds()
        durable = recorder.block_found(self.candidate(HASH_A, 500, "alice"), timeout=0.3)
        recorder.valid_share("bob", 1.0)

        self.assertFalse(await durable)
        self.assertGreaterEqual(CLOCK.seconds() - started, 0.29)
        self.assertEqual(recorder.waiting, 3)
        self.assertFalse(self.exists(self.keys.blocks_candidates))

        client = service.client()
        assert client is not None
        connected.append(client)
        await recorder.flush()

        self.assertEqual(recorder.waiting, 0)
        self.assertEqual(list(self.candidates()), [HASH_A])
        self.assertEqual(self.hash(self.keys.round(500)), {"alice": "1"})
        self.assertEqual(self.hash(self.keys.round_current), {"bob": "1"})

    async def test_second_block_at_same_height(self) -> None:
        """A second block at a height already recorded gets a round key with its hash instead of
        overwriting the first block's round."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 1.0)
        recorder.block_found(self.candidate(HASH_A, 500, "alice", txid=TXID_A))
        recorder.block_settled(HASH_A, True)
        recorder.valid_share("bob", 3.0)
        recorder.block_found(self.candidate(HASH_B, 500, "bob", txid=TXID_B))
        recorder.block_settled(HASH_B, True)
        recorder.valid_share("carol", 1.0)

        await recorder.flush()

        second_round = self.keys.round_taken(500, HASH_B)
        self.assertEqual(second_round, f"{self.keys.round(500)}:{HASH_B}")
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
        recorder.block_found(self.candidate(HASH_A, 600, "alice", txid=TXID_A))
        recorder.block_settled(HASH_A, True)
        recorder.valid_share("bob", 2.0)
        await recorder.flush()

        recorder.block_found(self.candidate(HASH_A, 600, "bob", txid=TXID_A))
        recorder.block_settled(HASH_A, True)
        recorder.valid_share("carol", 1.0)
        await recorder.flush()

        self.assertEqual(recorder.waiting, 0)
        self.assertEqual(self.stats(), {"validShares": "3", "validBlocks": "1"})
        self.assertEqual(
            self.redis("SMEMBERS", self.keys.blocks_pending), [f"{HASH_A}:{TXID_A}:600:alice:{MS}"]
        )
        self.assertEqual(self.hash(self.keys.round(600)), {"alice": "1"})
        self.assertFalse(self.exists(self.keys.round_taken(600, HASH_A)))
        self.assertEqual(self.hash(self.keys.round_current), {"bob": "2", "carol": "1"})
        self.assertEqual(self.hash(self.keys.block(HASH_A))["worker"], "alice")
        self.assertEqual(self.candidates(), {})

    async def test_refused_block_reopens_round(self) -> None:
        """A block the daemon refused counts in invalidBlocks and its PROP round is reopened: its
        shares go back into the current round, with those found since."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 1.0)
        recorder.valid_share("bob", 0.5)
        recorder.block_found(self.candidate(HASH_A, 700, "alice"))
        recorder.valid_share("bob", 2.0)
        await recorder.flush()
        self.assertEqual(self.hash(self.keys.round(700)), {"alice": "1", "bob": "0.5"})

        recorder.block_settled(HASH_A, False)
        await recorder.flush()

        self.assertEqual(recorder.waiting, 0)
        self.assertEqual(self.stats(), {"validShares": "3", "invalidBlocks": "1"})
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "1", "bob": "2.5"})
        for key in (self.keys.round(700), self.keys.blocks_pending, self.keys.block(HASH_A)):
            self.assertFalse(self.exists(key), key)
        self.assertEqual(self.candidates(), {})
        self.assertEqual(self.redis("SMEMBERS", self.keys.blocks_found), [HASH_A])  # never recorded again

    async def test_refused_in_the_same_batch(self) -> None:
        """A candidate refused in the batch that closed its round leaves the round as if it had
        never closed."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 1.0)
        self.assertEqual(recorder.waiting, 1)
        recorder.block_found(self.candidate(HASH_A, 710, "alice"), timeout=5.0)
        recorder.block_settled(HASH_A, False)
        recorder.valid_share("bob", 1.0)
        await recorder.flush()
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "1", "bob": "1"})
        self.assertFalse(self.exists(self.keys.round(710)))

    async def test_settled_twice(self) -> None:
        """A settlement sent again (after a crash, by a new recorder) changes nothing, whichever
        answer it carries."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 1.0)
        recorder.block_found(self.candidate(HASH_A, 800, "alice", txid=TXID_A))
        recorder.valid_share("bob", 1.0)
        recorder.block_found(self.candidate(HASH_B, 801, "bob", txid=TXID_B))
        recorder.valid_share("carol", 1.0)
        recorder.block_settled(HASH_A, True)
        recorder.block_settled(HASH_B, False)
        await recorder.flush()
        keys = (self.keys.stats, self.keys.round_current, self.keys.round(800), self.keys.block(HASH_A))
        before = [self.hash(key) for key in keys]
        pending = self.redis("SMEMBERS", self.keys.blocks_pending)

        again = self.recorder(service.client)
        for accepted in (True, False):
            again.block_settled(HASH_A, accepted)
            again.block_settled(HASH_B, accepted)
        await again.flush()

        self.assertEqual(again.written, 4)
        self.assertEqual([self.hash(key) for key in keys], before)
        self.assertEqual(self.redis("SMEMBERS", self.keys.blocks_pending), pending)
        self.assertEqual(before[0], {"validShares": "3", "validBlocks": "1", "invalidBlocks": "1"})
        self.assertEqual(before[1], {"bob": "1", "carol": "1"})
        self.assertFalse(self.exists(self.keys.round(801)))
        self.assertFalse(self.exists(self.keys.block(HASH_B)))

    async def test_unsettled_candidates(self) -> None:
        """unsettled_candidates lists the candidates no settlement reached, lowest height first,
        from a recorder of its own (as a process just started would)."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 1.0)
        recorder.block_found(self.candidate(HASH_B, 901, "alice"))
        recorder.block_found(self.candidate(HASH_A, 900, "bob", txid=TXID_A, solo=True))
        recorder.block_found(self.candidate(HASH_C, 902, "carol"))
        recorder.block_settled(HASH_C, True)
        await recorder.flush()

        fresh = self.recorder(service.client)
        unsettled = await fresh.unsettled_candidates()

        self.assertEqual([(c.block_hash, c.height) for c in unsettled], [(HASH_A, 900), (HASH_B, 901)])
        solo = unsettled[0]
        self.assertEqual((solo.worker, solo.coinbase_txid, solo.solo), ("bob", TXID_A, True))
        self.assertEqual(solo.found_at, int(NOW * 1000) / 1000)
        self.assertEqual(self.hash(solo.round_key), {"bob": "1"})
        self.assertEqual(unsettled[1].coinbase_txid, "")
        self.assertEqual(self.hash(unsettled[1].round_key), {"alice": "1"})

        for block in unsettled:
            fresh.block_settled(block.block_hash, True)
        await fresh.flush()
        self.assertEqual(await fresh.unsettled_candidates(), [])
        self.assertEqual(len(self.redis("SMEMBERS", self.keys.blocks_pending)), 3)

    async def test_unreadable_candidate_skipped(self) -> None:
        """An entry of blocksCandidates that is not a candidate is logged as a failure and left
        there; the others are still listed."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.block_found(self.candidate(HASH_A, 900, "alice"))
        await recorder.flush()
        self.redis("HSET", self.keys.blocks_candidates, HASH_B, "{not json")
        with capturedLogs() as events:
            unsettled = await recorder.unsettled_candidates()
        self.assertEqual([c.block_hash for c in unsettled], [HASH_A])
        (failure,) = logged(events, LogLevel.critical)
        self.assertIn(HASH_B, failure)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(sorted(self.hash(self.keys.blocks_candidates)), [HASH_A, HASH_B])

    async def test_unsettled_candidates_errors(self) -> None:
        """unsettled_candidates raises while Redis is away and when Redis refuses the read."""
        service = await self.connect()
        away = self.recorder(lambda: None)
        with self.assertRaises(RedisUnavailable):
            await away.unsettled_candidates()
        self.redis("SET", self.keys.blocks_candidates, "not a hash")
        recorder = self.recorder(service.client)
        with self.assertRaises(Exception) as raised:
            await recorder.unsettled_candidates()
        self.assertIn("WRONGTYPE", str(raised.exception))


class SchemeRoundTests(RecorderTestCase):
    """What a block's round holds under SOLO and PPLNS."""

    async def test_solo_block(self) -> None:
        """A solo miner's shares stay out of the shared round; his block's round is him alone."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 8.0)
        recorder.valid_share("sam", 4.0, solo=True)
        recorder.block_found(self.candidate(HASH_A, 1234, "sam", solo=True))
        recorder.block_settled(HASH_A, True)
        await recorder.flush()

        self.assertEqual(self.hash(self.keys.round(1234)), {"sam": "1"})
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "8"})
        self.assertEqual(self.hash(self.keys.block(HASH_A))["solo"], "1")
        self.assertEqual(self.stats(), {"validShares": "2", "validBlocks": "1"})

    async def test_solo_block_refused(self) -> None:
        """A refused solo block's round is deleted; the shared round is untouched."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("alice", 8.0)
        recorder.block_found(self.candidate(HASH_A, 1235, "sam", solo=True))
        await recorder.flush()
        self.assertEqual(self.hash(self.keys.round(1235)), {"sam": "1"})
        recorder.block_settled(HASH_A, False)
        await recorder.flush()
        self.assertFalse(self.exists(self.keys.round(1235)))
        self.assertEqual(self.hash(self.keys.round_current), {"alice": "8"})
        self.assertEqual(self.stats(), {"validShares": "1", "invalidBlocks": "1"})

    async def test_solo_scheme(self) -> None:
        """Under the SOLO policy every block's round is its finder alone."""
        service = await self.connect()
        recorder = self.recorder(service.client, round_policy=SOLO)
        recorder.valid_share("sam", 4.0, solo=True)
        recorder.block_found(self.candidate(HASH_A, 50, "sam"))
        recorder.block_settled(HASH_A, True)
        await recorder.flush()
        self.assertEqual(self.hash(self.keys.round(50)), {"sam": "1"})
        self.assertFalse(self.exists(self.keys.round_current))

    async def test_pplns_window_crosses_rounds(self) -> None:
        """A PPLNS round is exactly the last <window> difficulty of shares before the block,
        reaching back past the previous block, the oldest share counted in part."""
        service = await self.connect()
        recorder = self.recorder(service.client, round_policy=pplns(10.0))
        for worker, difficulty in [("old", 4.0), ("alice", 4.0), ("bob", 2.0)]:
            recorder.valid_share(worker, difficulty)
        recorder.block_found(self.candidate(HASH_A, 100, "bob", txid=TXID_A))
        recorder.block_settled(HASH_A, True)
        await recorder.flush()  # one flush per segment, so the window spans several
        recorder.valid_share("carol", 1.0)
        await recorder.flush()
        recorder.valid_share("alice", 2.0)
        recorder.block_found(self.candidate(HASH_B, 101, "alice", txid=TXID_B))
        recorder.block_settled(HASH_B, True)
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

    async def test_pplns_candidate_refused(self) -> None:
        """A refused PPLNS candidate's round is deleted and the share log keeps its shares, so
        the next block's window still counts them."""
        service = await self.connect()
        recorder = self.recorder(service.client, round_policy=pplns(10.0))
        recorder.valid_share("alice", 4.0)
        recorder.block_found(self.candidate(HASH_A, 100, "alice"))
        await recorder.flush()
        self.assertEqual(self.hash(self.keys.round(100)), {"alice": "4"})
        self.assertEqual(list(self.candidates()), [HASH_A])

        recorder.block_settled(HASH_A, False)
        recorder.valid_share("bob", 2.0)
        recorder.block_found(self.candidate(HASH_B, 100, "bob"))
        recorder.block_settled(HASH_B, True)
        await recorder.flush()

        self.assertEqual(self.hash(self.keys.round(100)), {"alice": "4", "bob": "2"})
        self.assertEqual(self.hash(self.keys.block(HASH_B))["round"], self.keys.round(100))
        self.assertEqual(self.stats(), {"validShares": "2", "validBlocks": "1", "invalidBlocks": "1"})
        self.assertEqual(self.candidates(), {})

    async def test_pplns_log_trimmed_without_blocks(self) -> None:
        """With no block for long, the share log still stays near one window."""
        service = await self.connect()
        recorder = self.recorder(service.client, round_policy=pplns(5.0))
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
        runner = LostReplyRunner(service.client(), lose=0)
        recorder = self.recorder(lambda: runner)
        recorder.valid_share("dave", 1.0)
        await recorder.flush()  # Redis has answered: a failure now is an outage's warning
        runner.lose = 1
        for _ in range(3):
            recorder.valid_share("alice", 2.0)
        recorder.block_found(self.candidate(HASH_A, 800, "alice", txid=TXID_A), timeout=5.0)
        recorder.block_settled(HASH_A, True)
        recorder.valid_share("bob", 1.0)
        recorder.valid_share("bob", 1.0)
        recorder.invalid_share("carol", 1.0)

        with capturedLogs() as events:
            await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written), (8, 1))
        (warning,) = logged(events, LogLevel.warn)
        self.assertIn("the reply was lost", warning)
        self.assertIn("8 share records waiting", warning)
        self.assertEqual(self.stats()["validShares"], "4")  # it did run
        self.assertEqual(list(self.candidates()), [HASH_A])

        await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written), (0, 9))
        self.assertEqual(runner.batch_numbers(), [1, 2, 2, 3])
        self.assertEqual(runner.calls[1], runner.calls[2])
        self.assertEqual(self.stats(), {"validShares": "6", "invalidShares": "1", "validBlocks": "1"})
        self.assertEqual(self.hash(self.keys.round(800)), {"dave": "1", "alice": "6"})
        self.assertEqual(self.hash(self.keys.round_current), {"bob": "2"})
        self.assertEqual(len(self.hashrate()), 7)
        self.assertEqual(len(self.redis("SMEMBERS", self.keys.blocks_pending)), 1)

        recorder.valid_share("bob", 1.0)
        await recorder.flush()
        self.assertEqual(self.hash(self.keys.round_current), {"bob": "3"})
        self.assertEqual(runner.batch_numbers(), [1, 2, 2, 3, 4])

    async def test_write_times_out(self) -> None:
        """A write Redis holds past WRITE_TIMEOUT is given up and sent again; Redis, resumed, runs
        both and counts the batch once."""
        self.patch(nomp.store.batches, "WRITE_TIMEOUT", 0.3)
        server = RedisServer().start()
        self.addCleanup(server.stop)
        self.addCleanup(server.resume)
        self.server = server
        service = await self.connect(server)
        runner = CountingRunner(service.client())
        recorder = self.recorder(lambda: runner)
        recorder.valid_share("carol", 1.0)
        await recorder.flush()
        for _ in range(4):
            recorder.valid_share("alice", 1.0)

        server.pause()
        with capturedLogs() as events:
            await recorder.flush()
            await recorder.flush()
        self.assertEqual((recorder.waiting, recorder.written), (4, 1))
        (warning,) = logged(events, LogLevel.warn)
        self.assertIn("TimeoutError", warning)
        self.assertEqual(len(runner.calls), 3)

        server.resume()
        await until(lambda: self.redis("HGET", self.keys.stats, "validShares") == "5")
        recorder.valid_share("bob", 1.0)  # queued behind the resent batch
        await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written), (0, 6))
        self.assertEqual(runner.batch_numbers(), [1, 2, 2, 2, 3])
        self.assertEqual(self.stats(), {"validShares": "6"})
        self.assertEqual(self.hash(self.keys.round_current), {"carol": "1", "alice": "4", "bob": "1"})
        self.assertEqual(len(self.hashrate()), 6)

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


class RefusedReplyRunner(CountingRunner):
    """Fails the set-aside pushes (the one-command scripts) while ``away``, as if
    Redis went away between refusing a batch and taking the refused batch's entry."""

    def __init__(self, client: RedisClient | None) -> None:
        super().__init__(client)
        self.away = True

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        if self.away and "RPUSH" in script:
            self.calls.append(list(args))
            self.keys.append(list(keys))
            return defer.fail(ConnectionError("connection lost"))
        return super().eval(script, keys, args)


class SetAsideTests(RecorderTestCase):
    """A batch Redis refuses is set aside in a list, and the queue moves on."""

    async def test_refused_batch_set_aside(self) -> None:
        """A script error (a key of the wrong type) is one error line; the batch's records go to
        <coin>:recorder:setAside with the reason, nothing of it is half written, and the records
        behind it are written."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("zoe", 1.0)
        await recorder.flush()
        self.redis("DEL", self.keys.stats)
        self.redis("SET", self.keys.stats, "x")  # HINCRBY would fail half way through
        recorder.valid_share("alice", 1.0)
        recorder.invalid_share("bob", 2.0)
        records_before = len(self.hashrate())

        with capturedLogs() as events:
            await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written, recorder.set_aside), (0, 1, 2))
        (error,) = logged(events, LogLevel.error)
        self.assertIn("refused a batch of 2 share records", error)
        self.assertIn("WRONGTYPE", error)
        self.assertIn(self.keys.recorder_set_aside, error)
        self.assertEqual(logged(events, LogLevel.warn), [])
        (entry,) = [decode_set_aside(e) for e in self.redis("LRANGE", self.keys.recorder_set_aside, 0, -1)]
        self.assertIn("WRONGTYPE", entry.reason)
        self.assertIn(self.keys.stats, entry.reason)
        self.assertEqual(entry.time, NOW)
        self.assertEqual(entry.batch, 2)
        self.assertEqual([r.split("\t")[0] for r in entry.records], ["s", "i"])
        self.assertEqual(len(self.hashrate()), records_before)  # checked before anything was written
        self.assertEqual(self.hash(self.keys.round_current), {"zoe": "1"})

        self.redis("DEL", self.keys.stats)
        recorder.valid_share("carol", 1.0)
        await recorder.flush()
        self.assertEqual((recorder.waiting, recorder.written, recorder.set_aside), (0, 2, 2))
        self.assertEqual(self.stats(), {"validShares": "1"})
        self.assertEqual(self.hash(self.keys.round_current), {"zoe": "1", "carol": "1"})

    async def test_refused_candidate(self) -> None:
        """block_found's Deferred fires False when the candidate's batch is set aside."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        self.redis("SET", self.keys.blocks_candidates, "x")
        recorder.valid_share("alice", 1.0)
        durable = recorder.block_found(self.candidate(HASH_A, 10, "alice"), timeout=5.0)
        with capturedLogs():
            self.assertFalse(await durable)
        self.assertEqual(recorder.set_aside, 2)
        await recorder.flush()
        (entry,) = self.redis("LRANGE", self.keys.recorder_set_aside, 0, -1)
        self.assertEqual(
            [r.split("\t")[:2] for r in decode_set_aside(entry).records], [["s", "alice"], ["c", HASH_A]]
        )

    async def test_set_aside_kept_while_redis_away(self) -> None:
        """If the refused batch's entry cannot be written (Redis went away), it is kept in memory,
        counted as waiting, the queue still moves on, and a later flush writes it."""
        service = await self.connect()
        runner = RefusedReplyRunner(service.client())
        recorder = self.recorder(lambda: runner)
        recorder.valid_share("zoe", 1.0)
        await recorder.flush()
        self.redis("SET", self.keys.hashrate, "x")
        recorder.valid_share("alice", 1.0)
        with capturedLogs() as events:
            await recorder.flush()
        self.assertEqual((recorder.waiting, recorder.set_aside), (1, 1))
        self.assertIn("connection lost", "".join(logged(events, LogLevel.warn)))
        self.assertFalse(self.exists(self.keys.recorder_set_aside))

        self.redis("DEL", self.keys.hashrate)
        recorder.valid_share("bob", 1.0)
        with capturedLogs():
            await recorder.flush()  # the push fails again, the share goes
        self.assertEqual((recorder.waiting, recorder.written), (1, 2))
        self.assertEqual(self.hash(self.keys.round_current), {"zoe": "1", "bob": "1"})

        runner.away = False
        await recorder.flush()
        self.assertEqual(recorder.waiting, 0)
        (entry,) = self.redis("LRANGE", self.keys.recorder_set_aside, 0, -1)
        self.assertEqual(decode_set_aside(entry).records[0].split("\t")[1], "alice")

    async def test_malformed_records_set_aside(self) -> None:
        """Records the script cannot read (a worker name with a tab slipped through) are refused
        before anything is written, and set aside."""
        service = await self.connect()
        recorder = self.recorder(service.client)
        recorder.valid_share("al\tice", 1.0)
        with capturedLogs() as events:
            await recorder.flush()
        self.assertEqual((recorder.waiting, recorder.set_aside), (0, 1))
        self.assertIn("malformed record", logged(events, LogLevel.error)[0])
        self.assertFalse(self.exists(self.keys.stats))

    async def test_busy_redis_is_an_outage(self) -> None:
        """A BUSY answer (another client's long script) is Redis unavailable for a moment, not a
        refusal: the batch waits and is written once the script is over, nothing set aside."""
        server = RedisServer().start()
        self.addCleanup(server.stop)
        self.server = server
        server.command("CONFIG", "SET", "busy-reply-threshold", "20")
        service = await self.connect(server)
        recorder = self.recorder(service.client)
        recorder.valid_share("zoe", 1.0)
        await recorder.flush()
        spin = (
            "local t = redis.call('TIME') local start = t[1] * 1e6 + t[2] "
            "while true do t = redis.call('TIME') if t[1] * 1e6 + t[2] - start > 1e6 then break end end"
        )
        busy = threads.deferToThread(server.command, "EVAL", spin, 0)
        await task.deferLater(reactor, 0.2)
        recorder.valid_share("alice", 1.0)
        with capturedLogs() as events:
            await recorder.flush()
        self.assertEqual((recorder.waiting, recorder.set_aside), (1, 0))
        self.assertIn("BUSY", logged(events, LogLevel.warn)[0])
        await busy
        await recorder.flush()
        self.assertEqual(recorder.waiting, 0)
        self.assertEqual(self.stats(), {"validShares": "2"})


class RedisAwayTests(RecorderTestCase):
    """While Redis is away the miners keep mining, up to the buffer's bound."""

    async def test_records_wait(self) -> None:
        """With no connection records wait, one warning says how many, valid shares raise
        RecorderFull at max_buffered, invalid ones are dropped, and all is written once Redis is back."""
        service = await self.connect()
        client = service.client()
        assert client is not None
        connected: list[RedisClient] = [client]
        recorder = self.recorder(lambda: connected[0] if connected else None, max_buffered=5)
        recorder.valid_share("zoe", 1.0)
        await recorder.flush()
        connected.clear()
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

        connected.append(client)
        with capturedLogs() as events:
            await recorder.flush()

        self.assertEqual(recorder.waiting, 0)
        (back,) = logged(events, LogLevel.info)
        self.assertIn("Redis is back", back)
        self.assertIn("writing 5 waiting records", back)
        self.assertEqual(self.stats(), {"validShares": "5", "invalidShares": "1"})
        recorder.valid_share("alice", 1.0)  # room again
        self.assertEqual(recorder.waiting, 1)

    async def test_waiting_at_start(self) -> None:
        """Before Redis has ever answered (the pool starting), waiting for it is an info line, not a
        warning; its first answer says so."""
        service = await self.connect()
        connected: list[RedisClient] = []
        recorder = self.recorder(lambda: connected[0] if connected else None)
        recorder.valid_share("alice", 1.0)
        with capturedLogs() as events:
            await recorder.flush()
            client = service.client()
            assert client is not None
            connected.append(client)
            await recorder.flush()
        self.assertEqual(logged(events, LogLevel.warn), [])
        waiting, answered = logged(events, LogLevel.info)
        self.assertIn("waiting for it", waiting)
        self.assertIn("answered after", answered)
        self.assertEqual(recorder.waiting, 0)

    async def test_unexpected_error_logged(self) -> None:
        """An error that is neither Redis away nor a refusal (a bug) is logged as a failure with its
        traceback; the batch is kept and sent again."""
        service = await self.connect()
        client = service.client()
        broken: list[bool] = [True]

        class Broken(CountingRunner):
            def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
                if broken[0]:
                    return defer.fail(TypeError("a bug"))
                return super().eval(script, keys, args)

        recorder = self.recorder(lambda: Broken(client))
        recorder.valid_share("alice", 1.0)
        with capturedLogs() as events:
            await recorder.flush()
        (failure,) = logged(events, LogLevel.critical)
        self.assertIn("unexpected error", failure)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.assertEqual((recorder.waiting, recorder.set_aside), (1, 0))
        broken[0] = False
        await recorder.flush()
        self.assertEqual(self.stats(), {"validShares": "1"})


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
        """stopService writes every waiting record before it returns, waiting for Redis to come
        back; a settlement that comes after the drain is still written at once."""
        redis = await self.connect()
        client = redis.client()
        assert client is not None
        connected: list[RedisClient] = []
        recorder = self.recorder(lambda: connected[0] if connected else None)
        service = self.start(recorder)
        for _ in range(5):
            recorder.valid_share("alice", 1.0)
        durable = recorder.block_found(self.candidate(HASH_A, 900, "alice"), timeout=5.0)
        recorder.valid_share("bob", 1.0)
        recorder.valid_share("bob", 1.0)
        reactor.callLater(0.5, connected.append, client)

        await service.stopService()

        self.assertTrue(await durable)
        self.assertEqual(recorder.waiting, 0)
        self.assertEqual(self.stats(), {"validShares": "7"})
        self.assertEqual(self.hash(self.keys.round(900)), {"alice": "5"})
        self.assertEqual(self.hash(self.keys.round_current), {"bob": "2"})
        self.assertEqual(list(self.candidates()), [HASH_A])

        recorder.block_settled(HASH_A, True)  # the daemon answers after the stop
        await until(lambda: self.stats().get("validBlocks") == "1")
        self.assertEqual(recorder.waiting, 0)

    async def test_tree_drains_before_redis_goes(self) -> None:
        """In a tree shaped like nomp.tap's (Redis first, then the pool), stopping the root writes
        every record, blocks included, before the connection closes."""
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
        recorder.block_found(self.candidate(HASH_A, 950, "alice"), timeout=5.0)
        for _ in range(3):
            recorder.valid_share("bob", 1.0)
        recorder.block_settled(HASH_A, True)

        with capturedLogs() as events:
            await root.stopService()

        self.assertEqual(recorder.waiting, 0)
        self.assertEqual(logged(events, LogLevel.warn) + logged(events, LogLevel.error), [])
        self.assertEqual(self.stats(), {"validShares": "8", "validBlocks": "1"})
        self.assertEqual(self.hash(self.keys.round(950)), {"alice": "5"})
        self.assertEqual(self.hash(self.keys.round_current), {"bob": "3"})

    async def test_stop_keeps_blocks(self) -> None:
        """When Redis does not take everything within DRAIN_TIMEOUT, the shares still queued are
        given up for the candidates and settlements, which get BLOCKS_DRAIN_TIMEOUT more (the batch
        being sent goes as it is)."""
        self.patch(nomp.store.service, "DRAIN_TIMEOUT", 0.5)
        redis = await self.connect()
        client = redis.client()
        assert client is not None
        connected: list[RedisClient] = [client]
        recorder = self.recorder(lambda: connected[0] if connected else None, max_batch=2)
        recorder.valid_share("zoe", 1.0)
        await recorder.flush()
        connected.clear()
        service = self.start(recorder)
        for _ in range(3):
            recorder.valid_share("alice", 1.0)
        durable = recorder.block_found(self.candidate(HASH_A, 960, "alice", txid=TXID_A), timeout=5.0)
        recorder.valid_share("bob", 1.0)
        recorder.block_settled(HASH_A, True)
        recorder.valid_share("bob", 1.0)
        reactor.callLater(0.8, connected.append, client)  # back only after the drain's deadline

        with capturedLogs() as events:
            await service.stopService()

        self.assertTrue(await durable)
        self.assertEqual(recorder.waiting, 0)
        (error,) = logged(events, LogLevel.error)
        self.assertIn("3 dropped, writing the 2 block records alone", error)
        self.assertEqual(
            self.redis("SMEMBERS", self.keys.blocks_pending), [f"{HASH_A}:{TXID_A}:960:alice:{MS}"]
        )
        self.assertEqual(self.hash(self.keys.round(960)), {"zoe": "1", "alice": "2"})
        self.assertEqual(self.stats(), {"validShares": "3", "validBlocks": "1"})

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
