"""The Stratum server over StringTransports on a task.Clock: every method,
every refusal and every malformed input, with the real share check."""

from __future__ import annotations

import hashlib
import random
import sys
from typing import Any

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from nomp.candidate import BlockCandidate
from nomp.chain.encoding import block_hash, txid
from nomp.chain.jobs import Job
from nomp.config import NetworkConfig, PortConfig, VardiffConfig
from nomp.stratum.difficulty import QUIET_STEPS
from nomp.stratum.extranonce import Extranonce1Allocator
from nomp.stratum.methods import SUBSCRIPTION_ID
from nomp.stratum.protocol import (
    MALFORMED_BURST,
    MALFORMED_RATE,
    MAX_BACKLOG,
    MAX_BRACKETS,
    MAX_LINE,
    StratumProtocol,
)
from nomp.stratum.shares import DIFFICULTY_TOLERANCE
from nomp.stratum.vardiff import tidy
from test.fakes import (
    REGTEST_ADDRESS,
    SCRYPT,
    Connection,
    RecordingTransport,
    StratumHarness,
    find_nonce,
    mainnet_template,
    pool_config,
    pow_value,
    regtest_template,
    submit_params,
)
from test.test_chain import template_reply

CURTIME = template_reply()["curtime"]
NOW = CURTIME + 30  # the clock: just after the template was made
PREVHASH = template_reply()["previousblockhash"]

PLAIN_DIFF = 0.0001  # about one hash in seven is a share: quick to grind
PLAIN_PORT = PortConfig(listen="tcp:3333:interface=127.0.0.1", diff=PLAIN_DIFF)
VARDIFF = VardiffConfig(min_diff=0.0001, max_diff=1000, target_time=15, retarget_time=90, variance_percent=30)
VARDIFF_PORT = PortConfig(listen="tcp:3334:interface=127.0.0.1", diff=0.001, vardiff=VARDIFF)
HIGH_PORT = PortConfig(listen="tcp:3335:interface=127.0.0.1", diff=1.0)
PORTS = (PLAIN_PORT, VARDIFF_PORT, HIGH_PORT)

WORKER = REGTEST_ADDRESS + ".rig1"
OTHER_WORKER = "mpQG9GRvXTwQJ7coC7STH5gL936CkcAb6Y"  # regtest P2PKH
EXTRANONCE2 = bytes.fromhex("abcdef12")
# Valid addresses of Litecoin mainnet (checked in test_mainnet_addresses_are_real).
MAINNET_LEGACY = "LboLesvYgFbLZtJeq7YWQBmsvVG6Gu9ssn"
MAINNET_BECH32 = "ltc1qkhfxu8uja3fwpm2se2ch29xsccw9gft8d99kkm"
LITECOIN_MAINNET = NetworkConfig(
    chain="main",
    pubkey_address_prefix=48,
    script_address_prefixes=(50, 5),
    bech32_hrp="ltc",
    mweb_hrp="ltcmweb",
)
INVALID_PARAMS_SUBMIT = "invalid params: expected worker, job id, extranonce2, ntime, nonce"
INVALID_PARAMS_AUTHORIZE = "invalid params: expected username, password"
_ANY = object()


def meets(difficulty: float) -> Any:
    """A PoW test: the value is a share of ``difficulty``."""
    target = SCRYPT.share_target(difficulty)
    return lambda value: value <= target


def misses(difficulty: float) -> Any:
    """A PoW test: the value is not a share of ``difficulty``, not even with the
    pool's tolerance for miners' rounding."""
    target = SCRYPT.share_target(difficulty * DIFFICULTY_TOLERANCE)
    return lambda value: value > target


class _StratumCase(SynchronousTestCase):
    """A pool with three ports (plain, vardiff, high difficulty) and a
    mainnet-difficulty job, at NOW."""

    usernames = "address"
    with_job = True

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.harness = StratumHarness(pool_config(ports=PORTS, usernames=self.usernames), self.clock)
        self.server = self.harness.server
        self.recorder = self.harness.recorder
        self.pool = self.harness.pool
        if self.with_job:
            self.job = self.harness.new_job(mainnet_template())

    def assertError(
        self, messages: list[dict[str, Any]], code: int, text: str, request_id: object = _ANY
    ) -> None:
        """``messages`` is one error reply with ``code`` and ``text``."""
        self.assertEqual(len(messages), 1, messages)
        (reply,) = messages
        self.assertEqual(reply["error"], [code, text, None])
        self.assertIsNone(reply["result"])
        self.assertEqual(set(reply), {"id", "result", "error"})
        if request_id is not _ANY:
            self.assertEqual(reply["id"], request_id)

    def assertAccepted(self, messages: list[dict[str, Any]]) -> None:
        """The last of ``messages`` is ``result: true``."""
        self.assertTrue(messages, "no reply")
        self.assertEqual((messages[-1]["result"], messages[-1]["error"]), (True, None), messages)

    def share(
        self,
        miner: Connection,
        accept: Any,
        job: Job | None = None,
        extranonce2: bytes = EXTRANONCE2,
        ntime: int | None = None,
        worker: str = WORKER,
        start: int = 0,
    ) -> list[Any]:
        """Submit params of a share of ``miner`` whose PoW value ``accept`` takes."""
        job = job if job is not None else self.job
        assert miner.session.extranonce1 is not None
        extranonce = miner.session.extranonce1 + extranonce2
        nonce = find_nonce(job, extranonce, accept, ntime, start=start)
        return submit_params(worker, job, extranonce2, nonce, ntime)


