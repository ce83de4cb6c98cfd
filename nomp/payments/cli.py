"""``nomp-payments``: run a pool's payments now, or audit its books.

    nomp-payments -c conf audit litecoin   prints every check; exit 0 when clean
    nomp-payments -c conf run litecoin     one payment run (it takes the same
                                           lock as the pool's own timer)
    nomp-payments -c conf minimum litecoin ADDRESS 0.5
                                           ADDRESS is paid once its balance
                                           reaches 0.5 coins (at least the
                                           pool's minimum_payment); "-" removes it

Without a pool name, every pool with payments enabled. Exit status 1 when
an audit is not clean or a run failed, 2 on a configuration error.

The answer goes to standard output; warnings and errors logged on the way
go to standard error (``-v``: the info lines too).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import txredisapi
from twisted.internet import defer, task
from twisted.logger import globalLogBeginner

from nomp.config import ConfigErrors, LoggingConfig, PoolConfig, load_config
from nomp.daemon.clients import DaemonClients
from nomp.logs import make_observer
from nomp.payments.audit import audit
from nomp.payments.ledger import PaymentLedger
from nomp.payments.processor import PaymentProcessor
from nomp.payments.service import wallet_daemon
from nomp.payments.split import coins, satoshis
from nomp.store.schema import PoolKeys

Failpoint = Callable[[str], None]


async def _main(reactor: Any, args: argparse.Namespace, failpoint: Failpoint | None) -> int:
    try:
        config = load_config(args.config)
    except ConfigErrors as e:
        sys.stderr.write(f"{e}\n")
        return 2
    pools = [p for p in config.pools if p.payments.enabled and args.pool in (None, p.name)]
    if not pools:
        sys.stderr.write(f"no pool with payments enabled{' named ' + args.pool if args.pool else ''}" + "\n")
        return 2
    settings = config.settings.redis
    redis = await txredisapi.Connection(
        settings.host, settings.port, dbid=settings.db, password=settings.password, reconnect=False
    )
    # One connection per call: a command leaves nothing open behind it.
    clients = DaemonClients(reactor, persistent=False)
    status = 0
    try:
        for pool in pools:
            status = max(status, await _one(args, pool, redis, clients, failpoint))
    finally:
        await clients.close()
        await redis.disconnect()
    return status


async def _set_minimum(
    pool: PoolConfig, ledger: PaymentLedger, address: str | None, amount: str | None
) -> int:
    if not address or not amount:
        sys.stderr.write("minimum needs a pool, an address and an amount in coins (or -)\n")
        return 2
    key = ledger.keys.payout_minimums
    if amount == "-":
        await ledger.redis_call("HDEL", key, address)
        sys.stdout.write(f"pool {pool.name}: {address} is paid from minimum_payment again\n")
        return 0
    try:
        value = satoshis(Decimal(amount))
    except (ArithmeticError, ValueError):
        sys.stderr.write(f"{amount!r} is not an amount of coins with at most 8 decimals\n")
        return 2
    await ledger.redis_call("HSET", key, address, str(value))
    sys.stdout.write(f"pool {pool.name}: {address} is paid from {coins(value)} coins\n")
    return 0


async def _one(
    args: argparse.Namespace,
    pool: PoolConfig,
    redis: Any,
    clients: DaemonClients,
    failpoint: Failpoint | None,
) -> int:
    command, address, amount = args.command, args.address, args.amount
    ledger = PaymentLedger(redis, PoolKeys.for_coin(pool.coin.name))
    wallet = clients.rpc(wallet_daemon(pool))
    if command == "minimum":
        return await _set_minimum(pool, ledger, address, amount)
    if command == "audit":
        result = await audit(ledger, wallet, pool.address)
        sys.stdout.write(f"pool {pool.name}:\n" + "".join(f"  {line}\n" for line in result.lines()))
        return 0 if result.clean else 1
    processor = PaymentProcessor(pool, ledger, clients.group(pool.daemons), wallet, failpoint=failpoint)
    report = await processor.run()
    sys.stdout.write(
        f"pool {pool.name}: immature {len(report.immature)}, confirmed {len(report.confirmed)}, "
        f"orphaned {len(report.orphaned)}, waiting {len(report.waiting)}, "
        f"paid {sum(report.paid.values())} satoshis to {len(report.paid)} addresses"
        + (f" in {report.txid}" if report.txid else "")
        + (f"; {report.error}" if report.error else "")
        + ("; another run holds the lock" if report.locked_out else "")
        + "\n"
    )
    return 1 if report.error or report.locked_out else 0


def main(argv: list[str] | None = None, failpoint: Failpoint | None = None) -> int:
    """The command; ``failpoint`` is a test seam, passed to the payment run (see PaymentProcessor)."""
    parser = argparse.ArgumentParser(prog="nomp-payments", description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", default="conf", help="the conf folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="log info lines too, not only problems")
    parser.add_argument("command", choices=["run", "audit", "minimum"])
    parser.add_argument("pool", nargs="?", help="the pool's name (its file's stem); default: all")
    parser.add_argument("address", nargs="?", help="minimum: the miner's address")
    parser.add_argument("amount", nargs="?", help="minimum: coins, or - to remove")
    args = parser.parse_args(argv)
    log = make_observer(LoggingConfig(level="info" if args.verbose else "warn"), sys.stderr)
    globalLogBeginner.beginLoggingTo([log], redirectStandardIO=False)
    status: list[int] = []

    async def run(reactor: Any) -> None:
        status.append(await _main(reactor, args, failpoint))

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code)
    return status[0] if status else 1


if __name__ == "__main__":
    sys.exit(main())
