"""The link to coin daemons: JSON-RPC over HTTP (treq)."""

from nomp.daemon.errors import (
    DaemonError,
    DaemonHTTPError,
    DaemonResponseError,
    DaemonUnreachable,
    RPCError,
)
from nomp.daemon.group import DaemonGroup, SubmitResult
from nomp.daemon.rpc import DaemonRPC

__all__ = [
    "DaemonError",
    "DaemonGroup",
    "DaemonHTTPError",
    "DaemonRPC",
    "DaemonResponseError",
    "DaemonUnreachable",
    "RPCError",
    "SubmitResult",
]
