"""Load on the Stratum side of a running pool, measured from outside it.

Run: python bench/stratum_load.py [--template realistic|empty] [--rates 600,1000,2000,3000]
    [--seconds 10] [--connections 50] [--miners 1000,5000,10000] [--blocks 5] [--threads 1]
    [--workers 1,2]

Starts a redis-server, a fake coin daemon and ``twistd -n nomp`` with a
scrypt pool and a sha256d pool whose ports accept every hash as a share.
The daemon serves a template at a mainnet difficulty (so shares are not
blocks); by default one like a busy mainnet's (bench/templates.py: 200
real transactions, about 60 % of them segwit, with their witness
commitment), a new one with fresh transactions at every new block;
``--template empty`` serves one with no transactions. Then:

1. at each rate of --rates, from --connections connections: shares/s,
   pool CPU per accepted share and submit-to-reply latency (--algorithms);
   then the same in a closed loop, each connection sending its next share
   when the last one is answered (one in flight per connection), for
   --seconds (--skip-closed-loop leaves it out);
2. pool memory per idle connection;
3. for each size of --miners, --blocks new blocks: from the blocknotify
   line's send to the pool, the time until the first miner, half of them
   and the last had the new job, and the pool's own account of where the
   time went (its log); then --blocks more announced as a node runs its
   -blocknotify command, ``nomp-notify`` through ``/bin/sh -c``, timed from
   just before the spawn.

The miners are other processes: the share connections this one, the idle
miners a swarm process of their own; both decode every line they get.
Pool figures are read from /proc for the pool process only.
bench/floor.py --fan-out runs the same swarm against a bare Twisted server.

With --workers 1,2 it runs the shares and the fan-out on a pool of each
worker count (``workers`` in config.yaml: the main process and that many
worker processes on the Stratum ports; pool CPU is theirs together), then
under bench/floor.py's bare Twisted servers, and prints side by side the
highest rate answered with a reply p99 under 5 ms and the fan-out, each
also as a ratio to bare Twisted's (the load client shares the cores).

With --limits it measures the defences instead: the scrypt pool runs with
connection limits and bans on, legitimate miners on 127.0.0.2 submit
shares while a flood of --idle connections comes from --sources other
addresses on 127.0.0.0/8 (one of which also sends junk until banned), and
it prints what each address was let in, what the ban did, and the
legitimate miners' shares and reply latency meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.web.resource import Resource
from twisted.web.server import Site

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import templates  # noqa: E402
from nomp.chain.address import decode_address  # noqa: E402
from nomp.config import NetworkConfig, load_config  # noqa: E402
from test.fakes import MAINNET_BITS  # noqa: E402
from test.servers import RedisServer, free_port  # noqa: E402
from test.test_chain import template_reply  # noqa: E402

SCRYPT_ADDRESS = "rltc1qey3dpjf7avevcavv6uk33juxyyyyndgfuc2s2l"
SHA_ADDRESS = "bcrt1qey3dpjf7avevcavv6uk33juxyyyyndgfz4seap"
TICKS = os.sysconf("SC_CLK_TCK")
TRANSACTIONS = 200  # in a realistic template
BITCOIN_REGTEST = NetworkConfig(
    chain="regtest", pubkey_address_prefix=111, script_address_prefixes=(196,), bech32_hrp="bcrt"
)


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds of a process (or of one of its threads)."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def thread_cpu(pid: int) -> dict[int, float]:
    return {int(t.name): cpu_seconds(pid, int(t.name)) for t in Path(f"/proc/{pid}/task").iterdir()}


def process_tree(pid: int) -> list[int]:
    """``pid`` and its child processes (a pool's workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:  # its parent
            children.append(int(entry.name))
    return [pid, *children]


def tree_cpu(pids: list[int]) -> tuple[float, float]:
    """CPU seconds of these processes, and of their main (reactor) threads alone."""
    return sum(cpu_seconds(p) for p in pids), sum(cpu_seconds(p, p) for p in pids)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def write_conf(
    folder: Path,
    daemon_port: int,
    redis_port: int,
    scrypt_port: int,
    sha_port: int,
    control: int,
    threads: int = 1,
    banning: dict[str, Any] | None = None,
    web: int | None = None,
    workers: int = 1,
) -> None:
    (folder / "pools").mkdir(parents=True)
    settings = {
        "workers": workers,
        "coins": str(ROOT / "coins"),
        "threads": threads,
        "redis": {"port": redis_port},
        "logging": {"level": "info", "file": str(folder / "pool.log")},
        "control": {"listen": f"tcp:{control}:interface=127.0.0.1"},
        "web": {"enabled": False}
        if web is None
        else {"listen": f"tcp:{web}:interface=127.0.0.1:backlog=1024", "stats_interval": 5},
        "pool_defaults": {"job_rebroadcast_timeout": 0, "block_refresh_interval": 3600},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    for name, coin, address, port in (
        ("scrypt", "litecoin-regtest", SCRYPT_ADDRESS, scrypt_port),
        ("sha", "bitcoin-regtest", SHA_ADDRESS, sha_port),
    ):
        pool = {
            "coin": coin,
            "address": address,
            "daemons": [{"url": f"http://127.0.0.1:{daemon_port}", "user": "u", "password": "p"}],
            # difficulty so low that every hash is a share; backlog for connection storms
            "ports": [{"listen": f"tcp:{port}:interface=127.0.0.1:backlog=4096", "diff": 1e-15}],
            "connection_timeout": 3600,
        }
        if banning is not None and name == "scrypt":
            pool["banning"] = banning
        (folder / "pools" / f"{name}.yaml").write_text(yaml.safe_dump(pool))


# The fake daemon, run in its own process (python bench/stratum_load.py
# --daemon PORT KIND). It must cost the pool nothing it would not pay a real
# node: each template is built, and its JSON encoded, when the block before
# it is "found" (bench_newblock), so a getblocktemplate is answered with
# bytes already made.
class BenchDaemon(Resource):
    """A coin daemon's RPC port with one template at a time."""

    isLeaf = True

    def __init__(self, kind: str, transactions: int) -> None:
        super().__init__()
        self.kind = kind
        self.transactions = transactions
        self.networks = [load_config(ROOT / "conf").pools[0].coin.network, BITCOIN_REGTEST]
        self.rng = random.Random(15)
        self.height = 800_000
        self.prev = 1
        self.template = b""
        self.handlers: dict[str, Callable[[list[Any]], Any]] = {
            "getblockchaininfo": lambda _: {
                "chain": "regtest",
                "blocks": self.height - 1,
                "bestblockhash": f"{self.prev:064x}",
                "initialblockdownload": False,
            },
            "validateaddress": self.validate,
            "submitblock": lambda _: None,
            "bench_newblock": self.new_block,
        }
        self.make_template()

    def make_template(self) -> None:
        previous, now = f"{self.prev:064x}", int(time.time())
        if self.kind == "empty":
            reply = template_reply(bits=MAINNET_BITS, height=self.height, transactions=[])
            del reply["target"]
            reply.update(previousblockhash=previous, curtime=now, mintime=now - 600)
        else:
            reply = templates.template_reply(self.rng, self.height, previous, now, self.transactions)
        self.template = json.dumps(reply, separators=(",", ":")).encode()

    def validate(self, params: list[Any]) -> dict[str, Any]:
        for network in self.networks:
            try:
                script = decode_address(params[0], network).script.hex()
            except ValueError:
                continue
            return {"isvalid": True, "address": params[0], "scriptPubKey": script, "ismweb": False}
        return {"isvalid": False}

    def new_block(self, _: list[Any]) -> str:
        self.height += 1
        self.prev += 1
        self.make_template()  # fresh transactions: nothing carries over from the last block
        return f"{self.prev:064x}"

    def render_POST(self, request: Any) -> bytes:
        call = json.loads(request.content.read())
        method, request_id = call["method"], call.get("id")
        if method == "getblocktemplate":
            result = self.template
        else:
            result = json.dumps(self.handlers[method](call.get("params", []))).encode()
        request.setHeader("Content-Type", "application/json")
        return b'{"result":' + result + b',"error":null,"id":' + json.dumps(request_id).encode() + b"}\n"


def run_daemon(port: int, kind: str, transactions: int) -> None:
    site: Any = Site(BenchDaemon(kind, transactions))
    reactor.listenTCP(port, site, interface="127.0.0.1")
    reactor.run()


def rpc(port: int, method: str) -> Any:
    body = json.dumps({"id": 1, "method": method, "params": []}).encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST / HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])["result"]


