"""Modern miners' requests: BIP310 ``mining.configure`` (version rolling,
minimum difficulty, extranonce subscription), version-rolled shares,
``mining.suggest_difficulty`` and ``d=`` in the password. The pure
negotiation and parsing, then the real StratumPool over the harness of
test.fakes, with the real C share check."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from nomp.chain.encoding import block_hash
from nomp.chain.jobs import Job
from nomp.config import PortConfig, VardiffConfig
from nomp.hashing import ShareWork
from nomp.stratum.configure import (
    ConfigureError,
    Negotiated,
    PasswordOptions,
    clamp_difficulty,
    negotiate,
    password_options,
    suggested_difficulty,
)
from nomp.stratum.errors import StratumError
from nomp.stratum.shares import DIFFICULTY_TOLERANCE, ShareLedger, check_submit
from test.fakes import (
    REGTEST_ADDRESS,
    SCRYPT,
    Connection,
    StratumHarness,
    mainnet_template,
    pool_config,
    regtest_template,
)
from test.test_chain import template_reply

CURTIME: int = template_reply()["curtime"]
NOW = CURTIME + 30
POOL_MASK = 0x1FFFE000  # the shipped default
TEMPLATE_VERSION = 0x20000000  # test_chain's template

PLAIN_DIFF = 0.0001  # about one hash in seven is a share: quick to grind
PLAIN_PORT = PortConfig(listen="tcp:3333:interface=127.0.0.1", diff=PLAIN_DIFF)
VARDIFF = VardiffConfig(min_diff=0.0001, max_diff=1000, target_time=15, retarget_time=90, variance_percent=30)
VARDIFF_PORT = PortConfig(listen="tcp:3334:interface=127.0.0.1", diff=0.001, vardiff=VARDIFF)
PORTS = (PLAIN_PORT, VARDIFF_PORT)

WORKER = REGTEST_ADDRESS + ".rig1"
EXTRANONCE2 = bytes.fromhex("abcdef12")
ROLLED_BITS = 0x0ABCE000  # inside the pool's mask
FULL_REQUEST = [
    ["version-rolling", "minimum-difficulty", "subscribe-extranonce"],
    {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2, "minimum-difficulty.value": 0},
]


def meets(difficulty: float) -> Callable[[int], bool]:
    target = SCRYPT.share_target(difficulty)
    return lambda value: value <= target


def misses(difficulty: float) -> Callable[[int], bool]:
    """Not a share of ``difficulty``, not even with the pool's tolerance for rounding."""
    target = SCRYPT.share_target(difficulty * DIFFICULTY_TOLERANCE)
    return lambda value: value > target


def rolled(version: int, mask: int, bits: int) -> int:
    """The header version a miner rolling ``bits`` under ``mask`` hashes."""
    return (version & ~mask) | bits


def find_nonce_at(
    job: Job, extranonce: bytes, accepts: dict[int, Callable[[int], bool]], start: int = 0
) -> int:
    """The first nonce from ``start`` whose PoW value at each version of
    ``accepts`` (version -> test) passes that version's test."""
    ntime = job.template.curtime
    for first in range(start, start + (1 << 20), 64):
        nonces = range(first, first + 64)
        good = set(nonces)
        for version, accept in accepts.items():
            works = [ShareWork(extranonce, version, ntime, n) for n in nonces]
            hashed = job.hasher.check(works)
            good &= {w.nonce for w, h in zip(works, hashed, strict=True) if accept(h.pow_value)}
        if good:
            return min(good)
    raise AssertionError("no nonce found")


def submit_params(job: Job, nonce: int, version_bits: object = None) -> list[Any]:
    params: list[Any] = [WORKER, job.job_id, EXTRANONCE2.hex(), f"{job.template.curtime:08x}", f"{nonce:08x}"]
    return params if version_bits is None else [*params, version_bits]


