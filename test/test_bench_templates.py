"""bench/templates.py: the benchmarks' mainnet-like templates are real ones."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from bench import templates
from nomp.chain.coinbase import CoinbaseLayout, PayoutPlan
from nomp.chain.encoding import hash_to_internal
from nomp.chain.jobs import JobRegistry
from nomp.chain.merkle import merkle_root, root_from_branch
from nomp.chain.template import BlockTemplate
from nomp.hashing import ALGORITHMS, sha256d

POOL_SCRIPT = bytes.fromhex("0014" + "22" * 20)


class Reader:
    """Reads a serialised transaction, field by field."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.at : self.at + n]
        assert len(chunk) == n, "ran past the end"
        self.at += n
        return chunk

    def count(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        return int.from_bytes(self.take(2 if first == 0xFD else 4), "little")


def strip_witness(data: bytes) -> tuple[bytes, bool]:
    """The transaction without its witness data, and whether it had any."""
    reader = Reader(data)
    version = reader.take(4)
    segwit = data[4:6] == b"\x00\x01"
    if segwit:
        reader.take(2)
    start = reader.at
    inputs = reader.count()
    for _ in range(inputs):
        reader.take(36)
        reader.take(reader.count())
        reader.take(4)
    for _ in range(reader.count()):
        reader.take(8)
        reader.take(reader.count())
    body = data[start : reader.at]
    if segwit:
        for _ in range(inputs):
            for _ in range(reader.count()):
                reader.take(reader.count())
    locktime = reader.take(4)
    assert reader.at == len(data), "bytes after the locktime"
    return version + body + locktime, segwit


def reply(seed: int = 1, transactions: int = 200) -> dict[str, object]:
    return templates.template_reply(random.Random(seed), 800_000, "ab" * 32, 1_700_000_000, transactions)


class TemplateTests(SynchronousTestCase):
    """Every transaction is a real serialisation and the commitment is BIP141's."""

    def test_transactions_are_real(self) -> None:
        """Each txid is the hash of the transaction without witness, each hash of all of it."""
        made = reply()
        txs = made["transactions"]
        assert isinstance(txs, list)
        self.assertEqual(len(txs), 200)
        segwit = 0
        for tx in txs:
            data = bytes.fromhex(tx["data"])
            stripped, has_witness = strip_witness(data)
            segwit += has_witness
            self.assertEqual(hash_to_internal(tx["txid"]), sha256d(stripped))
            self.assertEqual(hash_to_internal(tx["hash"]), sha256d(data))
            self.assertEqual(tx["hash"] == tx["txid"], not has_witness)
            self.assertEqual(tx["weight"], len(stripped) * 3 + len(data))
        self.assertTrue(90 <= segwit <= 150, f"{segwit} of 200 segwit")
        fees = sum(tx["fee"] for tx in txs)
        self.assertEqual(made["coinbasevalue"], templates.SUBSIDY + fees)

    def test_witness_commitment(self) -> None:
        """The commitment covers the witness hashes, the coinbase's as zero, with a zero reserved value."""
        made = reply()
        txs = made["transactions"]
        assert isinstance(txs, list)
        root = merkle_root([bytes(32)] + [hash_to_internal(tx["hash"]) for tx in txs])
        commitment = bytes.fromhex("6a24aa21a9ed") + sha256d(root + bytes(32))
        self.assertEqual(made["default_witness_commitment"], commitment.hex())

    def test_fresh_transactions_each_time(self) -> None:
        """Two templates from one generator share no transaction."""
        rng = random.Random(3)
        first = templates.template_reply(rng, 1, "00" * 32, 0, 50)
        second = templates.template_reply(rng, 2, "01" * 32, 0, 50)
        ids = [{tx["txid"] for tx in t["transactions"]} for t in (first, second)]
        self.assertEqual(ids[0] & ids[1], set())

    def test_pool_makes_a_job(self) -> None:
        """The pool reads the template; its job's branch is 8 levels deep and leads to the block's root."""
        template = BlockTemplate.from_rpc(reply())
        registry = JobRegistry(ALGORITHMS["scrypt"], PayoutPlan(POOL_SCRIPT), CoinbaseLayout())
        job = registry.add(template, 0.0)
        assert job is not None
        self.assertEqual(len(job.merkle_branch), 8)
        extranonce = bytes(8)
        coinbase_txid = sha256d(job.coinbase.serialize(extranonce))
        self.assertEqual(
            root_from_branch(coinbase_txid, job.merkle_branch),
            merkle_root([coinbase_txid] + [tx.txid for tx in template.transactions]),
        )