def control(port: int, command: str) -> str:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(command.encode() + b"\n")
        return s.recv(4096).decode().strip()


# The load client: Twisted, in this process.
class LoadClient(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, load: Load, index: int) -> None:
        self.load = load
        self.index = index
        self.job: tuple[str, str] | None = None  # job id, ntime
        self.sent: dict[int, float] = {}
        self.ids = 10
        self.extranonce2 = 0
        self.nonce = 0
        self.ready: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.sendLine(b'{"id":1,"method":"mining.subscribe","params":["bench"]}')
        user = self.load.user
        self.sendLine(json.dumps({"id": 2, "method": "mining.authorize", "params": [user, "x"]}).encode())

    def lineReceived(self, line: bytes) -> None:
        now = time.perf_counter()
        message = json.loads(line)
        if message.get("method") == "mining.notify":
            params = message["params"]
            self.job = (params[0], params[7])
            if not self.ready.called:
                self.ready.callback(None)
            return
        request_id = message.get("id")
        sent = self.sent.pop(request_id, None) if isinstance(request_id, int) else None
        if sent is not None:
            self.load.latencies.append(now - sent)
            if message.get("result") is True:
                self.load.accepted += 1
            else:
                self.load.rejected += 1
            if self.load.closed_loop:
                self.submit()

    def submit(self) -> None:
        if self.job is None:
            return
        self.nonce += 1
        if self.nonce >= 2**32:
            self.nonce, self.extranonce2 = 0, self.extranonce2 + 1
        self.ids += 1
        params = [self.load.user, self.job[0], f"{self.extranonce2:08x}", self.job[1], f"{self.nonce:08x}"]
        self.sent[self.ids] = time.perf_counter()
        self.sendLine(json.dumps({"id": self.ids, "method": "mining.submit", "params": params}).encode())


class Load:
    def __init__(self, user: str, closed_loop: bool = False) -> None:
        self.user = user
        self.latencies: list[float] = []
        self.accepted = 0
        self.rejected = 0
        # Each answer sends the connection's next share, while this is set.
        self.closed_loop = closed_loop

    def figures(self, seconds: float, cpu: float, reactor_cpu: float) -> dict[str, float]:
        """The phase's accepted shares, their rate over ``seconds``, the pool's CPU
        (``cpu``, ``reactor_cpu`` seconds) per share and the reply latencies."""
        latencies = sorted(self.latencies)
        return {
            "accepted": self.accepted,
            "shares_per_s": self.accepted / seconds,
            "cpu_us_per_share": cpu / max(self.accepted, 1) * 1e6,
            "reactor_us_per_share": reactor_cpu / max(self.accepted, 1) * 1e6,
            "p50_ms": statistics.median(latencies) * 1e3,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
            "max_ms": latencies[-1] * 1e3,
        }


