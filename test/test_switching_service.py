"""SwitchingService: the Switches interface, its answers, and the current
pool kept in a real redis-server (the pools are StratumPools on fakes)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, cast

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevelFilterPredicate, capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

from nomp.config import load_config
from nomp.config.model import PricesConfig, ProfitSwitchingConfig
from nomp.control.operations import ProcessOperations, ShareRates
from nomp.control.service import ControlProtocol
from nomp.service import NompService
from nomp.store.redis import RedisService
from nomp.store.schema import SwitchKeys
from nomp.stratum.service import DRAIN_CHECK_INTERVAL, StratumService
from nomp.switching import Switches, SwitchRefused
from nomp.switching.prices import FilePriceSource
from nomp.switching.profitservice import ProfitSwitchingService
from nomp.switching.service import STATE_INTERVAL, SwitchingService
from nomp.web.app import WebApp
from nomp.web.pages import Pages
from test.rediscli import redis
from test.redisservice import connected_redis_service
from test.servers import shared_redis
from test.test_config_paths import SHIPPED_CONF
from test.test_stratum_protocol import NOW, PLAIN_PORT
from test.test_switching import SWITCH_PORT, SwitchSetup
from test.waiting import until

DB = 12  # of the shared redis-server; each test has a namespace of its own


class _ServiceCase(SwitchSetup, TestCase):
    """The switch of test_switching under a SwitchingService, Redis connected."""

    timeout = 30

    def setUp(self) -> None:
        super().setUp()
        self.clock = MemoryReactorClock()
        self.clock.advance(NOW)
        self.ports.clock = self.clock
        self.server = shared_redis()
        self.keys = SwitchKeys(f"T{os.urandom(4).hex()}")
        self.switched: list[tuple[str, str, str]] = []

    async def connected(self) -> RedisService:
        return await connected_redis_service(self, self.server.port, DB)

    def service(self, redis_service: RedisService | None) -> SwitchingService:
        port = dataclasses.replace(SWITCH_PORT, listen="tcp:0:interface=127.0.0.1")
        service = SwitchingService(
            {"scrypt": (self.ports, StratumService(self.ports, (port,), self.clock))},
            {"scrypt": "scrypt"},
            lambda: ["ltc", "copy", "btc"],
            (lambda: None) if redis_service is None else redis_service.client,
            self.clock,
            self.keys,
        )
        service.add_listener(lambda *moved: self.switched.append(moved))
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def stored(self) -> str | None:
        lines = redis(self.server.port, DB, "GET", self.keys.current("scrypt"))
        return lines[0] if lines else None


class SwitchesTests(_ServiceCase):
    """The interface profit switching and the control port use."""

    async def test_interface(self) -> None:
        """Names, algorithm, pools (default first) and current pool of each switch."""
        service: Switches = self.service(None)
        self.assertEqual(list(service.switch_names()), ["scrypt"])
        self.assertEqual(service.algorithm("scrypt"), "scrypt")
        self.assertEqual(list(service.pools("scrypt")), ["ltc", "copy"])
        self.assertEqual(service.current("scrypt"), "ltc")

    async def test_switch(self) -> None:
        """A switch moves the miners, answers one line, records the pool in Redis, and is counted."""
        service = self.service(await self.connected())
        miner = self.miner()
        answer = await service.switch("scrypt", "copy", "operator")
        self.assertEqual(
            answer,
            "switch scrypt: ltc -> copy, 1 miner moved (1 kept their extranonce1, "
            "0 sent mining.set_extranonce, 0 asked to reconnect)",
        )
        self.assertEqual(service.current("scrypt"), "copy")
        self.assertEqual(miner.read()[-1]["params"][0], self.copy_job.job_id)
        self.assertEqual(self.stored(), "copy")
        self.assertEqual(self.switched, [("scrypt", "ltc", "copy")])
        (state,) = service.states()
        self.assertEqual((state.current, state.miners, state.switches), ("copy", 1, 1))
        self.assertEqual(service.status_lines(), ["switch scrypt (scrypt): on copy of ltc, copy, 1 miner"])
        self.assertEqual(
            service.documents(),
            [
                {
                    "name": "scrypt",
                    "algorithm": "scrypt",
                    "pools": ["ltc", "copy"],
                    "current": "copy",
                    "miners": 1,
                    "switches": 1,
                    "last_reason": "operator",
                }
            ],
        )

    async def assertRefused(self, service: SwitchingService, switch: str, pool: str, message: str) -> None:
        with self.assertRaises(SwitchRefused) as caught:
            await service.switch(switch, pool, "operator")
        self.assertEqual(caught.exception.message, message)
        self.assertEqual(service.current("scrypt"), "ltc")
        self.assertEqual(self.switched, [])

    async def test_refusals(self) -> None:
        """An unknown switch, an unknown pool, a pool not in the switch, the current pool:
        each refused with its own answer, nothing moved."""
        service = self.service(None)
        await self.assertRefused(service, "sha", "ltc", "no switch 'sha' (switches: scrypt)")
        await self.assertRefused(service, "scrypt", "doge", "no pool 'doge'")
        await self.assertRefused(
            service, "scrypt", "btc", "pool btc is not one of switch scrypt's (ltc, copy)"
        )
        await self.assertRefused(service, "scrypt", "ltc", "switch scrypt is on ltc already")

    async def test_pool_still_starting(self) -> None:
        """A pool with no job yet is refused: its miners would have no work."""
        self.copy.pool.registry = None
        await self.assertRefused(
            self.service(None), "scrypt", "copy", "pool copy has no job yet: it is still starting"
        )

    async def test_redis_down(self) -> None:
        """With Redis away the miners move at once; the answer says the pool is not
        recorded yet, and it is written once Redis is back."""
        redis_service = await self.connected()
        up = False
        service = SwitchingService(
            {"scrypt": (self.ports, StratumService(self.ports, (), self.clock))},
            {"scrypt": "scrypt"},
            lambda: ["ltc", "copy"],
            lambda: redis_service.client() if up else None,
            self.clock,
            self.keys,
        )
        service.startService()
        self.addCleanup(service.stopService)
        answer = await service.switch("scrypt", "copy", "operator")
        self.assertTrue(
            answer.endswith("; not recorded in Redis yet (it is down): written once it is back"), answer
        )
        self.assertEqual(service.current("scrypt"), "copy")
        self.assertIsNone(self.stored())
        up = True
        self.clock.advance(STATE_INTERVAL)
        await until(lambda: self.stored() == "copy")


class RestoreTests(_ServiceCase):
    """The pool a switch was on, read back from Redis at start."""

    async def test_resumes_on_the_stored_pool(self) -> None:
        """A switch whose key names one of its pools moves there once Redis answers."""
        redis(self.server.port, DB, "SET", self.keys.current("scrypt"), "copy")
        miner = self.miner()
        service = self.service(await self.connected())
        await until(lambda: service.current("scrypt") == "copy")
        self.assertEqual(miner.read()[-1]["params"][0], self.copy_job.job_id)
        self.assertEqual(service.states()[0].last_reason, "the pool it was on before the restart")

    async def test_unknown_stored_pool(self) -> None:
        """A stored pool the switch does not have is logged, and the default stays."""
        redis(self.server.port, DB, "SET", self.keys.current("scrypt"), "gone")
        with capturedLogs() as events:
            service = self.service(await self.connected())
            await until(lambda: not service.pending)
        self.assertEqual(service.current("scrypt"), "ltc")
        (warning,) = [e for e in events if e.get("stored") == "gone"]
        self.assertEqual(warning["pool"], "ltc")

    async def test_no_stored_pool(self) -> None:
        """Without a key the switch stays on its default."""
        service = self.service(await self.connected())
        await until(lambda: not service.pending)
        self.assertEqual(service.current("scrypt"), "ltc")

    async def test_command_before_the_read_wins(self) -> None:
        """A switch made before Redis answered is not undone by the stored pool."""
        redis(self.server.port, DB, "SET", self.keys.current("scrypt"), "copy")
        service = self.service(None)
        await service.switch("scrypt", "copy", "operator")
        await service.switch("scrypt", "ltc", "operator")
        self.assertEqual(service.current("scrypt"), "ltc")
        self.assertEqual(len(self.switched), 2)


class CoinswitchCommandTests(_ServiceCase):
    """``coinswitch <switch> <pool>`` on the control port, and the switches in ``status``."""

    def control(self, switches: Switches | None) -> Callable[[str], defer.Deferred[str]]:
        protocol = ControlProtocol({}, switches=lambda: switches)
        transport = StringTransport()
        protocol.makeConnection(transport)

        async def send(line: str) -> str:
            transport.clear()
            protocol.dataReceived(line.encode() + b"\n")
            await until(lambda: transport.value().endswith(b"\n"))
            return str(transport.value().decode())

        return lambda line: defer.Deferred.fromCoroutine(send(line))

    def operations(self, service: SwitchingService) -> ProcessOperations:
        """A process with no pools whose status has ``service``'s lines."""
        return ProcessOperations(
            lambda: [],
            lambda: True,
            LogLevelFilterPredicate(),
            ShareRates(dict, self.clock),
            self.clock,
            lambda: NOW,
            lambda pool: defer.succeed(None),
            lambda: None,
            service.status_lines,
        )

    async def test_coinswitch(self) -> None:
        """The answer is the switch's one line; every refusal is an error line."""
        send = self.control(self.service(await self.connected()))
        self.miner()
        self.assertEqual(
            await send("coinswitch scrypt copy"),
            "ok switch scrypt: ltc -> copy, 1 miner moved (1 kept their extranonce1, "
            "0 sent mining.set_extranonce, 0 asked to reconnect)\n",
        )
        self.assertEqual(await send("coinswitch scrypt copy"), "error switch scrypt is on copy already\n")
        self.assertEqual(await send("coinswitch sha ltc"), "error no switch 'sha' (switches: scrypt)\n")
        self.assertEqual(await send("coinswitch scrypt doge"), "error no pool 'doge'\n")
        self.assertEqual(
            await send("coinswitch scrypt btc"), "error pool btc is not one of switch scrypt's (ltc, copy)\n"
        )
        self.assertEqual(await send("coinswitch scrypt"), "error usage: coinswitch <switch> <pool>\n")
        self.assertEqual(self.stored(), "copy")

    async def test_no_switches(self) -> None:
        """Without a switching section the command says so."""
        send = self.control(None)
        self.assertEqual(
            await send("coinswitch scrypt copy"),
            "error no switching ports in this process (config.yaml: switching)\n",
        )

    async def test_status(self) -> None:
        """status has a line on each switch."""
        service = self.service(None)
        operations = self.operations(service)
        self.assertEqual(
            operations.status(),
            "up 0s; no pools; switch scrypt (scrypt): on ltc of ltc, copy, 0 miners; Redis up",
        )

    async def test_status_with_profit_switching(self) -> None:
        """With profit switching, status has its line on each switch after the switches' own."""
        service = self.service(None)
        prices = self.mktemp()
        with open(prices, "w") as file:
            file.write('{"LTC": "70"}')
        config = ProfitSwitchingConfig(prices=PricesConfig(file=os.path.abspath(prices)))
        profit = ProfitSwitchingService(
            config, service, lambda name: None, FilePriceSource(prices, 4096), self.clock
        )
        operations = self.operations(service)
        self.assertEqual(
            operations.status(),
            "up 0s; no pools; switch scrypt (scrypt): on ltc of ltc, copy, 0 miners; "
            "profit switching scrypt: on ltc, no decision yet, prices not read yet; Redis up",
        )
        with capturedLogs():
            profit.run_once()  # done at once: the file is read in the call
        self.assertEqual(
            operations.status().split("; ")[-2:],
            [
                "profit switching scrypt: on ltc, stayed 0 s ago (no pool could be valued), prices up",
                "Redis up",
            ],
        )


