"""The reactor thread's turn for one recorder batch: records joined, the script call encoded.

Run: python bench/recorder_flush.py [--records 600,1000,5000] [--backlog 20000] [--rounds 5]

A ShareRecorder with its records queued writes them through txredisapi's
protocol to a transport that only counts the bytes (no Redis, no socket):
what is timed is what ``flush`` does on the reactor thread before the
first byte could leave, for one batch of each size, then for a backlog
written batch after batch (each batch its own turn in the pool, where the
next waits for Redis's answer). CPU time of this thread, best of --rounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import txredisapi
from twisted.internet import defer, task

from nomp.payments.rounds import PROP
from nomp.store.recorder import ShareRecorder
from nomp.store.schema import PoolKeys

WORKER = "ltc1qexampleaddressxxxxxxxxxxxxxxxxxxxxx.rig"


class CountingClient:
    """A Redis client whose script calls are encoded as txredisapi encodes them, and answered at once."""

    def __init__(self) -> None:
        self.protocol = txredisapi.BaseRedisProtocol()
        self.sent = 0
        self.calls = 0
        client = self

        class Transport:
            def write(self, data: bytes) -> None:
                client.sent += len(data)

            def writeSequence(self, data: list[bytes]) -> None:
                client.sent += sum(map(len, data))

        self.protocol.transport = Transport()
        self.protocol.connected = 1

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        self.calls += 1
        # The pool's calls are EVALSHA once Redis knows the script: the same encoding, hashed as it does.
        self.protocol.eval(script, keys, args)
        return defer.succeed(1)


def flush_cost(records: int, max_batch: int) -> tuple[float, int, int]:
    """CPU seconds of one flush of ``records`` queued records, bytes encoded, script calls."""
    client = CountingClient()
    recorder = ShareRecorder(
        PoolKeys.for_coin("litecoin"), lambda: client, task.Clock(), PROP, max_batch=max_batch
    )
    for n in range(records):
        recorder.valid_share(f"{WORKER}{n % 50}", 0.001)
    started = time.thread_time()
    recorder.flush()
    return time.thread_time() - started, client.sent, client.calls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", default="600,1000,2000,5000")
    parser.add_argument("--backlog", type=int, default=20000)
    parser.add_argument("--max-batches", default="1000,5000", help="batch sizes for the backlog")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    print("one batch (max_batch large enough):")
    for records in (int(r) for r in options.records.split(",")):
        runs = [flush_cost(records, records) for _ in range(options.rounds)]
        best = min(cpu for cpu, _, _ in runs)
        encoded = runs[0][1] / 1024
        print(f"  {records:6} records: {best * 1e3:.2f} ms of CPU in one turn, {encoded:.0f} KiB encoded")
    print(f"a backlog of {options.backlog} records:")
    for max_batch in (int(b) for b in options.max_batches.split(",")):
        runs = [flush_cost(options.backlog, max_batch) for _ in range(options.rounds)]
        best = min(cpu for cpu, _, _ in runs)
        calls = runs[0][2]
        print(
            f"  max_batch {max_batch:5}: {calls} batches, {best * 1e3:.2f} ms of CPU in all, "
            f"{best / calls * 1e3:.2f} ms a turn"
        )


if __name__ == "__main__":
    main()
