"""One notification line to many miners: the sends of a job broadcast.

A new block sends the same line to every miner at once. The Python around
each send is about a microsecond; the send itself is several microseconds
of kernel work (on loopback, the receiver's TCP work too). So the sockets
that can take the line directly are split into parts sent by a C loop
(``send_each``) that holds no GIL: one part on the calling thread, the
others on helper threads at the same time, so the kernel work runs on
every core. The caller waits for all of them, which keeps each socket's
bytes in order: nothing else writes while a broadcast runs, and what a
full socket buffer did not take is then queued in Twisted behind it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from nomp.hashing import send_each
from nomp.stratum.protocol import StratumProtocol

# Below this many sockets a thread costs more than it saves.
MIN_PER_PART = 512
MAX_PARTS = 4


def default_parts() -> int:
    """One part per core, up to MAX_PARTS."""
    return max(1, min(os.cpu_count() or 1, MAX_PARTS))


def broadcast(protocols: Sequence[StratumProtocol], line: bytes, parts: int) -> None:
    """Send ``line`` to each of ``protocols`` (on the reactor thread)."""
    direct: list[StratumProtocol] = []
    fds: list[int] = []
    for protocol in protocols:
        fd = protocol.direct_fd()
        if fd is None:
            protocol.send_line(line)  # through Twisted, behind what it holds
        else:
            direct.append(protocol)
            fds.append(fd)
    if not fds:
        return
    parts = max(1, min(parts, len(fds) // MIN_PER_PART))
    size = -(-len(fds) // parts)
    chunks = [fds[i : i + size] for i in range(0, len(fds), size)]
    results: list[list[int]] = [[] for _ in chunks]

    def send(index: int) -> None:
        results[index] = send_each(chunks[index], line)

    helpers = [threading.Thread(target=send, args=(i,), name="nomp-broadcast") for i in range(1, len(chunks))]
    for helper in helpers:
        helper.start()
    send(0)
    for helper in helpers:
        helper.join()
    length = len(line)
    sent = [n for part in results for n in part]
    for protocol, taken in zip(direct, sent, strict=True):
        if taken != length:
            # A full buffer (or an error Twisted will report when it writes).
            protocol.send_rest(line[max(taken, 0) :])