class SubscribeTests(_StratumCase):
    """mining.subscribe: the reply, the first difficulty and job, extranonce1."""

    def test_reply_shape(self) -> None:
        """The reply lists both subscriptions, an 8-hex extranonce1 and extranonce2 size 4."""
        miner = self.harness.connect()
        messages = miner.request("mining.subscribe", ["cpuminer/2.5.1"], request_id=7)
        self.assertEqual(len(messages), 3)
        reply = messages[0]
        self.assertEqual((reply["id"], reply["error"]), (7, None))
        subscriptions, extranonce1, extranonce2_size = reply["result"]
        self.assertEqual(
            subscriptions,
            [["mining.set_difficulty", SUBSCRIPTION_ID], ["mining.notify", SUBSCRIPTION_ID]],
        )
        self.assertRegex(extranonce1, r"^[0-9a-f]{8}$")
        self.assertEqual(extranonce2_size, 4)
        self.assertEqual(miner.session.extranonce1, bytes.fromhex(extranonce1))
        self.assertEqual(miner.session.user_agent, "cpuminer/2.5.1")

    def test_difficulty_then_notify(self) -> None:
        """After the reply come set_difficulty with the port's diff and the current job, clean."""
        miner = self.harness.connect()
        _, difficulty, notify = miner.request("mining.subscribe")
        self.assertEqual(difficulty, {"id": None, "method": "mining.set_difficulty", "params": [PLAIN_DIFF]})
        self.assertEqual((notify["id"], notify["method"]), (None, "mining.notify"))
        self.assertEqual(notify["params"], self.job.notify_params(True))
        self.assertIs(notify["params"][8], True)

    def test_notify_params_in_nomp_order(self) -> None:
        """mining.notify carries job id, word-swapped prevhash, coinb1, coinb2, branch, version,
        nbits, ntime, clean, each encoded as NOMP does."""
        miner = self.harness.connect()
        params = miner.request("mining.subscribe")[2]["params"]
        self.assertEqual(len(params), 9)
        job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, clean = params
        self.assertEqual(job_id, self.job.job_id)
        # NOMP: each 4-byte word of the RPC hash byte-swapped, then all 32 bytes reversed,
        # which is the RPC hash's eight words in reverse order.
        words = [PREVHASH[i : i + 8] for i in range(0, 64, 8)]
        self.assertEqual(prevhash, "".join(reversed(words)))
        self.assertEqual(coinb1, self.job.coinbase.coinb1.hex())
        self.assertEqual(coinb2, self.job.coinbase.coinb2.hex())
        self.assertTrue(coinb1.startswith("02000000"))  # transaction version 2
        self.assertIn(b"/nomp/".hex(), coinb2)
        # Two transactions (txids 11.. and 22..): the branch is the first txid, then
        # the hash of the second paired with itself.
        second = hashlib.sha256(hashlib.sha256(bytes.fromhex("22" * 64)).digest()).hexdigest()
        self.assertEqual(branch, ["11" * 32, second])
        self.assertEqual(version, "20000000")
        self.assertEqual(nbits, "1b00ffff")
        self.assertEqual(ntime, f"{CURTIME:08x}")
        self.assertIs(clean, True)

    def test_distinct_extranonce1(self) -> None:
        """Every connection gets its own extranonce1."""
        miners = [self.harness.connect() for _ in range(50)]
        extranonces = {miner.subscribe() for miner in miners}
        self.assertEqual(len(extranonces), 50)
        self.assertTrue(all(len(e) == 4 for e in extranonces))

    def test_extranonce1_released_on_disconnect(self) -> None:
        """A closed connection gives its extranonce1 back; one never subscribed gives nothing."""
        released: list[bytes] = []

        class Allocator(Extranonce1Allocator):
            def release(self, extranonce1: bytes) -> None:
                released.append(extranonce1)
                super().release(extranonce1)

        self.server.subscriptions.extranonces = Allocator(random.Random(5))
        miner, idle = self.harness.connect(), self.harness.connect()
        extranonce1 = miner.subscribe()
        self.assertEqual(len(self.server.connections), 2)
        miner.lose()
        idle.lose()
        self.assertEqual(released, [extranonce1])
        self.assertEqual(self.server.subscriptions.extranonces._used, set())
        self.assertEqual(set(self.server.connections), set())

    def test_extranonce1_reused_only_after_release(self) -> None:
        """The allocator skips values in use and hands a released one out again."""
        allocator = Extranonce1Allocator(random.Random(1))
        allocator._next = 2**32 - 1
        first = allocator.take()
        self.assertEqual(first, b"\xff\xff\xff\xff")
        allocator._next = 2**32 - 1  # wrapped all the way round
        self.assertEqual(allocator.take(), b"\x00\x00\x00\x00")
        allocator.release(first)
        allocator._next = 2**32 - 1
        self.assertEqual(allocator.take(), first)

    def test_subscribe_twice(self) -> None:
        """A second subscribe keeps the extranonce1 and sends difficulty and job again."""
        miner = self.harness.connect()
        first = miner.subscribe()
        messages = miner.request("mining.subscribe")
        self.assertEqual(messages[0]["result"][1], first.hex())
        self.assertEqual([m.get("method") for m in messages[1:]], ["mining.set_difficulty", "mining.notify"])
        self.assertEqual(miner.session.extranonce1, first)

    def test_params_are_optional(self) -> None:
        """No params, no params key or non-string params all subscribe; only a string is a user agent."""
        for params in ([], [42, None], [{"agent": 1}]):
            miner = self.harness.connect()
            messages = miner.request("mining.subscribe", params)
            self.assertIsNone(messages[0]["error"], params)
            self.assertEqual(miner.session.user_agent, "")
        miner = self.harness.connect()
        miner.send(b'{"id": 1, "method": "mining.subscribe"}\n')
        self.assertEqual(len(miner.read()), 3)
        miner = self.harness.connect()
        miner.request("mining.subscribe", ["a" * 500, "session-id"])
        self.assertEqual(miner.session.user_agent, "a" * 128)


class SubscribeBeforeJobTests(_StratumCase):
    """A miner may subscribe before the pool has its first job."""

    with_job = False

    def test_no_registry_yet(self) -> None:
        """Before the pool has a registry: reply and difficulty, no notify; the job follows later."""
        self.pool.registry = None
        miner = self.harness.connect()
        messages = miner.request("mining.subscribe")
        self.assertEqual([m.get("method") for m in messages], [None, "mining.set_difficulty"])
        job = self.harness.new_job(mainnet_template())
        (notify,) = miner.read()
        self.assertEqual(notify["method"], "mining.notify")
        self.assertEqual(notify["params"], job.notify_params(True))

    def test_registry_without_job(self) -> None:
        """A registry with no current job sends no notify either."""
        miner = self.harness.connect()
        messages = miner.request("mining.subscribe")
        self.assertEqual(len(messages), 2)
        job = self.harness.new_job(mainnet_template())
        self.assertEqual([m["params"][0] for m in miner.read()], [job.job_id])


class AuthorizeTests(_StratumCase):
    """mining.authorize: usernames are addresses of the pool's network."""

    def assertRefused(self, name: str, reason: str) -> None:
        """Authorizing ``name`` gets result false, code 24 and a reason containing ``reason``."""
        miner = self.harness.connect()
        reply = miner.authorize(name)
        self.assertIs(reply["result"], False, name)
        code, message, traceback = reply["error"]
        self.assertEqual(code, 24, name)
        self.assertIn(reason, message, name)
        self.assertIsNone(traceback)
        self.assertEqual(miner.session.workers, {})
        self.assertFalse(miner.closing)

    def test_address(self) -> None:
        """A regtest address is authorized with result true and error null."""
        miner = self.harness.connect()
        reply = miner.request("mining.authorize", [REGTEST_ADDRESS, "secret"], request_id="a1")
        self.assertEqual(reply, [{"id": "a1", "result": True, "error": None}])
        self.assertEqual(miner.session.workers, {REGTEST_ADDRESS: "secret"})

    def test_worker_limit(self) -> None:
        """One connection may authorize at most 64 names; the same name again always passes."""
        miner = self.harness.connect()
        for n in range(64):
            self.assertIs(miner.authorize(f"{REGTEST_ADDRESS}.w{n}")["result"], True)
        self.assertIs(miner.authorize(f"{REGTEST_ADDRESS}.w0")["result"], True)
        reply = miner.authorize(f"{REGTEST_ADDRESS}.w64")
        self.assertEqual(reply["error"][:2], [24, "at most 64 workers per connection"])
        self.assertEqual(len(miner.session.workers), 64)

    def test_address_with_worker(self) -> None:
        """address.worker names are authorized, for bech32 and base58 addresses alike."""
        miner = self.harness.connect()
        for name in (WORKER, OTHER_WORKER + ".rig-2", REGTEST_ADDRESS + ".a.b@c+d_e"):
            self.assertEqual(miner.authorize(name)["result"], True, name)
        self.assertEqual(len(miner.session.workers), 3)

    def test_password_optional(self) -> None:
        """A missing or non-string password is taken as empty."""
        miner = self.harness.connect()
        self.assertEqual(miner.request("mining.authorize", [WORKER])[0]["result"], True)
        self.assertEqual(miner.request("mining.authorize", [OTHER_WORKER, 5])[0]["result"], True)
        self.assertEqual(miner.session.workers, {WORKER: "", OTHER_WORKER: ""})

    def test_invalid_address(self) -> None:
        """An address with a wrong checksum is refused with code 24."""
        self.assertRefused(REGTEST_ADDRESS[:-1] + "m", "bad checksum")
        self.assertRefused("rltc1qqqqq", "is not a litecoin-regtest address")
        self.assertRefused("miner42", "is not a litecoin-regtest address")

    def test_mainnet_addresses_are_real(self) -> None:
        """The mainnet addresses used below are valid Litecoin mainnet addresses."""
        from nomp.chain.address import decode_address

        self.assertEqual(decode_address(MAINNET_LEGACY, LITECOIN_MAINNET).kind, "p2pkh")
        self.assertEqual(decode_address(MAINNET_BECH32, LITECOIN_MAINNET).kind, "witness_v0_keyhash")

    def test_mainnet_address(self) -> None:
        """Addresses of another network (Litecoin mainnet) are refused with code 24."""
        self.assertRefused(MAINNET_LEGACY, "version byte 48 is not this network's")
        self.assertRefused(MAINNET_BECH32 + ".rig1", "prefix 'ltc' is not this network's")

    def test_mweb_address(self) -> None:
        """An MWEB address cannot be paid from a coinbase: code 24."""
        self.assertRefused("tmweb1qq" + "x" * 60, "MWEB")
        self.assertRefused("tmweb1qqabc.worker", "MWEB")

    def test_malformed_names(self) -> None:
        """Names with ':', spaces, other characters, nothing, or over 128 characters are refused."""
        for name in (
            REGTEST_ADDRESS + ":rig",
            REGTEST_ADDRESS + " rig",
            " " + REGTEST_ADDRESS,
            REGTEST_ADDRESS + "\n",
            REGTEST_ADDRESS + ".ríg",
            "",
            REGTEST_ADDRESS + "." + "w" * (128 - len(REGTEST_ADDRESS)),
        ):
            self.assertRefused(name, "invalid worker name")

    def test_longest_name(self) -> None:
        """A name of exactly 128 characters is authorized."""
        name = REGTEST_ADDRESS + "." + "w" * (127 - len(REGTEST_ADDRESS))
        self.assertEqual(len(name), 128)
        self.assertEqual(self.harness.connect().authorize(name)["result"], True)

    def test_non_string_name(self) -> None:
        """A missing or non-string username is error 20, not a refusal."""
        for params in ([], [42], [None], [["a"]], [{"name": WORKER}], [True, "x"]):
            miner = self.harness.connect()
            self.assertError(
                miner.request("mining.authorize", params, request_id=9), 20, INVALID_PARAMS_AUTHORIZE, 9
            )
            self.assertFalse(miner.closing)

    def test_refused_name_cannot_submit(self) -> None:
        """A name that was refused is not authorized for submits."""
        miner = self.harness.connect()
        miner.subscribe()
        miner.authorize(MAINNET_LEGACY)
        params = self.share(miner, meets(PLAIN_DIFF), worker=MAINNET_LEGACY)
        self.assertError(miner.submit(params), 24, "unauthorized worker")


