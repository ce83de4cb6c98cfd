"""ControlService: the operator's commands, one per line.

One reply line per command ("ok ..." or "error ..."), so it works from
telnet as well as from ``nomp-cli``. ``<pool>`` is a pool's name or its
coin's; ``<target>`` picks miners (see nomp.stratum.targets):

    help | pools | quit
    blocknotify <pool> [<blockhash>]
    miners <pool> <target>                        list the connections picked
    reconnect <pool> <target> [<host> <port> [<wait>]]   client.reconnect
    message <pool> <target> <text...>             client.show_message
    kick <pool> <target>                          close the connections picked
    bans <pool>                                   the bans in force
    ban <pool> <ip> [<seconds>] [<reason...>]
    unban <pool> <ip>
    status                                        uptime, pools, miners, shares/s, Redis
    loglevel <level>                              debug, info, warn, error or critical
    payments <pool> run|audit                     one payment run now, or the audit
    reload | reloadpool <pool>                    re-read the conf folder (see nomp.reload)
    coinswitch <switch> <pool>                    move a switch's miners to another of its pools
    shutdown                                      stop the process, as SIGTERM does

With ``control.token_file`` set, a connection's first line must be
``auth <token>``; anything else, or a wrong token, closes it. Commands
that take time (payments, reload) are answered when done; lines sent
meanwhile are answered after, in order.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from nomp.control.operations import status_totals
from nomp.control.token import token_matches
from nomp.pool.service import PoolService
from nomp.stratum.banning import normalise_ip
from nomp.stratum.stratumpool import StratumPool
from nomp.stratum.targets import TARGET_SYNTAX, MinerTarget, TargetError, describe_connection, parse_target
from nomp.switching import Switches, SwitchRefused

_BLOCK_HASH = re.compile(r"[0-9a-fA-F]{64}")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
MAX_MESSAGE = 512  # characters of a client.show_message text
MAX_LISTED = 100  # connections a ``miners`` reply names
DEFAULT_BAN_REASON = "banned by the operator"
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
AUTH_REQUIRED = "error authentication required: the first line must be auth <token>"

USAGE = {
    "blocknotify": "blocknotify <pool> [<blockhash>]",
    "miners": "miners <pool> <target>",
    "reconnect": "reconnect <pool> <target> [<host> <port> [<wait seconds>]]",
    "message": "message <pool> <target> <text...>",
    "kick": "kick <pool> <target>",
    "bans": "bans <pool>",
    "ban": "ban <pool> <ip> [<seconds>] [<reason...>]",
    "unban": "unban <pool> <ip>",
    "status": "status",
    "loglevel": f"loglevel {'|'.join(LOG_LEVELS)}",
    "payments": "payments <pool> run|audit",
    "reload": "reload",
    "reloadpool": "reloadpool <pool>",
    "coinswitch": "coinswitch <switch> <pool>",
    "switches": "switches",
    "metrics": "metrics",
    "shutdown": "shutdown",
}
HELP = (
    "commands: help | pools | "
    + " | ".join(USAGE.values())
    + f" | quit; <target> is {TARGET_SYNTAX}; <pool> is a pool's name or its coin's; "
    + "with a token, the first line is auth <token>"
)


# With worker processes (nomp.workers) every command but these also goes to
# each worker, so a command added to the control port reaches them as it is
# (a reload reaches them through the main process's reload itself, as
# SIGHUP's does: nomp.workers.reload; a coinswitch through the main
# process's switches, as profit switching's moves do: nomp.switching.relay):
NOT_FORWARDED = frozenset(
    {"help", "pools", "payments", "shutdown", "auth", "reload", "reloadpool", "coinswitch"}
)
# and these run in the main process too, whose own state they are about
# (the others are about miners, which only the workers have).
ALSO_HERE = frozenset({"status", "loglevel"})

Forward = Callable[[str], "defer.Deferred[list[tuple[str, str]]]"]


class CommandError(Exception):
    """A command that cannot be carried out; the text is the reply (after "error ")."""


class Operations(Protocol):
    """What the control port asks of the whole process (nomp.control.operations)."""

    def status(self) -> str:
        """The process at a glance, for ``status``'s answer."""
        ...

    def set_log_level(self, level: str) -> str:
        """Log from ``level`` on; the level before."""
        ...

    def payments(self, pool: str, action: str) -> defer.Deferred[str]:
        """``run`` or ``audit`` for a pool (its name or its coin's); the answer line."""
        ...

    def reload(self, pool: str | None) -> defer.Deferred[str]:
        """Reload everything, or one pool; the answer line."""
        ...

    def shutdown(self) -> None:
        """Stop the process, gracefully."""
        ...


