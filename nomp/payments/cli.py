"""``nomp-payments``: run a pool's payments now, or audit its books.

    nomp-payments -c conf audit litecoin   prints every check; exit 0 when clean
    nomp-payments -c conf run litecoin     one payment run (it takes the same
                                           lock as the pool's own timer)
    nomp-payments -c conf minimum litecoin ADDRESS 0.5
                                           ADDRESS is paid once its balance
                                           reaches 0.5 coins (at least the
                                           pool's minimum_payment); "-" removes it

For an Ethereum-family pool, ``run`` is one unlocker run then one payout
run (each under the lock the pool's own timers take) and ``audit`` checks
OEP's keys against the chain (nomp.payments.ethaudit); both read the pool's
payout key. Its payer has one minimum_payment for every login: ``minimum``
is for the Bitcoin family.

Without a pool name, every pool with payments enabled, of either family.
Exit status 1 when an audit is not clean or a run failed (or found the lock
held), 2 on a configuration error (a payout key file missing or unsafe too).

The answer goes to standard output; warnings and errors logged on the way
go to standard error (``-v``: the info lines too).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from twisted.internet import defer, task
from twisted.logger import globalLogBeginner

from nomp.config import ConfigErrors, EthPoolConfig, LoggingConfig, PoolConfig, load_config
from nomp.daemon.clients import DaemonClients
from nomp.logs import make_observer
from nomp.payments.audit import Audit, audit
from nomp.payments.ethaudit import eth_audit
from nomp.payments.ethledger import EthLedger
from nomp.payments.ethpayer import EthPayer, PayoutReport, payer_daemon, payout_key
from nomp.payments.ethpayledger import EthPayLedger
from nomp.payments.ethsigner import KeyFileError, PayoutKey
from nomp.payments.ethunlocker import EthUnlocker, UnlockReport, unlocker_daemon
from nomp.payments.ledger import PaymentLedger
from nomp.payments.processor import PaymentProcessor, RunReport
from nomp.payments.service import wallet_daemon
from nomp.payments.split import coins, satoshis
from nomp.store.client import RedisUnavailable
from nomp.store.oepschema import OepKeys
from nomp.store.redis import connect_once
from nomp.store.schema import PoolKeys

Failpoint = Callable[[str], None]


async def command(reactor: Any, args: argparse.Namespace, failpoint: Failpoint | None = None) -> int:
    """The command ``args`` (as ``parse_args`` reads them) on ``reactor``; its exit status."""
    try:
        config = load_config(args.config)
    except ConfigErrors as e:
        sys.stderr.write(f"{e}\n")
        return 2
    pools = [p for p in config.pools if p.payments.enabled and args.pool in (None, p.name)]
    eth_pools = [p for p in config.eth_pools if p.payments.enabled and args.pool in (None, p.name)]
    if args.command == "minimum" and eth_pools and args.pool is not None:
        sys.stderr.write(
            f"pool {args.pool} is of the Ethereum family: its payer has one minimum_payment for every "
            "login, set in its pool file\n"
        )
        return 2
    if args.command == "minimum":
        eth_pools = []
    if not pools and not eth_pools:
        sys.stderr.write(f"no pool with payments enabled{' named ' + args.pool if args.pool else ''}" + "\n")
        return 2
    try:
        keys = {pool.name: payout_key(pool) for pool in eth_pools}
    except KeyFileError as e:
        sys.stderr.write(f"{e}\n")
        return 2
    try:  # to the primary the Sentinels name, when config.yaml names Sentinels
        redis = await connect_once(config.settings.redis, reactor)
    except RedisUnavailable as e:
        sys.stderr.write(f"Redis: {e}\n")
        return 1
    # One connection per call: a command leaves nothing open behind it.
    clients = DaemonClients(reactor, persistent=False)
    status = 0
    try:
        for pool in pools:
            status = max(status, await _one(args, pool, redis, clients, failpoint))
        for eth_pool in eth_pools:
            status = max(
                status, await _eth_one(args, eth_pool, keys[eth_pool.name], redis, clients, failpoint)
            )
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
    sys.stdout.write(run_summary(pool, report))
    return 1 if report.error or report.locked_out else 0


def run_summary(pool: PoolConfig, report: RunReport) -> str:
    """The line ``run`` prints for a Bitcoin-family pool (the control port answers it too)."""
    return (
        f"pool {pool.name}: immature {len(report.immature)}, confirmed {len(report.confirmed)}, "
        f"orphaned {len(report.orphaned)}, waiting {len(report.waiting)}, "
        f"paid {sum(report.paid.values())} satoshis to {len(report.paid)} addresses"
        + (f" in {report.txid}" if report.txid else "")
        + (f"; {report.error}" if report.error else "")
        + ("; another run holds the lock" if report.locked_out else "")
        + "\n"
    )


def audit_summary(pool_name: str, result: Audit) -> str:
    """An audit in one line, for the control port: its verdict and the checks that differ."""
    differing = [f"{c.name} differs by {c.difference}" for c in result.checks if c.difference]
    verdict = result.lines()[-1]
    return f"pool {pool_name}: {verdict}" + (": " + "; ".join(differing) if differing else "") + "\n"


def eth_summary(pool: EthPoolConfig, unlocked: UnlockReport, paid: PayoutReport) -> str:
    """The line ``run`` prints for an Ethereum-family pool."""
    return (
        f"pool {pool.name}: immature {len(unlocked.immature)}, matured {len(unlocked.matured)}, "
        f"orphaned {len(unlocked.orphaned)}, waiting {len(unlocked.waiting)}, "
        f"paid {sum(paid.amounts.values())} wei to {len(paid.paid)} logins"
        + (f", {len(paid.given_back)} given back" if paid.given_back else "")
        + (f", {len(paid.failed)} reverted" if paid.failed else "")
        + (f"; unlocker: {unlocked.error}" if unlocked.error else "")
        + (f"; payer: {paid.error}" if paid.error else "")
        + ("; another run holds the lock" if unlocked.locked_out or paid.locked_out else "")
        + "\n"
    )


async def _eth_one(
    args: argparse.Namespace,
    pool: EthPoolConfig,
    key: PayoutKey,
    redis: Any,
    clients: DaemonClients,
    failpoint: Failpoint | None,
) -> int:
    keys = OepKeys.for_coin(pool.coin.name)
    if args.command == "audit":
        result = await eth_audit(pool, redis, clients.rpc(payer_daemon(pool), version="2.0"), key.address)
        sys.stdout.write(f"pool {pool.name}:\n" + "".join(f"  {line}\n" for line in result.lines()))
        return 0 if result.clean else 1
    node = clients.rpc(unlocker_daemon(pool), version="2.0")
    unlocked = await EthUnlocker(pool, EthLedger(redis, keys), node, failpoint=failpoint).run()
    payer_node = clients.rpc(payer_daemon(pool), version="2.0")
    paid = await EthPayer(pool, EthPayLedger(redis, keys), payer_node, key, failpoint=failpoint).run()
    sys.stdout.write(eth_summary(pool, unlocked, paid))
    failed = unlocked.error or paid.error or unlocked.locked_out or paid.locked_out
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nomp-payments", description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", default="conf", help="the conf folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="log info lines too, not only problems")
    parser.add_argument("command", choices=["run", "audit", "minimum"])
    parser.add_argument("pool", nargs="?", help="the pool's name (its file's stem); default: all")
    parser.add_argument("address", nargs="?", help="minimum: the miner's address")
    parser.add_argument("amount", nargs="?", help="minimum: coins, or - to remove")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, failpoint: Failpoint | None = None) -> int:
    """The command; ``failpoint`` is a test seam, passed to the payment runs (see
    PaymentProcessor, EthUnlocker and EthPayer)."""
    args = parse_args(argv)
    log = make_observer(LoggingConfig(level="info" if args.verbose else "warn"), sys.stderr)
    globalLogBeginner.beginLoggingTo([log], redirectStandardIO=False)
    status: list[int] = []

    async def run(reactor: Any) -> None:
        status.append(await command(reactor, args, failpoint))

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code)
    return status[0] if status else 1


if __name__ == "__main__":
    sys.exit(main())
