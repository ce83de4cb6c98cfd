"""Reloader: re-read the conf folder and apply what it changes, without dropping a miner.

The folder is read with the same loader as at start; a configuration with
errors is refused whole, every error listed, and the running one stays.
Otherwise nomp.config.diff says what changes, and the composition root
(nomp.tap's PoolAssembly) applies it: pools removed first (their ports are
then free), pools changed, pools added. ``reload(None)`` is ``reload`` and
SIGHUP; ``reload(name)`` is ``reloadpool <name>``, which applies that pool's
file alone and leaves config.yaml's own settings as they run.

One reload at a time: another asked meanwhile is refused, and says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from twisted.logger import Logger

from nomp.config import Config, ConfigErrors, EthPoolConfig, GlobalConfig, PoolConfig, load_config
from nomp.config.diff import AnyPool, PoolChange, diff_configs, pools_of


@dataclass(slots=True)
class Outcome:
    """What applying a part did: ``done`` as it was asked, ``refused`` what
    could not be done (the running value stays), each a line of the answer."""

    done: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.done += other.done
        self.refused += other.refused


class PoolAssembly(Protocol):
    """What the reloader needs of the composition root."""

    async def add_pool(self, pool: AnyPool) -> tuple[AnyPool | None, Outcome]:
        """Build and start a pool; the configuration it runs (without a port
        that could not be opened), or None and why when it cannot start."""
        ...

    async def remove_pool(self, name: str) -> Outcome:
        """Stop a pool and take it out of the tree; its miners are disconnected."""
        ...

    async def change_pool(self, change: PoolChange) -> tuple[AnyPool, Outcome]:
        """Apply a pool's changes; the configuration it runs then."""
        ...

    def change_settings(self, old: GlobalConfig, new: GlobalConfig) -> tuple[GlobalConfig, Outcome]:
        """Apply config.yaml's live settings; the settings that run then."""
        ...


@dataclass(frozen=True, slots=True)
class ReloadAnswer:
    """A reload's outcome, as the control port answers it and the log records it."""

    ok: bool
    text: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'error'} {self.text}"


class Reloader:
    """Reloads the process's configuration; the root service owns it."""

    log = Logger()

    def __init__(
        self,
        assembly: PoolAssembly,
        current: Callable[[], Config],
        replace: Callable[[Config], None],
        load: Callable[[str | os.PathLike[str]], Config] = load_config,
    ) -> None:
        self._assembly = assembly
        self._current = current
        self._replace = replace
        self._load = load
        self.busy = False

    async def reload(self, pool: str | None = None) -> ReloadAnswer:
        """Reload everything, or (``pool``, its name or its coin's) one pool's file."""
        if self.busy:
            return ReloadAnswer(False, "a reload is under way: ask again once it has answered")
        self.busy = True
        try:
            answer = await self._reload(pool)
        finally:
            self.busy = False
        if answer.ok:
            self.log.info("reload: {answer}", answer=answer.text)
        else:
            self.log.error("reload: {answer}", answer=answer.text)
        return answer

    async def _reload(self, wanted: str | None) -> ReloadAnswer:
        running = self._current()
        try:
            read = self._load(running.directory)
        except ConfigErrors as e:
            count = len(e.errors)
            return ReloadAnswer(
                False,
                f"configuration refused, the running one stays: {count} error{'s' if count != 1 else ''}: "
                + "; ".join(e.errors),
            )
        only = None
        if wanted is not None:
            only = _pool_named(wanted, running, read)
            if only is None:
                return ReloadAnswer(False, f"no pool {wanted[:64]!r} runs or is in {running.directory}")
        plan = diff_configs(running, read, only)
        if plan.empty:
            return ReloadAnswer(True, "nothing changed" + (f" for {only}" if only else ""))
        outcome = Outcome()
        settings = plan.running.settings
        if plan.settings_live:
            outcome.done += [f"config.yaml: {line}" for line in plan.settings_live]
            settings, applied = self._assembly.change_settings(running.settings, settings)
            outcome.add(applied)
        pools = {pool.name: pool for pool in pools_of(plan.running)}
        for removed in plan.removed:
            outcome.done.append(f"{removed.file}: pool {removed.name} removed")
            outcome.add(await self._assembly.remove_pool(removed.name))
        for change in plan.changed:
            outcome.done += [f"{change.file}: {line}" for line in change.live]
            pools[change.name], applied = await self._assembly.change_pool(change)
            outcome.add(applied)
        for added in plan.added:
            started, applied = await self._assembly.add_pool(added)
            if started is None:
                del pools[added.name]
            else:
                outcome.done.append(f"{added.file}: pool {added.name} added")
                pools[added.name] = started
            outcome.add(applied)
        self._replace(_config(running, settings, pools.values()))
        return _answer(outcome, plan.restart)

    def forget(self, name: str) -> None:
        """A pool stopped by itself (it could not start): out of the running configuration,
        so that the next reload adds it again."""
        running = self._current()
        self._replace(_config(running, running.settings, (p for p in pools_of(running) if p.name != name)))


def _pool_named(wanted: str, running: Config, read: Config) -> str | None:
    """The name of the pool ``wanted`` names (its own or its coin's), running or read."""
    lowered = wanted.lower()
    for config in (read, running):
        for pool in pools_of(config):
            if lowered in (pool.name.lower(), pool.coin.name.lower()):
                return pool.name
    return None


def _config(running: Config, settings: GlobalConfig, pools: Iterable[AnyPool]) -> Config:
    listed = sorted(pools, key=lambda pool: pool.name)
    return Config(
        directory=running.directory,
        settings=settings,
        pools=tuple(p for p in listed if isinstance(p, PoolConfig)),
        eth_pools=tuple(p for p in listed if isinstance(p, EthPoolConfig)),
    )


def _answer(outcome: Outcome, restart: tuple[str, ...]) -> ReloadAnswer:
    parts = []
    if outcome.refused:
        parts.append("not done: " + "; ".join(outcome.refused))
    if outcome.done:
        parts.append(("done: " if outcome.refused else "") + "; ".join(outcome.done))
    if restart:
        parts.append("needs a restart, left as it runs: " + "; ".join(restart))
    if not outcome.done and not outcome.refused:
        parts.insert(0, "nothing changed live")
    heading = "reloaded in part" if outcome.refused else "reloaded"
    return ReloadAnswer(not outcome.refused, f"{heading}: " + " | ".join(parts))
