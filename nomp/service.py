"""NompService: the root of the service tree."""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from twisted.application.service import IServiceCollection, Service
from twisted.internet import defer
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from nomp.background import background
from nomp.config import Config
from nomp.logs import LogFile
from nomp.services import OrderedMultiService
from nomp.stratum.service import Drained
from nomp.systemd import ServiceNotifier

if TYPE_CHECKING:
    from nomp.reload import Reloader

SWITCH_INTERVAL = 0.0005  # seconds a thread waits for the GIL before asking for it


class Drains(Protocol):
    """A pool's miner side, as a stop drains it (a StratumService)."""

    def drain(self, seconds: float) -> defer.Deferred[Drained]: ...


@runtime_checkable
class ReopensLogs(Protocol):
    """A child service whose own processes write to the log file too: the
    main process's workers (WorkerSupervisor), told at the main process's
    reopen."""

    def reopen_logs(self) -> None: ...


class NompService(OrderedMultiService):
    """The whole pool process: hashing, and one PoolService per pool.

    It also hands twistd the log observer the configuration asks for,
    turns a fatal error (a pool that cannot start) into a stop of the
    process with exit status 1, and owns the Reloader: with
    ``reload_on_hangup`` (twistd's process) SIGHUP reloads the conf folder
    as the control port's ``reload`` does, and SIGUSR1 opens the log file
    again (``reopen_logs``: after logrotate moved it).

    A stop drains the miners first (``drain``), then stops the tree. It
    tells systemd (``Type=notify``) when every pool has its first job, and
    when it begins to stop.
    """

    log = Logger()

    def __init__(
        self,
        config: Config,
        reactor: Any,
        log_observer: ILogObserver | None = None,
        exit_with: Callable[[int], None] | None = None,
        shutdown: Callable[[], object] | None = None,
        tune_runtime: bool = False,
        reload_on_hangup: bool = False,
        notifier: ServiceNotifier | None = None,
    ) -> None:
        super().__init__()
        self.setName("nomp")
        self.config = config
        self._reactor = reactor
        self._log_observer = log_observer
        self._exit_with = exit_with or _exit_after_twistd
        self._shutdown = shutdown or self._stop_reactor
        self.exit_status = 0
        self.fatal_errors: list[str] = []
        self._tune_runtime = tune_runtime
        self._reload_on_hangup = reload_on_hangup
        self._previous_hangup: Any = None
        self._previous_usr1: Any = None
        self.reloader: Reloader  # set by nomp.tap once the tree is built
        self.started_at: float | None = None  # reactor seconds
        self.notifier = notifier or ServiceNotifier(None)
        # The pools' miner sides, as a stop drains them (nomp.tap sets it).
        self.drainers: Callable[[], Iterable[Drains]] = tuple
        self._without_work: set[str] = set()  # pools with no job yet: not ready for systemd
        self._ready_told = False

    def replace_config(self, config: Config) -> None:
        """What runs after a reload (the Reloader's)."""
        self.config = config

    def shutdown(self) -> None:
        """Stop the process as SIGTERM does (the control port's shutdown)."""
        self._shutdown()

    def await_work(self, pools: Sequence[str]) -> None:
        """Tell systemd the process is ready once each of these pools has had
        its first job (``has_work``); before start."""
        self._without_work = set(pools)

    def has_work(self, pool: str) -> None:
        """``pool`` has a job for its miners (a job listener: called for every job)."""
        if pool in self._without_work:
            self._without_work.discard(pool)
            self._tell_ready()

    def _tell_ready(self) -> None:
        if self._without_work or self._ready_told or not self.running:
            return
        self._ready_told = True
        self.log.info("every pool has work: ready")
        self.notifier.send("READY=1", "STATUS=every pool has work")

    def startService(self) -> None:
        signals = self._reload_on_hangup and threading.current_thread() is threading.main_thread()
        if signals:
            # Before the children start: a worker's main process sends it
            # SIGUSR1 only once it has answered on its control channel
            # (nomp.workers.supervisor), and by then this is in place.
            self._previous_usr1 = signal.signal(signal.SIGUSR1, self._usr1)
        super().startService()
        self.started_at = self._reactor.seconds()
        self._tell_ready()  # a process without pools is ready now
        if signals:
            self._previous_hangup = signal.signal(signal.SIGHUP, self._hangup)
        if self._tune_runtime:
            # What exists once the pool has started (code, configuration,
            # services) lives as long as the process. Out of the cyclic
            # collector's sight, it no longer makes each full collection a
            # stall of the reactor of tens of milliseconds, which every share
            # reply and web request waiting meanwhile would feel.
            gc.freeze()
            # A hashing thread with a finished batch waits for the GIL while
            # the reactor thread runs Python; the default switch interval
            # before it may ask for it shows in the reply latency under load
            # (the README's performance section has the figures).
            sys.setswitchinterval(SWITCH_INTERVAL)

    def stopService(self) -> defer.Deferred[None]:
        if self._previous_hangup is not None:
            signal.signal(signal.SIGHUP, self._previous_hangup)
            self._previous_hangup = None
        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None
        Service.stopService(self)  # not running from now: no reload, no second stop
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self.drain(self.config.settings.drain_seconds)
        await super().stopService()

    async def drain(self, seconds: float) -> None:
        """Ask every pool's Stratum miners to reconnect, and wait up to
        ``seconds`` for them to leave (the tree's stop closes the others).

        The ports stop accepting first: a miner that reconnects reaches
        whoever else holds the listening socket (systemd, which queues the
        connection until the next process takes it, or a process already
        started on it), or is refused when nobody does.
        """
        self.notifier.send("STOPPING=1", "STATUS=stopping: the miners are asked to reconnect")
        started = self._reactor.seconds()
        results = await defer.DeferredList(
            [defer.maybeDeferred(side.drain, seconds) for side in self.drainers()], consumeErrors=True
        )
        asked = stayed = 0
        for succeeded, result in results:
            if succeeded:
                asked, stayed = asked + result.asked, stayed + result.stayed
            else:  # a bug: the stop goes on, and closes that pool's miners
                failure: Any = result  # DeferredList gives the Failure in the result's place
                self.log.failure("a pool's drain failed", failure)
        self.log.info(
            "drained in {elapsed:.3f} s: {asked} miners asked to reconnect, {stayed} left to close",
            elapsed=self._reactor.seconds() - started,
            asked=asked,
            stayed=stayed,
        )

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of whatever the main
        # thread was doing: the reload itself waits for the reactor's turn.
        self._reactor.callFromThread(self._reload_now)

    def _reload_now(self) -> None:
        if not self.running:
            return
        self.log.info("SIGHUP: reloading the configuration")
        background("reload on SIGHUP", self.reloader.reload())  # it logs its answer

    def _usr1(self, signum: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self.reopen_logs)  # as for SIGHUP

    def reopen_logs(self) -> None:
        """Open the log file again at its path (SIGUSR1), and have the workers
        do the same with theirs. A file that cannot be opened (its folder
        gone, no permission) is logged as an error, and the lines go on
        into the file open until now."""
        # make_observer's (a PoolLogObserver) has one when it writes to a file.
        log_file: LogFile | None = getattr(self._log_observer, "log_file", None)
        if log_file is not None:
            try:
                log_file.reopen()
            except OSError as e:
                self.log.error(
                    "SIGUSR1: cannot open the log file {path} again ({error}): still writing to the one open",
                    path=log_file.path,
                    error=e,
                )
            else:
                self.log.info("SIGUSR1: log file {path} opened again", path=log_file.path)
        for child in self:
            if isinstance(child, ReopensLogs):
                child.reopen_logs()

    def setServiceParent(self, parent: IServiceCollection) -> None:
        # twistd starts logging after the application is built, with the
        # application's ILogObserver component when it has one: that is how
        # config.yaml's logging section takes effect under twistd and pool.tac.
        if self._log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._log_observer)
        super().setServiceParent(parent)

    def fatal(self, message: str) -> None:
        """Stop the process because it cannot do its job; exit status 1."""
        self.log.critical("cannot go on: {message}", message=message)
        self.fatal_errors.append(message)
        if self.exit_status == 0:
            self.exit_status = 1
            self._exit_with(self.exit_status)
        self._shutdown()

    def _stop_reactor(self) -> None:
        if self._reactor.running:
            self._reactor.stop()


def _exit_after_twistd(status: int) -> None:
    # twistd has no exit status of its own to set: apply ours once twistd
    # has finished its shutdown and the interpreter is exiting.
    def exit_now() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    atexit.register(exit_now)
