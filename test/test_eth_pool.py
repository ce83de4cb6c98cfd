"""The Ethereum-family pool against the dev node: eth-proxy, NiceHash and
HTTP getwork miners, every share outcome with its code, and blocks the
chain engine imports."""

from __future__ import annotations

from typing import Any

import ethash
from twisted.trial.unittest import TestCase

from test.ethpool import (
    LOGIN,
    LOGIN_CHECKSUMMED,
    EthPool,
    LineClient,
    connect,
    eth_pool,
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
    target = 2**256 // int(difficulty * 2)
    nonce = 0
    while True:
        final, mix = ethash.hash(0, header, nonce)
        if int.from_bytes(final, "big") > target:
            return ["0x" + nonce.to_bytes(8, "big").hex(), work[0], "0x" + mix.hex()]
        nonce += 1


class EthProxyTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
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
        for i, params in enumerate([good[:2], [1, 2, 3], [*good, good[0]]]):
            reply = await self.miner.call("eth_submitWork", params, request_id=20 + i)
            self.assertEqual(reply["error"], {"code": -1, "message": "Invalid params"}, params)

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
        self.assertEqual(pushed["result"][0], self.pool.service.book.current.header_hex)
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
        self.addCleanup(lambda: miner.transport.loseConnection())
        await miner.call("eth_submitLogin", [LOGIN], worker="rig")
        work = (await miner.call("eth_getWork", [], request_id=2))["result"]
        reply = await miner.call("eth_submitWork", solve(work, 1, 64), request_id=3, worker="rig")
        self.assertEqual(reply["result"], True, reply)
        await pool.next_work(2)
        self.assertEqual(pool.node.chain.height, 1)
        self.assertEqual(len(pool.blocks.found), 1)
        self.assertEqual(pool.service.blocks["accepted"], 1)
