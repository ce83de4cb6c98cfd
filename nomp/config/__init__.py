"""Configuration: ``conf/config.yaml``, ``conf/pools/*.yaml`` and the coin
files, read once into frozen typed objects."""

from nomp.config.errors import ConfigErrors
from nomp.config.load import load_config
from nomp.config.model import (
    BanningConfig,
    CoinConfig,
    Config,
    ControlConfig,
    DaemonConfig,
    GlobalConfig,
    LoggingConfig,
    NetworkConfig,
    PaymentsConfig,
    PoolConfig,
    PoolDefaults,
    PortConfig,
    RateLimitConfig,
    RecipientConfig,
    RedisConfig,
    TransactionOptions,
    VardiffConfig,
    WebConfig,
)

__all__ = [
    "BanningConfig",
    "CoinConfig",
    "Config",
    "ConfigErrors",
    "ControlConfig",
    "DaemonConfig",
    "GlobalConfig",
    "LoggingConfig",
    "NetworkConfig",
    "PaymentsConfig",
    "PoolConfig",
    "PoolDefaults",
    "PortConfig",
    "RateLimitConfig",
    "RecipientConfig",
    "RedisConfig",
    "TransactionOptions",
    "VardiffConfig",
    "WebConfig",
    "load_config",
]
