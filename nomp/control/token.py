"""The control port's shared secret: read from ``control.token_file``, checked in constant time.

The file is held to the rules of every secret file (nomp.secretfile): a
regular file owned by the pool's user, readable by no one else (mode 0600
or 0400), checked on the opened file. The token is its first line, without
surrounding blanks.
"""

from __future__ import annotations

import hmac

from nomp.secretfile import SecretFileError, read_secret_file

MIN_TOKEN = 16  # characters: a token shorter than this is guessable


class TokenFileError(Exception):
    """The token file cannot be used; the text says why and what to do."""


def load_token(path: str) -> str:
    """The token in ``path``; TokenFileError for a file others could read or with no token."""
    try:
        data = read_secret_file(path, "the control token file")
    except SecretFileError as e:
        raise TokenFileError(str(e)) from None
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


def token_matches(given: str, token: str) -> bool:
    """Whether ``given`` is the token, in time that does not depend on where they differ."""
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))
