"""extranonce1 values: the instance byte, mining.set_extranonce, shares of
jobs sent before a change, re-partitioning and subscribes that wait for
the instance byte. Real StratumPool over StringTransports on a task.Clock."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from nomp.chain.jobs import Job
from nomp.stratum.extranonce import Extranonce1Allocator, NoInstanceByte
from nomp.stratum.shares import DIFFICULTY_TOLERANCE
from test.fakes import Connection, StratumHarness, find_nonce, mainnet_template, pool_config, pow_value
from test.test_stratum_protocol import EXTRANONCE2, NOW, PLAIN_DIFF, PORTS, WORKER, meets


class AllocatorTests(SynchronousTestCase):
    """Extranonce1Allocator: unique values, all starting with the instance byte."""

    def test_values_start_with_the_instance_byte(self) -> None:
        """Every value starts with the instance byte and none is handed out twice."""
        allocator = Extranonce1Allocator(random.Random(1), instance=0x5A)
        values = [allocator.take() for _ in range(2000)]
        self.assertEqual(len(set(values)), 2000)
        self.assertTrue(all(len(v) == 4 and v[0] == 0x5A for v in values))

    def test_processes_never_share_a_value(self) -> None:
        """Two processes with different bytes (and the same random start) never overlap."""
        first = Extranonce1Allocator(random.Random(3), instance=1)
        second = Extranonce1Allocator(random.Random(3), instance=2)
        ours = {first.take() for _ in range(500)}
        theirs = {second.take() for _ in range(500)}
        self.assertEqual(ours & theirs, set())
        self.assertEqual({v[1:] for v in ours}, {v[1:] for v in theirs})  # only the byte tells them apart

    def test_wraps_within_the_byte(self) -> None:
        """After the byte's last value comes its first, never the next byte's; used ones are skipped."""
        allocator = Extranonce1Allocator(random.Random(1), instance=0x5A)
        allocator._next = 0x5AFFFFFF
        self.assertEqual(allocator.take(), bytes.fromhex("5affffff"))
        self.assertEqual(allocator.take(), bytes.fromhex("5a000000"))
        allocator._next = 0x5AFFFFFF
        self.assertEqual(allocator.take(), bytes.fromhex("5a000001"))

    def test_no_byte_no_value(self) -> None:
        """Without an instance byte nothing is handed out; the same byte back keeps the values in use,
        another byte starts afresh."""
        allocator = Extranonce1Allocator(random.Random(2), instance=None)
        self.assertRaises(NoInstanceByte, allocator.take)
        self.assertFalse(allocator.use(3))  # the first byte: nothing to move
        value = allocator.take()
        allocator.suspend()
        self.assertRaises(NoInstanceByte, allocator.take)
        self.assertFalse(allocator.use(3))
        self.assertIn(int.from_bytes(value, "big"), allocator._used)
        self.assertTrue(allocator.use(4))
        self.assertEqual(allocator._used, set())
        self.assertEqual(allocator.take()[0], 4)
        allocator.release(value)  # a value of the old byte: nothing happens
        self.assertRaises(ValueError, allocator.use, 256)


class _ExtranonceCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.harness = StratumHarness(pool_config(ports=PORTS, usernames="address"), self.clock)
        self.server = self.harness.server
        self.recorder = self.harness.recorder
        self.job = self.harness.new_job(mainnet_template())

    def miner(self, extranonce_subscribed: bool = True) -> Connection:
        miner = self.harness.miner(WORKER)
        if extranonce_subscribed:
            self.assertEqual(miner.request("mining.extranonce.subscribe")[0]["result"], True)
        return miner

    def share_for(self, job: Job, made_with: bytes, missing_with: bytes | None = None) -> list[Any]:
        """Submit params of a share of ``job`` made with extranonce1 ``made_with``
        that is not a share with ``missing_with``."""
        target = meets(PLAIN_DIFF)
        tolerated = meets(PLAIN_DIFF * DIFFICULTY_TOLERANCE)  # what the pool still takes for a share
        start = 0
        while True:
            nonce = find_nonce(job, made_with + EXTRANONCE2, target, start=start)
            curtime = job.template.curtime
            if missing_with is None or not tolerated(
                pow_value(job, missing_with + EXTRANONCE2, curtime, nonce)
            ):
                return [WORKER, job.job_id, EXTRANONCE2.hex(), f"{curtime:08x}", f"{nonce:08x}"]
            start = nonce + 1


class SetExtranonceTests(_ExtranonceCase):
    """Subscriptions.set_extranonce."""

    def test_new_value_then_clean_job(self) -> None:
        """An extranonce-subscribed miner gets mining.set_extranonce with a new value and size 4,
        then the current job, clean; the old value goes back to the allocator."""
        miner = self.miner()
        old = miner.session.extranonce1
        assert old is not None
        self.assertTrue(self.server.subscriptions.set_extranonce(miner.protocol))
        set_extranonce, notify = miner.read()
        new = miner.session.extranonce1
        assert new is not None
        self.assertNotEqual(new, old)
        self.assertEqual(new[0], old[0])  # the same instance byte
        self.assertEqual(
            set_extranonce, {"id": None, "method": "mining.set_extranonce", "params": [new.hex(), 4]}
        )
        self.assertEqual(
            (notify["method"], notify["params"]), ("mining.notify", self.job.notify_params(True))
        )
        used = self.server.subscriptions.extranonces._used
        self.assertIn(int.from_bytes(new, "big"), used)
        self.assertNotIn(int.from_bytes(old, "big"), used)

    def test_never_to_a_miner_that_did_not_ask(self) -> None:
        """A miner that did not take mining.extranonce.subscribe, or is not subscribed, is sent nothing."""
        plain = self.miner(extranonce_subscribed=False)
        before = plain.session.extranonce1
        fresh = self.harness.connect()
        fresh.request("mining.extranonce.subscribe")
        for connection in (plain, fresh):
            self.assertFalse(self.server.subscriptions.set_extranonce(connection.protocol))
            self.assertEqual(connection.read(), [])
        self.assertEqual(plain.session.extranonce1, before)
        self.assertIsNone(fresh.session.extranonce1)

    def test_configure_subscribe_extranonce_counts(self) -> None:
        """subscribe-extranonce in mining.configure counts as mining.extranonce.subscribe."""
        miner = self.harness.miner(WORKER)
        miner.request("mining.configure", [["subscribe-extranonce"], {}])
        self.assertTrue(self.server.subscriptions.set_extranonce(miner.protocol))

    def test_share_made_with_the_new_value(self) -> None:
        """A share of the job sent after the change, made with the new value, is accepted."""
        miner = self.miner()
        self.server.subscriptions.set_extranonce(miner.protocol)
        miner.read()
        new = miner.session.extranonce1
        assert new is not None
        self.assertEqual(miner.submit(self.share_for(self.job, new))[-1]["result"], True)
        self.assertEqual(len(self.recorder.valid), 1)

    def test_share_of_an_earlier_job_made_with_the_old_value(self) -> None:
        """A share the miner made with the old value before it read the change is checked again
        with it, and accepted once: a second hash, no invalid share counted."""
        miner = self.miner()
        old = miner.session.extranonce1
        assert old is not None
        self.server.subscriptions.set_extranonce(miner.protocol)
        miner.read()
        new = miner.session.extranonce1
        assert new is not None
        params = self.share_for(self.job, old, missing_with=new)
        checked = len(self.harness.hashing.checked)
        (reply,) = miner.submit(params)
        self.assertEqual((reply["result"], reply["error"]), (True, None))
        self.assertEqual(len(self.harness.hashing.checked), checked + 2)
        self.assertEqual(self.harness.hashing.checked[-1].extranonce, old + EXTRANONCE2)
        self.assertEqual((len(self.recorder.valid), self.recorder.invalid), (1, []))
        self.assertEqual((miner.session.valid_shares, miner.session.invalid_shares), (1, 0))
        self.assertEqual(self.server.pipeline.in_flight, 0)
        # The same share again is a duplicate, whichever value it was made with.
        self.assertEqual(miner.submit(params)[0]["error"][0], 22)

    def test_share_bad_with_both_values_counted_once(self) -> None:
        """A share that is no share with either value is refused low difficulty and counted once."""
        miner = self.miner()
        old = miner.session.extranonce1
        assert old is not None
        self.server.subscriptions.set_extranonce(miner.protocol)
        miner.read()
        new = miner.session.extranonce1
        assert new is not None
        # Below the difficulty with the pool's tolerance for miners' rounding
        # too, or about one try in fifty would be a share after all.
        target = meets(PLAIN_DIFF * DIFFICULTY_TOLERANCE)
        curtime = self.job.template.curtime
        nonce = find_nonce(self.job, new + EXTRANONCE2, lambda value: not target(value))
        while target(pow_value(self.job, old + EXTRANONCE2, curtime, nonce)):
            nonce = find_nonce(self.job, new + EXTRANONCE2, lambda value: not target(value), start=nonce + 1)
        params = [WORKER, self.job.job_id, EXTRANONCE2.hex(), f"{curtime:08x}", f"{nonce:08x}"]
        (reply,) = miner.submit(params)
        self.assertEqual(reply["error"][0], 23)
        self.assertEqual(len(self.recorder.invalid), 1)
        self.assertEqual(miner.session.invalid_shares, 1)
        self.assertEqual(self.server.pipeline.in_flight, 0)

    def test_job_sent_after_the_change_only_takes_the_new_value(self) -> None:
        """A job first sent after the change is checked with the new value alone: one hash."""
        miner = self.miner()
        old = miner.session.extranonce1
        assert old is not None
        self.server.subscriptions.set_extranonce(miner.protocol)
        new = miner.session.extranonce1
        assert new is not None
        later = self.harness.new_job(mainnet_template(), force=True)
        miner.read()
        params = self.share_for(later, old, missing_with=new)
        checked = len(self.harness.hashing.checked)
        self.assertEqual(miner.submit(params)[0]["error"][0], 23)
        self.assertEqual(len(self.harness.hashing.checked), checked + 1)


class InstanceTests(_ExtranonceCase):
    """StratumPool.set_instance: re-partitioning, and subscribes that wait for a byte."""

    def test_new_byte_repartitions(self) -> None:
        """Another byte: extranonce-subscribed miners get a value with it and a clean job; the others
        are asked to reconnect and closed; connections not subscribed are left alone."""
        movable = self.miner()
        plain = self.miner(extranonce_subscribed=False)
        idle = self.harness.connect()
        self.server.set_instance(7)
        set_extranonce, notify = movable.read()
        new = movable.session.extranonce1
        assert new is not None
        self.assertEqual(new[0], 7)
        self.assertEqual(set_extranonce["params"], [new.hex(), 4])
        self.assertEqual(notify["params"][8], True)
        self.assertEqual(plain.read(), [{"id": None, "method": "client.reconnect", "params": []}])
        self.assertTrue(plain.closing)
        self.assertIsNone(plain.session.extranonce1)
        self.assertEqual((idle.read(), idle.closing), ([], False))
        self.assertEqual(self.server.subscriptions.extranonces._used, {int.from_bytes(new, "big")})
        # New miners get the new byte too.
        self.assertEqual(self.harness.connect().subscribe()[0], 7)

    def test_same_byte_back_changes_nothing(self) -> None:
        """The byte lost for a while and held again: live miners keep their values, nothing is sent."""
        miner = self.miner()
        before = miner.session.extranonce1
        byte = self.server.subscriptions.extranonces.instance
        self.server.set_instance(None)
        self.server.set_instance(byte)
        self.assertEqual((miner.read(), miner.session.extranonce1), ([], before))

    def test_subscribes_wait_for_a_byte(self) -> None:
        """Without a byte, a subscribe is answered once one is held (authorize meanwhile works);
        a connection that left meanwhile is forgotten; live miners mine on."""
        live = self.miner()
        live_value = live.session.extranonce1
        self.server.set_instance(None)
        waiting = self.harness.connect()
        self.assertEqual(waiting.request("mining.subscribe", ["agent/1"], request_id=10), [])
        self.assertEqual(waiting.authorize(WORKER)["result"], True)
        self.assertEqual(
            waiting.request("mining.subscribe", request_id=11)[0]["error"][1],
            "a subscribe is already waiting for the pool to start",
        )
        gone = self.harness.connect()
        gone.request("mining.subscribe")
        gone.lose()
        self.server.set_instance(0x21)
        reply, difficulty, notify = waiting.read()
        self.assertEqual(reply["id"], 10)
        self.assertEqual(bytes.fromhex(reply["result"][1])[0], 0x21)
        self.assertEqual((difficulty["method"], notify["method"]), ("mining.set_difficulty", "mining.notify"))
        self.assertEqual(gone.read(), [])
        # The live miner was moved to the new byte (it took mining.extranonce.subscribe).
        self.assertNotEqual(live.session.extranonce1, live_value)
        self.assertEqual(live.read()[0]["method"], "mining.set_extranonce")

    def test_no_set_extranonce_without_a_byte(self) -> None:
        """While no byte is held, set_extranonce gives nothing (no value can be handed out)."""
        miner = self.miner()
        self.server.set_instance(None)
        self.assertFalse(self.server.subscriptions.set_extranonce(miner.protocol))
        self.assertEqual(miner.read(), [])
