"""Worker processes end to end: ``twistd -n nomp`` with ``workers: 2`` on a
real redis-server and litecoind regtest, miners on its Stratum port.

The main process holds the port's listening socket and two workers accept
from it; each worker leases its own instance byte, the first byte of the
extranonce1s it hands out, which tells which worker a miner reached.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from nomp.miner import Miner, connect
from nomp.minerkit import tls_options
from test.poolconf import write_conf
from test.servers import RPC_PASSWORD, RPC_USER, RedisServer, free_port, shared_regtest
from test.test_haproxy import (
    COIN,
    POOL,
    SCRYPT,
    LineProbe,
    PoolProcess,
    ReconnectingMiner,
    assert_every_answer_recorded,
    eventually,
    probe_from,
    recorded_shares,
    stop_miners,
)
from test.tlscerts import self_signed

PORT_DIFFICULTY = 0.125  # a few shares a second from the test miners; on regtest each is a block
MINERS = 6
MAX_PROBES = 16  # connections made until both workers have one
MOVE_TIMEOUT = 30.0  # seconds the killed worker's miners get to mine on again
START_TIMEOUT = 120.0  # seconds for the main process and its workers to have work (a loaded machine)

# One worker's part of the main process's ``status`` answer.
_WORKER_STATUS = re.compile(
    r"worker (\d+) \(pid (\d+)\): ok [^|]*?"
    + re.escape(f"{POOL} ({COIN})")
    + r": (ready|starting), (\d+) miner"
)


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    index: int
    pid: int
    ready: bool
    miners: int


def worker_statuses(answer: str) -> dict[int, WorkerStatus]:
    return {
        int(m[1]): WorkerStatus(int(m[1]), int(m[2]), m[3] == "ready", int(m[4]))
        for m in _WORKER_STATUS.finditer(answer)
    }


class TwoWorkersTests(TestCase):
    """Miners spread over two workers; blocknotify and reload reach both; a
    worker killed with SIGKILL is started again while its miners mine on the
    other; Redis counts every share the miners were told was accepted."""

    timeout = 400

    async def test_two_workers(self) -> None:
        pair = shared_regtest("workers")
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        address = pair.new_address()
        stratum_port = free_port()
        folder, _ = write_conf(
            Path(self.mktemp()),
            pair.miner.url,
            RPC_USER,
            RPC_PASSWORD,
            address,
            redis.port,
            web={"enabled": False},
            ports=[{"listen": f"tcp:{stratum_port}:interface=127.0.0.1", "diff": PORT_DIFFICULTY}],
            payments={"enabled": False},
            hashrate_window=3600,  # every share of the test stays in <coin>:hashrate
            # Only blocknotify brings a new block's job, until the reload below.
            block_refresh_interval=3600,
        )
        settings_file = folder / "config.yaml"
        settings = yaml.safe_load(settings_file.read_text())
        settings.update(workers=2, drain_seconds=2)
        settings["logging"]["level"] = "info"
        settings_file.write_text(yaml.safe_dump(settings))
        main = PoolProcess("main", folder, stratum_port)
        main.start()
        self.addCleanup(main.kill_if_running)  # its workers stop once its channels close

        async def statuses() -> dict[int, WorkerStatus]:
            if not main.running:
                raise AssertionError(f"the main process exited:\n{main.log()}")
            try:
                return worker_statuses(await main.ask("status"))
            except OSError:
                return {}

        async def both_ready() -> bool:
            found = await statuses()
            return len(found) == 2 and all(s.ready for s in found.values())

        await eventually(both_ready, "both workers have work", timeout=START_TIMEOUT)
        pids = {index: s.pid for index, s in (await statuses()).items()}
        self.assertEqual(len(set(pids.values())), 2)
        self.assertNotIn(main.pid, pids.values())

        def leased() -> dict[str, int]:
            """Instance byte (two hex digits) -> the worker pid leasing it."""
            held = {}
            for key in redis.command("KEYS", "nomp:instance:*"):
                holder = redis.command("GET", key)  # host:pid:random
                held[f"{int(key.rsplit(':', 1)[1]):02x}"] = int(holder.split(":")[1])
            return held

        await eventually(lambda: set(leased().values()) == set(pids.values()), "each worker leased a byte")
        self.assertEqual(len(leased()), 2)  # the main process serves no miner: no byte of its own

        # Connections spread over the workers, who accept from the one socket.
        probes: list[LineProbe] = []
        probe_worker: list[int] = []
        while len(set(probe_worker)) < 2:
            self.assertLess(len(probes), MAX_PROBES, f"every probe reached one worker: {probe_worker}")
            probe = await probe_from("127.0.0.1", "127.0.0.1", stratum_port)
            probes.append(probe)
            self.addCleanup(self.close, probe)
            probe.send(1, "mining.subscribe", ["probe/1.0"])
            probe.send(2, "mining.authorize", [f"{address}.probe", "x"])
            await eventually(lambda: 2 in probe.replies and bool(self.jobs(probe)), "the probe has a job")  # noqa: B023
            extranonce1 = probe.replies[1]["result"][1]
            probe_worker.append(leased()[extranonce1[:2]])

        # A blocknotify reaches both workers: each sends its miners the new block's job.
        jobs_before = [len(self.jobs(probe)) for probe in probes]
        (tip,) = pair.generate(1)
        answer = await main.ask(f"blocknotify {POOL} {tip}")
        self.assertRegex(
            answer, r"^ok worker 1 \(pid \d+\): ok litecoin notified \| worker 2 \(pid \d+\): ok"
        )
        await eventually(
            lambda: all(len(self.jobs(p)) > before for p, before in zip(probes, jobs_before, strict=True)),
            "every probe, on either worker, has the new block's job",
        )
        for probe in probes:
            newest = self.jobs(probe)[-1]
            self.assertTrue(newest[8], "a new block's job is clean")
            self.assertEqual(self.previous_hash(newest[1]), tip)
        for probe in probes:
            await self.close(probe)

        # A reload reaches both too: from now on they poll the node every
        # second, and a second port opens. Its socket is the main process's,
        # and the workers are replaced one after the other to be given it.
        pool_file = folder / "pools" / "litecoin.yaml"
        pool = yaml.safe_load(pool_file.read_text())
        pool["block_refresh_interval"] = 1
        second_port = free_port()
        pool["ports"].append({"listen": f"tcp:{second_port}:interface=127.0.0.1", "diff": PORT_DIFFICULTY})
        pool_file.write_text(yaml.safe_dump(pool))
        answer = await main.ask("reload")
        self.assertTrue(answer.startswith("ok main: ok reloaded"), answer)
        self.assertEqual(answer.count("): ok reloaded"), 2, answer)
        self.assertTrue(answer.endswith("the workers are replaced one at a time to serve the ports opened"))

        async def replaced() -> bool:
            found = await statuses()
            return len(found) == 2 and all(s.ready and s.pid not in pids.values() for s in found.values())

        await eventually(replaced, "both workers are replaced", timeout=START_TIMEOUT)
        on_second = await probe_from("127.0.0.1", "127.0.0.1", second_port)
        self.addCleanup(self.close, on_second)
        on_second.send(1, "mining.subscribe", ["probe/1.0"])
        on_second.send(2, "mining.authorize", [f"{address}.probe", "x"])
        await eventually(lambda: bool(self.jobs(on_second)), "a worker serves the new port")
        await self.close(on_second)

        # Miners on both workers.
        miners = [
            ReconnectingMiner(f"{address}.rig{i}", f"127.0.0.{11 + i}", "127.0.0.1", stratum_port)
            for i in range(MINERS)
        ]
        self.addCleanup(stop_miners, miners)
        for miner in miners:
            await miner.start()
        await eventually(lambda: all(m.accepted() >= 2 for m in miners), "every miner has shares accepted")

        def on_worker() -> dict[int, list[ReconnectingMiner]]:
            by_pid: dict[int, list[ReconnectingMiner]] = {}
            bytes_ = leased()
            for miner in miners:
                by_pid.setdefault(bytes_[miner.current.extranonce1[:2]], []).append(miner)
            return by_pid

        spread = on_worker()
        counted = await statuses()
        self.assertEqual(
            {s.pid: s.miners for s in counted.values() if s.miners}, {p: len(m) for p, m in spread.items()}
        )
        if len(spread) < 2:
            raise AssertionError(f"all {MINERS} miners reached one worker: {spread}")

        # SIGKILL one worker. It answers a share before writing it (in a batch
        # every 200 ms), so a kill loses what it answered in its last moments:
        # its miners are quiet first, until Redis holds every share they were
        # answered for, so that the counts below are exact.
        victim_index, victim = next((i, s) for i, s in counted.items() if s.miners)
        moving = spread[victim.pid]
        for miner in moving:
            await miner.current.miner.quiet()
        for miner in moving:
            answered = (miner.accepted(), sum(miner.rejected().values()))
            await eventually(
                lambda: recorded_shares(redis, miner.user) == answered,  # noqa: B023
                f"Redis holds every share {miner.user} was answered for",
            )
        links_before_kill = {miner.user: miner.current for miner in miners}
        os.kill(victim.pid, signal.SIGKILL)
        await eventually(
            lambda: all(m.connected and m.current is not links_before_kill[m.user] for m in moving),
            "the killed worker's miners are connected again",
            timeout=MOVE_TIMEOUT,
        )
        await eventually(
            lambda: all(m.current.miner.stats.accepted >= 2 for m in moving),
            "the moved miners have shares accepted again",
            timeout=MOVE_TIMEOUT * 3,
        )
        for miner in miners:
            if miner not in moving:
                self.assertIs(miner.current, links_before_kill[miner.user])  # never disconnected

        async def restarted() -> bool:
            found = await statuses()
            again = found.get(victim_index)
            return again is not None and again.pid != victim.pid and again.ready

        await eventually(restarted, f"worker {victim_index} is running again", timeout=START_TIMEOUT)
        self.assertIn(
            f"worker {victim_index} (pid {victim.pid}) exited with status -9", main.log_path.read_text()
        )

        # Stop mining, stop the main process as systemd would: its workers
        # drain and write their shares, then it exits.
        await stop_miners(miners)
        self.assertEqual(main.stop(), -signal.SIGTERM, main.log())
        self.assertIn("stopping 2 workers", main.log_path.read_text())
        assert_every_answer_recorded(self, redis, miners)

    @staticmethod
    def jobs(probe: LineProbe) -> list[list[Any]]:
        """The params of every mining.notify the probe got."""
        return [line["params"] for line in probe.lines if line.get("method") == "mining.notify"]

    @staticmethod
    def previous_hash(stratum: str) -> str:
        """A mining.notify's previous block hash (4-byte words swapped) as the node writes it."""
        raw = bytes.fromhex(stratum)
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 32, 4))
        return words[::-1].hex()

    async def close(self, probe: LineProbe) -> None:
        if not probe.closed.called:
            assert probe.transport is not None
            probe.transport.loseConnection()
            await probe.closed


