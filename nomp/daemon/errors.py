"""Typed failures of a daemon call: each keeps what the daemon said."""

from __future__ import annotations

# Error codes of Bitcoin-family daemons the pool reacts to.
RPC_MISC_ERROR = -1
RPC_INVALID_PARAMETER = -8
RPC_CLIENT_NOT_CONNECTED = -9
RPC_CLIENT_IN_INITIAL_DOWNLOAD = -10
RPC_DESERIALIZATION_ERROR = -22
RPC_METHOD_NOT_FOUND = -32601
RPC_IN_WARMUP = -28


# bitcoind's error code for an unknown block, transaction or address
# (getblock, gettransaction of a hash it has never seen).
RPC_INVALID_ADDRESS_OR_KEY = -5


class DaemonError(Exception):
    """Any failure of a call to one daemon."""

    def __init__(self, url: str, method: str, detail: str) -> None:
        super().__init__(f"{url} {method}: {detail}")
        self.url = url
        self.method = method
        self.detail = detail


class DaemonUnreachable(DaemonError):
    """No answer: connection refused or reset, DNS failure, or a timeout."""


class DaemonHTTPError(DaemonError):
    """An HTTP answer that is not JSON-RPC, such as 401 for a wrong password."""

    def __init__(self, url: str, method: str, status: int, detail: str) -> None:
        super().__init__(url, method, f"HTTP {status} {detail}")
        self.status = status


class DaemonResponseError(DaemonError):
    """An answer that is not a well-formed JSON-RPC reply, or too large."""


class RPCError(DaemonError):
    """The daemon's own JSON-RPC error, with its code and message."""

    def __init__(self, url: str, method: str, code: int, message: str) -> None:
        super().__init__(url, method, f"error {code}: {message}")
        self.code = code
        self.message = message
