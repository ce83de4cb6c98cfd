"""An Ethereum-family pool's Redis keys for the tests of the site and its API, written
by the pool's own code: shares and candidates by the real EthShareRecorder, the
unlocker's steps by its EthLedger scripts, a payout by the payer's EthPayLedger
scripts, the node heartbeat by write_node_state.

Five candidates: at 100 a block that matured; at 101 one the chain took as an
uncle (in 103) that matured; at 102 one found nowhere, orphaned; at 104 a
block still immature; at 105 one the unlocker has not looked at yet. Then
LOGIN is paid part of its balance. Every credit carries wei below a Shannon,
so an amount shown right is shown exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime

from nomp.candidate import BlockCandidate
from nomp.config import EthPoolConfig, PortConfig
from nomp.payments.ethledger import NO_HASH, BlockRecord, EthLedger, parse_score
from nomp.payments.ethpayledger import EthPayLedger, JournalEntry
from nomp.payments.ethsigner import LegacyPricing
from nomp.payments.ethunlock import EthCandidate, parse_candidate_member
from nomp.payments.rounds import round_policy
from nomp.store.client import RedisClient
from nomp.store.oep import EthShareRecorder, write_node_state
from nomp.store.oepschema import OepKeys
from test.ethpool import LOGIN, POOL_ADDRESS, eth_pool_config

OTHER = "0x" + "cd" * 20
ETHER = 10**18
NETWORK_DIFFICULTY = 1_000_000_000
NODE_HEIGHT = 110
NODE_DIFFICULTY = 1_300_000_000
HASHRATE_WINDOW = 300.0

# height -> login -> the wei its credit of the block is (adding up to the block's reward)
CREDITS: dict[int, dict[str, int]] = {
    100: {
        LOGIN: 3_750_000_000_000_000_100,
        OTHER: 1_200_000_000_000_000_020,
        POOL_ADDRESS: 50_000_000_000_000_003,
    },
    101: {LOGIN: 3_000_000_000_000_000_001, OTHER: 749_999_999_999_999_999},
    104: {LOGIN: 2_500_000_000_000_000_007, OTHER: 2_499_999_999_999_999_993},
}
UNCLE_HEIGHT, NEPHEW_HEIGHT = 101, 103
ORPHAN_HEIGHT = 102
CANDIDATE_HEIGHT = 105
PAYOUT = 1_000_000_000_000_000_007  # wei paid to LOGIN
PAYOUT_TX = "0x" + "9f" * 32
# What the miners hold afterwards, in wei.
LOGIN_IMMATURE = CREDITS[104][LOGIN]
LOGIN_BALANCE = CREDITS[100][LOGIN] + CREDITS[101][LOGIN] - PAYOUT
OTHER_BALANCE = CREDITS[100][OTHER] + CREDITS[101][OTHER]
# The shares of the current hashrate window: worker -> difficulties.
CURRENT_SHARES = {
    f"{LOGIN}.rig1": [4_000_000_000] * 3,
    f"{LOGIN}.rig2": [2_000_000_000],
    OTHER: [1_000_000_000] * 2,
}
CURRENT_DIFFICULTY = sum(sum(d) for d in CURRENT_SHARES.values())


def eth_block_hash(height: int) -> str:
    return "0x" + hashlib.sha256(f"eth block {height}".encode()).hexdigest()


def eth_web_pool(name: str = "dev", ports: tuple[PortConfig, ...] | None = None) -> EthPoolConfig:
    """An Ethereum-family pool on the dev coin (DEV, ethash), its node never asked: the site reads Redis."""
    if ports is None:
        ports = (
            PortConfig(listen="tcp:8008:interface=127.0.0.1", diff=4_000_000_000.0),
            PortConfig(listen="tcp:8888:interface=127.0.0.1", diff=4_000_000_000.0, protocol="getwork"),
        )
    return eth_pool_config("http://127.0.0.1:1/", ports, name=name, hashrate_window=HASHRATE_WINDOW)


@dataclass
class _Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class EthPoolData:
    """What was written, to compare the site's figures with."""

    found_at: dict[int, float] = field(default_factory=dict)  # height -> when its candidate was found
    paid_at: float = 0.0


