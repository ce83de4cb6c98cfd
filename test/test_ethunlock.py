"""The Ethereum family's unlocker maths: rewards by ECIP-1017 and Ethereum's rules, block
revenue, what a candidate became given the chain, its stages, and the reward split."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction

import yaml
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from nomp.config.errors import ErrorLog
from nomp.config.model import (
    DEFAULT_ORPHAN_SAFETY,
    UNCLE_WINDOW,
    EthCoinConfig,
    EthRewards,
    RewardStep,
    maturity_problems,
)
from nomp.config.schema import Reader
from nomp.payments.ethunlock import (
    Block,
    ChainBlock,
    ChainUncle,
    ChainView,
    EthCandidate,
    Maturity,
    Orphan,
    Revenue,
    Stage,
    Uncle,
    Verdict,
    Wait,
    block_revenue,
    classify,
    heights_to_read,
    matches,
    parse_candidate_member,
    priority_fees,
    split_revenue,
    stage,
    uncle_reward,
    whole_shannon,
)
from nomp.payments.split import round_weights, split_reward
from nomp.store.oepschema import candidate_member
from test.test_config_paths import REPOSITORY

ETHER = 10**18
GWEI = 10**9

CLASSIC = EthCoinConfig(
    algorithm="etchash",
    rewards=EthRewards((RewardStep(0, 5 * ETHER),), era_length=5_000_000, uncle_rule="ecip1017"),
    name="ethereum-classic",
    symbol="ETC",
    chain_id=61,
    ecip1099_block=11_700_000,
)
MORDOR = EthCoinConfig(
    algorithm="etchash",
    rewards=EthRewards((RewardStep(0, 5 * ETHER),), era_length=2_000_000, uncle_rule="ecip1017"),
    name="mordor",
    symbol="METC",
    chain_id=63,
    ecip1099_block=2_520_000,
)
ETHW = EthCoinConfig(
    algorithm="ethash",
    rewards=EthRewards(
        (RewardStep(0, 5 * ETHER), RewardStep(4_370_000, 3 * ETHER), RewardStep(7_280_000, 2 * ETHER))
    ),
    name="ethereumpow",
    symbol="ETHW",
    chain_id=10001,
)

POOL = "0x5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c"
OTHER = "0x" + "cd" * 20
HEIGHT = 1_000_000


def digest(*parts: object) -> bytes:
    """A 32-byte value of its own for each ``parts``."""
    return hashlib.sha256(repr(parts).encode()).digest()


SEAL = digest("seal")
MIX = digest("mix")
NONCE = 0x0123456789ABCDEF


def candidate_at(height: int = HEIGHT) -> EthCandidate:
    member = candidate_member(
        f"0x{NONCE:016x}", "0x" + SEAL.hex(), "0x" + MIX.hex(), 1_700_000_000, 10**15, 4321
    )
    return parse_candidate_member(member, height)


def chain(
    tip: int,
    height: int = HEIGHT,
    *,
    branch: str = "a",
    ours: bool = False,
    uncle_in: int | None = None,
    seal_known: bool = True,
    miner: str = POOL,
) -> ChainView:
    """The main chain's blocks ``heights_to_read(height, tip)`` of a branch: ours at ``height``
    (``ours``), or someone else's there with ours as an uncle of block ``uncle_in``. Each
    block above ``height`` also includes an uncle of someone else's."""
    blocks = {}
    uncles = []
    parent = digest(branch, height - 1)
    for number in heights_to_read(height, tip):
        if number == height and ours:
            nonce, mix, seal, coinbase = NONCE, MIX, SEAL, miner
        else:
            nonce, mix, seal, coinbase = number, digest(branch, "mix", number), digest(branch, number), OTHER
        listed = []
        if number > height:
            stranger = ChainUncle(
                number - 1, digest(branch, "stranger", number), 7, digest(number), OTHER, number
            )
            uncles.append(stranger)
            listed.append(stranger.hash)
        if number == uncle_in:
            uncle = ChainUncle(
                height, digest("our uncle"), NONCE, MIX, miner, number, SEAL if seal_known else None
            )
            uncles.append(uncle)
            listed.append(uncle.hash)
        block = ChainBlock(
            number=number,
            hash=digest(branch, "block", number),
            parent_hash=parent,
            nonce=nonce,
            mix=mix,
            miner=coinbase,
            uncles=tuple(listed),
            gas_used=21_000,
            base_fee=None,
            fees=21_000 * GWEI,
            seal_hash=seal if seal_known else None,
        )
        blocks[number] = block
        parent = block.hash
    return ChainView(blocks, tuple(uncles))


