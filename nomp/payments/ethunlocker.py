"""The Ethereum family's unlocker: candidates credited as they mature, in open-ethereum-pool's keys.

One run (``EthUnlocker.run``) holds the pool's unlocker lock and does what
OEP's unlocker does each interval, with the pure core's verdicts
(nomp.payments.ethunlock) and the ledger's atomic writes
(nomp.payments.ethledger):

1. the candidates with ``immature_depth`` confirmations (the node's latest
   block less their height): the chain read around each (its block, its
   possible nephews and their uncles), ``classify`` says block, uncle,
   orphan or wait; a block or uncle is credited as immature (split by its
   round's shares, the pool fee to the pool's address), an orphan is
   flagged so and its round dropped;
2. the immature blocks with ``depth`` confirmations: still in the chain (the
   same hash at its height, or the uncle still listed by its nephew), the
   credit becomes balances; gone, it is taken back and the block flagged
   orphan.

What the node leaves unanswered never makes an orphan: that block waits
for a later run, said once in the log, and the run goes on with the others.
Once the node stops answering altogether (no connection, no reply in time)
the run asks it nothing more: every block left waits.

Under every scheme the split is by the round's shares: the recorder
closed the round the scheme's way (nomp.store.oep), and a solo candidate's
round holds its finder alone, so the finder gets it all, less the fee.

``EthUnlockerService`` runs it at start and every ``payments.interval``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from nomp.config import DaemonConfig, EthPoolConfig
from nomp.daemon import DaemonError, DaemonUnreachable, RPCError
from nomp.daemon.clients import DaemonClients
from nomp.daemon.rpc import CallObserver, HTTPPoster
from nomp.eth.work import parse_hash, parse_quantity
from nomp.payments.ethledger import NO_HASH, BlockRecord, EthLedger, parse_block_member, parse_score
from nomp.payments.ethunlock import (
    Block,
    ChainBlock,
    ChainUncle,
    ChainView,
    EthCandidate,
    Orphan,
    Revenue,
    Uncle,
    Verdict,
    Wait,
    classify,
    heights_to_read,
    matches,
    parse_candidate_member,
    split_revenue,
)
from nomp.payments.split import round_weights
from nomp.store.client import RedisClient
from nomp.store.oepschema import OepKeys
from nomp.store.redis import refusal

# The steps of a run a ``failpoint`` hook is told of: a test stops a run at
# each and checks that the next run credits exactly once.
FAILPOINTS = ("after_immature", "after_candidates", "after_matured")

# JSON-RPC's codes for a method a node does not have, or whose arguments it
# reads otherwise (an eth_getBlockReceipts that takes no block hash).
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class NodeRPC(Protocol):
    """An Ethereum-family node's JSON-RPC (a DaemonRPC speaking 2.0)."""

    async def call(self, method: str, *params: Any) -> Any: ...


class NodeTrouble(Exception):
    """The node did not give what was asked: unreachable, an error (``code``, its JSON-RPC
    code), or an answer that is not what geth sends."""

    def __init__(self, why: str, code: int | None = None) -> None:
        super().__init__(why)
        self.code = code


@dataclass(slots=True)
class UnlockReport:
    """What one run did, by candidate nonce (0x and 16 hex digits), for logs and tests."""

    locked_out: bool = False
    tip: int | None = None
    candidates: int = 0  # candidates deep enough to be looked for
    immature: list[str] = field(default_factory=list)  # credited as immature (blocks and uncles)
    uncles: list[str] = field(default_factory=list)  # those of ``immature`` credited as uncles
    matured: list[str] = field(default_factory=list)  # credited to balances
    credited: int = 0  # wei the matured blocks made balances
    orphaned: list[str] = field(default_factory=list)  # candidates found nowhere, blocks gone
    waiting: dict[str, str] = field(default_factory=dict)  # nonce -> why it waits
    error: str | None = None  # why the run stopped early


# -- reading the chain ----------------------------------------------------------


def _address(value: object, what: str) -> str:
    if type(value) is not str or not _ADDRESS.fullmatch(value):
        raise ValueError(f"{what} must be 0x and 40 hex digits, got {str(value)[:80]!r}")
    return value.lower()


def _nonce(value: object, what: str) -> int:
    if type(value) is not str or len(value) != 18:
        raise ValueError(f"{what} must be 0x and 16 hex digits, got {str(value)[:80]!r}")
    return parse_quantity(value, what)


