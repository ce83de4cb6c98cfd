"""Compile nomp-notify from nomp_notify.c.

    python nomp/notify/build.py OUTPUT       (scripts/setup.sh: .venv/bin/nomp-notify)

Run as a script it imports nothing from nomp, so it works before nomp is
installed. It compiles only when OUTPUT is older than the source or this
file, and replaces OUTPUT in one rename, so a daemon running it meanwhile
finds either the old program or the new one. The C compiler is ``$CC``,
else ``cc``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().with_name("nomp_notify.c")
FLAGS = ("-std=c11", "-O2", "-Wall", "-Wextra", "-Wpedantic")


class BuildError(Exception):
    """The compiler could not be run or refused the source; the text says why."""


def compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def up_to_date(output: Path) -> bool:
    try:
        built = output.stat().st_mtime
    except FileNotFoundError:
        return False
    return built >= max(SOURCE.stat().st_mtime, Path(__file__).stat().st_mtime)


def build(output: Path, warnings_are_errors: bool = False) -> None:
    """Compile the program to ``output`` (a temporary file renamed over it)."""
    partial = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    command = [
        *compiler(),
        *FLAGS,
        *(["-Werror"] if warnings_are_errors else []),
        "-o",
        str(partial),
        str(SOURCE),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as e:
        raise BuildError(f"cannot run the C compiler {command[0]!r}: {e}") from None
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(f"{shlex.join(command)} failed:\n{result.stderr.strip()}")
    os.replace(partial, output)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: build.py OUTPUT\n")
        return 2
    output = Path(argv[0])
    if up_to_date(output):
        return 0
    try:
        build(output)
    except BuildError as e:
        sys.stderr.write(f"nomp-notify: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