class AnyUsernameTests(_StratumCase):
    """With ``usernames: any`` every well-formed name is authorized."""

    usernames = "any"

    def test_any_name(self) -> None:
        """Names that are no address of the network are authorized."""
        miner = self.harness.connect()
        for name in ("alice", "bob.rig1", MAINNET_BECH32, "tmweb1qqabc", "x" * 128):
            self.assertEqual(miner.authorize(name)["result"], True, name)

    def test_malformed_still_refused(self) -> None:
        """Names with ':' or spaces or over 128 characters are still refused."""
        for name in ("a:b", "a b", "x" * 129, ""):
            reply = self.harness.connect().authorize(name)
            self.assertIs(reply["result"], False)
            self.assertEqual(reply["error"][0], 24)


class SubmitTests(_StratumCase):
    """mining.submit: accepted shares and each refusal, with NOMP's codes and texts."""

    def setUp(self) -> None:
        super().setUp()
        self.miner = self.harness.miner(WORKER)
        assert self.miner.session.extranonce1 is not None
        self.extranonce1 = self.miner.session.extranonce1

    def test_accepted(self) -> None:
        """A share meeting the difficulty gets result true and is recorded with the worker and difficulty."""
        params = self.share(self.miner, meets(PLAIN_DIFF))
        messages = self.miner.request("mining.submit", params, request_id=77)
        self.assertEqual(messages, [{"id": 77, "result": True, "error": None}])
        self.assertEqual(self.recorder.valid, [(WORKER, PLAIN_DIFF)])
        self.assertEqual(self.recorder.invalid, [])
        self.assertEqual(self.miner.session.valid_shares, 1)
        (work,) = self.harness.hashing.checked
        self.assertEqual(work.extranonce, self.extranonce1 + EXTRANONCE2)
        self.assertEqual((work.ntime, work.nonce), (int(params[3], 16), int(params[4], 16)))
        self.assertEqual(self.pool.found, [])
        self.assertEqual(self.server.pipeline.in_flight, 0)

    def test_string_id_echoed(self) -> None:
        """The accepted reply echoes a string id."""
        params = self.share(self.miner, meets(PLAIN_DIFF))
        self.assertEqual(
            self.miner.request("mining.submit", params, request_id="s-1"),
            [{"id": "s-1", "result": True, "error": None}],
        )

    def test_extra_params_ignored(self) -> None:
        """A sixth param of zero version bits (some firmware always sends it) is the job's version."""
        params = self.share(self.miner, meets(PLAIN_DIFF))
        self.assertAccepted(self.miner.submit([*params, "00000000"]))

    def test_unauthorized_worker(self) -> None:
        """A worker never authorized gets 24 and no invalid share is recorded."""
        miner = self.harness.connect()
        miner.subscribe()
        params = self.share(miner, meets(PLAIN_DIFF))
        self.assertError(miner.request("mining.submit", params, request_id=3), 24, "unauthorized worker", 3)
        self.assertEqual(self.recorder.invalid, [])
        self.assertEqual(self.recorder.valid, [])
        self.assertEqual(miner.session.invalid_shares, 1)
        self.assertEqual(self.harness.hashing.checked, [])

    def test_worker_of_another_connection(self) -> None:
        """A name authorized on another connection only is unauthorized on this one."""
        self.harness.miner(OTHER_WORKER)
        params = self.share(self.miner, meets(PLAIN_DIFF), worker=OTHER_WORKER)
        self.assertError(self.miner.submit(params), 24, "unauthorized worker")
        self.assertEqual(self.recorder.invalid, [])

    def test_not_subscribed(self) -> None:
        """An authorized worker that never subscribed gets 25; as in NOMP, it is not counted."""
        miner = self.harness.connect()
        miner.authorize(WORKER)
        params = submit_params(WORKER, self.job, EXTRANONCE2, 1)
        self.assertError(miner.submit(params), 25, "not subscribed")
        self.assertEqual(self.recorder.invalid, [])

    def test_extranonce2_size(self) -> None:
        """An extranonce2 that is not 8 hex digits is 20 'incorrect size of extranonce2'."""
        params = self.share(self.miner, meets(PLAIN_DIFF))
        for extranonce2 in ("abcdef1", "abcdef123", "", "zzzzzzzz", "0xabcdef", "abcdef1 ", "٠١٢٣٤٥٦٧"):
            bad = [params[0], params[1], extranonce2, params[3], params[4]]
            self.assertError(self.miner.submit(bad), 20, "incorrect size of extranonce2")
        self.assertEqual(self.harness.hashing.checked, [])

    def test_unknown_job(self) -> None:
        """A job id the pool never gave is 21 'job not found'."""
        params = self.share(self.miner, meets(PLAIN_DIFF))
        for job_id in ("ffff", "", self.job.job_id + " "):
            self.assertError(self.miner.submit([params[0], job_id, *params[2:]]), 21, "job not found")

    def test_job_dropped_by_new_block(self) -> None:
        """A share of a job from before a new block is 21 'job not found'."""
        params = self.share(self.miner, meets(PLAIN_DIFF))
        self.harness.new_job(mainnet_template(previousblockhash="bb" * 32, height=123))
        self.miner.read()
        self.assertError(self.miner.submit(params), 21, "job not found")
        self.assertEqual(self.recorder.invalid, [(WORKER, PLAIN_DIFF)])

    def test_ntime_size(self) -> None:
        """An ntime that is not 8 hex digits is 20 'incorrect size of ntime'."""
        params = self.share(self.miner, meets(PLAIN_DIFF))
        for ntime in ("6b011e6", "6b011e611", "", "6b011eZZ", "+6b011e6"):
            bad = [*params[:3], ntime, params[4]]
            self.assertError(self.miner.submit(bad), 20, "incorrect size of ntime")

    def test_ntime_before_mintime(self) -> None:
        """An ntime before the template's mintime is 20 'ntime out of range'."""
        params = self.share(self.miner, meets(PLAIN_DIFF), ntime=CURTIME - 1)
        self.assertError(self.miner.submit(params), 20, "ntime out of range")

    def test_ntime_from_mintime(self) -> None:
        """An ntime between the template's mintime and curtime is accepted."""
        job = self.harness.new_job(mainnet_template(mintime=CURTIME - 600), force=True)
        self.miner.read()
        params = self.share(self.miner, meets(PLAIN_DIFF), job=job, ntime=CURTIME - 600)
        self.assertAccepted(self.miner.submit(params))

    def test_ntime_too_far_ahead(self) -> None:
        """An ntime more than 7200 s after the clock is out of range; exactly 7200 s is accepted."""
        too_far = self.share(self.miner, meets(PLAIN_DIFF), ntime=NOW + 7201)
        self.assertError(self.miner.submit(too_far), 20, "ntime out of range")
        limit = self.share(self.miner, meets(PLAIN_DIFF), ntime=NOW + 7200)
        self.assertAccepted(self.miner.submit(limit))

    def test_nonce_size(self) -> None:
        """A nonce that is not 8 hex digits is 20 'incorrect size of nonce'."""
        params = self.share(self.miner, meets(PLAIN_DIFF))
        for nonce in ("0000001", "000000001", "", "0000000g", "-0000001"):
            self.assertError(self.miner.submit([*params[:4], nonce]), 20, "incorrect size of nonce")

    def test_checks_in_nomp_order(self) -> None:
        """With everything wrong, the first problem in NOMP's order is reported."""
        bad = [WORKER, "ffff", "x", "y", "z"]
        self.assertError(self.miner.submit(bad), 20, "incorrect size of extranonce2")
        bad[2] = "00000000"
        self.assertError(self.miner.submit(bad), 21, "job not found")
        bad[1] = self.job.job_id
        self.assertError(self.miner.submit(bad), 20, "incorrect size of ntime")
        bad[3] = f"{CURTIME - 1:08x}"
        self.assertError(self.miner.submit(bad), 20, "ntime out of range")
        bad[3] = f"{CURTIME:08x}"
        self.assertError(self.miner.submit(bad), 20, "incorrect size of nonce")

    def test_duplicate(self) -> None:
        """The same share twice is 22 'duplicate share', also with other hex letter case."""
        params = self.share(self.miner, meets(PLAIN_DIFF))
        self.assertAccepted(self.miner.submit(params))
        self.assertError(self.miner.submit(params), 22, "duplicate share")
        upper = [params[0], params[1], *(p.upper() for p in params[2:])]
        self.assertNotEqual(upper, params)
        self.assertError(self.miner.submit(upper), 22, "duplicate share")
        self.assertEqual(self.recorder.valid, [(WORKER, PLAIN_DIFF)])
        self.assertEqual(self.recorder.invalid, [(WORKER, PLAIN_DIFF)] * 2)
        self.assertEqual(len(self.harness.hashing.checked), 1)

    def test_duplicate_of_refused_share(self) -> None:
        """A share refused as low difficulty is a duplicate when sent again."""
        params = self.share(self.miner, misses(PLAIN_DIFF))
        self.assertEqual(self.miner.submit(params)[0]["error"][0], 23)
        self.assertError(self.miner.submit(params), 22, "duplicate share")

    def test_same_nonce_other_extranonce2(self) -> None:
        """The same nonce with another extranonce2 is another share, not a duplicate."""
        params = self.share(self.miner, meets(PLAIN_DIFF))
        self.assertAccepted(self.miner.submit(params))
        other = self.share(self.miner, lambda _: True, extranonce2=bytes(4), start=int(params[4], 16))
        self.assertEqual(other[4], params[4])
        self.assertNotEqual(self.miner.submit(other)[0]["error"], [22, "duplicate share", None])

    def test_low_difficulty(self) -> None:
        """A share under the difficulty is 23 with the difficulty it reached; it is recorded invalid."""
        miner = self.harness.miner(OTHER_WORKER, port=HIGH_PORT)
        params = self.share(miner, misses(1.0), worker=OTHER_WORKER)
        assert miner.session.extranonce1 is not None
        value = pow_value(self.job, miner.session.extranonce1 + EXTRANONCE2, CURTIME, int(params[4], 16))
        reached = SCRYPT.difficulty_of(value)
        self.assertLess(reached, 0.99)
        self.assertError(miner.submit(params), 23, f"low difficulty share of {reached:.8g}")
        self.assertEqual(self.recorder.invalid, [(OTHER_WORKER, 1.0)])
        self.assertEqual(self.recorder.valid, [])
        self.assertEqual(miner.session.invalid_shares, 1)

    def test_invalid_shares_recorded_for_authorized_workers(self) -> None:
        """Refusals of an authorized worker are recorded invalid at its difficulty; others are not."""
        self.miner.submit(submit_params(WORKER, self.job, EXTRANONCE2, 1, ntime=0))
        self.miner.submit([WORKER, "ffff", "00000000", "00000000", "00000000"])
        self.miner.submit(submit_params("stranger", self.job, EXTRANONCE2, 1))
        self.miner.submit([WORKER, 1, 2, 3, 4])
        self.miner.submit([None, 1, 2, 3, 4])
        self.assertEqual(self.recorder.invalid, [(WORKER, PLAIN_DIFF)] * 3)
        self.assertEqual(self.miner.session.invalid_shares, 5)

    def test_block(self) -> None:
        """A share meeting the block target is accepted and handed to the pool as a block
        candidate: its hash, coinbase txid, height, reward, finder and the serialised block."""
        job = self.harness.new_job(regtest_template(previousblockhash="cc" * 32, height=123))
        self.miner.read()
        params = self.share(
            self.miner, lambda v: v <= min(job.template.target, SCRYPT.share_target(PLAIN_DIFF)), job=job
        )
        self.assertAccepted(self.miner.submit(params))
        extranonce = self.extranonce1 + EXTRANONCE2
        header = job.header(extranonce, job.template.version, CURTIME, int(params[4], 16))
        self.assertEqual(self.recorder.valid, [(WORKER, PLAIN_DIFF)])
        (candidate,) = self.pool.found
        self.assertEqual(
            candidate,
            BlockCandidate(
                block_hash=block_hash(header),
                coinbase_txid=txid(job.coinbase.serialize(extranonce)),
                height=123,
                worker=WORKER,
                reward=job.template.coinbase_value,
                solo=False,
                network_difficulty=SCRYPT.difficulty_of(job.template.target),
                found_at=NOW,
                payload=job.block(extranonce, header),
            ),
        )

    def test_block_below_share_difficulty(self) -> None:
        """A block is accepted even when it is under the miner's difficulty, credited at that difficulty."""
        job = self.harness.new_job(regtest_template(previousblockhash="cc" * 32, height=123))
        self.miner.read()
        block = job.template.target
        share = SCRYPT.share_target(PLAIN_DIFF)
        self.assertGreater(block, share)
        params = self.share(self.miner, lambda v: share < v <= block, job=job)
        self.assertAccepted(self.miner.submit(params))
        self.assertEqual(len(self.pool.found), 1)
        self.assertEqual(self.recorder.valid, [(WORKER, PLAIN_DIFF)])

    def test_non_block_not_submitted(self) -> None:
        """Shares of a mainnet-difficulty job are not blocks."""
        for start in (0, 1000, 2000):
            self.assertAccepted(self.miner.submit(self.share(self.miner, meets(PLAIN_DIFF), start=start)))
        self.assertEqual(self.pool.found, [])

    def test_recorder_full(self) -> None:
        """When the recorder is full the share gets 20 with a clear message; later shares count again."""
        self.recorder.full = True
        params = self.share(self.miner, meets(PLAIN_DIFF))
        self.assertError(self.miner.submit(params), 20, "the pool cannot record shares now")
        self.assertEqual(self.recorder.valid, [])
        self.assertEqual(self.miner.session.valid_shares, 0)
        self.recorder.full = False
        self.assertAccepted(self.miner.submit(self.share(self.miner, meets(PLAIN_DIFF), start=1000)))
        self.assertEqual(len(self.recorder.valid), 1)

    def test_recorder_full_block_still_submitted(self) -> None:
        """A block found while the recorder is full still goes to the daemon and is recorded."""
        job = self.harness.new_job(regtest_template(previousblockhash="cc" * 32, height=123))
        self.miner.read()
        self.recorder.full = True
        params = self.share(self.miner, lambda v: v <= job.template.target, job=job)
        self.assertError(self.miner.submit(params), 20, "the pool cannot record shares now")
        self.assertEqual(len(self.pool.found), 1)

    def test_hashing_fails(self) -> None:
        """A share check that fails is answered 20 'internal error' and logged."""
        self.harness.hashing.error = ValueError("share check failed (-1)")
        self.assertError(self.miner.submit(self.share(self.miner, meets(PLAIN_DIFF))), 20, "internal error")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.server.pipeline.in_flight, 0)
        self.assertEqual(self.recorder.valid, [])

    def test_bad_params(self) -> None:
        """Missing, too few or non-string params are 20 'invalid params'."""
        good = self.share(self.miner, meets(PLAIN_DIFF))
        for params in (
            [],
            good[:4],
            [WORKER, 1, 2, 3, 4],
            [*good[:4], 1234],
            [None, *good[1:]],
            [[WORKER], *good[1:]],
        ):
            self.assertError(
                self.miner.request("mining.submit", params, request_id=5), 20, INVALID_PARAMS_SUBMIT, 5
            )
        # Those naming an authorized worker count as its invalid shares.
        self.assertEqual(self.recorder.invalid, [(WORKER, PLAIN_DIFF)] * 3)
        self.assertFalse(self.miner.closing)

    def test_submit_before_pool_has_jobs(self) -> None:
        """A submit while the pool has no registry yet is 20."""
        self.pool.registry = None
        self.assertError(
            self.miner.submit([WORKER, "1", "00000000", "00000000", "00000000"]),
            20,
            "the pool has no job yet",
        )


