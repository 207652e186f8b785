"""Exceptions. Every error a user can cause names the file, line or field at fault and what was expected."""

from __future__ import annotations


class PrettyAlignError(Exception):
    """Base class for all errors raised on purpose by pretty-align."""


class InputError(PrettyAlignError, ValueError):
    """Bad user input: a file, a line in it, or a config field.

    The message always says where (``file:line`` or the field name) and what was expected.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        where = []
        if path is not None:
            where.append(f"{path}:{line}" if line is not None else str(path))
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.message, self.path, self.line, self.field = message, path, line, field


class UnknownLanguageError(InputError):
    """A language code that is not in the language table."""


class MissingDependencyError(PrettyAlignError, ImportError):
    """An optional dependency is not installed; the message says what to install."""

    def __init__(self, feature: str, install: str) -> None:
        super().__init__(f"{feature} needs an optional dependency: pip install {install}")


class CapabilityError(PrettyAlignError):
    """A backend was asked for something it declares it cannot do."""


class PluginError(PrettyAlignError):
    """A third-party plugin (a ``pretty_align.*`` entry point) failed to load or clashes with a name
    that is taken."""
