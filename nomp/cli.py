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

The words are sent as one line (a line break inside one becomes a space:
the control port reads one command per line); ``help`` lists the commands.

The control port is read from ``<conf>/config.yaml`` (``-c``, default
``conf``) unless ``--control`` gives it. Exit status 0 when the pool
answers "ok", 1 when it answers an error, 2 when it cannot be reached.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import yaml

DEFAULT_CONTROL = ("127.0.0.1", 17117)


def control_address(conf: str) -> tuple[str, int]:
    """Host and port of the control port configured in ``conf/config.yaml``."""
    try:
        settings = yaml.safe_load((Path(conf) / "config.yaml").read_text()) or {}
        listen = str(settings.get("control", {}).get("listen", ""))
    except (OSError, yaml.YAMLError, AttributeError):
        return DEFAULT_CONTROL
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


def send(address: tuple[str, int], command: str, timeout: float = 10.0) -> str:
    """Send one command line, return the reply line."""
    with socket.create_connection(address, timeout=timeout) as connection:
        connection.sendall(command.encode("utf-8") + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = connection.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.decode("utf-8", "replace").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nomp-cli", description="Send a command to a running nomp.")
    parser.add_argument("-c", "--config", default="conf", help="the conf folder (for the control port)")
    parser.add_argument("--control", help="HOST:PORT of the control port")
    parser.add_argument(
        "command", nargs="+", help="e.g. blocknotify <pool> <blockhash>; 'help' lists the commands"
    )
    options = parser.parse_args(argv)
    if options.control:
        host, _, port = options.control.rpartition(":")
        address = (host or "127.0.0.1", int(port))
    else:
        address = control_address(options.config)
    try:
        reply = send(address, " ".join(" ".join(options.command).split()))
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