def without_block(view: ChainView, height: int) -> ChainView:
    return ChainView({n: b for n, b in view.blocks.items() if n != height}, view.uncles)


def with_block(view: ChainView, block: ChainBlock) -> ChainView:
    return ChainView({**view.blocks, block.number: block}, view.uncles)


class RewardTests(SynchronousTestCase):
    """Block, uncle and nephew rewards, in wei, by the coins' rules."""

    def test_classic_eras(self) -> None:
        """ECIP-1017 on Classic: era = (block - 1) // 5,000,000; 5, 4, 3.2, 2.56 ETC."""
        reward = CLASSIC.rewards.block_reward
        expected = {
            1: 5 * ETHER,
            5_000_000: 5 * ETHER,
            5_000_001: 4 * ETHER,
            10_000_000: 4 * ETHER,
            10_000_001: 3_200_000_000_000_000_000,
            15_000_000: 3_200_000_000_000_000_000,
            15_000_001: 2_560_000_000_000_000_000,
            20_000_000: 2_560_000_000_000_000_000,
        }
        self.assertEqual({h: reward(h) for h in expected}, expected)

    def test_mordor_eras(self) -> None:
        """Mordor's eras are 2,000,000 blocks."""
        reward = MORDOR.rewards.block_reward
        expected = {
            2_000_000: 5 * ETHER,
            2_000_001: 4 * ETHER,
            4_000_000: 4 * ETHER,
            4_000_001: 3_200_000_000_000_000_000,
            6_000_001: 2_560_000_000_000_000_000,
        }
        self.assertEqual({h: reward(h) for h in expected}, expected)

    def test_shipped_coins(self) -> None:
        """The coin files the pool ships have these rules."""
        errors = ErrorLog()
        for coin in (CLASSIC, MORDOR, ETHW):
            path = REPOSITORY / "coins" / f"{coin.name}.yaml"
            shipped = Reader(path.name, errors).read(EthCoinConfig, yaml.safe_load(path.read_text()))
            self.assertEqual(shipped, coin)
        self.assertEqual(errors.errors, [])

    def test_uncle_ethereum_rule(self) -> None:
        """(uncle + 8 - nephew) / 8 of the nephew's reward, for depths 1 to 6."""
        rewards = ETHW.rewards
        self.assertEqual(
            [uncle_reward(rewards, 100 + k, 100) for k in range(1, 7)],
            [n * 10**15 for n in (4_375, 3_750, 3_125, 2_500, 1_875, 1_250)],
        )
        self.assertEqual(
            [uncle_reward(rewards, 4_370_000 + k, 4_370_000) for k in range(1, 7)],
            [n * 10**15 for n in (2_625, 2_250, 1_875, 1_500, 1_125, 750)],
        )
        self.assertEqual(
            [uncle_reward(rewards, 15_000_000, 15_000_000 - k) for k in range(1, 7)],
            [n * 10**15 for n in (1_750, 1_500, 1_250, 1_000, 750, 500)],
        )

    def test_uncle_ecip1017_rule(self) -> None:
        """Era 0 as Ethereum's rule; from era 1, 1/32 of the era's reward at every depth (the
        nephew's era decides)."""
        rewards = CLASSIC.rewards
        self.assertEqual(
            [uncle_reward(rewards, 4_000_000, 4_000_000 - k) for k in range(1, 7)],
            [n * 10**15 for n in (4_375, 3_750, 3_125, 2_500, 1_875, 1_250)],
        )
        self.assertEqual(
            [uncle_reward(rewards, 5_000_000, 5_000_000 - k) for k in (1, 6)],
            [4_375 * 10**15, 1_250 * 10**15],
        )
        for era, per_uncle in ((1, 125 * 10**15), (2, 100 * 10**15), (3, 80 * 10**15)):
            nephew = era * 5_000_000 + 3
            self.assertEqual(
                [uncle_reward(rewards, nephew, nephew - k) for k in range(1, 7)], [per_uncle] * 6
            )
        # An uncle of era 0 included by a block of era 1.
        self.assertEqual(uncle_reward(rewards, 5_000_001, 4_999_996), 125 * 10**15)
        self.assertEqual(
            [uncle_reward(MORDOR.rewards, 2_000_001, 2_000_001 - k) for k in range(1, 7)], [125 * 10**15] * 6
        )

    def test_uncle_window(self) -> None:
        """An uncle 7 blocks below (or none, or above) is no uncle."""
        for rewards in (ETHW.rewards, CLASSIC.rewards):
            for depth in (7, 8, 0, -1):
                self.assertRaises(ValueError, uncle_reward, rewards, 100, 100 - depth)

    def test_nephew_reward(self) -> None:
        """1/32 of the block's reward for each uncle it includes."""
        self.assertEqual(ETHW.rewards.nephew_reward(1_000), 156_250_000_000_000_000)
        self.assertEqual(ETHW.rewards.nephew_reward(7_280_000), 62_500_000_000_000_000)
        self.assertEqual(CLASSIC.rewards.nephew_reward(5_000_000), 156_250_000_000_000_000)
        self.assertEqual(CLASSIC.rewards.nephew_reward(5_000_001), 125_000_000_000_000_000)
        self.assertEqual(CLASSIC.rewards.nephew_reward(15_000_001), 80_000_000_000_000_000)


