"""The pool's log observer: its level, and the libraries' chatter left out."""

from __future__ import annotations

import io
from pathlib import Path

from twisted.internet import reactor, task
from twisted.logger import Logger, capturedLogs, globalLogPublisher
from twisted.trial.unittest import TestCase

from nomp.config import LoggingConfig, RedisConfig
from nomp.logs import PoolLogObserver, make_observer
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


class LogFileTests(TestCase):
    """The log file opened again at its path, as after logrotate moved it."""

    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.path = self.folder / "nomp.log"

    def observer(self) -> PoolLogObserver:
        observer = make_observer(LoggingConfig(level="info", file=str(self.path)))
        assert observer.log_file is not None
        self.addCleanup(observer.log_file.close)
        return observer

    def test_reopen_after_a_move(self) -> None:
        """The lines before the move stay in the moved file; those after it go to
        a new file at the path."""
        observer = self.observer()
        log = Logger(namespace="nomp.test", observer=observer)
        log.info("before the move")
        moved = self.folder / "nomp.log.1"
        self.path.rename(moved)
        log.info("after the move, before the reopen")
        assert observer.log_file is not None
        observer.log_file.reopen()
        log.info("after the reopen")
        old, new = moved.read_text(), self.path.read_text()
        self.assertIn("before the move", old)
        self.assertIn("after the move, before the reopen", old)
        self.assertNotIn("after the reopen", old)
        self.assertEqual(len(new.splitlines()), 1)
        self.assertIn("after the reopen", new)

    def test_failed_reopen_keeps_the_old_file(self) -> None:
        """A path that cannot be opened (its folder gone) raises OSError, and the
        lines go on into the file open until then."""
        observer = self.observer()
        log = Logger(namespace="nomp.test", observer=observer)
        log.info("first")
        moved = self.folder.with_name("moved")
        self.folder.rename(moved)  # the open file goes with it
        assert observer.log_file is not None
        self.assertRaises(OSError, observer.log_file.reopen)
        log.info("second")
        self.assertEqual(len((moved / "nomp.log").read_text().splitlines()), 2)
        self.assertFalse(self.folder.exists())

    def test_standard_output_has_no_file(self) -> None:
        """Without logging.file there is nothing to open again."""
        self.assertIsNone(make_observer(LoggingConfig()).log_file)
