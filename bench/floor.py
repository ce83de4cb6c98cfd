"""What a share costs before any pool logic runs: the floor under bench/stratum_load.py.

Run: python bench/floor.py [--seconds 20] [--rate 2000] [--connections 200]

The same load client as bench/stratum_load.py (200 connections, shares paced
every 5 ms, one JSON reply per submit) drives, one after the other, two
servers that do nothing but answer:

- ``twisted``: a Twisted LineOnlyReceiver on the epoll reactor that decodes
  each line with json.loads and answers ``result: true``, sending straight
  to the socket as the pool does;
- ``epoll``: the same answers from a bare select.epoll loop in plain
  Python (no framework: recv, split lines, json.loads, send).

Each server runs in its own process and its CPU is read from /proc, as for
the pool. The difference between the two is Twisted's own cost per message;
the epoll figure is close to what the kernel's loopback TCP alone costs.

Then the other half: the pool's own Python per share with no I/O at all.
Submit lines go straight into a real StratumProtocol and StratumPool in
this process (on the test fakes: no sockets, no threads, no Redis, every
hash a fixed share that is not a block), best of a few rounds.

With --fan-out it measures the floor under bench/stratum_load.py's fan-out
instead: the same swarm of idle miners (--miners, --blocks) subscribes to a
bare Twisted server that answers as the pool does and, on a blocknotify
line on its control connection, sends every miner a ``mining.notify`` line
as long as the pool's for a realistic template (a job of bench/templates.py
made ready beforehand). It sends it two ways, one server each:

- ``write``: ``transport.write`` to each connection, Twisted's own way
  (the bytes leave as the reactor finds each socket writable);
- ``send``: ``socket.send`` on each socket in a plain Python loop, in the
  reactor thread, before returning to the reactor;
- ``send_each``: one call of the pool's C send loop on every socket, on
  the reactor thread alone: the kernel's sends with no Python between them;
- ``halves``: the same loop on half the sockets each in two threads at
  once, the reactor thread one of them: the kernel's sends on both cores;
- ``broadcast``: the pool's own ``broadcast`` (nomp/stratum/broadcast.py)
  on these connections: its send code without the rest of the pool.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import templates  # noqa: E402
from bench.stratum_load import (  # noqa: E402
    SwarmProcess,
    fan_out,
    line_sender,
    load_phase,
    numbers,
    raise_fd_limit,
    run_until_done,
    summarise,
    wait_port,
)
from nomp.hashing import send_each  # noqa: E402
from nomp.stratum.broadcast import broadcast, default_threads  # noqa: E402
from nomp.stratum.connection import Connection  # noqa: E402
from test.servers import free_port  # noqa: E402

USER = "bench.floor"
NOTIFY = (
    json.dumps(
        {
            "id": None,
            "method": "mining.notify",
            "params": ["1", "00" * 32, "", "", [], "20000000", "1d00ffff", "5f5e1000", True],
        }
    ).encode()
    + b"\n"
)


def answer(line: bytes | bytearray) -> bytes:
    """The reply to one request line: what every server here sends."""
    message = json.loads(line)
    request_id = message.get("id")
    reply = b'{"id":%d,"result":true,"error":null}\n' % request_id
    if message.get("method") == "mining.subscribe":
        return b'{"id":%d,"result":[[],"00000000",4],"error":null}\n' % request_id + NOTIFY
    return reply


class AnsweringProtocol(LineOnlyReceiver):
    delimiter = b"\n"

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self._send = transport.socket.send

    def lineReceived(self, line: bytes) -> None:
        data = answer(line)
        transport: Any = self.transport
        if not transport.dataBuffer and not transport._tempDataBuffer:
            try:
                sent = self._send(data)
            except BlockingIOError:
                sent = 0
            data = data[sent:]
            if not data:
                return
        transport.write(data)


def run_twisted(port: int) -> None:
    endpoint = TCP4ServerEndpoint(reactor, port, backlog=1024, interface="127.0.0.1")
    endpoint.listen(Factory.forProtocol(AnsweringProtocol))
    reactor.run()


def run_epoll(port: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    connections: dict[int, tuple[socket.socket, bytearray]] = {}
    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    connections[sock.fileno()] = (sock, bytearray())
                    poller.register(sock.fileno(), select.EPOLLIN)
                continue
            sock, buffer = connections[fd]
            data = sock.recv(65536)
            if not data:
                poller.unregister(fd)
                del connections[fd]
                sock.close()
                continue
            buffer += data
            *lines, rest = buffer.split(b"\n")
            buffer[:] = rest
            for line in lines:
                if line:
                    sock.send(answer(line))  # a few dozen bytes: the socket buffer takes them


SERVERS = {"twisted": run_twisted, "epoll": run_epoll}


def realistic_notify_lines() -> Iterator[bytes]:
    """``mining.notify`` lines of jobs on realistic templates, a fresh one each."""
    from nomp.chain.coinbase import CoinbaseLayout, PayoutPlan  # noqa: PLC0415 - only --fan-out
    from nomp.chain.jobs import JobRegistry  # noqa: PLC0415
    from nomp.chain.template import BlockTemplate  # noqa: PLC0415
    from nomp.hashing import ALGORITHMS  # noqa: PLC0415
    from nomp.stratum.protocol import encode_notification  # noqa: PLC0415

    rng = random.Random(15)
    registry = JobRegistry(
        ALGORITHMS["scrypt"], PayoutPlan(bytes.fromhex("0014" + "11" * 20)), CoinbaseLayout()
    )
    for height in itertools.count(800_000):
        reply = templates.template_reply(rng, height, rng.randbytes(32).hex(), int(time.time()))
        job = registry.add(BlockTemplate.from_rpc(reply), time.time())
        assert job is not None
        yield encode_notification("mining.notify", job.notify_params(True))


class FanOutMiner(LineOnlyReceiver):
    """One miner of the fan-out floor: answered as the pool answers, then sent jobs."""

    delimiter = b"\n"

    def __init__(self, server: FanOutServer) -> None:
        self.server = server

    # What the pool's broadcast asks of a connection.
    def direct_fd(self) -> int | None:
        transport: Any = self.transport
        if transport.dataBuffer or transport._tempDataBuffer:
            return None
        fd: int = transport.socket.fileno()
        return fd

    def send_line(self, line: bytes) -> None:
        self.transport.write(line)  # type: ignore[union-attr]

    send_rest = send_line

    def lineReceived(self, line: bytes) -> None:
        message = json.loads(line)
        request_id, method = message.get("id"), message.get("method")
        transport: Any = self.transport
        if method == "mining.subscribe":
            transport.write(b'{"id":%d,"result":[[],"00000000",4],"error":null}\n' % request_id)
        elif method == "mining.authorize":
            transport.write(b'{"id":%d,"result":true,"error":null}\n' % request_id)
            transport.write(b'{"id":null,"method":"mining.set_difficulty","params":[1e-15]}\n')
            transport.write(self.server.line)
            self.server.miners.append(self)


class FanOutServer:
    """The miners of one floor server, and the job it sends them next."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.miners: list[FanOutMiner] = []
        self.lines = realistic_notify_lines()
        self.line = next(self.lines)  # the job miners have
        self.next_line = next(self.lines)  # the next block's, made ready

    def broadcast(self) -> None:
        self.line = line = self.next_line
        # Well after this job's bytes have left: making a job is no part of the floor.
        reactor.callLater(0.2, self.prepare)
        if self.how == "write":
            for miner in self.miners:
                miner.transport.write(line)  # type: ignore[union-attr]
            return
        if self.how == "broadcast":
            broadcast(cast(list[Connection], self.miners), line, default_threads())
            return
        if self.how in ("send_each", "halves"):
            transports: list[Any] = [miner.transport for miner in self.miners]
            fds = [t.socket.fileno() for t in transports]
            if self.how == "send_each":
                taken = send_each(fds, line)
            else:
                half = len(fds) // 2
                other: list[list[int]] = []
                helper = threading.Thread(target=lambda: other.append(send_each(fds[:half], line)))
                helper.start()
                rest = send_each(fds[half:], line)
                helper.join()
                taken = other[0] + rest
            for queued, count in zip(transports, taken, strict=True):
                if count != len(line):
                    queued.write(line[max(count, 0) :])
            return
        for miner in self.miners:
            transport: Any = miner.transport
            try:
                sent = transport.socket.send(line)
            except BlockingIOError:
                sent = 0
            if sent != len(line):
                transport.write(line[sent:])

    def prepare(self) -> None:
        self.next_line = next(self.lines)


