"""Names that come from files: paths kept inside their folder, names safe to use as file names.

A file that names other files (a ``summary.json`` naming its figures, a dataset
manifest naming its mirror files) is untrusted input: an absolute path, a
``..`` or a symlink leading out of its folder would let it read any file on
disk. :func:`inside` resolves such a name and refuses one that leaves the
folder; :func:`check_name` refuses names that are not plain file-name tokens
(before they become part of a cache file's name).

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "fig.png").write_bytes(b"x")
>>> inside(d, "fig.png").name
'fig.png'
>>> inside(d, "../secret.png")
Traceback (most recent call last):
...
atlasreg.errors.InputError: ...outside...
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InputError

__all__ = ["inside", "check_name", "safe_file_name", "NAME_PATTERN"]

#: A plain name token: letters, digits, ``.``, ``_``, ``-``; starts with a letter or digit; at most 100 characters.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def inside(base: str | os.PathLike, name, *, source=None, field: str | None = None) -> Path:
    """``base / name`` resolved, refusing any name that leads outside ``base``.

    Parameters
    ----------
    base : folder the name is relative to
    name : relative path read from a file
    source : the file that named it (for the error message; default ``base``)
    field : the key of ``source`` that held it

    Raises
    ------
    InputError
        ``name`` is not text, is absolute, or resolves (after ``..`` and symlinks) outside ``base``.
    """
    where = source if source is not None else base
    if not isinstance(name, (str, os.PathLike)) or not os.fspath(name):
        raise InputError(f"expected a relative file name, got {name!r}", path=where, field=field)
    rel = os.fspath(name)
    if "\x00" in rel or os.path.isabs(rel) or Path(rel).drive:
        raise InputError(f"file name {rel!r} is absolute; files named here must lie inside {base}", path=where,
                         field=field)
    root = Path(os.path.realpath(base))
    p = Path(os.path.realpath(root / rel))
    if p != root and root not in p.parents:
        raise InputError(f"file name {rel!r} leads outside {base} (via '..' or a symlink); files named here must "
                         "lie inside that folder", path=where, field=field)
    return p


def check_name(name, *, source=None, field: str | None = None) -> str:
    """Return ``name`` if it is a plain name token (:data:`NAME_PATTERN`, no ``..``), else raise InputError.

    Examples
    --------
    >>> check_name("allen_mouse_25um")
    'allen_mouse_25um'
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InputError(f"{name!r} is not a valid name: use letters, digits, '.', '_' and '-' (at most 100, "
                         "starting with a letter or digit, no '..')", path=source, field=field)
    return name


def safe_file_name(text: str, default: str) -> str:
    """``text`` reduced to a file-name token (unsafe characters become ``_``), or ``default`` if nothing is left.

    Examples
    --------
    >>> safe_file_name("../../etc/passwd?x=1", "file")
    'passwd_x_1'
    """
    base = os.path.basename(str(text).replace("\\", "/"))
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip("._-")[:100]
    return cleaned if cleaned and ".." not in cleaned else default
