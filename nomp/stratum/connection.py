"""What the pool's Stratum side needs of one miner connection, and what a
connection needs of the pool.

A leaf (no Twisted, no other Stratum module but the pure session and
vardiff): the registry, the broadcaster, the share pipeline, the operator's
targets and the metrics type their connections with ``Connection``, so none
of them knows the protocol class, and the protocol knows the pool only as a
``ConnectionHandler``. A second protocol family (another framing, another
proof of work) plugs in by implementing these two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from nomp.config import PortConfig
from nomp.stratum.errors import StratumError
from nomp.stratum.session import MinerSession
from nomp.stratum.vardiff import VarDiff


@dataclass(frozen=True, slots=True, eq=False)
class PortSettings:
    """One listening port's settings, resolved once and given to each of its connections."""

    port: PortConfig
    vardiff: VarDiff | None  # the port's vardiff rules; None: a fixed difficulty
    solo: bool  # blocks found here are their finder's; its shares join no shared round

    @classmethod
    def for_port(cls, port: PortConfig, scheme: str) -> PortSettings:
        return cls(
            port, VarDiff(port.vardiff) if port.vardiff is not None else None, port.solo or scheme == "solo"
        )


class Connection(Protocol):
    """One miner's open connection, as the pool sees it."""

    session: MinerSession
    settings: PortSettings
    ip: str | None  # normalised; bans and limits go by it (None: not an IP peer)
    peer: str  # for log lines

    @property
    def closing(self) -> bool:
        """Closed or closing: it reads and is sent nothing more."""
        ...

    def peer_port(self) -> int | None:
        """The miner's port (through a PROXY protocol proxy: the miner's own)."""
        ...

    def reply(self, request_id: Any, result: Any) -> None: ...

    def reply_true(self, request_id: Any) -> None: ...

    def reply_refusal(self, request_id: Any, error: StratumError) -> None: ...

    def reply_error(self, request_id: Any, error: StratumError) -> None: ...

    def send_difficulty(self, difficulty: float) -> None: ...

    def send_line(self, line: bytes) -> None:
        """A prepared notification line (the same bytes go to many miners)."""
        ...

    def direct_fd(self) -> int | None:
        """The socket a broadcast may send on directly now, or None (then ``send_line``)."""
        ...

    def send_rest(self, data: bytes) -> None:
        """What a direct send left over, queued behind it."""
        ...

    def close(self) -> None:
        """Close once what is queued is sent."""
        ...


class ConnectionHandler(Protocol):
    """What a connection tells the pool."""

    def connected(self, connection: Connection) -> None: ...

    def disconnected(self, connection: Connection) -> None: ...

    def request(self, connection: Connection, request_id: Any, method: str, params: list[Any]) -> None:
        """One request read; a StratumError raised is the reply."""
        ...

    def malformed(self, connection: Connection) -> None:
        """A request that could not be read (it has had its error reply)."""
        ...