def _hashes(value: object, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list")
    return tuple(parse_hash(item, what) for item in value)


def _mapping(reply: object, what: str) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise ValueError(f"{what}: not a JSON object: {str(reply)[:80]!r}")
    return reply


def chain_block(reply: object) -> tuple[ChainBlock, tuple[bytes, ...]]:
    """A block from eth_getBlockByNumber (full=false), with its transaction hashes, fees not
    read; ValueError for what geth would not send."""
    fields = _mapping(reply, "block")
    base_fee = fields.get("baseFeePerGas")
    block = ChainBlock(
        number=parse_quantity(fields.get("number"), "block number"),
        hash=parse_hash(fields.get("hash"), "block hash"),
        parent_hash=parse_hash(fields.get("parentHash"), "parent hash"),
        nonce=_nonce(fields.get("nonce"), "block nonce"),
        mix=parse_hash(fields.get("mixHash"), "mix hash"),
        miner=_address(fields.get("miner"), "block miner"),
        uncles=_hashes(fields.get("uncles"), "uncle hash"),
        gas_used=parse_quantity(fields.get("gasUsed"), "gas used"),
        base_fee=None if base_fee is None else parse_quantity(base_fee, "base fee"),
        fees=None,
    )
    return block, _hashes(fields.get("transactions"), "transaction hash")


def chain_uncle(reply: object, included_in: int) -> ChainUncle:
    """An uncle's header from eth_getUncleByBlockNumberAndIndex; ValueError for what geth
    would not send."""
    fields = _mapping(reply, "uncle")
    return ChainUncle(
        number=parse_quantity(fields.get("number"), "uncle number"),
        hash=parse_hash(fields.get("hash"), "uncle hash"),
        nonce=_nonce(fields.get("nonce"), "uncle nonce"),
        mix=parse_hash(fields.get("mixHash"), "uncle mix hash"),
        miner=_address(fields.get("miner"), "uncle miner"),
        included_in=included_in,
    )


class ChainReader:
    """The node's answers for one run: each block and uncle asked once, an error kept as
    the answer; once the node is unreachable, nothing more is asked."""

    def __init__(self, node: NodeRPC) -> None:
        self._node = node
        self._blocks: dict[int, ChainBlock | NodeTrouble | None] = {}
        self._transactions: dict[bytes, tuple[bytes, ...]] = {}
        self._uncles: dict[tuple[int, int], ChainUncle | NodeTrouble | None] = {}
        self._fees: dict[bytes, int | NodeTrouble] = {}
        self._down: NodeTrouble | None = None

    async def call(self, method: str, *params: Any) -> Any:
        if self._down is not None:
            raise self._down
        try:
            return await self._node.call(method, *params)
        except DaemonUnreachable as e:
            self._down = NodeTrouble(f"the node stopped answering: {e}")
            raise self._down from None
        except RPCError as e:
            raise NodeTrouble(str(e), e.code) from None
        except DaemonError as e:
            raise NodeTrouble(str(e)) from None

    async def tip(self) -> int:
        try:
            return parse_quantity(await self.call("eth_blockNumber"), "eth_blockNumber")
        except ValueError as e:
            raise NodeTrouble(str(e)) from None

    async def block(self, height: int) -> ChainBlock | None:
        """The main chain's block at ``height``; None if the node has none there."""
        if height not in self._blocks:
            try:
                reply = await self.call("eth_getBlockByNumber", hex(height), False)
                if reply is None:
                    self._blocks[height] = None
                else:
                    block, transactions = chain_block(reply)
                    if block.number != height:
                        raise ValueError(f"asked for block {height}, got {block.number}")
                    self._blocks[height] = block
                    self._transactions[block.hash] = transactions
            except NodeTrouble as e:
                self._blocks[height] = e
            except ValueError as e:
                self._blocks[height] = NodeTrouble(f"block {height}: {e}")
        found = self._blocks[height]
        if isinstance(found, NodeTrouble):
            raise found
        return found

    async def uncle(self, nephew: int, index: int) -> ChainUncle | None:
        key = (nephew, index)
        if key not in self._uncles:
            try:
                reply = await self.call("eth_getUncleByBlockNumberAndIndex", hex(nephew), hex(index))
                self._uncles[key] = None if reply is None else chain_uncle(reply, nephew)
            except NodeTrouble as e:
                self._uncles[key] = e
            except ValueError as e:
                self._uncles[key] = NodeTrouble(f"uncle {index} of block {nephew}: {e}")
        found = self._uncles[key]
        if isinstance(found, NodeTrouble):
            raise found
        return found

    async def fees(self, block: ChainBlock) -> int:
        """What the block's transactions paid, sum(gasUsed * effectiveGasPrice) over its
        receipts: 0 without transactions, else from its receipts (NodeTrouble if the node
        has none to give: never assumed 0)."""
        if block.hash not in self._fees:
            try:
                self._fees[block.hash] = await self._read_fees(block, self._transactions[block.hash])
            except NodeTrouble as e:
                self._fees[block.hash] = e
            except (ValueError, KeyError) as e:
                self._fees[block.hash] = NodeTrouble(f"receipts of block {block.number}: {e}")
        found = self._fees[block.hash]
        if isinstance(found, NodeTrouble):
            raise found
        return found

    async def _read_fees(self, block: ChainBlock, transactions: Sequence[bytes]) -> int:
        if not transactions:
            return 0
        receipts = await self._receipts(block, transactions)
        prices: dict[bytes, int] | None = None
        paid = 0
        for transaction, receipt in zip(transactions, receipts, strict=True):
            if parse_hash(receipt.get("blockHash"), "receipt block hash") != block.hash:
                raise NodeTrouble(f"a receipt of block {block.number} is of another block")
            if parse_hash(receipt.get("transactionHash"), "receipt transaction") != transaction:
                raise NodeTrouble(f"the receipts of block {block.number} are not its transactions'")
            gas = parse_quantity(receipt.get("gasUsed"), "receipt gas used")
            price = receipt.get("effectiveGasPrice")
            if price is None:  # receipts before geth 1.10 carry none: the gas price is the one paid
                if prices is None:
                    prices = await self._gas_prices(block)
                paid += gas * prices[transaction]
            else:
                paid += gas * parse_quantity(price, "effective gas price")
        return paid

    async def _receipts(self, block: ChainBlock, transactions: Sequence[bytes]) -> list[dict[str, Any]]:
        block_hash = "0x" + block.hash.hex()
        reply: Any = None
        try:
            reply = await self.call("eth_getBlockReceipts", block_hash)
        except NodeTrouble as e:
            if e.code not in (METHOD_NOT_FOUND, INVALID_PARAMS):
                raise
        if reply is not None:
            if not isinstance(reply, list) or len(reply) != len(transactions):
                raise NodeTrouble(f"eth_getBlockReceipts gave no receipt list for block {block.number}")
            return [_mapping(receipt, "receipt") for receipt in reply]
        receipts = []
        for transaction in transactions:
            receipt = await self.call("eth_getTransactionReceipt", "0x" + transaction.hex())
            if receipt is None:
                raise NodeTrouble(f"no receipt for transaction 0x{transaction.hex()} of block {block.number}")
            receipts.append(_mapping(receipt, "receipt"))
        return receipts

    async def _gas_prices(self, block: ChainBlock) -> dict[bytes, int]:
        reply = _mapping(await self.call("eth_getBlockByHash", "0x" + block.hash.hex(), True), "block")
        listed = reply.get("transactions")
        if not isinstance(listed, list):
            raise ValueError("no transactions in the full block")
        return {
            parse_hash(_mapping(t, "transaction").get("hash"), "transaction hash"): parse_quantity(
                t.get("gasPrice"), "gas price"
            )
            for t in listed
        }

    async def view(self, candidate: EthCandidate, tip: int) -> tuple[ChainView, list[str]]:
        """What ``classify`` needs of the chain for ``candidate``, and what the node left out.
        The nephews are read only when the candidate's own height holds another block."""
        problems: list[str] = []
        blocks: dict[int, ChainBlock] = {}
        heights = heights_to_read(candidate.height, tip)

        async def read(height: int) -> ChainBlock | None:
            try:
                block = await self.block(height)
            except NodeTrouble as e:
                problems.append(str(e))
                return None
            if block is not None:
                blocks[height] = block
            return block

        own = await read(candidate.height)
        if own is not None and matches(candidate, own):
            try:
                blocks[candidate.height] = replace(own, fees=await self.fees(own))
            except NodeTrouble as e:
                problems.append(str(e))
            return ChainView(blocks), problems
        uncles: list[ChainUncle] = []
        for height in heights[1:]:
            nephew = await read(height)
            for index in range(len(nephew.uncles) if nephew is not None else 0):
                try:
                    uncle = await self.uncle(height, index)
                except NodeTrouble as e:
                    problems.append(str(e))
                    continue
                if uncle is not None:
                    uncles.append(uncle)
        return ChainView(blocks, tuple(uncles)), problems


# -- a run ----------------------------------------------------------------------


class EthUnlocker:
    """Runs one Ethereum-family pool's unlocker against its node and Redis.

    ``failpoint``, a test seam, is called with each name of FAILPOINTS as a
    run passes that step; the service passes none. Remembers across runs
    what it said of each waiting block, so a wait is logged once.
    """

    log = Logger()

    def __init__(
        self,
        pool: EthPoolConfig,
        ledger: EthLedger,
        node: NodeRPC,
        wall_clock: Callable[[], float] = time.time,
        failpoint: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = pool
        self.config = pool.payments
        self.ledger = ledger
        self.node = node
        self._wall_clock = wall_clock
        self._failpoint = failpoint
        self._fee_login = pool.address.lower()
        self._said: dict[str, str] = {}  # what was logged last of each waiting block

    def _reached(self, step: str) -> None:
        if self._failpoint is not None:
            self._failpoint(step)

    async def run(self) -> UnlockReport:
        report = UnlockReport()
        token = await self.ledger.acquire(self.config.lock_timeout)
        if token is None:
            report.locked_out = True
            self.log.info("pool {pool}: another unlocker run holds the lock", pool=self.pool.name)
            return report
        try:
            reader = ChainReader(self.node)
            try:
                report.tip = await reader.tip()
            except NodeTrouble as e:
                report.error = f"the node's height is unknown: {e}"
                self._say("tip", "warn", "pool {pool}: unlocker run skipped: {why}", why=report.error)
                return report
            self._said.pop("tip", None)
            await self._unlock_candidates(token, reader, report.tip, report)
            self._reached("after_candidates")
            await self._credit_matured(token, reader, report.tip, report)
        finally:
            await self.ledger.release(token)
        return report

    async def _keep_lock(self, token: int) -> None:
        if not await self.ledger.extend(token, self.config.lock_timeout):
            raise RuntimeError("the unlocker lock was lost: another run may hold it now")

    def _say(self, key: str, level: str, text: str, **fields: Any) -> None:
        """Log ``text`` unless it is what was last logged for ``key``."""
        message = text.format(pool=self.pool.name, **fields)
        if self._said.get(key) == message:
            return
        self._said[key] = message
        emit = self.log.warn if level == "warn" else self.log.error if level == "error" else self.log.info
        emit(text, pool=self.pool.name, **fields)

    # -- candidates ----------------------------------------------------------

    async def _unlock_candidates(
        self, token: int, reader: ChainReader, tip: int, report: UnlockReport
    ) -> None:
        due = await self.ledger.candidates(tip - self.config.immature_depth)
        report.candidates = len(due)
        for member, score in due:
            try:
                candidate = parse_candidate_member(member, parse_score(score))
            except ValueError as e:
                self._say(
                    member, "error", "pool {pool}: candidate {member} left alone: {why}", member=member, why=e
                )
                continue
            view, problems = await reader.view(candidate, tip)
            verdict = classify(
                candidate,
                view,
                tip,
                self.pool.coin,
                self.pool.address,
                safety=self.config.orphan_safety,
            )
            try:
                await self._settle_candidate(token, candidate, verdict, problems, report)
            except Exception as e:
                self._refused(e, candidate.nonce_hex, report)
            await self._keep_lock(token)

    async def _settle_candidate(
        self, token: int, candidate: EthCandidate, verdict: Verdict, problems: list[str], report: UnlockReport
    ) -> None:
        nonce = candidate.nonce_hex
        if isinstance(verdict, Wait):
            why = "; ".join(problems) if problems else verdict.reason
            report.waiting[nonce] = why
            self._say(
                nonce,
                "warn" if problems else "info",
                "pool {pool}: candidate {height} (nonce {nonce}) waits: {why}",
                height=candidate.height,
                nonce=nonce,
                why=why,
            )
            return
        self._said.pop(nonce, None)
        if isinstance(verdict, Orphan):
            record = self._record(
                candidate, height=candidate.height, block_hash=NO_HASH, reward=0, orphan=True
            )
            if await self.ledger.write_candidate_orphan(token, candidate, record):
                report.orphaned.append(nonce)
                self.log.warn(
                    "pool {pool}: candidate {height} (nonce {nonce}) orphaned: {why}",
                    pool=self.pool.name,
                    height=candidate.height,
                    nonce=nonce,
                    why=verdict.reason,
                )
            return
        if isinstance(verdict, Block):
            revenue = verdict.revenue
            record = self._record(
                candidate, height=verdict.height, block_hash="0x" + verdict.hash.hex(), reward=revenue.total
            )
        else:
            assert isinstance(verdict, Uncle)
            revenue = Revenue(verdict.reward, 0, 0)
            record = self._record(
                candidate,
                height=verdict.nephew_height,
                block_hash="0x" + verdict.hash.hex(),
                reward=verdict.reward,
                uncle_height=verdict.height,
            )
        credits = await self._credits(candidate, revenue)
        if await self.ledger.write_immature(token, candidate, record, credits):
            report.immature.append(nonce)
            if record.uncle:
                report.uncles.append(nonce)
            self.log.info(
                "pool {pool}: {kind} {height} {hash} (nonce {nonce}) immature: {reward} wei, {logins} logins",
                pool=self.pool.name,
                kind="uncle" if record.uncle else "block",
                height=candidate.height,
                hash=record.hash,
                nonce=nonce,
                reward=record.reward,
                logins=len(credits),
            )
        self._reached("after_immature")

    def _record(
        self,
        candidate: EthCandidate,
        *,
        height: int,
        block_hash: str,
        reward: int,
        uncle_height: int = 0,
        orphan: bool = False,
    ) -> BlockRecord:
        return BlockRecord(
            height=height,
            uncle_height=uncle_height,
            orphan=orphan,
            nonce=candidate.nonce_hex,
            hash=block_hash,
            found_at=candidate.found_at,
            difficulty=candidate.network_difficulty,
            round_total=candidate.round_total,
            reward=reward,
        )

    async def _credits(self, candidate: EthCandidate, revenue: Revenue) -> dict[str, int]:
        """Login -> wei: the round's split, the pool's part (fee, floors) to the pool's address."""
        shares = await self.ledger.round_shares(candidate.height, candidate.nonce_hex)
        if not shares:
            self.log.error(
                "pool {pool}: no shares recorded for the round of candidate {height} (nonce {nonce}): "
                "its reward goes to the pool's address",
                pool=self.pool.name,
                height=candidate.height,
                nonce=candidate.nonce_hex,
            )
        split = split_revenue(
            revenue, round_weights(shares), self.config.fee_percent, self.config.keep_tx_fees
        )
        credits = dict(split.miners)
        if split.pool > 0:
            credits[self._fee_login] = credits.get(self._fee_login, 0) + split.pool
        return credits

    # -- immature blocks -----------------------------------------------------

    async def _credit_matured(self, token: int, reader: ChainReader, tip: int, report: UnlockReport) -> None:
        for member, score in await self.ledger.immature(tip - self.config.depth):
            try:
                record = parse_block_member(member, parse_score(score))
            except ValueError as e:
                self._say(
                    member,
                    "error",
                    "pool {pool}: immature block {member} left alone: {why}",
                    member=member,
                    why=e,
                )
                continue
            try:
                await self._settle_record(token, reader, record, report)
            except Exception as e:
                self._refused(e, record.nonce, report)
            await self._keep_lock(token)

    async def _settle_record(
        self, token: int, reader: ChainReader, record: BlockRecord, report: UnlockReport
    ) -> None:
        if record.orphan:  # a candidate found nowhere: it joins the matured ones as it is
            if await self.ledger.write_orphan(token, record):
                report.orphaned.append(record.nonce)
            return
        try:
            gone = await self._gone(reader, record)
        except NodeTrouble as e:
            why = str(e)
            report.waiting[record.nonce] = why
            self._say(
                record.nonce,
                "warn",
                "pool {pool}: immature block {height} {hash} waits: {why}",
                height=record.height,
                hash=record.hash,
                why=why,
            )
            return
        self._said.pop(record.nonce, None)
        if gone is not None:
            if await self.ledger.write_orphan(token, record):
                report.orphaned.append(record.nonce)
                self.log.warn(
                    "pool {pool}: immature block {height} {hash} orphaned ({why}): its credit taken back",
                    pool=self.pool.name,
                    height=record.height,
                    hash=record.hash,
                    why=gone,
                )
        elif await self.ledger.write_matured(token, record, int(self._wall_clock())):
            report.matured.append(record.nonce)
            report.credited += record.reward
            self.log.info(
                "pool {pool}: {kind} {height} {hash} matured: {reward} wei credited",
                pool=self.pool.name,
                kind="uncle" if record.uncle else "block",
                height=record.height,
                hash=record.hash,
                reward=record.reward,
            )
        self._reached("after_matured")

    def _refused(self, error: Exception, nonce: str, report: UnlockReport) -> None:
        """A write Redis refused for what a key holds: that block waits for the operator,
        the others go on. Anything else (a lost lock above all) stops the run."""
        why = refusal(error)
        if why is None or why.startswith("NOLOCK"):
            raise error
        report.waiting[nonce] = f"Redis refused its write: {why}"
        self._say(
            nonce,
            "error",
            "pool {pool}: block {nonce} waits: Redis refused its write: {why}",
            nonce=nonce,
            why=why,
        )

    async def _gone(self, reader: ChainReader, record: BlockRecord) -> str | None:
        """Why an immature block is no longer in the chain, or None if it still is; NodeTrouble
        while the node does not say."""
        block_hash = parse_hash(record.hash, "block hash")
        block = await reader.block(record.height)
        if block is None:
            raise NodeTrouble(f"the node has no block at height {record.height}")
        if not record.uncle:
            if block.hash == block_hash:
                return None
            return f"block {record.height} is now 0x{block.hash.hex()} by {block.miner}"
        if block_hash in block.uncles:
            return None
        return f"block {record.height} (0x{block.hash.hex()}) no longer includes it as an uncle"


# -- the service ----------------------------------------------------------------


def unlocker_daemon(pool: EthPoolConfig) -> DaemonConfig:
    """The node the unlocker asks: the payments section's, else the pool's first."""
    return pool.payments.daemon or pool.daemons[0]


# Told of every run as it ends (metrics): its report, or None for a run that raised
# (logged), and the wall clock's time then.
UnlockListener = Callable[[UnlockReport | None, float], None]


class EthUnlockerService(Service):
    """Runs EthUnlocker at start and every ``payments.interval`` seconds while Redis is up;
    the lock in Redis keeps it to one process per pool however many run it. A run skipped
    because Redis is not connected is no run: ``run_listener`` is not told of it."""

    log = Logger()

    def __init__(
        self,
        config: EthPoolConfig,
        redis: Callable[[], RedisClient | None],
        reactor: Any,
        rpc_observer: CallObserver | None = None,
        http: HTTPPoster | None = None,
        wall_clock: Callable[[], float] = time.time,
        run_listener: UnlockListener | None = None,
    ) -> None:
        self.config = config
        self.name = f"unlocker:{config.name}"
        self._redis = redis
        self._reactor = reactor
        self._rpc_observer = rpc_observer  # told of every node call (metrics)
        self._run_listener = run_listener
        self._http = http
        self._wall_clock = wall_clock
        self._clients: DaemonClients | None = None
        self._node: NodeRPC | None = None
        self._loop: task.LoopingCall | None = None
        self._running: defer.Deferred[UnlockReport | None] | None = None
        self._unlocker: EthUnlocker | None = None  # kept: it remembers what it logged

    def startService(self) -> None:
        super().startService()
        self._clients = DaemonClients(self._reactor, observer=self._rpc_observer, http=self._http)
        self._node = self._clients.rpc(unlocker_daemon(self.config), version="2.0")
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self._reactor
        self._loop.start(self.config.payments.interval, now=True)

    def _tick(self) -> None:
        if self._running is None or self._running.called:
            self._running = defer.Deferred.fromCoroutine(self.run_once())

    async def run_once(self) -> UnlockReport | None:
        """One unlocker run now; None when Redis is not there yet or the run failed."""
        redis, node = self._redis(), self._node
        if redis is None or node is None:
            self.log.info("pool {pool}: unlocker run skipped: Redis is not ready", pool=self.config.name)
            return None
        ledger = EthLedger(redis, OepKeys.for_coin(self.config.coin.name))
        if self._unlocker is None:
            self._unlocker = EthUnlocker(self.config, ledger, node, self._wall_clock)
        self._unlocker.ledger = ledger  # the connection Redis has now
        report: UnlockReport | None = None
        try:
            report = await self._unlocker.run()
        except Exception:
            self.log.failure(
                "pool {pool}: unlocker run failed; tried again next interval", pool=self.config.name
            )
        if self._run_listener is not None:
            self._run_listener(report, self._wall_clock())
        return report

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        # A run in progress finishes: each of its writes is whole anyway, and
        # its lock is released rather than left to time out.
        if self._running is not None and not self._running.called:
            await self._running
        clients, self._clients = self._clients, None
        if clients is not None:
            await clients.close()
