"""Stratum over TLS ports (an ``ssl:`` endpoint), with real TLS clients:
the protocol on fakes, nomp-miner's certificate checks, and nomp-miner
mining through a whole pool (litecoind regtest, redis-server) over TLS."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path
from typing import Any, cast

import twisted.test
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import connectionDone
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp.config import PortConfig
from nomp.hashing import ALGORITHMS
from nomp.miner import Miner, PoolURL, connect, main, parse_pool_url
from nomp.minerkit import tls_options
from nomp.stratum.protocol import MAX_LINE, StratumProtocol
from test.chainhelpers import main_chain_and_side_branches
from test.fakes import REGTEST_ADDRESS, StratumHarness, pool_config
from test.livestratum import LiveStratum, now_template
from test.poolconf import write_conf
from test.rediscli import redis, redis_hash
from test.servers import RPC_PASSWORD, RPC_USER, shared_redis, shared_regtest
from test.test_stratum_e2e import COIN, pool_ready, start_pool
from test.tlscerts import PoolCertificate, self_signed
from test.waiting import until

PEM = FilePath(twisted.test.__file__).sibling("server.pem").path  # Twisted's own test key and certificate
SCRYPT = ALGORITHMS["scrypt"]
WORKER = REGTEST_ADDRESS + ".tls"
EASY_PORT = PortConfig(listen="tcp:3334:interface=127.0.0.1", diff=0.001)  # a share per ~65 hashes


class Client(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.made: defer.Deferred[None] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()

    @property
    def tcp(self) -> Any:
        """The transport with its TCP methods."""
        return self.transport

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class TLSLineTooLongTests(TestCase):
    async def test_line_too_long_closes_tls_connection(self) -> None:
        """On a TLS port a line over the limit closes the connection, as on plain TCP."""
        harness = StratumHarness(pool_config(), task.Clock())
        factory = harness.server.factory(harness.config.ports[0])
        port = await serverFromString(reactor, f"ssl:0:interface=127.0.0.1:privateKey={PEM}").listen(factory)
        self.addCleanup(port.stopListening)
        client = Client()
        reactor.connectSSL(  # type: ignore[attr-defined]
            "127.0.0.1",
            port.getHost().port,
            protocol.ClientFactory.forProtocol(lambda: client),
            ssl.CertificateOptions(verify=False),
        )
        await client.made
        client.tcp.write(b"x" * (MAX_LINE + 1))
        for _ in range(20):  # 2 MB more, no newline
            await task.deferLater(reactor, 0.02, lambda: None)
            if client.lost.called:
                break
            client.tcp.write(b"y" * 100_000)
        await task.deferLater(reactor, 0.3, lambda: None)
        protocols = [cast(StratumProtocol, c) for c in harness.server.connections]
        still_open = [(p.peer, len(p._buffer)) for p in protocols]
        for p in protocols:
            p._tcp.abortConnection()
        if not client.lost.called:
            client.tcp.abortConnection()
        await client.lost
        await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual((still_open, client.received.count(b"line longer")), ([], 1))


async def run_miner_script(*arguments: str) -> tuple[str, str, int]:
    """nomp-miner's command line (``python -m nomp.miner``, the console script's
    ``main``) in a process of its own: (stdout, stderr, exit status)."""
    out, err, status = await getProcessOutputAndValue(
        sys.executable, ["-m", "nomp.miner", *arguments], env=dict(os.environ), reactor=reactor
    )
    return out.decode(), err.decode(), status


def script_summary(out: str) -> tuple[int, int, int]:
    """(submitted, accepted, rejected) from the script's summary line."""
    summary = re.search(r"submitted (\d+), accepted (\d+), rejected (\d+)", out)
    if summary is None:
        raise AssertionError(f"no summary in {out!r}")
    return int(summary[1]), int(summary[2]), int(summary[3])


