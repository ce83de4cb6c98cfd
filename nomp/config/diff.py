"""What a reload changes: the running configuration against the one just read. Pure.

``diff_configs(running, read)`` says, for the whole process or one pool,
which pools start, stop or change, what changes live (each as
``path: old -> new``), and what needs a restart. It also gives the
configuration to run after the reload, ``ReloadPlan.running``: the values
read, except where a change needs a restart, where the running values stay,
so that the next reload reports them again until the process restarts.

What needs a restart, and why:

- config.yaml: ``redis`` (every part holds the connection), ``threads``
  (the hashing pool's size), ``instance`` and ``instance_state`` (the
  extranonce1s handed out), ``workers`` (the processes started),
  ``logging.format`` and ``logging.file`` (twistd holds the observer),
  ``control.listen`` (the port this reload may have come through), ``web``
  (its site and pages are built at start) and ``profit_switching`` (its
  service is built at start);
- a pool's ``coin`` (its Redis keys, algorithm and chain), ``usernames``
  and ``version_mask`` (read once by its miners' methods),
  ``hashrate_window``, and ``payments.scheme`` and ``payments.pplns_window``:
  the recorder closes rounds by them in Redis, and the blocks pending were
  recorded under the old rules;
- Ethereum-family pools also: ``stale_heights``, ``dataset``,
  ``hashrate_expiration``, every setting of a getwork port, and
  ``connection_timeout`` when a getwork port reads it;
- a port's ``proxy_protocol``, ``protocol`` and ``max_body`` (its listener
  is built by them). A port is known by its ``listen``: another endpoint
  is another port, and the old one closes.
- config.yaml's ``switching`` (each switch's ports and miners are built at
  start); a pool a running switch switches to stays when its file goes,
  until a restart.

Everything else changes live; ``nomp.reload`` applies it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar

from nomp.config.model import Config, EthPoolConfig, GlobalConfig, PoolConfig, PortConfig
from nomp.config.schema import address_for_logs

AnyPool = PoolConfig | EthPoolConfig
P = TypeVar("P", PoolConfig, EthPoolConfig)
T = TypeVar("T")

GLOBAL_RESTART = (
    "redis",
    "threads",
    "instance",
    "instance_state",
    "workers",
    "logging.format",
    "logging.file",
    "control.listen",
    "web",
    "switching",
    "profit_switching",
)
# Folded into each pool by the loader, or only where other files are: not
# reported as changes of config.yaml itself.
GLOBAL_NOT_REPORTED = ("coins", "pool_defaults")
POOL_RESTART = (
    "coin",
    "usernames",
    "version_mask",
    "hashrate_window",
    "payments.scheme",
    "payments.pplns_window",
)
ETH_POOL_RESTART = (
    "coin",
    "usernames",
    "hashrate_window",
    "hashrate_expiration",
    "dataset",
    "stale_heights",
    "payments.scheme",
    "payments.pplns_window",
)
PORT_RESTART = ("proxy_protocol", "protocol", "max_body")
SECRET_KEYS = ("password", "sentinel_password")
# Keys whose values are URLs: shown by scheme, host, port and path, as a
# user-info, a query or a fragment may hold a password or an API key.
URL_KEYS = ("url",)


@dataclass(frozen=True, slots=True)
class PortMatch:
    """Two port lists side by side, each port known by its ``listen``."""

    added: tuple[PortConfig, ...]
    removed: tuple[PortConfig, ...]
    kept: tuple[tuple[PortConfig, PortConfig], ...]  # (old, new), changed or not

    @property
    def changed(self) -> tuple[tuple[PortConfig, PortConfig], ...]:
        return tuple((old, new) for old, new in self.kept if old != new)


def match_ports(old: Iterable[PortConfig], new: Iterable[PortConfig]) -> PortMatch:
    """Which of ``new`` are added, which of ``old`` removed, and which stay."""
    before = {port.listen: port for port in old}
    after = {port.listen: port for port in new}
    return PortMatch(
        added=tuple(port for listen, port in after.items() if listen not in before),
        removed=tuple(port for listen, port in before.items() if listen not in after),
        kept=tuple((before[listen], port) for listen, port in after.items() if listen in before),
    )


@dataclass(frozen=True, slots=True)
class PoolChange:
    """One pool whose file (or coin file, or pool_defaults) changed."""

    old: AnyPool
    running: AnyPool  # what runs after the reload
    live: tuple[str, ...]  # "path: old -> new" of what changes now
    restart: tuple[str, ...]  # paths that keep their running value until a restart

    @property
    def name(self) -> str:
        return self.old.name

    @property
    def file(self) -> str:
        return self.old.file


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does; ``running`` is the configuration after it."""

    running: Config
    added: tuple[AnyPool, ...] = ()
    removed: tuple[AnyPool, ...] = ()
    changed: tuple[PoolChange, ...] = ()
    settings_live: tuple[str, ...] = ()  # config.yaml, "path: old -> new"
    settings_restart: tuple[str, ...] = ()  # config.yaml paths
    kept: tuple[str, ...] = ()  # "file: why", pools removed from the files but kept until a restart

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.settings_live or self.settings_restart)

    @property
    def restart(self) -> tuple[str, ...]:
        """Everything that needs a restart, as ``file: path``."""
        found = [f"config.yaml: {path}" for path in self.settings_restart]
        found += self.kept
        for change in self.changed:
            found += [f"{change.file}: {path}" for path in change.restart]
        return tuple(found)


