"""Miners through the whole pool: the service tree nomp.tap builds, real
sockets, a real redis-server, and litecoind regtest nodes (or, for shares
that are not blocks, a fake daemon serving a mainnet-difficulty template)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from nomp.chain.address import decode_address
from nomp.config import load_config
from nomp.hashing import ALGORITHMS, ShareWork
from nomp.miner import Miner, connect
from nomp.service import NompService
from nomp.tap import build_service
from test.chainhelpers import main_chain_and_side_branches
from test.fakedaemon import FakeDaemon
from test.poolconf import write_conf
from test.rediscli import redis, redis_hash
from test.servers import RPC_PASSWORD, RPC_USER, RedisServer, shared_redis, shared_regtest
from test.test_chain import template_reply
from test.waiting import until

SCRYPT = ALGORITHMS["scrypt"]
COIN = "litecoin-regtest"


def start_pool(test: TestCase, conf: Path) -> NompService:
    """The service tree twistd would run, started on the real reactor."""
    root = build_service(load_config(conf), reactor, exit_with=lambda status: None, shutdown=lambda: None)
    root.startService()
    test.addCleanup(lambda: root.running and root.stopService())
    return root


def pool_ready(root: NompService) -> bool:
    return all(getattr(child, "ready", True) for child in root) or bool(root.fatal_errors)


class MiningThroughThePoolTests(TestCase):
    """nomp-miner mines through a running pool: blocks reach the node and
    Redis holds exactly the shares the miner was told were accepted."""

    timeout = 300

    async def test_blocks_and_shares(self) -> None:
        """Every accepted share is in Redis once, every accepted block is in the chain once."""
        pair = shared_regtest("stratum")
        redis_port = shared_redis().port
        db = 3
        redis(redis_port, db, "FLUSHDB")
        address = pair.new_address()
        conf, stratum_port = write_conf(
            Path(self.mktemp()), pair.miner.url, RPC_USER, RPC_PASSWORD, address, redis_port, db
        )
        root = start_pool(self, conf)
        await until(lambda: pool_ready(root))
        self.assertEqual(root.fatal_errors, [])
        start_height = pair.height()

        miner = Miner(reactor, SCRYPT, f"{address}.rig1", threads=2)
        await connect(miner, "127.0.0.1", stratum_port)
        self.assertTrue(await miner.authorized)
        miner.start()
        await until(lambda: pair.height() >= start_height + 10, timeout=120)
        await miner.stop()
        await root.stopService()

        stats = miner.stats
        assert stats.rejected is not None
        self.assertGreater(stats.accepted, 0)
        self.assertEqual(set(stats.rejected) - {"21 job not found"}, set())
        counters = redis_hash(redis_port, db, f"{COIN}:stats")
        self.assertEqual(int(counters["validShares"]), stats.accepted)
        self.assertEqual(int(counters.get("invalidShares", 0)), stats.rejected_total)
        rounds = [f"{COIN}:shares:roundCurrent", *redis(redis_port, db, "KEYS", f"{COIN}:shares:round[0-9]*")]
        credited = sum(float(redis_hash(redis_port, db, key).get(f"{address}.rig1", 0)) for key in rounds)
        self.assertAlmostEqual(credited, 0.0625 * stats.accepted, places=6)

        # Every block of ours in the chain is recorded, once; nothing else is.
        pool_script = decode_address(address, load_config(conf).pools[0].coin.network).script.hex()
        ours = set()
        for height in range(start_height + 1, pair.height() + 1):
            block = pair.miner.rpc("getblock", pair.miner.rpc("getblockhash", height), 2)
            if block["tx"][0]["vout"][0]["scriptPubKey"]["hex"] == pool_script:
                ours.add((block["hash"], block["tx"][0]["txid"], height))
        # Besides them, pending holds the blocks a block of ours beat at their height (found on
        # the same job a moment later): the node keeps them on a side branch.
        pending = redis(redis_port, db, "SMEMBERS", f"{COIN}:blocksPending")
        recorded = {(h, txid, int(height)) for h, txid, height, *_ in (m.split(":") for m in pending)}
        _, side = main_chain_and_side_branches(pair, [h for h, _, _ in recorded])
        self.assertEqual({r for r in recorded if r[0] not in side}, ours)
        self.assertEqual(len(pending), len(recorded))
        self.assertEqual(int(counters["validBlocks"]), len(recorded))
        self.assertGreaterEqual(len(ours), 10)
        for block_hash, _, height in ours:
            detail = redis_hash(redis_port, db, f"{COIN}:block:{block_hash}")
            self.assertEqual(int(detail["height"]), height)
            self.assertEqual(detail["worker"], f"{address}.rig1")


class RedisAndShutdownWhileMiningTests(TestCase):
    """Redis restarts while a miner mines through the pool, then the pool is
    stopped with shares still coming: no accepted share is lost or doubled."""

    timeout = 300

    async def test_redis_restart_then_shutdown(self) -> None:
        """Every share the miner was told was accepted is in Redis exactly once."""
        pair = shared_regtest("stratum-restart")
        redis_server = RedisServer(persistent=True).start()
        self.addCleanup(redis_server.stop)
        address = pair.new_address()
        conf, stratum_port = write_conf(
            Path(self.mktemp()), pair.miner.url, RPC_USER, RPC_PASSWORD, address, redis_server.port
        )
        root = start_pool(self, conf)
        await until(lambda: pool_ready(root))
        miner = Miner(reactor, SCRYPT, f"{address}.rig1", threads=2)
        await connect(miner, "127.0.0.1", stratum_port)
        self.assertTrue(await miner.authorized)
        miner.start()
        await until(lambda: miner.stats.accepted >= 20)

        redis_server.halt()  # shares keep coming while Redis is away
        accepted_before = miner.stats.accepted
        await until(lambda: miner.stats.accepted >= accepted_before + 20)
        redis_server.start()
        accepted_during = miner.stats.accepted - accepted_before
        await until(lambda: miner.stats.accepted >= accepted_before + accepted_during + 20)

        # Stop the pool while the miner is still submitting: it closes the
        # connections, waits for the shares being checked, writes them all.
        await root.stopService()
        await miner.stop()
        stats = miner.stats
        assert stats.rejected is not None
        self.assertEqual(set(stats.rejected) - {"21 job not found"}, set())
        counters = redis_hash(redis_server.port, 0, f"{COIN}:stats")
        # A share accepted just before the close may have lost its reply on the way.
        recorded = int(counters["validShares"])
        self.assertGreaterEqual(recorded, stats.accepted)
        self.assertLessEqual(recorded, stats.submitted - stats.rejected_total)
        self.assertGreater(accepted_during, 0)
        rounds = [
            f"{COIN}:shares:roundCurrent",
            *redis(redis_server.port, 0, "KEYS", f"{COIN}:shares:round[0-9]*"),
        ]
        credited = sum(
            float(redis_hash(redis_server.port, 0, key).get(f"{address}.rig1", 0)) for key in rounds
        )
        self.assertAlmostEqual(credited, 0.0625 * recorded, places=6)
        pending = redis(redis_server.port, 0, "SMEMBERS", f"{COIN}:blocksPending")
        hashes = [member.split(":")[0] for member in pending]
        self.assertEqual(len(hashes), len(set(hashes)))
        self.assertEqual(int(counters["validBlocks"]), len(hashes))
        main, _ = main_chain_and_side_branches(pair, hashes)
        self.assertEqual(bool(main), bool(hashes))


class SharesThatAreNotBlocksTests(TestCase):
    """Against a fake daemon with a mainnet-difficulty template: accepted
    shares, and each kind of refusal with its code; Redis counts agree."""

    timeout = 120

    async def test_refusals_and_counters(self) -> None:
        """Accepted, low-difficulty, stale, duplicate and unauthorized shares get their codes."""
        address = "rltc1qey3dpjf7avevcavv6uk33juxyyyyndgfuc2s2l"
        template = template_reply(bits="1b00ffff", target=None, height=101)
        del template["target"]
        network = None

        def validate(params: list[Any]) -> dict[str, Any]:
            script = decode_address(params[0], network).script.hex()  # type: ignore[arg-type]
            return {"isvalid": True, "address": params[0], "scriptPubKey": script, "ismweb": False}

        fake = FakeDaemon(
            {
                "getblockchaininfo": lambda _: {
                    "chain": "regtest",
                    "blocks": 100,
                    "bestblockhash": template["previousblockhash"],
                    "initialblockdownload": False,
                },
                "getblocktemplate": lambda _: template,
                "validateaddress": validate,
                "submitblock": lambda _: None,
            }
        )
        site: Any = Site(fake)
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        daemon_port: int = listening.getHost().port  # type: ignore[attr-defined]
        self.addCleanup(listening.stopListening)
        redis_port = shared_redis().port
        db = 4
        redis(redis_port, db, "FLUSHDB")
        conf, stratum_port = write_conf(
            Path(self.mktemp()),
            f"http://127.0.0.1:{daemon_port}",
            "u",
            "p",
            address,
            redis_port,
            db,
        )
        network = load_config(conf).pools[0].coin.network
        conf_pool = conf / "pools" / "litecoin.yaml"
        conf_pool.write_text(conf_pool.read_text().replace("diff: 0.0625", "diff: 0.0001"))
        root = start_pool(self, conf)
        await until(lambda: pool_ready(root))
        self.assertEqual(root.fatal_errors, [])

        miner = Miner(reactor, SCRYPT, f"{address}.a")
        client = await connect(miner, "127.0.0.1", stratum_port)
        self.assertTrue(await miner.authorized)
        await until(lambda: miner.job is not None)
        job = miner.job
        assert job is not None
        target = SCRYPT.share_target(0.0001)

        def find(good: bool, start: int = 0) -> tuple[str, int]:
            extranonce2 = bytes(4)
            nonce = start
            while True:
                work = ShareWork(miner.extranonce1 + extranonce2, job.version, job.ntime, nonce)
                if (job.hasher.check([work])[0].pow_value <= target) == good:
                    return extranonce2.hex(), nonce
                nonce += 1

        async def submit(worker: str, job_id: str, extranonce2: str, ntime: int, nonce: int | str) -> Any:
            nonce_hex = nonce if isinstance(nonce, str) else f"{nonce:08x}"
            reply = await client.call(
                "mining.submit", [worker, job_id, extranonce2, f"{ntime:08x}", nonce_hex]
            )
            return reply["error"][0] if reply["error"] else reply["result"]

        en2, good_nonce = find(True)
        _, bad_nonce = find(False)
        _, second_good = find(True, good_nonce + 1)
        worker = f"{address}.a"
        self.assertEqual(await submit(worker, job.job_id, en2, job.ntime, good_nonce), True)
        self.assertEqual(await submit(worker, job.job_id, en2, job.ntime, f"{good_nonce:08X}"), 22)
        self.assertEqual(await submit(worker, job.job_id, en2, job.ntime, bad_nonce), 23)
        self.assertEqual(await submit(worker, "ffffff", en2, job.ntime, second_good), 21)
        self.assertEqual(await submit(f"{address}.b", job.job_id, en2, job.ntime, second_good), 24)
        self.assertEqual(await submit(worker, job.job_id, "00", job.ntime, second_good), 20)
        self.assertEqual(
            await submit(worker, job.job_id, en2, int(reactor.seconds()) + 7300, second_good), 20
        )
        self.assertEqual(await submit(worker, job.job_id, en2, job.ntime, second_good), True)

        await miner.stop()
        await root.stopService()
        counters = redis_hash(redis_port, db, f"{COIN}:stats")
        self.assertEqual(int(counters["validShares"]), 2)
        self.assertEqual(int(counters["invalidShares"]), 5)  # 22, 23, 21, 20, 20; not the unauthorized one
        self.assertAlmostEqual(
            float(redis_hash(redis_port, db, f"{COIN}:shares:roundCurrent")[worker]), 0.0002
        )
        self.assertEqual(len(redis(redis_port, db, "ZRANGE", f"{COIN}:hashrate", "0", "-1")), 7)
        self.assertEqual([c.method for c in fake.calls if c.method == "submitblock"], [])
        self.assertNotIn("validBlocks", counters)
