"""The main process's reload when it has workers.

The main process reloads its own configuration (payments, the web's and
control port's settings, and the Stratum ports whose sockets it holds),
then each worker reloads its own. When the reload opened or closed a
Stratum port, the workers are then replaced one at a time
(WorkerSupervisor.replace_all): a worker is given the sockets held when it
starts, so each new one serves the new ports.
"""

from __future__ import annotations

from collections.abc import Callable

from nomp.background import background
from nomp.config import Config
from nomp.control.service import combine_answers
from nomp.reload import PoolAssembly, ReloadAnswer, Reloader
from nomp.workers.sockets import HeldSockets
from nomp.workers.supervisor import WorkerSupervisor


class MainReloader(Reloader):
    """A Reloader whose every reload reaches the workers too (SIGHUP's and the
    control port's alike)."""

    def __init__(
        self,
        assembly: PoolAssembly,
        current: Callable[[], Config],
        replace: Callable[[Config], None],
        supervisor: WorkerSupervisor,
        held: HeldSockets,
    ) -> None:
        super().__init__(assembly, current, replace)
        self._supervisor = supervisor
        self._held = held

    async def reload(self, pool: str | None = None) -> ReloadAnswer:
        before = {held.listen for held in self._held.sockets()}
        own = await super().reload(pool)
        answers = await self._supervisor.ask_all("reload" if pool is None else f"reloadpool {pool}")
        line = combine_answers(own.line(), answers)
        if {held.listen for held in self._held.sockets()} != before:
            background("replace the workers for the ports changed", self._supervisor.replace_all())
            line += " | the workers are replaced one at a time to serve the ports opened"
        ok, _, text = line.partition(" ")
        return ReloadAnswer(ok == "ok", text)