class TLSOverWorkersTests(TestCase):
    """An ssl: port with workers: 2: each worker does the TLS on the socket
    the main process holds, and miners verifying the pool's certificate mine
    on both."""

    timeout = 240

    async def test_tls_port(self) -> None:
        pair = shared_regtest("workers")
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        address = pair.new_address()
        certificate = self_signed(Path(self.mktemp()).resolve() / "tls")  # the pool runs in its folder
        folder, stratum_port = write_conf(
            Path(self.mktemp()),
            pair.miner.url,
            RPC_USER,
            RPC_PASSWORD,
            address,
            redis.port,
            tls=certificate,
            web={"enabled": False},
            payments={"enabled": False},
            block_refresh_interval=1,
        )
        settings_file = folder / "config.yaml"
        settings = yaml.safe_load(settings_file.read_text())
        settings.update(workers=2, drain_seconds=1)
        settings_file.write_text(yaml.safe_dump(settings))
        main = PoolProcess("main", folder, stratum_port)
        main.start()
        self.addCleanup(main.kill_if_running)

        async def both_ready() -> bool:
            if not main.running:
                raise AssertionError(f"the main process exited:\n{main.log()}")
            try:
                found = worker_statuses(await main.ask("status"))
            except OSError:
                return False
            return len(found) == 2 and all(s.ready for s in found.values())

        await eventually(both_ready, "both workers have work", timeout=START_TIMEOUT)

        def leased() -> dict[str, int]:
            held = {}
            for key in redis.command("KEYS", "nomp:instance:*"):
                holder = redis.command("GET", key)
                held[f"{int(key.rsplit(':', 1)[1]):02x}"] = int(holder.split(":")[1])
            return held

        await eventually(lambda: len(leased()) == 2, "each worker leased a byte")
        miners: list[Miner] = []
        self.addCleanup(self.stop_all, miners)
        while len({leased()[m.extranonce1.hex()[:2]] for m in miners}) < 2:
            self.assertLess(len(miners), MAX_PROBES, "every TLS miner reached one worker")
            miner = Miner(reactor, SCRYPT, f"{address}.tls{len(miners)}")
            await connect(miner, "127.0.0.1", stratum_port, tls_options("127.0.0.1", str(certificate.cert)))
            self.assertTrue(await miner.authorized)
            miners.append(miner)
            miner.start()
        await eventually(
            lambda: all(m.stats.accepted >= 2 for m in miners), "every TLS miner has shares accepted"
        )
        await self.stop_all(miners)
        self.assertEqual(main.stop(), -signal.SIGTERM, main.log())

    async def stop_all(self, miners: list[Miner]) -> None:
        for miner in miners:
            await miner.stop()


