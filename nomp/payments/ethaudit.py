"""The Ethereum family's payment audit: OEP's keys against each other and against the chain.

Every check is a pair of integers in wei that must be equal, listed with
its difference as the Bitcoin family's audit lists them (nomp.payments.audit),
so a clean pool prints zeros. What they compare, and where each number lives:

- rewards: each block or uncle the unlocker credited (``blocks:immature``
  and ``blocks:matured``, not orphaned: the reward is the member's last
  field) against what the chain pays the pool for it, recomputed from the
  node's block and receipts with nomp.payments.ethunlock's rules (the
  block reward, the nephew rewards and the priority fees; an uncle's
  reward), never from Redis's own numbers. A block no longer the chain's,
  or paying another address than the pool's, earns 0 there;
- splits: each block's credits (``unlocker:credits:*``, exact wei: the
  miners, the pool's fee and what the floors leave, which the pool's own
  address holds) against its reward;
- payouts: every payout recorded paid (``payments:all``, whose members hold
  the amount in whole Shannon) against the transaction it names: from the
  payout key's account, to the login, and mined with status 1 (or pooled,
  said in a note). And, exactly, each login's ``paid`` (with its dust)
  against the sum of those transfers' amounts: the value, plus the fee's
  ceiling when the miners pay it;
- balances: each login's balance against what its matured blocks credited,
  less what it was paid and what is pending; its immature amount against
  its immature blocks' credits; ``finances`` against the logins' sums;
- the journal: pending against the open payouts, and nothing open.

The exact wei of a payout mined deep enough are kept nowhere in Redis (OEP's
records hold its Shannon, and the payer's watch drops it once mined): the
transfer's own value on the chain is what each login's ``paid`` is checked
against.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from nomp.config import EthPoolConfig
from nomp.eth.work import WorkError, parse_hash, parse_quantity
from nomp.payments.audit import Audit
from nomp.payments.ethledger import BlockRecord, parse_block_member, parse_score
from nomp.payments.ethpayledger import EthPayLedger
from nomp.payments.ethunlock import block_revenue, uncle_reward
from nomp.payments.ethunlocker import ChainReader, NodeRPC, NodeTrouble
from nomp.store.client import RedisClient
from nomp.store.oepschema import BALANCE, PAID, PENDING, WEI_PER_SHANNON, OepKeys, dust_field

IMMATURE = "immature"
TOTAL_MINED = "totalMined"
AMOUNTS = (BALANCE, IMMATURE, PENDING, PAID)  # a login's amount fields (and finances')
SCAN_COUNT = 500
NOTES_PER_CHECK = 20  # notes naming what differs, per kind; the count of the rest after them

# ARGV: cursor, the miners' key prefix, count, then the fields. One SCAN step:
# the next cursor and, for each hash, its login and the fields' values.
_SCAN_MINERS = """
local step = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2] .. '*', 'COUNT', ARGV[3])
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local found = {}
for _, key in ipairs(step[2]) do
  if redis.call('TYPE', key)['ok'] == 'hash' then
    found[#found + 1] = string.sub(key, #ARGV[2] + 1)
    found[#found + 1] = redis.call('HMGET', key, unpack(fields))
  end
end
return {step[1], found}
"""

_ZRANGE = "return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')"

_INTEGER = re.compile(r"-?[0-9]+")


def integer(value: object) -> int | None:
    """A number as Redis holds it and txredisapi gives it (it turns decimal replies into
    ints), or None if it is not an integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


@dataclass(slots=True)
class _Notes:
    """What an audit says besides its checks, at most NOTES_PER_CHECK of each kind."""

    audit: Audit
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, text: str) -> None:
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        if count <= NOTES_PER_CHECK:
            self.audit.notes.append(text)

    def close(self) -> None:
        for kind, count in self.counts.items():
            if count > NOTES_PER_CHECK:
                self.audit.notes.append(f"... and {count - NOTES_PER_CHECK} more {kind}")


@dataclass(frozen=True, slots=True)
class Transfer:
    """What the node shows of a payout's transaction."""

    sender: str
    to: str | None
    value: int
    max_fee: int  # its gas limit times the most it pays per gas
    mined: bool
    status: int | None  # None: pooled, or mined before Byzantium (no status)


def _lower(value: object) -> str | None:
    return value.lower() if isinstance(value, str) else None


async def transfer(reader: ChainReader, tx_hash: str) -> Transfer | None:
    """The transaction ``tx_hash`` as the node shows it, None if it does not know it;
    NodeTrouble when the node fails or answers what geth would not."""
    found = await reader.call("eth_getTransactionByHash", tx_hash)
    if found is None:
        return None
    try:
        if not isinstance(found, dict) or _lower(found.get("hash")) != tx_hash.lower():
            raise ValueError(f"the node answered {str(found)[:200]!r} for transaction {tx_hash}")
        price = found.get("maxFeePerGas", found.get("gasPrice"))
        max_fee = parse_quantity(found.get("gas"), "gas") * parse_quantity(price, "gas price")
        value = parse_quantity(found.get("value"), "value")
        mined = found.get("blockNumber") is not None
        status = None
        if mined:
            receipt = await reader.call("eth_getTransactionReceipt", tx_hash)
            if isinstance(receipt, dict) and receipt.get("status") is not None:
                status = parse_quantity(receipt["status"], "receipt status")
    except WorkError as e:
        raise NodeTrouble(f"transaction {tx_hash}: {e}") from None
    except ValueError as e:
        raise NodeTrouble(str(e)) from None
    return Transfer(_lower(found.get("from")) or "", _lower(found.get("to")), value, max_fee, mined, status)


def _payout_problem(found: Transfer | None, payer: str, login: str, signed_value: int | None) -> str | None:
    """Why a transaction is not the payout a record says it is, if it is not."""
    if found is None:
        return "is not a transaction the node knows"
    if found.sender != payer:
        return f"is from {found.sender}, not the payout key's {payer}"
    if found.to != login.lower():
        return f"pays {found.to}, not {login}"
    if found.status == 0:
        return "reverted (status 0)"
    if signed_value is not None and found.value != signed_value:
        return f"carries {found.value} wei, the payout signed {signed_value}"
    return None


def payout_amount(found: Transfer, transaction_fee: Literal["pool", "miners"]) -> int:
    """What a payout took from the login's balance: the value it carries, and the fee's
    ceiling too when the miners pay it (nomp.payments.ethsigner's deduct_fee)."""
    return found.value + (found.max_fee if transaction_fee == "miners" else 0)


async def chain_reward(
    reader: ChainReader, pool: EthPoolConfig, record: BlockRecord
) -> tuple[int, str | None]:
    """What the chain pays the pool's address for the block or uncle a record names, recomputed
    from the node's blocks and receipts; with why, when that is 0 or unknown."""
    rewards, address = pool.coin.rewards, pool.address.lower()
    try:
        wanted = parse_hash(record.hash, "block hash")
        block = await reader.block(record.height)
        if block is None:
            return 0, f"the node has no block at height {record.height}"
        if not record.uncle:
            if block.hash != wanted:
                return 0, f"block {record.height} is 0x{block.hash.hex()} on the chain, not {record.hash}"
            if block.miner != address:
                return 0, f"block {record.height} {record.hash} pays {block.miner}, not the pool's {address}"
            return block_revenue(rewards, replace(block, fees=await reader.fees(block))).total, None
        if wanted not in block.uncles:
            return 0, f"block {record.height} does not include uncle {record.hash}"
        uncle = await reader.uncle(record.height, block.uncles.index(wanted))
        if uncle is None or uncle.hash != wanted or uncle.number != record.uncle_height:
            return 0, f"uncle {record.hash} of block {record.height} is not at height {record.uncle_height}"
        if uncle.miner != address:
            return 0, f"uncle {record.hash} pays {uncle.miner}, not the pool's {address}"
        return uncle_reward(rewards, record.height, uncle.number), None
    except NodeTrouble as e:
        return 0, f"block {record.height} {record.hash} unchecked: {e}"
    except ValueError as e:
        return 0, f"block {record.height} {record.hash}: {e}"


class EthAuditReader:
    """The reads of the audit, over the payer's ledger and its scripts."""

    def __init__(self, redis: RedisClient, keys: OepKeys) -> None:
        self._redis = redis
        self.keys = keys
        self.ledger = EthPayLedger(redis, keys)

    async def records(self, key: str, notes: _Notes) -> list[BlockRecord]:
        flat = await self._redis.eval(_ZRANGE, [key], []) or []
        found = []
        for member, score in zip(flat[::2], flat[1::2], strict=True):
            try:
                found.append(parse_block_member(member, parse_score(score)))
            except ValueError as e:
                notes.add("unread records", f"{key} member {member!r} not read: {e}")
        return found

    async def payments(self) -> list[str]:
        flat = await self._redis.eval(_ZRANGE, [self.keys.payments_all], []) or []
        return [str(member) for member in flat[::2]]

    async def credits(self, record: BlockRecord, matured: bool) -> dict[str, object]:
        """Login -> wei the block credits: its exact log, or (a block OEP's own unlocker
        credited) its Shannon log in wei, as the unlocker's scripts read them."""
        keys = self.keys
        exact = await self.ledger.hash(keys.credits_wei(record.height, record.hash))
        if exact:
            return {str(login): wei for login, wei in exact.items()}
        shannon_log = keys.credits if matured else keys.credits_immature
        logged = await self.ledger.hash(shannon_log(record.height, record.hash))
        found: dict[str, object] = {}
        for login, value in logged.items():
            whole = integer(value)
            found[str(login)] = value if whole is None else whole * WEI_PER_SHANNON
        return found

    async def miners(self) -> dict[str, dict[str, object]]:
        """Every ``miners:<login>`` hash's amount fields and their dust."""
        fields = [name for amount in AMOUNTS for name in (amount, dust_field(amount))]
        found: dict[str, dict[str, object]] = {}
        cursor = "0"
        while True:
            cursor, flat = await self._redis.eval(
                _SCAN_MINERS, [], [cursor, self.keys.miner(""), SCAN_COUNT, *fields]
            )
            flat = flat or []
            for login, values in zip(flat[::2], flat[1::2], strict=True):
                found[str(login)] = dict(zip(fields, values, strict=True))
            if str(cursor) == "0":
                return found


def _amount(fields: Mapping[str, object], name: str, where: str, notes: _Notes) -> int:
    """An amount of OEP's and the dust beside it, in wei; 0, and a note, if they are not."""
    found = [fields.get(field_name) for field_name in (name, dust_field(name))]
    whole, dust = (0 if value is None else integer(value) for value in found)
    if whole is None or dust is None or not 0 <= dust < WEI_PER_SHANNON:
        notes.add("unread amounts", f"{where} {name} is not OEP's integer and dust ({found}): counted as 0")
        return 0
    return whole * WEI_PER_SHANNON + dust


def _wei(value: object, where: str, notes: _Notes) -> int:
    wei = integer(value)
    if wei is not None and wei >= 0:
        return wei
    notes.add("unread amounts", f"{where} holds {value!r}, not wei: counted as 0")
    return 0


def _add(totals: dict[str, int], login: str, wei: int) -> None:
    totals[login] = totals.get(login, 0) + wei


async def eth_audit(pool: EthPoolConfig, redis: RedisClient, node: NodeRPC, payer_address: str) -> Audit:
    """Every check of the module's docstring for one pool; ``payer_address`` is the account of
    the pool's payout key, which every payout is sent from."""
    keys = OepKeys.for_coin(pool.coin.name)
    reads = EthAuditReader(redis, keys)
    reader = ChainReader(node)
    result = Audit()
    notes = _Notes(result)
    payer = payer_address.lower()

    # Rewards and their splits, block by block.
    credited: dict[str, int] = {}  # login -> wei its matured blocks credited
    immature: dict[str, int] = {}  # login -> wei its immature blocks credit
    chain_total = recorded = split_total = matured_credits = 0
    for key, matured in ((keys.blocks_immature, False), (keys.blocks_matured, True)):
        for record in await reads.records(key, notes):
            if record.orphan:
                continue
            reward, why = await chain_reward(reader, pool, record)
            if why is not None or reward != record.reward:
                notes.add(
                    "rewards that differ",
                    f"block {record.height} {record.hash}: credited {record.reward} wei, the chain "
                    f"pays {reward}" + (f" ({why})" if why else ""),
                )
            chain_total += reward
            recorded += record.reward
            credits = await reads.credits(record, matured)
            where = f"the credits of block {record.height} {record.hash}:"
            amounts = {login: _wei(v, f"{where} {login}", notes) for login, v in credits.items()}
            if sum(amounts.values()) != record.reward:
                notes.add(
                    "splits that differ",
                    f"block {record.height} {record.hash}: its credits add up to {sum(amounts.values())} "
                    f"wei, its reward is {record.reward}",
                )
            split_total += sum(amounts.values())
            for login, wei in amounts.items():
                _add(credited if matured else immature, login, wei)
            if matured:
                matured_credits += sum(amounts.values())
    result.check("block rewards credited vs the chain's", chain_total, recorded)
    result.check("credits of the blocks vs their rewards", recorded, split_total)

    # Payouts: each record against its transaction.
    watched = {u.tx_hash: u for u in await reads.ledger.unconfirmed()}
    on_chain: dict[str, int] = {}  # login -> wei its verified transfers took from its balance
    seen: set[str] = set()
    recorded_paid = chain_paid = 0
    for member in await reads.payments():
        tx_hash, _, rest = member.partition(":")
        login, _, shannon_text = rest.rpartition(":")
        recorded_paid += _wei(shannon_text, f"{keys.payments_all} member {member}", notes) * WEI_PER_SHANNON
        try:
            found = await transfer(reader, tx_hash)
        except NodeTrouble as e:
            notes.add("payouts unchecked", f"payout {tx_hash} to {login} unchecked: {e}")
            continue
        payout = watched.get(tx_hash)
        problem = _payout_problem(found, payer, login, payout.value if payout else None)
        if problem is not None or found is None:
            notes.add("payouts that differ", f"payout {tx_hash} to {login} {problem}")
            continue
        if tx_hash in seen:
            notes.add("payouts that differ", f"payout {tx_hash} is recorded more than once")
            continue
        if not found.mined:
            notes.add(
                "payouts not mined", f"payout {tx_hash} to {login} is in the node's pool, not mined yet"
            )
        seen.add(tx_hash)
        amount = payout.amount if payout else payout_amount(found, pool.payments.transaction_fee)
        chain_paid += amount // WEI_PER_SHANNON * WEI_PER_SHANNON
        _add(on_chain, login, amount)
    result.check(f"payouts recorded (Shannon) vs transfers from {payer}", recorded_paid, chain_paid)

    # Each login's amounts.
    miners = await reads.miners()
    held: dict[str, dict[str, int]] = {
        login: {name: _amount(fields, name, keys.miner(login), notes) for name in AMOUNTS}
        for login, fields in miners.items()
    }
    logins = (
        set(credited)
        | set(immature)
        | set(on_chain)
        | {login for login, amounts in held.items() if any(amounts.values())}
    )
    for login in sorted(logins):
        amounts = held.get(login, dict.fromkeys(AMOUNTS, 0))
        result.check(f"paid to {login} vs its transfers on chain", on_chain.get(login, 0), amounts[PAID])
        result.check(
            f"balance of {login} = credited - paid - pending",
            credited.get(login, 0) - amounts[PAID] - amounts[PENDING],
            amounts[BALANCE],
        )
        result.check(f"immature of {login} vs its immature blocks", immature.get(login, 0), amounts[IMMATURE])

    # The pool's totals, and the journal.
    finances = await reads.ledger.hash(keys.finances)
    for name in AMOUNTS:
        result.check(
            f"finances {name} vs the logins' sum",
            sum(a[name] for a in held.values()),
            _amount(finances, name, keys.finances, notes),
        )
    result.check(
        "finances totalMined vs the matured blocks' credits",
        matured_credits,
        _amount(finances, TOTAL_MINED, keys.finances, notes),
    )
    journal = await reads.ledger.journal()
    open_total = sum(e.amount for e in journal)
    result.check("pending vs the journal's open payouts", open_total, sum(a[PENDING] for a in held.values()))
    result.check("open payouts in the journal", 0, open_total)
    for entry in journal:
        notes.add(
            "open payouts",
            f"payout to {entry.login} (nonce {entry.nonce}, {entry.amount} wei) is open, {entry.state}: "
            "the next payout run settles it",
        )
    if watched:
        result.notes.append(f"{len(watched)} payouts not mined deep enough yet: the payer watches them")
    aside = await reads.ledger.aside()
    for login, why in sorted(aside.items()):
        notes.add("logins set aside", f"{login} is set aside ({why})")
    notes.close()
    return result
