"""Load on the Stratum side of a running pool, measured from outside it.

Run: python bench/stratum_load.py [--seconds 20] [--rate 2000] [--idle 10000] [--threads 1]

Starts a redis-server, a fake coin daemon serving a mainnet-difficulty
template (so shares are not blocks), and ``twistd -n nomp`` with a scrypt
pool and a sha256d pool whose ports accept every hash as a share. Then:

1. shares/s, pool CPU per accepted share and submit-to-reply latency,
   for each algorithm, at --rate shares/s from 200 connections;
2. pool memory per idle connection, with --idle subscribed miners;
3. the time for each of those miners to get the new job after a
   blocknotify.

Pool figures are read from /proc for the pool process only.

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
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.web.server import Site

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nomp.chain.address import decode_address  # noqa: E402
from nomp.config import NetworkConfig, load_config  # noqa: E402
from test.fakedaemon import FakeDaemon  # noqa: E402
from test.servers import RedisServer, free_port  # noqa: E402
from test.test_chain import template_reply  # noqa: E402

SCRYPT_ADDRESS = "rltc1qey3dpjf7avevcavv6uk33juxyyyyndgfuc2s2l"
SHA_ADDRESS = "bcrt1qey3dpjf7avevcavv6uk33juxyyyyndgfz4seap"
TICKS = os.sysconf("SC_CLK_TCK")
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
) -> None:
    (folder / "pools").mkdir(parents=True)
    settings = {
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


# The fake daemon, run in its own process (python bench/stratum_load.py --daemon PORT).
def run_daemon(port: int) -> None:
    nets = [load_config(ROOT / "conf").pools[0].coin.network, BITCOIN_REGTEST]
    state = {"height": 800_000, "prev": 1}

    def template(_: Any) -> dict[str, Any]:
        reply = template_reply(bits="1b00ffff", height=state["height"], transactions=[])
        del reply["target"]
        reply["previousblockhash"] = f"{state['prev']:064x}"
        reply["curtime"] = int(time.time())
        reply["mintime"] = reply["curtime"] - 600
        return reply

    def validate(params: list[Any]) -> dict[str, Any]:
        for network in nets:
            try:
                script = decode_address(params[0], network).script.hex()
            except ValueError:
                continue
            return {"isvalid": True, "address": params[0], "scriptPubKey": script, "ismweb": False}
        return {"isvalid": False}

    def new_block(_: Any) -> str:
        state["height"] += 1
        state["prev"] += 1
        return f"{state['prev']:064x}"

    daemon = FakeDaemon(
        {
            "getblockchaininfo": lambda _: {
                "chain": "regtest",
                "blocks": state["height"] - 1,
                "bestblockhash": f"{state['prev']:064x}",
                "initialblockdownload": False,
            },
            "getblocktemplate": template,
            "validateaddress": validate,
            "submitblock": lambda _: None,
            "bench_newblock": new_block,
        }
    )
    site: Any = Site(daemon)
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
    def __init__(self, user: str) -> None:
        self.user = user
        self.latencies: list[float] = []
        self.accepted = 0
        self.rejected = 0


async def load_phase(
    port: int,
    user: str,
    connections: int,
    rate: float,
    seconds: float,
    pool_pid: int,
    source: str = "127.0.0.1",
) -> dict[str, float]:
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
    per_tick = rate * tick
    debt = 0.0
    turn = 0
    cpu_start, wall_start = cpu_seconds(pool_pid), time.perf_counter()
    threads_start = thread_cpu(pool_pid)
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
    loop.start(tick)
    while time.perf_counter() < end:
        await task.deferLater(reactor, 0.1)
    loop.stop()
    await task.deferLater(reactor, 1.0)  # let the last replies come
    wall = time.perf_counter() - wall_start
    cpu = cpu_seconds(pool_pid) - cpu_start
    threads_end = thread_cpu(pool_pid)
    reactor_cpu = threads_end[pool_pid] - threads_start.get(pool_pid, 0)
    for client in clients:
        if client.transport is not None:
            client.transport.loseConnection()
    latencies = sorted(load.latencies)
    return {
        "sent": turn,
        "accepted": load.accepted,
        "rejected": load.rejected,
        "shares_per_s": load.accepted / wall,
        "cpu_us_per_share": cpu / max(load.accepted, 1) * 1e6,
        "reactor_us_per_share": reactor_cpu / max(load.accepted, 1) * 1e6,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "max_ms": latencies[-1] * 1e3,
    }


# The swarm: many idle miners on raw sockets, in their own process
# (python bench/stratum_load.py --swarm PORT COUNT); it reports when they
# are all subscribed, then when each got the next job.
def run_swarm(port: int, count: int) -> None:
    raise_fd_limit()
    poller = select.epoll()
    sockets: dict[int, socket.socket] = {}
    buffers: dict[int, bytes] = {}
    jobs: dict[int, int] = {}
    arrived: dict[int, float] = {}
    marker = b'"method":"mining.notify"'
    hello = (
        b'{"id":1,"method":"mining.subscribe","params":["swarm"]}\n'
        + json.dumps({"id": 2, "method": "mining.authorize", "params": [SCRYPT_ADDRESS, "x"]}).encode()
        + b"\n"
    )
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        s.sendall(hello)
        fd = s.fileno()
        sockets[fd], buffers[fd], jobs[fd] = s, b"", 0
        poller.register(fd, select.EPOLLIN)

    def pump(until: float, done: Any) -> None:
        # Kept lean: its own slowness would count as the pool's delay.
        while time.time() < until and not done():
            for fd, _ in poller.poll(0.05):
                data = buffers[fd] + sockets[fd].recv(65536)
                now = time.time()
                if marker in data:
                    jobs[fd] += data.count(marker)
                    if jobs[fd] >= 2 and fd not in arrived:
                        arrived[fd] = now
                buffers[fd] = data[data.rfind(b"\n") + 1 :]

    pump(time.time() + 120, lambda: all(n >= 1 for n in jobs.values()))
    print(json.dumps({"ready": sum(1 for n in jobs.values() if n >= 1)}), flush=True)
    pump(time.time() + 60, lambda: len(arrived) == count)
    trigger = float(sys.stdin.readline())
    delays = sorted(t - trigger for t in arrived.values())
    print(json.dumps({"received": len(delays), "delays": delays}), flush=True)


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
    threads: int, banning: dict[str, Any] | None = None, web: int | None = None
) -> Iterator[RunningPool]:
    """Start redis-server, the fake daemon and ``twistd -n nomp``; stop them all at the end."""
    python = sys.executable
    twistd = str(Path(python).parent / "twistd")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    redis = RedisServer().start()
    processes: list[subprocess.Popen[Any]] = []
    try:
        daemon_port, scrypt_port, sha_port, control_port = (free_port() for _ in range(4))
        processes.append(subprocess.Popen([python, __file__, "--daemon", str(daemon_port)], env=env))
        wait_port(daemon_port)
        conf = Path(tempfile.mkdtemp(prefix="nomp-bench-"))
        write_conf(conf, daemon_port, redis.port, scrypt_port, sha_port, control_port, threads, banning, web)
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
        yield RunningPool(env, redis, processes, daemon_port, scrypt_port, sha_port, control_port, conf, pool)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        redis.stop()


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=1, help="the pool's hashing threads")
    parser.add_argument("--daemon", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--swarm", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--limits", action="store_true", help="measure the connection limits and bans")
    parser.add_argument("--sources", type=int, default=40, help="--limits: flood source addresses")
    parser.add_argument("--flood", nargs=3, type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.flood:
        run_flood(*options.flood)
        return
    if options.daemon:
        run_daemon(options.daemon)
        return
    if options.swarm:
        run_swarm(*options.swarm)
        return
    raise_fd_limit()
    if options.limits:
        run_limits(options)
        return
    python = sys.executable
    with running_pool(options.threads) as run:
        print(
            f"pool pid {run.pool.pid}; {os.cpu_count()} CPUs; {options.connections} connections, "
            f"{options.rate:g} shares/s offered for {options.seconds:g} s per algorithm"
        )

        results: dict[str, dict[str, float]] = {}

        async def phases(_: Any) -> None:
            for name, port, user in (
                ("scrypt", run.scrypt_port, SCRYPT_ADDRESS),
                ("sha256d", run.sha_port, SHA_ADDRESS),
            ):
                results[name] = await load_phase(
                    port, user, options.connections, options.rate, options.seconds, run.pool.pid
                )

        run_until_done(phases(None))
        for name, r in results.items():
            print(
                f"{name:8} accepted {r['accepted']:.0f}/{r['sent']:.0f} ({r['rejected']:.0f} rejected), "
                f"{r['shares_per_s']:.0f} shares/s, pool CPU {r['cpu_us_per_share']:.1f} us/share "
                f"(reactor thread {r['reactor_us_per_share']:.1f}), "
                f"reply p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms"
            )

        rss_before = rss_bytes(run.pool.pid)
        swarm = subprocess.Popen(
            [python, __file__, "--swarm", str(run.scrypt_port), str(options.idle)],
            env=run.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        run.processes.append(swarm)
        assert swarm.stdout is not None and swarm.stdin is not None
        ready = json.loads(swarm.stdout.readline())["ready"]
        time.sleep(2)
        rss_after = rss_bytes(run.pool.pid)
        print(
            f"idle     {ready} miners subscribed: pool RSS {rss_before / 2**20:.1f} -> "
            f"{rss_after / 2**20:.1f} MiB, "
            f"{(rss_after - rss_before) / max(ready, 1) / 1024:.2f} KiB per connection"
        )

        rpc(run.daemon_port, "bench_newblock")
        trigger = time.time()
        answer = control(run.control_port, "blocknotify scrypt")
        swarm.stdin.write(f"{trigger}\n")
        swarm.stdin.flush()
        report = json.loads(swarm.stdout.readline())
        delays = report["delays"]
        within = sum(1 for d in delays if d <= 0.1)
        time.sleep(0.5)
        for line in (run.conf / "pool.log").read_text().splitlines()[-200:]:
            if "miners in" in line and f"{ready} miners" in line:
                print(f"         pool side: {line.split('] ', 1)[-1]}")
        if delays:
            print(
                f"notify   {answer}: {report['received']}/{ready} miners got the new job; "
                f"p50 {statistics.median(delays) * 1e3:.1f} ms, "
                f"p99 {delays[int(len(delays) * 0.99)] * 1e3:.1f} ms, "
                f"max {delays[-1] * 1e3:.1f} ms; {within} within 100 ms"
            )


if __name__ == "__main__":
    main()
