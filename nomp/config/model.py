"""The configuration as frozen dataclasses: one per section.

Field names are the YAML keys. Durations are in seconds, difficulties are
Stratum difficulties (for Ethereum-family pools: hashes, a share of
difficulty d meeting the target 2^256 / d), percentages are of the block
reward, Ethereum amounts are in wei.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Literal

from nomp.config.schema import (
    Network,
    at_most_bytes,
    between,
    checked,
    endpoint,
    hex_word,
    http_url,
    ip_networks,
    non_empty,
    non_negative,
    parsed,
    port_number,
    positive,
)
from nomp.hashing import ALGORITHMS, Algorithm

MAX_SIGNATURE_BYTES = 64  # the coinbase scriptSig is at most 100 bytes in all
MAX_COIN_DECIMALS = 18  # the Ethereum family's (wei); a coin file giving more is taken for a mistake
# A coin file with one of these algorithms is an EthCoinConfig, its pools EthPoolConfigs.
ETH_ALGORITHMS = frozenset({"ethash", "etchash"})


@dataclass(frozen=True, slots=True)
class SentinelAddress:
    """One Redis Sentinel the pool asks which server is the primary."""

    host: str = checked(non_empty)
    port: int = checked(port_number, 26379)


JOURNAL_TIMEOUT = 5.0  # seconds a payout journal entry waits for its replicas, by default


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """The Redis server shares, blocks and balances live in: at ``host`` and ``port``,
    or the primary the ``sentinels`` name for ``master_name`` (then host and port are
    not given: nomp.config.load refuses them, see ``address_keys``).

    ``password`` is the data servers'; ``sentinel_password`` the Sentinels' own.
    ``journal_replicas``: how many replicas must have a payout journal entry (Redis
    WAIT, for ``journal_timeout`` seconds) before money is sent; by default 1 with
    Sentinels, 0 (no wait) without.
    """

    host: str = "127.0.0.1"
    port: int = checked(port_number, 6379)
    password: str | None = None
    db: int = checked(non_negative, 0)
    sentinels: tuple[SentinelAddress, ...] | None = checked(non_empty, None)
    master_name: str | None = checked(non_empty, None)
    sentinel_password: str | None = None
    journal_replicas: int | None = checked(non_negative, None)
    journal_timeout: float = checked(positive, JOURNAL_TIMEOUT)

    # The keys that name one server, which a section naming Sentinels may not give.
    address_keys = ("host", "port")

    @property
    def journal_replicas_required(self) -> int:
        if self.journal_replicas is not None:
            return self.journal_replicas
        return 0 if self.sentinels is None else 1

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.sentinels is None:
            for key in ("master_name", "sentinel_password"):
                if getattr(self, key) is not None:
                    found.append((key, "only with sentinels"))
            return found
        if self.master_name is None:
            found.append(("master_name", "missing: the name the Sentinels watch the primary under"))
        seen: dict[tuple[str, int], int] = {}
        for i, sentinel in enumerate(self.sentinels):
            address = (sentinel.host, sentinel.port)
            if address in seen:
                found.append((f"sentinels[{i}]", f"the same Sentinel as sentinels[{seen[address]}]"))
            seen.setdefault(address, i)
        return found


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Where log events go and from which level."""

    level: Literal["debug", "info", "warn", "error", "critical"] = "info"
    format: Literal["text", "json"] = "text"
    file: str | None = None  # None: standard output


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """The admin control port (blocknotify and friends).

    ``token_file``: a file holding a shared secret (mode 0600 or 0400, owned
    by the pool's user; a relative path is from the process's working
    directory); when set, each connection's first line must be ``auth <token>``.
    """

    listen: str = checked(endpoint, "tcp:17117:interface=127.0.0.1")
    token_file: str | None = checked(lambda v: "must be a file path" if not v or "\0" in v else None, None)


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The HTTP API."""

    enabled: bool = True
    listen: str = checked(endpoint, "tcp:8080:interface=127.0.0.1")
    stats_interval: float = checked(positive, 15.0)  # seconds between reads of the pools' stats
    history_retention: float = checked(positive, 86400.0)  # seconds of stats history kept
    max_live_clients: int = checked(positive, 1000)  # open /api/live_stats streams at most


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """At most ``count`` events from one IP within ``window`` seconds; one more breaks the limit."""

    count: int = checked(non_negative)
    window: float = checked(positive)


@dataclass(frozen=True, slots=True)
class BanningConfig:
    """Bans of misbehaving IPs and limits on connections, per pool.

    ``enabled: false`` turns off the bans (invalid shares, malformed
    messages, failed authorizations) but not the connection limits.
    """

    enabled: bool = True
    time: float = checked(positive, 600.0)  # how long a ban lasts
    invalid_percent: float = checked(between(0, 100), 50.0)
    check_threshold: int = checked(positive, 500)  # shares within invalid_window before the ratio counts
    invalid_window: float = checked(positive, 600.0)  # seconds of shares the ratio is taken over
    malformed: RateLimitConfig | None = RateLimitConfig(count=20, window=60.0)
    failed_auth: RateLimitConfig | None = RateLimitConfig(count=20, window=60.0)
    connections_per_ip: int | None = checked(non_negative, None)  # None: no limit
    connections_total: int | None = checked(non_negative, None)  # per pool; None: no limit
    connect_rate: RateLimitConfig | None = None  # connection attempts per IP
    whitelist: tuple[Network, ...] = parsed(tuple[str, ...], ip_networks, ())  # never banned or limited
    purge_interval: float = checked(positive, 300.0)  # seconds between sweeps of ended bans
    sync_interval: float = checked(positive, 10.0)  # seconds between reads of the shared ban list


@dataclass(frozen=True, slots=True)
class VardiffConfig:
    """Variable difficulty for one port."""

    min_diff: float = checked(positive)
    max_diff: float = checked(positive)
    target_time: float = checked(positive)
    retarget_time: float = checked(positive)
    variance_percent: float = checked(between(0, 100))
    x2_mode: bool = False

    def problems(self) -> list[tuple[str, str]]:
        return [("max_diff", "must be >= min_diff")] if self.max_diff < self.min_diff else []


@dataclass(frozen=True, slots=True)
class PortConfig:
    """One listening endpoint: Stratum, or (Ethereum-family pools) HTTP getwork."""

    listen: str = checked(endpoint)  # a Twisted endpoint, e.g. tcp:3333:interface=0.0.0.0
    diff: float = checked(positive)
    vardiff: VardiffConfig | None = None
    solo: bool = False  # blocks found here go whole to their finder, whatever the pool's scheme
    # Proxies (IPs or networks) allowed to connect; non-empty: every
    # connection must start with a PROXY protocol header (v1 or v2).
    proxy_protocol: tuple[Network, ...] = parsed(tuple[str, ...], ip_networks, ())
    # An Ethereum-family pool's stratum port tells eth-proxy and NiceHash
    # EthereumStratum/1.0.0 apart per connection; getwork is HTTP.
    protocol: Literal["stratum", "getwork"] = "stratum"
    max_body: int = checked(positive, 1024)  # getwork: the largest request body, in bytes

    def problems(self) -> list[tuple[str, str]]:
        if self.protocol == "getwork" and self.proxy_protocol:
            return [("proxy_protocol", "is for stratum ports, not getwork ones")]
        return []


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """A coin daemon's JSON-RPC endpoint."""

    url: str = checked(http_url)
    user: str = ""
    password: str = ""
    timeout: float = checked(positive, 30.0)