def pools_of(config: Config) -> tuple[AnyPool, ...]:
    """Every pool of a configuration, both families, in file order."""
    return tuple(sorted((*config.pools, *config.eth_pools), key=lambda pool: pool.name))


def diff_configs(running: Config, read: Config, only: str | None = None) -> ReloadPlan:
    """The reload from ``running`` to ``read``: of everything, or (``only``) of
    the pool of that name alone, config.yaml's own settings staying as they run."""
    old_pools = {pool.name: pool for pool in pools_of(running)}
    new_pools = {pool.name: pool for pool in pools_of(read)}
    names = sorted(old_pools.keys() | new_pools.keys())
    if only is not None:
        names = [name for name in names if name == only]
    added: list[AnyPool] = []
    removed: list[AnyPool] = []
    changed: list[PoolChange] = []
    kept: list[str] = []
    result = dict(old_pools)
    for name in names:
        old, new = old_pools.get(name), new_pools.get(name)
        if old is None and new is not None:
            added.append(new)
            result[name] = new
        elif new is None and old is not None:
            switch = _switch_of(running.settings, name)
            if switch is not None:  # the running switch holds it: its section changes at a restart
                kept.append(f"{old.file}: removed, but switch {switch} switches to it")
            else:
                removed.append(old)
                del result[name]
        elif old is not None and new is not None and old != new:
            change = _pool_change(old, new)
            changed.append(change)
            result[name] = change.running
    settings: GlobalConfig = running.settings
    live: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    if only is None:
        settings, live, restart = _settings_change(running.settings, read.settings)
    pools = tuple(result[name] for name in sorted(result))
    plan_config = Config(
        directory=running.directory,
        settings=settings,
        pools=tuple(p for p in pools if isinstance(p, PoolConfig)),
        eth_pools=tuple(p for p in pools if isinstance(p, EthPoolConfig)),
    )
    return ReloadPlan(plan_config, tuple(added), tuple(removed), tuple(changed), live, restart, tuple(kept))


def _switch_of(settings: GlobalConfig, pool: str) -> str | None:
    """The first switch that switches to ``pool``, if any."""
    return next((name for name, switch in settings.switching.items() if pool in switch.pools), None)


def _settings_change(
    old: GlobalConfig, new: GlobalConfig
) -> tuple[GlobalConfig, tuple[str, ...], tuple[str, ...]]:
    live: list[str] = []
    restart: list[str] = []
    for path, a, b in leaf_changes(old, new):
        if _under(path, GLOBAL_NOT_REPORTED):
            continue
        (restart if _under(path, GLOBAL_RESTART) else live).append(describe(path, a, b))
    return _keep(new, old, GLOBAL_RESTART), tuple(live), tuple(restart)


