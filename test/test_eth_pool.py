"""The Ethereum-family pool against the dev node: eth-proxy, NiceHash and
HTTP getwork miners, every share outcome with its code, and blocks the
chain engine imports."""

from __future__ import annotations

import json
from typing import Any

import ethash
import treq
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from nomp.config import VardiffConfig
from nomp.eth.stratum import NICEHASH_UNIT
from test.ethnode import search_nonce
from test.ethpool import (
    LOGIN,
    LOGIN_CHECKSUMMED,
    EthPool,
    GetworkClient,
    LineClient,
    connect,
    eth_pool,
    getwork_port,
    solve,
    stratum_port,
)

SHARE_DIFF = 2.0
# The dev chain's: its difficulty stays put below 2,048, and a block takes
# PyPI ethash about 1.5 s to find when a test moves the chain on.
NETWORK_DIFF = 256


def missing_nonce(work: list[str], difficulty: float) -> list[str]:
    """Params of a share whose final hash misses ``difficulty``, mix digest right (PyPI ethash)."""
    header = bytes.fromhex(work[0][2:])
    target = int(2**256 / (difficulty * 0.9))  # beyond the pool's rounding tolerance
    nonce = 0
    while True:
        final, mix = ethash.hash(0, header, nonce)
        if int.from_bytes(final, "big") > target:
            return ["0x" + nonce.to_bytes(8, "big").hex(), work[0], "0x" + mix.hex()]
        nonce += 1