class NegotiateTests(SynchronousTestCase):
    """nomp.stratum.configure.negotiate, pure."""

    def test_full_request(self) -> None:
        """All three extensions: the pool's mask, the floor, the extranonce subscription."""
        self.assertEqual(
            negotiate(FULL_REQUEST, POOL_MASK),
            Negotiated(
                {
                    "version-rolling": True,
                    "version-rolling.mask": "1fffe000",
                    "minimum-difficulty": True,
                    "subscribe-extranonce": True,
                },
                POOL_MASK,
                0.0,
                True,
            ),
        )

    def test_masks_intersect(self) -> None:
        """The agreed mask is the pool's AND the miner's, as eight hex digits."""
        for pool, miner, agreed in [
            (POOL_MASK, "ffffffff", "1fffe000"),
            (POOL_MASK, "00fff000", "00ffe000"),
            (POOL_MASK, "1FFFE000", "1fffe000"),
            (0x00FFE000, "1fffe000", "00ffe000"),
            (POOL_MASK, "6000", "00006000"),  # fewer digits: a number like any other
        ]:
            negotiated = negotiate([["version-rolling"], {"version-rolling.mask": miner}], pool)
            self.assertEqual(
                negotiated.result, {"version-rolling": True, "version-rolling.mask": agreed}, miner
            )
            self.assertEqual(negotiated.version_mask, int(agreed, 16))

    def test_missing_mask_is_every_bit(self) -> None:
        """A miner naming no mask (or sending no parameters at all) takes the pool's."""
        for params in (
            [["version-rolling"], {}],
            [["version-rolling"], {"version-rolling.min-bit-count": 16}],
            [["version-rolling"]],
            [["version-rolling"], None],
        ):
            negotiated = negotiate(params, POOL_MASK)
            self.assertEqual(negotiated.version_mask, POOL_MASK, params)
            self.assertEqual(negotiated.result["version-rolling.mask"], "1fffe000")

    def test_min_bit_count(self) -> None:
        """Fewer agreed bits than min-bit-count asks: version-rolling false, mask 0."""
        two_bits = {"version-rolling.mask": "00006000"}
        for count, granted in [(0, True), (1, True), (2, True), (3, False), (33, False)]:
            negotiated = negotiate(
                [["version-rolling"], {**two_bits, "version-rolling.min-bit-count": count}], POOL_MASK
            )
            self.assertEqual(negotiated.result["version-rolling"], granted, count)
            self.assertEqual(negotiated.version_mask, 0x6000 if granted else 0)
            self.assertEqual("version-rolling.mask" in negotiated.result, granted)

    def test_nothing_in_common(self) -> None:
        """Disjoint masks, or a pool mask of 0 (rolling turned off): false whatever min-bit-count says."""
        for pool, miner in [(POOL_MASK, "e0001fff"), (0, "ffffffff"), (POOL_MASK, "00000000")]:
            negotiated = negotiate([["version-rolling"], {"version-rolling.mask": miner}], pool)
            self.assertEqual(negotiated.result, {"version-rolling": False})
            self.assertEqual(negotiated.version_mask, 0)

    def test_minimum_difficulty(self) -> None:
        """minimum-difficulty: true, with its value (ints and floats, 0 included)."""
        for value in (2048, 0.5, 0, 1e-9):
            negotiated = negotiate([["minimum-difficulty"], {"minimum-difficulty.value": value}], POOL_MASK)
            self.assertEqual(negotiated.result, {"minimum-difficulty": True})
            self.assertEqual(negotiated.minimum_difficulty, value)
            self.assertIsNone(negotiated.version_mask)

    def test_unknown_extensions_left_out(self) -> None:
        """Unknown extensions are not answered; the known ones still are."""
        negotiated = negotiate(
            [["info", "version-rolling", "x" * 100, "subscribe-extranonce"], {"info.url": 5}], POOL_MASK
        )
        self.assertEqual(
            set(negotiated.result), {"version-rolling", "version-rolling.mask", "subscribe-extranonce"}
        )
        self.assertEqual(negotiate([[], {}], POOL_MASK), Negotiated({}, None, None, False))

    def test_parameters_of_unrequested_extensions_unread(self) -> None:
        """A bad parameter of an extension not asked for is no error."""
        negotiated = negotiate(
            [["subscribe-extranonce"], {"version-rolling.mask": "zz", "minimum-difficulty.value": "x"}],
            POOL_MASK,
        )
        self.assertEqual(negotiated.result, {"subscribe-extranonce": True})

    def test_malformed(self) -> None:
        """Params that cannot be read are a ConfigureError saying what is wrong."""
        rolling, minimum = ["version-rolling"], ["minimum-difficulty"]
        bad_masks: tuple[object, ...] = (
            "0x1fffe000",
            "1fffe0000",
            "",
            " 1fffe00",
            "-1",
            "1fffe00g",
            0x1FFFE000,
            [],
        )
        bad_counts: tuple[object, ...] = (-1, "2", 2.0, True, [2])
        bad_values: tuple[object, ...] = (-1, "2048", True, math.inf, math.nan, 10**400, [1])
        cases: list[tuple[list[Any], str]] = [
            ([], "invalid params: expected [extensions], {parameters}"),
            (["version-rolling"], "invalid params: expected [extensions], {parameters}"),
            ([{"version-rolling": True}], "invalid params: expected [extensions], {parameters}"),
            ([["version-rolling", 1]], "invalid params: extension names must be strings"),
            ([rolling, []], "invalid params: extension parameters must be an object"),
            ([rolling, "1fffe000"], "invalid params: extension parameters must be an object"),
            *[
                (
                    [rolling, {"version-rolling.mask": mask}],
                    "version-rolling.mask must be up to eight hex digits",
                )
                for mask in bad_masks
            ],
            *[
                ([rolling, {"version-rolling.min-bit-count": count}], "version-rolling.min-bit-count must")
                for count in bad_counts
            ],
            *[
                (
                    [minimum, {"minimum-difficulty.value": value}],
                    "minimum-difficulty.value must be a number >= 0",
                )
                for value in bad_values
            ],
            ([minimum, {}], "minimum-difficulty.value must be a number >= 0"),
        ]
        for params, text in cases:
            with self.assertRaises(ConfigureError, msg=repr(params)) as raised:
                negotiate(params, POOL_MASK)
            self.assertTrue(str(raised.exception).startswith(text), (params, str(raised.exception)))


