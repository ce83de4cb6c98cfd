"""Worker processes (nomp.workers): the supervisor on a fake process transport
and a task.Clock, the control port's forwarding, the sockets held and
inherited, and the roles the composition root builds."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, error, reactor, task
from twisted.internet.endpoints import SSL4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, capturedLogs, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp.config import LoggingConfig, load_config
from nomp.control.service import ALSO_HERE, NOT_FORWARDED, ControlProtocol, combine_answers
from nomp.logs import make_observer
from nomp.payments.service import PaymentService
from nomp.store.instance import InstanceLeaseService
from nomp.tap import Options, build_service, process_roles
from nomp.web.service import WebService
from nomp.workers.channel import ANSWERS_FD, COMMANDS_FD, FIRST_SOCKET_FD
from nomp.workers.sockets import SOCKETS_VARIABLE, HeldSockets, InheritedSockets, describe
from nomp.workers.supervisor import (
    ANSWER_TIMEOUT,
    RESTART_DELAY,
    RESTART_DELAY_MAX,
    STABLE_SECONDS,
    WorkerProcess,
    WorkerSupervisor,
)
from test.poolconf import renamed_coin
from test.test_config import ConfTestCase
from test.test_config_paths import SHIPPED_CONF
from test.test_control import FakeOperations, RecordingPool
from test.tlscerts import self_signed
from test.waiting import until


class WorkersConfigTests(ConfTestCase):
    """config.yaml's ``workers``."""

    def test_default_and_bounds(self) -> None:
        """1 by default; 1-256 (an instance byte each); a number."""
        self.assertEqual(self.load().settings.workers, 1)
        self.settings["workers"] = 256
        self.assertEqual(self.load().settings.workers, 256)
        for wrong in (0, 257, -1):
            self.settings["workers"] = wrong
            self.assertErrors("config.yaml: workers: must be 1-256")
        self.settings["workers"] = "2"
        self.assertErrors("config.yaml: workers: expected an integer, got a string ('2')")

    def test_not_with_a_fixed_instance(self) -> None:
        """Several workers cannot share one configured instance byte."""
        self.settings["workers"] = 2
        self.settings["instance"] = 7
        self.assertErrors(
            "config.yaml: instance: must be null with workers > 1: each worker leases its own byte"
        )
        self.settings["workers"] = 1
        self.assertEqual(self.load().settings.instance, 7)

    def test_tls_port_with_workers(self) -> None:
        """A TLS port is served by worker processes as by one (each does the TLS
        on the socket it is given): no error is about workers."""
        self.pool["ports"][1]["listen"] = "ssl:3334:privateKey=key.pem"
        self.other_pool("ssl:4444:privateKey=key.pem")
        self.settings["workers"] = 3
        self.assertEqual([e for e in self.errors() if "worker" in e], [])


class WorkerLogTests(SynchronousTestCase):
    """A worker's log lines say which worker wrote them."""

    def test_text_and_json(self) -> None:
        text, lines = io.StringIO(), io.StringIO()
        for settings, stream in ((LoggingConfig(), text), (LoggingConfig(format="json"), lines)):
            log = Logger(namespace="nomp.pool", observer=make_observer(settings, stream, worker=2))
            log.info("new block {height}", height=7)
        self.assertRegex(text.getvalue(), r"^\S+ \[worker 2 nomp\.pool#info\] new block 7\n$")
        self.assertEqual(json.loads(lines.getvalue().strip("\x1e\n"))["worker"], 2)
        plain = io.StringIO()
        Logger(namespace="nomp.pool", observer=make_observer(LoggingConfig(), plain)).info("main")
        self.assertIn("[nomp.pool#info] main", plain.getvalue())


class FakeProcessTransport:
    """What a WorkerProcess asks of its process: the lines written to its
    command pipe and the signals sent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written: list[tuple[int, bytes]] = []
        self.signals: list[str | int] = []
        self.closed = False

    def writeToChild(self, childFD: int, data: bytes) -> None:  # noqa: N803 - Twisted names it
        if self.closed:
            raise KeyError(childFD)  # as Process does once the child closed its end
        self.written.append((childFD, data))

    def signalProcess(self, name: str | int) -> None:
        self.signals.append(name)


def ended(worker: WorkerProcess, status: int | None = None, signal: int | None = None) -> None:
    """The worker's process ends with an exit status or by a signal."""
    if signal is None:
        reason: Failure = Failure(error.ProcessDone(0) if not status else error.ProcessTerminated(status))
    else:
        reason = Failure(error.ProcessTerminated(signal=signal))
    worker.processEnded(reason)


