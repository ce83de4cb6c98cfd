"""A job broadcast's sends: the C send loop and the split across threads, on real sockets."""

from __future__ import annotations

import errno
import socket
import threading
from typing import cast

from twisted.trial.unittest import TestCase

from nomp.hashing import send_each
from nomp.stratum import broadcast as broadcast_module
from nomp.stratum.broadcast import broadcast
from nomp.stratum.protocol import StratumProtocol

LINE = b'{"id":null,"method":"mining.notify","params":["1"]}\n'


def pair(test: TestCase) -> tuple[socket.socket, socket.socket]:
    """A connected pair of non-blocking stream sockets, closed after the test."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    test.addCleanup(ours.close)
    test.addCleanup(theirs.close)
    return ours, theirs


def fill(sock: socket.socket) -> int:
    """Write to ``sock`` until its buffer takes no more; how many bytes."""
    total = 0
    while True:
        try:
            total += sock.send(b"x" * 65536)
        except BlockingIOError:
            return total


def drain(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


class SendEachTests(TestCase):
    """send_each: the same bytes on many sockets, one result each."""

    def test_every_socket_gets_the_line(self) -> None:
        pairs = [pair(self) for _ in range(5)]
        self.assertEqual(send_each([ours.fileno() for ours, _ in pairs], LINE), [len(LINE)] * 5)
        for _, theirs in pairs:
            self.assertEqual(theirs.recv(1024), LINE)

    def test_full_buffer(self) -> None:
        """A socket whose buffer is full takes nothing: -EAGAIN, the others are still sent."""
        full, _ = pair(self)
        fill(full)
        ours, theirs = pair(self)
        self.assertEqual(send_each([full.fileno(), ours.fileno()], LINE), [-errno.EAGAIN, len(LINE)])
        self.assertEqual(theirs.recv(1024), LINE)

    def test_closed_peer(self) -> None:
        """A peer that is gone: -EPIPE, and no SIGPIPE kills the process."""
        ours, theirs = pair(self)
        theirs.close()
        self.assertEqual(send_each([ours.fileno()], LINE), [-errno.EPIPE])

    def test_not_a_socket(self) -> None:
        self.assertEqual(send_each([-1], LINE), [-errno.EBADF])

    def test_nothing(self) -> None:
        self.assertEqual(send_each([], LINE), [])


class FakeMiner:
    """What broadcast uses of a StratumProtocol, over a real socket."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self.through_twisted: list[bytes] = []  # send_line: the whole line queued
        self.rest: list[bytes] = []  # send_rest: what the direct send left

    def direct_fd(self) -> int | None:
        return None if self.sock is None else self.sock.fileno()

    def send_line(self, line: bytes) -> None:
        self.through_twisted.append(line)

    def send_rest(self, data: bytes) -> None:
        self.rest.append(data)


class BroadcastTests(TestCase):
    """broadcast: direct sends where a socket can take them, Twisted's queue elsewhere."""

    def miners(self, count: int) -> list[tuple[FakeMiner, socket.socket]]:
        made = []
        for _ in range(count):
            ours, theirs = pair(self)
            made.append((FakeMiner(ours), theirs))
        return made

    def run_broadcast(self, miners: list[FakeMiner], threads: int) -> None:
        broadcast(cast(list[StratumProtocol], miners), LINE, threads)

    def test_split_across_threads(self) -> None:
        """In chunks sent by several threads at once, every miner gets the line exactly once."""
        self.patch(broadcast_module, "MIN_PER_THREAD", 4)
        self.patch(broadcast_module, "CHUNK", 3)
        made = self.miners(50)
        self.run_broadcast([miner for miner, _ in made], threads=4)
        for miner, theirs in made:
            self.assertEqual(drain(theirs), LINE)
            self.assertEqual((miner.through_twisted, miner.rest), ([], []))

    def test_few_miners_one_part(self) -> None:
        """Fewer sockets than MIN_PER_THREAD per thread: sent on the calling thread alone."""
        started: list[object] = []

        def start(thread: object) -> None:  # a method: Thread.start is looked up on the class
            started.append(thread)

        self.patch(threading.Thread, "start", start)
        made = self.miners(3)
        self.run_broadcast([miner for miner, _ in made], threads=4)
        self.assertEqual(started, [])
        for _, theirs in made:
            self.assertEqual(drain(theirs), LINE)

    def test_no_direct_socket(self) -> None:
        """A miner Twisted holds bytes for (or on TLS) gets the line through send_line."""
        queued = FakeMiner(None)
        ((direct, theirs),) = self.miners(1)
        self.run_broadcast([queued, direct], threads=2)
        self.assertEqual(queued.through_twisted, [LINE])
        self.assertEqual(drain(theirs), LINE)

    def test_full_buffer_rest_queued(self) -> None:
        """A socket that takes nothing gets the whole line queued behind what it holds."""
        (slow, _), (quick, theirs) = self.miners(2)
        assert slow.sock is not None
        fill(slow.sock)
        self.run_broadcast([slow, quick], threads=1)
        self.assertEqual(slow.rest, [LINE])
        self.assertEqual(drain(theirs), LINE)

    def test_partial_send_rest_queued(self) -> None:
        """What a send did not take is queued, from the first byte not sent."""
        ((miner, _),) = self.miners(1)
        self.patch(broadcast_module, "send_each", lambda fds, line: [10])
        self.run_broadcast([miner], threads=1)
        self.assertEqual(miner.rest, [LINE[10:]])

    def test_failed_call_falls_back_to_twisted(self) -> None:
        """A send loop that fails leaves its miners' lines to Twisted, whole; none is lost."""

        def fail(fds: list[int], line: bytes) -> list[int]:
            raise MemoryError("no room")

        self.patch(broadcast_module, "send_each", fail)
        self.patch(broadcast_module, "MIN_PER_THREAD", 2)
        self.patch(broadcast_module, "CHUNK", 2)
        made = self.miners(6)
        self.run_broadcast([miner for miner, _ in made], threads=3)
        for miner, theirs in made:
            self.assertEqual(miner.rest, [LINE])
            self.assertEqual(drain(theirs), b"")
