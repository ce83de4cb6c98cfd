"""A switching port served by two worker processes: ``twistd -n nomp`` with
``workers: 2`` on a real redis-server and two litecoind regtest chains (the
pools of test_switching_regtest).

Miners on the switch's port spread over both workers (each worker leases
its own instance byte, the first byte of the extranonce1s it hands out).
``nomp-cli coinswitch`` on the main process moves every one of them to the
second pool without a reconnect; their next shares are the second coin's,
and Redis holds the second pool as the switch's. The main process's
GET /api/switching shows the switch on its pool with every worker's miners,
and its /metrics each worker's connections and shares, labelled ``worker``.
A worker killed with SIGKILL is started again on that pool.
"""

from __future__ import annotations

import os
import re
import signal
from functools import partial
from pathlib import Path

import treq
import yaml
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from nomp.chain.address import address_of
from nomp.config.load import listen_address, load_config
from test.rediscli import redis
from test.servers import RedisServer
from test.test_control import run_nomp_cli
from test.test_haproxy import PoolProcess, ReconnectingMiner, eventually
from test.test_switching_regtest import DB, KEY_HASH, two_coins, write_switch_conf
from test.webclient import ApiClient

PORT_DIFFICULTY = 0.125  # a few shares a second from the test miners; on regtest each is a block
MINERS = 4  # at least; more are started until both workers have some
MAX_MINERS = 12
START_TIMEOUT = 120.0  # seconds for the main process and its workers to have work (a loaded machine)
SWITCH_KEY = "nomp:switching:scrypt:current"

# One worker's part of the main process's ``status`` answer.
_WORKER = re.compile(r"^worker (\d+) \(pid (\d+)\): ok ")
_MOVED = re.compile(r"^worker \d+ \(pid \d+\): ok switch scrypt: litecoin -> copycoin, (\d+) miners? moved")


class SwitchingOverWorkersTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.coins = two_coins()
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)

    def command(self, *words: str) -> list[str]:
        return [str(line) for line in redis(self.redis.port, DB, *words)]

    def leased(self) -> dict[str, int]:
        """Instance byte (two hex digits) -> the worker pid leasing it."""
        held = {}
        for key in self.command("KEYS", "nomp:instance:*"):
            (holder,) = self.command("GET", key)  # host:pid:random
            held[f"{int(key.rsplit(':', 1)[1]):02x}"] = int(holder.split(":")[1])
        return held

    def workers_credited(self, coin: str) -> set[str]:
        """The worker names of every share in ``<coin>:hashrate``."""
        members = self.command("ZRANGE", f"{coin}:hashrate", "0", "-1")
        return {member.split(":", 1)[1].rsplit(":", 2)[0] for member in members}

    async def test_coinswitch_moves_every_worker_s_miners(self) -> None:
        litecoin, copycoin = self.coins
        conf, switch_port = write_switch_conf(
            Path(self.mktemp()), self.coins, self.redis.port, diff=PORT_DIFFICULTY, refresh=1
        )
        settings = yaml.safe_load((conf / "config.yaml").read_text())
        settings.update(workers=2, drain_seconds=1)
        web = listen_address(settings["web"]["listen"])
        assert web is not None
        api = ApiClient(self, f"http://127.0.0.1:{web[1]}")
        settings["logging"]["level"] = "info"
        (conf / "config.yaml").write_text(yaml.safe_dump(settings))
        network = {pool.name: pool.coin.network for pool in load_config(conf).pools}
        key_hash_script = bytes.fromhex(f"76a914{KEY_HASH}88ac")
        main = PoolProcess("main", conf, switch_port)
        main.start()
        self.addCleanup(main.kill_if_running)  # its workers stop once its channels close

        async def workers() -> dict[int, tuple[int, str]]:
            """Each running worker's pid and part of the ``status`` answer, by index."""
            if not main.running:
                raise AssertionError(f"the main process exited:\n{main.log()}")
            try:
                answer = await main.ask("status")
            except OSError:
                return {}
            found = {}
            for part in answer.split(" | "):
                matched = _WORKER.match(part)
                if matched is not None:
                    found[int(matched[1])] = (int(matched[2]), part)
            return found

        async def both_ready() -> bool:
            found = await workers()
            ready = ("litecoin (litecoin-regtest): ready", "copycoin (copycoin-regtest): ready")
            return len(found) == 2 and all(all(r in part for r in ready) for _, part in found.values())

        await eventually(both_ready, "both workers have both pools' work", timeout=START_TIMEOUT)
        await eventually(lambda: len(self.leased()) == 2, "each worker leased a byte")

        # Miners until both workers have some.
        miners: list[ReconnectingMiner] = []
        self.addCleanup(self.stop_all, miners)
        while len(miners) < MINERS or len({self.leased()[m.current.extranonce1[:2]] for m in miners}) < 2:
            self.assertLess(len(miners), MAX_MINERS, "every miner reached one worker")
            miner = ReconnectingMiner(
                f"{KEY_HASH}.rig{len(miners)}", f"127.0.0.{11 + len(miners)}", "127.0.0.1", switch_port
            )
            miners.append(miner)
            await miner.start()
        await eventually(lambda: all(m.accepted() >= 2 for m in miners), "every miner has shares accepted")
        on_litecoin = {
            f"{address_of(key_hash_script, network['litecoin'])}.rig{i}" for i in range(len(miners))
        }
        await eventually(
            lambda: on_litecoin <= self.workers_credited(litecoin.coin), "litecoin has every miner's shares"
        )
        await eventually(
            partial(self.switch_shown, api, ("litecoin", len(miners), 0, None)),
            "/api/switching shows every worker's miners on litecoin",
        )
        accepted_by_miners = sum(m.accepted() for m in miners)

        async def metrics_of_workers() -> bool:
            samples = await self.scraped(api)
            connections = samples["nomp_stratum_connections"]
            shares = samples["nomp_stratum_shares_total"]
            self.assertEqual(
                {labels.get("worker") for labels, _ in samples["nomp_hashing_threads"]}, {None, "1", "2"}
            )
            on_litecoin = sum(
                v for labels, v in connections if labels["pool"] == "litecoin" and "worker" in labels
            )
            accepted = sum(
                v
                for labels, v in shares
                if (labels["pool"], labels["result"]) == ("litecoin", "accepted") and "worker" in labels
            )
            return on_litecoin == len(miners) and accepted >= accepted_by_miners

        await eventually(metrics_of_workers, "/metrics shows every worker's miners and shares on litecoin")

        # The switch, from the main process's control port, through both workers.
        status, output = await run_nomp_cli("-c", str(conf), "coinswitch", "scrypt", "copycoin")
        self.assertEqual(status, 0, output)
        self.assertTrue(
            output.startswith("ok switch scrypt: litecoin -> copycoin on every worker: worker 1 (pid "),
            output,
        )
        moved = [_MOVED.match(part) for part in output.split(": ", 2)[2].rstrip("\n").split(" | ")]
        self.assertEqual(len(moved), 2, output)
        self.assertEqual(sum(int(m[1]) for m in moved if m is not None), len(miners), output)
        self.assertEqual(self.command("GET", SWITCH_KEY), ["copycoin"])

        # Every miner mines on for the second coin on the connection it had.
        accepted = [m.accepted() for m in miners]
        await eventually(
            lambda: all(m.accepted() >= before + 2 for m, before in zip(miners, accepted, strict=True)),
            "every miner has shares accepted after the switch",
        )
        on_copycoin = {
            f"{address_of(key_hash_script, network['copycoin'])}.rig{i}" for i in range(len(miners))
        }
        await eventually(
            lambda: on_copycoin <= self.workers_credited(copycoin.coin), "copycoin has every miner's shares"
        )
        self.assertEqual([len(m.links) for m in miners], [1] * len(miners))
        await eventually(
            partial(self.switch_shown, api, ("copycoin", len(miners), 1, "operator")),
            "/api/switching shows every worker's miners on copycoin",
        )
        self.assertTrue(all(m.connected for m in miners))
        status, output = await run_nomp_cli("-c", str(conf), "coinswitch", "scrypt", "copycoin")
        self.assertEqual((status, output), (1, "error switch scrypt is on copycoin already\n"))

        # A worker killed outright is started again on the switch's pool.
        found = await workers()
        victim_index, (victim_pid, _) = next(iter(found.items()))
        os.kill(victim_pid, signal.SIGKILL)

        async def restarted() -> bool:
            again = (await workers()).get(victim_index)
            return (
                again is not None
                and again[0] != victim_pid
                and "switch scrypt (scrypt): on copycoin" in again[1]
            )

        await eventually(
            restarted, f"worker {victim_index} is running again on copycoin", timeout=START_TIMEOUT
        )
        await self.stop_all(miners)
        self.assertEqual(main.stop(), -signal.SIGTERM, main.log())

    async def switch_shown(self, api: ApiClient, expected: tuple[str, int, int, str | None]) -> bool:
        """Whether the main process's /api/switching shows the switch as
        ``expected``: (current pool, miners, switches, last reason)."""
        (switch,) = await api.get("/api/switching", schema_path="/api/switching")
        self.assertEqual(
            (switch["name"], switch["algorithm"], switch["pools"]),
            ("scrypt", "scrypt", ["litecoin", "copycoin"]),
        )
        return (switch["current"], switch["miners"], switch["switches"], switch["last_reason"]) == expected

    async def scraped(self, api: ApiClient) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The main process's /metrics: each sample's labels and value, by sample name."""
        response = await treq.get(f"{api.base}/metrics", pool=api.http)
        self.assertEqual(response.code, 200)
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families((await response.content()).decode()):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        return samples

    async def stop_all(self, miners: list[ReconnectingMiner]) -> None:
        for miner in miners:
            await miner.stop()
