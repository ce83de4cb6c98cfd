"""open-ethereum-pool's Redis schema, as its proxy writes it: key names, members, records.

The Ethereum family's pools write OEP's keys so OEP's API, unlocker and
payouts (and the tools built around them) read them as they read OEP's
own proxy. ``<coin>`` is the coin's name in lower case (OEP's ``eth``).
Amounts are integers, as OEP's are. The recorder's own bookkeeping lives
under ``<coin>:recorder:``, which OEP never reads.

As in nomp.store.schema, Python builds the names through this module and
the recorder's Lua through ``OEP_LUA_PRELUDE``, generated from the same
templates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nomp.candidate import BlockCandidate
from nomp.store.schema import (
    LUA_COMMON,
    LUA_SHARE_LOG,
    RecorderKeys,
    lua_key_function,
    lua_record_parser,
    lua_table,
)

# Keys the recorder's script builds itself (from a record's login, a
# candidate's height and nonce), and OEP's member layouts.
MINER = "{coin}:miners:{login}"
LOGIN_HASHRATE = "{coin}:hashrate:{login}"
ROUND = "{coin}:shares:round{height}:{nonce}"
HASHRATE_MEMBER = "{diff}:{login}:{worker}:{ms}"
LOGIN_HASHRATE_MEMBER = "{diff}:{worker}:{ms}"
CANDIDATE_MEMBER = "{nonce}:{header}:{mix}:{timestamp}:{difficulty}:{shares}"
LOGIN_PAYMENTS = "{coin}:payments:{login}"
PENDING_PAYMENT_MEMBER = "{login}:{amount}"
PAYMENT_MEMBER = "{tx}:{login}:{amount}"
LOGIN_PAYMENT_MEMBER = "{tx}:{amount}"

# The amounts of ``miners:<login>`` (and the pool's totals in ``finances``)
# OEP's API shows: whole Shannon, as OEP keeps them. The wei below a Shannon
# of each is kept beside it in ``dust_field(name)`` (0 to 10^9 - 1), so an
# amount is exact (``wei_of``) and both parts fit HINCRBY's int64; a script
# that changes one changes the other.
BALANCE = "balance"
PENDING = "pending"
PAID = "paid"
DUST_FIELD = "{name}Dust"
WEI_PER_SHANNON = 10**9

DEFAULT_WORKER = "0"  # OEP's worker name for a login given without one

PAYLOAD_SIZE = 72  # a candidate's payload: nonce (8 bytes) ‖ header hash (32) ‖ mix digest (32)


@dataclass(frozen=True, slots=True)
class OepKeys(RecorderKeys):
    """The keys of one Ethereum-family pool (and, from RecorderKeys, the recorder's batch
    numbers and set-aside list under ``<coin>:recorder:``)."""

    coin: str

    @classmethod
    def for_coin(cls, name: str) -> OepKeys:
        return cls(name.lower())

    @property
    def nodes(self) -> str:
        """hash: ``<name>:name``, ``<name>:height``, ``<name>:difficulty``, ``<name>:lastBeat`` (unix s)
        of each node the pool follows."""
        return f"{self.coin}:nodes"

    @property
    def stats(self) -> str:
        """hash: roundShares (the open round's summed difficulty), lastBlockFound (unix s); and
        validShares, invalidShares, which OEP's readers ignore."""
        return f"{self.coin}:stats"

    @property
    def finders(self) -> str:
        """zset: login -> blocks found."""
        return f"{self.coin}:finders"

    def miner(self, login: str) -> str:
        """hash: lastShare (unix s), blocksFound; the unlocker's and payouts' balances."""
        return MINER.format(coin=self.coin, login=login)

    @property
    def round_current(self) -> str:
        """hash: login -> summed difficulty of the open round's shares."""
        return f"{self.coin}:shares:roundCurrent"

    @property
    def share_log(self) -> str:
        """list, newest first: PPLNS shares (login and difficulty) in order, in segments
        (nomp.store.schema's ``encode_segment``); nomp's, OEP has no PPLNS."""
        return f"{self.coin}:shares:log"

    @property
    def share_log_total(self) -> str:
        """string: the summed difficulty of the share log."""
        return f"{self.coin}:shares:logTotal"

    def round(self, height: int, nonce_hex: str) -> str:
        """hash: login -> summed difficulty, the round the candidate at ``height`` with
        ``nonce_hex`` ("0x" and 16 hex digits) closed."""
        return ROUND.format(coin=self.coin, height=height, nonce=nonce_hex)

    @property
    def hashrate(self) -> str:
        """zset: score unix s, member ``hashrate_member(...)``."""
        return f"{self.coin}:hashrate"

    def hashrate_of(self, login: str) -> str:
        """zset, expiring: score unix s, member ``login_hashrate_member(...)``."""
        return LOGIN_HASHRATE.format(coin=self.coin, login=login)

    @property
    def blocks_candidates(self) -> str:
        """zset: score the height, member ``candidate_member(...)``; the unlocker takes them."""
        return f"{self.coin}:blocks:candidates"

    @property
    def recorder_candidates(self) -> str:
        """hash: block hash -> the JSON of what undoes a candidate not settled yet
        (``decode_recorded``)."""
        return f"{self.coin}:recorder:candidates"

    @property
    def recorder_found(self) -> str:
        """set: the block hash of every candidate recorded, so none is counted twice."""
        return f"{self.coin}:recorder:found"

    # -- the unlocker's (nomp.payments.ethledger) -----------------------------------

    @property
    def blocks_immature(self) -> str:
        """zset: score the block's height (an uncle's: its nephew's), member ``<uncle
        height>:<orphan 0/1>:<nonce>:<block hash>:<unix s>:<difficulty>:<round total>:<reward
        wei>`` (nomp.payments.ethledger.BlockRecord)."""
        return f"{self.coin}:blocks:immature"

    @property
    def blocks_matured(self) -> str:
        """zset: as blocks_immature, for blocks whose credit is final (or orphaned)."""
        return f"{self.coin}:blocks:matured"

    @property
    def credits_all(self) -> str:
        """zset: score the height, member ``<block hash>:<unix s>:<reward wei>`` of each block credited."""
        return f"{self.coin}:credits:all"

    def credits_immature(self, height: int, block_hash: str) -> str:
        """hash: login -> Shannon credited as immature by the block (until it matures or is orphaned)."""
        return f"{self.coin}:credits:immature:{height}:{block_hash}"

    def credits(self, height: int, block_hash: str) -> str:
        """hash: login -> Shannon the matured block credited to balances (kept)."""
        return f"{self.coin}:credits:{height}:{block_hash}"

    def credits_wei(self, height: int, block_hash: str) -> str:
        """hash: login -> the exact wei the block credits (immature, then matured; kept), which
        OEP's Shannon logs floor. Under ``<coin>:unlocker:``, which OEP never reads."""
        return f"{self.coin}:unlocker:credits:{height}:{block_hash}"

    @property
    def unlocker_lock(self) -> str:
        """string, expiring: the fencing token of the unlocker run that holds the pool."""
        return f"{self.coin}:unlocker:lock"

    @property
    def unlocker_fence(self) -> str:
        """string: the last fencing token handed out."""
        return f"{self.coin}:unlocker:fence"

    @property
    def finances(self) -> str:
        """hash: the pool's totals, ``balance``, ``immature``, ``pending``, ``paid`` and
        ``totalMined`` (Shannon) with their ``dust_field``s; the unlocker's
        ``lastCreditHeight`` and ``lastCreditHash``."""
        return f"{self.coin}:finances"

    @property
    def payments_pending(self) -> str:
        """zset: score unix s, member ``<login>:<amount in Shannon>``: a payout debited
        from its balance and not recorded paid yet."""
        return f"{self.coin}:payments:pending"

    @property
    def payments_lock(self) -> str:
        """string: OEP's payer holds it (``<login>:<amount>``) while a payout of its is under
        way, and refuses to start while it is there; nomp's payer never sets it and does not
        pay while it is there."""
        return f"{self.coin}:payments:lock"

    @property
    def payments_all(self) -> str:
        """zset: score unix s, member ``payment_member(...)``: every payout sent."""
        return f"{self.coin}:payments:all"

    def payments_of(self, login: str) -> str:
        """zset: score unix s, member ``login_payment_member(...)``: one login's payouts."""
        return LOGIN_PAYMENTS.format(coin=self.coin, login=login)

    @property
    def payouts_journal(self) -> str:
        """hash: login -> the JSON of its payout between its debit and its record
        (nomp.payments.ethpayledger's ``JournalEntry``)."""
        return f"{self.coin}:payouts:journal"

    @property
    def payouts_unconfirmed(self) -> str:
        """hash: transaction hash -> the JSON of a payout recorded paid and not mined yet."""
        return f"{self.coin}:payouts:unconfirmed"

    @property
    def payouts_aside(self) -> str:
        """hash: login -> why its payouts wait for the operator (a transfer to it failed)."""
        return f"{self.coin}:payouts:aside"


def split_worker(worker: str) -> tuple[str, str]:
    """(login, worker name) of "<login>.<worker>", split at the first dot; the login in
    lower case (as OEP's API looks it up), the worker "0" where none is given."""
    login, _, name = worker.partition(".")
    return login.lower(), name or DEFAULT_WORKER


def hashrate_member(diff: int, login: str, worker: str, ms: int) -> str:
    return HASHRATE_MEMBER.format(diff=diff, login=login, worker=worker, ms=ms)


def login_hashrate_member(diff: int, worker: str, ms: int) -> str:
    return LOGIN_HASHRATE_MEMBER.format(diff=diff, worker=worker, ms=ms)


def dust_field(name: str) -> str:
    """The field beside OEP's amount ``name`` holding its wei below a Shannon."""
    return DUST_FIELD.format(name=name)


def shannon(wei: int) -> int:
    """OEP's Shannon of a wei amount: whole Shannon, rounded down."""
    return wei // WEI_PER_SHANNON


def split_wei(wei: int) -> tuple[int, int]:
    """(Shannon, dust) of a wei amount; a negative one's dust is still 0 to 10^9 - 1."""
    return divmod(wei, WEI_PER_SHANNON)


def wei_of(shannon_text: str | None, dust_text: str | None) -> int:
    """The wei an amount and its dust field hold (absent fields are 0)."""
    return int(shannon_text or 0) * WEI_PER_SHANNON + int(dust_text or 0)


def pending_payment_member(login: str, amount_shannon: int) -> str:
    return PENDING_PAYMENT_MEMBER.format(login=login, amount=amount_shannon)


def payment_member(tx_hash: str, login: str, amount_shannon: int) -> str:
    return PAYMENT_MEMBER.format(tx=tx_hash, login=login, amount=amount_shannon)


def login_payment_member(tx_hash: str, amount_shannon: int) -> str:
    return LOGIN_PAYMENT_MEMBER.format(tx=tx_hash, amount=amount_shannon)


def candidate_member(nonce: str, header: str, mix: str, timestamp: int, difficulty: int, shares: int) -> str:
    return CANDIDATE_MEMBER.format(
        nonce=nonce, header=header, mix=mix, timestamp=timestamp, difficulty=difficulty, shares=shares
    )


@dataclass(frozen=True, slots=True)
class Seal:
    """A candidate's proof of work as OEP writes it: 0x-prefixed lower-case hex."""

    nonce: str  # 16 digits
    header: str  # 64 digits: the header (seal) hash the work was for
    mix: str  # 64 digits


def decode_payload(payload: bytes) -> Seal:
    """The seal of an Ethereum-family candidate's payload; ValueError if it is not one."""
    if len(payload) != PAYLOAD_SIZE:
        raise ValueError(f"an Ethereum block candidate's payload is {PAYLOAD_SIZE} bytes, not {len(payload)}")
    return Seal("0x" + payload[:8].hex(), "0x" + payload[8:40].hex(), "0x" + payload[40:].hex())


# -- the recorder's records ---------------------------------------------------------
#
# A line each, fields split by tabs, the kind first (see nomp.store.batches):
#   s <login> <worker> <diff> <unix s> <ms>   a valid share
#   o <login> <worker> <diff> <unix s> <ms>   a valid share mined solo (in no shared round)
#   i <login.worker>                          an invalid share
#   c <block hash> <candidate JSON>           a block candidate: closes its round here
#   a <block hash>, r <block hash>            the node accepted / refused it
# <ms> is the member's millisecond, unique per login and worker (see EthShareRecorder).

RECORD_FIELDS = {"s": 6, "o": 6, "i": 2, "c": 3, "a": 2, "r": 2}

# The candidate JSON's fields, every value a string (Lua's cjson would
# print numbers with 14 digits).
CANDIDATE_FIELDS = ("height", "nonce", "header", "mix", "login", "time", "difficulty", "solo")

# What the script keeps of a candidate in recorder_candidates, to undo it.
RECORDED_FIELDS = ("height", "nonce", "login", "round", "member", "time", "alone", "last_found")


def share_record(login: str, worker: str, diff: int, seconds: int, ms: int, solo: bool) -> str:
    return f"{'o' if solo else 's'}\t{login}\t{worker}\t{diff}\t{seconds}\t{ms}"


def invalid_record(worker: str) -> str:
    return f"i\t{worker}"


def candidate_record(candidate: BlockCandidate) -> str:
    """The record of a candidate; ValueError if its payload is not an Ethereum seal."""
    seal = decode_payload(candidate.payload)
    login, _ = split_worker(candidate.worker)
    fields = {
        "height": str(candidate.height),
        "nonce": seal.nonce,
        "header": seal.header,
        "mix": seal.mix,
        "login": login,
        "time": str(int(candidate.found_at)),
        "difficulty": str(int(candidate.network_difficulty)),
        "solo": "1" if candidate.solo else "0",
    }
    return f"c\t{candidate.block_hash}\t{json.dumps(fields, sort_keys=True)}"


@dataclass(frozen=True, slots=True)
class RecordedCandidate:
    """A candidate recorded and not settled yet, as recorder_candidates holds it."""

    block_hash: str
    height: int
    nonce: str
    login: str
    round_key: str
    member: str  # its blocks:candidates member
    found_at: int  # unix s
    alone: bool  # its round is the finder's alone (solo, or no shared shares when found)
    last_found: int | None  # lastBlockFound before it, to put back if it is refused


def decode_recorded(block_hash: str, value: str) -> RecordedCandidate:
    """A recorder_candidates entry; ValueError (or KeyError) if it is not one."""
    fields = json.loads(value)
    if not isinstance(fields, dict):
        raise ValueError(f"not a recorded candidate: {value!r}")
    last_found = str(fields["last_found"])
    return RecordedCandidate(
        block_hash=block_hash,
        height=int(fields["height"]),
        nonce=str(fields["nonce"]),
        login=str(fields["login"]),
        round_key=str(fields["round"]),
        member=str(fields["member"]),
        found_at=int(fields["time"]),
        alone=fields["alone"] == "1",
        last_found=int(last_found) if last_found else None,
    )


# -- the same, for Lua -------------------------------------------------------------

OEP_LUA_PRELUDE = "\n".join(
    [
        "-- open-ethereum-pool's Redis schema (nomp.store.oepschema)",
        lua_key_function("miner_key", MINER),
        lua_key_function("login_hashrate_key", LOGIN_HASHRATE),
        lua_key_function("round_key", ROUND),
        lua_key_function("hashrate_member", HASHRATE_MEMBER),
        lua_key_function("login_hashrate_member", LOGIN_HASHRATE_MEMBER),
        lua_key_function("candidate_member", CANDIDATE_MEMBER),
        "local candidate_fields = " + lua_table(CANDIDATE_FIELDS),
        "local recorded_fields = " + lua_table(RECORDED_FIELDS),
        LUA_COMMON,
        LUA_SHARE_LOG,
        lua_record_parser(RECORD_FIELDS),
        # OEP's amounts are int64, past the 2^53 a Lua number holds exactly:
        # decimal sums are kept in two parts, below and above 10^9.
        r"""
local function new_sum() return {hi = 0, lo = 0} end
local function sum_add(sum, text)
  if #text > 9 and string.match(text, '^%d+$') then
    sum.hi = sum.hi + tonumber(string.sub(text, 1, -10))
    sum.lo = sum.lo + tonumber(string.sub(text, -9))
  else
    sum.lo = sum.lo + (tonumber(text) or 0)
  end
end
local function sum_text(sum)
  local carry = math.floor(sum.lo / 1e9)
  local hi, lo = sum.hi + carry, sum.lo - carry * 1e9
  if hi <= 0 then return string.format('%.0f', hi * 1e9 + lo) end
  return string.format('%d%09d', hi, lo)
end
local function integer_text(x) return type(x) == 'string' and string.match(x, '^%d+$') ~= nil end
local function hex_text(x, digits)
  return type(x) == 'string' and #x == digits + 2 and string.match(x, '^0x%x+$') ~= nil
end
""",
    ]
)