class EthProxyTests(TestCase):
    timeout = 60

    def setUp(self) -> defer.Deferred[None]:  # type: ignore[override]  # trial waits for it
        return defer.Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.pool: EthPool = await eth_pool(self, [stratum_port(SHARE_DIFF)], difficulty=NETWORK_DIFF)
        self.miner: LineClient = await connect(self.pool.ports[0])
        self.addCleanup(self._close)

    def _close(self) -> Any:
        assert self.miner.transport is not None
        self.miner.transport.loseConnection()
        return self.miner.closed

    async def login(self, worker: str = "rig1") -> list[str]:
        reply = await self.miner.call("eth_submitLogin", [LOGIN_CHECKSUMMED, "x"], worker=worker)
        self.assertEqual(reply.get("result"), True, reply)
        work = await self.miner.call("eth_getWork", [], request_id=2)
        result: list[str] = work["result"]
        return result

    async def test_share_accepted_and_recorded(self) -> None:
        work = await self.login()
        self.assertEqual(work[2], f"0x{2**256 // 2:064x}")
        reply = await self.miner.call(
            "eth_submitWork", solve(work, 1, SHARE_DIFF), request_id=3, worker="rig1"
        )
        self.assertEqual(reply["result"], True, reply)
        self.assertEqual(self.pool.recorder.valid, [(f"{LOGIN}.rig1", SHARE_DIFF)])

    async def test_duplicate_in_other_case(self) -> None:
        work = await self.login()
        params = solve(work, 1, SHARE_DIFF)
        self.assertEqual((await self.miner.call("eth_submitWork", params, request_id=3))["result"], True)
        upper = ["0x" + p[2:].upper() for p in params]
        reply = await self.miner.call("eth_submitWork", upper, request_id=4)
        self.assertEqual(reply["error"], {"code": 22, "message": "Duplicate share"})
        self.assertEqual(self.pool.side.pipeline.shares["duplicate"], 1)
        again = await self.miner.call(
            "eth_submitWork", solve(work, 1, SHARE_DIFF, start=int(params[0], 16) + 1), request_id=5
        )
        self.assertEqual(again["result"], True, "the connection stays open after a duplicate")

    async def test_low_difficulty(self) -> None:
        work = await self.login()
        reply = await self.miner.call("eth_submitWork", missing_nonce(work, SHARE_DIFF), request_id=3)
        self.assertEqual(reply["error"]["code"], 23, reply)
        self.assertEqual(self.pool.side.pipeline.shares["low_difficulty"], 1)

    async def test_wrong_mix_digest(self) -> None:
        work = await self.login()
        params = solve(work, 1, SHARE_DIFF)
        params[2] = "0x" + "11" * 32
        reply = await self.miner.call("eth_submitWork", params, request_id=3)
        self.assertEqual(reply["error"]["code"], 20, reply)

    async def test_malformed_hex_and_lengths(self) -> None:
        work = await self.login()
        good = solve(work, 1, SHARE_DIFF)
        cases = [
            [good[0][:-1], good[1], good[2]],
            [good[0], good[1] + "00", good[2]],
            [good[0], good[1], "0x" + "zz" * 32],
            ["1234567890abcdef", good[1], good[2]],
        ]
        for i, params in enumerate(cases):
            reply = await self.miner.call("eth_submitWork", params, request_id=10 + i)
            self.assertEqual(reply["error"], {"code": -1, "message": "Malformed PoW result"}, params)
        wrong: list[list[Any]] = [good[:2], [1, 2, 3], [*good, good[0]]]
        for i, wrong_params in enumerate(wrong):
            reply = await self.miner.call("eth_submitWork", wrong_params, request_id=20 + i)
            self.assertEqual(reply["error"], {"code": -1, "message": "Invalid params"}, wrong_params)

    async def test_unknown_and_stale_work(self) -> None:
        work = await self.login()
        unknown = ["0x" + "00" * 8, "0x" + "ab" * 32, "0x" + "cd" * 32]
        reply = await self.miner.call("eth_submitWork", unknown, request_id=3)
        self.assertEqual(reply["error"], {"code": 21, "message": "Unknown work"})
        old = solve(work, 1, SHARE_DIFF)
        self.pool.node.chain.mine_blocks(3)
        await self.pool.next_work(4)  # work of heights 2 to 4 is live: 1's is stale
        reply = await self.miner.call("eth_submitWork", old, request_id=4)
        self.assertEqual(reply["error"], {"code": 21, "message": "Stale share"})

    async def test_work_of_recent_heights_still_counts(self) -> None:
        work = await self.login()
        share = solve(work, 1, SHARE_DIFF)
        self.pool.node.chain.mine()
        await self.pool.next_work(2)
        reply = await self.miner.call("eth_submitWork", share, request_id=3)
        self.assertEqual(reply["result"], True, reply)

    async def test_not_logged_in(self) -> None:
        work = (await self.miner.call("eth_getWork", [], request_id=2))["result"]
        reply = await self.miner.call("eth_submitWork", solve(work, 1, SHARE_DIFF), request_id=3)
        self.assertEqual(reply["error"], {"code": 25, "message": "Not subscribed"})

    async def test_bad_logins(self) -> None:
        for i, login in enumerate(
            ["0x123", "0x" + "0" * 40, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", ""]
        ):
            reply = await self.miner.call("eth_submitLogin", [login], request_id=30 + i)
            self.assertEqual(reply["error"]["code"], -1, (login, reply))
        reply = await self.miner.call("eth_submitLogin", [], request_id=40)
        self.assertEqual(reply["error"], {"code": -1, "message": "Invalid params"})

    async def test_unknown_method(self) -> None:
        reply = await self.miner.call("eth_sendTransaction", [], request_id=3)
        self.assertEqual(reply["error"], {"code": -3, "message": "Method not found"})

    async def test_new_work_is_pushed(self) -> None:
        await self.login()
        self.pool.node.chain.mine()
        pushed = await self.miner.next()
        self.assertEqual(pushed["id"], 0)
        current = self.pool.service.book.current
        assert current is not None
        self.assertEqual(pushed["result"][0], current.header_hex)
        self.assertEqual(pushed["result"][2], f"0x{2**256 // 2:064x}")

    async def test_submit_hashrate(self) -> None:
        reply = await self.miner.call("eth_submitHashrate", ["0x500000", "0x" + "12" * 32], request_id=3)
        self.assertEqual(reply["result"], True)


class BlockTests(TestCase):
    """A share meeting the network's boundary is a block the chain engine imports."""

    timeout = 120

    async def test_block_through_eth_proxy(self) -> None:
        pool = await eth_pool(self, [stratum_port(SHARE_DIFF)], difficulty=64)
        miner = await connect(pool.ports[0])
        self.addCleanup(miner.close)
        await miner.call("eth_submitLogin", [LOGIN], worker="rig")
        work = (await miner.call("eth_getWork", [], request_id=2))["result"]
        reply = await miner.call("eth_submitWork", solve(work, 1, 64), request_id=3, worker="rig")
        self.assertEqual(reply["result"], True, reply)
        await pool.next_work(2)
        self.assertEqual(pool.node.chain.height, 1)
        self.assertEqual(len(pool.blocks.found), 1)
        self.assertEqual(pool.service.blocks["accepted"], 1)
        self.assertEqual(pool.blocks.settled, [(pool.blocks.found[0].block_hash, True)])

    async def test_block_the_node_refuses(self) -> None:
        """A block for work the chain has moved past: the node says false, the
        candidate is settled refused (its round reopened) and the share still counts."""
        pool = await eth_pool(self, [stratum_port(SHARE_DIFF)], difficulty=64)
        miner = await connect(pool.ports[0])
        self.addCleanup(miner.close)
        await miner.call("eth_submitLogin", [LOGIN], worker="rig")
        work = (await miner.call("eth_getWork", [], request_id=2))["result"]
        pool.node.chain.mine()  # another miner's block at height 1
        await pool.next_work(2)
        reply = await miner.call("eth_submitWork", solve(work, 1, 64), request_id=3, worker="rig")
        self.assertEqual(reply["result"], True, "a share of live work, block or not")
        await pool.service.blocks_in_flight()
        self.assertEqual(pool.service.blocks["rejected"], 1)
        self.assertEqual(pool.blocks.settled, [(work[0], False)])
        self.assertEqual(pool.node.chain.height, 1)


class NiceHashTests(TestCase):
    timeout = 60

    def setUp(self) -> defer.Deferred[None]:  # type: ignore[override]  # trial waits for it
        return defer.Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.pool: EthPool = await eth_pool(self, [stratum_port(SHARE_DIFF)], difficulty=NETWORK_DIFF)
        self.miner: LineClient = await connect(self.pool.ports[0])
        self.addCleanup(self.miner.close)

    async def subscribe(self) -> tuple[bytes, list[Any]]:
        """Subscribe and authorize: (extranonce, the first notify's params)."""
        reply = await self.miner.call("mining.subscribe", ["test/1.0", "EthereumStratum/1.0.0"])
        notify, extranonce_hex = reply["result"]
        self.assertEqual((notify[0], notify[2]), ("mining.notify", "EthereumStratum/1.0.0"))
        self.assertEqual(len(extranonce_hex), 6)
        reply = await self.miner.call("mining.authorize", [f"{LOGIN}.rig", "x"], request_id=2)
        self.assertEqual(reply["result"], True, reply)
        difficulty = await self.miner.next()
        self.assertEqual(difficulty["method"], "mining.set_difficulty")
        self.assertAlmostEqual(difficulty["params"][0], SHARE_DIFF * NICEHASH_UNIT)
        job = await self.miner.next()
        self.assertEqual(job["method"], "mining.notify")
        return bytes.fromhex(extranonce_hex), job["params"]

    def find(self, extranonce: bytes, params: list[Any], difficulty: float = SHARE_DIFF) -> str:
        """The miner's part of a nonce that meets ``difficulty`` (PyPI ethash)."""
        start = int.from_bytes(extranonce, "big") << (8 * (8 - len(extranonce)))
        nonce, _ = search_nonce(1, bytes.fromhex(params[2]), int(difficulty), start)
        return nonce.to_bytes(8, "big")[len(extranonce) :].hex()

    async def test_share_accepted_and_duplicate(self) -> None:
        extranonce, params = await self.subscribe()
        self.assertEqual(params[2], self.pool.service.book.current.header_hex[2:])  # type: ignore[union-attr]
        self.assertEqual(params[3], True)
        part = self.find(extranonce, params)
        reply = await self.miner.call("mining.submit", [f"{LOGIN}.rig", params[0], part], request_id=3)
        self.assertEqual(reply["result"], True, reply)
        self.assertEqual(self.pool.recorder.valid, [(f"{LOGIN}.rig", SHARE_DIFF)])
        reply = await self.miner.call(
            "mining.submit", [f"{LOGIN}.rig", params[0], part.upper()], request_id=4
        )
        self.assertEqual(reply["error"][:2], [22, "Duplicate share"])

    async def test_refusals(self) -> None:
        extranonce, params = await self.subscribe()
        part = self.find(extranonce, params)
        cases = [
            ([f"{LOGIN}.rig", "ffffffff", part], 21),  # unknown job
            ([f"{LOGIN}.other", params[0], part], 24),  # a worker never authorized
            ([f"{LOGIN}.rig", params[0], part[:-2]], -1),  # the nonce's length
            ([f"{LOGIN}.rig", params[0], "zz" + part[2:]], -1),  # not hex
            ([f"{LOGIN}.rig", params[0]], 20),  # params
        ]
        for i, (submit, code) in enumerate(cases):
            reply = await self.miner.call("mining.submit", submit, request_id=10 + i)
            self.assertEqual(reply["error"][0], code, (submit, reply))
        reply = await self.miner.call("mining.submit", [f"{LOGIN}.rig", params[0], part], request_id=30)
        self.assertEqual(reply["result"], True, "refusals cost the miner nothing")

    async def test_low_difficulty(self) -> None:
        extranonce, params = await self.subscribe()
        header = bytes.fromhex(params[2])
        nonce = int.from_bytes(extranonce, "big") << 40
        while int.from_bytes(ethash.hash(0, header, nonce)[0], "big") <= int(2**256 / (SHARE_DIFF * 0.9)):
            nonce += 1
        part = nonce.to_bytes(8, "big")[3:].hex()
        reply = await self.miner.call("mining.submit", [f"{LOGIN}.rig", params[0], part], request_id=3)
        self.assertEqual(reply["error"][0], 23, reply)

    async def test_bitcoin_subscribe_refused(self) -> None:
        reply = await self.miner.call("mining.subscribe", ["cpuminer/2.5"])
        self.assertEqual(reply["error"][0], 20, reply)
        reply = await self.miner.call("mining.authorize", [f"{LOGIN}.rig", "x"], request_id=2)
        self.assertEqual(reply["error"][0], 25, reply)

    async def test_bad_login(self) -> None:
        await self.miner.call("mining.subscribe", ["test/1.0", "EthereumStratum/1.0.0"])
        reply = await self.miner.call("mining.authorize", ["0x1234.rig", "x"], request_id=2)
        self.assertEqual(reply["error"][0], 24, reply)

    async def test_extranonces_unique(self) -> None:
        other = await connect(self.pool.ports[0])
        self.addCleanup(other.close)
        first = await self.miner.call("mining.subscribe", ["a", "EthereumStratum/1.0.0"])
        second = await other.call("mining.subscribe", ["b", "EthereumStratum/1.0.0"])
        self.assertNotEqual(first["result"][1], second["result"][1])
        reply = await self.miner.call("mining.extranonce.subscribe", [], request_id=2)
        self.assertEqual(reply["result"], True)


class GetworkTests(TestCase):
    timeout = 60

    def setUp(self) -> defer.Deferred[None]:  # type: ignore[override]  # trial waits for it
        return defer.Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self.pool: EthPool = await eth_pool(
            self, [getwork_port(SHARE_DIFF, max_body=512)], difficulty=NETWORK_DIFF
        )
        self.miner = GetworkClient(self, self.pool.ports[0], f"{LOGIN_CHECKSUMMED}/rig2")

    async def test_work_share_duplicate(self) -> None:
        work = (await self.miner.call("eth_getWork", []))["result"]
        self.assertEqual(len(work), 3)
        share = solve(work, 1, SHARE_DIFF)
        self.assertEqual((await self.miner.call("eth_submitWork", share, 2))["result"], True)
        self.assertEqual(self.pool.recorder.valid, [(f"{LOGIN}.rig2", SHARE_DIFF)])
        reply = await self.miner.call("eth_submitWork", share, 3)
        self.assertEqual(reply["error"], {"code": 22, "message": "Duplicate share"})
        self.assertEqual(
            (await self.miner.call("eth_submitHashrate", ["0x1", "0x" + "00" * 32], 4))["result"], True
        )

    async def test_requests_back_to_back(self) -> None:
        code, body = await self.miner.post(
            b'{"id":1,"method":"eth_getWork","params":[]}{"id":2,"method":"eth_nope","params":[]}'
        )
        self.assertEqual(code, 200)
        first, second = (json.loads(line) for line in body.splitlines())
        self.assertEqual(len(first["result"]), 3)
        self.assertEqual(second["error"], {"code": -3, "message": "Method not found"})

    async def test_rejections(self) -> None:
        code, body = await self.miner.post(b"{not json")
        self.assertEqual((code, json.loads(body)["error"]["code"]), (400, -1))
        code, _ = await self.miner.post(b" " * 600)
        self.assertEqual(code, 417)
        bad = GetworkClient(self, self.pool.ports[0], "0x1234/rig")
        code, body = await bad.post(b'{"id":1,"method":"eth_getWork","params":[]}')
        self.assertEqual(json.loads(body)["error"], {"code": -1, "message": "Invalid login"})
        response = await treq.get(self.miner.url, pool=self.miner.http)
        self.assertEqual(response.code, 405)
        await response.content()


class VardiffTests(TestCase):
    """Vardiff on an Ethereum-family port (OEP has none): an eth-proxy miner
    gets its work again with the new boundary, a NiceHash miner a
    mining.set_difficulty in NiceHash's unit."""

    timeout = 60

    async def test_shares_too_fast_raise_the_difficulty(self) -> None:
        vardiff = VardiffConfig(
            min_diff=1, max_diff=64, target_time=30, retarget_time=0.2, variance_percent=30
        )
        pool = await eth_pool(self, [stratum_port(SHARE_DIFF, vardiff)], difficulty=NETWORK_DIFF)
        proxy = await connect(pool.ports[0])
        self.addCleanup(proxy.close)
        await proxy.call("eth_submitLogin", [LOGIN], worker="rig")
        work = (await proxy.call("eth_getWork", [], request_id=2))["result"]
        nonce = 0
        for i in range(6):
            # Shares that are no blocks: a block would bring new work, pushed like the retarget.
            share = solve(work, 1, SHARE_DIFF, start=nonce, below=NETWORK_DIFF)
            nonce = int(share[0], 16) + 1
            await proxy.call("eth_submitWork", share, request_id=10 + i)
            await deferLater(reactor, 0.05, lambda: None)
        pushes = [m for m in proxy.pushed if m.get("id") == 0]
        for attempt in range(20):  # the change may come with a later share's sample: share until it does
            if pushes:
                break
            share = solve(work, 1, SHARE_DIFF, start=nonce, below=NETWORK_DIFF)
            nonce = int(share[0], 16) + 1
            await proxy.call("eth_submitWork", share, request_id=100 + attempt)
            await deferLater(reactor, 0.1, lambda: None)
            pushes = [m for m in proxy.pushed if m.get("id") == 0]
        self.assertTrue(pushes, "the work again, with a new boundary")
        new_target = int(pushes[-1]["result"][2], 16)
        self.assertLess(new_target, 2**256 // int(SHARE_DIFF), "a higher difficulty: a lower boundary")
        self.assertEqual(pushes[-1]["result"][0], work[0])