class SubmitDifficultyTests(_StratumCase):
    """A share is judged by the difficulty its job was sent with."""

    def test_share_of_job_sent_before_raise(self) -> None:
        """After vardiff raised the difficulty, a share of the job sent before is accepted at the old one."""
        miner = self.harness.miner(WORKER, port=VARDIFF_PORT)
        low, high = VARDIFF_PORT.diff, tidy(VARDIFF_PORT.diff * 15)
        self.clock.advance(89)
        self.assertAccepted(miner.submit(self.share(miner, meets(low))))
        self.clock.advance(1)  # one second between shares: raise by 15
        between = self.share(
            miner, lambda v: SCRYPT.share_target(high) < v <= SCRYPT.share_target(low), start=5000
        )
        messages = miner.submit(between)
        self.assertEqual(messages[0], {"id": None, "method": "mining.set_difficulty", "params": [high]})
        self.assertAccepted(messages[1:])
        self.assertEqual(self.recorder.valid, [(WORKER, low), (WORKER, low)])
        # A share of the old job reaching the new difficulty is credited with it.
        self.assertAccepted(miner.submit(self.share(miner, meets(high), start=10000)))
        self.assertEqual(self.recorder.valid[-1], (WORKER, high))
        # The next job goes out under the new difficulty: the old one is not enough.
        job = self.harness.new_job(mainnet_template(coinbasevalue=5000010000), force=True)
        miner.read()
        params = self.share(
            miner, lambda v: SCRYPT.share_target(high) < v <= SCRYPT.share_target(low), job=job
        )
        self.assertEqual(miner.submit(params)[0]["error"][0], 23)
        self.assertEqual(self.recorder.invalid, [(WORKER, high)])