class DifficultyParsingTests(SynchronousTestCase):
    """suggested_difficulty, clamp_difficulty and password_options, pure."""

    def test_suggested_difficulty(self) -> None:
        self.assertEqual(suggested_difficulty([1024]), 1024.0)
        self.assertEqual(suggested_difficulty([0.5, "extra"]), 0.5)
        for params in ([], [0], [-1], ["1024"], [True], [None], [math.inf], [math.nan], [10**400], [[1]]):
            with self.assertRaises(ValueError, msg=repr(params)):
                suggested_difficulty(params)

    def test_clamp_on_vardiff_port(self) -> None:
        """A vardiff port: within [min_diff, max_diff], and the miner's floor."""
        self.assertEqual(clamp_difficulty(5, VARDIFF_PORT), 5)
        self.assertEqual(clamp_difficulty(1e-9, VARDIFF_PORT), VARDIFF.min_diff)
        self.assertEqual(clamp_difficulty(1e9, VARDIFF_PORT), VARDIFF.max_diff)
        self.assertEqual(clamp_difficulty(5, VARDIFF_PORT, floor=64), 64)
        self.assertEqual(clamp_difficulty(500, VARDIFF_PORT, floor=64), 500)

    def test_clamp_on_fixed_port(self) -> None:
        """A fixed port: the port's difficulty or more, no upper limit."""
        self.assertEqual(clamp_difficulty(1e-9, PLAIN_PORT), PLAIN_DIFF)
        self.assertEqual(clamp_difficulty(1e12, PLAIN_PORT), 1e12)
        self.assertEqual(clamp_difficulty(0.5, PLAIN_PORT, floor=2), 2)

    def test_password_options(self) -> None:
        for password, expected in [
            ("x", PasswordOptions(None, ())),
            ("", PasswordOptions(None, ())),
            ("d=4096", PasswordOptions(4096.0, ())),
            ("x,d=4096", PasswordOptions(4096.0, ())),
            ("d=4096,foo=bar", PasswordOptions(4096.0, ())),
            (" D = 0.5 ", PasswordOptions(0.5, ())),
            ("d=1e3", PasswordOptions(1000.0, ())),
            ("d=1,d=2", PasswordOptions(2.0, ())),
            ("d=2,d=zz", PasswordOptions(2.0, ("d=zz",))),
            ("dd=5,x=d=3", PasswordOptions(None, ())),
            ("d=abc", PasswordOptions(None, ("d=abc",))),
            ("d=", PasswordOptions(None, ("d=",))),
            ("x, d=0 ,d=-5", PasswordOptions(None, ("d=0", "d=-5"))),
            ("d=inf,d=nan", PasswordOptions(None, ("d=inf", "d=nan"))),
            ("d=" + "9" * 400, PasswordOptions(None, ("d=" + "9" * 62,))),  # too big; quoted shortened
        ]:
            self.assertEqual(password_options(password), expected, password)


class _Case(SynchronousTestCase):
    """A pool with a plain and a vardiff port, the shipped version mask, at NOW."""

    version_mask = POOL_MASK

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        config = pool_config(ports=PORTS, usernames="address", version_mask=self.version_mask)
        self.harness = StratumHarness(config, self.clock)
        self.server = self.harness.server
        self.job = self.harness.new_job(mainnet_template())

    def assertError(self, messages: list[dict[str, Any]], code: int, text: str) -> None:
        self.assertEqual(messages, [{"id": messages[0]["id"], "result": None, "error": [code, text, None]}])

    def assertAccepted(self, messages: list[dict[str, Any]]) -> None:
        self.assertEqual([(m["result"], m["error"]) for m in messages], [(True, None)], messages)

    def configured(
        self, request: list[Any] = FULL_REQUEST, port: PortConfig = PLAIN_PORT, worker: str = WORKER
    ) -> Connection:
        """A miner that configured, subscribed and authorized, messages read."""
        miner = self.harness.connect(port)
        (reply,) = miner.request("mining.configure", request)
        self.assertIsNone(reply["error"])
        miner.subscribe()
        self.assertTrue(miner.authorize(worker)["result"])
        return miner

    def extranonce(self, miner: Connection) -> bytes:
        assert miner.session.extranonce1 is not None
        return miner.session.extranonce1 + EXTRANONCE2

    def set_difficulty(self, difficulty: float) -> dict[str, Any]:
        return {"id": None, "method": "mining.set_difficulty", "params": [difficulty]}


