"""Read a conf folder: files, YAML, cross-file rules."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nomp.config.errors import ErrorLog
from nomp.config.model import (
    ETH_ALGORITHMS,
    ETH_POOL_DEFAULT_KEYS,
    POOL_DEFAULT_KEYS,
    CoinConfig,
    Config,
    EthCoinConfig,
    EthPoolConfig,
    GlobalConfig,
    PoolConfig,
    PoolDefaults,
    RedisConfig,
    SwitchConfig,
)
from nomp.config.schema import Reader

_WILDCARD_INTERFACES = {"", "0.0.0.0", "::"}


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that reports a key given twice instead of keeping the last."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # a merge key (<<): construct_mapping merges it as SafeLoader does
        key = loader.construct_object(key_node)
        try:
            given = key in seen
        except TypeError:
            continue  # unhashable: construct_mapping reports it
        if given:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _read_yaml(path: Path, shown: str, errors: ErrorLog) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        errors.add(shown, "", f"cannot read: {e.strerror}")
        return None
    except UnicodeDecodeError:
        errors.add(shown, "", "not UTF-8 text")
        return None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.reader.ReaderError as e:  # its str() spans lines and names no file
        line = text.count("\n", 0, e.position) + 1
        column = e.position - text.rfind("\n", 0, e.position)
        errors.add(
            shown,
            "",
            f"invalid YAML: line {line} column {column}: "
            f"unacceptable character #x{e.character:04x}: {e.reason}",
        )
        return None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        errors.add(shown, "", f"invalid YAML: {where}{e.problem or e.context}")
        return None
    except yaml.YAMLError as e:
        errors.add(shown, "", f"invalid YAML: {e}")
        return None
    return {} if data is None else data


def load_config(directory: str | os.PathLike[str]) -> Config:
    """Read and check a whole conf folder; raises ConfigErrors listing every problem."""
    conf = Path(directory)
    errors = ErrorLog()
    if not conf.is_dir():
        errors.add(str(conf), "", "not a folder")
        errors.raise_if_any()

    settings = GlobalConfig()
    data: Any = None
    if (conf / "config.yaml").exists():
        data = _read_yaml(conf / "config.yaml", "config.yaml", errors)
        if data is not None:
            settings = Reader("config.yaml", errors).read(GlobalConfig, data) or _salvage(data)
            _check_redis_address(data, errors)
    else:
        errors.add("config.yaml", "", "missing")

    coins_dir = (conf / settings.coins).resolve()
    coins: dict[str, _Coin] = {}
    pools: list[PoolConfig] = []
    eth_pools: list[EthPoolConfig] = []
    listens = [("control.listen", settings.control.listen)]
    if settings.web.enabled:
        listens.append(("web.listen", settings.web.listen))
    listens += _switch_listens(data)
    claims = [_Claims("config.yaml", None, listens)]
    pool_files = sorted((conf / "pools").glob("*.yaml")) if (conf / "pools").is_dir() else []
    if not pool_files:
        errors.add("pools/", "", "no pool files (pools/*.yaml)")
    for path in pool_files:
        pool = _read_pool(path, settings.pool_defaults, coins_dir, coins, claims, errors)
        if isinstance(pool, EthPoolConfig) and pool.enabled:
            eth_pools.append(pool)
        elif isinstance(pool, PoolConfig) and pool.enabled:
            pools.append(pool)

    _check_conflicts(claims, errors)
    _check_switches(settings.switching, {path.stem for path in pool_files}, pools, eth_pools, errors)
    if settings.profit_switching is not None and not settings.switching:
        errors.add("config.yaml", "profit_switching", "needs a switching section: the switches it moves")
    errors.raise_if_any()
    return Config(directory=conf, settings=settings, pools=tuple(pools), eth_pools=tuple(eth_pools))


def _salvage(data: Any) -> GlobalConfig:
    """The settings of a config.yaml with errors: its valid top-level keys over the
    defaults, so that pools are still read from its coins folder and checked
    against its control port rather than reported against the defaults."""
    settings = GlobalConfig()
    if isinstance(data, Mapping):
        quiet = Reader("config.yaml", ErrorLog())  # its errors are already recorded
        for key in GlobalConfig.__dataclass_fields__:
            part = quiet.read(GlobalConfig, {key: data[key]}) if key in data else None
            if part is not None:
                settings = dataclasses.replace(settings, **{key: getattr(part, key)})
    return settings


def _check_redis_address(data: Any, errors: ErrorLog) -> None:
    """A redis section names one server or the Sentinels, not both. Told from the raw
    data: host and port have defaults, so the section read cannot say they were given."""
    section = data.get("redis") if isinstance(data, Mapping) else None
    if not isinstance(section, Mapping) or section.get("sentinels") is None:
        return
    for key in RedisConfig.address_keys:
        if key in section:
            errors.add("config.yaml", f"redis.{key}", "not with sentinels: the Sentinels name the primary")


@dataclass(frozen=True, slots=True)
class _Claims:
    """What one file wants for itself, taken from its raw data so that a
    conflict is reported even when the rest of the file has errors."""

    file: str
    coin: str | None  # the coin's name: its pool's Redis key prefix
    listens: list[tuple[str, str]]  # (path, endpoint)


@dataclass(frozen=True, slots=True)
class _Coin:
    """A coin file as read: its family's pool class, and the coin if it is valid."""

    pool_class: type[PoolConfig] | type[EthPoolConfig]
    coin: CoinConfig | EthCoinConfig | None


