"""Landmark pair files: BigWarp CSV and plain CSV with named columns, always with units declared.

Neither format stores units reliably, so every read ends with points whose
space and unit are known — from the column names (``em_x_nm``, ``x_uct_um``)
or from the caller (``src_unit="nm"``) — or it fails with an
:class:`~atlasreg.errors.InputError`. Nothing is assumed.

Formats
-------
BigWarp (``format="bigwarp"``)
    No header; one row per landmark: ``name, active, moving x, y, z, fixed x, y, z``
    (BigWarp quotes every field). BigWarp's JSON (a landmarks export, or its
    settings file holding ``Transform.landmarks``: ``movingPoints``,
    ``fixedPoints``, ``active``, ``names``) is read the same way. 2-D BigWarp
    landmarks (6 fields per row, ``numDimensions`` 2) are refused: a 2-D image
    gives no z. The moving image's points are the source,
    the fixed (target) image's the destination. BigWarp writes coordinates in
    each image's calibrated unit, which the file does not record: pass
    ``src_unit`` and ``dst_unit``.
Plain CSV (``format="csv"``)
    A header naming the columns. Coordinates are found as two groups of x, y,
    z columns named ``<space>_x``, ``x_<space>``, ``<space>_x_<unit>`` or
    ``x_<space>_<unit>`` (or given by ``src_columns`` / ``dst_columns``);
    optional ``name`` and ``active`` columns. atlasreg writes
    ``name, active, <src>_x_<unit>, ..., <dst>_z_<unit>``, which reads back
    with nothing else said.

Examples
--------
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "pairs.csv"
>>> _ = p.write_text("name,em_x,em_y,em_z,lm_x,lm_y,lm_z\\n"
...                  "a,0,0,0,1,1,1\\nb,4,0,0,1.01,1,1\\n")
>>> pairs = read_landmarks(p, src_unit="nm", dst_unit="um", src_voxel_size=(4, 4, 40))
>>> pairs.src, pairs.dst
(Space(name='em', unit='nm', orientation=None), Space(name='lm', unit='um', orientation=None))
>>> pairs.src_points[1].tolist()
[16.0, 0.0, 0.0]
"""
from __future__ import annotations

import csv
import io as _io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spaces import Space, as_voxel_size, normalize_unit
from .atomic import atomic_path

__all__ = ["LandmarkPairs", "read_landmarks", "write_landmarks"]

_AXES = ("x", "y", "z")
#: Largest landmark file read (a few million pairs).
MAX_BYTES = 256 * 1024 * 1024
_UNIT_TOKENS = {"nm", "um", "µm", "μm", "mm", "micron", "microns", "nanometers", "nanometres", "millimeters",
                "millimetres", "micrometers", "micrometres"}
_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


