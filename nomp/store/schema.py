"""The Redis schema: every key name nomp uses and every value it encodes, in one place.

NOMP's keys and member formats are kept so NOMP's tools can read them:
``<coin>`` is the coin's name in lower case. Python code builds and reads
them through this module; Lua scripts through ``LUA_PRELUDE``, generated
here from the same formats, so no script spells a key name or a member
layout of its own.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from nomp.candidate import BlockCandidate

# The key names Lua scripts build themselves (a block's hash, a round's
# height are only known inside the script), as str.format templates: the
# Python properties below and the Lua functions of LUA_PRELUDE both fill them.
ROUND = "{coin}:shares:round{height}"
ROUND_TAKEN = "{round}:{block_hash}"  # a round key already used by a block at that height
BLOCK = "{coin}:block:{block_hash}"

# The fields of ``<coin>:block:<hash>``, in the order they are written.
BLOCK_FIELDS = ("height", "txid", "worker", "time", "reward", "round", "solo", "shares", "difficulty")

NO_TXID = "-"  # in a blocksPending member: the coinbase txid is unknown (or the chain has none)


class RecorderKeys:
    """The share recorder's own keys (nomp.store.batches), the same under every schema."""

    __slots__ = ()
    coin: str

    def recorder(self, recorder_id: str) -> str:
        """string, expiring: the number of the last batch of records a recorder wrote."""
        return f"{self.coin}:recorder:{recorder_id}"

    @property
    def recorder_set_aside(self) -> str:
        """list: ``encode_set_aside(...)`` of each batch of share records Redis refused."""
        return f"{self.coin}:recorder:setAside"