class SupervisorTests(SynchronousTestCase):
    """WorkerSupervisor: starts, restarts with backoff, stops, asks."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.spawned: list[WorkerProcess] = []
        self.refuse_spawn = False
        self.supervisor = WorkerSupervisor(2, self.spawn, self.clock, stop_timeout=40.0)

    def spawn(self, worker: WorkerProcess) -> None:
        if self.refuse_spawn:
            raise OSError("no more processes")
        transport: Any = FakeProcessTransport(1000 + len(self.spawned))
        worker.makeConnection(transport)
        self.spawned.append(worker)

    def transport(self, worker: WorkerProcess) -> FakeProcessTransport:
        transport: Any = worker.transport
        assert isinstance(transport, FakeProcessTransport)
        return transport

    def test_starts_every_worker(self) -> None:
        """At start, one process per worker, numbered from 1."""
        self.supervisor.startService()
        self.assertEqual([w.index for w in self.spawned], [1, 2])
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])
        self.assertEqual(self.spawned[0].name, "worker 1 (pid 1000)")

    def test_restart_with_backoff(self) -> None:
        """A dead worker is started again after RESTART_DELAY, doubling with
        each quick death in a row up to RESTART_DELAY_MAX, and from
        RESTART_DELAY again once it has run STABLE_SECONDS."""
        self.supervisor.startService()
        delays = []
        for _ in range(7):
            worker = self.supervisor.workers[1]
            self.clock.advance(0.5)
            ended(worker, signal=9)
            self.assertNotIn(1, self.supervisor.workers)
            before = self.clock.seconds()
            while 1 not in self.supervisor.workers:
                self.clock.advance(0.25)
            delays.append(self.clock.seconds() - before)
        expected = [min(RESTART_DELAY * 2**n, RESTART_DELAY_MAX) for n in range(7)]
        self.assertEqual(delays, expected)
        self.clock.advance(STABLE_SECONDS)
        ended(self.supervisor.workers[1], status=1)
        self.clock.advance(RESTART_DELAY)
        self.assertIn(1, self.supervisor.workers)
        self.assertEqual(len(self.spawned), 2 + 8)  # worker 2 was never restarted
        self.assertEqual(self.supervisor.workers[2], self.spawned[1])

    def test_spawn_failure_is_retried(self) -> None:
        """A worker whose process cannot be made is tried again later."""
        self.refuse_spawn = True
        self.supervisor.startService()
        self.assertEqual(self.supervisor.workers, {})
        self.refuse_spawn = False
        self.clock.advance(RESTART_DELAY)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)

    def test_stop_waits_for_every_worker(self) -> None:
        """At stop every worker gets SIGTERM; the stop fires once all have
        exited, and none is started again, nor one whose restart was pending."""
        self.supervisor.startService()
        ended(self.supervisor.workers[2], signal=9)  # its restart is pending
        first = self.supervisor.workers[1]
        stopping = self.supervisor.stopService()
        self.assertEqual(self.transport(first).signals, ["TERM"])
        self.assertNoResult(stopping)
        ended(first, signal=15)
        self.successResultOf(stopping)
        self.clock.advance(RESTART_DELAY_MAX * 2)
        self.assertEqual(self.supervisor.workers, {})
        self.assertEqual(len(self.spawned), 2)

    def test_stop_kills_the_slow(self) -> None:
        """A worker still there ``stop_timeout`` after SIGTERM is killed."""
        self.supervisor.startService()
        stopping = self.supervisor.stopService()
        ended(self.spawned[0], signal=15)
        self.clock.advance(39)
        self.assertEqual(self.transport(self.spawned[1]).signals, ["TERM"])
        self.clock.advance(1)
        self.assertEqual(self.transport(self.spawned[1]).signals, ["TERM", "KILL"])
        self.assertNoResult(stopping)
        ended(self.spawned[1], signal=9)
        self.successResultOf(stopping)

    def test_replace_all(self) -> None:
        """Each worker in turn: SIGTERM, started again at once (not as a death:
        no backoff), and the next only once the new one answers."""
        self.supervisor.startService()
        first, second = self.spawned
        replacing = defer.Deferred.fromCoroutine(self.supervisor.replace_all())
        self.assertEqual(self.transport(first).signals, ["TERM"])
        self.assertEqual(self.transport(second).signals, [])
        ended(first, signal=15)
        new_first = self.supervisor.workers[1]
        self.assertEqual(self.transport(new_first).written, [(COMMANDS_FD, b"pools\n")])
        self.assertEqual(self.transport(second).signals, [])
        new_first.childDataReceived(ANSWERS_FD, b"ok litecoin (litecoin-regtest, ready)\n")
        self.assertEqual(self.transport(second).signals, ["TERM"])
        ended(second, signal=15)
        self.supervisor.workers[2].childDataReceived(
            ANSWERS_FD, b"ok litecoin (litecoin-regtest, starting)\n"
        )
        self.successResultOf(replacing)
        self.assertEqual(len(self.spawned), 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reopen_logs(self) -> None:
        """Each running worker gets SIGUSR1 once it answers on its channel (its
        handler is in place by then); one that ends first is logged, not signalled."""
        self.supervisor.startService()
        first, second = self.spawned
        with capturedLogs() as events:
            self.supervisor.reopen_logs()
            for worker in self.spawned:
                self.assertEqual(self.transport(worker).written, [(COMMANDS_FD, b"pools\n")])
                self.assertEqual(self.transport(worker).signals, [])
            first.childDataReceived(ANSWERS_FD, b"ok litecoin (litecoin-regtest, ready)\n")
            ended(second, signal=9)
        self.assertEqual(self.transport(first).signals, [signal.SIGUSR1])
        self.assertEqual(self.transport(second).signals, [])
        self.assertIn(
            "worker 2 (pid 1001): its log file is not opened again: "
            "worker 2 (pid 1001) ended before it answered",
            [formatEvent(event) for event in events],
        )

    def test_ask_all(self) -> None:
        """A line goes to every running worker's command pipe; the answers come
        back by worker, each the line read on its answer pipe, in order."""
        self.supervisor.startService()
        asked = defer.Deferred.fromCoroutine(self.supervisor.ask_all("blocknotify litecoin"))
        for worker in self.spawned:
            self.assertEqual(self.transport(worker).written, [(COMMANDS_FD, b"blocknotify litecoin\n")])
        self.spawned[1].childDataReceived(ANSWERS_FD, b"ok litecoin not")
        self.spawned[1].childDataReceived(1, b"a log line, not an answer\n")
        self.spawned[1].childDataReceived(ANSWERS_FD, b"ified\n")
        self.assertNoResult(asked)
        self.spawned[0].childDataReceived(ANSWERS_FD, b"ok litecoin notified\n")
        self.assertEqual(
            self.successResultOf(asked),
            [
                ("worker 1 (pid 1000)", "ok litecoin notified"),
                ("worker 2 (pid 1001)", "ok litecoin notified"),
            ],
        )

    def test_ask_all_without_an_answer(self) -> None:
        """A worker not running, one that ends before it answers, and one that
        does not answer in time each give an error; an answer that comes
        after its time is read and dropped, and the next answer is the next
        question's."""
        self.supervisor.startService()
        dead, slow = self.spawned
        ended(dead, signal=9)
        asked = defer.Deferred.fromCoroutine(self.supervisor.ask_all("status"))
        self.clock.advance(ANSWER_TIMEOUT)
        self.assertEqual(
            self.successResultOf(asked),
            [
                ("worker 1", "error not running: it is started again shortly"),
                ("worker 2 (pid 1001)", f"error no answer within {ANSWER_TIMEOUT:g} s"),
            ],
        )
        self.transport(slow).closed = True  # ending: its pipe closed, its end not yet reported
        closing = defer.Deferred.fromCoroutine(self.supervisor.ask_all("status"))
        self.supervisor.workers[1].childDataReceived(ANSWERS_FD, b"ok up 109s\n")  # restarted meanwhile
        self.assertEqual(
            self.successResultOf(closing),
            [
                ("worker 1 (pid 1002)", "ok up 109s"),
                ("worker 2 (pid 1001)", "error worker 2 (pid 1001) is ending"),
            ],
        )
        self.transport(slow).closed = False
        again = defer.Deferred.fromCoroutine(self.supervisor.ask_all("status"))
        self.clock.advance(0)
        restarted = self.supervisor.workers[1]
        slow.childDataReceived(ANSWERS_FD, b"ok the first answer, late\n")
        self.assertNoResult(again)
        slow.childDataReceived(ANSWERS_FD, b"ok the second\n")
        ended(restarted, status=1)
        self.assertEqual(
            self.successResultOf(again),
            [
                ("worker 1 (pid 1002)", "error worker 1 (pid 1002) ended before it answered"),
                ("worker 2 (pid 1001)", "ok the second"),
            ],
        )

    def test_ask_each(self) -> None:
        """As ask_all, but a worker not running, or one that ends before it
        answers, answers None: it did nothing of what was asked."""
        self.supervisor.startService()
        dead, ending = self.spawned
        ended(dead, signal=9)
        asked = defer.Deferred.fromCoroutine(self.supervisor.ask_each("coinswitch scrypt copy"))
        ended(ending, status=1)
        self.assertEqual(self.successResultOf(asked), [("worker 1", None), ("worker 2 (pid 1001)", None)])
        self.clock.advance(RESTART_DELAY)
        asked = defer.Deferred.fromCoroutine(self.supervisor.ask_each("coinswitch scrypt copy"))
        self.clock.advance(ANSWER_TIMEOUT)
        self.assertEqual(
            self.successResultOf(asked),
            [
                ("worker 1 (pid 1002)", f"error no answer within {ANSWER_TIMEOUT:g} s"),
                ("worker 2 (pid 1003)", f"error no answer within {ANSWER_TIMEOUT:g} s"),
            ],
        )


