"""One notification line to many miners: the sends of a job broadcast.

A new block sends the same line to every miner at once. The Python around
each send is about a microsecond; the send itself is several microseconds
of kernel work (on loopback, the receiver's TCP work too). So the sockets
that can take the line directly are handed, a chunk at a time, to a C loop
(``send_each``) that holds no GIL, run by helper threads and by the calling
thread itself: the kernel work runs on every core, and starts while the
calling thread is still picking the sockets of later chunks. The caller
returns once every chunk is sent, which keeps each socket's bytes in order:
nothing else writes while a broadcast runs, and what a full socket buffer
did not take is then queued in Twisted behind it.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nomp.hashing import send_each
from nomp.stratum.connection import Connection
from nomp.stratum.protocol import encode_notification
from nomp.stratum.registry import ConnectionRegistry

CHUNK = 128  # sockets per C call: about a millisecond of sends
# Below this many sockets per thread, a thread costs more than it saves
# (starting one costs about as much as a dozen loopback sends).
MIN_PER_THREAD = 128
MAX_THREADS = 4

_Chunk = tuple[list[Connection], list[int]]


def default_threads() -> int:
    """One thread per core, up to MAX_THREADS."""
    return max(1, min(os.cpu_count() or 1, MAX_THREADS))


def broadcast(protocols: Sequence[Connection], line: bytes, threads: int) -> None:
    """Send ``line`` to each of ``protocols`` (on the reactor thread), with
    up to ``threads`` threads sending at once, the calling one included."""
    chunks: queue.SimpleQueue[_Chunk | None] = queue.SimpleQueue()
    sent: list[tuple[list[Connection], list[int]]] = []  # appended by every sender

    def send_chunks(wait: bool) -> None:
        while True:
            try:
                chunk = chunks.get(block=wait)
            except queue.Empty:
                return
            if chunk is None:
                return
            try:
                taken = send_each(chunk[1], line)
            except Exception:  # (out of memory) the chunk's lines then go through Twisted
                taken = [0] * len(chunk[1])
            sent.append((chunk[0], taken))

    helpers = [
        threading.Thread(target=send_chunks, args=(True,), name="nomp-broadcast")
        for _ in range(min(threads, len(protocols) // MIN_PER_THREAD) - 1)
    ]
    for helper in helpers:
        helper.start()
    direct: list[Connection] = []
    fds: list[int] = []
    for protocol in protocols:
        fd = protocol.direct_fd()
        if fd is None:
            protocol.send_line(line)  # through Twisted, behind what it holds
            continue
        direct.append(protocol)
        fds.append(fd)
        if len(fds) == CHUNK and helpers:
            chunks.put((direct, fds))
            direct, fds = [], []
    if fds:
        chunks.put((direct, fds))
    send_chunks(wait=False)  # what the helpers have not taken yet
    for _ in helpers:
        chunks.put(None)  # after: the calling thread must not take a helper's stop
    for helper in helpers:
        helper.join()
    length = len(line)
    for chunk_protocols, taken in sent:
        for protocol, count in zip(chunk_protocols, taken, strict=True):
            if count != length:
                # A full buffer (or an error Twisted will report when it writes).
                protocol.send_rest(line[max(count, 0) :])


class NotifiableJob(Protocol):
    """A job as the broadcaster sends it."""

    @property
    def job_id(self) -> str: ...

    @property
    def clean(self) -> bool: ...

    def notify_params(self, clean: bool) -> list[object]: ...


class Broadcaster:
    """Sends jobs to a pool's miners: every new job to every subscribed
    connection at once, and the current one to a miner that needs it.

    Each job's two ``mining.notify`` lines (clean and not) are encoded once
    and kept while the job is live.
    """

    log = Logger()

    def __init__(
        self, pool_name: str, connections: ConnectionRegistry, clock: IReactorTime, threads: int | None = None
    ) -> None:
        self._pool_name = pool_name
        self._connections = connections
        self._clock = clock
        self.threads = default_threads() if threads is None else threads
        self._lines: dict[str, tuple[bytes, bytes]] = {}  # job id -> (clean, continuing) notify

    def new_job(self, job: NotifiableJob, live_ids: Iterable[str]) -> int:
        """Send ``job`` to every subscribed miner; forget the lines of jobs
        not in ``live_ids``. How many miners it went to."""
        started = self._clock.seconds()
        lines = (
            encode_notification("mining.notify", job.notify_params(True)),
            encode_notification("mining.notify", job.notify_params(False)),
        )
        self._lines[job.job_id] = lines
        # The same bytes for everyone: the loop does as little as it can.
        line, job_id = lines[0 if job.clean else 1], job.job_id
        miners = self._connections.subscribed()
        encoded = self._clock.seconds()
        broadcast(miners, line, self.threads)
        sent = self._clock.seconds()
        # After the sends, so the last miner gets the job sooner: no share of
        # it can be read before this loop is done.
        for connection in miners:
            connection.session.job_sent(job_id)
        self._lines = {i: self._lines[i] for i in live_ids if i in self._lines}
        if job.clean:
            done = self._clock.seconds()
            self.log.info(
                "pool {pool}: job {job_id} sent to {miners} miners in {ms:.1f} ms "
                "({bytes} bytes; encoded in {encode_ms:.1f} ms, sends {send_ms:.1f} ms, "
                "sessions noted in {note_ms:.1f} ms)",
                pool=self._pool_name,
                job_id=job_id,
                miners=len(miners),
                bytes=len(line),
                ms=(done - started) * 1000,
                encode_ms=(encoded - started) * 1000,
                send_ms=(sent - encoded) * 1000,
                note_ms=(done - sent) * 1000,
            )
        return len(miners)

    def send_job(self, connection: Connection, job: NotifiableJob, clean: bool) -> None:
        """One job to one miner (after its subscribe, a new extranonce1)."""
        lines = self._lines.get(job.job_id)
        if lines is None:
            return
        connection.session.job_sent(job.job_id)
        connection.send_line(lines[0] if clean else lines[1])
