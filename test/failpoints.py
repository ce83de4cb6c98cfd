"""``nomp-payments`` that SIGKILLs itself at one step of its payment run.

    python -m test.failpoints STEP -c CONF run

The same command and processor as ``nomp-payments``, with a failpoint hook
injected (the production command has none): the fault-injection tests kill
a run at each step of PaymentProcessor's FAILPOINTS, or, for an Ethereum-family
pool, of EthUnlocker's and EthPayer's.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from nomp.payments import ethpayer, ethunlocker, processor
from nomp.payments.cli import main

# Every step a run can be killed at (the two families share "after_recording").
FAILPOINTS = tuple(dict.fromkeys((*processor.FAILPOINTS, *ethunlocker.FAILPOINTS, *ethpayer.FAILPOINTS)))


def kill_at(step: str) -> Callable[[str], None]:
    """A failpoint hook that SIGKILLs this process when the run reaches ``step``."""
    if step not in FAILPOINTS:
        raise ValueError(f"no failpoint {step!r}; there are {', '.join(FAILPOINTS)}")

    def reached(name: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[2:], failpoint=kill_at(sys.argv[1])))