@dataclass(frozen=True, slots=True)
class PoolKeys(RecorderKeys):
    """The keys of one pool."""

    coin: str

    @classmethod
    def for_coin(cls, name: str) -> PoolKeys:
        return cls(name.lower())

    @property
    def round_current(self) -> str:
        """hash: worker -> summed difficulty of the valid shares of the current round."""
        return f"{self.coin}:shares:roundCurrent"

    def round(self, height: int) -> str:
        """hash: the shares of the round a block at ``height`` ended."""
        return ROUND.format(coin=self.coin, height=height)

    def round_taken(self, height: int, block_hash: str) -> str:
        """hash: the round of a second block of ours at ``height`` (the first has ``round``)."""
        return ROUND_TAKEN.format(round=self.round(height), block_hash=block_hash)

    @property
    def stats(self) -> str:
        """hash: validShares, invalidShares, validBlocks, invalidBlocks counters."""
        return f"{self.coin}:stats"

    @property
    def hashrate(self) -> str:
        """zset: score unix seconds, member ``hashrate_member(...)``."""
        return f"{self.coin}:hashrate"

    @property
    def blocks_pending(self) -> str:
        """set: ``pending_member(...)`` of blocks the daemon accepted, not yet mature."""
        return f"{self.coin}:blocksPending"

    @property
    def blocks_found(self) -> str:
        """set: hashes of every block candidate recorded, so none is recorded twice."""
        return f"{self.coin}:blocksFound"

    @property
    def blocks_candidates(self) -> str:
        """hash: block hash -> ``encode_candidate(...)`` of a candidate whose daemon answer is
        not recorded yet (its round is closed already)."""
        return f"{self.coin}:blocksCandidates"

    def block(self, block_hash: str) -> str:
        """hash: one found block, the fields BLOCK_FIELDS (and the payment state)."""
        return BLOCK.format(coin=self.coin, block_hash=block_hash)

    @property
    def share_log(self) -> str:
        """list, newest first: PPLNS shares in order, in segments (``encode_segment``)."""
        return f"{self.coin}:shares:log"

    @property
    def share_log_total(self) -> str:
        """string: the summed difficulty of the share log."""
        return f"{self.coin}:shares:logTotal"

    # Payments. Amounts are integer satoshis (NOMP's balances were float
    # coins, so these keys have names of their own).

    @property
    def blocks_confirmed(self) -> str:
        """set: members of blocksPending whose reward was credited as mature."""
        return f"{self.coin}:blocksConfirmed"

    @property
    def blocks_orphaned(self) -> str:
        """set: members of blocksPending that left the main chain (or copied a paid coinbase)."""
        return f"{self.coin}:blocksOrphaned"

    @property
    def payment_lock(self) -> str:
        """string, expiring: the fencing token of the payment run that holds the pool."""
        return f"{self.coin}:pay:lock"

    @property
    def payment_fence(self) -> str:
        """string: the last fencing token handed out."""
        return f"{self.coin}:pay:fence"

    @property
    def immature(self) -> str:
        """hash: address -> satoshis credited from blocks not yet mature."""
        return f"{self.coin}:pay:immature"

    @property
    def balances(self) -> str:
        """hash: address -> satoshis mature and not yet paid."""
        return f"{self.coin}:pay:balance"

    @property
    def paid(self) -> str:
        """hash: address -> satoshis paid, all time."""
        return f"{self.coin}:pay:paid"

    @property
    def payment_totals(self) -> str:
        """hash of satoshis: immature, credited (to miners), kept (by the pool), paid, txfees."""
        return f"{self.coin}:pay:totals"

    @property
    def credited_coinbases(self) -> str:
        """set: coinbase txids whose reward was credited; none is credited twice."""
        return f"{self.coin}:pay:creditedCoinbases"

    @property
    def journal(self) -> str:
        """string: the JSON of the payout batch being sent, if any."""
        return f"{self.coin}:pay:journal"

    @property
    def payments(self) -> str:
        """zset: score unix seconds, member the JSON of a payout sent (id, txid, amounts, fee)."""
        return f"{self.coin}:payments"

    @property
    def payout_minimums(self) -> str:
        """hash: address -> satoshis, a miner's own payout threshold (instead of minimum_payment)."""
        return f"{self.coin}:pay:minimum"

    @property
    def set_aside(self) -> str:
        """hash: address -> why the wallet will not pay it; its balance waits."""
        return f"{self.coin}:pay:setAside"

    @property
    def miner_history(self) -> str:
        """zset: score unix seconds, member the JSON of one sample of every miner's hashrate
        ({"time": t, "miners": {address: hashes/s}}), kept for the web's retention."""
        return f"{self.coin}:minerHistory"

    @property
    def bans(self) -> str:
        """zset: score unix seconds the ban ends, member the banned IP (shared by the pool's processes)."""
        return f"{self.coin}:bans"

    @property
    def ban_reasons(self) -> str:
        """hash: banned IP -> why it was banned."""
        return f"{self.coin}:bans:reasons"


@dataclass(frozen=True, slots=True)
class InstanceKeys:
    """The keys pool processes sharing one Redis database tell their
    extranonce1 instance bytes apart by (not NOMP's: NOMP had no such byte)."""

    namespace: str = "nomp"

    def lease(self, instance: int) -> str:
        """string, expiring: the holder of instance byte ``instance`` ("<host>:<pid>:<random>")."""
        return f"{self.namespace}:instance:{instance}"


@dataclass(frozen=True, slots=True)
class SwitchKeys:
    """The keys of the coin-switching ports (nomp.switching). NOMP kept the
    current coin in one ``proxyState`` hash by algorithm; nomp keeps it per
    switch, by the switch's name, so two switches of one algorithm are apart."""

    namespace: str = "nomp"

    def current(self, switch: str) -> str:
        """string: the name of the pool switch ``switch``'s miners mine for."""
        return f"{self.namespace}:switching:{switch}:current"


@dataclass(frozen=True, slots=True)
class WebKeys:
    """The keys of the web API, shared by every pool (NOMP's portal keys)."""

    @property
    def stat_history(self) -> str:
        """zset: score unix seconds, member the JSON of a reduced stats entry (see /api/pool_stats)."""
        return "statHistory"