Answer = str | defer.Deferred[str]


class ControlProtocol(LineOnlyReceiver):
    """One admin connection."""

    log = Logger()
    delimiter = b"\n"
    MAX_LENGTH = 4096

    def __init__(
        self,
        pools: Mapping[str, PoolService],
        servers: Mapping[str, StratumPool] | None = None,
        operations: Operations | None = None,
        token: Callable[[], str | None] | None = None,
        clock: Any = None,
        forward: Forward | None = None,
        switches: Callable[[], Switches | None] = lambda: None,
        switch_documents: Callable[[], list[dict[str, Any]]] | None = None,
        miner_metrics: Callable[[], str] | None = None,
    ) -> None:
        """``token``: the shared secret now (None: none needed); ``clock`` runs
        ``shutdown`` once its answer is written (the reactor); ``forward``
        sends a command line to every worker process and fires with each
        one's (name, answer); ``switches``: the switching ports, once built
        (None: there are none); ``switch_documents``: each switch as
        /api/switching shows it, for ``switches``; ``miner_metrics``: the
        miners' Prometheus families as text, for ``metrics`` (None: the
        command is not served here)."""
        self._pools = pools
        self._switches = switches
        self._switch_documents = switch_documents
        self._miner_metrics = miner_metrics
        self._forward = forward
        self._servers: Mapping[str, StratumPool] = servers if servers is not None else {}
        self._operations = operations
        self._token = token or (lambda: None)
        self._clock = clock
        self._authenticated = False
        self._waiting: defer.Deferred[str] | None = None  # a command still working on its answer
        self._queued: deque[bytes] = deque()  # lines that came meanwhile
        self._commands: dict[str, Callable[[list[str]], Answer]] = {
            "help": lambda _: f"ok {HELP}",
            "pools": self._list_pools,
            "blocknotify": self._blocknotify,
            "miners": self._miners,
            "reconnect": self._reconnect,
            "message": self._message,
            "kick": self._kick,
            "bans": self._bans,
            "ban": self._ban,
            "unban": self._unban,
            "status": self._status,
            "loglevel": self._loglevel,
            "payments": self._payments,
            "reload": self._reload,
            "reloadpool": self._reloadpool,
            "coinswitch": self._coinswitch,
            "switches": self._switch_states,
            "metrics": self._metrics,
            "shutdown": self._shutdown,
            "auth": self._auth_again,
        }

    def lineReceived(self, line: bytes) -> None:
        if self._waiting is not None:
            self._queued.append(line)
            return
        try:
            words = line.decode("utf-8").split()
        except UnicodeDecodeError:
            self._answer("error not UTF-8 text")
            return
        if not words:
            return
        if not self._authenticated and not self._authenticate(words):
            return
        command, args = words[0].lower(), words[1:]
        if command in ("quit", "exit"):
            self._answer("ok bye")
            assert self.transport is not None
            self.transport.loseConnection()
            return
        handler = self._commands.get(command)
        if handler is None:
            self._answer(f"error unknown command {command[:40]!r}; {HELP}")
            return
        if self._forward is not None and command not in NOT_FORWARDED:
            answer: Answer = self._everywhere(command, handler, args, " ".join(words))
        else:
            answer = self._run(command, handler, args)
        if isinstance(answer, str):
            self._answer(answer)
            return
        self._waiting = answer
        answer.addErrback(self._failed, command)
        answer.addCallback(self._answered)

    def _run(self, command: str, handler: Callable[[list[str]], Answer], args: list[str]) -> Answer:
        try:
            return handler(args)
        except CommandError as e:
            return f"error {e}"
        except Exception:
            self.log.failure("control command {command} failed", command=command)
            return "error internal error"

    def _everywhere(
        self, command: str, handler: Callable[[list[str]], Answer], args: list[str], line: str
    ) -> defer.Deferred[str]:
        """The command run by every worker (and here too if it is in ALSO_HERE)."""
        return defer.Deferred.fromCoroutine(self._run_everywhere(command, handler, args, line))

    async def _run_everywhere(
        self, command: str, handler: Callable[[list[str]], Answer], args: list[str], line: str
    ) -> str:
        assert self._forward is not None
        there = self._forward(line)
        here: str | None = None
        if command in ALSO_HERE:
            answer = self._run(command, handler, args)
            here = answer if isinstance(answer, str) else await answer
        answers = await there
        combined = combine_answers(here, answers)
        return combined + status_totals(answers) if command == "status" else combined

    def _failed(self, failure: Any, command: str) -> str:
        self.log.failure("control command {command} failed", failure, command=command)
        return "error internal error"

    def _answered(self, text: str) -> None:
        self._waiting = None
        self._answer(text)
        while self._queued and self._waiting is None:
            self.lineReceived(self._queued.popleft())

    def _authenticate(self, words: list[str]) -> bool:
        """Whether the connection may go on to ``words``' command; the first
        line of a connection to a port with a token must give it."""
        token = self._token()
        if token is None:
            self._authenticated = True
            return True
        assert self.transport is not None
        if words[0].lower() != "auth" or len(words) != 2:
            self._answer(AUTH_REQUIRED)
        elif not token_matches(words[1], token):
            self.log.warn("control port: wrong token from {peer}", peer=self.transport.getPeer())
            self._answer("error wrong token")
        else:
            self._authenticated = True
            self._answer("ok authenticated")
            return False
        self.transport.loseConnection()
        return False

    def lineLengthExceeded(self, line: bytes) -> None:
        self._answer("error line too long")
        assert self.transport is not None
        self.transport.loseConnection()

    def _answer(self, text: str) -> None:
        # One line per reply, whatever a miner put in its user agent.
        self.sendLine(_CONTROL_CHARACTERS.sub(" ", text).encode("utf-8"))

    # Finding things.
    def _find_pool(self, name: str) -> PoolService | None:
        wanted = name.lower()
        for pool in self._pools.values():
            if wanted in (pool.config.name.lower(), pool.config.coin.name.lower()):
                return pool
        return None

    def _find_server(self, name: str) -> StratumPool:
        wanted = name.lower()
        for server in self._servers.values():
            if wanted in (server.config.name.lower(), server.config.coin.name.lower()):
                return server
        raise CommandError(f"no pool {name[:64]!r}")

    def _pool_and_target(self, command: str, args: list[str]) -> tuple[StratumPool, MinerTarget, list[str]]:
        if len(args) < 2:
            raise CommandError(f"usage: {USAGE[command]}")
        server = self._find_server(args[0])
        try:
            target, rest = parse_target(args[1:])
        except TargetError as e:
            raise CommandError(f"{e}; usage: {USAGE[command]}") from None
        return server, target, rest

    # Commands.
    def _list_pools(self, args: list[str]) -> str:
        listed = [
            f"{p.config.name} ({p.config.coin.name}, {'ready' if p.ready else 'starting'})"
            for p in self._pools.values()
        ]
        return "ok " + ("; ".join(listed) or "no pools")

    def _blocknotify(self, args: list[str]) -> str:
        if not 1 <= len(args) <= 2:
            return f"error usage: {USAGE['blocknotify']}"
        pool = self._find_pool(args[0])
        if pool is None:
            return f"error no pool {args[0][:64]!r}"
        block_hash = args[1] if len(args) == 2 else None
        if block_hash is not None and not _BLOCK_HASH.fullmatch(block_hash):
            return "error a block hash is 64 hex digits"
        pool.block_notify(block_hash)
        return f"ok {pool.config.name} notified"

    def _miners(self, args: list[str]) -> str:
        server, target, rest = self._pool_and_target("miners", args)
        if rest:
            raise CommandError(f"usage: {USAGE['miners']}")
        chosen = server.messages.miners(target)
        if not chosen:
            return f"ok {server.config.name}: no miners ({target.describe()})"
        listed = [describe_connection(protocol) for protocol in chosen[:MAX_LISTED]]
        if len(chosen) > MAX_LISTED:
            listed.append(f"and {len(chosen) - MAX_LISTED} more")
        count = _count(len(chosen), "miner")
        return f"ok {server.config.name}: {count} ({target.describe()}): " + "; ".join(listed)

    def _reconnect(self, args: list[str]) -> str:
        server, target, rest = self._pool_and_target("reconnect", args)
        if len(rest) not in (0, 2, 3):
            raise CommandError(f"usage: {USAGE['reconnect']}")
        host = port = wait = None
        if rest:
            host = rest[0]
            port = _whole_number(rest[1], "port", 1, 65535)
            if len(rest) == 3:
                wait = _whole_number(rest[2], "wait", 0, 86400)
        sent = server.messages.send_reconnect(target, host, port, wait)
        return _sent(server, "client.reconnect", sent, target)

    def _message(self, args: list[str]) -> str:
        server, target, rest = self._pool_and_target("message", args)
        text = " ".join(rest)
        if not text:
            raise CommandError(f"usage: {USAGE['message']}")
        if len(text) > MAX_MESSAGE:
            raise CommandError(f"a message is at most {MAX_MESSAGE} characters")
        sent = server.messages.show_message(target, text)
        return _sent(server, "client.show_message", sent, target)

    def _auth_again(self, args: list[str]) -> str:
        if self._token() is None:
            return "error this control port has no token to check (control.token_file is not set)"
        return "error already authenticated"

    def _kick(self, args: list[str]) -> str:
        server, target, rest = self._pool_and_target("kick", args)
        if rest:
            raise CommandError(f"usage: {USAGE['kick']}")
        chosen = server.messages.miners(target)
        if not chosen:
            raise CommandError(f"{server.config.name}: no miner matches {target.describe()}")
        for connection in chosen:
            connection.close()
        self.log.info(
            "pool {pool}: {miners} miners kicked by the operator ({target})",
            pool=server.config.name,
            miners=len(chosen),
            target=target.describe(),
        )
        return f"ok {server.config.name}: {_count(len(chosen), 'miner')} kicked ({target.describe()})"

    # The whole process.
    def _process(self, command: str, args: list[str], count: tuple[int, ...] = (0,)) -> Operations:
        if len(args) not in count:
            raise CommandError(f"usage: {USAGE[command]}")
        if self._operations is None:
            raise CommandError(f"{command} is not available on this control port")
        return self._operations

    def _status(self, args: list[str]) -> str:
        return "ok " + self._process("status", args).status()

    def _loglevel(self, args: list[str]) -> str:
        operations = self._process("loglevel", args, (1,))
        level = args[0].lower()
        if level == "warning":
            level = "warn"
        if level not in LOG_LEVELS:
            raise CommandError(f"unknown log level {args[0][:16]!r}; usage: {USAGE['loglevel']}")
        before = operations.set_log_level(level)
        return f"ok log level {level} (was {before})"

    def _payments(self, args: list[str]) -> Answer:
        operations = self._process("payments", args, (2,))
        action = args[1].lower()
        if action not in ("run", "audit"):
            raise CommandError(f"unknown payments action {args[1][:16]!r}; usage: {USAGE['payments']}")
        return operations.payments(args[0], action)

    def _reload(self, args: list[str]) -> Answer:
        return self._process("reload", args).reload(None)

    def _reloadpool(self, args: list[str]) -> Answer:
        return self._process("reloadpool", args, (1,)).reload(args[0])

    def _coinswitch(self, args: list[str]) -> Answer:
        if len(args) != 2:
            raise CommandError(f"usage: {USAGE['coinswitch']}")
        switches = self._switches()
        if switches is None:
            raise CommandError("no switching ports in this process (config.yaml: switching)")

        def refused(failure: Any) -> str:
            failure.trap(SwitchRefused)
            return f"error {failure.value.message}"

        answer = switches.switch(args[0], args[1], "operator")
        return answer.addCallbacks(lambda line: f"ok {line}", refused)

    def _switch_states(self, args: list[str]) -> str:
        """Machine-readable: the main process of workers sums their miners from it."""
        if args:
            raise CommandError(f"usage: {USAGE['switches']}")
        if self._switch_documents is None:
            raise CommandError("switches is not available on this control port")
        return "ok " + json.dumps(self._switch_documents(), separators=(",", ":"))

    def _metrics(self, args: list[str]) -> str:
        """Machine-readable: the main process of workers shows their figures on its /metrics."""
        if args:
            raise CommandError(f"usage: {USAGE['metrics']}")
        if self._miner_metrics is None:
            raise CommandError("metrics is not available on this control port")
        return "ok " + json.dumps(self._miner_metrics())

    def _shutdown(self, args: list[str]) -> str:
        operations = self._process("shutdown", args)
        self.log.info("shutdown asked on the control port")
        # After this answer is on its way: the reactor's stop closes this connection.
        if self._clock is not None:
            self._clock.callLater(0, operations.shutdown)
        else:
            operations.shutdown()
        return "ok shutting down"

    def _bans(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError(f"usage: {USAGE['bans']}")
        server = self._find_server(args[0])
        now = server.clock.seconds()
        bans = server.bans.list()
        if not bans:
            return f"ok {server.config.name}: no bans"
        listed = [f"{ban.ip} ({math.ceil(ban.remaining(now))} s left: {ban.reason})" for ban in bans]
        return f"ok {server.config.name}: {_count(len(bans), 'ban')}: " + "; ".join(listed)

    def _ban(self, args: list[str]) -> str:
        if len(args) < 2:
            raise CommandError(f"usage: {USAGE['ban']}")
        server = self._find_server(args[0])
        ip = _ip(args[1])
        rest = args[2:]
        duration = _seconds(rest[0]) if rest else None
        if duration is not None:
            rest = rest[1:]
        reason = " ".join(rest) or DEFAULT_BAN_REASON
        try:
            ban = server.bans.ban(ip, duration, reason)
        except ValueError as e:
            raise CommandError(str(e)) from None
        if ban is None:
            raise CommandError(f"{server.config.name}: {ip} is whitelisted: not banned")
        seconds = math.ceil(ban.remaining(server.clock.seconds()))
        return f"ok {server.config.name}: {ban.ip} banned for {seconds} s: {ban.reason}"

    def _unban(self, args: list[str]) -> str:
        if len(args) != 2:
            raise CommandError(f"usage: {USAGE['unban']}")
        server = self._find_server(args[0])
        ip = _ip(args[1])
        if server.bans.lift(ip):
            return f"ok {server.config.name}: {ip} unbanned"
        return f"ok {server.config.name}: {ip} was not banned"


def combine_answers(here: str | None, there: list[tuple[str, str]]) -> str:
    """One answer line from the main process's (None: it did not run the
    command) and the workers': ok when the main process's is and at least
    one worker's is (a command about miners finds them in some workers only),
    with every answer listed."""
    ok = (here is None or here.startswith("ok")) and any(answer.startswith("ok") for _, answer in there)
    listed = [f"{name}: {answer}" for name, answer in there] or ["no worker is running"]
    if here is not None:
        listed.insert(0, f"main: {here}")
    return ("ok " if ok else "error ") + " | ".join(listed)


def _sent(server: StratumPool, method: str, sent: int, target: MinerTarget) -> str:
    if sent == 0:
        raise CommandError(f"{server.config.name}: no miner matches {target.describe()}")
    return f"ok {server.config.name}: {method} sent to {_count(sent, 'miner')} ({target.describe()})"


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"


def _ip(text: str) -> str:
    try:
        return normalise_ip(text)
    except ValueError:
        raise CommandError(f"{text[:64]!r} is not an IP address") from None


def _seconds(text: str) -> float | None:
    """A ban time in seconds; None when the word is not a number (it starts the reason)."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        raise CommandError("a ban time is a number of seconds > 0")
    return seconds


def _whole_number(text: str, name: str, lowest: int, highest: int) -> int:
    if not text.isascii() or not text.isdigit() or not lowest <= int(text) <= highest:
        raise CommandError(f"{name} must be a whole number {lowest}-{highest}, not {text[:16]!r}")
    return int(text)


class ControlFactory(Factory):
    noisy = False

    def __init__(
        self,
        pools: Mapping[str, PoolService],
        servers: Mapping[str, StratumPool] | None = None,
        operations: Operations | None = None,
        token: Callable[[], str | None] | None = None,
        clock: Any = None,
        forward: Forward | None = None,
        switches: Callable[[], Switches | None] = lambda: None,
    ) -> None:
        self.pools = pools
        self.switches = switches
        self.servers = servers
        self.operations = operations
        self.token = token
        self.clock = clock
        self.forward = forward

    def buildProtocol(self, addr: IAddress | None) -> ControlProtocol:
        return ControlProtocol(
            self.pools, self.servers, self.operations, self.token, self.clock, self.forward, self.switches
        )


def control_service(
    listen: str,
    pools: Mapping[str, PoolService],
    reactor: Any,
    servers: Mapping[str, StratumPool] | None = None,
    operations: Operations | None = None,
    token: Callable[[], str | None] | None = None,
    timers: tuple[Any, ...] = (),
    forward: Forward | None = None,
    switches: Callable[[], Switches | None] = lambda: None,
) -> MultiService:
    """The control port as a service of the tree. ``servers``: each pool's
    StratumPool by pool name, for the commands about miners and bans;
    ``operations``: the process, for status, reload and the rest; ``token``:
    the secret a connection must give first, if any; ``timers``: services
    the control port's answers rely on (the share rates of ``status``);
    ``forward``: the worker processes' channels, when there are workers;
    ``switches``: the switching ports (coinswitch), once built."""
    service = MultiService()
    service.setName("control")
    factory = ControlFactory(pools, servers, operations, token, reactor, forward, switches)
    listening = StreamServerEndpointService(serverFromString(reactor, listen), factory)
    listening._raiseSynchronously = True
    listening.setServiceParent(service)
    for timer in timers:
        timer.setServiceParent(service)
    return service