class ConfigureTests(_Case):
    """mining.configure through the server."""

    def test_reply(self) -> None:
        """The reply is the negotiation's result, with id and a null error; the session remembers it."""
        miner = self.harness.connect()
        self.assertEqual(
            miner.request("mining.configure", FULL_REQUEST, request_id=7),
            [
                {
                    "id": 7,
                    "result": {
                        "version-rolling": True,
                        "version-rolling.mask": "1fffe000",
                        "minimum-difficulty": True,
                        "subscribe-extranonce": True,
                    },
                    "error": None,
                }
            ],
        )
        self.assertEqual(miner.session.version_mask, POOL_MASK)
        self.assertTrue(miner.session.extranonce_subscribed)
        self.assertEqual(miner.session.difficulty, PLAIN_DIFF)

    def test_refused_rolling(self) -> None:
        """version-rolling false: the session may not roll."""
        miner = self.harness.connect()
        (reply,) = miner.request(
            "mining.configure",
            [["version-rolling"], {"version-rolling.mask": "00006000", "version-rolling.min-bit-count": 3}],
        )
        self.assertEqual(reply["result"], {"version-rolling": False})
        self.assertEqual(miner.session.version_mask, 0)

    def test_configure_again(self) -> None:
        """A second configure with version-rolling replaces the mask; one without it keeps it."""
        miner = self.harness.connect()
        miner.request("mining.configure", [["version-rolling"], {"version-rolling.mask": "00ff0000"}])
        self.assertEqual(miner.session.version_mask, 0x00FF0000)
        miner.request("mining.configure", [["subscribe-extranonce"], {}])
        self.assertEqual(miner.session.version_mask, 0x00FF0000)
        miner.request("mining.configure", [["version-rolling"], {"version-rolling.mask": "e0000000"}])
        self.assertEqual(miner.session.version_mask, 0)

    def test_malformed(self) -> None:
        """Malformed params: error 20 with the reason; nothing changes; the connection stays."""
        miner = self.harness.connect()
        self.assertError(
            miner.request("mining.configure", [["version-rolling"], {"version-rolling.mask": "xyz"}]),
            20,
            "version-rolling.mask must be up to eight hex digits, e.g. 1fffe000",
        )
        self.assertError(
            miner.request("mining.configure", []), 20, "invalid params: expected [extensions], {parameters}"
        )
        self.assertEqual(miner.session.version_mask, 0)
        self.assertFalse(miner.closing)

    def test_extranonce_subscribe_sets_the_same_flag(self) -> None:
        """mining.extranonce.subscribe marks the session as configure's subscribe-extranonce does."""
        miner = self.harness.connect()
        self.assertFalse(miner.session.extranonce_subscribed)
        self.assertEqual(
            miner.request("mining.extranonce.subscribe"), [{"id": 1, "result": True, "error": None}]
        )
        self.assertTrue(miner.session.extranonce_subscribed)


class MinimumDifficultyTests(_Case):
    """minimum-difficulty: a floor on the connection's difficulty, within the port's limits."""

    @staticmethod
    def floor(value: float) -> list[Any]:
        return [["minimum-difficulty"], {"minimum-difficulty.value": value}]

    def test_before_subscribe_is_the_starting_difficulty(self) -> None:
        """Configured first (as ASICs do): the subscription's set_difficulty carries the floor."""
        miner = self.harness.connect()
        miner.request("mining.configure", self.floor(0.5))
        messages = miner.request("mining.subscribe", ["asic/1.0"])
        self.assertEqual(messages[1], self.set_difficulty(0.5))
        self.assertEqual(miner.session.sent[self.job.job_id], 0.5)

    def test_after_subscribe_raises_now(self) -> None:
        """Configured after subscribing: the reply, then set_difficulty."""
        miner = self.harness.miner(WORKER)
        messages = miner.request("mining.configure", self.floor(0.5))
        self.assertEqual(messages[1:], [self.set_difficulty(0.5)])
        self.assertEqual(miner.session.minimum_difficulty, 0.5)

    def test_floor_below_the_difficulty_changes_nothing(self) -> None:
        """A floor under the current difficulty (or under the port's) sends nothing."""
        miner = self.harness.miner(WORKER)
        for value in (PLAIN_DIFF / 2, 0):
            self.assertEqual(len(miner.request("mining.configure", self.floor(value))), 1)
            self.assertEqual(miner.session.difficulty, PLAIN_DIFF)
            self.assertEqual(miner.session.minimum_difficulty, PLAIN_DIFF)

    def test_clamped_to_vardiff_max(self) -> None:
        """On a vardiff port the floor is at most max_diff."""
        miner = self.harness.miner(WORKER, port=VARDIFF_PORT)
        messages = miner.request("mining.configure", self.floor(10**6))
        self.assertEqual(messages[1:], [self.set_difficulty(VARDIFF.max_diff)])
        self.assertEqual(miner.session.minimum_difficulty, VARDIFF.max_diff)

    def test_vardiff_never_below_the_floor(self) -> None:
        """A quiet miner is lowered by vardiff down to its floor, not to min_diff."""
        miner = self.harness.miner(WORKER, port=VARDIFF_PORT)
        miner.request("mining.configure", self.floor(0.0005))
        sent = []
        for _ in range(5):
            self.clock.advance(91)
            self.server.retarget_quiet()
            sent += [m["params"][0] for m in miner.read()]
        self.assertEqual(sent, [0.0005])
        self.assertEqual(miner.session.difficulty, 0.0005)


