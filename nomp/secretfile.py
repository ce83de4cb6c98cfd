"""Secret files (the payout key, the control token): read only when no one else can.

A secret file must be a regular file (a symlink is followed, and what it
points to is checked) owned by this process's effective user, with mode
0600 or 0400. The checks are made on the opened file, so the file read is
the file checked; a FIFO cannot block the open.
"""

from __future__ import annotations

import os
import stat

SECRET_MODES = (0o600, 0o400)
SECRET_LIMIT = 4096  # bytes: more than any one secret


class SecretFileError(Exception):
    """A secret file cannot be used; the text names the file, says why and what to do."""


def read_secret_file(path: str, what: str) -> bytes:
    """The bytes of the secret file ``path`` (``what`` names it in errors, e.g. "the payout
    key file"); SecretFileError for a file others could read, not one's own, not a regular
    file, unreadable, or longer than SECRET_LIMIT."""
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise SecretFileError(f"cannot open {what} {path}: {e.strerror}") from None
    try:
        _check(path, what, os.fstat(fd))
        data = b""
        while len(data) <= SECRET_LIMIT:
            chunk = os.read(fd, SECRET_LIMIT + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise SecretFileError(f"cannot read {what} {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > SECRET_LIMIT:
        raise SecretFileError(f"{what} {path} is too long to hold one secret")
    return data


def _check(path: str, what: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise SecretFileError(f"{what} {path} is not a regular file")
    uid = os.geteuid()
    if info.st_uid != uid:
        raise SecretFileError(
            f"{what} {path} is owned by uid {info.st_uid}, not by this process's user (uid {uid})"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileError(
            f"{what} {path} has mode {mode:04o}, open to group or others; "
            f"it must be 0600 or 0400 (chmod 600 {path})"
        )
    if mode not in SECRET_MODES:
        raise SecretFileError(f"{what} {path} has mode {mode:04o}; it must be 0600 or 0400")
