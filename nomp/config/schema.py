"""Turn parsed YAML into frozen dataclasses, reporting every problem.

A dataclass field's type says what is accepted (int, float, str, bool,
Decimal, Literal, tuples, dicts, nested dataclasses, optional values); a
``check`` in the field's metadata adds a rule on the value, and a
``problems()`` method on the dataclass adds rules across its fields.
A ``parsed`` field is read as a plain YAML type and turned into the typed
value its field holds (an algorithm, a number, IP networks), once, here.
Unknown keys, missing keys and wrong types are errors with their path.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import types
import typing
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from ipaddress import IPv4Network, IPv6Network
from typing import Any, TypeVar, Union
from urllib.parse import urlsplit, urlunsplit

from twisted.internet.endpoints import serverFromString

from nomp.config.errors import ErrorLog

T = TypeVar("T")
Check = Callable[[Any], str | None]
Network = IPv4Network | IPv6Network
_INVALID = object()  # a value that failed; its error is already recorded


def checked(check: Check, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with an extra rule: ``check(value)`` returns an error or None."""
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"check": check})
    return dataclasses.field(default=default, metadata={"check": check})


def parsed(
    raw: Any, parse: Callable[[Any], Any], default: Any = dataclasses.MISSING, check: Check | None = None
) -> Any:
    """A dataclass field read from YAML as type ``raw``, checked by ``check``
    if given, and kept as ``parse(value)``. ``parse`` raises ValueError with
    the message for a value it refuses. ``default`` is already parsed."""
    metadata = {"raw": raw, "parse": parse, "check": check}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be >= 0"


def port_number(value: Any) -> str | None:
    return None if 1 <= value <= 65535 else "must be a port number (1-65535)"


def non_empty(value: Any) -> str | None:
    return None if len(value) > 0 else "must not be empty"


class _NoReactor:
    """What ``endpoint`` gives serverFromString for a reactor.

    The endpoint it builds keeps its reactor for ``listen``, which is never
    called on it: the string is only checked here, and the pool builds its
    endpoints again with the running reactor. None of the server endpoint
    parsers calls the reactor while parsing; one that did would fail, and
    its string would be reported as invalid.
    """


def endpoint(value: Any) -> str | None:
    """A Twisted server endpoint string that parses (a TLS one finds its files)."""
    try:
        serverFromString(_NoReactor(), value)
    except Exception as e:  # Twisted raises ValueError, KeyError, OSError...
        if value.startswith("systemd:") and isinstance(e, KeyError | IndexError):
            return f"invalid endpoint {value!r}: {_not_passed(e)}"
        return f"invalid endpoint {value!r}: {e}"
    return None


def _not_passed(error: KeyError | IndexError) -> str:
    """Why a ``systemd:`` endpoint has no socket: the one it names was not passed."""
    if isinstance(error, KeyError):
        return (
            f"systemd passed no socket named {error.args[0]!r}: is the process started with the "
            "socket unit whose FileDescriptorName it is?"
        )
    return "systemd passed no socket at that index: is the process started with its socket units?"


def ip_networks(value: tuple[str, ...]) -> tuple[Network, ...]:
    """IP addresses or networks (``10.0.0.0/8``, ``::1``, ``10.0.0.1/8`` read as
    ``10.0.0.0/8``); an address is a network of one."""
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


def hex_word(value: str) -> int:
    """Exactly eight hex digits: their 32-bit value."""
    if len(value) == 8 and all(c in "0123456789abcdefABCDEF" for c in value):
        return int(value, 16)
    raise ValueError("must be eight hex digits, e.g. 1fffe000")


def http_url(value: Any) -> str | None:
    return None if value.startswith(("http://", "https://")) else "must start with http:// or https://"


