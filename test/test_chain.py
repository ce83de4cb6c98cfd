"""Pure chain code: encodings, merkle branches, coinbases, templates, jobs."""

from __future__ import annotations

import copy
import hashlib
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from nomp.chain.coinbase import CoinbaseLayout, PayoutPlan, Recipient, build_coinbase
from nomp.chain.encoding import bits_to_target, push_number, script_number, txid, varint
from nomp.chain.jobs import JobRegistry
from nomp.chain.merkle import coinbase_branch, merkle_root, root_from_branch
from nomp.chain.template import BlockTemplate, TemplateError
from nomp.hashing import ALGORITHMS, ShareWork

POOL_SCRIPT = bytes.fromhex("00142ddc79b034d5201de0d028d70802f3fbee2f2ffd")
FEE_SCRIPT = bytes.fromhex("76a914243f1394f44554f4ce3fd68649c19adc483ce92488ac")
COMMITMENT = "6a24aa21a9edecd93f702c9b2e81412b55d501297655702d7e83821325465faec186e0996173"


def template_reply(**changes: Any) -> dict[str, Any]:
    """A getblocktemplate reply shaped like litecoind 0.21's (pre-MWEB, two transactions)."""
    reply: dict[str, Any] = {
        "capabilities": ["proposal"],
        "version": 536870912,
        "rules": ["csv", "!segwit", "taproot"],
        "previousblockhash": "ca08afdc47d1bceeedbca92d8a66f8aca0c7048151971c6f7b14382da9e2f677",
        "transactions": [
            {
                "data": "02000000" + "00" * 30,
                "txid": "11" * 32,
                "hash": "aa" * 32,
                "depends": [],
                "fee": 2820,
            },
            {
                "data": "02000000" + "01" * 30,
                "txid": "22" * 32,
                "hash": "22" * 32,
                "depends": [],
                "fee": 100,
            },
        ],
        "coinbaseaux": {},
        "coinbasevalue": 5000009780,
        "longpollid": "ca08afdc47d1bceeedbca92d8a66f8aca0c7048151971c6f7b14382da9e2f677127",
        "target": "7fffff0000000000000000000000000000000000000000000000000000000000",
        "mintime": 1795235425,
        "mutable": ["time", "transactions", "prevblock"],
        "noncerange": "00000000ffffffff",
        "curtime": 1795235425,
        "bits": "207fffff",
        "height": 122,
        "default_witness_commitment": COMMITMENT,
    }
    reply.update(changes)
    return reply


class EncodingTests(SynchronousTestCase):
    """Bitcoin's number encodings."""

    def test_varint(self) -> None:
        """CompactSize uses 1, 3, 5 or 9 bytes."""
        self.assertEqual(varint(0xFC), b"\xfc")
        self.assertEqual(varint(0xFD), b"\xfd\xfd\x00")
        self.assertEqual(varint(0x10000), b"\xfe\x00\x00\x01\x00")
        self.assertEqual(varint(2**32), b"\xff" + (2**32).to_bytes(8, "little"))
        self.assertRaises(ValueError, varint, -1)

    def test_bip34_heights(self) -> None:
        """Heights are pushed as Bitcoin Core does: OP_1..OP_16, then minimal numbers."""
        cases = {
            1: "51",
            16: "60",
            17: "0111",
            127: "017f",
            128: "028000",
            255: "02ff00",
            256: "020001",
            433: "02b101",
            500: "02f401",
            32767: "02ff7f",
            32768: "03008000",
            8388608: "0400008000",
            2_600_000: "0340ac27",
        }
        for height, encoded in cases.items():
            self.assertEqual(push_number(height).hex(), encoded, height)

    def test_script_number_signs(self) -> None:
        """Negative numbers set the sign bit, adding a byte when needed."""
        self.assertEqual(script_number(-1), b"\x81")
        self.assertEqual(script_number(-128), b"\x80\x80")
        self.assertEqual(script_number(0), b"")
        self.assertEqual(push_number(0), b"\x00")
        self.assertEqual(push_number(-1), b"\x4f")

    def test_bits(self) -> None:
        """Compact bits expand to the target they stand for."""
        self.assertEqual(bits_to_target(0x1D00FFFF), 0xFFFF << 208)
        self.assertEqual(bits_to_target(0x207FFFFF), 0x7FFFFF << 232)
        self.assertEqual(bits_to_target(0x03123456), 0x123456)
        self.assertEqual(bits_to_target(0x02123456), 0x1234)


