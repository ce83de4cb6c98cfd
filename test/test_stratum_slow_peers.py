"""Peers that read or write too slowly, against a real StratumPool on
real loopback sockets (and, for the exact timings, on a task.Clock).

* A slow reader subscribes, then stops reading while the pool sends it
  job after job: once the kernel's buffers are full, the pool's own write
  buffer for it reaches Twisted's limit, the transport asks the protocol
  to pause and the pool drops it. What the pool held for it never passed
  that limit and a line. A miner beside it goes on mining.
* Slowloris peers trickle a line a byte at a time and never finish it:
  bytes that make no line do not reset the idle timer, so each is dropped
  after ``connection_timeout``, and a crowd of them does not stop a miner.
* A peer trickling a line longer than the limit is cut at the limit.

No test asserts how long anything took: waits are generous and end on
what happened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nomp.config import PortConfig
from nomp.hashing import ALGORITHMS
from nomp.miner import Miner, connect
from nomp.minerkit import tls_options
from nomp.stratum.protocol import MAX_LINE, StratumProtocol, encode_notification
from test.fakes import (
    REGTEST_ADDRESS,
    StratumHarness,
    find_nonce,
    mainnet_template,
    pool_config,
    submit_params,
)
from test.livestratum import LiveStratum, now_template
from test.test_chain import template_reply
from test.tlscerts import self_signed
from test.waiting import until

SCRYPT = ALGORITHMS["scrypt"]
WORKER = REGTEST_ADDRESS + ".good"
EASY_PORT = PortConfig(listen="tcp:3333:interface=127.0.0.1", diff=0.001)  # a share per ~65 hashes
# A notify line of about 1.1 kB: a 10-step merkle branch (1,000 transactions).
BIG_TEMPLATE_TRANSACTIONS = 1000
MAX_FLOOD_JOBS = 30_000  # about 30 MB of jobs: far past what loopback buffers hold
LINE_TOO_LONG = f"line longer than {MAX_LINE} bytes"
# The start of a subscribe request, then filler: a line that never ends.
PARTIAL_LINE = b'{"id": 1, "method": "mining.subscribe", "params": ["' + b"a" * 1_000_000


class Peer(Protocol):
    """A raw client: what it sent, what it got, and whether it was closed."""

    def __init__(self) -> None:
        self.received = b""
        self.sent = 0
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None

    @property
    def tcp(self) -> Any:
        """The transport with its TCP methods."""
        return self.transport

    @property
    def closed(self) -> bool:
        return self.lost.called

    def send(self, data: bytes) -> None:
        self.sent += len(data)
        self.tcp.write(data)

    def send_json(self, message: object) -> None:
        self.send(json.dumps(message).encode() + b"\n")

    def stop_reading(self) -> None:
        """Read nothing more from the socket: the kernel's buffers fill, then the pool's."""
        self.tcp.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.lost.callback(None)


async def open_peer(port: int, tls: IOpenSSLClientConnectionCreator | None = None) -> Peer:
    endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=30)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    peer = await endpoint.connect(Factory.forProtocol(Peer))
    assert isinstance(peer, Peer)
    return peer


def close_peer(peer: Peer) -> None:
    if not peer.closed:
        peer.tcp.abortConnection()


def stop_looping(call: task.LoopingCall) -> None:
    if call.running:
        call.stop()


def server_side(live: LiveStratum, peer: Peer) -> StratumProtocol:
    """The pool's connection to ``peer``."""
    local = peer.tcp.getHost().port
    (protocol,) = [p for p in live.protocols() if p._tcp.getPeer().port == local]
    return protocol


def socket_transport(protocol: StratumProtocol) -> Any:
    """The TCP transport under a connection (under its TLS layer on a TLS port)."""
    transport: Any = protocol.transport
    return transport.transport if isinstance(transport, TLSMemoryBIOProtocol) else transport


