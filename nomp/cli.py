"""``nomp-cli``: send one command to a running pool's control port.

    nomp-cli blocknotify litecoin <blockhash>     (for the daemon's -blocknotify)
    nomp-cli pools
    nomp-cli --control 127.0.0.1:17117 help
    nomp-cli miners litecoin ip 203.0.113.7
    nomp-cli message litecoin all "Maintenance at 12:00 UTC"
    nomp-cli reconnect litecoin worker <address> backup.example.com 3333 10
    nomp-cli ban litecoin 203.0.113.7 3600 flooding
    nomp-cli bans litecoin
    nomp-cli unban litecoin 203.0.113.7
    nomp-cli kick litecoin ip 203.0.113.7
    nomp-cli status
    nomp-cli loglevel debug
    nomp-cli payments litecoin run
    nomp-cli reloadpool litecoin
    nomp-cli coinswitch scrypt copycoin            (move a switching port's miners)
    nomp-cli reload
    nomp-cli shutdown

The words are sent as one line (a line break inside one becomes a space:
the control port reads one command per line); ``help`` lists the commands.

The control port is read from ``<conf>/config.yaml`` (``-c``, default
``conf``) unless ``--control`` gives it; so is its token file
(``control.token_file``) unless ``--token-file`` gives it, and then the
token is sent first (``auth <token>``). ``--timeout`` bounds the wait for
the answer (a payment run or a reload may take a while). Exit status 0
when the pool answers "ok", 1 when it answers an error, 2 when it cannot
be reached or the token file cannot be read.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import yaml

DEFAULT_CONTROL = ("127.0.0.1", 17117)
DEFAULT_TIMEOUT = 120.0  # seconds: a payment run or a reload answers when done


def _control_section(conf: str) -> dict[str, object]:
    try:
        settings = yaml.safe_load((Path(conf) / "config.yaml").read_text()) or {}
        section = settings.get("control", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    return section if isinstance(section, dict) else {}


def token_file(conf: str) -> str | None:
    """The token file ``conf/config.yaml`` names, if any."""
    path = _control_section(conf).get("token_file")
    return path if isinstance(path, str) and path else None


def read_token(path: str) -> str:
    """The token in ``path`` (its first line); OSError or ValueError when there is none."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError(f"{path} holds no token on its first line")
    return token


def control_address(conf: str) -> tuple[str, int]:
    """Host and port of the control port configured in ``conf/config.yaml``."""
    listen = str(_control_section(conf).get("listen", ""))
    parts = listen.split(":")
    if len(parts) < 2 or parts[0] != "tcp":
        return DEFAULT_CONTROL
    options = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
    port = parts[1] if "=" not in parts[1] else options.get("port", "")
    host = options.get("interface", "127.0.0.1")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        return host, int(port)
    except ValueError:
        return DEFAULT_CONTROL


def send(
    address: tuple[str, int], command: str, timeout: float = DEFAULT_TIMEOUT, token: str | None = None
) -> str:
    """Send one command line (after ``auth <token>`` when given), return the reply line."""
    with socket.create_connection(address, timeout=timeout) as connection, connection.makefile("rb") as lines:
        if token is not None:
            connection.sendall(f"auth {token}\n".encode())
            answer = lines.readline().decode("utf-8", "replace").strip()
            if not answer.startswith("ok"):
                return answer
        connection.sendall(command.encode("utf-8") + b"\n")
        return lines.readline().decode("utf-8", "replace").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nomp-cli", description="Send a command to a running nomp.")
    parser.add_argument("-c", "--config", default="conf", help="the conf folder (for the control port)")
    parser.add_argument("--control", help="HOST:PORT of the control port")
    parser.add_argument("--token-file", help="the file holding the control port's token")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the answer"
    )
    parser.add_argument(
        "command", nargs="+", help="e.g. blocknotify <pool> <blockhash>; 'help' lists the commands"
    )
    options = parser.parse_args(argv)
    if options.control:
        host, _, port = options.control.rpartition(":")
        address = (host or "127.0.0.1", int(port))
    else:
        address = control_address(options.config)
    path = options.token_file or token_file(options.config)
    token = None
    if path is not None:
        try:
            token = read_token(path)
        except (OSError, ValueError) as e:
            print(f"nomp-cli: cannot read the control token: {e}", file=sys.stderr)
            return 2
    try:
        reply = send(address, " ".join(" ".join(options.command).split()), options.timeout, token)
    except OSError as e:
        print(
            f"nomp-cli: cannot reach the control port {address[0]}:{address[1]}: {e}",
            file=sys.stderr,
        )
        return 2
    print(reply)
    return 0 if reply.startswith("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