class VersionRollingShareTests(_Case):
    """mining.submit with version bits."""

    def test_rolled_share_accepted(self) -> None:
        """A share hashed with rolled version bits is accepted and checked at the rolled version."""
        miner = self.configured()
        version = rolled(TEMPLATE_VERSION, POOL_MASK, ROLLED_BITS)
        nonce = find_nonce_at(self.job, self.extranonce(miner), {version: meets(PLAIN_DIFF)})
        self.assertAccepted(miner.submit(submit_params(self.job, nonce, f"{ROLLED_BITS:08x}")))
        self.assertEqual(self.harness.hashing.checked[-1].version, version)
        self.assertEqual(self.harness.recorder.valid, [(WORKER, PLAIN_DIFF)])

    def test_rolled_bits_are_hashed(self) -> None:
        """A nonce good at the job's version but not at the rolled one is a low-difficulty share."""
        miner = self.configured()
        version = rolled(TEMPLATE_VERSION, POOL_MASK, ROLLED_BITS)
        accepts = {TEMPLATE_VERSION: meets(PLAIN_DIFF), version: misses(PLAIN_DIFF)}
        nonce = find_nonce_at(self.job, self.extranonce(miner), accepts)
        messages = miner.submit(submit_params(self.job, nonce, f"{ROLLED_BITS:08x}"))
        self.assertEqual(messages[0]["error"][0], 23)

    def test_no_version_bits_from_a_rolling_miner(self) -> None:
        """A rolling miner's share without the sixth param is at the job's version."""
        miner = self.configured()
        nonce = find_nonce_at(self.job, self.extranonce(miner), {TEMPLATE_VERSION: meets(PLAIN_DIFF)})
        self.assertAccepted(miner.submit(submit_params(self.job, nonce)))
        self.assertEqual(self.harness.hashing.checked[-1].version, TEMPLATE_VERSION)

    def test_bits_outside_the_mask(self) -> None:
        """Bits outside the agreed mask: error 20 naming the mask, counted invalid, not hashed."""
        miner = self.configured([["version-rolling"], {"version-rolling.mask": "00ffe000"}])
        for bits in ("10000000", "00001000", "ffffffff", "1fffe000"):
            self.assertError(
                miner.submit(submit_params(self.job, 1, bits)), 20, "version bits outside the mask 00ffe000"
            )
        self.assertEqual(self.harness.hashing.checked, [])
        self.assertEqual(len(self.harness.recorder.invalid), 4)

    def test_rolling_not_negotiated(self) -> None:
        """Without mining.configure (or with version-rolling refused) rolled bits are refused;
        zero bits are the job's version as is."""
        plain = self.harness.miner(WORKER)
        refused = self.configured([["version-rolling"], {"version-rolling.mask": "00000001"}])
        for miner in (plain, refused):
            self.assertError(
                miner.submit(submit_params(self.job, 1, f"{ROLLED_BITS:08x}")),
                20,
                "version rolling was not negotiated (mining.configure)",
            )
            nonce = find_nonce_at(self.job, self.extranonce(miner), {TEMPLATE_VERSION: meets(PLAIN_DIFF)})
            self.assertAccepted(miner.submit(submit_params(self.job, nonce, "00000000")))
            self.assertEqual(self.harness.hashing.checked[-1].version, TEMPLATE_VERSION)

    def test_malformed_version_bits(self) -> None:
        """Version bits that are not eight hex digits: error 20; null is no version bits."""
        miner = self.configured()
        bad_bits: tuple[object, ...] = ("0abce00", "0abce0000", "0x0abce0", "zzzzzzzz", 0x0ABCE000, [], True)
        for bits in bad_bits:
            self.assertError(
                miner.submit(submit_params(self.job, 1, bits)), 20, "incorrect size of version bits"
            )
        nonce = find_nonce_at(self.job, self.extranonce(miner), {TEMPLATE_VERSION: meets(PLAIN_DIFF)})
        self.assertAccepted(miner.submit([*submit_params(self.job, nonce), None]))

    def test_duplicates_tell_version_bits_apart(self) -> None:
        """Two shares differing only in version bits are two shares; the same bits again (in
        any case) are a duplicate."""
        miner = self.configured()
        other_bits = 0x00002000
        versions = [rolled(TEMPLATE_VERSION, POOL_MASK, bits) for bits in (ROLLED_BITS, other_bits)]
        nonce = find_nonce_at(self.job, self.extranonce(miner), dict.fromkeys(versions, meets(PLAIN_DIFF)))
        self.assertAccepted(miner.submit(submit_params(self.job, nonce, f"{ROLLED_BITS:08x}")))
        self.assertAccepted(miner.submit(submit_params(self.job, nonce, f"{other_bits:08x}")))
        self.assertError(
            miner.submit(submit_params(self.job, nonce, f"{ROLLED_BITS:08X}")), 22, "duplicate share"
        )

    def test_ledger_key_holds_the_version(self) -> None:
        """check_submit itself: the ledger tells the versions apart; zero bits equal no bits."""
        miner = self.configured()
        registry = self.harness.registry
        ledger = ShareLedger()
        for params in (submit_params(self.job, 9, "0abce000"), submit_params(self.job, 9, "00002000")):
            check_submit(params, miner.session, registry, ledger, NOW)
        check_submit(submit_params(self.job, 9), miner.session, registry, ledger, NOW)
        self.assertEqual(len(ledger), 3)
        for params in (submit_params(self.job, 9, "00000000"), submit_params(self.job, 9, "0ABCE000")):
            with self.assertRaises(StratumError) as raised:
                check_submit(params, miner.session, registry, ledger, NOW)
            self.assertEqual(raised.exception.code, 22)

    def test_rolled_block(self) -> None:
        """A rolled share that is a block goes to the pool with the rolled header version."""
        job = self.harness.new_job(regtest_template(previousblockhash="cc" * 32, height=123))
        miner = self.configured()
        version = rolled(TEMPLATE_VERSION, POOL_MASK, ROLLED_BITS)
        block_target = min(job.template.target, SCRYPT.share_target(PLAIN_DIFF))
        nonce = find_nonce_at(job, self.extranonce(miner), {version: lambda value: value <= block_target})
        self.assertAccepted(miner.submit(submit_params(job, nonce, f"{ROLLED_BITS:08x}")))
        (candidate,) = self.harness.pool.found
        header = job.header(self.extranonce(miner), version, CURTIME, nonce)
        self.assertEqual(candidate.payload[:80], header)
        self.assertEqual(candidate.block_hash, block_hash(header))
        self.assertEqual(int.from_bytes(header[:4], "little"), 0x2ABCE000)