@dataclass
class LandmarkPairs:
    """Corresponding points in two spaces, each in its space's unit.

    Attributes
    ----------
    src_points, dst_points : (N, 3) float arrays
    src, dst : Space
    names : list of str
    active : (N,) bool array (BigWarp's "active" flag; ``read_landmarks`` keeps only active pairs unless asked)
    path : str or None — the file they came from
    """

    src_points: np.ndarray
    dst_points: np.ndarray
    src: Space
    dst: Space
    names: list = field(default_factory=list)
    active: np.ndarray | None = None
    path: str | None = None

    def __post_init__(self):
        self.src_points = np.asarray(self.src_points, float).reshape(-1, 3)
        self.dst_points = np.asarray(self.dst_points, float).reshape(-1, 3)
        n = len(self.src_points)
        if len(self.dst_points) != n:
            raise InputError(f"{n} source points but {len(self.dst_points)} destination points",
                             path=self.path, field="points")
        if not self.names:
            self.names = [f"Pt-{i}" for i in range(n)]
        self.names = [str(v) for v in self.names]
        if len(self.names) != n:
            raise InputError(f"{len(self.names)} names for {n} landmark pairs", path=self.path, field="names")
        self.active = np.ones(n, bool) if self.active is None else np.asarray(self.active, bool).reshape(n)

    def __len__(self) -> int:
        return len(self.src_points)

    def subset(self, index) -> "LandmarkPairs":
        """The pairs selected by a boolean mask or index array."""
        idx = np.arange(len(self))[index]
        return LandmarkPairs(self.src_points[idx], self.dst_points[idx], self.src, self.dst,
                             [self.names[i] for i in np.atleast_1d(idx)], self.active[idx], self.path)

    def reversed(self) -> "LandmarkPairs":
        """The same pairs read the other way (destination becomes source)."""
        return LandmarkPairs(self.dst_points, self.src_points, self.dst, self.src, list(self.names),
                             self.active.copy(), self.path)

    def __repr__(self) -> str:
        return f"LandmarkPairs({len(self)} pairs, {self.src} -> {self.dst})"


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
def read_landmarks(path: str | os.PathLike, src: Space | str | None = None, dst: Space | str | None = None, *,
                   src_unit: str | None = None, dst_unit: str | None = None,
                   src_columns=None, dst_columns=None, src_voxel_size=None, dst_voxel_size=None,
                   format: str = "auto", include_inactive: bool = False) -> LandmarkPairs:
    """Read landmark pairs from a BigWarp CSV or a plain CSV with named columns.

    Parameters
    ----------
    path : str or Path
    src, dst : Space or str, optional
        Spaces of the two point sets. A :class:`Space` declares its unit; a
        name only names it. Default names come from the columns (``em`` for
        ``em_x``) or ``"moving"`` / ``"fixed"`` for BigWarp.
    src_unit, dst_unit : str, optional
        Units of the coordinates (after ``*_voxel_size`` scaling). Needed
        unless the column names or the Spaces say them.
    src_columns, dst_columns : three column names, optional
        Coordinate columns, when they cannot be recognised.
    src_voxel_size, dst_voxel_size : float or 3 floats, optional
        The file holds voxel indices: multiply by these (in ``*_unit``) to get
        physical coordinates (MICrONS EM voxels: ``(4, 4, 40)`` nm).
    format : {"auto", "bigwarp", "csv"}
    include_inactive : bool
        Keep pairs whose ``active`` flag is false (default: drop them).

    Raises
    ------
    InputError
        Missing file, unrecognised columns, units not stated, non-numeric,
        NaN or empty coordinates in an active pair.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("landmark file not found", path=p)
    if format not in ("auto", "bigwarp", "csv"):
        raise InputError(f"unknown landmark format {format!r}; use 'auto', 'bigwarp' or 'csv'", field="format")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise InputError(f"the landmark file is {size} bytes, more than the {MAX_BYTES} atlasreg reads", path=p)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read landmark file as text: {exc}", path=p) from None
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("{", "/*")):
        if format == "csv":
            raise InputError("format='csv' was given for a JSON file", path=p, field="format")
        rows, format = _bigwarp_json_rows(text, p), "bigwarp"
    else:
        rows = [r for r in csv.reader(_io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise InputError("landmark file is empty", path=p)
    if format == "auto":
        format = "bigwarp" if _looks_bigwarp(rows[0]) else "csv"
    if format == "bigwarp":
        table = _bigwarp_table(rows, p)
        groups = (("moving", None, [2, 3, 4]), ("fixed", None, [5, 6, 7]))
        name_col, active_col = 0, 1
    else:
        header = [h.strip() for h in rows[0]]
        table = rows[1:]
        groups = _find_groups(header, src_columns, dst_columns, src, dst, p)
        low = [h.lower() for h in header]
        name_col = low.index("name") if "name" in low else (0 if header[0] in ("", "#", "index") or
                                                            header[0].lower() in ("id", "label") else None)
        active_col = low.index("active") if "active" in low else None
    if not table:
        raise InputError("landmark file has a header but no rows", path=p)
    colnames = [f"field {k + 1}" for k in range(8)] if format == "bigwarp" else header

    spaces = []
    for (gname, gunit, _), sp, unit, side in ((groups[0], src, src_unit, "src"), (groups[1], dst, dst_unit, "dst")):
        spaces.append(_resolve_space(sp, unit, gname, gunit, side, p))
    width = max(len(r) for r in table)
    table = [r + [""] * (width - len(r)) for r in table]
    names = [(r[name_col].strip() if name_col is not None else "") or f"Pt-{i}" for i, r in enumerate(table)]
    active = np.ones(len(table), bool)
    if active_col is not None:
        for i, r in enumerate(table):
            v = r[active_col].strip().lower()
            if v in _TRUE or v == "":
                active[i] = True
            elif v in _FALSE:
                active[i] = False
            else:
                raise InputError(f"row {i + 1} ({names[i]}): 'active' is {r[active_col]!r}, not true/false",
                                 path=p, field="active")
    pts = []
    for (gname, _, cols), vs, side in ((groups[0], src_voxel_size, "src"), (groups[1], dst_voxel_size, "dst")):
        arr = np.empty((len(table), 3))
        for i, r in enumerate(table):
            for j, c in enumerate(cols):
                cell = r[c].strip()
                try:
                    arr[i, j] = float(cell)
                except ValueError:
                    if active[i] or include_inactive:
                        col = colnames[c] if c < len(colnames) else f"field {c + 1}"
                        raise InputError(f"row {i + 1} ({names[i]}): coordinate {cell!r} is not a number "
                                         f"({side} {_AXES[j]}, column {col})", path=p, field=f"{side}_{_AXES[j]}") from None
                    arr[i, j] = np.nan
        if vs is not None:
            arr = arr * as_voxel_size(vs, path=p, field=f"{side}_voxel_size")
        pts.append(arr)
    keep = np.ones(len(table), bool) if include_inactive else active
    for arr, side in zip(pts, ("src", "dst")):
        bad = np.flatnonzero(keep & ~np.isfinite(arr).all(1))
        if bad.size:
            shown = ", ".join(f"row {i + 1} ({names[i]})" for i in bad[:5])
            raise InputError(f"{bad.size} {'active ' if not include_inactive else ''}landmark(s) have NaN or "
                             f"infinite {side} coordinates: {shown}{' ...' if bad.size > 5 else ''}; fix them or "
                             "mark them inactive", path=p, field=f"{side}_points")
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        raise InputError("no active landmark pairs in the file", path=p, field="active")
    return LandmarkPairs(pts[0][idx], pts[1][idx], spaces[0], spaces[1], [names[i] for i in idx], active[idx],
                         str(p))


def _bigwarp_json_rows(text: str, p) -> list[list[str]]:
    """The landmarks of a BigWarp JSON file (a landmarks export, or settings holding
    ``Transform.landmarks``) as BigWarp CSV rows (numbers written exactly)."""
    body = text.lstrip()
    while body.startswith("/*"):  # a leading block comment (BigWarp's own test files carry a licence)
        end = body.find("*/")
        if end < 0:
            raise InputError("the JSON file opens a /* comment that is never closed", path=p)
        body = body[end + 2:].lstrip()
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InputError(f"not a JSON file: {exc}", path=p) from None
    lm = doc
    if isinstance(doc, dict) and isinstance(doc.get("Transform"), dict):
        lm = doc["Transform"].get("landmarks")
    if not isinstance(lm, dict) or "movingPoints" not in lm or "fixedPoints" not in lm:
        raise InputError("not a BigWarp landmark file: no movingPoints / fixedPoints (expected a landmarks "
                         "export or BigWarp settings with Transform.landmarks)", path=p, field="landmarks")
    mov, fix = lm["movingPoints"], lm["fixedPoints"]
    if not isinstance(mov, list) or not isinstance(fix, list) or len(mov) != len(fix):
        raise InputError("BigWarp movingPoints and fixedPoints must be lists of the same length", path=p,
                         field="landmarks")
    n = len(mov)
    names = lm.get("names") if isinstance(lm.get("names"), list) else [f"Pt-{i}" for i in range(n)]
    active = lm.get("active") if isinstance(lm.get("active"), list) else [True] * n
    if len(names) != n or len(active) != n:
        raise InputError(f"BigWarp landmarks: {n} points but {len(names)} names and {len(active)} active flags",
                         path=p, field="landmarks")
    dims = lm.get("numDimensions", 3)
    rows = []
    for i, (a, b) in enumerate(zip(mov, fix)):
        if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
            raise InputError(f"BigWarp landmark {i} ({names[i]}): moving and fixed points must be lists of "
                             "the same length", path=p, field="landmarks")
        if len(a) != dims:
            raise InputError(f"BigWarp landmark {i} ({names[i]}) has {len(a)} coordinates, numDimensions says "
                             f"{dims}", path=p, field="numDimensions")
        rows.append([str(names[i]), "true" if active[i] is True else "false" if active[i] is False else str(active[i]),
                     *(repr(v) if isinstance(v, (int, float)) else str(v) for v in (*a, *b))])
    return rows


def _looks_bigwarp(row) -> bool:
    # 8 fields for 3-D landmarks, 6 for BigWarp's 2-D ones (refused by _bigwarp_table with the reason).
    if len(row) not in (6, 8) or row[1].strip().lower() not in _TRUE | _FALSE:
        return False
    try:
        [float(c) for c in row[2:]]
    except ValueError:
        return False
    return True


def _bigwarp_table(rows, p):
    for i, r in enumerate(rows):
        if len(r) == 6:
            raise InputError(f"row {i + 1} has 6 fields (name, active, moving x, y, fixed x, y): landmarks "
                             "BigWarp placed on 2-D images. atlasreg's landmarks are 3-D points in physical "
                             "space and a 2-D image has no z to give them; export the landmarks from BigWarp "
                             "on the 3-D images (8 fields per row)", path=p, field="dimensions")
        if len(r) != 8:
            raise InputError(f"row {i + 1} has {len(r)} fields; a 3-D BigWarp row has 8 (name, active, "
                             "moving x, y, z, fixed x, y, z)", path=p)
    return rows


def _split_name(col: str):
    """(space, axis, unit) if the column name looks like a coordinate, else None."""
    toks = [t for t in re.split(r"[_\s.\-]+", col.strip()) if t]
    low = [t.lower() for t in toks]
    if not toks:
        return None
    axis_pos = [i for i, t in enumerate(low) if t in _AXES]
    if len(axis_pos) != 1:
        return None
    i = axis_pos[0]
    rest = toks[:i] + toks[i + 1:]
    unit = None
    if rest and rest[-1].lower() in _UNIT_TOKENS:
        unit = rest[-1]
        rest = rest[:-1]
    if unit is None and len(rest) == 1 and rest[0].lower() in _UNIT_TOKENS:
        return None
    if not rest:
        return None
    return "_".join(rest), low[i], unit


def _find_groups(header, src_columns, dst_columns, src, dst, p):
    out = []
    if (src_columns is None) != (dst_columns is None):
        raise InputError("give both src_columns and dst_columns, or neither", path=p, field="columns")
    if src_columns is not None:
        for cols, side in ((src_columns, "src"), (dst_columns, "dst")):
            cols = list(cols)
            if len(cols) != 3:
                raise InputError(f"{side}_columns must name 3 columns (x, y, z), got {cols!r}", path=p,
                                 field=f"{side}_columns")
            missing = [c for c in cols if c not in header]
            if missing:
                raise InputError(f"column(s) {missing} not in the file (columns: {header})", path=p,
                                 field=f"{side}_columns")
            parsed = [_split_name(c) for c in cols]
            units = {q[2] for q in parsed if q is not None and q[2] is not None}
            gname = parsed[0][0] if parsed[0] is not None else side
            out.append((gname, units.pop() if len(units) == 1 else None, [header.index(c) for c in cols]))
        return out
    groups: dict[tuple, dict] = {}
    order = []
    for ci, col in enumerate(header):
        q = _split_name(col)
        if q is None:
            continue
        key = (q[0], q[2])
        if key not in groups:
            groups[key] = {}
            order.append(key)
        groups[key][q[1]] = ci
    complete = [k for k in order if set(groups[k]) == set(_AXES)]
    want = [getattr(s, "name", s) for s in (src, dst)]
    if all(isinstance(w, str) for w in want) and all(any(k[0] == w for k in complete) for w in want):
        complete = [next(k for k in complete if k[0] == w) for w in want]
    if len(complete) != 2:
        raise InputError(
            f"cannot tell the source and destination coordinate columns apart (columns: {header}); name them "
            "like em_x, em_y, em_z / lm_x, lm_y, lm_z (optionally with a unit: em_x_nm) or pass "
            "src_columns=... and dst_columns=...", path=p, field="columns")
    return [(k[0], k[1], [groups[k][a] for a in _AXES]) for k in complete]


def _resolve_space(sp, unit, gname, gunit, side, p) -> Space:
    units = []
    for u, where in ((unit, f"{side}_unit"), (gunit, "column names"),
                     (sp.unit if isinstance(sp, Space) else None, f"{side} Space")):
        if u is not None:
            try:
                units.append((normalize_unit(u), where))
            except InputError as exc:
                raise InputError(str(exc), path=p, field=f"{side}_unit") from None
    if not units:
        raise InputError(
            f"the unit of the {side} coordinates ({gname}) is not stated; a landmark file does not say it. "
            f"Pass {side}_unit='nm' | 'um' | 'mm' (CLI: --{side}-unit), a Space with a unit, or name the "
            f"columns with the unit ({gname}_x_um)", path=p, field=f"{side}_unit")
    if len({u for u, _ in units}) > 1:
        raise InputError(f"conflicting units for the {side} coordinates: "
                         + ", ".join(f"{u} ({w})" for u, w in units), path=p, field=f"{side}_unit")
    u = units[0][0]
    if isinstance(sp, Space):
        return sp
    return Space(str(sp) if sp is not None else gname, u)


#: Largest point table read_points accepts (bytes): 10⁷ points of three numbers.
MAX_POINTS_BYTES = 1 << 30


def read_points(path: str | os.PathLike, unit: str | None = None, columns=None) -> tuple[np.ndarray, str]:
    """Read an unpaired point table (CSV): ``x, y, z`` columns, optionally with the unit in their names.

    Columns are found by name (``x``, ``y``, ``z``; ``x_nm``; ``em_x_um``) unless ``columns`` names three.
    The unit comes from the column names or ``unit``; when both are given they must agree, and with neither
    an :class:`InputError` says so (a unit is never assumed).

    Returns
    -------
    points : (N, 3) float array
    unit : str

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "somata.csv"
    >>> _ = f.write_text("x_nm,y_nm,z_nm\n1,2,3\n4,5,6\n")
    >>> pts, unit = read_points(f)
    >>> pts.shape, unit
    ((2, 3), 'nm')
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("point file not found", path=p)
    if p.stat().st_size > MAX_POINTS_BYTES:
        raise InputError(f"point file is {p.stat().st_size} bytes, more than the {MAX_POINTS_BYTES} read_points "
                         "accepts", path=p)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read point file as text: {exc}", path=p) from None
    rows = [r for r in csv.reader(_io.StringIO(text)) if r and any(c.strip() for c in r)]
    if len(rows) < 2:
        raise InputError("point file has no rows below its header", path=p)
    header = [h.strip() for h in rows[0]]
    if columns is not None:
        cols = [str(c).strip() for c in columns]
        if len(cols) != 3:
            raise InputError(f"columns must name 3 columns, got {columns!r}", path=p, field="columns")
        missing = [c for c in cols if c not in header]
        if missing:
            raise InputError(f"no column(s) {missing} (columns: {header})", path=p, field=missing[0])
        idx = [header.index(c) for c in cols]
        units = {None}
    else:
        found: dict[str, tuple[int, str | None]] = {}
        for i, h in enumerate(header):
            if h.lower() in _AXES:
                found.setdefault(h.lower(), (i, None))
                continue
            sn = _split_name(h)
            toks = [t for t in re.split(r"[_\s.\-]+", h) if t]
            if sn is None and len(toks) == 2 and toks[0].lower() in _AXES and toks[1].lower() in _UNIT_TOKENS:
                sn = ("", toks[0].lower(), toks[1])
            if sn is not None:
                found.setdefault(sn[1], (i, sn[2]))
        if set(found) != set(_AXES):
            raise InputError(f"cannot find x, y, z columns in {header}; name them x, y, z (optionally x_nm, ...) "
                             "or say which columns hold them", path=p, field="columns")
        idx = [found[a][0] for a in _AXES]
        units = {found[a][1] for a in _AXES}
    col_units = {normalize_unit(u) for u in units if u is not None}
    if len(col_units) > 1:
        raise InputError(f"the coordinate columns name different units {sorted(col_units)}", path=p, field="unit")
    file_unit = col_units.pop() if col_units else None
    if unit is not None and file_unit is not None and normalize_unit(unit) != file_unit:
        raise InputError(f"the unit {unit!r} was given but the column names say {file_unit!r}", path=p, field="unit")
    unit = normalize_unit(unit) if unit is not None else file_unit
    if unit is None:
        raise InputError("the file does not say the unit of its coordinates (columns like x_nm would): "
                         "state it (nm, um or mm)", path=p, field="unit")
    pts = np.empty((len(rows) - 1, 3))
    for r, row in enumerate(rows[1:]):
        for j, c in enumerate(idx):
            try:
                pts[r, j] = float(row[c])
            except (ValueError, IndexError):
                raise InputError(f"row {r + 1}: {header[c]} is {row[c] if c < len(row) else ''!r}, not a number",
                                 path=p, field=header[c]) from None
    bad = np.flatnonzero(~np.isfinite(pts).all(1))
    if bad.size:
        raise InputError(f"{bad.size} row(s) have NaN or inf coordinates (first: row {bad[0] + 1})", path=p,
                         field=header[idx[0]])
    return pts, unit


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def write_landmarks(pairs: LandmarkPairs, path: str | os.PathLike, format: str | None = None,
                    force: bool = False) -> Path:
    """Write landmark pairs as atlasreg CSV (units in the column names) or BigWarp CSV.

    ``format`` defaults to ``"csv"``. A BigWarp file cannot hold units: reading
    it back needs ``src_unit`` / ``dst_unit`` again.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> pairs = LandmarkPairs(np.eye(3), 2 * np.eye(3), Space("em", "nm"), Space("lm", "mm"))
    >>> out = write_landmarks(pairs, pathlib.Path(tempfile.mkdtemp()) / "p.csv")
    >>> out.read_text().splitlines()[0]
    'name,active,em_x_nm,em_y_nm,em_z_nm,lm_x_mm,lm_y_mm,lm_z_mm'
    >>> read_landmarks(out).dst
    Space(name='lm', unit='mm', orientation=None)
    """
    fmt = format or "csv"
    if fmt not in ("csv", "bigwarp"):
        raise InputError(f"unknown landmark format {fmt!r}; use 'csv' or 'bigwarp'", field="format")
    if not isinstance(pairs, LandmarkPairs):
        raise InputError(f"write_landmarks takes LandmarkPairs, got {type(pairs).__name__}", field="pairs")
    if fmt == "csv" and pairs.src.name == pairs.dst.name:
        raise InputError("source and destination spaces share a name; the columns would clash", field="pairs")
    buf = _io.StringIO()
    rows = [[n, "true" if a else "false", *map(repr, map(float, s)), *map(repr, map(float, d))]
            for n, a, s, d in zip(pairs.names, pairs.active, pairs.src_points, pairs.dst_points)]
    if fmt == "bigwarp":
        w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    else:
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["name", "active"] + [f"{pairs.src.name}_{a}_{pairs.src.unit}" for a in _AXES]
                   + [f"{pairs.dst.name}_{a}_{pairs.dst.unit}" for a in _AXES])
    w.writerows(rows)
    with atomic_path(path, force) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return Path(path)
