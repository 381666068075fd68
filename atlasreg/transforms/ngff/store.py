"""Reading NGFF metadata and parameter arrays as untrusted input.

Every ``path`` in an NGFF document is taken inside the hierarchy it belongs to:
a leading ``/`` means the root of that hierarchy (zarr's convention, not the
file system's), ``..`` may not climb out of it, and a symlink that leads out of
it is refused. Arrays have their dtype, shape and size checked from their
metadata before a byte of data is read.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ...errors import InputError

#: Largest metadata document read (bytes).
MAX_JSON_BYTES = 16 * 2**20
#: Largest parameter / field array read (bytes once in memory as float64).
MAX_ARRAY_BYTES = 2 * 2**30


def inside(base: Path, rel: str, start: Path | None = None, *, doc=None, field: str = "path") -> Path:
    """The zarr path ``rel`` of an NGFF document as a folder under the hierarchy root ``base``.

    A relative ``rel`` starts at ``start`` (a group inside ``base``; default
    ``base``); a leading ``/`` starts at ``base``. Containment (no ``..`` or
    symlink out of ``base``) is :func:`atlasreg.io.paths.inside`'s.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> inside(root, "/coordinateTransformations/f") == root.resolve() / "coordinateTransformations/f"
    True
    >>> inside(root, "../f", root / "tile_0") == root.resolve() / "f"
    True
    """
    from ...io.paths import inside as inside_folder

    if not isinstance(rel, str) or not rel.strip("/"):
        raise InputError(f"'path' must be a non-empty string inside the hierarchy, got {rel!r}", path=doc,
                         field=field)
    if "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
        raise InputError(f"path {rel!r} is not a zarr path (use '/' between names)", path=doc, field=field)
    # both resolved: a hierarchy opened by a relative path (``atlasreg points reg/ …``) has groups found by
    # absolute paths
    prefix = "" if start is None or rel.startswith("/") else \
        Path(start).resolve().relative_to(Path(base).resolve()).as_posix()
    joined = "/".join(x for x in (prefix.strip("./"), rel.lstrip("/")) if x)
    return inside_folder(base, joined, source=doc, field=field)


def read_json(path: Path, what: str = "metadata") -> dict:
    """A JSON object from ``path``, size-checked before reading."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", path=path) from None
    if size > MAX_JSON_BYTES:
        raise InputError(f"{what} is {size} bytes; atlasreg reads NGFF metadata up to {MAX_JSON_BYTES} bytes",
                         path=path)
    try:
        doc = json.loads(path.read_bytes())
    except UnicodeDecodeError:
        raise InputError("not a text JSON file", path=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON (corrupt or truncated?): {exc}", path=path) from None
    if not isinstance(doc, dict):
        raise InputError(f"{what} must be a JSON object", path=path)
    return doc


def group_attributes(path: Path) -> dict | None:
    """The attributes of the zarr group (v3 ``zarr.json`` or v2 ``.zattrs``) at ``path``, or None."""
    if (path / "zarr.json").is_file():
        doc = read_json(path / "zarr.json")
        return doc.get("attributes") or {}
    if (path / ".zattrs").is_file():
        return read_json(path / ".zattrs")
    return None


def _check_links(where: Path, base: Path) -> None:
    real_base = Path(os.path.realpath(base))
    for root, dirs, files in os.walk(where):
        for name in dirs + files:
            p = Path(root) / name
            if p.is_symlink():
                real = Path(os.path.realpath(p))
                if real_base not in real.parents:
                    raise InputError(f"array holds a symbolic link out of {base} ({p.name})", path=where)


def read_array(where: Path, base: Path, *, doc=None, ndim: int | tuple[int, ...] | None = None,
               field: str = "path", max_bytes: int | None = None) -> np.ndarray:
    """A numeric zarr array (v2 or v3) at ``where`` (already inside ``base``), checked before reading.

    ``ndim`` is the dimensionality (or the choice of them) the caller can use.
    """
    import zarr

    if not where.is_dir():
        raise InputError(f"no zarr array at {where}", path=doc, field=field)
    _check_links(where, base)
    try:
        arr = zarr.open_array(str(where), mode="r")
    except Exception as exc:  # zarr raises many kinds for missing or broken metadata
        raise InputError(f"cannot open the zarr array: {exc}", path=where, field=field) from None
    dt = np.dtype(arr.dtype)
    if dt.kind not in "fiu":
        raise InputError(f"array has dtype {dt}; transform parameters must be numbers (float or int)",
                         path=where, field="dtype")
    shape = tuple(int(s) for s in arr.shape)
    if ndim is not None and len(shape) not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise InputError(f"array has shape {shape}; expected {ndim} dimensions here", path=where, field="shape")
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    limit = MAX_ARRAY_BYTES if max_bytes is None else max_bytes
    if n == 0:
        raise InputError(f"array is empty (shape {shape})", path=where, field="shape")
    if n * 8 > limit:
        raise InputError(f"array of shape {shape} is {n * 8} bytes as float64, over atlasreg's limit of {limit} "
                         "bytes for transform arrays", path=where, field="shape")
    try:
        data = np.asarray(arr[...])
    except Exception as exc:  # missing or corrupt chunks
        raise InputError(f"cannot read the array data: {exc}", path=where, field=field) from None
    if data.shape != shape:
        raise InputError(f"array data has shape {data.shape}, metadata says {shape}", path=where, field="shape")
    return data
