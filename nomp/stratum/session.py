"""MinerSession: what the pool knows of one miner's connection. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from nomp.stratum.vardiff import VarDiffState

MAX_WORKER_NAME = 128
MAX_JOBS_REMEMBERED = 32


@dataclass
class MinerSession:
    """One connection's state: subscription, workers, difficulty.

    ``sent`` remembers the difficulty each job was last sent under, so a
    share is judged by the difficulty the miner had when it got the job
    (or the current one, if that is lower).
    """

    difficulty: float
    connected_at: float
    extranonce1: bytes | None = None
    user_agent: str = ""
    workers: dict[str, str] = field(default_factory=dict)  # name -> password
    sent: dict[str, float] = field(default_factory=dict)
    vardiff: VarDiffState | None = None
    valid_shares: int = 0
    invalid_shares: int = 0
    malformed: int = 0  # requests that could not be read
    version_mask: int = 0  # header version bits it may roll (BIP310); 0: none
    minimum_difficulty: float = 0.0  # the floor it asked for with mining.configure
    extranonce_subscribed: bool = False  # it takes mining.set_extranonce
    # job id -> the extranonce1 it was sent with, for jobs sent before the
    # last mining.set_extranonce (empty until one is sent)
    earlier_extranonce1: dict[str, bytes] = field(default_factory=dict)

    @property
    def subscribed(self) -> bool:
        return self.extranonce1 is not None

    def job_sent(self, job_id: str) -> None:
        """Remember the difficulty a job goes out under."""
        sent = self.sent
        sent.pop(job_id, None)
        sent[job_id] = self.difficulty
        if len(sent) > MAX_JOBS_REMEMBERED:
            del sent[next(iter(sent))]

    def difficulties_for(self, job_id: str) -> tuple[float, float]:
        """(lowest, highest) difficulty a share of this job may be judged by."""
        at_send = self.sent.get(job_id, self.difficulty)
        return min(at_send, self.difficulty), max(at_send, self.difficulty)