class SuggestDifficultyTests(_Case):
    """mining.suggest_difficulty: up and down within the port's limits."""

    def suggest(self, miner: Connection, difficulty: Any) -> list[dict[str, Any]]:
        return miner.request("mining.suggest_difficulty", [difficulty])

    def test_up_on_a_fixed_port(self) -> None:
        """The reply, then set_difficulty; the next job goes out under it."""
        miner = self.harness.miner(WORKER)
        messages = self.suggest(miner, 1024)
        self.assertEqual(
            messages, [{"id": messages[0]["id"], "result": True, "error": None}, self.set_difficulty(1024)]
        )
        job = self.harness.new_job(mainnet_template(coinbasevalue=5000010000), force=True)
        miner.read()
        self.assertEqual(miner.session.sent[job.job_id], 1024)

    def test_down_on_a_fixed_port_stops_at_the_port_difficulty(self) -> None:
        """Down again, but never below the port's difficulty; no set_difficulty when nothing changes."""
        miner = self.harness.miner(WORKER)
        self.suggest(miner, 1024)
        self.assertEqual(self.suggest(miner, 2)[1:], [self.set_difficulty(2)])
        self.assertEqual(self.suggest(miner, PLAIN_DIFF / 10)[1:], [self.set_difficulty(PLAIN_DIFF)])
        self.assertEqual(len(self.suggest(miner, PLAIN_DIFF / 100)), 1)
        self.assertEqual(miner.session.difficulty, PLAIN_DIFF)

    def test_vardiff_port_limits(self) -> None:
        """On a vardiff port: clamped to [min_diff, max_diff], up and down."""
        miner = self.harness.miner(WORKER, port=VARDIFF_PORT)
        self.assertEqual(self.suggest(miner, 10**9)[1:], [self.set_difficulty(VARDIFF.max_diff)])
        self.assertEqual(self.suggest(miner, 3.5)[1:], [self.set_difficulty(3.5)])
        self.assertEqual(self.suggest(miner, 1e-12)[1:], [self.set_difficulty(VARDIFF.min_diff)])

    def test_before_subscribe(self) -> None:
        """Before subscribing it is the starting difficulty, sent with the subscription."""
        miner = self.harness.connect(VARDIFF_PORT)
        self.assertEqual(len(self.suggest(miner, 64)), 1)
        messages = miner.request("mining.subscribe", ["bitaxe/2.0"])
        self.assertEqual(messages[1], self.set_difficulty(64))
        self.assertEqual(miner.session.sent[self.job.job_id], 64)

    def test_vardiff_goes_on_from_the_suggestion(self) -> None:
        """Vardiff keeps working, counting its retarget time from the suggestion."""
        miner = self.harness.miner(WORKER, port=VARDIFF_PORT)
        self.clock.advance(60)
        self.suggest(miner, 64)
        self.clock.advance(89)
        self.server.retarget_quiet()
        self.assertEqual(miner.read(), [])
        self.clock.advance(2)
        self.server.retarget_quiet()
        (message,) = miner.read()
        self.assertLess(message["params"][0], 64)

    def test_floor_applies(self) -> None:
        """A suggestion under the miner's minimum-difficulty gets the floor."""
        miner = self.harness.miner(WORKER, port=VARDIFF_PORT)
        miner.request("mining.configure", [["minimum-difficulty"], {"minimum-difficulty.value": 8}])
        self.assertEqual(len(self.suggest(miner, 1)), 1)
        self.assertEqual(miner.session.difficulty, 8)

    def test_bad_params(self) -> None:
        """No number above 0: error 20; the difficulty stays."""
        miner = self.harness.miner(WORKER)
        for params in ([], [0], [-5], ["1024"], [None], [True], [[1]]):
            self.assertError(
                miner.request("mining.suggest_difficulty", params),
                20,
                "invalid params: expected [difficulty], a number > 0",
            )
        self.assertEqual(miner.session.difficulty, PLAIN_DIFF)