class ForwardingTests(SynchronousTestCase):
    """The main process's control port with workers: which commands reach
    them, which also run here, and the one answer made of all."""

    def setUp(self) -> None:
        self.pool = RecordingPool()
        self.operations = FakeOperations()
        self.forwarded: list[str] = []
        self.answers: list[defer.Deferred[list[tuple[str, str]]]] = []
        self.protocol = ControlProtocol(
            {"litecoin": self.pool}, operations=self.operations, forward=self.forward
        )
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def forward(self, line: str) -> defer.Deferred[list[tuple[str, str]]]:
        self.forwarded.append(line)
        answer: defer.Deferred[list[tuple[str, str]]] = defer.Deferred()
        self.answers.append(answer)
        return answer

    def send(self, line: str) -> str:
        self.transport.clear()
        self.protocol.dataReceived(line.encode() + b"\n")
        written: bytes = self.transport.value()
        return written.decode()

    def test_pool_commands_reach_the_workers_only(self) -> None:
        """blocknotify goes to every worker, not to the main process's pool;
        the answer waits for theirs."""
        self.assertEqual(self.send("blocknotify  litecoin"), "")
        self.assertEqual(self.forwarded, ["blocknotify litecoin"])
        self.assertEqual(self.pool.notified, [])
        self.answers[0].callback(
            [("worker 1 (pid 5)", "ok litecoin notified"), ("worker 2", "ok litecoin notified")]
        )
        self.assertEqual(
            self.transport.value().decode(),
            "ok worker 1 (pid 5): ok litecoin notified | worker 2: ok litecoin notified\n",
        )

    def test_process_commands_run_here_too(self) -> None:
        """status and loglevel run in the main process and in every worker."""
        self.send("loglevel debug")
        self.assertEqual(self.operations.level, "debug")
        self.answers[0].callback([("worker 1", "ok log level debug (was info)")])
        self.assertEqual(
            self.transport.value().decode(),
            "ok main: ok log level debug (was info) | worker 1: ok log level debug (was info)\n",
        )
        self.assertEqual(ALSO_HERE, {"status", "loglevel"})

    def test_status_adds_up(self) -> None:
        """status lists the main process's and each worker's, then each pool's
        miners and shares/s over every worker."""
        self.send("status")
        main = self.operations.status()
        self.answers[0].callback(
            [
                (
                    "worker 1 (pid 5)",
                    "ok up 9s; litecoin (litecoin-regtest): ready, 3 miners, 1.25 shares/s; Redis up",
                ),
                (
                    "worker 2 (pid 6)",
                    "ok up 9s; litecoin (litecoin-regtest): ready, 1 miner, 0.50 shares/s; Redis up",
                ),
                (
                    "worker 3 (pid 7)",
                    "ok up 1s; litecoin (litecoin-regtest): starting, 0 miners, shares/s not known yet",
                ),
            ]
        )
        answer = self.transport.value().decode()
        self.assertTrue(answer.startswith(f"ok main: ok {main} | worker 1 (pid 5): ok up 9s;"), answer)
        self.assertTrue(answer.endswith(" | all workers: litecoin: 4 miners, 1.75 shares/s\n"), answer)

    def test_main_only_commands(self) -> None:
        """help, pools, payments and shutdown are the main process's alone."""
        self.assertTrue(self.send("pools").startswith("ok litecoin"))
        self.send("payments litecoin run")
        self.assertEqual(self.operations.asked, [("payments run", "litecoin")])
        self.assertEqual(self.forwarded, [])
        self.assertTrue({"help", "pools", "payments", "shutdown", "reload", "reloadpool"} <= NOT_FORWARDED)

    def test_an_unknown_command_is_not_forwarded(self) -> None:
        self.assertTrue(self.send("coinswap litecoin").startswith("error unknown command 'coinswap'"))
        self.assertEqual(self.forwarded, [])

    def test_combine_answers(self) -> None:
        """ok when the main process's part is and one worker's at least is."""
        self.assertEqual(
            combine_answers(
                None, [("worker 1", "ok 2 miners kicked"), ("worker 2", "error no miner matches")]
            ),
            "ok worker 1: ok 2 miners kicked | worker 2: error no miner matches",
        )
        self.assertEqual(
            combine_answers("error configuration refused", [("worker 1", "ok reloaded")]),
            "error main: error configuration refused | worker 1: ok reloaded",
        )
        self.assertEqual(combine_answers("ok up 1s", []), "error main: ok up 1s | no worker is running")