# Two transactions: 600,000 gas at 32 gwei and 400,000 at 35 gwei, the base fee 30 gwei.
LONDON_BLOCK = ChainBlock(
    number=15_600_000,
    hash=digest("block"),
    parent_hash=digest("parent"),
    nonce=1,
    mix=digest("mix"),
    miner=POOL,
    uncles=(digest("u1"), digest("u2")),
    gas_used=1_000_000,
    base_fee=30 * GWEI,
    fees=600_000 * 32 * GWEI + 400_000 * 35 * GWEI,
)


class RevenueTests(SynchronousTestCase):
    """Base reward + nephew rewards + priority fees, exact in wei."""

    def test_london_block(self) -> None:
        """The base fee is burnt: only what the transactions paid above it is the miner's."""
        revenue = block_revenue(ETHW.rewards, LONDON_BLOCK)
        self.assertEqual(
            revenue, Revenue(2 * ETHER, 2 * 62_500_000_000_000_000, 600_000 * 2 * GWEI + 400_000 * 5 * GWEI)
        )
        self.assertEqual(revenue.total, 2_125_000_000_000_000_000 + 3_200_000 * GWEI)

    def test_without_eip1559(self) -> None:
        """No base fee (Classic, or before London): every fee paid is the miner's."""
        block = replace(LONDON_BLOCK, number=5_000_001, base_fee=None, uncles=(), fees=21_000 * 7 * GWEI + 1)
        self.assertEqual(block_revenue(CLASSIC.rewards, block), Revenue(4 * ETHER, 0, 147_000 * GWEI + 1))

    def test_priority_fees(self) -> None:
        self.assertEqual(priority_fees(10**21 + 7, 3, 5), 10**21 - 8)
        self.assertEqual(priority_fees(15, 3, 5), 0)  # every transaction at the base fee
        self.assertEqual(priority_fees(0, 0, 10**12), 0)  # an empty block
        self.assertRaises(ValueError, priority_fees, 14, 3, 5)
        self.assertRaises(ValueError, priority_fees, -1, 0, None)

    def test_refused(self) -> None:
        """Fees not read, fees below the burn, more than two uncles: no revenue."""
        for block in (
            replace(LONDON_BLOCK, fees=None),
            replace(LONDON_BLOCK, fees=1_000_000 * 30 * GWEI - 1),
            replace(LONDON_BLOCK, uncles=(digest(1), digest(2), digest(3))),
        ):
            self.assertRaises(ValueError, block_revenue, ETHW.rewards, block)

    def test_keep_tx_fees(self) -> None:
        """With keep_tx_fees the fees go whole to the pool; the rest is split."""
        revenue = Revenue(base=1_000, nephews=31, fees=500)
        kept = split_revenue(revenue, {"a": Fraction(1), "b": Fraction(2)}, Decimal(1), keep_tx_fees=True)
        self.assertEqual(
            (kept.reward, kept.miners, kept.fee, kept.pool), (1_531, {"a": 340, "b": 680}, 510, 511)
        )
        shared = split_revenue(revenue, {"a": Fraction(1), "b": Fraction(2)}, Decimal(1))
        self.assertEqual(
            (shared.reward, shared.miners, shared.fee, shared.pool), (1_531, {"a": 505, "b": 1_010}, 15, 16)
        )