@dataclass(frozen=True, slots=True)
class RecipientConfig:
    """A fixed share of every block reward, paid in the coinbase."""

    address: str = checked(non_empty)
    percent: Decimal = checked(between(0, 100))


def _coin_amount(value: Decimal) -> str | None:
    """Coins with at most 8 decimals (whole satoshis), more than zero."""
    if value <= 0:
        return "must be > 0"
    if value != value.quantize(Decimal("0.00000001")):
        return "must have at most 8 decimals"
    return None


@dataclass(frozen=True, slots=True)
class PaymentsConfig:
    """Block maturity, reward scheme and payouts of one pool."""

    enabled: bool = False
    interval: float = checked(positive, 120.0)  # seconds between payment runs
    scheme: Literal["prop", "pplns", "solo"] = "prop"
    # PPLNS: the window is the last ``pplns_window`` difficulty-1 shares before
    # the block (a share of difficulty 8 counts 8), across round boundaries.
    pplns_window: float = checked(positive, 100_000.0)
    fee_percent: Decimal = checked(lambda v: None if 0 <= v < 100 else "must be >= 0 and < 100", Decimal(0))
    minimum_payment: Decimal = checked(_coin_amount, Decimal("0.01"))  # coins
    transaction_fee: Literal["pool", "miners"] = "pool"  # who pays sendmany's fee
    orphan_depth: int = checked(positive, 6)  # blocks above an off-chain block before it is orphaned
    daemon: DaemonConfig | None = None  # the wallet; None: the pool's first daemon
    lock_timeout: float = checked(positive, 600.0)  # a crashed run's lock frees itself after this
    unknown_send_grace: float = checked(positive, 600.0)  # see README: an unanswered sendmany