class LogReopenTests(TestCase):
    """SIGUSR1 to the main process: it and its workers write to a new file at
    ``logging.file`` once logrotate has moved the old one. No daemon or Redis
    answers: the processes wait for them, and log."""

    timeout = 180

    async def test_workers_follow(self) -> None:
        folder, stratum_port = write_conf(
            Path(self.mktemp()), "http://127.0.0.1:1", RPC_USER, RPC_PASSWORD, "unused", free_port()
        )
        log_file = folder.resolve() / "nomp.log"
        settings_file = folder / "config.yaml"
        settings = yaml.safe_load(settings_file.read_text())
        settings.update(workers=2, drain_seconds=0)
        settings["web"]["enabled"] = False
        settings["logging"].update(level="info", file=str(log_file))
        settings_file.write_text(yaml.safe_dump(settings))
        main = PoolProcess("main", folder, stratum_port)
        main.start()
        self.addCleanup(main.kill_if_running)

        def text(path: Path) -> str:
            return path.read_text(errors="replace") if path.exists() else ""

        # Each worker has opened the file (its first lines are there).
        await eventually(
            lambda: all(f"[worker {n} " in text(log_file) for n in (1, 2)),
            f"both workers log:\n{main.log()}{text(log_file)[-4000:]}",
            START_TIMEOUT,
        )
        moved = log_file.with_name("nomp.log.1")
        log_file.rename(moved)
        os.kill(main.pid, signal.SIGUSR1)
        reopened = [
            f"[{who}nomp.service.NompService#info] SIGUSR1: log file {log_file} opened again"
            for who in ("", "worker 1 ", "worker 2 ")
        ]
        await eventually(
            lambda: all(line in text(log_file) for line in reopened),
            f"every process writes to the new file:\n{text(log_file)}",
            60.0,
        )
        old = text(moved)
        self.assertFalse(any(line in old for line in reopened), old[-4000:])
        self.assertTrue(main.running)
        self.assertEqual(await deferToThread(main.stop), -signal.SIGTERM, text(log_file))
        new = text(log_file)
        for who in ("", "worker 1 ", "worker 2 "):  # every process's lines, to its last
            self.assertIn(f"[{who}twisted.scripts._twistd_unix.UnixAppLogger#info] Server Shut Down.", new)
