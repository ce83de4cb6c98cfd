"""Round policies: how a block candidate closes its round, per payment scheme.

A round is the hash a block's reward is split by (worker -> weight). The
share recorder closes it in Redis at the candidate's place among the
shares, inside its batch script, and reopens it if the daemon refuses the
block; what "the round" is belongs to the payment scheme, so the Lua doing
it lives here and the recorder splices it into its script:

- ``prop``: the shares since the last block (roundCurrent, renamed); a
  refused block's shares go back into the current round;
- ``pplns``: the last ``pplns_window`` difficulty of shares before the
  block, read back from the share log (newest segment first), the oldest
  share counted in part so the window is exact; the log keeps only what a
  later window can still reach;
- ``solo``, and any block found on a solo port: the finder alone.

Both families' recorders splice the same fragments: NOMP's keys for the
Bitcoin family (nomp.store.recorder), open-ethereum-pool's for the
Ethereum family (nomp.store.oep). What differs between them is how a share
amount is added to a round: NOMP's rounds hold float difficulty
(HINCRBYFLOAT), OEP's integer difficulty past 2^53 (HINCRBY), so the
recorder says which with ``round_add``.

The fragment's contract with the recorder's script. The script defines,
before the fragment: nomp.store.schema's LUA_COMMON and segment functions,
``round_current`` (the key), ``round_add(key, worker, amount)`` (adds the
amount, a decimal string, to a round's field), ``policy_keys`` and
``policy_args`` (the policy's ``keys(...)`` and ``args`` as Lua arrays).
The fragment defines:

- ``policy_check()``: nil, or why one of its keys cannot be written (a
  wrong type); called before the script writes anything;
- ``policy_share(worker, difficulty)``: a valid share of the shared round;
- ``policy_flush()``: the batch's shares so far are being written;
- ``policy_close(round, finder)``: close the current round into the key
  ``round`` (which does not exist yet);
- ``policy_reopen(round)``: the daemon refused the block that closed
  ``round``: undo the close as far as the scheme can, and delete ``round``;
- ``policy_empty()``: whether a round closed now would hold no shares
  (the Ethereum recorder then credits the finder alone; under ``solo``
  always);
- ``finder_close(round, finder)``, ``finder_reopen(round)``: the same for a
  block whose round is its finder alone (a solo port's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from nomp.store.batches import ShareLogKeys

_FINDER_ALONE = """
local function finder_close(round, finder) redis.call('HSET', round, finder, '1') end
local function finder_reopen(round) redis.call('DEL', round) end
"""

_PROP = """
local function policy_check() return nil end
local function policy_share(worker, difficulty) end
local function policy_flush() end
local function policy_close(round, finder)
  if redis.call('EXISTS', round_current) == 1 then redis.call('RENAME', round_current, round) end
end
local function policy_reopen(round)
  local shares = redis.call('HGETALL', round)
  for i = 1, #shares, 2 do round_add(round_current, shares[i], shares[i + 1]) end
  redis.call('DEL', round)
end
local function policy_empty() return redis.call('EXISTS', round_current) == 0 end
"""

_SOLO = """
local function policy_check() return nil end
local function policy_share(worker, difficulty) end
local function policy_flush() end
local policy_close, policy_reopen = finder_close, finder_reopen
local function policy_empty() return true end
"""

# policy_keys: the share log, its total. policy_args: the window.
_PPLNS = """
local share_log, share_log_total = policy_keys[1], policy_keys[2]
local window = tonumber(policy_args[1])
local log_lines, log_sum = {}, 0
local function policy_check()
  return wrong_type(share_log, 'list') or wrong_type(share_log_total, 'string')
end
local function policy_share(worker, difficulty)
  log_lines[#log_lines + 1] = segment_line(worker, difficulty)
  log_sum = log_sum + tonumber(difficulty)
end
local function policy_flush()
  if #log_lines == 0 then return end
  redis.call('LPUSH', share_log, segment_encode(log_sum, log_lines))
  local total = tonumber(redis.call('INCRBYFLOAT', share_log_total, number(log_sum)))
  while true do
    local oldest = redis.call('LINDEX', share_log, -1)
    if not oldest or total - segment_sum(oldest) < window then break end
    redis.call('RPOP', share_log)
    total = total - segment_sum(oldest)
  end
  redis.call('SET', share_log_total, number(total))
  log_lines, log_sum = {}, 0
end
local function policy_close(round, finder)
  local need, index, kept, done = window, 0, 0, false
  local weights, names = {}, {}
  while not done do
    local chunk = redis.call('LRANGE', share_log, index, index + 99)
    if #chunk == 0 then break end
    for _, segment in ipairs(chunk) do
      index = index + 1
      kept = kept + segment_sum(segment)
      local entries = segment_entries(segment)
      for i = #entries, 1, -1 do
        local worker = entries[i][1]
        local take = math.min(entries[i][2], need)
        if weights[worker] == nil then weights[worker] = 0; names[#names + 1] = worker end
        weights[worker] = weights[worker] + take
        need = need - take
        if need <= 0 then done = true; break end
      end
      if done then break end
    end
  end
  if index > 0 then redis.call('LTRIM', share_log, 0, index - 1) end
  redis.call('SET', share_log_total, number(kept))
  for _, worker in ipairs(names) do
    round_add(round, worker, number(weights[worker]))
  end
  -- roundCurrent only counts the round's work (the next block's effort)
  redis.call('DEL', round_current)
end
local function policy_reopen(round) redis.call('DEL', round) end
local function policy_empty() return redis.call('EXISTS', share_log) == 0 end
"""


class SchemeSettings(Protocol):
    """A pool's payment scheme, as either family's payments config gives it."""

    @property
    def scheme(self) -> str: ...

    @property
    def pplns_window(self) -> float: ...


def _no_keys(keys: ShareLogKeys) -> tuple[str, ...]:
    return ()


def _share_log_keys(keys: ShareLogKeys) -> tuple[str, ...]:
    return keys.share_log, keys.share_log_total


@dataclass(frozen=True, slots=True)
class RoundPolicy:
    """One scheme's round closing, as Lua for the share recorder's script."""

    scheme: str
    lua: str  # the scheme's fragment (see the module's docstring)
    args: tuple[str, ...] = ()  # appended to the script's ARGV, read as policy_args
    keys: Callable[[ShareLogKeys], tuple[str, ...]] = field(default=_no_keys)  # appended to KEYS

    @property
    def fragment(self) -> str:
        """The Lua the recorder splices into its script: the scheme's and the finder-alone functions."""
        return _FINDER_ALONE + self.lua


PROP = RoundPolicy("prop", _PROP)
SOLO = RoundPolicy("solo", _SOLO)


def pplns(window: float) -> RoundPolicy:
    """PPLNS over the last ``window`` of share difficulty (difficulty-1 shares in
    the Bitcoin family, hashes in the Ethereum family)."""
    if not window > 0:
        raise ValueError(f"the PPLNS window must be > 0, not {window!r}")
    return RoundPolicy("pplns", _PPLNS, (repr(float(window)),), _share_log_keys)


def round_policy(payments: SchemeSettings) -> RoundPolicy:
    """The round policy of a pool's payment scheme."""
    if payments.scheme == "pplns":
        return pplns(payments.pplns_window)
    if payments.scheme == "solo":
        return SOLO
    return PROP