async def write_eth_pool(
    pool: EthPoolConfig, redis: Callable[[], RedisClient | None], reactor: IReactorTime, now: float
) -> EthPoolData:
    """The pool's keys as the pool, its unlocker and its payer would have left them at ``now``."""
    client = redis()
    assert client is not None
    keys = OepKeys.for_coin(pool.coin.name)
    clock = _Clock(now - 7200)
    recorder = EthShareRecorder(keys, redis, reactor, round_policy(pool.payments), wall_clock=clock)
    data = EthPoolData()
    for height in (100, UNCLE_HEIGHT, ORPHAN_HEIGHT, 104, CANDIDATE_HEIGHT):
        recorder.valid_share(f"{LOGIN}.rig1", 3_000_000_000)
        recorder.valid_share(OTHER, 1_000_000_000)
        clock.now += 600
        data.found_at[height] = clock.now
        assert await recorder.block_found(_candidate(height, clock.now), 5.0)
        recorder.block_settled(eth_block_hash(height), True)
        await recorder.flush()
    # The current shares end a minute before ``now``: a test on the wall clock has
    # minutes before they leave the hashrate window.
    clock.now = now - 120
    for worker, difficulties in CURRENT_SHARES.items():
        for difficulty in difficulties:
            recorder.valid_share(worker, difficulty)
            clock.now += 10
    await recorder.flush()

    ledger = EthLedger(client, keys)
    token = await ledger.acquire(60.0)
    assert token is not None
    candidates = {
        c.height: c
        for member, score in await ledger.candidates(10**9)
        for c in [parse_candidate_member(member, parse_score(score))]
    }
    for height in (100, UNCLE_HEIGHT, 104):
        candidate = candidates[height]
        uncle = height == UNCLE_HEIGHT
        record = _record(candidate, NEPHEW_HEIGHT if uncle else height, sum(CREDITS[height].values()), uncle)
        assert await ledger.write_immature(token, candidate, record, CREDITS[height])
        if height != 104:
            assert await ledger.write_matured(token, record, int(now - 1000))
    orphan = candidates[ORPHAN_HEIGHT]
    record = _record(orphan, ORPHAN_HEIGHT, 0, False, orphan=True)
    assert await ledger.write_candidate_orphan(token, orphan, record)
    assert await ledger.write_orphan(token, record)
    await ledger.release(token)

    payer = EthPayLedger(client, keys)
    token = await payer.acquire(60.0)
    assert token is not None
    entry = JournalEntry(LOGIN, PAYOUT, PAYOUT, 0, LegacyPricing(10**9), now - 200)
    await payer.reserve(token, entry)
    signed = entry.signed(PAYOUT_TX, "0x00")
    assert await payer.record_signed(token, signed)
    data.paid_at = now - 190
    assert await payer.record_paid(signed, data.paid_at)
    await payer.release(token)

    await write_node_state(client, keys, pool.node_name, NODE_HEIGHT, NODE_DIFFICULTY, now)
    return data


def _candidate(height: int, found_at: float) -> BlockCandidate:
    seal = hashlib.sha256(f"seal {height}".encode()).digest()
    mix = hashlib.sha256(f"mix {height}".encode()).digest()
    return BlockCandidate(
        block_hash=eth_block_hash(height),
        coinbase_txid="",
        height=height,
        worker=f"{LOGIN}.rig1",
        reward=5 * ETHER,
        solo=False,
        network_difficulty=float(NETWORK_DIFFICULTY),
        found_at=found_at,
        payload=height.to_bytes(8, "big") + seal + mix,
    )


def _record(
    candidate: EthCandidate, height: int, reward: int, uncle: bool, orphan: bool = False
) -> BlockRecord:
    return BlockRecord(
        height=height,
        uncle_height=candidate.height if uncle else 0,
        orphan=orphan,
        nonce=candidate.nonce_hex,
        hash=NO_HASH if orphan else eth_block_hash(candidate.height),
        found_at=candidate.found_at,
        difficulty=candidate.network_difficulty,
        round_total=candidate.round_total,
        reward=reward,
    )