class PasswordDifficultyTests(_Case):
    """d=N in mining.authorize's password."""

    def authorize(self, miner: Connection, password: str) -> list[dict[str, Any]]:
        return miner.request("mining.authorize", [WORKER, password])

    def test_fixed_difficulty_and_no_vardiff(self) -> None:
        """d= on a vardiff port sets the difficulty (after the reply) and stops vardiff: fast
        shares and silence change nothing."""
        miner = self.harness.connect(VARDIFF_PORT)
        miner.subscribe()
        messages = self.authorize(miner, "x,d=0.0002")
        self.assertEqual(messages[0]["result"], True)
        self.assertEqual(messages[1:], [self.set_difficulty(0.0002)])
        self.assertIsNone(miner.session.vardiff)
        start = 0
        for _ in range(12):
            self.clock.advance(1)
            nonce = find_nonce_at(self.job, self.extranonce(miner), {TEMPLATE_VERSION: meets(0.0002)}, start)
            start = nonce + 1
            self.assertAccepted(miner.submit(submit_params(self.job, nonce)))
        self.clock.advance(1000)
        self.server.retarget_quiet()
        self.assertEqual(miner.read(), [])
        self.assertEqual(miner.session.difficulty, 0.0002)

    def test_clamped(self) -> None:
        """Clamped as suggest_difficulty is: max_diff on a vardiff port, the port's diff on a fixed one."""
        high = self.harness.connect(VARDIFF_PORT)
        high.subscribe()
        self.assertEqual(self.authorize(high, "d=4096")[1:], [self.set_difficulty(VARDIFF.max_diff)])
        low = self.harness.connect(PLAIN_PORT)
        low.subscribe()
        self.assertEqual(len(self.authorize(low, "d=0.00000001")), 1)
        self.assertEqual(low.session.difficulty, PLAIN_DIFF)
        fixed_high = self.harness.connect(PLAIN_PORT)
        fixed_high.subscribe()
        self.assertEqual(self.authorize(fixed_high, "d=4096,foo=bar")[1:], [self.set_difficulty(4096)])

    def test_before_subscribe(self) -> None:
        """Authorized before subscribing: d= is the starting difficulty."""
        miner = self.harness.connect(VARDIFF_PORT)
        self.assertEqual(len(self.authorize(miner, "d=16")), 1)
        self.assertEqual(miner.request("mining.subscribe", [])[1], self.set_difficulty(16))

    def test_unreadable_value_ignored_and_logged(self) -> None:
        """d=abc: still authorized, difficulty and vardiff as without it, an info line saying so."""
        miner = self.harness.connect(VARDIFF_PORT)
        miner.subscribe()
        with capturedLogs() as events:
            messages = self.authorize(miner, "d=abc")
        self.assertEqual(messages, [{"id": messages[0]["id"], "result": True, "error": None}])
        self.assertEqual(miner.session.difficulty, VARDIFF_PORT.diff)
        self.assertIsNotNone(miner.session.vardiff)
        (event,) = events
        self.assertEqual(event["log_level"].name, "info")
        self.assertEqual((event["options"], event["worker"]), ("'d=abc'", WORKER))

    def test_unreadable_value_logged_safely(self) -> None:
        """A password holding an unpaired surrogate is logged escaped: the log writer takes it."""
        miner = self.harness.connect(VARDIFF_PORT)
        miner.subscribe()
        with capturedLogs() as events:
            self.authorize(miner, "d=\ud800")
        (event,) = events
        self.assertEqual(event["options"], "'d=\\ud800'")
        formatEvent(event).encode("utf-8")  # would raise on a raw surrogate

    def test_plain_passwords_change_nothing(self) -> None:
        """x, empty and other options: the port's difficulty and vardiff as ever."""
        for password in ("x", "", "foo=bar", "password"):
            miner = self.harness.connect(VARDIFF_PORT)
            miner.subscribe()
            self.assertEqual(len(self.authorize(miner, password)), 1)
            self.assertIsNotNone(miner.session.vardiff)
            self.assertEqual(miner.session.difficulty, VARDIFF_PORT.diff)

    def test_refused_worker_difficulty_ignored(self) -> None:
        """A refused worker's d= changes nothing."""
        miner = self.harness.connect(VARDIFF_PORT)
        miner.subscribe()
        (reply,) = miner.request("mining.authorize", ["not-an-address", "d=64"])
        self.assertFalse(reply["result"])
        self.assertEqual(miner.session.difficulty, VARDIFF_PORT.diff)
        self.assertIsNotNone(miner.session.vardiff)