@dataclass(frozen=True, slots=True)
class PoolDefaults:
    """Pool settings ``config.yaml`` may give for every pool."""

    block_refresh_interval: float = checked(positive, 1.0)
    job_rebroadcast_timeout: float = checked(non_negative, 55.0)  # 0: never
    connection_timeout: float = checked(positive, 600.0)
    pool_signature: str = checked(at_most_bytes(MAX_SIGNATURE_BYTES), "/nomp/")
    banning: BanningConfig = field(default_factory=BanningConfig)


POOL_DEFAULT_KEYS = frozenset(PoolDefaults.__dataclass_fields__)


def _switch_algorithm(name: str) -> str | None:
    if name in ETH_ALGORITHMS:
        return f"{name} is an Ethereum-family algorithm: only Bitcoin-family pools switch"
    if name not in ALGORITHMS:
        return f"unknown algorithm {name!r} (known: {', '.join(sorted(ALGORITHMS))})"
    return None


@dataclass(frozen=True, slots=True)
class SwitchConfig:
    """One switch of config.yaml's ``switching``: Stratum ports whose miners
    mine for one of ``pools`` at a time (the first until told otherwise),
    moved between them without reconnecting (nomp.switching).

    ``banning`` and ``connection_timeout`` hold for the switch's ports; None:
    ``pool_defaults``'.
    """

    algorithm: str = checked(_switch_algorithm)
    pools: tuple[str, ...] = checked(lambda v: None if len(v) >= 2 else "must name at least two pools")
    ports: tuple[PortConfig, ...] = checked(non_empty)
    banning: BanningConfig | None = None
    connection_timeout: float | None = checked(positive, None)

    def problems(self) -> list[tuple[str, str]]:
        found = [
            (f"pools[{i}]", f"{name!r} is named twice")
            for i, name in enumerate(self.pools)
            if name in self.pools[:i]
        ]
        found += [
            (f"ports[{i}].protocol", "getwork is for Ethereum-family pools")
            for i, port in enumerate(self.ports)
            if port.protocol == "getwork"
        ]
        return found


MAX_WORKERS = 256  # worker processes: one instance byte each


def _file_path(value: str) -> str | None:
    return "must be a file path" if not value or "\0" in value else None


def _price_path(value: str) -> str | None:
    """Dotted keys, none empty, with ``{symbol}`` exactly once (nomp.switching.prices reads them)."""
    if any(not key for key in value.split(".")):
        return "must be keys separated by dots, none empty, e.g. data.{symbol}.price"
    if value.count("{symbol}") != 1:
        return "must hold {symbol} exactly once, where each coin's symbol goes"
    return None


@dataclass(frozen=True, slots=True)
class HTTPPricesConfig:
    """Prices from an HTTP endpoint answering JSON."""

    url: str = checked(http_url)
    timeout: float = checked(positive, 10.0)  # seconds for the whole exchange


@dataclass(frozen=True, slots=True)
class PricesConfig:
    """Where profit switching finds each coin's price: ``http`` or ``file`` (one of them).

    ``path``: the keys down to a price in the JSON document, ``{symbol}`` in
    one of them; ``names``: a coin symbol's key in the source where it is not
    the symbol itself; ``unit``: what a price is in (for display).
    """

    http: HTTPPricesConfig | None = None
    file: str | None = checked(_file_path, None)  # read again at every interval
    path: str = checked(_price_path, "{symbol}")
    names: dict[str, str] = field(default_factory=dict)
    unit: str = checked(non_empty, "USD")
    max_bytes: int = checked(positive, 1024 * 1024)  # the largest document read

    def problems(self) -> list[tuple[str, str]]:
        if self.http is None and self.file is None:
            return [("http", "missing: give http (an endpoint) or file")]
        if self.http is not None and self.file is not None:
            return [("file", "not with http: give one price source")]
        return []