# -- <coin>:hashrate members ---------------------------------------------------


def hashrate_member(difficulty: float, worker: str, ms: int, unique: str) -> str:
    """NOMP's "<difficulty>:<worker>:<ms>" plus an id, so that two shares in one
    millisecond stay two entries; NOMP's readers use the first two fields. The
    difficulty is negative for an invalid share."""
    return f"{difficulty:.10g}:{worker}:{ms}:{unique}"


def parse_hashrate_member(member: str) -> tuple[float, str] | None:
    """(difficulty, worker) of a hashrate member, or None if it is not one. The
    worker is taken between the first and the last two colons, so a worker name
    holding a colon still parses."""
    difficulty, _, rest = member.partition(":")
    parts = rest.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        return None
    try:
        return float(difficulty), parts[0]
    except ValueError:
        return None


# -- <coin>:blocksPending members (also in blocksConfirmed, blocksOrphaned) ------


@dataclass(frozen=True, slots=True)
class PendingMember:
    """A blocksPending member "<hash>:<coinbase txid>:<height>:<worker>:<ms>"."""

    block_hash: str
    txid: str | None  # None: not known when the block was recorded
    height: int
    worker: str
    ms: int  # unix milliseconds the block was found

    def encode(self) -> str:
        return pending_member(self.block_hash, self.txid, self.height, self.worker, self.ms)


def pending_member(block_hash: str, txid: str | None, height: int, worker: str, ms: int) -> str:
    return f"{block_hash}:{txid or NO_TXID}:{height}:{worker}:{ms}"


def decode_pending_member(member: str) -> PendingMember:
    """The fields of a blocksPending member; ValueError if it is not one. The
    worker is everything between the height and the time, colons included."""
    parts = member.split(":")
    if len(parts) < 5 or not parts[0]:
        raise ValueError(f"not a block member: {member!r}")
    block_hash, txid, height, ms = parts[0], parts[1], parts[2], parts[-1]
    return PendingMember(
        block_hash, None if txid == NO_TXID else txid, int(height), ":".join(parts[3:-1]), int(ms)
    )


def pending_member_hash(member: str) -> str:
    """The block hash of a blocksPending member (its first field)."""
    return member.split(":", 1)[0]


# -- <coin>:blocksCandidates values ---------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredCandidate:
    """A block candidate as Redis holds it until it is settled."""

    block_hash: str
    coinbase_txid: str  # "" where unknown
    height: int
    worker: str
    reward: int
    solo: bool
    network_difficulty: float  # in share units; 0: unknown
    found_at: float  # unix seconds, to the millisecond
    round_key: str  # the round the candidate closed
    round_shares: float  # the round's work when it was found (for its effort)
    pending_member: str  # its blocksPending member, once accepted
    recorder: str  # the id of the recorder that wrote it


def encode_candidate(candidate: BlockCandidate, recorder: str) -> str:
    """The candidate's value as the recorder hands it to its script, which adds
    ``round`` and ``shares`` (the round it closes, and that round's work) before
    storing it. Every value is a string: Lua's cjson would turn numbers into
    doubles and print them with 14 digits."""
    ms = int(candidate.found_at * 1000)
    fields = {
        "height": str(candidate.height),
        "txid": candidate.coinbase_txid or NO_TXID,
        "worker": candidate.worker,
        "time": str(ms),
        "reward": str(candidate.reward),
        "solo": "1" if candidate.solo else "0",
        "difficulty": repr(candidate.network_difficulty),
        "pending": pending_member(
            candidate.block_hash, candidate.coinbase_txid, candidate.height, candidate.worker, ms
        ),
        "recorder": recorder,
    }
    return json.dumps(fields, sort_keys=True)


