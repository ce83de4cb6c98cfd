"""RelayedSwitches: the switches of a main process whose worker processes
serve the miners (nomp.workers).

The main process accepts no miner, so it moves none: a move is the
``coinswitch`` control line sent to every worker, each of which moves its
own miners (its SwitchingService) and records the pool in Redis
(``SwitchKeys.current``). The pool a switch is on is read from Redis at
start (the workers resume on it, see SwitchingService) and kept from the
workers' answers after that. The switch's ports are here too: their
listening sockets are held for the workers, like every Stratum port's.

A move counts as made when every worker that answered is on the new pool
(it moved, or was on it already). A worker that is not running, or ended
before it answered, moved nothing and holds no miner; when it starts again
it reads the new pool from Redis, where the others wrote it. A worker that
refused (its pool has no job yet) leaves the switch split: the answer says
so, the switch is still taken for being on the pool it was on, and the
same move asked again moves the rest.

Each switch's miners are the workers': every MINERS_INTERVAL the workers are
asked ``switches`` (each one's switches as JSON) and the miners summed, so
that ``documents`` (GET /api/switching) answers from the last figures at
once, never waiting on a worker.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import IService
from twisted.internet import defer
from twisted.logger import Logger

from nomp.store.client import RedisClient, RedisUnavailable
from nomp.store.schema import SwitchKeys
from nomp.switching import SwitchRefused, already_on, request_refusal
from nomp.switching.service import GET_SCRIPT, SwitchesService, SwitchState

MINERS_INTERVAL = 5.0  # seconds between asks of the workers for their switches' miners

# Sends one control line to every worker: each one's name and answer, None
# for one that is not running or ended before it answered (WorkerSupervisor.ask_each).
AskWorkers = Callable[[str], Awaitable[Sequence[tuple[str, str | None]]]]


class RelayedSwitches(SwitchesService):
    """Every switch of config.yaml's ``switching``, moved by the workers
    (nomp.switching.Switches)."""

    log = Logger()

    def __init__(
        self,
        pools: Mapping[str, Sequence[str]],
        algorithms: Mapping[str, str],
        ask: AskWorkers,
        known_pools: Callable[[], Collection[str]],
        redis: Callable[[], RedisClient | None],
        reactor: Any,
        ports: Mapping[str, IService] | None = None,
        keys: SwitchKeys | None = None,
    ) -> None:
        """``pools``: each switch's pools, its default first; ``ask``: the
        workers' control channels; ``ports``: each switch's StratumService,
        whose sockets are held for the workers."""
        super().__init__(algorithms, ports or {}, reactor)
        self._pools = {name: tuple(names) for name, names in pools.items()}
        self._ask = ask
        self._known_pools = known_pools
        self._redis = redis
        self._keys = keys or SwitchKeys()
        self._current = {name: names[0] for name, names in self._pools.items()}
        self._read: set[str] = set()  # switches whose pool Redis was read for (or that moved since)
        self._miners: dict[str, int] = {}  # each switch's miners summed over the workers at the last ask
        counting = TimerService(MINERS_INTERVAL, lambda: defer.Deferred.fromCoroutine(self._count_miners()))
        counting.clock = reactor
        counting.setServiceParent(self)

    # Switches.
    def switch_names(self) -> Sequence[str]:
        return list(self._pools)

    def pools(self, switch: str) -> Sequence[str]:
        return list(self._pools[switch])

    def current(self, switch: str) -> str:
        return self._current[switch]

    async def _switch(self, switch: str, pool: str, reason: str) -> str:
        problem = request_refusal(self._pools, self._known_pools(), switch, pool)
        if problem is not None:
            raise SwitchRefused(problem)
        before = self._current[switch]
        answers = await self._ask(f"coinswitch {switch} {pool}")
        there = f"error {already_on(switch, pool)}"
        moved = [name for name, answer in answers if answer is not None and answer.startswith("ok ")]
        on_it = [name for name, answer in answers if answer == there]
        refused = [
            name
            for name, answer in answers
            if answer is not None and answer != there and not answer.startswith("ok ")
        ]
        listed = " | ".join(
            f"{name}: "
            + (f"not running: it resumes on {pool} from Redis once started" if answer is None else answer)
            for name, answer in answers
        )
        if refused:
            if moved or on_it:
                split = f"moved to {pool} by some workers only: the same move asked again moves the rest"
            else:
                split = "no worker moved"
            self.log.warn(
                "switch {switch}: {before} -> {pool} ({reason}): {split}: {answers}",
                switch=switch,
                before=before,
                pool=pool,
                reason=reason,
                split=split,
                answers=listed,
                moved=len(moved),
                refused=len(refused),
            )
            raise SwitchRefused(f"switch {switch}: {split}: {listed}")
        if not moved and not on_it:
            raise SwitchRefused(f"switch {switch}: no worker is running: no miner moved")
        self._current[switch] = pool
        self._read.add(switch)  # a stored pool read later is older than this move
        if not moved:
            raise SwitchRefused(already_on(switch, pool))
        self.log.info(
            "switch {switch}: {before} -> {pool} ({reason}) on every worker: {answers}",
            switch=switch,
            before=before,
            pool=pool,
            reason=reason,
            answers=listed,
            moved=len(moved),
        )
        self._moved(switch, before, pool, reason)
        return f"switch {switch}: {before} -> {pool} on every worker: {listed}"

    # What status and the web show: the miners as the workers last counted them.
    def states(self) -> list[SwitchState]:
        return [
            SwitchState(
                name,
                self._algorithms[name],
                pools,
                self._current[name],
                self._miners.get(name, 0),
                self.switch_counts[name],
                self._reasons.get(name),
            )
            for name, pools in self._pools.items()
        ]

    async def _count_miners(self) -> None:
        try:
            answers = await self._ask("switches")
        except Exception:  # logged; the timer asks again, the last figures stand meanwhile
            self.log.failure("asking the workers for their switches' miners failed")
            return
        counted: Counter[str] = Counter()
        for worker, answer in answers:
            if answer is None:  # not running: it holds no miner
                continue
            try:
                for name, miners in worker_switch_miners(answer).items():
                    if name in self._pools:
                        counted[name] += miners
            except ValueError as e:
                # Its miners are left out of the sums until it answers as it should.
                self.log.error(
                    "{worker}: switches answered {answer!r}: {error}",
                    worker=worker,
                    answer=answer[:200],
                    error=str(e),
                )
        self._miners = dict(counted)

    # Redis: the pool each switch was left on.
    @property
    def pending(self) -> bool:
        """Whether Redis has yet to be read for a switch's stored pool."""
        return len(self._read) < len(self._pools)

    def _keep_state(self) -> defer.Deferred[None] | None:
        if not self.pending:
            return None
        return defer.Deferred.fromCoroutine(self._read_state())

    async def _read_state(self) -> None:
        for switch, pools in self._pools.items():
            if switch in self._read:
                continue
            client = self._redis()
            try:
                if client is None:
                    raise RedisUnavailable("Redis is not connected")
                stored = await client.eval(GET_SCRIPT, [self._keys.current(switch)], [])
            except Exception as e:
                self.outage.failed(e, "the switches are taken for on their default pools until it answers")
                return
            self.outage.succeeded()
            if switch in self._read:  # moved by a command meanwhile
                continue
            self._read.add(switch)
            if stored is None:
                continue
            if stored not in pools:
                self.log.warn(
                    "switch {switch}: Redis says pool {stored}, which is not one of its pools now: "
                    "the workers stay on its default, {pool}",
                    switch=switch,
                    stored=stored,
                    pool=self._current[switch],
                )
                continue
            self._current[switch] = stored


def worker_switch_miners(answer: str) -> dict[str, int]:
    """Each switch's miners from a worker's answer to ``switches``
    (``ok`` and its documents as JSON); ValueError for any other answer."""
    if not answer.startswith("ok "):
        raise ValueError("not an ok answer")
    documents = json.loads(answer[3:])  # a JSONDecodeError is a ValueError
    if not isinstance(documents, list):
        raise ValueError("not a list of switches")
    miners = {}
    for document in documents:
        if not isinstance(document, dict):
            raise ValueError("a switch that is not an object")
        name, count = document.get("name"), document.get("miners")
        if not isinstance(name, str) or type(count) is not int or count < 0:
            raise ValueError("a switch without a name and a count of miners")
        miners[name] = count
    return miners
