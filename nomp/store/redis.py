"""RedisService: the process's Redis connection, and what Redis's error replies mean.

Redis is found one of two ways (config.yaml's ``redis`` section):

- one address, ``host`` and ``port``: the connections go there, and come
  back there after an outage;
- Redis Sentinel, ``sentinels`` and ``master_name``: before every connection
  attempt the Sentinels are asked, in order, which server is the primary
  (``SENTINEL get-master-addr-by-name``; the first that answers is asked
  first next time), the server named is asked its ``ROLE`` (a Sentinel cut
  off from the others may name a server that is no longer the primary), and
  only a server that says ``master`` is connected to. The pool follows a
  failover three ways: a connection lost is made again through the
  Sentinels; a write answered ``READONLY`` (the server was made a replica
  under us) closes the connections, which are then made again the same way;
  and the Sentinels are asked every ``CHECK_INTERVAL`` seconds, so that a
  primary that was replaced while still up (a failover an operator asked
  for, a primary cut off from the Sentinels) does not keep taking writes
  that its demotion will throw away.

What a failover keeps. A replica takes its primary's writes asynchronously:
the new primary has what had reached it, no more. A share recorder's batch
script sets the batch's number in the same script as its records, and a
script's writes replicate together (one MULTI/EXEC in the replication
stream), so the new primary holds a batch and its number, or neither: a
batch whose reply was lost and which is sent again there is applied if it
had not replicated and skipped if it had, never counted twice. A batch the
old primary acknowledged and had not passed on is lost with it (the
recorder counted it written): on a local network at most the last moment's
batch, and none in test_sentinel's kills. A primary replaced while still up
takes writes until the pool leaves it (about two seconds in test_sentinel:
the Sentinels confirming the promotion, then CHECK_INTERVAL), and those are
lost when it is made a replica; its writes paused first (CLIENT PAUSE ...
WRITE), a planned switchover loses nothing, the waiting batches being sent
again to the new primary. Leases and locks are keys like any other: the
instance lease is taken again at its next renewal when the key did not
replicate (nomp.store.instance), and a payout journal entry waits for
``journal_replicas`` replicas (nomp.store.client.JournalWrites) so that
money never leaves on an entry a failover could lose.

txredisapi has a Sentinel client of its own (``txredisapi.Sentinel``); it is
not used: a lookup that finds no healthy primary waits out its whole
ten-second timeout even when every Sentinel has answered, a wrong password
leaves its connection open and never ready with the error only in an
unhandled Deferred, it keeps writing to a primary demoted while up, and its
Sentinel connections queue lookups on a Sentinel that is down until it is
back. Its connection pool (``RedisFactory``) is used as it is, with the
endpoint here in front of it.

txredisapi is used only here and in nomp.store.client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import txredisapi
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from nomp.config import RedisConfig
from nomp.config.model import SentinelAddress
from nomp.outage import Outage
from nomp.store.client import REDIS_DOWN, RedisClient, RedisUnavailable

CONNECT_TIMEOUT = 5.0  # seconds to connect to a Redis server
REPLY_TIMEOUT = 10.0  # seconds a command may wait for its reply before the connection is dropped
SENTINEL_TIMEOUT = 2.0  # seconds to connect to a Sentinel, and again for its answer
CHECK_INTERVAL = 1.0  # seconds between two questions to the Sentinels while connected
FIRST_RETRY = 0.1  # seconds before the first new attempt after a connection to the primary is lost
MAX_RETRY = 1.0  # seconds between attempts at most while following a failover

# Error replies Redis gives while it is busy (a long script), loading its
# data, failing over, short of memory or disk, or refusing our credentials:
# the same command may well succeed later, so they mean "Redis cannot take
# it just now", not "the command is wrong".
_UNAVAILABLE_REPLIES = frozenset(
    {
        "BUSY",
        "LOADING",
        "READONLY",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "NOREPLICAS",
        "MISCONF",
        "OOM",
        "NOAUTH",
        "WRONGPASS",
        "NOPERM",
    }
)


def unavailable_reply(error: BaseException) -> bool:
    """Whether ``error`` is an error reply meaning Redis cannot take the command just now."""
    if not isinstance(error, txredisapi.ResponseError):
        return False
    return str(error).split(" ", 1)[0] in _UNAVAILABLE_REPLIES


def refusal(error: BaseException) -> str | None:
    """Why Redis refused the command itself (a script error, a key of the wrong type),
    or None if ``error`` is not such a refusal: sending the same again would fail again."""
    if not isinstance(error, txredisapi.ResponseError) or unavailable_reply(error):
        return None
    return str(error) or type(error).__name__


def _demoted(error: BaseException) -> bool:
    """Whether ``error`` is the reply of a server that is a replica now."""
    return isinstance(error, txredisapi.ResponseError) and str(error).startswith("READONLY")


class PrimaryNotFound(RedisUnavailable):
    """No Sentinel named the primary."""


class NotPrimary(RedisUnavailable):
    """The server a Sentinel named is not the primary (yet, or any more)."""


class UnknownMaster(RedisUnavailable):
    """A Sentinel watches no primary of the configured ``master_name``."""


Address = tuple[str, int]


def _show(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _connect_once(reactor: Any, address: Address, password: str | None, timeout: float) -> Any:
    """A txredisapi handler of one connection that is never made again, for a question or two."""
    host, port = address
    factory = txredisapi.RedisFactory(
        None, None, 1, isLazy=False, password=password, replyTimeout=timeout, convertNumbers=False
    )
    factory.reconnect = False
    factory.startConnecting(HostnameEndpoint(reactor, host, port, timeout=timeout))
    try:
        return await _closed_if_cancelled(factory.deferred)
    except defer.CancelledError:
        await factory.disconnect()  # the attempt stops before the service says it has
        raise
    except ValueError as e:  # how txredisapi reports a connection or AUTH that failed
        raise RedisUnavailable(str(e)) from None


def _closed_if_cancelled(connecting: defer.Deferred[Any]) -> defer.Deferred[Any]:
    """``connecting``, a txredisapi connection being made, as a Deferred that can be
    cancelled (the service stopping during a lookup): txredisapi's cannot, and would
    fire later into one cancelled; the connection, if it is made, is closed then."""
    cancelled = False

    def cancel(_: defer.Deferred[Any]) -> None:
        nonlocal cancelled
        cancelled = True  # Twisted then fails ``made`` with CancelledError

    made: defer.Deferred[Any] = defer.Deferred(cancel)

    def connected(handler: Any) -> None:
        if cancelled:
            handler.disconnect()
        else:
            made.callback(handler)

    def failed(failure: Failure) -> None:
        if not cancelled:
            made.errback(failure)

    connecting.addCallbacks(connected, failed)
    return made


async def _check_role(reactor: Any, address: Address, password: str | None) -> None:
    """NotPrimary unless the server at ``address`` says it is a primary (ROLE)."""
    connection = await _connect_once(reactor, address, password, CONNECT_TIMEOUT)
    try:
        role = await connection.role()
    except txredisapi.ResponseError as e:
        raise RedisUnavailable(f"it answered {e}") from None
    finally:
        await connection.disconnect()
    if not role or role[0] != "master":
        raise NotPrimary(f"it says it is a {role[0] if role else '?'}")


Verify = Callable[[Address], Awaitable[None]]


class SentinelLocator:
    """Asks the Sentinels which server is the primary of ``master_name``.

    Each question is a connection of its own, closed once answered: a
    Sentinel that is down costs a refused connection, not a queue of
    questions waiting for it. Each Sentinel's outage is logged once.
    """

    log = Logger()

    def __init__(
        self,
        sentinels: Sequence[SentinelAddress],
        master_name: str,
        password: str | None,
        reactor: Any,
    ) -> None:
        self.master_name = master_name
        self._password = password
        self._reactor = reactor
        self._order: list[Address] = [(s.host, s.port) for s in sentinels]
        self._outages = {
            address: Outage(self.log, f"Redis Sentinel {_show(address)}", reactor, REDIS_DOWN)
            for address in self._order
        }
        self.named: Address | None = None  # the primary the Sentinels named last

    async def primary(self, verify: Verify | None = None) -> Address:
        """The primary's address, as the first Sentinel that answers names it; with
        ``verify``, the first whose answer passes it (a Sentinel cut off from the others
        may name a server that is no longer the primary, or that is gone).

        PrimaryNotFound, saying what each Sentinel did, when none does.
        """
        failures = []
        refused: dict[Address, str] = {}  # the servers ``verify`` refused, and why
        for sentinel in list(self._order):
            outage = self._outages[sentinel]
            try:
                address = await self._ask(sentinel)
            except defer.CancelledError:
                raise  # the service is stopping: no more questions
            except Exception as e:
                outage.failed(e)
                failures.append(f"{_show(sentinel)}: {type(e).__name__}: {e}")
                continue
            outage.succeeded()
            if verify is not None:
                if address not in refused:
                    try:
                        await verify(address)
                    except defer.CancelledError:
                        raise
                    except Exception as e:
                        refused[address] = f"{type(e).__name__}: {e}"
                if address in refused:
                    failures.append(f"{_show(sentinel)} named {_show(address)}: {refused[address]}")
                    continue
            self._order.remove(sentinel)
            self._order.insert(0, sentinel)
            self._note(address, sentinel)
            return address
        raise PrimaryNotFound(
            f"no Sentinel named the primary of {self.master_name!r} ({'; '.join(failures)})"
        )

    async def _ask(self, sentinel: Address) -> Address:
        connection = await _connect_once(self._reactor, sentinel, self._password, SENTINEL_TIMEOUT)
        try:
            reply = await connection.sentinel_get_master_addr_by_name(self.master_name)
        except txredisapi.ResponseError as e:  # NOAUTH, a Sentinel that is not one...
            raise RedisUnavailable(f"it answered {e}") from None
        finally:
            await connection.disconnect()
        if reply is None:
            raise UnknownMaster(f"it watches no primary named {self.master_name!r}")
        if not isinstance(reply, list) or len(reply) != 2:
            raise RedisUnavailable(f"unexpected answer {reply!r}")
        try:
            return str(reply[0]), int(reply[1])
        except ValueError:
            raise RedisUnavailable(f"unexpected answer {reply!r}") from None

    def _note(self, address: Address, sentinel: Address) -> None:
        previous, self.named = self.named, address
        if previous is None:
            self.log.info(
                "Redis: the primary of {master_name} is {primary} (named by the Sentinel {sentinel})",
                master_name=self.master_name,
                primary=_show(address),
                sentinel=_show(sentinel),
            )
        elif previous != address:
            self.log.warn(
                "Redis: the primary of {master_name} is now {primary}, was {previous} "
                "(named by the Sentinel {sentinel}): following the failover",
                master_name=self.master_name,
                primary=_show(address),
                previous=_show(previous),
                sentinel=_show(sentinel),
            )


@implementer(IStreamClientEndpoint)
class PrimaryEndpoint:
    """Connects to the primary the Sentinels name, checked with ROLE, asking them anew
    at every attempt (txredisapi's connection pool makes one at every reconnection)."""

    log = Logger()

    def __init__(
        self, reactor: Any, locator: SentinelLocator, password: str | None, on_connected: Any
    ) -> None:
        self._reactor = reactor
        self._locator = locator
        self._password = password
        self._on_connected = on_connected  # called with (address named, peer) of each connection made
        self._outage = Outage(
            self.log, f"Redis primary of {locator.master_name}", reactor, (NotPrimary, *REDIS_DOWN)
        )

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:  # noqa: N803 - the interface's name
        return defer.Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        try:
            address = await self._locator.primary(self._check_role)
            host, port = address
            endpoint = HostnameEndpoint(self._reactor, host, port, timeout=CONNECT_TIMEOUT)
            protocol: IProtocol = await endpoint.connect(factory)
        except defer.CancelledError:
            raise  # the service is stopping
        except Exception as e:
            self._outage.failed(e)
            raise
        self._outage.succeeded()
        peer = protocol.transport.getPeer()  # type: ignore[attr-defined]  # the proxy forwards it
        self._on_connected(address, (peer.host, peer.port))
        return protocol

    async def _check_role(self, address: Address) -> None:
        await _check_role(self._reactor, address, self._password)


class _Protocol(txredisapi.RedisProtocol):  # type: ignore[misc]  # txredisapi is untyped
    """txredisapi's protocol with Nagle's algorithm off: a command longer than a segment
    (a batch script's arguments) would otherwise wait, for its last part, for the
    server's delayed acknowledgement of the first, which the server sends only after
    tens of milliseconds since it answers nothing until it has the whole command."""

    def connectionMade(self) -> Any:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        return super().connectionMade()


class _Factory(txredisapi.RedisFactory):  # type: ignore[misc]  # txredisapi is untyped
    """txredisapi's connection pool, its connections without Nagle's algorithm."""

    protocol = _Protocol


class _FollowingFactory(_Factory):
    """The pool, trying again soon after a connection is lost: the Sentinels are asked at
    each attempt, and a failover takes seconds."""

    def retryDelay(self, attempt: int) -> float:
        return float(min(FIRST_RETRY * 2 ** max(0, attempt - 1), MAX_RETRY))


class RedisConnection:
    """What RedisService hands out: txredisapi's handler, with EVAL, EVAL followed by
    WAIT on the same connection, and the number of replicas a payout journal entry must
    reach (``journal_replicas``, see nomp.store.client.ReplicatedWrites)."""

    def __init__(
        self,
        handler: Any,
        clock: IReactorTime,
        journal_replicas: int,
        journal_timeout: float,
        on_demoted: Any = None,
    ) -> None:
        self._handler = handler
        self._clock = clock
        self.journal_replicas = journal_replicas
        self.journal_timeout = journal_timeout
        self._on_demoted = on_demoted  # called when a write is answered READONLY

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        running: defer.Deferred[Any] = self._handler.eval(script, keys, args)
        if self._on_demoted is not None:
            running.addErrback(self._check_demoted)
        return running

    def _check_demoted(self, failure: Failure) -> Failure:
        if failure.value is not None and _demoted(failure.value):
            self._on_demoted()
        return failure

    def eval_replicated(
        self, script: str, keys: list[str], args: list[Any], replicas: int, timeout: float
    ) -> defer.Deferred[tuple[Any, int]]:
        return defer.Deferred.fromCoroutine(self._eval_replicated(script, keys, args, replicas, timeout))

    async def _eval_replicated(
        self, script: str, keys: list[str], args: list[Any], replicas: int, timeout: float
    ) -> tuple[Any, int]:
        # WAIT counts the replicas that have this connection's last write, so it
        # must follow the script on the same connection; the connection is taken
        # from the pool meanwhile, so nothing else queues behind the WAIT.
        factory = self._handler._factory
        taking = factory.getConnection(peek=False)
        taking.addTimeout(REPLY_TIMEOUT, self._clock)
        connection = await taking
        try:
            try:
                result = await connection.eval(script, keys, args)
            except Exception as e:
                if self._on_demoted is not None and _demoted(e):
                    self._on_demoted()
                raise
            # txredisapi's own reply timeout is left out: WAIT may take its whole timeout.
            waiting = connection.execute_command("WAIT", replicas, int(timeout * 1000), apply_timeout=False)
            waiting.addTimeout(timeout + REPLY_TIMEOUT, self._clock)
            reached = int(await waiting)
        finally:
            factory.connectionQueue.put(connection)
        return result, reached

    def disconnect(self) -> defer.Deferred[None]:
        stopping: defer.Deferred[None] = self._handler.disconnect()
        return stopping

    @property
    def connected(self) -> int:
        """How many of the pool's connections are up."""
        return int(self._handler._factory.size)


def _default_reactor() -> Any:
    from twisted.internet import reactor  # noqa: PLC0415 - only as the default

    return reactor


class RedisService(Service):
    """Owns a small txredisapi connection pool, which reconnects by itself: to one
    address, or to the primary the Sentinels name (see the module's docstring)."""

    name = "redis"
    log = Logger()

    def __init__(
        self,
        config: RedisConfig,
        pool_size: int = 2,
        reactor: Any = None,
        check_interval: float | None = CHECK_INTERVAL,
    ) -> None:
        """``check_interval``: seconds between questions to the Sentinels while connected;
        None: none (a test of the other ways a failover is followed)."""
        self.config = config
        self._pool_size = pool_size
        self._check_interval = check_interval
        # txredisapi's own timers and connections are on the global reactor whatever is given.
        self._reactor = reactor if reactor is not None else _default_reactor()
        self._handler: Any = None
        self._connection: RedisConnection | None = None
        self._locator: SentinelLocator | None = None
        self._checking: task.LoopingCall | None = None
        self._check: defer.Deferred[None] | None = None  # the last question to the Sentinels
        # The primary of the last connection made: as the Sentinels named it, and its peer address.
        self._named: Address | None = None
        self._peer: Address | None = None

    def startService(self) -> None:
        super().startService()
        config = self.config
        on_demoted = None
        if config.sentinels is None:
            # txredisapi's lazyConnectionPool, with the protocol above.
            factory = _Factory(
                f"{config.host}:{config.port}",
                config.db,
                self._pool_size,
                isLazy=True,
                password=config.password,
                replyTimeout=REPLY_TIMEOUT,
            )
            factory.startConnecting(
                HostnameEndpoint(_default_reactor(), config.host, config.port, timeout=CONNECT_TIMEOUT)
            )
            self._handler = factory.handler
        else:
            assert config.master_name is not None  # RedisConfig's checks
            self._locator = SentinelLocator(
                config.sentinels, config.master_name, config.sentinel_password, self._reactor
            )
            factory = _FollowingFactory(
                None,
                config.db,
                self._pool_size,
                isLazy=True,
                password=config.password,
                replyTimeout=REPLY_TIMEOUT,
            )
            endpoint = PrimaryEndpoint(self._reactor, self._locator, config.password, self._connected)
            factory.startConnecting(endpoint)
            self._handler = factory.handler
            on_demoted = self._demoted
            if self._check_interval is not None:
                self._checking = task.LoopingCall(self._check_primary)
                self._checking.clock = self._reactor
                self._checking.start(self._check_interval, now=False)
        self._connection = RedisConnection(
            self._handler, self._reactor, config.journal_replicas_required, config.journal_timeout, on_demoted
        )

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        if self._checking is not None and self._checking.running:
            self._checking.stop()
        check, self._check = self._check, None
        handler, self._handler = self._handler, None
        self._connection = None
        if handler is None:
            return None
        stopping: list[defer.Deferred[Any]] = [handler.disconnect()]
        if check is not None and not check.called:
            check.cancel()  # its questions' connections are closed as they end
            stopping.append(check)
        return defer.gatherResults(stopping, consumeErrors=True).addCallback(lambda _: None)

    def client(self) -> RedisClient | None:
        """The client while at least one connection is up, else None.

        Commands sent with no connection would queue inside txredisapi until
        Redis returns; callers rather keep their own bounded buffer. The
        client is the same object for the service's life, failovers included.
        """
        connection = self._connection
        if connection is None or connection.connected == 0:
            return None
        return connection

    # -- following the primary (Sentinel only)

    def _connected(self, named: Address, peer: Address) -> None:
        """A connection was made to ``peer``, the server the Sentinels named ``named``."""
        previous, self._named, self._peer = self._peer, named, peer
        if previous is not None and previous != peer:
            # A connection lost alone found a new primary: the others leave the old one.
            self._drop_connections(keep=peer)

    def _drop_connections(self, keep: Address | None = None) -> None:
        """Close every connection but those to ``keep``: each is made again, through the Sentinels."""
        handler = self._handler
        if handler is None:
            return
        for connection in list(handler._factory.pool):
            peer = connection.transport.getPeer()
            if keep is None or (peer.host, peer.port) != keep:
                connection.transport.loseConnection()

    def _demoted(self) -> None:
        if self._peer is None:
            return  # the connections are being made again already
        self.log.warn(
            "Redis: {server} answered READONLY: it is a replica now; asking the Sentinels again",
            server=_show(self._peer),
        )
        self._named = self._peer = None
        self._drop_connections()

    def _check_primary(self) -> defer.Deferred[None]:
        self._check = defer.Deferred.fromCoroutine(self._check_primary_now())
        self._check.addErrback(self._check_failed)
        return self._check

    def _check_failed(self, failure: Failure) -> None:
        if not failure.check(defer.CancelledError):  # cancelled: the service stopped
            self.log.failure("Redis: asking the Sentinels for the primary failed", failure)

    async def _check_primary_now(self) -> None:
        locator, connection = self._locator, self._connection
        if locator is None or connection is None or connection.connected == 0 or self._named is None:
            return  # no connection: each attempt to make one asks the Sentinels
        try:
            named = await locator.primary()
        except RedisUnavailable:
            return  # each Sentinel's outage is logged; the connections stay as they are
        if self._named is not None and named != self._named:
            self.log.warn(
                "Redis: closing the connections to {previous}: the Sentinels name {primary} the primary now",
                previous=_show(self._named),
                primary=_show(named),
            )
            self._named = self._peer = None
            self._drop_connections()


async def connect_once(config: RedisConfig, reactor: Any = None) -> RedisConnection:
    """One connection to Redis that is never made again, for a command that runs once
    (nomp-payments): to ``host``/``port``, or to the primary the Sentinels name, checked
    with ROLE. Raises RedisUnavailable when Redis cannot be reached."""
    clock = reactor if reactor is not None else _default_reactor()
    address: Address = (config.host, config.port)
    if config.sentinels is not None:
        assert config.master_name is not None  # RedisConfig's checks
        locator = SentinelLocator(config.sentinels, config.master_name, config.sentinel_password, clock)
        address = await locator.primary(lambda named: _check_role(clock, named, config.password))
    host, port = address
    try:
        handler = await txredisapi.Connection(
            host,
            port,
            dbid=config.db,
            reconnect=False,
            password=config.password,
            connectTimeout=CONNECT_TIMEOUT,
            replyTimeout=REPLY_TIMEOUT,
        )
    except ValueError as e:  # how txredisapi reports a connection or AUTH that failed
        raise RedisUnavailable(f"{_show(address)}: {e}") from None
    return RedisConnection(handler, clock, config.journal_replicas_required, config.journal_timeout)
