"""Reading Redis in tests, through redis-cli (outside the code under test)."""

from __future__ import annotations

import subprocess

from test.servers import require


def redis(port: int, db: int, *command: str) -> list[str]:
    """The reply lines of one command."""
    result = subprocess.run(
        [require("redis-cli"), "-p", str(port), "-n", str(db), "--raw", *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return [line for line in result.stdout.splitlines() if line != ""]


def redis_hash(port: int, db: int, key: str) -> dict[str, str]:
    """HGETALL as a dict."""
    flat = redis(port, db, "HGETALL", key)
    return dict(zip(flat[::2], flat[1::2], strict=True))
