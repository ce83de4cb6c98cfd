"""RelayedSwitches: the main process's switches, each move sent to its
workers, the switch's pool read from a real redis-server. The workers'
answers are written by hand: the cases of a worker that refuses or is not
running cannot be had on demand from real ones (test_switching_workers
runs real ones)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from nomp.control.service import ControlProtocol
from nomp.store.redis import RedisService
from nomp.store.schema import SwitchKeys
from nomp.switching import SwitchRefused
from nomp.switching.relay import MINERS_INTERVAL, RelayedSwitches, worker_switch_miners
from nomp.switching.service import STATE_INTERVAL
from test.rediscli import redis
from test.redisservice import connected_redis_service
from test.servers import shared_redis
from test.waiting import until

DB = 12  # of the shared redis-server; each test has a namespace of its own
MOVED = (
    "ok switch scrypt: ltc -> copy, 2 miners moved (2 kept their extranonce1, "
    "0 sent mining.set_extranonce, 0 asked to reconnect)"
)
NO_JOB = "error pool copy has no job yet: it is still starting"
ALREADY = "error switch scrypt is on copy already"


def switches_answer(miners: int, name: str = "scrypt") -> str:
    """A worker's answer to ``switches``: one switch with ``miners``."""
    document = {"name": name, "algorithm": "scrypt", "pools": ["ltc", "copy"], "current": "ltc"}
    return "ok " + json.dumps([{**document, "miners": miners, "switches": 0, "last_reason": None}])