class ClassifyTests(SynchronousTestCase):
    """What a candidate became, from the blocks the I/O layer read."""

    def assertWaits(self, verdict: Verdict, *words: str) -> None:
        self.assertIsInstance(verdict, Wait, verdict)
        assert isinstance(verdict, Wait)
        for word in words:
            self.assertIn(word, verdict.reason)

    def test_block_by_seal_hash(self) -> None:
        view = chain(HEIGHT + 20, ours=True)
        verdict = classify(candidate_at(), view, HEIGHT + 20, CLASSIC, POOL)
        self.assertEqual(
            verdict, Block(HEIGHT, digest("a", "block", HEIGHT), Revenue(5 * ETHER, 0, 21_000 * GWEI))
        )
        assert isinstance(verdict, Block)
        self.assertEqual(verdict.reward, 5 * ETHER + 21_000 * GWEI)

    def test_block_by_nonce(self) -> None:
        """No seal hash computed: the nonce and mix digest tell."""
        view = chain(HEIGHT + 20, ours=True, seal_known=False)
        self.assertIsInstance(classify(candidate_at(), view, HEIGHT + 20, CLASSIC), Block)

    def test_other_work_same_nonce(self) -> None:
        """The same nonce (and mix) sealing another header, or the same nonce with another mix,
        is not the candidate."""
        candidate = candidate_at()
        ours = chain(HEIGHT, ours=True).blocks[HEIGHT]
        self.assertTrue(matches(candidate, ours))
        self.assertFalse(matches(candidate, replace(ours, seal_hash=digest("other"))))
        self.assertFalse(matches(candidate, replace(ours, seal_hash=None, mix=digest("other"))))
        self.assertFalse(matches(candidate, replace(ours, nonce=NONCE + 1)))
        view = with_block(chain(HEIGHT + 20), replace(ours, seal_hash=digest("other")))
        self.assertIsInstance(classify(candidate, view, HEIGHT + 20, CLASSIC), Orphan)

    def test_uncle_each_depth(self) -> None:
        """Found as the uncle of each possible nephew, paid by the coin's rule."""
        for coin, height, rewards in (
            (ETHW, 15_000_000, [1_750, 1_500, 1_250, 1_000, 750, 500]),
            (CLASSIC, 4_000_000, [4_375, 3_750, 3_125, 2_500, 1_875, 1_250]),
            (CLASSIC, 5_000_100, [125] * 6),
            (CLASSIC, 10_000_100, [100] * 6),
            (MORDOR, 2_000_100, [125] * 6),
        ):
            for depth, reward in zip(range(1, UNCLE_WINDOW + 1), rewards, strict=True):
                view = chain(height + 20, height, uncle_in=height + depth)
                verdict = classify(candidate_at(height), view, height + 20, coin, POOL)
                self.assertEqual(
                    verdict,
                    Uncle(height, digest("our uncle"), height + depth, reward * 10**15),
                    (coin.name, depth),
                )

    def test_uncle_by_nonce(self) -> None:
        view = chain(HEIGHT + 20, uncle_in=HEIGHT + 2, seal_known=False)
        self.assertIsInstance(classify(candidate_at(), view, HEIGHT + 20, CLASSIC), Uncle)

    def test_uncle_once_included(self) -> None:
        """An uncle is one as soon as a nephew includes it, even with the block at its height unread."""
        view = without_block(chain(HEIGHT + 2, uncle_in=HEIGHT + 2), HEIGHT)
        self.assertIsInstance(classify(candidate_at(), view, HEIGHT + 2, CLASSIC), Uncle)

    def test_uncle_out_of_window(self) -> None:
        """A block 7 above "including" the candidate is past the window: not looked at."""
        view = chain(HEIGHT + 20)
        beyond = replace(
            view.blocks[HEIGHT + 6],
            number=HEIGHT + 7,
            hash=digest("beyond"),
            parent_hash=view.blocks[HEIGHT + 6].hash,
            uncles=(digest("our uncle"),),
        )
        uncle = ChainUncle(HEIGHT, digest("our uncle"), NONCE, MIX, POOL, HEIGHT + 7, SEAL)
        view = ChainView({**view.blocks, HEIGHT + 7: beyond}, (*view.uncles, uncle))
        self.assertIsInstance(classify(candidate_at(), view, HEIGHT + 20, CLASSIC), Orphan)

    def test_orphan_after_window_and_safety(self) -> None:
        """Someone else's block, ours no uncle: an orphan once the last possible nephew has
        ``safety`` blocks on top, not a block before."""
        decided = HEIGHT + UNCLE_WINDOW + DEFAULT_ORPHAN_SAFETY
        for tip in range(HEIGHT, decided):
            self.assertWaits(
                classify(candidate_at(), chain(tip), tip, CLASSIC), f"decided at block {decided}"
            )
        for tip in (decided, decided + 1, decided + 1_000):
            verdict = classify(candidate_at(), chain(tip), tip, CLASSIC)
            self.assertIsInstance(verdict, Orphan, tip)
            assert isinstance(verdict, Orphan)
            self.assertIn(OTHER, verdict.reason)
        self.assertWaits(classify(candidate_at(), chain(HEIGHT + 7), HEIGHT + 7, CLASSIC, safety=2))
        self.assertIsInstance(
            classify(candidate_at(), chain(HEIGHT + 8), HEIGHT + 8, CLASSIC, safety=2), Orphan
        )
        self.assertRaises(
            ValueError, classify, candidate_at(), chain(HEIGHT + 8), HEIGHT + 8, CLASSIC, safety=0
        )

    def test_young(self) -> None:
        """A node behind the candidate, or a chain not past it: wait."""
        self.assertWaits(classify(candidate_at(), ChainView({}), HEIGHT - 1, CLASSIC), "below")
        self.assertWaits(classify(candidate_at(), chain(HEIGHT), HEIGHT, CLASSIC))

    def test_missing_data_never_orphans(self) -> None:
        """Deep enough for an orphan, but something unread: wait, and say what."""
        tip = HEIGHT + 100
        view = chain(tip)
        self.assertIsInstance(classify(candidate_at(), view, tip, CLASSIC), Orphan)
        self.assertWaits(
            classify(candidate_at(), without_block(view, HEIGHT), tip, CLASSIC), f"block {HEIGHT}"
        )
        self.assertWaits(
            classify(candidate_at(), without_block(view, HEIGHT + 6), tip, CLASSIC), f"block {HEIGHT + 6}"
        )
        self.assertWaits(classify(candidate_at(), ChainView({}), tip, CLASSIC), f"block {HEIGHT}")
        one_uncle_less = ChainView(view.blocks, view.uncles[1:])
        self.assertWaits(
            classify(candidate_at(), one_uncle_less, tip, CLASSIC), f"uncle 0 of block {HEIGHT + 1}"
        )

    def test_fees_unread(self) -> None:
        """Our block with its receipts unread, or fees that do not add up: wait."""
        view = chain(HEIGHT + 20, ours=True)
        ours = view.blocks[HEIGHT]
        self.assertWaits(
            classify(candidate_at(), with_block(view, replace(ours, fees=None)), HEIGHT + 20, CLASSIC), "fees"
        )
        burning = replace(ours, base_fee=10**12)
        self.assertWaits(classify(candidate_at(), with_block(view, burning), HEIGHT + 20, ETHW), "burnt")

    def test_pays_someone_else(self) -> None:
        """Our seal in a block (or uncle) paying another address: wait, it is not the pool's to
        credit; the coinbase is compared in any case."""
        view = chain(HEIGHT + 20, ours=True, miner=OTHER)
        self.assertWaits(classify(candidate_at(), view, HEIGHT + 20, CLASSIC, POOL), "pays", OTHER)
        self.assertIsInstance(classify(candidate_at(), view, HEIGHT + 20, CLASSIC), Block)
        view = chain(HEIGHT + 20, ours=True, miner=POOL.upper().replace("0X", "0x"))
        self.assertIsInstance(classify(candidate_at(), view, HEIGHT + 20, CLASSIC, POOL), Block)
        view = chain(HEIGHT + 20, uncle_in=HEIGHT + 3, miner=OTHER)
        self.assertWaits(classify(candidate_at(), view, HEIGHT + 20, CLASSIC, POOL), "uncle", OTHER)

    def test_someone_elses_block(self) -> None:
        """Another's block at the candidate's height: an orphan eventually, never before the
        window and the safety are past."""
        verdicts = [classify(candidate_at(), chain(tip), tip, CLASSIC) for tip in range(HEIGHT, HEIGHT + 30)]
        kinds = [type(v).__name__ for v in verdicts]
        self.assertEqual(kinds, ["Wait"] * 12 + ["Orphan"] * 18)

    def test_reorg_brings_our_block_back(self) -> None:
        """Someone else's block first, then a longer branch with ours: a block; and the other
        way round, ours then another's once it is settled: an orphan."""
        self.assertWaits(classify(candidate_at(), chain(HEIGHT + 3, branch="a"), HEIGHT + 3, CLASSIC))
        verdict = classify(candidate_at(), chain(HEIGHT + 20, branch="b", ours=True), HEIGHT + 20, CLASSIC)
        self.assertEqual(
            verdict, Block(HEIGHT, digest("b", "block", HEIGHT), Revenue(5 * ETHER, 0, 21_000 * GWEI))
        )
        self.assertIsInstance(
            classify(candidate_at(), chain(HEIGHT + 40, branch="c"), HEIGHT + 40, CLASSIC), Orphan
        )
        self.assertIsInstance(
            classify(
                candidate_at(), chain(HEIGHT + 60, branch="d", uncle_in=HEIGHT + 5), HEIGHT + 60, CLASSIC
            ),
            Uncle,
        )

    def test_read_across_a_reorg(self) -> None:
        """Blocks read from two branches (the chain moved between two calls) are no view of
        the chain: wait, even where they would say orphan."""
        view = chain(HEIGHT + 20, branch="a")
        mixed = ChainView({**chain(HEIGHT + 20, branch="b").blocks, HEIGHT: view.blocks[HEIGHT]}, view.uncles)
        self.assertWaits(classify(candidate_at(), mixed, HEIGHT + 20, CLASSIC), "changed")
        wrong_number = ChainView(
            {**view.blocks, HEIGHT + 1: replace(view.blocks[HEIGHT + 1], number=HEIGHT + 2)}
        )
        self.assertWaits(classify(candidate_at(), wrong_number, HEIGHT + 20, CLASSIC), "number")

    def test_heights_to_read(self) -> None:
        self.assertEqual(heights_to_read(HEIGHT, HEIGHT + 100), range(HEIGHT, HEIGHT + 7))
        self.assertEqual(heights_to_read(HEIGHT, HEIGHT + 2), range(HEIGHT, HEIGHT + 3))
        self.assertEqual(list(heights_to_read(HEIGHT, HEIGHT - 1)), [])


