"""User-facing errors: each renders as one line naming what to fix."""

from __future__ import annotations


class KoraftError(Exception):
    """A problem the user can fix (bad params, bad input file); shown as one line, no traceback."""


class InputError(KoraftError):
    """A raw input file that cannot be read at all."""

    def __init__(self, path: str, message: str, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = f"{path}:{line}" if line is not None else path
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")


class ParamError(KoraftError):
    """A params.yaml value of the wrong type or out of range."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"params.yaml: {key}: {message}")
