"""A payment run for many miners, against a real redis-server.

Run: python bench/payments.py [--miners 10000]

One mature block whose PROP round holds --miners addresses is credited,
then every balance is paid in one sendmany. The wallet is a scripted one
in this process (test/fakewallet.py), timed apart: the figure that counts
is the pool's own work, the run time minus the time spent in wallet calls.
Printed: run time, wallet time, pool time and Redis round trips.
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nomp.config import PaymentsConfig, RedisConfig  # noqa: E402
from nomp.payments.ledger import PaymentLedger  # noqa: E402
from nomp.payments.processor import PaymentProcessor  # noqa: E402
from nomp.store.redis import RedisService  # noqa: E402
from nomp.store.schema import PoolKeys  # noqa: E402
from test.fakes import pool_config  # noqa: E402
from test.fakewallet import FakeChain, FakeWallet  # noqa: E402
from test.servers import RedisServer  # noqa: E402

REWARD = 50 * 100_000_000


class CountingRedis:
    """The Redis client, counting round trips (every ledger call is one EVAL)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.round_trips = 0

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        self.round_trips += 1
        result: defer.Deferred[Any] = self.client.eval(script, keys, args)
        return result


class TimedWallet(FakeWallet):
    """The scripted wallet, with the time spent in it summed."""

    spent = 0.0

    async def call(self, method: str, *params: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().call(method, *params)
        finally:
            self.spent += time.perf_counter() - started


async def bench(reactor: Any, miners: int) -> None:
    server = RedisServer().start()
    service = RedisService(RedisConfig(port=server.port))
    service.startService()
    try:
        while service.client() is None:
            await task.deferLater(reactor, 0.01)
        keys = PoolKeys.for_coin("bench")
        addresses = [f"rbench1q{i:034d}" for i in range(miners)]
        # The round and the block, as the recorder leaves them.
        for first in range(0, miners, 1000):
            pairs = [x for a in addresses[first : first + 1000] for x in (f"{a}.rig", "1.5")]
            server.command("HSET", keys.round(100), *pairs)
        block_hash, txid = "aa" * 32, "bb" * 32
        server.command("SADD", keys.blocks_pending, f"{block_hash}:{txid}:100:{addresses[0]}.rig:1")
        server.command("HSET", keys.block(block_hash), "round", keys.round(100), "height", "100")
        pool = pool_config(payments=PaymentsConfig(enabled=True, minimum_payment=Decimal("0.00001")))
        chain = FakeChain(tip=300)
        chain.blocks[block_hash] = (201, txid)
        wallet = TimedWallet(pool.address)
        wallet.coinbases[txid] = ("generate", REWARD)
        counting = CountingRedis(service.client())
        processor = PaymentProcessor(pool, PaymentLedger(counting, keys), chain, wallet)

        started = time.perf_counter()
        report = await processor.run()
        elapsed = time.perf_counter() - started
        assert len(report.paid) == miners, report
        print(f"payout run for {miners} miners (credit one block, pay every balance in one sendmany):")
        print(f"  run time        {elapsed * 1000:8.1f} ms")
        print(
            f"  wallet calls    {wallet.spent * 1000:8.1f} ms  ({len(wallet.calls)} calls, scripted wallet)"
        )
        print(f"  pool's own work {(elapsed - wallet.spent) * 1000:8.1f} ms")
        print(f"  Redis round trips {counting.round_trips}")
    finally:
        stopping = service.stopService()
        if stopping is not None:
            await stopping
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--miners", type=int, default=10_000)
    args = parser.parse_args()

    task.react(lambda reactor: defer.Deferred.fromCoroutine(bench(reactor, args.miners)))


if __name__ == "__main__":
    main()