class OtherMethodsTests(_StratumCase):
    """The other methods, known and unknown."""

    def test_extranonce_subscribe(self) -> None:
        """mining.extranonce.subscribe is answered true."""
        miner = self.harness.connect()
        self.assertEqual(
            miner.request("mining.extranonce.subscribe", request_id=4),
            [{"id": 4, "result": True, "error": None}],
        )

    def test_get_transactions(self) -> None:
        """mining.get_transactions is error 20 saying it is not supported."""
        miner = self.harness.connect()
        self.assertError(
            miner.request("mining.get_transactions", ["1"], request_id=6),
            20,
            "mining.get_transactions is not supported",
            6,
        )

    def test_unknown_method(self) -> None:
        """An unknown method is error 20 naming it (cut to 64 characters); the connection stays."""
        miner = self.harness.connect()
        self.assertError(
            miner.request("mining.suggest_target", ["00ff"], request_id=8),
            20,
            "unknown method 'mining.suggest_target'",
            8,
        )
        self.assertError(miner.request("x" * 100), 20, f"unknown method {'x' * 64!r}")
        self.assertError(miner.request(""), 20, "unknown method ''")
        self.assertFalse(miner.closing)


class MalformedInputTests(_StratumCase):
    """Input that is no request gets error 20 and the connection stays open."""

    def assertStaysOpen(self, miner: Connection) -> None:
        """The connection is open and still answers requests."""
        self.assertFalse(miner.closing)
        self.assertEqual(miner.request("mining.extranonce.subscribe")[0]["result"], True)

    def assertMalformed(self, line: bytes, text: str, request_id: object = None) -> None:
        """``line`` on a fresh connection is answered with error 20 ``text``; it stays open."""
        miner = self.harness.connect()
        miner.send(line + b"\n")
        self.assertError(miner.read(), 20, text, request_id)
        self.assertStaysOpen(miner)

    def test_invalid_json(self) -> None:
        """Text that is not JSON is 'invalid JSON' with id null."""
        for line in (b"{not json", b'{"id": 1, "method": "mining.subscribe"', b"mining.subscribe", b"{}}"):
            self.assertMalformed(line, "invalid JSON")

    def test_not_utf8(self) -> None:
        """Bytes that are not UTF-8 are 'invalid JSON'."""
        self.assertMalformed(b'{"id": 1, "method": "mining.\xc3\x28"}', "invalid JSON")
        self.assertMalformed(b"\xff\xff\xff", "invalid JSON")

    def test_deep_nesting(self) -> None:
        """JSON nested deeper than the parser's recursion limit is 'invalid JSON', not a crash."""
        self.assertMalformed(b"[" * 5000, "invalid JSON")
        self.assertMalformed(b'{"id": 1, "params": ' + b"[" * 3000 + b"]" * 3000 + b"}", "invalid JSON")

    def test_not_an_object(self) -> None:
        """An array, number, string, null or boolean is 'a request must be a JSON object'."""
        for line in (
            b'[{"id": 1, "method": "mining.subscribe"}]',
            b"42",
            b'"mining.subscribe"',
            b"null",
            b"true",
        ):
            self.assertMalformed(line, "a request must be a JSON object")

    def test_method_missing_or_not_a_string(self) -> None:
        """A request without a string method is 'missing method', its id echoed."""
        self.assertMalformed(b'{"id": 3, "params": []}', "missing method", 3)
        self.assertMalformed(b'{"id": 4, "method": 17, "params": []}', "missing method", 4)
        self.assertMalformed(b'{"id": "x", "method": null}', "missing method", "x")
        self.assertMalformed(b'{"id": 5, "method": ["mining.subscribe"]}', "missing method", 5)

    def test_params_not_a_list(self) -> None:
        """Params that are not a list are 'params must be a list' (null counts as no params)."""
        for params in (b'{"a": 1}', b'"x"', b"1"):
            self.assertMalformed(
                b'{"id": 5, "method": "mining.subscribe", "params": ' + params + b"}",
                "params must be a list",
                5,
            )
        miner = self.harness.connect()
        miner.send(b'{"id": 6, "method": "mining.subscribe", "params": null}\n')
        self.assertIsNone(miner.read()[0]["error"])

    def test_missing_params(self) -> None:
        """Without params, authorize and submit are 20 'invalid params'; subscribe and
        extranonce.subscribe need none."""
        miner = self.harness.connect()
        miner.send(b'{"id": 1, "method": "mining.authorize"}\n')
        self.assertError(miner.read(), 20, INVALID_PARAMS_AUTHORIZE, 1)
        miner.send(b'{"id": 2, "method": "mining.submit"}\n')
        self.assertError(miner.read(), 20, INVALID_PARAMS_SUBMIT, 2)
        miner.send(b'{"id": 3, "method": "mining.get_transactions"}\n')
        self.assertError(miner.read(), 20, "mining.get_transactions is not supported", 3)
        miner.send(b'{"id": 4, "method": "mining.extranonce.subscribe"}\n')
        self.assertEqual(miner.read(), [{"id": 4, "result": True, "error": None}])
        miner.send(b'{"id": 5, "method": "mining.subscribe"}\n')
        self.assertEqual(miner.read()[0]["id"], 5)
        self.assertStaysOpen(miner)

    def test_wrong_typed_params(self) -> None:
        """Numbers where strings belong are 20 'invalid params'."""
        miner = self.harness.connect()
        miner.subscribe()
        self.assertError(
            miner.request("mining.authorize", [1, 2], request_id=1), 20, INVALID_PARAMS_AUTHORIZE, 1
        )
        self.assertError(
            miner.request("mining.submit", [1, 2, 3, 4, 5], request_id=2), 20, INVALID_PARAMS_SUBMIT, 2
        )
        self.assertStaysOpen(miner)

    def test_deep_nesting_whatever_the_recursion_limit(self) -> None:
        """A line opening more than MAX_BRACKETS brackets is refused before it is parsed, so
        what it costs does not hang on the interpreter's recursion limit (libraries raise it)."""
        limit = sys.getrecursionlimit()
        self.addCleanup(sys.setrecursionlimit, limit)
        sys.setrecursionlimit(100_000)
        self.assertMalformed(b'{"id": 1, "params": ' + b"[" * 3000 + b"]" * 3000 + b"}", "invalid JSON")
        many = b", ".join([b"[]"] * (MAX_BRACKETS + 1))
        self.assertMalformed(
            b'{"id": 1, "method": "mining.submit", "params": [' + many + b"]}", "invalid JSON"
        )

    def test_object_array_and_boolean_ids_refused(self) -> None:
        """An id that is an object, an array or a boolean is not a JSON-RPC id: the request
        gets an error with id null, whatever it asked, and counts as malformed."""
        for request_id in (b'{"a": 1}', b"[1]", b"true"):
            for method in (b"mining.extranonce.subscribe", b"mining.subscribe", b"mining.authorize"):
                miner = self.harness.connect()
                miner.send(b'{"id": ' + request_id + b', "method": "' + method + b'", "params": []}\n')
                self.assertError(miner.read(), 20, "id must be a number, a string or null", None)
                self.assertEqual(miner.session.malformed, 1)
                self.assertFalse(miner.session.subscribed or miner.session.extranonce_subscribed)
                self.assertStaysOpen(miner)

    def test_float_id_becomes_null(self) -> None:
        """A float id is answered, as id null (no miner sends one; JSON-RPC allows numbers)."""
        self.assertMalformed(b'{"id": 1.5, "params": []}', "missing method", None)
        miner = self.harness.connect()
        miner.send(b'{"id": 1.5, "method": "mining.extranonce.subscribe"}\n')
        self.assertEqual(miner.read(), [{"id": None, "result": True, "error": None}])

    def test_usable_ids_echoed(self) -> None:
        """String, zero, negative, huge and null ids are echoed as given."""
        for request_id in ("abc", "", 0, -1, 2**70, None):
            miner = self.harness.connect()
            miner.send_json({"id": request_id, "method": "mining.nothing"})
            self.assertError(miner.read(), 20, "unknown method 'mining.nothing'", request_id)
        miner = self.harness.connect()
        miner.send(b'{"method": "mining.extranonce.subscribe"}\n')
        self.assertEqual(miner.read(), [{"id": None, "result": True, "error": None}])

    def test_malformed_counted(self) -> None:
        """Requests that cannot be read are counted on the session; refused ones are not."""
        miner = self.harness.connect()
        miner.send(b"{\n[]\n" + b'{"id": 1}\n' + b'{"id": 1, "method": "m", "params": 1}\n')
        self.assertEqual(len(miner.read()), 4)
        miner.request("mining.unknown")
        miner.request("mining.authorize", [1])
        self.assertEqual(miner.session.malformed, 4)

    def test_line_too_long(self) -> None:
        """A line over MAX_LENGTH is an error and the connection is closed; others carry on."""
        self.assertEqual(StratumProtocol.MAX_LENGTH, MAX_LINE)
        miner, other = self.harness.connect(), self.harness.connect()
        miner.send(b"x" * (MAX_LINE + 1) + b'\n{"id": 1, "method": "mining.extranonce.subscribe"}\n')
        self.assertError(miner.read(), 20, f"line longer than {MAX_LINE} bytes", None)
        self.assertTrue(miner.closing)
        self.assertFalse(miner.transport.aborted)
        miner.send(b'{"id": 2, "method": "mining.extranonce.subscribe"}\n')
        self.assertEqual(miner.read(), [])
        self.assertFalse(other.closing)
        self.assertEqual(other.request("mining.extranonce.subscribe")[0]["result"], True)
        other.subscribe()
        self.assertIsNotNone(other.session.extranonce1)

    def test_unterminated_line_too_long(self) -> None:
        """Data without a newline past MAX_LENGTH closes the connection as well."""
        miner = self.harness.connect()
        for _ in range(MAX_LINE // 1000):
            miner.send(b"y" * 1000)
        self.assertEqual(miner.read(), [])
        miner.send(b"y" * 1000)
        self.assertError(miner.read(), 20, f"line longer than {MAX_LINE} bytes", None)
        self.assertTrue(miner.closing)

    def test_line_at_limit(self) -> None:
        """A request of exactly MAX_LENGTH bytes is answered."""
        head = b'{"id": 1, "method": "mining.extranonce.subscribe", "params": []'
        line = head + b" " * (MAX_LINE - len(head) - 1) + b"}"
        self.assertEqual(len(line), MAX_LINE)
        miner = self.harness.connect()
        miner.send(line + b"\n")
        self.assertEqual(miner.read(), [{"id": 1, "result": True, "error": None}])
        self.assertFalse(miner.closing)

    def test_several_requests_in_one_write(self) -> None:
        """Several lines in one write are each answered, in order."""
        miner = self.harness.connect()
        miner.send(
            b'{"id": 1, "method": "mining.subscribe", "params": []}\n'
            b'{"id": 2, "method": "mining.authorize", "params": ["' + WORKER.encode() + b'", "x"]}\n'
            b'{"id": 3, "method": "mining.extranonce.subscribe", "params": []}\n'
        )
        messages = miner.read()
        self.assertEqual([m["id"] for m in messages], [1, None, None, 2, 3])
        self.assertEqual([m.get("result") for m in messages[3:]], [True, True])

    def test_request_split_over_writes(self) -> None:
        """A request arriving a byte at a time is answered once complete."""
        miner = self.harness.connect()
        data = b'{"id": 9, "method": "mining.authorize", "params": ["' + WORKER.encode() + b'", "x"]}\n'
        for i in range(len(data) - 1):
            miner.send(data[i : i + 1])
            self.assertEqual(miner.read(), [])
        miner.send(data[-1:])
        self.assertEqual(miner.read(), [{"id": 9, "result": True, "error": None}])

    def test_crlf(self) -> None:
        """Lines ending in \\r\\n work."""
        miner = self.harness.connect()
        miner.send(
            b'{"id": 1, "method": "mining.extranonce.subscribe"}\r\n'
            b'{"id": 2, "method": "mining.subscribe"}\r\n'
        )
        messages = miner.read()
        self.assertEqual([m["id"] for m in messages], [1, 2, None, None])

    def test_empty_lines_ignored(self) -> None:
        """Empty and blank lines get no reply and are not malformed."""
        miner = self.harness.connect()
        miner.send(b"\n\r\n  \t \n\n")
        self.assertEqual(miner.read(), [])
        self.assertEqual(miner.session.malformed, 0)
        self.assertStaysOpen(miner)


class UnpausableTransport(RecordingTransport):
    """A transport whose reads cannot be paused (as TLS's)."""

    pauseProducing = None  # type: ignore[assignment]
    resumeProducing = None  # type: ignore[assignment]


class MalformedThrottleTests(_StratumCase):
    """A connection sending malformed lines is read more slowly; nobody else is."""

    def junk(self, count: int) -> bytes:
        return b"not json\n" * count

    def test_burst_then_rate(self) -> None:
        """MALFORMED_BURST malformed lines are answered at once (and the one that goes over),
        then MALFORMED_RATE a second; the connection's reads are paused meanwhile, and it stays open."""
        miner = self.harness.connect()
        miner.send(self.junk(40))
        answered = len(miner.read())
        self.assertEqual(answered, int(MALFORMED_BURST) + 1)
        self.assertEqual(miner.transport.producerState, "paused")
        self.clock.advance(10 / MALFORMED_RATE)
        answered += len(miner.read())
        self.assertEqual(answered, int(MALFORMED_BURST) + 1 + 10)
        self.clock.advance(60)
        answered += len(miner.read())
        self.assertEqual(answered, 40)
        self.assertEqual(miner.transport.producerState, "producing")
        self.assertFalse(miner.closing)
        self.assertEqual(miner.session.malformed, 40)

    def test_good_line_behind_the_junk_waits_its_turn(self) -> None:
        """A request after the junk in the same stream is answered in order, once the junk
        before it is."""
        miner = self.harness.connect()
        miner.send(self.junk(25) + b'{"id": 7, "method": "mining.extranonce.subscribe"}\n')
        first = miner.read()
        self.assertNotIn(7, [m["id"] for m in first])
        self.clock.advance(60)
        rest = miner.read()
        self.assertEqual(len(first) + len(rest), 26)
        self.assertEqual(rest[-1], {"id": 7, "result": True, "error": None})

    def test_others_are_not_slowed(self) -> None:
        """While one connection is throttled, another is answered at once."""
        flooder = self.harness.connect()
        flooder.send(self.junk(40))
        miner = self.harness.connect()
        self.assertEqual(miner.request("mining.extranonce.subscribe")[0]["result"], True)

    def test_well_formed_lines_never_count(self) -> None:
        """Any number of well-formed requests in one read is answered at once."""
        miner = self.harness.connect()
        miner.send(b'{"id": 1, "method": "mining.extranonce.subscribe"}\n' * 200)
        self.assertEqual(len(miner.read()), 200)
        self.assertEqual(miner.transport.producerState, "producing")

    def test_allowance_refills(self) -> None:
        """A miner that sends a bad line now and then is never slowed."""
        miner = self.harness.connect()
        for _ in range(100):
            miner.send(self.junk(1))
            self.assertEqual(len(miner.read()), 1)
            self.clock.advance(1 / MALFORMED_RATE)

    def test_backlog_where_reads_cannot_pause(self) -> None:
        """Where the transport cannot pause its reads (TLS), a throttled connection whose
        waiting input passes MAX_BACKLOG is closed."""
        miner = self.harness.connect(transport=UnpausableTransport)
        miner.send(self.junk(30))
        miner.read()
        self.assertFalse(miner.closing)
        miner.send(b"x" * 100 + b"\n" + self.junk(MAX_BACKLOG // 9 + 1))
        self.assertTrue(miner.closing)
        self.assertEqual(miner.read()[-1]["error"][1], "too much malformed input")

    def test_close_while_throttled(self) -> None:
        """A throttled connection that goes away leaves no timer behind."""
        miner = self.harness.connect()
        before = len(self.clock.getDelayedCalls())
        miner.send(self.junk(40))
        self.assertEqual(len(self.clock.getDelayedCalls()), before + 1)
        miner.read()
        miner.lose()
        self.assertEqual(len(self.clock.getDelayedCalls()), before - 1)  # its idle timer went too
        self.clock.advance(60)
        self.assertEqual(miner.read(), [])


class ConnectionTests(_StratumCase):
    """Idle miners, miners that stop reading, and disconnects."""

    def test_no_delay(self) -> None:
        """Replies are not held back by Nagle's algorithm: TCP_NODELAY is set at connect."""
        self.assertTrue(self.harness.connect().transport.no_delay)

    def test_one_send_per_read(self) -> None:
        """The replies to the lines of one read leave in one send, in order: a subscribe's
        reply, difficulty and job, then the replies to a malformed line and an authorize."""
        miner = self.harness.connect()
        writes = miner.transport.writes
        miner.send(
            b'{"id": 1, "method": "mining.subscribe", "params": []}\n'
            b"not json\n"
            b'{"id": 2, "method": "mining.authorize", "params": ["' + WORKER.encode() + b'", "x"]}\n'
        )
        self.assertEqual(miner.transport.writes - writes, 1)
        messages = miner.read()
        self.assertEqual([m.get("id") for m in messages], [1, None, None, None, 2])
        self.assertEqual(
            [m.get("method") for m in messages], [None, "mining.set_difficulty", "mining.notify", None, None]
        )
        self.assertEqual(messages[3]["error"][1], "invalid JSON")

    def test_reply_before_close_is_sent(self) -> None:
        """A read that ends in a close (a line over the limit) still sends what it answered first."""
        miner = self.harness.connect()
        miner.send(b'{"id": 1, "method": "mining.extranonce.subscribe"}\n' + b"x" * (MAX_LINE + 1))
        messages = miner.read()
        self.assertEqual([m["id"] for m in messages], [1, None])
        self.assertTrue(miner.closing)

    def test_idle_timeout(self) -> None:
        """A connection without a line for connection_timeout seconds is aborted."""
        timeout = self.server.config.connection_timeout
        self.assertEqual(timeout, 600)
        miner = self.harness.connect()
        self.clock.advance(timeout - 1)
        self.assertFalse(miner.closing)
        self.clock.advance(1)
        self.assertTrue(miner.transport.aborted)
        self.assertTrue(miner.closing)

    def test_any_line_resets_timeout(self) -> None:
        """Each line, a request or an empty one, restarts the idle timer."""
        miner = self.harness.connect()
        self.clock.advance(500)
        miner.request("mining.extranonce.subscribe")
        self.clock.advance(500)
        miner.send(b"\n")
        self.clock.advance(599)
        self.assertFalse(miner.closing)
        self.clock.advance(1)
        self.assertTrue(miner.transport.aborted)

    def test_partial_line_does_not_reset_timeout(self) -> None:
        """Bytes that never make a line do not keep a connection alive."""
        miner = self.harness.connect()
        for _ in range(6):
            self.clock.advance(99)
            miner.send(b" ")
        self.clock.advance(6)
        self.assertTrue(miner.transport.aborted)

    def test_disconnect_cancels_timer(self) -> None:
        """A closed connection leaves no timer behind and leaves the server."""
        miner = self.harness.connect()
        self.assertIn(miner.protocol, self.server.connections)
        miner.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNotIn(miner.protocol, self.server.connections)

    def test_registered_as_producer(self) -> None:
        """Each connection registers as a streaming producer of its transport."""
        miner = self.harness.connect()
        self.assertIs(miner.transport.producer, miner.protocol)
        self.assertTrue(miner.transport.streaming)

    def test_pause_aborts(self) -> None:
        """A transport that asks to pause (the miner stopped reading) has its connection aborted."""
        miner, other = self.harness.connect(), self.harness.connect()
        miner.protocol.resumeProducing()
        miner.protocol.stopProducing()
        self.assertFalse(miner.closing)
        miner.protocol.pauseProducing()
        self.assertTrue(miner.transport.aborted)
        self.assertFalse(other.closing)

    def test_close_all(self) -> None:
        """close_all closes every connection."""
        miners = [self.harness.connect() for _ in range(3)]
        self.server.close_all()
        self.assertTrue(all(m.closing for m in miners))

    def test_no_broadcast_after_disconnect(self) -> None:
        """A closed connection gets no more jobs."""
        miner = self.harness.connect()
        miner.subscribe()
        miner.lose()
        self.harness.new_job(mainnet_template(previousblockhash="bb" * 32, height=123))
        self.assertEqual(miner.read(), [])


class BroadcastTests(_StratumCase):
    """New jobs go to every subscribed miner."""

    def test_subscribed_only(self) -> None:
        """Subscribed connections get the notify, the same one each; others nothing."""
        first, second, quiet = self.harness.connect(), self.harness.connect(), self.harness.connect()
        first.subscribe()
        second.subscribe()
        quiet.authorize(WORKER)
        job = self.harness.new_job(mainnet_template(previousblockhash="bb" * 32, height=123))
        expected = [{"id": None, "method": "mining.notify", "params": job.notify_params(True)}]
        self.assertEqual(first.read(), expected)
        self.assertEqual(second.read(), expected)
        self.assertEqual(quiet.read(), [])

    def test_closed_miners_left_out(self) -> None:
        """A miner whose connection is gone is sent no more jobs; one subscribing after it is."""
        gone, staying = self.harness.miner(WORKER), self.harness.miner(WORKER)
        gone.lose()
        later = self.harness.connect()
        later.subscribe()
        job = self.harness.new_job(mainnet_template(previousblockhash="bb" * 32, height=123))
        self.assertEqual(gone.read(), [])
        expected = [{"id": None, "method": "mining.notify", "params": job.notify_params(True)}]
        self.assertEqual(staying.read(), expected)
        self.assertEqual(later.read(), expected)
        again = mainnet_template(previousblockhash="bb" * 32, height=123, coinbasevalue=5000010000)
        self.harness.new_job(again, force=True)
        self.assertEqual(len(staying.read()), 1)
        self.assertEqual(gone.read(), [])

    def test_clean_job(self) -> None:
        """A job on a new block has clean_jobs true and drops the older jobs and their shares."""
        miner = self.harness.miner(WORKER)
        params = self.share(miner, meets(PLAIN_DIFF))
        self.assertAccepted(miner.submit(params))
        self.assertEqual(len(self.server.ledger), 1)
        job = self.harness.new_job(mainnet_template(previousblockhash="bb" * 32, height=123))
        self.assertTrue(job.clean)
        (notify,) = miner.read()
        self.assertIs(notify["params"][8], True)
        self.assertEqual(len(self.server.ledger), 0)
        self.assertError(miner.submit(params), 21, "job not found")

    def test_continuing_job(self) -> None:
        """A job on the same block has clean_jobs false and older jobs stay valid."""
        miner = self.harness.miner(WORKER)
        job = self.harness.new_job(mainnet_template(coinbasevalue=5000010000), force=True)
        self.assertFalse(job.clean)
        (notify,) = miner.read()
        self.assertEqual(notify["params"], job.notify_params(False))
        self.assertIs(notify["params"][8], False)
        self.assertAccepted(miner.submit(self.share(miner, meets(PLAIN_DIFF))))
        self.assertAccepted(miner.submit(self.share(miner, meets(PLAIN_DIFF), job=job)))

    def test_subscribe_after_continuing_job(self) -> None:
        """A miner subscribing after a continuing job gets it with clean_jobs true."""
        job = self.harness.new_job(mainnet_template(coinbasevalue=5000010000), force=True)
        miner = self.harness.connect()
        notify = miner.request("mining.subscribe")[2]
        self.assertEqual(notify["params"], job.notify_params(True))


class VardiffProtocolTests(_StratumCase):
    """Vardiff on a port: set_difficulty goes out when shares are too fast or stop."""

    def test_fast_shares_raise_difficulty(self) -> None:
        """Shares a second apart raise the difficulty by target/mean at the retarget time."""
        miner = self.harness.miner(WORKER, port=VARDIFF_PORT)
        self.clock.advance(80)
        for i in range(10):
            self.clock.advance(1)
            messages = miner.submit(self.share(miner, meets(VARDIFF_PORT.diff), start=i * 5000))
            if i < 9:
                self.assertEqual(len(messages), 1, messages)
                self.assertAccepted(messages)
        new = tidy(VARDIFF_PORT.diff * 15 / 1)
        self.assertEqual(new, 0.015)
        self.assertEqual(messages[0], {"id": None, "method": "mining.set_difficulty", "params": [new]})
        self.assertAccepted(messages[1:])
        self.assertEqual(miner.session.difficulty, new)
        # The next job goes out under the new difficulty.
        job = self.harness.new_job(mainnet_template(coinbasevalue=5000010000), force=True)
        miner.read()
        self.assertEqual(miner.session.sent[job.job_id], new)

    def test_unauthorized_submits_do_not_count(self) -> None:
        """Submits for names the connection did not authorize never move its difficulty."""
        miner = self.harness.miner(WORKER, port=VARDIFF_PORT)
        self.clock.advance(80)
        for i in range(20):
            self.clock.advance(1)
            params = self.share(miner, meets(VARDIFF_PORT.diff), start=i * 5000)
            self.assertError(miner.submit([OTHER_WORKER, *params[1:]]), 24, "unauthorized worker")
        self.assertEqual(miner.session.difficulty, VARDIFF_PORT.diff)

    def test_plain_port_keeps_difficulty(self) -> None:
        """A port without vardiff never changes the difficulty."""
        miner = self.harness.miner(WORKER)
        for i in range(5):
            self.clock.advance(30)
            self.assertEqual(len(miner.submit(self.share(miner, meets(PLAIN_DIFF), start=i * 1000))), 1)
        self.clock.advance(500)
        self.server.retarget_quiet()
        self.assertEqual(miner.read(), [])

    def test_quiet_miner_lowered(self) -> None:
        """retarget_quiet lowers a silent subscribed miner after the retarget time, not before."""
        miner = self.harness.miner(WORKER, port=VARDIFF_PORT)
        unsubscribed = self.harness.connect(VARDIFF_PORT)
        self.clock.advance(90)
        self.server.retarget_quiet()
        self.assertEqual(miner.read(), [])
        self.clock.advance(1)
        self.server.retarget_quiet()
        new = tidy(VARDIFF_PORT.diff * 15 / 91)
        self.assertEqual(new, 0.000164835)
        self.assertEqual(miner.read(), [{"id": None, "method": "mining.set_difficulty", "params": [new]}])
        self.assertEqual(unsubscribed.read(), [])
        self.assertEqual(miner.session.difficulty, new)

    def test_quiet_miner_lowered_to_min(self) -> None:
        """A miner silent for long is lowered again each retarget time, down to min_diff."""
        miner = self.harness.miner(WORKER, port=VARDIFF_PORT)
        sent = []
        for _ in range(5):
            self.clock.advance(91)
            self.server.retarget_quiet()
            sent += [m["params"][0] for m in miner.read()]
        self.assertEqual(sent, [0.000164835, VARDIFF.min_diff])
        self.assertEqual(miner.session.difficulty, VARDIFF.min_diff)

    def test_quiet_miners_looked_at_in_steps(self) -> None:
        """The timer's steps look at each quiet miner once in QUIET_STEPS steps, a
        slice each step; one gone since the round began is passed over, one
        come since is in the next round."""
        miners = [self.harness.miner(WORKER, port=VARDIFF_PORT) for _ in range(2 * QUIET_STEPS + 1)]
        self.clock.advance(91)
        self.server.retarget_quiet_step()  # the round starts from the miners open now
        lowered = [m for m in miners if m.read()]
        self.assertEqual(len(lowered), 3)
        gone = next(m for m in miners if m not in lowered)
        miners.remove(gone)
        gone.lose()
        late = self.harness.miner(WORKER, port=VARDIFF_PORT)
        for _ in range(QUIET_STEPS - 1):
            self.server.retarget_quiet_step()
            lowered += [m for m in miners if m.read()]
        self.assertEqual(gone.read(), [])
        self.assertEqual(sorted(map(id, lowered)), sorted(map(id, miners)))
        self.assertEqual({m.session.difficulty for m in miners}, {tidy(VARDIFF_PORT.diff * 15 / 91)})
        self.clock.advance(91)
        for _ in range(QUIET_STEPS):  # the next round has the late miner in it
            self.server.retarget_quiet_step()
        self.assertEqual(len(late.read()), 1)
