"""PoolService's block path and its template failures, on a task.Clock.

The daemons are small fakes here (a submitter that answers as scripted, a
daemon group that hands out a template): the cases are the ones a real
node does not produce on demand (no daemon answering, a submission that
raises, a template the coinbase builder refuses). The same path against a
real litecoind and a real Redis is in test_pool_service and test_recorder.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from nomp.candidate import BlockCandidate
from nomp.chain.jobs import Job, JobRegistry
from nomp.chain.template import BlockTemplate
from nomp.daemon import DaemonError, SubmitResult
from nomp.daemon.errors import DaemonUnreachable
from nomp.pool.blocks import BlockOutcome
from nomp.pool.service import SETTLE_AFTER, PoolService
from test.fakes import FakeBlockRecords, pool_config, registry_for
from test.test_chain import template_reply

NOW = 1_700_000_000.0
URL = "http://127.0.0.1:19443"


def candidate(block_hash: str = "ab" * 32, found_at: float = NOW) -> BlockCandidate:
    return BlockCandidate(
        block_hash=block_hash,
        coinbase_txid="cd" * 32,
        height=123,
        worker="rig",
        reward=5_000_000_000,
        solo=False,
        network_difficulty=1.0,
        found_at=found_at,
        payload=b"\x01" * 80,
    )


class ScriptedSubmitter:
    """BlockSubmitter's face: ``answers`` says what the daemons make of each block."""

    def __init__(self, records: FakeBlockRecords) -> None:
        self._records = records
        self.submitted: list[BlockCandidate] = []
        self.recorded_first: list[bool] = []  # whether the candidate was recorded when submitted
        self.results: tuple[SubmitResult, ...] = (SubmitResult(URL, None),)
        self.accepted = True
        self.error: Exception | None = None
        self.pending: defer.Deferred[None] | None = None  # set: submissions wait for it
        self.chain: dict[str, bool | DaemonError] = {}  # block hash -> what known() says

    async def submit(self, block: BlockCandidate) -> BlockOutcome:
        self.recorded_first.append(block in self._records.found)
        self.submitted.append(block)
        if self.pending is not None:
            await self.pending
        if self.error is not None:
            raise self.error
        return BlockOutcome(block.block_hash, block.height, self.results, self.accepted, block.coinbase_txid)

    async def known(self, block_hash: str) -> bool:
        answer = self.chain.get(block_hash, False)
        if isinstance(answer, DaemonError):
            raise answer
        return answer


class BlockPathTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.records = FakeBlockRecords()
        self.fatal: list[str] = []
        self.service = PoolService(
            pool_config(), self.clock, self.fatal.append, self.records, wall_clock=self.clock.seconds
        )
        self.submitter = ScriptedSubmitter(self.records)
        self.service.submitter = self.submitter  # type: ignore[assignment]

    def test_recorded_before_submitted(self) -> None:
        """The candidate is in the records before any daemon sees it; accepted, it is settled so."""
        block = candidate()
        self.service.found_block(block)
        self.assertEqual(self.submitter.recorded_first, [True])
        self.assertEqual(self.records.settled, [(block.block_hash, True)])
        self.assertEqual(self.service.blocks["accepted"], 1)

    def test_rejected(self) -> None:
        """A block a daemon refuses is settled as refused and counted rejected."""
        self.submitter.accepted = False
        self.submitter.results = (SubmitResult(URL, "high-hash"),)
        self.service.found_block(candidate())
        self.assertEqual(self.records.settled, [("ab" * 32, False)])
        self.assertEqual(self.service.blocks["rejected"], 1)

    def test_off_the_main_chain(self) -> None:
        """A valid block another block at its height beat (``inconclusive``), or one a node has
        already (``duplicate``), or one a daemon took that the main chain does not hold: the
        node keeping it settles it accepted (the payments orphan it if it never makes the main
        chain); a node that has it not, refused; a node that cannot say leaves it to
        settle_candidates."""
        self.submitter.accepted = False
        for answer in ("inconclusive", "duplicate", None):
            block = candidate(("%02x" % (len(self.records.settled) + 1)) * 32)
            self.submitter.results = (SubmitResult(URL, answer),)
            self.submitter.chain[block.block_hash] = True
            self.service.found_block(block)
            self.assertEqual(self.records.settled[-1], (block.block_hash, True), answer)
        self.assertEqual(self.service.blocks["accepted"], 3)
        gone = candidate("aa" * 32)
        self.submitter.results = (SubmitResult(URL, "inconclusive"),)
        self.service.found_block(gone)
        self.assertEqual(
            (self.records.settled[-1], self.service.blocks["rejected"]), ((gone.block_hash, False), 1)
        )
        silent = candidate("bb" * 32)
        self.submitter.chain[silent.block_hash] = DaemonUnreachable(URL, "getblock", "timeout")
        self.service.found_block(silent)
        self.assertEqual((len(self.records.settled), self.service.blocks["error"]), (4, 1))

    def test_no_daemon_answered(self) -> None:
        """When no daemon answers, nothing is guessed: the candidate waits (counted error)
        until the chain says; a node that has the block settles it accepted."""
        self.submitter.accepted = False
        unreachable = DaemonUnreachable(URL, "submitblock", "connection refused")
        self.submitter.results = (SubmitResult(URL, None, unreachable),)
        block = candidate()
        self.service.found_block(block)
        self.assertEqual((self.records.settled, self.service.blocks["error"]), ([], 1))
        self.records.unsettled = [block]
        self.submitter.chain[block.block_hash] = True
        self.clock.advance(SETTLE_AFTER)
        self.successResultOf(self.service.settle_candidates())
        self.assertEqual(self.records.settled, [(block.block_hash, True)])

    def test_submission_raises(self) -> None:
        """A submission that fails is logged and counted error; the candidate is not settled."""
        self.submitter.error = RuntimeError("bug")
        self.service.found_block(candidate())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual((self.records.settled, self.service.blocks["error"]), ([], 1))

    def test_not_durable_still_submitted(self) -> None:
        """With Redis away the candidate is submitted anyway, and the log says so."""
        self.records.durable = False
        with capturedLogs() as events:
            self.service.found_block(candidate())
        self.assertEqual(len(self.submitter.submitted), 1)
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("not yet in Redis", errors[0]["log_format"])

    def test_same_block_twice(self) -> None:
        """The same block found twice while its submission runs is submitted once."""
        self.submitter.pending = defer.Deferred()
        self.service.found_block(candidate())
        self.service.found_block(candidate())
        self.assertEqual(len(self.submitter.submitted), 1)
        self.submitter.pending.callback(None)
        self.assertEqual(len(self.records.settled), 1)

    def test_settle_from_chain(self) -> None:
        """Candidates no answer settled: the node's word settles them once they are old enough
        that no other process can still be submitting them; a node that cannot answer leaves them."""
        unknown = candidate("01" * 32, NOW - SETTLE_AFTER - 1)
        known = candidate("02" * 32, NOW - SETTLE_AFTER - 1)
        silent = candidate("03" * 32, NOW - SETTLE_AFTER - 1)
        young = candidate("04" * 32, NOW - 10)
        self.records.unsettled = [unknown, known, silent, young]
        self.submitter.chain = {
            known.block_hash: True,
            silent.block_hash: DaemonUnreachable(URL, "getblock", "timeout"),
            young.block_hash: True,
        }
        self.successResultOf(self.service.settle_candidates())
        self.assertEqual(self.records.settled, [(unknown.block_hash, False), (known.block_hash, True)])

    def test_settle_skips_blocks_in_flight(self) -> None:
        """A candidate this process is still submitting is left to its submission."""
        self.submitter.pending = defer.Deferred()
        block = candidate(found_at=NOW - SETTLE_AFTER - 1)
        self.service.found_block(block)
        self.records.unsettled = [block]
        self.successResultOf(self.service.settle_candidates())
        self.assertEqual(self.records.settled, [])
        self.submitter.pending.callback(None)
        self.assertEqual(self.records.settled, [(block.block_hash, True)])

    def test_blocks_in_flight_waits(self) -> None:
        """blocks_in_flight (what stopService waits for) fires once the answer is in and settled."""
        self.submitter.pending = defer.Deferred()
        self.service.found_block(candidate())
        waiting = self.service.blocks_in_flight()
        self.assertNoResult(waiting)
        self.submitter.pending.callback(None)
        self.successResultOf(waiting)
        self.assertEqual(len(self.records.settled), 1)


