"""The process's extranonce1 instance byte, held through Redis.

Every extranonce1 the process hands out starts with its instance byte, so
pool processes sharing one Redis database never hand out the same one
(two miners with the same extranonce1 on the same job would do the same
work). The byte is leased: the key ``nomp:instance:<byte>`` holds
``<host>:<pid>:<random>`` of its holder and expires ``LEASE_TTL`` seconds
after the last renewal; the holder renews it every ``RENEW_INTERVAL``
seconds and deletes it at a clean stop.

Without ``instance`` in config.yaml, a byte is used at once, before Redis
answers, so that a pool started while Redis is away serves its miners: the
byte this host held last (kept in ``state_file``, when one is given), else
one chosen at random. That byte is the first one tried when Redis answers;
if another process holds it, the next free one is leased and the pools
re-partition as below (only the miners that came in meanwhile are moved).
Losing the lease:

* Redis restarted and the key is gone: the next renewal takes it again,
  and nothing changes for the miners.
* Another process holds the byte (Redis lost the key and someone leased
  it, or our renewals failed past the TTL): a new byte is leased and the
  pools re-partition: every connection that took ``mining.extranonce.subscribe``
  gets a new extranonce1, the others are asked to reconnect and closed.
* No renewal succeeded for ``LEASE_TTL`` seconds (Redis unreachable):
  the key may have expired, and another process may lease the byte, so
  new subscribes wait until Redis answers again; live connections mine on.

With ``instance`` set, that byte is used from the start, without Redis,
and its key is claimed over whoever holds it (a configured byte goes
before a leased one: a process that leased it loses its lease and moves),
so leasing processes sharing the Redis keep off it. Two processes
configured with the same byte are logged as an error.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from pathlib import Path

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from nomp.outage import Outage
from nomp.store.client import REDIS_DOWN, RedisClient, RedisUnavailable
from nomp.store.schema import InstanceKeys

INSTANCES = 256
LEASE_TTL = 60.0  # seconds a lease outlives its last renewal: Redis may be away this long
RENEW_INTERVAL = 10.0  # seconds between renewals
RETRY_INTERVAL = 1.0  # seconds between attempts while no byte is held (miners wait meanwhile)

# KEYS: the lease keys in the order to try. ARGV: token, ttl ms. The
# 1-based position of the key leased, or 0 when every one is held.
_ACQUIRE = """
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then return i end
end
return 0
"""

# KEYS: lease. ARGV: token, ttl ms. Renewed when ours, taken again when
# free (Redis lost it, or it expired and nobody leased it since): 1; held
# by another process: 0.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: token, ttl ms. Taken whoever holds it; the holder it had.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return holder
"""

# KEYS: lease. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


InstanceListener = Callable[[int | None], None]


class InstanceLeases:
    """The lease keys in Redis, for one holder ``token``."""

    def __init__(
        self, redis: Callable[[], RedisClient | None], keys: InstanceKeys, token: str, ttl: float
    ) -> None:
        self._redis = redis
        self.keys = keys
        self.token = token
        self._ttl_ms = int(ttl * 1000)

    async def _eval(self, script: str, keys: list[str], args: list[str | int]) -> object:
        client = self._redis()
        if client is None:
            raise RedisUnavailable("Redis is not connected")
        result: object = await client.eval(script, keys, list(args))
        return result

    async def acquire(self, start: int) -> int | None:
        """Lease the first free byte from ``start`` on (wrapping round); None if all are held."""
        order = [(start + i) % INSTANCES for i in range(INSTANCES)]
        position = await self._eval(_ACQUIRE, [self.keys.lease(n) for n in order], [self.token, self._ttl_ms])
        return order[position - 1] if isinstance(position, int) and position > 0 else None

    async def renew(self, instance: int) -> bool:
        """Renew our lease of ``instance`` (taking it again if it is free); False if another holds it."""
        return bool(await self._eval(_RENEW, [self.keys.lease(instance)], [self.token, self._ttl_ms]))

    async def claim(self, instance: int) -> str | None:
        """Hold ``instance`` whoever held it; the other holder it had, if any."""
        holder = await self._eval(_CLAIM, [self.keys.lease(instance)], [self.token, self._ttl_ms])
        if isinstance(holder, bytes):
            holder = holder.decode("utf-8", "replace")
        return holder if isinstance(holder, str) and holder != self.token else None

    async def release(self, instance: int) -> None:
        await self._eval(_RELEASE, [self.keys.lease(instance)], [self.token])