def decode_candidate(block_hash: str, value: str) -> StoredCandidate:
    """A blocksCandidates entry; ValueError (or KeyError) if it is not one of ours."""
    fields = json.loads(value)
    if not isinstance(fields, dict):
        raise ValueError(f"not a candidate: {value!r}")
    txid = str(fields["txid"])
    return StoredCandidate(
        block_hash=block_hash,
        coinbase_txid="" if txid == NO_TXID else txid,
        height=int(fields["height"]),
        worker=str(fields["worker"]),
        reward=int(fields["reward"]),
        solo=fields["solo"] == "1",
        network_difficulty=float(fields["difficulty"]),
        found_at=int(fields["time"]) / 1000,
        round_key=str(fields["round"]),
        round_shares=float(fields["shares"]),
        pending_member=str(fields["pending"]),
        recorder=str(fields.get("recorder", "")),
    )


# -- <coin>:shares:log segments (PPLNS) -----------------------------------------


def encode_segment(entries: Sequence[tuple[str, float]]) -> str:
    """One segment of the share log: "<sum>\\n<worker>\\t<difficulty>\\n...", oldest share first."""
    total = sum(difficulty for _, difficulty in entries)
    return "\n".join([f"{total:.17g}", *(f"{worker}\t{difficulty!r}" for worker, difficulty in entries)])


def decode_segment(segment: str) -> tuple[float, list[tuple[str, float]]]:
    """(sum, [(worker, difficulty)...]) of a share log segment."""
    head, *lines = segment.split("\n")
    entries = []
    for line in lines:
        worker, _, difficulty = line.partition("\t")
        entries.append((worker, float(difficulty)))
    return float(head), entries


# -- the share recorder's records --------------------------------------------------
#
# One string per batch, a line per record, fields split by tabs (worker
# names can hold neither), so the client encodes one argument, not five per
# share. The first field is the kind:
#   s <worker> <difficulty> <score> <member>   a valid share
#   o <worker> <difficulty> <score> <member>   a valid share mined solo (in no shared round)
#   i <score> <member>                         an invalid share
#   c <hash> <encode_candidate(...)>           a block candidate: closes its round here
#   a <hash>                                   the daemon accepted the candidate
#   r <hash>                                   the daemon refused it

RECORD_FIELDS: Mapping[str, int] = {"s": 5, "o": 5, "i": 3, "c": 3, "a": 2, "r": 2}
BLOCK_RECORDS = frozenset("car")  # the kinds that are about blocks, not shares


def share_record(worker: str, difficulty: float, score: float, member: str, solo: bool) -> str:
    return f"{'o' if solo else 's'}\t{worker}\t{difficulty!r}\t{score!r}\t{member}"


def invalid_record(score: float, member: str) -> str:
    return f"i\t{score!r}\t{member}"


def candidate_record(candidate: BlockCandidate, recorder: str) -> str:
    return f"c\t{candidate.block_hash}\t{encode_candidate(candidate, recorder)}"


def settlement_record(block_hash: str, accepted: bool) -> str:
    return f"{'a' if accepted else 'r'}\t{block_hash}"


def record_kind(record: str) -> str:
    return record.split("\t", 1)[0]


# -- <coin>:recorder:setAside entries ---------------------------------------------


@dataclass(frozen=True, slots=True)
class SetAsideBatch:
    """A batch of records Redis refused, kept for an operator to look at (and replay)."""

    reason: str
    time: float  # unix seconds it was set aside
    recorder: str
    batch: int
    records: tuple[str, ...]


def encode_set_aside(reason: str, time: float, recorder: str, batch: int, records: Iterable[str]) -> str:
    return json.dumps(
        {"reason": reason, "time": time, "recorder": recorder, "batch": batch, "records": list(records)},
        sort_keys=True,
    )


def decode_set_aside(text: str) -> SetAsideBatch:
    data = json.loads(text)
    return SetAsideBatch(
        str(data["reason"]),
        float(data["time"]),
        str(data["recorder"]),
        int(data["batch"]),
        tuple(str(r) for r in data["records"]),
    )


# -- the same, for Lua ------------------------------------------------------------------


