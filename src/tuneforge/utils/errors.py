"""User-facing errors: each says what is wrong, where, and how to fix it."""

from __future__ import annotations


class TuneforgeError(Exception):
    """Base class for errors shown to users without a traceback by the CLI."""

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n  hint: {hint}")

    @property
    def one_line(self) -> str:
        """The message with its hint in parentheses: how an API answer or a one-line summary shows the error."""
        return self.message + (f" ({self.hint})" if self.hint else "")


class ConfigError(TuneforgeError):
    """A config file or override is invalid (names the key and the file)."""


class DataError(TuneforgeError):
    """A data file or row is invalid (names file, line and field)."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None, hint: str | None = None):
        self.file, self.line, self.field = file, line, field
        where = ""
        if file:
            where = f"{file}:{line}" if line is not None else str(file)
        if field:
            where = f"{where} field '{field}'" if where else f"field '{field}'"
        super().__init__(f"{where}: {message}" if where else message, hint=hint)


class ModelError(TuneforgeError):
    """A model or adapter cannot be found or loaded."""
