"""Where the repository's shipped files are, for tests."""

from __future__ import annotations

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
SHIPPED_CONF = REPOSITORY / "conf"
SHIPPED_COINS = REPOSITORY / "coins"