class CandidateMemberTests(SynchronousTestCase):
    """<coin>:blocks:candidates members, as OEP's proxy and nomp's recorder write them."""

    def test_parse(self) -> None:
        member = candidate_member(
            "0x00000000000000ff",
            "0x" + "ab" * 32,
            "0x" + "cd" * 32,
            1_700_000_123,
            3_000_000_000_000_000,
            10**22,
        )
        self.assertEqual(
            parse_candidate_member(member, 42),
            EthCandidate(42, 255, b"\xab" * 32, b"\xcd" * 32, 1_700_000_123, 3 * 10**15, 10**22, member),
        )
        self.assertEqual(parse_candidate_member(member, 42).nonce_hex, "0x00000000000000ff")

    def test_refused(self) -> None:
        nonce, seal, mix = "0x" + "0" * 16, "0x" + "1" * 64, "0x" + "2" * 64
        good = f"{nonce}:{seal}:{mix}:1:2:3"
        parse_candidate_member(good, 1)
        for member, words in (
            ("", "fields"),
            (f"{nonce}:{seal}:{mix}:1:2", "5 fields"),
            (f"{good}:4", "7 fields"),
            (f"0x{'0' * 15}:{seal}:{mix}:1:2:3", "nonce"),
            (f"{'0' * 18}:{seal}:{mix}:1:2:3", "nonce"),
            (f"0x{'A' * 16}:{seal}:{mix}:1:2:3", "nonce"),
            (f"{nonce}:0x{'1' * 63}:{mix}:1:2:3", "seal hash"),
            (f"{nonce}:{seal}:0x{'G' * 64}:1:2:3", "mix"),
            (f"{nonce}:{seal}:{mix}:-1:2:3", "time"),
            (f"{nonce}:{seal}:{mix}:1:2.5:3", "difficulty"),
            (f"{nonce}:{seal}:{mix}:1:2:\N{SUPERSCRIPT TWO}", "round total"),
            (f"{nonce}:{seal}:{mix}:1:2: 3", "round total"),
        ):
            with self.assertRaises(ValueError) as caught:
                parse_candidate_member(member, 1)
            self.assertIn(words, str(caught.exception), member)
        self.assertRaises(ValueError, parse_candidate_member, good, 0)


