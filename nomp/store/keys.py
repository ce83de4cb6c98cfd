"""Every Redis key nomp uses, in one place.

NOMP's schema is kept so NOMP's tools can read it: ``<coin>`` is the coin's
name in lower case.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolKeys:
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
        return f"{self.coin}:shares:round{height}"

    @property
    def stats(self) -> str:
        """hash: validShares, invalidShares, validBlocks, invalidBlocks counters."""
        return f"{self.coin}:stats"

    @property
    def hashrate(self) -> str:
        """zset: score unix seconds, member "<difficulty>:<worker>:<ms>:<id>";
        the difficulty is negative for an invalid share."""
        return f"{self.coin}:hashrate"

    @property
    def blocks_pending(self) -> str:
        """set: "<blockhash>:<coinbase txid>:<height>:<worker>:<ms>" of blocks not yet mature."""
        return f"{self.coin}:blocksPending"

    @property
    def blocks_found(self) -> str:
        """set: hashes of every block recorded, so none is recorded twice."""
        return f"{self.coin}:blocksFound"

    def block(self, block_hash: str) -> str:
        """hash: one found block: height, txid, worker, time, reward, round key."""
        return f"{self.coin}:block:{block_hash}"

    @property
    def share_log(self) -> str:
        """list, newest first: segments "<sum>\\n<worker>\\t<difficulty>..." of PPLNS shares in order."""
        return f"{self.coin}:shares:log"

    @property
    def share_log_total(self) -> str:
        """string: the summed difficulty of the share log."""
        return f"{self.coin}:shares:logTotal"

    def recorder(self, recorder_id: str) -> str:
        """string, expiring: the number of the last batch of records a recorder wrote."""
        return f"{self.coin}:recorder:{recorder_id}"

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
class WebKeys:
    """The keys of the web API, shared by every pool (NOMP's portal keys)."""

    @property
    def stat_history(self) -> str:
        """zset: score unix seconds, member the JSON of a reduced stats entry (see /api/pool_stats)."""
        return "statHistory"