class Workers:
    """Two workers' answers to the control lines sent them, set by each test:
    ``answers`` to the moves, ``counts`` to ``switches``."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.answers: list[tuple[str, str | None]] = [
            ("worker 1 (pid 11)", MOVED),
            ("worker 2 (pid 12)", MOVED),
        ]
        self.counted = 0  # ``switches`` asked
        self.counts: list[tuple[str, str | None]] = [
            ("worker 1 (pid 11)", switches_answer(0)),
            ("worker 2 (pid 12)", switches_answer(0)),
        ]
        self.failing: Exception | None = None  # ``switches`` fails with it

    def ask_each(self, line: str) -> defer.Deferred[Sequence[tuple[str, str | None]]]:
        if line == "switches":
            self.counted += 1
            if self.failing is not None:
                return defer.fail(self.failing)
            return defer.succeed(list(self.counts))
        self.asked.append(line)
        return defer.succeed(list(self.answers))


class RelayedSwitchesTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.server = shared_redis()
        self.keys = SwitchKeys(f"T{os.urandom(4).hex()}")
        self.workers = Workers()
        self.switched: list[tuple[str, str, str]] = []

    async def connected(self) -> RedisService:
        return await connected_redis_service(self, self.server.port, DB)

    def service(self, redis_service: RedisService | None) -> RelayedSwitches:
        service = RelayedSwitches(
            {"scrypt": ("ltc", "copy")},
            {"scrypt": "scrypt"},
            self.workers.ask_each,
            lambda: ["ltc", "copy", "btc"],
            (lambda: None) if redis_service is None else redis_service.client,
            self.clock,
            keys=self.keys,
        )
        service.add_listener(lambda *moved: self.switched.append(moved))
        service.startService()
        self.addCleanup(service.stopService)
        return service

    async def read(self, service: RelayedSwitches) -> None:
        """Until the service has read the switch's pool from Redis."""

        def step() -> bool:
            self.clock.advance(STATE_INTERVAL)
            return not service.pending

        await until(step)

    async def refusal(self, service: RelayedSwitches, pool: str, switch: str = "scrypt") -> str:
        with self.assertRaises(SwitchRefused) as caught:
            await service.switch(switch, pool, "operator")
        message: str = caught.exception.message
        return message

    async def test_every_worker_moves(self) -> None:
        """Every worker moved its miners: the move is made, each one's answer listed."""
        service = self.service(await self.connected())
        self.assertEqual((service.switch_names(), service.pools("scrypt")), (["scrypt"], ["ltc", "copy"]))
        self.assertEqual((service.algorithm("scrypt"), service.current("scrypt")), ("scrypt", "ltc"))
        answer = await service.switch("scrypt", "copy", "profit: copy earns more")
        self.assertEqual(
            answer,
            f"switch scrypt: ltc -> copy on every worker: worker 1 (pid 11): {MOVED} | "
            f"worker 2 (pid 12): {MOVED}",
        )
        self.assertEqual(self.workers.asked, ["coinswitch scrypt copy"])
        self.assertEqual(service.current("scrypt"), "copy")
        self.assertEqual(self.switched, [("scrypt", "ltc", "copy")])
        self.assertEqual(service.status_lines(), ["switch scrypt (scrypt): on copy of ltc, copy, 0 miners"])

    async def test_one_worker_refuses(self) -> None:
        """A worker that refused leaves the switch split: refused, the pool it
        was on kept, and the same move asked again moves the rest (the workers
        on the pool already count as moved)."""
        service = self.service(None)
        self.workers.answers[1] = ("worker 2 (pid 12)", NO_JOB)
        with capturedLogs() as events:
            message = await self.refusal(service, "copy")
        self.assertEqual(
            message,
            "switch scrypt: moved to copy by some workers only: the same move asked again moves the rest: "
            f"worker 1 (pid 11): {MOVED} | worker 2 (pid 12): {NO_JOB}",
        )
        (warning,) = [e for e in events if e.get("split")]
        self.assertEqual((warning["moved"], warning["refused"]), (1, 1))
        self.assertEqual((service.current("scrypt"), self.switched), ("ltc", []))

        self.workers.answers = [("worker 1 (pid 11)", ALREADY), ("worker 2 (pid 12)", NO_JOB)]
        message = await self.refusal(service, "copy")
        self.assertTrue(message.startswith("switch scrypt: moved to copy by some workers only: "), message)
        self.workers.answers = [("worker 1 (pid 11)", ALREADY), ("worker 2 (pid 12)", MOVED)]
        answer = await service.switch("scrypt", "copy", "operator")
        self.assertTrue(answer.startswith("switch scrypt: ltc -> copy on every worker: "), answer)
        self.assertEqual((service.current("scrypt"), self.switched), ("copy", [("scrypt", "ltc", "copy")]))

    async def test_every_worker_refuses(self) -> None:
        """No worker moved: refused, every answer listed."""
        service = self.service(None)
        self.workers.answers = [("worker 1 (pid 11)", NO_JOB), ("worker 2 (pid 12)", NO_JOB)]
        self.assertEqual(
            await self.refusal(service, "copy"),
            f"switch scrypt: no worker moved: worker 1 (pid 11): {NO_JOB} | worker 2 (pid 12): {NO_JOB}",
        )
        self.assertEqual(service.current("scrypt"), "ltc")

    async def test_a_dead_worker(self) -> None:
        """A worker not running holds no miner and reads the pool from Redis when
        it starts again: the move is made."""
        service = self.service(None)
        self.workers.answers[1] = ("worker 2", None)
        answer = await service.switch("scrypt", "copy", "operator")
        self.assertEqual(
            answer,
            f"switch scrypt: ltc -> copy on every worker: worker 1 (pid 11): {MOVED} | "
            "worker 2: not running: it resumes on copy from Redis once started",
        )
        self.assertEqual(service.current("scrypt"), "copy")

    async def test_no_worker_running(self) -> None:
        """With no worker running nothing moved, and nobody recorded the pool: refused."""
        service = self.service(None)
        self.workers.answers = [("worker 1", None), ("worker 2", None)]
        self.assertEqual(
            await self.refusal(service, "copy"), "switch scrypt: no worker is running: no miner moved"
        )
        self.assertEqual((service.current("scrypt"), self.switched), ("ltc", []))

    async def test_already_there(self) -> None:
        """Every worker on the pool already: refused as a lone process refuses it."""
        service = self.service(None)
        self.workers.answers = [("worker 1 (pid 11)", ALREADY), ("worker 2 (pid 12)", ALREADY)]
        self.assertEqual(await self.refusal(service, "copy"), "switch scrypt is on copy already")
        self.assertEqual((service.current("scrypt"), self.switched), ("copy", []))

    async def test_bad_requests(self) -> None:
        """An unknown switch or pool, or a pool of another switch, is refused here:
        no worker is asked."""
        service = self.service(None)
        self.assertEqual(await self.refusal(service, "ltc", "sha"), "no switch 'sha' (switches: scrypt)")
        self.assertEqual(await self.refusal(service, "doge"), "no pool 'doge'")
        self.assertEqual(
            await self.refusal(service, "btc"), "pool btc is not one of switch scrypt's (ltc, copy)"
        )
        self.assertEqual(self.workers.asked, [])

    async def test_reads_the_stored_pool(self) -> None:
        """The pool the workers recorded is the switch's once Redis answers."""
        redis(self.server.port, DB, "SET", self.keys.current("scrypt"), "copy")
        service = self.service(await self.connected())
        await self.read(service)
        self.assertEqual(service.current("scrypt"), "copy")

    async def test_unknown_stored_pool(self) -> None:
        """A stored pool the switch does not have is logged, and the default stays."""
        redis(self.server.port, DB, "SET", self.keys.current("scrypt"), "gone")
        with capturedLogs() as events:
            service = self.service(await self.connected())
            await self.read(service)
        self.assertEqual(service.current("scrypt"), "ltc")
        (warning,) = [e for e in events if e.get("stored") == "gone"]
        self.assertEqual(warning["pool"], "ltc")

    async def test_redis_down_then_read(self) -> None:
        """Until Redis answers the switch is taken for on its default (one log
        line); a move made meanwhile is not undone by the read."""
        redis(self.server.port, DB, "SET", self.keys.current("scrypt"), "copy")
        connection: list[RedisService] = []
        with capturedLogs() as events:
            service = RelayedSwitches(
                {"scrypt": ("ltc", "copy")},
                {"scrypt": "scrypt"},
                self.workers.ask_each,
                lambda: ["ltc", "copy"],
                lambda: connection[0].client() if connection else None,
                self.clock,
                keys=self.keys,
            )
            service.startService()
            self.addCleanup(service.stopService)
            self.clock.advance(STATE_INTERVAL)
            self.clock.advance(STATE_INTERVAL)
        self.assertTrue(service.pending)
        self.assertEqual(service.outage.outages, 1)  # one line while it starts, not one a step
        self.assertEqual(len([e for e in events if e.get("subject") == "switching: Redis"]), 1)
        self.assertEqual(service.current("scrypt"), "ltc")
        self.workers.answers = [("worker 1 (pid 11)", MOVED.replace("ltc -> copy", "copy -> ltc"))] * 2
        await service.switch("scrypt", "ltc", "operator")
        connection.append(await self.connected())
        await self.read(service)
        self.assertEqual(service.current("scrypt"), "ltc")

    async def test_miners_summed_over_the_workers(self) -> None:
        """Every MINERS_INTERVAL the workers are asked for their switches; the
        documents and the status lines show the miners summed, the pool moved
        to, the moves made."""
        service = self.service(None)
        self.assertEqual(self.workers.counted, 1)  # at the start
        self.workers.counts = [
            ("worker 1 (pid 11)", switches_answer(3)),
            ("worker 2 (pid 12)", switches_answer(4)),
        ]
        self.assertEqual(service.documents()[0]["miners"], 0)  # the last figures, until the next ask
        self.clock.advance(MINERS_INTERVAL)
        self.assertEqual(self.workers.counted, 2)
        # status says what the API says.
        self.assertEqual(service.status_lines(), ["switch scrypt (scrypt): on ltc of ltc, copy, 7 miners"])
        self.assertEqual(
            service.documents(),
            [
                {
                    "name": "scrypt",
                    "algorithm": "scrypt",
                    "pools": ["ltc", "copy"],
                    "current": "ltc",
                    "miners": 7,
                    "switches": 0,
                    "last_reason": None,
                }
            ],
        )
        await service.switch("scrypt", "copy", "operator")
        self.workers.counts[1] = ("worker 2", None)  # not running: no miner
        self.clock.advance(MINERS_INTERVAL)
        (document,) = service.documents()
        self.assertEqual(
            (document["current"], document["miners"], document["switches"], document["last_reason"]),
            ("copy", 3, 1, "operator"),
        )
        self.assertEqual(service.status_lines(), ["switch scrypt (scrypt): on copy of ltc, copy, 3 miners"])

    def test_bad_switches_answers(self) -> None:
        """A worker's answer that is not its switches is logged, its miners left
        out; another switch's miners (a worker on an older config) are not counted."""
        service = self.service(None)
        self.workers.counts = [
            ("worker 1 (pid 11)", "error unknown command 'switches'"),
            ("worker 2 (pid 12)", switches_answer(2)),
            ("worker 3 (pid 13)", switches_answer(5, "sha")),
        ]
        with capturedLogs() as events:
            self.clock.advance(MINERS_INTERVAL)
        self.assertEqual(service.documents()[0]["miners"], 2)
        (error,) = [e for e in events if e.get("worker") == "worker 1 (pid 11)"]
        self.assertEqual(error["error"], "not an ok answer")

    def test_switches_answer_checked(self) -> None:
        """Each way a ``switches`` answer can be wrong, named."""
        cases = [
            ("error no", "not an ok answer"),
            ("ok {", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
            ('ok {"name": "scrypt"}', "not a list of switches"),
            ("ok [1]", "a switch that is not an object"),
            ('ok [{"name": "scrypt"}]', "a switch without a name and a count of miners"),
            ('ok [{"name": "scrypt", "miners": -1}]', "a switch without a name and a count of miners"),
            ('ok [{"name": "scrypt", "miners": true}]', "a switch without a name and a count of miners"),
            ('ok [{"name": 1, "miners": 1}]', "a switch without a name and a count of miners"),
        ]
        for answer, problem in cases:
            with self.assertRaises(ValueError) as caught:
                worker_switch_miners(answer)
            self.assertEqual(str(caught.exception), problem, answer)
        self.assertEqual(worker_switch_miners(switches_answer(2)), {"scrypt": 2})

    def test_asking_fails(self) -> None:
        """Asking the workers failing is logged with its traceback; the last
        figures stand and the next ask is made."""
        service = self.service(None)
        self.workers.counts = [("worker 1 (pid 11)", switches_answer(3))]
        self.clock.advance(MINERS_INTERVAL)
        self.workers.failing = RuntimeError("a broken channel")
        with capturedLogs() as events:
            self.clock.advance(MINERS_INTERVAL)
        (failure,) = [e for e in events if "log_failure" in e]
        self.assertIsInstance(failure["log_failure"].value, RuntimeError)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(service.documents()[0]["miners"], 3)
        self.workers.failing = None
        self.clock.advance(MINERS_INTERVAL)
        self.assertEqual(self.workers.counted, 4)


class CoinswitchWithWorkersTests(TestCase):
    """``coinswitch`` on the main process's control port goes through its
    switches, once: not to every worker as the other commands about miners."""

    def control(self, service: RelayedSwitches, forwarded: list[str]) -> Callable[[str], bytes]:
        def forward(line: str) -> defer.Deferred[list[tuple[str, str]]]:
            forwarded.append(line)
            return defer.succeed([("worker 1 (pid 11)", "ok")])

        protocol = ControlProtocol({}, forward=forward, switches=lambda: service)
        transport = StringTransport()
        protocol.makeConnection(transport)

        def send(line: str) -> bytes:
            transport.clear()
            protocol.dataReceived(line.encode() + b"\n")
            return bytes(transport.value())

        return send

    def test_coinswitch(self) -> None:
        workers = Workers()
        service = RelayedSwitches(
            {"scrypt": ("ltc", "copy")},
            {"scrypt": "scrypt"},
            workers.ask_each,
            lambda: ["ltc", "copy"],
            lambda: None,
            MemoryReactorClock(),
        )
        forwarded: list[str] = []
        send = self.control(service, forwarded)
        self.assertEqual(
            send("coinswitch scrypt copy"),
            f"ok switch scrypt: ltc -> copy on every worker: worker 1 (pid 11): {MOVED} | "
            f"worker 2 (pid 12): {MOVED}\n".encode(),
        )
        workers.answers = [("worker 1 (pid 11)", NO_JOB), ("worker 2 (pid 12)", NO_JOB)]
        self.assertTrue(send("coinswitch scrypt ltc").startswith(b"error switch scrypt: no worker moved: "))
        self.assertEqual(workers.asked, ["coinswitch scrypt copy", "coinswitch scrypt ltc"])
        self.assertEqual(forwarded, [])
