"""The daemon client, the daemon group and pool start-up, against a scripted daemon.

These are the cases a real litecoind cannot be made to produce on demand: a
wrong password, garbage, silence, a refused connection, a node without peers
or in initial block download, another chain. The fake daemon (test/fakedaemon.py)
answers as litecoind 0.21 does; requests go through treq's StubTreq, so the
client's real HTTP code runs, in memory, and time is a Clock.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Coroutine, Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from treq.testing import StubTreq
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from nomp.config import DaemonConfig, PoolConfig, load_config
from nomp.daemon import (
    DaemonError,
    DaemonGroup,
    DaemonHTTPError,
    DaemonResponseError,
    DaemonRPC,
    DaemonUnreachable,
    RPCError,
)
from nomp.daemon.clients import DaemonClients
from nomp.daemon.rpc import HTTPPoster
from nomp.pool.startup import RETRY_DELAYS, StartupError, resolve_payouts, wait_for_daemon
from test.fakedaemon import FakeDaemon, FakeRPCError, Handler

T = TypeVar("T")

URL = "http://127.0.0.1:19443/"
USER = "nomp"
PASSWORD = "demo-regtest-password"
REPO = Path(__file__).resolve().parent.parent
STARTUP = "nomp.pool.startup"  # the start-up log's namespace

# The shipped demo pool's addresses (conf/pools/litecoin.yaml) and their scripts.
POOL_ADDRESS = "rltc1qey3dpjf7avevcavv6uk33juxyyyyndgfuc2s2l"
POOL_SCRIPT = "0014c922d0c93eeb32cc758cd72d18cb86210849b509"
RECIPIENT_ADDRESS = "mpQG9GRvXTwQJ7coC7STH5gL936CkcAb6Y"
RECIPIENT_SCRIPT = "76a91461751e97518ce7ed8347786642afc32d6226195288ac"
# An address the fake daemon calls MWEB (the fake does not check the encoding).
MWEB_ADDRESS = "tmweb1qqfakemwebaddressforthefakedaemononly"
TIP = "5f6ee2c1d7b3f3b0f2d4c1a0f9e8d7c6b5a4938271605f4e3d2c1b0a09f8e7d6"

# litecoind 0.21's getblocktemplate refusals of a call without its rule sets.
SEGWIT_RULES_ERROR = (
    'getblocktemplate must be called with the segwit rule set (call with {"rules": ["segwit"]})'
)
MWEB_RULES_ERROR = (
    "getblocktemplate must be called with the segwit & mweb rule sets "
    '(call with {"rules": ["mweb", "segwit"]})'
)


def as_reactor(clock: Clock) -> IReactorTime:
    """The Clock as the IReactorTime it provides (mypy sees that only with mypy-zope)."""
    provided: Any = clock
    reactor: IReactorTime = provided
    return reactor


def stub_treq(daemon: FakeDaemon) -> Any:
    """treq's in-memory client (unannotated), serving requests with ``daemon``."""
    make: Any = StubTreq
    return make(daemon)


class RefusedConnections:
    """Where no daemon listens: every connection is refused."""

    def __init__(self) -> None:
        self.posts = 0

    def post(self, url: str, **kwargs: Any) -> defer.Deferred[Any]:
        """Fail as a connection to a closed port does."""
        self.posts += 1
        return defer.fail(ConnectionRefusedError())


class Link:
    """The network between a DaemonRPC and one fake daemon: up, or refusing connections."""

    def __init__(self, daemon: FakeDaemon) -> None:
        self.daemon = daemon
        self.stub = stub_treq(daemon)
        self.down: RefusedConnections | None = None
        self.posts = 0  # requests attempted, refused or delivered

    def unplug(self) -> None:
        """From now on, connections are refused."""
        self.down = RefusedConnections()

    def plug(self) -> None:
        """From now on, requests reach the daemon."""
        self.down = None

    def post(self, url: str, **kwargs: Any) -> defer.Deferred[Any]:
        """Send a request to the daemon, or fail to connect."""
        self.posts += 1
        if self.down is not None:
            return self.down.post(url, **kwargs)
        sent: defer.Deferred[Any] = self.stub.post(url, **kwargs)
        return sent

    def flush(self) -> None:
        """Deliver whatever is in flight."""
        self.stub.flush()


def settle(work: Coroutine[Any, Any, T], *links: Any) -> defer.Deferred[T]:
    """Start ``work``, deliver what the fake daemons answered, and return its Deferred."""
    running = defer.Deferred.fromCoroutine(work)
    for link in links:
        link.flush()
    return running


def advance(clock: Clock, seconds: float, links: Sequence[Link]) -> None:
    """Let ``seconds`` pass, then deliver what the fake daemons answered meanwhile."""
    clock.advance(seconds)
    for link in links:
        link.flush()


def messages(events: Sequence[LogEvent], level: LogLevel, namespace: str | None = None) -> list[str]:
    """The text of the captured log events of one level (and logger namespace)."""
    return [
        formatEvent(e)
        for e in events
        if e.get("log_level") == level and namespace in (None, e.get("log_namespace"))
    ]