def address_for_logs(url: str) -> str:
    """A configured ``url`` as log lines and errors name it: scheme, host, port and
    path (``https://api.example.com/v1/prices``). The user-info, the query and the
    fragment are left out, as a password or an API key is often in one of them."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def at_most_bytes(limit: int) -> Check:
    def check(value: Any) -> str | None:
        return None if len(value.encode()) <= limit else f"must be at most {limit} bytes"

    return check


def between(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        return None if low < value < high else f"must be between {low:g} and {high:g}"

    return check


class Reader:
    """Reads one file's data into dataclasses, logging errors against it."""

    def __init__(self, file: str, errors: ErrorLog) -> None:
        self.file = file
        self.errors = errors

    def error(self, path: str, message: str) -> None:
        self.errors.add(self.file, path, message)

    def read(
        self,
        cls: type[T],
        data: Any,
        path: str = "",
        fallbacks: Mapping[str, Any] | None = None,
        fixed: Mapping[str, Any] | None = None,
    ) -> T | None:
        """``cls`` from ``data``; None (with errors recorded) if it cannot be built.

        ``fallbacks`` supply values for absent keys before the field
        defaults; ``fixed`` sets fields the caller decides, which the data
        may not give.
        """
        fixed = fixed or {}
        if not isinstance(data, Mapping):
            self.error(path, f"expected a mapping, got {_kind(data)}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in fixed}  # type: ignore[arg-type]
        failed = False
        for key in data:
            if key not in fields:
                self.error(
                    _join(path, str(key)),
                    f"unknown key (expected one of: {', '.join(sorted(fields))})",
                )
                failed = True
        values: dict[str, Any] = dict(fixed)
        for name, field in fields.items():
            where = _join(path, name)
            if name in data:
                value = self.value(field.metadata.get("raw", hints[name]), data[name], where)
                check = field.metadata.get("check")
                if value is not _INVALID and value is not None and check is not None:
                    message = check(value)
                    if message:
                        self.error(where, message)
                        value = _INVALID
                parse = field.metadata.get("parse")
                if value is not _INVALID and value is not None and parse is not None:
                    try:
                        value = parse(value)
                    except ValueError as e:
                        self.error(where, str(e))
                        value = _INVALID
            elif fallbacks is not None and name in fallbacks:
                value = fallbacks[name]
            elif not (field.default is field.default_factory is dataclasses.MISSING):
                continue
            else:
                self.error(where, "missing")
                value = _INVALID
            if value is _INVALID:
                failed = True
            else:
                values[name] = value
        if failed:
            return None
        built = cls(**values)
        problems = getattr(built, "problems", None)
        if problems is not None:
            for key, message in problems():
                self.error(_join(path, key), message)
                failed = True
        return None if failed else built

    def value(self, hint: Any, data: Any, path: str) -> Any:
        """One value of type ``hint``, or _INVALID."""
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin in (Union, types.UnionType):
            if data is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.value(inner, data, path)
        if origin is typing.Literal:
            if data in args:
                return data
            return self._bad(path, f"must be one of {', '.join(repr(a) for a in args)}, got {data!r}")
        if origin is tuple:
            if not isinstance(data, list):
                return self._bad(path, f"expected a list, got {_kind(data)}")
            items = [self.value(args[0], item, f"{path}[{i}]") for i, item in enumerate(data)]
            return _INVALID if any(i is _INVALID for i in items) else tuple(items)
        if origin is dict:
            if not isinstance(data, Mapping):
                return self._bad(path, f"expected a mapping, got {_kind(data)}")
            result = {str(k): self.value(args[1], v, _join(path, str(k))) for k, v in data.items()}
            return _INVALID if _INVALID in result.values() else result
        if dataclasses.is_dataclass(hint):
            built = self.read(hint, data, path)  # type: ignore[arg-type]
            return _INVALID if built is None else built
        return self._scalar(hint, data, path)

    def _scalar(self, hint: Any, data: Any, path: str) -> Any:
        if hint is bool:
            if isinstance(data, bool):
                return data
            return self._bad(path, f"expected true or false, got {_kind(data)}")
        if hint is int:
            if isinstance(data, int) and not isinstance(data, bool):
                return data
            return self._bad(path, f"expected an integer, got {_kind(data)}")
        if hint is float:
            if isinstance(data, int | float) and not isinstance(data, bool):
                return float(data)
            return self._bad(path, f"expected a number, got {_kind(data)}")
        if hint is Decimal:
            if isinstance(data, int | float | str) and not isinstance(data, bool):
                try:
                    # str() of a YAML float is its shortest repr: 0.1 stays 0.1
                    value = Decimal(str(data))
                except InvalidOperation:
                    pass
                else:
                    if value.is_finite():
                        return value
            return self._bad(path, f"expected a decimal number, got {_kind(data)}")
        if hint is str:
            if isinstance(data, str):
                return data
            return self._bad(path, f"expected a string, got {_kind(data)}")
        raise TypeError(f"unsupported config type {hint!r}")

    def _bad(self, path: str, message: str) -> Any:
        self.error(path, message)
        return _INVALID


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(data: Any) -> str:
    if data is None:
        return "nothing"
    if isinstance(data, bool):
        return f"a boolean ({str(data).lower()})"
    if isinstance(data, Mapping):
        return "a mapping"
    if isinstance(data, list):
        return "a list"
    if isinstance(data, int | float):
        return f"a number ({data!r})"
    if isinstance(data, str):
        return f"a string ({data!r})"
    return type(data).__name__