class MerkleTests(SynchronousTestCase):
    """The coinbase branch gives the same root as the full tree."""

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.binary(min_size=32, max_size=32), max_size=40),
        st.binary(min_size=32, max_size=32),
    )
    def test_branch_matches_tree(self, txids: list[bytes], coinbase: bytes) -> None:
        """For any list of transactions, branch + coinbase txid = root of the whole list."""
        branch = coinbase_branch(txids)
        self.assertEqual(root_from_branch(coinbase, branch), merkle_root([coinbase, *txids]))

    def test_branch_length(self) -> None:
        """The branch has one step per tree level."""
        for count, length in ((0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (4095, 12)):
            self.assertEqual(len(coinbase_branch([bytes([i % 256]) * 32 for i in range(count)])), length)


class RewardSplitTests(SynchronousTestCase):
    """The coinbase pays exactly the template's value, in integer satoshis."""

    @settings(max_examples=300, deadline=None)
    @given(
        st.integers(min_value=0, max_value=84_000_000 * 10**8),
        st.lists(st.fractions(min_value=Fraction(1, 10**6), max_value=Fraction(1, 10)), max_size=6),
    )
    def test_parts_add_up(self, value: int, fractions: list[Fraction]) -> None:
        """Whatever the recipients, the outputs add up to the value; the pool takes the rest."""
        plan = PayoutPlan(POOL_SCRIPT, tuple(Recipient(FEE_SCRIPT, f) for f in fractions))
        outputs = plan.split(value)
        self.assertEqual(sum(amount for _, amount in outputs), value)
        self.assertEqual(outputs[0][0], POOL_SCRIPT)
        for (_, amount), fraction in zip(
            outputs[1:], [f for f in fractions if int(value * f) > 0], strict=True
        ):
            self.assertEqual(amount, int(value * fraction))

    def test_rounding_goes_to_pool(self) -> None:
        """One third of 100 satoshis is 33 to the recipient and 67 to the pool."""
        plan = PayoutPlan(POOL_SCRIPT, (Recipient(FEE_SCRIPT, Fraction(1, 3)),))
        self.assertEqual(plan.split(100), [(POOL_SCRIPT, 67), (FEE_SCRIPT, 33)])

    def test_tiny_share_gets_no_output(self) -> None:
        """A recipient whose share rounds to zero satoshis gets no output at all."""
        plan = PayoutPlan(POOL_SCRIPT, (Recipient(FEE_SCRIPT, Fraction(1, 1000)),))
        self.assertEqual(plan.split(999), [(POOL_SCRIPT, 999)])


class CoinbaseTests(SynchronousTestCase):
    """The coinbase layout around the extranonce."""

    def test_layout(self) -> None:
        """coinb1 ends with height and extranonce push; the witness form adds the reserved value."""
        template = BlockTemplate.from_rpc(template_reply(height=433))
        coinbase = build_coinbase(template, PayoutPlan(POOL_SCRIPT), CoinbaseLayout(signature=b"/nomp/"))
        self.assertTrue(coinbase.coinb1.endswith(bytes.fromhex("02b101") + b"\x08"))
        self.assertTrue(coinbase.coinb2.startswith(b"\x06/nomp/\xff\xff\xff\xff"))
        extranonce = bytes(range(8))
        plain = coinbase.serialize(extranonce)
        witness = coinbase.serialize_for_block(extranonce)
        self.assertEqual(witness[4:6], b"\x00\x01")
        self.assertEqual(witness[:4] + witness[6:-38] + witness[-4:], plain)
        self.assertEqual(witness[-38:-4], b"\x01\x20" + bytes(32))
        self.assertEqual(coinbase.outputs[-1], (bytes.fromhex(COMMITMENT), 0))

    def test_no_commitment_no_witness(self) -> None:
        """Without a witness commitment the coinbase carries no witness."""
        template = BlockTemplate.from_rpc(template_reply(default_witness_commitment=None))
        coinbase = build_coinbase(template, PayoutPlan(POOL_SCRIPT), CoinbaseLayout())
        self.assertEqual(coinbase.serialize_for_block(bytes(8)), coinbase.serialize(bytes(8)))
        self.assertEqual(len(coinbase.outputs), 1)

    def test_script_sig_bounds(self) -> None:
        """A signature that would push the scriptSig past 100 bytes is refused."""
        template = BlockTemplate.from_rpc(template_reply())
        self.assertRaises(
            ValueError,
            build_coinbase,
            template,
            PayoutPlan(POOL_SCRIPT),
            CoinbaseLayout(signature=b"x" * 90),
        )

    def test_txid_is_of_stripped_form(self) -> None:
        """The coinbase txid is computed from the form without witness."""
        template = BlockTemplate.from_rpc(template_reply())
        coinbase = build_coinbase(template, PayoutPlan(POOL_SCRIPT), CoinbaseLayout())
        plain = coinbase.serialize(bytes(8))
        self.assertEqual(txid(plain), hashlib.sha256(hashlib.sha256(plain).digest()).digest()[::-1].hex())


class TemplateTests(SynchronousTestCase):
    """A template that lies is refused with the field it lies in."""

    def test_parses(self) -> None:
        """A real-shaped reply becomes a typed template; txid (not the witness hash) is used."""
        template = BlockTemplate.from_rpc(template_reply())
        self.assertEqual(template.height, 122)
        self.assertEqual(template.bits, 0x207FFFFF)
        self.assertEqual(template.transactions[0].txid, bytes.fromhex("11" * 32))
        self.assertEqual(template.transactions[0].fee, 2820)
        self.assertIsNone(template.mweb)

    def test_target_from_bits(self) -> None:
        """Without a target field the target comes from bits."""
        reply = template_reply()
        del reply["target"]
        self.assertEqual(BlockTemplate.from_rpc(reply).target, 0x7FFFFF << 232)

    def test_lies(self) -> None:
        """Each malformed field is named in the error."""
        cases: list[tuple[dict[str, Any], str]] = [
            ({"height": -1}, "height"),
            ({"height": "122"}, "height"),
            ({"height": True}, "height"),
            ({"version": 2**32}, "version"),
            ({"previousblockhash": "zz" * 32}, "previousblockhash"),
            ({"previousblockhash": "ab"}, "previousblockhash"),
            ({"bits": "207fff"}, "bits"),
            ({"target": "00" * 32}, "target is zero"),
            ({"curtime": None}, "curtime"),
            ({"coinbasevalue": 10**20}, "coinbasevalue"),
            ({"coinbasevalue": 1.5}, "coinbasevalue"),
            ({"transactions": {}}, "transactions"),
            ({"transactions": [5]}, "transactions[0]"),
            ({"transactions": [{"data": "zz", "txid": "11" * 32}]}, "transactions[0].data"),
            ({"transactions": [{"data": "00", "txid": "11" * 32}]}, "transactions[0].data"),
            ({"transactions": [{"data": "00" * 60, "txid": "11"}]}, "transactions[0].txid"),
            (
                {"transactions": [{"data": "00" * 60, "txid": "11" * 32, "fee": -1}]},
                "transactions[0].fee",
            ),
            ({"default_witness_commitment": "xyz"}, "default_witness_commitment"),
            ({"mweb": 7}, "mweb"),
            ({"rules": "segwit"}, "rules"),
        ]
        for changes, field in cases:
            with self.assertRaises(TemplateError, msg=str(changes)) as caught:
                BlockTemplate.from_rpc(template_reply(**changes))
            self.assertIn(field, str(caught.exception))
        self.assertRaises(TemplateError, BlockTemplate.from_rpc, [])


class JobRegistryTests(SynchronousTestCase):
    """Jobs stay valid for their previous block only."""

    def setUp(self) -> None:
        self.registry = JobRegistry(
            ALGORITHMS["scrypt"], PayoutPlan(POOL_SCRIPT), CoinbaseLayout(), max_jobs=3
        )

    def template(self, prevhash: str = "aa", height: int = 122, **changes: Any) -> BlockTemplate:
        return BlockTemplate.from_rpc(
            template_reply(previousblockhash=prevhash * 32, height=height, **changes)
        )

    def test_new_block_is_clean(self) -> None:
        """The first job and every job on a new previous block are clean and drop older jobs."""
        first = self.registry.add(self.template("aa"), 1.0)
        assert first is not None
        self.assertTrue(first.clean)
        second = self.registry.add(self.template("bb", 123), 2.0)
        assert second is not None
        self.assertTrue(second.clean)
        self.assertIsNone(self.registry.get(first.job_id))
        self.assertIs(self.registry.get(second.job_id), second)
        self.assertNotEqual(first.job_id, second.job_id)

    def test_same_block_needs_force(self) -> None:
        """A template on the current block makes a job only when forced; older jobs stay valid."""
        first = self.registry.add(self.template("aa"), 1.0)
        assert first is not None
        self.assertIsNone(self.registry.add(self.template("aa"), 2.0))
        refreshed = self.registry.add(self.template("aa", coinbasevalue=5000010000), 3.0, force=True)
        assert refreshed is not None
        self.assertFalse(refreshed.clean)
        self.assertIs(self.registry.get(first.job_id), first)
        self.assertIs(self.registry.current, refreshed)

    def test_behind_is_ignored(self) -> None:
        """A template below the current height (a lagging daemon) is ignored, forced or not."""
        self.registry.add(self.template("aa", 200), 1.0)
        self.assertIsNone(self.registry.add(self.template("bb", 199), 2.0))
        self.assertIsNone(self.registry.add(self.template("bb", 199), 2.0, force=True))

    def test_competing_block_same_height(self) -> None:
        """A different previous block at the same height is a new block."""
        self.registry.add(self.template("aa", 200), 1.0)
        job = self.registry.add(self.template("bb", 200), 2.0)
        assert job is not None
        self.assertTrue(job.clean)

    def test_bounded(self) -> None:
        """At most max_jobs jobs are kept, the oldest dropped first."""
        jobs = [self.registry.add(self.template("aa"), float(i), force=True) for i in range(5)]
        self.assertEqual(len(self.registry), 3)
        self.assertIsNone(self.registry.get(jobs[0].job_id))  # type: ignore[union-attr]
        self.assertIs(self.registry.get(jobs[4].job_id), jobs[4])  # type: ignore[union-attr]

    def test_block_serialisation(self) -> None:
        """A block is header, count, witness coinbase, template transactions, MWEB trailer."""
        reply = template_reply(mweb="8231" + "00" * 20)
        job = self.registry.add(BlockTemplate.from_rpc(reply), 1.0)
        assert job is not None
        extranonce = bytes(range(8))
        header = job.hasher.check([ShareWork(extranonce, job.template.version, job.template.curtime, 5)])[
            0
        ].header
        self.assertEqual(header, job.header(extranonce, job.template.version, job.template.curtime, 5))
        block = job.block(extranonce, header)
        coinbase = job.coinbase.serialize_for_block(extranonce)
        txs = b"".join(bytes.fromhex(tx["data"]) for tx in reply["transactions"])
        self.assertEqual(block, header + b"\x03" + coinbase + txs + b"\x01" + bytes.fromhex(reply["mweb"]))

    def test_template_is_not_mutated(self) -> None:
        """Building a job leaves the parsed reply as it was."""
        reply = template_reply()
        kept = copy.deepcopy(reply)
        self.registry.add(BlockTemplate.from_rpc(reply), 1.0)
        self.assertEqual(reply, kept)
