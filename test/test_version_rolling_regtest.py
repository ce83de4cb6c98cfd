"""A version-rolled share becomes a block a real node takes.

The real pool service (as twistd runs it) against a litecoind regtest pair
of its own and the shared redis-server; the test is the miner, speaking
Stratum over a TCP socket: mining.configure with version-rolling, a share
hashed with rolled version bits, mining.submit with the sixth param. On
regtest a share at the port's difficulty is (nearly always) a block: the
node's new tip must be that block, with the rolled header version.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial.unittest import TestCase

from nomp.chain.encoding import bits_to_target, block_hash
from nomp.hashing import ALGORITHMS, JobHasher, ShareHash, ShareWork
from test.poolconf import write_conf
from test.rediscli import redis, redis_hash
from test.servers import RPC_PASSWORD, RPC_USER, shared_redis, shared_regtest
from test.test_stratum_e2e import COIN, pool_ready, start_pool
from test.waiting import until

SCRYPT = ALGORITHMS["scrypt"]
REDIS_DB = 13  # of the shared redis-server
ROLLED_BITS = 0x0ABCE000  # inside the shipped mask 1fffe000
NONCES_PER_CHECK = 64


class RawStratumClient(LineOnlyReceiver):
    """A miner's socket: JSON-RPC requests out, every message in kept in order."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def lineReceived(self, line: bytes) -> None:
        self.messages.append(json.loads(line))

    async def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        """Send a request; its reply, once it came."""
        request_id = next(self._ids)
        self.sendLine(json.dumps({"id": request_id, "method": method, "params": params}).encode())
        await until(lambda: self.reply_to(request_id) is not None, timeout=30)
        reply = self.reply_to(request_id)
        assert reply is not None
        return reply

    def reply_to(self, request_id: int) -> dict[str, Any] | None:
        return next((m for m in self.messages if m.get("id") == request_id and "method" not in m), None)

    def notifications(self, method: str) -> list[list[Any]]:
        return [m["params"] for m in self.messages if m.get("method") == method]


def hasher_of(notify: list[Any]) -> JobHasher:
    """The JobHasher a miner builds from mining.notify's params."""
    _, prevhash, coinb1, coinb2, branch, _, nbits = notify[:7]
    words = bytes.fromhex(prevhash)
    internal = b"".join(words[i : i + 4][::-1] for i in range(0, 32, 4))
    return JobHasher(
        SCRYPT,
        bytes.fromhex(coinb1),
        bytes.fromhex(coinb2),
        [bytes.fromhex(step) for step in branch],
        internal,
        int(nbits, 16),
    )


def find_block(hasher: JobHasher, work: ShareWork, target: int) -> ShareHash:
    """The first share from ``work``'s nonce on whose PoW meets ``target``."""
    for first in range(work.nonce, work.nonce + (1 << 22), NONCES_PER_CHECK):
        works = [work._replace(nonce=n) for n in range(first, first + NONCES_PER_CHECK)]
        for hashed in hasher.check(works):
            if hashed.pow_value <= target:
                return hashed
    raise AssertionError("no block found")


class VersionRolledBlockTests(TestCase):
    """A rolled share through the running pool into litecoind's chain."""

    timeout = 300

    async def test_rolled_block_accepted_by_the_node(self) -> None:
        """submitblock takes it: the tip moves to it and its header version is the rolled one."""
        pair = shared_regtest("version-rolling")
        redis_port = shared_redis().port
        redis(redis_port, REDIS_DB, "FLUSHDB")
        address = pair.new_address()
        conf, stratum_port = write_conf(
            Path(self.mktemp()), pair.miner.url, RPC_USER, RPC_PASSWORD, address, redis_port, REDIS_DB
        )
        root = start_pool(self, conf)
        await until(lambda: pool_ready(root))
        self.assertEqual(root.fatal_errors, [])
        start_height = pair.height()

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", stratum_port, timeout=10)
        client = await endpoint.connect(Factory.forProtocol(RawStratumClient))
        assert isinstance(client, RawStratumClient)

        def hang_up() -> None:
            if client.transport is not None:
                client.transport.loseConnection()

        self.addCleanup(hang_up)

        configured = await client.call(
            "mining.configure",
            [["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2}],
        )
        self.assertEqual(
            configured,
            {"id": 1, "result": {"version-rolling": True, "version-rolling.mask": "1fffe000"}, "error": None},
        )
        mask = int(configured["result"]["version-rolling.mask"], 16)
        subscribed = await client.call("mining.subscribe", ["rolling-test/1.0"])
        extranonce1 = bytes.fromhex(subscribed["result"][1])
        worker = f"{address}.roller"
        self.assertEqual((await client.call("mining.authorize", [worker, "x"]))["result"], True)
        await until(
            lambda: client.notifications("mining.notify") and client.notifications("mining.set_difficulty")
        )

        notify = client.notifications("mining.notify")[-1]
        (difficulty,) = client.notifications("mining.set_difficulty")[-1]
        job_id, version_hex, nbits_hex, ntime_hex = notify[0], notify[5], notify[6], notify[7]
        version = (int(version_hex, 16) & ~mask) | ROLLED_BITS
        self.assertNotEqual(version, int(version_hex, 16))
        extranonce2 = bytes(4)
        target = min(bits_to_target(int(nbits_hex, 16)), SCRYPT.share_target(difficulty))
        found = find_block(
            hasher_of(notify), ShareWork(extranonce1 + extranonce2, version, int(ntime_hex, 16), 0), target
        )
        nonce = int.from_bytes(found.header[76:80], "little")
        self.assertEqual(int.from_bytes(found.header[:4], "little"), version)

        reply = await client.call(
            "mining.submit",
            [worker, job_id, extranonce2.hex(), ntime_hex, f"{nonce:08x}", f"{ROLLED_BITS:08x}"],
        )
        self.assertEqual((reply["result"], reply["error"]), (True, None))

        # The pool submitted it and the node took it: the tip is our header.
        expected_hash = block_hash(found.header)
        await until(lambda: pair.miner.rpc("getbestblockhash") == expected_hash, timeout=60)
        self.assertEqual(pair.height(), start_height + 1)
        header = pair.miner.rpc("getblockheader", expected_hash)
        self.assertEqual(header["version"], version)
        self.assertEqual(header["versionHex"], f"{version:08x}")

        # And recorded it as an accepted block (submitblock answered null).
        await until(lambda: redis_hash(redis_port, REDIS_DB, f"{COIN}:stats").get("validBlocks") == "1")
        pending = redis(redis_port, REDIS_DB, "SMEMBERS", f"{COIN}:blocksPending")
        self.assertEqual([member.split(":")[0] for member in pending], [expected_hash])
        hang_up()
        await root.stopService()