def demo_pool() -> PoolConfig:
    """The repository's shipped demo pool: Litecoin regtest, rules mweb and segwit."""
    return load_config(REPO / "conf").pools[0]


class DaemonRPCTests(TestCase):
    """One daemon over HTTP JSON-RPC: results, the request, and each kind of failure."""

    def setUp(self) -> None:
        self.daemon = FakeDaemon()
        self.stub = stub_treq(self.daemon)
        self.clock = Clock()
        self.rpc = self.client(self.stub)

    def client(self, http: Any, **kwargs: Any) -> DaemonRPC:
        """A DaemonRPC over ``http`` with the test clock."""
        poster: HTTPPoster = http
        return DaemonRPC(poster, URL, USER, PASSWORD, as_reactor(self.clock), **kwargs)

    def call(self, method: str, *params: Any) -> defer.Deferred[Any]:
        """``method(*params)`` through the stub, with the answer delivered."""
        return settle(self.rpc.call(method, *params), self.stub)

    def test_result(self) -> None:
        """A daemon's result comes back as it was sent."""
        self.daemon.handlers["getblockcount"] = lambda params: 431
        self.assertEqual(self.successResultOf(self.call("getblockcount")), 431)

    def test_amounts_are_decimal(self) -> None:
        """Amounts come back as exact Decimals, never floats."""
        self.daemon.handlers["getbalances"] = lambda params: {
            "mine": {"trusted": Decimal("20999999.99999999"), "immature": Decimal("0.00000001")}
        }
        balances = self.successResultOf(self.call("getbalances"))["mine"]
        self.assertIsInstance(balances["trusted"], Decimal)
        self.assertEqual(balances["trusted"], Decimal("20999999.99999999"))
        self.assertEqual(balances["immature"], Decimal("0.00000001"))

    def test_request(self) -> None:
        """The request is a JSON-RPC call of the method and params, with basic auth."""
        self.daemon.handlers["getblockhash"] = lambda params: TIP
        self.successResultOf(self.call("getblockhash", 12))
        self.successResultOf(self.call("getblockhash", 13))
        first, second = self.daemon.calls
        self.assertEqual((first.method, first.params), ("getblockhash", [12]))
        self.assertEqual(first.basic_credentials(), f"{USER}:{PASSWORD}")
        self.assertEqual(first.content_type, "application/json")
        self.assertNotEqual(first.request_id, second.request_id)

    def test_rpc_error(self) -> None:
        """A JSON-RPC error (HTTP 500) is an RPCError keeping its code and message."""

        def submitblock(params: list[Any]) -> Any:
            raise FakeRPCError(-22, "Block decode failed")

        self.daemon.handlers["submitblock"] = submitblock
        error = self.failureResultOf(self.call("submitblock", "00"), RPCError).value
        self.assertEqual((error.code, error.message), (-22, "Block decode failed"))
        self.assertEqual((error.url, error.method), (URL, "submitblock"))

    def test_unknown_method(self) -> None:
        """An unknown method (HTTP 404, code -32601) is an RPCError, not an HTTP error."""
        error = self.failureResultOf(self.call("getwork"), RPCError).value
        self.assertEqual(error.code, -32601)

    def test_wrong_password(self) -> None:
        """HTTP 401 with an empty body is a DaemonHTTPError hinting at rpcuser/rpcpassword."""
        self.daemon.credentials = (USER, "another-password")
        self.daemon.handlers["getblockcount"] = lambda params: 1
        error = self.failureResultOf(self.call("getblockcount"), DaemonHTTPError).value
        self.assertEqual(error.status, 401)
        self.assertIn("rpcuser/rpcpassword", error.detail)

    def test_http_error_page(self) -> None:
        """A non-JSON error page is a DaemonHTTPError quoting the page."""
        self.daemon.answer_raw(503, b"<html>Service Unavailable</html>")
        error = self.failureResultOf(self.call("getblockcount"), DaemonHTTPError).value
        self.assertEqual(error.status, 503)
        self.assertIn("Service Unavailable", error.detail)

    def test_not_json(self) -> None:
        """A 200 reply that is not JSON is a DaemonResponseError."""
        self.daemon.answer_raw(200, b"\x00garbage{")
        self.failureResultOf(self.call("getblockcount"), DaemonResponseError)

    def test_not_a_reply_object(self) -> None:
        """JSON that is not a JSON-RPC reply object is a DaemonResponseError."""
        self.daemon.answer_raw(200, b"[1, 2, 3]")
        self.failureResultOf(self.call("getblockcount"), DaemonResponseError)

    def test_wrong_id(self) -> None:
        """A reply to another request id is a DaemonResponseError."""
        self.daemon.answer_raw(200, b'{"result": 5, "error": null, "id": 999}')
        error = self.failureResultOf(self.call("getblockcount"), DaemonResponseError).value
        self.assertIn("999", error.detail)

    def test_malformed_error(self) -> None:
        """An error that is not {code: int, message: str} is a DaemonResponseError."""
        for error in ['"boom"', '{"code": "-8", "message": "x"}', '{"code": -8}']:
            self.daemon.answer_raw(500, f'{{"result": null, "error": {error}, "id": 1}}'.encode())
            self.rpc = self.client(self.stub)  # its first request has id 1
            self.failureResultOf(self.call("getblockcount"), DaemonResponseError)

    def test_too_large(self) -> None:
        """A reply larger than max_response is a DaemonResponseError, even if well-formed."""
        self.rpc = self.client(self.stub, max_response=1000)
        reply = {"result": "00" * 1000, "error": None, "id": 1}
        self.daemon.answer_raw(200, json.dumps(reply).encode())
        error = self.failureResultOf(self.call("getblocktemplate"), DaemonResponseError).value
        self.assertIn("1000 bytes", error.detail)

    def test_exactly_the_limit(self) -> None:
        """A reply of exactly max_response bytes is read."""
        self.daemon.handlers["getblockcount"] = lambda params: 7
        reply_size = len(b'{"result":7,"error":null,"id":1}\n')
        self.rpc = self.client(self.stub, max_response=reply_size)
        self.assertEqual(self.successResultOf(self.call("getblockcount")), 7)

    def test_timeout(self) -> None:
        """A daemon that never answers is DaemonUnreachable once the timeout passes, not before."""
        self.rpc = self.client(self.stub, timeout=30)
        self.daemon.never_answer()
        waiting = self.call("getblocktemplate")
        self.clock.advance(29.5)
        self.stub.flush()
        self.assertNoResult(waiting)
        self.assertEqual(len(self.daemon.unanswered), 1)
        self.clock.advance(0.5)
        error = self.failureResultOf(waiting, DaemonUnreachable).value
        self.assertIn("no answer in 30s", error.detail)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_refused(self) -> None:
        """A refused connection is DaemonUnreachable."""
        self.rpc = self.client(RefusedConnections())
        error = self.failureResultOf(
            defer.Deferred.fromCoroutine(self.rpc.call("getblockcount")), DaemonUnreachable
        ).value
        self.assertIn("refused", error.detail)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_whole_decimal_params(self) -> None:
        """Decimal params that are whole numbers are sent as JSON integers."""
        self.daemon.handlers["getblockhash"] = lambda params: TIP
        self.successResultOf(self.call("getblockhash", Decimal("12"), Decimal("1E+2")))
        self.assertEqual(self.daemon.calls[0].params, [12, 100])
        self.assertIsInstance(self.daemon.calls[0].params[0], int)

    def test_fractional_decimal_params(self) -> None:
        """A fractional Decimal param is refused with TypeError before anything is sent."""
        self.failureResultOf(self.call("settxfee", Decimal("0.0001")), TypeError)
        self.assertEqual(self.daemon.calls, [])