class SocketTests(TestCase):
    """The main process's held sockets, as a worker inherits them."""

    async def test_held_then_inherited(self) -> None:
        """A held port listens but accepts nothing in the main process; a
        worker given its descriptor accepts from it."""
        held = HeldSockets(reactor)
        listening = self.successResultOf(held.endpoint("tcp:0:interface=127.0.0.1").listen(_factory()))
        (entry,) = held.sockets()
        self.assertEqual(entry.listen, "tcp:0:interface=127.0.0.1")
        self.assertEqual(entry.family, socket.AF_INET)
        variable = json.loads(describe(held.sockets(), FIRST_SOCKET_FD))
        self.assertEqual(variable, [["tcp:0:interface=127.0.0.1", FIRST_SOCKET_FD, int(socket.AF_INET)]])
        # The worker's side, in this process: a copy of the descriptor, as a child gets it.
        copy = os.dup(entry.fileno)
        environ = {SOCKETS_VARIABLE: json.dumps([[entry.listen, copy, entry.family]])}
        inherited = InheritedSockets.from_environment(reactor, environ)
        self.assertEqual(inherited.listens, ("tcp:0:interface=127.0.0.1",))
        accepted: list[Any] = []
        served = self.successResultOf(inherited.endpoint(entry.listen).listen(_factory(accepted.append)))
        self.addCleanup(served.stopListening)
        host: Any = listening.getHost()
        client = socket.create_connection(("127.0.0.1", host.port))
        self.addCleanup(client.close)
        await task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(accepted), 1)
        await defer.maybeDeferred(listening.stopListening)
        self.assertEqual(held.sockets(), [])

    async def test_tls_port(self) -> None:
        """An ssl: port's socket is held as a plain one; the worker given it
        does the TLS handshake with the key and certificate its listen names."""
        certificate = self_signed(Path(self.mktemp()))
        listen = certificate.listen(0)
        held = HeldSockets(reactor)
        listening = self.successResultOf(held.endpoint(listen).listen(_factory()))
        self.addCleanup(listening.stopListening)
        (entry,) = held.sockets()
        copy = os.dup(entry.fileno)
        environ = {SOCKETS_VARIABLE: json.dumps([[entry.listen, copy, entry.family]])}
        inherited = InheritedSockets.from_environment(reactor, environ)
        received: list[bytes] = []

        class Noted(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        served = await inherited.endpoint(listen).listen(Factory.forProtocol(Noted))
        self.addCleanup(served.stopListening)
        host: Any = listening.getHost()
        trust = Certificate.loadPEM(certificate.cert.read_bytes())
        client = await SSL4ClientEndpoint(
            reactor, "127.0.0.1", host.port, optionsForClientTLS("127.0.0.1", trustRoot=trust)
        ).connect(Factory.forProtocol(Protocol))
        self.addCleanup(client.transport.loseConnection)
        client.transport.write(b'{"id": 1, "method": "mining.subscribe", "params": []}\n')
        await until(lambda: b"".join(received).endswith(b"\n"))
        self.assertEqual(b"".join(received), b'{"id": 1, "method": "mining.subscribe", "params": []}\n')

    def test_bad_variable(self) -> None:
        """A variable that is not the main process's list is refused, saying so."""
        for text in ("{", '[["tcp:1", "x", 2]]', "[1]"):
            with self.assertRaises(ValueError) as caught:
                InheritedSockets.from_environment(reactor, {SOCKETS_VARIABLE: text})
            self.assertIn(SOCKETS_VARIABLE, str(caught.exception))


def _factory(made: Any = None) -> Any:
    class Noted(Protocol):
        def connectionMade(self) -> None:
            if made is not None:
                made(self)

    return Factory.forProtocol(Noted)


class RoleTests(SynchronousTestCase):
    """``--role`` and ``--worker``, and the subtrees each builds."""

    def conf(self, **settings: Any) -> Path:
        folder = Path(self.mktemp())
        (folder / "pools").mkdir(parents=True)
        data = yaml.safe_load((SHIPPED_CONF / "config.yaml").read_text())
        data["coins"] = str(SHIPPED_CONF.parent / "coins")
        data.update(settings)
        (folder / "config.yaml").write_text(yaml.safe_dump(data))
        pool = yaml.safe_load((SHIPPED_CONF / "pools" / "litecoin.yaml").read_text())
        (folder / "pools" / "litecoin.yaml").write_text(yaml.safe_dump(pool))
        return folder

    def services(self, conf: Path, roles: str = "all", worker: int | None = None) -> list[str]:
        """The kinds of service in the tree, by class name."""
        options = {"role": roles, "worker": worker}
        parsed_roles, parsed_worker = process_roles(options)
        root = build_service(load_config(conf), task.Clock(), roles=parsed_roles, worker=parsed_worker)
        found: list[str] = []

        def walk(service: Any) -> None:
            found.append(type(service).__name__)
            for child in getattr(service, "services", []):
                walk(child)

        walk(root)
        return found

    def test_roles_parsed(self) -> None:
        """all (the default), one role, several; anything else is a usage error."""
        self.assertEqual(process_roles({})[0], {"stratum", "payments", "web"})
        self.assertEqual(process_roles({"role": "stratum"}), ({"stratum"}, None))
        self.assertEqual(process_roles({"role": "payments,web"})[0], {"payments", "web"})
        self.assertEqual(process_roles({"worker": "2"}), ({"stratum"}, 2))
        for bad, message in (
            ({"role": "miners"}, "--role: 'miners': expected all or stratum, payments, web"),
            ({"role": "stratum,"}, "--role: '': expected all or stratum, payments, web"),
            ({"worker": "0"}, "--worker: '0': expected a number 1-256"),
            ({"worker": "x"}, "--worker: 'x': expected a number 1-256"),
            (
                {"worker": "1", "role": "web"},
                "--worker: a worker serves the Stratum ports only: no other --role",
            ),
        ):
            with self.assertRaises(usage.UsageError) as caught:
                process_roles(bad)
            self.assertEqual(str(caught.exception), message)
        options = Options()
        with self.assertRaises(usage.UsageError):
            options.parseOptions(["-c", str(SHIPPED_CONF), "--role", "nothing"])

    def test_every_role(self) -> None:
        """By default: the instance lease, the ports, payments and the web."""
        found = self.services(self.conf())
        for kind in ("InstanceLeaseService", "StratumService", "PaymentService", "WebService"):
            self.assertIn(kind, found)
        self.assertNotIn("WorkerSupervisor", found)

    def test_each_role_alone(self) -> None:
        conf = self.conf()
        stratum = self.services(conf, "stratum")
        self.assertIn("InstanceLeaseService", stratum)
        self.assertNotIn(PaymentService.__name__, stratum)
        self.assertNotIn(WebService.__name__, stratum)
        payments = self.services(conf, "payments")
        self.assertIn("PaymentService", payments)
        self.assertNotIn("InstanceLeaseService", payments)  # it serves no miners: no byte
        self.assertNotIn("WebService", payments)
        web = self.services(conf, "web")
        self.assertIn("WebService", web)
        self.assertNotIn("PaymentService", web)
        for found in (stratum, payments, web):
            self.assertIn("StreamServerEndpointService", found)  # the control port, in every one

    def test_switching_with_workers(self) -> None:
        """With workers: 2 and a switch, each worker serves the switch's ports
        (SwitchingService); the main process holds their sockets, relays the
        moves (RelayedSwitches) and alone runs profit switching."""
        conf = self.conf(
            workers=2,
            instance=None,
            switching={
                "scrypt": {
                    "algorithm": "scrypt",
                    "pools": ["litecoin", "copycoin"],
                    "ports": [{"listen": "tcp:3999:interface=127.0.0.1", "diff": 8}],
                }
            },
            profit_switching={"prices": {"file": "prices.json"}},
        )
        shutil.copytree(SHIPPED_CONF.parent / "coins", conf / "coins")
        settings = yaml.safe_load((conf / "config.yaml").read_text())
        settings["coins"] = "coins"
        (conf / "config.yaml").write_text(yaml.safe_dump(settings))
        copycoin = renamed_coin("litecoin-regtest", "copycoin-regtest", "rCPY")
        (conf / "coins" / "copycoin-regtest.yaml").write_text(yaml.safe_dump(copycoin))
        pool = yaml.safe_load((conf / "pools" / "litecoin.yaml").read_text())
        pool.update(coin="copycoin-regtest", ports=[{"listen": "tcp:3998:interface=127.0.0.1", "diff": 8}])
        (conf / "pools" / "copycoin.yaml").write_text(yaml.safe_dump(pool))
        main = self.services(conf)
        self.assertIn("RelayedSwitches", main)
        self.assertIn("ProfitSwitchingService", main)
        self.assertNotIn("SwitchingService", main)
        self.assertEqual(main.count("StratumService"), 3)  # both pools' ports and the switch's, held
        worker = self.services(conf, worker=1)
        self.assertIn("SwitchingService", worker)
        self.assertNotIn("RelayedSwitches", worker)
        self.assertNotIn("ProfitSwitchingService", worker)
        self.assertEqual(worker.count("StratumService"), 3)

    def test_main_with_workers(self) -> None:
        """With workers: 2 the main process supervises them, holds the ports
        and leases no byte of its own; a worker serves the ports only."""
        conf = self.conf(workers=2, instance=None)
        main = self.services(conf)
        self.assertIn("WorkerSupervisor", main)
        self.assertNotIn(InstanceLeaseService.__name__, main)
        self.assertIn("PaymentService", main)
        self.assertIn("WebService", main)
        worker = self.services(conf, worker=1)
        self.assertIn("InstanceLeaseService", worker)
        self.assertIn("MainChannelService", worker)
        self.assertNotIn("WorkerSupervisor", worker)
        self.assertNotIn("PaymentService", worker)
        self.assertNotIn("WebService", worker)
