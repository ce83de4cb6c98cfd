"""nomp-miner's ethash mode (nomp.ethminer): getwork against the dev node
(test/ethnode), whose seals chfast's ethash judges; eth-proxy and NiceHash
against the small honest servers here, which hand out work and check every
share with nomp's own ethash."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp.ethminer import (
    STALE,
    EthJob,
    EthPoolURL,
    EthProxyMiner,
    GetworkMiner,
    NiceHashMiner,
    connect,
    error_text,
    nicehash_target,
    parse_eth_url,
    report,
    seed_epochs,
    verdict,
    work_epochs,
)
from nomp.hashing import ethash
from nomp.miner import main
from nomp.minerkit import tls_options
from test.ethnode import start_dev_node
from test.tlscerts import self_signed
from test.waiting import until

ETHERBASE = bytes.fromhex("5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c")
LOGIN = "0x" + ETHERBASE.hex()
HEADER_A = ethash.keccak_256(b"job a")
HEADER_B = ethash.keccak_256(b"job b")
EASY = 2**256 // 32  # about 32 hashes a share


def epochs_ready(*epochs: int) -> defer.Deferred[Any]:
    """The caches the servers judge with, built off the reactor thread."""
    return defer.DeferredList([deferToThread(ethash.caches.get, e, e) for e in epochs])


def meets(header: bytes, epoch: int, nonce: int, target: int, mix: bytes | None = None) -> bool:
    """The server's check: nomp's ethash gives a final hash within ``target`` (and this mix digest)."""
    result = ethash.caches.get(epoch, epoch).hash(header, nonce)
    return result.value <= target and (mix is None or result.mix_digest == mix)


async def run_miner_script(*arguments: str) -> tuple[str, str, int]:
    """``python -m nomp.miner`` in a process of its own: (stdout, stderr, exit status)."""
    out, err, status = await getProcessOutputAndValue(
        sys.executable, ["-m", "nomp.miner", *arguments], env=dict(os.environ), reactor=reactor
    )
    return out.decode(), err.decode(), status


class URLTests(SynchronousTestCase):
    """The ethash URLs and options on the command line."""

    def test_schemes(self) -> None:
        """Each dialect's scheme, TLS variants, default ports and getwork's path."""
        self.assertEqual(
            [
                parse_eth_url(url)
                for url in (
                    f"getwork+http://127.0.0.1:8888/{LOGIN}/rig1",
                    "GETWORK+HTTP://pool.example",
                    "ethproxy+tcp://pool.example:8009",
                    "ethproxy+ssl://[::1]:8010/",
                    "nicehash+tcp://pool.example",
                    "nicehash+tls://pool.example:3353",
                )
            ],
            [
                EthPoolURL("getwork", "127.0.0.1", 8888, False, f"/{LOGIN}/rig1"),
                EthPoolURL("getwork", "pool.example", 8888, False, "/"),
                EthPoolURL("ethproxy", "pool.example", 8009, False),
                EthPoolURL("ethproxy", "::1", 8010, True),
                EthPoolURL("nicehash", "pool.example", 8008, False),
                EthPoolURL("nicehash", "pool.example", 3353, True),
            ],
        )
        self.assertEqual(EthPoolURL("getwork", "::1", 80, path="/x").http_url, "http://[::1]:80/x")

    def test_bad_urls(self) -> None:
        """A path on a stratum dialect, no host and bad ports are refused with what is wrong."""
        for url, problem in (
            ("ethproxy+tcp://pool.example:8008/0xabc", "takes no path"),
            ("nicehash+tcp://:8008", "no host"),
            ("getwork+http://pool.example:99999/", "out of range"),
            ("getwork+https://pool.example/", "unknown scheme"),
        ):
            with self.assertRaises(ValueError) as raised:
                parse_eth_url(url)
            self.assertIn(problem, str(raised.exception))

    def test_usage_errors(self) -> None:
        """Options that do not fit the URL are usage errors (exit 2)."""
        for argv, problem in (
            (["nicehash+tcp://127.0.0.1:8008"], "nicehash needs -u"),
            (["ethproxy+tcp://127.0.0.1:8008", "-u", LOGIN, "-a", "scrypt"], "-a is for stratum"),
            (["ethproxy+tcp://127.0.0.1:8008", "-u", LOGIN, "--insecure"], "are for ethproxy+ssl://"),
            ([f"getwork+http://127.0.0.1:8888/{LOGIN}", "-u", LOGIN], "not both"),
            ([f"getwork+http://127.0.0.1:8888/{LOGIN}", "--max-shares", "0"], "at least 1"),
            (["stratum+tcp://127.0.0.1:3333", "-u", LOGIN, "--max-shares", "1"], "for the ethash URLs"),
            (["stratum+tcp://127.0.0.1:3333"], "required: -u/--user"),
            (["gopher://127.0.0.1:3333", "-u", LOGIN], "unknown scheme 'gopher'"),
        ):
            stderr = io.StringIO()
            with self.assertRaises(SystemExit) as raised, contextlib.redirect_stderr(stderr):
                main(argv)
            self.assertEqual(raised.exception.code, 2, argv)
            self.assertIn(problem, stderr.getvalue())


class ArithmeticTests(SynchronousTestCase):
    """Epochs from seeds, NiceHash targets, nonces and verdicts."""

    def test_seed_epochs(self) -> None:
        """A seed hash names its epoch; a seed of no epoch is refused."""
        for epoch in (3, 0, 1, 390, 389):
            self.assertEqual(seed_epochs.epoch_of(ethash.seed_hash(epoch)), epoch)
        with self.assertRaises(ValueError):
            seed_epochs.epoch_of(b"\x01" * 32)

    def test_etchash_epochs(self) -> None:
        """With an ECIP-1099 block, seeds from it on are etchash's (size epoch half
        the seed's); the block number, when there is one, decides."""
        classic, mordor = ethash.CLASSIC_ECIP1099_BLOCK, ethash.MORDOR_ECIP1099_BLOCK
        self.assertEqual(work_epochs(390, None, None), (390, 390))
        self.assertEqual(work_epochs(389, None, classic), (389, 389))
        self.assertEqual(work_epochs(390, None, classic), (390, 195))
        self.assertEqual(work_epochs(390, 11_759_999, classic), (390, 195))
        self.assertEqual(work_epochs(389, 11_699_999, classic), (389, 389))
        self.assertEqual(work_epochs(84, None, mordor), (84, 42))
        self.assertEqual(work_epochs(83, None, mordor), (83, 83))
        for block in (0, 29_999, 11_699_999, 11_700_000, 11_760_000, 20_000_000):
            seed_epoch = ethash.epochs_for(block, classic)[0]
            self.assertEqual(work_epochs(seed_epoch, None, classic), ethash.epochs_for(block, classic))

    def test_nicehash_target(self) -> None:
        """Difficulty 1 is 0x00000000ffff0000...; others divide it exactly, floored."""
        one = 0x00000000FFFF0000000000000000000000000000000000000000000000000000
        self.assertEqual(nicehash_target(1), one)
        self.assertEqual(nicehash_target(0.5), 2 * one)
        self.assertEqual(nicehash_target(3), one // 3)
        self.assertEqual(nicehash_target(1e-8), int(Fraction(one) / Fraction(1e-8)))
        self.assertNotEqual(nicehash_target(1e-8), int(one / 1e-8), "float division loses digits")
        self.assertEqual(nicehash_target(1e-80), 2**256 - 1)
        with self.assertRaises(ValueError):
            nicehash_target(0)

    def test_nonces(self) -> None:
        """The full nonce is the extranonce, then the miner's low bits."""
        job = EthJob("j", HEADER_A, 0, 0, EASY, 1, bytes.fromhex("a1b2"))
        self.assertEqual(job.nonce_bits, 48)
        self.assertEqual(job.nonce(0xFFFF_0000_0000_1234), 0xA1B2_0000_0000_1234)
        self.assertEqual(EthJob("j", HEADER_A, 0, 0, EASY, 1).nonce(2**64 + 5), 5)

    def test_verdicts(self) -> None:
        """Error objects and stratum error arrays read alike; true alone accepts."""
        self.assertEqual(error_text({"code": 23, "message": "Invalid share"}), "23 Invalid share")
        self.assertEqual(error_text([21, "Job not found", None]), "21 Job not found")
        self.assertIsNone(verdict({"id": 3, "result": True}))
        self.assertEqual(verdict({"id": 3, "result": False}), "result false")
        self.assertEqual(
            verdict({"id": 3, "result": None, "error": ["21", "Stale share."]}), "21 Stale share."
        )


class GetworkTests(TestCase):
    """HTTP getwork against the dev node: every accepted share is a block."""

    timeout = 120

    async def test_mines_blocks(self) -> None:
        """Three blocks mined through eth_getWork/eth_submitWork: the chain is
        three higher, sealed for the etherbase, nothing refused (the shares
        left of a job that became a block are not sent); hashrate reported."""
        node = start_dev_node(self, ETHERBASE, difficulty=16)
        miner = GetworkMiner(reactor, threads=2, max_shares=3, hashrate_interval=0.2)
        self.addCleanup(miner.stop)
        await connect(miner, parse_eth_url(f"getwork+http://127.0.0.1:{node.port}/{LOGIN}/rig1"))
        self.assertTrue(await miner.authorized)
        assert miner.job is not None
        self.assertEqual((miner.job.header, miner.job.block_number), (node.chain.work().header_hash, 1))
        miner.start()
        await miner.finished
        await until(lambda: node.rpc.hashrates)
        await miner.stop()
        self.assertEqual(node.chain.height, 3)
        blocks = [node.chain.block_at(n) for n in (1, 2, 3)]
        self.assertEqual([b.header.coinbase if b else None for b in blocks], [ETHERBASE] * 3)
        self.assertEqual((miner.stats.submitted, miner.stats.accepted, miner.stats.rejected), (3, 3, {}))
        self.assertEqual(node.rpc.calls.count("eth_submitWork"), 3)
        self.assertEqual(list(node.rpc.hashrates), ["0x" + miner.miner_id.hex()])

    async def test_command_line(self) -> None:
        """``nomp-miner getwork+http://... -u LOGIN.WORKER --max-shares 2`` mines
        two blocks, prints the summary and exits 0."""
        node = start_dev_node(self, ETHERBASE, difficulty=16)
        out, err, status = await run_miner_script(
            f"getwork+http://127.0.0.1:{node.port}", "-u", f"{LOGIN}.rig1", "--max-shares", "2", "-d", "60"
        )
        self.assertEqual((status, err), (0, ""), out)
        self.assertIn("submitted 2, accepted 2, rejected 0", out)
        self.assertEqual(node.chain.height, 2)

    async def test_nobody_there(self) -> None:
        """No pool at the port: exit 1 and why."""
        node = start_dev_node(self, ETHERBASE, difficulty=16)
        port = node.port
        await node.stop()
        _, err, status = await run_miner_script(f"getwork+http://127.0.0.1:{port}/{LOGIN}")
        self.assertEqual(status, 1)
        self.assertIn(f"cannot connect to 127.0.0.1:{port}", err)


# --- the in-test pools ---


class LinePool(LineOnlyReceiver):
    """One miner's connection to an in-test pool: JSON lines in, JSON lines out."""

    delimiter = b"\n"

    def __init__(self, pool: PoolState) -> None:
        self.pool = pool
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.pool.connections.append(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(None)

    def send(self, **message: Any) -> None:
        self.sendLine(json.dumps(message).encode())

    def lineReceived(self, line: bytes) -> None:
        message = json.loads(line)
        self.pool.requests.append(message)
        self.pool.handle(self, message)


class PoolState:
    """An in-test pool: what it was sent, the shares it judged (valid or not)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.connections: list[LinePool] = []
        self.shares: list[tuple[Any, ...]] = []

    def handle(self, connection: LinePool, message: dict[str, Any]) -> None:
        raise NotImplementedError

    async def listen(self, test: TestCase, endpoint: str = "tcp:0:interface=127.0.0.1") -> int:
        port: IListeningPort = await serverFromString(reactor, endpoint).listen(
            Factory.forProtocol(lambda: LinePool(self))
        )

        async def close() -> None:
            stopped = port.stopListening()
            if stopped is not None:
                await stopped
            for connection in self.connections:
                if connection.transport is not None:
                    connection.transport.loseConnection()
                await connection.lost

        test.addCleanup(close)
        return int(port.getHost().port)  # type: ignore[attr-defined]


def work(header: bytes, epoch: int, target: int) -> list[str]:
    """eth-proxy work as open-ethereum-pool sends it: the target not zero-padded."""
    return ["0x" + header.hex(), "0x" + ethash.seed_hash(epoch).hex(), hex(target)]


class EthProxyPool(PoolState):
    """eth-proxy: login, getWork, submitWork judged against the current work.
    ``push_after_first`` (header, epoch, target) is pushed before the first
    share is answered; ``answers`` (if any) are sent for the first shares
    instead of the verdict."""

    def __init__(self, answers: list[dict[str, Any]] | None = None, login_error: Any = None) -> None:
        super().__init__()
        self.work = (HEADER_A, 0, EASY)
        self.answers = list(answers or [])
        self.login_error = login_error
        self.push_after_first: tuple[bytes, int, int] | None = None

    def push(self, connection: LinePool, header: bytes, epoch: int, target: int) -> None:
        self.work = (header, epoch, target)
        connection.send(id=0, jsonrpc="2.0", result=work(header, epoch, target))

    def handle(self, connection: LinePool, message: dict[str, Any]) -> None:
        method, params, request_id = message["method"], message["params"], message["id"]
        if method == "eth_submitLogin":
            if self.login_error is not None:
                connection.send(id=request_id, jsonrpc="2.0", result=None, error=self.login_error)
            else:
                connection.send(id=request_id, jsonrpc="2.0", result=True)
        elif method == "eth_getWork":
            connection.send(id=request_id, jsonrpc="2.0", result=work(*self.work))
        elif method == "eth_submitWork":
            nonce, header, mix = (
                int(params[0], 16),
                bytes.fromhex(params[1][2:]),
                bytes.fromhex(params[2][2:]),
            )
            current, epoch, target = self.work
            valid = header == current and meets(header, epoch, nonce, target, mix)
            self.shares.append((header, nonce, valid))
            if len(self.shares) == 1 and self.push_after_first is not None:
                self.push(connection, *self.push_after_first)
            if self.answers:
                connection.send(id=request_id, jsonrpc="2.0", **self.answers.pop(0))
            else:
                connection.send(id=request_id, jsonrpc="2.0", result=valid)


class EthProxyTests(TestCase):
    """eth-proxy stratum against an honest in-test pool."""

    timeout = 120

    async def start(self, pool: EthProxyPool, **options: Any) -> EthProxyMiner:
        port = await pool.listen(self)
        miner = EthProxyMiner(reactor, LOGIN, "pw", "rig1", **options)
        self.addCleanup(miner.stop)
        await connect(miner, parse_eth_url(f"ethproxy+tcp://127.0.0.1:{port}"))
        return miner

    async def test_follows_pushed_work(self) -> None:
        """Login with the worker, work from getWork, then from a push (of epoch 1)
        after the first share: every share sent is valid, and for the newest work."""
        await epochs_ready(0, 1)
        pool = EthProxyPool()
        pool.push_after_first = (HEADER_B, 1, EASY)
        miner = await self.start(pool, max_shares=3)
        self.assertTrue(await miner.authorized)
        miner.start()
        await miner.finished
        await miner.stop()
        self.assertEqual(
            [(h, valid) for h, _, valid in pool.shares], [(HEADER_A, True)] + [(HEADER_B, True)] * 2
        )
        self.assertEqual((miner.stats.accepted, miner.stats.rejected), (3, {}))
        login, getwork = pool.requests[:2]
        self.assertEqual(
            login,
            {
                "id": 1,
                "jsonrpc": "2.0",
                "method": "eth_submitLogin",
                "params": [LOGIN, "pw"],
                "worker": "rig1",
            },
        )
        self.assertEqual((getwork["id"], getwork["method"], getwork["params"]), (2, "eth_getWork", []))
        submits = [r for r in pool.requests if r["method"] == "eth_submitWork"]
        self.assertEqual({r["worker"] for r in submits}, {"rig1"})
        for request in submits:
            nonce, header, mix = request["params"]
            self.assertRegex(nonce, "^0x[0-9a-f]{16}$")
            self.assertRegex(header + mix, "^(0x[0-9a-f]{64}){2}$")

    async def test_refusals(self) -> None:
        """An error object, an error array and a plain false are refusals, each
        counted by its reason; the summary then exits 1."""
        await epochs_ready(0)
        pool = EthProxyPool(
            answers=[
                {"result": None, "error": {"code": 23, "message": "Invalid share"}},
                {"result": None, "error": [23, "Invalid share", None]},
                {"result": False},
            ]
        )
        miner = await self.start(pool, max_shares=1)
        self.assertTrue(await miner.authorized)
        miner.start()
        await miner.finished
        await miner.stop()
        self.assertEqual(miner.stats.accepted, 1)
        self.assertEqual(miner.stats.rejected, {"23 Invalid share": 2, "result false": 1})
        with contextlib.redirect_stdout(io.StringIO()) as out:
            self.assertEqual(report(miner.stats), 1)
        self.assertIn("submitted 4, accepted 1, rejected 3", out.getvalue())

    async def test_stale_is_no_failure(self) -> None:
        """A share refused after newer work came is counted stale, which is no failure."""
        await epochs_ready(0)
        pool = EthProxyPool(answers=[{"result": False}])
        pool.push_after_first = (HEADER_B, 0, EASY)
        miner = await self.start(pool, max_shares=1)
        self.assertTrue(await miner.authorized)
        miner.start()
        await miner.finished
        await miner.stop()
        self.assertEqual((miner.stats.accepted, miner.stats.rejected), (1, {STALE: 1}))
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(report(miner.stats), 0)

    async def test_login_refused(self) -> None:
        """A refused login: not authorized, with the pool's reason."""
        pool = EthProxyPool(login_error={"code": -1, "message": "Invalid login"})
        miner = await self.start(pool)
        self.assertFalse(await miner.authorized)
        self.assertEqual(miner.refusal, "-1 Invalid login")

    async def test_tls(self) -> None:
        """ethproxy+ssl: the pool's certificate checked against --ca, then mining as over TCP."""
        await epochs_ready(0)
        certificate = self_signed(Path(self.mktemp()))
        pool = EthProxyPool()
        port = await pool.listen(self, certificate.listen(0))
        miner = EthProxyMiner(reactor, LOGIN, max_shares=2)
        self.addCleanup(miner.stop)
        url = parse_eth_url(f"ethproxy+ssl://127.0.0.1:{port}")
        await connect(miner, url, tls_options("127.0.0.1", str(certificate.cert)))
        self.assertTrue(await miner.authorized)
        miner.start()
        await miner.finished
        await miner.stop()
        self.assertEqual(miner.stats.accepted, 2)
        self.assertNotIn("worker", pool.requests[0])


class NiceHashPool(PoolState):
    """EthereumStratum/1.0.0 with a 2-byte extranonce: the first job at
    difficulty D1; before the first share's answer a hard difficulty (for
    the next job); before the second's a 1-byte extranonce, difficulty D2
    and a clean job. Shares are judged against their own job."""

    D1, D2, HARD = 1e-8, 2e-8, 1000.0

    def __init__(self) -> None:
        super().__init__()
        self.extranonce = "a1b2"
        self.difficulty = self.D1
        self.jobs: dict[str, tuple[bytes, str, int]] = {}  # id -> (header, extranonce, target)

    def notify(self, connection: LinePool, job_id: str, header: bytes) -> None:
        self.jobs[job_id] = (header, self.extranonce, nicehash_target(self.difficulty))
        seed = ethash.seed_hash(0).hex()
        connection.send(id=None, method="mining.notify", params=[job_id, seed, header.hex(), True])

    def set_difficulty(self, connection: LinePool, difficulty: float) -> None:
        self.difficulty = difficulty
        connection.send(id=None, method="mining.set_difficulty", params=[difficulty])

    def handle(self, connection: LinePool, message: dict[str, Any]) -> None:
        method, params, request_id = message["method"], message["params"], message["id"]
        if method == "mining.subscribe":
            result = [["mining.notify", "ab12cd", "EthereumStratum/1.0.0"], self.extranonce]
            connection.send(id=request_id, result=result, error=None)
        elif method == "mining.extranonce.subscribe":
            connection.send(id=request_id, result=True, error=None)
        elif method == "mining.authorize":
            connection.send(id=request_id, result=True, error=None)
            self.set_difficulty(connection, self.D1)
            self.notify(connection, "j1", HEADER_A)
        elif method == "mining.submit":
            _, job_id, miner_nonce = params
            header, extranonce, target = self.jobs[job_id]
            full = bytes.fromhex(extranonce + miner_nonce)
            valid = len(full) == 8 and meets(header, 0, int.from_bytes(full, "big"), target)
            self.shares.append((job_id, miner_nonce, valid))
            if len(self.shares) == 1:
                self.set_difficulty(connection, self.HARD)
            elif len(self.shares) == 2:
                self.extranonce = "c3"
                connection.send(id=None, method="mining.set_extranonce", params=["c3"])
                self.set_difficulty(connection, self.D2)
                self.notify(connection, "j2", HEADER_B)
            error = None if valid else [23, "Invalid share", None]
            connection.send(id=request_id, result=valid, error=error)


class NiceHashTests(TestCase):
    """EthereumStratum/1.0.0 against an honest in-test pool."""

    timeout = 120

    async def test_jobs_difficulty_and_extranonce(self) -> None:
        """Subscribe, authorize as LOGIN.WORKER, then shares: a difficulty set
        mid-job waits for the next job, the new extranonce shortens the miner's
        part of the nonce, every share sent is valid for its job."""
        await epochs_ready(0)
        pool = NiceHashPool()
        port = await pool.listen(self)
        miner = NiceHashMiner(reactor, f"{LOGIN}.rig1", "pw", max_shares=3)
        self.addCleanup(miner.stop)
        await connect(miner, parse_eth_url(f"nicehash+tcp://127.0.0.1:{port}"))
        self.assertTrue(await miner.authorized)
        miner.start()
        await miner.finished
        await miner.stop()
        self.assertEqual(
            [(job, len(part), valid) for job, part, valid in pool.shares],
            [
                ("j1", 12, True),
                ("j1", 12, True),
                ("j2", 14, True),
            ],
        )
        self.assertEqual((miner.stats.accepted, miner.stats.rejected), (3, {}))
        methods = [(r["method"], r["params"]) for r in pool.requests[:3]]
        self.assertEqual(
            methods,
            [
                ("mining.subscribe", ["nomp-miner/1.0", "EthereumStratum/1.0.0"]),
                ("mining.extranonce.subscribe", []),
                ("mining.authorize", [f"{LOGIN}.rig1", "pw"]),
            ],
        )
        submits = [r["params"] for r in pool.requests if r["method"] == "mining.submit"]
        self.assertEqual({user for user, _, _ in submits}, {f"{LOGIN}.rig1"})
        for _, _, part in submits:
            self.assertTrue(re.fullmatch("[0-9a-f]+", part), part)
        assert miner.job is not None
        self.assertEqual(
            (miner.job.extranonce, miner.job.target), (b"\xc3", nicehash_target(NiceHashPool.D2))
        )