class FloorControl(LineOnlyReceiver):
    delimiter = b"\n"

    def __init__(self, server: FanOutServer) -> None:
        self.server = server

    def lineReceived(self, line: bytes) -> None:
        self.server.broadcast()
        self.sendLine(b"ok")


def run_fan_out_server(how: str, port: int, control: int) -> None:
    raise_fd_limit()
    server = FanOutServer(how)
    miners = TCP4ServerEndpoint(reactor, port, backlog=4096, interface="127.0.0.1")
    miners.listen(Factory.forProtocol(lambda: FanOutMiner(server)))
    controls = TCP4ServerEndpoint(reactor, control, interface="127.0.0.1")
    controls.listen(Factory.forProtocol(lambda: FloorControl(server)))
    reactor.run()


def run_fan_out_floor(options: argparse.Namespace) -> None:
    print(
        f"fan-out floor: a bare Twisted server, {options.blocks} new jobs per size, a blocknotify "
        "line on an open control connection each; times from its send until the job is in each "
        "miner's socket"
    )
    for how in ("write", "send", "send_each", "halves", "broadcast"):
        port, control = free_port(), free_port()
        command = [sys.executable, __file__, "--serve-fan-out", how, str(port), str(control)]
        server = subprocess.Popen(command)
        try:
            wait_port(port)
            wait_port(control)
            swarm = SwarmProcess(port, {**os.environ, "PYTHONPATH": str(ROOT)})
            try:
                notify = line_sender(control, "blocknotify")
                for miners in options.miners:
                    runs = fan_out(swarm, miners, options.blocks, lambda: None, notify)
                    print(f"{how:8} {summarise(runs)}")
            finally:
                swarm.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


