"""Several daemons serving one pool: calls go to the first healthy one,
blocks are submitted to all of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from nomp.daemon.errors import DaemonError, DaemonResponseError, RPCError
from nomp.daemon.rpc import DaemonRPC
from nomp.outage import Outage


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """One daemon's answer to ``submitblock``.

    ``result`` is None when the daemon accepted the block, otherwise its
    reason string (``duplicate``, ``inconclusive``, ``high-hash``, ...);
    ``error`` is set when the call itself failed.
    """

    url: str
    result: str | None
    error: DaemonError | None = None

    @property
    def accepted(self) -> bool:
        """The daemon took the block as valid and new."""
        return self.error is None and self.result is None

    def describe(self) -> str:
        """What the daemon said, for a log line."""
        if self.error is not None:
            return str(self.error.detail)
        return "accepted" if self.result is None else self.result


@dataclass(frozen=True, slots=True)
class AddressInfo:
    """What ``validateaddress`` says of an address."""

    address: str
    valid: bool
    script: bytes
    mweb: bool


@dataclass(frozen=True, slots=True)
class ChainInfo:
    """The parts of ``getblockchaininfo`` the pool uses."""

    chain: str
    blocks: int
    best_block_hash: str
    initial_block_download: bool


class DaemonGroup:
    """The daemons of one pool, in configured order.

    A daemon that cannot be reached (or answers with something that is not
    JSON-RPC) is marked unhealthy and the next one is tried; an RPC error is
    an answer and is raised as it is. An unhealthy daemon goes to the back
    of the line for ``retry_after`` seconds, then takes its configured place
    again, so the pool returns to its first daemon once that one is back.
    Each daemon's outage is logged once, and its return once; anything but a
    DaemonError is not the daemon's doing and goes to the caller.
    """

    log = Logger()

    def __init__(self, daemons: Sequence[DaemonRPC], clock: IReactorTime, retry_after: float = 30.0) -> None:
        if not daemons:
            raise ValueError("a daemon group needs at least one daemon")
        self.daemons = tuple(daemons)
        self._clock = clock
        self._retry_after = retry_after
        self._outages = {
            daemon: Outage(self.log, f"daemon {daemon.url}", clock, (DaemonError,)) for daemon in self.daemons
        }

    def healthy(self, daemon: DaemonRPC) -> bool:
        """Whether the last call to ``daemon`` got an answer."""
        return not self._outages[daemon].down

    def _answered(self, daemon: DaemonRPC) -> None:
        self._outages[daemon].succeeded()

    def _unanswered(self, daemon: DaemonRPC, error: DaemonError) -> None:
        self._outages[daemon].failed(error)

    def _in_order(self) -> list[DaemonRPC]:
        """Daemons to try: the healthy and those due a retry, then the rest."""
        now = self._clock.seconds()

        def resting(daemon: DaemonRPC) -> bool:
            since = self._outages[daemon].down_since
            return since is not None and now - since < self._retry_after

        return sorted(self.daemons, key=resting)

    async def call(self, method: str, *params: Any) -> Any:
        """``method(*params)`` on the first healthy daemon."""
        failure: DaemonError | None = None
        for daemon in self._in_order():
            try:
                result = await daemon.call(method, *params)
            except RPCError:
                self._answered(daemon)
                raise
            except DaemonError as e:
                self._unanswered(daemon, e)
                failure = e
                continue
            self._answered(daemon)
            return result
        assert failure is not None
        raise failure

    async def call_each(self, method: str, *params: Any) -> list[Any]:
        """``method(*params)`` on every daemon at once: each result or DaemonError."""

        async def one(daemon: DaemonRPC) -> Any:
            try:
                result = await daemon.call(method, *params)
            except RPCError as e:
                self._answered(daemon)
                return e
            except DaemonError as e:
                self._unanswered(daemon, e)
                return e
            self._answered(daemon)
            return result

        return list(await defer.gatherResults([defer.Deferred.fromCoroutine(one(d)) for d in self.daemons]))

    async def submit_block(self, block_hex: str) -> list[SubmitResult]:
        """Send a block to every daemon; one SubmitResult each."""
        answers = await self.call_each("submitblock", block_hex)
        results = []
        for daemon, answer in zip(self.daemons, answers, strict=True):
            if isinstance(answer, DaemonError):
                results.append(SubmitResult(daemon.url, None, answer))
            elif answer is None or isinstance(answer, str):
                results.append(SubmitResult(daemon.url, answer))
            else:
                bad = DaemonResponseError(daemon.url, "submitblock", f"unexpected {answer!r}")
                results.append(SubmitResult(daemon.url, None, bad))
        return results

    async def get_block_template(self, rules: Sequence[str]) -> dict[str, Any]:
        """The raw ``getblocktemplate`` reply for these rules."""
        template = await self.call("getblocktemplate", {"rules": list(rules)})
        if not isinstance(template, dict):
            raise DaemonResponseError("", "getblocktemplate", f"not an object: {template!r}")
        return template

    async def validate_address(self, address: str) -> AddressInfo:
        """``validateaddress``, with the scriptPubKey as bytes."""
        info = await self.call("validateaddress", address)
        if not isinstance(info, dict) or not isinstance(info.get("isvalid"), bool):
            raise DaemonResponseError("", "validateaddress", f"unexpected {info!r}")
        script_hex = info.get("scriptPubKey", "") if info["isvalid"] else ""
        try:
            script = bytes.fromhex(script_hex)
        except (TypeError, ValueError):
            raise DaemonResponseError("", "validateaddress", f"bad scriptPubKey {script_hex!r}") from None
        return AddressInfo(address, info["isvalid"], script, bool(info.get("ismweb", False)))

    async def chain_info(self) -> ChainInfo:
        """``getblockchaininfo``."""
        info = await self.call("getblockchaininfo")
        try:
            return ChainInfo(
                chain=str(info["chain"]),
                blocks=int(info["blocks"]),
                best_block_hash=str(info["bestblockhash"]),
                initial_block_download=bool(info.get("initialblockdownload", False)),
            )
        except (KeyError, TypeError, ValueError):
            raise DaemonResponseError("", "getblockchaininfo", f"unexpected {info!r}") from None