def answering(result: Any) -> Handler:
    """A handler returning ``result`` whatever the params."""
    return lambda params: result


def failing(code: int, message: str) -> Handler:
    """A handler raising this RPC error whatever the params."""

    def handler(params: list[Any]) -> Any:
        raise FakeRPCError(code, message)

    return handler


class DaemonGroupTests(TestCase):
    """Several daemons: calls fail over between them, blocks go to all of them."""

    def group(self, *daemons: FakeDaemon) -> tuple[DaemonGroup, list[Link], list[DaemonRPC]]:
        """A group of one DaemonRPC per fake daemon, each behind its own Link."""
        links = [Link(daemon) for daemon in daemons]
        self.clock = Clock()
        clock = as_reactor(self.clock)
        rpcs = [
            DaemonRPC(link, f"http://127.0.0.1:{19443 + i}/", USER, PASSWORD, clock)
            for i, link in enumerate(links)
        ]
        return DaemonGroup(rpcs, clock, retry_after=30), links, rpcs

    def test_first_healthy_answers(self) -> None:
        """A call goes to the first daemon; the others are not asked."""
        first = FakeDaemon({"getblockcount": answering(10)})
        second = FakeDaemon({"getblockcount": answering(20)})
        group, links, rpcs = self.group(first, second)
        self.assertEqual(self.successResultOf(settle(group.call("getblockcount"), *links)), 10)
        self.assertEqual((first.methods(), second.methods()), (["getblockcount"], []))
        self.assertTrue(group.healthy(rpcs[0]))

    def test_failover_and_back(self) -> None:
        """An unreachable daemon is skipped and marked unhealthy; after retry_after it is
        first in line again and healthy once it answers."""
        first = FakeDaemon({"getblockcount": answering(10)})
        second = FakeDaemon({"getblockcount": answering(20)})
        group, links, rpcs = self.group(first, second)
        links[0].unplug()
        self.assertEqual(self.successResultOf(settle(group.call("getblockcount"), *links)), 20)
        self.assertEqual((group.healthy(rpcs[0]), group.healthy(rpcs[1])), (False, True))

        # Back up, but not asked again before retry_after has passed.
        links[0].plug()
        self.clock.advance(29)
        self.assertEqual(self.successResultOf(settle(group.call("getblockcount"), *links)), 20)
        self.assertFalse(group.healthy(rpcs[0]))

        # Then it takes its place at the front again, answers, and is healthy.
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(settle(group.call("getblockcount"), *links)), 10)
        self.assertEqual((group.healthy(rpcs[0]), group.healthy(rpcs[1])), (True, True))
        self.assertEqual(first.methods(), ["getblockcount"])

        # The second goes away: the first answers alone.
        links[1].unplug()
        self.assertEqual(self.successResultOf(settle(group.call("getblockcount"), *links)), 10)

    def test_outage_logged_once(self) -> None:
        """A daemon that answered, then fails call after call, is one warning; its return is
        one line; an RPC error is an answer, not an outage."""
        group, links, rpcs = self.group(FakeDaemon({"getblockcount": answering(10)}))
        self.successResultOf(settle(group.call("getblockcount"), *links))
        links[0].unplug()
        with capturedLogs() as events:
            for _ in range(3):
                self.failureResultOf(settle(group.call("getblockcount"), *links), DaemonUnreachable)
                self.clock.advance(30)
            links[0].plug()
            self.successResultOf(settle(group.call("getblockcount"), *links))
            links[0].daemon.handlers["getblockcount"] = failing(-28, "Loading block index...")
            self.failureResultOf(settle(group.call("getblockcount"), *links), RPCError)
        group_log = "nomp.daemon.group.DaemonGroup"
        (warning,) = messages(events, LogLevel.warn, group_log)
        self.assertIn(f"daemon {rpcs[0].url} unavailable (DaemonUnreachable", warning)
        (back,) = messages(events, LogLevel.info, group_log)
        self.assertEqual(back, f"daemon {rpcs[0].url} is back after 90 s")
        self.assertTrue(group.healthy(rpcs[0]))

    def test_bug_is_not_an_outage(self) -> None:
        """An error that is not the daemon's (here a metrics observer's bug) goes to the caller
        as it is: the daemon is not marked down, the next one not asked, no outage logged."""

        def broken(url: str, method: str, seconds: float, error: DaemonError | None) -> None:
            raise TypeError("a bug in the observer")

        first = FakeDaemon({"getblockcount": answering(10)})
        second = FakeDaemon({"getblockcount": answering(20)})
        group, links, rpcs = self.group(first, second)
        clock = as_reactor(self.clock)
        observed = DaemonRPC(links[0], rpcs[0].url, USER, PASSWORD, clock, observer=broken)
        group = DaemonGroup([observed, rpcs[1]], clock)
        with capturedLogs() as events:
            self.failureResultOf(settle(group.call("getblockcount"), *links), TypeError)
        self.assertTrue(group.healthy(observed))
        self.assertEqual((first.methods(), second.methods()), (["getblockcount"], []))
        self.assertEqual([e for e in events if e.get("log_namespace") == "nomp.daemon.group.DaemonGroup"], [])

    def test_rpc_error_is_an_answer(self) -> None:
        """An RPC error from the first daemon is raised as it is, without trying the next."""
        downloading = failing(-10, "Litecoin Core is in initial sync and waiting for blocks...")
        first = FakeDaemon({"getblocktemplate": downloading})
        second = FakeDaemon({"getblocktemplate": answering({"height": 1})})
        group, links, rpcs = self.group(first, second)
        error = self.failureResultOf(settle(group.call("getblocktemplate"), *links), RPCError).value
        self.assertEqual((error.code, error.url), (-10, rpcs[0].url))
        self.assertEqual(second.calls, [])
        self.assertTrue(group.healthy(rpcs[0]))

    def test_all_unreachable(self) -> None:
        """When no daemon answers, the last daemon's error is raised."""
        group, links, rpcs = self.group(FakeDaemon(), FakeDaemon())
        for link in links:
            link.unplug()
        error = self.failureResultOf(settle(group.call("getblockcount"), *links), DaemonUnreachable).value
        self.assertEqual(error.url, rpcs[1].url)
        self.assertEqual([link.posts for link in links], [1, 1])
        self.assertFalse(group.healthy(rpcs[0]) or group.healthy(rpcs[1]))

    def test_submit_block_to_all(self) -> None:
        """submitblock goes to every daemon, and each answer becomes its own SubmitResult."""
        daemons = [
            FakeDaemon({"submitblock": answering(None)}),
            FakeDaemon({"submitblock": answering("duplicate")}),
            FakeDaemon({"submitblock": answering("inconclusive")}),
            FakeDaemon({"submitblock": answering("high-hash")}),
            FakeDaemon({"submitblock": failing(-22, "Block decode failed")}),
            FakeDaemon({"submitblock": answering(42)}),
            FakeDaemon(),
        ]
        group, links, rpcs = self.group(*daemons)
        links[-1].unplug()
        results = self.successResultOf(settle(group.submit_block("00ff"), *links))
        self.assertEqual([r.url for r in results], [rpc.url for rpc in rpcs])
        self.assertEqual([r.accepted for r in results], [True] + [False] * 6)
        self.assertEqual([r.result for r in results[:4]], [None, "duplicate", "inconclusive", "high-hash"])
        self.assertEqual([r.error for r in results[:4]], [None] * 4)
        self.assertEqual(results[1].describe(), "duplicate")
        rpc_error = results[4].error
        assert isinstance(rpc_error, RPCError)
        self.assertEqual(rpc_error.code, -22)
        self.assertIsInstance(results[5].error, DaemonResponseError)
        self.assertIsInstance(results[6].error, DaemonUnreachable)
        for daemon in daemons[:-1]:
            calls = [(c.method, c.params) for c in daemon.calls]
            self.assertEqual(calls, [("submitblock", ["00ff"])])
        self.assertFalse(group.healthy(rpcs[6]))
        self.assertTrue(all(group.healthy(rpc) for rpc in rpcs[:5]))

    def test_validate_address(self) -> None:
        """validateaddress gives the scriptPubKey as bytes and the MWEB flag."""
        known = {
            POOL_ADDRESS: {"isvalid": True, "address": POOL_ADDRESS, "scriptPubKey": POOL_SCRIPT},
            MWEB_ADDRESS: {
                "isvalid": True,
                "address": MWEB_ADDRESS,
                "scriptPubKey": "",
                "ismweb": True,
            },
        }
        daemon = FakeDaemon({"validateaddress": lambda p: known.get(p[0], {"isvalid": False})})
        group, links, _ = self.group(daemon)
        info = self.successResultOf(settle(group.validate_address(POOL_ADDRESS), *links))
        script = bytes.fromhex(POOL_SCRIPT)
        self.assertEqual((info.valid, info.script, info.mweb), (True, script, False))
        info = self.successResultOf(settle(group.validate_address(MWEB_ADDRESS), *links))
        self.assertEqual((info.valid, info.script, info.mweb), (True, b"", True))
        info = self.successResultOf(settle(group.validate_address("nonsense"), *links))
        self.assertEqual((info.valid, info.script), (False, b""))

    def test_validate_address_garbage(self) -> None:
        """A validateaddress reply that is not an address description is a DaemonResponseError."""
        for garbage in ["yes", None, {"isvalid": "true"}, {"isvalid": True, "scriptPubKey": "zz"}]:
            group, links, _ = self.group(FakeDaemon({"validateaddress": answering(garbage)}))
            self.failureResultOf(settle(group.validate_address(POOL_ADDRESS), *links), DaemonResponseError)

    def test_chain_info(self) -> None:
        """getblockchaininfo gives the chain, height, tip and initial block download flag."""
        reply = {
            "chain": "regtest",
            "blocks": 431,
            "headers": 431,
            "bestblockhash": TIP,
            "initialblockdownload": True,
        }
        group, links, _ = self.group(FakeDaemon({"getblockchaininfo": answering(reply)}))
        info = self.successResultOf(settle(group.chain_info(), *links))
        self.assertEqual(
            (info.chain, info.blocks, info.best_block_hash, info.initial_block_download),
            ("regtest", 431, TIP, True),
        )

    def test_chain_info_missing_field(self) -> None:
        """A getblockchaininfo reply without a needed field is a DaemonResponseError."""
        for missing in ["chain", "blocks", "bestblockhash"]:
            reply = {"chain": "regtest", "blocks": 431, "bestblockhash": TIP}
            del reply[missing]
            group, links, _ = self.group(FakeDaemon({"getblockchaininfo": answering(reply)}))
            self.failureResultOf(settle(group.chain_info(), *links), DaemonResponseError)


