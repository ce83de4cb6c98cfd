"""Mining helpers for tests against a real node: build, solve, submit."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool

from nomp.candidate import BlockCandidate
from nomp.chain.coinbase import CoinbaseLayout, PayoutPlan
from nomp.chain.jobs import Job, JobRegistry
from nomp.chain.template import BlockTemplate
from nomp.daemon import DaemonGroup, DaemonRPC
from nomp.hashing import ALGORITHMS, JobHasher, ShareHash, ShareWork
from nomp.payments.split import satoshis
from nomp.pool.blocks import BlockOutcome, BlockSubmitter
from nomp.stratum.sharerules import block_candidate
from test.servers import RPC_PASSWORD, RPC_USER, RegtestPair

LITECOIN_RULES = ("mweb", "segwit")


def connect(pair: RegtestPair) -> tuple[DaemonGroup, HTTPConnectionPool]:
    """The project's daemon client, on the real reactor, for the pair's miner node."""
    from treq.client import HTTPClient

    pool = HTTPConnectionPool(reactor, persistent=True)
    http = HTTPClient(Agent(reactor, pool=pool))
    return DaemonGroup([DaemonRPC(http, pair.miner.url, RPC_USER, RPC_PASSWORD, reactor)], reactor), pool


def solve(job: Job, extranonce: bytes, batch: int = 16) -> ShareHash:
    """Search nonces with the project's C share check until one meets the block target."""
    template = job.template
    nonce = 0
    while True:
        works = [
            ShareWork(extranonce, template.version, template.curtime, n) for n in range(nonce, nonce + batch)
        ]
        for result in job.hasher.check(works):
            if result.pow_value <= template.target:
                return result
        nonce += batch


def candidate_of(job: Job, extranonce: bytes, header: bytes, worker: str = "test-worker") -> BlockCandidate:
    """The block candidate the share pipeline would make of a solved header."""
    return block_candidate(job, extranonce, header, worker, solo=False, now=0.0)


async def mine_block(
    daemons: DaemonGroup,
    plan: PayoutPlan,
    extranonce: bytes = bytes.fromhex("f000000ff111111f"),
    tamper: Any = None,
    wrong_branch: bool = False,
) -> tuple[Job, BlockOutcome]:
    """Take a template, build a job, find a block and submit it.

    ``tamper(template) -> template`` lets a negative test break one thing;
    ``wrong_branch`` solves the header on a corrupted merkle branch.
    """
    template = BlockTemplate.from_rpc(await daemons.get_block_template(LITECOIN_RULES))
    if tamper is not None:
        template = tamper(template)
    registry = JobRegistry(ALGORITHMS["scrypt"], plan, CoinbaseLayout())
    job = registry.add(template, 0.0)
    assert job is not None
    if wrong_branch:
        branch = [bytes(32)] * max(1, len(job.merkle_branch))
        hasher = JobHasher(
            ALGORITHMS["scrypt"],
            job.coinbase.coinb1,
            job.coinbase.coinb2,
            branch,
            template.prevhash_internal,
            template.bits,
        )
        found = solve(dataclasses.replace(job, hasher=hasher), extranonce)
    else:
        found = solve(job, extranonce)
    outcome = await BlockSubmitter(daemons).submit(candidate_of(job, extranonce, found.header))
    return job, outcome


def coinbase_outputs(pair: RegtestPair, block_hash: str) -> Sequence[tuple[str, int]]:
    """(scriptPubKey hex, satoshis) of a block's coinbase, as the node decodes it."""
    block = pair.miner.rpc("getblock", block_hash, 2)
    return [(out["scriptPubKey"]["hex"], satoshis(out["value"])) for out in block["tx"][0]["vout"]]


def main_chain_and_side_branches(
    pair: RegtestPair, block_hashes: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The pending blocks the node holds in its main chain, and those it keeps on a side
    branch (a second block found on one job, beaten at its height: pending until the
    payments orphan it); AssertionError for one the node does not know."""
    main, side = [], []
    for block_hash in block_hashes:
        confirmations = pair.miner.rpc("getblock", block_hash)["confirmations"]
        if confirmations >= 1:
            main.append(block_hash)
        elif confirmations == -1:
            side.append(block_hash)
        else:
            raise AssertionError(f"block {block_hash}: {confirmations} confirmations")
    return main, side
