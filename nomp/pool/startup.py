"""Getting a pool ready: wait for its daemon, check its chain and addresses."""

from __future__ import annotations

from fractions import Fraction

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nomp.chain.coinbase import PayoutPlan, Recipient
from nomp.config import PoolConfig
from nomp.daemon import DaemonError, DaemonGroup, RPCError
from nomp.daemon.errors import (
    RPC_CLIENT_IN_INITIAL_DOWNLOAD,
    RPC_CLIENT_NOT_CONNECTED,
    RPC_IN_WARMUP,
)

_log = Logger()

# The daemon answers but cannot serve templates yet: wait, then retry.
WAIT_CODES = {
    RPC_CLIENT_NOT_CONNECTED: "has no peers",
    RPC_CLIENT_IN_INITIAL_DOWNLOAD: "is in initial block download",
    RPC_IN_WARMUP: "is starting up",
}
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


class StartupError(Exception):
    """A pool cannot start: wrong chain, unusable address, refused rules."""


async def wait_for_daemon(pool: PoolConfig, daemons: DaemonGroup, clock: IReactorTime) -> None:
    """Return once a daemon serves templates for the pool's chain.

    While no daemon answers, or the one that answers is in initial block
    download, has no peers or is warming up, log why (once per reason) and
    retry. A daemon on another chain, or one refusing the coin's
    getblocktemplate rules, is a StartupError.
    """
    attempt = 0
    last_reason = None
    while True:
        reason = await _not_ready_reason(pool, daemons)
        if reason is None:
            if last_reason is not None:
                _log.info("pool {pool}: daemon ready", pool=pool.name)
            return
        if reason != last_reason:
            _log.warn("pool {pool}: waiting: {reason}", pool=pool.name, reason=reason)
            last_reason = reason
        delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
        attempt += 1
        await task.deferLater(clock, delay)


async def _not_ready_reason(pool: PoolConfig, daemons: DaemonGroup) -> str | None:
    try:
        info = await daemons.chain_info()
        if info.chain != pool.coin.network.chain:
            raise StartupError(
                f"{pool.file}: coin {pool.coin.name} expects chain {pool.coin.network.chain!r}, "
                f"the daemon is on {info.chain!r}"
            )
        if info.initial_block_download:
            return f"the daemon is in initial block download (height {info.blocks})"
        await daemons.get_block_template(pool.coin.gbt_rules)
    except RPCError as e:
        if e.code in WAIT_CODES:
            return f"the daemon {WAIT_CODES[e.code]} ({e.code}: {e.message})"
        if e.method == "getblocktemplate":
            raise StartupError(
                f"{pool.file}: getblocktemplate with rules {list(pool.coin.gbt_rules)} failed: "
                f"{e.code}: {e.message}"
            ) from None
        return f"{e}"
    except DaemonError as e:
        return f"no daemon answers ({e})"
    return None


async def resolve_payouts(pool: PoolConfig, daemons: DaemonGroup) -> PayoutPlan:
    """The coinbase scripts of the pool address and reward recipients.

    The daemon's ``validateaddress`` gives the scriptPubKey, so every
    address type it knows works; an invalid or MWEB address is a StartupError.
    """
    pool_script = await _address_script(pool, daemons, pool.address, "address")
    recipients: list[Recipient] = []
    for i, recipient in enumerate(pool.reward_recipients):
        script = await _address_script(pool, daemons, recipient.address, f"reward_recipients[{i}].address")
        recipients.append(Recipient(script, Fraction(recipient.percent) / 100, recipient.address))
    return PayoutPlan(pool_script, tuple(recipients))


async def _address_script(pool: PoolConfig, daemons: DaemonGroup, address: str, where: str) -> bytes:
    info = await daemons.validate_address(address)
    if not info.valid:
        raise StartupError(f"{pool.file}: {where}: {address} is not a valid {pool.coin.name} address")
    if info.mweb:
        raise StartupError(
            f"{pool.file}: {where}: {address} is an MWEB address; a coinbase cannot pay to MWEB"
        )
    if not info.script:
        raise StartupError(f"{pool.file}: {where}: the daemon gives no script for {address}")
    return info.script
