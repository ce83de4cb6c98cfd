"""A payment run for many miners, against a real redis-server.

Run: python bench/payments.py [--family btc|eth] [--miners 10000] [--floor-samples 200]

``btc`` (the default): one mature block whose PROP round holds --miners
addresses is credited, then every balance is paid in one sendmany. The
wallet is a scripted one in this process (test/fakewallet.py), timed
apart: the figure that counts is the pool's own work, the run time minus
the time spent in wallet calls. Printed: run time, wallet time, pool time
and Redis round trips.

``eth``: a round of --miners logins (addresses drawn at random, share
counts with a long tail as a real pool's are) closed by one candidate; an
unlocker run credits it immature, a second, at maturity depth, makes the
credits balances; then one payer run pays every login over the minimum,
one signed transaction each. The node is ``StubNode`` below, in this
process: it answers from dicts at once, and the time spent in it is
summed and subtracted, as the wallet's is for ``btc``. The process runs as
the pool's does once started (its heap frozen out of the cyclic collector's
sight, its GIL switch interval), and signs as the payer service does, in
its signing threads (nomp.payments.ethpayer.SIGNING_THREADS). The dev node
(test/ethnode) would do for the unlocker, but a py-evm node taking,
checking and mining --miners transactions spends minutes on work that is
the node's, not the pool's, so the payer's figures would be a measure of
py-evm. Printed for each run: wall and CPU time, node time, Redis round
trips; the share of the payer's time spent signing; and, measured in the
same process, the floors: what eth-account's own sign_transaction costs
per call (the floor under a payer that signs with it), what libsecp256k1
costs through coincurve to sign and to recover a signature (the floor
under the payer's own signer, nomp.payments.ethtx, and its check), one
Redis EVAL round trip on loopback, and the stub node's time per call.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import coincurve
import rlp  # type: ignore[import-untyped]
from eth_account import Account
from eth_keys.backends import get_backend
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from twisted.internet import defer, task
from twisted.python.threadpool import ThreadPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nomp.config import EthPaymentsConfig, EthPoolConfig, PaymentsConfig, RedisConfig  # noqa: E402
from nomp.daemon.errors import RPCError  # noqa: E402
from nomp.payments import ethpayer  # noqa: E402
from nomp.payments.ethledger import EthLedger  # noqa: E402
from nomp.payments.ethpayer import EthPayer  # noqa: E402
from nomp.payments.ethpayledger import EthPayLedger  # noqa: E402
from nomp.payments.ethsigner import PayoutKey, Pricing, SignedTransfer, load_key, sign_transfer  # noqa: E402
from nomp.payments.ethunlocker import EthUnlocker  # noqa: E402
from nomp.payments.ledger import PaymentLedger  # noqa: E402
from nomp.payments.processor import PaymentProcessor  # noqa: E402
from nomp.service import SWITCH_INTERVAL  # noqa: E402
from nomp.store.oepschema import OepKeys, candidate_member  # noqa: E402
from nomp.store.redis import RedisService  # noqa: E402
from nomp.store.schema import PoolKeys  # noqa: E402
from test.ethpool import eth_pool_config, stratum_port  # noqa: E402
from test.fakes import pool_config  # noqa: E402
from test.fakewallet import FakeChain, FakeWallet  # noqa: E402
from test.servers import RedisServer  # noqa: E402

REWARD = 50 * 100_000_000

T = TypeVar("T")


class CountingRedis:
    """The Redis client, counting round trips (every ledger call is one EVAL)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.round_trips = 0

    def eval(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        self.round_trips += 1
        result: defer.Deferred[Any] = self.client.eval(script, keys, args)
        return result


class TimedWallet(FakeWallet):
    """The scripted wallet, with the time spent in it summed."""

    spent = 0.0

    async def call(self, method: str, *params: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().call(method, *params)
        finally:
            self.spent += time.perf_counter() - started


async def started_redis(reactor: Any) -> tuple[RedisServer, RedisService]:
    server = RedisServer().start()
    service = RedisService(RedisConfig(port=server.port))
    service.startService()
    while service.client() is None:
        await task.deferLater(reactor, 0.01)
    return server, service


async def stopped_redis(server: RedisServer, service: RedisService) -> None:
    stopping = service.stopService()
    if stopping is not None:
        await stopping
    server.stop()


async def bench_bitcoin(reactor: Any, miners: int) -> None:
    server, service = await started_redis(reactor)
    try:
        keys = PoolKeys.for_coin("bench")
        addresses = [f"rbench1q{i:034d}" for i in range(miners)]
        # The round and the block, as the recorder leaves them.
        for first in range(0, miners, 1000):
            pairs = [x for a in addresses[first : first + 1000] for x in (f"{a}.rig", "1.5")]
            server.command("HSET", keys.round(100), *pairs)
        block_hash, txid = "aa" * 32, "bb" * 32
        server.command("SADD", keys.blocks_pending, f"{block_hash}:{txid}:100:{addresses[0]}.rig:1")
        server.command("HSET", keys.block(block_hash), "round", keys.round(100), "height", "100")
        pool = pool_config(payments=PaymentsConfig(enabled=True, minimum_payment=Decimal("0.00001")))
        chain = FakeChain(tip=300)
        chain.blocks[block_hash] = (201, txid)
        wallet = TimedWallet(pool.address)
        wallet.coinbases[txid] = ("generate", REWARD)
        counting = CountingRedis(service.client())
        processor = PaymentProcessor(pool, PaymentLedger(counting, keys), chain, wallet)

        started = time.perf_counter()
        report = await processor.run()
        elapsed = time.perf_counter() - started
        assert len(report.paid) == miners, report
        print(f"payout run for {miners} miners (credit one block, pay every balance in one sendmany):")
        print(f"  run time        {elapsed * 1000:8.1f} ms")
        print(
            f"  wallet calls    {wallet.spent * 1000:8.1f} ms  ({len(wallet.calls)} calls, scripted wallet)"
        )
        print(f"  pool's own work {(elapsed - wallet.spent) * 1000:8.1f} ms")
        print(f"  Redis round trips {counting.round_trips}")
    finally:
        await stopped_redis(server, service)


# -- the Ethereum family ------------------------------------------------------------

TARGET_MINERS = 10_000
TARGET_SECONDS = 2.0  # the pool's own work for TARGET_MINERS: unlocker and payer together
CANDIDATE_HEIGHT = 1_000
SHARE_DIFFICULTY = 4_000_000_000  # one share at a stratum port of 4 GH
# Hashrates of a real pool's logins have a long tail (a few farms, many single
# rigs): each login's shares are drawn from a Pareto law with the exponent of
# the 80/20 rule, at least one share each.
PARETO_ALPHA = 1.16
FEE_PERCENT = Decimal(1)
# Low enough that a login with a single share of a 10,000-login round is over
# it: the payer run pays every login.
MINIMUM_PAYMENT = Decimal("0.00001")
GWEI = 10**9
STUB_URL = "stub://bench-node"
# The bench's payout key, funded on the stub node alone.
BENCH_SECRET = keccak(text="nomp bench/payments.py payout key")
OTHER_MINER = "0x" + "11" * 20  # the coinbase of every block but the pool's


def eth_round(miners: int, rng: random.Random) -> dict[str, int]:
    """login -> summed share difficulty: distinct random addresses, each with at least one share."""
    shares: dict[str, int] = {}
    while len(shares) < miners:
        login = "0x" + rng.randbytes(20).hex()
        shares[login] = int(rng.paretovariate(PARETO_ALPHA)) * SHARE_DIFFICULTY
    return shares


class StubNode:
    """A stub Ethereum node for the bench, answering from dicts in this process at once.

    Not a chain: it mines nothing. It holds the blocks the unlocker reads
    (every height up to ``tip``; at ``candidate_height`` the pool's block,
    with the candidate's nonce and mix digest, no transactions and no
    uncles) and takes a raw transaction when its nonce is the payout
    account's next, read from its RLP (the signature is left to the payer's
    own check), answering its hash as geth does. Every other method a run
    asks has a fixed answer: the chain id, synced, peers, a gas price of 1
    Gwei, no base fee (a pre-London chain), a balance of a million ether.
    """

    def __init__(self, chain_id: int, coinbase: str, candidate_height: int, nonce: int, mix: bytes) -> None:
        self.chain_id = chain_id
        self.coinbase = coinbase
        self.candidate_height = candidate_height
        self.candidate_nonce = nonce
        self.candidate_mix = mix
        self.tip = candidate_height
        self.sent: dict[str, bytes] = {}  # tx hash -> raw, in the order taken
        self.next_nonce = 0  # of the payout account
        self._methods: dict[str, Callable[..., Any]] = {
            "eth_chainId": lambda: hex(self.chain_id),
            "eth_syncing": lambda: False,
            "net_peerCount": lambda: "0x8",
            "eth_blockNumber": lambda: hex(self.tip),
            "eth_gasPrice": lambda: hex(GWEI),
            "eth_getBalance": lambda address, tag: hex(10**24),
            "eth_getTransactionCount": lambda address, tag: hex(self.next_nonce),
            "eth_getBlockByNumber": self._block_by_number,
            "eth_sendRawTransaction": self._send_raw,
            "eth_getTransactionByHash": self._transaction,
        }

    async def call(self, method: str, *params: Any) -> Any:
        answer = self._methods.get(method)
        if answer is None:
            raise RPCError(STUB_URL, method, -32601, f"the method {method} does not exist/is not available")
        return answer(*params)

    @staticmethod
    def _hash(height: int) -> str:
        return "0x" + keccak(b"stub block %d" % height).hex()

    def _block_by_number(self, tag: str, full: bool) -> dict[str, Any] | None:
        height = self.tip if tag == "latest" else int(tag, 16)
        if height > self.tip:
            return None
        ours = height == self.candidate_height
        return {
            "number": hex(height),
            "hash": self._hash(height),
            "parentHash": self._hash(height - 1),
            "nonce": f"0x{self.candidate_nonce if ours else height:016x}",
            "mixHash": "0x" + (self.candidate_mix if ours else keccak(b"mix %d" % height)).hex(),
            "miner": self.coinbase if ours else OTHER_MINER,
            "uncles": [],
            "transactions": [],
            "gasUsed": "0x0",
        }

    def _send_raw(self, raw_hex: str) -> str:
        raw = bytes.fromhex(raw_hex[2:])
        typed = raw[0] <= 0x7F  # EIP-2718: a type byte, then the RLP list
        fields = rlp.decode(raw[1:] if typed else raw)
        nonce = int.from_bytes(fields[1 if typed else 0], "big")
        if nonce < self.next_nonce:
            raise RPCError(STUB_URL, "eth_sendRawTransaction", -32000, "nonce too low")
        if nonce > self.next_nonce:
            raise RPCError(
                STUB_URL, "eth_sendRawTransaction", -32000, "nonce gap: the stub takes the next only"
            )
        tx_hash = "0x" + keccak(raw).hex()
        self.sent[tx_hash] = raw
        self.next_nonce += 1
        return tx_hash

    def _transaction(self, tx_hash: str) -> dict[str, Any] | None:
        return {"hash": tx_hash, "blockNumber": None} if tx_hash in self.sent else None


class TimedNode:
    """The node, with the time spent in it summed and its calls counted."""

    def __init__(self, node: StubNode) -> None:
        self.node = node
        self.spent = 0.0
        self.calls = 0

    async def call(self, method: str, *params: Any) -> Any:
        self.calls += 1
        started = time.perf_counter()
        try:
            return await self.node.call(method, *params)
        finally:
            self.spent += time.perf_counter() - started


class TimedSigning:
    """The payer's signing (ethsigner.sign_transfer, which signs with libsecp256k1 and
    checks the signature recovers the key's public key), with its CPU time summed: each
    call's own thread's, in whichever signing thread it runs, so the figure neither
    counts the other threads' work nor grows with what else the machine runs."""

    def __init__(self) -> None:
        self.spent = 0.0
        self.calls = 0
        self._lock = threading.Lock()  # the signing threads add to both

    def sign(
        self, key: PayoutKey, chain_id: int, nonce: int, to: str, value_wei: int, pricing: Pricing
    ) -> SignedTransfer:
        started = time.thread_time()
        try:
            return sign_transfer(key, chain_id, nonce, to, value_wei, pricing)
        finally:
            with self._lock:
                self.calls += 1
                self.spent += time.thread_time() - started


@dataclass(frozen=True, slots=True)
class Measured:
    """One run's figures, in seconds."""

    wall: float
    cpu: float  # this process's, all threads (redis-server's is its own process)
    node: float  # of wall and cpu alike: the stub node runs in this process, computing
    node_calls: int
    round_trips: int
    redis_cpu: float  # redis-server's, running the pool's scripts: in wall, not in cpu

    @property
    def own(self) -> float:
        """The pool's own work: the wall time less the node's."""
        return self.wall - self.node

    @property
    def own_cpu(self) -> float:
        return self.cpu - self.node

    def __add__(self, other: Measured) -> Measured:
        return Measured(
            self.wall + other.wall,
            self.cpu + other.cpu,
            self.node + other.node,
            self.node_calls + other.node_calls,
            self.round_trips + other.round_trips,
            self.redis_cpu + other.redis_cpu,
        )


def redis_cpu(server: RedisServer) -> float:
    """redis-server's CPU time so far (user and system), in seconds, from INFO."""
    info = str(server.command("INFO", "cpu"))
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


async def measured(
    run: Callable[[], Awaitable[T]], node: TimedNode, redis: CountingRedis, server: RedisServer
) -> tuple[T, Measured]:
    spent, calls, trips, redis_started = node.spent, node.calls, redis.round_trips, redis_cpu(server)
    cpu, wall = time.process_time(), time.perf_counter()
    result = await run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result, Measured(
        wall,
        cpu,
        node.spent - spent,
        node.calls - calls,
        redis.round_trips - trips,
        redis_cpu(server) - redis_started,
    )


def signing_floor(samples: int, chain_id: int, to: str) -> tuple[float, float]:
    """CPU seconds per call of eth-account alone, on the payer's kind of transfer (legacy,
    EIP-155): Account.sign_transaction, and Account.recover_transaction of its result."""
    transfer = {
        "chainId": chain_id,
        "nonce": 0,
        "gasPrice": GWEI,
        "gas": 21_000,
        "to": to_checksum_address(to),
        "value": 10**16,
        "data": b"",
    }
    # The first call sets up what later ones reuse.
    raw = Account.sign_transaction(transfer, BENCH_SECRET).raw_transaction
    started = time.process_time()
    for nonce in range(samples):
        raw = Account.sign_transaction({**transfer, "nonce": nonce}, BENCH_SECRET).raw_transaction
    signed = time.process_time()
    for _ in range(samples):
        Account.recover_transaction(raw)
    recovered = time.process_time()
    return (signed - started) / samples, (recovered - signed) / samples


def libsecp256k1_floor(samples: int) -> tuple[float, float]:
    """CPU seconds per call of coincurve (libsecp256k1) alone: a recoverable signature of a
    digest, and the public key recovered from it, as the payer's signer makes and checks
    each payout's."""
    signer = coincurve.PrivateKey(BENCH_SECRET)
    digest = keccak(b"a transfer's signing digest")
    signature = signer.sign_recoverable(digest, hasher=None)
    started = time.process_time()
    for _ in range(samples):
        signature = signer.sign_recoverable(digest, hasher=None)
    signed = time.process_time()
    for _ in range(samples):
        coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)
    recovered = time.process_time()
    return (signed - started) / samples, (recovered - signed) / samples


async def eval_round_trip(redis: Any, samples: int) -> float:
    """Wall seconds of one EVAL of a script that does nothing, on loopback, awaited in turn:
    the floor under each of a run's Redis round trips."""
    script = "return 1"
    await redis.eval(script, [], [])  # loaded once, as the payer's scripts are
    started = time.perf_counter()
    for _ in range(samples):
        await redis.eval(script, [], [])
    return (time.perf_counter() - started) / samples


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms"


def run_line(name: str, m: Measured) -> str:
    return (
        f"  {name:<26} wall {ms(m.wall)}  cpu {ms(m.cpu)}  node {ms(m.node)} ({m.node_calls} calls)"
        f"  Redis {m.round_trips} round trips, cpu {ms(m.redis_cpu)}"
    )


def bench_config(key: PayoutKey, key_file: str) -> EthPoolConfig:
    payments = EthPaymentsConfig(
        enabled=True,
        fee_percent=FEE_PERCENT,
        key_file=key_file,
        minimum_payment=MINIMUM_PAYMENT,
    )
    # The payout key is the pool's address: the fee it earns stays there, unpaid.
    return eth_pool_config(STUB_URL, [stratum_port(4)], address=key.address, payments=payments)


async def bench_ethereum(reactor: Any, miners: int, floor_samples: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        key_file = os.path.join(folder, "payout.key")
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as f:
            f.write(BENCH_SECRET.hex() + "\n")
        # Read once, as the payer service reads it when made; the file goes with the folder.
        key = load_key(key_file)
        config = bench_config(key, key_file)
    rng = random.Random(miners)
    shares = eth_round(miners, rng)
    nonce, header, mix = rng.getrandbits(64), rng.randbytes(32), rng.randbytes(32)
    nonce_hex = f"0x{nonce:016x}"
    pool_login = config.address.lower()
    stub = StubNode(config.coin.chain_id, pool_login, CANDIDATE_HEIGHT, nonce, mix)
    node = TimedNode(stub)
    reward = config.coin.rewards.block_reward(CANDIDATE_HEIGHT)

    load_before = os.getloadavg()[0]
    # The runtime as the pool process runs (NompService, once started): the heap made so
    # far out of the cyclic collector's sight, and its switch interval, which bounds how
    # long the signing threads wait for the GIL.
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)
    server, service = await started_redis(reactor)
    try:
        keys = OepKeys.for_coin(config.coin.name)
        # The round and its candidate, as the recorder leaves them.
        logins = list(shares)
        for first in range(0, miners, 1000):
            pairs = [x for login in logins[first : first + 1000] for x in (login, shares[login])]
            server.command("HSET", keys.round(CANDIDATE_HEIGHT, nonce_hex), *pairs)
        member = candidate_member(
            nonce_hex, "0x" + header.hex(), "0x" + mix.hex(), 1_700_000_000, 10**15, sum(shares.values())
        )
        server.command("ZADD", keys.blocks_candidates, CANDIDATE_HEIGHT, member)
        counting = CountingRedis(service.client())
        unlocker = EthUnlocker(config, EthLedger(counting, keys), node)

        stub.tip = CANDIDATE_HEIGHT + config.payments.immature_depth
        report, immature = await measured(unlocker.run, node, counting, server)
        assert report.immature == [nonce_hex] and report.error is None, report
        stub.tip = CANDIDATE_HEIGHT + config.payments.depth
        report, matured = await measured(unlocker.run, node, counting, server)
        assert report.matured == [nonce_hex] and report.error is None, report

        ledger = EthPayLedger(counting, keys)
        trips = counting.round_trips
        balances = await ledger.balances()
        counting.round_trips = trips  # the bench's own reads are not the pool's
        assert sum(balances.values()) == reward, (sum(balances.values()), reward)
        minimum = config.payments.minimum_payment_wei
        due = sorted(login for login, wei in balances.items() if wei >= minimum and login != pool_login)

        signing = TimedSigning()
        # The payer service's signing threads, as it makes them (none: it signs on the
        # reactor's thread).
        threads: ThreadPool | None = None
        if ethpayer.SIGNING_THREADS:
            threads = ThreadPool(minthreads=0, maxthreads=ethpayer.SIGNING_THREADS, name="bench-payer")
            threads.start()
        payer = EthPayer(config, ledger, node, key, signing=threads)
        # The payer calls the real sign_transfer through the timer.
        try:
            with mock.patch.object(ethpayer, "sign_transfer", signing.sign):
                paid, payout = await measured(payer.run, node, counting, server)
        finally:
            if threads is not None:
                threads.stop()
        assert paid.error is None, paid.error
        assert sorted(paid.paid) == due, (len(paid.paid), len(due))
        assert sorted(paid.paid.values()) == sorted(stub.sent), "every payout recorded is a transaction sent"
        round_trip = await eval_round_trip(service.client(), floor_samples)
    finally:
        await stopped_redis(server, service)

    sign_floor, recover_floor = signing_floor(floor_samples, config.coin.chain_id, logins[0])
    secp_sign, secp_recover = libsecp256k1_floor(max(floor_samples, 1000))
    load_after = os.getloadavg()[0]
    payouts = len(paid.paid)
    unlocker_total = immature + matured
    total = unlocker_total + payout
    print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"eth-keys backend {type(get_backend()).__name__}, "
        f"load average {load_before:.2f} before and {load_after:.2f} after"
    )
    print(
        f"eth payment run for {miners} miners: one {reward / 10**18:g} ether block, its round of "
        f"{len(shares)} logins (long-tailed shares), one payer run"
    )
    print(f"  node: {StubNode.__name__} in this process, answering from dicts; its time is subtracted")
    print(run_line("unlocker, block immature", immature))
    print(run_line("unlocker, block matured", matured))
    print(run_line(f"payer, {payouts} payouts", payout))
    print(
        f"  pool's own work, wall less node: unlocker {ms(unlocker_total.own)}, payer {ms(payout.own)}; "
        f"cpu less node, this process and redis-server: unlocker {ms(unlocker_total.own_cpu)} "
        f"+ {ms(unlocker_total.redis_cpu)}, payer {ms(payout.own_cpu)} + {ms(payout.redis_cpu)}"
    )
    print(
        f"  per payout: {payout.own / max(payouts, 1) * 1e6:.0f} us of the pool's own work "
        f"({payout.own_cpu / max(payouts, 1) * 1e6:.0f} us cpu here, "
        f"{payout.redis_cpu / max(payouts, 1) * 1e6:.0f} us in redis-server), "
        f"{payout.round_trips / max(payouts, 1):.2f} Redis round trips"
    )
    threads_used = ethpayer.SIGNING_THREADS
    where = f"in {threads_used} signing thread(s)" if threads_used else "on the reactor's thread"
    print(
        f"  signing: {signing.calls} calls of sign_transfer, cpu {ms(signing.spent)}, "
        f"{100 * signing.spent / max(payout.own_cpu, 1e-9):.0f}% of the payer's cpu here, "
        f"{signing.spent / max(signing.calls, 1) * 1e6:.0f} us per payout, {where}"
    )
    print(
        f"  floor: eth-account sign_transaction {sign_floor * 1e6:.0f} us cpu per call, "
        f"recover_transaction {recover_floor * 1e6:.0f} us ({floor_samples} calls each); "
        f"{TARGET_MINERS} payouts at the sign_transaction floor: {sign_floor * TARGET_MINERS:.2f} s"
    )
    node_call = payout.node / max(payout.node_calls, 1)
    print(
        f"  floor: libsecp256k1 (coincurve) sign {secp_sign * 1e6:.1f} us cpu per call, recover "
        f"{secp_recover * 1e6:.1f} us; Redis EVAL round trip on loopback {round_trip * 1e6:.0f} us wall; "
        f"the stub node {node_call * 1e6:.1f} us a call"
    )
    scale = TARGET_MINERS / miners
    own, own_cpu = total.own * scale, (total.own_cpu + total.redis_cpu) * scale
    verdict = "met" if own < TARGET_SECONDS else "missed"
    # The payer signs each payout and recovers the signature again: libsecp256k1's part.
    secp = (secp_sign + secp_recover) * TARGET_MINERS
    print(
        f"  target: {TARGET_MINERS} miners, the pool's own work under {TARGET_SECONDS:g} s: "
        f"{own:.2f} s wall, {own_cpu:.2f} s cpu at {TARGET_MINERS} ({verdict}"
        + ("" if miners == TARGET_MINERS else f", scaled from {miners}")
        + f"); the signing floor alone is {secp / TARGET_SECONDS:.2f}x the target"
    )
    round_trips_at_target = payout.round_trips * scale
    print(
        f"  against the target: {own / TARGET_SECONDS:.2f}x ({own - TARGET_SECONDS:+.2f} s wall); "
        f"floors at {TARGET_MINERS} payouts: libsecp256k1 {secp:.2f} s, "
        f"{round_trips_at_target:.0f} Redis round trips {round_trips_at_target * round_trip:.2f} s, "
        f"the stub node {node_call * TARGET_MINERS:.2f} s (not counted)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=("btc", "eth"), default="btc")
    parser.add_argument("--miners", type=int, default=TARGET_MINERS)
    parser.add_argument(
        "--floor-samples", type=int, default=200, help="eth: calls of eth-account timed for the floor"
    )
    args = parser.parse_args()
    if args.miners < 1 or args.floor_samples < 1:
        parser.error("--miners and --floor-samples must be at least 1")

    def run(reactor: Any) -> defer.Deferred[None]:
        if args.family == "eth":
            return defer.Deferred.fromCoroutine(bench_ethereum(reactor, args.miners, args.floor_samples))
        return defer.Deferred.fromCoroutine(bench_bitcoin(reactor, args.miners))

    task.react(run)


if __name__ == "__main__":
    main()
