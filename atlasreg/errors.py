"""Errors atlasreg raises. Every message names the file or argument and says what to do."""
from __future__ import annotations


class AtlasregError(Exception):
    """Base class of every error atlasreg raises on purpose."""


class InputError(AtlasregError, ValueError):
    """Bad input: a file, an argument or a value that cannot be used as given."""

    def __init__(self, message: str, path: object | None = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        where = []
        if self.path is not None:
            where.append(f"{self.path}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (": ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class SpaceMismatchError(AtlasregError, ValueError):
    """Transforms or data whose spaces do not chain (e.g. ``A.dst != B.src``)."""


class NoPathError(AtlasregError, LookupError):
    """Two spaces are not connected in a SpaceGraph."""


class DownloadError(AtlasregError):
    """A download (``atlasreg data fetch``) failed: network, server or checksum."""


class OutputExistsError(AtlasregError, FileExistsError):
    """Refusing to overwrite an existing output without ``force=True`` / ``--force``."""


class ConvergenceError(AtlasregError, ArithmeticError):
    """A numerical inverse did not converge for some points (raised under ``on_fail="raise"``)."""


class NoMatchError(AtlasregError):
    """Two point sets show no consistent correspondence (``match_landmarks``); ``.result`` holds what was found."""

    def __init__(self, message: str, result: object | None = None):
        self.result = result
        super().__init__(message)