_NO_COIN = _Coin(PoolConfig, None)  # a coin that cannot be read is taken for a Bitcoin-family one


def _read_pool(
    path: Path,
    defaults: PoolDefaults,
    coins_dir: Path,
    coins: dict[str, _Coin],
    claims: list[_Claims],
    errors: ErrorLog,
) -> PoolConfig | EthPoolConfig | None:
    shown = f"pools/{path.name}"
    data = _read_yaml(path, shown, errors)
    if data is None:
        return None
    reader = Reader(shown, errors)
    if not isinstance(data, Mapping):
        reader.error("", "expected a mapping at the top")
        return None
    coin_name = data.get("coin")
    read = _NO_COIN
    if not isinstance(coin_name, str) or not coin_name:
        reader.error("coin", "missing" if coin_name is None else "expected a coin file name")
    else:
        read = _read_coin(coin_name, coins_dir, coins, reader, errors)
    coin = read.coin
    if data.get("enabled", True) is not False:
        ports = data.get("ports")
        listens = [
            (f"ports[{i}].listen", port["listen"])
            for i, port in enumerate(ports if isinstance(ports, list) else [])
            if isinstance(port, Mapping) and isinstance(port.get("listen"), str)
        ]
        claims.append(_Claims(shown, coin.name if coin else None, listens))
    fields = {k: v for k, v in data.items() if k != "coin"}
    keys = ETH_POOL_DEFAULT_KEYS if read.pool_class is EthPoolConfig else POOL_DEFAULT_KEYS
    fallbacks = {key: getattr(defaults, key) for key in keys}
    fixed = {"name": path.stem, "file": shown, "coin": coin}
    pool = reader.read(read.pool_class, fields, fallbacks=fallbacks, fixed=fixed)
    return None if coin is None else pool


def _read_coin(
    name: str,
    coins_dir: Path,
    coins: dict[str, _Coin],
    pool_reader: Reader,
    errors: ErrorLog,
) -> _Coin:
    if "/" in name or "\\" in name or name.startswith("."):
        pool_reader.error("coin", f"{name!r} is not a coin file name")
        return _NO_COIN
    stem = name.removesuffix(".yaml")
    if stem not in coins:
        path = coins_dir / f"{stem}.yaml"
        shown = f"{coins_dir.name}/{stem}.yaml"
        if not path.is_file():
            pool_reader.error("coin", f"no coin file {shown}")
            coins[stem] = _NO_COIN
            return _NO_COIN
        data = _read_yaml(path, shown, errors)
        if data is None:
            coins[stem] = _NO_COIN
        elif isinstance(data, Mapping) and str(data.get("algorithm")) in ETH_ALGORITHMS:
            # The family is known from the raw value, so that a pool of a
            # coin file with errors is still checked as that family's pool.
            coins[stem] = _Coin(EthPoolConfig, Reader(shown, errors).read(EthCoinConfig, data))
        else:
            coins[stem] = _Coin(PoolConfig, Reader(shown, errors).read(CoinConfig, data))
    return coins[stem]


