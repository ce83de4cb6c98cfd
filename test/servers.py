"""Real servers for the tests: a litecoind regtest pair and redis-server.

Each is started on free loopback ports in a temporary folder and stopped by
``stop()``. The helpers here are synchronous on purpose: they run in test
set-up, outside the code under test.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

RPC_USER = "nomp"
RPC_PASSWORD = "regtest-only-password"
START_TIMEOUT = 60.0
MWEB_ACTIVATION = 432  # regtest: BIP9 bit 4 locked in at 288, active from this block
BIP34_HEIGHT = 500  # regtest: the coinbase height is enforced from here


class NodeRPCError(Exception):
    """A JSON-RPC error from a node, seen by the test helpers."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# The demo's fixed ports (control, litecoind RPC and P2P), never handed out.
_RESERVED_PORTS = frozenset({17117, 19443, 19444})


def _ephemeral_start() -> int:
    """The lowest port the kernel gives outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port nothing listens on right now, below the ephemeral range.

    A port the kernel picked for ``bind(0)`` lies in the range it also
    gives outgoing connections, so between this call and the server's own
    bind a client socket (to Redis, a daemon...) could take it and the
    server fail to start. Ports below that range are only ever bound on
    purpose.
    """
    high = _ephemeral_start()
    low = max(1024, high - 20000)
    while True:
        port = random.randrange(low, high)
        if port in _RESERVED_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def require(program: str) -> str:
    """The path of ``program``; the test command installs it, so its absence is an error."""
    path = shutil.which(program)
    if path is None:
        raise RuntimeError(f"{program} is not installed: run the tests through the README's test command")
    return path