class PoolURLTests(SynchronousTestCase):
    """nomp-miner's URLs and TLS options on the command line."""

    def test_schemes(self) -> None:
        """stratum+ssl and stratum+tls are TLS, stratum+tcp and a bare HOST:PORT are not."""
        self.assertEqual(
            [
                parse_pool_url(url)
                for url in (
                    "stratum+ssl://pool.example:3334",
                    "stratum+tls://127.0.0.1:3335",
                    "STRATUM+SSL://[::1]:3336",
                    "stratum+tcp://localhost:3333",
                    "127.0.0.1:4000",
                    "stratum+ssl://pool.example",
                )
            ],
            [
                PoolURL("pool.example", 3334, True),
                PoolURL("127.0.0.1", 3335, True),
                PoolURL("::1", 3336, True),
                PoolURL("localhost", 3333, False),
                PoolURL("127.0.0.1", 4000, False),
                PoolURL("pool.example", 3333, True),
            ],
        )

    def test_bad_urls(self) -> None:
        """Unknown schemes, no host and bad ports are refused with what is wrong."""
        for url, problem in (
            ("http://pool.example:3333", "unknown scheme"),
            ("stratum+ssl://:3333", "no host"),
            ("stratum+ssl://pool.example:99999", "out of range"),
        ):
            with self.assertRaises(ValueError) as raised:
                parse_pool_url(url)
            self.assertIn(problem, str(raised.exception))

    def test_tls_flags_only_with_tls(self) -> None:
        """--ca and --insecure with a plain TCP URL, or both at once, are usage errors."""
        for argv, problem in (
            (["stratum+tcp://127.0.0.1:3333", "--insecure"], "are for stratum+ssl://"),
            (["stratum+tcp://127.0.0.1:3333", "--ca", PEM], "are for stratum+ssl://"),
            (["stratum+ssl://127.0.0.1:3333", "--ca", PEM, "--insecure"], "not allowed with"),
            (["ftp://127.0.0.1:3333"], "unknown scheme 'ftp'"),
        ):
            stderr = io.StringIO()
            with self.assertRaises(SystemExit) as raised, contextlib.redirect_stderr(stderr):
                main([*argv, "-u", WORKER])
            self.assertEqual(raised.exception.code, 2)
            self.assertIn(problem, stderr.getvalue())


class MinerOverTLSTests(TestCase):
    """nomp-miner against a StratumPool (on fakes) listening on an ssl: port:
    it mines when it can verify the pool's certificate and refuses to talk
    when it cannot."""

    timeout = 120

    async def serve(self, certificate: PoolCertificate | None = None) -> tuple[LiveStratum, int]:
        """A pool on a TLS port of the certificate (Twisted's test one if None), with a job."""
        live = LiveStratum(pool_config(ports=(EASY_PORT,)))
        if certificate is None:
            port = await live.listen(f"ssl:0:interface=127.0.0.1:privateKey={PEM}")
        else:
            port = await live.listen(certificate.listen(0))
        self.addCleanup(live.stop)
        live.new_job(now_template(1))
        return live, port

    async def mine(self, live: LiveStratum, miner: Miner, shares: int = 20) -> None:
        """Mine until ``shares`` are accepted; every share the miner sent is in the recorder."""
        self.assertTrue(await miner.authorized)
        miner.start()
        await until(lambda: miner.stats.accepted >= shares)
        await miner.stop()
        assert miner.stats.rejected is not None
        self.assertEqual(dict(miner.stats.rejected), {})
        self.assertEqual(len(live.recorder.valid), miner.stats.accepted)
        self.assertEqual({worker for worker, _ in live.recorder.valid}, {WORKER})

    async def test_mines_with_verified_certificate(self) -> None:
        """With --ca naming the pool's self-signed certificate, by IP address and by DNS name."""
        certificate = self_signed(Path(self.mktemp()))
        live, port = await self.serve(certificate)
        for host in ("127.0.0.1", "localhost"):
            live.recorder.valid.clear()
            miner = Miner(reactor, SCRYPT, WORKER)
            await connect(miner, host, port, tls_options(host, str(certificate.cert)))
            await self.mine(live, miner)

    async def test_insecure_takes_any_certificate(self) -> None:
        """--insecure mines on a pool whose certificate nothing would verify."""
        live, port = await self.serve()
        miner = Miner(reactor, SCRYPT, WORKER)
        await connect(miner, "127.0.0.1", port, tls_options("127.0.0.1", insecure=True))
        await self.mine(live, miner)

    async def test_console_script_verifies_by_default(self) -> None:
        """The command line refuses a self-signed pool unless told to trust it, and says why."""
        certificate = self_signed(Path(self.mktemp()))
        live, port = await self.serve(certificate)
        url = f"stratum+tls://127.0.0.1:{port}"
        out, err, status = await run_miner_script(url, "-u", WORKER, "-d", "1")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("certificate verify failed", err)
        self.assertEqual(live.hashing.checked, [])
        out, err, status = await run_miner_script(url, "-u", WORKER, "-d", "2", "--insecure")
        self.assertEqual((status, err), (0, ""), out)
        _, accepted, rejected = script_summary(out)
        self.assertEqual((len(live.recorder.valid), rejected), (accepted, 0))
        self.assertGreater(accepted, 0)

    async def test_unverified_certificates_refused(self) -> None:
        """Another CA, a certificate for another name, or the system's CAs for a
        self-signed certificate: the handshake fails and the pool gets no request."""
        folder = Path(self.mktemp())
        certificate = self_signed(folder / "pool")
        stranger = self_signed(folder / "stranger")
        named_elsewhere = self_signed(folder / "elsewhere", ("pool.example", "10.1.2.3"))
        live, port = await self.serve(certificate)
        _, elsewhere_port = await self.serve(named_elsewhere)
        cases: list[tuple[str, int, str | None, type[Exception]]] = [
            ("127.0.0.1", port, str(stranger.cert), SSL.Error),
            ("localhost", port, None, SSL.Error),  # the system's CAs
            ("127.0.0.1", elsewhere_port, str(named_elsewhere.cert), VerificationError),
            ("localhost", elsewhere_port, str(named_elsewhere.cert), VerificationError),
        ]
        for host, at, ca, error in cases:
            miner = Miner(reactor, SCRYPT, WORKER)
            client = await connect(miner, host, at, tls_options(host, ca))
            failure = await self.assertFailure(miner.authorized, Exception)
            self.assertIsInstance(failure, error, f"{host}:{at} with CA {ca}")
            await client.closed
        await until(lambda: not live.server.connections)
        self.assertEqual((live.hashing.checked, live.recorder.valid, live.recorder.invalid), ([], [], []))


