"""``nomp-payments`` that SIGKILLs itself the Nth time its run reaches one step.

    python -m test.failpoints_nth STEP N -c CONF run POOL

As test/failpoints.py, counting: a payer's batch passes each step once per
payout, so the Nth time can fall in the middle of a batch (after the 3rd of
its 4 sends, say), where the first time is always its first payout.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from nomp.payments.cli import main
from test.failpoints import FAILPOINTS


def kill_at_nth(step: str, nth: int) -> Callable[[str], None]:
    """A failpoint hook that SIGKILLs this process when the run reaches ``step`` the
    ``nth`` time (1 for the first)."""
    if step not in FAILPOINTS:
        raise ValueError(f"no failpoint {step!r}; there are {', '.join(FAILPOINTS)}")
    if nth < 1:
        raise ValueError(f"the first time a step is reached is 1, not {nth}")
    reached_times = 0

    def reached(name: str) -> None:
        nonlocal reached_times
        if name == step:
            reached_times += 1
            if reached_times == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    return reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[3:], failpoint=kill_at_nth(sys.argv[1], int(sys.argv[2]))))