@dataclass
class Node:
    """One litecoind process."""

    datadir: Path
    rpc_port: int
    p2p_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    def rpc(self, method: str, *params: Any, wallet: str | None = None) -> Any:
        """Call the node; amounts come back as Decimal."""
        body = json.dumps(
            {"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)}, default=str
        ).encode()
        url = self.url + (f"/wallet/{wallet}" if wallet is not None else "")
        token = base64.b64encode(f"{RPC_USER}:{RPC_PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            url, body, {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                reply = json.loads(response.read(), parse_float=Decimal)
        except urllib.error.HTTPError as e:
            reply = json.loads(e.read() or b"null", parse_float=Decimal)
            if not isinstance(reply, dict):
                raise
        if reply.get("error"):
            raise NodeRPCError(reply["error"]["code"], reply["error"]["message"])
        return reply["result"]

    def start(self, *extra: str) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        (self.datadir / "litecoin.conf").write_text(
            "\n".join(
                [
                    "regtest=1",
                    "[regtest]",
                    f"rpcport={self.rpc_port}",
                    f"port={self.p2p_port}",
                    "rpcbind=127.0.0.1",
                    "rpcallowip=127.0.0.1",
                    f"bind=127.0.0.1:{self.p2p_port}",
                    # litecoind 0.21 otherwise binds its onion target on the
                    # fixed 127.0.0.1:19444, which concurrent nodes race for
                    f"bind=127.0.0.1:{free_port()}=onion",
                    f"rpcuser={RPC_USER}",
                    f"rpcpassword={RPC_PASSWORD}",
                    "fallbackfee=0.0002",
                    "txindex=1",
                    "listen=1",
                    "discover=0",
                    "dnsseed=0",
                    "listenonion=0",
                    "upnp=0",
                    "printtoconsole=0",
                    "rpcworkqueue=64",
                    "",
                ]
            )
        )
        self.process = subprocess.Popen(
            [require("litecoind"), f"-datadir={self.datadir}", *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"litecoind exited: {err.strip()}")
            try:
                self.rpc("getblockcount")
                return
            except (OSError, NodeRPCError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError("litecoind did not start in time") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.rpc("stop")
            self.process.wait(timeout=30)
        except Exception:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


class RegtestPair:
    """Two connected litecoind regtest nodes; the first holds the wallet.

    litecoind 0.21 answers getblocktemplate only with a peer connected and
    outside initial block download, hence the second node and the first block.
    """

    def __init__(self, root: Path | None = None) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="nomp-regtest-")) if root is None else root
        self.miner = Node(self.root / "miner", free_port(), free_port())
        self.peer = Node(self.root / "peer", free_port(), free_port())
        self.wallet = "pool"

    def start(self) -> RegtestPair:
        try:
            self.miner.start()
            self.peer.start("-disablewallet", f"-connect=127.0.0.1:{self.miner.p2p_port}")
            self.miner.rpc("createwallet", self.wallet)
            self.wait_connected()
            self.generate(1)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_connected(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while self.miner.rpc("getconnectioncount") < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("regtest nodes did not connect")
            time.sleep(0.1)

    def wallet_rpc(self, method: str, *params: Any) -> Any:
        return self.miner.rpc(method, *params, wallet=self.wallet)

    def new_address(self, kind: str = "bech32") -> str:
        """A wallet address: bech32, p2sh-segwit, legacy or mweb."""
        return str(self.wallet_rpc("getnewaddress", "", kind))

    def generate(self, blocks: int) -> list[str]:
        """Blocks mined by the node itself (set-up, not the code under test)."""
        address = self.new_address()
        hashes = [str(h) for h in self.wallet_rpc("generatetoaddress", blocks, address)]
        self.wait_synced()
        return hashes

    def generate_to(self, height: int) -> None:
        """Mine with the node up to ``height``, making the peg-in MWEB's
        activation block (432) needs when the way crosses it."""
        current = self.height()
        if current < MWEB_ACTIVATION <= height:
            self.generate(MWEB_ACTIVATION - 1 - current)
            self.peg_in()
            current = MWEB_ACTIVATION - 1
        if height > current:
            self.generate(height - current)

    def peg_in(self, amount: str = "1") -> str:
        """Move coins into MWEB: the only input the first HogEx can have."""
        return str(self.wallet_rpc("sendtoaddress", self.new_address("mweb"), amount))

    def wait_synced(self) -> None:
        best = self.miner.rpc("getbestblockhash")
        deadline = time.monotonic() + START_TIMEOUT
        while self.peer.rpc("getbestblockhash") != best:
            if time.monotonic() > deadline:
                raise RuntimeError("peer did not follow the miner")
            time.sleep(0.05)

    def height(self) -> int:
        return int(self.miner.rpc("getblockcount"))

    def stop(self) -> None:
        for node in (self.peer, self.miner):
            node.stop()
        if self._own_root and not os.environ.get("NOMP_KEEP_TEST_DATA"):
            shutil.rmtree(self.root, ignore_errors=True)


class RedisReplyError(Exception):
    """An error reply from redis-server, seen by the test helpers."""


class RedisServer:
    """A private redis-server on a free loopback port, without persistence
    unless ``persistent``: then every write is in an append-only file, fsynced
    before Redis replies, so a ``restart()`` (same port, same folder) loses
    nothing."""

    def __init__(self, persistent: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="nomp-redis-"))
        self.port = free_port()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                require("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *(
                    ("--appendonly", "yes", "--appendfsync", "always")
                    if self.persistent
                    else ("--appendonly", "no")
                ),
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server but keep its folder, for ``start()`` or ``restart()``."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self) -> RedisServer:
        """Stop the server and start it again on the same port and folder."""
        self.halt()
        return self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay up, nothing is answered."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def command(self, *args: str | int | float, db: int = 0) -> Any:
        """One command on a connection of its own: str, int, None or a list
        of them (RESP2 as redis-server sends it); an error reply raises
        RedisReplyError."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s, s.makefile("rb") as stream:
            request = b""
            for command in (("SELECT", db), args):
                parts = [str(part).encode() for part in command]
                request += b"*%d\r\n" % len(parts)
                request += b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
            s.sendall(request)
            _read_reply(stream)
            return _read_reply(stream)


def _read_reply(stream: BinaryIO) -> Any:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis-server closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisReplyError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        length = int(rest)
        return None if length < 0 else stream.read(length + 2)[:-2].decode()
    if kind == b"*":
        length = int(rest)
        return None if length < 0 else [_read_reply(stream) for _ in range(length)]
    raise RedisReplyError(f"unexpected reply {line!r}")


_shared: dict[str, Any] = {}


def _stop_shared() -> None:
    for server in _shared.values():
        server.stop()
    _shared.clear()


def shared_regtest(name: str) -> RegtestPair:
    """A regtest pair for every test that asks for ``name``, started on
    first use and stopped when the test process exits. Tests that need a
    chain of their own ask for a name of their own."""
    if name not in _shared:
        if not _shared:
            atexit.register(_stop_shared)
        _shared[name] = RegtestPair().start()
    return _shared[name]  # type: ignore[no-any-return]


def shared_redis() -> RedisServer:
    """One redis-server for the whole test run."""
    if "redis" not in _shared:
        if not _shared:
            atexit.register(_stop_shared)
        _shared["redis"] = RedisServer().start()
    return _shared["redis"]  # type: ignore[no-any-return]


def redis_command(
    port: int, *args: str | int | float, password: str | None = None, db: int | None = None
) -> Any:
    """One command to the redis-server or Sentinel on ``port``, on a connection of its
    own, after AUTH when ``password`` and SELECT when ``db`` are given: str, int, None or
    a list of them; an error reply raises RedisReplyError."""
    commands: list[tuple[str | int | float, ...]] = []
    if password is not None:
        commands.append(("AUTH", password))
    if db is not None:
        commands.append(("SELECT", db))
    commands.append(args)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s, s.makefile("rb") as stream:
        request = b""
        for command in commands:
            parts = [str(part).encode() for part in command]
            request += b"*%d\r\n" % len(parts)
            request += b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
        s.sendall(request)
        for _ in commands[:-1]:
            _read_reply(stream)
        return _read_reply(stream)


def _info(text: str) -> dict[str, str]:
    """INFO's ``field:value`` lines as a mapping."""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


class RedisProcess:
    """One redis-server process, as a data server or, with ``sentinel``, as a Sentinel
    (``redis-server <file> --sentinel``: the redis-server package's binary is Sentinel
    too), on ``port`` in the folder ``root``, with ``options`` as config file lines."""

    def __init__(
        self, root: Path, port: int, options: list[str], password: str | None, sentinel: bool = False
    ) -> None:
        self.root = root
        self.port = port
        self.options = options
        self.password = password
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / ("sentinel.conf" if self.sentinel else "redis.conf")
        if not conf.exists():  # a Sentinel rewrites its file with what it learnt: kept across restarts
            lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.root}", *self.options]
            conf.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [require("redis-server"), str(conf), *(("--sentinel",) if self.sentinel else ())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if self.command("PING") == "PONG":
                    return self
            except (OSError, RedisReplyError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed, the connections reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay up, nothing is answered."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def command(self, *args: str | int | float, db: int | None = None) -> Any:
        return redis_command(self.port, *args, password=self.password, db=db)

    def info(self, section: str) -> dict[str, str]:
        return _info(str(self.command("INFO", section)))


class SentinelSet:
    """A Redis primary, one replica and three Sentinels watching them as ``MASTER_NAME``,
    on free loopback ports, every server behind ``password`` and every Sentinel behind
    ``sentinel_password``.

    ``down_after`` and ``failover_timeout`` (milliseconds) are short, so a primary
    killed is replaced within seconds. Each data server can become the primary: both
    are started with the same options, the replica with ``replicaof`` more.
    """

    MASTER_NAME = "nomp-test"

    def __init__(
        self,
        password: str = "data-password",
        sentinel_password: str = "sentinel-password",
        down_after: int = 500,
        failover_timeout: int = 2000,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="nomp-sentinel-"))
        self.password = password
        self.sentinel_password = sentinel_password
        data = [
            "save ''",
            "appendonly no",
            f"requirepass {password}",
            f"masterauth {password}",
            # The full sync of a replica (re)joining starts at once, not after Redis's default 5 s.
            "repl-diskless-sync-delay 0",
        ]
        primary_port = free_port()
        self.servers = [
            RedisProcess(self.root / "a", primary_port, data, password),
            RedisProcess(
                self.root / "b", free_port(), [*data, f"replicaof 127.0.0.1 {primary_port}"], password
            ),
        ]
        name = self.MASTER_NAME
        watch = [
            f"sentinel monitor {name} 127.0.0.1 {primary_port} 2",
            f"sentinel auth-pass {name} {password}",
            f"sentinel down-after-milliseconds {name} {down_after}",
            f"sentinel failover-timeout {name} {failover_timeout}",
            f"requirepass {sentinel_password}",
            f"sentinel sentinel-pass {sentinel_password}",
        ]
        self.sentinels = [
            RedisProcess(self.root / f"s{i}", free_port(), watch, sentinel_password, sentinel=True)
            for i in range(3)
        ]

    @property
    def first_primary(self) -> RedisProcess:
        return self.servers[0]

    def start(self) -> SentinelSet:
        try:
            for server in self.servers:
                server.start()
            self.wait_replicated(self.servers[1])
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_watching(self.first_primary.port)
        except BaseException:
            self.stop()
            raise
        return self

    def server_on(self, port: int) -> RedisProcess:
        (server,) = [s for s in self.servers if s.port == port]
        return server

    def primary_port(self, sentinel: RedisProcess) -> int | None:
        """The primary's port as ``sentinel`` names it; None if it does not answer."""
        try:
            reply = sentinel.command("SENTINEL", "get-master-addr-by-name", self.MASTER_NAME)
        except (OSError, RedisReplyError):
            return None
        return int(reply[1]) if reply else None

    def wait_replicated(self, replica: RedisProcess, timeout: float = START_TIMEOUT) -> None:
        """Until ``replica`` has its primary's data and follows its writes."""
        deadline = time.monotonic() + timeout
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica on port {replica.port} did not sync")
            time.sleep(0.05)

    def wait_watching(self, primary_port: int, timeout: float = START_TIMEOUT) -> None:
        """Until every Sentinel names ``primary_port`` the primary, knows the other two
        Sentinels and a replica it could promote: a failover can start."""
        deadline = time.monotonic() + timeout
        while True:
            ready = 0
            for sentinel in self.sentinels:
                try:
                    state = sentinel.command("SENTINEL", "master", self.MASTER_NAME)
                except (OSError, RedisReplyError):
                    continue
                fields = dict(zip(state[::2], state[1::2], strict=True))
                if (
                    int(fields["port"]) == primary_port
                    and int(fields["num-other-sentinels"]) == len(self.sentinels) - 1
                    and int(fields["num-slaves"]) >= 1
                    and "s_down" not in fields["flags"]
                ):
                    ready += 1
            if ready == len(self.sentinels):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinels did not settle on the primary")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.resume()
            process.stop()
        if not os.environ.get("NOMP_KEEP_TEST_DATA"):
            shutil.rmtree(self.root, ignore_errors=True)


def _pair_ports(pair: RegtestPair) -> set[int]:
    return {pair.miner.rpc_port, pair.miner.p2p_port, pair.peer.rpc_port, pair.peer.p2p_port}


def shared_regtests(*names: str) -> list[RegtestPair]:
    """The pairs ``shared_regtest`` gives for ``names``; those not running yet are
    started at the same time, each in a thread of its own (starting is mostly
    waiting for litecoind), so that a test of several chains waits for one start."""
    missing = [name for name in dict.fromkeys(names) if name not in _shared]
    pairs: dict[str, RegtestPair] = {}
    taken: set[int] = set()
    for name in missing:
        # Ports are only bound once the nodes start: two pairs made before either
        # starts must not have drawn the same one.
        pair = RegtestPair()
        while _pair_ports(pair) & taken or len(_pair_ports(pair)) < 4:
            shutil.rmtree(pair.root, ignore_errors=True)
            pair = RegtestPair()
        taken |= _pair_ports(pair)
        pairs[name] = pair
    if pairs:
        with ThreadPoolExecutor(len(pairs)) as starting:
            starts = {name: starting.submit(pair.start) for name, pair in pairs.items()}
        failed = [error for future in starts.values() if (error := future.exception()) is not None]
        if failed:
            for name, future in starts.items():
                if future.exception() is None:
                    pairs[name].stop()
            raise failed[0]
        if not _shared:
            atexit.register(_stop_shared)
        _shared.update(pairs)
    return [_shared[name] for name in names]