class ReplyShapeTests(_Case):
    """Every reply to every method carries id, result and error: ASIC firmware reads all three."""

    REQUESTS: dict[str, list[list[Any]]] = {
        "mining.configure": [FULL_REQUEST, [], [["version-rolling"], {"version-rolling.mask": 5}], [[], {}]],
        "mining.subscribe": [["cgminer/4.10"], [], [None, "abcd"]],
        "mining.authorize": [[WORKER, "x"], [WORKER, "d=512"], [WORKER, "d=x"], ["bad name", "x"], [], [5]],
        "mining.suggest_difficulty": [[512], [0], [], ["x"]],
        "mining.extranonce.subscribe": [[], [1]],
        "mining.get_transactions": [["1"], []],
        "mining.submit": [
            [WORKER, "1", "00000000", "00000000", "00000000", "0abce000"],
            [WORKER, "1", "00000000", f"{CURTIME:08x}", "00000000", "e0000000"],
            [WORKER, "1", "00000000", f"{CURTIME:08x}", "00000000", 7],
            [],
        ],
        "mining.suggest_target": [["00ff"]],  # unknown to the pool
    }

    def test_every_method(self) -> None:
        """Each request, good or bad, gets exactly one reply with its id and all three keys."""
        self.assertLessEqual(set(self.server.methods.methods), set(self.REQUESTS))
        request_id = 100
        for port in PORTS:
            miner = self.harness.connect(port)
            for method, params_list in self.REQUESTS.items():
                for params in params_list:
                    request_id += 1
                    messages = miner.request(method, params, request_id=request_id)
                    replies = [m for m in messages if "method" not in m]
                    self.assertEqual(len(replies), 1, (method, params, messages))
                    (reply,) = replies
                    self.assertEqual(set(reply), {"id", "result", "error"}, (method, params))
                    self.assertEqual(reply["id"], request_id)
                    self.assertTrue(reply["error"] is None or reply["result"] in (None, False), reply)
        self.assertEqual(self.server.pipeline.in_flight, 0)

    def test_version_bits_share_reply(self) -> None:
        """The accepted reply to a rolled share (written without json.dumps) has the three keys too."""
        miner = self.configured()
        version = rolled(TEMPLATE_VERSION, POOL_MASK, ROLLED_BITS)
        nonce = find_nonce_at(self.job, self.extranonce(miner), {version: meets(PLAIN_DIFF)})
        messages = miner.request("mining.submit", submit_params(self.job, nonce, "0abce000"), request_id="v1")
        self.assertEqual(messages, [{"id": "v1", "result": True, "error": None}])


class PoolMaskTests(_Case):
    """A pool with a narrower mask: the miner gets the intersection and is held to it."""

    version_mask = 0x00FFE000

    def test_narrow_pool_mask(self) -> None:
        miner = self.configured()
        self.assertEqual(miner.session.version_mask, 0x00FFE000)
        self.assertError(
            miner.submit(submit_params(self.job, 1, "0abce000")), 20, "version bits outside the mask 00ffe000"
        )
        version = rolled(TEMPLATE_VERSION, 0x00FFE000, 0x00BCE000)
        nonce = find_nonce_at(self.job, self.extranonce(miner), {version: meets(PLAIN_DIFF)})
        self.assertAccepted(miner.submit(submit_params(self.job, nonce, "00bce000")))
        self.assertEqual(self.harness.hashing.checked[-1].version, version)


class RollingOffTests(_Case):
    """version_mask: 00000000 turns version rolling off for the pool."""

    version_mask = 0

    def test_rolling_off(self) -> None:
        miner = self.harness.connect()
        (reply,) = miner.request("mining.configure", FULL_REQUEST)
        self.assertEqual(
            reply["result"],
            {"version-rolling": False, "minimum-difficulty": True, "subscribe-extranonce": True},
        )
        self.assertEqual(miner.session.version_mask, 0)
