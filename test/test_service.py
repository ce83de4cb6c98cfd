"""NompService, the root of the service tree, on its own."""

from __future__ import annotations

import gc
import sys

from twisted.internet import task
from twisted.trial.unittest import TestCase

from nomp.config import load_config
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
