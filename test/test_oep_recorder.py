"""EthShareRecorder and write_node_state against a real redis-server.

open-ethereum-pool's keys exactly as its proxy writes them, block candidates
closing their rounds among the shares in the same script, refused candidates
undone key by key, and the batch machinery ShareRecorder shares: exactly
once when a reply is lost or Redis restarts, refused batches set aside whole,
a bounded buffer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor, task
from twisted.logger import LogLevel, capturedLogs

from nomp.candidate import BlockCandidate
from nomp.payments.rounds import PROP, SOLO, RoundPolicy, pplns
from nomp.store.batches import RecorderFull
from nomp.store.client import RedisClient
from nomp.store.oep import EthShareRecorder, write_node_state
from nomp.store.oepschema import OepKeys, RecordedCandidate, decode_recorded, split_worker
from nomp.store.schema import decode_set_aside
from test.servers import RedisServer
from test.test_recorder import CLOCK, NOW, CountingRunner, LostReplyRunner, RecorderTestCase, logged
from test.waiting import until

SECONDS = str(int(NOW))
MS = int(NOW * 1000)
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20
NONCE_A = bytes.fromhex("00000000deadbeef")
NONCE_B = bytes.fromhex("0102030405060708")
HEADER_A = bytes.fromhex("aa" * 32)
HEADER_B = bytes.fromhex("bb" * 32)
MIX = bytes.fromhex("3c" * 32)
DAY = 86400.0


def seal(nonce: bytes, header: bytes) -> tuple[str, str, str]:
    """The nonce, header and mix as OEP writes them."""
    return "0x" + nonce.hex(), "0x" + header.hex(), "0x" + MIX.hex()


class OepTestCase(RecorderTestCase):
    """Set-up shared by the OEP recorder tests: RecorderTestCase's Redis and clock, OEP's keys."""

    def setUp(self) -> None:
        super().setUp()
        self.oep = OepKeys.for_coin(self.keys.coin)

    def eth_recorder(
        self, redis: Callable[[], RedisClient | None], policy: RoundPolicy = PROP, **options: Any
    ) -> EthShareRecorder:
        return EthShareRecorder(self.oep, redis, CLOCK, policy, wall_clock=self.wall_clock, **options)

    def eth_candidate(
        self,
        worker: str,
        height: int,
        nonce: bytes = NONCE_A,
        header: bytes = HEADER_A,
        solo: bool = False,
        difficulty: float = 2.5e15,
    ) -> BlockCandidate:
        """A candidate found now (the test's wall clock)."""
        return BlockCandidate(
            block_hash="0x" + header.hex(),
            coinbase_txid="",
            height=height,
            worker=worker,
            reward=2 * 10**18,
            solo=solo,
            network_difficulty=difficulty,
            found_at=self.now,
            payload=nonce + header + MIX,
        )

    async def drain(self, recorder: EthShareRecorder) -> None:
        """Flush until nothing waits (Redis coming back meanwhile)."""
        while recorder.waiting:
            await recorder.flush()
            if recorder.waiting:
                await task.deferLater(reactor, 0.1)

    def zset(self, key: str) -> dict[str, float]:
        flat = self.redis("ZRANGE", key, 0, -1, "WITHSCORES")
        return {member: float(score) for member, score in zip(flat[::2], flat[1::2], strict=True)}

    def recorded(self) -> dict[str, RecordedCandidate]:
        return {h: decode_recorded(h, v) for h, v in self.hash(self.oep.recorder_candidates).items()}

    def dump(self, keys: OepKeys | None = None, bookkeeping: bool = False) -> dict[str, Any]:
        """Every key of the coin with its value (the recorder's own keys only if
        ``bookkeeping``), the coin's prefix taken off the names."""
        keys = keys or self.oep
        prefix = keys.coin + ":"
        state: dict[str, Any] = {}
        for key in sorted(self.redis("KEYS", prefix + "*")):
            name = key[len(prefix) :]
            if name.startswith("recorder:") and not bookkeeping:
                continue
            kind = self.redis("TYPE", key)
            if kind == "hash":
                state[name] = self.hash(key)
            elif kind == "zset":
                state[name] = self.zset(key)
            elif kind == "set":
                state[name] = sorted(self.redis("SMEMBERS", key))
            elif kind == "list":
                state[name] = self.redis("LRANGE", key, 0, -1)
            else:
                state[name] = self.redis("GET", key)
        return state


class KeyTests(OepTestCase):
    """OEP's key names and the worker names' split."""

    def test_names(self) -> None:
        """Every key OEP's proxy writes, under the coin's name in lower case."""
        keys = OepKeys.for_coin("ETC")
        self.assertEqual(
            [keys.nodes, keys.stats, keys.finders, keys.miner(ALICE), keys.round_current],
            ["etc:nodes", "etc:stats", "etc:finders", f"etc:miners:{ALICE}", "etc:shares:roundCurrent"],
        )
        self.assertEqual(keys.round(1234, "0x00000000deadbeef"), "etc:shares:round1234:0x00000000deadbeef")
        self.assertEqual([keys.hashrate, keys.hashrate_of(ALICE)], ["etc:hashrate", f"etc:hashrate:{ALICE}"])
        self.assertEqual(keys.blocks_candidates, "etc:blocks:candidates")
        self.assertEqual(
            [keys.recorder("ab12"), keys.recorder_set_aside, keys.recorder_candidates, keys.recorder_found],
            ["etc:recorder:ab12", "etc:recorder:setAside", "etc:recorder:candidates", "etc:recorder:found"],
        )

    def test_split_worker(self) -> None:
        """A worker splits at its first dot; no worker name is OEP's "0"; the login is lower case."""
        self.assertEqual(split_worker(f"{ALICE}.rig1"), (ALICE, "rig1"))
        self.assertEqual(split_worker(f"{ALICE}.rig.1"), (ALICE, "rig.1"))
        self.assertEqual(split_worker(ALICE.upper().replace("0X", "0x")), (ALICE, "0"))
        self.assertEqual(split_worker(f"{ALICE}."), (ALICE, "0"))


class ShareTests(OepTestCase):
    """Valid and invalid shares land in OEP's keys as its WriteShare writes them."""

    async def test_share_keys(self) -> None:
        """A share adds its integer difficulty to the round and roundShares, a member to both
        hashrate sets (the login's expiring), and lastShare."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client, hashrate_expiration=3600.0)
        recorder.valid_share(f"{ALICE}.rig1", 4_000_000_000.4)
        recorder.valid_share(f"{ALICE}.rig2", 2_000_000_000.0)
        recorder.valid_share(BOB, 1_000_000_000.6)
        recorder.invalid_share(f"{CAROL}.x", 1e9)
        self.assertEqual(recorder.waiting, 4)
        await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written), (0, 4))
        self.assertEqual(
            self.dump(),
            {
                "hashrate": {
                    f"4000000000:{ALICE}:rig1:{MS}": int(NOW),
                    f"2000000000:{ALICE}:rig2:{MS}": int(NOW),
                    f"1000000001:{BOB}:0:{MS}": int(NOW),
                },
                f"hashrate:{ALICE}": {
                    f"4000000000:rig1:{MS}": int(NOW),
                    f"2000000000:rig2:{MS}": int(NOW),
                },
                f"hashrate:{BOB}": {f"1000000001:0:{MS}": int(NOW)},
                f"miners:{ALICE}": {"lastShare": SECONDS},
                f"miners:{BOB}": {"lastShare": SECONDS},
                "shares:roundCurrent": {ALICE: "6000000000", BOB: "1000000001"},
                "stats": {"roundShares": "7000000001", "validShares": "3", "invalidShares": "1"},
            },
        )
        for login in (ALICE, BOB):
            self.assertTrue(3590 < self.redis("TTL", self.oep.hashrate_of(login)) <= 3600)

    async def test_members_unique_within_a_millisecond(self) -> None:
        """Shares of one worker in one millisecond get the next free millisecond, so none's
        hashrate is lost; other workers keep theirs."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        for _ in range(3):
            recorder.valid_share(f"{ALICE}.rig", 5.0)
        recorder.valid_share(f"{ALICE}.other", 5.0)
        recorder.valid_share(f"{BOB}.rig", 5.0)
        self.now += 0.001  # the next millisecond, which alice.rig has taken already
        later = int(self.now * 1000)
        self.assertEqual(later, MS + 1)
        recorder.valid_share(f"{ALICE}.rig", 5.0)
        recorder.valid_share(f"{BOB}.rig", 5.0)
        await recorder.flush()

        self.assertEqual(
            sorted(self.zset(self.oep.hashrate)),
            sorted(
                [f"5:{ALICE}:rig:{MS + i}" for i in range(4)]
                + [f"5:{ALICE}:other:{MS}", f"5:{BOB}:rig:{MS}", f"5:{BOB}:rig:{later}"]
            ),
        )
        self.assertEqual(len(self.zset(self.oep.hashrate_of(ALICE))), 5)
        self.assertEqual(self.hash(self.oep.round_current), {ALICE: "25", BOB: "10"})

    async def test_solo_share(self) -> None:
        """A solo share counts in the hashrate sets and lastShare, not in the round."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        recorder.valid_share(f"{ALICE}.rig", 8.0, solo=True)
        recorder.valid_share(f"{BOB}.rig", 4.0)
        await recorder.flush()
        self.assertEqual(self.hash(self.oep.round_current), {BOB: "4"})
        self.assertEqual(self.hash(self.oep.stats), {"roundShares": "4", "validShares": "2"})
        self.assertEqual(list(self.zset(self.oep.hashrate_of(ALICE))), [f"8:rig:{MS}"])
        self.assertEqual(self.hash(self.oep.miner(ALICE)), {"lastShare": SECONDS})

    async def test_amounts_past_doubles(self) -> None:
        """Sums beyond 2^53 (a Lua number's exact range) are exact, as OEP's int64 are."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        big = 4_000_000_000_000_001.0  # a double holds it; three times it, not
        for _ in range(3):
            recorder.valid_share(ALICE, big)
        recorder.valid_share(BOB, 3.0)
        recorder.block_found(self.eth_candidate(BOB, 10))
        await recorder.flush()
        ((member, _),) = self.zset(self.oep.blocks_candidates).items()
        round_key = self.oep.round(10, "0x00000000deadbeef")
        self.assertEqual(self.hash(round_key), {ALICE: "12000000000000003", BOB: "3"})
        self.assertEqual(member.split(":")[-1], "12000000000000006")

    async def test_hashrate_trimmed(self) -> None:
        """Members older than the hashrate expiration leave both sets at the next write."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client, hashrate_expiration=DAY)
        recorder.valid_share(ALICE, 1.0)
        await recorder.flush()
        self.now += DAY + 1
        recorder.valid_share(ALICE, 2.0)
        await recorder.flush()
        later = int(self.now * 1000)
        self.assertEqual(list(self.zset(self.oep.hashrate)), [f"2:{ALICE}:0:{later}"])
        self.assertEqual(list(self.zset(self.oep.hashrate_of(ALICE))), [f"2:0:{later}"])
        self.assertEqual(self.hash(self.oep.round_current), {ALICE: "3"})

    async def test_buffer_full(self) -> None:
        """With Redis away, valid shares raise RecorderFull at max_buffered and invalid ones
        are dropped; a candidate is still queued; all is written once Redis is back."""
        service = await self.connect()
        connected: list[RedisClient] = []
        recorder = self.eth_recorder(lambda: connected[0] if connected else None, max_buffered=3)
        for _ in range(3):
            recorder.valid_share(ALICE, 1.0)
        self.assertRaises(RecorderFull, recorder.valid_share, ALICE, 1.0)
        recorder.invalid_share(ALICE, 1.0)
        durable = recorder.block_found(self.eth_candidate(ALICE, 5), timeout=0.1)
        self.assertEqual(recorder.waiting, 4)
        with capturedLogs():
            self.assertFalse(await durable)

        client = service.client()
        assert client is not None
        connected.append(client)
        await recorder.flush()
        self.assertEqual(recorder.waiting, 0)
        self.assertEqual(self.hash(self.oep.round(5, "0x00000000deadbeef")), {ALICE: "3"})
        self.assertEqual(self.hash(self.oep.stats)["validShares"], "3")


class BlockTests(OepTestCase):
    """A candidate closes its round among the shares, as OEP's WriteBlock does, in the same script."""

    async def test_candidate_closes_round(self) -> None:
        """The round renamed to round<height>:<nonce>, the candidate's member with its total,
        the finder counted, lastBlockFound set, roundShares dropped; the shares behind it go to
        the next round."""
        service = await self.connect()
        runner = CountingRunner(service.client())
        recorder = self.eth_recorder(lambda: runner)
        recorder.valid_share(f"{ALICE}.rig", 3e9)
        recorder.valid_share(f"{BOB}.rig", 1e9)
        durable = recorder.block_found(self.eth_candidate(f"{BOB}.rig", 1234), timeout=5.0)
        self.now += 2.0
        recorder.valid_share(f"{ALICE}.rig", 5e9)
        await recorder.flush()

        self.assertTrue(await durable)
        self.assertEqual(runner.record_kinds(), ["s", "s", "c", "s"])
        nonce, header, mix = seal(NONCE_A, HEADER_A)
        round_key = self.oep.round(1234, nonce)
        self.assertEqual(round_key, f"{self.oep.coin}:shares:round1234:0x00000000deadbeef")
        self.assertEqual(self.hash(round_key), {ALICE: "3000000000", BOB: "1000000000"})
        self.assertEqual(self.hash(self.oep.round_current), {ALICE: "5000000000"})
        member = f"{nonce}:{header}:{mix}:{SECONDS}:2500000000000000:4000000000"
        self.assertEqual(self.zset(self.oep.blocks_candidates), {member: 1234.0})
        self.assertEqual(
            self.hash(self.oep.stats),
            {"lastBlockFound": SECONDS, "roundShares": "5000000000", "validShares": "3"},
        )
        self.assertEqual(self.zset(self.oep.finders), {BOB: 1.0})
        self.assertEqual(self.hash(self.oep.miner(BOB)), {"lastShare": SECONDS, "blocksFound": "1"})
        self.assertEqual(
            self.recorded(),
            {
                header: RecordedCandidate(
                    block_hash=header,
                    height=1234,
                    nonce=nonce,
                    login=BOB,
                    round_key=round_key,
                    member=member,
                    found_at=int(NOW),
                    alone=False,
                    last_found=None,
                )
            },
        )
        self.assertEqual(self.redis("SMEMBERS", self.oep.recorder_found), [header])

    async def test_candidate_twice(self) -> None:
        """The same candidate recorded again, in its batch or a later one, counts once and
        closes no second round."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        recorder.valid_share(ALICE, 2.0)
        recorder.block_found(self.eth_candidate(ALICE, 100))
        recorder.valid_share(BOB, 1.0)
        recorder.block_found(self.eth_candidate(ALICE, 100))
        await recorder.flush()
        before = self.dump()
        recorder.block_found(self.eth_candidate(ALICE, 100))
        await recorder.flush()

        self.assertEqual(self.dump(), before)
        self.assertEqual(len(self.zset(self.oep.blocks_candidates)), 1)
        self.assertEqual(self.zset(self.oep.finders), {ALICE: 1.0})
        self.assertEqual(self.hash(self.oep.miner(ALICE))["blocksFound"], "1")
        self.assertEqual(self.hash(self.oep.round_current), {BOB: "1"})

    async def test_empty_round(self) -> None:
        """A candidate found with no share in the round gets a round of its finder alone
        (credited 1), so the unlocker has shares to split the reward by."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        recorder.block_found(self.eth_candidate(f"{CAROL}.x", 77))
        await recorder.flush()
        nonce, header, mix = seal(NONCE_A, HEADER_A)
        self.assertEqual(self.hash(self.oep.round(77, nonce)), {CAROL: "1"})
        self.assertEqual(
            self.zset(self.oep.blocks_candidates),
            {f"{nonce}:{header}:{mix}:{SECONDS}:2500000000000000:1": 77},
        )
        self.assertTrue(self.recorded()[header].alone)
        self.assertFalse(self.exists(self.oep.round_current))

    async def test_solo_candidate(self) -> None:
        """A solo candidate leaves the shared round open; its round is the finder's alone."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        recorder.valid_share(ALICE, 4.0)
        recorder.valid_share(CAROL, 9.0, solo=True)
        recorder.block_found(self.eth_candidate(CAROL, 88, solo=True))
        recorder.valid_share(ALICE, 1.0)
        await recorder.flush()
        self.assertEqual(self.hash(self.oep.round(88, "0x00000000deadbeef")), {CAROL: "1"})
        self.assertEqual(self.hash(self.oep.round_current), {ALICE: "5"})
        stats = self.hash(self.oep.stats)
        self.assertEqual((stats["roundShares"], stats["lastBlockFound"]), ("5", SECONDS))
        self.assertEqual(self.zset(self.oep.finders), {CAROL: 1.0})

    async def test_not_a_seal(self) -> None:
        """A candidate whose payload is not the 72-byte seal is refused at once."""
        recorder = self.eth_recorder(lambda: None)
        bad = dataclasses.replace(self.eth_candidate(ALICE, 1), payload=b"x" * 71)
        self.assertRaises(ValueError, recorder.block_found, bad)
        self.assertEqual(recorder.waiting, 0)

    async def test_keep_blocks_only(self) -> None:
        """keep_blocks_only drops the shares queued and keeps the candidates and settlements
        (the batch being sent, here the first share and candidate, goes as it is)."""
        with capturedLogs():
            recorder = self.eth_recorder(lambda: None)
            recorder.valid_share(ALICE, 1.0)
            durable = recorder.block_found(self.eth_candidate(ALICE, 3), timeout=0.1)
            recorder.valid_share(ALICE, 1.0)
            recorder.invalid_share(ALICE, 1.0)
            recorder.block_settled("0x" + HEADER_A.hex(), True)
            self.assertFalse(await durable)
        self.assertEqual((recorder.waiting, recorder.blocks_waiting), (5, 1))
        self.assertEqual(recorder.keep_blocks_only(), 2)
        self.assertEqual((recorder.waiting, recorder.blocks_waiting), (3, 1))


class SettlementTests(OepTestCase):
    """The node's answer: an accepted candidate stays for the unlocker, a refused one is undone."""

    async def mine(self, recorder: EthShareRecorder, with_candidate: bool) -> None:
        """A history with a block already found, then shares and (or not) a second candidate
        among them."""
        recorder.valid_share(f"{ALICE}.a", 10.0)
        recorder.block_found(self.eth_candidate(f"{ALICE}.a", 50, nonce=NONCE_B, header=HEADER_B))
        recorder.block_settled("0x" + HEADER_B.hex(), True)
        await recorder.flush()
        self.now += 60
        recorder.valid_share(f"{ALICE}.a", 3.0)
        recorder.valid_share(f"{BOB}.b", 2.0)
        if with_candidate:
            recorder.block_found(self.eth_candidate(f"{BOB}.b", 60))
        recorder.valid_share(f"{ALICE}.a", 7.0)
        recorder.valid_share(f"{CAROL}.c", 1.0, solo=True)
        await recorder.flush()

    async def test_refused_restores_everything(self) -> None:
        """Refused, the candidate's member, its round, the finder's counts and lastBlockFound are
        as if it had never been found: every key equals a run of the same shares without it."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        await self.mine(recorder, with_candidate=True)
        header = "0x" + HEADER_A.hex()
        self.assertEqual(self.hash(self.oep.round(60, "0x00000000deadbeef")), {ALICE: "3", BOB: "2"})
        self.assertEqual(self.hash(self.oep.stats)["lastBlockFound"], str(int(NOW + 60)))

        recorder.block_settled(header, False)
        await recorder.flush()

        self.now = NOW
        reference = OepKeys.for_coin(self.oep.coin + "-reference")
        without = EthShareRecorder(reference, service.client, CLOCK, PROP, wall_clock=self.wall_clock)
        await self.mine(without, with_candidate=False)
        expected = self.dump(reference)
        self.assertEqual(self.dump(), expected)
        self.assertEqual(
            expected["stats"],
            {"roundShares": "12", "lastBlockFound": SECONDS, "validShares": "5"},
        )
        self.assertEqual(expected["shares:roundCurrent"], {ALICE: "10", BOB: "2"})
        self.assertEqual(expected["finders"], {ALICE: 1.0})
        self.assertNotIn("blocksFound", expected[f"miners:{BOB}"])
        self.assertEqual(self.recorded(), {})
        self.assertEqual(
            sorted(self.redis("SMEMBERS", self.oep.recorder_found)), sorted([header, "0x" + HEADER_B.hex()])
        )

    async def test_refused_alone(self) -> None:
        """A refused solo candidate, or one whose round was empty, has its round deleted; the
        shared round is untouched."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        recorder.block_found(self.eth_candidate(ALICE, 70, nonce=NONCE_B, header=HEADER_B))
        recorder.valid_share(BOB, 4.0)
        recorder.block_found(self.eth_candidate(CAROL, 71, solo=True))
        await recorder.flush()
        self.assertEqual(self.hash(self.oep.round(70, "0x" + NONCE_B.hex())), {ALICE: "1"})

        recorder.block_settled("0x" + HEADER_B.hex(), False)
        recorder.block_settled("0x" + HEADER_A.hex(), False)
        await recorder.flush()

        self.assertEqual(
            self.dump(),
            {
                "hashrate": {f"4:{BOB}:0:{MS}": int(NOW)},
                f"hashrate:{BOB}": {f"4:0:{MS}": int(NOW)},
                f"miners:{BOB}": {"lastShare": SECONDS},
                "shares:roundCurrent": {BOB: "4"},
                "stats": {"roundShares": "4", "validShares": "1"},
            },
        )

    async def test_refused_in_the_same_batch(self) -> None:
        """A candidate refused in the batch that closed its round leaves the round as if it had
        never closed."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        recorder.valid_share(ALICE, 1.0)
        recorder.block_found(self.eth_candidate(ALICE, 80), timeout=5.0)
        recorder.block_settled("0x" + HEADER_A.hex(), False)
        recorder.valid_share(BOB, 1.0)
        await recorder.flush()
        self.assertEqual(self.hash(self.oep.round_current), {ALICE: "1", BOB: "1"})
        self.assertEqual(self.hash(self.oep.stats), {"roundShares": "2", "validShares": "2"})
        self.assertFalse(self.exists(self.oep.round(80, "0x00000000deadbeef")))
        self.assertFalse(self.exists(self.oep.blocks_candidates))
        self.assertFalse(self.exists(self.oep.finders))

    async def test_accepted_leaves_oep_keys(self) -> None:
        """Accepted, the candidate stays in blocks:candidates with its round for the unlocker:
        nothing of OEP's keys changes; only the recorder forgets how to undo it."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        await self.mine(recorder, with_candidate=True)
        before = self.dump()
        self.assertEqual(len(before["blocks:candidates"]), 2)

        recorder.block_settled("0x" + HEADER_A.hex(), True)
        await recorder.flush()

        self.assertEqual(self.dump(), before)
        self.assertEqual(self.recorded(), {})

    async def test_settled_twice(self) -> None:
        """A settlement sent again (whichever answer it carries, by another recorder too), or one
        for a candidate unknown here, changes nothing."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        await self.mine(recorder, with_candidate=True)
        recorder.block_settled("0x" + HEADER_A.hex(), False)
        await recorder.flush()
        before = self.dump(bookkeeping=False)

        again = self.eth_recorder(service.client)
        for accepted in (False, True, False):
            again.block_settled("0x" + HEADER_A.hex(), accepted)
            again.block_settled("0x" + HEADER_B.hex(), not accepted)
            again.block_settled("0x" + "ee" * 32, accepted)
        await again.flush()

        self.assertEqual(again.written, 9)
        self.assertEqual(self.dump(bookkeeping=False), before)


class ExactlyOnceTests(OepTestCase):
    """A batch sent again is not counted again."""

    async def test_lost_reply(self) -> None:
        """A batch Redis applied whose reply was lost is sent again with its number, skipped,
        and every count stays exact."""
        service = await self.connect()
        runner = LostReplyRunner(service.client(), lose=0)
        recorder = self.eth_recorder(lambda: runner)
        recorder.valid_share(ALICE, 1.0)
        await recorder.flush()
        runner.lose = 1
        recorder.valid_share(ALICE, 2.0)
        recorder.block_found(self.eth_candidate(ALICE, 90), timeout=5.0)
        recorder.valid_share(BOB, 4.0)
        recorder.invalid_share(BOB, 4.0)
        with capturedLogs() as events:
            await recorder.flush()
        self.assertEqual((recorder.waiting, recorder.written), (4, 1))
        self.assertIn("the reply was lost", logged(events, LogLevel.warn)[0])

        await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written), (0, 5))
        self.assertEqual(runner.batch_numbers(), [1, 2, 2, 3])
        self.assertEqual(
            self.hash(self.oep.stats),
            {"lastBlockFound": SECONDS, "roundShares": "4", "validShares": "3", "invalidShares": "1"},
        )
        self.assertEqual(self.hash(self.oep.round(90, "0x00000000deadbeef")), {ALICE: "3"})
        self.assertEqual(self.hash(self.oep.round_current), {BOB: "4"})
        self.assertEqual(self.zset(self.oep.finders), {ALICE: 1.0})
        self.assertEqual(len(self.zset(self.oep.blocks_candidates)), 1)
        self.assertEqual(len(self.zset(self.oep.hashrate)), 3)

    async def test_restart(self) -> None:
        """Shares recorded before, during and after a restart of a persistent Redis are all in
        it once."""
        expected = {ALICE: 0, BOB: 0}
        self.server = server = RedisServer(persistent=True).start()
        self.addCleanup(server.stop)
        service = await self.connect(server)
        recorder = self.eth_recorder(service.client)

        def mine(shares: int) -> None:
            for i in range(shares):
                login, difficulty = (ALICE, 3) if i % 2 else (BOB, 5)
                recorder.valid_share(f"{login}.rig", float(difficulty))
                expected[login] += difficulty
                self.now += 0.0005

        mine(10)
        await recorder.flush()
        mine(4)
        with capturedLogs():
            writing = recorder.flush()  # on its way as Redis goes
            server.halt()
            mine(6)
            await writing
            await until(lambda: service.client() is None)
            await recorder.flush()
        self.assertEqual((recorder.waiting, recorder.written), (10, 10))

        server.start()
        mine(5)
        await until(lambda: service.client() is not None)
        await self.drain(recorder)

        self.assertEqual(recorder.written, 25)
        self.assertEqual(
            self.hash(self.oep.round_current), {login: str(total) for login, total in expected.items()}
        )
        self.assertEqual(
            self.hash(self.oep.stats), {"roundShares": str(sum(expected.values())), "validShares": "25"}
        )
        self.assertEqual(len(self.zset(self.oep.hashrate)), 25)


class SchemeTests(OepTestCase):
    """The pool's payment scheme closes an Ethereum round with the same round policies as a
    Bitcoin one (nomp.payments.rounds), in OEP's integer rounds."""

    async def test_pplns_window(self) -> None:
        """PPLNS: the round is the last window of share difficulty before the block, newest
        first, the oldest share counted in part, across an earlier block; roundCurrent starts
        again and the log keeps only what a later window can reach."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client, pplns(35))
        for login in (ALICE, ALICE, ALICE, BOB):
            recorder.valid_share(login, 10.0)
        recorder.block_found(self.eth_candidate(BOB, 50, nonce=NONCE_B, header=HEADER_B))
        recorder.valid_share(BOB, 10.0)
        recorder.valid_share(CAROL, 3.0)
        recorder.block_found(self.eth_candidate(CAROL, 51))
        recorder.valid_share(ALICE, 2.0)
        await recorder.flush()

        first = self.hash(self.oep.round(50, "0x" + NONCE_B.hex()))
        self.assertEqual(first, {BOB: "10", ALICE: "25"})
        # newest first: Carol 3, Bob 10 + 10, then 12 of Alice's last share before the first block
        self.assertEqual(
            self.hash(self.oep.round(51, "0x" + NONCE_A.hex())), {CAROL: "3", BOB: "20", ALICE: "12"}
        )
        self.assertEqual(self.hash(self.oep.round_current), {ALICE: "2"})
        self.assertEqual(self.hash(self.oep.stats)["roundShares"], "2")
        members = self.zset(self.oep.blocks_candidates)
        self.assertEqual(sorted(m.rsplit(":", 1)[1] for m in members), ["35", "35"])
        segments = self.redis("LRANGE", self.oep.share_log, 0, -1)
        sums = [float(segment.split("\n", 1)[0]) for segment in segments]
        self.assertEqual(float(self.redis("GET", self.oep.share_log_total)), sum(sums))
        self.assertGreaterEqual(sum(sums), 35)
        self.assertLess(sum(sums[:-1]), 35)  # the oldest segment is still needed for a window

    async def test_pplns_refused(self) -> None:
        """A refused PPLNS candidate's round is deleted; its shares stay in the log for the
        next block's window, and roundShares is what roundCurrent holds."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client, pplns(100))
        recorder.valid_share(ALICE, 6.0)
        recorder.block_found(self.eth_candidate(ALICE, 60))
        recorder.valid_share(BOB, 4.0)
        await recorder.flush()
        recorder.block_settled("0x" + HEADER_A.hex(), False)
        await recorder.flush()
        self.assertFalse(self.exists(self.oep.round(60, "0x" + NONCE_A.hex())))
        self.assertEqual(self.hash(self.oep.round_current), {BOB: "4"})
        self.assertEqual(self.hash(self.oep.stats)["roundShares"], "4")
        recorder.block_found(self.eth_candidate(BOB, 61, nonce=NONCE_B, header=HEADER_B))
        await recorder.flush()
        self.assertEqual(self.hash(self.oep.round(61, "0x" + NONCE_B.hex())), {ALICE: "6", BOB: "4"})

    async def test_pplns_empty_log(self) -> None:
        """A PPLNS candidate with nothing in the log is its finder's alone."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client, pplns(100))
        recorder.block_found(self.eth_candidate(CAROL, 62))
        await recorder.flush()
        self.assertEqual(self.hash(self.oep.round(62, "0x" + NONCE_A.hex())), {CAROL: "1"})
        self.assertTrue(self.recorded()["0x" + HEADER_A.hex()].alone)

    async def test_pplns_log_of_the_wrong_type(self) -> None:
        """A share log Redis holds as another type sets the batch aside before anything is written."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client, pplns(100))
        self.redis("SET", self.oep.share_log, "x")
        recorder.valid_share(ALICE, 6.0)
        with capturedLogs() as events:
            await recorder.flush()
        self.assertEqual(recorder.set_aside, 1)
        (error,) = logged(events, LogLevel.error)
        self.assertIn("refused a batch", error)
        self.assertFalse(self.exists(self.oep.round_current))

    async def test_solo_scheme(self) -> None:
        """Under the solo scheme every candidate's round is its finder's alone, and the shared
        round (the pool's effort) starts again; refused, the round is deleted."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client, SOLO)
        recorder.valid_share(ALICE, 6.0)
        recorder.valid_share(BOB, 4.0)
        recorder.block_found(self.eth_candidate(BOB, 63))
        recorder.valid_share(ALICE, 1.0)
        await recorder.flush()
        self.assertEqual(self.hash(self.oep.round(63, "0x" + NONCE_A.hex())), {BOB: "1"})
        self.assertEqual(self.hash(self.oep.round_current), {ALICE: "1"})
        self.assertEqual(self.hash(self.oep.stats)["roundShares"], "1")
        recorder.block_settled("0x" + HEADER_A.hex(), False)
        await recorder.flush()
        self.assertFalse(self.exists(self.oep.round(63, "0x" + NONCE_A.hex())))
        self.assertEqual(self.hash(self.oep.round_current), {ALICE: "1"})


class SetAsideTests(OepTestCase):
    """A batch Redis refuses is set aside whole, and the queue moves on."""

    async def test_wrong_type(self) -> None:
        """A key of the wrong type (a miner's hash) makes the batch refused before anything is
        written, set aside with the reason; the batches behind it are written."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        recorder.valid_share(ALICE, 1.0)
        await recorder.flush()
        self.redis("SET", self.oep.miner(BOB), "x")
        before = self.dump()
        recorder.valid_share(ALICE, 2.0)
        recorder.invalid_share(CAROL, 1.0)
        recorder.valid_share(BOB, 2.0)
        durable = recorder.block_found(self.eth_candidate(ALICE, 20), timeout=5.0)

        with capturedLogs() as events:
            self.assertFalse(await durable)
            await recorder.flush()

        self.assertEqual((recorder.waiting, recorder.written, recorder.set_aside), (0, 1, 4))
        (error,) = logged(events, LogLevel.error)
        self.assertIn("refused a batch of 4 share records", error)
        self.assertEqual(self.dump(), before)
        (entry,) = [decode_set_aside(e) for e in self.redis("LRANGE", self.oep.recorder_set_aside, 0, -1)]
        self.assertIn(f"WRONGTYPE {self.oep.miner(BOB)}", entry.reason)
        self.assertEqual([r.split("\t")[0] for r in entry.records], ["s", "i", "s", "c"])
        self.assertEqual(self.redis("SMEMBERS", self.oep.recorder_found), [])

        self.redis("DEL", self.oep.miner(BOB))
        recorder.valid_share(BOB, 5.0)
        await recorder.flush()
        self.assertEqual((recorder.waiting, recorder.written, recorder.set_aside), (0, 2, 4))
        self.assertEqual(self.hash(self.oep.round_current), {ALICE: "1", BOB: "5"})

    async def test_wrong_type_at_settlement(self) -> None:
        """A refusal whose round key is no longer a hash is set aside whole: the candidate stays."""
        service = await self.connect()
        recorder = self.eth_recorder(service.client)
        recorder.valid_share(ALICE, 1.0)
        recorder.block_found(self.eth_candidate(ALICE, 30))
        await recorder.flush()
        round_key = self.oep.round(30, "0x00000000deadbeef")
        self.redis("DEL", round_key)
        self.redis("SET", round_key, "x")
        before = self.dump(bookkeeping=True)
        recorder.block_settled("0x" + HEADER_A.hex(), False)
        with capturedLogs():
            await recorder.flush()
        self.assertEqual(recorder.set_aside, 1)
        after = self.dump(bookkeeping=True)
        after.pop("recorder:setAside")
        self.assertEqual(after, before)
        self.assertEqual(len(self.zset(self.oep.blocks_candidates)), 1)


class NodeStateTests(OepTestCase):
    async def test_write_node_state(self) -> None:
        """OEP's WriteNodeState: four fields of the node in <coin>:nodes, in one call."""
        service = await self.connect()
        runner = CountingRunner(service.client())
        await write_node_state(runner, self.oep, "main", 123456, 2_500_000_000_000_000, NOW)
        await write_node_state(runner, self.oep, "backup", 123455, 7, NOW + 3)
        self.assertEqual(len(runner.calls), 2)
        self.assertEqual(
            self.hash(self.oep.nodes),
            {
                "main:name": "main",
                "main:height": "123456",
                "main:difficulty": "2500000000000000",
                "main:lastBeat": SECONDS,
                "backup:name": "backup",
                "backup:height": "123455",
                "backup:difficulty": "7",
                "backup:lastBeat": str(int(NOW) + 3),
            },
        )
