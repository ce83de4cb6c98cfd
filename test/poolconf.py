"""Conf folders for tests: the shipped demo conf, pointed at test servers."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from test.servers import free_port
from test.test_config_paths import SHIPPED_COINS, SHIPPED_CONF
from test.tlscerts import PoolCertificate


def write_conf(
    folder: Path,
    daemon_url: str,
    rpc_user: str,
    rpc_password: str,
    address: str,
    redis_port: int,
    redis_db: int = 0,
    tls: PoolCertificate | None = None,
    web: dict[str, Any] | None = None,
    **pool: Any,
) -> tuple[Path, int]:
    """A conf folder with one pool on a free Stratum port; (folder, stratum port).

    With ``tls`` the port is an ``ssl:`` endpoint serving that certificate.
    ``pool`` overrides keys of the pool file (``ports`` replaces the list),
    ``web`` keys of config.yaml's web section.
    """
    (folder / "pools").mkdir(parents=True)
    settings = yaml.safe_load((SHIPPED_CONF / "config.yaml").read_text())
    settings["coins"] = str(SHIPPED_COINS)
    settings["control"]["listen"] = f"tcp:{free_port()}:interface=127.0.0.1"
    settings["web"] = {"listen": f"tcp:{free_port()}:interface=127.0.0.1", **(web or {})}
    settings["redis"].update(port=redis_port, db=redis_db)
    settings["logging"]["level"] = "warn"
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    stratum_port = free_port()
    data = yaml.safe_load((SHIPPED_CONF / "pools" / "litecoin.yaml").read_text())
    data["address"] = address
    data["daemons"] = [{"url": daemon_url, "user": rpc_user, "password": rpc_password, "timeout": 10}]
    listen = f"tcp:{stratum_port}:interface=127.0.0.1" if tls is None else tls.listen(stratum_port)
    data["ports"] = [{"listen": listen, "diff": 0.0625}]
    data.update(pool)
    (folder / "pools" / "litecoin.yaml").write_text(yaml.safe_dump(data))
    return folder, stratum_port


@dataclass(frozen=True)
class CoinPool:
    """One pool of a conf folder with several: its pool file's stem, its coin file's
    stem, the node it takes templates from, the address its rewards go to, and keys
    of its pool file to override (``ports`` replaces the list)."""

    name: str
    coin: str
    daemon_url: str
    address: str
    rpc_user: str
    rpc_password: str
    diff: float = 0.0625  # the Stratum port's
    options: Mapping[str, Any] = field(default_factory=dict)


def renamed_coin(shipped: str, name: str, symbol: str) -> dict[str, Any]:
    """The shipped coin file ``shipped`` under another name and symbol: another coin
    to the pool (its Redis keys are prefixed by its name) with the same chain rules."""
    data = yaml.safe_load((SHIPPED_COINS / f"{shipped}.yaml").read_text())
    data.update(name=name, symbol=symbol)
    return dict(data)


def write_pools_conf(
    folder: Path,
    pools: Sequence[CoinPool],
    redis_port: int,
    redis_db: int = 0,
    coins: Mapping[str, Mapping[str, Any]] | None = None,
    web: dict[str, Any] | None = None,
) -> tuple[Path, dict[str, int]]:
    """A conf folder with one pool file per entry of ``pools``, each on a free Stratum
    port; (folder, Stratum port by pool name).

    The folder has a coins folder of its own: the shipped coin files, and ``coins``
    (coin file stem -> its data) beside them.
    """
    (folder / "pools").mkdir(parents=True)
    shutil.copytree(SHIPPED_COINS, folder / "coins")
    for stem, data in (coins or {}).items():
        (folder / "coins" / f"{stem}.yaml").write_text(yaml.safe_dump(dict(data)))
    settings = yaml.safe_load((SHIPPED_CONF / "config.yaml").read_text())
    settings["coins"] = "coins"
    settings["control"]["listen"] = f"tcp:{free_port()}:interface=127.0.0.1"
    settings["web"] = {"listen": f"tcp:{free_port()}:interface=127.0.0.1", **(web or {})}
    settings["redis"].update(port=redis_port, db=redis_db)
    settings["logging"]["level"] = "warn"
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    shipped_pool = yaml.safe_load((SHIPPED_CONF / "pools" / "litecoin.yaml").read_text())
    stratum_ports: dict[str, int] = {}
    for pool in pools:
        port = stratum_ports[pool.name] = free_port()
        data = {
            **shipped_pool,
            "coin": pool.coin,
            "address": pool.address,
            "daemons": [
                {"url": pool.daemon_url, "user": pool.rpc_user, "password": pool.rpc_password, "timeout": 10}
            ],
            "ports": [{"listen": f"tcp:{port}:interface=127.0.0.1", "diff": pool.diff}],
            **pool.options,
        }
        (folder / "pools" / f"{pool.name}.yaml").write_text(yaml.safe_dump(data))
    return folder, stratum_ports