class StageTests(SynchronousTestCase):
    """candidate -> immature at immature_depth -> matured at depth, and the depths' checks."""

    def test_stages(self) -> None:
        stages = {conf: stage(HEIGHT, HEIGHT + conf, 20, 120) for conf in (-5, 0, 19, 20, 119, 120, 10_000)}
        self.assertEqual(
            stages,
            {
                -5: Stage.CANDIDATE,
                0: Stage.CANDIDATE,
                19: Stage.CANDIDATE,
                20: Stage.IMMATURE,
                119: Stage.IMMATURE,
                120: Stage.MATURED,
                10_000: Stage.MATURED,
            },
        )
        self.assertEqual(Maturity(16, 32).stage(HEIGHT, HEIGHT + 16), Stage.IMMATURE)
        self.assertRaises(ValueError, stage, HEIGHT, HEIGHT, 32, 32)
        self.assertRaises(ValueError, stage, HEIGHT, HEIGHT, -1, 32)

    def test_problems(self) -> None:
        self.assertEqual(maturity_problems(16, 32, 10), [])
        self.assertEqual(Maturity(), Maturity(20, 120, 6))
        self.assertEqual(
            maturity_problems(15, 31, 6),
            [("immature_depth", "must be >= 16"), ("depth", "must be >= 32")],
        )
        self.assertEqual(maturity_problems(40, 40, 6), [("depth", "must be above immature_depth (40)")])
        self.assertEqual(maturity_problems(20, 120, 0), [("orphan_safety", "must be >= 1")])
        self.assertEqual(
            maturity_problems(16, 32, 11), [("orphan_safety", "must be at most immature_depth - 6 (10)")]
        )
        with self.assertRaises(ValueError) as caught:
            Maturity(immature_depth=10)
        self.assertIn("immature_depth: must be >= 16", str(caught.exception))

    def test_first_look_decides(self) -> None:
        """With valid depths, a candidate due for its first look is never left waiting for
        the chain to grow (data read in full)."""
        maturity = Maturity(16, 32, 10)
        tip = HEIGHT + maturity.immature_depth
        self.assertEqual(maturity.stage(HEIGHT, tip), Stage.IMMATURE)
        verdict = classify(candidate_at(), chain(tip), tip, CLASSIC, safety=maturity.orphan_safety)
        self.assertIsInstance(verdict, Orphan)