class LitecoinNode:
    """What wait_for_daemon and resolve_payouts ask of litecoind, with its state settable."""

    def __init__(self) -> None:
        self.chain = "regtest"
        self.blocks = 431
        self.initial_block_download = False
        self.template_error: FakeRPCError | None = None  # no peers, initial download...
        self.warming_up: FakeRPCError | None = None  # every call fails with it
        self.addresses: dict[str, dict[str, Any]] = {
            POOL_ADDRESS: {
                "isvalid": True,
                "address": POOL_ADDRESS,
                "scriptPubKey": POOL_SCRIPT,
                "isscript": False,
                "iswitness": True,
                "witness_version": 0,
                "witness_program": POOL_SCRIPT[4:],
            },
            RECIPIENT_ADDRESS: {
                "isvalid": True,
                "address": RECIPIENT_ADDRESS,
                "scriptPubKey": RECIPIENT_SCRIPT,
                "isscript": False,
                "iswitness": False,
            },
            MWEB_ADDRESS: {
                "isvalid": True,
                "address": MWEB_ADDRESS,
                "scriptPubKey": "",
                "ismweb": True,
            },
        }

    def daemon(self) -> FakeDaemon:
        """A fake daemon answering from this node's state."""
        return FakeDaemon(
            {
                "getblockchaininfo": self.getblockchaininfo,
                "getblocktemplate": self.getblocktemplate,
                "validateaddress": self.validateaddress,
            }
        )

    def getblockchaininfo(self, params: list[Any]) -> Any:
        """litecoind's getblockchaininfo, the fields the pool reads and a few more."""
        if self.warming_up is not None:
            raise self.warming_up
        return {
            "chain": self.chain,
            "blocks": self.blocks,
            "headers": self.blocks,
            "bestblockhash": TIP,
            "difficulty": Decimal("4.656542373906925e-10"),
            "initialblockdownload": self.initial_block_download,
        }

    def getblocktemplate(self, params: list[Any]) -> Any:
        """litecoind's getblocktemplate: the rule set checks, then a (small) template."""
        if self.warming_up is not None:
            raise self.warming_up
        rules = params[0].get("rules", []) if params else []
        if "segwit" not in rules:
            raise FakeRPCError(-8, SEGWIT_RULES_ERROR)
        if "mweb" not in rules:
            raise FakeRPCError(-8, MWEB_RULES_ERROR)
        if self.template_error is not None:
            raise self.template_error
        return {
            "version": 0x20000000,
            "rules": ["csv", "!segwit", "taproot", "!mweb"],
            "previousblockhash": TIP,
            "transactions": [],
            "coinbasevalue": 625000000,
            "bits": "207fffff",
            "height": self.blocks + 1,
        }

    def validateaddress(self, params: list[Any]) -> Any:
        """litecoind's validateaddress for the addresses this node knows; others are invalid."""
        return self.addresses.get(params[0], {"isvalid": False})