def disconnect(clients: list[LoadClient]) -> None:
    """Close every client still connected."""
    for client in clients:
        if client.transport is not None:
            client.transport.loseConnection()


async def load_phase(
    port: int,
    user: str,
    connections: int,
    rate: float | None,
    seconds: float,
    pool_pid: int,
    source: str = "127.0.0.1",
) -> dict[str, float]:
    """Shares at ``rate`` a second, or with ``rate`` None in a closed loop (one in
    flight per connection), for ``seconds``: the pool's figures."""
    load = Load(user)
    clients: list[LoadClient] = []
    for i in range(connections):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
        client = await endpoint.connect(Factory.forProtocol(partial(LoadClient, load, i)))
        assert isinstance(client, LoadClient)
        clients.append(client)
    await defer.gatherResults([c.ready for c in clients])
    await task.deferLater(reactor, 1.0)
    tick = 0.005
    per_tick = (rate or 0) * tick
    debt = 0.0
    turn = 0
    pids = process_tree(pool_pid)  # with workers, the pool is several processes
    (cpu_start, reactor_start), wall_start = tree_cpu(pids), time.perf_counter()
    end = wall_start + seconds

    def send() -> None:
        nonlocal debt, turn
        debt += per_tick
        while debt >= 1:
            clients[turn % len(clients)].submit()
            turn += 1
            debt -= 1

    loop = task.LoopingCall(send)
    loop.clock = reactor
    if rate is None:
        load.closed_loop = True
        for client in clients:
            client.submit()
    else:
        loop.start(tick)
    while time.perf_counter() < end:
        await task.deferLater(reactor, 0.1)
    if loop.running:
        loop.stop()
    load.closed_loop = False
    sending = time.perf_counter() - wall_start  # the rate is over the sends, not the wait after
    await task.deferLater(reactor, 1.0)  # let the last replies come
    cpu_end, reactor_end = tree_cpu(pids)
    cpu, reactor_cpu = cpu_end - cpu_start, reactor_end - reactor_start
    disconnect(clients)
    if rate is None:
        turn = sum(client.ids - 10 for client in clients)  # each client's request ids start at 11
    return {"sent": turn, "rejected": load.rejected, **load.figures(sending, cpu, reactor_cpu)}


# The swarm: many idle miners on raw sockets, in their own process
# (python bench/stratum_load.py --swarm PORT), driven by lines on its stdin:
# "grow N" opens connections until there are N, each subscribed and
# authorized, and answers once each has its first job; "arm" notes each
# miner's job, answers, and reads until every miner has another one, then
# reads the moment the new block was announced (time.time()) and answers
# how long after it each miner had its new job.
#
# Each miner reads as a miner does: it splits what it receives into lines
# and decodes each line's JSON, looking at the job of every mining.notify.
# A miner "has" the job when its bytes are in its socket: the kernel's
# receive time of the read that completed the line (SO_TIMESTAMPNS), so
# the time this one process takes to read ten thousand miners' sockets in
# turn does not count as the pool's delay. When the swarm read it is
# reported too.
SO_TIMESTAMPNS = 35  # Linux; the socket module does not name it
STAMP_SPACE = socket.CMSG_SPACE(16)
TIMESPEC = struct.Struct("qq")
HELLO = b'{"id":1,"method":"mining.subscribe","params":["swarm"]}\n' + (
    json.dumps({"id": 2, "method": "mining.authorize", "params": [SCRYPT_ADDRESS, "x"]}).encode() + b"\n"
)


class Swarm:
    def __init__(self, port: int) -> None:
        self.port = port
        self.poller = select.epoll()
        self.sockets: dict[int, socket.socket] = {}
        self.buffers: dict[int, bytes] = {}
        self.jobs: dict[int, str | None] = {}  # fd -> the job it mines on
        self.armed: dict[int, str | None] = {}  # fd -> its job when armed
        self.arrived: dict[int, tuple[float, float]] = {}  # fd -> its new job (in the socket, read)

    def grow(self, count: int) -> int:
        while len(self.sockets) < count:
            s = socket.create_connection(("127.0.0.1", self.port))
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setblocking(False)
            s.sendall(HELLO)
            fd = s.fileno()
            self.sockets[fd], self.buffers[fd], self.jobs[fd] = s, b"", None
            self.poller.register(fd, select.EPOLLIN)
            if len(self.sockets) % 500 == 0:
                self.pump(time.monotonic() + 0.01, lambda: False)  # keep the pool's answers moving
        self.pump(time.monotonic() + 120, lambda: all(job is not None for job in self.jobs.values()))
        return sum(1 for job in self.jobs.values() if job is not None)

    def arm(self) -> None:
        self.armed = dict(self.jobs)
        self.arrived = {}

    def wait_new_jobs(self, seconds: float) -> None:
        self.pump(time.monotonic() + seconds, lambda: len(self.arrived) == len(self.sockets))

    def pump(self, until: float, done: Callable[[], bool]) -> None:
        while time.monotonic() < until and not done():
            for fd, _ in self.poller.poll(0.05):
                try:
                    data, ancillary, _, _ = self.sockets[fd].recvmsg(1 << 18, STAMP_SPACE)
                except BlockingIOError:
                    continue
                read = time.time()
                if not data:
                    raise RuntimeError("the pool closed a miner's connection")
                received = read
                for level, kind, stamp in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        seconds, nanoseconds = TIMESPEC.unpack(stamp)
                        received = seconds + nanoseconds / 1e9
                *lines, self.buffers[fd] = (self.buffers[fd] + data).split(b"\n")
                for line in lines:
                    message = json.loads(line)
                    if message.get("method") == "mining.notify":
                        self.got_job(fd, message["params"][0], (received, read))

    def got_job(self, fd: int, job_id: str, at: tuple[float, float]) -> None:
        self.jobs[fd] = job_id
        if self.armed and job_id != self.armed.get(fd) and fd not in self.arrived:
            self.arrived[fd] = at


