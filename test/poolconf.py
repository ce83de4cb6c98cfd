"""Conf folders for tests: the shipped demo conf, pointed at test servers."""

from __future__ import annotations

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
