"""A miner's difficulty as the pool changes it: vardiff, its own requests.

Each function takes the connection and ``now`` and sends what the miner
must hear (``mining.set_difficulty`` through the connection); the rules
themselves are the pure core's (``VarDiff``, ``clamp_difficulty``).
"""

from __future__ import annotations

from collections.abc import Collection

from nomp.stratum.configure import clamp_difficulty
from nomp.stratum.connection import Connection, PortSettings

# Every connection is looked at for quietness once a round, a slice of
# them a step: with ten thousand miners a whole round in one reactor turn
# would hold it for milliseconds.
QUIET_ROUND = 5.0  # seconds
QUIET_STEPS = 10  # steps a round


def set_difficulty(connection: Connection, difficulty: float) -> None:
    """Send a new difficulty at once; it applies to the next job the miner
    gets. Shares of jobs it already has are judged by the lower of old and new."""
    connection.session.difficulty = difficulty
    connection.send_difficulty(difficulty)


def _vardiff_changed(connection: Connection, difficulty: float) -> None:
    # Vardiff knows the port's limits, not the floor the miner asked for.
    difficulty = max(difficulty, connection.session.minimum_difficulty)
    if difficulty != connection.session.difficulty:
        set_difficulty(connection, difficulty)


def share_seen(connection: Connection, now: float) -> None:
    """A share (valid or not) from an authorized miner: vardiff's sample."""
    vardiff = connection.settings.vardiff
    session = connection.session
    if vardiff is not None and session.vardiff is not None:
        new = vardiff.on_share(session.vardiff, now, session.difficulty)
        if new is not None:
            _vardiff_changed(connection, new)


def quiet_check(connection: Connection, now: float) -> None:
    """Lower the difficulty of a miner whose shares stopped coming."""
    vardiff = connection.settings.vardiff
    session = connection.session
    if vardiff is not None and session.vardiff is not None and session.subscribed:
        new = vardiff.on_quiet(session.vardiff, now, session.difficulty)
        if new is not None:
            _vardiff_changed(connection, new)


class QuietSweep:
    """The look for quiet miners (``quiet_check``), spread over steps.

    A round starts from the connections open at its first step and looks
    at an equal slice of them each step, so each is looked at once every
    ``steps`` steps; one closed since the round started is passed over,
    one opened since waits for the next round.
    """

    def __init__(self, connections: Collection[Connection], steps: int = QUIET_STEPS) -> None:
        self._connections = connections
        self._steps = steps
        self._round: list[Connection] = []
        self._per_step = 0
        self._next = 0  # the round's next connection
        self._steps_left = 0

    def step(self, now: float) -> bool:
        """Look at the next slice; whether this step started a round."""
        started = self._steps_left == 0
        if started:
            self._round = list(self._connections)
            self._per_step = -(-len(self._round) // self._steps)
            self._next = 0
            self._steps_left = self._steps
        self._steps_left -= 1
        end = len(self._round) if self._steps_left == 0 else self._next + self._per_step
        connections = self._connections
        for connection in self._round[self._next : end]:
            if connection in connections:
                quiet_check(connection, now)
        self._next = end
        if self._steps_left == 0:
            self._round = []  # no closed connection kept alive until the next round
        return started

    def all(self, now: float) -> None:
        """Look at every open connection now (a round of its own, beside the steps')."""
        for connection in list(self._connections):
            quiet_check(connection, now)


def miner_asked(connection: Connection, requested: float, now: float) -> None:
    """Give the miner the difficulty it asked for, as far as its port
    allows. Before subscribing it becomes the starting difficulty, sent
    with the subscription."""
    session = connection.session
    difficulty = clamp_difficulty(requested, connection.settings.port, session.minimum_difficulty)
    if session.vardiff is not None:
        session.vardiff.restart(now)
    if difficulty == session.difficulty:
        return
    if session.subscribed:
        set_difficulty(connection, difficulty)
    else:
        session.difficulty = difficulty


def port_changed(connection: Connection, settings: PortSettings, now: float) -> bool:
    """The connection's port was reconfigured (a reload): take its new
    settings and tell the miner the difficulty they give it. Whether a new
    difficulty was sent.

    A changed starting ``diff`` puts the miner there, as a new connection
    would be; otherwise its difficulty stays where it was, within the new
    limits. The floor it asked for with mining.configure still holds, and
    vardiff starts timing afresh under its new rules.
    """
    old = connection.settings.port
    connection.settings = settings
    session = connection.session
    vardiff = settings.vardiff
    session.vardiff = vardiff.start(now) if vardiff is not None else None
    start = settings.port.diff if settings.port.diff != old.diff else session.difficulty
    difficulty = clamp_difficulty(start, settings.port, session.minimum_difficulty)
    if difficulty == session.difficulty:
        return False
    if not session.subscribed:
        session.difficulty = difficulty  # sent with its subscription
        return False
    set_difficulty(connection, difficulty)
    return True