def holder_token() -> str:
    """Who holds a lease, for an operator reading the key: host, pid, and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


class InstanceLeaseService(Service):
    """Holds the process's instance byte in Redis and tells the pools which it is.

    Listeners (StratumPool.set_instance) are called with the byte when one
    is used and with None while none is. ``configured``: the byte from
    config.yaml, held from the start and claimed in Redis. ``state_file``:
    where the byte leased last is kept for the next start (None: nowhere,
    the first byte used is chosen at random).
    """

    log = Logger()
    name = "instance"

    def __init__(
        self,
        redis: Callable[[], RedisClient | None],
        clock: IReactorTime,
        configured: int | None = None,
        state_file: str | None = None,
        keys: InstanceKeys | None = None,
        ttl: float = LEASE_TTL,
        renew_interval: float = RENEW_INTERVAL,
        retry_interval: float = RETRY_INTERVAL,
        rng: random.Random | None = None,
        token: str | None = None,
    ) -> None:
        if renew_interval >= ttl:
            raise ValueError("the lease must be renewed more often than it expires")
        self._clock = clock
        self._configured = configured
        self._state_file = Path(state_file) if state_file is not None else None
        self._stored: int | None = None  # the byte in the state file, as read or written
        self._ttl = ttl
        self._renew_interval = renew_interval
        self._retry_interval = retry_interval
        self._rng = rng or random.SystemRandom()
        self.leases = InstanceLeases(redis, keys or InstanceKeys(), token or holder_token(), ttl)
        self._listeners: list[InstanceListener] = []
        self.held: int | None = configured  # the byte we hold in Redis, or believe we do
        self.instance: int | None = configured  # the byte the pools use; None: none
        self._preferred: int | None = None  # the byte to lease first: the one used before Redis answered
        self._next_step: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None  # when an unrenewed lease may have expired
        self._step: defer.Deferred[None] | None = None
        self._problem: str | None = None  # the last problem of the lease logged, so each is logged once
        self.outage = Outage(self.log, "instance byte: Redis", clock, REDIS_DOWN)

    def add_listener(self, listener: InstanceListener) -> None:
        self._listeners.append(listener)

    def startService(self) -> None:
        super().startService()
        if self.instance is None:
            self._use_provisional()
        self._schedule(0)

    def _use_provisional(self) -> None:
        # Before Redis answers: miners are served on a byte no lease covers yet.
        remembered = self._remembered()
        byte = remembered if remembered is not None else self._rng.randrange(INSTANCES)
        self._preferred = byte
        self.log.info(
            "instance byte {instance} used until Redis answers ({why})",
            instance=byte,
            why="the byte this host held last" if remembered is not None else "chosen at random",
        )
        self._announce(byte)

    def _remembered(self) -> int | None:
        """The byte in the state file, if there is one to read."""
        path = self._state_file
        if path is None:
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            self.log.warn("instance byte: {path} not read ({reason})", path=str(path), reason=e)
            return None
        try:
            byte = int(text.strip())
        except ValueError:
            byte = -1
        if not 0 <= byte < INSTANCES:
            self.log.warn(
                "instance byte: {path} holds no byte 0-255 ({text!r})", path=str(path), text=text[:40]
            )
            return None
        self._stored = byte
        return byte

    def _remember(self, byte: int) -> None:
        """Keep ``byte`` in the state file for the next start (written whole, then renamed)."""
        path = self._state_file
        if path is None or byte == self._stored:
            return
        partial = path.with_name(path.name + ".new")
        try:
            partial.write_text(f"{byte}\n", encoding="utf-8")
            os.replace(partial, path)
        except OSError as e:
            self.log.warn(
                "instance byte {instance} not kept in {path} ({reason}); the next start may use another",
                instance=byte,
                path=str(path),
                reason=e,
            )
            return
        self._stored = byte

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        for call in (self._next_step, self._deadline):
            if call is not None and call.active():
                call.cancel()
        self._next_step = self._deadline = None
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        # Runs after the pools stopped: no miner uses the byte any more.
        if self._step is not None:
            await self._step
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()  # set again by a step that was under way
        self._deadline = None
        held, self.held = self.held, None
        if held is None:
            return
        try:
            await self.leases.release(held)
        except REDIS_DOWN as e:
            # It expires by itself within the TTL.
            self.log.warn("instance byte {instance} not released: {reason}", instance=held, reason=e)
        except Exception:
            self.log.failure("instance byte {instance} not released", instance=held)
        else:
            self.log.info("instance byte {instance} released", instance=held)

    # The steps, one at a time.
    def _schedule(self, delay: float) -> None:
        if self.running:
            self._next_step = self._clock.callLater(delay, self._run)

    def _run(self) -> None:
        self._next_step = None
        self._step = defer.Deferred.fromCoroutine(self.step())
        self._step.addBoth(self._stepped)

    def _stepped(self, result: Failure | None) -> None:
        self._step = None
        if isinstance(result, Failure):
            self.log.failure("instance byte: lease step failed", result)
        waiting = self.held is None and self._configured is None
        self._schedule(self._retry_interval if waiting else self._renew_interval)

    async def step(self) -> None:
        """Lease, renew or claim the byte once (the timer calls this)."""
        sent_at = self._clock.seconds()  # a renewal extends the lease from no earlier than this
        try:
            if self._configured is not None:
                await self._claim(self._configured)
            elif self.held is not None and await self.leases.renew(self.held):
                self._renewed(self.held, sent_at)
            else:
                if self.held is not None:
                    self._lost()
                await self._lease(sent_at)
        except Exception as e:
            unleased = self.held is None and self.instance is not None
            self.outage.failed(
                e, "byte {instance} is used meanwhile" if unleased else "", instance=self.instance
            )
            return
        self.outage.succeeded()

    async def _lease(self, sent_at: float) -> None:
        preferred = self._preferred
        start = preferred if preferred is not None else self._rng.randrange(INSTANCES)
        instance = await self.leases.acquire(start)
        if instance is None:
            self._log_once(
                "full", "instance byte: all {count} are held; set one in config.yaml", count=INSTANCES
            )
            self._announce(None)
            return
        if preferred is not None and instance != preferred and self.instance == preferred:
            self.log.warn(
                "instance byte {preferred}, used until Redis answered, is held by another process: "
                "moving to {instance}",
                preferred=preferred,
                instance=instance,
            )
        self.held = self._preferred = instance
        self._remember(instance)
        self._renewed(instance, sent_at, leased=True)

    async def _claim(self, instance: int) -> None:
        other = await self.leases.claim(instance)
        if other is None:
            self._problem = None
            return
        # A process that leased the byte moves to another at its next
        # renewal; two configured with it take it from each other every
        # time, and this is logged every time.
        self.log.error(
            "instance byte {instance} (config.yaml) was held by {holder}: taken back; if this "
            "repeats, two processes are configured with the same byte and hand out the same extranonce1s",
            instance=instance,
            holder=other,
        )

    def _renewed(self, instance: int, sent_at: float, leased: bool = False) -> None:
        if leased or self.instance != instance:
            self.log.info(
                "instance byte {instance} leased (key {key})",
                instance=instance,
                key=self.leases.keys.lease(instance),
            )
        self._problem = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        delay = max(0.0, sent_at + self._ttl - self._clock.seconds())
        self._deadline = self._clock.callLater(delay, self._lapsed)
        self._announce(instance)

    def _lost(self) -> None:
        # Another process holds our byte: it may hand out the values our
        # miners have, so no new miner gets one until we lease another.
        self._log_once("taken", "instance byte {instance} is held by another process now")
        self.held = None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        self._announce(None)

    def _lapsed(self) -> None:
        self._deadline = None
        if self.instance is not None:
            self.log.warn(
                "instance byte {instance} not renewed for {ttl:.0f} s: new miners wait until Redis answers",
                instance=self.instance,
                ttl=self._ttl,
            )
            self._announce(None)

    def _announce(self, instance: int | None) -> None:
        if instance == self.instance:
            return
        self.instance = instance
        for listener in self._listeners:
            try:
                listener(instance)
            except Exception:
                self.log.failure("instance byte listener failed")

    def _log_once(self, problem: str, text: str, **fields: object) -> None:
        if problem != self._problem:
            self._problem = problem
            self.log.warn(text, instance=self.held, **fields)
