"""What the process tells systemd about itself (sd_notify), for ``Type=notify``.

systemd gives a ``Type=notify`` service the address of a datagram socket in
``NOTIFY_SOCKET``; the service sends it newline-separated ``KEY=value``
assignments: ``READY=1`` once it serves (``systemctl start`` and
``restart`` return then, and units ordered after it start), ``STOPPING=1``
when it begins to stop, ``STATUS=...`` a line ``systemctl status`` shows.
Without ``NOTIFY_SOCKET`` (not run by systemd, or not ``Type=notify``)
nothing is sent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from twisted.logger import Logger


class ServiceNotifier:
    """Sends systemd's notification socket what the process says (nothing without one)."""

    log = Logger()

    def __init__(self, address: str | None) -> None:
        """``address``: NOTIFY_SOCKET's value, a path or ``@`` and an abstract name; None: no socket."""
        self.address = address

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ServiceNotifier:
        """The socket systemd named in the environment, if any."""
        value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
        return cls(value or None)

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; whether it was sent.

        A failure is logged and not raised: the pool serves its miners
        whether or not systemd hears of it (systemd then times the start
        out, and says why).
        """
        if self.address is None:
            return False
        # "@name" is a name in Linux's abstract socket namespace: a NUL byte first.
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sender:
                # Never wait on the reactor thread: a full queue is an error here.
                sender.sendto(message, socket.MSG_DONTWAIT, target)
        except OSError as e:
            self.log.error(
                "systemd not told {assignments}: {error} (NOTIFY_SOCKET={address})",
                assignments=list(assignments),
                error=e,
                address=self.address,
            )
            return False
        return True