def run_swarm(port: int) -> None:
    raise_fd_limit()
    swarm = Swarm(port)
    for command in sys.stdin:
        words = command.split()
        if words[0] == "grow":
            print(json.dumps({"ready": swarm.grow(int(words[1]))}), flush=True)
        elif words[0] == "arm":
            swarm.arm()
            print(json.dumps({"armed": len(swarm.sockets)}), flush=True)
            swarm.wait_new_jobs(30)
            announced = float(sys.stdin.readline())
            delays = sorted(at - announced for at, _ in swarm.arrived.values())
            reads = sorted(read - announced for _, read in swarm.arrived.values())
            print(json.dumps({"received": len(delays), "delays": delays, "reads": reads}), flush=True)


class SwarmProcess:
    """The swarm's process, from the bench's side."""

    def __init__(self, port: int, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--swarm", str(port)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@dataclass
class FanOut:
    """One new block's way to every miner, from the announcement on."""

    miners: int
    received: int
    first: float  # ms from the announcement to the first miner's socket
    p50: float
    last: float
    last_read: float  # ms to the swarm's read of the last one
    pool_side: str  # the pool's own account of the block, from its log


def fan_out(
    swarm: SwarmProcess,
    miners: int,
    blocks: int,
    new_block: Callable[[], None],
    notify: Callable[[], None],
    pool_side: Callable[[], str] = lambda: "",
) -> list[FanOut]:
    """``blocks`` new blocks announced to ``miners`` miners: for each, the
    daemon has its next template (``new_block``), then ``notify`` tells the
    pool, and the swarm times each miner's new job from the moment
    ``notify`` was called."""
    ready = swarm.ask(f"grow {miners}")["ready"]
    if ready != miners:
        raise RuntimeError(f"only {ready} of {miners} miners got a job")
    time.sleep(1)  # the last subscribes' work done
    results = []
    for _ in range(blocks):
        swarm.ask("arm")
        new_block()
        announced = time.time()
        notify()
        report = swarm.ask(f"{announced!r}")
        delays = report["delays"]
        time.sleep(0.3)  # the pool's log written
        results.append(
            FanOut(
                miners,
                report["received"],
                delays[0] * 1e3,
                statistics.median(delays) * 1e3,
                delays[-1] * 1e3,
                report["reads"][-1] * 1e3,
                pool_side(),
            )
        )
        time.sleep(0.2)
    return results


def line_sender(port: int, line: str) -> Callable[[], None]:
    """Sends ``line`` to ``port`` on a connection opened beforehand, and
    reads the answer, so each call costs the pool one read."""
    connection = socket.create_connection(("127.0.0.1", port))
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = (line + "\n").encode()

    def send() -> None:
        connection.sendall(data)
        connection.recv(4096)

    return send


def summarise(runs: list[FanOut]) -> str:
    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"

    return (
        f"{runs[0].miners:6} miners: first {spread([r.first for r in runs])} ms, "
        f"half {spread([r.p50 for r in runs])} ms, last {spread([r.last for r in runs])} ms "
        f"(read by the swarm {spread([r.last_read for r in runs])} ms) over {len(runs)} blocks"
    )


# The flood (python bench/stratum_load.py --flood PORT COUNT SOURCES): COUNT
# connections, COUNT/SOURCES from each of 127.0.1.1, 127.0.1.2, ... Each
# subscribes; a connection is "in" once answered, "refused" if closed first.
# Before it, JUNK_SOURCE sends junk until banned and tries again. The
# connections that got in are held until stdin closes.
FLOOD_NET = "127.0.1."
JUNK_SOURCE = "127.0.2.1"
JUNK_CONNECTIONS = 10
JUNK_LINES = 50


def run_flood(port: int, count: int, sources: int) -> None:
    raise_fd_limit()
    poller = select.epoll()
    sockets: dict[int, socket.socket] = {}
    source_of: dict[int, str] = {}
    state: dict[int, str] = {}  # fd -> "waiting" | "in" | "refused"
    hello = b'{"id":1,"method":"mining.subscribe","params":["flood"]}\n'

    def open_from(source: str) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # the connect completes in the poll loop
            s.connect(("127.0.0.1", port))
        fd = s.fileno()
        sockets[fd], source_of[fd], state[fd] = s, source, "waiting"
        poller.register(fd, select.EPOLLOUT)

    def pump(seconds: float) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline and any(v == "waiting" for v in state.values()):
            for fd, events in poller.poll(0.05):
                s = sockets[fd]
                if events & select.EPOLLOUT and state[fd] == "waiting":
                    try:
                        s.send(hello)
                    except OSError:
                        state[fd] = "refused"
                        poller.unregister(fd)
                        continue
                    poller.modify(fd, select.EPOLLIN)
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    state[fd] = "refused" if state[fd] == "waiting" else "closed"
                    poller.unregister(fd)
                elif state[fd] == "waiting" and b'"id":1' in data:
                    state[fd] = "in"

    # First an address that sends junk on a few connections until the pool
    # bans it, then tries again: with its rate and connection counts low,
    # only the ban can refuse it.
    junk_source = JUNK_SOURCE
    for _ in range(JUNK_CONNECTIONS):
        open_from(junk_source)
    pump(10)
    junk_fds = [fd for fd, v in state.items() if v == "in"]
    for fd in junk_fds:
        for _ in range(JUNK_LINES):
            try:
                sockets[fd].send(b"this is not json\n")
            except OSError:
                break
    deadline = time.time() + 10
    still_open = set(junk_fds)
    while still_open and time.time() < deadline:
        for fd in list(still_open):
            try:
                sockets[fd].setblocking(True)
                sockets[fd].settimeout(0.05)
                while sockets[fd].recv(65536):
                    pass
                still_open.discard(fd)  # EOF: the pool closed it
            except TimeoutError:
                pass
            except OSError:
                still_open.discard(fd)
    before = set(state)
    for _ in range(JUNK_CONNECTIONS):
        open_from(junk_source)
    pump(10)
    retries = [state[fd] for fd in state if fd not in before]
    # Then the flood, address by address, as a botnet's hosts would.
    flooded = set(state)
    addresses = [f"{FLOOD_NET}{i + 1}" for i in range(sources)]
    started = time.time()
    per_source = count // sources
    for i in range(per_source * sources):
        open_from(addresses[i // per_source])
        if i % 500 == 499:
            pump(0.01)  # keep the accept queue moving
    pump(30)
    by_source: dict[str, dict[str, int]] = {a: {"in": 0, "refused": 0, "waiting": 0} for a in addresses}
    for fd, verdict in state.items():
        if fd not in flooded:
            by_source[source_of[fd]][verdict] += 1
    flood_seconds = time.time() - started
    print(
        json.dumps(
            {
                "seconds": flood_seconds,
                "by_source": by_source,
                "junk_source": junk_source,
                "junk_connections": len(junk_fds),
                "junk_closed": len(junk_fds) - len(still_open),
                "retries_in": retries.count("in"),
                "retries_refused": retries.count("refused"),
            }
        ),
        flush=True,
    )
    sys.stdin.read()  # hold the connections that got in


LIMITS = {
    "connections_per_ip": 100,
    "connections_total": 3000,
    "connect_rate": {"count": 150, "window": 10},
    "malformed": {"count": 5, "window": 60},
}


@dataclass
class RunningPool:
    """A pool process with its Redis and fake daemon; ``processes`` are stopped last-first."""

    env: dict[str, str]
    redis: RedisServer
    processes: list[subprocess.Popen[Any]]
    daemon_port: int
    scrypt_port: int
    sha_port: int
    control_port: int
    conf: Path
    pool: subprocess.Popen[Any]


@contextlib.contextmanager
def running_pool(
    threads: int,
    banning: dict[str, Any] | None = None,
    web: int | None = None,
    template: str = "realistic",
    transactions: int = TRANSACTIONS,
    workers: int = 1,
) -> Iterator[RunningPool]:
    """Start redis-server, the fake daemon and ``twistd -n nomp`` (with
    ``workers`` worker processes); stop them all at the end."""
    python = sys.executable
    twistd = str(Path(python).parent / "twistd")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    redis = RedisServer().start()
    processes: list[subprocess.Popen[Any]] = []
    try:
        daemon_port, scrypt_port, sha_port, control_port = (free_port() for _ in range(4))
        daemon = [python, __file__, "--daemon", str(daemon_port), template, str(transactions)]
        processes.append(subprocess.Popen(daemon, env=env))
        wait_port(daemon_port)
        conf = Path(tempfile.mkdtemp(prefix="nomp-bench-"))
        write_conf(
            conf, daemon_port, redis.port, scrypt_port, sha_port, control_port, threads, banning, web, workers
        )
        profile = (
            ["--profile=/tmp/pool.prof", "--profiler=cprofile", "--savestats"]
            if os.environ.get("BENCH_PROFILE")
            else []
        )
        pool = subprocess.Popen([twistd, "-n", "--pidfile=", *profile, "nomp", "-c", str(conf)], env=env)
        processes.append(pool)
        wait_port(scrypt_port)
        wait_port(sha_port)
        time.sleep(2)  # first templates
        if workers > 1:
            wait_workers(control_port, workers)
        yield RunningPool(env, redis, processes, daemon_port, scrypt_port, sha_port, control_port, conf, pool)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        redis.stop()


def wait_workers(control_port: int, workers: int, timeout: float = 120) -> None:
    """Until the main process's status has every worker with both pools ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = worker_parts(control(control_port, "status"))
        if len(parts) == workers and all(part.count(": ready") == 2 for part in parts):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the {workers} workers were not ready within {timeout:g} s")


def worker_parts(status: str) -> list[str]:
    """Each worker's part of the main process's status answer."""
    return [part for part in status.split(" | ") if part.startswith("worker ")]


def run_limits(options: argparse.Namespace) -> None:
    """The --limits run: a flood from many addresses beside legitimate miners."""
    python = sys.executable
    with running_pool(options.threads, LIMITS) as run:
        print(
            f"pool pid {run.pool.pid}; limits {json.dumps(LIMITS)}; flood of {options.idle} connections "
            f"from {options.sources} addresses {FLOOD_NET}1-{options.sources}; "
            f"{options.connections} miners on 127.0.0.2 offering {options.rate:g} shares/s "
            f"for {options.seconds:g} s"
        )
        flood = subprocess.Popen(
            [python, __file__, "--flood", str(run.scrypt_port), str(options.idle), str(options.sources)],
            env=run.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        run.processes.append(flood)
        results: dict[str, float] = {}

        async def legitimate(_: Any) -> None:
            results.update(
                await load_phase(
                    run.scrypt_port,
                    SCRYPT_ADDRESS,
                    options.connections,
                    options.rate,
                    options.seconds,
                    run.pool.pid,
                    source="127.0.0.2",
                )
            )

        run_until_done(legitimate(None))
        assert flood.stdout is not None and flood.stdin is not None
        report = json.loads(flood.stdout.readline())
        rss = rss_bytes(run.pool.pid)
        counts = report["by_source"]
        held = sum(c["in"] for c in counts.values())
        refused = sum(c["refused"] for c in counts.values())
        most = max(c["in"] for c in counts.values())
        print(
            f"flood    {held} held, {refused} refused, "
            f"{sum(c['waiting'] for c in counts.values())} unanswered, in {report['seconds']:.1f} s; "
            f"at most {most} from one address (limit {LIMITS['connections_per_ip']}), "
            f"{held + options.connections} in all (limit {LIMITS['connections_total']}); "
            f"pool RSS {rss / 2**20:.0f} MiB"
        )
        groups: dict[tuple[int, int], list[str]] = {}
        for source, c in counts.items():
            groups.setdefault((c["in"], c["refused"]), []).append(source)
        for (admitted, turned_away), sources in groups.items():
            print(
                f"         {len(sources)} addresses ({sources[0]}...): "
                f"{admitted} in, {turned_away} refused each"
            )
        print(
            f"ban      {report['junk_source']} sent junk on {report['junk_connections']} connections: "
            f"{report['junk_closed']} closed by the pool; then {report['retries_refused']} of "
            f"{report['retries_in'] + report['retries_refused']} reconnects refused"
        )
        coin = next(p for p in load_config(run.conf).pools if p.name == "scrypt").coin.name.lower()
        bans = run.redis.command("ZRANGE", f"{coin}:bans", 0, -1, "WITHSCORES")
        print(f"         bans in Redis: {bans}")
        print(
            f"miners   accepted {results['accepted']:.0f}/{results['sent']:.0f} "
            f"({results['rejected']:.0f} rejected), {results['shares_per_s']:.0f} shares/s, "
            f"reply p50 {results['p50_ms']:.2f} ms, p99 {results['p99_ms']:.2f} ms, "
            f"max {results['max_ms']:.1f} ms"
        )
        flood.stdin.close()


def run_until_done(work: Any) -> None:
    """Run the reactor until a coroutine is done (the reactor can run only once)."""
    done = defer.Deferred.fromCoroutine(work)
    done.addBoth(lambda result: reactor.stop())
    reactor.run()


def pool_side(log: Path, miners: int) -> Callable[[], str]:
    """The pool's own account of its last new block, from its log."""

    def account() -> str:
        lines = log.read_text().splitlines()[-50:]
        block = next((line for line in reversed(lines) if "new block" in line), "")
        sent = next((line for line in reversed(lines) if f"to {miners} miners in" in line), "")
        pick = re.compile(r"(template .*)|(sent to .*)")
        parts = [m.group(0) for line in (block, sent) if (m := pick.search(line))]
        return "; ".join(parts)

    return account


def run_shares(options: argparse.Namespace, run: RunningPool) -> None:
    """Reply latency and pool CPU per share, at each rate, then in a closed loop."""
    results: list[tuple[str, float | None, dict[str, float]]] = []
    ports = {"scrypt": (run.scrypt_port, SCRYPT_ADDRESS), "sha256d": (run.sha_port, SHA_ADDRESS)}
    rates: list[float | None] = [*options.rates, *([] if options.skip_closed_loop else [None])]

    async def phases(_: Any) -> None:
        for name in options.algorithms.split(","):
            port, user = ports[name]
            for rate in rates:
                result = await load_phase(
                    port, user, options.connections, rate, options.seconds, run.pool.pid
                )
                results.append((name, rate, result))

    run_until_done(phases(None))
    for name, rate, r in results:
        offered = (
            "closed loop, one share in flight per connection" if rate is None else f"{rate:5g}/s offered"
        )
        print(
            f"{name:8} {offered}: accepted {r['accepted']:.0f}/{r['sent']:.0f} "
            f"({r['rejected']:.0f} rejected), {r['shares_per_s']:.0f} shares/s, "
            f"pool CPU {r['cpu_us_per_share']:.1f} us/share "
            f"(reactor thread {r['reactor_us_per_share']:.1f}), "
            f"reply p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms"
        )


def run_fan_out(options: argparse.Namespace, run: RunningPool) -> None:
    """Memory per idle miner, and each new block's way to every miner."""
    rss_before = rss_bytes(run.pool.pid)
    swarm = SwarmProcess(run.scrypt_port, run.env)
    run.processes.append(swarm.process)
    new_block = partial(rpc, run.daemon_port, "bench_newblock")
    notify = line_sender(run.control_port, "blocknotify scrypt")
    print(
        f"fan-out: each of {options.blocks} new blocks per size announced with blocknotify on an open "
        f"control connection; times from that line's send until the new job is in each miner's socket; "
        f"then (spawned) {options.blocks} more announced by nomp-notify through /bin/sh -c, timed from "
        f"just before the spawn"
    )
    notifier = Path(sys.executable).parent / "nomp-notify"
    spawned = exec_sender(notifier, run.control_port, "scrypt") if notifier.exists() else None
    for miners in options.miners:
        runs = fan_out(
            swarm, miners, options.blocks, new_block, notify, pool_side(run.conf / "pool.log", miners)
        )
        rss_after = rss_bytes(run.pool.pid)
        print(
            f"idle     {miners} miners subscribed: pool RSS {rss_before / 2**20:.1f} -> "
            f"{rss_after / 2**20:.1f} MiB, "
            f"{(rss_after - rss_before) / miners / 1024:.2f} KiB per connection"
        )
        print(f"notify   {summarise(runs)}")
        for r in runs:
            lost = f" ({miners - r.received} never got it)" if r.received != miners else ""
            print(f"           first {r.first:.1f}, last {r.last:.1f} ms{lost}; pool: {r.pool_side}")
        if spawned is not None:
            print(f"spawned  {summarise(fan_out(swarm, miners, options.blocks, new_block, spawned))}")
    if spawned is None:
        print(f"spawned  not measured: {notifier} is not built (scripts/setup.sh builds it)")
    swarm.close()


def exec_sender(notifier: Path, port: int, pool: str) -> Callable[[], None]:
    """Announces a block as a node's -blocknotify does: ``notifier`` run through
    ``/bin/sh -c`` with the control port, the pool and a block hash, waited for."""

    def send() -> None:
        command = f"{notifier} 127.0.0.1:{port} {pool} {random.randbytes(32).hex()}"
        subprocess.run(["/bin/sh", "-c", command], check=True)

    return send


P99_LIMIT_MS = 5.0  # the reply p99 a share rate must keep to count in --workers' comparison
FLOOR = ROOT / "bench" / "floor.py"


@dataclass
class Measured:
    """One server's figures in the --workers comparison."""

    name: str
    rates: list[tuple[float, dict[str, float]]]  # (offered, load_phase's figures)
    fan_outs: dict[int, list[FanOut]]  # by miners

    def best(self) -> tuple[float, dict[str, float]] | None:
        """The highest rate sustained with its reply p99 under P99_LIMIT_MS
        and every share answered."""
        kept = [
            (rate, r)
            for rate, r in self.rates
            if r["p99_ms"] < P99_LIMIT_MS and r["accepted"] + r["rejected"] >= r["sent"]
        ]
        return max(kept, key=lambda pair: pair[1]["shares_per_s"]) if kept else None

    def last(self, miners: int) -> float:
        """The median over its blocks of the last miner's time, ms."""
        return statistics.median(run.last for run in self.fan_outs[miners])


def worker_spread(control_port: int) -> str:
    """Each worker's open connections, from the main process's status."""
    parts = worker_parts(control(control_port, "status"))
    counts = [re.findall(r"scrypt \([^)]*\): \w+, (\d+) miner", part) for part in parts]
    return "/".join(found[0] if found else "?" for found in counts)


async def measure_pool(options: argparse.Namespace, workers: int) -> Measured:
    """Shares at each rate, then the fan-out, on a pool of ``workers`` worker processes."""
    name = f"workers {workers}"
    with running_pool(
        options.threads, template=options.template, transactions=options.transactions, workers=workers
    ) as run:
        pids = process_tree(run.pool.pid)
        print(f"{name}: pool pids {pids} ({len(pids)} processes)")
        measured = Measured(name, [], {})
        for rate in options.rates:
            r = await load_phase(
                run.scrypt_port, SCRYPT_ADDRESS, options.connections, rate, options.seconds, run.pool.pid
            )
            measured.rates.append((rate, r))
            print(f"{name:12} {format_shares(rate, r)}")
        swarm = SwarmProcess(run.scrypt_port, run.env)
        run.processes.append(swarm.process)
        new_block = partial(rpc, run.daemon_port, "bench_newblock")
        notify = line_sender(run.control_port, "blocknotify scrypt")
        for miners in options.miners:
            measured.fan_outs[miners] = fan_out(swarm, miners, options.blocks, new_block, notify)
            spread = f"; connections per worker {worker_spread(run.control_port)}" if workers > 1 else ""
            print(f"{name:12} {summarise(measured.fan_outs[miners])}{spread}")
        swarm.close()
    return measured


async def measure_floor(options: argparse.Namespace) -> Measured:
    """bench/floor.py's bare Twisted servers under the same load and the same swarm."""
    measured = Measured("bare Twisted", [], {})
    port = free_port()
    server = subprocess.Popen([sys.executable, str(FLOOR), "--serve", "twisted", str(port)])
    try:
        wait_port(port)
        for rate in options.rates:
            r = await load_phase(port, SCRYPT_ADDRESS, options.connections, rate, options.seconds, server.pid)
            measured.rates.append((rate, r))
            print(f"{measured.name:12} {format_shares(rate, r)}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    port, control_port = free_port(), free_port()
    command = [sys.executable, str(FLOOR), "--serve-fan-out", "write", str(port), str(control_port)]
    server = subprocess.Popen(command)
    try:
        wait_port(port)
        wait_port(control_port)
        swarm = SwarmProcess(port, {**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            notify = line_sender(control_port, "blocknotify")
            for miners in options.miners:
                measured.fan_outs[miners] = fan_out(swarm, miners, options.blocks, lambda: None, notify)
                print(f"{measured.name:12} {summarise(measured.fan_outs[miners])}")
        finally:
            swarm.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return measured


def format_shares(rate: float, r: dict[str, float]) -> str:
    return (
        f"{rate:5g}/s offered: {r['shares_per_s']:.0f}/s answered ({r['accepted']:.0f} accepted of "
        f"{r['sent']:.0f}), CPU {r['cpu_us_per_share']:.0f} us/share "
        f"(reactor threads {r['reactor_us_per_share']:.0f}), p50 {r['p50_ms']:.2f} ms, "
        f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms"
    )


def run_workers(options: argparse.Namespace) -> None:
    """Pools of each --workers count, then the bare Twisted floor, in one run."""
    measured: list[Measured] = []

    async def phases(_: Any) -> None:
        for workers in options.workers:
            measured.append(await measure_pool(options, workers))
        measured.append(await measure_floor(options))

    run_until_done(phases(None))
    floor = measured[-1]
    names = [row.name for row in measured]
    print(
        f"\nreply p99 in ms (and shares/s answered) at each rate offered from {options.connections} "
        f"connections; {' | '.join(names)}"
    )
    for i, rate in enumerate(options.rates):
        cells = [
            f"{row.rates[i][1]['p99_ms']:7.2f} ({row.rates[i][1]['shares_per_s']:4.0f}/s)" for row in measured
        ]
        print(f"{rate:6g}/s  " + "   ".join(cells))
    floor_best = floor.best()
    for row in measured:
        best = row.best()
        if best is None:
            lowest = min(row.rates, key=lambda pair: pair[1]["p99_ms"])
            p99, at = lowest[1]["p99_ms"], lowest[0]
            shares = f"none under {P99_LIMIT_MS:g} ms (lowest p99 {p99:.2f} ms, at {at:g}/s)"
        else:
            shares = f"{best[1]['shares_per_s']:.0f}/s (p99 {best[1]['p99_ms']:.2f} ms)"
            if row is not floor and floor_best is not None:
                shares += f", {best[1]['shares_per_s'] / floor_best[1]['shares_per_s']:.2f} of bare Twisted's"
        fans = []
        for miners in options.miners:
            last = row.last(miners)
            versus = "" if row is floor else f" ({last / floor.last(miners):.2f} x bare Twisted's)"
            fans.append(f"last of {miners} miners {last:.1f} ms{versus}")
        print(f"{row.name:12} best rate with p99 < {P99_LIMIT_MS:g} ms: {shares}; fan-out: {'; '.join(fans)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10, help="per rate")
    parser.add_argument("--rates", type=numbers, default=[600, 1000, 2000, 3000], help="shares/s offered")
    parser.add_argument("--rate", type=float, help="one rate only (--limits: the legitimate miners')")
    parser.add_argument("--algorithms", default="scrypt", help="scrypt, sha256d or scrypt,sha256d")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--miners", type=numbers, default=[1000, 5000, 10000], help="fan-out sizes")
    parser.add_argument("--blocks", type=int, default=5, help="new blocks per fan-out size")
    parser.add_argument("--template", choices=("realistic", "empty"), default="realistic")
    parser.add_argument("--transactions", type=int, default=TRANSACTIONS, help="in a realistic template")
    parser.add_argument("--skip-shares", action="store_true", help="only the fan-out")
    parser.add_argument("--skip-fan-out", action="store_true", help="only the shares")
    parser.add_argument("--skip-closed-loop", action="store_true", help="no closed-loop share phase")
    parser.add_argument("--idle", type=int, default=10000, help="--limits: the flood's connections")
    parser.add_argument("--threads", type=int, default=1, help="the pool's hashing threads")
    parser.add_argument("--daemon", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--swarm", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--limits", action="store_true", help="measure the connection limits and bans")
    parser.add_argument("--sources", type=int, default=40, help="--limits: flood source addresses")
    parser.add_argument("--flood", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--workers",
        type=numbers,
        help="compare pools of these worker counts (e.g. 1,2) and the bare Twisted floor, side by side",
    )
    options = parser.parse_args()
    if options.flood:
        run_flood(*options.flood)
        return
    if options.daemon:
        run_daemon(int(options.daemon[0]), options.daemon[1], int(options.daemon[2]))
        return
    if options.swarm:
        run_swarm(options.swarm)
        return
    raise_fd_limit()
    if options.limits:
        options.rate = 2000 if options.rate is None else options.rate
        run_limits(options)
        return
    if options.rate is not None:
        options.rates = [options.rate]
    if options.workers:
        run_workers(options)
        return
    with running_pool(options.threads, template=options.template, transactions=options.transactions) as run:
        size = len(rpc_template(run.daemon_port))
        print(
            f"pool pid {run.pool.pid}; {os.cpu_count()} CPUs; {options.template} template "
            f"({size / 1024:.0f} KiB of JSON); {options.connections} share connections, "
            f"{options.seconds:g} s per rate"
        )
        if not options.skip_shares:
            run_shares(options, run)
        if not options.skip_fan_out:
            run_fan_out(options, run)


def numbers(text: str) -> list[int]:
    return [int(n) for n in text.split(",")]


def rpc_template(port: int) -> bytes:
    """The daemon's template as the pool reads it, for its size."""
    return json.dumps(rpc(port, "getblocktemplate")).encode()


if __name__ == "__main__":
    main()