def pool_buffered(protocol: StratumProtocol) -> int:
    """Bytes the pool holds in user space for one connection, as Twisted
    counts them to decide the buffer is full: the TCP transport's buffers
    and, on TLS, the cleartext waiting for the TLS connection."""
    transport: Any = protocol.transport
    waiting_cleartext = 0
    if isinstance(transport, TLSMemoryBIOProtocol):
        waiting_cleartext = sum(len(chunk) for chunk in transport._appSendBuffer)
    tcp = socket_transport(protocol)
    return len(tcp.dataBuffer) + int(tcp._tempDataLen) + waiting_cleartext


@dataclass(frozen=True, slots=True)
class FloodFigures:
    """What a slow reader cost the pool before it was dropped."""

    jobs: int  # jobs sent to it
    line_bytes: int  # the length of one mining.notify line
    peak_buffered: int  # the most the pool held for it at once
    buffer_limit: int  # Twisted's buffer size, past which it asks to pause


class SlowReaderTests(TestCase):
    """A miner that stops reading is dropped; its buffer stays bounded; a
    good miner on the same server mines on."""

    timeout = 300

    async def flood_slow_reader(self, tls: bool) -> FloodFigures:
        live = LiveStratum(pool_config(ports=(EASY_PORT,)))
        self.addCleanup(live.stop)
        client_tls: IOpenSSLClientConnectionCreator | None = None
        if tls:
            certificate = self_signed(Path(self.mktemp()))
            port = await live.listen(certificate.listen(0))
            client_tls = tls_options("127.0.0.1", str(certificate.cert))
        else:
            port = await live.listen()
        template = now_template(1, BIG_TEMPLATE_TRANSACTIONS)
        live.new_job(template)

        good = Miner(reactor, SCRYPT, WORKER)
        await connect(good, "127.0.0.1", port, client_tls)
        self.assertTrue(await good.authorized)
        good.start()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(good.stop()))
        await until(lambda: good.stats.accepted >= 5)

        slow = await open_peer(port, client_tls)
        self.addCleanup(close_peer, slow)
        slow.send_json({"id": 1, "method": "mining.subscribe", "params": ["slow-reader/1.0"]})
        await until(lambda: b"\n" in slow.received)  # subscribed (and, on TLS, the handshake done)
        slow.stop_reading()
        dropped = server_side(live, slow)
        self.assertIsNotNone(dropped.session.extranonce1)
        buffer_limit = int(socket_transport(dropped).bufferSize)

        # Jobs on the same block, as the pool's rebroadcast timer sends them,
        # one per reactor turn so both sockets get written between them.
        jobs, peak = 0, 0
        line_bytes = 0
        while dropped in live.server.connections:
            if jobs >= MAX_FLOOD_JOBS:
                self.fail(f"the slow reader was not dropped after {jobs} jobs; {pool_buffered(dropped)} held")
            job = live.new_job(template, force=True)
            line_bytes = len(encode_notification("mining.notify", job.notify_params(False)))
            jobs += 1
            peak = max(peak, pool_buffered(dropped))
            await task.deferLater(reactor, 0)

        # The good miner is still there: it gets the next block's job and
        # has shares of it accepted.
        self.assertFalse(good.client is None or good.client.closed.called)
        accepted_before = good.stats.accepted
        recorded_before = len(live.recorder.valid)
        next_block = live.new_job(now_template(2, BIG_TEMPLATE_TRANSACTIONS))
        await until(lambda: good.job is not None and good.job.job_id == next_block.job_id)
        await until(lambda: good.stats.accepted >= accepted_before + 10)
        await good.stop()
        assert good.stats.rejected is not None
        # Shares of jobs that fell out of the pool's window during the flood are stale.
        self.assertEqual(set(good.stats.rejected) - {"21 job not found"}, set())
        self.assertEqual(len(live.recorder.valid), good.stats.accepted)
        self.assertGreaterEqual(len(live.recorder.valid) - recorded_before, 10)
        await until(lambda: not live.server.connections)
        return FloodFigures(jobs, line_bytes, peak, buffer_limit)

    def assertBounded(self, figures: FloodFigures) -> None:
        # Twisted asks to pause once the buffer passes its limit: it can be
        # over by at most the write that tipped it (one notify line; on TLS,
        # one line of records), never by what the jobs after it would add.
        self.assertLessEqual(figures.peak_buffered, figures.buffer_limit + 2 * figures.line_bytes)
        # The kernel took its fill first: the pool sent more than it ever held.
        self.assertGreater(figures.jobs * figures.line_bytes, figures.peak_buffered)

    async def test_slow_reader_dropped(self) -> None:
        """Plain TCP: the pool stops holding data for a miner that does not read it."""
        figures = await self.flood_slow_reader(tls=False)
        self.assertBounded(figures)

    async def test_slow_reader_dropped_over_tls(self) -> None:
        """TLS: the pause comes through the TLS layer the same way."""
        figures = await self.flood_slow_reader(tls=True)
        self.assertBounded(figures)


