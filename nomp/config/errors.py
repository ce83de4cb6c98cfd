"""Configuration errors, collected rather than raised one at a time."""

from __future__ import annotations


class ConfigErrors(Exception):
    """Every problem found in a configuration, each as ``file: path: message``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)

    def __str__(self) -> str:
        count = len(self.errors)
        heading = f"{count} configuration error{'s' if count != 1 else ''}:"
        return "\n".join([heading, *(f"  {e}" for e in self.errors)])


class ErrorLog:
    """Where readers put what they find wrong, with the file it is in."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, file: str, path: str, message: str) -> None:
        """Record one problem; ``path`` is the location inside ``file``."""
        self.errors.append(f"{file}: {path}: {message}" if path else f"{file}: {message}")

    def raise_if_any(self) -> None:
        """Raise ConfigErrors when anything was recorded."""
        if self.errors:
            raise ConfigErrors(self.errors)