@dataclass(frozen=True, slots=True)
class ProfitSwitchingConfig:
    """Switching each switch to its most profitable pool (nomp.switching.profitservice).

    Every ``interval`` seconds each switch's pools are ranked by expected
    revenue; the best is switched to when it earns more than ``1 +
    hysteresis`` times what the current one earns and the current one has
    been current for ``minimum_stay`` seconds. A pool whose latest block
    template is older than ``max_template_age`` seconds is not ranked.
    """

    prices: PricesConfig
    interval: float = checked(positive, 60.0)
    hysteresis: Decimal = checked(lambda v: None if v >= 0 else "must be >= 0", Decimal("0.05"))  # exact
    minimum_stay: float = checked(non_negative, 600.0)
    max_template_age: float = checked(positive, 120.0)


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    """``config.yaml``."""

    coins: str = checked(  # the coin files' folder, relative to the conf folder
        lambda v: "must not contain a NUL character" if "\0" in v else None, "../coins"
    )
    threads: int | None = checked(positive, None)  # hashing threads; None: one per CPU
    # The first byte of every extranonce1 this process hands out, so pool
    # processes sharing one Redis never hand out the same one. None: a free
    # one is leased from Redis at start.
    instance: int | None = checked(lambda v: None if 0 <= v <= 255 else "must be 0-255", None)
    # Where a process without ``instance`` keeps the byte it last leased, so
    # it starts with it while Redis is away (one file per process). None: a
    # byte chosen at random.
    instance_state: str | None = checked(
        lambda v: "must be a file path" if not v or "\0" in v else None, None
    )
    # At a stop, how long the Stratum miners asked to reconnect
    # (client.reconnect) have to leave before the ones left are closed; they
    # find the new process on a listening socket that outlives this one
    # (systemd's). 0: no one is asked, every connection closes at once.
    drain_seconds: float = checked(non_negative, 5.0)
    # Processes serving the Stratum ports. 1: this process serves them;
    # more: it keeps the control port, web and payments, and supervises
    # that many worker processes, each on every Stratum port with an
    # instance byte of its own (so at most 256 of them).
    workers: int = checked(lambda v: None if 1 <= v <= MAX_WORKERS else f"must be 1-{MAX_WORKERS}", 1)
    redis: RedisConfig = field(default_factory=RedisConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    web: WebConfig = field(default_factory=WebConfig)
    pool_defaults: PoolDefaults = field(default_factory=PoolDefaults)
    switching: dict[str, SwitchConfig] = field(default_factory=dict)  # by switch name
    profit_switching: ProfitSwitchingConfig | None = None  # None: no profit switching

    def problems(self) -> list[tuple[str, str]]:
        if self.workers > 1 and self.instance is not None:
            # One byte cannot be every worker's: each leases its own.
            return [("instance", "must be null with workers > 1: each worker leases its own byte")]
        return []


def network_magic(value: str) -> bytes:
    """Eight hex digits: a network's four message-start bytes, in wire order."""
    if len(value) == 8 and all(c in "0123456789abcdefABCDEF" for c in value):
        return bytes.fromhex(value)
    raise ValueError("must be eight hex digits, the message-start bytes in wire order, e.g. fbc0b6db")


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """How a coin's network names itself, its addresses and its P2P messages."""

    chain: str = checked(non_empty)  # as getblockchaininfo says: main, test, regtest
    pubkey_address_prefix: int = checked(lambda v: None if 0 <= v <= 255 else "must be 0-255")
    script_address_prefixes: tuple[int, ...] = checked(
        lambda v: None if v and all(0 <= p <= 255 for p in v) else "must be a non-empty list of 0-255"
    )
    bech32_hrp: str | None = None
    mweb_hrp: str | None = None
    # The four bytes every P2P message starts with (pchMessageStart), as hex in
    # wire order: litecoin main fbc0b6db, test fdd2c8f1, regtest fabfb5da.
    p2p_magic: bytes | None = parsed(str, network_magic, None)


@dataclass(frozen=True, slots=True)
class TransactionOptions:
    """How the coinbase transaction is built."""

    version: int = checked(lambda v: None if 1 <= v <= 0x7FFFFFFF else "must be 1-2147483647", 2)


def _algorithm(name: str) -> Algorithm:
    """The algorithm of that name."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        known = ", ".join(sorted({*ALGORITHMS, *ETH_ALGORITHMS}))
        raise ValueError(f"unknown algorithm {name!r} (known: {known})") from None


@dataclass(frozen=True, slots=True)
class CoinConfig:
    """``coins/<name>.yaml``."""

    network: NetworkConfig
    name: str = checked(non_empty)  # also the Redis key prefix of its pool
    symbol: str = checked(non_empty)
    # Read as its name. (parsed builds a field, as dataclasses.field does: RUF009 does not apply.)
    algorithm: Algorithm = parsed(str, _algorithm, check=non_empty)  # noqa: RUF009
    gbt_rules: tuple[str, ...] = ("segwit",)
    transactions: TransactionOptions = field(default_factory=TransactionOptions)
    block_time: float = checked(positive, 600.0)
    coinbase_maturity: int = checked(positive, 100)
    # A whole coin is 10^decimals base units (coinbasevalue's unit): what profit
    # switching divides a block's reward by. Bitcoin and Litecoin have 8.
    decimals: int = checked(
        lambda v: None if 0 <= v <= MAX_COIN_DECIMALS else f"must be 0-{MAX_COIN_DECIMALS}", 8
    )


@dataclass(frozen=True, slots=True)
class P2PConfig:
    """The coin daemon's P2P port, where the pool listens as a peer for new blocks."""

    port: int = checked(port_number)
    enabled: bool = True
    host: str = checked(non_empty, "127.0.0.1")
    magic: bytes | None = parsed(str, network_magic, None)  # None: the coin file's network.p2p_magic
    disable_transactions: bool = True  # BIP37 relay off: the node announces no transactions


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """``pools/<name>.yaml``: one coin's pool."""

    name: str  # the file's stem
    file: str  # where it came from, for messages
    coin: CoinConfig
    address: str = checked(non_empty)
    daemons: tuple[DaemonConfig, ...] = checked(non_empty)
    ports: tuple[PortConfig, ...] = checked(non_empty)
    enabled: bool = True
    reward_recipients: tuple[RecipientConfig, ...] = ()
    block_refresh_interval: float = checked(positive, 1.0)
    job_rebroadcast_timeout: float = checked(non_negative, 55.0)  # 0: never
    connection_timeout: float = checked(positive, 600.0)
    pool_signature: str = checked(at_most_bytes(MAX_SIGNATURE_BYTES), "/nomp/")
    banning: BanningConfig = field(default_factory=BanningConfig)
    usernames: Literal["address", "any"] = "address"  # what mining.authorize accepts
    hashrate_window: float = checked(positive, 300.0)  # seconds of shares in the hashrate
    payments: PaymentsConfig = field(default_factory=PaymentsConfig)
    # BIP310: header version bits miners may roll; read as eight hex digits.
    version_mask: int = parsed(str, hex_word, 0x1FFFE000)
    p2p: P2PConfig | None = None  # None: new blocks are heard of by polling and blocknotify only

    @property
    def p2p_magic(self) -> bytes | None:
        """The network magic the P2P listener uses: the pool's own, else its coin's."""
        if self.p2p is not None and self.p2p.magic is not None:
            return self.p2p.magic
        return self.coin.network.p2p_magic

    def problems(self) -> list[tuple[str, str]]:
        found = [
            (f"ports[{i}].protocol", "getwork is for Ethereum-family pools")
            for i, port in enumerate(self.ports)
            if port.protocol == "getwork"
        ]
        if self.p2p is not None and self.p2p.enabled and self.p2p_magic is None:
            found.append(
                ("p2p.magic", f"missing: coin {self.coin.name} has no network.p2p_magic to listen with")
            )
        total = sum(r.percent for r in self.reward_recipients)
        if total >= 100:
            found.append(("reward_recipients", f"percentages add up to {total}, must be below 100"))
        return found


@dataclass(frozen=True, slots=True)
class RewardStep:
    """From block ``from_block`` on, a block's base reward is ``wei``."""

    from_block: int = checked(non_negative)
    wei: int = checked(positive)


# The Ethereum family's unlocker depths (nomp.payments.ethunlock uses them).
UNCLE_WINDOW = 6  # an uncle is 1 to 6 blocks below the block that includes it

# OEP refuses to start below these (its unlocker's immatureDepth and depth).
MIN_IMMATURE_DEPTH = 16
MIN_DEPTH = 32
DEFAULT_IMMATURE_DEPTH = 20  # OEP's example configuration
DEFAULT_DEPTH = 120
# Blocks above the last possible nephew before a candidate found nowhere is
# an orphan: each of the six nephews then has that many blocks on top of it.
DEFAULT_ORPHAN_SAFETY = 6


def maturity_problems(immature_depth: int, depth: int, orphan_safety: int) -> list[tuple[str, str]]:
    """What is wrong with these settings, as (field, message) pairs.

    OEP's own minimums (16 and 32), and: ``depth`` above ``immature_depth``,
    so a block is checked again after a gap before its credit is final; and
    ``immature_depth`` at least the uncle window plus ``orphan_safety``, so a
    candidate due for its first look is always decided.
    """
    found = []
    if immature_depth < MIN_IMMATURE_DEPTH:
        found.append(("immature_depth", f"must be >= {MIN_IMMATURE_DEPTH}"))
    if depth < MIN_DEPTH:
        found.append(("depth", f"must be >= {MIN_DEPTH}"))
    if depth <= immature_depth:
        found.append(("depth", f"must be above immature_depth ({immature_depth})"))
    if orphan_safety < 1:
        found.append(("orphan_safety", "must be >= 1"))
    elif immature_depth < UNCLE_WINDOW + orphan_safety:
        found.append(
            (
                "orphan_safety",
                f"must be at most immature_depth - {UNCLE_WINDOW} ({immature_depth - UNCLE_WINDOW})",
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class EthRewards:
    """An Ethereum-family chain's block, uncle and nephew rewards, in wei.

    ``schedule`` gives the base reward by height (its forks). With
    ``era_length`` (ECIP-1017) the base reward shrinks by a fifth each era,
    era = (block - 1) // era_length. ``uncle_rule`` "ethereum" pays an uncle
    (uncle + 8 - block) / 8 of the base reward; "ecip1017" does so in era 0
    and pays 1/32 of the era's reward from era 1 on.
    """

    schedule: tuple[RewardStep, ...] = checked(non_empty)
    era_length: int | None = checked(positive, None)
    uncle_rule: Literal["ethereum", "ecip1017"] = "ethereum"

    def problems(self) -> list[tuple[str, str]]:
        if self.schedule[0].from_block != 0:
            return [("schedule[0].from_block", "must be 0: the first step covers every block from genesis")]
        return [
            (f"schedule[{i}].from_block", f"must be above schedule[{i - 1}]'s ({before.from_block})")
            for i, (before, step) in enumerate(pairwise(self.schedule), 1)
            if step.from_block <= before.from_block
        ]

    def era(self, height: int) -> int:
        """The ECIP-1017 era of block ``height`` (0 without eras)."""
        if self.era_length is None:
            return 0
        return max(height - 1, 0) // self.era_length

    def block_reward(self, height: int) -> int:
        """The reward of the block at ``height`` to its miner, without nephew rewards or fees."""
        if height < 0:
            raise ValueError(f"no block at height {height}")
        base = next(s.wei for s in reversed(self.schedule) if s.from_block <= height)
        era = self.era(height)
        return int(base * 4**era // 5**era)  # int(): to mypy a power with a variable exponent is Any

    def uncle_reward(self, height: int, uncle_height: int) -> int:
        """The reward of an uncle at ``uncle_height`` included in the block at ``height``."""
        depth = height - uncle_height
        if not 1 <= depth <= 7:
            raise ValueError(f"an uncle is 1 to 7 blocks below its nephew, not {depth}")
        reward = self.block_reward(height)
        if self.uncle_rule == "ecip1017" and self.era(height) > 0:
            return reward // 32
        return (8 - depth) * reward // 8

    def nephew_reward(self, height: int) -> int:
        """What the block at ``height`` earns for each uncle it includes."""
        return self.block_reward(height) // 32


def eth_address(value: str) -> str | None:
    """0x and 40 hex digits, in either case."""
    digits = value[2:]
    if value.startswith("0x") and len(digits) == 40 and all(c in "0123456789abcdefABCDEF" for c in digits):
        return None
    return "must be an address: 0x and 40 hex digits"


@dataclass(frozen=True, slots=True)
class EthCoinConfig:
    """``coins/<name>.yaml`` of an Ethereum-family coin (``algorithm`` ethash or etchash)."""

    algorithm: Literal["ethash", "etchash"]
    rewards: EthRewards
    name: str = checked(non_empty)  # also the Redis key prefix of its pool
    symbol: str = checked(non_empty)
    chain_id: int = checked(positive)  # checked against the node's eth_chainId at start
    # etchash: the block from which epochs are 60,000 blocks long (ECIP-1099).
    ecip1099_block: int | None = checked(non_negative, None)
    block_time: float = checked(positive, 13.0)

    def problems(self) -> list[tuple[str, str]]:
        if self.algorithm == "etchash" and self.ecip1099_block is None:
            return [("ecip1099_block", "missing: etchash needs its activation block")]
        if self.algorithm == "ethash" and self.ecip1099_block is not None:
            return [("ecip1099_block", "is for etchash coins only")]
        return []


def _scaled(value: Decimal, decimals: int) -> Fraction:
    """``value`` * 10^decimals, exact at any size (Decimal's own arithmetic rounds to 28 digits)."""
    numerator, denominator = value.as_integer_ratio()
    return Fraction(numerator * 10**decimals, denominator)


def _whole_units(value: Decimal, decimals: int, unit: str) -> str | None:
    if _scaled(value, decimals).denominator != 1:
        return f"must have at most {decimals} decimals (whole {unit})"
    return None


def _ether_amount(value: Decimal) -> str | None:
    """Ether, more than zero, in whole wei."""
    return "must be > 0" if value <= 0 else _whole_units(value, 18, "wei")


def _gwei_amount(value: Decimal) -> str | None:
    """Gwei, more than zero, in whole wei."""
    return "must be > 0" if value <= 0 else _whole_units(value, 9, "wei")


def _gwei_amount_or_zero(value: Decimal) -> str | None:
    return "must be >= 0" if value < 0 else _whole_units(value, 9, "wei")


MAX_PPLNS_WINDOW = 2**53  # the recorder's Lua sums the window in doubles


def _pplns_window(value: int) -> str | None:
    if not 0 <= value <= MAX_PPLNS_WINDOW:
        return f"must be > 0 and at most {MAX_PPLNS_WINDOW} hashes"
    return None


@dataclass(frozen=True, slots=True)
class EthPaymentsConfig:
    """Block maturity and reward crediting of an Ethereum-family pool (its unlocker).

    A candidate is looked for on the chain once it has ``immature_depth``
    confirmations (a block, an uncle, or, past the uncle window and
    ``orphan_safety`` more blocks, an orphan) and its credit is final at
    ``depth``.
    """

    enabled: bool = False
    interval: float = checked(positive, 600.0)  # seconds between unlocker runs
    scheme: Literal["prop", "pplns", "solo"] = "prop"
    # PPLNS: the window is the last ``pplns_window`` hashes of shares before the
    # block (a share of difficulty 4e9 counts 4e9), across round boundaries;
    # twice the network difficulty is a usual choice. Windows up to 2^53
    # split exactly (Lua's numbers).
    pplns_window: int = checked(_pplns_window, 0)
    fee_percent: Decimal = checked(lambda v: None if 0 <= v < 100 else "must be >= 0 and < 100", Decimal(0))
    immature_depth: int = DEFAULT_IMMATURE_DEPTH
    depth: int = DEFAULT_DEPTH
    orphan_safety: int = DEFAULT_ORPHAN_SAFETY
    keep_tx_fees: bool = False  # a block's transaction fees go to the pool, not its round
    daemon: DaemonConfig | None = None  # the node asked; None: the pool's first
    lock_timeout: float = checked(positive, 600.0)  # a crashed run's lock frees itself after this
    # The payer (nomp.payments.ethpayer), each ``interval`` after the unlocker.
    # The payout key's file: 64 hex digits, owned by the pool's user, mode
    # 0600 or 0400 (a relative path is from the process's working directory).
    key_file: str | None = checked(lambda v: "must be a file path" if not v or "\0" in v else None, None)
    minimum_payment: Decimal = checked(_ether_amount, Decimal("0.5"))  # ether; a balance this high is paid
    gas_pricing: Literal["legacy", "dynamic"] = "legacy"  # dynamic: EIP-1559 transactions
    max_gas_price_gwei: Decimal = checked(_gwei_amount, Decimal(100))  # no payout while gas costs more
    priority_fee_gwei: Decimal = checked(_gwei_amount_or_zero, Decimal(1))  # dynamic: the tip per gas
    transaction_fee: Literal["pool", "miners"] = "pool"  # miners: the fee's ceiling comes off each payout
    require_peers: int = checked(non_negative, 1)  # no payout while the node has fewer peers (0: any)

    @property
    def minimum_payment_wei(self) -> int:
        return int(_scaled(self.minimum_payment, 18))

    @property
    def max_gas_price_wei(self) -> int:
        return int(_scaled(self.max_gas_price_gwei, 9))

    @property
    def priority_fee_wei(self) -> int:
        return int(_scaled(self.priority_fee_gwei, 9))

    def problems(self) -> list[tuple[str, str]]:
        found = maturity_problems(self.immature_depth, self.depth, self.orphan_safety)
        if self.scheme == "pplns" and self.pplns_window == 0:
            found.append(("pplns_window", "missing: scheme pplns needs a window in hashes"))
        if self.enabled and self.key_file is None:
            found.append(("key_file", "missing: the payer signs with the pool's payout key"))
        if self.priority_fee_gwei > self.max_gas_price_gwei:
            found.append(
                ("priority_fee_gwei", f"must be at most max_gas_price_gwei ({self.max_gas_price_gwei})")
            )
        return found


@dataclass(frozen=True, slots=True)
class EthPoolConfig:
    """``pools/<name>.yaml`` of a pool whose coin is an EthCoinConfig."""

    name: str  # the file's stem
    file: str  # where it came from, for messages
    coin: EthCoinConfig
    address: str = checked(eth_address)  # the pool's wallet
    daemons: tuple[DaemonConfig, ...] = checked(non_empty)  # the first healthy one is used
    ports: tuple[PortConfig, ...] = checked(non_empty)
    enabled: bool = True
    block_refresh_interval: float = checked(positive, 0.5)  # seconds between eth_getWork polls
    upstream_check_interval: float = checked(positive, 5.0)
    state_update_interval: float = checked(positive, 3.0)  # the node heartbeat in Redis
    # Work of this many latest heights is still accepted (1: the current one only).
    stale_heights: int = checked(lambda v: None if v >= 1 else "must be >= 1", 3)
    connection_timeout: float = checked(positive, 600.0)
    banning: BanningConfig = field(default_factory=BanningConfig)
    usernames: Literal["address", "any"] = "address"  # what a login may be
    hashrate_window: float = checked(positive, 300.0)  # seconds of shares in the hashrate
    hashrate_expiration: float = checked(positive, 10800.0)  # TTL of a login's hashrate set
    node_name: str = checked(non_empty, "main")  # this process's name in <coin>:nodes
    dataset: bool = False  # keep the full ethash dataset in memory (GiBs) for faster checks
    payments: EthPaymentsConfig = field(default_factory=EthPaymentsConfig)


# The pool_defaults that apply to Ethereum-family pools too; the others
# (block_refresh_interval above all, whose Bitcoin default is 1 s) do not.
ETH_POOL_DEFAULT_KEYS = frozenset({"connection_timeout", "banning"})


@dataclass(frozen=True, slots=True)
class Config:
    """Everything, as read from one conf folder."""

    directory: Path
    settings: GlobalConfig
    pools: tuple[PoolConfig, ...]  # the enabled Bitcoin-family ones
    eth_pools: tuple[EthPoolConfig, ...] = ()  # the enabled Ethereum-family ones