def pool_logic(shares: int = 30000, rounds: int = 5) -> float:
    """Microseconds of the pool's Python per accepted share, with no I/O."""
    from twisted.internet import task  # noqa: PLC0415 - only this measure needs it

    from nomp.config import PortConfig  # noqa: PLC0415
    from nomp.hashing import ShareHash  # noqa: PLC0415
    from test.fakes import StratumHarness, mainnet_template, pool_config  # noqa: PLC0415
    from test.test_stratum_protocol import NOW, WORKER  # noqa: PLC0415

    clock = task.Clock()
    clock.advance(NOW)
    harness = StratumHarness(pool_config(ports=(PortConfig(listen="tcp:3333", diff=1e-15),)), clock)
    job = harness.new_job(mainnet_template())
    miner = harness.miner(WORKER, ip="10.0.0.1")  # an IP: bans and limits count its shares
    share = ShareHash(bytes(80), (2**250).to_bytes(32, "little"))  # a share, not a block
    harness.hashing.submit = lambda hasher, work, done: done(share)  # type: ignore[method-assign]
    best = float("inf")
    for turn in range(rounds):
        lines = [
            json.dumps(
                {
                    "id": i,
                    "method": "mining.submit",
                    "params": [WORKER, job.job_id, f"{turn:08x}", f"{job.template.curtime:08x}", f"{i:08x}"],
                }
            ).encode()
            + b"\n"
            for i in range(shares)
        ]
        harness.recorder.valid.clear()
        started = time.perf_counter()
        for line in lines:
            miner.send(line)
            miner.transport.clear()
        best = min(best, time.perf_counter() - started)
        assert len(harness.recorder.valid) == shares, "every share accepted"
    return best / shares * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--fan-out", action="store_true", help="the floor under the fan-out instead")
    parser.add_argument("--miners", type=numbers, default=[1000, 5000, 10000], help="--fan-out sizes")
    parser.add_argument("--blocks", type=int, default=5, help="--fan-out: new jobs per size")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--serve-fan-out", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve is not None:
        SERVERS[options.serve[0]](int(options.serve[1]))
        return
    if options.serve_fan_out is not None:
        how, port, control = options.serve_fan_out
        run_fan_out_server(how, int(port), int(control))
        return
    raise_fd_limit()
    if options.fan_out:
        run_fan_out_floor(options)
        return
    print(
        f"{options.connections} connections, {options.rate:g} requests/s offered for "
        f"{options.seconds:g} s to each server"
    )
    servers = {}
    for name in SERVERS:
        port = free_port()
        servers[name] = (port, subprocess.Popen([sys.executable, __file__, "--serve", name, str(port)]))
    try:
        results: dict[str, dict[str, float]] = {}

        async def phases() -> None:
            for name, (port, server) in servers.items():
                wait_port(port)
                results[name] = await load_phase(
                    port, USER, options.connections, options.rate, options.seconds, server.pid
                )

        run_until_done(phases())
        for name, r in results.items():
            print(
                f"{name:8} answered {r['accepted']:.0f}/{r['sent']:.0f}, {r['shares_per_s']:.0f} /s, "
                f"server CPU {r['cpu_us_per_share']:.1f} us per request, "
                f"reply p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
            )
    finally:
        for _, server in servers.values():
            server.terminate()
            server.wait(timeout=30)
    print(f"{'pool':8} its own Python per accepted share, no I/O: {pool_logic():.1f} us")


if __name__ == "__main__":
    main()