def _pool_change(old: AnyPool, new: AnyPool) -> PoolChange:
    if type(old) is not type(new):  # a coin of the other family: nothing of it can run now
        return PoolChange(old, old, (), (f"coin: {old.coin.name} -> {new.coin.name}, of another family",))
    restart_paths = ETH_POOL_RESTART if isinstance(old, EthPoolConfig) else POOL_RESTART
    if isinstance(old, EthPoolConfig) and any(p.protocol == "getwork" for p in (*old.ports, *new.ports)):
        restart_paths = (*restart_paths, "connection_timeout")
    live: list[str] = []
    restart: list[str] = []
    for path, a, b in leaf_changes(old, new):
        if not path.startswith("ports"):
            (restart if _under(path, restart_paths) else live).append(describe(path, a, b))
    ports, port_live, port_restart = _ports_change(old.ports, new.ports, eth=isinstance(old, EthPoolConfig))
    running = dataclasses.replace(_keep(new, old, restart_paths), ports=ports)
    return PoolChange(old, running, (*port_live, *live), (*restart, *port_restart))


def _ports_change(
    old: Sequence[PortConfig], new: Sequence[PortConfig], eth: bool
) -> tuple[tuple[PortConfig, ...], list[str], list[str]]:
    """The ports to run, what changes live and what needs a restart (paths by the new list)."""
    match = match_ports(old, new)
    running: list[PortConfig] = []
    live = [f"port {port.listen} closed" for port in match.removed]
    restart: list[str] = []
    kept = {new_port.listen: old_port for old_port, new_port in match.kept}
    for index, port in enumerate(new):
        before = kept.get(port.listen)
        if before is None:
            live.append(f"ports[{index}] {port.listen} opened")
            running.append(port)
            continue
        getwork = eth and "getwork" in (port.protocol, before.protocol)
        for path, a, b in leaf_changes(before, port):
            shown = describe(f"ports[{index}].{path}", a, b)
            (restart if getwork or _under(path, PORT_RESTART) else live).append(shown)
        running.append(before if getwork else _keep(port, before, PORT_RESTART))
    return tuple(running), live, restart


def leaf_changes(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every value that differs between two configuration values, as (path, old, new).

    Sections (dataclasses) are compared key by key, lists of sections item
    by item; a section that appears or goes (None on one side) is one change.
    """
    if old == new:
        return []
    if dataclasses.is_dataclass(old) and type(old) is type(new):
        found = []
        for field in dataclasses.fields(old):
            found += leaf_changes(getattr(old, field.name), getattr(new, field.name), _join(path, field.name))
        return found
    if (
        isinstance(old, tuple)
        and isinstance(new, tuple)
        and len(old) == len(new)
        and all(dataclasses.is_dataclass(item) for item in (*old, *new))
    ):
        found = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            found += leaf_changes(a, b, f"{path}[{index}]")
        return found
    return [(path, old, new)]


def describe(path: str, old: Any, new: Any) -> str:
    """``path: old -> new``, secrets left out."""
    key = path.rsplit(".", 1)[-1]
    if key in SECRET_KEYS:
        return f"{path} changed"
    if key in URL_KEYS:
        return f"{path}: {_url_shown(old)} -> {_url_shown(new)}"
    return f"{path}: {_shown(old)} -> {_shown(new)}"


def _url_shown(value: Any) -> str:
    return address_for_logs(value) if isinstance(value, str) else _shown(value)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Decimal | int | str):
        return str(value)
    if isinstance(value, Enum):
        return str(value.value)
    if dataclasses.is_dataclass(value):
        return (
            "{"
            + ", ".join(
                f"{f.name}: {(_url_shown if f.name in URL_KEYS else _shown)(getattr(value, f.name))}"
                for f in dataclasses.fields(value)
                if f.name not in SECRET_KEYS
            )
            + "}"
        )
    if isinstance(value, tuple):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    return str(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == prefix or path.startswith(f"{prefix}.") for prefix in prefixes)


def _get(value: Any, path: str) -> Any:
    for key in path.split("."):
        value = getattr(value, key)
    return value


def _keep(new: T, old: T, paths: Iterable[str]) -> T:
    """``new`` with the values at ``paths`` as they are in ``old``."""
    for path in paths:
        new = _put(new, path, _get(old, path))
    return new


def _put(value: T, path: str, part: Any) -> T:
    """``value`` with the section value at ``path`` replaced."""
    key, _, rest = path.partition(".")
    if rest:
        part = _put(getattr(value, key), rest, part)
    return dataclasses.replace(value, **{key: part})  # type: ignore[type-var]