class MiningThroughATLSPortTests(TestCase):
    """nomp-miner mines over TLS through a running pool: the pool's port is
    an ssl: endpoint with a throwaway certificate the miner verifies; blocks
    reach the node and Redis holds the shares the miner was told were accepted."""

    timeout = 300

    async def test_blocks_and_shares_over_tls(self) -> None:
        """An in-process miner and the command line, both verifying the pool with --ca."""
        pair = shared_regtest("stratum")
        redis_port = shared_redis().port
        db = 12
        redis(redis_port, db, "FLUSHDB")
        address = pair.new_address()
        certificate = self_signed(Path(self.mktemp()) / "tls")
        conf, stratum_port = write_conf(
            Path(self.mktemp()),
            pair.miner.url,
            RPC_USER,
            RPC_PASSWORD,
            address,
            redis_port,
            db,
            tls=certificate,
        )
        root = start_pool(self, conf)
        await until(lambda: pool_ready(root))
        self.assertEqual(root.fatal_errors, [])
        start_height = pair.height()

        miner = Miner(reactor, SCRYPT, f"{address}.tls1", threads=2)
        await connect(miner, "127.0.0.1", stratum_port, tls_options("127.0.0.1", str(certificate.cert)))
        self.assertTrue(await miner.authorized)
        miner.start()
        await until(lambda: pair.height() >= start_height + 10, timeout=120)
        await miner.stop()
        in_process_height = pair.height()

        # The command line, as an operator runs it against a pool with its own certificate.
        out, err, status = await run_miner_script(
            f"stratum+ssl://localhost:{stratum_port}",
            "-u",
            f"{address}.tls2",
            "--ca",
            str(certificate.cert),
            "-d",
            "5",
        )
        self.assertEqual((status, err), (0, ""), out)
        _, script_accepted, script_rejected = script_summary(out)
        await root.stopService()

        stats = miner.stats
        assert stats.rejected is not None
        self.assertEqual(set(stats.rejected) - {"21 job not found"}, set())
        self.assertGreater(stats.accepted, 0)
        self.assertGreater(script_accepted, 0)
        self.assertGreater(pair.height(), in_process_height)  # the command line's blocks too
        counters = redis_hash(redis_port, db, f"{COIN}:stats")
        self.assertEqual(int(counters["validShares"]), stats.accepted + script_accepted)
        self.assertEqual(int(counters.get("invalidShares", 0)), stats.rejected_total + script_rejected)
        rounds = [f"{COIN}:shares:roundCurrent", *redis(redis_port, db, "KEYS", f"{COIN}:shares:round[0-9]*")]
        credited = {
            worker: sum(
                float(redis_hash(redis_port, db, key).get(f"{address}.{worker}", 0)) for key in rounds
            )
            for worker in ("tls1", "tls2")
        }
        self.assertAlmostEqual(credited["tls1"], 0.0625 * stats.accepted, places=6)
        self.assertAlmostEqual(credited["tls2"], 0.0625 * script_accepted, places=6)
        pending = redis(redis_port, db, "SMEMBERS", f"{COIN}:blocksPending")
        self.assertGreaterEqual(len(pending), 10)
        self.assertEqual(int(counters["validBlocks"]), len(pending))
        main, _ = main_chain_and_side_branches(pair, [member.split(":")[0] for member in pending])
        self.assertGreaterEqual(len(main), 1)
