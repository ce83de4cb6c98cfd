"""NompService, the root of the service tree, on its own."""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet import task
from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import TestCase

from nomp.config import Config, GlobalConfig, LoggingConfig, load_config
from nomp.logs import PoolLogObserver, make_observer
from nomp.service import SWITCH_INTERVAL, NompService
from test.test_config_paths import SHIPPED_CONF


class RuntimeTuningTests(TestCase):
    """Once started, the process's objects are kept out of the cyclic
    collector's full passes, and threads wait less for the GIL."""

    def start(self, tune_runtime: bool) -> NompService:
        root = NompService(
            load_config(SHIPPED_CONF),
            task.Clock(),
            exit_with=lambda status: None,
            shutdown=lambda: None,
            tune_runtime=tune_runtime,
        )
        # The test process goes on as before.
        self.addCleanup(gc.unfreeze)
        self.addCleanup(sys.setswitchinterval, sys.getswitchinterval())
        gc.unfreeze()
        root.startService()
        self.addCleanup(root.stopService)
        return root

    def test_tuned_after_start(self) -> None:
        """With tune_runtime, as makeService builds it: the heap frozen, a short switch interval."""
        self.start(tune_runtime=True)
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertAlmostEqual(sys.getswitchinterval(), SWITCH_INTERVAL)

    def test_untouched_by_default(self) -> None:
        """Services built for tests leave the interpreter alone."""
        self.start(tune_runtime=False)
        self.assertEqual(gc.get_freeze_count(), 0)
        self.assertNotAlmostEqual(sys.getswitchinterval(), SWITCH_INTERVAL)


class InlineReactor(task.Clock):
    """A clock whose callFromThread runs the call at once, as the reactor's
    next turn would."""

    def callFromThread(self, f: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class Workers(Service):
    """A child service that runs processes of its own, as WorkerSupervisor."""

    def __init__(self) -> None:
        self.reopened = 0

    def reopen_logs(self) -> None:
        self.reopened += 1


class LogReopenTests(TestCase):
    """SIGUSR1 opens the log file again, in the process and its workers."""

    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.path = self.folder / "nomp.log"
        self.observer: PoolLogObserver = make_observer(LoggingConfig(file=str(self.path)))
        assert self.observer.log_file is not None
        self.addCleanup(self.observer.log_file.close)
        # The events NompService logs go to the file, as under twistd.
        globalLogPublisher.addObserver(self.observer)
        self.addCleanup(globalLogPublisher.removeObserver, self.observer)
        self.root = NompService(
            Config(self.folder, GlobalConfig(drain_seconds=0), ()),
            InlineReactor(),
            self.observer,
            exit_with=lambda status: None,
            shutdown=lambda: None,
            reload_on_hangup=True,
        )
        self.workers = Workers()
        self.workers.setServiceParent(self.root)
        self.log = Logger(namespace="nomp.test", observer=self.observer)

    def start(self) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)  # whatever happens to the test
        self.root.startService()
        self.addCleanup(self.root.stopService)

    def test_signal(self) -> None:
        """Once started, SIGUSR1 reopens the file and tells the workers; the
        handler before it is back after the stop."""
        previous = signal.getsignal(signal.SIGUSR1)
        self.start()
        self.assertEqual(signal.getsignal(signal.SIGUSR1), self.root._usr1)
        self.log.info("before the move")
        moved = self.folder / "nomp.log.1"
        self.path.rename(moved)
        os.kill(os.getpid(), signal.SIGUSR1)  # handled before the next bytecode of this thread
        self.log.info("after the signal")
        self.assertEqual(self.workers.reopened, 1)
        self.assertIn("before the move", moved.read_text())
        new = self.path.read_text()
        self.assertIn(f"SIGUSR1: log file {self.path} opened again", new)
        self.assertIn("after the signal", new)
        self.assertNotIn("after the signal", moved.read_text())
        self.successResultOf(self.root.stopService())
        self.assertEqual(signal.getsignal(signal.SIGUSR1), previous)

    def test_failed_reopen(self) -> None:
        """A file that cannot be opened again is an error logged to the one
        open, which takes the lines that follow; the workers are told all the same."""
        self.start()
        moved = self.folder.with_name("moved")
        self.folder.rename(moved)
        self.root.reopen_logs()
        self.log.info("after the reopen")
        old = (moved / "nomp.log").read_text()
        self.assertIn(f"SIGUSR1: cannot open the log file {self.path} again", old)
        self.assertIn("still writing to the one open", old)
        self.assertIn("after the reopen", old)
        self.assertEqual(self.workers.reopened, 1)

    def test_not_without_twistd(self) -> None:
        """Services built for tests leave SIGUSR1 alone."""
        previous = signal.getsignal(signal.SIGUSR1)
        root = NompService(Config(self.folder, GlobalConfig(drain_seconds=0), ()), InlineReactor())
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual(signal.getsignal(signal.SIGUSR1), previous)