class StubTemplates:
    """A DaemonGroup that hands out ``reply`` as its template."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply

    async def get_block_template(self, rules: Any) -> dict[str, Any]:
        return self.reply


class RefusingRegistry(JobRegistry):
    """A JobRegistry whose coinbase builder refuses the templates of one height
    (what a template the pool cannot pay from does; no node sends one on demand)."""

    refused_height = -1

    def add(self, template: BlockTemplate, now: float, force: bool = False) -> Job | None:
        if template.height == self.refused_height:
            raise ValueError("recipients take more than the whole reward")
        return super().add(template, now, force)


class TemplateFailureTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        config = pool_config()
        self.service = PoolService(config, self.clock, lambda message: None, FakeBlockRecords())
        base = registry_for(config)
        self.registry = RefusingRegistry(base.algorithm, base.plan, base.layout)
        self.service.registry = self.registry
        self.daemons = StubTemplates(template_reply())
        self.service.daemons = self.daemons  # type: ignore[assignment]
        self.service.running = True
        self.jobs: list[Job] = []
        self.service.add_job_listener(self.jobs.append)

    def test_template_that_cannot_become_a_job(self) -> None:
        """It is logged once with its reason and counted; miners keep the last good job;
        the next template that works makes a job by itself."""
        self.successResultOf(self.service.refresh())
        good = self.registry.current
        assert good is not None
        self.registry.refused_height = good.template.height + 1
        self.daemons.reply = template_reply(previousblockhash="cc" * 32, height=good.template.height + 1)
        with capturedLogs() as events:
            self.successResultOf(self.service.refresh())
            self.successResultOf(self.service.refresh())
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)  # once, not at every poll
        self.assertIn("could not become a job", errors[0]["problem"])
        self.assertIn("recipients take more than the whole reward", errors[0]["problem"])
        self.assertEqual(self.service.job_failures["job"], 2)
        self.assertIs(self.registry.current, good)
        self.assertEqual(len(self.jobs), 1)
        self.registry.refused_height = -1
        self.successResultOf(self.service.refresh())
        self.assertEqual(len(self.jobs), 2)
        self.assertEqual(self.jobs[-1].template.height, good.template.height + 1)

    def test_bug_in_job_making_is_a_failure(self) -> None:
        """An error that is not the coinbase builder's refusal is logged with its traceback too."""

        def broken(template: BlockTemplate, now: float, force: bool = False) -> Job | None:
            raise KeyError("bug")

        self.registry.add = broken  # type: ignore[method-assign]
        self.successResultOf(self.service.refresh())
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(self.service.job_failures["job"], 1)

    def test_unusable_template_counted(self) -> None:
        """A reply that is not a usable template is counted under its kind."""
        self.daemons.reply = {"nonsense": True}
        self.successResultOf(self.service.refresh())
        self.assertEqual(dict(self.service.job_failures), {"template": 1})
