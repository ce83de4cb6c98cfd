"""The pool's log observer: its level, and the libraries' chatter left out."""

from __future__ import annotations

import io

from twisted.internet import reactor, task
from twisted.logger import Logger, capturedLogs, globalLogPublisher
from twisted.trial.unittest import TestCase

from nomp.config import LoggingConfig, RedisConfig
from nomp.logs import make_observer
from nomp.store.redis import RedisService
from test.servers import free_port


class ObserverTests(TestCase):
    timeout = 30

    def test_level(self) -> None:
        """Events under the configured level are left out."""
        stream = io.StringIO()
        observer = make_observer(LoggingConfig(level="warn"), stream)
        log = Logger(namespace="nomp.test", observer=observer)
        log.info("not shown")
        log.warn("shown {what}", what="here")
        self.assertNotIn("not shown", stream.getvalue())
        self.assertIn("shown here", stream.getvalue())

    async def test_no_line_per_redis_reconnection(self) -> None:
        """While Redis is away, the reconnection attempts of its client are not each a line
        of the pool's log (the parts that need Redis say so once); their warnings still are."""
        stream = io.StringIO()
        observer = make_observer(LoggingConfig(level="info"), stream)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        redis = RedisService(RedisConfig(port=free_port()))  # nothing listens there
        with capturedLogs() as events:
            redis.startService()
            self.addCleanup(redis.stopService)
            await task.deferLater(reactor, 1.5)  # past the first retry
        retries = [e for e in events if "Scheduling retry" in e.get("log_format", "")]
        self.assertTrue(retries)  # they happened
        self.assertNotIn("Scheduling retry", stream.getvalue())
        Logger(namespace=retries[0]["log_namespace"], observer=observer).warn("a real problem")
        self.assertIn("a real problem", stream.getvalue())