class SplitTests(SynchronousTestCase):
    """The split in wei adds up to the reward exactly."""

    def assertExact(self, reward: int, weights: dict[str, Fraction], fee: Decimal) -> None:
        split = split_revenue(Revenue(reward, 0, 0), weights, fee)
        self.assertEqual(sum(split.miners.values()) + split.pool, reward)
        self.assertTrue(all(v > 0 for v in split.miners.values()))
        self.assertGreaterEqual(split.pool, split.fee)
        shannon = whole_shannon(split)
        self.assertEqual(sum(shannon.miners.values()) + shannon.pool, reward)
        self.assertTrue(all(v % 10**9 == 0 for v in shannon.miners.values()))

    def test_awkward_numbers(self) -> None:
        primes = {"0xa": Fraction(7_919), "0xb": Fraction(104_729), "0xc": Fraction(1_299_709)}
        for reward in (1, 2, 3, 997, 1_000_000_007, 10**21, 10**21 + 1, 5 * ETHER + 21_000 * GWEI):
            for fee in (Decimal(0), Decimal("1.3"), Decimal("99.99")):
                self.assertExact(reward, primes, fee)
        split = split_revenue(Revenue(1, 0, 0), primes, Decimal(0))
        self.assertEqual((split.miners, split.pool), ({}, 1))
        split = split_revenue(Revenue(10**21, 0, 0), {"0xa": Fraction(1), "0xb": Fraction(2)}, Decimal(0))
        self.assertEqual(
            split.miners, {"0xa": 333_333_333_333_333_333_333, "0xb": 666_666_666_666_666_666_666}
        )
        self.assertEqual(split.pool, 1)

    def test_oep_figures(self) -> None:
        """OEP's TestCalculateRewards round (5 ether): within a Shannon of its rounded figures,
        and adding up."""
        shares = {"0xa": "1000000", "0xb": "20000", "0xc": "5000", "0xd": "10", "0xe": "1"}
        oep = {"0xa": 4877996431, "0xb": 97559929, "0xc": 24389982, "0xd": 48780, "0xe": 4878}
        split = whole_shannon(split_revenue(Revenue(5 * ETHER, 0, 0), round_weights(shares), Decimal(0)))
        for login, shannon in oep.items():
            self.assertLessEqual(abs(split.miners[login] // 10**9 - shannon), 1, login)
        self.assertEqual(sum(split.miners.values()) + split.pool, 5 * ETHER)

    def test_same_as_the_bitcoin_split(self) -> None:
        """Without kept fees it is split_reward's split of the total."""
        weights = {"0xa": Fraction(3), "0xb": Fraction(5, 7)}
        revenue = Revenue(2 * ETHER, 62_500_000_000_000_000, 12_345)
        self.assertEqual(
            split_revenue(revenue, weights, Decimal("2.5")),
            split_reward(revenue.total, weights, Decimal("2.5")),
        )

    @given(
        base=st.integers(0, 10**24),
        fees=st.integers(0, 10**21),
        weights=st.dictionaries(
            st.text("0123456789abcdef", min_size=1, max_size=4).map(lambda s: "0x" + s),
            st.fractions(min_value=Fraction(1, 10**6), max_value=10**12),
            max_size=8,
        ),
        fee=st.decimals(min_value=0, max_value=Decimal("99.99"), places=2),
        keep=st.booleans(),
    )
    def test_always_exact(
        self, base: int, fees: int, weights: dict[str, Fraction], fee: Decimal, keep: bool
    ) -> None:
        split = split_revenue(Revenue(base, 0, fees), weights, fee, keep_tx_fees=keep)
        self.assertEqual(sum(split.miners.values()) + split.pool, base + fees)
        self.assertTrue(all(v > 0 for v in split.miners.values()))
        shannon = whole_shannon(split)
        self.assertEqual(sum(shannon.miners.values()) + shannon.pool, base + fees)