class DrainTests(_ServiceCase):
    """A stop's drain and a switching port's miners, which are the pools' they mine for."""

    async def test_each_miner_counted_once(self) -> None:
        """A miner on the switch's port is asked to reconnect once, and counted
        once: by the pool it is attached to, not by the switch as well."""
        pool_port = dataclasses.replace(PLAIN_PORT, listen="tcp:0:interface=127.0.0.1")
        switch_port = dataclasses.replace(SWITCH_PORT, listen="tcp:0:interface=127.0.0.1")
        pool_side = StratumService(self.ltc.server, (pool_port,), self.clock)
        switch_side = StratumService(self.ports, (switch_port,), self.clock)
        # Not stopped after: on the memory reactor they hold nothing, and
        # their stops would close each switched miner twice, which the
        # StringTransport under it refuses.
        for side in (pool_side, switch_side):
            side.startService()
        root = NompService(load_config(SHIPPED_CONF), self.clock)
        root.drainers = lambda: [pool_side, switch_side]
        switched = self.miner()
        own = self.ltc.miner()
        self.assertEqual(self.ports.attached_to(switched.protocol), "ltc")
        self.assertIsNone(self.ports.attached_to(own.protocol))

        with capturedLogs() as events:
            draining = defer.Deferred.fromCoroutine(root.drain(1.0))
            self.clock.pump([DRAIN_CHECK_INTERVAL] * 21)
            await draining

        for miner in (switched, own):
            self.assertEqual(
                [line for line in miner.read() if line.get("method") == "client.reconnect"],
                [{"id": None, "method": "client.reconnect", "params": []}],
            )
        log = [formatEvent(event) for event in events]
        self.assertIn("pool litecoin: 0 of 2 miners asked to reconnect left, 2 to close", log)
        self.assertIn("2 miners asked to reconnect, 2 left to close", log[-1])


class SwitchingWebTests(TestCase):
    """/api/switching and the site's page of the switches."""

    async def test_api(self) -> None:
        """/api/switching lists each switch's document; an empty list without switches."""
        documents = [{"name": "scrypt", "current": "ltc"}]
        with_switches: Any = StubTreq(WebApp(cast(Any, None), switching=lambda: documents).app.resource())
        response = await with_switches.get("http://pool/api/switching")
        self.assertEqual((response.code, await response.json()), (200, documents))
        without: Any = StubTreq(WebApp(cast(Any, None)).app.resource())
        self.assertEqual(await (await without.get("http://pool/api/switching")).json(), [])

    async def test_page(self) -> None:
        """The site links and serves its switching page only when there are switches."""
        with_switches: Any = StubTreq(Pages(switching=True).resource())
        response = await with_switches.get("http://pool/switching")
        body = (await response.content()).decode()
        self.assertEqual(response.code, 200)
        self.assertIn('<a href="/switching">Switching</a>', body)
        self.assertIn("/static/switching.js", body)
        without: Any = StubTreq(Pages().resource())
        self.assertEqual((await without.get("http://pool/switching")).code, 404)