def _switch_listens(data: Any) -> list[tuple[str, str]]:
    """The switches' ports as config.yaml gives them, for the port conflicts
    (from the raw data: a switch with errors still claims its ports)."""
    switching = data.get("switching") if isinstance(data, Mapping) else None
    found = []
    for name, switch in switching.items() if isinstance(switching, Mapping) else ():
        ports = switch.get("ports") if isinstance(switch, Mapping) else None
        for i, port in enumerate(ports if isinstance(ports, list) else []):
            if isinstance(port, Mapping) and isinstance(port.get("listen"), str):
                found.append((f"switching.{name}.ports[{i}].listen", port["listen"]))
    return found


def _check_switches(
    switching: Mapping[str, SwitchConfig],
    pool_files: set[str],
    pools: list[PoolConfig],
    eth_pools: list[EthPoolConfig],
    errors: ErrorLog,
) -> None:
    """Each pool a switch names is an enabled Bitcoin-family pool of the switch's algorithm."""
    bitcoin = {pool.name: pool for pool in pools}
    eth = {pool.name for pool in eth_pools}
    for switch_name, switch in switching.items():
        for i, name in enumerate(switch.pools):
            path = f"switching.{switch_name}.pools[{i}]"
            pool = bitcoin.get(name)
            if name in eth:
                errors.add(
                    "config.yaml",
                    path,
                    f"pool {name} is an Ethereum-family pool: only Bitcoin-family pools switch",
                )
            elif pool is not None and pool.coin.algorithm.name != switch.algorithm:
                errors.add(
                    "config.yaml",
                    path,
                    f"pool {name} mines {pool.coin.algorithm.name}, the switch {switch.algorithm}",
                )
            elif pool is None and name in pool_files:
                errors.add("config.yaml", path, f"pool {name} is not enabled (pools/{name}.yaml)")
            elif pool is None:
                errors.add("config.yaml", path, f"unknown pool {name!r}: no pools/{name}.yaml")


def listen_address(description: str) -> tuple[str, int] | None:
    """(interface, port) a TCP or TLS endpoint binds, or None for others."""
    parts = _split_endpoint(description)
    if not parts or parts[0] not in ("tcp", "tcp6", "ssl"):
        return None
    args = [p for p in parts[1:] if "=" not in p]
    kwargs = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    port = kwargs.get("port", args[0] if args else "")
    try:
        return kwargs.get("interface", ""), int(port)
    except ValueError:
        return None


def _split_endpoint(description: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in description:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _check_conflicts(claims: list[_Claims], errors: ErrorLog) -> None:
    """Two pools may not share a port or a coin (the coin names their Redis keys)."""
    bound: list[tuple[str, str, str, int]] = []  # file, path, interface, port
    coins: dict[str, str] = {}
    for claim in claims:
        for path, description in claim.listens:
            address = listen_address(description)
            if address is None:
                continue
            for file, other_path, interface, number in bound:
                if number == address[1] and (
                    interface == address[0]
                    or interface in _WILDCARD_INTERFACES
                    or address[0] in _WILDCARD_INTERFACES
                ):
                    errors.add(claim.file, path, f"port {number} is also used by {file}: {other_path}")
            bound.append((claim.file, path, *address))
        if claim.coin is not None:
            key = claim.coin.lower()
            if key in coins:
                errors.add(claim.file, "coin", f"{claim.coin} already has a pool in {coins[key]}")
            else:
                coins[key] = claim.file