def lua_string(text: str) -> str:
    """``text`` as a Lua string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def lua_key_function(name: str, template: str) -> str:
    """A Lua function building the key (or member) ``template`` names, its fields as
    parameters in order."""
    parts: list[str] = []
    params: list[str] = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        if literal:
            parts.append(lua_string(literal))
        if field is not None:
            if spec or conversion or not field.isidentifier():
                raise ValueError(f"{template!r}: only plain fields can be made Lua")
            if field not in params:
                params.append(field)
            parts.append(field)
    return f"local function {name}({', '.join(params)}) return {' .. '.join(parts)} end"


def lua_table(values: Iterable[str]) -> str:
    """``values`` as a Lua array of strings."""
    return "{" + ", ".join(lua_string(v) for v in values) + "}"


# What every recorder's script needs, whatever its schema. Lua numbers print
# with 14 digits, hence ``number``.
LUA_COMMON = r"""
local function number(x) return string.format('%.17g', x) end
local function wrong_type(key, expected)
  local found = redis.call('TYPE', key)['ok']
  if found == 'none' or found == expected then return nil end
  return 'WRONGTYPE ' .. key .. ' holds a ' .. found .. ', not a ' .. expected
end
"""


def lua_record_parser(record_fields: Mapping[str, int]) -> str:
    """Lua's ``parse_records(text)``: the records of a batch (a line each, tab-separated
    fields, the kind first), each an array of its fields; or nil and why, if a record's
    kind is not one of ``record_fields`` or has not that many fields. A candidate's
    (kind "c") third field is JSON, decoded."""
    counts = ", ".join(f"{kind} = {count}" for kind, count in record_fields.items())
    return f"local record_fields = {{{counts}}}\n" + _PARSE_RECORDS


_PARSE_RECORDS = r"""
local function parse_records(text)
  local records = {}
  for line in string.gmatch(text, '[^\n]+') do
    local fields = {}
    for field in string.gmatch(line, '[^\t]+') do fields[#fields + 1] = field end
    if record_fields[fields[1]] ~= #fields then return nil, 'malformed record: ' .. line end
    if fields[1] == 'c' then
      local ok, candidate = pcall(cjson.decode, fields[3])
      if not ok or type(candidate) ~= 'table' then return nil, 'malformed candidate: ' .. line end
      fields[3] = candidate
    end
    records[#records + 1] = fields
  end
  return records
end
"""

# The PPLNS share log's segments (``encode_segment``), for every recorder
# whose round policy keeps one (nomp.payments.rounds).
LUA_SHARE_LOG = r"""
local function segment_line(worker, difficulty) return worker .. '\t' .. difficulty end
local function segment_encode(sum, lines) return number(sum) .. '\n' .. table.concat(lines, '\n') end
local function segment_sum(segment) return tonumber(string.match(segment, '^[^\n]+')) end
local function segment_entries(segment)
  local entries, first = {}, true
  for line in string.gmatch(segment, '[^\n]+') do
    if first then
      first = false
    else
      local tab = string.find(line, '\t', 1, true)
      entries[#entries + 1] = {string.sub(line, 1, tab - 1), tonumber(string.sub(line, tab + 1))}
    end
  end
  return entries
end
"""

# Every function below is local to the script it is prepended to; a script
# uses what it needs.
LUA_PRELUDE = "\n".join(
    [
        "-- the Redis schema (nomp.store.schema)",
        lua_key_function("round_key", ROUND),
        lua_key_function("round_key_taken", ROUND_TAKEN),
        lua_key_function("block_key", BLOCK),
        "local block_fields = " + lua_table(BLOCK_FIELDS),
        LUA_COMMON,
        lua_record_parser(RECORD_FIELDS),
        r"""
local function pending_member_hash(member) return string.match(member, '^[^:]+') end
local function hashrate_fields(member)
  local d, worker = string.match(member, '^([^:]*):(.+):[^:]*:[^:]*$')
  return tonumber(d), worker
end
""",
        LUA_SHARE_LOG,
    ]
)
