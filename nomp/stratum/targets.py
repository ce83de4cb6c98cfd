"""Which of a pool's miners an operator's command reaches.

A target is written the way the control port reads it:

    all                 every connection of the pool
    worker NAME         the connections that authorized NAME, or NAME.<rig>
                        (an address reaches all of its rigs)
    ip IP               every connection from IP
    ip IP:PORT          one connection (IPv6: ``ip [2001:db8::1]:4000``)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nomp.stratum.banning import normalise_ip
from nomp.stratum.connection import Connection

TARGET_SYNTAX = "all|worker <name>|ip <ip>[:<port>]"


class TargetError(ValueError):
    """Words that do not name a target; the text says why."""


@dataclass(frozen=True, slots=True)
class MinerTarget:
    """Every connection (no field set), a worker's, an IP's, or one connection (IP and port)."""

    worker: str | None = None
    ip: str | None = None  # normalised (see normalise_ip)
    port: int | None = None  # with ip: one connection

    def describe(self) -> str:
        if self.worker is not None:
            return f"worker {self.worker}"
        if self.ip is not None and self.port is not None:
            return f"connection {_host_port(self.ip, self.port)}"
        if self.ip is not None:
            return f"ip {self.ip}"
        return "all miners"

    def matches(self, workers: Iterable[str], ip: str | None, port: int | None) -> bool:
        """Whether a connection with these authorized workers, IP and peer port is picked."""
        if self.worker is not None:
            name, rigs = self.worker, self.worker + "."
            return any(worker == name or worker.startswith(rigs) for worker in workers)
        if self.ip is not None:
            return ip == self.ip and (self.port is None or port == self.port)
        return True


def parse_target(words: Sequence[str]) -> tuple[MinerTarget, list[str]]:
    """The target the first words name, and the words after it."""
    if not words:
        raise TargetError(f"missing target: {TARGET_SYNTAX}")
    kind = words[0].lower()
    if kind == "all":
        return MinerTarget(), list(words[1:])
    if kind not in ("worker", "ip"):
        raise TargetError(f"unknown target {words[0][:64]!r}: {TARGET_SYNTAX}")
    if len(words) < 2:
        raise TargetError(f"missing {kind}: {TARGET_SYNTAX}")
    value, rest = words[1], list(words[2:])
    if kind == "worker":
        return MinerTarget(worker=value), rest
    ip, port = parse_address(value)
    return MinerTarget(ip=ip, port=port), rest


def parse_address(text: str) -> tuple[str, int | None]:
    """``IP``, ``IPv4:PORT`` or ``[IPv6]:PORT`` as (normalised IP, port or None)."""
    try:
        return normalise_ip(text), None  # a bare IPv6 address has colons of its own
    except ValueError:
        pass
    host, colon, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = normalise_ip(host) if colon else None
    except ValueError:
        ip = None
    if ip is None:
        raise TargetError(f"{text[:64]!r} is not an IP address or IP:port")
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TargetError(f"{port_text[:16]!r} is not a port number (1-65535)")
    return ip, int(port_text)


def select(target: MinerTarget, connections: Iterable[Connection]) -> list[Connection]:
    """The open connections ``target`` picks, by IP and port."""
    chosen = []
    for connection in connections:
        if connection.closing:
            continue  # it reads nothing more
        port = connection.peer_port() if target.port is not None else None
        if target.matches(connection.session.workers, connection.ip, port):
            chosen.append(connection)
    chosen.sort(key=lambda c: (c.ip or "", c.peer_port() or 0))
    return chosen


def describe_connection(connection: Connection) -> str:
    """``IP:PORT (workers; user agent; extranonce1)`` for the operator."""
    port = connection.peer_port()
    host = connection.ip or connection.peer
    where = _host_port(host, port) if port is not None else host
    session = connection.session
    workers = ",".join(session.workers) or "not authorized"
    extranonce1 = session.extranonce1.hex() if session.extranonce1 is not None else "not subscribed"
    return f"{where} ({workers}; {session.user_agent or 'no agent'}; extranonce1 {extranonce1})"


def _host_port(ip: str, port: int | None) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