class WaitForDaemonTests(TestCase):
    """Start-up waits for a daemon that can serve templates of the pool's chain."""

    def setUp(self) -> None:
        self.pool = demo_pool()
        self.node = LitecoinNode()
        self.fake = self.node.daemon()
        self.link = Link(self.fake)
        self.clock = Clock()
        rpc = DaemonRPC(self.link, URL, USER, PASSWORD, as_reactor(self.clock))
        self.group = DaemonGroup([rpc], as_reactor(self.clock))

    def wait(self, pool: PoolConfig | None = None) -> defer.Deferred[None]:
        """wait_for_daemon started, with the first answers delivered."""
        return settle(wait_for_daemon(pool or self.pool, self.group, as_reactor(self.clock)), self.link)

    def test_shipped_pool(self) -> None:
        """The shipped demo pool is for regtest with rules mweb and segwit."""
        self.assertEqual(self.pool.coin.network.chain, "regtest")
        self.assertEqual(list(self.pool.coin.gbt_rules), ["mweb", "segwit"])
        self.assertEqual(self.pool.file, "pools/litecoin.yaml")

    def test_ready_at_once(self) -> None:
        """A ready daemon: it returns at once, asking for a template with the coin's rules."""
        with capturedLogs() as events:
            self.assertIsNone(self.successResultOf(self.wait()))
        self.assertEqual(self.fake.methods(), ["getblockchaininfo", "getblocktemplate"])
        self.assertEqual(self.fake.calls[1].params, [{"rules": ["mweb", "segwit"]}])
        self.assertEqual(messages(events, LogLevel.warn), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def assert_waits(
        self, expected: str, unready: Callable[[], None], ready: Callable[[], None]
    ) -> Sequence[LogEvent]:
        """While ``unready`` holds it retries after each delay, and no sooner, with one
        warning containing ``expected``; after ``ready`` it returns by itself. The log."""
        unready()
        with capturedLogs() as events:
            waiting = self.wait()
            for delay in RETRY_DELAYS:
                self.assertNoResult(waiting)
                posts = self.link.posts
                advance(self.clock, delay - 0.5, [self.link])
                self.assertEqual(self.link.posts, posts)
                advance(self.clock, 0.5, [self.link])
                self.assertGreater(self.link.posts, posts)
            advance(self.clock, RETRY_DELAYS[-1], [self.link])  # the last delay repeats
            self.assertNoResult(waiting)
            ready()
            advance(self.clock, RETRY_DELAYS[-1], [self.link])
            self.assertIsNone(self.successResultOf(waiting))
        warnings = messages(events, LogLevel.warn, STARTUP)
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("litecoin", warnings[0])
        self.assertIn(expected, warnings[0])
        infos = messages(events, LogLevel.info, STARTUP)
        self.assertEqual(len(infos), 1, infos)
        self.assertIn("ready", infos[0])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        return events

    def test_unreachable(self) -> None:
        """While no daemon answers it waits, and returns once one does. The group, which has
        never had an answer (the pool starting), says so in one info line, not once a retry,
        and one when the daemon answers."""
        events = self.assert_waits("no daemon answers", self.link.unplug, self.link.plug)
        group_log = "nomp.daemon.group.DaemonGroup"
        self.assertEqual(messages(events, LogLevel.warn, group_log), [])
        waiting, answered = messages(events, LogLevel.info, group_log)
        self.assertIn(f"daemon {URL}: waiting for it (DaemonUnreachable", waiting)
        self.assertIn(f"daemon {URL} answered after", answered)

    def test_no_peers(self) -> None:
        """While getblocktemplate says -9 (no peers) it waits."""

        def unready() -> None:
            self.node.template_error = FakeRPCError(-9, "Litecoin Core is not connected!")

        def ready() -> None:
            self.node.template_error = None

        self.assert_waits("has no peers", unready, ready)

    def test_template_in_initial_download(self) -> None:
        """While getblocktemplate says -10 (initial block download) it waits."""

        def unready() -> None:
            self.node.template_error = FakeRPCError(
                -10, "Litecoin Core is in initial sync and waiting for blocks..."
            )

        def ready() -> None:
            self.node.template_error = None

        self.assert_waits("initial block download", unready, ready)

    def test_chain_in_initial_download(self) -> None:
        """While getblockchaininfo says initialblockdownload it waits, asking for no template."""

        def unready() -> None:
            self.node.initial_block_download = True

        def ready() -> None:
            self.node.initial_block_download = False

        self.assert_waits("initial block download (height 431)", unready, ready)
        self.assertEqual(self.fake.methods()[-1], "getblocktemplate")
        self.assertEqual(self.fake.methods().count("getblocktemplate"), 1)

    def test_warming_up(self) -> None:
        """While the daemon is warming up (-28) it waits."""

        def unready() -> None:
            self.node.warming_up = FakeRPCError(-28, "Loading block index...")

        def ready() -> None:
            self.node.warming_up = None

        self.assert_waits("is starting up", unready, ready)

    def test_one_warning_per_reason(self) -> None:
        """Each change of reason is logged once, and readiness once."""
        self.link.unplug()
        with capturedLogs() as events:
            waiting = self.wait()
            advance(self.clock, 1, [self.link])
            self.link.plug()
            self.node.template_error = FakeRPCError(-9, "Litecoin Core is not connected!")
            advance(self.clock, 2, [self.link])
            advance(self.clock, 5, [self.link])
            self.node.template_error = None
            self.node.initial_block_download = True
            advance(self.clock, 10, [self.link])
            self.node.initial_block_download = False
            self.assertNoResult(waiting)
            advance(self.clock, 30, [self.link])
            self.assertIsNone(self.successResultOf(waiting))
        warnings = messages(events, LogLevel.warn, STARTUP)
        self.assertEqual(len(warnings), 3, warnings)
        for warning, reason in zip(
            warnings, ["no daemon answers", "has no peers", "initial block download"], strict=True
        ):
            self.assertIn(reason, warning)
        self.assertEqual(len(messages(events, LogLevel.info, STARTUP)), 1)

    def test_other_chain(self) -> None:
        """A daemon on another chain is a StartupError naming the pool file and both chains."""
        self.node.chain = "main"
        error = self.failureResultOf(self.wait(), StartupError).value
        self.assertIn("pools/litecoin.yaml", str(error))
        self.assertIn("'main'", str(error))
        self.assertIn("'regtest'", str(error))
        self.assertEqual(self.fake.methods(), ["getblockchaininfo"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_rules_refused(self) -> None:
        """getblocktemplate refusing the coin's rules (-8) is a StartupError naming the file."""
        coin = dataclasses.replace(self.pool.coin, gbt_rules=("segwit",))
        pool = dataclasses.replace(self.pool, coin=coin)
        error = self.failureResultOf(self.wait(pool), StartupError).value
        self.assertTrue(str(error).startswith("pools/litecoin.yaml: "), str(error))
        self.assertIn(MWEB_RULES_ERROR, str(error))
        self.assertIn("['segwit']", str(error))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ResolvePayoutsTests(TestCase):
    """The coinbase scripts come from the daemon's validateaddress."""

    def setUp(self) -> None:
        self.pool = demo_pool()
        self.node = LitecoinNode()
        self.fake = self.node.daemon()
        self.link = Link(self.fake)
        clock = as_reactor(Clock())
        rpc = DaemonRPC(self.link, URL, USER, PASSWORD, clock)
        self.group = DaemonGroup([rpc], clock)

    def resolve(self, pool: PoolConfig | None = None) -> defer.Deferred[Any]:
        """resolve_payouts, with the answers delivered."""
        return settle(resolve_payouts(pool or self.pool, self.group), self.link)

    def test_scripts(self) -> None:
        """The pool address and each recipient pay to the scriptPubKey validateaddress gives."""
        plan = self.successResultOf(self.resolve())
        self.assertEqual(plan.pool_script, bytes.fromhex(POOL_SCRIPT))
        (recipient,) = plan.recipients
        self.assertEqual(recipient.script, bytes.fromhex(RECIPIENT_SCRIPT))
        self.assertEqual(recipient.fraction, Fraction(1, 100))
        self.assertIsInstance(recipient.fraction, Fraction)
        self.assertEqual(recipient.label, RECIPIENT_ADDRESS)
        self.assertEqual([c.params for c in self.fake.calls], [[POOL_ADDRESS], [RECIPIENT_ADDRESS]])

    def test_invalid_pool_address(self) -> None:
        """An invalid pool address is a StartupError naming the file and key."""
        del self.node.addresses[POOL_ADDRESS]
        error = self.failureResultOf(self.resolve(), StartupError).value
        self.assertTrue(str(error).startswith("pools/litecoin.yaml: address: "), str(error))
        self.assertIn(POOL_ADDRESS, str(error))

    def test_mweb_pool_address(self) -> None:
        """An MWEB pool address is a StartupError saying a coinbase cannot pay to MWEB."""
        pool = dataclasses.replace(self.pool, address=MWEB_ADDRESS)
        error = self.failureResultOf(self.resolve(pool), StartupError).value
        self.assertTrue(str(error).startswith("pools/litecoin.yaml: address: "), str(error))
        self.assertIn("MWEB", str(error))

    def test_invalid_recipient(self) -> None:
        """An invalid recipient address is a StartupError naming its place in the file."""
        del self.node.addresses[RECIPIENT_ADDRESS]
        error = self.failureResultOf(self.resolve(), StartupError).value
        self.assertIn("pools/litecoin.yaml: reward_recipients[0].address: ", str(error))
        self.assertIn(RECIPIENT_ADDRESS, str(error))

    def test_basic_credentials_sent(self) -> None:
        """The group's requests carry the daemon's user and password."""
        self.successResultOf(self.resolve())
        expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.assertEqual({c.authorization for c in self.fake.calls}, {f"Basic {expected}"})


class DaemonClientsTests(TestCase):
    """DaemonClients: the daemon clients of a configuration, on one HTTP connection pool."""

    timeout = 30

    async def test_calls_over_real_connections_log_nothing_of_them(self) -> None:
        """A command's clients (a connection per call) and a pool's (kept open) make each
        configured daemon's client, tell the observer of every call, and log no line for
        the connections they open and close."""
        fake = FakeDaemon({"getblockcount": answering(7)})
        site: Any = Site(fake)
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}/"  # type: ignore[attr-defined]
        config = DaemonConfig(url=url, user=USER, password=PASSWORD, timeout=5.0)
        for persistent in (False, True):
            observed: list[str] = []
            clients = DaemonClients(
                reactor,
                persistent=persistent,
                observer=lambda u, method, s, e, seen=observed: seen.append(method),
            )
            group = clients.group([config])
            self.assertEqual([(rpc.url, rpc._timeout) for rpc in group.daemons], [(url, 5.0)])
            with capturedLogs() as events:
                for _ in range(3):
                    self.assertEqual(await group.call("getblockcount"), 7)
                self.assertEqual(await clients.rpc(config).call("getblockcount"), 7)
                await clients.close()
            self.assertEqual([formatEvent(e) for e in events if "actory" in formatEvent(e)], [])
            self.assertEqual(observed, ["getblockcount"] * 4)
        self.assertEqual(len(fake.calls), 8)


class _JsonRpc2Node(Resource):
    """An Ethereum node's JSON-RPC 2.0 answers: ``result`` or ``error``, never both."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []

    def render_POST(self, request: Any) -> bytes:
        body = json.loads(request.content.read())
        self.bodies.append(body)
        if body["method"] == "eth_sendRawTransaction":
            reply = {
                "jsonrpc": "2.0",
                "id": body["id"],
                "error": {"code": -32000, "message": "transaction underpriced"},
            }
        else:
            reply = {"jsonrpc": "2.0", "id": body["id"], "result": "0x539"}
        return json.dumps(reply).encode()


class JsonRpc2Tests(TestCase):
    """DaemonRPC(version="2.0"), as the Ethereum family's nodes answer."""

    def setUp(self) -> None:
        self.node = _JsonRpc2Node()
        make: Any = StubTreq
        self.stub = make(self.node)
        self.clock = Clock()

    def call(self, method: str, version: str = "2.0") -> defer.Deferred[Any]:
        rpc = DaemonRPC(self.stub, URL, "", "", as_reactor(self.clock), version=version)
        return settle(rpc.call(method), self.stub)

    def test_result(self) -> None:
        self.assertEqual(self.successResultOf(self.call("eth_chainId")), "0x539")
        self.assertEqual(self.node.bodies[0]["jsonrpc"], "2.0")

    def test_error_without_result(self) -> None:
        """A 2.0 error reply has no ``result``: it is the node's RPCError, not a malformed reply."""
        error = self.failureResultOf(self.call("eth_sendRawTransaction"), RPCError).value
        self.assertEqual((error.code, error.message), (-32000, "transaction underpriced"))

    def test_one_point_zero_wants_both(self) -> None:
        """A Bitcoin-family client still takes a reply without ``error`` for a malformed one."""
        self.failureResultOf(self.call("eth_chainId", version="1.0"), DaemonResponseError)