class SlowlorisTests(TestCase):
    """Peers that trickle bytes and never finish a line, on real sockets."""

    timeout = 300

    async def serve(self, connection_timeout: float = 600.0) -> tuple[LiveStratum, int]:
        live = LiveStratum(pool_config(ports=(EASY_PORT,), connection_timeout=connection_timeout))
        self.addCleanup(live.stop)
        port = await live.listen()
        live.new_job(now_template(1))
        return live, port

    def trickle(self, peers: list[Peer], data: bytes, chunk: int, interval: float) -> task.LoopingCall:
        """Every ``interval`` seconds, the next ``chunk`` bytes of ``data`` from each open peer."""

        def step() -> None:
            for peer in peers:
                if not peer.closed and peer.sent < len(data):
                    peer.send(data[peer.sent : peer.sent + chunk])

        trickling = task.LoopingCall(step)
        trickling.clock = reactor
        trickling.start(interval)
        self.addCleanup(stop_looping, trickling)
        return trickling

    async def test_partial_line_dropped_after_idle_timeout(self) -> None:
        """A byte every 50 ms, never a newline: dropped by the idle timer, without a reply."""
        live, port = await self.serve(connection_timeout=1.0)
        peer = await open_peer(port)
        self.addCleanup(close_peer, peer)
        self.trickle([peer], PARTIAL_LINE, 1, 0.05)
        await until(lambda: peer.sent > 0 and live.server.connections)
        await until(lambda: peer.closed, timeout=60)
        self.assertEqual(peer.received, b"")
        self.assertGreater(peer.sent, 1)
        await until(lambda: not live.server.connections)

    async def test_crowd_does_not_stop_a_miner(self) -> None:
        """200 trickling peers are all dropped; a miner beside them mines throughout."""
        live, port = await self.serve(connection_timeout=2.0)
        good = Miner(reactor, SCRYPT, WORKER)
        await connect(good, "127.0.0.1", port)
        self.assertTrue(await good.authorized)
        good.start()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(good.stop()))
        await until(lambda: good.stats.accepted >= 5)

        crowd = [await open_peer(port) for _ in range(200)]
        for peer in crowd:
            self.addCleanup(close_peer, peer)
        self.trickle(crowd, PARTIAL_LINE, 1, 0.1)
        await until(lambda: len(live.server.connections) == 201)
        accepted_at_start = good.stats.accepted
        await until(lambda: all(peer.closed for peer in crowd), timeout=120)
        accepted_during = good.stats.accepted - accepted_at_start

        self.assertGreater(accepted_during, 0)
        self.assertEqual([peer.received for peer in crowd if peer.received], [])
        self.assertFalse(good.client is None or good.client.closed.called)
        await until(lambda: len(live.server.connections) == 1)
        await until(lambda: good.stats.accepted >= accepted_at_start + accepted_during + 5)
        await good.stop()
        assert good.stats.rejected is not None
        self.assertEqual(dict(good.stats.rejected), {})
        self.assertEqual(len(live.recorder.valid), good.stats.accepted)

    async def test_long_line_trickled_is_cut_at_limit(self) -> None:
        """128 bytes every 5 ms of one endless line: one error at the limit,
        then the pool closes; it never held more than the limit."""
        live, port = await self.serve()
        peer = await open_peer(port)
        self.addCleanup(close_peer, peer)
        await until(lambda: live.server.connections)
        (protocol,) = live.protocols()
        held: list[int] = []
        sampling = task.LoopingCall(lambda: held.append(len(protocol._buffer)))
        sampling.clock = reactor
        sampling.start(0.001)
        self.addCleanup(stop_looping, sampling)
        self.trickle([peer], b"x" * (4 * MAX_LINE), 128, 0.005)
        await until(lambda: peer.closed, timeout=60)
        sampling.stop()

        (line,) = peer.received.splitlines()
        self.assertEqual(json.loads(line)["error"][1], LINE_TOO_LONG)
        self.assertGreater(peer.sent, MAX_LINE)
        self.assertLessEqual(max(held), MAX_LINE)
        self.assertGreater(max(held), MAX_LINE // 2)  # the sampling saw the line grow
        self.assertEqual(set(live.server.connections), set())


CURTIME: int = template_reply()["curtime"]
EXTRANONCE2 = bytes(4)


class SlowlorisOnAClockTests(SynchronousTestCase):
    """The same peers on a task.Clock and StringTransports: exact timings, at scale."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(CURTIME + 30)  # shares' ntime is checked against the clock
        self.harness = StratumHarness(pool_config(ports=(EASY_PORT,), connection_timeout=60.0), self.clock)
        self.job = self.harness.new_job(mainnet_template())

    def test_crowd_dropped_at_timeout_miner_kept(self) -> None:
        """1,000 peers trickling a byte every 5 s are all aborted 60 s after
        they connected, not a second before; a miner with a share every 30 s stays."""
        good = self.harness.miner(WORKER)
        extranonce1 = good.session.extranonce1
        assert extranonce1 is not None
        crowd = [self.harness.connect() for _ in range(1000)]
        accepted = 0
        nonce = -1
        for second in range(1, 121):
            self.clock.advance(1)
            if second % 5 == 0:
                for peer in crowd:
                    if not peer.closing:
                        peer.send(PARTIAL_LINE[second // 5 - 1 : second // 5])
            if second % 30 == 0:
                nonce = self.next_share(extranonce1, nonce + 1)
                (reply,) = good.submit(submit_params(WORKER, self.job, EXTRANONCE2, nonce))
                accepted += reply["result"] is True
            if second == 59:
                self.assertEqual([p for p in crowd if p.closing], [])
            if second == 60:
                self.assertEqual([p for p in crowd if not p.transport.aborted], [])
        self.assertEqual([peer.transport.value() for peer in crowd if peer.transport.value()], [])
        self.assertFalse(good.closing)
        self.assertEqual(accepted, 4)
        self.assertEqual(len(self.harness.recorder.valid), 4)

    def next_share(self, extranonce1: bytes, start: int) -> int:
        """The first nonce from ``start`` of a share at the port's difficulty."""
        target = SCRYPT.share_target(EASY_PORT.diff)
        return find_nonce(self.job, extranonce1 + EXTRANONCE2, lambda v: v <= target, start=start)

    def test_long_line_one_byte_at_a_time(self) -> None:
        """A line trickled a byte at a time is held up to the limit, cut at the
        byte past it with one error, and nothing after is read."""
        peer = self.harness.connect()
        for sent in range(1, MAX_LINE + 1):
            peer.send(b"x")
            self.assertEqual(len(peer.protocol._buffer), sent)
        self.assertEqual((peer.read(), peer.closing), ([], False))
        peer.send(b"x")
        (reply,) = peer.read()
        self.assertEqual(reply["error"][1], LINE_TOO_LONG)
        self.assertTrue(peer.closing)
        peer.send(b'x\n{"id": 2, "method": "mining.subscribe"}\n')
        self.assertEqual((peer.read(), len(peer.protocol._buffer)), ([], 0))
