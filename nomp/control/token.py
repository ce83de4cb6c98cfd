"""The control port's shared secret: read from ``control.token_file``, checked in constant time.

The file is held to what the payout key file is (nomp.payments.ethsigner):
a regular file owned by the pool's user, readable by no one else (mode
0600 or 0400), checked on the opened file so the file read is the file
checked. The token is its first line, without surrounding blanks.
"""

from __future__ import annotations

import hmac
import os
import stat

MIN_TOKEN = 16  # characters: a token shorter than this is guessable
_LIMIT = 4096  # bytes read at most: one line of secret
_MODES = (0o600, 0o400)


class TokenFileError(Exception):
    """The token file cannot be used; the text says why and what to do."""


def load_token(path: str) -> str:
    """The token in ``path``; TokenFileError for a file others could read or with no token."""
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not block the open
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise TokenFileError(f"cannot open the control token file {path}: {e.strerror}") from None
    try:
        _check(path, os.fstat(fd))
        data = os.read(fd, _LIMIT)
    except OSError as e:
        raise TokenFileError(f"cannot read the control token file {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenFileError(f"the control token file {path} is not UTF-8 text") from None
    lines = text.splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN or any(c.isspace() for c in token):
        raise TokenFileError(
            f"the control token file {path} must hold one token of at least {MIN_TOKEN} characters "
            "without blanks on its first line (e.g. from: openssl rand -hex 32)"
        )
    return token


def _check(path: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise TokenFileError(f"the control token file {path} is not a regular file")
    uid = os.geteuid()
    if info.st_uid != uid:
        raise TokenFileError(
            f"the control token file {path} is owned by uid {info.st_uid}, "
            f"not by this process's user (uid {uid})"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(
            f"the control token file {path} has mode {mode:04o}, open to group or others; "
            f"it must be 0600 or 0400 (chmod 600 {path})"
        )
    if mode not in _MODES:
        raise TokenFileError(f"the control token file {path} has mode {mode:04o}; it must be 0600 or 0400")


def token_matches(given: str, token: str) -> bool:
    """Whether ``given`` is the token, in time that does not depend on where they differ."""
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))
