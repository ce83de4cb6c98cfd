"""RecorderService: the timer that writes a pool's share records."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nomp.store.batches import BatchRecorder

FLUSH_INTERVAL = 0.2  # seconds: how long an accepted share may wait in memory
DRAIN_TIMEOUT = 15.0  # seconds the pool waits at shutdown for Redis to take the rest
BLOCKS_DRAIN_TIMEOUT = 5.0  # then seconds more for the block candidates and settlements alone


class RecorderService(Service):
    """Flushes a pool's recorder (ShareRecorder, EthShareRecorder) on a timer, and drains it at stop."""

    log = Logger()

    def __init__(self, recorder: BatchRecorder[Any], clock: IReactorTime) -> None:
        self.recorder = recorder
        self._clock = clock
        self._loop: task.LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.recorder.flush)
        self._loop.clock = self._clock
        self._loop.start(FLUSH_INTERVAL, now=False)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return defer.Deferred.fromCoroutine(self._drain())

    async def _drain(self) -> None:
        recorder = self.recorder
        await self._flush_for(DRAIN_TIMEOUT)
        if recorder.waiting and recorder.blocks_waiting:
            # The blocks are worth more than the shares still queued before
            # them: those are given up so the candidates and settlements go.
            blocks = recorder.blocks_waiting
            dropped = recorder.keep_blocks_only()
            self.log.error(
                "pool {coin}: Redis did not take the share records in time: {dropped} dropped, "
                "writing the {blocks} block records alone",
                coin=recorder.keys.coin,
                dropped=dropped,
                blocks=blocks,
            )
            await self._flush_for(BLOCKS_DRAIN_TIMEOUT)
        if recorder.waiting:
            self.log.error(
                "pool {coin}: {waiting} share records could not be written to Redis before exit",
                coin=recorder.keys.coin,
                waiting=recorder.waiting,
            )

    async def _flush_for(self, seconds: float) -> None:
        deadline = self._clock.seconds() + seconds
        while self.recorder.waiting and self._clock.seconds() < deadline:
            await self.recorder.flush()
            if self.recorder.waiting:
                await task.deferLater(self._clock, 0.2)
