"""NompService, the root of the service tree, on its own."""

from __future__ import annotations

import gc

from twisted.internet import task
from twisted.trial.unittest import TestCase

from nomp.config import load_config
from nomp.service import NompService
from test.test_config_paths import SHIPPED_CONF


class HeapFreezeTests(TestCase):
    """Once started, the process's objects are kept out of the cyclic collector's full passes."""

    def start(self, freeze_heap: bool) -> NompService:
        root = NompService(
            load_config(SHIPPED_CONF),
            task.Clock(),
            exit_with=lambda status: None,
            shutdown=lambda: None,
            freeze_heap=freeze_heap,
        )
        self.addCleanup(gc.unfreeze)  # the test process goes on collecting as before
        gc.unfreeze()
        root.startService()
        self.addCleanup(root.stopService)
        return root

    def test_frozen_after_start(self) -> None:
        """With freeze_heap, as makeService builds it for twistd, what exists once started is frozen."""
        self.start(freeze_heap=True)
        self.assertGreater(gc.get_freeze_count(), 0)

    def test_not_frozen_by_default(self) -> None:
        """Services built for tests leave the collector alone."""
        self.start(freeze_heap=False)
        self.assertEqual(gc.get_freeze_count(), 0)
